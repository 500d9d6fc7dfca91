"""Trains the stage-1 PQ tokenizer and the spatial-style decoder on Parquet fashion photos.

    m6-fashion train-tokenizer --data ../shared/data/fashion-product-images --output_dir runs/stage1
    m6-fashion train-tokenizer --data ../shared/data/fashion-product-images-hr --output_dir runs/hr \
        --height 256 --width 192 --encoder_channels 32 64 128 256 256 --decoder_channels 256 256 128 64 32   # 16x12 grid
    accelerate launch -m m6_fashion.training.train_tokenizer --data ... --output_dir ...   # multi-process

Losses: L1 + (1 - SSIM) reconstruction, commitment, and after `--adv_start_step` a non-saturating
adversarial loss from a StyleGAN2 discriminator with lazy R1 regularisation. Codebooks learn by EMA.
Checkpoints are written with `accelerator.save_state` every `--checkpoint_every` steps; rerunning the same
command resumes from the latest one exactly (same batches, same RNG state). The final models are written
with `save_pretrained` (safetensors) to `OUTPUT_DIR/image_tokenizer` and `OUTPUT_DIR/decoder`.

Image size: `--resolution S` trains on `S x S` images (each photo padded to a white square, then resized bicubic).
`--height H --width W` (both, multiples of the encoder's downsampling factor) train a non-square model instead,
e.g. 256 x 192 for the 3:4 catalogue photos: each photo is padded on white to the `H x W` aspect ratio and resized
(bicubic), so 3:4 photos are only resized and others padded, never cropped (`m6_fashion_core.image.square_image`
with an `(H, W)` size: what the pre-tokeniser and the pipeline do). The tokenizer is saved with `sample_height` / `sample_width`
(`grid_shape = (H / f, W / f)`); the decoder and the discriminator get `sample_size = max(H, W)`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..models import PQTokenizer, StyleDecoder, StyleGANDiscriminator
from .checkpointing import resume_latest
from .data import images_to_array, load_parquet_splits
from .gan_loop import (  # noqa: F401 - batch_indices and to_pixels stay importable from here
    adversarial_loss, batch_indices, checkpoint_or_stop, discriminator_step, log_step, optimizer_step, parse_and_train,
    progress_bar, psnr_per_image, report_eval, ssim, to_pixels,
)


@dataclass
class TokenizerTrainingArguments:
    data: str = field(metadata={"help": "folder with train.parquet/test.parquet (or one .parquet file) with an `image` column"})
    output_dir: str = field(metadata={"help": "where checkpoints, logs and the final models go"})
    resolution: int = field(default=64, metadata={"help": "image side in pixels (64, 128 or 256) of square training images"})
    height: Optional[int] = field(default=None, metadata={
        "help": "with --width: train on height x width images instead of the --resolution square, e.g. 256 x 192 "
                "(photos fitted keeping their aspect, padded with white); multiples of the downsampling factor"})
    width: Optional[int] = field(default=None, metadata={"help": "with --height: training image width in pixels"})
    quantizer_type: str = field(default="product", metadata={"help": "product | vector | residual"})
    num_groups: int = field(default=4, metadata={"help": "M, codebook groups (PQ) or stages (RQ)"})
    codebook_size: int = field(default=256, metadata={"help": "K, codes per codebook"})
    latent_channels: int = field(default=64, metadata={"help": "D, latent channels"})
    encoder_channels: List[int] = field(default_factory=lambda: [64, 128, 256], metadata={"help": "encoder widths; len-1 = number of 2x downsamplings"})
    decoder_channels: List[int] = field(default_factory=lambda: [256, 128, 64], metadata={"help": "decoder widths per resolution"})
    style_channels: int = field(default=128)
    disc_channels: List[int] = field(default_factory=lambda: [64, 128, 256, 256], metadata={
        "help": "discriminator widths; each after the first halves the resolution (add levels for large images: its "
                "last linear layer grows with the grid left)"})
    train_batch_size: int = field(default=32, metadata={"help": "per process"})
    max_train_steps: int = field(default=2000)
    learning_rate: float = field(default=2e-4)
    disc_learning_rate: float = field(default=2e-4)
    ssim_weight: float = field(default=0.5)
    adv_weight: float = field(default=0.05)
    adv_start_step: int = field(default=1000, metadata={"help": "adversarial loss is off before this step (warm-up)"})
    r1_gamma: float = field(default=1.0)
    r1_every: int = field(default=16)
    eval_every: int = field(default=500)
    eval_limit: Optional[int] = field(default=None, metadata={"help": "evaluate on at most this many test images"})
    train_limit: Optional[int] = field(default=None, metadata={"help": "use at most this many train images"})
    checkpoint_every: int = field(default=500)
    checkpoints_total_limit: int = field(default=2)
    seed: int = field(default=0)
    num_proc: Optional[int] = field(default=None, metadata={"help": "processes for image decoding"})
    mixed_precision: str = field(default="no", metadata={"help": "no | bf16 | fp16 (accelerate)"})
    max_minutes: Optional[float] = field(default=None, metadata={"help": "stop (after checkpointing) once this much wall time has passed"})


def sample_shape(args: TokenizerTrainingArguments) -> Tuple[int, int]:
    """``(height, width)`` of the training images: ``(--height, --width)`` when given, else the ``--resolution`` square.
    Raises ``ValueError`` when only one is given, or a side is not a positive multiple of the encoder's downsampling
    factor (or of the discriminator's)."""
    factor = 2 ** (len(args.encoder_channels) - 1)
    if (args.height is None) != (args.width is None):
        raise ValueError(
            f"give both --height and --width (got --height {args.height}, --width {args.width}), or neither to train "
            f"on --resolution {args.resolution} x {args.resolution} images"
        )
    if args.height is None:
        shape, names = (args.resolution, args.resolution), ("--resolution", "--resolution")
    else:
        shape, names = (args.height, args.width), ("--height", "--width")
    for name, value in zip(names, shape):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % factor:
            raise ValueError(
                f"{name} {value} must be a positive multiple of {factor}, the downsampling factor of "
                f"--encoder_channels {' '.join(map(str, args.encoder_channels))} ({len(args.encoder_channels)} levels, "
                f"2^{len(args.encoder_channels) - 1}): a {factor}x{factor}-pixel cell per token"
            )
    disc_factor = 2 ** (len(args.disc_channels) - 1)
    if len(args.disc_channels) < 2 or any(v % disc_factor for v in shape):
        raise ValueError(
            f"--disc_channels {' '.join(map(str, args.disc_channels))} downsamples by {disc_factor}, which must divide "
            f"the image size {shape[0]} x {shape[1]} (and give at least 2 levels)"
        )
    return shape


@torch.no_grad()
def evaluate(tokenizer: PQTokenizer, decoder: StyleDecoder, images: np.ndarray, device, batch_size: int = 128):
    """Reconstruction PSNR/SSIM and per-group codebook usage over a whole evaluation pass."""
    tokenizer.eval(); decoder.eval()
    k = tokenizer.config.codebook_size
    counts = torch.zeros(tokenizer.num_token_groups, k, dtype=torch.long, device=device)
    psnrs, ssims, weights = [], [], []
    for i in range(0, len(images), batch_size):
        x = to_pixels(images[i : i + batch_size], device)
        tokens = tokenizer.encode(x)
        rec = decoder(tokenizer.lookup(tokens)).sample.float().clamp(-1, 1)
        psnrs.append(psnr_per_image(rec, x).sum().item())
        ssims.append(ssim(rec, x).item() * len(x))
        weights.append(len(x))
        counts += F.one_hot(tokens.flatten(0, 2), k).sum(0)
    n = sum(weights)
    probs = counts.float() / counts.sum(-1, keepdim=True)
    perplexity = torch.exp(-(probs * probs.clamp_min(1e-10).log()).sum(-1))
    tokenizer.train(); decoder.train()
    return {
        "psnr": sum(psnrs) / n,
        "ssim": sum(ssims) / n,
        "codebook_usage": (counts > 0).float().mean(-1).tolist(),
        "perplexity": perplexity.tolist(),
        "num_images": n,
    }


def _load_images(args: TokenizerTrainingArguments, accelerator):
    """uint8 ``(N, 3, height, width)`` train and test images (5 % of train held out when there is no test split),
    decoded once by the main process and cached by ``datasets`` (``images_to_array``: square sizes padded to a
    white square and resized as always, others padded on white to their aspect ratio)."""
    height, width = sample_shape(args)
    ds = load_parquet_splits(args.data, required_columns=("image",))
    if "test" not in ds:
        ds = ds["train"].train_test_split(test_size=0.05, seed=args.seed)
    size = height if height == width else (height, width)
    with accelerator.main_process_first():
        train_images = images_to_array(ds["train"], size, args.num_proc, args.train_limit)
        test_images = images_to_array(ds["test"], size, args.num_proc, args.eval_limit)
    return train_images, test_images


def _build_models(args: TokenizerTrainingArguments):
    """``(tokenizer, decoder, discriminator)``; the decoder must upsample the token grid back to the image size.
    A non-square size is saved in the tokenizer's config as ``sample_height`` / ``sample_width`` (a square one as
    ``sample_size`` alone, as before); the decoder's ``sample_size`` is the longest side."""
    height, width = sample_shape(args)
    side = max(height, width)
    shape_kwargs = {} if height == width else {"sample_height": height, "sample_width": width}
    tokenizer = PQTokenizer(
        sample_size=side, block_out_channels=tuple(args.encoder_channels), latent_channels=args.latent_channels,
        quantizer_type=args.quantizer_type, num_groups=args.num_groups, codebook_size=args.codebook_size, **shape_kwargs,
    )
    decoder = StyleDecoder(
        latent_channels=args.latent_channels, style_channels=args.style_channels,
        block_out_channels=tuple(args.decoder_channels), sample_size=side,
    )
    if tokenizer.downsample_factor != decoder.upsample_factor:
        rows, cols = tokenizer.grid_shape
        raise ValueError(
            f"encoder downsamples {height}x{width}px to {rows}x{cols} but the decoder upsamples by "
            f"{decoder.upsample_factor}; give decoder_channels {len(args.encoder_channels)} levels"
        )
    disc = StyleGANDiscriminator(sample_size=side, block_out_channels=tuple(args.disc_channels), **shape_kwargs)
    return tokenizer, decoder, disc


def _train_step(args: TokenizerTrainingArguments, accelerator, models, optimizers, x: torch.Tensor, step: int) -> dict:
    """One generator update (L1 + ssim_weight (1 - SSIM) + commitment, + adv_weight x adversarial from
    ``adv_start_step``) and one discriminator update; returns the step's log record."""
    tokenizer, decoder, disc = models
    opt_g, opt_d = optimizers
    use_adv = args.adv_weight > 0 and step >= args.adv_start_step
    with accelerator.autocast():
        out = tokenizer(x)
        rec = decoder(out.latents).sample.float()
        l1 = (rec - x).abs().mean()
        ssim_loss = 1 - ssim(rec, x)
        loss = l1 + args.ssim_weight * ssim_loss + out.commitment_loss
        adv = torch.zeros((), device=x.device)
        if use_adv:
            adv = adversarial_loss(disc, rec)
            loss = loss + args.adv_weight * adv
    optimizer_step(accelerator, opt_g, loss)
    d_loss = torch.zeros((), device=x.device)
    if use_adv:
        d_loss = discriminator_step(accelerator, disc, opt_d, rec, x, step, args.r1_gamma, args.r1_every)
    if not (step % 50 == 0 or step + 1 == args.max_train_steps):
        return {}
    return {"step": step, "loss": loss.item(), "l1": l1.item(), "ssim": 1 - ssim_loss.item(),
            "psnr": psnr_per_image(rec.detach(), x).mean().item(), "commit": out.commitment_loss.item(), "adv": adv.item(),
            "d_loss": d_loss.item(), "perplexity": [round(p, 1) for p in out.perplexity.tolist()]}


def _finish(args: TokenizerTrainingArguments, accelerator, tok_m, dec_m, test_images, state) -> dict:
    """Final evaluation and ``save_pretrained`` of the tokenizer and decoder (main process)."""
    accelerator.wait_for_everyone()
    metrics = {}
    if accelerator.is_main_process:
        metrics = evaluate(tok_m, dec_m, test_images, accelerator.device)
        metrics["step"] = state["step"]
        tok_m.save_pretrained(os.path.join(args.output_dir, "image_tokenizer"))
        dec_m.save_pretrained(os.path.join(args.output_dir, "decoder"))
        with open(os.path.join(args.output_dir, "final_metrics.json"), "w") as f:
            json.dump({"metrics": metrics, "args": asdict(args)}, f, indent=2)
        accelerator.print(json.dumps(metrics))
    accelerator.end_training()
    return metrics


def train(args: TokenizerTrainingArguments) -> dict:
    """Trains and saves the tokenizer and decoder; resumes from the latest checkpoint in ``output_dir``."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if args.quantizer_type not in ("product", "vector", "residual"):
        raise ValueError(f"unknown quantizer_type {args.quantizer_type!r}; accepted: product, vector, residual")
    height, width = sample_shape(args)  # checked before any image is decoded
    # on a machine without a GPU, cpu=True makes accelerate set up gloo data parallelism under torchrun /
    # accelerate launch (otherwise each process would train alone)
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=not torch.cuda.is_available())
    set_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    train_images, test_images = _load_images(args, accelerator)
    accelerator.print(f"{accelerator.num_processes} process(es) on {accelerator.device}; train images {train_images.shape}, test images {test_images.shape}")

    tokenizer, decoder, disc = _build_models(args)
    opt_g = torch.optim.Adam(list(tokenizer.parameters()) + list(decoder.parameters()), lr=args.learning_rate, betas=(0.5, 0.99))
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.disc_learning_rate, betas=(0.0, 0.99))
    tokenizer, decoder, disc, opt_g, opt_d = accelerator.prepare(tokenizer, decoder, disc, opt_g, opt_d)
    tok_m, dec_m = (accelerator.unwrap_model(m) for m in (tokenizer, decoder))

    state, resume = resume_latest(accelerator, args.output_dir, {"step": 0, "history": [], "sample_shape": [height, width]})
    if resume:
        # the convolutions would load at any size, so a changed size is refused here rather than trained on silently
        # (checkpoints written before the key existed are not checked)
        saved = state.get("sample_shape")
        if saved is not None and list(saved) != [height, width]:
            raise SystemExit(
                f"error: {resume} was trained on {saved[0]}x{saved[1]} images but this run asks for {height}x{width} "
                "(--resolution / --height / --width); use the same size to resume, or another --output_dir"
            )
        state["sample_shape"] = [height, width]
        accelerator.print(f"resumed from {resume} at step {state['step']}")
    start_time = time.time()
    progress = progress_bar(accelerator, state, args.max_train_steps, "stage-1")
    for _ in progress:
        step = state["step"]
        idx = batch_indices(step, args.train_batch_size, len(train_images), args.seed, accelerator.process_index, accelerator.num_processes)
        x = to_pixels(train_images[idx], accelerator.device)
        record = _train_step(args, accelerator, (tokenizer, decoder, disc), (opt_g, opt_d), x, step)
        state["step"] = step + 1
        if record:
            log_step(accelerator, state, progress, args.output_dir, record)
        if (step + 1) % args.eval_every == 0 and accelerator.is_main_process:
            report_eval(accelerator, args.output_dir, {**evaluate(tok_m, dec_m, test_images, accelerator.device), "step": step + 1})
        out_of_time = args.max_minutes is not None and (time.time() - start_time) / 60 > args.max_minutes
        if checkpoint_or_stop(accelerator, args.output_dir, state, args.checkpoints_total_limit, (step + 1) % args.checkpoint_every == 0,
                              f"--max_minutes {args.max_minutes} reached (rerun to resume)" if out_of_time else None):
            break
    return _finish(args, accelerator, tok_m, dec_m, test_images, state)


def main(argv: Optional[List[str]] = None) -> dict:
    """Command line: the ``TokenizerTrainingArguments`` options (``--help`` lists them)."""
    return parse_and_train(TokenizerTrainingArguments, train, argv)


if __name__ == "__main__":
    main()
