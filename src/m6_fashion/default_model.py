"""Where the shipped default pipeline lives.

The default model ships inside the package (`m6_fashion/pretrained/m6-fashion-64/`), so generation works
offline right after `pip install`. `M6FASHION_MODEL` overrides it with another folder or Hub id.
"""

from __future__ import annotations

import os

DEFAULT_MODEL_NAME = "m6-fashion-64"


def default_model_path() -> str:
    """Folder (or Hub id from `$M6FASHION_MODEL`) of the default pipeline."""
    override = os.environ.get("M6FASHION_MODEL")
    if override:
        return override
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained", DEFAULT_MODEL_NAME)
    if not os.path.isfile(os.path.join(path, "model_index.json")):
        raise FileNotFoundError(
            f"the shipped default model is missing ({DEFAULT_MODEL_NAME}, expected inside the installed package); "
            "reinstall m6-fashion or pass --model DIR / M6FashionPipeline.from_pretrained(DIR)"
        )
    return path
