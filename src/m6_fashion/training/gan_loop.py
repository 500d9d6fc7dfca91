"""Loop pieces of the accelerate-based GAN trainers (stage-1 tokenizer, high-resolution decoder): batches that are a
pure function of the step, the non-saturating adversarial losses with lazy R1, reconstruction metrics, the JSON-lines
logs and the progress bar. Checkpoints are in :mod:`m6_fashion.training.checkpointing`.

Batches are drawn by :func:`batch_indices` from ``(seed, step)`` instead of a ``DataLoader`` + accelerate's
``skip_first_batches``: resuming at step N costs nothing (no N batches to skip through) and a run resumed with
another number of processes still sees every image once per epoch.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = [
    "batch_indices", "to_pixels", "ssim", "psnr_per_image", "adversarial_loss", "optimizer_step", "discriminator_step",
    "append_jsonl", "log_step", "report_eval", "checkpoint_or_stop", "progress_bar", "parse_and_train",
]


def batch_indices(step: int, batch_size: int, num_items: int, seed: int, rank: int, world: int) -> np.ndarray:
    """Indices of the per-process batch at a global step; a pure function of (step, seed) so resume is exact.

    Epoch ``e = step // (num_items // (batch_size * world))`` is the permutation ``default_rng(seed + e)`` of the
    items; process ``rank`` takes its ``batch_size`` slice of the step's global batch (sorted).
    """
    global_bs = batch_size * world
    per_epoch = num_items // global_bs
    if per_epoch == 0:
        raise ValueError(f"train set of {num_items} images is smaller than one global batch ({global_bs})")
    epoch, pos = divmod(step, per_epoch)
    perm = np.random.default_rng(seed + epoch).permutation(num_items)
    start = pos * global_bs + rank * batch_size
    return np.sort(perm[start : start + batch_size])


def to_pixels(batch_uint8: np.ndarray, device) -> torch.Tensor:
    """uint8 images ``(B, 3, H, W)`` in [0, 255] -> float32 in [-1, 1] (``x / 127.5 - 1``) on ``device``."""
    return torch.from_numpy(batch_uint8).to(device).float().div(127.5).sub(1.0)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of images in [-1, 1] (differentiable; gaussian window 11, sigma 1.5; computed in [0, 1])."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure((x.float() + 1) / 2, (y.float() + 1) / 2, data_range=1.0)


def psnr_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image ``(B,)`` of ``x`` (clamped to [-1, 1]) against ``y``: ``10 log10(2^2 / MSE)``, the same
    as on the [0, 1] scale.

    torchmetrics' function directly, not ``m6_fashion.evaluation.metrics.psnr``: that one validates user input and
    raises on NaN, which would stop a diverging run at its log line instead of logging it.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(x.float().clamp(-1, 1), y.float(), data_range=2.0, reduction="none", dim=(1, 2, 3))


def adversarial_loss(disc: torch.nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``softplus(-D(fake))``, averaged."""
    return F.softplus(-disc(fake)).mean()


def optimizer_step(accelerator, optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    optimizer.step()


def discriminator_step(accelerator, disc, optimizer, fake: torch.Tensor, real: torch.Tensor, step: int,
                       r1_gamma: float, r1_every: int) -> torch.Tensor:
    """One discriminator update: ``softplus(D(fake)) + softplus(-D(real))`` and, every ``r1_every`` steps, the lazy
    R1 penalty ``r1_gamma / 2 * |grad_x D(real)|^2 * r1_every`` (StyleGAN2). Returns the loss."""
    with accelerator.autocast():
        d_loss = F.softplus(disc(fake.detach())).mean() + F.softplus(-disc(real)).mean()
    if step % r1_every == 0:
        xr = real.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(disc(xr).sum(), xr, create_graph=True)
        d_loss = d_loss + r1_gamma / 2 * grad.pow(2).flatten(1).sum(1).mean() * r1_every
    optimizer_step(accelerator, optimizer, d_loss)
    return d_loss


def append_jsonl(path: str, record: Dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def log_step(accelerator, state: Dict, progress, output_dir: str, record: Dict) -> None:
    """Adds ``record``'s step, loss and psnr to ``state["history"]`` (kept in checkpoints), shows them on the progress
    bar and appends the whole record to ``OUTPUT_DIR/log.jsonl`` (main process)."""
    state["history"].append({k: record[k] for k in ("step", "loss", "psnr")})
    progress.set_postfix(loss=f"{record['loss']:.4f}", psnr=f"{record['psnr']:.2f}")
    if accelerator.is_main_process:
        append_jsonl(os.path.join(output_dir, "log.jsonl"), record)


def report_eval(accelerator, output_dir: str, metrics: Dict) -> None:
    """Prints the evaluation metrics and appends them to ``OUTPUT_DIR/eval.jsonl``."""
    accelerator.print(json.dumps(metrics))
    append_jsonl(os.path.join(output_dir, "eval.jsonl"), metrics)


def checkpoint_or_stop(accelerator, output_dir: str, state: Dict, total_limit: int, checkpoint: bool,
                       stop_reason: Optional[str] = None) -> bool:
    """The end of a step: a checkpoint when ``checkpoint`` or stopping (so that no step is lost), and the reason
    printed when stopping. Returns whether to stop."""
    from .checkpointing import save_checkpoint

    if checkpoint or stop_reason:
        save_checkpoint(accelerator, output_dir, state, total_limit)
    if stop_reason:
        accelerator.print(f"stopping at step {state['step']}: {stop_reason}")
    return bool(stop_reason)


def progress_bar(accelerator, state: Dict, total: int, desc: str):
    """Iterates the remaining steps ``[state["step"], total)`` with a bar on the local main process."""
    return tqdm(range(state["step"], total), initial=state["step"], total=total,
                disable=not accelerator.is_local_main_process, desc=desc)


def parse_and_train(arguments_class, train, argv=None) -> Dict:
    """``train(arguments_class(...))`` with the options parsed from ``argv`` (default: the command line)."""
    from transformers import HfArgumentParser

    from ..errors import parse_dataclasses

    (args,) = parse_dataclasses(HfArgumentParser(arguments_class), argv)
    return train(args)
