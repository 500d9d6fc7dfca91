"""Strict `from_pretrained` for this package's own models.

transformers and diffusers load a checkpoint whose weights do not match its config with a warning or a
log report only: a `config.json` whose `num_hidden_layers` was edited loads random (or drops) layers,
a decoder with one `layers_per_block` too many gets random convolutions. For this package's own
components that is always a corrupt or edited folder, so it is an error here, naming the keys.
`strict=False` restores the libraries' lenient behaviour (for deliberate surgery on a checkpoint).
"""

from __future__ import annotations

from typing import Any, Dict

_KINDS = ("missing_keys", "unexpected_keys", "mismatched_keys")


def check_loading_info(cls_name: str, source: Any, info: Dict[str, Any]) -> None:
    """Raises `ValueError` when `info` (a `from_pretrained(..., output_loading_info=True)` report) lists
    missing, unexpected or mismatched weights."""
    problems = []
    for kind in _KINDS:
        keys = sorted(str(k if not isinstance(k, tuple) else k[0]) for k in (info.get(kind) or ()))
        if keys:
            shown = ", ".join(keys[:4]) + (f", ... ({len(keys)} in all)" if len(keys) > 4 else "")
            problems.append(f"{kind.replace('_', ' ')}: {shown}")
    if problems:
        raise ValueError(
            f"{cls_name} weights in {str(source)!r} do not match its config.json ({'; '.join(problems)}). The folder is "
            "corrupt or its config was edited; re-download or re-save it (strict=False loads it anyway, with the "
            "unmatched weights random)"
        )


class StrictLoadingMixin:
    """Put before `ModelMixin` / `PreTrainedModel` in the bases: `from_pretrained` refuses weights that do not
    match the config (see the module docstring); `strict=False` turns that off."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, strict: bool = True, **kwargs):
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        if strict:
            check_loading_info(cls.__name__, pretrained_model_name_or_path, info)
        return (model, info) if want_info else model
