"""The stage-2 training script on CPU: a killed run resumed from its checkpoint matches an uninterrupted one.

Data: real product images (a small subset of the train/test splits) tokenised by a tiny randomly
initialised stage-1 tokenizer; the transformer is tiny too, so each run takes seconds.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import subprocess_env

pytestmark = pytest.mark.slow

TINY = [
    "--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "2", "--intermediate_size", "64",
    "--max_text_length", "16", "--max_condition_tokens", "40", "--text_min_frequency", "1",
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--logging_steps", "1",
    "--report_to", "none", "--disable_tqdm", "true", "--seed", "7", "--learning_rate", "2e-3",
    "--dataloader_num_workers", "0",
]


def _run(cmd, timeout=180):
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"command failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _losses(output_dir):
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [(h["step"], h["loss"]) for h in state["log_history"] if "loss" in h]


def test_kill_and_resume_reproduces_the_uninterrupted_run(pretokenized_subset, tmp_path):
    base = [
        sys.executable, "-m", "m6_fashion.training.train_transformer",
        "--train_file", pretokenized_subset["train"], "--save_steps", "3", "--lr_scheduler_type", "constant",
        "--hidden_dropout_prob", "0.1", *TINY,
    ]
    # 48 rows / 8 = 6 steps per epoch: 9 steps cross an epoch boundary after the resume point (step 3)
    full = tmp_path / "full"
    _run(base + ["--output_dir", str(full), "--max_steps", "9"])

    # a run killed (SIGKILL) right after writing checkpoint-3; it was set to go on for much longer
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        base + ["--output_dir", str(killed), "--max_steps", "100000"],
        env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    state_file = killed / "checkpoint-3" / "trainer_state.json"
    deadline = time.time() + 150
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"training exited before it could be killed:\n{proc.stderr.read()[-4000:]}")
            if time.time() > deadline:
                pytest.fail("checkpoint-3 did not appear in time")
            try:
                json.loads(state_file.read_text())
                break
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(killed / "checkpoint-3", resumed / "checkpoint-3")
    _run(base + ["--output_dir", str(resumed), "--max_steps", "9", "--resume_from_checkpoint", str(resumed / "checkpoint-3")])

    full_losses, resumed_losses = _losses(full), _losses(resumed)
    assert [s for s, _ in full_losses] == list(range(1, 10))
    assert resumed_losses == full_losses
    a, b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=f"weight {key} differs after resuming")


