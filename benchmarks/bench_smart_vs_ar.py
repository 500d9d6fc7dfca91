"""SMART (non-autoregressive, T passes) vs the KV-cached autoregressive baseline, measured in one run.

Both decoders use the same transformer size (the shipped model's config): SMART runs the shipped
bidirectional model; the AR baseline is the same architecture with `attention="causal"`, decoding the 256
target tokens one by one with a `DynamicCache` after a single prefix pass (no re-encoding). Decoding speed does
not depend on the weights' values, so the AR model is the same size with fresh weights (no AR-trained checkpoint
ships); quality comparisons belong to the evaluation benchmarks. Time covers token generation only (text
encoding, the transformer passes and sampling), not pixel decoding, which is the same for both.

    python benchmarks/bench_smart_vs_ar.py [--model DIR] [--repeats 3] [--batch-sizes 1 8] [--out results.json]

Prints seconds per image for each variant and the ratios AR / SMART at each batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> dict:
    from m6_fashion import M6FashionPipeline, M6FashionTransformer
    from m6_fashion.models.sequence_layout import build_model_inputs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, nargs="+", default=[10], help="SMART step counts to time")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--bf16", action="store_true", help="also time SMART under CPU bf16 autocast")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe = M6FashionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    cfg = pipe.transformer.config
    ar_cfg = cfg.__class__(**{**cfg.to_dict(), "attention": "causal", "prefix_attention": "full"})
    ar = M6FashionTransformer(ar_cfg).eval()
    full_cfg = cfg.__class__(**{**cfg.to_dict(), "prefix_attention": "full"})
    smart_nocache = M6FashionTransformer(full_cfg).eval()
    smart_nocache.load_state_dict(pipe.transformer.state_dict())
    n_params = sum(p.numel() for p in pipe.transformer.parameters())
    prompt = "Men Navy Blue Casual Shirt"

    results = {"model": args.model or "shipped default", "transformer_params": n_params, "layers": cfg.num_hidden_layers,
               "hidden_size": cfg.hidden_size, "torch_threads": torch.get_num_threads(), "rows": []}
    print(f"transformer: {cfg.num_hidden_layers} layers x {cfg.hidden_size} hidden, {n_params / 1e6:.1f}M parameters, "
          f"{torch.get_num_threads()} threads")

    for bs in args.batch_sizes:
        prompts = [prompt] * bs
        text_ids = pipe.encode_prompt(prompts)
        prefix_inputs = build_model_inputs(cfg, text_ids, None, None)
        prefix_only = {k: v[:, : -cfg.num_image_tokens] for k, v in prefix_inputs.items()}

        def run_ar():
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                ar.generate_autoregressive(**prefix_only, generator=g)

        def run_smart(steps, transformer=None, bf16=False):
            def fn():
                saved = pipe.transformer
                if transformer is not None:
                    pipe.transformer = transformer
                try:
                    g = torch.Generator().manual_seed(0)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        pipe(prompts, num_inference_steps=steps, generator=g, output_type="tokens")
                finally:
                    pipe.transformer = saved
            return fn

        t_ar = _time(run_ar, args.repeats) / bs
        row = {"batch_size": bs, "ar_kv_cache_s_per_image": t_ar}
        print(f"\nbatch {bs}: AR (KV cache, 256 steps)            {t_ar:.3f} s/image")
        for steps in args.steps:
            t_s = _time(run_smart(steps), args.repeats) / bs
            row[f"smart_T{steps}_s_per_image"] = t_s
            row[f"ratio_ar_over_smart_T{steps}"] = t_ar / t_s
            print(f"batch {bs}: SMART T={steps:<2d} (prefix KV reused)      {t_s:.3f} s/image   AR/SMART = {t_ar / t_s:.2f}x")
        t_nc = _time(run_smart(args.steps[0], smart_nocache), args.repeats) / bs
        row["smart_no_prefix_cache_s_per_image"] = t_nc
        print(f"batch {bs}: SMART T={args.steps[0]:<2d} (prefix re-encoded)      {t_nc:.3f} s/image   AR/SMART = {t_ar / t_nc:.2f}x")
        if args.bf16:
            t_bf = _time(run_smart(args.steps[0], bf16=True), args.repeats) / bs
            row["smart_bf16_s_per_image"] = t_bf
            print(f"batch {bs}: SMART T={args.steps[0]:<2d} bf16 autocast            {t_bf:.3f} s/image   AR/SMART = {t_ar / t_bf:.2f}x")
        results["rows"].append(row)

    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
