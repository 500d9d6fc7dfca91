"""Trains the stage-2 M6-Fashion transformer with ``transformers.Trainer``.

Data, either:

* ``--data_dir`` (a folder with ``train.parquet`` and optionally ``test.parquet``, columns ``image``
  and ``text``) plus ``--pq_tokenizer`` (a stage-1 ``PQTokenizer`` folder): the splits are
  pre-tokenised once and cached (``--pretokenize_cache_dir``); or
* ``--train_file`` / ``--eval_file``: Parquet files already written by
  :mod:`m6_fashion.training.pretokenize`.

The text tokenizer is trained on the train captions unless ``--text_tokenizer`` (or
``--model_name_or_path``) provides one; it is saved beside the model. Every ``TrainingArguments``
option passes through (``--resume_from_checkpoint``, ``--push_to_hub``, ``--gradient_checkpointing``,
``--use_cpu``, ...). The same command runs on one process, under
``torchrun --nproc_per_node N`` (gloo on CPU, NCCL on GPU) and under ``accelerate launch``.
On a machine without GPU/XPU/MPS, ``--use_cpu`` defaults to True (accelerate only distributes over
CPU processes when asked for the CPU); elsewhere the accelerator is used unless ``--use_cpu``.

Memory: the default model (3.9M parameters, 16x16 grid, 4 groups of 256 codes, text length 32,
up to 2 condition crops) at ``--per_device_train_batch_size 32`` on CPU peaks at about 3.2 GB
resident memory (measured over 3 steps with torch 2.13 / transformers 5.23); most of it is
attention activations over the ~420-position sequence, which ``--gradient_checkpointing`` trades
for recomputation.

Example (CPU, small run)::

    python -m m6_fashion.training.train_transformer \
        --data_dir ../shared/data/fashion-product-images --pq_tokenizer runs/pq_tokenizer \
        --output_dir runs/transformer --per_device_train_batch_size 32 --max_steps 2000 \
        --learning_rate 5e-4 --eval_strategy steps --eval_steps 500 --save_steps 500 --logging_steps 50

Evaluation on the test split reports ``eval_loss``, ``eval_masked_accuracy`` and
``eval_masked_accuracy_group{m}`` (accuracy of the argmax code over masked target tokens, per
group), with masks drawn by the same recipe from a fixed seed (``--eval_seed``), so numbers are
comparable between runs.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import transformers
from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..errors import as_bad_input, parse_dataclasses
from ..models.transformer_m6fashion import M6FashionConfig, M6FashionTransformer
from .collator import M6FashionCollator, TokenGridDataset
from .pretokenize import default_cache_dir, load_pretokenized, pretokenize, read_pretokenized_info
from .text_tokenizer import config_token_kwargs, load_text_tokenizer, train_text_tokenizer

logger = logging.getLogger("m6_fashion.train_transformer")

__all__ = ["ModelArguments", "DataArguments", "M6FashionTrainingArguments", "CollatorEpochCallback", "compute_masked_accuracy", "main"]


@dataclass
class ModelArguments:
    """Model and text-tokenizer options (ignored architecture fields when ``--model_name_or_path`` is given)."""

    model_name_or_path: Optional[str] = field(default=None, metadata={"help": "start from a saved M6FashionTransformer"})
    text_tokenizer: Optional[str] = field(default=None, metadata={"help": "folder of a saved text tokenizer"})
    text_tokenizer_model: str = field(default="wordlevel", metadata={"help": "wordlevel or bpe (when trained here)"})
    text_vocab_size: int = field(default=8192, metadata={"help": "maximum text vocabulary (when trained here)"})
    text_min_frequency: int = field(default=2)
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_text_length: int = 32
    max_condition_tokens: int = 256
    attention: str = field(default="bidirectional", metadata={"help": "bidirectional (masked) or causal (AR baseline)"})
    prefix_attention: str = field(default="full", metadata={"help": "full or isolated"})


@dataclass
class DataArguments:
    """Data and masking-recipe options."""

    data_dir: Optional[str] = field(default=None, metadata={"help": "folder with train.parquet (and test.parquet)"})
    pq_tokenizer: Optional[str] = field(default=None, metadata={"help": "stage-1 PQTokenizer folder (with --data_dir)"})
    train_file: Optional[str] = field(default=None, metadata={"help": "pre-tokenised train Parquet"})
    eval_file: Optional[str] = field(default=None, metadata={"help": "pre-tokenised test Parquet"})
    pretokenize_cache_dir: Optional[str] = field(default=None, metadata={"help": "cache of pre-tokenised splits"})
    pretokenize_batch_size: int = 64
    pretokenize_device: Optional[str] = field(default=None, metadata={"help": "device of the image encoder (default: the training device)"})
    codebook_size: Optional[int] = field(default=None, metadata={"help": "K, for pre-tokenised files without side file"})
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None
    mask_prob_random: float = 0.70
    mask_prob_all: float = 0.10
    mask_prob_inside_box: float = 0.10
    mask_prob_outside_box: float = 0.10
    cond_prob_visual_text: float = 0.20
    cond_prob_text: float = 0.55
    cond_prob_visual: float = 0.20
    cond_prob_none: float = 0.05
    max_condition_patches: int = 2
    mask_ratio_schedule: str = "cosine"
    eval_seed: int = field(default=1234, metadata={"help": "seed of the evaluation masks"})


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


class TimeLimitCallback(TrainerCallback):
    """Stops training after ``max_minutes`` of wall time, saving a checkpoint first."""

    def __init__(self, max_minutes: float):
        import time

        self.deadline = time.time() + 60.0 * max_minutes

    def on_step_end(self, args, state, control, **kwargs):
        import time

        if time.time() > self.deadline:
            control.should_save = True
            control.should_training_stop = True
        return control


class CollatorEpochCallback(TrainerCallback):
    """Tells the collator the epoch at each epoch start, computed from the global step exactly as
    Trainer computes the epoch it resumes in, so resumed runs draw the same masks."""

    def __init__(self, collator: M6FashionCollator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        epoch = None
        try:
            n = len(train_dataloader)
            ga = args.gradient_accumulation_steps
            steps_per_epoch = max(n // ga + int(n % ga > 0), 1)
            epoch = state.global_step // steps_per_epoch
        except TypeError:
            pass
        if epoch is None:
            epoch = int(math.floor((state.epoch or 0.0) + 1e-6))
        self.collator.set_epoch(epoch)


def preprocess_logits_for_metrics(logits, labels):
    """Keeps only the argmax code per group, ``(B, N, M)``, instead of the full logits."""
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return logits.argmax(dim=-1)


def compute_masked_accuracy(eval_pred) -> dict:
    """Accuracy of the predicted code over labelled (masked) target positions, overall and per group."""
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


def _resolve_data(data_args: DataArguments, training_args: TrainingArguments):
    """Returns ``(train_path, eval_path or None)`` of pre-tokenised Parquet files."""
    if data_args.train_file:
        if data_args.data_dir:
            raise ValueError("pass either --train_file/--eval_file (pre-tokenised) or --data_dir with --pq_tokenizer, not both")
        return data_args.train_file, data_args.eval_file
    if not data_args.data_dir:
        raise ValueError("no training data: pass --data_dir with --pq_tokenizer, or a pre-tokenised --train_file")
    if not data_args.pq_tokenizer:
        raise ValueError("--data_dir holds images: pass --pq_tokenizer (a stage-1 PQTokenizer folder) to pre-tokenise them")
    cache = data_args.pretokenize_cache_dir or default_cache_dir()
    device = data_args.pretokenize_device or training_args.device
    with training_args.main_process_first(desc="pre-tokenising"):
        train_path = pretokenize(
            data_args.data_dir, data_args.pq_tokenizer, "train", cache, data_args.pretokenize_batch_size,
            device=device, max_samples=data_args.max_train_samples,
        )
        eval_path = None
        if os.path.isdir(data_args.data_dir) and os.path.isfile(os.path.join(data_args.data_dir, "test.parquet")):
            eval_path = pretokenize(
                data_args.data_dir, data_args.pq_tokenizer, "test", cache, data_args.pretokenize_batch_size,
                device=device, max_samples=data_args.max_eval_samples,
            )
    return train_path, eval_path


def _geometry(train_ds, train_path: str, codebook_size: Optional[int]) -> dict:
    """Model geometry from the pre-tokenised codes ``(h, w, M)``: ``grid_height=h``, ``grid_width=w``,
    ``grid_size=max(h, w)``, ``num_groups=M`` and ``codebook_size``."""
    info = read_pretokenized_info(train_path) or {}
    first = np.asarray(train_ds.with_format("numpy")[0]["codes"])
    if first.ndim != 3 or min(first.shape) < 1:
        raise ValueError(f"codes in {train_path!r} must be token grids (h, w, M) (h != w allowed); got {first.shape}")
    k = codebook_size or info.get("codebook_size")
    if k is None:
        k = 256
        logger.warning("no codebook size recorded for %s; assuming K=256 (pass --codebook_size)", train_path)
    if info and info.get("codebook_size") not in (None, k):
        raise ValueError(f"--codebook_size {k} disagrees with the pre-tokenised data (K={info['codebook_size']})")
    h, w = int(first.shape[0]), int(first.shape[1])
    return {
        "grid_size": max(h, w),
        "grid_height": h,
        "grid_width": w,
        "num_groups": int(first.shape[2]),
        "codebook_size": int(k),
    }


def _text_tokenizer(model_args, training_args, train_ds, resume_path: Optional[str]):
    for source in (model_args.text_tokenizer, resume_path, model_args.model_name_or_path):
        if source and os.path.isfile(os.path.join(source, "tokenizer.json")):
            return load_text_tokenizer(source)
    if model_args.text_tokenizer:
        raise FileNotFoundError(f"no tokenizer.json in --text_tokenizer {model_args.text_tokenizer!r}")
    if model_args.model_name_or_path:
        raise FileNotFoundError(
            f"--model_name_or_path {model_args.model_name_or_path!r} has no text tokenizer (tokenizer.json); pass --text_tokenizer"
        )
    path = training_args.output_dir  # saved beside the model (Trainer saves it again with every checkpoint)
    with training_args.main_process_first(desc="training the text tokenizer"):
        if training_args.process_index == 0 or not os.path.isfile(os.path.join(path, "tokenizer.json")):
            tok = train_text_tokenizer(
                train_ds["text"], model=model_args.text_tokenizer_model, vocab_size=model_args.text_vocab_size,
                min_frequency=model_args.text_min_frequency, max_length=model_args.max_text_length,
            )
            if training_args.process_index == 0:
                tok.save_pretrained(path)
        else:
            tok = load_text_tokenizer(path)
    return tok


def _build_model(model_args, geometry: dict, text_tokenizer) -> M6FashionTransformer:
    if model_args.model_name_or_path:
        model = M6FashionTransformer.from_pretrained(model_args.model_name_or_path)
        cfg = model.config
        for key, value in geometry.items():
            if getattr(cfg, key) != value:
                raise ValueError(f"the model has {key}={getattr(cfg, key)} but the data has {key}={value}")
        if len(text_tokenizer) > cfg.vocab_size:
            raise ValueError(f"the text tokenizer has {len(text_tokenizer)} tokens but the model only {cfg.vocab_size}")
        return model
    config = M6FashionConfig(
        hidden_size=model_args.hidden_size,
        num_hidden_layers=model_args.num_hidden_layers,
        num_attention_heads=model_args.num_attention_heads,
        intermediate_size=model_args.intermediate_size,
        hidden_dropout_prob=model_args.hidden_dropout_prob,
        attention_probs_dropout_prob=model_args.attention_probs_dropout_prob,
        max_text_length=model_args.max_text_length,
        max_condition_tokens=model_args.max_condition_tokens,
        attention=model_args.attention,
        prefix_attention=model_args.prefix_attention,
        **geometry,
        **config_token_kwargs(text_tokenizer),
    )
    return M6FashionTransformer(config)


ATTENTION_CHOICES = ("bidirectional", "causal")
PREFIX_ATTENTION_CHOICES = ("full", "isolated")


def _check_model_args(args: ModelArguments) -> None:
    """The architecture options, checked before any data is read or pre-tokenised."""
    if args.attention not in ATTENTION_CHOICES:
        raise ValueError(f"--attention must be one of {', '.join(ATTENTION_CHOICES)}; got {args.attention!r}")
    if args.prefix_attention not in PREFIX_ATTENTION_CHOICES:
        raise ValueError(f"--prefix_attention must be one of {', '.join(PREFIX_ATTENTION_CHOICES)}; got {args.prefix_attention!r}")
    if args.text_tokenizer_model not in ("wordlevel", "bpe"):
        raise ValueError(f"--text_tokenizer_model must be wordlevel or bpe; got {args.text_tokenizer_model!r}")
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_text_length",
                 "text_vocab_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be a positive integer; got {getattr(args, name)}")
    if args.max_condition_tokens < 0:
        raise ValueError(f"--max_condition_tokens must be >= 0; got {args.max_condition_tokens}")
    if args.hidden_size % args.num_attention_heads:
        raise ValueError(f"--hidden_size {args.hidden_size} must be a multiple of --num_attention_heads {args.num_attention_heads}")
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if not 0.0 <= getattr(args, name) < 1.0:
            raise ValueError(f"--{name} must be in [0, 1); got {getattr(args, name)}")


def main(argv=None) -> dict:
    """Entry point; ``argv`` as for ``HfArgumentParser`` (a list of strings, or one ``.json`` file)."""
    parser = HfArgumentParser((ModelArguments, DataArguments, M6FashionTrainingArguments))
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    else:
        model_args, data_args, training_args = parse_dataclasses(parser, argv)
    training_args.remove_unused_columns = False
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False

    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if training_args.process_index == 0 else logging.WARNING,
    )
    transformers.utils.logging.set_verbosity(logging.INFO if training_args.process_index == 0 else logging.WARNING)

    try:  # everything that checks the arguments and the data, before any training: BadInput errors
        _check_model_args(model_args)
        resume = training_args.resume_from_checkpoint
        if isinstance(resume, str) and resume.lower() in ("true", "last", "latest"):
            resume = get_last_checkpoint(training_args.output_dir)
            if resume is None:
                raise ValueError(f"--resume_from_checkpoint {training_args.resume_from_checkpoint}: no checkpoint in {training_args.output_dir!r}")
        if resume and not os.path.isdir(resume):
            raise FileNotFoundError(f"checkpoint folder {resume!r} does not exist")

        train_path, eval_path = _resolve_data(data_args, training_args)
        train_raw = load_pretokenized(train_path, data_args.codebook_size)
        if data_args.max_train_samples is not None:
            train_raw = train_raw.select(range(min(data_args.max_train_samples, len(train_raw))))
        eval_raw = None
        if eval_path:
            eval_raw = load_pretokenized(eval_path, data_args.codebook_size)
            if data_args.max_eval_samples is not None:
                eval_raw = eval_raw.select(range(min(data_args.max_eval_samples, len(eval_raw))))
        if training_args.eval_strategy != "no" and eval_raw is None:
            raise ValueError("evaluation was requested (--eval_strategy) but there is no test split (test.parquet / --eval_file)")
        geometry = _geometry(train_raw, train_path, data_args.codebook_size)

        text_tokenizer = _text_tokenizer(model_args, training_args, train_raw, resume)
        set_seed(training_args.seed)
        model = _build_model(model_args, geometry, text_tokenizer)
    except (ValueError, FileNotFoundError) as e:
        raise as_bad_input(e) from e
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("M6FashionTransformer: %.2fM parameters, config %s", n_params / 1e6, model.config.to_json_string())

    collator_kwargs = dict(
        text_tokenizer=text_tokenizer,
        mask_probs={
            "random": data_args.mask_prob_random,
            "all": data_args.mask_prob_all,
            "inside_box": data_args.mask_prob_inside_box,
            "outside_box": data_args.mask_prob_outside_box,
        },
        condition_probs={
            "visual_text": data_args.cond_prob_visual_text,
            "text": data_args.cond_prob_text,
            "visual": data_args.cond_prob_visual,
            "none": data_args.cond_prob_none,
        },
        max_condition_patches=data_args.max_condition_patches,
        mask_ratio_schedule=data_args.mask_ratio_schedule,
    )
    train_collator = M6FashionCollator(model.config, seed=training_args.seed, **collator_kwargs)
    eval_collator = M6FashionCollator(model.config, seed=data_args.eval_seed, **collator_kwargs)

    class _Trainer(Trainer):
        def get_eval_dataloader(self, eval_dataset=None):
            # evaluation masks come from their own fixed seed, independent of the training epoch
            self.data_collator = eval_collator
            try:
                return super().get_eval_dataloader(eval_dataset)
            finally:
                self.data_collator = train_collator

    trainer = _Trainer(
        model=model,
        args=training_args,
        train_dataset=TokenGridDataset(train_raw),
        eval_dataset=TokenGridDataset(eval_raw) if eval_raw is not None else None,
        data_collator=train_collator,
        processing_class=text_tokenizer,
        compute_metrics=compute_masked_accuracy if eval_raw is not None else None,
        preprocess_logits_for_metrics=preprocess_logits_for_metrics if eval_raw is not None else None,
        callbacks=[CollatorEpochCallback(train_collator)]
        + ([TimeLimitCallback(training_args.max_train_minutes)] if training_args.max_train_minutes else []),
    )

    results = {}
    # evaluation-only mode: --do_eval without --do_train and without an eval strategy
    eval_only = training_args.do_eval and not training_args.do_train and training_args.eval_strategy == "no"
    if not eval_only:
        train_result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()  # save_pretrained (safetensors) of the model + the text tokenizer
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        results.update(train_result.metrics)
    if eval_raw is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    if training_args.push_to_hub:
        trainer.push_to_hub(tags=["m6-fashion", "text-to-image"])
    return results


if __name__ == "__main__":
    main()
