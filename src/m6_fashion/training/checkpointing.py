"""Checkpoints of the accelerate-based trainers (stage 1 and the high-resolution decoder): find the latest
complete one and resume from it exactly, or stop with an error that names the file.

A checkpoint is `OUTPUT_DIR/checkpoints/step-N/` holding `accelerator.save_state` output (weights as
safetensors, optimizer states, one RNG-state file per process) and `trainer_state.json`, written last.
accelerate's `load_state` only logs when it cannot restore the RNG states and goes on, so a resume would
silently stop being exact; here that is an error instead.

Rotation is done here rather than by accelerate's `ProjectConfiguration(automatic_checkpoint_naming=True,
total_limit=N)`: accelerate names folders `checkpoint_<number of saves>` (not the step, so the `step-N` folders of
earlier runs would no longer be found) and deletes the oldest folder *before* writing the new one, so with
`total_limit=1` a crash while saving would leave no complete checkpoint. Here the oldest ones are deleted only after
the new one is complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Dict, Optional, Tuple

STATE_FILE = "trainer_state.json"


def latest_checkpoint(output_dir: str) -> Optional[str]:
    """The newest complete `checkpoints/step-N` folder of `output_dir` (one with `trainer_state.json`), or None."""
    root = os.path.join(output_dir, "checkpoints")
    if not os.path.isdir(root):
        return None
    for _, d in reversed(_step_folders(root)):  # only complete checkpoints (trainer_state.json is written last)
        if os.path.exists(os.path.join(root, d, STATE_FILE)):
            return os.path.join(root, d)
    return None


def _step_folders(root: str):
    """``(step, name)`` of the ``step-N`` folders in ``root``, oldest first."""
    return sorted((int(m.group(1)), d) for d in os.listdir(root) if (m := re.fullmatch(r"step-(\d+)", d)))


def save_checkpoint(accelerator, output_dir: str, state: Dict[str, Any], total_limit: int) -> str:
    """Writes `OUTPUT_DIR/checkpoints/step-{state["step"]}` (`accelerator.save_state`, then `trainer_state.json`,
    written atomically and last, which marks the checkpoint complete) and then deletes all but the newest
    `total_limit` checkpoints. Every process must call it. Returns the folder."""
    accelerator.wait_for_everyone()
    path = os.path.join(output_dir, "checkpoints", f"step-{state['step']}")
    accelerator.save_state(path)
    if accelerator.is_main_process:
        tmp = os.path.join(path, f"{STATE_FILE}.tmp")
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, os.path.join(path, STATE_FILE))
        root = os.path.dirname(path)
        for _, d in _step_folders(root)[: -total_limit]:
            shutil.rmtree(os.path.join(root, d), ignore_errors=True)
    return path


def resume_latest(accelerator, output_dir: str, state: Dict[str, Any]) -> Tuple[Dict[str, Any], Optional[str]]:
    """`(trainer state, folder)` of the latest complete checkpoint of `output_dir`, restored exactly
    (:func:`resume_exactly`); `(state, None)` when there is none."""
    folder = latest_checkpoint(output_dir)
    if folder is None:
        return state, None
    return resume_exactly(accelerator, folder), folder


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
