"""Every third-party package the code imports is declared in pyproject.toml (and pinned in
constraints.txt), so a fresh install has it: an import that only works because some other
package happened to pull it in breaks the day that package stops doing so."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ("psvae", "search", "cluster", "results_schema", "bench")


def _name(requirement: str) -> str:
    """'ray[default,tune]>=2.60' -> 'ray' (normalised as PEP 503 does)."""
    match = re.match(r"[A-Za-z0-9_.-]+", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    for extra, requirements in project["optional-dependencies"].items():
        if extra != "dev":  # dev tools are not what the code may import
            names |= {_name(r) for r in requirements}
    return names


def _imported_top_levels() -> dict[str, str]:
    """Top-level module -> one file importing it, for every import anywhere (inside functions too)."""
    found: dict[str, str] = {}
    for package in CODE:
        for file in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.Import):
                    tops = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    tops = [node.module.split(".")[0]]
                else:
                    continue
                for top in tops:
                    found.setdefault(top, str(file.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_a_declared_dependency():
    declared = _declared()
    distributions = metadata.packages_distributions()
    own = set(CODE) | {f.stem for f in (ROOT / "bench").glob("*.py")}  # bench scripts import siblings
    missing = []
    for top, file in _imported_top_levels().items():
        if top in sys.stdlib_module_names or top in own:
            continue
        dists = {_name(d) for d in distributions.get(top, [top])}
        if not dists & declared:
            missing.append(f"{top} (from {file}; distribution {sorted(dists)})")
    assert not missing, "imported but not declared in pyproject.toml: " + ", ".join(missing)


def test_every_declared_dependency_is_pinned():
    pinned = {
        _name(line.split("==")[0])
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    }
    assert _declared() - pinned == set()
