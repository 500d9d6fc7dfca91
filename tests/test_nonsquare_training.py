"""The training path at a non-square image size (3:4 catalogue photos at 64 x 48 px -> 16 x 12 token grids) on real
photos of ``fashion-product-images-hr``: stage 1 (``--height`` / ``--width``), pre-tokenisation at the tokenizer's
``sample_shape`` and a few stage-2 steps on the result. Tiny models, a few steps each."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import FASHION_DIR, REPO_ROOT

HR_DIR = FASHION_DIR.parent / "fashion-product-images-hr"
H, W, ROWS, COLS, M, K = 64, 48, 16, 12, 4, 32
SQUARE_TRAIN_ROW = 150  # a 2700x2700 original (stored 192x192) among the 3:4 photos of the train split
TINY = dict(encoder_channels=[8, 16, 16], decoder_channels=[16, 8, 8], disc_channels=[8, 16, 16], latent_channels=16,
            style_channels=8, codebook_size=K, num_groups=M, train_batch_size=8, eval_limit=8, adv_start_step=1,
            r1_every=2, eval_every=1000, seed=3)

pytestmark = pytest.mark.skipif(not (HR_DIR / "train.parquet").is_file(),
                                reason="fashion-product-images-hr not found beside the repo (../shared/data)")


def _args(data, out, **kw):
    from m6_fashion.training.train_tokenizer import TokenizerTrainingArguments

    return TokenizerTrainingArguments(**{**TINY, "data": str(data), "output_dir": str(out), "height": H, "width": W, **kw})


@pytest.fixture(scope="module")
def hr_subset(tmp_path_factory):
    """``train.parquet``: the first 23 HR train photos (3:4) and one square photo; ``test.parquet``: the first 8 test
    photos (one of them square). Same schema (the ``datasets`` Image feature kept)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path_factory.mktemp("hr_subset")
    pf = pq.ParquetFile(HR_DIR / "train.parquet")
    train = pa.Table.from_batches([next(pf.iter_batches(batch_size=SQUARE_TRAIN_ROW + 1))], schema=pf.schema_arrow)
    pq.write_table(train.take(list(range(23)) + [SQUARE_TRAIN_ROW]), out / "train.parquet")
    pq.write_table(pq.read_table(HR_DIR / "test.parquet").slice(0, 8), out / "test.parquet")
    return out


def _photos(data, split="train"):
    import datasets

    return datasets.load_dataset("parquet", data_files={split: str(data / f"{split}.parquet")})[split]


def test_photos_are_fitted_keeping_their_aspect(hr_subset):
    import PIL.Image

    from m6_fashion_core.image import square_image

    ds = _photos(hr_subset)
    portrait, square = ds[0]["image"], ds[len(ds) - 1]["image"]
    assert portrait.size[0] * 4 == portrait.size[1] * 3 and square.size[0] == square.size[1]
    # a 3:4 photo is only resized (bicubic), no padding
    got = np.asarray(square_image(portrait, (H, W)))
    assert got.shape == (H, W, 3)
    np.testing.assert_array_equal(got, np.asarray(portrait.convert("RGB").resize((W, H), PIL.Image.BICUBIC)))
    # a square photo is padded on white above and below to 3:4 (never cropped), then resized: what the pipeline
    # does with an input image on a non-square canvas
    got = np.asarray(square_image(square, (H, W)))
    padded = PIL.Image.new("RGB", (square.width, square.width * H // W), (255, 255, 255))
    padded.paste(square.convert("RGB"), (0, (padded.height - square.height) // 2))
    np.testing.assert_array_equal(got, np.asarray(padded.resize((W, H), PIL.Image.BICUBIC)))
    assert (got[:6] == 255).all() and (got[-6:] == 255).all() and (got[12:-12] < 250).any()


@pytest.mark.parametrize("kw, match", [
    (dict(width=None), r"give both --height and --width"),
    (dict(height=None, width=48), r"give both --height and --width"),
    (dict(height=66), r"--height 66 must be a positive multiple of 4, the downsampling factor"),
    (dict(width=0), r"--width 0 must be a positive multiple of 4"),
    (dict(encoder_channels=[8, 16, 16, 16], decoder_channels=[16, 16, 8, 8], width=44),
     r"--width 44 must be a positive multiple of 8"),
    (dict(height=36, disc_channels=[8, 16, 16, 16]), r"--disc_channels 8 16 16 16 downsamples by 8, which must divide"),
])
def test_bad_height_width_is_refused_before_any_work(hr_subset, tmp_path, kw, match):
    from m6_fashion.training.train_tokenizer import train

    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        train(_args(hr_subset, out, max_train_steps=1, **kw))
    assert not out.exists()  # refused before the output folder, the decoding or the models


def test_bad_height_on_the_command_line(hr_subset, tmp_path):
    from conftest import subprocess_env

    r = subprocess.run(
        [sys.executable, "-m", "m6_fashion.training.train_tokenizer", "--data", str(hr_subset), "--output_dir",
         str(tmp_path / "o"), "--height", "250", "--width", "192", "--encoder_channels", "8", "16", "16", "16", "16",
         "--decoder_channels", "16", "16", "16", "8", "8"],
        capture_output=True, text=True, env=subprocess_env(), timeout=300,
    )
    assert r.returncode != 0
    assert "--height 250 must be a positive multiple of 16" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def stage1(hr_subset, tmp_path_factory):
    """``(full, part)``: 4 stage-1 steps at 64 x 48 in one go, and the same run stopped after step 2 (its
    checkpoint) and resumed by the same command."""
    from m6_fashion.training.train_tokenizer import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("stage1")
    try:
        train(_args(hr_subset, root / "full", max_train_steps=4, checkpoint_every=2))
        train(_args(hr_subset, root / "part", max_train_steps=2, checkpoint_every=2))  # "killed" after step 2
        for d in ("image_tokenizer", "decoder"):
            shutil.rmtree(root / "part" / d)
        train(_args(hr_subset, root / "part", max_train_steps=4, checkpoint_every=2))  # same command: resumes
    finally:
        torch.set_num_threads(threads)
    return root / "full", root / "part"


def test_stage1_saves_a_nonsquare_tokenizer_and_decoder(stage1, hr_subset):
    from m6_fashion import PQTokenizer, StyleDecoder
    from m6_fashion.training.data import images_to_array

    full, _ = stage1
    cfg = json.loads((full / "image_tokenizer" / "config.json").read_text())
    assert (cfg["sample_height"], cfg["sample_width"], cfg["sample_size"]) == (H, W, H)
    tok = PQTokenizer.from_pretrained(full / "image_tokenizer").eval()
    dec = StyleDecoder.from_pretrained(full / "decoder").eval()
    assert tok.sample_shape == (H, W) and tok.grid_shape == (ROWS, COLS) and tok.grid_size == ROWS
    assert dec.config.sample_size == H and dec.upsample_factor == tok.downsample_factor == 4
    pixels = torch.from_numpy(images_to_array(_photos(hr_subset, "test"), (H, W))).float() / 127.5 - 1
    assert pixels.shape == (8, 3, H, W)
    with torch.no_grad():
        tokens = tok.encode(pixels)
        rec = dec(tok.lookup(tokens)).sample
    assert tokens.shape == (8, ROWS, COLS, M) and int(tokens.max()) < K
    assert rec.shape == (8, 3, H, W) and torch.isfinite(rec).all()
    final = json.loads((full / "final_metrics.json").read_text())
    metrics, args = final["metrics"], final["args"]
    assert metrics["step"] == 4 and metrics["num_images"] == 8
    assert 3 < metrics["psnr"] < 60 and 0 < metrics["ssim"] <= 1 and len(metrics["codebook_usage"]) == M
    assert (args["height"], args["width"]) == (H, W)
    log = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()]
    assert log and all(np.isfinite(r["loss"]) and r["adv"] > 0 for r in log if r["step"] >= 1)
    state = json.loads((full / "checkpoints" / "step-4" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["sample_shape"] == [H, W]


def test_stage1_resume_is_exact_at_a_nonsquare_size(stage1):
    from m6_fashion import PQTokenizer, StyleDecoder

    full, part = stage1
    for cls, name in ((PQTokenizer, "image_tokenizer"), (StyleDecoder, "decoder")):
        a, b = (cls.from_pretrained(d / name).state_dict() for d in (full, part))
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=f"{name}.{k}")


def test_resuming_at_another_size_is_refused(stage1, hr_subset):
    """48 x 64 has the same number of cells as 64 x 48, so every weight would load: the size check refuses it."""
    from m6_fashion.training.train_tokenizer import train

    _, part = stage1
    before = sorted(p.name for p in (part / "checkpoints").iterdir())
    with pytest.raises(SystemExit, match=r"trained on 64x48 images but this run asks for 48x64"):
        train(_args(hr_subset, part, height=W, width=H, max_train_steps=6, checkpoint_every=2))
    assert sorted(p.name for p in (part / "checkpoints").iterdir()) == before


def test_pretokenize_at_the_tokenizer_sample_shape(stage1, hr_subset, tmp_path):
    from m6_fashion import PQTokenizer
    from m6_fashion.training.pretokenize import load_pretokenized, pretokenize, read_pretokenized_info
    from m6_fashion.training.data import images_to_array

    tok_dir = stage1[0] / "image_tokenizer"
    path = pretokenize(str(hr_subset), str(tok_dir), "train", output_dir=str(tmp_path), batch_size=16)
    info = read_pretokenized_info(path)
    assert {k: info[k] for k in ("grid_height", "grid_width", "sample_height", "sample_width", "grid_size",
                                 "sample_size", "num_groups", "codebook_size", "num_rows")} == dict(
        grid_height=ROWS, grid_width=COLS, sample_height=H, sample_width=W, grid_size=ROWS, sample_size=H,
        num_groups=M, codebook_size=K, num_rows=24)
    ds = load_pretokenized(path)
    assert ds.features["codes"].shape == (ROWS, COLS, M) and ds.features["codes"].dtype == "uint8"
    codes = np.asarray(ds.with_format("numpy")["codes"])
    assert codes.shape == (24, ROWS, COLS, M)
    # the same pixels as stage-1 training saw (aspect kept, the square photo padded), the same codes
    pixels = torch.from_numpy(images_to_array(_photos(hr_subset), (H, W))).float() / 127.5 - 1
    with torch.no_grad():
        expected = PQTokenizer.from_pretrained(tok_dir).eval().encode(pixels).numpy()
    np.testing.assert_array_equal(codes, expected)
    assert len(np.unique(codes)) > 4
    assert pretokenize(str(hr_subset), str(tok_dir), "train", output_dir=str(tmp_path)) == path  # cached

    # a side file written before the non-square keys existed still loads; one that contradicts the codes is refused
    old = tmp_path / "old" / "train-old.parquet"
    old.parent.mkdir()
    shutil.copy(path, old)
    legacy = {k: v for k, v in info.items() if k not in ("grid_height", "grid_width", "sample_height", "sample_width")}
    old.with_suffix(".json").write_text(json.dumps(legacy))
    np.testing.assert_array_equal(np.asarray(load_pretokenized(str(old)).with_format("numpy")["codes"]), codes)
    old.with_suffix(".json").write_text(json.dumps({**info, "grid_height": COLS, "grid_width": ROWS}))
    with pytest.raises(ValueError, match=r"are 16x12 grids but its side file records grid_height x grid_width = 12x16"):
        load_pretokenized(str(old))


def test_square_side_files_record_the_square(pretokenized_subset):
    from m6_fashion.training.pretokenize import read_pretokenized_info

    info = read_pretokenized_info(pretokenized_subset["test"])  # the tiny 32-px square tokenizer of conftest
    assert (info["grid_height"], info["grid_width"], info["grid_size"]) == (8, 8, 8)
    assert (info["sample_height"], info["sample_width"], info["sample_size"]) == (32, 32, 32)


def test_stage2_trains_on_the_nonsquare_codes(stage1, hr_subset, tmp_path):
    """``--data_dir`` + ``--pq_tokenizer``: the trainer pre-tokenises both splits at 64 x 48 and sizes the model
    from the codes (16 x 12), with nothing else passed."""
    from m6_fashion import M6FashionTransformer
    from m6_fashion.training.train_transformer import main

    out = tmp_path / "stage2"
    main([
        "--data_dir", str(hr_subset), "--pq_tokenizer", str(stage1[0] / "image_tokenizer"),
        "--pretokenize_cache_dir", str(tmp_path / "cache"), "--output_dir", str(out), "--max_steps", "3",
        "--save_steps", "3", "--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2",
        "--intermediate_size", "64", "--max_text_length", "8", "--max_condition_tokens", "48",
        "--text_min_frequency", "1", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8",
        "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "true", "--seed", "7",
        "--dataloader_num_workers", "0", "--use_cpu", "true",
    ])
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert all(np.isfinite(h["loss"]) for h in state["log_history"] if "loss" in h)
    saved = json.loads((out / "config.json").read_text())
    assert (saved["grid_height"], saved["grid_width"], saved["grid_size"]) == (ROWS, COLS, ROWS)
    assert (saved["num_groups"], saved["codebook_size"]) == (M, K)
    model = M6FashionTransformer.from_pretrained(out)
    assert model.config.grid_shape == (ROWS, COLS) and model.config.num_image_tokens == ROWS * COLS
    evaluation = json.loads((out / "eval_results.json").read_text())
    assert evaluation["eval_masked_tokens"] > 0 and np.isfinite(evaluation["eval_loss"])


def test_recipe_script_parses_and_names_its_phases():
    script = REPO_ROOT / "configs" / "train_m6-fashion-hr-native.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    r = subprocess.run(["bash", str(script), "nonsense"], capture_output=True, text=True)
    assert r.returncode == 2 and "pack1|stage1|unpack1|pretokenize|pack2|stage2|unpack2|assemble|all" in r.stderr
