"""Entry point that lets diffusers' and transformers' generic loaders open saved M6-Fashion folders and Hub repos.

`M6FashionPipeline.save_pretrained` copies this file into the pipeline folder as ``m6_fashion_pipeline.py`` and
records ``"_class_name": ["m6_fashion_pipeline", "M6FashionPipeline"]`` in ``model_index.json`` (the form diffusers
uses for pipelines whose code is not part of diffusers); `M6FashionTransformer.save_pretrained` copies it into the
transformer folder as ``modeling_m6fashion.py`` and records an ``auto_map`` for ``AutoConfig``, ``AutoModel`` and
``AutoModelForMaskedLM`` in ``config.json``. Then, with the ``m6-fashion`` package installed::

    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained("path/or/hub-id", trust_remote_code=True)

    from transformers import AutoModel
    model = AutoModel.from_pretrained("path/or/hub-id", subfolder="transformer", trust_remote_code=True)

return the package's own classes (not copies; the transformer in float32, as the pipeline computes). The file
holds no model code: without the package it raises one ``ImportError`` that says what to install. The package's
own loaders (``M6FashionPipeline.from_pretrained``, or the Auto classes after ``import m6_fashion``) read the same
folders without ``trust_remote_code`` and never run this file.
"""

import importlib

PACKAGE = "m6-fashion"

try:
    # imported by name (not an `import` statement): the loaders' import scans would otherwise ask for
    # `pip install m6_fashion`, which is not the distribution's name
    _m6_fashion = importlib.import_module("m6_fashion")
except ImportError as error:
    raise ImportError(
        f"this is an M6-Fashion model: its code is the `{PACKAGE}` Python package, which could not be imported here "
        f"({error}). Install it (`pip install {PACKAGE}`, or `pip install .` in a checkout of its repository) and "
        "load again, with `trust_remote_code=True` or through `m6_fashion` itself."
    ) from error

M6FashionPipeline = _m6_fashion.M6FashionPipeline
M6FashionConfig = _m6_fashion.M6FashionConfig
M6FashionTransformer = _m6_fashion.M6FashionTransformer
