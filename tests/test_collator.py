"""The training collator: recipe frequencies, where masks fall, reproducibility (synthetic token grids)."""

from __future__ import annotations

import math

import pytest
import torch

from m6_fashion import M6FashionConfig
from m6_fashion.training.collator import CONDITION_TYPES, MASK_STRATEGIES, M6FashionCollator

G, M, K, T = 6, 2, 16, 6
N = G * G


def config(**kw):
    base = dict(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        grid_size=G, num_groups=M, codebook_size=K, max_text_length=T, max_condition_tokens=40,
    )
    base.update(kw)
    return M6FashionConfig(**base)


def examples(n, seed=0, with_index=True):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ex = {"codes": torch.randint(0, K, (G, G, M), generator=g).numpy(), "text_ids": [7 + i % 20, 8, 9, 10][: 1 + i % 4]}
        if with_index:
            ex["index"] = i
        out.append(ex)
    return out


def draw(collator, exs, batch=500):
    strategies, conds = [], []
    for s in range(0, len(exs), batch):
        b = collator(exs[s : s + batch])
        strategies.append(b["mask_strategy"])
        conds.append(b["condition_type"])
    return torch.cat(strategies), torch.cat(conds)


def assert_frequencies(counts, probs, n):
    for name, p in probs.items():
        freq = counts[name] / n
        tol = 4.5 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-9
        assert abs(freq - p) <= tol, f"{name}: frequency {freq:.4f}, configured {p} (tolerance {tol:.4f})"


@pytest.mark.parametrize(
    "mask_probs,cond_probs",
    [
        (None, None),  # the paper's recipe
        ({"random": 0.25, "all": 0.25, "inside_box": 0.5, "outside_box": 0.0},
         {"visual_text": 0.1, "text": 0.1, "visual": 0.4, "none": 0.4}),
    ],
)
def test_frequencies_match_configuration_over_10k_draws(mask_probs, cond_probs):
    col = M6FashionCollator(config(), seed=5, mask_probs=mask_probs, condition_probs=cond_probs, return_metadata=True)
    n = 10_000
    s, c = draw(col, examples(n))
    mp = mask_probs or {"random": 0.70, "all": 0.10, "inside_box": 0.10, "outside_box": 0.10}
    cp = cond_probs or {"visual_text": 0.20, "text": 0.55, "visual": 0.20, "none": 0.05}
    assert_frequencies({k: int((s == i).sum()) for i, k in enumerate(MASK_STRATEGIES)}, mp, n)
    assert_frequencies({k: int((c == i).sum()) for i, k in enumerate(CONDITION_TYPES)}, cp, n)


def test_masks_only_touch_the_target_and_match_their_strategy():
    cfg = config()
    col = M6FashionCollator(cfg, seed=1, return_metadata=True, max_condition_patches=3)
    exs = examples(600)
    b = col(exs)
    ids, ic, tt, am, labels = (b[k] for k in ("input_ids", "image_codes", "token_type_ids", "attention_mask", "labels"))
    assert labels.shape == (600, N, M)
    # MASK codes appear only at target positions
    assert ((ic == K).any(-1) & (tt != 2)).sum() == 0
    codes = torch.stack([torch.as_tensor(e["codes"]).reshape(N, M) for e in exs])
    target = ic[:, -N:]
    mask = b["target_mask"]
    assert torch.equal((target == K).all(-1), mask) and torch.equal(((target == K).any(-1)), mask)
    assert torch.equal(labels != -100, mask[..., None].expand_as(labels))
    assert torch.equal(labels[mask], codes[mask]) and torch.equal(target[~mask], codes[~mask])
    assert mask.any(1).all()  # every example has something to predict
    is_img = ids == cfg.img_token_id
    for i in range(600):
        strategy = MASK_STRATEGIES[int(b["mask_strategy"][i])]
        ctype = CONDITION_TYPES[int(b["condition_type"][i])]
        grid = mask[i].view(G, G)
        if strategy == "all":
            assert grid.all()
        elif strategy in ("inside_box", "outside_box"):
            box = grid if strategy == "inside_box" else ~grid
            rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
            assert box.sum() == len(rows) * len(cols) and box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
            assert not grid.all() or strategy == "inside_box"
        # condition segment: unmasked codes of the target at their own grid positions
        cond = (tt[i] == 0) & is_img[i]
        has_visual = bool(cond.any())
        assert has_visual == (ctype in ("visual_text", "visual"))
        if has_visual:
            assert torch.equal(ic[i][cond], codes[i][b["position_ids"][i][cond]])
        text_real = ((tt[i] == 1) & (am[i] == 1) & (ids[i] != cfg.eot_token_id)).sum()
        expected_text = len(exs[i]["text_ids"]) if ctype in ("visual_text", "text") else 0
        assert int(text_real) == expected_text
        if expected_text:
            start = int((tt[i] == 1).nonzero()[0])
            assert ids[i, start : start + expected_text].tolist() == exs[i]["text_ids"]


def test_same_draws_for_same_rows_regardless_of_batching_and_process():
    exs = examples(40)
    a = M6FashionCollator(config(), seed=3, return_metadata=True)
    b = M6FashionCollator(config(), seed=3, return_metadata=True)
    full = a(exs)
    # the same rows in other batches (as on another rank, or after a resume that skipped batches)
    part = b(exs[25:35])
    for key in ("labels", "target_mask", "mask_strategy", "condition_type"):
        assert torch.equal(full[key][25:35], part[key])
    # another epoch or seed draws differently
    b.set_epoch(1)
    assert not torch.equal(b(exs)["labels"], full["labels"])
    c = M6FashionCollator(config(), seed=4, return_metadata=True)
    assert not torch.equal(c(exs)["labels"], full["labels"])
    # without indices: the collator's own seeded generator (a fresh collator repeats itself)
    plain = examples(40, with_index=False)
    x = M6FashionCollator(config(), seed=3)(plain)["labels"]
    y = M6FashionCollator(config(), seed=3)(plain)["labels"]
    assert torch.equal(x, y)


def test_causal_objective_labels_every_target_token():
    cfg = config(attention="causal")
    col = M6FashionCollator(cfg, seed=0)
    exs = examples(8)
    b = col(exs)
    codes = torch.stack([torch.as_tensor(e["codes"]).reshape(N, M) for e in exs])
    assert torch.equal(b["labels"], codes) and torch.equal(b["image_codes"][:, -N:], codes)


def test_collator_errors():
    cfg = config()
    with pytest.raises(ValueError, match="sum to 1"):
        M6FashionCollator(cfg, mask_probs={"random": 0.5, "all": 0.1, "inside_box": 0.1, "outside_box": 0.1})
    with pytest.raises(ValueError, match="accepted"):
        M6FashionCollator(cfg, condition_probs={"image": 1.0})
    with pytest.raises(ValueError, match="max_condition_tokens"):
        M6FashionCollator(config(max_condition_tokens=0))
    M6FashionCollator(config(max_condition_tokens=0), condition_probs={"text": 0.9, "none": 0.1})  # no visual: fine
    col = M6FashionCollator(cfg)
    bad = examples(1)
    bad[0]["codes"] = bad[0]["codes"][:4, :4]
    with pytest.raises(ValueError, match="4x4 but the model expects 6x6"):
        col(bad)
    bad = examples(1)
    bad[0]["codes"] = bad[0]["codes"] + K
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        col(bad)
    with pytest.raises(ValueError, match="text_tokenizer"):
        col([{"codes": examples(1)[0]["codes"], "text": "navy blue shirt"}])
