"""Worked example: teach the shipped model a rare article type, and measure it.

1. picks a rare article type of the fashion-product-images train split (default ``Sarees``: 407 of
   42,221 train images; the shipped model draws something else for every saree caption, while the
   attribute classifier recognises 20/20 real test sarees), writes up to ``--num_images`` (300) of its
   train rows to a Parquet file, together with ``--replay_images`` (300) random train images of other
   types (without them the fine-tuned model draws the new type for every prompt);
2. fine-tunes the shipped pipeline on them with ``m6-fashion finetune`` (in-process; the wall and CPU
   time of that step are measured) -- 10 % of the rows are held out by the command itself;
3. generates images for captions of that type the fine-tune never saw (its test rows, then its
   remaining train rows) and for captions of *other* types (random test rows, as a control), with the
   base and the fine-tuned pipeline and the same seeds, and scores both with the attribute classifier
   (:mod:`m6_fashion.evaluation`): the attribute hit rate (does the classifier see the prompt's article
   type / colour / gender in the image?) before vs after.

Writes ``OUTPUT_DIR/results.json`` (figures + timings), ``OUTPUT_DIR/model`` (the fine-tuned pipeline,
with its sample grids in ``model/samples``) and ``OUTPUT_DIR/grid-{before,after}.png``.

Usage (from the repository root; extra arguments after ``--`` go to ``m6-fashion finetune``)::

    python examples/finetune_rare_article.py --output_dir runs/rare-article
    python examples/finetune_rare_article.py --output_dir runs/rare-lora --lora -- --learning_rate 1e-3
    python examples/finetune_rare_article.py --output_dir runs/rare-article --skip_finetune   # re-score only

The classifier is read from ``--classifier`` (default: the one shipped in the package, trained with
``python -m m6_fashion.evaluation.train_classifier``); without one the script stops after the fine-tune
and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from m6_fashion import M6FashionPipeline
from m6_fashion.image_processing import make_grid

ATTRS = ["text", "articleType", "baseColour", "gender"]


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pick_article_type(counts: Counter, test_counts: Counter, num_images: int, labels) -> str:
    """The rarest type with more than ``num_images`` train rows, some test rows and a classifier label."""
    ok = [t for t, c in counts.items() if c > num_images and test_counts[t] >= 10 and (labels is None or t in labels)]
    if not ok:
        raise SystemExit(f"no article type has more than {num_images} train images; lower --num_images")
    return min(ok, key=lambda t: (counts[t], t))


@torch.no_grad()
def generate(pipe, prompts, steps: int, seed: int, batch_size: int, temperature=None):
    pipe.set_progress_bar_config(disable=True)
    images = []
    for i in range(0, len(prompts), batch_size):
        g = torch.Generator().manual_seed(seed + i)  # same noise for the base and the fine-tuned model
        images += pipe(prompts[i : i + batch_size], num_inference_steps=steps, generator=g, temperature=temperature).images
    return images


def score(classifier, images, rows):
    from m6_fashion.evaluation import attribute_hit_rate, attributes_from_row

    preds = classifier.predict(images)
    rates = attribute_hit_rate(preds, [attributes_from_row(r) for r in rows])
    predicted = Counter(p["articleType"] for p in preds).most_common(5)
    return {**{k: (round(v, 4) if isinstance(v, float) else v) for k, v in rates.items()}, "predicted_types": predicted}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--data_dir", default=os.path.join("..", "shared", "data", "fashion-product-images"),
                   help="folder with train.parquet and test.parquet")
    p.add_argument("--article_type", default="Sarees", help="article type to teach ('auto': the rarest with enough images)")
    p.add_argument("--num_images", type=int, default=300, help="train images of that type to fine-tune on")
    p.add_argument("--replay_images", type=int, default=300,
                   help="random train images of other types mixed in, so the model keeps them (0 = only the rare type)")
    p.add_argument("--model", default=None, help="pipeline to start from (default: the shipped one)")
    p.add_argument("--lora", action="store_true", help="LoRA instead of full fine-tuning")
    p.add_argument("--max_steps", type=int, default=100)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--learning_rate", type=float, default=2e-4)
    p.add_argument("--num_prompts", type=int, default=48, help="held-out captions of the type to score")
    p.add_argument("--num_control_prompts", type=int, default=48, help="captions of other types to score")
    p.add_argument("--inference_steps", type=int, default=10)
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature for both pipelines (default: each pipeline's scheduler setting)")
    p.add_argument("--classifier", default=None, help="attribute classifier folder (default: the shipped one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip_finetune", action="store_true", help="score an existing OUTPUT_DIR/model")
    args = p.parse_args(argv)

    os.makedirs(args.output_dir, exist_ok=True)
    train_path, test_path = (os.path.join(args.data_dir, f"{s}.parquet") for s in ("train", "test"))
    for path in (train_path, test_path):
        if not os.path.isfile(path):
            raise SystemExit(f"error: {path!r} not found; pass --data_dir (a folder with train.parquet and test.parquet)")

    classifier = None
    try:
        from m6_fashion.evaluation import load_default_classifier

        classifier = load_default_classifier(args.classifier)
    except (FileNotFoundError, ImportError) as e:
        print(f"note: no attribute classifier ({e}); the fine-tune runs, the before/after measurement is skipped")

    train_meta = pq.read_table(train_path, columns=ATTRS).to_pylist()
    test_meta = pq.read_table(test_path, columns=ATTRS).to_pylist()
    counts, test_counts = Counter(r["articleType"] for r in train_meta), Counter(r["articleType"] for r in test_meta)
    labels = set(classifier.labels("articleType")) if classifier is not None else None
    article = args.article_type
    if article == "auto":
        article = pick_article_type(counts, test_counts, args.num_images, labels)
    if counts[article] == 0:
        raise SystemExit(f"error: no train image has articleType {article!r}")
    rng = random.Random(args.seed)
    idx = [i for i, r in enumerate(train_meta) if r["articleType"] == article]
    rng.shuffle(idx)
    ft_idx, rest_idx = sorted(idx[: args.num_images]), idx[args.num_images :]
    other_idx = [i for i, r in enumerate(train_meta) if r["articleType"] != article]
    replay_idx = sorted(random.Random(args.seed + 2).sample(other_idx, min(args.replay_images, len(other_idx))))
    target_rows = [r for r in test_meta if r["articleType"] == article] + [train_meta[i] for i in rest_idx]
    target_rows = target_rows[: args.num_prompts]
    others = [r for r in test_meta if r["articleType"] != article]
    control_rows = random.Random(args.seed + 1).sample(others, min(args.num_control_prompts, len(others)))
    print(f"article type {article!r}: {counts[article]} train images ({100 * counts[article] / len(train_meta):.2f}%), "
          f"fine-tuning on {len(ft_idx)} of them + {len(replay_idx)} images of other types; scoring {len(target_rows)} unseen captions of it and {len(control_rows)} of other types")

    model_dir = os.path.join(args.output_dir, "model")
    data_file = os.path.join(args.output_dir, "data", f"{article.replace(' ', '_')}.parquet")
    results = {"article_type": article, "train_images_of_type": counts[article], "fine_tune_rows": len(ft_idx), "replay_rows": len(replay_idx),
               "target_prompts": len(target_rows), "control_prompts": len(control_rows)}
    results_path = os.path.join(args.output_dir, "results.json")
    if os.path.isfile(results_path):
        results = {**json.load(open(results_path)), **results}

    if not args.skip_finetune:
        os.makedirs(os.path.dirname(data_file), exist_ok=True)
        table = pq.read_table(train_path).take(pa.array(sorted(ft_idx + replay_idx)))
        pq.write_table(table, data_file)
        cmd = ["--data", data_file, "--output_dir", model_dir, "--max_steps", str(args.max_steps),
               "--per_device_train_batch_size", str(args.batch_size), "--learning_rate", str(args.learning_rate),
               "--warmup_steps", str(max(1, args.max_steps // 10)), "--eval_steps", str(args.max_steps),
               "--save_steps", str(args.max_steps), "--seed", str(args.seed), "--report_to", "none"]
        if args.model:
            cmd += ["--model", args.model]
        if args.lora:
            cmd += ["--lora"]
        cmd += extra
        print("m6-fashion finetune " + " ".join(cmd), flush=True)
        from m6_fashion.training.finetune import main as finetune

        wall, cpu = time.perf_counter(), _cpu_seconds()
        metrics = finetune(cmd)
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
        results.update({
            "command": "m6-fashion finetune " + " ".join(cmd),
            "finetune_wall_seconds": round(wall, 1), "finetune_cpu_seconds": round(cpu, 1),
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "eval_masked_accuracy": metrics.get("eval_masked_accuracy"),
        })
        print(f"fine-tune: {wall:.0f} s wall, {cpu:.0f} s CPU ({torch.get_num_threads()} threads)", flush=True)
        json.dump(results, open(results_path, "w"), indent=2)

    if classifier is None:
        print(f"the fine-tuned pipeline is in {model_dir}; score it with an attribute classifier (--classifier DIR --skip_finetune)")
        return results
    prompts = [r["text"] for r in target_rows]
    control = [r["text"] for r in control_rows]
    for name, source in (("before", args.model), ("after", model_dir)):
        pipe = M6FashionPipeline.from_pretrained(source)
        t0 = time.perf_counter()
        temperature = args.temperature if args.temperature is not None else pipe.scheduler.config.temperature
        images = generate(pipe, prompts, args.inference_steps, args.seed, 16, temperature)
        control_images = generate(pipe, control, args.inference_steps, args.seed + 10_000, 16, temperature)
        results[name] = {"target": score(classifier, images, target_rows),
                         "control": score(classifier, control_images, control_rows),
                         "temperature": temperature, "generation_seconds": round(time.perf_counter() - t0, 1)}
        make_grid(images[:16], cols=8).save(os.path.join(args.output_dir, f"grid-{name}.png"))
        print(f"{name}: {json.dumps(results[name])}", flush=True)
        json.dump(results, open(results_path, "w"), indent=2)

    print(f"\nattribute hit rate on {len(prompts)} unseen {article} captions / {len(control)} captions of other types")
    print(f"{'':8s} {'articleType':>12s} {'baseColour':>11s} {'gender':>7s} {'all':>6s} | control articleType / mean")
    for name in ("before", "after"):
        t, c = results[name]["target"], results[name]["control"]
        print(f"{name:8s} {t['articleType']:12.3f} {t['baseColour']:11.3f} {t['gender']:7.3f} {t['all']:6.3f} | "
              f"{c['articleType']:.3f} / {c['mean']:.3f}")
    print(f"results: {results_path}")
    return results


if __name__ == "__main__":
    main()
