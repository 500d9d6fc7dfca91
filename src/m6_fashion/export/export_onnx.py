"""Exports an M6-Fashion pipeline folder to ONNX and packs the torch-free runtime bundle.

    m6-fashion export onnx --model PIPELINE_DIR --out BUNDLE_DIR [--int8] \
        [--parity-data path/to/test.parquet] [--parity-batch 3] [--decoder-hr DECODER_DIR | --no-decoder-hr]

Three graphs (four with a high-resolution decoder) are exported, each with a dynamic batch axis (opset >= 18,
weights inside the file):

* ``image_encoder.onnx``: ``pixel_values (B, 3, S, S)`` float in [-1, 1] -> ``tokens (B, h, w, M)`` int64
  (``(B, 3, Sh, Sw)`` -> ``(B, rows, cols, M)`` for a non-square grid, e.g. 256 x 192 px -> 16 x 12 tokens).
  The CNN encoder and the nearest-code search of the product quantiser are both in the graph.
* ``image_decoder.onnx``: ``tokens (B, h, w, M)`` int64 in [0, K) -> ``pixel_values (B, 3, S, S)`` float,
  clamped to [-1, 1] (codebook lookup + spatial-style decoder, as ``M6FashionPipeline.decode_tokens``).
* ``image_decoder_hr.onnx`` (when the pipeline has ``decoder_hr``, or ``--decoder-hr`` gives one):
  ``tokens (B, h, w, M)`` -> ``pixel_values (B, 3, D, D)`` on the larger canvas, the same graph around ``decoder_hr``.
* The image graphs take token grids of any ``rows`` x ``cols`` from the model's grid to ``MAX_WIDE_FACTOR`` times
  each of its sides (outpainting beyond the canvas); the transformer graphs have ``N = rows * cols`` target tokens.
* ``transformer.onnx``: one SMART pass, ``input_ids, position_ids, token_type_ids, attention_mask (B, L)``
  and ``image_codes (B, L, M)`` (int64, the layout of ``m6_fashion.models.sequence_layout``) ->
  ``logits (B, N, M, K)``. ``B`` and ``L`` are dynamic (``L`` varies with the condition segment).
* For a transformer whose prefix never attends to the target (``prefix_attention="isolated"``, the shipped
  model), the pass is also split in two, as ``M6FashionPipeline`` runs it:
  ``transformer_prefix.onnx``: the prefix layout tensors ``(B, Lp[, M])`` -> ``prefix_keys, prefix_values
  (layers, B, heads, Lp, head_dim)``, run once per call; ``transformer_target.onnx``: ``image_codes (B, N, M)``,
  the prefix keys/values and ``prefix_mask (B, Lp)`` -> ``log_probs (B, N, M, K)`` (log-softmax over the
  codes), run at every pass on the N target positions only. The split graphs are fused for ONNX Runtime
  (``onnxruntime.transformers`` BERT fusions: bias + GELU, skip + LayerNorm). The three transformer graphs
  keep their weights in one shared file, ``transformer.weights`` (``transformer.int8.weights`` for the int8
  graphs), so the split costs no extra weight storage.

The SMART loop is data-dependent control flow, so it stays outside the graphs (the runtime runs it in
numpy). ``--int8`` adds ``transformer.int8.onnx`` (onnxruntime dynamic int8 quantisation of the MatMuls) and,
for split models, ``transformer_target.int8.onnx`` (the prefix, run once per call, stays float32).

The bundle folder holds the ONNX files, ``tokenizer.json`` (the caption tokenizer, for the ``tokenizers``
library) and ``bundle.json`` (format version, geometry, special token ids, scheduler config, file list, and
``canvases`` (decoder file key -> side of the square it paints; the longest side of the canvas for a non-square
grid) and ``default_size`` (height, width), from which the runtime computes the output sizes and crops exactly as
``M6FashionPipeline.output_canvas`` does). A model with a non-square token grid (e.g. 16 x 12 for 3:4 photos) is
written as format 5: its geometry also records ``grid_height``, ``grid_width``, ``sample_height`` and
``sample_width``; a square model's bundle stays format 4, key for key as before.
After export every graph is checked with ``onnx.checker``, its batch (and sequence) axes are checked to be
symbolic, and onnxruntime is compared with PyTorch at a batch size different from the export example.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from diffusers.utils import logging as diffusers_logging

from m6_fashion_core import outpainting as core_outpainting
from m6_fashion_core import validation

from ..errors import parse_arguments

# a child of diffusers' library logger: its handler prints the progress lines (stderr), and
# `diffusers.utils.logging.set_verbosity_*()` or DIFFUSERS_VERBOSITY sets what is shown
logger = diffusers_logging.get_logger("diffusers.m6_fashion.export")

BUNDLE_FORMAT = "m6-fashion-runtime-bundle"
# 2: canvases, default_size, image_decoder_hr.onnx; 3: split transformer, shared weights; 4: image graphs with free
# grid sides up to image_grid_max (outpainting beyond the canvas, m6_fashion_core.outpainting)
BUNDLE_FORMAT_VERSION = 4
# 5: a non-square token grid (geometry grid_height / grid_width, sample_height / sample_width); square models keep 4
NONSQUARE_FORMAT_VERSION = 5
DEFAULT_OPSET = 18
MIN_OPSET = 18
EXPORT_BATCH = 2  # batch of the export example; parity is checked at other batch sizes
FILES = {
    "image_encoder": "image_encoder.onnx",
    "image_decoder": "image_decoder.onnx",
    "transformer": "transformer.onnx",
}
HR_DECODER = "image_decoder_hr"  # bundle file key of the high-resolution decoder graph
HR_DECODER_FILE = "image_decoder_hr.onnx"
INT8_FILE = "transformer.int8.onnx"
# the pass split at the prefix (models with prefix_attention="isolated") and the shared weight files
SPLIT_FILES = {"transformer_prefix": "transformer_prefix.onnx", "transformer_target": "transformer_target.onnx"}
TARGET_INT8_FILE = "transformer_target.int8.onnx"
WEIGHTS_FILE = "transformer.weights"
INT8_WEIGHTS_FILE = "transformer.int8.weights"
PREFIX_OUTPUTS = ("prefix_keys", "prefix_values")
TARGET_INPUTS = ("image_codes", "prefix_keys", "prefix_values", "prefix_mask")
TOKENIZER_FILE = "tokenizer.json"
BUNDLE_JSON = "bundle.json"
TRANSFORMER_INPUTS = ("input_ids", "image_codes", "position_ids", "token_type_ids", "attention_mask")

# parity tolerances (ONNX Runtime vs PyTorch, float32 on CPU)
PIXEL_TOLERANCE = 1e-3  # max abs difference of decoded pixels in [-1, 1] (one uint8 level is 2/255 = 7.8e-3)
LOGIT_TOLERANCE = 2e-3  # max abs difference of transformer logits (and of the split graphs' log-probabilities)
TOKEN_MATCH_MIN = 0.99  # minimum exact-match rate of encoder tokens (near-equidistant codes may flip)
ARGMAX_MATCH_MIN = 0.99  # minimum argmax agreement of the transformer logits

__all__ = [
    "ImageEncoderGraph",
    "ImageDecoderGraph",
    "TransformerGraph",
    "TransformerPrefixGraph",
    "TransformerTargetGraph",
    "export_transformer_split",
    "share_weights",
    "export_image_encoder",
    "export_image_decoder",
    "export_transformer",
    "check_onnx_file",
    "export_fp16_graphs",
    "quantize_transformer_int8",
    "parity_image_encoder",
    "parity_image_decoder",
    "parity_transformer",
    "parity_transformer_split",
    "load_parity_images",
    "with_decoder_hr",
    "export_bundle",
    "main",
]


# ---------------------------------------------------------------------------------------------- graphs
class ImageEncoderGraph(nn.Module):
    """pixel_values (B, 3, S, S) -> tokens (B, h, w, M) int64: ``PQTokenizer.encode`` without input checks."""

    def __init__(self, image_tokenizer):
        super().__init__()
        self.image_tokenizer = image_tokenizer

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tok = self.image_tokenizer
        z = tok.encoder(pixel_values.to(tok.dtype)).float()
        _, tokens = tok._quantize(z, update=False)
        return tokens


class ImageDecoderGraph(nn.Module):
    """tokens (B, h, w, M) int64 -> pixels (B, 3, S, S) in [-1, 1]: ``M6FashionPipeline.decode_tokens``.

    The value checks of ``PQTokenizer.lookup`` are data dependent and stay out of the graph (the runtime
    checks token ranges before calling it).
    """

    def __init__(self, image_tokenizer, decoder):
        super().__init__()
        self.image_tokenizer = image_tokenizer
        self.decoder = decoder

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tok = self.image_tokenizer
        codes = tok.codebooks.lookup(tokens.long())  # (B, h, w, M, d)
        latents = codes.sum(-2) if tok.config.quantizer_type == "residual" else codes.flatten(-2)
        latents = latents.permute(0, 3, 1, 2).contiguous()
        return self.decoder(latents.to(self.decoder.dtype)).sample.float().clamp(-1, 1)


class TransformerGraph(nn.Module):
    """One full SMART pass: the five (B, L[, M]) layout tensors -> logits (B, N, M, K) (no input checks)."""

    def __init__(self, transformer):
        super().__init__()
        if transformer.config.attention != "bidirectional":
            raise ValueError(
                f"only bidirectional (masked, SMART-sampled) transformers are exported; this one has "
                f"attention={transformer.config.attention!r} (the causal baseline decodes token by token)"
            )
        self.transformer = transformer

    def forward(self, input_ids, image_codes, position_ids, token_type_ids, attention_mask):
        m = self.transformer
        n = m.config.num_image_tokens
        return m._forward(input_ids, image_codes, position_ids, token_type_ids, attention_mask, None, None, False, n).logits.float()


def _check_isolated(transformer) -> None:
    cfg = transformer.config
    if cfg.attention != "bidirectional" or cfg.prefix_attention != "isolated":
        raise ValueError(
            "the pass splits at the prefix only for a bidirectional transformer whose prefix never attends to the "
            f"target (prefix_attention='isolated'); this one has attention={cfg.attention!r}, "
            f"prefix_attention={cfg.prefix_attention!r}: use the full-pass graph (transformer.onnx)"
        )


class TransformerPrefixGraph(nn.Module):
    """The prefix (condition + text) layout tensors ``(B, Lp[, M])`` -> its keys and values, each
    ``(layers, B, heads, Lp, head_dim)``: ``M6FashionTransformer.encode_prefix`` stacked over layers."""

    def __init__(self, transformer):
        super().__init__()
        _check_isolated(transformer)
        self.transformer = transformer

    def forward(self, input_ids, image_codes, position_ids, token_type_ids, attention_mask):
        from m6_fashion.models.transformer_m6fashion import M6FashionKVCache

        cache = M6FashionKVCache()
        self.transformer._forward(input_ids, image_codes, position_ids, token_type_ids, attention_mask, None, cache, True, 0)
        return torch.stack(cache.keys), torch.stack(cache.values)


class TransformerTargetGraph(nn.Module):
    """One SMART pass over the target positions only, reading the prefix's keys/values.

    ``image_codes (B, N, M)`` in ``[0, K]``, ``prefix_keys``/``prefix_values`` ``(layers, B, heads, Lp, head_dim)``
    and ``prefix_mask (B, Lp)`` -> ``log_probs (B, N, M, K)``: the log-softmax of the logits the full pass gives
    (the target's ids, positions and segment are fixed by the layout, so they are built inside).
    """

    def __init__(self, transformer):
        super().__init__()
        _check_isolated(transformer)
        self.transformer = transformer

    def forward(self, image_codes, prefix_keys, prefix_values, prefix_mask):
        from m6_fashion.models.transformer_m6fashion import TOKEN_TYPE_TARGET, M6FashionKVCache

        cfg = self.transformer.config
        b, n = image_codes.shape[0], cfg.num_image_tokens
        input_ids = torch.full((b, n), cfg.img_token_id, dtype=torch.long)
        position_ids = torch.arange(n).unsqueeze(0).expand(b, n)
        token_type_ids = torch.full((b, n), TOKEN_TYPE_TARGET, dtype=torch.long)
        mask = torch.cat([prefix_mask, torch.ones(b, n, dtype=prefix_mask.dtype)], dim=1)
        cache = M6FashionKVCache()
        cache.keys, cache.values = list(prefix_keys.unbind(0)), list(prefix_values.unbind(0))
        logits = self.transformer._forward(input_ids, image_codes, position_ids, token_type_ids, mask, None, cache, False, n).logits
        return torch.log_softmax(logits.float(), dim=-1)


# ---------------------------------------------------------------------------------------------- export
def _export(module: nn.Module, args: tuple, path: str, input_names, output_names, dynamic_shapes, opset: int) -> None:
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old; accepted: >= {MIN_OPSET}")
    module = module.eval()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            path,
            dynamo=True,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            external_data=False,  # weights inside the .onnx file
            optimize=True,
            verbose=False,
        )
    data = path + ".data"
    if os.path.exists(data):
        raise RuntimeError(f"the exporter wrote external weights ({data}); expected them inside {path}")


def _batch_dim():
    return torch.export.Dim("batch", min=1, max=4096)


def tokenizer_grid_shape(image_tokenizer) -> Tuple[int, int]:
    """`(rows, cols)` of the image tokenizer's grid (`PQTokenizer.grid_shape`)."""
    rows, cols = image_tokenizer.grid_shape
    return int(rows), int(cols)


def image_grid_max(image_tokenizer) -> int:
    """Largest token-grid side the image graphs take: `MAX_WIDE_FACTOR` x the grid's longest side (outpainting
    beyond the canvas; each side of a non-square grid goes up to `MAX_WIDE_FACTOR` x its own length)."""
    return core_outpainting.MAX_WIDE_FACTOR * image_tokenizer.grid_size


def image_grid_max_shape(image_tokenizer) -> Tuple[int, int]:
    """`(rows, cols)` limits of the grids the image graphs take: `MAX_WIDE_FACTOR` x each side of the model's grid."""
    rows, cols = tokenizer_grid_shape(image_tokenizer)
    return core_outpainting.MAX_WIDE_FACTOR * rows, core_outpainting.MAX_WIDE_FACTOR * cols


def _grid_dims(image_tokenizer):
    """Free `(rows, cols)` grid sides from the model's grid to `image_grid_max_shape` (wide outpainting canvases)."""
    (rows, cols), (top_r, top_c) = tokenizer_grid_shape(image_tokenizer), image_grid_max_shape(image_tokenizer)
    return torch.export.Dim("grid_rows", min=rows, max=top_r), torch.export.Dim("grid_cols", min=cols, max=top_c)


def export_image_encoder(image_tokenizer, path: str, opset: int = DEFAULT_OPSET, example_batch: int = EXPORT_BATCH) -> str:
    """Exports pixels -> tokens with a dynamic batch and free sides (whole cells, from the model's grid to
    `image_grid_max_shape` cells: the `S` x `S` square (`Sh` x `Sw` for a non-square grid), or a wide outpainting
    canvas). Returns ``path``."""
    s, c = image_tokenizer.config.sample_size, image_tokenizer.config.in_channels
    cell = s // image_tokenizer.grid_size
    gr, gc = tokenizer_grid_shape(image_tokenizer)
    rows, cols = _grid_dims(image_tokenizer)
    example = torch.rand(example_batch, c, gr * cell, gc * cell) * 2 - 1
    _export(ImageEncoderGraph(image_tokenizer), (example,), path, ["pixel_values"], ["tokens"],
            {"pixel_values": {0: _batch_dim(), 2: cell * rows, 3: cell * cols}}, opset)
    check_onnx_file(path, {"pixel_values": [0]}, {"tokens": [0]})
    return path


def export_image_decoder(image_tokenizer, decoder, path: str, opset: int = DEFAULT_OPSET, example_batch: int = EXPORT_BATCH) -> str:
    """Exports tokens -> pixels with a dynamic batch and free grid sides (the model's grid to `image_grid_max_shape`
    cells; the decoder is convolutional). Returns ``path``."""
    gr, gc = tokenizer_grid_shape(image_tokenizer)
    rows, cols = _grid_dims(image_tokenizer)
    example = torch.randint(0, image_tokenizer.config.codebook_size, (example_batch, gr, gc, image_tokenizer.num_token_groups))
    _export(ImageDecoderGraph(image_tokenizer, decoder), (example,), path, ["tokens"], ["pixel_values"],
            {"tokens": {0: _batch_dim(), 1: rows, 2: cols}}, opset)
    check_onnx_file(path, {"tokens": [0]}, {"pixel_values": [0]})
    return path


def _transformer_example(config, batch: int) -> Dict[str, torch.Tensor]:
    """Example inputs with a short condition segment in one sample (so no axis is at a special size)."""
    from m6_fashion.models.sequence_layout import build_model_inputs

    m, k, n = config.num_groups, config.codebook_size, config.num_image_tokens
    gen = torch.Generator().manual_seed(0)
    texts = [[7 + (i % max(1, config.vocab_size - 7))] * (1 + i % 3) for i in range(batch)]
    target = torch.randint(0, k + 1, (batch, n, m), generator=gen)
    conditions = [None] * batch
    if config.max_condition_tokens >= 2:
        size = min(3, config.max_condition_tokens)
        conditions[0] = [(torch.randint(0, k, (size, m), generator=gen), torch.arange(size) % n)]
    return build_model_inputs(config, texts, target, conditions)


def export_transformer(transformer, path: str, opset: int = DEFAULT_OPSET, example_batch: int = EXPORT_BATCH) -> str:
    """Exports one SMART pass with dynamic batch and sequence length. Returns ``path``."""
    cfg = transformer.config
    inputs = _transformer_example(cfg, example_batch)
    fixed = cfg.max_text_length + 2 + cfg.num_image_tokens  # EOV + text + EOT + target
    batch = _batch_dim()
    seq = torch.export.Dim("seq", min=fixed, max=fixed + cfg.max_condition_tokens)
    dynamic = {name: {0: batch, 1: seq} for name in TRANSFORMER_INPUTS}
    args = tuple(inputs[name] for name in TRANSFORMER_INPUTS)
    _export(TransformerGraph(transformer), args, path, TRANSFORMER_INPUTS, ["logits"], dynamic, opset)
    check_onnx_file(path, {name: [0, 1] for name in TRANSFORMER_INPUTS}, {"logits": [0]})
    return path


def export_transformer_split(transformer, prefix_path: str, target_path: str, opset: int = DEFAULT_OPSET,
                             example_batch: int = EXPORT_BATCH, fuse: bool = True) -> Tuple[str, str]:
    """Exports the prefix graph and the target-pass graph (dynamic batch and prefix length).

    ``fuse`` applies onnxruntime's BERT fusions (bias + GELU, skip + LayerNorm) to both, for ONNX Runtime.
    Returns the two paths.
    """
    _check_isolated(transformer)
    cfg = transformer.config
    n = cfg.num_image_tokens
    example = _transformer_example(cfg, example_batch)
    prefix = {k: v[:, :-n] for k, v in example.items()}
    fixed = cfg.max_text_length + 2  # EOV + text + EOT
    batch = _batch_dim()
    lp = torch.export.Dim("prefix", min=fixed, max=fixed + cfg.max_condition_tokens)
    prefix_graph = TransformerPrefixGraph(transformer).eval()
    _export(prefix_graph, tuple(prefix[k] for k in TRANSFORMER_INPUTS), prefix_path, TRANSFORMER_INPUTS, PREFIX_OUTPUTS,
            {name: {0: batch, 1: lp} for name in TRANSFORMER_INPUTS}, opset)
    with torch.no_grad():
        keys, values = prefix_graph(*(prefix[k] for k in TRANSFORMER_INPUTS))
    kv_axes = {1: batch, 3: lp}
    _export(TransformerTargetGraph(transformer), (example["image_codes"][:, -n:], keys, values, prefix["attention_mask"]),
            target_path, TARGET_INPUTS, ["log_probs"],
            {"image_codes": {0: batch}, "prefix_keys": kv_axes, "prefix_values": kv_axes, "prefix_mask": {0: batch, 1: lp}}, opset)
    if fuse:
        for path in (prefix_path, target_path):
            fuse_for_onnxruntime(path, cfg.num_attention_heads, cfg.hidden_size)
    check_onnx_file(prefix_path, {name: [0, 1] for name in TRANSFORMER_INPUTS}, {name: [1, 3] for name in PREFIX_OUTPUTS})
    check_onnx_file(target_path, {"image_codes": [0], "prefix_keys": [1, 3], "prefix_values": [1, 3], "prefix_mask": [0, 1]},
                    {"log_probs": [0]})
    return prefix_path, target_path


def fuse_for_onnxruntime(path: str, num_heads: int, hidden_size: int) -> str:
    """Rewrites ``path`` with onnxruntime's BERT fusions (contrib ops of ONNX Runtime; TensorRT reads the unfused
    ``transformer.onnx``)."""
    from onnxruntime.transformers.optimizer import optimize_model

    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = optimize_model(path, model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0)
        model.save_model_to_file(path)
    finally:
        quiet.setLevel(level)
    return path


def share_weights(paths: Sequence[str], weights_name: str, min_bytes: int = 1024, align: int = 4096) -> Dict[str, int]:
    """Moves the weights of the ONNX files ``paths`` (in one folder) into one external-data file ``weights_name``
    beside them, each distinct tensor stored once (the graphs of one model hold the same weights).

    Tensors under ``min_bytes`` stay inside their graph; offsets are aligned to ``align`` bytes (page size, so
    ONNX Runtime can map the file). Returns ``{"tensors": stored, "bytes": file size, "references": total}``.
    """
    import onnx
    from onnx import numpy_helper

    folder = os.path.dirname(os.path.abspath(paths[0]))
    if any(os.path.dirname(os.path.abspath(p)) != folder for p in paths):
        raise ValueError(f"the graphs sharing {weights_name} must lie in one folder; got {list(paths)}")
    models = [onnx.load(p) for p in paths]
    stored: Dict[tuple, Tuple[int, int]] = {}
    refs = 0
    tmp = os.path.join(folder, weights_name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            for model in models:
                for init in model.graph.initializer:
                    array = numpy_helper.to_array(init)
                    if array.nbytes < min_bytes:
                        continue
                    data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
                    key = (init.data_type, tuple(init.dims), hashlib.sha256(data).hexdigest())
                    if key not in stored:
                        offset = -(-f.tell() // align) * align
                        f.seek(offset)
                        f.write(data)
                        stored[key] = (offset, len(data))
                    offset, length = stored[key]
                    for data_field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                        init.ClearField(data_field)
                    del init.external_data[:]
                    for k, v in (("location", weights_name), ("offset", str(offset)), ("length", str(length))):
                        entry = init.external_data.add()
                        entry.key, entry.value = k, v
                    init.data_location = onnx.TensorProto.EXTERNAL
                    refs += 1
        os.replace(tmp, os.path.join(folder, weights_name))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    for model, path in zip(models, paths):
        onnx.save(model, path)
    return {"tensors": len(stored), "bytes": os.path.getsize(os.path.join(folder, weights_name)), "references": refs}


def check_onnx_file(path: str, dynamic_inputs: Dict[str, Sequence[int]], dynamic_outputs: Optional[Dict[str, Sequence[int]]] = None,
                    min_opset: int = MIN_OPSET) -> Dict[str, list]:
    """Runs ``onnx.checker`` and checks that the named axes are symbolic, not fixed to the export example.

    Returns ``{name: shape}`` for inputs and outputs (``str`` for a symbolic axis, ``int`` for a fixed one).
    Raises ``ValueError`` naming the axis that the exporter fixed.
    """
    import onnx

    onnx.checker.check_model(path, full_check=True)
    model = onnx.load(path, load_external_data=False)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < min_opset:
        raise ValueError(f"{path}: opset {opset} < {min_opset}")
    shapes = {}
    for v in list(model.graph.input) + list(model.graph.output):
        shapes[v.name] = [d.dim_param if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]
    for kind, wanted in (("input", dynamic_inputs), ("output", dynamic_outputs or {})):
        for name, axes in wanted.items():
            if name not in shapes:
                raise ValueError(f"{path}: the graph has no {kind} named {name!r}; it has {sorted(shapes)}")
            for a in axes:
                dim = shapes[name][a]
                if not isinstance(dim, str) or not dim:
                    raise ValueError(
                        f"{path}: axis {a} of {kind} {name!r} is fixed to {dim} (shape {shapes[name]}); it must be dynamic "
                        "(the exporter specialised it to the example's size)"
                    )
    return shapes


def export_fp16_graphs(pipe, out_dir: str, opset: int = DEFAULT_OPSET, components: Sequence[str] = tuple(FILES)) -> Dict[str, str]:
    """Exports the three graphs with float16 weights and compute (float32 inputs/outputs) into ``out_dir``.

    For strongly typed TensorRT builds (TensorRT >= 11 has no FP16 builder flag). The codebooks and
    the nearest-code search stay in float32, so only the encoder CNN, the decoders and the transformer
    run in half precision. Returns ``{component: path}`` with the file names of :data:`FILES`
    (``components`` picks a subset; ``HR_DECODER`` adds ``HR_DECODER_FILE`` from ``pipe.decoder_hr``).
    """
    import copy

    names = {**FILES, HR_DECODER: HR_DECODER_FILE}
    unknown = set(components) - set(names)
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}; accepted: {sorted(names)}")
    if HR_DECODER in components and getattr(pipe, "decoder_hr", None) is None:
        raise ValueError(f"{HR_DECODER} asked for, but the pipeline has no decoder_hr")
    tok = copy.deepcopy(pipe.image_tokenizer).float().eval()
    tok.encoder.half()  # codebooks (buffers of tok.codebooks) stay float32
    paths = {key: os.path.join(out_dir, names[key]) for key in components}
    if "image_encoder" in paths:
        export_image_encoder(tok, paths["image_encoder"], opset)
    if "image_decoder" in paths:
        export_image_decoder(tok, copy.deepcopy(pipe.decoder).half().eval(), paths["image_decoder"], opset)
    if "transformer" in paths:
        export_transformer(copy.deepcopy(pipe.transformer).half().eval(), paths["transformer"], opset)
    if HR_DECODER in paths:
        export_image_decoder(tok, copy.deepcopy(pipe.decoder_hr).half().eval(), paths[HR_DECODER], opset)
    return paths


def quantize_transformer_int8(src: str, dst: str) -> str:
    """onnxruntime dynamic int8 quantisation (weights int8, activations quantised on the fly) of the MatMuls
    of ``transformer.onnx`` or ``transformer_target.onnx``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    if os.path.basename(src) == SPLIT_FILES["transformer_target"]:
        check_onnx_file(dst, {"image_codes": [0], "prefix_keys": [1, 3]}, {"log_probs": [0]}, min_opset=MIN_OPSET)
    else:
        check_onnx_file(dst, {name: [0, 1] for name in TRANSFORMER_INPUTS}, {"logits": [0]}, min_opset=MIN_OPSET)
    return dst


# ---------------------------------------------------------------------------------------------- parity
def _session(path: str, threads: Optional[int] = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def load_parity_images(data: str, count: int) -> List:
    """The first ``count`` images (PIL) of a Parquet split (e.g. the real ``test.parquet``)."""
    import datasets

    if not os.path.isfile(data):
        raise FileNotFoundError(f"parity data {data!r} does not exist; pass a Parquet file with an 'image' column")
    ds = datasets.load_dataset("parquet", data_files={"test": data}, split="test")
    if "image" not in ds.column_names:
        raise ValueError(f"{data!r} has no 'image' column; columns: {ds.column_names}")
    return [ds[i]["image"] for i in range(min(count, len(ds)))]


def _sample_shape(image_tokenizer):
    """What the image encoder reads: the `sample_size` side (square grid) or `(height, width)` (non-square grid)."""
    h, w = image_tokenizer.sample_shape
    return int(h) if h == w else (int(h), int(w))


def _parity_pixels(images, sample_size, batch: int) -> torch.Tensor:
    """`batch` images (repeated) preprocessed to `sample_size` (a side or `(height, width)`), or random pixels."""
    from m6_fashion.image_processing import preprocess

    if images:
        images = (list(images) * batch)[:batch]
        return preprocess(images, sample_size)
    h, w = (sample_size, sample_size) if isinstance(sample_size, int) else sample_size
    gen = torch.Generator().manual_seed(1)
    return torch.rand(batch, 3, h, w, generator=gen) * 2 - 1


@torch.no_grad()
def parity_image_encoder(path: str, image_tokenizer, pixels: torch.Tensor) -> Dict[str, float]:
    """Tokens from ONNX Runtime vs ``PQTokenizer.encode``: exact-match rate over all (position, group) codes."""
    ref = image_tokenizer.encode(pixels).numpy()
    got = _session(path).run(None, {"pixel_values": pixels.numpy().astype(np.float32)})[0]
    if got.shape != ref.shape or got.dtype != np.int64:
        raise AssertionError(f"encoder output {got.shape} {got.dtype}, expected {ref.shape} int64")
    return {"batch": int(pixels.shape[0]), "token_match": float((got == ref).mean())}


@torch.no_grad()
def parity_image_decoder(path: str, image_tokenizer, decoder, tokens: torch.Tensor) -> Dict[str, float]:
    """Pixels from ONNX Runtime vs PyTorch lookup + decoder (clamped): max abs difference."""
    ref = decoder(image_tokenizer.lookup(tokens)).sample.float().clamp(-1, 1).numpy()
    got = _session(path).run(None, {"tokens": tokens.numpy().astype(np.int64)})[0]
    if got.shape != ref.shape:
        raise AssertionError(f"decoder output {got.shape}, expected {ref.shape}")
    return {"batch": int(tokens.shape[0]), "pixel_max_abs_diff": float(np.abs(got - ref).max())}


@torch.no_grad()
def parity_transformer(path: str, transformer, inputs: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Logits from ONNX Runtime vs ``M6FashionTransformer.forward``: max abs difference and argmax agreement."""
    ref = transformer(**inputs).logits.float().numpy()
    got = _session(path).run(None, {k: inputs[k].numpy().astype(np.int64) for k in TRANSFORMER_INPUTS})[0]
    if got.shape != ref.shape:
        raise AssertionError(f"transformer output {got.shape}, expected {ref.shape}")
    return {
        "batch": int(inputs["input_ids"].shape[0]),
        "seq_len": int(inputs["input_ids"].shape[1]),
        "logit_max_abs_diff": float(np.abs(got - ref).max()),
        "argmax_match": float((got.argmax(-1) == ref.argmax(-1)).mean()),
    }


@torch.no_grad()
def parity_transformer_split(prefix_path: str, target_path: str, transformer, inputs: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Log-probabilities from the prefix + target graphs vs the log-softmax of ``M6FashionTransformer.forward``'s
    logits on the whole sequence: max abs difference and argmax agreement."""
    n = transformer.config.num_image_tokens
    ref = torch.log_softmax(transformer(**inputs).logits.float(), dim=-1).numpy()
    prefix = {k: inputs[k][:, :-n].numpy().astype(np.int64) for k in TRANSFORMER_INPUTS}
    keys, values = _session(prefix_path).run(None, prefix)
    feed = {"image_codes": inputs["image_codes"][:, -n:].numpy().astype(np.int64), "prefix_keys": keys,
            "prefix_values": values, "prefix_mask": prefix["attention_mask"]}
    got = _session(target_path).run(None, feed)[0]
    if got.shape != ref.shape:
        raise AssertionError(f"transformer_target output {got.shape}, expected {ref.shape}")
    return {
        "batch": int(inputs["input_ids"].shape[0]),
        "seq_len": int(inputs["input_ids"].shape[1]),
        "logit_max_abs_diff": float(np.abs(got - ref).max()),
        "argmax_match": float((got.argmax(-1) == ref.argmax(-1)).mean()),
    }


def transformer_parity_inputs(pipe, tokens: torch.Tensor, prompts: Sequence[str], mask_ratio: float = 0.5,
                              with_condition: bool = True) -> Dict[str, torch.Tensor]:
    """Real-looking transformer inputs: image tokens with a random ``mask_ratio`` masked, captions, and a
    condition patch (cut from the first image) on the first sample so the sequence length differs."""
    from m6_fashion.models.sequence_layout import build_model_inputs, crop_patch

    cfg = pipe.transformer.config
    b = tokens.shape[0]
    flat = tokens.reshape(b, cfg.num_image_tokens, -1).clone()
    gen = torch.Generator().manual_seed(2)
    masked = torch.rand(b, cfg.num_image_tokens, generator=gen) < mask_ratio
    flat[masked] = cfg.codebook_size
    conditions = None
    if with_condition and cfg.max_condition_tokens >= 4:
        grid = (getattr(cfg, "grid_height", None) or cfg.grid_size, getattr(cfg, "grid_width", None) or cfg.grid_size)
        side = max(1, min(min(grid) // 4, int(cfg.max_condition_tokens**0.5)))
        conditions = [[crop_patch(tokens[0], (0, 0, side, side), grid)]] + [None] * (b - 1)
    text_ids = pipe.encode_prompt(list(prompts)[:b] + [""] * max(0, b - len(prompts)))
    return build_model_inputs(cfg, text_ids, flat, conditions)


# ---------------------------------------------------------------------------------------------- bundle
def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _save_tokenizer(tokenizer, path: str) -> None:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise ValueError(f"the pipeline's tokenizer ({type(tokenizer).__name__}) is not a fast tokenizer; the runtime needs tokenizer.json")
    backend.save(path)


def bundle_canvases(pipe, files: Dict[str, str]) -> Dict[str, int]:
    """``{decoder file key: side of the square it paints}`` (the longest side of the canvas for a non-square
    grid): ``image_decoder`` -> ``sample_size``, and ``image_decoder_hr`` -> ``decoder_hr``'s side when the bundle
    has that graph (then ``pipe`` must have it)."""
    sides = pipe.canvas_sides()  # [sample_size] or [sample_size, decoder_hr side]
    if (HR_DECODER in files) != (len(sides) > 1):
        raise ValueError(
            f"the bundle files ({sorted(files)}) and the pipeline's canvases {sides} disagree: export "
            f"{HR_DECODER_FILE} exactly when the pipeline has decoder_hr"
        )
    canvases = {"image_decoder": int(sides[0])}
    if len(sides) > 1:
        canvases[HR_DECODER] = int(sides[1])
    return canvases


def bundle_format_version(pipe) -> int:
    """The bundle format a pipeline is written in: `BUNDLE_FORMAT_VERSION` (4) for a square token grid,
    `NONSQUARE_FORMAT_VERSION` (5) for a non-square one (runtimes before 0.4 refuse it by its version instead of
    misreading its grid)."""
    rows, cols = pipe.transformer.config.grid_shape
    return BUNDLE_FORMAT_VERSION if rows == cols else NONSQUARE_FORMAT_VERSION


def bundle_config(pipe, files: Dict[str, str], opset: int) -> dict:
    """The ``bundle.json`` content for a pipeline (geometry, canvases and default output size, special tokens,
    scheduler, files). A non-square grid adds ``grid_height``, ``grid_width``, ``sample_height`` and
    ``sample_width`` to the geometry (format 5); a square one writes exactly the format 4 keys."""
    tcfg = pipe.transformer.config
    itok = pipe.image_tokenizer
    sched = {k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_")}
    grid = tuple(tcfg.grid_shape)
    mismatches = validation.component_mismatches(
        grid_size=tcfg.grid_size, codebook_size=tcfg.codebook_size, num_groups=tcfg.num_groups, vocab_size=tcfg.vocab_size,
        mask_code=sched.get("mask_token_id"), tokenizer_grid_size=itok.grid_size,
        tokenizer_codebook_size=itok.config.codebook_size, tokenizer_num_groups=itok.num_token_groups,
        num_image_tokens=tcfg.num_image_tokens, grid_shape=grid, tokenizer_grid_shape=tokenizer_grid_shape(itok),
    )
    if mismatches:
        raise ValueError("the pipeline's parts do not fit together: " + "; ".join(mismatches))
    version = bundle_format_version(pipe)
    config = {
        "format": BUNDLE_FORMAT,
        "format_version": version,
        "opset": opset,
        "geometry": {
            "sample_size": int(itok.config.sample_size),
            "grid_size": int(tcfg.grid_size),
            "num_groups": int(tcfg.num_groups),
            "codebook_size": int(tcfg.codebook_size),
            "num_image_tokens": int(tcfg.num_image_tokens),
            "max_text_length": int(tcfg.max_text_length),
            "max_condition_tokens": int(tcfg.max_condition_tokens),
            "max_position_embeddings": int(tcfg.max_position_embeddings),
            "vocab_size": int(tcfg.vocab_size),
        },
        "canvases": bundle_canvases(pipe, files),
        "default_size": {"height": int(pipe.default_size[0]), "width": int(pipe.default_size[1])},
        "image_grid_max": image_grid_max(itok),
        "special_token_ids": {k: int(v) for k, v in tcfg.special_token_ids.items()},
        "scheduler": sched,
        "files": files,
    }
    if version == NONSQUARE_FORMAT_VERSION:
        sh, sw = _sample_shape(itok)
        config["geometry"].update(grid_height=grid[0], grid_width=grid[1], sample_height=int(sh), sample_width=int(sw))
    return config


def with_decoder_hr(pipe, decoder_hr=None, include_hr: bool = True):
    """The pipeline whose decoders the bundle holds.

    ``decoder_hr``: a ``StyleDecoder`` or its folder, replacing the pipeline's own (if any); ``include_hr=False``
    leaves the high-resolution decoder out (a bundle of ``sample_size`` outputs only). Returns ``pipe`` itself
    when nothing changes, else a new pipeline of the same components (checked by the pipeline's constructor:
    same latent channels, a larger canvas painted from the same grid).
    """
    if decoder_hr is not None and not include_hr:
        raise ValueError("pass either decoder_hr (export this high-resolution decoder) or include_hr=False (leave it out), not both")
    if isinstance(decoder_hr, (str, os.PathLike)):
        from m6_fashion import StyleDecoder

        folder = os.fspath(decoder_hr)
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise FileNotFoundError(f"{folder!r} is not a StyleDecoder folder (no config.json); pass e.g. PIPELINE_DIR/decoder_hr")
        decoder_hr = StyleDecoder.from_pretrained(folder, use_safetensors=True)
    current = getattr(pipe, "decoder_hr", None)
    wanted = decoder_hr if decoder_hr is not None else (current if include_hr else None)
    if wanted is current:
        return pipe
    new = type(pipe)(image_tokenizer=pipe.image_tokenizer, decoder=pipe.decoder, transformer=pipe.transformer,
                     tokenizer=pipe.tokenizer, scheduler=pipe.scheduler, decoder_hr=wanted)
    new.set_progress_bar_config(disable=True)
    return new


def _export_pipeline(model_dir: Optional[str], pipe, decoder_hr, include_hr: bool):
    """The pipeline to export (loaded from ``model_dir`` when ``pipe`` is None), with the chosen ``decoder_hr``,
    every component in float32 and eval mode (the graphs are traced in float32)."""
    if pipe is None:
        from m6_fashion import M6FashionPipeline

        if model_dir is not None and not os.path.isfile(os.path.join(model_dir, "model_index.json")):
            raise FileNotFoundError(f"{model_dir!r} is not a pipeline folder (no model_index.json)")
        pipe = M6FashionPipeline.from_pretrained(model_dir)
        pipe.set_progress_bar_config(disable=True)
    pipe = with_decoder_hr(pipe, decoder_hr, include_hr)
    for comp in (pipe.image_tokenizer, pipe.decoder, pipe.transformer, getattr(pipe, "decoder_hr", None)):
        if comp is None:
            continue
        if comp.dtype != torch.float32:
            comp.to(torch.float32)
        comp.eval()
    return pipe


@contextlib.contextmanager
def _stage(report: dict, key: str, message: str, log: Callable[[str], None], bar):
    """Times the block into ``report["seconds"][key]``, then logs ``"{message} ({seconds:.1f} s)"`` and advances ``bar``."""
    t0 = time.perf_counter()
    yield
    report["seconds"][key] = time.perf_counter() - t0
    log(f"{message} ({report['seconds'][key]:.1f} s)")
    bar.update(1)


def _remove_stale(out_dir: str, names: Sequence[str]) -> None:
    """Deletes files of an earlier export into ``out_dir`` that this export may not write."""
    for name in names:
        if os.path.exists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))


def _export_graphs(pipe, out_dir: str, opset: int, report: dict, log: Callable[[str], None], bar) -> Tuple[Dict[str, str], List[str]]:
    """Writes the float32 graphs: encoder, decoder(s), the transformer pass and, for an isolated prefix, its split.
    Returns ``(files, transformer_graphs)``: bundle file key -> file name, and the paths of the float32 transformer
    graphs (they share one weight file)."""
    files = dict(FILES)
    with _stage(report, "image_encoder", f"exported {FILES['image_encoder']}", log, bar):
        export_image_encoder(pipe.image_tokenizer, os.path.join(out_dir, FILES["image_encoder"]), opset)
    with _stage(report, "image_decoder", f"exported {FILES['image_decoder']}", log, bar):
        export_image_decoder(pipe.image_tokenizer, pipe.decoder, os.path.join(out_dir, FILES["image_decoder"]), opset)
    hr = getattr(pipe, "decoder_hr", None)
    if hr is not None:
        with _stage(report, HR_DECODER, f"exported {HR_DECODER_FILE}", log, bar):
            export_image_decoder(pipe.image_tokenizer, hr, os.path.join(out_dir, HR_DECODER_FILE), opset)
            files[HR_DECODER] = HR_DECODER_FILE
    else:
        _remove_stale(out_dir, [HR_DECODER_FILE])

    path = os.path.join(out_dir, FILES["transformer"])
    with _stage(report, "transformer", f"exported {FILES['transformer']}", log, bar):
        export_transformer(pipe.transformer, path, opset)
    graphs = [path]
    _remove_stale(out_dir, [*SPLIT_FILES.values(), TARGET_INT8_FILE, INT8_FILE, WEIGHTS_FILE, INT8_WEIGHTS_FILE])
    if pipe.transformer.config.prefix_attention == "isolated":
        split = {k: os.path.join(out_dir, v) for k, v in SPLIT_FILES.items()}
        with _stage(report, "transformer_split", f"exported {', '.join(SPLIT_FILES.values())}", log, bar):
            export_transformer_split(pipe.transformer, split["transformer_prefix"], split["transformer_target"], opset)
        files.update(SPLIT_FILES)
        graphs += list(split.values())
    return files, graphs


def _quantize_graphs(out_dir: str, files: Dict[str, str], report: dict, log: Callable[[str], None], bar) -> List[str]:
    """Writes the int8 transformer graphs (the pass, and the split's target when there is one) and adds them to
    ``files``; returns their paths (they share one weight file)."""
    pairs = [(FILES["transformer"], INT8_FILE, "transformer_int8")]
    if "transformer_target" in files:
        pairs.append((files["transformer_target"], TARGET_INT8_FILE, "transformer_target_int8"))
    with _stage(report, "transformer_int8", f"quantised {', '.join(dst for _, dst, _ in pairs)}", log, bar):
        for src, dst, key in pairs:
            quantize_transformer_int8(os.path.join(out_dir, src), os.path.join(out_dir, dst))
            files[key] = dst
    return [os.path.join(out_dir, dst) for _, dst, _ in pairs]


def _pack_bundle(pipe, out_dir: str, files: Dict[str, str], graphs: List[str], int8_graphs: List[str], opset: int,
                 report: dict) -> None:
    """Shared weight files, ``tokenizer.json`` and ``bundle.json`` (with the sha256 of every file); fills
    ``report["weights"]``, ``report["files"]`` and ``report["shapes"]``."""
    # the transformer graphs of one precision hold the same weights: one shared file each
    report["weights"] = {"transformer": share_weights(graphs, WEIGHTS_FILE)}
    files["transformer_weights"] = WEIGHTS_FILE
    if int8_graphs:
        report["weights"]["transformer_int8"] = share_weights(int8_graphs, INT8_WEIGHTS_FILE)
        files["transformer_int8_weights"] = INT8_WEIGHTS_FILE

    _save_tokenizer(pipe.tokenizer, os.path.join(out_dir, TOKENIZER_FILE))
    files["tokenizer"] = TOKENIZER_FILE
    config = bundle_config(pipe, files, opset)
    config["sha256"] = {key: _sha256(os.path.join(out_dir, name)) for key, name in files.items()}
    with open(os.path.join(out_dir, BUNDLE_JSON), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    report["files"] = {k: os.path.join(out_dir, v) for k, v in files.items()}
    report["shapes"] = _graph_shapes(out_dir, files)


def _graph_shapes(out_dir: str, files: Dict[str, str]) -> Dict[str, Dict[str, list]]:
    """``{graph key: {input/output name: [dim, ...]}}`` of the float32 graphs in ``files``; a dim is its symbolic
    name (a dynamic axis, e.g. ``"batch"``) or its size."""
    import onnx

    shapes = {}
    for key in [k for k in (*FILES, HR_DECODER, *SPLIT_FILES) if k in files]:
        m = onnx.load(os.path.join(out_dir, files[key]), load_external_data=False)
        shapes[key] = {
            v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(m.graph.input) + list(m.graph.output)
        }
    return shapes


def _export_stages(pipe, int8: bool, parity: bool) -> int:
    """Steps of the progress bar: encoder, decoder(s), transformer (and its split), int8, packing, parity."""
    split = pipe.transformer.config.prefix_attention == "isolated"
    return 4 + (getattr(pipe, "decoder_hr", None) is not None) + split + int(int8) + int(parity)


def export_bundle(
    model_dir: Optional[str],
    out_dir: str,
    opset: int = DEFAULT_OPSET,
    int8: bool = False,
    parity: bool = True,
    parity_images: Optional[Sequence] = None,
    parity_batch: int = 3,
    pipe=None,
    log: Optional[Callable[[str], None]] = None,
    decoder_hr=None,
    include_hr: bool = True,
) -> dict:
    """Pipeline folder (or an already loaded ``pipe``) -> runtime bundle in ``out_dir``.

    The pipeline's ``decoder_hr`` (or ``decoder_hr``, a ``StyleDecoder`` or its folder, when given) is exported
    as ``image_decoder_hr.onnx``; ``include_hr=False`` leaves it out. Returns a report ``{"files": ...,
    "shapes": ..., "parity": ..., "seconds": ...}``. With ``parity`` each graph is compared with PyTorch at
    ``parity_batch`` (must differ from the export batch, 2) on ``parity_images`` (PIL images; random pixels when
    none) and raises ``AssertionError`` past the tolerances.

    Progress: a bar over the export steps (``diffusers.utils.logging.disable_progress_bar()`` hides it) and one
    line per written graph and parity result through ``log`` (default: this module's logger at INFO level, a
    child of diffusers' logger, so ``diffusers.utils.logging.set_verbosity_info()`` shows them).
    """
    if parity and parity_batch == EXPORT_BATCH:
        raise ValueError(f"parity_batch must differ from the export example's batch ({EXPORT_BATCH}) to catch a fixed batch axis")
    log = logger.info if log is None else log
    pipe = _export_pipeline(model_dir, pipe, decoder_hr, include_hr)
    os.makedirs(out_dir, exist_ok=True)
    report = {"files": {}, "shapes": {}, "parity": {}, "seconds": {}}

    with diffusers_logging.tqdm(total=_export_stages(pipe, int8, parity), desc="exporting ONNX bundle", unit="step") as bar:
        files, graphs = _export_graphs(pipe, out_dir, opset, report, log, bar)
        int8_graphs = _quantize_graphs(out_dir, files, report, log, bar) if int8 else []
        _pack_bundle(pipe, out_dir, files, graphs, int8_graphs, opset, report)
        bar.update(1)
        if parity:
            bar.set_postfix_str("parity check")
            report["parity"] = run_parity(pipe, out_dir, parity_images, batches=(parity_batch,), int8=int8)
            for line in format_parity(report["parity"]):
                log(line)
            bar.update(1)
    return report


@torch.no_grad()
def run_parity(pipe, bundle_dir: str, images=None, batches: Sequence[int] = (1, 3), prompts: Optional[Sequence[str]] = None,
               int8: bool = False, strict: bool = True) -> Dict[str, list]:
    """ONNX Runtime vs PyTorch for the graphs at each batch size; raises past the tolerances if ``strict``.

    ``image_decoder_hr`` is compared with the pipeline's ``decoder_hr`` when both the pipeline and the bundle
    have it (same pixel tolerance as ``image_decoder``).
    """
    s = _sample_shape(pipe.image_tokenizer)
    prompts = list(prompts or ["Men Navy Blue Casual Shirt", "Women Pink Handbag", "Unisex Black Sports Shoes", "Girls Red Dress"])
    out = {"image_encoder": [], "image_decoder": [], "transformer": []}
    hr_path = os.path.join(bundle_dir, HR_DECODER_FILE)
    hr = getattr(pipe, "decoder_hr", None)
    if hr is not None and os.path.isfile(hr_path):
        out[HR_DECODER] = []
    if int8 and os.path.isfile(os.path.join(bundle_dir, INT8_FILE)):
        out["transformer_int8"] = []
    split = {k: os.path.join(bundle_dir, v) for k, v in SPLIT_FILES.items()}
    if all(os.path.isfile(p) for p in split.values()):
        out["transformer_split"] = []
        if int8 and os.path.isfile(os.path.join(bundle_dir, TARGET_INT8_FILE)):
            out["transformer_split_int8"] = []
    for b in batches:
        pixels = _parity_pixels(images, s, b)
        out["image_encoder"].append(parity_image_encoder(os.path.join(bundle_dir, FILES["image_encoder"]), pipe.image_tokenizer, pixels))
        tokens = pipe.image_tokenizer.encode(pixels)
        out["image_decoder"].append(parity_image_decoder(os.path.join(bundle_dir, FILES["image_decoder"]), pipe.image_tokenizer, pipe.decoder, tokens))
        if HR_DECODER in out:
            out[HR_DECODER].append(parity_image_decoder(hr_path, pipe.image_tokenizer, hr, tokens))
        inputs = transformer_parity_inputs(pipe, tokens, (prompts * b)[:b])
        out["transformer"].append(parity_transformer(os.path.join(bundle_dir, FILES["transformer"]), pipe.transformer, inputs))
        if "transformer_int8" in out:
            out["transformer_int8"].append(parity_transformer(os.path.join(bundle_dir, INT8_FILE), pipe.transformer, inputs))
        if "transformer_split" in out:
            out["transformer_split"].append(
                parity_transformer_split(split["transformer_prefix"], split["transformer_target"], pipe.transformer, inputs))
        if "transformer_split_int8" in out:
            out["transformer_split_int8"].append(parity_transformer_split(
                split["transformer_prefix"], os.path.join(bundle_dir, TARGET_INT8_FILE), pipe.transformer, inputs))
    if strict:
        for r in out["image_encoder"]:
            if r["token_match"] < TOKEN_MATCH_MIN:
                raise AssertionError(f"image encoder token match {r['token_match']:.4f} < {TOKEN_MATCH_MIN} at batch {r['batch']}")
        for key in ("image_decoder", HR_DECODER):
            for r in out.get(key, []):
                if r["pixel_max_abs_diff"] > PIXEL_TOLERANCE:
                    raise AssertionError(f"{key} max abs diff {r['pixel_max_abs_diff']:.2e} > {PIXEL_TOLERANCE} at batch {r['batch']}")
        for key in ("transformer", "transformer_split"):
            for r in out.get(key, []):
                if r["logit_max_abs_diff"] > LOGIT_TOLERANCE or r["argmax_match"] < ARGMAX_MATCH_MIN:
                    raise AssertionError(
                        f"{key} max abs diff {r['logit_max_abs_diff']:.2e} (tolerance {LOGIT_TOLERANCE}), argmax match "
                        f"{r['argmax_match']:.4f} (minimum {ARGMAX_MATCH_MIN}) at batch {r['batch']}"
                    )
    return out


def format_parity(parity: Dict[str, list]) -> List[str]:
    lines = []
    for r in parity.get("image_encoder", []):
        lines.append(f"parity image_encoder batch {r['batch']}: token exact match {r['token_match']:.4%} (minimum {TOKEN_MATCH_MIN:.0%})")
    for key in ("image_decoder", HR_DECODER):
        for r in parity.get(key, []):
            lines.append(f"parity {key} batch {r['batch']}: pixel max abs diff {r['pixel_max_abs_diff']:.2e} (tolerance {PIXEL_TOLERANCE:.0e})")
    for key in ("transformer", "transformer_int8", "transformer_split", "transformer_split_int8"):
        for r in parity.get(key, []):
            tol = " (int8, not bounded)" if key.endswith("int8") else f" (tolerance {LOGIT_TOLERANCE:.0e})"
            lines.append(
                f"parity {key} batch {r['batch']} seq {r['seq_len']}: logit max abs diff {r['logit_max_abs_diff']:.2e}{tol}, "
                f"argmax match {r['argmax_match']:.4%}"
            )
    return lines


# ---------------------------------------------------------------------------------------------- CLI
@dataclass
class OnnxExportArguments:
    """The options of ``m6-fashion export onnx``."""

    model: Optional[str] = field(default=None, metadata={"help": "pipeline folder (default: the shipped model)"})
    out: str = field(kw_only=True, metadata={"help": "bundle folder to write (ONNX files, tokenizer.json, bundle.json)"})
    opset: int = field(default=DEFAULT_OPSET, metadata={"help": f"ONNX opset (>= {MIN_OPSET}, default {DEFAULT_OPSET})"})
    int8: bool = field(default=False, metadata={
        "help": "also write transformer.int8.onnx and transformer_target.int8.onnx (dynamic int8 quantisation)"})
    no_parity: bool = field(default=False, metadata={"help": "skip the ONNX Runtime vs PyTorch parity check"})
    parity_data: Optional[str] = field(default=None, metadata={
        "help": "Parquet file with an 'image' column for the parity check (e.g. the test split); default: random pixels"})
    parity_images: int = field(default=8, metadata={"help": "images read from --parity-data (default 8)"})
    parity_batch: int = field(default=3, metadata={"help": f"batch size of the parity check (must differ from {EXPORT_BATCH})"})
    report: Optional[str] = field(default=None, metadata={"help": "write the export/parity report as JSON here"})
    decoder_hr: Optional[str] = field(default=None, metadata={"metavar": "DECODER_DIR", "help": (
        "StyleDecoder folder of a high-resolution decoder to export as image_decoder_hr.onnx (default: the "
        "pipeline's decoder_hr, if it has one); the runtime then makes its larger output sizes")})
    no_decoder_hr: bool = field(default=False, metadata={
        "help": "leave the pipeline's decoder_hr out: a smaller bundle of sample_size outputs only"})

    def __post_init__(self):
        if self.decoder_hr is not None and self.no_decoder_hr:  # argparse's wording for a mutually exclusive pair
            raise ValueError("argument --no-decoder-hr: not allowed with argument --decoder-hr")


def build_parser():
    """The ``HfArgumentParser`` of :class:`OnnxExportArguments` (help without argparse's appended defaults)."""
    from transformers import HfArgumentParser

    return HfArgumentParser(
        OnnxExportArguments, prog="m6-fashion export onnx", formatter_class=argparse.HelpFormatter,
        description="Export an M6-Fashion pipeline folder to ONNX and pack the torch-free runtime bundle.",
    )


@contextlib.contextmanager
def _progress_lines():
    """The command line shows the export's INFO lines (unless DIFFUSERS_VERBOSITY says otherwise), written above
    the progress bar instead of through it."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    level = logger.level
    if "DIFFUSERS_VERBOSITY" not in os.environ:
        logger.setLevel(logging.INFO)
    try:
        with logging_redirect_tqdm(loggers=[logging.getLogger("diffusers")]):
            yield
    finally:
        logger.setLevel(level)


def main(argv: Optional[List[str]] = None) -> dict:
    (args,) = parse_arguments(build_parser(), argv)
    if args.opset < MIN_OPSET:
        raise SystemExit(f"error: --opset must be >= {MIN_OPSET}; got {args.opset}")
    if args.parity_batch < 1 or args.parity_batch == EXPORT_BATCH:
        raise SystemExit(f"error: --parity-batch must be >= 1 and differ from the export batch {EXPORT_BATCH}; got {args.parity_batch}")
    if args.model is not None and not os.path.isfile(os.path.join(args.model, "model_index.json")):
        raise SystemExit(f"error: --model {args.model!r} is not a pipeline folder (no model_index.json)")
    if args.decoder_hr is not None and not os.path.isfile(os.path.join(args.decoder_hr, "config.json")):
        raise SystemExit(f"error: --decoder-hr {args.decoder_hr!r} is not a StyleDecoder folder (no config.json); "
                         "pass e.g. PIPELINE_DIR/decoder_hr")
    images = None
    if args.parity_data and not args.no_parity:
        try:
            images = load_parity_images(args.parity_data, args.parity_images)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"error: {e}")
    try:
        with _progress_lines():
            report = export_bundle(args.model, args.out, opset=args.opset, int8=args.int8, parity=not args.no_parity,
                                   parity_images=images, parity_batch=args.parity_batch, decoder_hr=args.decoder_hr,
                                   include_hr=not args.no_decoder_hr)
    except AssertionError as e:
        raise SystemExit(f"error: parity check failed: {e}")
    except ValueError as e:  # e.g. a --decoder-hr that does not fit the pipeline
        raise SystemExit(f"error: {e}")
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=2)
    print(f"bundle written to {args.out}")
    return report


if __name__ == "__main__":
    main()
