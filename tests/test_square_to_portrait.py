"""conversion/square_to_portrait.py: a square pipeline moved to a portrait (rows x cols) token grid."""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import REPO_ROOT, build_tiny_pipeline

if str(REPO_ROOT) not in sys.path:  # the script lives in conversion/ beside the package
    sys.path.insert(0, str(REPO_ROOT))

from conversion.square_to_portrait import main, portrait_pipeline  # noqa: E402


def test_weights_and_geometry_of_the_portrait_pipeline(tmp_path):
    square = build_tiny_pipeline(hr=True)  # 8x8 grid, 32 px; decoder_hr 128 px
    pipe = portrait_pipeline(square, cols=6)
    assert pipe.grid_shape == (8, 6) and pipe.sample_shape == (32, 24) and pipe.default_size == (128, 96)
    assert pipe.image_tokenizer.grid_shape == (8, 6)
    sq, pt = square.transformer.state_dict(), pipe.transformer.state_dict()
    # column embeddings are the square model's columns 1..6 (centred), everything else is the same tensor values
    assert torch.equal(pt["embeddings.col_embeddings.weight"], sq["embeddings.col_embeddings.weight"][1:7])
    assert all(torch.equal(pt[k], v) for k, v in sq.items() if k != "embeddings.col_embeddings.weight")
    assert all(torch.equal(a, b) for a, b in zip(pipe.image_tokenizer.state_dict().values(), square.image_tokenizer.state_dict().values()))
    out = pipe("Men Navy Blue Casual Shirt", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (1, 128, 96, 3) and tuple(out.tokens.shape) == (1, 8, 6, 4)
    # the saved folder loads back as the same portrait pipeline
    pipe.save_pretrained(tmp_path / "portrait")
    from m6_fashion import M6FashionPipeline

    again = M6FashionPipeline.from_pretrained(str(tmp_path / "portrait"))
    assert again.grid_shape == (8, 6) and again.image_tokenizer.sample_shape == (32, 24)
    assert torch.equal(again.transformer.embeddings.col_embeddings.weight, pipe.transformer.embeddings.col_embeddings.weight)


def test_bad_arguments_are_refused():
    square = build_tiny_pipeline()
    with pytest.raises(ValueError, match="cols must be between 1 and 7"):
        portrait_pipeline(square, cols=8)
    with pytest.raises(ValueError, match="left must be between 0 and 2"):
        portrait_pipeline(square, cols=6, left=3)
    with pytest.raises(ValueError, match="already 8x6"):
        portrait_pipeline(portrait_pipeline(square, cols=6), cols=4)
    with pytest.raises(SystemExit):
        main(["--cols", "12"])  # --out is required
