"""Stage 2 of M6-Fashion: the multi-modal masked transformer.

One transformer encoder learns every task at once (text-to-image, image-conditioned generation,
in/outpainting, editing) by masked modelling over the image tokens of the stage-1 product-quantised
tokenizer. Every image token is a tuple of ``M`` codes (one per channel group), each in ``[0, K)``;
the extra code ``K`` is the MASK code.

Sequence layout (fixed; the target image always occupies the LAST ``N = grid_height * grid_width``
positions; ``grid_height = grid_width = grid_size`` unless configured otherwise)::

    [PAD ... PAD][condition patch 1][SEP][condition patch 2] ... [EOV][text, padded to max_text_length][EOT][target]
     ^ left padding (batching only)  ^ condition segment (token type 0)   ^ text segment (type 1)         ^ type 2

Inputs of :meth:`M6FashionTransformer.forward` (``B`` batch, ``L`` sequence length, ``M`` groups):

* ``input_ids`` ``(B, L)``: text-vocabulary ids; every image position (condition patches and
  target) carries ``config.img_token_id``.
* ``image_codes`` ``(B, L, M)``: PQ codes in ``[0, K]`` at image positions (``K`` = MASK),
  ignored (use 0) elsewhere.
* ``position_ids`` ``(B, L)``: image positions carry their flat grid index ``row * grid_width + col``
  in ``[0, N)`` (a condition patch carries the grid positions where it sits in the target);
  other positions carry their 1-D index (counted from the first non-padding position).
* ``token_type_ids`` ``(B, L)``: 0 condition segment (incl. SEP and EOV), 1 text (incl. EOT),
  2 target.
* ``attention_mask`` ``(B, L)`` (or ``(B, past + L)`` with a cache): 1 = real token, 0 = padding.

:mod:`m6_fashion.models.sequence_layout` builds these tensors from text ids, target codes and
condition patches.

Attention modes (``config.attention`` / ``config.prefix_attention``):

* ``"bidirectional"`` + ``"full"``: every position attends to every non-padding position.
* ``"bidirectional"`` + ``"isolated"``: prefix (condition + text) positions attend only to the
  prefix; target positions attend to everything. The prefix keys/values then do not depend on the
  target and can be computed once (:meth:`M6FashionTransformer.encode_prefix`) and reused over all
  SMART refinement steps.
* ``"causal"`` (autoregressive baseline): the prefix attends to the prefix only (bidirectionally,
  like a prefix-LM); target position ``j`` attends to the prefix and to targets ``<= j`` in raster
  order. ``logits[:, j]`` is predicted from the position *before* target ``j`` (EOT for ``j = 0``),
  and :meth:`M6FashionTransformer.generate_autoregressive` decodes token by token with a KV cache.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from .loading import StrictLoadingMixin

__all__ = [
    "M6FashionConfig",
    "M6FashionEncoder",
    "M6FashionKVCache",
    "M6FashionTransformer",
    "M6FashionTransformerOutput",
    "build_attention_bias",
]

TOKEN_TYPE_CONDITION = 0
TOKEN_TYPE_TEXT = 1
TOKEN_TYPE_TARGET = 2

ATTENTION_MODES = ("bidirectional", "causal")
PREFIX_ATTENTION_MODES = ("full", "isolated")


@strict
class M6FashionConfig(PreTrainedConfig):
    r"""Configuration of :class:`M6FashionTransformer`.

    Args:
        vocab_size: size of the text vocabulary, special tokens included.
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, hidden_act,
        hidden_dropout_prob, attention_probs_dropout_prob, layer_norm_eps, initializer_range:
            the usual BERT encoder hyper-parameters.
        num_groups: ``M``, the number of PQ channel groups (codes per image token).
        codebook_size: ``K``, codes per group; code ``K`` is the MASK code, so each group
            embedding table has ``K + 1`` rows, while the heads predict ``K`` classes.
        grid_size: side of a square token grid; the target has ``N = grid_size ** 2`` tokens. When
            ``grid_height``/``grid_width`` are given, ``grid_size`` is overwritten with
            ``max(grid_height, grid_width)`` (informational only; the grid is ``grid_height x grid_width``,
            and saving checks this invariant).
        grid_height, grid_width: rows and columns of the token grid (positive ints); each defaults to
            ``grid_size`` (so configs saved without them describe the same square grid as before). The
            target has ``N = grid_height * grid_width`` tokens in raster order, flat index
            ``row * grid_width + col``; e.g. 16 x 12 for 3:4 (portrait 256 x 192 px) catalogue images.
        max_text_length: text tokens per sample (the text segment is padded to this length).
        max_condition_tokens: maximum length of the condition segment (patch tokens plus the SEPs
            between patches, EOV excluded).
        max_position_embeddings: size of the 1-D position table for non-image positions;
            defaults to ``max_condition_tokens + max_text_length + 2`` (EOV and EOT).
        pad_token_id, unk_token_id, sep_token_id, eov_token_id, eot_token_id, img_token_id,
        mask_token_id: ids of the special tokens in the text vocabulary.
        attention: ``"bidirectional"`` (masked modelling) or ``"causal"`` (autoregressive baseline).
        prefix_attention: ``"full"`` or ``"isolated"`` (see the module docstring).
    """

    model_type = "m6fashion"
    keys_to_ignore_at_inference: ClassVar[list] = ["cache", "past_key_values"]

    vocab_size: int = 4096
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    num_groups: int = 4
    codebook_size: int = 256
    grid_size: int = 16
    grid_height: int | None = None
    grid_width: int | None = None
    max_text_length: int = 32
    max_condition_tokens: int = 256
    max_position_embeddings: int | None = None
    pad_token_id: int = 0
    unk_token_id: int = 1
    sep_token_id: int = 2
    eov_token_id: int = 3
    eot_token_id: int = 4
    img_token_id: int = 5
    mask_token_id: int = 6
    attention: str = "bidirectional"
    prefix_attention: str = "full"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    use_cache: bool = False

    def __post_init__(self, **kwargs):
        if self.max_position_embeddings is None:
            self.max_position_embeddings = self.max_condition_tokens + self.max_text_length + 2
        self._resolve_grid()
        self._check_values()  # plain ValueError at construction
        super().__post_init__(**kwargs)

    def _resolve_grid(self) -> None:
        """Fills ``grid_height``/``grid_width`` from ``grid_size``; a non-square grid sets ``grid_size`` to the larger side."""
        for name in ("grid_height", "grid_width"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, or None for grid_size; got {value!r}")
        if self.grid_height is None:
            self.grid_height = self.grid_size
        if self.grid_width is None:
            self.grid_width = self.grid_size
        if self.grid_height != self.grid_width or self.grid_height != self.grid_size:
            self.grid_size = max(self.grid_height, self.grid_width)

    @property
    def grid_shape(self) -> tuple:
        """``(grid_height, grid_width)``, rows and columns of the token grid."""
        return (self.grid_height, self.grid_width)

    @property
    def is_square_grid(self) -> bool:
        """Whether ``grid_height == grid_width`` (``== grid_size``)."""
        return self.grid_height == self.grid_width

    @property
    def num_image_tokens(self) -> int:
        """``N = grid_height * grid_width`` (``grid_size ** 2`` for a square grid), the number of target tokens."""
        return self.grid_height * self.grid_width

    @property
    def mask_code(self) -> int:
        """The MASK code (``codebook_size``)."""
        return self.codebook_size

    @property
    def special_token_ids(self) -> dict:
        return {
            "pad": self.pad_token_id,
            "unk": self.unk_token_id,
            "sep": self.sep_token_id,
            "eov": self.eov_token_id,
            "eot": self.eot_token_id,
            "img": self.img_token_id,
            "mask": self.mask_token_id,
        }

    def validate_architecture(self):
        """Part of the ``@strict`` validation (also run when saving)."""
        self._check_values()

    def _check_values(self):
        """Checks the hyper-parameters; raises ``ValueError`` naming what is accepted."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads ({self.num_attention_heads})"
            )
        for name in ("num_groups", "codebook_size", "grid_size", "max_text_length", "num_hidden_layers", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        for name in ("grid_height", "grid_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.grid_size != max(self.grid_height, self.grid_width):
            raise ValueError(
                f"grid_size ({self.grid_size}) must equal max(grid_height, grid_width) = "
                f"{max(self.grid_height, self.grid_width)} for a {self.grid_height}x{self.grid_width} grid"
            )
        if self.max_condition_tokens < 0:
            raise ValueError(f"max_condition_tokens must be >= 0; got {self.max_condition_tokens}")
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}; got {self.attention!r}")
        if self.prefix_attention not in PREFIX_ATTENTION_MODES:
            raise ValueError(f"prefix_attention must be one of {PREFIX_ATTENTION_MODES}; got {self.prefix_attention!r}")
        needed = self.max_condition_tokens + self.max_text_length + 2
        if self.max_position_embeddings < needed:
            raise ValueError(
                f"max_position_embeddings ({self.max_position_embeddings}) must be >= max_condition_tokens + "
                f"max_text_length + 2 = {needed}"
            )
        for name, value in self.special_token_ids.items():
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"{name}_token_id={value} is outside the text vocabulary [0, {self.vocab_size})")
        for p in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, p) < 1.0:
                raise ValueError(f"{p} must lie in [0, 1); got {getattr(self, p)}")


@dataclass
class M6FashionTransformerOutput(ModelOutput):
    """Output of :class:`M6FashionTransformer`.

    Args:
        loss: scalar, cross-entropy over the labelled (masked) target positions, averaged over groups;
            only when ``labels`` are given.
        logits: ``(B, n, M, K)`` float; ``n = N`` when the whole target is in the input. Bidirectional:
            ``logits[:, j]`` scores target ``j``. Causal: ``logits[:, j]`` is the prediction for target
            ``j`` computed at the position before it; for a prefix-only input ``n = 1`` (target 0), and
            with ``past_key_values`` every new position gives the prediction for the position after it.
        cache: the :class:`M6FashionKVCache`, when ``use_cache=True`` (also readable as ``past_key_values``).

    The field is named ``cache``, the name transformers' own outputs use from 5.24 on (their
    ``ModelOutput`` renames a ``past_key_values`` field at construction, which broke this class).
    """

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    cache: Optional["M6FashionKVCache"] = None

    @property
    def past_key_values(self) -> Optional["M6FashionKVCache"]:
        """The same object as :attr:`cache`."""
        return self.cache


class M6FashionKVCache:
    """Keys and values of earlier positions, one ``(B, heads, S, head_dim)`` pair per layer.

    The model owns this small cache instead of using transformers' ``Cache`` classes, whose API (and the
    keyword the BERT encoder takes it by) is being renamed across 5.x releases; the few operations the
    prefix cache and the autoregressive baseline need are written here.
    """

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.keys)

    def get_seq_length(self) -> int:
        """Number of cached positions (0 when empty); symbolic while exporting, so the length stays dynamic."""
        return self.keys[0].shape[2] if self.keys else 0

    def update(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Appends ``key``/``value`` ``(B, heads, L, head_dim)`` of layer ``layer_idx``; returns all of that layer's."""
        if layer_idx == len(self.keys):
            self.keys.append(key)
            self.values.append(value)
        elif layer_idx < len(self.keys):
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], key], dim=2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], value], dim=2)
        else:
            raise ValueError(f"layer {layer_idx} updated before layer {len(self.keys)}")
        return self.keys[layer_idx], self.values[layer_idx]

    def prepend(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``layer_idx``'s cached keys/values followed by ``key``/``value``, leaving the cache unchanged."""
        return torch.cat([self.keys[layer_idx], key], dim=2), torch.cat([self.values[layer_idx], value], dim=2)

    def crop(self, max_length: int) -> None:
        """Keeps the first ``max_length`` positions; a negative value drops that many from the end."""
        if max_length < 0:
            max_length = self.get_seq_length() + max_length
        self.keys = [k[:, :, :max_length] for k in self.keys]
        self.values = [v[:, :, :max_length] for v in self.values]


class M6FashionSelfAttention(nn.Module):
    """Multi-head self-attention with an additive bias and an optional KV cache.

    ``(B, L, H)`` -> ``(B, L, H)``; the bias is ``(B, 1, L, S + L)`` with ``S`` cached positions. The
    parameter names (``query``, ``key``, ``value``) are those of BERT, so BERT-style checkpoints load.
    """

    def __init__(self, config: "M6FashionConfig", layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_prob = config.attention_probs_dropout_prob

    def forward(
        self, hidden: torch.Tensor, bias: torch.Tensor, cache: Optional[M6FashionKVCache], store: bool = True
    ) -> torch.Tensor:
        b, length, _ = hidden.shape
        heads = lambda x: x.view(b, length, self.num_heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.query(hidden)), heads(self.key(hidden)), heads(self.value(hidden))
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v) if store else cache.prepend(self.layer_idx, k, v)
        # softmax(q k^T / sqrt(d) + bias) v, with attention dropout while training
        ctx = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=self.dropout_prob if self.training else 0.0
        )
        return ctx.transpose(1, 2).reshape(b, length, -1)


class M6FashionResidualOutput(nn.Module):
    """Projection back to ``hidden_size``, dropout, and the post-norm residual (``LayerNorm(dense(x) + residual)``).

    Ends both the attention block (``in_features = hidden_size``) and the feed-forward block
    (``in_features = intermediate_size``), with BERT's parameter names.
    """

    def __init__(self, config: "M6FashionConfig", in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class M6FashionAttention(nn.Module):
    def __init__(self, config: "M6FashionConfig", layer_idx: int):
        super().__init__()
        self.self = M6FashionSelfAttention(config, layer_idx)
        self.output = M6FashionResidualOutput(config, config.hidden_size)

    def forward(self, hidden, bias, cache, store=True):
        return self.output(self.self(hidden, bias, cache, store), hidden)


class M6FashionIntermediate(nn.Module):
    def __init__(self, config: "M6FashionConfig"):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(hidden))


class M6FashionLayer(nn.Module):
    """One post-norm BERT layer: attention block, then feed-forward block."""

    def __init__(self, config: "M6FashionConfig", layer_idx: int):
        super().__init__()
        self.attention = M6FashionAttention(config, layer_idx)
        self.intermediate = M6FashionIntermediate(config)
        self.output = M6FashionResidualOutput(config, config.intermediate_size)

    def forward(self, hidden, bias, cache=None, store=True):
        attn = self.attention(hidden, bias, cache, store)
        return self.output(self.intermediate(attn), attn)


class M6FashionEncoder(nn.Module):
    """``num_hidden_layers`` BERT layers (same parameter names and arithmetic as transformers' ``BertEncoder``).

    Owned here rather than imported, so that renames of ``BertEncoder.forward``'s keywords and outputs
    across transformers releases cannot break the model; ``tests/test_transformer_m6fashion.py`` checks
    that it computes what ``BertEncoder`` computes on the same weights.

    ``forward(hidden (B, L, H), bias (B, 1, L, S + L), cache, store)`` -> ``(B, L, H)``. With a cache,
    each layer attends to the cached positions too, and appends its keys/values to the cache when ``store``
    (``store=False`` reads the cache only: the reused prefix cache of SMART).
    """

    def __init__(self, config: "M6FashionConfig"):
        super().__init__()
        self.layer = nn.ModuleList([M6FashionLayer(config, i) for i in range(config.num_hidden_layers)])
        # read by PreTrainedModel.is_activation_checkpointing; set through the model's checkpointing methods
        self.gradient_checkpointing = False

    def forward(
        self, hidden: torch.Tensor, bias: torch.Tensor, cache: Optional[M6FashionKVCache] = None, store: bool = True
    ) -> torch.Tensor:
        for layer in self.layer:
            if self.gradient_checkpointing and self.training and cache is None:
                hidden = checkpoint(layer, hidden, bias, use_reentrant=False)
            else:
                hidden = layer(hidden, bias, cache, store)
        return hidden


def build_attention_bias(
    token_type_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    past_length: int = 0,
    attention: str = "bidirectional",
    prefix_attention: str = "full",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Builds the additive 4-D attention bias used by the BERT layers.

    Args:
        token_type_ids: ``(B, Lq)`` segment ids of the query positions (the current input chunk).
        attention_mask: ``(B, past_length + Lq)`` 1 for real tokens, 0 for padding (keys).
        past_length: number of cached positions before the chunk (they are all keys).
        attention, prefix_attention: see :class:`M6FashionConfig`.

    Returns:
        ``(B, 1, Lq, past_length + Lq)`` float tensor: 0 where attending is allowed, the dtype's
        minimum elsewhere (works with both the eager and the SDPA attention).
    """
    batch, q_len = token_type_ids.shape
    device = token_type_ids.device
    q_target = token_type_ids == TOKEN_TYPE_TARGET
    k_target = torch.cat([torch.zeros(batch, past_length, dtype=torch.bool, device=device), q_target], dim=1)
    if attention == "causal":
        q_idx = torch.arange(past_length, past_length + q_len, device=device)
        k_idx = torch.arange(past_length + q_len, device=device)
        earlier = (k_idx[None, :] <= q_idx[:, None])[None]  # (1, Lq, Lk)
        allowed = torch.where(q_target[:, :, None], earlier, ~k_target[:, None, :])
    elif prefix_attention == "isolated":
        allowed = q_target[:, :, None] | ~k_target[:, None, :]
    else:
        allowed = torch.ones(batch, q_len, past_length + q_len, dtype=torch.bool, device=device)
    allowed = allowed & attention_mask.bool()[:, None, :]
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
    bias = bias.masked_fill(~allowed, torch.finfo(dtype).min)
    return bias[:, None]


class M6FashionEmbeddings(nn.Module):
    """Token embeddings.

    Image positions: sum over groups of the per-group code embeddings + row + column embeddings.
    Other positions: word embedding + 1-D position embedding. Plus a segment embedding for all;
    LayerNorm and dropout.
    """

    def __init__(self, config: M6FashionConfig):
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, h)
        # one table for all groups: group m's code c lives at row m * (K + 1) + c (row K of each group = MASK)
        self.code_embeddings = nn.Embedding(config.num_groups * (config.codebook_size + 1), h)
        self.row_embeddings = nn.Embedding(config.grid_height, h)  # (grid_height, hidden)
        self.col_embeddings = nn.Embedding(config.grid_width, h)  # (grid_width, hidden)
        self.token_type_embeddings = nn.Embedding(3, h)
        self.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, image_codes, position_ids, token_type_ids) -> torch.Tensor:
        """``(B, L)``, ``(B, L, M)``, ``(B, L)``, ``(B, L)`` -> ``(B, L, hidden_size)``."""
        cfg = self.config
        n = cfg.grid_height * cfg.grid_width
        is_image = input_ids == cfg.img_token_id
        offsets = torch.arange(cfg.num_groups, device=image_codes.device) * (cfg.codebook_size + 1)
        codes = image_codes.clamp(0, cfg.codebook_size) + offsets
        grid_pos = position_ids.clamp(0, n - 1)
        image_emb = (
            self.code_embeddings(codes).sum(dim=2)
            + self.row_embeddings(grid_pos // cfg.grid_width)
            + self.col_embeddings(grid_pos % cfg.grid_width)
        )
        text_emb = self.word_embeddings(input_ids) + self.position_embeddings(
            position_ids.clamp(0, cfg.max_position_embeddings - 1)
        )
        emb = torch.where(is_image[..., None], image_emb, text_emb) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(emb))


class M6FashionHead(nn.Module):
    """``M`` classifiers of ``K`` logits each (the MASK code is never predicted).

    ``(B, n, hidden_size)`` -> ``(B, n, M, K)``. Implemented as one ``hidden -> M * K`` linear map,
    which is exactly ``M`` independent linear classifiers.
    """

    def __init__(self, config: M6FashionConfig):
        super().__init__()
        self.num_groups = config.num_groups
        self.codebook_size = config.codebook_size
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.hidden_size, config.num_groups * config.codebook_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.LayerNorm(self.act(self.dense(hidden_states)))
        return self.classifier(x).unflatten(-1, (self.num_groups, self.codebook_size))


class M6FashionPreTrainedModel(StrictLoadingMixin, PreTrainedModel):
    config: M6FashionConfig
    config_class = M6FashionConfig
    base_model_prefix = "m6fashion"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["M6FashionLayer", "M6FashionEmbeddings"]

    # Activation checkpointing is switched by the model itself: transformers renames these methods across
    # 5.x (``gradient_checkpointing_enable`` -> ``activation_checkpointing_enable``) and its Trainer calls
    # whichever exists, so both are defined here and neither warns.
    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs):
        """Recomputes each encoder layer in the backward pass (saves activation memory while training)."""
        self._set_checkpointing(True)

    def activation_checkpointing_disable(self):
        self._set_checkpointing(False)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs):
        """Same as :meth:`activation_checkpointing_enable` (the older name, still called by some versions)."""
        self._set_checkpointing(True)

    def gradient_checkpointing_disable(self):
        self._set_checkpointing(False)

    @property
    def is_activation_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.is_activation_checkpointing

    def _set_checkpointing(self, enable: bool) -> None:
        for m in self.modules():
            if isinstance(m, M6FashionEncoder):
                m.gradient_checkpointing = enable

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' loader, computing in float32 unless ``dtype`` (or ``torch_dtype``) says otherwise.

        The shipped weights are stored in float16 to keep files small and transformers would load them as
        stored (``dtype="auto"``); the pipeline and the model card compute in float32. ``dtype="auto"`` keeps
        the stored dtype. The Auto classes call this method too.
        """
        if kwargs.get("dtype") is None and kwargs.get("torch_dtype") is None:
            kwargs.pop("torch_dtype", None)
            kwargs["dtype"] = torch.float32
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    # `__wrapped__` gives this method transformers' signature, which diffusers inspects to pass `variant`,
    # `safe_serialization` and `max_shard_size` when it saves a pipeline
    @functools.wraps(PreTrainedModel.save_pretrained, assigned=())
    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' saver, plus the ``auto_map`` entry point (``modeling_m6fashion.py``) that lets
        ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` load the folder without ``import m6_fashion``."""
        import shutil

        from .. import hub_entry

        entry = HUB_MODELING_FILE[: -len(".py")]
        self.config.auto_map = {auto: f"{entry}.{name}" for auto, name in AUTO_MAP.items()}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            shutil.copyfile(hub_entry.__file__, os.path.join(save_directory, HUB_MODELING_FILE))
        return result


HUB_MODELING_FILE = "modeling_m6fashion.py"  # a copy of m6_fashion/hub_entry.py
AUTO_MAP = {"AutoConfig": "M6FashionConfig", "AutoModel": "M6FashionTransformer", "AutoModelForMaskedLM": "M6FashionTransformer"}


class M6FashionTransformer(M6FashionPreTrainedModel):
    """The M6-Fashion multi-modal transformer (BERT encoder layers fed with :class:`M6FashionEmbeddings`).

    Example::

        >>> from m6_fashion import M6FashionConfig, M6FashionTransformer
        >>> from m6_fashion.models.sequence_layout import build_model_inputs
        >>> model = M6FashionTransformer(M6FashionConfig(vocab_size=100, grid_size=4, num_hidden_layers=1))
        >>> inputs = build_model_inputs(model.config, text_ids, target_codes)   # dict of tensors
        >>> out = model(**inputs, labels=labels)          # out.logits: (B, 16, 4, 256)
    """

    def __init__(self, config: M6FashionConfig):
        super().__init__(config)
        self.embeddings = M6FashionEmbeddings(config)
        self.encoder = M6FashionEncoder(config)
        self.head = M6FashionHead(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    # ------------------------------------------------------------------ validation
    def _check_inputs(self, input_ids, image_codes, position_ids, token_type_ids, attention_mask, past_length):
        cfg = self.config
        n, k, m = cfg.num_image_tokens, cfg.codebook_size, cfg.num_groups
        for name, t in (("input_ids", input_ids), ("position_ids", position_ids), ("token_type_ids", token_type_ids)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
            if t.dtype.is_floating_point or t.dtype == torch.bool:
                raise TypeError(f"{name} must be an integer tensor; got dtype {t.dtype}")
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape (batch, seq_len); got {tuple(input_ids.shape)}")
        b, length = input_ids.shape
        if not isinstance(image_codes, torch.Tensor) or image_codes.dtype.is_floating_point:
            raise TypeError("image_codes must be an integer torch.Tensor of shape (batch, seq_len, num_groups)")
        if tuple(image_codes.shape) != (b, length, m):
            raise ValueError(
                f"image_codes must have shape (batch, seq_len, num_groups) = ({b}, {length}, {m}); got {tuple(image_codes.shape)}"
            )
        for name, t in (("position_ids", position_ids), ("token_type_ids", token_type_ids)):
            if tuple(t.shape) != (b, length):
                raise ValueError(f"{name} must have shape (batch, seq_len) = ({b}, {length}); got {tuple(t.shape)}")
        if attention_mask is not None and tuple(attention_mask.shape) != (b, past_length + length):
            extra = f" (the cached {past_length} positions plus the {length} new ones)" if past_length else ""
            raise ValueError(
                f"attention_mask must have shape (batch, {past_length + length}){extra}; got {tuple(attention_mask.shape)}"
            )
        if ((token_type_ids < 0) | (token_type_ids > 2)).any():
            raise ValueError("token_type_ids must be 0 (condition), 1 (text) or 2 (target)")
        if ((input_ids < 0) | (input_ids >= cfg.vocab_size)).any():
            raise ValueError(f"input_ids must lie in [0, vocab_size={cfg.vocab_size})")
        is_image = input_ids == cfg.img_token_id
        img_codes = image_codes[is_image]
        if img_codes.numel() and (img_codes.min() < 0 or img_codes.max() > k):
            raise ValueError(
                f"image token codes must lie in [0, {k}) (codebook_size K={k}), or equal {k} for MASK; got values in "
                f"[{int(img_codes.min())}, {int(img_codes.max())}]"
            )
        pos = position_ids[is_image]
        if pos.numel() and (pos.min() < 0 or pos.max() >= n):
            raise ValueError(
                f"image positions must carry a grid index in [0, N={n}) ({cfg.grid_height}x{cfg.grid_width} grid); got values in "
                f"[{int(pos.min())}, {int(pos.max())}]"
            )
        other = position_ids[~is_image]
        if other.numel() and (other.min() < 0 or other.max() >= cfg.max_position_embeddings):
            raise ValueError(
                f"non-image position_ids must lie in [0, max_position_embeddings={cfg.max_position_embeddings})"
            )
        is_target = token_type_ids == TOKEN_TYPE_TARGET
        if (is_target & ~is_image).any():
            raise ValueError(f"every target position (token type 2) must carry the IMG token id {cfg.img_token_id}")
        n_target = is_target.sum(dim=1)
        nt = int(n_target[0]) if b else 0
        if (n_target != nt).any():
            raise ValueError("every sample must have the same number of target positions (the target is the last N positions)")
        if nt and not is_target[:, length - nt :].all():
            raise ValueError("target positions (token type 2) must be the last positions of the sequence")
        if past_length == 0:
            if nt not in (0, n):
                raise ValueError(
                    f"the target image must occupy the last N = grid_height*grid_width = {n} positions; got {nt} target "
                    f"positions (is the token grid {cfg.grid_height}x{cfg.grid_width}?)"
                )
        elif nt != length:
            raise ValueError(
                "with past_key_values, the input may only contain target positions (token type 2): the prefix is in the cache"
            )
        real = input_ids != cfg.pad_token_id
        n_text = ((token_type_ids == TOKEN_TYPE_TEXT)).sum(dim=1)
        if (n_text > cfg.max_text_length + 1).any():
            raise ValueError(
                f"the text segment has {int(n_text.max())} positions but max_text_length is {cfg.max_text_length} "
                f"(+1 for EOT); truncate the caption to at most {cfg.max_text_length} tokens"
            )
        n_cond = ((token_type_ids == TOKEN_TYPE_CONDITION) & real).sum(dim=1)
        if (n_cond > cfg.max_condition_tokens + 1).any():
            raise ValueError(
                f"the condition segment has {int(n_cond.max()) - 1} tokens (+ EOV) but max_condition_tokens is "
                f"{cfg.max_condition_tokens}; use fewer or smaller condition patches"
            )
        return nt

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor,
        image_codes: torch.LongTensor,
        position_ids: torch.LongTensor,
        token_type_ids: torch.LongTensor,
        attention_mask: Optional[torch.Tensor] = None,
        labels: Optional[torch.LongTensor] = None,
        past_key_values: Optional[M6FashionKVCache] = None,
        use_cache: Optional[bool] = None,
    ) -> M6FashionTransformerOutput:
        """Runs the transformer.

        Args:
            input_ids: ``(B, L)`` text-vocabulary ids, ``img_token_id`` at image positions.
            image_codes: ``(B, L, M)`` codes in ``[0, K]`` (``K`` = MASK) at image positions.
            position_ids: ``(B, L)`` grid index at image positions, 1-D index elsewhere.
            token_type_ids: ``(B, L)`` 0 condition, 1 text, 2 target.
            attention_mask: ``(B, past + L)`` 1/0, optional (all ones).
            labels: ``(B, n, M)`` target codes in ``[0, K)`` or -100 (ignored), aligned with ``logits``.
            past_key_values: a :class:`M6FashionKVCache` holding earlier positions. The input
                must then contain only target positions. With ``use_cache=False`` the cache is used
                read-only (restored to its length after the pass), which is how a prefix cache from
                :meth:`encode_prefix` is reused over SMART steps.
            use_cache: return the (updated) cache in ``cache``.

        Returns:
            :class:`M6FashionTransformerOutput` with ``loss``, ``logits (B, n, M, K)`` and ``cache``.
        """
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        n_target = self._check_inputs(input_ids, image_codes, position_ids, token_type_ids, attention_mask, past_length)
        return self._forward(
            input_ids, image_codes, position_ids, token_type_ids, attention_mask, labels, past_key_values, use_cache, n_target
        )

    def _forward(
        self, input_ids, image_codes, position_ids, token_type_ids, attention_mask, labels, past_key_values, use_cache, n_target
    ) -> M6FashionTransformerOutput:
        """``forward`` without input validation (for internal loops whose inputs are built here)."""
        cfg = self.config
        use_cache = bool(use_cache) if use_cache is not None else False
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        b, length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones(b, past_length + length, dtype=torch.long, device=input_ids.device)

        cache = past_key_values
        if cache is None and use_cache:
            cache = M6FashionKVCache()

        hidden = self.embeddings(input_ids, image_codes, position_ids, token_type_ids)
        bias = build_attention_bias(
            token_type_ids, attention_mask, past_length, cfg.attention, cfg.prefix_attention, dtype=hidden.dtype
        )
        # a given cache with use_cache=False is read only (the prefix cache reused over SMART passes)
        hidden = self.encoder(hidden, bias, cache, store=use_cache)

        if cfg.attention == "causal":
            if past_length == 0 and n_target > 0:
                # the whole target: EOT predicts target 0, target j predicts j + 1 (target N-1 predicts nothing)
                pred_hidden = hidden[:, length - n_target - 1 : length - 1]
            elif past_length == 0:
                pred_hidden = hidden[:, length - 1 :]  # prefix only: EOT predicts target 0
            else:
                pred_hidden = hidden  # cached decoding: each new position predicts the next one
        else:
            pred_hidden = hidden[:, length - n_target :]
        logits = self.head(pred_hidden)

        loss = None
        if labels is not None:
            loss = self.loss_function_m6(logits, labels)

        return M6FashionTransformerOutput(loss=loss, logits=logits, cache=cache if use_cache else None)

    def loss_function_m6(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over labelled positions (labels != -100), averaged per group, then over groups.

        ``logits (B, n, M, K)``, ``labels (B, n, M)``. Groups without any labelled position contribute 0.
        """
        k = self.config.codebook_size
        if tuple(labels.shape) != tuple(logits.shape[:3]):
            raise ValueError(
                f"labels must have shape (batch, n_target, num_groups) = {tuple(logits.shape[:3])}; got {tuple(labels.shape)}"
            )
        valid = labels != -100
        bad = labels[valid]
        if bad.numel() and (bad.min() < 0 or bad.max() >= k):
            raise ValueError(f"labels must be codes in [0, {k}) or -100 (ignored); the MASK code {k} is never a label")
        ce = F.cross_entropy(
            logits.float().reshape(-1, k), labels.reshape(-1).long(), ignore_index=-100, reduction="none"
        ).view(labels.shape)
        per_group = (ce * valid).sum(dim=(0, 1)) / valid.sum(dim=(0, 1)).clamp(min=1)
        return per_group.mean()

    # ------------------------------------------------------------------ cached inference helpers
    def encode_prefix(
        self,
        input_ids: torch.LongTensor,
        image_codes: torch.LongTensor,
        position_ids: torch.LongTensor,
        token_type_ids: torch.LongTensor,
        attention_mask: Optional[torch.Tensor] = None,
    ) -> M6FashionKVCache:
        """Encodes the prefix (condition + text, no target positions) once and returns its KV cache.

        Only valid when the prefix does not attend to the target (``prefix_attention="isolated"`` or
        ``attention="causal"``). Reuse it with ``forward(target inputs, attention_mask=(B, Lp + N),
        past_key_values=cache, use_cache=False)``, which leaves the cache unchanged.
        """
        if self.config.attention != "causal" and self.config.prefix_attention != "isolated":
            raise ValueError(
                "encode_prefix needs a model whose prefix does not attend to the target: prefix_attention='isolated' "
                f"or attention='causal' (this model: attention={self.config.attention!r}, "
                f"prefix_attention={self.config.prefix_attention!r})"
            )
        if (token_type_ids == TOKEN_TYPE_TARGET).any():
            raise ValueError("encode_prefix takes the prefix only (no target positions, token type 2)")
        out = self(input_ids, image_codes, position_ids, token_type_ids, attention_mask=attention_mask, use_cache=True)
        return out.cache

    @torch.no_grad()
    def generate_autoregressive(
        self,
        input_ids: torch.LongTensor,
        image_codes: torch.LongTensor,
        position_ids: torch.LongTensor,
        token_type_ids: torch.LongTensor,
        attention_mask: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        temperature: float = 1.0,
        do_sample: bool = True,
        top_k: Optional[int] = None,
        use_cache: bool = True,
    ) -> torch.LongTensor:
        """Decodes the target token by token in raster order (the autoregressive baseline).

        Args:
            input_ids, image_codes, position_ids, token_type_ids, attention_mask: the prefix
                (condition + text); if the last N target positions are included they are ignored.
            generator: ``torch.Generator`` for sampling.
            temperature: softmax temperature (> 0), used when ``do_sample``.
            do_sample: sample (True) or take the argmax (greedy).
            top_k: keep only the ``top_k`` most likely codes per group before sampling.
            use_cache: one prefix pass then one position per step with a :class:`M6FashionKVCache`
                (default). ``False`` re-encodes the whole sequence at every step (reference only).

        Returns:
            ``(B, N, M)`` long codes in ``[0, K)``.
        """
        cfg = self.config
        if cfg.attention != "causal":
            raise ValueError("generate_autoregressive needs a model configured with attention='causal'")
        if do_sample and not temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling; got {temperature}")
        n, m = cfg.num_image_tokens, cfg.num_groups
        is_target = token_type_ids == TOKEN_TYPE_TARGET
        if is_target.any():
            keep = input_ids.shape[1] - n
            if keep <= 0 or not is_target[:, keep:].all() or is_target[:, :keep].any():
                raise ValueError(f"the target, when given, must be exactly the last N={n} positions")
            input_ids, image_codes, position_ids, token_type_ids = (
                t[:, :keep] for t in (input_ids, image_codes, position_ids, token_type_ids)
            )
            if attention_mask is not None:
                attention_mask = attention_mask[:, :keep]
        b, prefix_len = input_ids.shape
        device = input_ids.device
        if attention_mask is None:
            attention_mask = torch.ones(b, prefix_len, dtype=torch.long, device=device)
        out_codes = torch.zeros(b, n, m, dtype=torch.long, device=device)

        def pick(logits_bmk: torch.Tensor) -> torch.Tensor:
            logits_bmk = logits_bmk.float()
            if not do_sample:
                return logits_bmk.argmax(dim=-1)
            logits_bmk = logits_bmk / temperature
            if top_k is not None and top_k < logits_bmk.shape[-1]:
                kth = logits_bmk.topk(top_k, dim=-1).values[..., -1:]
                logits_bmk = logits_bmk.masked_fill(logits_bmk < kth, float("-inf"))
            probs = logits_bmk.softmax(dim=-1).reshape(-1, logits_bmk.shape[-1])
            return torch.multinomial(probs, 1, generator=generator).view(b, m)

        img = torch.full((b, 1), cfg.img_token_id, dtype=input_ids.dtype, device=device)
        tt = torch.full((b, 1), TOKEN_TYPE_TARGET, dtype=token_type_ids.dtype, device=device)
        ones = torch.ones(b, 1, dtype=attention_mask.dtype, device=device)
        if use_cache:
            cache = M6FashionKVCache()
            out = self(input_ids, image_codes, position_ids, token_type_ids, attention_mask, past_key_values=cache, use_cache=True)
            mask = attention_mask
            for j in range(n):
                out_codes[:, j] = pick(out.logits[:, -1])
                if j == n - 1:
                    break
                mask = torch.cat([mask, ones], dim=1)
                pos = torch.full((b, 1), j, dtype=position_ids.dtype, device=device)
                # inputs built here are valid by construction: skip the per-step checks (host syncs on GPU)
                out = self._forward(img, out_codes[:, j : j + 1], pos, tt, mask, None, cache, True, 1)
            return out_codes

        # reference path: the full sequence (not yet generated targets = MASK) at every step
        full_ids = torch.cat([input_ids, img.expand(b, n)], dim=1)
        full_pos = torch.cat([position_ids, torch.arange(n, device=device).expand(b, n).to(position_ids.dtype)], dim=1)
        full_tt = torch.cat([token_type_ids, tt.expand(b, n)], dim=1)
        full_mask = torch.cat([attention_mask, ones.expand(b, n)], dim=1)
        target = torch.full((b, n, m), cfg.codebook_size, dtype=torch.long, device=device)
        for j in range(n):
            full_codes = torch.cat([image_codes.long(), target], dim=1)
            logits = self(full_ids, full_codes, full_pos, full_tt, full_mask).logits
            target[:, j] = pick(logits[:, j])
        return target


def register_auto_classes() -> None:
    """Registers the config and model with ``AutoConfig``, ``AutoModel`` and ``AutoModelForMaskedLM`` (idempotent).

    ``AutoModelForMaskedLM`` fits: the model is trained by masked modelling and returns per-position logits.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if M6FashionConfig.model_type not in CONFIG_MAPPING:
        AutoConfig.register(M6FashionConfig.model_type, M6FashionConfig)
    for auto in (AutoModel, AutoModelForMaskedLM):
        try:
            auto.register(M6FashionConfig, M6FashionTransformer)
        except ValueError:  # already registered (module re-imported)
            pass


register_auto_classes()
