"""Stage-2 transformer: config/model round trip, loss, attention modes, KV caches, input validation.

These tests are about the transformer's own logic, so they use synthetic token grids (no images).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel
from transformers.models.bert.modeling_bert import BertEncoder

from m6_fashion import M6FashionConfig, M6FashionTransformer
from m6_fashion.models.transformer_m6fashion import M6FashionKVCache, build_attention_bias
from m6_fashion.models.sequence_layout import build_model_inputs, crop_patch, split_prefix_and_target

G, M, K, T = 4, 4, 16, 6
N = G * G


def tiny_config(**kw) -> M6FashionConfig:
    base = dict(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        grid_size=G, num_groups=M, codebook_size=K, max_text_length=T, max_condition_tokens=12,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    base.update(kw)
    return M6FashionConfig(**base)


def make_batch(cfg, b=3, seed=0, mask_frac=0.5):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, K, (b, N, M), generator=g)
    texts = [[7 + i, 8 + i, 9][: 1 + i % 3] for i in range(b)]
    conds = [[crop_patch(codes[i], (i % 2, 0, 2, 2), G)] if i % 2 else None for i in range(b)]
    mask = torch.rand(b, N, generator=g) < mask_frac
    mask[:, 0] = True
    target = codes.masked_fill(mask[..., None], K)
    inputs = build_model_inputs(cfg, texts, target, conds)
    labels = codes.masked_fill(~mask[..., None], -100)
    return inputs, labels, codes, mask


def test_config_and_model_round_trip(tmp_path):
    cfg = tiny_config(prefix_attention="isolated")
    torch.manual_seed(0)
    model = M6FashionTransformer(cfg).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    cfg2 = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(cfg2, M6FashionConfig) and cfg2.model_type == "m6fashion"
    for key in ("vocab_size", "grid_size", "num_groups", "codebook_size", "max_text_length", "prefix_attention",
                "max_position_embeddings", "img_token_id", "eot_token_id"):
        assert getattr(cfg2, key) == getattr(cfg, key)
    inputs, labels, _, _ = make_batch(cfg)
    with torch.no_grad():
        ref = model(**inputs, labels=labels)
        from transformers import AutoModelForMaskedLM

        for loaded in (M6FashionTransformer.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path),
                       AutoModelForMaskedLM.from_pretrained(tmp_path)):
            assert type(loaded) is M6FashionTransformer
            out = loaded.eval()(**inputs, labels=labels)
            torch.testing.assert_close(out.logits, ref.logits)
            torch.testing.assert_close(out.loss, ref.loss)
    assert ref.logits.shape == (3, N, M, K)


def test_loss_counts_only_masked_target_positions():
    cfg = tiny_config()
    torch.manual_seed(0)
    model = M6FashionTransformer(cfg)
    inputs, labels, codes, mask = make_batch(cfg, b=4, mask_frac=0.3)
    out = model(**inputs, labels=labels)
    logits = out.logits
    logits.retain_grad()
    out.loss.backward()
    # gradient reaches exactly the logits of labelled (masked) positions
    has_grad = logits.grad.abs().sum(dim=-1) > 0  # (B, N, M)
    assert torch.equal(has_grad, mask[..., None].expand_as(has_grad))
    # value: per-group mean cross-entropy over masked positions, averaged over groups
    lp = torch.log_softmax(logits.detach().float(), dim=-1)
    per_group = []
    for m in range(M):
        sel = mask
        nll = -lp[..., m, :].gather(-1, codes[..., m : m + 1]).squeeze(-1)[sel]
        per_group.append(nll.mean())
    torch.testing.assert_close(out.loss.detach(), torch.stack(per_group).mean())
    # changing the labels' values at unlabelled positions cannot matter: they are -100
    assert (labels[~mask] == -100).all()


def test_no_labels_gives_zero_loss_with_graph():
    cfg = tiny_config()
    model = M6FashionTransformer(cfg)
    inputs, labels, _, _ = make_batch(cfg)
    out = model(**inputs, labels=torch.full_like(labels, -100))
    assert out.loss.item() == 0.0 and out.loss.requires_grad


def test_padding_does_not_change_outputs():
    """A sample gives the same logits alone or batched with samples that force left padding."""
    cfg = tiny_config()
    torch.manual_seed(0)
    model = M6FashionTransformer(cfg).eval()
    inputs, labels, _, _ = make_batch(cfg, b=3)
    # sample 0 has no condition patch: batched with sample 1 (which has one) it is left-padded
    assert inputs["attention_mask"][0, 0] == 0
    alone = build_model_inputs(cfg, [[7]], inputs["image_codes"][:1, -N:], None)
    with torch.no_grad():
        a = model(**alone).logits
        b = model(**inputs).logits[:1]
    assert alone["input_ids"].shape[1] < inputs["input_ids"].shape[1]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_isolated_prefix_cache_reuse_equals_full_forward():
    cfg = tiny_config(prefix_attention="isolated")
    torch.manual_seed(0)
    model = M6FashionTransformer(cfg).eval()
    inputs, _, _, _ = make_batch(cfg)
    prefix, target = split_prefix_and_target(inputs, N)
    with torch.no_grad():
        full = model(**inputs).logits
        cache = model.encode_prefix(**prefix)
        length = cache.get_seq_length()
        for _ in range(2):  # reused twice: the read-only pass leaves the cache unchanged
            step = model(**target, past_key_values=cache, use_cache=False).logits
            torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)
            assert cache.get_seq_length() == length
        # the target must not leak into the prefix: changing it leaves the prefix cache identical
        other = dict(inputs)
        other["image_codes"] = inputs["image_codes"].clone()
        other["image_codes"][:, -N:] = (other["image_codes"][:, -N:] + 1) % K
        cache2 = model.encode_prefix(**split_prefix_and_target(other, N)[0])
        torch.testing.assert_close(cache2.keys[0], cache.keys[0])
    full_attention = M6FashionTransformer(tiny_config(prefix_attention="full"))
    with pytest.raises(ValueError, match="isolated"):
        full_attention.encode_prefix(**prefix)


def test_full_prefix_attention_sees_the_target():
    """With prefix_attention='full' the prefix hidden states depend on the target, with 'isolated' not."""
    torch.manual_seed(0)
    results = {}
    for mode in ("full", "isolated"):
        cfg = tiny_config(prefix_attention=mode)
        torch.manual_seed(0)
        model = M6FashionTransformer(cfg).eval()
        inputs, _, _, _ = make_batch(cfg)
        other = {k: v.clone() for k, v in inputs.items()}
        other["image_codes"][:, -N:] = (other["image_codes"][:, -N:] + 3) % (K + 1)
        with torch.no_grad():
            c1 = model(**inputs, use_cache=True).past_key_values
            c2 = model(**other, use_cache=True).past_key_values
        lp = inputs["input_ids"].shape[1] - N
        # second layer keys at prefix positions
        results[mode] = torch.allclose(c1.keys[1][:, :, :lp], c2.keys[1][:, :, :lp])
    assert results == {"full": False, "isolated": True}


def test_causal_logits_come_from_the_previous_position():
    cfg = tiny_config(attention="causal")
    torch.manual_seed(0)
    model = M6FashionTransformer(cfg).eval()
    inputs, _, codes, _ = make_batch(cfg, mask_frac=0.0)
    inputs["image_codes"][:, -N:] = codes  # teacher forcing: the true codes
    j = 5
    changed = {k: v.clone() for k, v in inputs.items()}
    changed["image_codes"][:, -N + j] = (codes[:, j] + 1) % K
    with torch.no_grad():
        a = model(**inputs).logits
        b = model(**changed).logits
    assert a.shape == (3, N, M, K)
    torch.testing.assert_close(a[:, : j + 1], b[:, : j + 1])  # target j's own code never informs logits[:, j]
    assert not torch.allclose(a[:, j + 1], b[:, j + 1])  # ...but informs the next prediction
    out = model(**inputs, labels=codes)
    lp = torch.log_softmax(out.logits.detach(), -1)
    manual = -lp.gather(-1, codes[..., None]).squeeze(-1).mean()
    torch.testing.assert_close(out.loss.detach(), manual)


def test_causal_kv_cached_generation_equals_uncached_greedy():
    cfg = tiny_config(attention="causal")
    torch.manual_seed(0)
    model = M6FashionTransformer(cfg).eval()
    inputs, _, _, _ = make_batch(cfg)
    prefix, _ = split_prefix_and_target(inputs, N)
    cached = model.generate_autoregressive(**prefix, do_sample=False)
    uncached = model.generate_autoregressive(**inputs, do_sample=False, use_cache=False)
    assert cached.shape == (3, N, M) and cached.dtype == torch.long
    assert torch.equal(cached, uncached)
    assert 0 <= int(cached.min()) and int(cached.max()) < K
    # sampling is reproducible with a generator
    s1 = model.generate_autoregressive(**prefix, generator=torch.Generator().manual_seed(3), temperature=1.5)
    s2 = model.generate_autoregressive(**prefix, generator=torch.Generator().manual_seed(3), temperature=1.5)
    assert torch.equal(s1, s2)
    with pytest.raises(ValueError, match="causal"):
        M6FashionTransformer(tiny_config()).generate_autoregressive(**prefix)


def test_causal_cache_grows_one_position_per_step():
    cfg = tiny_config(attention="causal")
    model = M6FashionTransformer(cfg).eval()
    inputs, _, _, _ = make_batch(cfg)
    prefix, _ = split_prefix_and_target(inputs, N)
    cache = M6FashionKVCache()
    with torch.no_grad():
        out = model(**prefix, past_key_values=cache, use_cache=True)
        assert out.logits.shape == (3, 1, M, K) and cache.get_seq_length() == prefix["input_ids"].shape[1]
        step = {
            "input_ids": torch.full((3, 1), cfg.img_token_id),
            "image_codes": torch.zeros(3, 1, M, dtype=torch.long),
            "position_ids": torch.zeros(3, 1, dtype=torch.long),
            "token_type_ids": torch.full((3, 1), 2),
            "attention_mask": torch.cat([prefix["attention_mask"], torch.ones(3, 1, dtype=torch.long)], 1),
        }
        out = model(**step, past_key_values=cache, use_cache=True)
    assert out.logits.shape == (3, 1, M, K) and cache.get_seq_length() == prefix["input_ids"].shape[1] + 1


@pytest.mark.parametrize("method", ["activation_checkpointing_enable", "gradient_checkpointing_enable"])
def test_activation_checkpointing_gives_the_same_gradients(method, recwarn):
    """Both names transformers has used for the switch work, warn about nothing, and change no gradient."""
    cfg = tiny_config()
    torch.manual_seed(0)
    model = M6FashionTransformer(cfg).train()
    inputs, labels, _, _ = make_batch(cfg)
    model(**inputs, labels=labels).loss.backward()
    ref = model.encoder.layer[0].attention.self.query.weight.grad.clone()
    model.zero_grad()
    getattr(model, method)()
    assert model.is_activation_checkpointing and model.encoder.gradient_checkpointing
    model(**inputs, labels=labels).loss.backward()
    torch.testing.assert_close(model.encoder.layer[0].attention.self.query.weight.grad, ref)
    model.activation_checkpointing_disable()
    assert not model.is_activation_checkpointing
    assert not [w for w in recwarn if issubclass(w.category, (FutureWarning, DeprecationWarning))]


def test_bad_inputs_give_clear_errors():
    cfg = tiny_config()
    model = M6FashionTransformer(cfg)
    inputs, labels, _, _ = make_batch(cfg)

    def run(**over):
        model(**{**inputs, **over})

    codes = inputs["image_codes"].clone()
    codes[0, -1, 0] = K + 1
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        run(image_codes=codes)
    codes[0, -1, 0] = -1
    with pytest.raises(ValueError, match="codes must lie"):
        run(image_codes=codes)
    with pytest.raises(ValueError, match="num_groups"):
        run(image_codes=inputs["image_codes"][..., :3])
    # a target grid of the wrong size (one target token too few)
    with pytest.raises(ValueError, match="last N"):
        model(**{k: v[:, :-1] for k, v in inputs.items()})
    pos = inputs["position_ids"].clone()
    pos[0, -1] = N
    with pytest.raises(ValueError, match="grid index"):
        run(position_ids=pos)
    with pytest.raises(ValueError, match="attention_mask"):
        run(attention_mask=inputs["attention_mask"][:, 1:])
    with pytest.raises(ValueError, match="labels must have shape"):
        model(**inputs, labels=labels[:, :-1])
    bad_labels = labels.clone()
    bad_labels[labels != -100] = K
    with pytest.raises(ValueError, match="MASK"):
        model(**inputs, labels=bad_labels)
    # text longer than max_text_length
    with pytest.raises(ValueError, match="max_text_length"):
        build_model_inputs(cfg, [list(range(7, 7 + T + 1))], torch.zeros(1, N, M, dtype=torch.long))
    tt = inputs["token_type_ids"].clone()
    tt[:, 0] = 1  # a text segment longer than the limit
    with pytest.raises(ValueError, match="max_text_length"):
        run(token_type_ids=tt)
    with pytest.raises(TypeError):
        run(input_ids=inputs["input_ids"].float())
    with pytest.raises(ValueError, match="hidden_size"):
        tiny_config(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="attention"):
        tiny_config(attention="sideways")
    with pytest.raises(ValueError, match="prefix_attention"):
        tiny_config(prefix_attention="partial")
