"""M6-Fashion: multi-modal fashion image generation and editing.

The public names below are loaded on first access (PEP 562), so that ``import m6_fashion`` (and the
``m6-fashion`` command line's ``--help``) does not import torch, diffusers or transformers.
``from m6_fashion import M6FashionPipeline`` works as before.
"""

import importlib as _importlib
import os as _os
import sys as _sys
from typing import TYPE_CHECKING as _TYPE_CHECKING

__version__ = "0.1.0"

# Busy-waiting OpenMP threads collapse on a shared CPU (18.7 s vs 2.4 s per call under load; see
# m6_fashion.cpu). The policy is read when torch loads its OpenMP runtime, so it can only be set here if
# torch is not imported yet; a policy the user exported is kept.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# public name -> submodule that defines it
_LAZY = {
    "PQTokenizer": ".models", "PQTokenizerOutput": ".models", "StyleDecoder": ".models",
    "StyleDecoderOutput": ".models", "StyleGANDiscriminator": ".models",
    # stage 2: importing this module registers M6FashionConfig / M6FashionTransformer with AutoConfig / AutoModel
    "M6FashionConfig": ".models.transformer_m6fashion", "M6FashionTransformer": ".models.transformer_m6fashion",
    "M6FashionTransformerOutput": ".models.transformer_m6fashion",
    "SMARTScheduler": ".schedulers", "SMARTSchedulerOutput": ".schedulers",
    "M6FashionPipeline": ".pipelines", "M6FashionPipelineOutput": ".pipelines",
}

__all__ = list(_LAZY)

if _TYPE_CHECKING:  # static type checkers and IDEs see the real names
    from .models import PQTokenizer, PQTokenizerOutput, StyleDecoder, StyleDecoderOutput, StyleGANDiscriminator
    from .models.transformer_m6fashion import M6FashionConfig, M6FashionTransformer, M6FashionTransformerOutput
    from .pipelines import M6FashionPipeline, M6FashionPipelineOutput
    from .schedulers import SMARTScheduler, SMARTSchedulerOutput


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted({name for name in globals() if not name.startswith("_") or name.startswith("__")} | set(_LAZY))


# `import transformers` before `import m6_fashion` (the usual import order) keeps the old behaviour of
# `AutoConfig` / `AutoModel.from_pretrained` knowing the "m6fashion" model type right after the import;
# otherwise the registration happens when any M6-Fashion model or the pipeline is first used.
if "transformers" in _sys.modules:
    _importlib.import_module(".models.transformer_m6fashion", __name__)
