"""High-resolution decoder for the shipped tokens: crop forward is exact, a tiny run on 8 real HR photos stops at
its step limit, resumes exactly, saves a decoder that reloads at 256 px, and bad settings are refused."""

import json
import os
from pathlib import Path

import pytest
import torch

from m6_fashion.models import StyleDecoder
from m6_fashion.training.train_hr_decoder import (
    HRDecoderTrainingArguments,
    decode_crops,
    decode_fast,
    init_from_decoder,
    load_pipeline_parts,
    train,
)

HR_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-product-images-hr"

# new levels tiny (8 channels); the 16/32/64-px levels keep the shipped shapes so they are initialised from it
TINY = dict(decoder_channels=[256, 128, 64, 8, 8], disc_channels=[16, 32, 64], crop_size=64, train_batch_size=2,
            eval_limit=4, adv_start_step=2, r1_every=2, eval_every=1000, log_every=1, checkpoint_every=3,
            checkpoint_every_minutes=60.0, num_threads=1)


@pytest.fixture(scope="module")
def hr_subset_dir(tmp_path_factory):
    """train.parquet with the first 8 rows and test.parquet with the first 4 rows of the real HR photos."""
    if not (HR_DIR / "train.parquet").is_file():
        pytest.skip("fashion-product-images-hr not found beside the repo")
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path_factory.mktemp("hr_subset")
    for split, rows in (("train", 8), ("test", 4)):
        pf = pq.ParquetFile(HR_DIR / f"{split}.parquet")
        batch = next(pf.iter_batches(batch_size=rows))
        pq.write_table(pa.Table.from_batches([batch], schema=pf.schema_arrow), out / f"{split}.parquet")
    return out


@pytest.fixture(scope="module")
def shipped_parts():
    torch.set_num_threads(1)
    return load_pipeline_parts(None)


def _args(data, out, **kw):
    a = dict(TINY, data=str(data), output_dir=str(out))
    a.update(kw)
    return HRDecoderTrainingArguments(**a)


def test_crop_forward_equals_whole_image_forward(shipped_parts):
    tok, base = shipped_parts
    torch.manual_seed(0)
    dec = StyleDecoder(block_out_channels=(256, 128, 64, 8, 8), sample_size=256)
    copied, new = init_from_decoder(dec, base)
    assert copied and all(n.startswith(("levels.3", "levels.4", "to_rgb.3", "to_rgb.4")) for n in new)
    lat = tok.lookup(torch.randint(0, 256, (2, 16, 16, 4)))
    with torch.no_grad():
        # zero-initialised new toRGB layers: the start is the 64-px decoder upsampled bilinearly twice
        up = base(lat).sample
        for _ in range(2):
            up = torch.nn.functional.interpolate(up, scale_factor=2, mode="bilinear", align_corners=False)
        assert torch.allclose(dec(lat).sample, up, atol=1e-5)
        for p in dec.parameters():  # any weights: the fast and cropped paths equal the class's forward
            p.add_(torch.randn_like(p) * 0.05)
        ref = dec(lat).sample
        assert torch.allclose(decode_fast(dec, lat), ref, atol=1e-4)
        offsets = [(0, 0), (192, 100)]
        crops = decode_crops(dec, lat, 3, offsets, 64, base_grad=False)
    assert crops.shape == (2, 3, 64, 64)
    for b, (oy, ox) in enumerate(offsets):
        assert torch.allclose(crops[b], ref[b, :, oy : oy + 64, ox : ox + 64], atol=1e-4)


def test_tiny_run_stops_resumes_exactly_and_saves(hr_subset_dir, shipped_parts, tmp_path):
    tok, base = shipped_parts
    full = tmp_path / "full"
    train(_args(hr_subset_dir, full, max_train_steps=5))
    part = tmp_path / "part"
    train(_args(hr_subset_dir, part, max_train_steps=3))  # stopped by the step limit after step 3's checkpoint
    assert (part / "checkpoints" / "step-3" / "trainer_state.json").is_file()
    assert (part / "checkpoints" / "step-3" / "model.safetensors").is_file()
    train(_args(hr_subset_dir, part, max_train_steps=5))  # the command again, with a later limit: resumes at step 3
    logged = [json.loads(line)["step"] for line in open(part / "log.jsonl")]
    assert logged == [0, 1, 2, 3, 4]  # steps 0-2 were not repeated
    with open(part / "checkpoints" / "step-5" / "trainer_state.json") as f:
        assert json.load(f)["step"] == 5

    a = StyleDecoder.from_pretrained(full / "decoder_hr")
    b = StyleDecoder.from_pretrained(part / "decoder_hr")
    files = os.listdir(part / "decoder_hr")
    assert "diffusion_pytorch_model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    from safetensors import safe_open

    with safe_open(str(part / "decoder_hr" / "diffusion_pytorch_model.safetensors"), "pt") as f:  # stored in float16
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    # the frozen low-resolution levels are still the shipped decoder's
    shipped = base.state_dict()
    assert torch.equal(sb["levels.2.1.conv.weight"].float(), shipped["levels.2.1.conv.weight"])
    assert not torch.equal(sb["to_rgb.4.conv.weight"], torch.zeros_like(sb["to_rgb.4.conv.weight"]))

    dec = b.float().eval()
    tokens = torch.randint(0, 256, (1, 16, 16, 4))
    with torch.no_grad():
        out = dec(tok.lookup(tokens)).sample
    assert out.shape == (1, 3, 256, 256) and torch.isfinite(out).all()
    metrics = json.loads((part / "final_metrics.json").read_text())["metrics"]
    assert metrics["step"] == 5 and {"psnr", "ssim", "baseline"} <= set(metrics)


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(decoder_channels=[256, 128, 64]), "more than 3"),
        (dict(crop_size=66), "multiple of 4"),
        (dict(save_dtype="bfloat8"), "save_dtype"),
    ],
)
def test_bad_arguments_are_refused(hr_subset_dir, tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        train(_args(hr_subset_dir, tmp_path / "o", max_train_steps=1, **override))
    assert not (tmp_path / "o").exists()  # refused before writing anything
