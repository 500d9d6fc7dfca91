"""Unconditional generation (paper Table 3 analog): FID, KID and IS of images generated without text.

The shipped pipeline generates N images with an empty prompt (SMART, T=10, the scheduler's default
temperature); they are scored with Inception-v3 FID/KID against all real test images and with
"IS (articleType classifier)". The real-vs-real floor at the same N (real train images against the same
reference) and the text-to-image FID of the same run, when available, are listed beside it.

    python benchmarks/bench_unconditional.py                            # full: 200 images
    python benchmarks/bench_unconditional.py --from-json results.json   # tables from an `m6-fashion evaluate` run
    python benchmarks/bench_unconditional.py --fast                     # CI smoke run

Writes unconditional.json / .md / .png to benchmarks/results (runs/benchmarks-fast with --fast).
"""

from __future__ import annotations

import argparse
import json

import _common  # noqa: F401
from _common import add_run_args, command_line, environment, fmt, header, markdown_table, now, out_dir, plt, set_threads, write_results


def render(data) -> str:
    md = [header("Unconditional generation (Table 3 analog)", data)]
    u = data["unconditional"]
    md.append(f"{u['num_images']} images generated without text (SMART T={u['steps']}, temperature {fmt(u['temperature'], 2)}, "
              f"batch {u['batch_size']}), 64x64; FID/KID (Inception-v3) against {data['settings']['num_reference_real']} real test images.\n")
    rows = [[f"M6-Fashion (shipped), unconditional, SMART T={u['steps']}", fmt(u["fid_inception"], 1),
             f"{fmt(u['kid_inception_mean'], 4)} ± {fmt(u['kid_inception_std'], 4)}", fmt(u["is_articletype_classifier_mean"], 2),
             fmt(u["seconds_per_image"], 2)]]
    for t in data.get("text_to_image") or []:
        rows.append([f"for comparison: text-to-image, temperature {fmt(t['temperature'], 2)}, n={t['num_images']}",
                     fmt(t["fid_inception"], 1), f"{fmt(t['kid_inception_mean'], 4)} ± {fmt(t['kid_inception_std'], 4)}",
                     fmt(t["is_articletype_classifier_mean"], 2), fmt(t["seconds_per_image"], 2)])
    ref = data.get("references") or {}
    if "fid_inception" in ref:
        rows.append([f"real images (from: {ref['real_images_from']}, n={ref['num_fake']}) vs the same reference: the floor",
                     fmt(ref["fid_inception"], 1), fmt(ref["kid_inception_mean"], 4), fmt(ref["is_articletype_classifier_mean"], 2), ""])
    md.append(markdown_table(["method", "FID", "KID", "IS (articleType classifier)", "s/image"], rows))
    md.append("\nFID depends on the sample count (biased upwards for small n): compare rows of equal n, and with the floor.")
    md.append("\n![unconditional generation](unconditional.png)")
    return "\n".join(md)


def plot(data, path) -> None:
    pyplot = plt()
    u = data["unconditional"]
    names, fids, kids, colors = [f"unconditional\n(n={u['num_images']})"], [u["fid_inception"]], [u["kid_inception_mean"]], ["C0"]
    for t in data.get("text_to_image") or []:
        names.append(f"text-to-image\ntemp {t['temperature']:.2f} (n={t['num_images']})")
        fids.append(t["fid_inception"])
        kids.append(t["kid_inception_mean"])
        colors.append("C1")
    ref = data.get("references") or {}
    if "fid_inception" in ref:
        names.append(f"real vs real\n(n={ref['num_fake']})")
        fids.append(ref["fid_inception"])
        kids.append(ref["kid_inception_mean"])
        colors.append("gray")
    fig, axes = pyplot.subplots(1, 2, figsize=(10, 3.6))
    axes[0].bar(names, fids, color=colors)
    axes[0].set_title("FID, Inception-v3 (lower is better)", fontsize=9)
    axes[1].bar(names, kids, color=colors)
    axes[1].set_title("KID, Inception-v3 (lower is better)", fontsize=9)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Unconditional vs text-to-image vs real, against the real test images ({data['date']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--num-samples", type=int, default=None, help="images (default 200; 4 with --fast)")
    p.add_argument("--steps", type=int, default=None, help="SMART passes (default 10; 2 with --fast)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--from-json", default=None, help="build the tables from an `m6-fashion evaluate` result file")
    add_run_args(p)
    args = p.parse_args(argv)

    from m6_fashion.evaluation import evaluate as ev

    set_threads(args.threads)
    fast = args.fast
    directory = out_dir(args.out_dir, fast)
    if args.from_json:
        res = json.loads(open(args.from_json).read())
    else:
        res = ev.evaluate(model=args.model, num_samples=args.num_samples or (4 if fast else 200), num_real=8 if fast else None,
                          steps=args.steps or (2 if fast else 10), batch_size=args.batch_size, seed=args.seed,
                          sections=["unconditional"])
        res["command"] = command_line()
    if "unconditional" not in res:
        raise SystemExit("error: the result file has no unconditional section")
    data = {
        "benchmark": "unconditional",
        "date": res.get("date") or now(),
        "command": res.get("command") or command_line(),
        "tables_made_by": command_line(),
        "environment": res.get("environment") or environment(),
        "fast": fast,
        "settings": res["settings"],
        "unconditional": res["unconditional"],
        "text_to_image": res.get("text_to_image"),
        "references": res.get("references"),
    }
    write_results(directory, "unconditional", data, render(data))
    plot(data, directory / "unconditional.png")
    return data


if __name__ == "__main__":
    main()
