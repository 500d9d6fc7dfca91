"""SMARTScheduler: the re-masking schedule, editable regions, determinism."""

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


@pytest.mark.parametrize("kw", [dict(mask_schedule="linear"), dict(alpha=0.1, beta=0.5), dict(temperature=0.0)])
def test_bad_config(kw):
    with pytest.raises(ValueError):
        SMARTScheduler(**kw)


@pytest.mark.parametrize("steps", [0, -3, 1001, 2.0, True, "10"])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match=r"num_inference_steps must be an integer in \[1, 1000\]"):
        SMARTScheduler().set_timesteps(steps)


@pytest.mark.parametrize("kw", [dict(temperature=float("nan")), dict(temperature=float("inf")), dict(temperature=0),
                                dict(temperature_end=-1.0), dict(mask_token_id=0)])
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
