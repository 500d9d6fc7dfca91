"""Entry point that lets diffusers' generic loader open a saved M6-Fashion pipeline folder or Hub repo.

`M6FashionPipeline.save_pretrained` copies this file into the folder as ``m6_fashion_pipeline.py`` and records
``"_class_name": ["m6_fashion_pipeline", "M6FashionPipeline"]`` in ``model_index.json``, the form diffusers
uses for pipelines whose code is not part of diffusers. Then, with the ``m6-fashion`` package installed::

    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained("path/or/hub-id", trust_remote_code=True)

returns an ``M6FashionPipeline`` (the package's class, not a copy). The file holds no model code: without the
package it raises one ``ImportError`` that says what to install. ``M6FashionPipeline.from_pretrained`` reads
the same folders without ``trust_remote_code`` and never runs this file.
"""

import importlib

PACKAGE = "m6-fashion"
MODULE = "m6_fashion.pipelines.pipeline_m6fashion"

try:
    # imported by name (not an `import` statement) so diffusers' import scan does not suggest
    # `pip install m6_fashion`, which is not the distribution's name
    _pipeline_module = importlib.import_module(MODULE)
except ImportError as error:
    raise ImportError(
        f"this is an M6-Fashion pipeline: its code is the `{PACKAGE}` Python package, which could not be imported "
        f"here ({error}). Install it (`pip install {PACKAGE}`, or `pip install .` in a checkout of its "
        "repository) and load again, with `diffusers.DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` "
        "or `m6_fashion.M6FashionPipeline.from_pretrained(...)`."
    ) from error

M6FashionPipeline = _pipeline_module.M6FashionPipeline
