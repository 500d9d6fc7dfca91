"""The transformers / diffusers / huggingface_hub behaviour this package relies on, checked one by one.

Each test names the upstream API in its failure message, so an upstream release that changes one of
them fails here first, with the reason, instead of deep inside generation (transformers 5.24 renamed
``past_key_values`` to ``cache`` in ``BertEncoder.forward`` and in every ``ModelOutput``, which broke
the README's first command). Tiny models only; no dataset needed.
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

from m6_fashion import M6FashionConfig, M6FashionTransformer
from m6_fashion.models.sequence_layout import build_model_inputs, split_prefix_and_target
from m6_fashion.models.transformer_m6fashion import M6FashionKVCache, M6FashionTransformerOutput

G, M, K = 4, 4, 16


def tiny_model(**kw) -> M6FashionTransformer:
    cfg = M6FashionConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        grid_size=G, num_groups=M, codebook_size=K, max_text_length=6, max_condition_tokens=8,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kw,
    )
    torch.manual_seed(0)
    return M6FashionTransformer(cfg).eval()


def inputs_for(model):
    codes = torch.randint(0, K, (2, G * G, M), generator=torch.Generator().manual_seed(0))
    return build_model_inputs(model.config, [[7, 8], [9]], codes)


def test_forward_with_use_cache_returns_our_cache_under_both_field_names():
    model = tiny_model(attention="causal")
    prefix, _ = split_prefix_and_target(inputs_for(model), G * G)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no FutureWarning / DeprecationWarning from upstream either
        out = model(**prefix, use_cache=True)
    assert isinstance(out, M6FashionTransformerOutput), type(out)
    assert isinstance(out.cache, M6FashionKVCache), (
        f"forward(use_cache=True).cache is {type(out.cache).__name__}: transformers.utils.ModelOutput changed how "
        "output fields are stored"
    )
    assert out.past_key_values is out.cache
    assert out.cache.get_seq_length() == prefix["input_ids"].shape[1]
    assert list(out.keys()) == ["logits", "cache"], (
        f"ModelOutput keys {list(out.keys())}: transformers changed the dict view of outputs (Trainer reads it)"
    )
    assert out[0] is out.logits


def test_model_output_still_renames_nothing_we_use():
    """transformers' ModelOutput rewrites some keyword names at construction (past_key_values -> cache in 5.24)."""
    out = M6FashionTransformerOutput(loss=None, logits=torch.zeros(1), cache=None)
    assert out.logits is not None and out.cache is None, "transformers.utils.ModelOutput changed its constructor"


def test_config_is_a_strict_dataclass_with_post_init_validation():
    with pytest.raises(ValueError, match="num_attention_heads"):
        M6FashionConfig(hidden_size=30, num_attention_heads=4)
    cfg = M6FashionConfig(grid_size=8)
    assert cfg.to_dict()["grid_size"] == 8 and cfg.model_type == "m6fashion", (
        "transformers.PreTrainedConfig / huggingface_hub.dataclasses.strict changed"
    )


def test_save_and_load_keep_weights_and_dtype(tmp_path, recwarn):
    model = tiny_model()
    model.half().save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file(), "PreTrainedModel.save_pretrained no longer writes model.safetensors"
    loaded = M6FashionTransformer.from_pretrained(tmp_path, dtype=torch.float32)
    assert loaded.dtype == torch.float32, "PreTrainedModel.from_pretrained(dtype=...) is not honoured"
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a.float(), b, msg=f"{n} changed in the save/load round trip")
    assert not [w for w in recwarn if issubclass(w.category, (FutureWarning, DeprecationWarning))]


def test_trainer_finds_the_checkpointing_switch():
    """transformers' Trainer calls activation_checkpointing_enable (>= 5.24) or gradient_checkpointing_enable."""
    from transformers import Trainer

    model = tiny_model()
    names = [n for n in ("activation_checkpointing_enable", "gradient_checkpointing_enable") if n in inspect.getsource(Trainer)]
    assert names, "transformers.Trainer no longer calls a *_checkpointing_enable method: check how it switches checkpointing"
    for name in names:
        getattr(model, name)()
        assert model.is_activation_checkpointing, f"{name} did not switch checkpointing on"
        model.activation_checkpointing_disable()


def test_diffusers_mixins_round_trip(tmp_path, recwarn):
    """ConfigMixin/ModelMixin/SchedulerMixin: save_pretrained + from_pretrained(dtype=...) as the pipeline uses them."""
    from m6_fashion import SMARTScheduler
    from m6_fashion.models.pq_tokenizer import PQTokenizer

    tok = PQTokenizer(block_out_channels=(8, 16), latent_channels=16, codebook_size=16).half()
    tok.save_pretrained(tmp_path / "tok")
    back = PQTokenizer.from_pretrained(tmp_path / "tok", dtype=torch.float32)
    assert back.dtype == torch.float32, "diffusers ModelMixin.from_pretrained(dtype=...) is not honoured"
    assert list(back.config.block_out_channels) == [8, 16] and back.config.codebook_size == 16, (
        "diffusers ConfigMixin no longer round-trips the config"
    )
    sched = SMARTScheduler(temperature=0.5)
    sched.save_pretrained(tmp_path / "sched")
    assert SMARTScheduler.from_pretrained(tmp_path / "sched").config.temperature == 0.5
    assert not [w for w in recwarn if issubclass(w.category, (FutureWarning, DeprecationWarning))]
