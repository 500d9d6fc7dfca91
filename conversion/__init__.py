"""Conversion scripts: ONNX export + runtime bundle (`export_onnx`) and TensorRT engines (`build_tensorrt`).

Run them as scripts from the repository root (`python conversion/export_onnx.py --help`) or import them
(`from conversion import export_onnx`).
"""
