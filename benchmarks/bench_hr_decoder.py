"""High-resolution decoder for the shipped tokens against what a user gets today (64 px upscaled bicubic).

For the first N photos of the fashion-product-images-hr test split (192x256 portraits, or 168x224 ones
upscaled to that size by the square padding + resize below):

1. tokens: the shipped pipeline's tokens of the photo after the normal 64-px preprocessing
   (`preprocess(photo, 64)`: pad to a white square, bicubic resize);
2. (a) the HR decoder (`train_hr_decoder.py`) decodes them to 256x256;
   (b) the baseline: the shipped 64-px decoder's output image, resized to 256x256 with PIL bicubic;
3. the reference: the photo padded to a white square exactly as `preprocess` pads it, at 256x256.

PSNR and SSIM (torchmetrics, on [0, 1], per image then averaged) and the sharpness figure (variance of the
3x3 Laplacian of the grey image, 0-255 scale) are computed on the 192x256 content band (columns 32-223 of
the 256x256 square; the white side padding is left out). Both outputs are rounded to uint8 images first,
as a user receives them.

    python benchmarks/bench_hr_decoder.py --threads 1                 # 200 test photos
    python benchmarks/bench_hr_decoder.py --fast                      # 8 photos (numbers mean nothing)
    python benchmarks/bench_hr_decoder.py --decoder path/to/decoder_hr

Writes hr_decoder.json / .md to benchmarks/results (runs/benchmarks-fast with --fast) and a comparison grid
(real | 64 px + bicubic | HR decoder, 4 photos) to docs/images/hr_decoder.png (the result folder with --fast).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import _common  # noqa: F401
from _common import REPO_ROOT, add_run_args, command_line, environment, fmt, header, markdown_table, now, out_dir, set_threads, write_results

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "fashion-product-images-hr"
DEFAULT_DECODER = REPO_ROOT / "runs" / "hr-decoder" / "decoder_hr"
SHIPPED_DECODER = REPO_ROOT / "src" / "m6_fashion" / "pretrained" / "m6-fashion-64" / "decoder_hr"
GRID_PATH = REPO_ROOT / "docs" / "images" / "hr_decoder.png"


def laplacian_variance(images_uint8):
    """Variance of the 3x3 Laplacian of the grey image, per image: (B, H, W, 3) uint8 -> (B,) float (0-255 scale)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images_uint8).float()
    grey = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[:, None]
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    return F.conv2d(grey, kernel).flatten(1).var(1)


def image_metrics(pred_uint8, target_uint8):
    """Per-image PSNR (dB) and SSIM of uint8 (B, H, W, 3) images on the [0, 1] scale."""
    import torch
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    p = torch.from_numpy(pred_uint8).permute(0, 3, 1, 2).float() / 255
    t = torch.from_numpy(target_uint8).permute(0, 3, 1, 2).float() / 255
    psnr = peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(p, t, data_range=1.0, reduction="none")
    return psnr, ssim


def labelled_grid(images, labels, pad: int = 4, strip: int = 16):
    """3-column grid of the images with a white label strip above the columns."""
    import PIL.Image
    import PIL.ImageDraw

    from m6_fashion.image_processing import make_grid

    grid = make_grid(images, cols=len(labels), pad=pad)
    out = PIL.Image.new("RGB", (grid.width, grid.height + strip), (255, 255, 255))
    out.paste(grid, (0, strip))
    draw = PIL.ImageDraw.Draw(out)
    w = images[0].width
    for i, label in enumerate(labels):
        draw.text((pad + i * (w + pad) + 4, 2), label, fill=(0, 0, 0))
    return out


def run(args) -> dict:
    import numpy as np
    import PIL.Image
    import torch

    import datasets
    from m6_fashion import M6FashionPipeline, StyleDecoder
    from m6_fashion.image_processing import postprocess, preprocess
    from m6_fashion.training.data import image_to_uint8
    from m6_fashion.training.train_hr_decoder import content_box, decode_fast

    decoder_path = Path(args.decoder) if args.decoder else (DEFAULT_DECODER if DEFAULT_DECODER.is_dir() else SHIPPED_DECODER)
    if not (decoder_path / "config.json").is_file():
        raise SystemExit(f"error: no HR decoder at {decoder_path}; train one (configs/train_hr_decoder_cpu.sh) or pass --decoder DIR")
    pipe = M6FashionPipeline.from_pretrained(args.model) if args.model else M6FashionPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    hr = StyleDecoder.from_pretrained(str(decoder_path), use_safetensors=True).float().eval()
    size = hr.config.sample_size
    c0, c1 = content_box(size)
    test = datasets.load_dataset("parquet", data_files={"test": str(Path(args.data) / "test.parquet")})["test"]
    n = min(args.num_images, len(test))
    test = test.select(range(n))

    psnr = {"hr": [], "baseline": []}
    ssim = {"hr": [], "baseline": []}
    sharp = {"real": [], "hr": [], "baseline": []}
    seconds = {"hr": 0.0, "baseline": 0.0, "hr_fast": 0.0}
    fast_diff = 0.0
    grid_rows = []
    sizes = {}
    for start in range(0, n, args.batch_size):
        ims = test[start : start + args.batch_size]["image"]
        for im in ims:
            sizes[f"{im.size[0]}x{im.size[1]}"] = sizes.get(f"{im.size[0]}x{im.size[1]}", 0) + 1
        real = np.stack([image_to_uint8(im, size).transpose(1, 2, 0) for im in ims])  # (B, S, S, 3), padded like preprocess
        with torch.no_grad():
            tokens = pipe.image_tokenizer.encode(preprocess(ims, pipe.sample_size))  # (B, 16, 16, 4)
            t = time.perf_counter()
            low = postprocess(pipe.decode_tokens(tokens), "pil")
            base = np.stack([np.asarray(im.resize((size, size), PIL.Image.BICUBIC)) for im in low])
            seconds["baseline"] += time.perf_counter() - t
            t = time.perf_counter()
            out = hr(pipe.image_tokenizer.lookup(tokens)).sample
            high = postprocess(out, "np")
            seconds["hr"] += time.perf_counter() - t
            # the same decoder through the training script's path (resizes modulations instead of style maps)
            t = time.perf_counter()
            fast = decode_fast(hr, pipe.image_tokenizer.lookup(tokens))
            seconds["hr_fast"] += time.perf_counter() - t
            fast_diff = max(fast_diff, (fast - out).abs().max().item())
        real_c, base_c, high_c = (a[:, :, c0:c1] for a in (real, base, high))
        for name, arr in (("hr", high_c), ("baseline", base_c)):
            p, s = image_metrics(arr, real_c)
            psnr[name] += p.tolist()
            ssim[name] += s.tolist()
            sharp[name] += laplacian_variance(arr).tolist()
        sharp["real"] += laplacian_variance(real_c).tolist()
        for i in range(len(ims)):
            if len(grid_rows) < 4:
                grid_rows.append([PIL.Image.fromarray(a[i]) for a in (real_c, base_c, high_c)])
        print(f"{start + len(ims)}/{n} photos", flush=True)

    mean = statistics.fmean
    wins = sum(a > b for a, b in zip(psnr["hr"], psnr["baseline"]))
    results = {
        "hr_decoder": {"psnr": mean(psnr["hr"]), "ssim": mean(ssim["hr"]), "sharpness": mean(sharp["hr"]),
                       "sharpness_median": statistics.median(sharp["hr"]), "seconds_per_image": seconds["hr"] / n},
        "baseline_bicubic": {"psnr": mean(psnr["baseline"]), "ssim": mean(ssim["baseline"]), "sharpness": mean(sharp["baseline"]),
                             "sharpness_median": statistics.median(sharp["baseline"]), "seconds_per_image": seconds["baseline"] / n},
        "real": {"sharpness": mean(sharp["real"]), "sharpness_median": statistics.median(sharp["real"])},
        "hr_psnr_wins": wins,
        "hr_fast_path": {"seconds_per_image": seconds["hr_fast"] / n, "max_abs_difference": fast_diff},
    }
    results["beats_baseline"] = {
        "psnr": results["hr_decoder"]["psnr"] > results["baseline_bicubic"]["psnr"],
        "ssim": results["hr_decoder"]["ssim"] > results["baseline_bicubic"]["ssim"],
        "sharpness": results["hr_decoder"]["sharpness"] > results["baseline_bicubic"]["sharpness"],
    }
    training = None
    metrics_file = decoder_path.parent / "final_metrics.json"
    if metrics_file.is_file():
        fm = json.loads(metrics_file.read_text())
        training = {"steps": fm["metrics"].get("step"), "minutes": fm["metrics"].get("minutes"),
                    "crop_size": fm["args"].get("crop_size"), "train_batch_size": fm["args"].get("train_batch_size")}
    try:
        decoder_rel = str(decoder_path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        decoder_rel = str(decoder_path)
    data = {
        "date": now(), "command": command_line(), "environment": environment(),
        "settings": {"num_images": n, "split": "test", "data": "fashion-product-images-hr", "image_sizes": sizes,
                     "decoder": decoder_rel, "decoder_config": {k: v for k, v in dict(hr.config).items() if k != "_name_or_path"}, "output_size": size,
                     "compared_region": f"{c1 - c0}x{size} content band (columns {c0}-{c1 - 1} of the {size}x{size} square)",
                     "baseline": "shipped 64-px decoder output (uint8) resized with PIL bicubic", "training": training},
        "results": results,
    }
    grid_path = GRID_PATH if not args.fast else out_dir(args.out_dir, args.fast) / "hr_decoder.png"
    grid_path.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid([im for row in grid_rows for im in row], ["real photo", "64 px + bicubic (today)", "HR decoder"]).save(grid_path)
    data["settings"]["grid"] = str(grid_path.relative_to(REPO_ROOT)) if grid_path.is_relative_to(REPO_ROOT) else str(grid_path)
    data["settings"]["grid_link"] = os.path.relpath(grid_path, out_dir(args.out_dir, args.fast))
    return data


def render(data) -> str:
    s, r = data["settings"], data["results"]
    md = [header("HR decoder for the shipped tokens vs 64 px + bicubic", data)]
    md.append(f"{s['num_images']} test photos of fashion-product-images-hr ({', '.join(f'{k}: {v}' for k, v in s['image_sizes'].items())}); "
              f"tokens of the 64-px-preprocessed photo; compared at {s['compared_region']} against the photo padded "
              f"to a white square as `preprocess` pads it (photos smaller than 192x256, e.g. 168x224, are resized up by that "
              f"step, so their reference is itself an upscale). Decoder: `{s['decoder']}`"
              + (f" ({s['training']['steps']} steps, {fmt(s['training']['minutes'], 1)} min of training)" if s.get("training") else "") + ".\n")
    h, b, real = r["hr_decoder"], r["baseline_bicubic"], r["real"]
    rows = [
        ["(a) HR decoder, tokens -> 256 px", fmt(h["psnr"], 2), fmt(h["ssim"], 4), fmt(h["sharpness"], 1), fmt(h["sharpness_median"], 1), fmt(1000 * h["seconds_per_image"], 1)],
        ["(b) 64-px decoder + PIL bicubic (today)", fmt(b["psnr"], 2), fmt(b["ssim"], 4), fmt(b["sharpness"], 1), fmt(b["sharpness_median"], 1), fmt(1000 * b["seconds_per_image"], 1)],
        ["real photos", "-", "-", fmt(real["sharpness"], 1), fmt(real["sharpness_median"], 1), "-"],
    ]
    md.append(markdown_table(["output", "PSNR (dB)", "SSIM", "sharpness (mean)", "sharpness (median)", "ms / image"], rows))
    md.append("")
    md.append(f"The HR decoder has the higher PSNR on {r['hr_psnr_wins']} of {s['num_images']} photos. "
              f"Beats the baseline on PSNR: {'yes' if r['beats_baseline']['psnr'] else 'no'}, SSIM: {'yes' if r['beats_baseline']['ssim'] else 'no'}, "
              f"sharpness: {'yes' if r['beats_baseline']['sharpness'] else 'no'}. Sharpness is the variance of the 3x3 Laplacian of the "
              "grey image (0-255 scale); higher is sharper, the real photos set the target (more is not better beyond them). "
              "Decode time: `StyleDecoder.forward` of the HR decoder vs 64-px decode + PIL resize, float32, the threads above; "
              f"the training script's equivalent path (`decode_fast`: resizes the per-layer modulations instead of the "
              f"128-channel style map) takes {fmt(1000 * r['hr_fast_path']['seconds_per_image'], 1)} ms / image "
              f"(largest difference from `forward`: {r['hr_fast_path']['max_abs_difference']:.1e}).")
    md.append(f"\n![real | 64 px + bicubic | HR decoder]({s['grid_link']})")
    return "\n".join(md)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoder", default=None, help="HR decoder folder (default runs/hr-decoder/decoder_hr, else the shipped decoder_hr)")
    parser.add_argument("--model", default=None, help="pipeline folder (default: the shipped m6-fashion-64)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="fashion-product-images-hr folder (test.parquet)")
    parser.add_argument("--num-images", type=int, default=200, help="first N test photos (default 200; 8 with --fast)")
    parser.add_argument("--batch-size", type=int, default=16)
    add_run_args(parser)
    args = parser.parse_args(argv)
    if args.fast:
        args.num_images = min(args.num_images, 8)
    set_threads(args.threads)
    data = run(args)
    write_results(out_dir(args.out_dir, args.fast), "hr_decoder", data, render(data))


if __name__ == "__main__":
    main()
