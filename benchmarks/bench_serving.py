"""Serving throughput of the studio: text-to-image requests from 1, 4 and 10 concurrent users, batching on vs off.

What is measured: the studio app (`m6_fashion.studio.build_app`, the page `m6-fashion studio` serves) runs in this
process on 127.0.0.1, twice around the same loaded pipeline: once with batching (`--max-batch-size`, the studio's
default) and once without (max batch 1: one request per pipeline call, as before batching). Every simulated user
is a `gradio_client.Client` (its own session) in its own thread that sends a text-to-image request through the
app's queue (`/text_to_image`: description, seed, SMART steps, number of images), waits for the result (the
gallery, whose PNG files the client downloads) and at once sends the next one (a closed loop, no think time).
Each user sends other descriptions and seeds.

For each number of users and each mode, the users run for `--warmup` seconds (not counted: batches form), then
for the `--seconds` measurement window (stretched until `--min-requests` requests have completed in it, for the
CI smoke run on a busy machine), and then stop sending (the requests in flight finish, uncounted, before the next
row starts). Reported per row:

* images/s: images of the requests that completed inside the window / the window's length;
* median and p90 latency: client-side seconds from sending a request to having its result, over those requests;
* mean batch: mean number of requests per text-to-image pipeline call (over the whole row, warm-up included).

The two modes alternate (off, on, off, on, ... for `--rounds` rounds per number of users) so that load changes on a
shared machine hit both alike; a row pools its rounds. The pipeline makes the model's default output (192x256
for the shipped model) with the studio's default T=8 SMART steps and 1 image per request.

    python benchmarks/bench_serving.py --threads 2       # full: 1, 4, 10 users; about 6 minutes
    python benchmarks/bench_serving.py --fast            # CI smoke run: 1 and 4 users, T=2, 2 s windows

Writes serving.json / .md to benchmarks/results (runs/benchmarks-fast with --fast).
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import statistics
import threading
import time

import _common  # noqa: F401  (puts src/ on the path)
from _common import add_run_args, command_line, environment, fmt, header, markdown_table, now, out_dir, set_threads, write_results

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no usage reports

PROMPTS = [  # catalogue captions (test split of fashion-product-images)
    "Basics Men Red T-shirt", "Lee Men Checks Brown Shirt", "Lee Women Navy Blue Top", "Nike Womens Sphere Pink T-shirt",
    "Puma Men Graffiti FX Shoes", "Domyos Women Black Capri", "Probase Mens Probase Orange Stripe Polo tee T-shirt",
    "Men Navy Blue Casual Shirt", "Women Pink Top", "Fastrack Men Black Watch",
]


def percentile(values, q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between order statistics; NaN for no values."""
    v = sorted(values)
    if not v:
        return float("nan")
    pos = (len(v) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One studio app served in this process, and `users` clients of it."""

    def __init__(self, pipe, max_batch_size: int, users: int):
        from gradio_client import Client

        from m6_fashion.studio import build_app

        self.max_batch_size = max_batch_size
        self.app = build_app(pipe, max_batch_size=max_batch_size)
        self.port = free_port()
        self.app.launch(server_name="127.0.0.1", server_port=self.port, prevent_thread_lock=True, quiet=True)
        url = f"http://127.0.0.1:{self.port}/"
        self.clients = [Client(url, verbose=False) for _ in range(users)]

    def wait_idle(self, timeout: float = 300.0) -> None:
        """Returns once the studio has neither a waiting nor a running request (checked a few times in a row)."""
        studio = self.app.studio
        deadline, quiet = time.perf_counter() + timeout, 0
        while quiet < 4 and time.perf_counter() < deadline:
            with studio._queue:
                idle = not studio._pending and not studio._leader_active
            if idle and studio._lock.acquire(blocking=False):
                studio._lock.release()
                quiet += 1
            else:
                quiet = 0
            time.sleep(0.05)

    def close(self):
        self.wait_idle()
        self.app.close()


def run_users(server: Server, users: int, steps: int, images: int, warmup: float, seconds: float, seed_base: int,
              min_requests: int = 0) -> dict:
    """`users` closed-loop users for warmup + seconds; each finishes its request in flight at the end (not counted
    when it ends after the window). The window is longer than `seconds` when fewer than `min_requests` requests
    completed in it: it then ends when the `min_requests`-th does (a busy machine still yields a figure), and its
    real length is returned. Returns the counted latencies and images, the window's seconds, the errors and the
    batch sizes."""
    done, errors = [], []
    lock = threading.Lock()
    start = time.perf_counter()
    stop_at = start + warmup + seconds
    n_batches = len(server.app.studio.batch_sizes)

    def in_window() -> int:
        with lock:
            return sum(start + warmup <= b for _, b, _ in done)

    def user(i: int):
        client = server.clients[i]
        k = 0
        while time.perf_counter() < stop_at or (in_window() < min_requests and not errors):
            prompt = PROMPTS[(i + k) % len(PROMPTS)]
            seed = seed_base + 1000 * i + k
            t0 = time.perf_counter()
            try:
                client.predict(prompt, seed, steps, images, api_name="/text_to_image")
            except Exception as e:  # noqa: BLE001 - reported in the results
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                break
            with lock:
                done.append((t0, time.perf_counter(), images))
            k += 1

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(warmup + seconds + 600)
    server.wait_idle()  # the next row starts on an idle pipeline
    ends = sorted(b for _, b, _ in done if b >= start + warmup)
    if len([b for b in ends if b <= stop_at]) < min_requests and len(ends) >= min_requests > 0:
        stop_at = ends[min_requests - 1]  # the window stretched until the min_requests-th request completed
    window = (start + warmup, stop_at)
    counted = [(a, b, n) for a, b, n in done if window[0] <= b <= window[1]]
    latencies = [b - a for a, b, _ in counted]
    batches = server.app.studio.batch_sizes[n_batches:]
    return {"latencies": latencies, "images": sum(n for *_, n in counted), "seconds": window[1] - window[0], "errors": errors,
            "batches": batches}


def summarize(users: int, mode: str, max_batch_size: int, parts: list) -> dict:
    latencies = [x for p in parts for x in p["latencies"]]
    batches = [b for p in parts for b in p["batches"]]
    seconds = sum(p["seconds"] for p in parts)
    images = sum(p["images"] for p in parts)
    return {
        "users": users, "batching": mode, "max_batch_size": max_batch_size, "requests": len(latencies), "images": images,
        "window_seconds": seconds, "images_per_second": images / seconds if seconds else float("nan"),
        "latency_median_s": statistics.median(latencies) if latencies else float("nan"),
        "latency_p90_s": percentile(latencies, 90),
        "mean_batch": statistics.mean(batches) if batches else float("nan"), "max_batch": max(batches) if batches else 0,
        "errors": [e for p in parts for e in p["errors"]],
    }


def render(data: dict) -> str:
    s = data["settings"]
    md = [header("Serving throughput of the studio (text to image, batching on vs off)", data)]
    md.append(
        f"The studio app served in-process on 127.0.0.1, driven by `gradio_client` users in a closed loop (each sends "
        f"its next request as soon as it has the previous result). Requests: {s['width']}x{s['height']} output, "
        f"T={s['steps']} SMART steps, {s['images_per_request']} image(s) each, other descriptions and seeds per user. "
        f"Batching on = up to {s['max_batch_size']} requests per pipeline call; off = 1. Each row pools {s['rounds']} "
        f"round(s) of a {s['seconds']:g} s window after {s['warmup']:g} s of warm-up"
        + (f" (longer when fewer than {s['min_requests']} request(s) completed in it)" if s.get("min_requests") else "")
        + "; the modes alternate. "
        "Latency: client-side, sending to having the result.\n"
    )
    md.append(table(data))
    return "\n".join(md)


def table(data: dict) -> str:
    """The results table and the machine's load (also rendered into the README by update_readme.py)."""
    md = []
    rows = []
    by_key = {(r["users"], r["batching"]): r for r in data["rows"]}
    for r in data["rows"]:
        off = by_key.get((r["users"], "off"))
        gain = (f"{r['images_per_second'] / off['images_per_second']:.2f}x" if r["batching"] == "on" and off
                and off["images_per_second"] > 0 else "")
        rows.append([r["users"], r["batching"], r["max_batch_size"], r["requests"], fmt(r["images_per_second"], 2), gain,
                     fmt(r["latency_median_s"], 2), fmt(r["latency_p90_s"], 2), fmt(r["mean_batch"], 2), len(r["errors"])])
    md.append(markdown_table(["users", "batching", "max batch", "requests", "images/s", "vs off", "median latency s",
                              "p90 latency s", "mean batch", "errors"], rows))
    load = data.get("load_average")
    if load:
        md.append("")
        md.append(f"Load average (1 min) at the start and end of the run: {fmt(load['start'], 2)} and {fmt(load['end'], 2)} "
                  f"on {data['environment'].get('cpu_count')} cores.")
    return "\n".join(md)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="pipeline folder, Hub id or shipped name (default: the shipped model)")
    p.add_argument("--users", type=int, nargs="+", default=None, help="numbers of concurrent users (default 1 4 10; 1 4 with --fast)")
    p.add_argument("--steps", type=int, default=None, help="SMART steps per request (default 8, the studio's; 2 with --fast)")
    p.add_argument("--images-per-request", type=int, default=1, help="images per request (default 1)")
    p.add_argument("--max-batch-size", type=int, default=None, help="batching on: requests per pipeline call (default: the studio's)")
    p.add_argument("--seconds", type=float, default=None, help="measurement window per round (default 20; 2 with --fast)")
    p.add_argument("--warmup", type=float, default=None, help="uncounted seconds before each window (default 3; 0.5 with --fast)")
    p.add_argument("--rounds", type=int, default=None, help="off/on rounds per number of users (default 2; 1 with --fast)")
    p.add_argument("--min-requests", type=int, default=None,
                   help="a window lasts until at least this many requests completed in it, even past --seconds (default 0; 1 with --fast, "
                        "so a busy machine still gives a figure)")
    add_run_args(p, fast_help="CI smoke run: 1 and 4 users, T=2, one 2 s round (the numbers mean nothing)")
    args = p.parse_args(argv)
    from m6_fashion.studio import DEFAULT_MAX_BATCH_SIZE, MAX_IMAGES, MAX_STEPS, check_batch_settings

    fast = args.fast

    def pick(value, fast_default, default):
        return value if value is not None else (fast_default if fast else default)

    users_list = pick(args.users, [1, 4], [1, 4, 10])
    steps = pick(args.steps, 2, 8)
    seconds = pick(args.seconds, 2.0, 20.0)
    warmup = pick(args.warmup, 0.5, 3.0)
    rounds = pick(args.rounds, 1, 2)
    min_requests = pick(args.min_requests, 1, 0)
    max_batch = pick(args.max_batch_size, DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_SIZE)
    checks = [(all(1 <= u <= 64 for u in users_list), f"--users must be from 1 to 64; got {users_list}"),
              (1 <= steps <= MAX_STEPS, f"--steps must be from 1 to {MAX_STEPS}; got {steps}"),
              (1 <= args.images_per_request <= MAX_IMAGES, f"--images-per-request must be from 1 to {MAX_IMAGES}; got {args.images_per_request}"),
              (seconds > 0 and warmup >= 0, f"--seconds must be > 0 and --warmup >= 0; got {seconds} and {warmup}"),
              (rounds >= 1, f"--rounds must be >= 1; got {rounds}"),
              (min_requests >= 0, f"--min-requests must be >= 0; got {min_requests}")]
    for ok, message in checks:
        if not ok:
            p.error(message)
    try:
        check_batch_settings(max_batch, 0.0)
    except ValueError as e:
        p.error(str(e).replace("max_batch_size", "--max-batch-size"))
    if max_batch == 1:
        p.error("--max-batch-size 1 is the 'off' mode already; give 2 or more for the 'on' mode")
    set_threads(args.threads)

    from m6_fashion import M6FashionPipeline

    started = time.perf_counter()
    pipe = M6FashionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    height, width = pipe.default_size
    most = max(users_list)
    servers = {"off": Server(pipe, 1, most), "on": Server(pipe, max_batch, most)}
    data = {
        "date": now(), "command": command_line(), "environment": environment(), "fast": fast,
        "load_average": {"start": os.getloadavg()[0]} if hasattr(os, "getloadavg") else None,
        "settings": {"model": args.model or "shipped default", "height": height, "width": width, "steps": steps,
                     "images_per_request": args.images_per_request, "users": users_list, "max_batch_size": max_batch,
                     "seconds": seconds, "warmup": warmup, "rounds": rounds, "min_requests": min_requests,
                     "driver": "gradio_client users against the studio app served in-process"},
        "rows": [],
    }
    try:
        for client in (servers["off"].clients[0], servers["on"].clients[0]):  # warm-up: first calls, both apps
            client.predict(PROMPTS[0], 0, steps, args.images_per_request, api_name="/text_to_image")
        for users in users_list:
            parts = {"off": [], "on": []}
            for r in range(rounds):
                for mode in ("off", "on"):
                    part = run_users(servers[mode], users, steps, args.images_per_request, warmup, seconds, seed_base=100000 * r,
                                     min_requests=min_requests)
                    parts[mode].append(part)
                    print(f"{users} user(s), batching {mode}, round {r + 1}: {part['images'] / part['seconds']:.2f} images/s, "
                          f"{len(part['latencies'])} requests, batches {part['batches'][:12]}{'...' if len(part['batches']) > 12 else ''}",
                          flush=True)
            for mode in ("off", "on"):
                data["rows"].append(summarize(users, mode, servers[mode].max_batch_size, parts[mode]))
    finally:
        for server in servers.values():
            server.close()
    if data["load_average"] is not None:
        data["load_average"]["end"] = os.getloadavg()[0]
    data["wall_seconds"] = time.perf_counter() - started
    write_results(out_dir(args.out_dir, fast), "serving", data, render(data))
    return data


if __name__ == "__main__":
    main()
