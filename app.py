"""Hugging Face Space entry point: the M6-Fashion studio with the shipped model.

Locally, prefer `m6-fashion studio` (binds 127.0.0.1). On a Space the server address and port come from
the environment Gradio reads (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT).
"""

import os
import sys

try:
    import m6_fashion  # noqa: F401
except ImportError:  # a plain checkout (e.g. a Space): use the package from src/
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from m6_fashion.studio import build_app

demo = build_app()

if __name__ == "__main__":
    demo.launch()
