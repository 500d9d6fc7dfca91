"""Trains a high-resolution StyleDecoder for the EXISTING tokens of a shipped pipeline (no new tokenizer).

    python -m m6_fashion.training.train_hr_decoder --data ../shared/data/fashion-product-images-hr \
        --output_dir runs/hr-decoder --max_train_minutes 40 --num_threads 1

Input: the pipeline's own tokens (16x16x4 for `m6-fashion-64`) of each photo after the normal 64-px
preprocessing (`image_processing.preprocess(photo, 64)`: pad to a white square, bicubic resize). Target:
the same photo padded to a white square exactly as `preprocess` pads it, at the decoder's output size
(256x256 for `--decoder_channels 256 128 64 32 16`, i.e. a 192x256 portrait photo with 32 white columns
on each side). The photos are tokenised once with the pipeline's tokenizer and cached under
`OUTPUT_DIR/cache` (uint8, 1 KiB per photo).

The decoder is the same `StyleDecoder` class with more upsampling levels. Every parameter whose name and
shape match the pipeline's 64-px decoder is copied from it (mapping network, 16/32/64-px levels and their
toRGB layers); the toRGB layers of the new levels start at zero, so training starts from the 64-px decoder's
output upsampled bilinearly and learns the missing detail as a residual. By default the copied levels are
frozen (`--base_learning_rate 0`): they run without gradients and only the new levels (and the
discriminator) learn, which makes a CPU step several times cheaper.

Losses, on random crops (`--crop_size`, 128 px by default, placed inside the 192-px-wide content band):
L1 + `--grad_weight` x L1 of the horizontal/vertical finite differences (an edge term, a cheap LPIPS-free
proxy for perceptual sharpness) and, from `--adv_start_step`, the non-saturating adversarial loss of a
StyleGAN2 discriminator with lazy R1 regularisation, as in stage 1 (`train_tokenizer.py`). A crop is
decoded from a window of the 64-px feature map with a margin wider than the new levels' receptive field,
so its pixels equal those of the full-image forward (checked by the tests).

Checkpoints (`accelerator.save_state`: model weights as safetensors, optimizer/RNG state beside them) are
written every `--checkpoint_every` steps, every `--checkpoint_every_minutes` and when time runs out;
rerunning the same command resumes from the latest complete one exactly (batches and crops are pure
functions of the step). `--max_train_minutes` is a budget of training wall time summed over all runs of the
command. The final decoder is written with `save_pretrained` (safetensors, float16 by default) to
`OUTPUT_DIR/decoder_hr`; load it with `StyleDecoder.from_pretrained(...)` and feed it
`pipe.image_tokenizer.lookup(tokens)`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..image_processing import preprocess
from ..models import PQTokenizer, StyleDecoder, StyleGANDiscriminator
from .checkpointing import resume_latest
from .data import image_to_uint8, load_parquet_splits, resolve_data_files
from .gan_loop import (
    adversarial_loss, batch_indices, checkpoint_or_stop, discriminator_step, log_step, optimizer_step, parse_and_train,
    progress_bar, psnr_per_image, report_eval, ssim, to_pixels,
)

#: the content band of a 3:4 portrait photo padded to a square: columns [side/8, 7 side/8)
PORTRAIT_CONTENT = (0.125, 0.875)


@dataclass
class HRDecoderTrainingArguments:
    data: str = field(metadata={"help": "folder with train.parquet/test.parquet with an `image` column (fashion-product-images-hr)"})
    output_dir: str = field(metadata={"help": "where the token cache, checkpoints, logs and the final decoder go"})
    pretrained: Optional[str] = field(default=None, metadata={"help": "pipeline folder whose image_tokenizer/decoder are used (default: the shipped m6-fashion-64)"})
    decoder_channels: List[int] = field(default_factory=lambda: [256, 128, 64, 32, 16], metadata={"help": "decoder widths per resolution from the token grid up; 5 levels turn 16x16 tokens into 256x256"})
    style_channels: int = field(default=128, metadata={"help": "style-map channels (128 matches the shipped decoder, so its mapping network is reused)"})
    init_from_pretrained: bool = field(default=True, metadata={"help": "copy every parameter whose name and shape match the pipeline's decoder; new toRGB layers start at zero"})
    base_learning_rate: float = field(default=0.0, metadata={"help": "learning rate of the copied (low-resolution) parameters; 0 freezes them (they run without gradients)"})
    learning_rate: float = field(default=3e-4, metadata={"help": "learning rate of the new (high-resolution) parameters"})
    disc_learning_rate: float = field(default=2e-4)
    disc_channels: List[int] = field(default_factory=lambda: [32, 64, 128, 256, 256], metadata={"help": "discriminator widths (each after the first halves the resolution)"})
    crop_size: int = field(default=128, metadata={"help": "side of the random training crops in output pixels (a multiple of the upsampling from the token grid's 64-px level); 0 trains on whole images"})
    native_only: bool = field(default=True, metadata={"help": "train only on photos stored at the full 192x256 (the 168x224 ones would be upscaled targets)"})
    train_batch_size: int = field(default=8, metadata={"help": "per process"})
    max_train_steps: int = field(default=100_000)
    max_train_minutes: Optional[float] = field(default=None, metadata={"help": "stop (after checkpointing) once this much training wall time has passed, summed over resumed runs"})
    grad_weight: float = field(default=0.5, metadata={"help": "weight of the L1 loss on image finite differences (edge term)"})
    adv_weight: float = field(default=0.05)
    adv_start_step: int = field(default=400, metadata={"help": "adversarial loss is off before this step (warm-up)"})
    r1_gamma: float = field(default=1.0)
    r1_every: int = field(default=16)
    eval_every: int = field(default=200, metadata={"help": "evaluate the whole-image forward on the test photos every this many steps"})
    eval_limit: int = field(default=48, metadata={"help": "test photos used by the evaluations during training"})
    train_limit: Optional[int] = field(default=None, metadata={"help": "use at most this many train photos (after the native_only filter)"})
    checkpoint_every: int = field(default=1000, metadata={"help": "checkpoint every this many steps"})
    checkpoint_every_minutes: float = field(default=5.0, metadata={"help": "also checkpoint when this much wall time passed since the last one"})
    checkpoints_total_limit: int = field(default=2)
    log_every: int = field(default=10)
    seed: int = field(default=0)
    mixed_precision: str = field(default="no", metadata={"help": "no | bf16 | fp16 (accelerate)"})
    num_threads: Optional[int] = field(default=None, metadata={"help": "torch CPU threads (torch.set_num_threads)"})
    tokenize_batch_size: int = field(default=64)
    save_dtype: str = field(default="float16", metadata={"help": "storage dtype of the final decoder: float16 | float32"})


# ---------------------------------------------------------------------------------------------- geometry
def output_size(grid_size: int, decoder_channels: Sequence[int]) -> int:
    return grid_size * 2 ** (len(decoder_channels) - 1)


def content_box(size: int) -> Tuple[int, int]:
    """Columns [x0, x1) holding a 3:4 portrait photo padded to a `size` square (the rest is white padding)."""
    return int(round(size * PORTRAIT_CONTENT[0])), int(round(size * PORTRAIT_CONTENT[1]))


def check_args(args: HRDecoderTrainingArguments, base_levels: int, grid_size: int, latent_channels: int) -> None:
    """Refuses impossible settings with a message saying what is accepted."""
    n = len(args.decoder_channels)
    if n <= base_levels:
        raise ValueError(
            f"decoder_channels {list(args.decoder_channels)} has {n} levels; the pipeline's decoder already has {base_levels} "
            f"({output_size(grid_size, [0] * base_levels)} px): give more than {base_levels} (e.g. 5 levels for "
            f"{output_size(grid_size, [0] * 5)} px)"
        )
    if any(c <= 0 for c in args.decoder_channels) or args.style_channels <= 0:
        raise ValueError(f"decoder_channels and style_channels must be positive; got {list(args.decoder_channels)}, {args.style_channels}")
    size = output_size(grid_size, args.decoder_channels)
    step = 2 ** (n - base_levels)
    if args.crop_size < 0 or args.crop_size > size or args.crop_size % step:
        raise ValueError(f"crop_size {args.crop_size} must be 0 (whole images) or a multiple of {step} between {step} and {size}")
    if args.crop_size and args.crop_size % 2 ** (len(args.disc_channels) - 1):
        raise ValueError(f"crop_size {args.crop_size} must be divisible by 2^(len(disc_channels)-1) = {2 ** (len(args.disc_channels) - 1)}")
    if args.train_batch_size < 1 or args.eval_limit < 1:
        raise ValueError(f"train_batch_size and eval_limit must be >= 1; got {args.train_batch_size}, {args.eval_limit}")
    if args.base_learning_rate < 0 or args.learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0 and base_learning_rate >= 0; got {args.learning_rate}, {args.base_learning_rate}")
    if args.max_train_minutes is not None and args.max_train_minutes <= 0:
        raise ValueError(f"max_train_minutes must be > 0; got {args.max_train_minutes}")
    if args.save_dtype not in ("float16", "float32"):
        raise ValueError(f"save_dtype must be float16 or float32; got {args.save_dtype!r}")
    if args.mixed_precision not in ("no", "bf16", "fp16"):
        raise ValueError(f"mixed_precision must be no, bf16 or fp16; got {args.mixed_precision!r}")


# ---------------------------------------------------------------------------------------------- decoder
def init_from_decoder(decoder: StyleDecoder, source: StyleDecoder) -> Tuple[List[str], List[str]]:
    """Copies every parameter/buffer whose name and shape match from `source`; zeroes the toRGB layers of the
    levels `source` lacks (so `decoder` starts as `source` upsampled). Returns (copied, new) parameter names."""
    src = source.state_dict()
    dst = decoder.state_dict()
    copied, new = [], []
    with torch.no_grad():
        for name, t in dst.items():
            if name in src and src[name].shape == t.shape:
                t.copy_(src[name].to(t.dtype))
                copied.append(name)
            else:
                new.append(name)
        for i in range(len(source.levels), len(decoder.levels)):
            decoder.to_rgb[i].conv.weight.zero_()
            decoder.to_rgb[i].conv.bias.zero_()
    return copied, new


def _modulated(conv, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """`SpatialModulatedConv2d.forward` with the style already mapped through `conv.affine` (s = affine(style))."""
    out = F.conv2d(x * s, conv.weight, padding=conv.padding)
    if conv.demodulate:
        w2 = conv.weight.pow(2).sum(dim=(2, 3))[:, :, None, None]
        out = out * torch.rsqrt(F.conv2d(s.pow(2), w2) + 1e-8)
    return out + conv.bias[None, :, None, None]


def _styles_at(decoder: StyleDecoder, style: torch.Tensor, level: int, size: Tuple[int, int]) -> List[torch.Tensor]:
    """The per-layer modulations of one level at `size`: affine(resize(style)) computed as resize(affine(style)).

    A 1x1 convolution and bilinear resizing (weights summing to one) commute, so this equals what
    `StyleDecoder.forward` computes while resizing C_in channels instead of `style_channels` of them.
    """
    convs = [layer.conv for layer in decoder.levels[level]] + [decoder.to_rgb[level].conv]
    out = []
    for conv in convs:
        a = conv.affine(style)
        if a.shape[-2:] != tuple(size):
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
        out.append(a)
    return out


def _run_level(decoder: StyleDecoder, level: int, x: torch.Tensor, rgb: Optional[torch.Tensor], mods: List[torch.Tensor]):
    if rgb is not None:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False)
    for layer, s in zip(decoder.levels[level], mods[:-1]):
        x = F.leaky_relu(_modulated(layer.conv, x, s), 0.2) * math.sqrt(2)
    y = _modulated(decoder.to_rgb[level].conv, x, mods[-1])
    return x, (y if rgb is None else rgb + y)


def decode_base(decoder: StyleDecoder, latents: torch.Tensor, num_levels: int):
    """Whole-image forward through levels [0, num_levels): returns (features x, rgb, style map)."""
    latents = latents.to(decoder.dtype)
    style = decoder.mapping(latents)
    x = decoder.conv_in(latents)
    rgb = None
    for i in range(num_levels):
        size = (latents.shape[-2] * 2**i, latents.shape[-1] * 2**i)
        x, rgb = _run_level(decoder, i, x, rgb, _styles_at(decoder, style, i, size))
    return x, rgb, style


def decode_head(decoder: StyleDecoder, x: torch.Tensor, rgb: torch.Tensor, style: torch.Tensor, first_level: int,
                window: Optional[Tuple[int, int, int, int]] = None, full_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Levels [first_level, end) on `x`/`rgb`, which are either whole (window None) or the crop
    `window = (y0, y1, x0, x1)` (in their own pixel grid, of size `full_size`) of the level-(first_level-1)
    output. Returns the rgb of the same window at the final resolution."""
    h, w = full_size if full_size is not None else x.shape[-2:]
    for i in range(first_level, len(decoder.levels)):
        f = 2 ** (i - first_level + 1)
        mods = _styles_at(decoder, style, i, (h * f, w * f))
        if window is not None:
            y0, y1, x0, x1 = window
            mods = [m[..., y0 * f : y1 * f, x0 * f : x1 * f] for m in mods]
        x, rgb = _run_level(decoder, i, x, rgb, mods)
    return rgb


def decode_fast(decoder: StyleDecoder, latents: torch.Tensor) -> torch.Tensor:
    """Whole-image forward equal to `decoder(latents).sample` (resizes modulations, not style maps)."""
    x, rgb, style = decode_base(decoder, latents, len(decoder.levels))
    return rgb


def crop_margin(num_new_levels: int) -> int:
    """Margin (pixels at the first new level's input grid) wider than the new levels' receptive field:
    each new level has two 3x3 convolutions and a bilinear 2x of the rgb skip (radius <= 3 px at that level)."""
    return max(1, math.ceil(sum(3 / 2**k for k in range(1, num_new_levels + 1))))


def decode_crops(decoder: StyleDecoder, latents: torch.Tensor, base_levels: int, offsets: Sequence[Tuple[int, int]], crop: int,
                 base_grad: bool) -> torch.Tensor:
    """Decodes the `crop` x `crop` output windows at `offsets` ((y, x) in output pixels, one per image) exactly
    as the whole-image forward would, running the new levels only on a window (plus margin) of the base output."""
    ctx = torch.enable_grad() if base_grad else torch.no_grad()
    with ctx:
        x, rgb, style = decode_base(decoder, latents, base_levels)
    if not base_grad:
        x, rgb, style = x.detach(), rgb.detach(), style.detach()
    n_new = len(decoder.levels) - base_levels
    f = 2**n_new
    m = crop_margin(n_new)
    hb, wb = x.shape[-2:]
    outs = []
    for b, (oy, ox) in enumerate(offsets):
        y0, x0 = oy // f, ox // f
        y1, x1 = y0 + crop // f, x0 + crop // f
        wy0, wy1, wx0, wx1 = max(0, y0 - m), min(hb, y1 + m), max(0, x0 - m), min(wb, x1 + m)
        out = decode_head(decoder, x[b : b + 1, :, wy0:wy1, wx0:wx1], rgb[b : b + 1, :, wy0:wy1, wx0:wx1], style[b : b + 1],
                          base_levels, window=(wy0, wy1, wx0, wx1), full_size=(hb, wb))
        ry, rx = (y0 - wy0) * f, (x0 - wx0) * f
        outs.append(out[..., ry : ry + crop, rx : rx + crop])
    return torch.cat(outs)


def crop_offsets(step: int, seed: int, rank: int, batch: int, size: int, crop: int, align: int) -> List[Tuple[int, int]]:
    """Random crop positions (multiples of `align`), a pure function of (seed, step, rank); x inside the
    portrait content band when the crop fits in it."""
    rng = np.random.default_rng([seed, step, rank, 7])
    c0, c1 = content_box(size)
    lo, hi = -(-c0 // align) * align, (c1 - crop) // align * align
    if hi < lo:
        lo, hi = 0, (size - crop) // align * align
    ys = rng.integers(0, (size - crop) // align + 1, batch) * align
    xs = lo + rng.integers(0, (hi - lo) // align + 1, batch) * align
    return [(int(y), int(x)) for y, x in zip(ys, xs)]


# ---------------------------------------------------------------------------------------------- data
def native_rows(dataset, size: Tuple[int, int] = (192, 256)) -> np.ndarray:
    """Row indices of the photos stored at exactly `size` (width, height)."""
    keep = []
    for start in range(0, len(dataset), 512):
        for j, im in enumerate(dataset[start : start + 512]["image"]):
            if im.size == tuple(size):
                keep.append(start + j)
    return np.asarray(keep, dtype=np.int64)


def _file_key(path: str) -> Dict:
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime": int(st.st_mtime)}


def _tokenizer_hash(tokenizer: PQTokenizer) -> str:
    h = hashlib.sha256(json.dumps(dict(tokenizer.config), sort_keys=True, default=str).encode())
    for name, t in sorted(tokenizer.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def tokenize_rows(dataset, rows: np.ndarray, tokenizer: PQTokenizer, cache_path: Optional[str], batch_size: int = 64,
                  desc: str = "tokenising") -> np.ndarray:
    """Tokens (N, h, w, M) uint8 of `dataset[rows]` after the 64-px `preprocess`, cached in `cache_path` (.npz)."""
    if cache_path and os.path.exists(cache_path):
        with np.load(cache_path) as z:
            if np.array_equal(z["rows"], rows):
                return z["tokens"]
    size = tokenizer.config.sample_size
    dev = next(tokenizer.parameters()).device
    out = []
    for i in tqdm(range(0, len(rows), batch_size), desc=desc, leave=False):
        ims = dataset[[int(r) for r in rows[i : i + batch_size]]]["image"]
        tokens = tokenizer.encode(preprocess(ims, size).to(dev, tokenizer.dtype))
        out.append(tokens.to(torch.uint8 if tokenizer.config.codebook_size <= 256 else torch.int16).cpu().numpy())
    tokens = np.concatenate(out) if out else np.zeros((0, tokenizer.grid_size, tokenizer.grid_size, tokenizer.num_token_groups), np.uint8)
    if cache_path:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        tmp = cache_path + ".tmp.npz"
        np.savez(tmp, rows=rows, tokens=tokens)
        os.replace(tmp, cache_path)
    return tokens


def load_targets(dataset, rows: Sequence[int], size: int) -> np.ndarray:
    """uint8 (B, 3, size, size): the photos padded to a white square as `preprocess` does, at `size`."""
    ims = dataset[[int(r) for r in rows]]["image"]
    return np.stack([image_to_uint8(im, size) for im in ims])


# ---------------------------------------------------------------------------------------------- metrics
def finite_difference_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dxa, dxb = a[..., :, 1:] - a[..., :, :-1], b[..., :, 1:] - b[..., :, :-1]
    dya, dyb = a[..., 1:, :] - a[..., :-1, :], b[..., 1:, :] - b[..., :-1, :]
    return (dxa - dxb).abs().mean() + (dya - dyb).abs().mean()


@torch.no_grad()
def evaluate(decoder: StyleDecoder, lookup, tokens: np.ndarray, targets: np.ndarray, device, batch_size: int = 8,
             base: Optional[StyleDecoder] = None) -> Dict:
    """PSNR/SSIM of the whole-image forward on the 3:4 content band (192x256 for 256 px), plus the same for
    `base` (the 64-px decoder) upsampled bicubically (torch) when given."""
    was_training = decoder.training
    decoder.eval()
    size = targets.shape[-1]
    c0, c1 = content_box(size)
    sums = {"psnr": 0.0, "ssim": 0.0, "baseline_psnr": 0.0, "baseline_ssim": 0.0}
    for i in range(0, len(tokens), batch_size):
        lat = lookup(torch.from_numpy(tokens[i : i + batch_size].astype(np.int64)).to(device))
        y = to_pixels(targets[i : i + batch_size], device)[..., c0:c1]
        out = decode_fast(decoder, lat).float().clamp(-1, 1)[..., c0:c1]
        sums["psnr"] += psnr_per_image(out, y).sum().item()
        sums["ssim"] += ssim(out, y).item() * len(y)
        if base is not None:
            low = base(lat.to(base.dtype)).sample.float().clamp(-1, 1)
            up = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)[..., c0:c1]
            sums["baseline_psnr"] += psnr_per_image(up, y).sum().item()
            sums["baseline_ssim"] += ssim(up, y).item() * len(y)
    decoder.train(was_training)
    n = len(tokens)
    out = {k: v / n for k, v in sums.items() if base is not None or not k.startswith("baseline")}
    out["num_images"] = n
    return out


# ---------------------------------------------------------------------------------------------- checkpoints

def load_pipeline_parts(pretrained: Optional[str]):
    """(image_tokenizer, decoder) of a pipeline folder (default: the shipped model), float32, eval mode."""
    if pretrained is None:
        from ..default_model import default_model_path

        pretrained = default_model_path()
    if not os.path.isdir(pretrained):
        raise FileNotFoundError(f"pipeline folder {pretrained!r} does not exist (expected image_tokenizer/ and decoder/ in it)")
    tok = PQTokenizer.from_pretrained(os.path.join(pretrained, "image_tokenizer"), use_safetensors=True)
    dec = StyleDecoder.from_pretrained(os.path.join(pretrained, "decoder"), use_safetensors=True)
    return tok.float().eval(), dec.float().eval()


# ---------------------------------------------------------------------------------------------- training
def _prepare_data(args: HRDecoderTrainingArguments, accelerator, tokenizer: PQTokenizer, size: int) -> Dict:
    """Train rows (the native-size photos unless ``native_only`` is off, capped at ``train_limit``), the first
    ``eval_limit`` test rows, their tokens (cached under ``OUTPUT_DIR/cache``, keyed by the Parquet file, the
    tokenizer weights and the rows) and the test targets ``(N, 3, size, size)`` uint8."""
    ds = load_parquet_splits(args.data, required_columns=("image",))
    if "test" not in ds:
        raise ValueError(f"{args.data!r} has no test.parquet; the HR decoder is evaluated on the test split")
    cache_dir = os.path.join(args.output_dir, "cache")
    tok_hash = _tokenizer_hash(tokenizer)
    files = resolve_data_files(args.data)

    def cache_name(split, rows):
        key = hashlib.sha256(json.dumps([_file_key(files[split]), tok_hash, rows.tolist()]).encode()).hexdigest()[:12]
        return os.path.join(cache_dir, f"tokens-{split}-{len(rows)}-{key}.npz")

    with accelerator.main_process_first():
        rows_path = os.path.join(cache_dir, f"train-rows-{'native' if args.native_only else 'all'}.npy")
        if not args.native_only:
            train_rows = np.arange(len(ds["train"]))
        elif os.path.exists(rows_path):
            train_rows = np.load(rows_path)
        else:
            train_rows = native_rows(ds["train"])
            os.makedirs(cache_dir, exist_ok=True)
            np.save(rows_path, train_rows)
        if args.train_limit is not None:
            train_rows = train_rows[: args.train_limit]
        test_rows = np.arange(min(args.eval_limit, len(ds["test"])))
        train_tokens = tokenize_rows(ds["train"], train_rows, tokenizer, cache_name("train", train_rows),
                                     args.tokenize_batch_size, "tokenising train photos")
        test_tokens = tokenize_rows(ds["test"], test_rows, tokenizer, cache_name("test", test_rows),
                                    args.tokenize_batch_size, "tokenising test photos")
    if len(train_rows) < args.train_batch_size * accelerator.num_processes:
        raise ValueError(f"{len(train_rows)} train photos (after native_only/train_limit) are fewer than one global batch "
                         f"({args.train_batch_size * accelerator.num_processes})")
    return {"train": ds["train"], "train_rows": train_rows, "test_rows": test_rows, "train_tokens": train_tokens,
            "test_tokens": test_tokens, "test_targets": load_targets(ds["test"], test_rows, size)}


def _build_models(args: HRDecoderTrainingArguments, accelerator, tokenizer: PQTokenizer, base: StyleDecoder, size: int):
    """The HR decoder (initialised from ``base`` where names and shapes match), the discriminator and their optimizers;
    the copied parameters are frozen unless ``base_learning_rate > 0``. Returns ``(decoder, disc, opt_g, opt_d,
    copied, train_base)``."""
    decoder = StyleDecoder(latent_channels=tokenizer.config.latent_channels, style_channels=args.style_channels,
                           mapping_layers=base.config.mapping_layers, block_out_channels=tuple(args.decoder_channels),
                           layers_per_block=base.config.layers_per_block, sample_size=size)
    copied, new = (init_from_decoder(decoder, base) if args.init_from_pretrained else ([], list(decoder.state_dict())))
    accelerator.print(f"initialised {len(copied)} tensors from the pipeline's decoder; {len(new)} new")
    copied_set = set(copied)
    base_params = [p for n, p in decoder.named_parameters() if n in copied_set]
    new_params = [p for n, p in decoder.named_parameters() if n not in copied_set]
    train_base = args.base_learning_rate > 0 or not copied
    if not train_base:
        for p in base_params:
            p.requires_grad_(False)
    groups = [{"params": new_params, "lr": args.learning_rate}]
    if train_base and base_params:
        groups.append({"params": base_params, "lr": args.base_learning_rate or args.learning_rate})
    disc = StyleGANDiscriminator(sample_size=args.crop_size or size, block_out_channels=tuple(args.disc_channels))
    opt_g = torch.optim.Adam(groups, betas=(0.5, 0.99))
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.disc_learning_rate, betas=(0.0, 0.99))
    return (*accelerator.prepare(decoder, disc, opt_g, opt_d), copied, train_base)


def _train_step(args: HRDecoderTrainingArguments, accelerator, run: Dict, step: int) -> Dict:
    """One generator update on the step's crops (L1 + grad_weight x finite-difference L1, + adv_weight x adversarial
    from ``adv_start_step``) and one discriminator update; returns the losses and the PSNR of the crops."""
    data, crop, size = run["data"], args.crop_size, run["size"]
    idx = batch_indices(step, args.train_batch_size, len(data["train_rows"]), args.seed, accelerator.process_index,
                        accelerator.num_processes)
    lat = run["lookup"](torch.from_numpy(data["train_tokens"][idx].astype(np.int64)).to(accelerator.device))
    target = to_pixels(load_targets(data["train"], data["train_rows"][idx], size), accelerator.device)
    offsets = [(0, 0)] * len(idx)
    if crop:
        offsets = crop_offsets(step, args.seed, accelerator.process_index, len(idx), size, crop, run["align"])
        target = torch.stack([target[b, :, oy : oy + crop, ox : ox + crop] for b, (oy, ox) in enumerate(offsets)])
    use_adv = args.adv_weight > 0 and step >= args.adv_start_step
    with accelerator.autocast():
        rec = decode_crops(run["dec_m"], lat, run["base_levels"], offsets, crop or size, base_grad=run["train_base"]).float()
        l1 = (rec - target).abs().mean()
        gl = finite_difference_l1(rec, target) if args.grad_weight > 0 else torch.zeros((), device=rec.device)
        loss = l1 + args.grad_weight * gl
        adv = torch.zeros((), device=rec.device)
        if use_adv:
            adv = adversarial_loss(run["disc"], rec)
            loss = loss + args.adv_weight * adv
    optimizer_step(accelerator, run["opt_g"], loss)
    d_loss = torch.zeros((), device=rec.device)
    if use_adv:
        d_loss = discriminator_step(accelerator, run["disc"], run["opt_d"], rec, target, step, args.r1_gamma, args.r1_every)
    if not (step % args.log_every == 0 or step + 1 == args.max_train_steps):
        return {}
    return {"step": step, "loss": loss.item(), "l1": l1.item(), "grad_l1": gl.item(), "adv": adv.item(), "d_loss": d_loss.item(),
            "psnr": psnr_per_image(rec.detach(), target).mean().item()}


def _finish(args: HRDecoderTrainingArguments, accelerator, run: Dict, state: Dict, ran_steps: int, trained_seconds) -> Dict:
    """Final evaluation and ``save_pretrained`` of the decoder in ``save_dtype`` (main process)."""
    accelerator.wait_for_everyone()
    metrics = {}
    if accelerator.is_main_process:
        data, dec_m = run["data"], run["dec_m"]
        metrics = evaluate(dec_m, run["lookup"], data["test_tokens"], data["test_targets"], accelerator.device)
        if ran_steps:
            state["train_seconds"] = trained_seconds()
        metrics.update(step=state["step"], minutes=state["train_seconds"] / 60, baseline=state["baseline"])
        final = copy.deepcopy(dec_m).to("cpu")
        for p in final.parameters():
            p.requires_grad_(True)
        if args.save_dtype == "float16":
            final = final.half()
        final.save_pretrained(os.path.join(args.output_dir, "decoder_hr"), safe_serialization=True)
        with open(os.path.join(args.output_dir, "final_metrics.json"), "w") as f:
            json.dump({"metrics": metrics, "args": asdict(args), "initialised_from_pipeline": run["copied"]}, f, indent=2)
        accelerator.print(json.dumps(metrics))
    accelerator.end_training()
    return metrics


def _setup(args: HRDecoderTrainingArguments):
    """Checks the arguments against the pipeline's parts, then builds the accelerator, data and models. Returns
    ``(accelerator, run)``: ``run`` holds what the steps need."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    tokenizer, base = load_pipeline_parts(args.pretrained)
    base_levels, grid = len(base.levels), tokenizer.grid_size
    check_args(args, base_levels, grid, tokenizer.config.latent_channels)
    size = output_size(grid, args.decoder_channels)
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=not torch.cuda.is_available())
    set_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    tokenizer.to(accelerator.device)
    base.to(accelerator.device)
    data = _prepare_data(args, accelerator, tokenizer, size)
    accelerator.print(f"{accelerator.num_processes} process(es) on {accelerator.device}; {len(data['train_rows'])} train photos, "
                      f"{len(data['test_rows'])} test photos; {grid}x{grid} tokens -> {size}x{size} px, crops {args.crop_size or size}")
    decoder, disc, opt_g, opt_d, copied, train_base = _build_models(args, accelerator, tokenizer, base, size)
    run = {"data": data, "size": size, "base": base, "base_levels": base_levels, "lookup": tokenizer.lookup,
           "disc": disc, "opt_g": opt_g, "opt_d": opt_d, "dec_m": accelerator.unwrap_model(decoder), "copied": len(copied),
           "train_base": train_base, "align": 2 ** (len(args.decoder_channels) - base_levels)}
    return accelerator, run


def train(args: HRDecoderTrainingArguments) -> dict:
    """Trains and saves the HR decoder; resumes from the latest checkpoint in ``output_dir``. ``--max_train_minutes``
    counts the training time of every run of the command (``state["train_seconds"]``, kept in checkpoints)."""
    accelerator, run = _setup(args)
    data = run["data"]
    state, resume = resume_latest(accelerator, args.output_dir, {"step": 0, "train_seconds": 0.0, "history": [], "baseline": None})
    if resume:
        accelerator.print(f"resumed from {resume} at step {state['step']} ({state['train_seconds'] / 60:.1f} min trained)")
    if state.get("baseline") is None and accelerator.is_main_process:
        b = evaluate(run["dec_m"], run["lookup"], data["test_tokens"], data["test_targets"], accelerator.device, base=run["base"])
        state["baseline"] = {"psnr": b["baseline_psnr"], "ssim": b["baseline_ssim"], "init_psnr": b["psnr"], "init_ssim": b["ssim"]}
        accelerator.print("64-px decoder + bicubic on the test crops: " + json.dumps(state["baseline"]))

    budget = None if args.max_train_minutes is None else args.max_train_minutes * 60
    run_start, trained_before = time.time(), state["train_seconds"]
    last_ckpt = t_log = time.time()

    def trained_seconds():
        return trained_before + (time.time() - run_start)

    out_of_time = budget is not None and state["train_seconds"] >= budget
    progress = progress_bar(accelerator, state, args.max_train_steps, "hr-decoder")
    ran_steps = 0
    for _ in progress:
        if out_of_time:
            break
        ran_steps += 1
        step = state["step"]
        record = _train_step(args, accelerator, run, step)
        state["step"] = step + 1
        if record:
            now_t = time.time()
            record.update(minutes=trained_seconds() / 60, sec_per_step=(now_t - t_log) / (args.log_every if step else 1))
            t_log = now_t
            log_step(accelerator, state, progress, args.output_dir, record)
        if (step + 1) % args.eval_every == 0 and accelerator.is_main_process:
            metrics = evaluate(run["dec_m"], run["lookup"], data["test_tokens"], data["test_targets"], accelerator.device)
            report_eval(accelerator, args.output_dir, {**metrics, "step": step + 1, "minutes": trained_seconds() / 60})
        out_of_time = budget is not None and trained_seconds() >= budget
        checkpoint = ((step + 1) % args.checkpoint_every == 0 or out_of_time or step + 1 == args.max_train_steps
                      or time.time() - last_ckpt >= args.checkpoint_every_minutes * 60)
        if checkpoint:
            state["train_seconds"] = trained_seconds()
        stop = checkpoint_or_stop(accelerator, args.output_dir, state, args.checkpoints_total_limit, checkpoint,
                                  f"--max_train_minutes {args.max_train_minutes} reached" if out_of_time else None)
        last_ckpt = time.time() if checkpoint else last_ckpt
        if stop:
            break
    return _finish(args, accelerator, run, state, ran_steps, trained_seconds)


def main(argv: Optional[List[str]] = None) -> dict:
    """Command line: the ``HRDecoderTrainingArguments`` options (``--help`` lists them)."""
    return parse_and_train(HRDecoderTrainingArguments, train, argv)


if __name__ == "__main__":
    main()
