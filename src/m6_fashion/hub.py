"""Hub model cards of M6-Fashion pipelines: one template for the shipped model and for fine-tuned ones.

`build_model_card(body, folder=...)` returns a `huggingface_hub.ModelCard` whose YAML front matter is built
with `ModelCardData` (so huggingface_hub serialises and checks it, `model-index` included) and whose body
carries a "weights" paragraph computed from the safetensors files of `folder` (dtype, parameters, bytes): a
pushed card describes exactly the pushed files. `M6FashionPipeline.push_to_hub` and
`m6_fashion.training.finetune` both use it.

`model-index` results exist only for the shipped model (`shipped_eval_results`, from the shipped folder's
`eval_results.json`: a summary of `benchmarks/results/evaluate_m6-fashion-hr_test.json`); other models have none,
and the card then has no `model-index` rather than numbers nobody can trace.
"""

from __future__ import annotations

import json
import os
import math
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional

# One library_name for shipped and fine-tuned cards. "m6-fashion" rather than "diffusers": the Hub picks its
# "Use this model" snippet from library_name, and the diffusers snippet (`DiffusionPipeline.from_pretrained`)
# cannot load these repos — the pipeline class, its components and the checksum check live in the
# `m6_fashion` package, so the only working entry point is `m6_fashion.M6FashionPipeline.from_pretrained`.
LIBRARY_NAME = "m6-fashion"
PIPELINE_TAG = "text-to-image"
LICENSE = "apache-2.0"
LANGUAGE = "en"  # the captions (product names) are English
# Hub dataset id of Kaggle's "Fashion Product Images (Small)" (Myntra catalogue), which the shipped model saw;
# its high-resolution copy used for decoder_hr has the same products, ids and split.
DATASETS = ["ashraq/fashion-product-images-small"]
TAGS = ["m6-fashion", "fashion", "image-generation", "image-editing", "masked-image-modeling"]

# Front matter every card gets unless it already sets the key (a card's own values win, except model-index).
HUB_METADATA = {
    "library_name": LIBRARY_NAME,
    "pipeline_tag": PIPELINE_TAG,
    "license": LICENSE,
    "language": LANGUAGE,
    "datasets": DATASETS,
    "tags": TAGS,
}

WEIGHTS_BEGIN = "<!-- m6-fashion:weights -->"
WEIGHTS_END = "<!-- /m6-fashion:weights -->"
DEFAULT_BODY = "# M6-Fashion pipeline\n\nA pipeline of the m6-fashion library.\n"

# The figures model-index reports for the shipped model, in its folder (package data): a summary of
# benchmarks/results/evaluate_m6-fashion-hr_test.json written by `write_shipped_eval_results` (a test keeps the two equal)
SHIPPED_RESULTS_FILE = "eval_results.json"
_HIT_RATES = {"mean": "mean of the three", "all": "all three", "articleType": "article type",
              "baseColour": "base colour", "gender": "gender"}

_DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


# ------------------------------------------------------------------------------------------ weight files
def weight_files(folder: str, files: Optional[Iterable[str]] = None) -> List[Dict]:
    """One row per ``*.safetensors`` file of `folder` (of `files`, relative paths, if given): path, dtypes,
    parameters, bytes, read from the files' headers (no tensor is loaded)."""
    from safetensors import safe_open

    keep = None if files is None else {f.replace(os.sep, "/") for f in files}
    rows = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            if not name.endswith(".safetensors") or (keep is not None and rel not in keep):
                continue
            dtypes, params = set(), 0
            with safe_open(path, framework="pt") as f:
                for key in f.keys():
                    tensor = f.get_slice(key)
                    dtypes.add(_DTYPE_NAMES.get(tensor.get_dtype(), tensor.get_dtype().lower()))
                    params += math.prod(tensor.get_shape())
            rows.append({"file": rel, "dtypes": sorted(dtypes), "parameters": params, "bytes": os.path.getsize(path)})
    return sorted(rows, key=lambda r: r["file"])


def weights_section(folder: str, variant: Optional[str] = None, repo_id: Optional[str] = None,
                    files: Optional[Iterable[str]] = None) -> str:
    """The card paragraph on the weights, computed from the files it describes (between the weights markers)."""
    rows = weight_files(folder, files)
    if not rows:
        return f"{WEIGHTS_BEGIN}\nThis folder holds no weight files.\n{WEIGHTS_END}"
    dtypes = sorted({d for r in rows for d in r["dtypes"] if d.startswith(("float", "bfloat"))})
    others = sorted({d for r in rows for d in r["dtypes"]} - set(dtypes))
    total = sum(r["bytes"] for r in rows)
    params = sum(r["parameters"] for r in rows)
    load = f'M6FashionPipeline.from_pretrained("{repo_id or "<this folder or repo>"}"'
    load += f', variant="{variant}")' if variant else ")"
    lines = [
        WEIGHTS_BEGIN,
        f"Weights are stored as {' and '.join(dtypes) or 'non-float'} safetensors"
        + (f" (with {', '.join(others)} buffers)" if others else "")
        + f": {len(rows)} file{'s' if len(rows) > 1 else ''}, {total / 1e6:.1f} MB in all, {params:,} values"
        + (f" (file names carry the variant `{variant}`)" if variant else "")
        + f"; `{load}` loads them as float32 unless `dtype=` says otherwise.",
        "",
        "| file | dtype | values | bytes |",
        "|---|---|---|---|",
        *(f"| `{r['file']}` | {', '.join(r['dtypes'])} | {r['parameters']:,} | {r['bytes']:,} |" for r in rows),
        WEIGHTS_END,
    ]
    return "\n".join(lines)


def _with_weights(body: str, section: str) -> str:
    pattern = re.compile(re.escape(WEIGHTS_BEGIN) + r".*?" + re.escape(WEIGHTS_END), re.S)
    if pattern.search(body):
        return pattern.sub(lambda _: section, body, count=1)
    return body.rstrip("\n") + "\n\n## Weights\n\n" + section + "\n"


# ------------------------------------------------------------------------------------------ eval results
def summarize_hr_evaluation(report: Dict) -> Dict:
    """The part of an `m6-fashion evaluate --height 256 --width 192` report that model-index reports: the high-
    resolution text-to-image row's FID, KID and attribute hit rates, with the split, size and reference count."""
    hr = report["text_to_image"]["hr"]
    settings = report.get("settings", {})
    return {
        "model_name": "m6-fashion-hr",
        "split": report.get("split", "test"),
        "size": f"{settings.get('width', 192)}x{settings.get('height', 256)}",
        "num_real": int(hr["num_real"]),
        "fid_inception": round(float(hr["fid_inception"]), 2),
        "kid_inception_mean": round(float(hr["kid_inception_mean"]), 4),
        "hit_rate": {k: round(float(hr["hit_rate"][k]), 4) for k in _HIT_RATES if k in hr.get("hit_rate", {})},
    }


def write_shipped_eval_results(report_path: os.PathLike, folder: Optional[os.PathLike] = None) -> Path:
    """Writes `summarize_hr_evaluation` of the report at `report_path` into the shipped folder's `eval_results.json`."""
    from .default_model import shipped_folder

    path = Path(folder or shipped_folder()) / SHIPPED_RESULTS_FILE
    summary = summarize_hr_evaluation(json.loads(Path(report_path).read_text()))
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def shipped_eval_results(model_name: str, results_file: Optional[os.PathLike] = None) -> Optional[list]:
    """`EvalResult`s of a shipped model (FID, KID, attribute hit rates), or None.

    Only `m6-fashion-hr` has them: text-to-image at 192x256 on the 798 high-resolution test photos, read from the
    shipped folder's `eval_results.json` (`results_file` overrides it); None when that file is absent or unreadable.
    """
    from huggingface_hub import EvalResult

    if model_name != "m6-fashion-hr":
        return None
    try:
        if results_file is None:
            from .default_model import shipped_folder

            results_file = Path(shipped_folder()) / SHIPPED_RESULTS_FILE
        summary = json.loads(Path(results_file).read_text())
        common = dict(
            task_type="text-to-image", task_name="Text-to-image", dataset_type=DATASETS[0],
            dataset_name=f"Fashion Product Images, {summary['split']} split, {summary['num_real']} photos at {summary['size']}",
            dataset_split=summary["split"],
        )
        results = [
            EvalResult(metric_type="fid", metric_name="FID (Inception-v3, vs the real test photos)",
                       metric_value=summary["fid_inception"], **common),
            EvalResult(metric_type="kid", metric_name="KID mean (Inception-v3, subsets of 100)",
                       metric_value=summary["kid_inception_mean"], **common),
        ]
        for key, words in _HIT_RATES.items():
            if key in summary["hit_rate"]:
                results.append(EvalResult(
                    metric_type="accuracy", metric_name=f"attribute hit rate ({words}), attribute classifier",
                    metric_value=summary["hit_rate"][key], **common))
        return results
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ------------------------------------------------------------------------------------------ the template
def build_model_card(
    card: Optional[str] = None,
    *,
    folder: Optional[str] = None,
    files: Optional[Iterable[str]] = None,
    variant: Optional[str] = None,
    repo_id: Optional[str] = None,
    model_name: Optional[str] = None,
    eval_results: Optional[list] = None,
    base_model: Optional[str] = None,
    tags: Iterable[str] = (),
    keep_model_index: bool = False,
):
    """The model card (a `huggingface_hub.ModelCard`) of a pipeline folder.

    `card` is a Markdown body, with or without YAML front matter; its own front matter values are kept and
    `HUB_METADATA` fills in the rest (tags are merged). `model-index` comes only from `eval_results` (with
    `model_name`); one in `card` is dropped unless `keep_model_index` (it may describe other weights). With
    `folder`, the weights paragraph (between the `<!-- m6-fashion:weights -->` markers, else a "Weights"
    section at the end) is recomputed from its safetensors files (only those in `files`, if given: what is
    uploaded).
    """
    from huggingface_hub import ModelCard, ModelCardData

    card = card or DEFAULT_BODY
    if card.startswith("---"):
        parsed = ModelCard(card, ignore_metadata_errors=False)
        data, body = parsed.data.to_dict(), parsed.text
    else:
        data, body = {}, card
    if not keep_model_index:
        data.pop("eval_results", None)
        data.pop("model_name", None)
    for key, value in HUB_METADATA.items():
        if key == "tags":
            continue
        data.setdefault(key, list(value) if isinstance(value, list) else value)
    data["tags"] = list(dict.fromkeys([*TAGS, *(data.get("tags") or []), *tags]))
    if base_model:
        data["base_model"] = base_model
    if eval_results:
        data["eval_results"], data["model_name"] = list(eval_results), model_name
    card_data = ModelCardData(**data)
    if folder is not None:
        body = _with_weights(body, weights_section(folder, variant=variant, repo_id=repo_id, files=files))
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body.lstrip(chr(10))}", ignore_metadata_errors=False)


def with_hub_metadata(card: str) -> str:
    """The card as text with at least `HUB_METADATA` in its front matter (kept for older callers)."""
    return str(build_model_card(card, keep_model_index=True))


def shipped_model_name(name_or_path: str, has_decoder_hr: bool) -> Optional[str]:
    """The shipped model's name (`m6_fashion.default_model.SHIPPED_MODELS`: `m6-fashion-hr` with `decoder_hr`,
    `m6-fashion-64` without) when `name_or_path` is the shipped folder, else None."""
    from .default_model import SHIPPED_FOLDER, SHIPPED_MODELS

    shipped = Path(__file__).resolve().parent / "pretrained" / SHIPPED_FOLDER
    try:
        same = bool(name_or_path) and Path(name_or_path).resolve() == shipped
    except (OSError, ValueError):
        same = False
    if not same:
        return None
    return next((name for name, left_out in SHIPPED_MODELS.items() if ("decoder_hr" not in left_out) == has_decoder_hr), None)
