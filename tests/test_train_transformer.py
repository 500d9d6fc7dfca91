"""The stage-2 training script on CPU under torchrun with 2 processes (gloo).

Data: real product images (a small subset of the train/test splits) tokenised by a tiny randomly
initialised stage-1 tokenizer; the transformer is tiny too, so each run takes seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModel, PreTrainedTokenizerFast

from conftest import subprocess_env
from m6_fashion import M6FashionTransformer
from m6_fashion.models.sequence_layout import build_model_inputs
from m6_fashion.training.train_transformer import main


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


@pytest.mark.slow
def test_torchrun_two_processes_cpu(fashion_subset_dir, tiny_pq_tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "m6_fashion.training.train_transformer",
        "--data_dir", str(fashion_subset_dir), "--pq_tokenizer", str(tiny_pq_tokenizer_dir),
        "--pretokenize_cache_dir", str(tmp_path / "cache"), "--output_dir", str(out),
        "--max_steps", "4", "--save_steps", "4", "--eval_strategy", "steps", "--eval_steps", "4", *TINY,
    ]
    _run(cmd)
    # 48 train rows, 8 per process and 2 processes: 3 steps per epoch, so 4 steps end at epoch 4/3
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and abs(state["log_history"][-1]["epoch"] - 4 / 3) < 1e-3
    evals = [h for h in state["log_history"] if "eval_loss" in h]
    assert evals and all(f"eval_masked_accuracy_group{m}" in evals[-1] for m in range(4))
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    model = AutoModel.from_pretrained(out)
    assert isinstance(model, M6FashionTransformer)
    tok = PreTrainedTokenizerFast.from_pretrained(out)
    cfg = model.config
    assert (cfg.grid_size, cfg.num_groups, cfg.codebook_size, cfg.vocab_size) == (8, 4, 32, len(tok))
    ids = tok(["navy blue shirt"], add_special_tokens=False)["input_ids"]
    inputs = build_model_inputs(cfg, ids, None)
    with torch.no_grad():
        assert model.eval()(**inputs).logits.shape == (1, 64, 4, 32)


def test_script_argument_errors(tmp_path, pretokenized_subset):
    with pytest.raises(ValueError, match="no training data"):
        main(["--output_dir", str(tmp_path / "a"), "--report_to", "none"])
    with pytest.raises(ValueError, match="--pq_tokenizer"):
        main(["--output_dir", str(tmp_path / "b"), "--data_dir", str(tmp_path), "--report_to", "none"])
    with pytest.raises(ValueError, match="no test split"):
        main(["--output_dir", str(tmp_path / "c"), "--train_file", pretokenized_subset["train"],
              "--eval_strategy", "steps", "--report_to", "none"])


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--attention", "bogus"], "--attention must be one of bidirectional, causal; got 'bogus'"),
        (["--prefix_attention", "half"], "--prefix_attention must be one of full, isolated"),
        (["--hidden_size", "30", "--num_attention_heads", "4"], "multiple of --num_attention_heads"),
        (["--num_hidden_layers", "0"], "--num_hidden_layers must be a positive integer"),
    ],
)
def test_architecture_errors_come_before_any_data_is_read(tmp_path, extra, match):
    """Checked before pre-tokenising (which would take minutes on the real data) or writing anything."""
    with pytest.raises(ValueError, match=match):
        main(["--output_dir", str(tmp_path / "o"), "--data_dir", str(tmp_path / "missing"), "--report_to", "none", *extra])
    assert not (tmp_path / "o").exists()


def test_cli_prints_one_error_line_for_bad_arguments_and_data(tmp_path):
    for extra in (["--attention", "bogus"], []):
        r = subprocess.run([sys.executable, "-m", "m6_fashion", "train-transformer", "--output_dir", str(tmp_path / "o"), *extra],
                           capture_output=True, text=True, env=subprocess_env(), timeout=300)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
        errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and ("--attention" in errors[0] if extra else "no training data" in errors[0])
    assert not (tmp_path / "o").exists()


def test_collator_epoch_callback_follows_the_global_step():
    from types import SimpleNamespace

    from m6_fashion import M6FashionConfig
    from m6_fashion.training.collator import M6FashionCollator
    from m6_fashion.training.train_transformer import CollatorEpochCallback

    col = M6FashionCollator(M6FashionConfig(grid_size=4))
    cb = CollatorEpochCallback(col)
    args = SimpleNamespace(gradient_accumulation_steps=2)
    loader = list(range(7))  # 7 batches, accumulation 2 -> 4 optimizer steps per epoch
    for step, epoch in ((0, 0), (3, 0), (4, 1), (8, 2), (9, 2)):
        cb.on_epoch_begin(args, SimpleNamespace(global_step=step, epoch=None), None, train_dataloader=loader)
        assert col.epoch == epoch
