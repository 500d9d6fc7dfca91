"""The README's result tables are generated from benchmarks/results/*.json and must match them."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_match_the_benchmark_results():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "update_readme.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_detects_a_stale_table(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import update_readme
    finally:
        sys.path.pop(0)
    stale = tmp_path / "README.md"
    stale.write_text(ROOT.joinpath("README.md").read_text().replace("<!-- begin:smart_vs_ar -->\n", "<!-- begin:smart_vs_ar -->\n| edited |\n", 1))
    monkeypatch.setattr(update_readme, "README", stale)
    monkeypatch.setattr(update_readme, "EVALUATE_SUMMARY", tmp_path / "evaluate_summary.md")  # never write the repo's copy
    assert update_readme.main(["--check"]) == 1
    assert update_readme.main([]) == 0 and update_readme.main(["--check"]) == 0
    assert "| edited |" not in stale.read_text()
