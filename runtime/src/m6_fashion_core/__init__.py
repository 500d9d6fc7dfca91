"""m6-fashion-core: the torch-free part of M6-Fashion inference, shared by both front ends.

Everything here is numpy and plain Python: the transformer's sequence layout, box / cell geometry of
token grids and output canvases, argument validation with its error messages, and the pure parts of
SMART sampling (schedules, counts, defaults). The PyTorch pipeline (``m6_fashion``) and the torch-free
runtime (``m6_fashion_runtime``) both call these functions, so a rule and its error message exist once;
only the tensor math itself (the torch and the numpy ``step``) is written twice, kept equal by parity
tests.

The package ships inside both distributions (``m6-fashion`` and ``m6-fashion-runtime``); it never
imports torch, onnxruntime or either front end.
"""
