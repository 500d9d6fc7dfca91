"""Trains the attribute classifier (articleType, baseColour, gender) on the train split, on CPU.

    python -m m6_fashion.evaluation.train_classifier --output_dir src/m6_fashion/pretrained/attribute-classifier --max_steps 2500

With ``--colour_input luma`` the classifier reads only the lightness of the image and has no baseColour head; its
training batches also get the garment's lightness remapped at random (``_lightness_jitter``), so that neither hue
nor how dark a garment is can stand in for its article type.

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
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..errors import parse_arguments
from .attribute_classifier import (
    DEFAULT_CACHE_DIR,
    DEFAULT_DATA_DIR,
    HEADS,
    AttributeClassifier,
    evaluate_accuracy,
    load_split_cache,
    to_luma,
)
from .common import logger, progress_bar, set_quiet


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


def _lightness_jitter(x: torch.Tensor, generator: torch.Generator, keep: float = 0.25, white: float = 0.92,
                      ramp: float = 0.06) -> torch.Tensor:
    """Luma of RGB ``x`` (B, 3, H, W) in [-1, 1] with the product's lightness remapped at random, as 3 equal channels.

    Per image (a share ``keep`` left as it is): luma ``y`` in [0, 1] of the non-background pixels becomes
    ``a + b * y`` with ``b`` ~ U(0.3, 1) (shading keeps its direction, with less contrast) and ``a`` ~ U(0, 0.85 (1 - b)),
    so a black garment may come out light grey and a white one mid grey; the white background (``y >= white``)
    stays, blended over ``ramp`` below it. Stands in for recolouring: the article judge must not learn "dark and
    shiny = formal shoes" or "mid-blue = jeans".
    """
    b = x.shape[0]
    y = (to_luma(x) + 1.0) / 2.0
    gain = 0.3 + 0.7 * torch.rand(b, generator=generator)
    offset = torch.rand(b, generator=generator) * 0.85 * (1.0 - gain)
    on = (torch.rand(b, generator=generator) >= keep).float()
    gain, offset = gain * on + (1 - on), offset * on
    garment = ((white - y) / ramp).clamp(0.0, 1.0)
    mapped = offset.view(b, 1, 1, 1) + gain.view(b, 1, 1, 1) * y
    y = garment * mapped + (1 - garment) * y
    return (y * 2.0 - 1.0).expand(-1, 3, -1, -1)


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
    colour_input: str = "rgb",
    train_data: Optional[Dict[str, object]] = None,
    test_data: Optional[Dict[str, object]] = None,
    verbose: bool = True,
    command: Optional[str] = None,
) -> tuple:
    """Trains, evaluates on the test split and (when ``output_dir`` is set) saves the model.

    Returns ``(model, results)`` where ``results`` holds the per-head test accuracy and majority-class
    chance. ``train_data`` / ``test_data`` may be passed pre-loaded (the dicts of ``load_split_cache``).
    Progress goes to the ``diffusers.m6_fashion.evaluation`` logger (INFO) when ``verbose``.
    """
    if max_steps < 0:
        raise ValueError(f"max_steps must be >= 0; got {max_steps}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2; got {batch_size}")
    if colour_input not in ("rgb", "luma"):
        raise ValueError(f"colour_input must be 'rgb' or 'luma'; got {colour_input!r}")
    if num_threads:
        torch.set_num_threads(num_threads)
    log = logger.info if verbose else (lambda *a, **k: None)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    t_start = time.time()
    if train_data is None:
        train_data = load_split_cache("train", data_dir, cache_dir, limit=train_limit, verbose=verbose)
    if test_data is None:
        test_data = load_split_cache("test", data_dir, cache_dir, limit=test_limit, verbose=verbose)
    log(f"data ready in {time.time() - t_start:.0f}s: {len(train_data['ids'])} train, {len(test_data['ids'])} test images")

    model, vocab = _new_model(train_data, block_out_channels, dropout, colour_input)
    n = train_data["images"].shape[0]
    perm = torch.randperm(n, generator=gen)
    val_size = min(val_size, n // 10)
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    batch_size = min(batch_size, len(train_idx))
    schedule = _Schedule(learning_rate, warmup_steps, max_steps, time_budget_s)
    loop = _TrainLoop(model, train_data, vocab, train_idx, val_idx, batch_size, label_smoothing, gen, log)
    step, stopped_early = loop.run(_optimizer(model, learning_rate, weight_decay), schedule, t_start, log_every, eval_every,
                                   show_progress=verbose)

    model.eval()
    model = model.to(memory_format=torch.contiguous_format)
    val = loop.val_accuracy()
    model.eval()
    test = evaluate_accuracy(model, test_data["images"], {h: test_data[h] for h in model.head_names})
    results = {
        "test": test,
        "val_accuracy": val,
        "steps": step,
        "stopped_early": stopped_early,
        "batch_size": batch_size,
        "train_images": int(len(train_idx)),
        "val_images": int(val_size),
        "test_images": int(len(test_data["ids"])),
        "train_seconds": round(time.time() - loop.t_train, 1),
        "num_threads": torch.get_num_threads(),
        "seed": seed,
        "colour_input": colour_input,
        "command": command
        or "python -m m6_fashion.evaluation.train_classifier "
        f"--max_steps {max_steps} --batch_size {batch_size} --learning_rate {learning_rate} --seed {seed} --colour_input {colour_input}"
        + (f" --time_budget_s {time_budget_s:g}" if time_budget_s is not None else ""),
    }
    for h in model.head_names:
        log(f"test {h}: accuracy {test[h]['accuracy']:.4f} vs chance (majority '{test[h]['majority_label']}') "
            f"{test[h]['chance_majority']:.4f}")
    if output_dir:
        _save(model, results, output_dir)
        log(f"saved to {output_dir}")
    return model, results


def _new_model(train_data: Dict, block_out_channels: Sequence[int], dropout: float,
               colour_input: str = "rgb") -> Tuple[AttributeClassifier, Dict[str, List[str]]]:
    """An untrained classifier (channels-last) whose label vocabularies are the sorted values of the train split
    (no baseColour head for a luma classifier)."""
    heads = [h for h in HEADS if not (colour_input == "luma" and h == "baseColour")]
    vocab = {h: sorted(set(train_data[h]) - {None}) for h in heads}
    model = AttributeClassifier(
        article_type_labels=vocab["articleType"],
        base_colour_labels=vocab.get("baseColour", ()),
        gender_labels=vocab["gender"],
        sample_size=int(train_data["images"].shape[-1]),
        block_out_channels=tuple(block_out_channels),
        dropout=dropout,
        colour_input=colour_input,
    )
    return model.to(memory_format=torch.channels_last), vocab


def _optimizer(model: AttributeClassifier, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with weight decay on the weight matrices and kernels only (no decay on biases and BN parameters)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=learning_rate
    )


class _Schedule:
    """Learning rate: linear warmup over ``warmup_steps``, then cosine decay to 0 at ``max_steps``.

    With a time budget the decay follows whichever of the step count and the elapsed training time is further
    along, so a run cut short still anneals: ``progress = max(steps done / steps, elapsed / time left for training)``.
    """

    def __init__(self, learning_rate: float, warmup_steps: int, max_steps: int, time_budget_s: Optional[float]):
        self.learning_rate, self.warmup_steps, self.max_steps, self.time_budget_s = learning_rate, warmup_steps, max_steps, time_budget_s

    def __call__(self, step: int, elapsed: float, setup_seconds: float) -> float:
        """The learning rate of 0-based ``step`` after ``elapsed`` training seconds (``setup_seconds`` spent before)."""
        if step < self.warmup_steps:
            factor = (step + 1) / self.warmup_steps
        else:
            progress = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
            if self.time_budget_s is not None:
                progress = max(progress, elapsed / max(1.0, self.time_budget_s - setup_seconds))
            factor = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return self.learning_rate * factor


class _TrainLoop:
    """The optimisation loop: shuffled epochs over ``train_idx``, augmented batches, summed per-head cross-entropy."""

    def __init__(self, model, train_data: Dict, vocab: Dict[str, List[str]], train_idx, val_idx, batch_size: int,
                 label_smoothing: float, gen: torch.Generator, log: Callable):
        self.model, self.train_data, self.train_idx, self.val_idx = model, train_data, train_idx, val_idx
        self.images: torch.Tensor = train_data["images"]  # uint8 (N, 3, S, S)
        self.targets = {h: _labels_to_index(train_data[h], vocab[h]) for h in model.head_names}
        self.luma = model.config.colour_input == "luma"
        self.batch_size, self.label_smoothing, self.gen, self.log = batch_size, label_smoothing, gen, log
        self.t_train = time.time()

    def val_accuracy(self) -> Dict[str, float]:
        """Per-head accuracy on the held-out train rows (leaves the model in training mode)."""
        if len(self.val_idx) == 0:
            return {}
        labels = {h: [self.train_data[h][i] for i in self.val_idx.tolist()] for h in self.model.head_names}
        acc = evaluate_accuracy(self.model, self.images[self.val_idx], labels)
        self.model.train()
        return {h: round(v["accuracy"], 4) for h, v in acc.items()}

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.images[idx].float().div(127.5).sub(1.0)
        x = _augment(x, self.gen)
        if self.luma:
            x = _lightness_jitter(x, self.gen)
        out = self.model(x.contiguous(memory_format=torch.channels_last))
        return sum(
            F.cross_entropy(out.logits[h], self.targets[h][idx], label_smoothing=self.label_smoothing, ignore_index=-100)
            for h in self.model.head_names
        )

    def run(self, optimizer, schedule: _Schedule, t_start: float, log_every: int, eval_every: int,
            show_progress: bool = True) -> Tuple[int, bool]:
        """Trains up to ``schedule.max_steps`` steps or the time budget; returns ``(last step, stopped early)``."""
        max_steps, budget = schedule.max_steps, schedule.time_budget_s
        self.model.train()
        order = self.train_idx[torch.randperm(len(self.train_idx), generator=self.gen)]
        cursor, step, running = 0, 0, 0.0
        self.t_train = time.time()
        bar = progress_bar(max_steps, "training", disable=not show_progress)
        for step in range(1, max_steps + 1):
            if cursor + self.batch_size > len(order):
                order = self.train_idx[torch.randperm(len(self.train_idx), generator=self.gen)]
                cursor = 0
            idx = order[cursor : cursor + self.batch_size]
            cursor += self.batch_size
            lr = schedule(step - 1, time.time() - self.t_train, self.t_train - t_start)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = self.loss(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item()
            bar.update(1)
            if step % log_every == 0 or step == max_steps:
                self._log_step(step, max_steps, running / (log_every if step % log_every == 0 else step % log_every), lr)
                running = 0.0
            if eval_every and step % eval_every == 0 and step < max_steps:
                self.log(f"step {step} val accuracy {self.val_accuracy()}")
            if budget is not None and time.time() - t_start > budget:
                self.log(f"time budget of {budget:.0f}s reached at step {step}; stopping")
                bar.close()
                return step, True
        bar.close()
        return step, False

    def _log_step(self, step: int, max_steps: int, mean_loss: float, lr: float) -> None:
        elapsed = time.time() - self.t_train
        self.log(f"step {step}/{max_steps} loss {mean_loss:.4f} lr {lr:.2e} {step * self.batch_size / elapsed:.0f} img/s "
                 f"elapsed {elapsed:.0f}s eta {elapsed / step * (max_steps - step):.0f}s")


def _save(model: AttributeClassifier, results: Dict, output_dir: str) -> None:
    """Weights (safetensors) and config, with the test figures in ``eval_results.json`` beside them."""
    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir, safe_serialization=True)
    with open(os.path.join(output_dir, "eval_results.json"), "w") as f:
        json.dump(results, f, indent=2)


def evaluate_saved(
    model_dir: str,
    data_dir: str = DEFAULT_DATA_DIR,
    cache_dir: Optional[str] = DEFAULT_CACHE_DIR,
    num_threads: Optional[int] = 1,
) -> Dict[str, Dict[str, float]]:
    """Test-split accuracy per head (vs majority-class chance) of a saved classifier; prints a table."""
    if num_threads:
        torch.set_num_threads(num_threads)
    model = AttributeClassifier.from_pretrained(model_dir, torch_dtype=torch.float32).eval()  # weights may be stored in float16
    test = load_split_cache("test", data_dir, cache_dir, size=model.config.sample_size)
    result = evaluate_accuracy(model, test["images"], {h: test[h] for h in model.head_names})
    print(f"{'head':<12} {'accuracy':>9} {'chance':>9}  majority class   (n={len(test['ids'])} test images)")
    for h in model.head_names:
        r = result[h]
        print(f"{h:<12} {r['accuracy']:>9.4f} {r['chance_majority']:>9.4f}  {r['majority_label']}")
    return result


@dataclass
class ClassifierTrainingArguments:
    """The options of ``python -m m6_fashion.evaluation.train_classifier`` (the keywords of :func:`train_classifier`)."""

    output_dir: str = field(metadata={"help": "where the model and eval_results.json are written (read with --eval_only)"})
    max_steps: int = field(default=2500)
    batch_size: int = field(default=128)
    learning_rate: float = field(default=3e-3)
    weight_decay: float = field(default=5e-4)
    warmup_steps: int = field(default=100)
    label_smoothing: float = field(default=0.05)
    block_out_channels: List[int] = field(default_factory=lambda: [32, 64, 128, 256])
    dropout: float = field(default=0.1)
    val_size: int = field(default=1000)
    data_dir: str = field(default=DEFAULT_DATA_DIR)
    cache_dir: str = field(default=DEFAULT_CACHE_DIR, metadata={"help": "where the decoded uint8 image cache is kept ('' disables it)"})
    train_limit: Optional[int] = field(default=None, metadata={"help": "use only the first N train rows (smoke runs)"})
    test_limit: Optional[int] = field(default=None)
    num_threads: int = field(default=1)
    time_budget_s: Optional[float] = field(default=None, metadata={
        "help": "stop training (and still evaluate/save) after this many seconds"})
    log_every: int = field(default=50)
    eval_every: int = field(default=500)
    seed: int = field(default=0)
    colour_input: str = field(default="rgb", metadata={
        "help": "'rgb', or 'luma': lightness only, no baseColour head, lightness-jittered training (the colour-blind article judge)"})
    eval_only: bool = field(default=False, metadata={"help": "only evaluate the model in --output_dir on the test split"})


def main(argv: Optional[List[str]] = None) -> None:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(ClassifierTrainingArguments, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    (a,) = parse_arguments(parser, argv)
    set_quiet(False)
    if a.eval_only:
        evaluate_saved(a.output_dir, data_dir=a.data_dir, cache_dir=a.cache_dir or None, num_threads=a.num_threads)
        return
    kwargs = asdict(a)
    del kwargs["eval_only"]
    kwargs["cache_dir"] = a.cache_dir or None  # '' turns the cache off
    command = "python -m m6_fashion.evaluation.train_classifier " + " ".join(sys.argv[1:] if argv is None else argv)
    train_classifier(**kwargs, command=command)

if __name__ == "__main__":
    main()
