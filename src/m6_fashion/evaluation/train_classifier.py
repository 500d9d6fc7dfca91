"""Trains the attribute classifier (articleType, baseColour, gender) on the train split, on CPU.

    python -m m6_fashion.evaluation.train_classifier --output_dir src/m6_fashion/pretrained/attribute-classifier --max_steps 2500

The first run decodes the split's JPEGs once into a uint8 tensor cache (``--cache_dir``, default
``.cache/m6-fashion``); later runs load that file in seconds. A held-out slice of the train split
(``--val_size``) is used for progress logging; the test split is evaluated once, after training, and the
per-head accuracies (with the majority-class rate as chance) are written to ``eval_results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from .attribute_classifier import (
    DEFAULT_CACHE_DIR,
    DEFAULT_DATA_DIR,
    HEADS,
    AttributeClassifier,
    evaluate_accuracy,
    load_split_cache,
)


def _augment(x: torch.Tensor, generator: torch.Generator, max_shift: int = 4) -> torch.Tensor:
    """Random horizontal flip and a random translation of up to ``max_shift`` px (white fill) per image."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if max_shift > 0:
        padded = F.pad(x, (max_shift,) * 4, value=1.0)
        dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
        dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None]).view(b, 1, h, 1).expand(b, 3, h, w + 2 * max_shift)
        cols = (dx[:, None] + torch.arange(w)[None]).view(b, 1, 1, w).expand(b, 3, h, w)
        padded = padded.gather(2, rows)
        x = padded.gather(3, cols)
    return x


def _labels_to_index(values: Sequence[str], vocab: List[str]) -> torch.Tensor:
    lookup = {name: i for i, name in enumerate(vocab)}
    return torch.tensor([lookup.get(v, -100) for v in values], dtype=torch.long)


def train_classifier(
    output_dir: Optional[str],
    max_steps: int = 2500,
    batch_size: int = 128,
    learning_rate: float = 3e-3,
    weight_decay: float = 5e-4,
    warmup_steps: int = 100,
    label_smoothing: float = 0.05,
    block_out_channels: Sequence[int] = (32, 64, 128, 256),
    dropout: float = 0.1,
    val_size: int = 1000,
    data_dir: str = DEFAULT_DATA_DIR,
    cache_dir: Optional[str] = DEFAULT_CACHE_DIR,
    train_limit: Optional[int] = None,
    test_limit: Optional[int] = None,
    num_threads: Optional[int] = 1,
    time_budget_s: Optional[float] = None,
    log_every: int = 50,
    eval_every: int = 500,
    seed: int = 0,
    train_data: Optional[Dict[str, object]] = None,
    test_data: Optional[Dict[str, object]] = None,
    verbose: bool = True,
    command: Optional[str] = None,
) -> tuple:
    """Trains, evaluates on the test split and (when ``output_dir`` is set) saves the model.

    Returns ``(model, results)`` where ``results`` holds the per-head test accuracy and majority-class
    chance. ``train_data`` / ``test_data`` may be passed pre-loaded (the dicts of ``load_split_cache``).
    """
    if max_steps < 0:
        raise ValueError(f"max_steps must be >= 0; got {max_steps}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2; got {batch_size}")
    if num_threads:
        torch.set_num_threads(num_threads)
    log = print if verbose else (lambda *a, **k: None)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    t_start = time.time()

    if train_data is None:
        train_data = load_split_cache("train", data_dir, cache_dir, limit=train_limit, verbose=verbose)
    if test_data is None:
        test_data = load_split_cache("test", data_dir, cache_dir, limit=test_limit, verbose=verbose)
    log(f"data ready in {time.time() - t_start:.0f}s: {len(train_data['ids'])} train, {len(test_data['ids'])} test images", flush=True)

    vocab = {h: sorted(set(train_data[h]) - {None}) for h in HEADS}
    model = AttributeClassifier(
        article_type_labels=vocab["articleType"],
        base_colour_labels=vocab["baseColour"],
        gender_labels=vocab["gender"],
        sample_size=int(train_data["images"].shape[-1]),
        block_out_channels=tuple(block_out_channels),
        dropout=dropout,
    )
    model = model.to(memory_format=torch.channels_last)

    images: torch.Tensor = train_data["images"]  # uint8 (N, 3, S, S)
    targets = {h: _labels_to_index(train_data[h], vocab[h]) for h in HEADS}
    n = images.shape[0]
    perm = torch.randperm(n, generator=gen)
    val_size = min(val_size, n // 10)
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    if len(train_idx) < batch_size:
        batch_size = len(train_idx)

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=learning_rate
    )

    def lr_factor(step: int, elapsed: float) -> float:
        """Linear warmup, then cosine decay; with a time budget the decay follows whichever of the step
        count and the elapsed training time is further along, so a run cut short still anneals."""
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        if time_budget_s is not None:
            progress = max(progress, elapsed / max(1.0, time_budget_s - (t_train - t_start)))
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def val_accuracy() -> Dict[str, float]:
        if val_size == 0:
            return {}
        acc = evaluate_accuracy(model, images[val_idx], {h: [train_data[h][i] for i in val_idx.tolist()] for h in HEADS})
        model.train()
        return {h: round(v["accuracy"], 4) for h, v in acc.items()}

    model.train()
    order = train_idx[torch.randperm(len(train_idx), generator=gen)]
    cursor = 0
    t_train = time.time()
    step = 0
    running = 0.0
    stopped_early = False
    for step in range(1, max_steps + 1):
        if cursor + batch_size > len(order):
            order = train_idx[torch.randperm(len(train_idx), generator=gen)]
            cursor = 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        lr = learning_rate * lr_factor(step - 1, time.time() - t_train)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = images[idx].float().div(127.5).sub(1.0)
        x = _augment(x, gen).contiguous(memory_format=torch.channels_last)
        out = model(x)
        loss = sum(
            F.cross_entropy(out.logits[h], targets[h][idx], label_smoothing=label_smoothing, ignore_index=-100)
            for h in HEADS
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += loss.item()
        if step % log_every == 0 or step == max_steps:
            elapsed = time.time() - t_train
            k = log_every if step % log_every == 0 else step % log_every
            log(
                f"step {step}/{max_steps} loss {running / k:.4f} lr {lr:.2e} "
                f"{step * batch_size / elapsed:.0f} img/s elapsed {elapsed:.0f}s eta {elapsed / step * (max_steps - step):.0f}s",
                flush=True,
            )
            running = 0.0
        if eval_every and step % eval_every == 0 and step < max_steps:
            log(f"step {step} val accuracy {val_accuracy()}", flush=True)
        if time_budget_s is not None and time.time() - t_start > time_budget_s:
            log(f"time budget of {time_budget_s:.0f}s reached at step {step}; stopping", flush=True)
            stopped_early = True
            break

    model.eval()
    model = model.to(memory_format=torch.contiguous_format)
    val = val_accuracy()
    model.eval()
    test = evaluate_accuracy(model, test_data["images"], {h: test_data[h] for h in HEADS})
    results = {
        "test": test,
        "val_accuracy": val,
        "steps": step,
        "stopped_early": stopped_early,
        "batch_size": batch_size,
        "train_images": int(len(train_idx)),
        "val_images": int(val_size),
        "test_images": int(len(test_data["ids"])),
        "train_seconds": round(time.time() - t_train, 1),
        "num_threads": torch.get_num_threads(),
        "seed": seed,
        "command": command
        or "python -m m6_fashion.evaluation.train_classifier "
        f"--max_steps {max_steps} --batch_size {batch_size} --learning_rate {learning_rate} --seed {seed}"
        + (f" --time_budget_s {time_budget_s:g}" if time_budget_s is not None else ""),
    }
    for h in HEADS:
        log(
            f"test {h}: accuracy {test[h]['accuracy']:.4f} vs chance (majority '{test[h]['majority_label']}') "
            f"{test[h]['chance_majority']:.4f}",
            flush=True,
        )
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        model.save_pretrained(output_dir, safe_serialization=True)
        with open(os.path.join(output_dir, "eval_results.json"), "w") as f:
            json.dump(results, f, indent=2)
        log(f"saved to {output_dir}", flush=True)
    return model, results


def evaluate_saved(
    model_dir: str,
    data_dir: str = DEFAULT_DATA_DIR,
    cache_dir: Optional[str] = DEFAULT_CACHE_DIR,
    num_threads: Optional[int] = 1,
) -> Dict[str, Dict[str, float]]:
    """Test-split accuracy per head (vs majority-class chance) of a saved classifier; prints a table."""
    if num_threads:
        torch.set_num_threads(num_threads)
    model = AttributeClassifier.from_pretrained(model_dir).eval()
    test = load_split_cache("test", data_dir, cache_dir, size=model.config.sample_size)
    result = evaluate_accuracy(model, test["images"], {h: test[h] for h in HEADS})
    print(f"{'head':<12} {'accuracy':>9} {'chance':>9}  majority class   (n={len(test['ids'])} test images)")
    for h in HEADS:
        r = result[h]
        print(f"{h:<12} {r['accuracy']:>9.4f} {r['chance_majority']:>9.4f}  {r['majority_label']}")
    return result


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--max_steps", type=int, default=2500)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--learning_rate", type=float, default=3e-3)
    p.add_argument("--weight_decay", type=float, default=5e-4)
    p.add_argument("--warmup_steps", type=int, default=100)
    p.add_argument("--label_smoothing", type=float, default=0.05)
    p.add_argument("--block_out_channels", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--val_size", type=int, default=1000)
    p.add_argument("--data_dir", default=DEFAULT_DATA_DIR)
    p.add_argument("--cache_dir", default=DEFAULT_CACHE_DIR, help="where the decoded uint8 image cache is kept ('' disables it)")
    p.add_argument("--train_limit", type=int, default=None, help="use only the first N train rows (smoke runs)")
    p.add_argument("--test_limit", type=int, default=None)
    p.add_argument("--num_threads", type=int, default=1)
    p.add_argument("--time_budget_s", type=float, default=None, help="stop training (and still evaluate/save) after this many seconds")
    p.add_argument("--log_every", type=int, default=50)
    p.add_argument("--eval_every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval_only", action="store_true", help="only evaluate the model in --output_dir on the test split")
    a = p.parse_args(argv)
    if a.eval_only:
        evaluate_saved(a.output_dir, data_dir=a.data_dir, cache_dir=a.cache_dir or None, num_threads=a.num_threads)
        return
    train_classifier(
        output_dir=a.output_dir,
        max_steps=a.max_steps,
        batch_size=a.batch_size,
        learning_rate=a.learning_rate,
        weight_decay=a.weight_decay,
        warmup_steps=a.warmup_steps,
        label_smoothing=a.label_smoothing,
        block_out_channels=a.block_out_channels,
        dropout=a.dropout,
        val_size=a.val_size,
        data_dir=a.data_dir,
        cache_dir=a.cache_dir or None,
        train_limit=a.train_limit,
        test_limit=a.test_limit,
        num_threads=a.num_threads,
        time_budget_s=a.time_budget_s,
        log_every=a.log_every,
        eval_every=a.eval_every,
        seed=a.seed,
        command="python -m m6_fashion.evaluation.train_classifier " + " ".join(sys.argv[1:] if argv is None else argv),
    )


if __name__ == "__main__":
    main()
