"""Builds TensorRT engines from a runtime bundle and checks them against ONNX Runtime.

    python -m m6_fashion.export.build_tensorrt --bundle BUNDLE_DIR   (or python conversion/build_tensorrt.py ...)
        [--model PIPELINE_DIR] [--out ENGINE_DIR] \
        [--precision fp16|fp32] [--min-batch 1 --opt-batch 8 --max-batch 16] \
        [--parity-data path/to/test.parquet] [--parity-batches 1 5]

Needs an NVIDIA GPU, the ``tensorrt`` Python package and a CUDA build of PyTorch (used for the device
buffers). On a machine without them the script stops at once with a message saying what is missing.

Engines (``image_encoder.plan``, ``image_decoder.plan``, ``transformer.plan``, and ``image_decoder_hr.plan``
when the bundle has the high-resolution decoder that paints the default output) get one optimisation profile
each: batch ``min/opt/max`` and, for the transformer, sequence length from the shortest (no condition) to the
longest (``max_condition_tokens``) layout, optimal at the shortest. The image engines are optimal at the
model's grid (``grid`` x ``grid`` tokens, ``S`` x ``S`` pixels; for a non-square model, bundle format 5,
``grid_height`` x ``grid_width`` and ``sample_height`` x ``sample_width``) and take grids up to the bundle's
``image_grid_max`` (the wide outpainting canvases, each side up to twice the model's); the transformer's target
has ``num_image_tokens`` (rows x cols) positions either way.

Precision: ``fp32`` builds from the bundle's float32 graphs. ``fp16`` uses the FP16 builder flag on
TensorRT 10 (weak typing); TensorRT 11 removed it (networks are strongly typed), so there the graphs
are re-exported in float16 from ``--model`` (the codebook search stays float32) and built as they are.

Parity is checked on indices, not floats, against ONNX Runtime (CPU, the bundle's float32 graphs):
encoder tokens (exact-match rate), transformer logits (argmax agreement) and decoded images (uint8
difference). The report goes to ``ENGINE_DIR/tensorrt.json``; the exit status is 1 when an agreement
falls under ``--min-token-match`` / ``--min-argmax-match``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from m6_fashion_core.outpainting import image_grid_max_shape

from . import export_onnx as ex

ENGINE_FILES = {"image_encoder": "image_encoder.plan", "image_decoder": "image_decoder.plan", "transformer": "transformer.plan"}
HR_ENGINE_FILE = "image_decoder_hr.plan"  # built when the bundle has ex.HR_DECODER
MISSING_TENSORRT = (
    "TensorRT is not installed (the `tensorrt` Python package could not be imported). build_tensorrt.py needs "
    "an NVIDIA GPU with a CUDA driver and `pip install tensorrt` (Linux x86_64/aarch64); it cannot run on a "
    "CPU-only machine. The ONNX bundle itself runs anywhere with onnxruntime."
)


class TensorRTUnavailableError(RuntimeError):
    """TensorRT (or a CUDA device) is not available on this machine."""


def require_tensorrt():
    """Imports ``tensorrt`` and checks for a CUDA device; raises :class:`TensorRTUnavailableError` otherwise."""
    try:
        import tensorrt as trt  # noqa: F401
    except ImportError as e:
        raise TensorRTUnavailableError(f"{MISSING_TENSORRT} ({e})") from None
    try:
        import torch
    except ImportError:
        raise TensorRTUnavailableError("build_tensorrt.py uses PyTorch (CUDA build) for device buffers; install torch") from None
    if not torch.cuda.is_available():
        raise TensorRTUnavailableError("TensorRT is installed but no CUDA device is visible (torch.cuda.is_available() is False)")
    return trt


def _trt_major(trt) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except ValueError:
        return 0


def weak_fp16_available(trt) -> bool:
    """True when the builder still offers the FP16 flag (TensorRT 10 and older)."""
    return hasattr(trt.BuilderFlag, "FP16")


# ---------------------------------------------------------------------------------------------- build
SUPPORTED_FORMAT_VERSIONS = (ex.BUNDLE_FORMAT_VERSION, ex.NONSQUARE_FORMAT_VERSION)  # square and non-square grids


def geometry_shapes(geo: dict) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """``((sample_height, sample_width), (grid_height, grid_width))`` of a bundle geometry; a square bundle (no such
    keys) gives ``((S, S), (g, g))``."""
    s, g = geo["sample_size"], geo["grid_size"]
    return (geo.get("sample_height", s), geo.get("sample_width", s)), (geo.get("grid_height", g), geo.get("grid_width", g))


def engine_files(bundle_cfg: dict) -> Dict[str, str]:
    """``{component: engine file}`` for a bundle: :data:`ENGINE_FILES`, plus ``image_decoder_hr`` when the bundle
    has that graph."""
    files = dict(ENGINE_FILES)
    if ex.HR_DECODER in bundle_cfg.get("files", {}):
        files[ex.HR_DECODER] = HR_ENGINE_FILE
    return files


def decoder_keys(files: Dict[str, str]) -> List[str]:
    """The image decoders among :func:`engine_files`: ``image_decoder`` and, if any, ``image_decoder_hr``."""
    return [k for k in files if k.startswith("image_decoder")]


def grid_max_shape(bundle_cfg: dict) -> Tuple[int, int]:
    """``(rows, cols)`` of the largest token grid the bundle's image graphs take
    (``m6_fashion_core.outpainting.image_grid_max_shape``, as the runtime reads it); the model's grid when the
    bundle records no ``image_grid_max``."""
    geo = bundle_cfg["geometry"]
    (_, grid), top = geometry_shapes(geo), int(bundle_cfg.get("image_grid_max") or 0)
    return image_grid_max_shape(grid, geo["grid_size"], top) if top else grid


def profiles_for(bundle_cfg: dict, min_batch: int, opt_batch: int, max_batch: int) -> Dict[str, Dict[str, Tuple[tuple, tuple, tuple]]]:
    """``{component: {input: (min_shape, opt_shape, max_shape)}}`` from ``bundle.json``: the image engines from
    the model's grid (``grid_height`` x ``grid_width`` tokens, ``sample_height`` x ``sample_width`` pixels; the
    square's sides for a square model), also optimal there, up to :func:`grid_max_shape`; one profile per
    component of :func:`engine_files`."""
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= min_batch <= opt_batch <= max_batch; got {min_batch}, {opt_batch}, {max_batch}")
    geo = bundle_cfg["geometry"]
    (sh, sw), (gr, gc), m = *geometry_shapes(geo), geo["num_groups"]
    (tr_, tc), cell = grid_max_shape(bundle_cfg), sh // gr
    short = geo["max_text_length"] + 2 + geo["num_image_tokens"]
    long = short + geo["max_condition_tokens"]
    b = (min_batch, opt_batch, max_batch)
    tr = {}
    for name in ex.TRANSFORMER_INPUTS:
        extra = (m,) if name == "image_codes" else ()
        tr[name] = ((b[0], short) + extra, (b[1], short) + extra, (b[2], long) + extra)
    tokens = ((b[0], gr, gc, m), (b[1], gr, gc, m), (b[2], tr_, tc, m))
    profiles = {
        "image_encoder": {"pixel_values": ((b[0], 3, sh, sw), (b[1], 3, sh, sw), (b[2], 3, cell * tr_, cell * tc))},
        "image_decoder": {"tokens": tokens},
        "transformer": tr,
    }
    if ex.HR_DECODER in engine_files(bundle_cfg):
        profiles[ex.HR_DECODER] = {"tokens": tokens}
    return profiles


def build_engine(trt, onnx_path: str, engine_path: str, profile: Dict[str, Tuple[tuple, tuple, tuple]], fp16_flag: bool,
                 workspace_gb: float = 4.0) -> float:
    """Parses ``onnx_path``, builds a serialized engine with one optimisation profile, writes it. Returns seconds."""
    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if _trt_major(trt) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    opt_profile = builder.create_optimization_profile()
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    for name in names:
        if name not in profile:
            raise RuntimeError(f"{onnx_path}: input {name!r} has no optimisation profile (profiles: {sorted(profile)})")
        opt_profile.set_shape(name, *profile[name])
    config.add_optimization_profile(opt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    with open(engine_path, "wb") as f:
        f.write(serialized)
    return time.perf_counter() - t0


class TRTRunner:
    """Runs a serialized engine on torch CUDA buffers; ``run({name: np.ndarray}) -> {name: np.ndarray}``."""

    def __init__(self, trt, engine_path: str):
        import torch

        self.torch = torch
        self.trt = trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        with open(engine_path, "rb") as f:
            self.engine = self.runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise RuntimeError(f"could not deserialize {engine_path} (built with another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in self.names if n not in self.inputs]

    def _torch_dtype(self, trt_dtype):
        t, trt = self.torch, self.trt
        table = {trt.float32: t.float32, trt.float16: t.float16, trt.int32: t.int32, trt.int8: t.int8, trt.bool: t.bool}
        if hasattr(trt, "int64"):
            table[trt.int64] = t.int64
        if trt_dtype not in table:
            raise RuntimeError(f"unsupported engine tensor dtype {trt_dtype}")
        return table[trt_dtype]

    def run(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        torch = self.torch
        keep = []
        for name in self.inputs:
            if name not in feed:
                raise KeyError(f"missing engine input {name!r}")
            dtype = self._torch_dtype(self.engine.get_tensor_dtype(name))
            t = torch.from_numpy(np.ascontiguousarray(feed[name])).to("cuda", dtype)
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        out = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            t = torch.empty(shape, dtype=self._torch_dtype(self.engine.get_tensor_dtype(name)), device="cuda")
            out[name] = t
            self.context.set_tensor_address(name, t.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return {k: v.float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy() for k, v in out.items()}


# ---------------------------------------------------------------------------------------------- parity
def _ort(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _layout_inputs(bundle_cfg: dict, tokens: np.ndarray, prompts_ids: List[List[int]], mask_ratio: float = 0.5) -> Dict[str, np.ndarray]:
    """Transformer inputs (layout of m6_fashion.models.sequence_layout) with a random half of the tokens masked."""
    import torch
    from types import SimpleNamespace

    from m6_fashion.models.sequence_layout import build_model_inputs

    geo, special = bundle_cfg["geometry"], bundle_cfg["special_token_ids"]
    cfg = SimpleNamespace(**geo, **{f"{k}_token_id": v for k, v in special.items()})
    b = tokens.shape[0]
    flat = tokens.reshape(b, geo["num_image_tokens"], -1).copy()
    rng = np.random.default_rng(0)
    flat[rng.random((b, geo["num_image_tokens"])) < mask_ratio] = geo["codebook_size"]
    inputs = build_model_inputs(cfg, prompts_ids, torch.from_numpy(flat))
    return {k: v.numpy() for k, v in inputs.items()}


def check_parity(trt, bundle_dir: str, engine_dir: str, bundle_cfg: dict, images, batches: Sequence[int]) -> Dict[str, list]:
    """TensorRT vs ONNX Runtime (CPU, float32) at each batch size, compared on indices."""
    from tokenizers import Tokenizer

    from m6_fashion.image_processing import preprocess

    (sh, sw), _ = geometry_shapes(bundle_cfg["geometry"])
    size = sh if sh == sw else (sh, sw)  # what the image encoder reads (preprocess takes a side or (height, width))
    tok = Tokenizer.from_file(os.path.join(bundle_dir, bundle_cfg["files"]["tokenizer"]))
    prompts = ["Men Navy Blue Casual Shirt", "Women Pink Handbag", "Unisex Black Sports Shoes", "Girls Red Dress"]
    files = engine_files(bundle_cfg)
    runners = {k: TRTRunner(trt, os.path.join(engine_dir, v)) for k, v in files.items()}
    sessions = {k: _ort(os.path.join(bundle_dir, bundle_cfg["files"][k])) for k in files}
    report = {k: [] for k in files}
    for b in batches:
        if images:
            pixels = preprocess((list(images) * b)[:b], size).numpy()
        else:
            pixels = np.random.default_rng(b).uniform(-1, 1, (b, 3, sh, sw)).astype(np.float32)
        ref_tok = sessions["image_encoder"].run(None, {"pixel_values": pixels})[0]
        got_tok = runners["image_encoder"].run({"pixel_values": pixels})["tokens"].astype(np.int64)
        report["image_encoder"].append({"batch": b, "token_match": float((ref_tok == got_tok).mean())})

        to_u8 = lambda x: np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.int16)  # noqa: E731
        for key in decoder_keys(files):
            ref_pix = sessions[key].run(None, {"tokens": ref_tok})[0]
            got_pix = runners[key].run({"tokens": ref_tok})["pixel_values"]
            diff = np.abs(to_u8(ref_pix) - to_u8(got_pix))
            report[key].append({"batch": b, "shape": list(got_pix.shape), "uint8_max_diff": int(diff.max()),
                                "uint8_mean_diff": float(diff.mean()), "finite": bool(np.isfinite(got_pix).all())})

        ids = [e.ids[: bundle_cfg["geometry"]["max_text_length"]] for e in tok.encode_batch((prompts * b)[:b], add_special_tokens=False)]
        feed = _layout_inputs(bundle_cfg, ref_tok, ids)
        ref_log = sessions["transformer"].run(None, feed)[0]
        got_log = runners["transformer"].run(feed)["logits"]
        report["transformer"].append({"batch": b, "seq_len": int(feed["input_ids"].shape[1]),
                                      "argmax_match": float((ref_log.argmax(-1) == got_log.argmax(-1)).mean()),
                                      "finite": bool(np.isfinite(got_log).all())})
    return report


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="build_tensorrt.py", description="Build TensorRT engines from an M6-Fashion runtime bundle and check parity.")
    p.add_argument("--bundle", required=True, help="bundle folder written by export_onnx.py")
    p.add_argument("--model", default=None, help="pipeline folder; needed for --precision fp16 on TensorRT >= 11 (float16 re-export)")
    p.add_argument("--out", default=None, help="engine folder (default: BUNDLE/tensorrt)")
    p.add_argument("--precision", choices=["fp16", "fp32"], default="fp16")
    p.add_argument("--min-batch", type=int, default=1)
    p.add_argument("--opt-batch", type=int, default=8)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--workspace-gb", type=float, default=4.0)
    p.add_argument("--parity-data", default=None, help="Parquet file with an 'image' column (e.g. the test split); default: random pixels")
    p.add_argument("--parity-batches", type=int, nargs="+", default=[1, 5], help="batch sizes of the parity check (default 1 5)")
    p.add_argument("--min-token-match", type=float, default=0.95, help="minimum encoder token exact-match rate (default 0.95)")
    p.add_argument("--min-argmax-match", type=float, default=0.95, help="minimum transformer argmax agreement (default 0.95)")
    return p


def main(argv: Optional[List[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    try:
        trt = require_tensorrt()
    except TensorRTUnavailableError as e:
        raise SystemExit(f"error: {e}")
    cfg_path = os.path.join(args.bundle, ex.BUNDLE_JSON)
    if not os.path.isfile(cfg_path):
        raise SystemExit(f"error: {args.bundle!r} is not a bundle ({ex.BUNDLE_JSON} missing); run export_onnx.py first")
    with open(cfg_path) as f:
        bundle_cfg = json.load(f)
    if bundle_cfg.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
        raise SystemExit(f"error: bundle format version {bundle_cfg.get('format_version')!r} is not one of "
                         f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}; re-export the bundle")
    out = args.out or os.path.join(args.bundle, "tensorrt")
    os.makedirs(out, exist_ok=True)
    try:
        profiles = profiles_for(bundle_cfg, args.min_batch, args.opt_batch, args.max_batch)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    if any(b < args.min_batch or b > args.max_batch for b in args.parity_batches):
        raise SystemExit(f"error: --parity-batches must lie in [{args.min_batch}, {args.max_batch}]")

    files = engine_files(bundle_cfg)
    sources = {k: os.path.join(args.bundle, bundle_cfg["files"][k]) for k in files}
    fp16_flag = False
    if args.precision == "fp16":
        if weak_fp16_available(trt):
            fp16_flag = True
        else:
            if not args.model:
                raise SystemExit(
                    f"error: TensorRT {trt.__version__} builds strongly typed networks only (no FP16 builder flag); pass "
                    "--model PIPELINE_DIR so the graphs are re-exported in float16, or use --precision fp32"
                )
            from m6_fashion import M6FashionPipeline

            pipe = M6FashionPipeline.from_pretrained(args.model)
            if ex.HR_DECODER in files and getattr(pipe, "decoder_hr", None) is None:
                raise SystemExit(f"error: the bundle has {ex.HR_DECODER_FILE} but --model {args.model!r} has no decoder_hr; "
                                 "pass the pipeline the bundle was exported from")
            sources = ex.export_fp16_graphs(pipe, os.path.join(out, "onnx_fp16"), components=list(files))

    report = {"tensorrt_version": str(trt.__version__), "precision": args.precision, "fp16_builder_flag": fp16_flag,
              "profiles": {k: {n: [list(s) for s in v] for n, v in p.items()} for k, p in profiles.items()},
              "engines": {}, "build_seconds": {}}
    for key, name in files.items():
        path = os.path.join(out, name)
        report["build_seconds"][key] = build_engine(trt, sources[key], path, profiles[key], fp16_flag, args.workspace_gb)
        report["engines"][key] = name
        print(f"built {name} from {os.path.basename(sources[key])} in {report['build_seconds'][key]:.1f} s")

    images = ex.load_parity_images(args.parity_data, max(args.parity_batches)) if args.parity_data else None
    parity = check_parity(trt, args.bundle, out, bundle_cfg, images, args.parity_batches)
    report["parity"] = parity
    with open(os.path.join(out, "tensorrt.json"), "w") as f:
        json.dump(report, f, indent=2)
    failed = []
    for r in parity["image_encoder"]:
        print(f"parity image_encoder batch {r['batch']}: token exact match {r['token_match']:.4%}")
        if r["token_match"] < args.min_token_match:
            failed.append(f"encoder token match {r['token_match']:.4f} at batch {r['batch']}")
    for key in decoder_keys(files):
        for r in parity[key]:
            print(f"parity {key} batch {r['batch']} {tuple(r['shape'])}: uint8 max diff {r['uint8_max_diff']}, "
                  f"mean {r['uint8_mean_diff']:.3f}, finite {r['finite']}")
            if not r["finite"]:
                failed.append(f"{key} produced non-finite pixels at batch {r['batch']}")
    for r in parity["transformer"]:
        print(f"parity transformer batch {r['batch']} seq {r['seq_len']}: argmax match {r['argmax_match']:.4%}, finite {r['finite']}")
        if r["argmax_match"] < args.min_argmax_match or not r["finite"]:
            failed.append(f"transformer argmax match {r['argmax_match']:.4f} at batch {r['batch']}")
    if failed:
        raise SystemExit("error: TensorRT parity below the thresholds: " + "; ".join(failed))
    print(f"engines and report written to {out}")
    return report


if __name__ == "__main__":
    main()
