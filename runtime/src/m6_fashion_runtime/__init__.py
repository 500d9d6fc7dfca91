"""m6-fashion-runtime: torch-free M6-Fashion inference (ONNX Runtime + numpy).

Runs a bundle written by ``m6-fashion export onnx``: caption
tokenisation (``tokenizers``), the sequence layout and the SMART sampling loop in numpy, the image
encoder / transformer / decoder graphs in ONNX Runtime. Depends only on numpy, onnxruntime,
tokenizers and pillow.
"""

__version__ = "0.2.0"  # 0.2: output sizes, image_decoder_hr, bundle format 2

from .bundle import Bundle, BundleError, BundleFileNotFoundError, Geometry, load_bundle
from .canvas import OutputCanvas
from .pipeline import M6FashionRuntime, RuntimeOutput, save_images
from .scheduler import SMARTSampler

__all__ = [
    "Bundle", "BundleError", "BundleFileNotFoundError", "Geometry", "load_bundle", "OutputCanvas",
    "M6FashionRuntime", "RuntimeOutput", "save_images", "SMARTSampler", "__version__",
]
