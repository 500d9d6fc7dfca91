"""The README's result tables are generated from benchmarks/results/*.json and must match them."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_match_the_benchmark_results():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "update_readme.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture
def update_readme(tmp_path, monkeypatch):
    """The script as a module, with its output files pointed into tmp_path (never the repo's copies)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import update_readme as module

    monkeypatch.setattr(module, "README", tmp_path / "README.md")
    summary = tmp_path / "evaluate_summary.md"
    summary.write_text(module.EVALUATE_SUMMARY.read_text())  # up to date (checked above): only the README is stale below
    monkeypatch.setattr(module, "EVALUATE_SUMMARY", summary)
    return module


def test_check_detects_a_stale_table(tmp_path, update_readme):
    stale = tmp_path / "README.md"
    stale.write_text(ROOT.joinpath("README.md").read_text().replace("<!-- begin:smart_vs_ar -->\n", "<!-- begin:smart_vs_ar -->\n| edited |\n", 1))
    assert update_readme.main(["--check"]) == 1
    assert update_readme.main([]) == 0 and update_readme.main(["--check"]) == 0
    assert "| edited |" not in stale.read_text()


def test_unknown_blocks_are_rejected(tmp_path, update_readme):
    (tmp_path / "README.md").write_text("<!-- begin:nonsense -->\n<!-- end:nonsense -->\n")
    with pytest.raises(SystemExit, match="known: reconstruction"):
        update_readme.main(["--check"])
