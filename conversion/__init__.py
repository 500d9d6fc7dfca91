"""Conversion scripts: ONNX export + runtime bundle (`export_onnx`, a wrapper of `m6_fashion.export.export_onnx`,
the same as `m6-fashion export onnx`), TensorRT engines (`build_tensorrt`) and a square pipeline moved to a portrait
token grid (`square_to_portrait`).

Run them as scripts from the repository root (`python conversion/export_onnx.py --help`).
"""
