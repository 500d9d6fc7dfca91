"""LoRA adapters and publishing of a fine-tuned pipeline: applying ``peft`` LoRA to the transformer, loading a
saved adapter, the files uploaded to the Hub and the model card."""

from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Optional

import torch

from .callbacks import SAMPLES_DIR

__all__ = ["ADAPTER_DIR", "load_lora_adapter", "hub_files"]

ADAPTER_DIR = "transformer_lora"


def load_lora_adapter(pipeline, adapter_dir: str, merge: bool = True):
    """Applies a LoRA adapter saved by ``finetune --lora --save_adapter`` to ``pipeline.transformer``.

    ``merge=True`` folds the adapter into the weights (plain ``M6FashionTransformer``, no ``peft`` at
    inference); ``merge=False`` keeps it as a removable adapter. The same as ``pipeline.load_lora_weights``
    (+ ``pipeline.fuse_lora()``). Returns the pipeline.
    """
    if not os.path.isfile(os.path.join(adapter_dir, "adapter_config.json")):
        raise FileNotFoundError(f"no LoRA adapter (adapter_config.json) in {adapter_dir!r}")
    pipeline.load_lora_weights(adapter_dir)
    if merge:
        pipeline.fuse_lora()
    return pipeline


def _portable_base_reference(adapter_dir: str, base: str) -> None:
    """peft records the base model's local folder (a path of this machine) in ``adapter_config.json``; the
    published adapter names the base as the user gave it (a shipped name, Hub id or folder) instead."""
    path = os.path.join(adapter_dir, "adapter_config.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    config["base_model_name_or_path"] = base
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)


def _apply_lora(transformer, args):
    """``transformer`` wrapped by ``peft`` with LoRA adapters (rank ``args.lora_rank``, update scaled by
    ``lora_alpha / lora_rank``) on the linear layers named in ``args.lora_target_modules``."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("--lora needs peft: pip install 'm6-fashion[finetune]'") from e
    targets = [t.strip() for t in args.lora_target_modules.split(",") if t.strip()]
    if args.lora_rank < 1:
        raise ValueError(f"--lora_rank must be >= 1; got {args.lora_rank}")
    names = {n.rsplit(".", 1)[-1] for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    unknown = [t for t in targets if t not in names]
    if not targets or unknown:
        raise ValueError(f"--lora_target_modules {args.lora_target_modules!r}: {unknown or 'none given'} not among the "
                         f"transformer's linear layers {sorted(names)}")
    config = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                        target_modules=targets, bias="none")
    return get_peft_model(transformer, config)


def _sampling_module(model):
    """The module the pipeline should call: the LoRA-injected base model of a PeftModel, else the model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def hub_files(folder: str) -> List[str]:
    """Files of a fine-tuned pipeline folder that are uploaded to the Hub (no checkpoints, no logs)."""
    keep_top = {"model_index.json", "README.md", "finetune_args.json", "eval_results.json", "train_results.json", "all_results.json"}
    keep_dirs = ("image_tokenizer", "decoder", "transformer", "tokenizer", "scheduler", ADAPTER_DIR, SAMPLES_DIR)
    out = []
    for root, dirs, files in os.walk(folder):
        rel_root = os.path.relpath(root, folder)
        top = rel_root.split(os.sep)[0]
        if rel_root != "." and top not in keep_dirs:
            dirs[:] = []
            continue
        for f in files:
            rel = os.path.normpath(os.path.join(rel_root, f)).replace(os.sep, "/")
            if rel_root == "." and f not in keep_top:
                continue
            out.append(rel)
    return sorted(out)


def _push(folder: str, repo_id: str, training_args) -> str:
    """Uploads the :func:`hub_files` of ``folder`` to the Hub model repo ``repo_id`` (created if needed)."""
    from huggingface_hub import HfApi

    api = HfApi(token=training_args.hub_token)
    repo = api.create_repo(repo_id, private=bool(training_args.hub_private_repo), exist_ok=True)
    repo_id = getattr(repo, "repo_id", repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=folder, allow_patterns=hub_files(folder),
                      commit_message="m6-fashion finetune", revision=training_args.hub_revision)
    return repo_id


def _model_card(args, base: str, n_train: int, n_eval: int, metrics: Dict,
                folder: Optional[str] = None) -> str:
    """README.md of a fine-tuned pipeline: this body in the shared template (`m6_fashion.hub.build_model_card`:
    Hub front matter, and with `folder` the weights paragraph computed from its safetensors files)."""
    from ..hub import build_model_card

    method = f"LoRA (rank {args.lora_rank}, alpha {args.lora_alpha:g}, on {args.lora_target_modules})" if args.lora else "full fine-tuning"
    if args.lora and args.save_adapter:
        method += "; adapter saved separately in transformer_lora/"
    acc = metrics.get("eval_masked_accuracy")
    lines = [
        "# M6-Fashion, fine-tuned", "",
        f"Fine-tuned from `{base}` on {n_train} images ({n_eval} held out) with `m6-fashion finetune`: {method}"
        + (", EMA of weights" if args.ema else "") + ".", "",
    ]
    if acc is not None:
        lines += [f"Held-out masked-token accuracy: {acc:.4f}.", ""]
    lines += ["```py", "from m6_fashion import M6FashionPipeline", "pipe = M6FashionPipeline.from_pretrained(\"<this folder or repo>\")"]
    if args.lora and args.save_adapter:
        lines += ["from m6_fashion.training.finetune import load_lora_adapter",
                  "pipe = load_lora_adapter(pipe, \"<this folder>/transformer_lora\")"]
    lines += ["image = pipe(\"Men Navy Blue Casual Shirt\").images[0]", "```", ""]
    # base_model only when the base is a Hub repo id (a local folder or the shipped model has none to link to)
    hub_base = base if re.fullmatch(r"[\w.-]+/[\w.-]+", base) and not os.path.exists(base) else None
    return str(build_model_card("\n".join(lines), folder=folder, files=hub_files(folder) if folder else None,
                                base_model=hub_base, tags=["fine-tuned"]))
