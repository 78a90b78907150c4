"""Reproducible installs: every distribution in the virtual environment is the exact
version `constraints.txt` pins, every dependency `pyproject.toml` names is pinned there, and
the set-up script installs from it (pip, setuptools and the editable build included)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    pinned: dict[str, str] = {}
    for raw in (ROOT / "constraints.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and version and ";" not in version, f"not an exact pin: {raw!r}"
        assert canonical(name) not in pinned, f"pinned twice: {name}"
        pinned[canonical(name)] = version
    return pinned


def test_every_installed_distribution_is_pinned_at_its_exact_version() -> None:
    """Promise: the venv holds exactly what constraints.txt pins, nothing unpinned."""
    pinned = pins()
    project = canonical(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"])
    installed = {
        canonical(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
    }
    installed.pop(project)
    assert {"pip", "setuptools"} <= installed.keys()
    wrong = {
        name: (version, pinned.get(name))
        for name, version in installed.items()
        if pinned.get(name) != version
    }
    assert not wrong, f"installed (version, pin) not matching constraints.txt: {wrong}"


def test_every_declared_dependency_is_pinned() -> None:
    """Promise: each dependency of pyproject.toml (runtime and dev) resolves from a pin."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        declared += extra
    declared += tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    pinned = pins()
    missing = []
    for requirement in declared:
        match = _NAME.match(requirement)
        assert match, requirement
        if canonical(match.group(1)) not in pinned:
            missing.append(requirement)
    assert not missing, f"declared but not pinned in constraints.txt: {missing}"


def test_the_set_up_installs_from_the_constraints() -> None:
    """Promise: `make setup` (scripts/bootstrap) installs with -c constraints.txt, for the
    build environment too, and reinstalls when constraints.txt changes."""
    bootstrap = (ROOT / "scripts" / "bootstrap").read_text()
    installs = [line for line in bootstrap.splitlines() if "pip install" in line]
    assert installs, "scripts/bootstrap installs nothing"
    for line in installs:
        assert "-c constraints.txt" in line, line
        assert "--upgrade" not in line, f"an unpinned upgrade: {line}"
    assert any("--build-constraint constraints.txt" in line and "-e" in line for line in installs)
    makefile = (ROOT / "Makefile").read_text()
    stamp_rule = next(line for line in makefile.splitlines() if line.startswith("$(STAMP):"))
    assert "constraints.txt" in stamp_rule and "scripts/bootstrap" in stamp_rule
