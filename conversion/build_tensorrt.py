"""Builds TensorRT engines from a runtime bundle and checks them against ONNX Runtime (needs an NVIDIA GPU).

A thin wrapper: the builder lives in the installed package (`m6_fashion.export.build_tensorrt`); this script is
the same command from a checkout:

    python conversion/build_tensorrt.py --bundle BUNDLE_DIR [--model PIPELINE_DIR] [--out ENGINE_DIR] [--precision fp16|fp32]
"""

from m6_fashion.export.build_tensorrt import *  # noqa: F401,F403  (profiles_for, build_engine, TRTRunner, ...)
from m6_fashion.export.build_tensorrt import main

if __name__ == "__main__":
    main()
