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
FASHION_TEST = FASHION_DIR / "test.parquet"

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


@pytest.fixture
def one_thread():
    """Runs a test on one torch thread (restored after): tiny tensors and CPU-heavy metrics alike are faster on
    one thread than on two contended ones of a shared 2-core machine (10-50x for the tiny pipelines)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    """The first 16 rows of the real test split (PIL `image`, `text` and the attribute columns); skips the test
    when the split is not beside the repo."""
    if not FASHION_TEST.is_file():
        pytest.skip("fashion-product-images not found beside the repo")
    import datasets

    ds = datasets.load_dataset("parquet", data_files={"test": str(FASHION_TEST)})["test"].select(range(16))
    return [row for row in ds]


@pytest.fixture(scope="session")
def fashion_test_parquet():
    """The real test split's parquet file (`Path`), or `None` when it is not beside the repo."""
    return FASHION_TEST if FASHION_TEST.is_file() else None


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


# ---------------------------------------------------------------------------------------------- ONNX bundles (runtime)
# The tiny ONNX-side pipeline (32 px, 8x8 grid, M=4, K=32) and its runtime bundles, shared by test_export_onnx.py,
# test_runtime.py, test_core_validation.py and test_fuzz_bad_inputs.py. `prefix_attention="isolated"` is what the
# exporter needs for the split transformer graphs (transformer_prefix / transformer_target).
def shipped_tokenizer_dir() -> str:
    from m6_fashion.default_model import default_model_path

    return os.path.join(default_model_path(), "tokenizer")


def spread_codebooks(image_tokenizer, num_images: int) -> None:
    """Sets each of the M codebooks of a random product-quantised `PQTokenizer` to K latent vectors its encoder
    gives for `num_images` random images, so the nearest-code search is not degenerate (at the random init
    every latent is nearest to the same few codes). Draws from the global RNG: `rand` then `randperm`.

    latents (B, D, h, w) -> (B*h*w, M, D/M) rows; K rows are chosen at random -> codebooks (M, K, D/M).
    """
    import torch

    cfg = image_tokenizer.config
    side, m, k = cfg.sample_size, cfg.num_groups, cfg.codebook_size
    with torch.no_grad():
        latents = image_tokenizer.encode_latents(torch.rand(num_images, 3, side, side) * 2 - 1)
        rows = latents.permute(0, 2, 3, 1).reshape(-1, m, latents.shape[1] // m)
        codes = rows[torch.randperm(rows.shape[0])[:k]].transpose(0, 1)
        image_tokenizer.load_state_dict({**image_tokenizer.state_dict(), "codebooks.embed": codes})


def build_tiny_decoder_hr():
    """A tiny randomly initialised `decoder_hr` for `build_tiny_pipeline`: the same 8x8 tokens -> a 128-px canvas
    (two more upsampling stages, 16 px cells, as the shipped 16x16 -> 256 px), so the default output is the 96x128
    portrait crop (the shipped model's 192x256) with one cell of margin left and right."""
    import torch

    from m6_fashion import StyleDecoder

    torch.manual_seed(1)
    return StyleDecoder(latent_channels=16, style_channels=8, mapping_layers=1, block_out_channels=(16, 8, 8, 8, 8),
                        layers_per_block=1, sample_size=128).eval()


def build_tiny_pipeline(deterministic: bool = True, hr: bool = False, rows: int = 8, cols: int = 8):
    """A tiny randomly initialised M6FashionPipeline (32 px, 8x8 grid, M=4, K=32) with the shipped caption tokenizer;
    with `hr`, plus `build_tiny_decoder_hr()` (the other weights are the same either way). `rows` x `cols` other
    than 8 x 8 make a non-square model read at 4 px cells (`build_tiny_nonsquare_pipeline`)."""
    import torch

    from m6_fashion import M6FashionConfig, M6FashionPipeline, M6FashionTransformer, PQTokenizer, SMARTScheduler, StyleDecoder
    from m6_fashion.training.text_tokenizer import config_token_kwargs, load_text_tokenizer

    square = rows == cols
    shape = {} if square else {"sample_height": 4 * rows, "sample_width": 4 * cols}
    grid = {"grid_size": rows} if square else {"grid_height": rows, "grid_width": cols}
    torch.manual_seed(0)
    text_tok = load_text_tokenizer(shipped_tokenizer_dir())
    image_tok = PQTokenizer(sample_size=4 * max(rows, cols), block_out_channels=(8, 16, 16), latent_channels=16, num_groups=4,
                            codebook_size=32, **shape)
    spread_codebooks(image_tok, num_images=8)
    decoder = StyleDecoder(latent_channels=16, style_channels=8, mapping_layers=1, block_out_channels=(16, 8, 8), layers_per_block=1,
                           sample_size=4 * max(rows, cols))
    cfg = M6FashionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, codebook_size=32,
                          num_groups=4, max_condition_tokens=16, prefix_attention="isolated", **grid, **config_token_kwargs(text_tok))
    pipe = M6FashionPipeline(
        image_tokenizer=image_tok.eval(),
        decoder=decoder.eval(),
        transformer=M6FashionTransformer(cfg).eval(),
        tokenizer=text_tok,
        scheduler=SMARTScheduler(mask_token_id=32, deterministic=deterministic),
        decoder_hr=build_tiny_decoder_hr() if hr else None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_nonsquare_pipeline(deterministic: bool = True, hr: bool = False):
    """A tiny randomly initialised non-square M6FashionPipeline: 32 x 24 px (height x width, 3:4) read as an 8 x 6
    token grid (4 px cells), M=4, K=32, the shipped caption tokenizer; with `hr`, plus a `decoder_hr` painting the
    same tokens at 16 px cells (128 x 96 px, as a native 256 x 192 model with a 16 x 12 grid)."""
    return build_tiny_pipeline(deterministic, hr, rows=8, cols=6)


@pytest.fixture(scope="session")
def hr_test_photos():
    """The first four real high-resolution test photos (PIL RGB, 192 x 256 portrait) and their captions; skips the
    test when fashion-product-images-hr is not beside the repo."""
    hr_test = FASHION_DIR.parent / "fashion-product-images-hr" / "test.parquet"
    if not hr_test.is_file():
        pytest.skip("fashion-product-images-hr/test.parquet not found beside the repo")
    import io

    import PIL.Image
    import pyarrow.parquet as pq

    rows = next(pq.ParquetFile(hr_test).iter_batches(batch_size=4, columns=["image", "text"])).to_pylist()
    return [(PIL.Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB"), r["text"]) for r in rows]


@pytest.fixture(scope="session")
def tiny_onnx_pipeline():
    """`build_tiny_pipeline()` (deterministic SMART sampler, no `decoder_hr`), built once per session: tests that
    change a component work on a copy or build their own."""
    return build_tiny_pipeline()


@pytest.fixture(scope="session")
def tiny_onnx_hr_pipeline():
    """`build_tiny_pipeline(hr=True)`: the same weights plus `build_tiny_decoder_hr()` (default output 96x128)."""
    return build_tiny_pipeline(hr=True)


@pytest.fixture
def make_tiny_decoder_hr():
    """`build_tiny_decoder_hr`, to build a fresh `decoder_hr` a test may change."""
    return build_tiny_decoder_hr


def _export(path: Path, **kwargs) -> Path:
    from m6_fashion.export import export_onnx as ex

    ex.export_bundle(None, str(path), log=lambda *a: None, **kwargs)
    return path


@pytest.fixture(scope="session")
def tiny_onnx_bundle(tmp_path_factory) -> Path:
    """The bundle of `build_tiny_pipeline()` (32x32 outputs, int8 transformer too), exported once per session."""
    pytest.importorskip("onnxruntime", reason="the runtime needs onnxruntime: pip install -e '.[export]'")
    return _export(tmp_path_factory.mktemp("m6_tiny_bundle"), int8=True, parity=False, pipe=build_tiny_pipeline())


@pytest.fixture(scope="session")
def tiny_onnx_hr_bundle(tmp_path_factory) -> Path:
    """The bundle of `build_tiny_pipeline()` with `build_tiny_decoder_hr()` given to the exporter (the pipeline has
    none; default output 96x128), parity-checked at export, exported once per session."""
    pytest.importorskip("onnxruntime", reason="the runtime needs onnxruntime: pip install -e '.[export]'")
    return _export(tmp_path_factory.mktemp("m6_tiny_hr_bundle"), parity=True, pipe=build_tiny_pipeline(),
                   decoder_hr=build_tiny_decoder_hr())


@pytest.fixture(scope="session")
def shipped_onnx_bundle(tmp_path_factory) -> Path:
    """The shipped model's bundle (float32 + int8, with `decoder_hr`), exported once per session without a parity
    check (the tests compare it themselves)."""
    pytest.importorskip("onnxruntime", reason="the runtime needs onnxruntime: pip install -e '.[export]'")
    return _export(tmp_path_factory.mktemp("m6_shipped_bundle"), int8=True, parity=False)
