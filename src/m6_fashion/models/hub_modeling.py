"""Entry point that lets transformers' Auto classes open a saved M6-Fashion transformer folder or Hub repo.

`M6FashionTransformer.save_pretrained` copies this file into the folder as ``modeling_m6fashion.py`` and
records an ``auto_map`` in ``config.json`` pointing ``AutoConfig``, ``AutoModel`` and ``AutoModelForMaskedLM``
here. Then, with the ``m6-fashion`` package installed but not imported::

    from transformers import AutoModel
    model = AutoModel.from_pretrained("path/or/hub-id/transformer", trust_remote_code=True)

returns the package's ``M6FashionTransformer`` in float32 (the weights may be stored in float16). The file holds
no model code: without the package it raises one ``ImportError`` that says what to install. After
``import m6_fashion`` the Auto classes know the model type and ``trust_remote_code`` is not needed.
"""

import importlib

PACKAGE = "m6-fashion"
MODULE = "m6_fashion.models.transformer_m6fashion"

try:
    # imported by name (not an `import` statement): transformers' import scan would otherwise ask for
    # `pip install m6_fashion`, which is not the distribution's name
    _modeling = importlib.import_module(MODULE)
except ImportError as error:
    raise ImportError(
        f"this is an M6-Fashion transformer: its code is the `{PACKAGE}` Python package, which could not be imported "
        f"here ({error}). Install it (`pip install {PACKAGE}`, or `pip install .` in a checkout of its repository) "
        "and load again."
    ) from error

M6FashionConfig = _modeling.M6FashionConfig
M6FashionTransformer = _modeling.M6FashionTransformer
