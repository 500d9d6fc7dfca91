"""The sequence layout shared by the collator, the pipeline and the runtime (synthetic token grids)."""

from __future__ import annotations

import pytest
import torch

from m6_fashion import M6FashionConfig
from m6_fashion.models.sequence_layout import (
    box_to_positions,
    build_model_inputs,
    condition_segment_length,
    crop_patch,
    split_prefix_and_target,
)

G, M, K, T = 4, 2, 8, 5
N = G * G


@pytest.fixture
def cfg():
    return M6FashionConfig(
        vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        grid_size=G, num_groups=M, codebook_size=K, max_text_length=T, max_condition_tokens=10,
    )


def test_box_to_positions():
    assert box_to_positions((1, 2, 2, 2), 4).tolist() == [6, 7, 10, 11]
    assert box_to_positions((0, 0, 4, 4), 4).tolist() == list(range(16))
    for bad in [(3, 0, 2, 1), (0, -1, 1, 1), (0, 0, 0, 1), (0, 3, 1, 2)]:
        with pytest.raises(ValueError, match="top \\+ height <= 4"):
            box_to_positions(bad, 4)
    with pytest.raises(ValueError, match="4 integers"):
        box_to_positions((0, 0, 1), 4)


def test_layout_positions_types_and_mask(cfg):
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, K, (2, N, M), generator=g)
    target = codes.clone()
    target[:, ::3] = K  # some MASK codes in the target
    p1 = crop_patch(codes[1], (0, 0, 1, 2), G)
    p2 = crop_patch(codes[1].view(G, G, M), (2, 3, 2, 1), G)
    out = build_model_inputs(cfg, [[9, 10, 11], []], target, [None, [p1, p2]])
    lc = condition_segment_length([p1, p2])
    assert lc == 2 + 2 + 1
    L = lc + 1 + T + 1 + N
    for key in ("input_ids", "position_ids", "token_type_ids", "attention_mask"):
        assert out[key].shape == (2, L)
    assert out["image_codes"].shape == (2, L, M)
    ids, pos, tt, am, ic = (out[k] for k in ("input_ids", "position_ids", "token_type_ids", "attention_mask", "image_codes"))
    # sample 1: [patch1 (2)][SEP][patch2 (2)][EOV][text pad x5][EOT][target]
    assert ids[1, :lc + 1].tolist() == [cfg.img_token_id] * 2 + [cfg.sep_token_id] + [cfg.img_token_id] * 2 + [cfg.eov_token_id]
    assert pos[1, :2].tolist() == [0, 1] and pos[1, 3:5].tolist() == [11, 15]
    assert pos[1, 2] == 2 and pos[1, lc] == lc  # 1-D index of SEP and EOV
    assert torch.equal(ic[1, :2], codes[1, [0, 1]]) and torch.equal(ic[1, 3:5], codes[1, [11, 15]])
    assert am[1, lc + 1 : lc + 1 + T].tolist() == [0] * T  # no text: all padding
    # sample 0: left padding, then EOV, 3 text tokens, 2 pads, EOT
    assert am[0, :lc].tolist() == [0] * lc and ids[0, :lc].tolist() == [cfg.pad_token_id] * lc
    assert ids[0, lc] == cfg.eov_token_id and pos[0, lc] == 0
    assert ids[0, lc + 1 : lc + 4].tolist() == [9, 10, 11] and pos[0, lc + 1 : lc + 4].tolist() == [1, 2, 3]
    assert ids[0, lc + 1 + T] == cfg.eot_token_id and am[0, lc + 1 + T] == 1
    # segments and target
    assert (tt[:, : lc + 1] == 0).all() and (tt[:, lc + 1 : lc + 2 + T] == 1).all() and (tt[:, -N:] == 2).all()
    assert (ids[:, -N:] == cfg.img_token_id).all() and (pos[:, -N:] == torch.arange(N)).all()
    assert torch.equal(ic[:, -N:], target) and (am[:, -N:] == 1).all()
    # non-image positions carry code 0
    assert (ic[ids != cfg.img_token_id] == 0).all()
    prefix, tgt = split_prefix_and_target(out, N)
    assert prefix["input_ids"].shape == (2, L - N) and tgt["input_ids"].shape == (2, N) and tgt["attention_mask"].shape == (2, L)


def test_layout_tensor_text_and_grid_target(cfg):
    text = torch.tensor([[9, 10, 0, 0, 0, 0, 0]])  # padded beyond T with PAD only: accepted
    target = torch.zeros(1, G, G, M, dtype=torch.long)
    out = build_model_inputs(cfg, text, target)
    assert out["input_ids"].shape == (1, 1 + T + 1 + N)
    fully_masked = build_model_inputs(cfg, [[9]])
    assert (fully_masked["image_codes"][:, -N:] == K).all()


def test_layout_errors(cfg):
    zeros = torch.zeros(1, N, M, dtype=torch.long)
    with pytest.raises(ValueError, match="max_text_length is 5"):
        build_model_inputs(cfg, [[9] * (T + 1)], zeros)
    with pytest.raises(ValueError, match="token grid"):
        build_model_inputs(cfg, [[9]], torch.zeros(1, G + 1, G + 1, M, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        build_model_inputs(cfg, [[9]], torch.zeros(1, N - 1, M, dtype=torch.long))
    with pytest.raises(ValueError, match="MASK"):
        build_model_inputs(cfg, [[9]], torch.full((1, N, M), K + 1))
    with pytest.raises(ValueError, match="no MASK in conditions"):
        build_model_inputs(cfg, [[9]], zeros, [[(torch.full((1, M), K), torch.tensor([0]))]])
    with pytest.raises(ValueError, match=r"grid indices in \[0, 16\)"):
        build_model_inputs(cfg, [[9]], zeros, [[(torch.zeros(1, M, dtype=torch.long), torch.tensor([16]))]])
    with pytest.raises(ValueError, match="max_condition_tokens is 10"):
        build_model_inputs(cfg, [[9]], zeros, [[crop_patch(zeros[0], (0, 0, 3, 3), G), crop_patch(zeros[0], (0, 0, 1, 1), G)]])
    with pytest.raises(ValueError, match="one entry per sample"):
        build_model_inputs(cfg, [[9]], zeros, [None, None])
    with pytest.raises(ValueError, match="does not fit"):
        crop_patch(zeros[0], (3, 3, 2, 2), G)


def test_one_layout_for_torch_and_runtime(cfg):
    """The torch module and the runtime call the numpy layout of ``m6_fashion_core``."""
    import sys
    from pathlib import Path

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime" / "src"))
    from m6_fashion_core import layout as core
    from m6_fashion_runtime import layout as runtime_layout
    from m6_fashion_runtime.bundle import Geometry

    from m6_fashion.models import sequence_layout

    for name in ("grid_shape", "check_box", "condition_segment_length", "split_prefix_and_target"):
        assert getattr(sequence_layout, name) is getattr(core, name)
    for name in ("box_to_positions", "condition_segment_length", "crop_patch", "grid_shape", "check_box"):
        assert getattr(runtime_layout, name) is getattr(core, name)
    assert runtime_layout.Patch is core.Patch
    # the same batch through the torch wrapper, the core (config ids) and the runtime (bundle geometry + ids)
    codes = torch.randint(0, K, (2, N, M), generator=torch.Generator().manual_seed(1))
    patch = crop_patch(codes[0], (1, 1, 2, 2), G)
    ref = build_model_inputs(cfg, [[9, 10], []], codes, [[patch], None])
    np_patch = (patch[0].numpy(), patch[1].numpy())
    got = core.build_model_inputs(cfg, [[9, 10], []], codes.numpy(), [[np_patch], None])
    geo = Geometry(sample_size=4 * G, grid_size=G, num_groups=M, codebook_size=K, num_image_tokens=N, max_text_length=T,
                   max_condition_tokens=10, max_position_embeddings=64, vocab_size=30)
    special = {key: getattr(cfg, f"{key}_token_id") for key in ("pad", "unk", "sep", "eov", "eot", "img", "mask")}
    runtime = runtime_layout.build_model_inputs(geo, special, [[9, 10], []], codes.numpy(), [[np_patch], None])
    for key, value in ref.items():
        assert value.dtype == torch.long and value.device.type == "cpu"
        np.testing.assert_array_equal(got[key], value.numpy(), err_msg=key)
        np.testing.assert_array_equal(runtime[key], value.numpy(), err_msg=key)
    assert core.crop_patch(codes[0].numpy(), (1, 1, 2, 2), G)[1].tolist() == patch[1].tolist()
    with pytest.raises(ValueError, match="no MASK in conditions"):
        runtime_layout.build_model_inputs(geo, special, [[9]], None, [[(np.full((1, M), K), np.array([0]))]])


def test_tensor_text_with_attention_mask(cfg):
    text = torch.tensor([[9, 10, 11], [12, 0, 13]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    out = build_model_inputs(cfg, text, None, None, mask)
    t0 = 1  # no conditions: EOV at 0, text from 1
    assert out["input_ids"][0, t0 : t0 + 3].tolist() == [9, 10, cfg.pad_token_id]
    assert out["input_ids"][1, t0 : t0 + 3].tolist() == [12, 13, cfg.pad_token_id]
    assert out["attention_mask"][:, t0 : t0 + T].tolist() == [[1, 1, 0, 0, 0]] * 2
    with pytest.raises(ValueError, match="text_attention_mask must have the shape"):
        build_model_inputs(cfg, text, None, None, mask[:, :2])
    with pytest.raises(TypeError, match="integer tensor"):
        build_model_inputs(cfg, [[9]], torch.zeros(1, N, M))
