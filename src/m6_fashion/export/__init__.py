"""Export of a pipeline for other runtimes: `export_onnx` writes the ONNX graphs and the bundle of the
torch-free runtime (`m6-fashion export onnx`). Needs the `export` extra (onnx, onnxruntime, onnxscript)."""
