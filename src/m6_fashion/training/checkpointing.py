"""Checkpoints of the accelerate-based trainers (stage 1 and the high-resolution decoder): find the latest
complete one and resume from it exactly, or stop with an error that names the file.

A checkpoint is `OUTPUT_DIR/checkpoints/step-N/` holding `accelerator.save_state` output (weights as
safetensors, optimizer states, one RNG-state file per process) and `trainer_state.json`, written last.
accelerate's `load_state` only logs when it cannot restore the RNG states and goes on, so a resume would
silently stop being exact; here that is an error instead.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Optional

STATE_FILE = "trainer_state.json"


def latest_checkpoint(output_dir: str) -> Optional[str]:
    """The newest complete `checkpoints/step-N` folder of `output_dir` (one with `trainer_state.json`), or None."""
    root = os.path.join(output_dir, "checkpoints")
    if not os.path.isdir(root):
        return None
    steps = sorted(((int(m.group(1)), d) for d in os.listdir(root) if (m := re.fullmatch(r"step-(\d+)", d))), reverse=True)
    for _, d in steps:  # only complete checkpoints (trainer_state.json is written last)
        if os.path.exists(os.path.join(root, d, STATE_FILE)):
            return os.path.join(root, d)
    return None


def _unusable(folder: str, what: str) -> SystemExit:
    return SystemExit(
        f"error: cannot resume exactly from {folder!r}: {what}. Delete that folder to resume from the checkpoint "
        "before it, or start anew with another --output_dir"
    )


def resume_exactly(accelerator, folder: str) -> Dict[str, Any]:
    """Restores models, optimizers and this process's RNG states from `folder`; returns its trainer state.

    Raises `SystemExit` naming the file when any of them cannot be restored (missing, truncated, corrupt).
    """
    from accelerate.utils import load

    rng_file = os.path.join(folder, f"random_states_{accelerator.process_index}.pkl")
    if not os.path.isfile(rng_file):
        raise _unusable(folder, f"{os.path.basename(rng_file)} (this process's RNG state) is missing")
    try:
        states = load(rng_file, weights_only=False)  # accelerate's own format, written by this trainer
        missing = [k for k in ("random_state", "numpy_random_seed", "torch_manual_seed") if k not in states]
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported by name
        raise _unusable(folder, f"{os.path.basename(rng_file)} is unreadable ({type(e).__name__}: {e})") from None
    if missing:
        raise _unusable(folder, f"{os.path.basename(rng_file)} lacks {', '.join(missing)}")
    try:
        with open(os.path.join(folder, STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError) as e:
        raise _unusable(folder, f"{STATE_FILE} is unreadable ({type(e).__name__}: {e})") from None
    try:
        accelerator.load_state(folder)
    except Exception as e:  # noqa: BLE001 - a truncated weight or optimizer file
        raise _unusable(folder, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    return state
