"""Batched text-to-image serving in the studio: the batched handler, the queue that forms batches, and the app.

A request must get exactly the images it gets alone whatever else shares its pipeline call, and bad input in one
request must fail that request only, with a message that says what is wrong and what is accepted.
"""

from __future__ import annotations

import re
import socket
import threading
import time

import numpy as np
import PIL.Image
import pytest

gr = pytest.importorskip("gradio", reason="the studio needs Gradio: pip install -e '.[studio]'")

from m6_fashion.studio import (  # noqa: E402
    DEFAULT_MAX_BATCH_SIZE, MAX_BATCH_SIZE, Studio, build_app, check_batch_settings, main,
)

STEPS = 2  # few SMART passes keep every call quick on CPU
REQUESTS = [  # different prompts, seeds and numbers of images
    ("Men Navy Blue Casual Shirt", 0, STEPS, 1),
    ("Women Pink Top", 7, STEPS, 2),
    ("Puma Men Black Sports Shoes", 123, STEPS, 1),
]


@pytest.fixture(scope="module")
def pipe():
    from m6_fashion import M6FashionPipeline

    p = M6FashionPipeline.from_pretrained()
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def alone(pipe):
    """Each request of REQUESTS run on its own (batching off: exactly the studio's single-request call)."""
    studio = Studio(pipe, max_batch_size=1)
    out = [studio.text_to_image(*r) for r in REQUESTS]
    assert studio.batch_sizes == [1, 1, 1]
    return out


def _arrays(images):
    return [np.asarray(im) for im in images]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(_arrays(a), _arrays(b)))


def _start_while_busy(studio: Studio, calls, timeout: float = 60.0):
    """Starts one thread per call while holding the pipeline lock, waits until all wait in the queue (so they form one
    batch), then lets the pipeline go. Returns the threads' outcomes (results or exceptions), in order."""
    outcomes = [None] * len(calls)

    def run(i, fn):
        try:
            outcomes[i] = fn()
        except Exception as e:  # noqa: BLE001 - returned to the test
            outcomes[i] = e

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    with studio._lock:  # the pipeline is busy: requests pile up
        for t in threads:
            t.start()
        deadline = time.time() + timeout
        while sum(1 for t in threads if t.is_alive()) > len(studio._pending) and time.time() < deadline:
            time.sleep(0.01)
    for t in threads:
        t.join(timeout)
    return outcomes


# ---------------------------------------------------------------------------------------------- the batched handler
def test_a_batch_of_three_requests_gives_the_images_of_three_single_calls(pipe, alone):
    studio = Studio(pipe, max_batch_size=4)
    outcomes = studio.text_to_image_batch(REQUESTS)
    assert studio.batch_sizes == [3]  # one pipeline call for the three
    for (gallery, images), (gallery1, images1), r in zip(outcomes, alone, REQUESTS):
        assert len(images) == r[3] and all(im.size == (192, 256) for im in images)
        assert _same(images, images1)
        assert [c for _, c in gallery] == [c for _, c in gallery1]


def test_a_batch_is_order_independent_and_split_by_max_batch_size(pipe, alone):
    studio = Studio(pipe, max_batch_size=2)
    outcomes = studio.text_to_image_batch(REQUESTS[::-1])
    assert studio.batch_sizes == [2, 1]
    for (_, images), (_, images1) in zip(outcomes, alone[::-1]):
        assert _same(images, images1)


def test_requests_with_different_steps_run_in_separate_calls(pipe, alone):
    studio = Studio(pipe, max_batch_size=4)
    outcomes = studio.text_to_image_batch([REQUESTS[0], ("Women Pink Top", 7, 3, 1), REQUESTS[2]])
    assert sorted(studio.batch_sizes) == [1, 2]
    assert _same(outcomes[0][1], alone[0][1]) and _same(outcomes[2][1], alone[2][1])


@pytest.mark.parametrize("bad, message", [
    (("   ", 1, STEPS, 1), "Type a description"),
    (("Men Shirt", -1, STEPS, 1), r"seed must be a whole number between 0 and 2\^63-1; got -1"),
    (("Men Shirt", 0, 0, 1), "Steps must be a whole number from 1 to 30; got 0"),
    (("Men Shirt", 0, STEPS, 99), "Number of images must be a whole number from 1 to 8; got 99"),
    (("Men Shirt", 0, STEPS), r"Request 2: give \(description, seed, steps, number of images\)"),
    ("Men Shirt", r"Request 2: give \(description, seed, steps, number of images\)"),
])
def test_bad_input_in_one_request_fails_only_that_request(pipe, alone, bad, message):
    studio = Studio(pipe, max_batch_size=4)
    outcomes = studio.text_to_image_batch([REQUESTS[0], bad, REQUESTS[2]])
    assert isinstance(outcomes[1], gr.Error)
    with pytest.raises(gr.Error, match=message):
        raise outcomes[1]
    assert studio.batch_sizes == [2]  # the bad request never reached the pipeline
    assert _same(outcomes[0][1], alone[0][1]) and _same(outcomes[2][1], alone[2][1])


class _RefusesLists:
    """The pipeline, except that a call with a list of prompts (a batch) fails."""

    def __init__(self, pipe):
        self._pipe = pipe

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, *args, prompt=None, **kwargs):
        if isinstance(prompt, list):
            raise RuntimeError("no batches today")
        return self._pipe(*args, prompt=prompt, **kwargs)


def test_a_failed_batch_runs_its_requests_one_by_one(pipe, alone):
    studio = Studio(_RefusesLists(pipe), max_batch_size=4)
    outcomes = studio.text_to_image_batch(REQUESTS)
    assert studio.batch_sizes == [1, 1, 1]
    for (_, images), (_, images1) in zip(outcomes, alone):
        assert _same(images, images1)


def test_the_scheduler_is_restored_after_a_batch(pipe):
    studio = Studio(_RefusesLists(pipe), max_batch_size=4)
    studio.text_to_image_batch(REQUESTS[:2])
    assert "step" not in vars(pipe.scheduler)  # the per-request step lives only during a batched call


# ---------------------------------------------------------------------------------------------- the queue
def test_concurrent_requests_share_a_call_and_get_their_own_images(pipe, alone):
    studio = Studio(pipe, max_batch_size=4, batch_wait=0)
    outcomes = _start_while_busy(studio, [lambda r=r: studio.text_to_image(*r) for r in REQUESTS])
    assert studio.batch_sizes == [3]
    for (gallery, images), (gallery1, images1) in zip(outcomes, alone):
        assert _same(images, images1) and [c for _, c in gallery] == [c for _, c in gallery1]


def test_a_bad_request_in_the_queue_fails_alone_with_its_message(pipe, alone):
    studio = Studio(pipe, max_batch_size=4, batch_wait=0)
    calls = [lambda: studio.text_to_image(*REQUESTS[0]), lambda: studio.text_to_image("Men Shirt", "abc", STEPS, 1),
             lambda: studio.text_to_image(*REQUESTS[2])]
    outcomes = _start_while_busy(studio, calls)
    assert isinstance(outcomes[1], gr.Error) and "seed must be a whole number" in str(outcomes[1]) and "'abc'" in str(outcomes[1])
    assert studio.batch_sizes == [2]
    assert _same(outcomes[0][1], alone[0][1]) and _same(outcomes[2][1], alone[2][1])


def test_every_request_of_a_batch_gets_its_own_progress(pipe):
    studio = Studio(pipe, max_batch_size=4, batch_wait=0)
    seen = [[], []]

    def recorder(i):
        def progress(value, desc=None, unit=None):
            seen[i].append((value, desc, threading.get_ident()))
        return progress

    outcomes = _start_while_busy(studio, [lambda i=i: studio.text_to_image(*REQUESTS[i], progress=recorder(i)) for i in range(2)])
    assert studio.batch_sizes == [2] and not any(isinstance(o, Exception) for o in outcomes)
    for calls in seen:
        assert [v for v, _, _ in calls] == [(0, STEPS), (1, STEPS), (2, STEPS)]
        assert calls[-1][1] == f"SMART step {STEPS}/{STEPS}"


def test_a_lone_user_never_waits_for_others(pipe):
    studio = Studio(pipe, max_batch_size=4, batch_wait=5.0)
    studio.text_to_image(*REQUESTS[0])  # warm
    start = time.perf_counter()
    studio.text_to_image(*REQUESTS[2])
    assert time.perf_counter() - start < 4.0  # far below the 5 s a batch may wait for other active users
    assert studio.batch_sizes == [1, 1]


def test_batching_off_runs_one_request_per_call(pipe, alone):
    studio = Studio(pipe, max_batch_size=1)
    outcomes = _start_while_busy(studio, [lambda r=r: studio.text_to_image(*r) for r in REQUESTS])
    assert studio.batch_sizes == [1, 1, 1]
    for (_, images), (_, images1) in zip(outcomes, alone):
        assert _same(images, images1)


# ---------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("size, wait, message", [
    (0, 0.1, f"max_batch_size must be a whole number from 1 \\(no batching\\) to {MAX_BATCH_SIZE}; got 0"),
    (MAX_BATCH_SIZE + 1, 0.1, f"got {MAX_BATCH_SIZE + 1}"),
    (2.5, 0.1, "max_batch_size must be a whole number"),
    (True, 0.1, "max_batch_size must be a whole number"),
    (4, -1, "batch_wait must be a number of seconds from 0 to 10; got -1"),
    (4, float("nan"), "batch_wait must be a number of seconds"),
    (4, "0.1", "batch_wait must be a number of seconds"),
])
def test_bad_batch_settings_are_refused_with_a_clear_message(size, wait, message):
    with pytest.raises(ValueError, match=message):
        check_batch_settings(size, wait)
    with pytest.raises(ValueError, match=message):
        build_app(object(), max_batch_size=size, batch_wait=wait)  # refused before any model is touched


@pytest.mark.parametrize("argv, message", [
    (["--max-batch-size", "0"], f"--max-batch-size must be a whole number from 1 \\(no batching\\) to {MAX_BATCH_SIZE}; got 0"),
    (["--batch-wait", "-2"], "--batch-wait must be a number of seconds from 0 to 10; got -2"),
])
def test_the_command_line_refuses_bad_batch_settings(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_the_app_routes_text_to_image_through_the_batching_queue(pipe):
    fns = {f.api_name: f for f in build_app(pipe).fns.values()}
    assert DEFAULT_MAX_BATCH_SIZE > 1
    for name in ("text_to_image", "text_to_image_1"):  # the button and Enter in the description
        assert fns[name].concurrency_id == "text_to_image" and fns[name].concurrency_limit == 2 * DEFAULT_MAX_BATCH_SIZE
    assert fns["inpaint"].concurrency_id == "pipeline"  # the other tabs take turns, one request per call
    fns = {f.api_name: f for f in build_app(pipe, max_batch_size=1).fns.values()}
    assert fns["text_to_image"].concurrency_id == "pipeline"  # batching off: as before


# ---------------------------------------------------------------------------------------------- the served app
def test_the_served_app_batches_concurrent_users(pipe, alone):
    client_mod = pytest.importorskip("gradio_client", reason="gradio_client is not installed")
    app = build_app(pipe, max_batch_size=4, batch_wait=0)
    studio = app.studio
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        clients = [client_mod.Client(url, verbose=False) for _ in REQUESTS]
        calls = [lambda c=c, r=r: c.predict(*r, api_name="/text_to_image") for c, r in zip(clients, REQUESTS)]
        outcomes = _start_while_busy(studio, calls)
        assert studio.batch_sizes == [3], outcomes
        assert len({u for u in studio._active if u[0] == "session"}) == 3  # Gradio tells the users apart
        for gallery, (_, images1) in zip(outcomes, alone):  # the API returns the gallery (the State stays on the server)
            images = [PIL.Image.open(item["image"]).convert("RGB") for item in gallery]
            assert _same(images, images1)  # lossless PNG at the real size
        bad = clients[0].submit("   ", 1, STEPS, 1, api_name="/text_to_image")
        with pytest.raises(Exception, match="Type a description of the garment first"):
            bad.result(timeout=60)
    finally:
        app.close()
