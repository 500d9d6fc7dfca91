"""Text tokenizer on real captions; pre-tokenising real images with a (tiny, random) stage-1 tokenizer."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import FASHION_DIR, requires_fashion_data
from m6_fashion import M6FashionConfig
from m6_fashion.image_processing import preprocess
from m6_fashion.models.pq_tokenizer import PQTokenizer
from m6_fashion.training.collator import M6FashionCollator, TokenGridDataset
from m6_fashion.training.pretokenize import load_pretokenized, pretokenize, read_pretokenized_info
from m6_fashion.training.text_tokenizer import (
    SPECIAL_TOKENS,
    config_token_kwargs,
    load_text_tokenizer,
    train_text_tokenizer,
)


@requires_fashion_data
@pytest.mark.parametrize("model", ["wordlevel", "bpe"])
def test_text_tokenizer_on_real_captions(model, tmp_path):
    captions = pq.read_table(FASHION_DIR / "test.parquet", columns=["text"]).column("text").to_pylist()
    tok = train_text_tokenizer(captions, model=model, vocab_size=1024, max_length=16)
    ids = config_token_kwargs(tok)
    assert [ids[f"{s.strip('[]').lower()}_token_id"] for s in SPECIAL_TOKENS] == list(range(7))
    enc = tok(["Turtle Check Men Navy Blue Shirt"], add_special_tokens=False)["input_ids"][0]
    assert all(i >= len(SPECIAL_TOKENS) for i in enc)  # lowercase words of the captions are in the vocabulary
    assert tok.decode(enc) == "turtle check men navy blue shirt"
    tok.save_pretrained(tmp_path)
    again = load_text_tokenizer(str(tmp_path))
    assert again(["navy blue shirt"], add_special_tokens=False)["input_ids"] == tok(["navy blue shirt"], add_special_tokens=False)["input_ids"]
    cfg = M6FashionConfig(**config_token_kwargs(again))
    assert cfg.vocab_size == len(tok) and cfg.img_token_id == 5
    long = tok([" ".join(captions[:5])], add_special_tokens=False, truncation=True, max_length=16)["input_ids"][0]
    assert len(long) == 16


def test_pretokenize_real_images(fashion_subset_dir, tiny_pq_tokenizer_dir, pretokenized_subset, tmp_path):
    path = pretokenized_subset["test"]
    info = read_pretokenized_info(path)
    assert info["grid_size"] == 8 and info["num_groups"] == 4 and info["codebook_size"] == 32 and info["num_rows"] == 16
    schema = pq.read_schema(path)
    codes_type = schema.field("codes").type
    assert "uint8" in str(getattr(codes_type, "storage_type", codes_type))  # stored as uint8 (K <= 256)
    ds = load_pretokenized(path)
    for col in ("codes", "text", "id", "articleType", "baseColour"):
        assert col in ds.column_names
    # the stored grids are exactly what the tokenizer gives for those real images
    raw = pq.read_table(fashion_subset_dir / "test.parquet").to_pandas()
    tok = PQTokenizer.from_pretrained(tiny_pq_tokenizer_dir)
    import io

    import PIL.Image

    images = [PIL.Image.open(io.BytesIO(r["bytes"])) for r in raw["image"][:4]]
    expected = tok.encode(preprocess(images, 32)).numpy()
    got = np.stack([np.asarray(c) for c in ds.with_format("numpy")[:4]["codes"]])
    assert np.array_equal(got, expected)
    assert ds[0]["text"] == raw["text"][0] and ds[0]["id"] == raw["id"][0]
    # cached: a second call returns the same file without re-encoding
    assert pretokenize(str(fashion_subset_dir), str(tiny_pq_tokenizer_dir), "test", output_dir=os.path.dirname(path)) == path
    # the collator consumes it
    cfg = M6FashionConfig(grid_size=8, num_groups=4, codebook_size=32, vocab_size=100, max_condition_tokens=40)
    col = M6FashionCollator(cfg, text_tokenizer=train_text_tokenizer(ds["text"], min_frequency=1, max_length=32))
    batch = col([TokenGridDataset(ds)[i] for i in range(4)])
    assert batch["labels"].shape == (4, 64, 4)


def test_pretokenize_reports_missing_columns(tmp_path, tiny_pq_tokenizer_dir, fashion_subset_dir):
    table = pq.read_table(fashion_subset_dir / "test.parquet").drop(["text"])
    pq.write_table(table, tmp_path / "test.parquet")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['text'\]"):
        pretokenize(str(tmp_path), str(tiny_pq_tokenizer_dir), "test", output_dir=str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="no train.parquet"):
        pretokenize(str(tmp_path), str(tiny_pq_tokenizer_dir), "train", output_dir=str(tmp_path / "cache"))
