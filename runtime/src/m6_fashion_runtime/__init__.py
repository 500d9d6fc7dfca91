"""m6-fashion-runtime: torch-free M6-Fashion inference (ONNX Runtime + numpy).

Runs a bundle written by ``m6-fashion export onnx``: caption tokenisation (``tokenizers``); the sequence
layout, output canvases, argument checks and SMART schedules from ``m6_fashion_core`` (the torch-free core the
PyTorch library uses too, shipped in this distribution); the SMART step in numpy; the image encoder /
transformer / decoder graphs in ONNX Runtime. Depends only on numpy, onnxruntime, tokenizers and pillow.
"""

__version__ = "0.5.1"  # 0.5.1: outpainting encodes the placed image with its border continued one cell, negative_guidance_scale; 0.5.0: guidance by default for text-to-image (12), guidance_min_p; 0.4.1: negative_prompt; 0.4.0: non-square token grids (bundle format 5); 0.3.1: confidence_noise(_end) of the scheduler section; 0.3: the shared m6_fashion_core, bundle formats 3-4 (split pass, wide outpainting); 0.2: output sizes

from .bundle import Bundle, BundleError, BundleFileNotFoundError, Geometry, load_bundle
from .canvas import OutputCanvas
from .pipeline import M6FashionRuntime, RuntimeOutput, save_images
from .scheduler import SMARTSampler

__all__ = [
    "Bundle", "BundleError", "BundleFileNotFoundError", "Geometry", "load_bundle", "OutputCanvas",
    "M6FashionRuntime", "RuntimeOutput", "save_images", "SMARTSampler", "__version__",
]
