"""Exports an M6-Fashion pipeline folder to ONNX and packs the torch-free runtime bundle.

A thin wrapper: the exporter lives in the installed package (`m6_fashion.export.export_onnx`), so
`m6-fashion export onnx ...` works from any install; this script is the same command from a checkout:

    python conversion/export_onnx.py --model PIPELINE_DIR --out BUNDLE_DIR [--int8] [--decoder-hr DIR | --no-decoder-hr]
"""

from m6_fashion.export.export_onnx import main

if __name__ == "__main__":
    main()
