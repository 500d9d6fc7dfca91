"""Conversion scripts: ONNX export + runtime bundle (`export_onnx`, a wrapper of `m6_fashion.export.export_onnx`,
the same as `m6-fashion export onnx`) and TensorRT engines (`build_tensorrt`).

Run them as scripts from the repository root (`python conversion/export_onnx.py --help`).
"""
