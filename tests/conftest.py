"""Shared pytest fixtures.

Real data lives in ``../shared/data`` beside the repository root; tests that need it are skipped
when it is absent.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SRC_DIR = REPO_ROOT / "src"
FASHION_DIR = REPO_ROOT.parent / "shared" / "data" / "fashion-product-images"

if str(SRC_DIR) not in sys.path:  # tests run from a checkout without `pip install -e .`
    sys.path.insert(0, str(SRC_DIR))


def subprocess_env() -> dict:
    """Environment for subprocesses running the package from this checkout on few CPU threads."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    env["TQDM_DISABLE"] = "1"
    return env


requires_fashion_data = pytest.mark.skipif(
    not (FASHION_DIR / "train.parquet").is_file(), reason="fashion-product-images not found beside the repo"
)


# ---------------------------------------------------------------------------------------------- stage 2
@pytest.fixture(scope="session")
def fashion_subset_dir(tmp_path_factory):
    """A folder with ``train.parquet`` (first 48 rows) and ``test.parquet`` (first 16 rows) of the real
    fashion-product-images splits: real images and captions, same schema (the image feature kept)."""
    if not (FASHION_DIR / "train.parquet").is_file():
        pytest.skip("fashion-product-images not found beside the repo")
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path_factory.mktemp("fashion_subset")
    for split, rows in (("train", 48), ("test", 16)):
        pf = pq.ParquetFile(FASHION_DIR / f"{split}.parquet")
        batch = next(pf.iter_batches(batch_size=rows))
        pq.write_table(pa.Table.from_batches([batch], schema=pf.schema_arrow), out / f"{split}.parquet")
    return out


@pytest.fixture(scope="session")
def tiny_pq_tokenizer_dir(tmp_path_factory):
    """A tiny randomly initialised stage-1 PQTokenizer (32 px images -> 8x8 grid, M=4, K=32), saved."""
    import torch

    from m6_fashion.models.pq_tokenizer import PQTokenizer

    torch.manual_seed(0)
    tok = PQTokenizer(sample_size=32, block_out_channels=(8, 16, 16), latent_channels=16, num_groups=4, codebook_size=32)
    out = tmp_path_factory.mktemp("tiny_pq_tokenizer")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def pretokenized_subset(fashion_subset_dir, tiny_pq_tokenizer_dir, tmp_path_factory):
    """``{"train": path, "test": path}`` of the real subset pre-tokenised with the tiny PQ tokenizer."""
    from m6_fashion.training.pretokenize import pretokenize

    cache = tmp_path_factory.mktemp("pretokenized")
    return {
        split: pretokenize(str(fashion_subset_dir), str(tiny_pq_tokenizer_dir), split, output_dir=str(cache), batch_size=16)
        for split in ("train", "test")
    }


# ---------------------------------------------------------------------------------------------- stage 1 / pipeline
@pytest.fixture(scope="session")
def real_images():
    """The first 16 real test-split product photos (PIL) with their rows."""
    if not (FASHION_DIR / "test.parquet").is_file():
        pytest.skip("fashion-product-images not found beside the repo")
    import datasets

    ds = datasets.load_dataset("parquet", data_files={"test": str(FASHION_DIR / "test.parquet")})["test"].select(range(16))
    return [row for row in ds]


@pytest.fixture(scope="session")
def tiny_pipeline(real_images):
    """A tiny randomly initialised M6FashionPipeline (64 px, 16x16x4 tokens, K=256) with a text tokenizer
    trained on real captions; in eval mode."""
    import torch

    from m6_fashion import M6FashionConfig, M6FashionPipeline, M6FashionTransformer, PQTokenizer, SMARTScheduler, StyleDecoder
    from m6_fashion.training.text_tokenizer import config_token_kwargs, train_text_tokenizer

    torch.manual_seed(0)
    tok = train_text_tokenizer([r["text"] for r in real_images], min_frequency=1)
    cfg = M6FashionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          max_condition_tokens=256, prefix_attention="isolated", **config_token_kwargs(tok))
    pipe = M6FashionPipeline(
        image_tokenizer=PQTokenizer(block_out_channels=(8, 16, 16), latent_channels=16).eval(),
        decoder=StyleDecoder(latent_channels=16, style_channels=8, block_out_channels=(16, 8, 8)).eval(),
        transformer=M6FashionTransformer(cfg).eval(),
        tokenizer=tok,
        scheduler=SMARTScheduler(mask_token_id=256),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def tiny_hr_pipeline(tiny_pipeline):
    """`tiny_pipeline` plus a tiny randomly initialised `decoder_hr`: the same 16x16 tokens -> a 128-px canvas
    (one more upsampling stage), so the default output is the 96x128 portrait crop."""
    import torch

    from m6_fashion import M6FashionPipeline, StyleDecoder

    torch.manual_seed(1)
    hr = StyleDecoder(latent_channels=16, style_channels=8, block_out_channels=(16, 8, 8, 8), sample_size=128).eval()
    pipe = M6FashionPipeline(**{k: v for k, v in tiny_pipeline.components.items() if k != "decoder_hr"}, decoder_hr=hr)
    pipe.set_progress_bar_config(disable=True)
    return pipe
