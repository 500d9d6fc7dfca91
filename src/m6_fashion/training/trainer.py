"""The ``transformers.Trainer`` pieces shared by ``train-transformer`` and ``finetune``: the training arguments,
the Trainer subclass that evaluates with its own collator (and, with EMA, on the averaged weights), and the
masked-token accuracy metric."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from .collator import TokenGridDataset

__all__ = [
    "end_distributed", "M6FashionTrainingArguments", "M6FashionTrainer", "build_trainer", "compute_masked_accuracy", "preprocess_logits_for_metrics",
]


def end_distributed(trainer: Optional[Trainer] = None) -> None:
    """Closes the process group that ``torchrun`` / ``accelerate launch`` made ``Trainer`` open, if any; a no-op in a
    single process. Called by the training entry points once every process has trained and evaluated.

    Left to the interpreter's exit, the group's gloo threads are torn down in no set order and can abort a run that
    has already saved everything (SIGABRT, "terminate called without an active exception"). Destroying the group
    while the DDP wrapper still holds it hangs instead, when the wrapper is freed. So, in order: drop ``trainer``'s
    DDP wrapper (its reducer holds the group), wait for every process to get there, then destroy the group."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    if trainer is not None:
        trainer.model_wrapped = trainer.model
        trainer.accelerator.free_memory()  # forgets the prepared (wrapped) model, optimizer, dataloaders; gc
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _accelerator_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(
        torch.cuda.is_available()
        or (hasattr(torch, "xpu") and torch.xpu.is_available())
        or (mps is not None and mps.is_available())
    )


@dataclass
class M6FashionTrainingArguments(TrainingArguments):
    """``TrainingArguments`` whose ``use_cpu`` defaults to True on machines without an accelerator.

    On a CPU-only machine this makes ``torchrun --nproc_per_node N`` run real data-parallel training
    over gloo (accelerate only sets up multi-CPU distribution when asked for the CPU). On a GPU
    machine the default is False (``--use_cpu`` forces the CPU).
    """

    use_cpu: bool = field(
        default=not _accelerator_available(),
        metadata={"help": "train on the CPU (default: True when no GPU/XPU/MPS is available)"},
    )
    # every parameter takes part in every step: skip DDP's search for unused ones
    ddp_find_unused_parameters: Optional[bool] = field(default=False, metadata={"help": "see TrainingArguments"})
    max_train_minutes: Optional[float] = field(
        default=None,
        metadata={"help": "stop training (and save a checkpoint) once this much wall time has passed; rerun with "
                  "--resume_from_checkpoint latest to continue"},
    )


class M6FashionTrainer(Trainer):
    """``Trainer`` whose evaluation batches are collated by ``eval_collator`` and, with ``ema`` (an
    :class:`~m6_fashion.training.callbacks.EMACallback`), whose evaluation runs on the EMA weights.

    The evaluation collator draws its masks from its own fixed seed, so ``eval_masked_accuracy`` does not
    depend on the training epoch and is comparable between steps and runs.
    """

    def __init__(self, *args, eval_collator=None, ema=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_collator = eval_collator
        self.ema = ema

    def get_eval_dataloader(self, eval_dataset=None):
        if self.eval_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        train_collator, self.data_collator = self.data_collator, self.eval_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def evaluate(self, *args, **kwargs):
        with self.ema.swapped() if self.ema is not None else contextlib.nullcontext():
            return super().evaluate(*args, **kwargs)


def build_trainer(model, args, train_raw, eval_raw, collators, processing_class, callbacks, ema=None) -> M6FashionTrainer:
    """The Trainer of pre-tokenised splits (``eval_raw`` may be None: no evaluation), with ``collators =
    (train, eval)`` and the masked-token accuracy as evaluation metric."""
    evaluating = eval_raw is not None
    return M6FashionTrainer(
        model=model,
        args=args,
        train_dataset=TokenGridDataset(train_raw),
        eval_dataset=TokenGridDataset(eval_raw) if evaluating else None,
        data_collator=collators[0],
        eval_collator=collators[1],
        ema=ema,
        processing_class=processing_class,
        compute_metrics=compute_masked_accuracy if evaluating else None,
        preprocess_logits_for_metrics=preprocess_logits_for_metrics if evaluating else None,
        callbacks=callbacks,
    )


def preprocess_logits_for_metrics(logits, labels):
    """Keeps only the argmax code per group, ``(B, N, M)``, instead of the full logits ``(B, N, M, K)``."""
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return logits.argmax(dim=-1)


def compute_masked_accuracy(eval_pred) -> dict:
    """Accuracy of the predicted code over labelled (masked) target positions, overall and per group.

    ``masked_accuracy = sum(pred == label over labels != -100) / count(labels != -100)``; predictions and labels
    are ``(B, N, M)``; ``masked_tokens`` counts the masked positions of group 0.
    """
    preds, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(preds, (tuple, list)):
        preds = preds[0]
    preds, labels = np.asarray(preds), np.asarray(labels)
    valid = labels != -100
    correct = (preds == labels) & valid
    out = {"masked_accuracy": float(correct.sum() / max(valid.sum(), 1))}
    for m in range(labels.shape[-1]):
        out[f"masked_accuracy_group{m}"] = float(correct[..., m].sum() / max(valid[..., m].sum(), 1))
    out["masked_tokens"] = int(valid[..., 0].sum())
    return out
