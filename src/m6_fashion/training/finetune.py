"""Fine-tunes an M6-Fashion pipeline on your own product catalogue (full fine-tuning or LoRA).

Command line (``m6-fashion finetune`` or ``python -m m6_fashion.training.finetune``)::

    m6-fashion finetune --data my_catalogue/ --output_dir my-m6-fashion \\
        [--model DIR_OR_HUB_ID] [--lora --lora_rank 8 --lora_alpha 16] [--save_adapter] [--ema] \\
        [--push_to_hub --hub_model_id user/my-m6-fashion] [any transformers.TrainingArguments option]

``--model`` defaults to the shipped pipeline (``m6-fashion-64``); it is only read, never written.

Data (``--data``), one of:

* an **image folder** following the ``datasets`` imagefolder convention: image files (any
  sub-folders) plus a ``metadata.jsonl`` (one JSON object per line) or ``metadata.csv`` at the top of
  the folder, with a ``file_name`` column (the image path relative to the folder) and a caption
  column ``text``, e.g. ``{"file_name": "shirt_01.jpg", "text": "Men Navy Blue Casual Shirt"}``;
* a **Parquet** file, or a folder of Parquet files (only ``train.parquet`` when there is one), with an
  image column ``image`` (``datasets`` Image feature, or ``{bytes, path}`` structs) and ``text``;
* a dataset saved with ``datasets.Dataset.save_to_disk`` (its ``train`` split for a ``DatasetDict``);
* the other layouts ``datasets.load_dataset("imagefolder", data_dir=...)`` reads, read by it: a ``train/``
  sub-folder (split layout), or a ``metadata.parquet`` of ``file_name`` + caption;
* a **Hub dataset id** (``owner/name``, not a local path), read by ``datasets.load_dataset(id, split="train")``
  (needs network access or the dataset in the local ``datasets`` cache).

Other column names: ``--caption_column`` / ``--image_column``. Every row is checked before anything
else happens (missing or empty captions, missing, unreadable or corrupt images, images under
``--min_image_size`` pixels (16), unsupported image modes, wrong column names, an empty folder); all
problems are reported together, with the file / line / row of each, and the command stops (exit
status 1) before loading the model. ``--drop_invalid`` drops the bad rows with a warning instead.

What it does:

1. holds out ``--eval_fraction`` (10 %, at most ``--max_eval_samples``) of the rows for evaluation
   (a fixed split drawn from ``--split_seed``);
2. pre-tokenises every image once with the pipeline's own image tokenizer (cached under
   ``--pretokenize_cache_dir``, default ``$HF_HOME/m6_fashion/pretokenized``);
3. fine-tunes the transformer with ``transformers.Trainer`` and the paper's masking recipe
   (:class:`~m6_fashion.training.collator.M6FashionCollator`): all weights, or with ``--lora`` low-rank
   adapters (``peft``) on the attention projections ``query``/``key``/``value``
   (``--lora_target_modules``); ``--ema`` keeps an exponential moving average of the trained weights
   (``--ema_decay``), used for evaluation, samples and the saved model;
4. at every evaluation (and once at the end) reports ``eval_masked_accuracy`` (argmax accuracy over masked tokens of the
   held-out rows, masks from ``--eval_seed``) and writes ``OUTPUT_DIR/samples/step-NNNNNN.png``, a grid
   generated from held-out captions (``--num_sample_prompts``, or your own ``--sample_prompts``), with a
   fixed seed so grids are comparable across steps; ``step-000000.png`` shows the model before
   fine-tuning;
5. writes a complete pipeline folder to ``OUTPUT_DIR`` (``model_index.json``, ``image_tokenizer``,
   ``decoder``, ``transformer``, ``tokenizer``, ``scheduler``; safetensors), loadable with
   ``M6FashionPipeline.from_pretrained(OUTPUT_DIR)``. LoRA adapters are merged into the weights, unless
   ``--save_adapter``: then ``OUTPUT_DIR/transformer`` holds the unchanged base weights and
   ``OUTPUT_DIR/transformer_lora`` the adapter, applied with::

       from m6_fashion import M6FashionPipeline
       from m6_fashion.training.finetune import load_lora_adapter
       pipe = load_lora_adapter(M6FashionPipeline.from_pretrained(OUTPUT_DIR), f"{OUTPUT_DIR}/transformer_lora")

   (which is ``PeftModel.from_pretrained(pipe.transformer, adapter_dir).merge_and_unload()``).
   ``--push_to_hub --hub_model_id user/name`` uploads that folder (without the checkpoints).

Fine-tuning on one kind of product only teaches the model to draw it for every prompt: mix in images
of what it should keep drawing (``examples/finetune_rare_article.py`` adds as many random images of
other types; measured figures and CPU times are in ``examples/README.md``: 100 steps of batch 16 take
about 11 CPU-seconds per step).

The text tokenizer is kept as it is: caption words that are not in its vocabulary become ``[UNK]``
(the command logs how many and which). Frequent new words (brand names, new article types) are
better rephrased with words the model knows, or the model trained again with a new tokenizer
(``m6-fashion train-transformer``). The stage-1 image tokenizer and decoder are not fine-tuned.

Training details: every ``TrainingArguments`` option passes through (``--max_steps``,
``--per_device_train_batch_size``, ``--gradient_accumulation_steps``, ``--learning_rate``,
``--eval_steps``, ``--save_steps``, ``--eval_on_start``, ...). Defaults differ from ``Trainer``'s where
a small fine-tune needs it: ``--learning_rate 1e-4`` (use about ``1e-3`` with ``--lora``),
``--eval_strategy steps --eval_steps 100 --save_steps 100 --logging_steps 10 --save_total_limit 2``.
``--resume_from_checkpoint latest`` continues the newest ``OUTPUT_DIR/checkpoint-*`` exactly as the
uninterrupted run would have gone on (the split, the masks, the data order, the optimizer, the RNG
and the EMA weights are all restored). ``--max_train_minutes`` stops (with a checkpoint) after a time
budget. The same command runs under ``torchrun --nproc_per_node N`` and ``accelerate launch``.

Python::

    from m6_fashion.training.finetune import main
    main(["--data", "my_catalogue", "--output_dir", "out", "--lora", "--max_steps", "200"])
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import List, Optional

import numpy as np
import torch
import transformers
from transformers import HfArgumentParser, TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..errors import parse_dataclasses
from .callbacks import (  # noqa: F401 - EMA_WEIGHTS and SAMPLES_DIR stay importable from here
    EMA_WEIGHTS,
    SAMPLES_DIR,
    CollatorEpochCallback,
    EMACallback,
    SampleGridCallback,
    TimeLimitCallback,
)
from .collator import M6FashionCollator
from .finetune_data import (  # noqa: F401 - the constants stay importable from here
    IMAGE_EXTENSIONS,
    METADATA_FILES,
    DataValidationError,
    _fingerprint,
    _unknown_word_report,
    load_finetune_data,
    split_holdout,
)
from .finetune_hub import (
    ADAPTER_DIR,
    _apply_lora,
    _model_card,
    _portable_base_reference,
    _push,
    _sampling_module,
    hub_files,
    load_lora_adapter,
)
from .pretokenize import _tokenizer_hash, default_cache_dir, load_pretokenized, pretokenize_dataset
from .trainer import M6FashionTrainingArguments, build_trainer, end_distributed

logger = logging.getLogger("m6_fashion.finetune")

__all__ = [
    "FinetuneArguments",
    "FinetuneTrainingArguments",
    "DataValidationError",
    "load_finetune_data",
    "split_holdout",
    "EMACallback",
    "SampleGridCallback",
    "load_lora_adapter",
    "hub_files",
    "main",
]


# ================================================================================================ arguments
@dataclass
class FinetuneArguments:
    """Fine-tuning options (besides ``TrainingArguments``)."""

    data: str = field(metadata={"help": "image folder with metadata.jsonl/metadata.csv, Parquet file/folder, or a saved datasets folder"})
    model: Optional[str] = field(default=None, metadata={"help": "pipeline folder or Hub id to start from (default: the shipped model)"})
    caption_column: str = field(default="text", metadata={"help": "caption column of the data"})
    image_column: str = field(default="image", metadata={"help": "image column (Parquet / saved datasets)"})
    min_image_size: int = field(default=16, metadata={"help": "reject images whose shorter side is below this (pixels)"})
    drop_invalid: bool = field(default=False, metadata={"help": "drop bad rows with a warning instead of stopping"})
    eval_fraction: float = field(default=0.1, metadata={"help": "fraction of the rows held out for evaluation (0 = none)"})
    max_eval_samples: Optional[int] = field(default=256, metadata={"help": "cap on the held-out rows"})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "use only this many training rows"})
    split_seed: int = field(default=0, metadata={"help": "seed of the train / held-out split"})
    eval_seed: int = field(default=1234, metadata={"help": "seed of the evaluation masks"})
    pretokenize_batch_size: int = 64
    pretokenize_cache_dir: Optional[str] = field(default=None, metadata={"help": "cache of pre-tokenised data (default: $HF_HOME/m6_fashion/pretokenized)"})
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters instead of all weights"})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank r"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (the update is scaled by alpha / r)"})
    lora_dropout: float = 0.0
    lora_target_modules: str = field(default="query,key,value", metadata={"help": "comma-separated module names to adapt"})
    save_adapter: bool = field(default=False, metadata={"help": "with --lora: save the adapter (transformer_lora/) instead of merging it"})
    ema: bool = field(default=False, metadata={"help": "keep an EMA of the trained weights (used for eval, samples and the result)"})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay (warmed up as min(decay, (1+step)/(10+step)))"})
    num_sample_prompts: int = field(default=4, metadata={"help": "held-out captions in each sample grid (0 = no grids)"})
    sample_prompts: Optional[List[str]] = field(default=None, metadata={"help": "captions of the sample grids (instead of held-out ones)"})
    sample_steps: int = field(default=10, metadata={"help": "SMART passes of the sample generations"})
    sample_seed: int = 0
    save_dtype: str = field(default="float32", metadata={"help": "dtype of the saved weights: float32 or float16"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "start anew in an --output_dir that holds another run "
                                                                "(its checkpoint-* folders are deleted first); refused otherwise"})


@dataclass
class FinetuneTrainingArguments(M6FashionTrainingArguments):
    """``TrainingArguments`` with defaults suited to a small fine-tune."""

    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate (about 1e-3 suits --lora)"})
    eval_strategy: str = field(default="steps", metadata={"help": "no, steps or epoch"})
    eval_steps: Optional[float] = field(default=100, metadata={"help": "evaluate (and write a sample grid) every N steps"})
    save_steps: float = field(default=100, metadata={"help": "checkpoint every N steps"})
    logging_steps: float = field(default=10, metadata={"help": "log every N steps"})
    save_total_limit: Optional[int] = field(default=2, metadata={"help": "checkpoints kept"})


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


# ================================================================================================ main
def _parse(argv):
    parser = HfArgumentParser((FinetuneArguments, FinetuneTrainingArguments))
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    return parse_dataclasses(parser, argv)


def _check_output_dir(output_dir: str, resuming: bool, overwrite: bool) -> None:
    """An --output_dir that already holds files is refused unless resuming from it or --overwrite_output_dir
    (which deletes its stale checkpoint-* folders first), so no earlier run is overwritten by accident."""
    if resuming or not os.path.isdir(output_dir) or not os.listdir(output_dir):
        return
    if not overwrite:
        shown = ", ".join(sorted(os.listdir(output_dir))[:5])
        raise SystemExit(f"error: --output_dir {output_dir!r} already holds files ({shown}, ...); pass "
                         "--resume_from_checkpoint latest to continue that run, --overwrite_output_dir to start anew "
                         "there, or choose another folder")
    import shutil

    for name in os.listdir(output_dir):
        if name.startswith("checkpoint-") and os.path.isdir(os.path.join(output_dir, name)):
            shutil.rmtree(os.path.join(output_dir, name))


def main(argv=None) -> dict:
    """Entry point; ``argv`` as for ``HfArgumentParser`` (a list of strings, or one ``.json`` file).

    Returns the final metrics. Bad data or arguments stop with ``SystemExit`` and a report.
    """
    ft_args, training_args = _parse(argv)
    try:
        return _run(ft_args, training_args)
    except DataValidationError as e:
        raise SystemExit(f"error: {e}") from None


def _setup(training_args) -> bool:
    """Trainer settings this command needs and the logging of every process; returns whether to push the final
    pipeline (``--push_to_hub`` is taken off ``training_args`` so that checkpoints are never pushed)."""
    training_args.remove_unused_columns = False
    training_args.label_names = ["labels"]
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False
    push, training_args.push_to_hub = training_args.push_to_hub, False
    level = logging.INFO if training_args.process_index == 0 else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    transformers.utils.logging.set_verbosity(level)
    return push


def _check_arguments(ft_args: FinetuneArguments, training_args, push: bool) -> Optional[str]:
    """Every check that needs neither the data nor the model; returns the checkpoint folder to resume from."""
    from ..default_model import default_model_path

    if not training_args.output_dir:
        raise SystemExit("error: pass --output_dir (where the fine-tuned pipeline is written)")
    model_path = ft_args.model or default_model_path()
    shipped = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained")
    for folder in filter(None, [model_path if os.path.isdir(model_path) else None, shipped]):
        if _inside(training_args.output_dir, folder):
            raise SystemExit(f"error: --output_dir {training_args.output_dir!r} is inside the model folder {folder!r}; "
                             "write the fine-tuned pipeline somewhere else (the base model is never modified)")
    if ft_args.save_adapter and not ft_args.lora:
        raise SystemExit("error: --save_adapter saves a LoRA adapter: add --lora")
    if ft_args.save_dtype not in ("float32", "float16"):
        raise SystemExit(f"error: --save_dtype must be float32 or float16; got {ft_args.save_dtype!r}")
    if push and not training_args.hub_model_id:
        raise SystemExit("error: --push_to_hub needs --hub_model_id (e.g. your-name/m6-fashion-my-catalogue)")
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "last", "latest"):
        resume = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        if resume is None:
            raise SystemExit(f"error: --resume_from_checkpoint {training_args.resume_from_checkpoint}: no checkpoint-* in "
                             f"{training_args.output_dir!r}")
    if resume and not os.path.isdir(resume):
        raise SystemExit(f"error: checkpoint folder {resume!r} does not exist")
    _check_output_dir(training_args.output_dir, resuming=bool(resume), overwrite=ft_args.overwrite_output_dir)
    return resume


def _load_split_data(ft_args: FinetuneArguments, training_args):
    """The validated rows and their fixed ``(train_indices, eval_indices)`` split; evaluation is switched off when
    nothing is held out."""
    ds = load_finetune_data(ft_args.data, ft_args.caption_column, ft_args.image_column, ft_args.min_image_size, ft_args.drop_invalid)
    train_idx, eval_idx = split_holdout(len(ds), ft_args.eval_fraction, ft_args.max_eval_samples, ft_args.split_seed)
    if ft_args.max_train_samples is not None:
        train_idx = train_idx[: ft_args.max_train_samples]
    if not eval_idx and training_args.eval_strategy != "no":
        logger.warning("no held-out rows (--eval_fraction 0): evaluation and sample grids are off")
        training_args.eval_strategy = "no"
        training_args.eval_on_start = False
    logger.info("data: %d rows (%d for training, %d held out for evaluation)", len(ds), len(train_idx), len(eval_idx))
    return ds, train_idx, eval_idx


def _pretokenized(ft_args: FinetuneArguments, training_args, ds, pipe):
    """Token grids ``(h, w, M)`` of every row, computed once with the pipeline's image tokenizer and cached in
    ``finetune-<hash>.parquet`` (hash of the data files, the kept rows and the tokenizer weights); the main
    process writes the cache first and the others read it."""
    cfg, tok_cfg = pipe.transformer.config, pipe.image_tokenizer.config
    cache_dir = ft_args.pretokenize_cache_dir or default_cache_dir()
    key = hashlib.sha256(f"{_fingerprint(ft_args.data, ds)}:{_tokenizer_hash(pipe.image_tokenizer)}".encode()).hexdigest()[:16]
    cache = os.path.join(cache_dir, f"finetune-{key}.parquet")
    with training_args.main_process_first(desc="pre-tokenising"):
        if not os.path.isfile(cache):
            tokenized = pretokenize_dataset(
                ds, pipe.image_tokenizer, batch_size=ft_args.pretokenize_batch_size, device=training_args.device,
                fingerprint=key, desc="pre-tokenising images",
            )
            if training_args.process_index == 0:
                os.makedirs(cache_dir, exist_ok=True)
                tmp = f"{cache}.tmp-{os.getpid()}"
                tokenized.to_parquet(tmp)
                os.replace(tmp, cache)
        pipe.image_tokenizer.to("cpu")
    tokens = load_pretokenized(cache, tok_cfg.codebook_size)
    first = np.asarray(tokens.with_format("numpy")[0]["codes"])
    if first.shape != (cfg.grid_height, cfg.grid_width, cfg.num_groups) or tok_cfg.codebook_size != cfg.codebook_size:
        raise ValueError(f"the pipeline's image tokenizer gives {first.shape} grids of K={tok_cfg.codebook_size} codes but the "
                         f"transformer expects ({cfg.grid_height}, {cfg.grid_width}, {cfg.num_groups}) and K={cfg.codebook_size}")
    return tokens


def _trainable_model(ft_args: FinetuneArguments, transformer):
    """The transformer itself (full fine-tuning) or wrapped with LoRA adapters."""
    model = _apply_lora(transformer, ft_args) if ft_args.lora else transformer
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("trainable parameters: %.3fM of %.2fM (%s)", n_train / 1e6, sum(p.numel() for p in model.parameters()) / 1e6,
                "LoRA" if ft_args.lora else "full fine-tuning")
    return model


def _build_trainer(ft_args: FinetuneArguments, training_args, pipe, model, train_raw, eval_raw, resume):
    """The Trainer (training masks from ``--seed``, evaluation masks from ``--eval_seed``) and its callbacks: the
    collator epoch, EMA, the time limit and the sample grids. Returns ``(trainer, ema or None, sampler or None)``."""
    cfg = pipe.transformer.config
    train_collator = M6FashionCollator(cfg, text_tokenizer=pipe.tokenizer, seed=training_args.seed)
    eval_collator = M6FashionCollator(cfg, text_tokenizer=pipe.tokenizer, seed=ft_args.eval_seed)
    ema = EMACallback(model, ft_args.ema_decay, resume_from=resume) if ft_args.ema else None
    callbacks: List[TrainerCallback] = [CollatorEpochCallback(train_collator)] + ([ema] if ema is not None else [])
    if training_args.max_train_minutes:
        callbacks.append(TimeLimitCallback(training_args.max_train_minutes))
    sampler = None
    prompts = ft_args.sample_prompts or ([eval_raw[i]["text"] for i in range(min(ft_args.num_sample_prompts, len(eval_raw)))]
                                         if eval_raw is not None else [])
    if prompts and (eval_raw is not None or ft_args.sample_prompts):
        sampler = SampleGridCallback(pipe, _sampling_module(model), prompts, training_args.output_dir,
                                     ft_args.sample_steps, ft_args.sample_seed)
        callbacks.append(sampler)
    trainer = build_trainer(model, training_args, train_raw, eval_raw, (train_collator, eval_collator), pipe.tokenizer,
                            callbacks, ema=ema)
    return trainer, ema, sampler


def _train_and_evaluate(trainer, ema: Optional[EMACallback], resume: Optional[str], evaluating: bool) -> dict:
    """Trains, puts the EMA weights into the model (they are the result), and reports the held-out metrics of the
    last step (evaluating again only when the eval strategy did not already do it at that step)."""
    train_result = trainer.train(resume_from_checkpoint=resume)
    results = dict(train_result.metrics)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    if ema is not None:
        ema.copy_to_model()
        ema.active = False
    if evaluating:
        done = [h for h in trainer.state.log_history if "eval_loss" in h and h.get("step") == trainer.state.global_step]
        if done:
            metrics = {k: v for k, v in done[-1].items() if k.startswith("eval_") or k == "epoch"}
        else:
            metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    return results


def _save_pipeline(ft_args: FinetuneArguments, out: str, pipe, model, results: dict, rows: dict) -> None:
    """Writes the complete pipeline folder ``out`` (decoders and tokenizers unchanged; the transformer with the
    LoRA adapter merged, or its base weights plus ``transformer_lora/`` with ``--save_adapter``), the run's
    ``finetune_args.json`` (with ``rows``) and the model card."""
    from ..default_model import DEFAULT_MODEL_NAME
    from ..pipelines import M6FashionPipeline

    final = model
    if ft_args.lora and ft_args.save_adapter:
        model.save_pretrained(os.path.join(out, ADAPTER_DIR))
        _portable_base_reference(os.path.join(out, ADAPTER_DIR), ft_args.model or DEFAULT_MODEL_NAME)
        final = model.unload()  # the base weights, untouched
    elif ft_args.lora:
        final = model.merge_and_unload()
    final.eval()
    result_pipe = M6FashionPipeline(
        image_tokenizer=pipe.image_tokenizer, decoder=pipe.decoder, transformer=final,
        tokenizer=pipe.tokenizer, scheduler=pipe.scheduler, decoder_hr=pipe.decoder_hr,
    ).to("cpu")
    if ft_args.save_dtype == "float16":
        result_pipe.to(torch.float16)
    result_pipe.save_pretrained(out)
    with open(os.path.join(out, "finetune_args.json"), "w") as f:
        json.dump({**asdict(ft_args), "model": ft_args.model or f"{DEFAULT_MODEL_NAME} (shipped)", **rows}, f, indent=2)
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(_model_card(ft_args, ft_args.model or DEFAULT_MODEL_NAME, rows["num_train_rows"], rows["num_eval_rows"],
                            results, folder=out))
    logger.info("fine-tuned pipeline written to %s", out)


def _run(ft_args: FinetuneArguments, training_args) -> dict:
    """Checks, data (validated before anything is loaded or written), pre-tokenisation, training, result."""
    from ..default_model import default_model_path
    from ..pipelines import M6FashionPipeline

    push = _setup(training_args)
    resume = _check_arguments(ft_args, training_args, push)
    ds, train_idx, eval_idx = _load_split_data(ft_args, training_args)

    pipe = M6FashionPipeline.from_pretrained(ft_args.model or default_model_path())
    unk_rate, unk_words = _unknown_word_report(pipe.tokenizer, ds.select_columns(["text"]).select(train_idx[:5000])["text"])
    if unk_rate > 0:
        logger.warning("%.1f%% of the caption tokens are not in the model's vocabulary and become [UNK] (most frequent: %s); "
                       "the text tokenizer is kept as it is", 100 * unk_rate, ", ".join(f"{w!r} x{c}" for w, c in unk_words))
    tokens = _pretokenized(ft_args, training_args, ds, pipe)
    train_raw, eval_raw = tokens.select(train_idx), (tokens.select(eval_idx) if eval_idx else None)

    set_seed(training_args.seed)
    model = _trainable_model(ft_args, pipe.transformer)
    trainer, ema, sampler = _build_trainer(ft_args, training_args, pipe, model, train_raw, eval_raw, resume)
    results = _train_and_evaluate(trainer, ema, resume, eval_raw is not None)
    end_distributed(trainer)  # every process has trained and evaluated; saving and pushing are process 0's

    if trainer.is_world_process_zero():
        rows = {"num_train_rows": len(train_idx), "num_eval_rows": len(eval_idx), "global_step": trainer.state.global_step}
        _save_pipeline(ft_args, training_args.output_dir, pipe, model, results, rows)
        if push:
            repo_id = _push(training_args.output_dir, training_args.hub_model_id, training_args)
            logger.info("pushed to the Hub: %s", repo_id)
    if sampler is not None:
        results["sample_grids"] = list(sampler.written)
    return results


if __name__ == "__main__":
    main()
