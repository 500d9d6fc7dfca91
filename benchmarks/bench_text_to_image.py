"""Text-to-image (paper Table 2 analog): FID, KID, IS, attribute hit rate and seconds per image.

Rows:
* SMART (T=10) with the shipped pipeline at the scheduler's default temperature and at 1.0 / 0.7 where they
  differ from it (``--temperatures``).
* Autoregressive baseline of the same size: an AR-trained checkpoint does not exist, so its quality
  columns read "not trained"; its seconds per image are measured with a same-size causal transformer
  (`attention="causal"`, fresh weights, KV-cached `generate_autoregressive`, then the same pixel decoder) at
  the same batch size: decoding speed does not depend on the weights' values.

Quality figures come from `m6_fashion.evaluation.evaluate` (see its docstring): Inception-v3 FID/KID against
all real test images, "IS (articleType classifier)", and the hit rate of the attribute classifier's prediction
on each generated image against the attributes of the caption's dataset row, next to the classifier's
accuracy on the real images of the same rows, the majority-value chance level, and (when available) the hit
rate of unconditional samples against the same captions (measured chance).

    python benchmarks/bench_text_to_image.py                            # full: 200 captions x 2 temperatures
    python benchmarks/bench_text_to_image.py --from-json results.json   # tables from an `m6-fashion evaluate` run
    python benchmarks/bench_text_to_image.py --fast                     # CI smoke run

Writes text_to_image.json / .md / .png to benchmarks/results (runs/benchmarks-fast with --fast).
"""

from __future__ import annotations

import argparse
import json
import time

import _common  # noqa: F401
from _common import add_run_args, command_line, environment, fmt, header, markdown_table, now, out_dir, plt, set_threads, write_results

HEADS = ("articleType", "baseColour", "gender")


def ar_seconds_per_image(pipe, prompts, batch_size: int, seed: int = 0) -> dict:
    """Seconds per image of the KV-cached AR baseline (same-size causal model, fresh weights) + pixel decoding."""
    import torch

    from m6_fashion import M6FashionTransformer
    from m6_fashion.models.sequence_layout import build_model_inputs

    cfg = pipe.transformer.config
    ar_cfg = cfg.__class__(**{**cfg.to_dict(), "attention": "causal", "prefix_attention": "full"})
    torch.manual_seed(seed)
    ar = M6FashionTransformer(ar_cfg).eval()
    seconds, n = 0.0, 0
    for j, i in enumerate(range(0, len(prompts), batch_size)):
        batch = list(prompts[i : i + batch_size])
        g = torch.Generator().manual_seed(seed + j)
        t0 = time.perf_counter()
        with torch.no_grad():
            inputs = build_model_inputs(cfg, pipe.encode_prompt(batch), None, None)
            prefix = {k: v[:, : -cfg.num_image_tokens] for k, v in inputs.items()}
            codes = ar.generate_autoregressive(**prefix, generator=g)
            pipe.decode_tokens(codes)
        seconds += time.perf_counter() - t0
        n += len(batch)
    return {"seconds_per_image": seconds / n, "num_images": n, "batch_size": batch_size,
            "transformer_params": sum(p.numel() for p in ar.parameters())}


def render(data) -> str:
    md = [header("Text-to-image (Table 2 analog)", data)]
    p = data["prompts"]
    md.append(f"{p['num']} captions drawn (seed {data['settings']['seed']}) from the test split, one image each at 64x64; "
              f"FID/KID (Inception-v3) against {data['settings']['num_reference_real']} real test images; "
              "hit rate = the attribute classifier's prediction on the generated image equals the caption's dataset-row attribute.\n")
    rows = []
    for r in data["smart"]:
        h = r["hit_rate"]
        rows.append([f"SMART T={r['steps']} ({r['mask_schedule']} schedule), temperature {fmt(r['temperature'], 2)}",
                     fmt(r["fid_inception"], 1), f"{fmt(r['kid_inception_mean'], 4)} ± {fmt(r['kid_inception_std'], 4)}",
                     fmt(r["is_articletype_classifier_mean"], 2), fmt(h["articleType"]), fmt(h["baseColour"]), fmt(h["gender"]),
                     fmt(r["seconds_per_image"], 2)])
    ar = data.get("autoregressive") or {}
    rows.append(["autoregressive baseline, same size (KV cache)", *(["not trained at this size"] * 6),
                 fmt(ar.get("seconds_per_image"), 2) if ar.get("seconds_per_image") else "not measured"])
    acc, ch = p["classifier_accuracy_real"], p["chance_majority"]
    rows.append(["real test images of the same rows (classifier accuracy)", "", "", "", fmt(acc["articleType"]),
                 fmt(acc["baseColour"]), fmt(acc["gender"]), ""])
    unc = data.get("unconditional_chance")
    if unc:
        rows.append(["unconditional samples vs the same captions (measured chance)", "", "", "", fmt(unc["articleType"]),
                     fmt(unc["baseColour"]), fmt(unc["gender"]), ""])
    rows.append(["chance: majority value among the captions", "", "", "",
                 f"{fmt(ch['articleType']['rate'])} ({ch['articleType']['label']})",
                 f"{fmt(ch['baseColour']['rate'])} ({ch['baseColour']['label']})",
                 f"{fmt(ch['gender']['rate'])} ({ch['gender']['label']})", ""])
    ref = data.get("references") or {}
    if "fid_inception" in ref:
        rows.append([f"real images (from: {ref['real_images_from']}, n={ref['num_fake']}) vs the same reference: the floor",
                     fmt(ref["fid_inception"], 1), fmt(ref["kid_inception_mean"], 4), fmt(ref["is_articletype_classifier_mean"], 2),
                     "", "", "", ""])
    md.append(markdown_table(["method", "FID", "KID", "IS (articleType classifier)", "hit articleType", "hit baseColour",
                              "hit gender", "s/image"], rows))
    md.append("")
    if ar.get("smart_same_run_seconds_per_image"):
        md.append(f"Speed measured back to back in one run on {ar['num_images']} captions (batch {ar['batch_size']}): AR baseline "
                  f"{fmt(ar['seconds_per_image'], 2)} s/image vs SMART T={ar['smart_same_run_steps']} "
                  f"{fmt(ar['smart_same_run_seconds_per_image'], 2)} s/image: AR / SMART time ratio {fmt(ar['ar_over_smart'], 2)} "
                  "(below 1 = the AR baseline is faster at this batch size).")
    small = data.get("equal_budget_ablation")
    if small:
        by = {r["name"]: r for r in small["rows"]}
        if "PQ + SMART" in by and "PQ + AR" in by:
            a, b = by["PQ + SMART"], by["PQ + AR"]
            md.append(f"AR vs SMART quality with the same recipe exists only at a small equal budget ({small['settings']['layers']} x "
                      f"{small['settings']['hidden_size']}, {small['settings']['steps']} steps; generation_ablation.md, {small['date']}): "
                      f"FID {fmt(b['fid_inception'], 1)} (AR) vs {fmt(a['fid_inception'], 1)} (SMART), hit rates "
                      f"{' / '.join(fmt(b['hit_rate'][h]) for h in HEADS)} (AR) vs {' / '.join(fmt(a['hit_rate'][h]) for h in HEADS)} (SMART).")
    md.append(f"Seconds per image: wall time of batched pipeline calls (batch {data['smart'][0]['batch_size']}) on CPU, "
              f"{data['environment'].get('threads')} thread(s) (the AR row: the back-to-back run above). "
              "FID at this sample count is biased upwards: compare it with the real-vs-real floor, not with 0.")
    md.append("\n![text-to-image hit rates](text_to_image.png)")
    return "\n".join(md)


def plot(data, path) -> None:
    pyplot = plt()
    import numpy as np

    groups = []
    for r in data["smart"]:
        groups.append((f"SMART T={r['steps']}, temp {r['temperature']:.2f}", [r["hit_rate"][h] for h in HEADS], None))
    p = data["prompts"]
    groups.append(("classifier accuracy on the real images", [p["classifier_accuracy_real"][h] for h in HEADS], "gray"))
    if data.get("unconditional_chance"):
        groups.append(("unconditional samples (measured chance)", [data["unconditional_chance"][h] for h in HEADS], "lightgray"))
    groups.append(("majority value (chance)", [p["chance_majority"][h]["rate"] for h in HEADS], "whitesmoke"))
    x = np.arange(len(HEADS))
    w = 0.8 / len(groups)
    fig, ax = pyplot.subplots(figsize=(8, 3.8))
    for i, (label, vals, color) in enumerate(groups):
        vals = [np.nan if v is None else v for v in vals]
        ax.bar(x + (i - (len(groups) - 1) / 2) * w, vals, w, label=label, color=color, edgecolor="black", linewidth=0.4)
    ax.set_xticks(x)
    ax.set_xticklabels(HEADS)
    ax.set_ylim(0, 1.25)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("attribute hit rate / accuracy")
    ax.set_title(f"Text-to-image on {p['num']} test captions: does the image show the prompted attribute? ({data['date']})", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", ncol=3)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--num-samples", type=int, default=None, help="captions (default 200; 4 with --fast)")
    p.add_argument("--temperatures", type=float, nargs="+", default=None,
                   help="default: the scheduler's default, then 1.0 and 0.7 where they differ from it")
    p.add_argument("--steps", type=int, default=None, help="SMART passes (default 10; 2 with --fast)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ar-images", type=int, default=None, help="images for the AR speed row (default 16; 2 with --fast; 0 = skip)")
    p.add_argument("--from-json", default=None, help="build the tables from an `m6-fashion evaluate` result file")
    add_run_args(p)
    args = p.parse_args(argv)

    import torch

    from m6_fashion.evaluation import evaluate as ev
    from m6_fashion.pipelines import M6FashionPipeline

    set_threads(args.threads)
    fast = args.fast
    directory = out_dir(args.out_dir, fast)
    pipe = M6FashionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    if args.from_json:
        res = json.loads(open(args.from_json).read())
        source = f"tables from `{res.get('command')}` ({res.get('date')})"
    else:
        default_t = float(pipe.scheduler.config.temperature)
        temps = args.temperatures or [default_t] + [t for t in (1.0, 0.7) if t != default_t]
        sections = ["text_to_image"]
        res = ev.evaluate(model=args.model, pipe=pipe, num_samples=args.num_samples or (4 if fast else 200),
                          num_real=8 if fast else None, steps=args.steps or (2 if fast else 10), temperatures=temps,
                          batch_size=args.batch_size, seed=args.seed, sections=sections)
        source = "measured by this script"
    if "text_to_image" not in res:
        raise SystemExit("error: the result file has no text_to_image section")
    data = {
        "benchmark": "text_to_image",
        "date": now() if not args.from_json else res.get("date"),
        "command": command_line() if not args.from_json else res.get("command"),
        "tables_made_by": command_line(),
        "source": source,
        "environment": res.get("environment") or environment(),
        "fast": fast,
        "settings": res["settings"],
        "prompts": res["prompts"],
        "references": res.get("references"),
        "smart": res["text_to_image"],
        "unconditional_chance": (res.get("unconditional") or {}).get("hit_rate_unconditional_vs_prompts"),
        "autoregressive": {"quality": "not trained at this size (no AR-trained checkpoint exists)"},
    }
    small = directory / "generation_ablation.json"
    if small.is_file() and not fast:
        data["equal_budget_ablation"] = json.loads(small.read_text())
    n_ar = args.ar_images if args.ar_images is not None else (2 if fast else 16)
    if n_ar > 0:
        examples = res["prompts"]["examples"]
        prompts = (examples * (n_ar // len(examples) + 1))[:n_ar]
        bs = min(args.batch_size, n_ar)
        ar = ar_seconds_per_image(pipe, prompts, bs, args.seed)
        # SMART on the same prompts and batch size, right after, so that the two speeds share the machine's load
        steps = data["smart"][0]["steps"]
        smart = ev.generate(pipe, prompts, steps=steps, batch_size=bs, seed=args.seed)
        ar.update({"threads": torch.get_num_threads(), "date": now(),
                   "smart_same_run_seconds_per_image": smart["seconds_per_image"], "smart_same_run_steps": steps,
                   "ar_over_smart": ar["seconds_per_image"] / smart["seconds_per_image"]})
        data["autoregressive"].update(ar)
        print(f"AR baseline: {ar['seconds_per_image']:.2f} s/image; SMART T={steps} in the same run: "
              f"{smart['seconds_per_image']:.2f} s/image (batch {bs})", flush=True)
    write_results(directory, "text_to_image", data, render(data))
    plot(data, directory / "text_to_image.png")
    return data


if __name__ == "__main__":
    main()
