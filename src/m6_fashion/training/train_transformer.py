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
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import transformers
from transformers import HfArgumentParser, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..errors import as_bad_input, parse_dataclasses
from ..models.transformer_m6fashion import M6FashionConfig, M6FashionTransformer
from .callbacks import CollatorEpochCallback, TimeLimitCallback
from .collator import M6FashionCollator
from .pretokenize import default_cache_dir, load_pretokenized, pretokenize, read_pretokenized_info
from .text_tokenizer import config_token_kwargs, load_text_tokenizer, train_text_tokenizer
from .trainer import (  # noqa: F401 - the metric functions stay importable from here
    M6FashionTrainer,
    M6FashionTrainingArguments,
    build_trainer,
    compute_masked_accuracy,
    end_distributed,
    preprocess_logits_for_metrics,
)

logger = logging.getLogger("m6_fashion.train_transformer")

__all__ = [
    "ModelArguments",
    "DataArguments",
    "M6FashionTrainingArguments",
    "CollatorEpochCallback",
    "TimeLimitCallback",
    "compute_masked_accuracy",
    "preprocess_logits_for_metrics",
    "main",
]


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


def _parse(argv):
    parser = HfArgumentParser((ModelArguments, DataArguments, M6FashionTrainingArguments))
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    return parse_dataclasses(parser, argv)


def _resume_folder(training_args) -> Optional[str]:
    """``--resume_from_checkpoint``: a folder, or ``latest`` (also ``true`` / ``last``) for the newest ``checkpoint-*``."""
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "last", "latest"):
        resume = get_last_checkpoint(training_args.output_dir)
        if resume is None:
            raise ValueError(f"--resume_from_checkpoint {training_args.resume_from_checkpoint}: no checkpoint in {training_args.output_dir!r}")
    if resume and not os.path.isdir(resume):
        raise FileNotFoundError(f"checkpoint folder {resume!r} does not exist")
    return resume


def _load_splits(data_args: DataArguments, training_args):
    """The pre-tokenised ``(train, eval or None)`` splits (capped at ``--max_*_samples``) and the train file's path."""
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
    return train_raw, eval_raw, train_path


def _collators(data_args: DataArguments, config, text_tokenizer, seed: int):
    """``(train, eval)`` collators of the masking recipe: training masks from ``seed``, evaluation masks from
    ``--eval_seed``."""
    kwargs = dict(
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
    return M6FashionCollator(config, seed=seed, **kwargs), M6FashionCollator(config, seed=data_args.eval_seed, **kwargs)


def _run(trainer: M6FashionTrainer, training_args, resume: Optional[str], evaluating: bool) -> dict:
    """Trains (unless evaluation only: ``--do_eval`` without ``--do_train`` and without an eval strategy), saves the
    model and the text tokenizer, evaluates and pushes to the Hub when asked."""
    results = {}
    eval_only = training_args.do_eval and not training_args.do_train and training_args.eval_strategy == "no"
    if not eval_only:
        train_result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()  # save_pretrained (safetensors) of the model + the text tokenizer
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        results.update(train_result.metrics)
    if evaluating:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    if training_args.push_to_hub:
        trainer.push_to_hub(tags=["m6-fashion", "text-to-image"])
    return results


def main(argv=None) -> dict:
    """Entry point; ``argv`` as for ``HfArgumentParser`` (a list of strings, or one ``.json`` file)."""
    model_args, data_args, training_args = _parse(argv)
    training_args.remove_unused_columns = False
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False
    level = logging.INFO if training_args.process_index == 0 else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    transformers.utils.logging.set_verbosity(level)

    try:  # everything that checks the arguments and the data, before any training: BadInput errors
        _check_model_args(model_args)
        resume = _resume_folder(training_args)
        train_raw, eval_raw, train_path = _load_splits(data_args, training_args)
        geometry = _geometry(train_raw, train_path, data_args.codebook_size)
        text_tokenizer = _text_tokenizer(model_args, training_args, train_raw, resume)
        set_seed(training_args.seed)
        model = _build_model(model_args, geometry, text_tokenizer)
    except (ValueError, FileNotFoundError) as e:
        raise as_bad_input(e) from e
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("M6FashionTransformer: %.2fM parameters, config %s", n_params / 1e6, model.config.to_json_string())

    train_collator, eval_collator = _collators(data_args, model.config, text_tokenizer, training_args.seed)
    callbacks = [CollatorEpochCallback(train_collator)]
    if training_args.max_train_minutes:
        callbacks.append(TimeLimitCallback(training_args.max_train_minutes))
    trainer = build_trainer(model, training_args, train_raw, eval_raw, (train_collator, eval_collator), text_tokenizer, callbacks)
    results = _run(trainer, training_args, resume, eval_raw is not None)
    end_distributed(trainer)
    return results


if __name__ == "__main__":
    main()
