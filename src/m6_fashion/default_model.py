"""Where the shipped pipelines live, and their names.

The shipped model lives inside the package (`m6_fashion/pretrained/m6-fashion-64/`), so generation works
offline right after `pip install`. One folder holds two shipped models that share every weight but one:

| name            | output                       | what loads                                                   |
|-----------------|------------------------------|--------------------------------------------------------------|
| `m6-fashion-hr` | 192x256 portrait (default)   | the whole folder, with `decoder_hr` (16x16 tokens -> 256 px) |
| `m6-fashion-64` | 64x64                        | the same folder without `decoder_hr`                         |

`M6FashionPipeline.from_pretrained()` loads `DEFAULT_MODEL_NAME`; `from_pretrained("m6-fashion-64")` the other.
`M6FASHION_MODEL` overrides the default with another folder, Hub id or shipped name.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Tuple

SHIPPED_FOLDER = "m6-fashion-64"
# name -> components left out when loading the shipped folder under that name
SHIPPED_MODELS: Dict[str, Tuple[str, ...]] = {
    "m6-fashion-hr": (),
    "m6-fashion-64": ("decoder_hr",),
}
DEFAULT_MODEL_NAME = "m6-fashion-hr"


def shipped_folder() -> str:
    """The folder of the shipped pipelines inside the installed package."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained", SHIPPED_FOLDER)
    if not os.path.isfile(os.path.join(path, "model_index.json")):
        raise FileNotFoundError(
            f"the shipped model is missing ({SHIPPED_FOLDER}, expected inside the installed package); "
            "reinstall m6-fashion or pass --model DIR / M6FashionPipeline.from_pretrained(DIR)"
        )
    return path


def resolve_model(name_or_path: "str | None" = None) -> Tuple[str, Dict[str, Any]]:
    """`(folder or Hub id, extra from_pretrained kwargs)` for a shipped name, a folder or a Hub id.

    `None` means the default (`$M6FASHION_MODEL`, else `DEFAULT_MODEL_NAME`). A shipped name maps to the
    shipped folder, with the components it leaves out passed as `None`.
    """
    if name_or_path is None:
        name_or_path = os.environ.get("M6FASHION_MODEL") or DEFAULT_MODEL_NAME
    name_or_path = str(name_or_path)
    if name_or_path in SHIPPED_MODELS and not os.path.exists(name_or_path):
        return shipped_folder(), {component: None for component in SHIPPED_MODELS[name_or_path]}
    return name_or_path, {}


def default_model_path() -> str:
    """Folder (or Hub id from `$M6FASHION_MODEL`) of the default pipeline."""
    return resolve_model(None)[0]
