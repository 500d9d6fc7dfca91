"""Non-square token grids (e.g. 16 rows x 12 cols for 3:4 catalogue images) at the model and training level.

The square path (``grid_height = grid_width = grid_size``) is covered by the existing tests; here a tiny
``grid_height x grid_width`` model, the sequence layout, the collator on real photos of
``fashion-product-images-hr`` tokenised at 64 x 48 px (16 x 12 grid) by a tiny random PQ tokenizer, and a
few steps of the stage-2 trainer on them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import FASHION_DIR
from m6_fashion import M6FashionConfig, M6FashionTransformer
from m6_fashion.models.sequence_layout import (
    box_to_positions,
    build_model_inputs,
    check_box,
    crop_patch,
    grid_shape,
    split_prefix_and_target,
)

HR_DIR = FASHION_DIR.parent / "fashion-product-images-hr"
ROWS, COLS, M, K = 16, 12, 4, 32


def tiny_config(**kw) -> M6FashionConfig:
    base = dict(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        num_groups=M, codebook_size=K, grid_height=ROWS, grid_width=COLS, max_text_length=8,
        max_condition_tokens=48, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    base.update(kw)
    return M6FashionConfig(**base)


# ------------------------------------------------------------------------------------------ config
def test_config_defaults_keep_square_grids():
    cfg = M6FashionConfig(grid_size=8)
    assert (cfg.grid_height, cfg.grid_width, cfg.grid_size, cfg.num_image_tokens) == (8, 8, 8, 64)
    assert cfg.is_square_grid and cfg.grid_shape == (8, 8)
    # a config saved before grid_height/grid_width existed (no such keys) loads as the same square grid
    old = M6FashionConfig.from_dict({"grid_size": 6, "num_groups": 2, "codebook_size": 16})
    assert (old.grid_height, old.grid_width, old.num_image_tokens) == (6, 6, 36)


def test_config_nonsquare_and_validation():
    cfg = tiny_config()
    assert cfg.grid_shape == (16, 12) and cfg.grid_size == 16 and cfg.num_image_tokens == 192
    assert not cfg.is_square_grid
    # grid_size is overwritten by max(grid_height, grid_width); one side alone defaults the other to grid_size
    assert M6FashionConfig(grid_size=4, grid_height=6, grid_width=9).grid_size == 9
    assert M6FashionConfig(grid_size=8, grid_height=4).grid_shape == (4, 8)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="grid_height must be a positive integer"):
            M6FashionConfig(grid_height=bad, grid_width=4)
        with pytest.raises(ValueError, match="grid_width must be a positive integer"):
            M6FashionConfig(grid_height=4, grid_width=bad)
    with pytest.raises((ValueError, TypeError)):
        M6FashionConfig(grid_height=True, grid_width=4)


def test_shipped_config_unchanged():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "src/m6_fashion/pretrained/m6-fashion-64/transformer/config.json"
    raw = json.loads(path.read_text())
    assert "grid_height" not in raw and "grid_width" not in raw
    cfg = M6FashionConfig.from_pretrained(path.parent)
    assert (cfg.grid_height, cfg.grid_width) == (raw["grid_size"], raw["grid_size"])


# ------------------------------------------------------------------------------------------ model
def test_forward_shapes_and_embedding_sizes():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = M6FashionTransformer(cfg).eval()
    assert model.embeddings.row_embeddings.num_embeddings == ROWS
    assert model.embeddings.col_embeddings.num_embeddings == COLS
    codes = torch.randint(0, K, (2, ROWS, COLS, M))
    cond = [[crop_patch(codes[0], (ROWS - 2, COLS - 3, 2, 3), cfg)], None]
    inputs = build_model_inputs(cfg, [[10, 11], [12]], codes, cond)
    n = ROWS * COLS
    assert inputs["input_ids"].shape == (2, 6 + 1 + 8 + 1 + n)
    labels = codes.reshape(2, n, M).clone()
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    assert out.logits.shape == (2, n, M, K) and torch.isfinite(out.loss)
    # the prefix cache gives the same logits on a non-square grid
    cfg_iso = tiny_config(prefix_attention="isolated")
    iso = M6FashionTransformer(cfg_iso).eval()
    prefix, target = split_prefix_and_target(inputs, cfg_iso.num_image_tokens)
    with torch.no_grad():
        full = iso(**inputs).logits
        cache = iso.encode_prefix(**prefix)
        cached = iso(**target, past_key_values=cache).logits
    torch.testing.assert_close(full, cached, atol=1e-4, rtol=1e-4)


def test_position_ids_and_row_col_embeddings():
    cfg = tiny_config()
    inputs = build_model_inputs(cfg, [[9]], None)
    target_pos = inputs["position_ids"][0, -ROWS * COLS :]
    assert torch.equal(target_pos, torch.arange(ROWS * COLS))
    # flat index row * grid_width + col: the embedding of position p uses row p // 12, col p % 12
    model = M6FashionTransformer(cfg).eval()
    emb = model.embeddings
    p = torch.tensor([[5 * COLS + 7]])
    with torch.no_grad():
        e = emb.row_embeddings(p // COLS) + emb.col_embeddings(p % COLS)
        assert torch.equal(e, emb.row_embeddings.weight[5][None, None] + emb.col_embeddings.weight[7][None, None])
    bad = {k: v.clone() for k, v in inputs.items()}
    bad["position_ids"][0, -1] = ROWS * COLS
    with pytest.raises(ValueError, match=r"\[0, N=192\) \(16x12 grid\)"):
        model(**bad)
    # a 12x16 target does not pass for a 16x12 model
    with pytest.raises(ValueError, match="16x12 token grid"):
        build_model_inputs(cfg, [[9]], torch.zeros(1, COLS, ROWS, M, dtype=torch.long))


def test_boxes_at_the_grid_edges():
    assert grid_shape((16, 12)) == (16, 12) and grid_shape(8) == (8, 8) and grid_shape(tiny_config()) == (16, 12)
    # bottom-right corner cell, full last row, full last column
    assert box_to_positions((15, 11, 1, 1), (16, 12)).tolist() == [191]
    assert box_to_positions((15, 0, 1, 12), (16, 12)).tolist() == list(range(180, 192))
    assert box_to_positions((0, 11, 16, 1), (16, 12)).tolist() == [r * 12 + 11 for r in range(16)]
    assert check_box((0, 0, 16, 12), tiny_config()) == (0, 0, 16, 12)
    for box in ((0, 0, 16, 13), (0, 1, 1, 12), (1, 0, 16, 1), (0, 12, 1, 1), (16, 0, 1, 1), (-1, 0, 1, 1)):
        with pytest.raises(ValueError, match=r"does not fit the 16x12 token grid.*top \+ height <= 16, left \+ width <= 12"):
            check_box(box, (16, 12))
    # the box that fits the transposed grid does not fit this one
    with pytest.raises(ValueError, match="16x12"):
        box_to_positions((0, 0, 12, 16), (16, 12))
    codes = torch.arange(ROWS * COLS * M).reshape(ROWS, COLS, M) % K
    patch_codes, positions = crop_patch(codes, (14, 10, 2, 2), (16, 12))
    assert positions.tolist() == [178, 179, 190, 191]
    assert torch.equal(patch_codes, codes.reshape(-1, M)[positions])
    with pytest.raises(ValueError, match=r"\(16, 12, M\) token grid"):
        crop_patch(codes.permute(1, 0, 2), (0, 0, 1, 1), (16, 12))
    with pytest.raises(ValueError, match="grid"):
        grid_shape((16, 0))
    cfg = tiny_config()
    with pytest.raises(ValueError, match=r"\[0, 192\) for a 16x12 grid"):
        build_model_inputs(cfg, [[1]], None, [[(codes.reshape(-1, M)[:1], torch.tensor([192]))]])


def test_tokenizer_and_decoder_round_trip_256x192():
    """The convolutional PQ tokenizer and decoder handle 256 x 192 px <-> a 16 x 12 grid (sample_size stays an int)."""
    from m6_fashion.models.pq_tokenizer import PQTokenizer
    from m6_fashion.models.style_decoder import StyleDecoder

    torch.manual_seed(0)
    tok = PQTokenizer(sample_size=256, block_out_channels=(4, 4, 4, 4, 8), latent_channels=8, num_groups=M,
                      codebook_size=K).eval()
    dec = StyleDecoder(latent_channels=8, style_channels=8, mapping_layers=1, block_out_channels=(8, 4, 4, 4, 4),
                       layers_per_block=1, sample_size=256).eval()
    assert tok.downsample_factor == 16 and dec.upsample_factor == 16
    pixels = torch.rand(2, 3, 256, 192) * 2 - 1
    tokens = tok.encode(pixels)
    assert tokens.shape == (2, 16, 12, M) and int(tokens.min()) >= 0 and int(tokens.max()) < K
    with torch.no_grad():
        image = dec(tok.lookup(tokens)).sample
    assert image.shape == (2, 3, 256, 192)
    with pytest.raises(ValueError, match="multiples of 16"):
        tok.encode(torch.zeros(1, 3, 256, 200))


# ------------------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def nonsquare_pretokenized(tmp_path_factory):
    """24 real HR train photos resized to 64 x 48 px (3:4) and tokenised by a tiny random PQ tokenizer
    (factor 4) into 16 x 12 x 4 grids, written as a pre-tokenised Parquet file with its JSON side file."""
    if not (HR_DIR / "train.parquet").is_file():
        pytest.skip("fashion-product-images-hr not found beside the repo")
    import datasets
    import PIL.Image
    import pyarrow as pa
    import pyarrow.parquet as pq

    from m6_fashion.models.pq_tokenizer import PQTokenizer

    pf = pq.ParquetFile(HR_DIR / "train.parquet")
    table = pa.Table.from_batches([next(pf.iter_batches(batch_size=24, columns=["image", "text"]))])
    rows = datasets.Dataset(table).cast_column("image", datasets.Image())
    torch.manual_seed(0)
    tok = PQTokenizer(sample_size=64, block_out_channels=(8, 16, 16), latent_channels=16, num_groups=M,
                      codebook_size=K).eval()
    pixels = []
    for row in rows:
        img = row["image"].convert("RGB").resize((48, 64), PIL.Image.BICUBIC)  # (width, height)
        pixels.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 127.5 - 1)
    codes = tok.encode(torch.stack(pixels)).numpy().astype(np.uint8)
    assert codes.shape == (24, ROWS, COLS, M)
    features = datasets.Features({"codes": datasets.Array3D(shape=(ROWS, COLS, M), dtype="uint8"),
                                  "text": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"codes": list(codes), "text": list(rows["text"])}, features=features)
    out = tmp_path_factory.mktemp("nonsquare") / "train-nonsquare.parquet"
    ds.to_parquet(str(out))
    side = {"grid_size": ROWS, "num_groups": M, "codebook_size": K, "sample_size": 64, "num_rows": 24}
    out.with_suffix(".json").write_text(json.dumps(side))
    return str(out)


def test_collator_on_real_nonsquare_grids(nonsquare_pretokenized):
    from m6_fashion.training.collator import MASK_STRATEGIES, M6FashionCollator, TokenGridDataset
    from m6_fashion.training.pretokenize import load_pretokenized

    ds = TokenGridDataset(load_pretokenized(nonsquare_pretokenized, K))
    assert ds[0]["codes"].shape == (ROWS, COLS, M)
    cfg = tiny_config()
    examples = [{**ds[i], "text_ids": [7, 8, 9]} for i in range(len(ds))]
    n = ROWS * COLS
    for strategy in MASK_STRATEGIES:
        col = M6FashionCollator(cfg, seed=3, mask_probs={strategy: 1.0},
                                condition_probs={"visual": 0.5, "text": 0.5}, return_metadata=True)
        batch = col(examples)
        assert batch["labels"].shape == (len(ds), n, M)
        assert batch["image_codes"][:, -n:].shape == (len(ds), n, M)
        mask = batch["target_mask"].reshape(len(ds), ROWS, COLS)
        assert mask.any(dim=(1, 2)).all()
        if strategy in ("inside_box", "outside_box"):
            for i in range(len(ds)):
                box = mask[i] if strategy == "inside_box" else ~mask[i]
                r, c = box.any(1).nonzero().reshape(-1), box.any(0).nonzero().reshape(-1)
                # the (kept/masked) region is exactly one rectangle inside the 16x12 grid
                assert box[r.min() : r.max() + 1, c.min() : c.max() + 1].all()
                assert int(box.sum()) == (r.max() - r.min() + 1) * (c.max() - c.min() + 1)
        # condition patches are crops of the sample's own grid at their row * 12 + col positions
        pos, codes_in, is_img = batch["position_ids"], batch["image_codes"], batch["token_type_ids"] == 0
        is_img = is_img & (batch["input_ids"] == cfg.img_token_id)
        for i in range(len(ds)):
            p = pos[i][is_img[i]]
            if p.numel():
                assert int(p.max()) < n
                grid = torch.as_tensor(examples[i]["codes"]).long().reshape(n, M)
                assert torch.equal(codes_in[i][is_img[i]], grid[p])
        with torch.no_grad():
            out = M6FashionTransformer(cfg).eval()(**{k: v for k, v in batch.items()
                                                     if k not in ("mask_strategy", "condition_type", "target_mask")})
        assert out.logits.shape == (len(ds), n, M, K) and torch.isfinite(out.loss)
    # a square model refuses the non-square grids, naming both shapes
    with pytest.raises(ValueError, match="token grid is 16x12 but the model expects 16x16"):
        M6FashionCollator(tiny_config(grid_height=None, grid_width=None, grid_size=16))(examples[:1])


def test_train_transformer_steps_and_round_trip(nonsquare_pretokenized, tmp_path):
    from transformers import AutoModel

    from m6_fashion.training.collator import M6FashionCollator, TokenGridDataset
    from m6_fashion.training.pretokenize import load_pretokenized
    from m6_fashion.training.train_transformer import main

    out = tmp_path / "run"
    main([
        "--train_file", nonsquare_pretokenized, "--output_dir", str(out), "--max_steps", "3", "--save_steps", "3",
        "--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2", "--intermediate_size", "64",
        "--max_text_length", "8", "--max_condition_tokens", "40", "--text_min_frequency", "1",
        "--per_device_train_batch_size", "8", "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "true",
        "--seed", "7", "--learning_rate", "2e-3", "--dataloader_num_workers", "0", "--use_cpu", "true",
    ])
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert losses and all(np.isfinite(losses))
    saved = json.loads((out / "config.json").read_text())
    assert (saved["grid_height"], saved["grid_width"], saved["grid_size"]) == (ROWS, COLS, ROWS)
    model = AutoModel.from_pretrained(out).eval()
    assert isinstance(model, M6FashionTransformer)
    cfg = model.config
    assert (cfg.grid_height, cfg.grid_width, cfg.num_groups, cfg.codebook_size) == (ROWS, COLS, M, K)
    assert model.embeddings.row_embeddings.num_embeddings == ROWS
    assert model.embeddings.col_embeddings.num_embeddings == COLS
    # save/load round trip gives identical logits
    ds = TokenGridDataset(load_pretokenized(nonsquare_pretokenized, K))
    batch = M6FashionCollator(cfg, seed=1)([ds[i] | {"text_ids": [5]} for i in range(2)])
    model.save_pretrained(tmp_path / "again")
    again = M6FashionTransformer.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, again(**batch).logits)
    assert again.config.grid_shape == (ROWS, COLS)
