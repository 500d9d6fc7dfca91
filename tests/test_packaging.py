"""Declared dependency ranges: every direct dependency has a tested lower bound and an upper bound."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra if not r.startswith("m6-fashion")]
    return reqs


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_direct_dependency_has_a_lower_and_an_upper_bound():
    for req in declared():
        ops = {s.operator for s in req.specifier}
        assert ops & {">=", "=="}, f"{req} has no lower bound"
        assert ops & {"<", "=="}, f"{req} has no upper bound"


def test_lowest_constraints_pin_exactly_the_declared_lower_bounds():
    """.ci/constraints-min.txt is what the lowest-versions CI step installs: it must be the lower bounds."""
    minimum = pins(ROOT / ".ci" / "constraints-min.txt")
    for req in declared():
        if norm(req.name) == "torch":
            continue  # installed first, at the version the README names
        lower = [s.version for s in req.specifier if s.operator in (">=", "==")][0]
        assert norm(req.name) in minimum, f"{req.name} is missing from .ci/constraints-min.txt"
        assert minimum[norm(req.name)] == lower or minimum[norm(req.name)].startswith(lower + "."), (
            f"{req.name}: pyproject says {req}, .ci/constraints-min.txt pins {minimum[norm(req.name)]}"
        )
        assert req.specifier.contains(minimum[norm(req.name)]), f"{req.name}=={minimum[norm(req.name)]} is outside {req}"
    extra = set(minimum) - {norm(r.name) for r in declared()}
    assert not extra, f".ci/constraints-min.txt pins packages that are not direct dependencies: {sorted(extra)}"


def test_lock_file_satisfies_the_declared_ranges():
    """requirements-lock.txt (the environment of the published numbers) lies inside the declared ranges."""
    locked = pins(ROOT / "requirements-lock.txt")
    for req in declared():
        assert norm(req.name) in locked, f"{req.name} is missing from requirements-lock.txt"
        version = locked[norm(req.name)].split("+")[0]
        assert req.specifier.contains(version), f"requirements-lock.txt has {req.name}=={version}, outside {req}"
