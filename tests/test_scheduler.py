"""SMARTScheduler: the re-masking schedule, editable regions, determinism."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from m6_fashion import SMARTScheduler


def test_smart_ratio_falls_linearly_from_alpha_to_beta():
    s = SMARTScheduler()
    s.set_timesteps(10)
    ratios = [s.remask_ratio(i) for i in range(10)]
    assert ratios[0] == pytest.approx(0.8) and ratios[8] == pytest.approx(0.2) and ratios[9] == 0.0
    diffs = [ratios[i] - ratios[i + 1] for i in range(8)]
    assert all(d == pytest.approx(diffs[0]) for d in diffs)


def test_cosine_schedule():
    s = SMARTScheduler(mask_schedule="cosine")
    s.set_timesteps(4)
    assert [round(s.remask_ratio(i), 4) for i in range(4)] == [round(v, 4) for v in (0.92388, 0.70711, 0.38268, 0.0)]


def _run(s, logits_fn, n=64, m=2, k=8, editable=None, start=None, generator=None):
    tokens = torch.full((2, n, m), k) if start is None else start.clone()
    s.set_timesteps(s.num_inference_steps or 10)
    masked_counts = []
    for t in s.timesteps:
        tokens = s.step(logits_fn(tokens), t, tokens, editable=editable, generator=generator).prev_sample
        masked_counts.append(int((tokens == k).any(-1).sum()))
    return tokens, masked_counts


def test_loop_fills_everything_and_remasks_the_scheduled_count():
    torch.manual_seed(0)
    s = SMARTScheduler(mask_token_id=8)
    s.set_timesteps(10)
    logits = torch.randn(2, 64, 2, 8)
    tokens, counts = _run(s, lambda t: logits, generator=torch.Generator().manual_seed(0))
    assert (tokens < 8).all()
    assert counts == [2 * int(64 * s.remask_ratio(i)) for i in range(10)]


def test_non_editable_positions_never_change():
    s = SMARTScheduler(mask_token_id=8)
    s.set_timesteps(6)
    start = torch.randint(0, 8, (2, 64, 2))
    editable = torch.zeros(2, 64, dtype=torch.bool)
    editable[:, 10:30] = True
    start[editable] = 8
    tokens, _ = _run(s, lambda t: torch.randn(2, 64, 2, 8), editable=editable, start=start, generator=torch.Generator().manual_seed(1))
    assert torch.equal(tokens[~editable], start[~editable])
    assert (tokens[editable] < 8).all()


def test_generator_reproducible_and_deterministic_mode():
    logits = torch.randn(2, 64, 2, 8)
    s = SMARTScheduler(mask_token_id=8)
    s.set_timesteps(5)
    a, _ = _run(s, lambda t: logits, generator=torch.Generator().manual_seed(0))
    b, _ = _run(s, lambda t: logits, generator=torch.Generator().manual_seed(0))
    c, _ = _run(s, lambda t: logits, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    d = SMARTScheduler(mask_token_id=8, deterministic=True)
    d.set_timesteps(5)
    x, _ = _run(d, lambda t: logits)
    assert torch.equal(x, logits.argmax(-1))


def test_kept_tokens_favour_confident_positions():
    """Positions with a confident prediction should survive re-masking far more often."""
    k = 8
    logits = torch.zeros(1, 200, 1, k)
    logits[:, :100, :, 0] = 10.0  # confident half
    s = SMARTScheduler(mask_token_id=k)
    s.set_timesteps(10)
    out = s.step(logits, 0, torch.full((1, 200, 1), k), generator=torch.Generator().manual_seed(0)).prev_sample
    remasked = (out == k).squeeze(-1)[0]
    assert remasked[:100].sum() < remasked[100:].sum()


def _confident_half_remasked(sampler_step, noise, k=8):
    """Re-masked share of the confident half and of the rest after a first pass (sampling mode)."""
    logits = np.zeros((1, 400, 1, k), np.float32)
    logits[:, :200, :, 0] = 3.0  # confident half
    out = sampler_step(logits, noise)
    remasked = (out == k).reshape(-1)
    return remasked[:200].mean(), remasked[200:].mean()


@pytest.mark.parametrize("side", ["torch", "numpy"])
def test_confidence_noise_scales_the_draw_of_kept_positions(side):
    """0: the kept positions are exactly the most confident ones; the default 1: drawn by confidence; a large scale:
    close to uniform. Both samplers, since each writes its own step."""
    def step(logits, noise):
        if side == "torch":
            s = SMARTScheduler(mask_token_id=8, confidence_noise=noise)
            s.set_timesteps(10)
            return s.step(torch.from_numpy(logits), 0, torch.full((1, 400, 1), 8), generator=torch.Generator().manual_seed(0)).prev_sample.numpy()
        r = _runtime_scheduler().SMARTSampler(mask_token_id=8, confidence_noise=noise)
        r.set_timesteps(10)
        return r.step(logits, 0, np.full((1, 400, 1), 8), rng=np.random.default_rng(0))

    confident, rest = _confident_half_remasked(step, 0.0)
    assert confident == 0.0 or rest == 1.0  # 80% re-masked: all of the unconfident half first
    confident1, rest1 = _confident_half_remasked(step, 1.0)
    confident100, rest100 = _confident_half_remasked(step, 100.0)
    assert rest1 - confident1 > 0.15 and abs(rest100 - confident100) < 0.12, (confident1, rest1, confident100, rest100)


def test_default_confidence_noise_leaves_sampling_unchanged():
    """confidence_noise=1 (the default) is plain Gumbel-top-k: the same draw as an explicit noise-free formula."""
    k = 8
    logits = torch.randn(2, 64, 2, k, generator=torch.Generator().manual_seed(1))
    start = torch.full((2, 64, 2), k)
    a = SMARTScheduler(mask_token_id=k)
    b = SMARTScheduler(mask_token_id=k, confidence_noise=1.0, confidence_noise_end=1.0)
    for s in (a, b):
        s.set_timesteps(10)
    out_a = a.step(logits, 0, start, generator=torch.Generator().manual_seed(0)).prev_sample
    out_b = b.step(logits, 0, start, generator=torch.Generator().manual_seed(0)).prev_sample
    assert torch.equal(out_a, out_b)
    c = SMARTScheduler(mask_token_id=k, confidence_noise=4.0)
    c.set_timesteps(10)
    assert not torch.equal(out_a, c.step(logits, 0, start, generator=torch.Generator().manual_seed(0)).prev_sample)


@pytest.mark.parametrize("kw", [dict(mask_schedule="linear"), dict(alpha=0.1, beta=0.5), dict(temperature=0.0)])
def test_bad_config(kw):
    with pytest.raises(ValueError):
        SMARTScheduler(**kw)


@pytest.mark.parametrize("steps", [0, -3, 1001, 2.0, True, "10"])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match=r"num_inference_steps must be an integer in \[1, 1000\]"):
        SMARTScheduler().set_timesteps(steps)


@pytest.mark.parametrize("kw", [dict(temperature=float("nan")), dict(temperature=float("inf")), dict(temperature=0),
                                dict(temperature_end=-1.0), dict(mask_token_id=0), dict(confidence_noise=-0.5),
                                dict(confidence_noise_end=float("nan")), dict(confidence_noise=True)])
def test_bad_config_values(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        SMARTScheduler(**kw)


def test_set_timesteps_temperature_overrides_without_touching_the_config():
    s = SMARTScheduler(temperature=0.7, temperature_end=0.7)
    s.set_timesteps(4, temperature=2.0)
    assert s.temperature_at(0) == 2.0 and s.config.temperature == 0.7
    s.set_timesteps(4)
    assert s.temperature_at(0) == 0.7
    with pytest.raises(ValueError, match="temperature"):
        s.set_timesteps(4, temperature=float("nan"))


def test_categorical_sampling_matches_the_probabilities():
    from m6_fashion.schedulers.scheduling_smart import _sample_categorical

    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2], [0.0, 0.0, 0.0, 1.0]])
    draws = _sample_categorical(probs.repeat(20000, 1), torch.Generator().manual_seed(0)).reshape(20000, 2)
    freq = torch.stack([torch.bincount(draws[:, r], minlength=4).float() / 20000 for r in range(2)])
    assert torch.allclose(freq, probs, atol=0.015), freq
    assert (freq[:, 1] == 0).all() and (draws[:, 1] == 3).all()  # zero-probability tokens are never drawn


# ---------------------------------------------------------------------------------------------- one schedule for both samplers
RUNTIME_SRC = Path(__file__).resolve().parents[1] / "runtime" / "src"
SHIPPED_SCHEDULER = Path(__file__).resolve().parents[1] / "src" / "m6_fashion" / "pretrained" / "m6-fashion-64" / "scheduler"


def _runtime_scheduler():
    if str(RUNTIME_SRC) not in sys.path:
        sys.path.insert(0, str(RUNTIME_SRC))
    import m6_fashion_runtime.scheduler as rsm

    return rsm


def test_sampling_core_imports_no_torch():
    code = "import sys, m6_fashion_core.sampling; sys.exit('torch' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(RUNTIME_SRC), os.environ.get("PYTHONPATH", "")]))
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode == 0


def test_config_keys_are_the_schedulers_and_the_saved_ones():
    import inspect

    from m6_fashion_core.sampling import SMART_CONFIG_KEYS

    assert tuple(inspect.signature(SMARTScheduler.__init__).parameters)[1:] == SMART_CONFIG_KEYS
    assert tuple(inspect.signature(_runtime_scheduler().SMARTSampler.__init__).parameters)[1:] == SMART_CONFIG_KEYS
    saved = json.loads((SHIPPED_SCHEDULER / "scheduler_config.json").read_text())
    assert {k for k in saved if not k.startswith("_")} == set(SMART_CONFIG_KEYS)


def test_both_samplers_share_limits_checks_and_schedules():
    import m6_fashion_core.sampling as core
    from m6_fashion.schedulers import scheduling_smart as sm

    rsm = _runtime_scheduler()
    assert sm.check_temperature is rsm.check_temperature is core.check_temperature
    assert (sm.MAX_INFERENCE_STEPS, sm.MAX_TEMPERATURE, sm.MASK_SCHEDULES) == (
        rsm.MAX_INFERENCE_STEPS, rsm.MAX_TEMPERATURE, rsm.MASK_SCHEDULES)
    for kw in (dict(mask_schedule="linear"), dict(alpha=0.1, beta=0.5), dict(temperature=0.0), dict(temperature_end=101),
               dict(mask_token_id=0), dict(mask_token_id=True), dict(confidence_noise=-1), dict(confidence_noise_end=101)):
        with pytest.raises(ValueError) as torch_err:
            SMARTScheduler(**{"mask_token_id": 8, **kw})
        with pytest.raises(ValueError) as numpy_err:
            rsm.SMARTSampler(**{"mask_token_id": 8, **kw})
        assert str(torch_err.value) == str(numpy_err.value), kw
    for cfg in (dict(), dict(mask_schedule="cosine"), dict(alpha=0.6, beta=0.3, temperature=2.0, temperature_end=0.5),
                dict(confidence_noise=8.0, confidence_noise_end=1.0), dict(confidence_noise=0.0)):
        s, r = SMARTScheduler(mask_token_id=8, **cfg), rsm.SMARTSampler(mask_token_id=8, **cfg)
        for T in (1, 2, 3, 10):
            s.set_timesteps(T)
            assert r.set_timesteps(T).tolist() == s.timesteps.tolist() == list(range(T))
            assert [s.remask_ratio(i) for i in range(T)] == [r.remask_ratio(i) for i in range(T)]
            assert [s.temperature_at(i) for i in range(T)] == [r.temperature_at(i) for i in range(T)]
            assert [s.confidence_noise_at(i) for i in range(T)] == [r.confidence_noise_at(i) for i in range(T)]


def test_remasked_count_is_the_float32_product_torch_takes():
    from m6_fashion_core.sampling import num_remasked

    n = torch.arange(0, 5000)
    for ratio in (0.65, 0.8, 0.2, 0.5, 1 / 3):
        expected = torch.floor(n.float() * ratio).long().numpy()
        np.testing.assert_array_equal(num_remasked(n.numpy(), ratio), expected)
    assert int(num_remasked(180, 0.65)) == 116  # float64 would give 117


def test_step_remasks_num_remasked_per_row_of_editable_positions():
    """Rows with different editable counts each re-mask `num_remasked(count, ratio)`, the count the numpy
    sampler uses (180 editable at ratio 0.65: 116, the float32 product)."""
    from m6_fashion_core.sampling import num_remasked

    s = SMARTScheduler(mask_token_id=8, alpha=0.65, beta=0.65)
    s.set_timesteps(6)
    counts = [180, 37, 0, 256]
    editable = torch.zeros(len(counts), 256, dtype=torch.bool)
    for row, n in enumerate(counts):
        editable[row, torch.randperm(256, generator=torch.Generator().manual_seed(row))[:n]] = True
    sample = torch.where(editable[..., None], 8, 3).expand(-1, -1, 2).contiguous()
    out = s.step(torch.randn(len(counts), 256, 2, 8), 0, sample, editable=editable, generator=torch.Generator().manual_seed(0))
    remasked = (out.prev_sample == 8).any(-1)
    assert not remasked[~editable].any()
    assert remasked.sum(-1).tolist() == num_remasked(np.array(counts), s.remask_ratio(0)).tolist() == [116, 24, 0, 166]


def test_mask_code_has_one_name_in_both_samplers():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # diffusers warns on config attributes read off the object; this is a property
        s = SMARTScheduler(mask_token_id=255)
        assert s.mask_token_id == s.config.mask_token_id == 255
    assert _runtime_scheduler().SMARTSampler.from_config(dict(s.config)).mask_token_id == 255


def test_numpy_numbers_are_accepted_and_saved_as_python_numbers(tmp_path):
    s = SMARTScheduler(mask_token_id=np.int64(8), temperature=np.float32(0.5), alpha=np.float32(0.75))
    s.set_timesteps(np.int64(3), temperature=np.float32(2.0))
    assert s.num_inference_steps == 3 and s.temperature_at(0) == 2.0
    s.save_config(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert (saved["mask_token_id"], saved["temperature"], saved["alpha"]) == (8, 0.5, 0.75)


def test_sampling_is_described_the_same_way_everywhere():
    from m6_fashion_core.sampling import describe

    assert describe(0.7) == describe(0.7, None, 1.0, None) == describe(0.7, 0.7, 1.0, 1.0) == "temperature 0.7"
    assert describe(1.5, 0.6, 8.0, 1.0) == "temperature 1.5 -> 0.6, confidence noise 8 -> 1"
    assert describe(1.0, None, 0.0) == "temperature 1, confidence noise 0"


def test_sampling_is_described_from_a_config_mapping():
    from m6_fashion_core.sampling import describe, describe_config

    s = SMARTScheduler(temperature=1.5, temperature_end=0.6, confidence_noise=8.0, confidence_noise_end=1.0)
    assert describe_config(s.config) == describe(1.5, 0.6, 8.0, 1.0)
    assert describe_config(s.config, temperature=0.9) == "temperature 0.9 -> 0.6, confidence noise 8 -> 1"
    assert describe_config({"temperature": 0.7}) == "temperature 0.7"  # configs saved before the noise keys
