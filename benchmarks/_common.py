"""Helpers shared by the benchmark scripts: result files (JSON + Markdown) and plots."""

from __future__ import annotations

import datetime
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT_DIR = REPO_ROOT / "benchmarks" / "results"
FAST_OUT_DIR = REPO_ROOT / "runs" / "benchmarks-fast"  # smoke-run numbers mean nothing: kept out of the tracked tree

if str(REPO_ROOT / "src") not in sys.path:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT / "src"))


def out_dir(path: Optional[str], fast: bool) -> Path:
    """Where results go: ``--out-dir`` if given, else ``benchmarks/results`` (``runs/benchmarks-fast`` with --fast)."""
    d = Path(path) if path else (FAST_OUT_DIR if fast else DEFAULT_OUT_DIR)
    d.mkdir(parents=True, exist_ok=True)
    return d


def add_run_args(parser, fast_help: str = "CI smoke run: a handful of images, tiny counts (the numbers mean nothing)") -> None:
    """The options every benchmark takes: --threads, --fast and --out-dir."""
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--fast", action="store_true", help=fast_help)
    parser.add_argument("--out-dir", default=None, help="result folder (default benchmarks/results; runs/benchmarks-fast with --fast)")


def set_threads(threads: Optional[int]) -> None:
    """``torch.set_num_threads(threads)`` when a count is given."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def command_line() -> str:
    """The command that is running, with the script path relative to the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_s = str(script.relative_to(REPO_ROOT))
    except ValueError:
        script_s = script.name
    return " ".join(["python", script_s, *(shlex.quote(a) for a in sys.argv[1:])])


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def environment() -> Dict:
    """The library's record of software and CPU (`m6_fashion.evaluation.common.environment`) plus package versions."""
    from m6_fashion.evaluation.common import environment as library_environment

    return {**library_environment(), "cpu": cpu_model(), "packages": package_versions()}


def cpu_model() -> str:
    """The CPU's model name and whether it has the bfloat16 / AVX-512 / AMX instructions (figures depend on them)."""
    from m6_fashion.cpu import cpu_model as model

    return model()


def package_versions() -> Dict[str, str]:
    """Versions of the packages the figures depend on (see requirements-lock.txt for the whole environment)."""
    from importlib import metadata

    out = {}
    for name in ("torch", "transformers", "diffusers", "tokenizers", "onnxruntime", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def json_safe(obj):
    """``obj`` with non-finite floats as None (`m6_fashion.evaluation.common.json_safe`, the result files' rule)."""
    from m6_fashion.evaluation.common import json_safe as library_json_safe

    return library_json_safe(obj)


def fmt(x, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, str):
        return x
    return f"{x:.{nd}f}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def write_results(directory: Path, name: str, data: Dict, markdown: str) -> List[Path]:
    """Writes ``name.json`` and ``name.md``; prints the Markdown."""
    data = json_safe(data)
    jpath = directory / f"{name}.json"
    mpath = directory / f"{name}.md"
    jpath.write_text(json.dumps(data, indent=2) + "\n")
    mpath.write_text(markdown.rstrip() + "\n")
    print(markdown, flush=True)
    print(f"wrote {jpath.relative_to(REPO_ROOT) if jpath.is_relative_to(REPO_ROOT) else jpath}", flush=True)
    return [jpath, mpath]


def plt():
    """matplotlib.pyplot with a non-interactive backend (``pip install matplotlib``)."""
    try:
        import matplotlib
    except ModuleNotFoundError as e:  # pragma: no cover - environment dependent
        raise SystemExit("error: the benchmark plots need matplotlib: pip install matplotlib") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def header(title: str, data: Dict) -> str:
    """Markdown header: title, date, command, machine."""
    env = data.get("environment", {})
    return (
        f"## {title}\n\n"
        f"Measured {data.get('date', now())} with `{data.get('command', command_line())}` "
        f"(torch {env.get('torch')}, {env.get('threads')} CPU thread(s), {env.get('cpu_count')} cores visible"
        + (f", {env['cpu']}" if env.get("cpu") else "")
        + ").\n"
    )
