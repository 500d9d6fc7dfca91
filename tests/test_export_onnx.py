"""ONNX export of the three graphs, the runtime bundle, int8 quantisation and the TensorRT builder.

Most tests use a tiny randomly initialised pipeline (32 px images, 8x8x4 tokens, K=32) so the exports
take seconds; one slow test exports the shipped model. Parity is always checked at batch sizes other
than the export example's (2) on real test-split photos.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the TensorRT builder lives in conversion/ beside the package
    sys.path.insert(0, str(REPO_ROOT))

from conversion import build_tensorrt as bt  # noqa: E402
from m6_fashion.export import export_onnx as ex  # noqa: E402

# The tiny pipeline (`tiny_onnx_pipeline`), its bundles (`tiny_onnx_bundle`, `tiny_onnx_hr_bundle`), the shipped
# model's bundle (`shipped_onnx_bundle`) and the real test-split rows (`real_images`) are fixtures of conftest.py.


# ---------------------------------------------------------------------------------------------- tiny pipeline
def cfg_grid_max(bundle) -> int:
    return json.loads((bundle / ex.BUNDLE_JSON).read_text())["image_grid_max"]


def test_exported_graphs_have_dynamic_axes_and_pass_checker(tiny_onnx_bundle):
    import onnx

    transformer_axes = {name: [0, 1] for name in ex.TRANSFORMER_INPUTS}
    shapes = {
        "image_encoder": ex.check_onnx_file(str(tiny_onnx_bundle / ex.FILES["image_encoder"]), {"pixel_values": [0]}, {"tokens": [0]}),
        "image_decoder": ex.check_onnx_file(str(tiny_onnx_bundle / ex.FILES["image_decoder"]), {"tokens": [0]}, {"pixel_values": [0]}),
        "transformer": ex.check_onnx_file(str(tiny_onnx_bundle / ex.FILES["transformer"]), transformer_axes, {"logits": [0]}),
    }
    # the image graphs' grid sides are free too (wide outpainting canvases, bundle format 4): pixels are whole cells
    # of the grid sides (4 px each here); channels and codes per cell are fixed to the model's geometry
    enc, dec = shapes["image_encoder"], shapes["image_decoder"]
    assert enc["pixel_values"][1:] == [3, "4*grid_rows", "4*grid_cols"] and dec["tokens"][1:] == ["grid_rows", "grid_cols", 4]
    assert dec["pixel_values"][1:] == [3, "4*grid_rows", "4*grid_cols"]
    assert all(isinstance(d, str) for d in enc["tokens"][1:3]) and enc["tokens"][3] == 4
    assert cfg_grid_max(tiny_onnx_bundle) == 16  # 2x the 8x8 grid
    assert shapes["transformer"]["logits"][1:] == [64, 4, 32]
    assert shapes["transformer"]["image_codes"][2] == 4
    cfg = json.loads((tiny_onnx_bundle / ex.BUNDLE_JSON).read_text())
    for key, name in cfg["files"].items():
        if not name.endswith(".onnx"):
            continue
        model = onnx.load(str(tiny_onnx_bundle / name), load_external_data=False)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
        locations = {e.value for init in model.graph.initializer if init.data_location == onnx.TensorProto.EXTERNAL
                     for e in init.external_data if e.key == "location"}
        if key.startswith("transformer"):  # the transformer graphs of one precision share one weights file
            assert locations == {ex.INT8_WEIGHTS_FILE if key.endswith("int8") else ex.WEIGHTS_FILE}, key
        else:  # the image graphs keep their weights inside
            assert not locations, key
    assert not [p for p in os.listdir(tiny_onnx_bundle) if p.endswith(".data") or p.endswith(".tmp")]


def test_split_graphs_share_the_weights_and_have_dynamic_axes(tiny_onnx_pipeline, tiny_onnx_bundle):
    """transformer_prefix/target (the pass split at the prefix) read one copy of the weights of transformer.onnx."""
    cfg = json.loads((tiny_onnx_bundle / ex.BUNDLE_JSON).read_text())
    assert {"transformer_prefix", "transformer_target", "transformer_target_int8", "transformer_weights",
            "transformer_int8_weights"} <= set(cfg["files"])
    prefix = ex.check_onnx_file(str(tiny_onnx_bundle / ex.SPLIT_FILES["transformer_prefix"]),
                                {name: [0, 1] for name in ex.TRANSFORMER_INPUTS}, {"prefix_keys": [1, 3], "prefix_values": [1, 3]})
    target = ex.check_onnx_file(str(tiny_onnx_bundle / ex.SPLIT_FILES["transformer_target"]),
                                {"image_codes": [0], "prefix_keys": [1, 3], "prefix_mask": [0, 1]}, {"log_probs": [0]})
    assert prefix["prefix_keys"][0] == 2 and prefix["prefix_keys"][2] == 2  # layers, heads of the tiny model
    assert target["log_probs"][1:] == [64, 4, 32] and target["image_codes"][1:] == [64, 4]
    graphs = sum(os.path.getsize(tiny_onnx_bundle / cfg["files"][k]) for k in ("transformer", "transformer_prefix", "transformer_target"))
    weights = os.path.getsize(tiny_onnx_bundle / ex.WEIGHTS_FILE)
    full_alone = sum(p.numel() * 4 for p in tiny_onnx_pipeline.transformer.parameters())
    assert weights < 1.3 * full_alone and graphs < weights, (graphs, weights, full_alone)


def test_split_graphs_refuse_a_prefix_that_attends_to_the_target(tiny_onnx_pipeline):
    import copy

    full = copy.deepcopy(tiny_onnx_pipeline.transformer)
    full.config.prefix_attention = "full"
    with pytest.raises(ValueError, match="prefix_attention='isolated'"):
        ex.TransformerTargetGraph(full)


def test_parity_with_pytorch_at_two_batch_sizes_on_real_images(tiny_onnx_pipeline, tiny_onnx_bundle, real_images):
    rows = real_images[:8]
    images = [r["image"] for r in rows]
    parity = ex.run_parity(tiny_onnx_pipeline, str(tiny_onnx_bundle), images, batches=(1, 5), prompts=[r["text"] for r in rows],
                           strict=False)
    assert [r["batch"] for r in parity["image_encoder"]] == [1, 5]
    for r in parity["image_encoder"]:
        assert r["token_match"] >= ex.TOKEN_MATCH_MIN, r
    for r in parity["image_decoder"]:
        assert r["pixel_max_abs_diff"] <= ex.PIXEL_TOLERANCE, r
    for r in parity["transformer"] + parity["transformer_split"]:
        assert r["logit_max_abs_diff"] <= ex.LOGIT_TOLERANCE and r["argmax_match"] >= ex.ARGMAX_MATCH_MIN, r
    assert [r["batch"] for r in parity["transformer_split"]] == [1, 5]


def test_transformer_parity_at_another_sequence_length(tiny_onnx_pipeline, tiny_onnx_bundle):
    """No condition segment: the shortest layout (the export example had a 3-token condition)."""
    import torch

    from m6_fashion.models.sequence_layout import build_model_inputs

    cfg = tiny_onnx_pipeline.transformer.config
    gen = torch.Generator().manual_seed(3)
    codes = torch.randint(0, cfg.codebook_size + 1, (4, cfg.num_image_tokens, cfg.num_groups), generator=gen)
    inputs = build_model_inputs(cfg, tiny_onnx_pipeline.encode_prompt(["men shirt", "", "women red dress", "shoes"]), codes)
    assert inputs["input_ids"].shape[1] == cfg.max_text_length + 2 + cfg.num_image_tokens
    r = ex.parity_transformer(str(tiny_onnx_bundle / ex.FILES["transformer"]), tiny_onnx_pipeline.transformer, inputs)
    assert r["logit_max_abs_diff"] <= ex.LOGIT_TOLERANCE and r["argmax_match"] >= ex.ARGMAX_MATCH_MIN, r
    split = ex.parity_transformer_split(str(tiny_onnx_bundle / ex.SPLIT_FILES["transformer_prefix"]),
                                        str(tiny_onnx_bundle / ex.SPLIT_FILES["transformer_target"]), tiny_onnx_pipeline.transformer,
                                        inputs)
    assert split["logit_max_abs_diff"] <= ex.LOGIT_TOLERANCE and split["argmax_match"] >= ex.ARGMAX_MATCH_MIN, split


def test_check_onnx_file_catches_a_batch_fixed_by_the_exporter(tmp_path):
    """Without dynamic_shapes the exporter bakes the example's batch into the graph; the check must say so."""
    import torch

    class Net(torch.nn.Module):
        def forward(self, x):
            return x * 2 + 1

    path = str(tmp_path / "fixed.onnx")
    ex._export(Net(), (torch.ones(2, 3),), path, ["x"], ["y"], None, 18)
    with pytest.raises(ValueError, match="axis 0 of input 'x' is fixed to 2"):
        ex.check_onnx_file(path, {"x": [0]})
    with pytest.raises(ValueError, match="opset"):
        ex._export(Net(), (torch.ones(2, 3),), str(tmp_path / "old.onnx"), ["x"], ["y"], None, 17)


def test_bundle_json_and_tokenizer(tiny_onnx_pipeline, tiny_onnx_bundle):
    from tokenizers import Tokenizer

    cfg = json.loads((tiny_onnx_bundle / ex.BUNDLE_JSON).read_text())
    assert cfg["format"] == ex.BUNDLE_FORMAT and cfg["format_version"] == ex.BUNDLE_FORMAT_VERSION
    tcfg = tiny_onnx_pipeline.transformer.config
    assert cfg["geometry"] == {
        "sample_size": 32, "grid_size": 8, "num_groups": 4, "codebook_size": 32, "num_image_tokens": 64,
        "max_text_length": tcfg.max_text_length, "max_condition_tokens": 16,
        "max_position_embeddings": tcfg.max_position_embeddings, "vocab_size": tcfg.vocab_size,
    }
    assert cfg["special_token_ids"] == tcfg.special_token_ids
    assert cfg["scheduler"]["mask_token_id"] == 32 and cfg["scheduler"]["deterministic"] is True
    assert cfg["scheduler"]["mask_schedule"] == "smart" and cfg["scheduler"]["alpha"] == 0.8
    assert set(cfg["files"]) == {"image_encoder", "image_decoder", "transformer", "transformer_int8", "tokenizer",
                                 "transformer_prefix", "transformer_target", "transformer_target_int8",
                                 "transformer_weights", "transformer_int8_weights"}
    assert cfg["canvases"] == {"image_decoder": 32} and cfg["default_size"] == {"height": 32, "width": 32}
    for key, name in cfg["files"].items():
        assert ex._sha256(str(tiny_onnx_bundle / name)) == cfg["sha256"][key]
    tok = Tokenizer.from_file(str(tiny_onnx_bundle / cfg["files"]["tokenizer"]))
    captions = ["Turtle Check Men Navy Blue Shirt", "Puma Men Ferrari Vintage Black Polo T-shirt", "  ÉTÉ zzqx  ", ""]
    expected = tiny_onnx_pipeline.tokenizer(captions, add_special_tokens=False)["input_ids"]
    assert [e.ids for e in tok.encode_batch(captions, add_special_tokens=False)] == expected


def test_hr_decoder_graph_is_dynamic_and_recorded_in_bundle_json(tiny_onnx_hr_bundle):
    shapes = ex.check_onnx_file(str(tiny_onnx_hr_bundle / ex.HR_DECODER_FILE), {"tokens": [0]}, {"pixel_values": [0]})
    assert shapes["tokens"][1:] == ["grid_rows", "grid_cols", 4] and shapes["pixel_values"][1:] == [3, "16*grid_rows", "16*grid_cols"]
    cfg = json.loads((tiny_onnx_hr_bundle / ex.BUNDLE_JSON).read_text())
    assert cfg["files"][ex.HR_DECODER] == ex.HR_DECODER_FILE
    assert cfg["canvases"] == {"image_decoder": 32, "image_decoder_hr": 128}
    assert cfg["default_size"] == {"height": 128, "width": 96}  # the tiny model's 192x256
    assert cfg["geometry"]["grid_size"] == 8 and cfg["geometry"]["sample_size"] == 32
    assert ex._sha256(str(tiny_onnx_hr_bundle / ex.HR_DECODER_FILE)) == cfg["sha256"][ex.HR_DECODER]


def test_hr_decoder_parity_at_two_batch_sizes_on_real_images(tiny_onnx_pipeline, tiny_onnx_hr_bundle, real_images, make_tiny_decoder_hr):
    pipe = ex.with_decoder_hr(tiny_onnx_pipeline, make_tiny_decoder_hr())  # its own decoder_hr: changed below
    images = [r["image"] for r in real_images[:8]]
    parity = ex.run_parity(pipe, str(tiny_onnx_hr_bundle), images, batches=(1, 5), strict=True)
    assert [r["batch"] for r in parity[ex.HR_DECODER]] == [1, 5]
    for r in parity[ex.HR_DECODER]:
        assert r["pixel_max_abs_diff"] <= ex.PIXEL_TOLERANCE, r
    assert any(line.startswith("parity image_decoder_hr batch 5") for line in ex.format_parity(parity))
    # a different decoder_hr (other weights) fails the strict check: the comparison really uses the hr graph
    import torch

    with torch.no_grad():
        for p in pipe.decoder_hr.parameters():
            p.add_(0.5)
    with pytest.raises(AssertionError, match="image_decoder_hr max abs diff"):
        ex.run_parity(pipe, str(tiny_onnx_hr_bundle), images, batches=(1,), strict=True)


def test_with_decoder_hr_uses_the_pipelines_own_or_the_given_one(tiny_onnx_pipeline, make_tiny_decoder_hr, tmp_path):
    from m6_fashion import StyleDecoder

    assert ex.with_decoder_hr(tiny_onnx_pipeline) is tiny_onnx_pipeline  # none to export
    hr = make_tiny_decoder_hr()
    given = ex.with_decoder_hr(tiny_onnx_pipeline, hr)
    assert given.decoder_hr is hr and given.transformer is tiny_onnx_pipeline.transformer and given.default_size == (128, 96)
    assert ex.with_decoder_hr(given) is given  # the pipeline's own
    assert ex.with_decoder_hr(given, include_hr=False).decoder_hr is None  # left out
    hr.save_pretrained(str(tmp_path / "decoder_hr"))
    loaded = ex.with_decoder_hr(tiny_onnx_pipeline, str(tmp_path / "decoder_hr")).decoder_hr
    assert loaded.config.sample_size == 128
    with pytest.raises(FileNotFoundError, match="not a StyleDecoder folder"):
        ex.with_decoder_hr(tiny_onnx_pipeline, str(tmp_path))
    with pytest.raises(ValueError, match="not both"):
        ex.with_decoder_hr(tiny_onnx_pipeline, hr, include_hr=False)
    wrong = StyleDecoder(latent_channels=16, style_channels=8, mapping_layers=1, block_out_channels=(16, 8, 8, 8), layers_per_block=1, sample_size=128)
    with pytest.raises(ValueError, match="decoder_hr sample_size=128 but it paints 64"):
        ex.with_decoder_hr(tiny_onnx_pipeline, wrong)
    # bundle.json canvases follow the exported graphs; a mismatch is refused
    assert ex.bundle_canvases(given, {**ex.FILES, ex.HR_DECODER: ex.HR_DECODER_FILE}) == {"image_decoder": 32, "image_decoder_hr": 128}
    with pytest.raises(ValueError, match="disagree"):
        ex.bundle_canvases(given, dict(ex.FILES))


def test_int8_transformer_is_dynamic_and_close(tiny_onnx_pipeline, tiny_onnx_bundle):
    path = str(tiny_onnx_bundle / ex.INT8_FILE)
    ex.check_onnx_file(path, {name: [0, 1] for name in ex.TRANSFORMER_INPUTS}, {"logits": [0]})
    assert os.path.getsize(path) < os.path.getsize(tiny_onnx_bundle / ex.FILES["transformer"])
    import torch

    pixels = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    inputs = ex.transformer_parity_inputs(tiny_onnx_pipeline, tiny_onnx_pipeline.image_tokenizer.encode(pixels), ["men shirt", "women bag", "shoes"])
    r = ex.parity_transformer(path, tiny_onnx_pipeline.transformer, inputs)
    assert r["batch"] == 3
    assert r["argmax_match"] >= 0.5, r  # int8 is approximate; the shipped model's agreement is measured by the benchmark


def test_fp16_encoder_export_for_strongly_typed_tensorrt(tiny_onnx_pipeline, tmp_path):
    """TensorRT >= 11 needs float16 graphs: the encoder CNN in half precision, the codebook search in float32."""
    import onnx

    paths = ex.export_fp16_graphs(tiny_onnx_pipeline, str(tmp_path), components=["image_encoder"])
    assert set(paths) == {"image_encoder"}
    model = onnx.load(paths["image_encoder"])
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 pixels in
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT64  # int64 tokens out
    conv_weights = [i for i in model.graph.initializer if len(i.dims) == 4]
    assert conv_weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in conv_weights)
    # the codebook (4 groups x 32 codes x 4 channels, possibly stored transposed) stays float32
    codebook = [i for i in model.graph.initializer if sorted(i.dims) == [4, 4, 32]]
    assert codebook and all(i.data_type == onnx.TensorProto.FLOAT for i in codebook)
    # the original pipeline is untouched (float32)
    assert tiny_onnx_pipeline.transformer.dtype == tiny_onnx_pipeline.decoder.dtype == tiny_onnx_pipeline.image_tokenizer.dtype
    with pytest.raises(ValueError, match="unknown components"):
        ex.export_fp16_graphs(tiny_onnx_pipeline, str(tmp_path), components=["vae"])


def test_export_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit, match="not a pipeline folder"):
        ex.main(["--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="parity-batch"):
        ex.main(["--out", str(tmp_path / "b"), "--parity-batch", str(ex.EXPORT_BATCH)])
    with pytest.raises(SystemExit, match="opset"):
        ex.main(["--out", str(tmp_path / "b"), "--opset", "17"])
    with pytest.raises(SystemExit, match="parity data"):
        ex.main(["--out", str(tmp_path / "b"), "--parity-data", str(tmp_path / "missing.parquet")])
    with pytest.raises(SystemExit, match="not a StyleDecoder folder"):
        ex.main(["--out", str(tmp_path / "b"), "--decoder-hr", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit):  # argparse: not allowed with each other
        ex.main(["--out", str(tmp_path / "b"), "--decoder-hr", str(tmp_path), "--no-decoder-hr"])
    assert "not allowed with argument" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- shipped model
@pytest.mark.slow
def test_shipped_model_export_and_parity(shipped_onnx_bundle, real_images):
    from m6_fashion import M6FashionPipeline

    pipe = M6FashionPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    bundle = shipped_onnx_bundle
    rows = real_images[:8]
    images = [r["image"] for r in rows]
    parity = ex.run_parity(pipe, str(bundle), images, batches=(1, 5), prompts=[r["text"] for r in rows], strict=False)
    for r in parity["image_encoder"]:
        assert r["token_match"] >= ex.TOKEN_MATCH_MIN, r
    for r in parity["image_decoder"]:
        assert r["pixel_max_abs_diff"] <= ex.PIXEL_TOLERANCE, r
    for r in parity["transformer"]:
        assert r["logit_max_abs_diff"] <= ex.LOGIT_TOLERANCE and r["argmax_match"] >= ex.ARGMAX_MATCH_MIN, r
    for r in parity[ex.HR_DECODER]:  # the shipped default has decoder_hr (16x16 tokens -> 256 px)
        assert r["pixel_max_abs_diff"] <= ex.PIXEL_TOLERANCE, r
    cfg = json.loads((bundle / ex.BUNDLE_JSON).read_text())
    assert cfg["geometry"]["sample_size"] == 64 and cfg["geometry"]["grid_size"] == 16 and cfg["geometry"]["codebook_size"] == 256
    assert cfg["canvases"] == {"image_decoder": 64, "image_decoder_hr": 256} and cfg["default_size"] == {"height": 256, "width": 192}


# ---------------------------------------------------------------------------------------------- TensorRT
def _tensorrt_missing() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return True
    return False


TENSORRT_SKIP = "TensorRT is not installed (needs an NVIDIA GPU and `pip install tensorrt`); engines cannot be built on CPU machines"


def test_tensorrt_profiles_follow_the_bundle_geometry(tiny_onnx_bundle):
    cfg = json.loads((tiny_onnx_bundle / ex.BUNDLE_JSON).read_text())
    p = bt.profiles_for(cfg, 1, 4, 16)
    # optimal at the model's 8x8 grid (32 px), up to the bundle's image_grid_max of 16 cells (wide outpainting)
    assert cfg["image_grid_max"] == 16 and bt.grid_max_shape(cfg) == (16, 16)
    assert p["image_encoder"]["pixel_values"] == ((1, 3, 32, 32), (4, 3, 32, 32), (16, 3, 64, 64))
    assert p["image_decoder"]["tokens"] == ((1, 8, 8, 4), (4, 8, 8, 4), (16, 16, 16, 4))
    short = cfg["geometry"]["max_text_length"] + 2 + 64
    assert p["transformer"]["image_codes"] == ((1, short, 4), (4, short, 4), (16, short + 16, 4))
    assert set(p) == set(bt.engine_files(cfg)) == {"image_encoder", "image_decoder", "transformer"}  # no decoder_hr
    with pytest.raises(ValueError, match="min_batch"):
        bt.profiles_for(cfg, 4, 2, 16)


def test_tensorrt_builds_the_hr_decoder_engine_of_a_bundle_that_has_one(tiny_onnx_hr_bundle):
    """The default output is painted by image_decoder_hr: a bundle with it gets its engine, on the same token grids."""
    cfg = json.loads((tiny_onnx_hr_bundle / ex.BUNDLE_JSON).read_text())
    assert bt.engine_files(cfg) == {**bt.ENGINE_FILES, ex.HR_DECODER: "image_decoder_hr.plan"}
    p = bt.profiles_for(cfg, 1, 4, 16)
    assert p[ex.HR_DECODER] == p["image_decoder"] == {"tokens": ((1, 8, 8, 4), (4, 8, 8, 4), (16, 16, 16, 4))}


def test_fp16_decoder_graphs_for_strongly_typed_tensorrt(tiny_onnx_pipeline, tmp_path):
    """The float16 re-export (TensorRT >= 11) covers the high-resolution decoder too: float16 convolutions, int64
    tokens in and float32 pixels out at the decoder's own canvas; asking for it without a decoder_hr is refused."""
    import numpy as np
    import onnx
    import torch

    from conftest import build_tiny_decoder_hr

    ort = pytest.importorskip("onnxruntime")
    with pytest.raises(ValueError, match="no decoder_hr"):
        ex.export_fp16_graphs(tiny_onnx_pipeline, str(tmp_path), components=[ex.HR_DECODER])
    pipe = ex.with_decoder_hr(tiny_onnx_pipeline, build_tiny_decoder_hr())
    paths = ex.export_fp16_graphs(pipe, str(tmp_path), components=["image_decoder", ex.HR_DECODER])
    assert set(paths) == {"image_decoder", ex.HR_DECODER} and paths[ex.HR_DECODER].endswith(ex.HR_DECODER_FILE)
    tokens = torch.randint(0, 32, (2, 8, 8, 4), generator=torch.Generator().manual_seed(0))
    for key, decoder, side in [("image_decoder", pipe.decoder, 32), (ex.HR_DECODER, pipe.decoder_hr, 128)]:
        model = onnx.load(paths[key])
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        conv_weights = [i for i in model.graph.initializer if len(i.dims) == 4]
        assert conv_weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in conv_weights)
        got = ort.InferenceSession(paths[key], providers=["CPUExecutionProvider"]).run(None, {"tokens": tokens.numpy()})[0]
        with torch.no_grad():
            ref = ex.ImageDecoderGraph(pipe.image_tokenizer, decoder)(tokens).numpy()  # float32
        assert got.shape == ref.shape == (2, 3, side, side)
        assert np.abs(got - ref).mean() < 0.005, (key, np.abs(got - ref).mean())  # measured: about 1e-4
    assert pipe.decoder_hr.dtype == pipe.decoder.dtype == torch.float32  # the pipeline's own decoders are untouched


@pytest.mark.skipif(not _tensorrt_missing(), reason="tensorrt is installed: the missing-TensorRT message cannot be shown")
def test_build_tensorrt_fails_clearly_without_tensorrt(tiny_onnx_bundle):
    with pytest.raises(SystemExit, match="TensorRT is not installed"):
        bt.main(["--bundle", str(tiny_onnx_bundle)])


@pytest.mark.skipif(_tensorrt_missing(), reason=TENSORRT_SKIP)
def test_build_tensorrt_engines_and_parity(tiny_onnx_pipeline, tiny_onnx_bundle, fashion_test_parquet, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("TensorRT is installed but no CUDA device is visible")
    model_dir = tmp_path / "pipe"
    tiny_onnx_pipeline.save_pretrained(str(model_dir))
    args = ["--bundle", str(tiny_onnx_bundle), "--model", str(model_dir), "--out", str(tmp_path / "trt"), "--max-batch", "8",
            "--opt-batch", "4", "--parity-batches", "1", "5"]
    if fashion_test_parquet is not None:
        args += ["--parity-data", str(fashion_test_parquet)]
    report = bt.main(args)
    assert set(report["engines"]) == {"image_encoder", "image_decoder", "transformer"}
    for r in report["parity"]["image_encoder"]:
        assert r["token_match"] >= 0.95
    for r in report["parity"]["transformer"]:
        assert r["argmax_match"] >= 0.95 and r["finite"]
