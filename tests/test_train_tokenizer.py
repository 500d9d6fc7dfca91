"""Stage-1 training script on real photos: loss goes down, resume is exact, bad data is refused."""

import json
import os
import shutil

import pytest
import torch

from m6_fashion import PQTokenizer
from m6_fashion.training.train_tokenizer import TokenizerTrainingArguments, train

TINY = dict(encoder_channels=[8, 16, 16], decoder_channels=[16, 8, 8], latent_channels=16, style_channels=8,
            train_batch_size=8, eval_limit=8, num_proc=None)


def _args(data, out, **kw):
    a = dict(TINY, data=str(data), output_dir=str(out))
    a.update(kw)
    return TokenizerTrainingArguments(**a)


def _log(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_short_run_lowers_reconstruction_loss(fashion_subset_dir, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    metrics = train(_args(fashion_subset_dir, out, max_train_steps=60, learning_rate=2e-3, adv_start_step=40,
                          eval_every=1000, checkpoint_every=1000))
    log = _log(out)
    assert log[-1]["l1"] < 0.7 * log[0]["l1"]
    assert {"psnr", "ssim", "codebook_usage", "perplexity"} <= set(metrics)
    tok = PQTokenizer.from_pretrained(out / "image_tokenizer")
    assert tok.config.latent_channels == 16


@pytest.mark.slow
def test_resume_after_interruption_is_exact(fashion_subset_dir, tmp_path):
    torch.set_num_threads(1)
    kw = dict(max_train_steps=8, checkpoint_every=4, eval_every=1000, adv_start_step=2, r1_every=2, seed=3)
    full = tmp_path / "full"
    train(_args(fashion_subset_dir, full, **kw))
    part = tmp_path / "part"
    train(_args(fashion_subset_dir, part, **dict(kw, max_train_steps=4)))  # "killed" after step 4's checkpoint
    for d in ("image_tokenizer", "decoder"):
        shutil.rmtree(part / d)
    train(_args(fashion_subset_dir, part, **kw))  # same command again: resumes from step 4
    a = PQTokenizer.from_pretrained(full / "image_tokenizer").state_dict()
    b = PQTokenizer.from_pretrained(part / "image_tokenizer").state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    la = [r for r in _log(full) if r["step"] >= 4]
    lb = [r for r in _log(part) if r["step"] >= 4]
    assert [round(r["loss"], 5) for r in la] == [round(r["loss"], 5) for r in lb[-len(la):]]


def test_bad_data_is_refused(tmp_path, fashion_subset_dir):
    with pytest.raises(ValueError, match="train.parquet"):
        train(_args(tmp_path, tmp_path / "o", max_train_steps=1))
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"picture": [b"x"], "text": ["a"]}), bad / "train.parquet")
    with pytest.raises(ValueError, match="image"):
        train(_args(bad, tmp_path / "o2", max_train_steps=1))
    with pytest.raises(ValueError, match="quantizer_type"):
        train(_args(fashion_subset_dir, tmp_path / "o3", max_train_steps=1, quantizer_type="lattice"))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [
    ["-m", "torch.distributed.run", "--nproc_per_node", "2"],
    # accelerate's own launcher: --multi_gpu starts 2 gloo processes on CPU (the README's command; --cpu would start one)
    ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
     "--mixed_precision", "no", "--dynamo_backend", "no"],
], ids=["torchrun", "accelerate-launch"])
def test_two_process_run(launcher, fashion_subset_dir, tmp_path):
    """The same script runs data-parallel under torchrun and `accelerate launch` (gloo on CPU) and saves loadable models."""
    import subprocess
    import sys

    from conftest import subprocess_env

    out = tmp_path / "ddp"
    cmd = [sys.executable, *launcher, "-m", "m6_fashion.training.train_tokenizer",
           "--data", str(fashion_subset_dir), "--output_dir", str(out), "--max_train_steps", "4", "--train_batch_size", "4",
           "--encoder_channels", "8", "16", "16", "--decoder_channels", "16", "8", "8", "--latent_channels", "16",
           "--style_channels", "8", "--adv_start_step", "2", "--r1_every", "2", "--eval_every", "100",
           "--checkpoint_every", "2", "--eval_limit", "8"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stdout + r.stderr
    PQTokenizer.from_pretrained(out / "image_tokenizer")


@pytest.mark.parametrize(
    "damage, match",
    [
        ("rng_garbage", r"random_states_0.pkl is unreadable"),
        ("rng_missing", r"random_states_0.pkl \(this process's RNG state\) is missing"),
        ("state_truncated", r"trainer_state.json is unreadable"),
        ("weights_truncated", r"cannot resume exactly"),
    ],
)
def test_a_checkpoint_that_cannot_be_restored_exactly_stops_the_run(fashion_subset_dir, tmp_path, damage, match):
    """accelerate alone only logs an unreadable RNG state and goes on (no longer exact); here it is an error
    naming the file, and the checkpoint is left as it was."""
    torch.set_num_threads(1)
    out = tmp_path / "run"
    kw = dict(max_train_steps=1, checkpoint_every=1, eval_every=1000)
    train(_args(fashion_subset_dir, out, **kw))
    ckpt = out / "checkpoints" / "step-1"
    if damage == "rng_garbage":
        (ckpt / "random_states_0.pkl").write_bytes(b"not a pickle")
    elif damage == "rng_missing":
        (ckpt / "random_states_0.pkl").unlink()
    elif damage == "state_truncated":
        (ckpt / "trainer_state.json").write_text('{"step": ')
    else:
        weights = sorted(ckpt.glob("*.safetensors"))[0]
        weights.write_bytes(weights.read_bytes()[:100])
    before = sorted((p.name, p.stat().st_size) for p in ckpt.iterdir())
    with pytest.raises(SystemExit, match=match) as e:
        train(_args(fashion_subset_dir, out, **dict(kw, max_train_steps=2)))
    assert "step-1" in str(e.value)
    assert sorted((p.name, p.stat().st_size) for p in ckpt.iterdir()) == before
