"""The installable package: a wheel built from the checkout (offline) imports outside the checkout with its
package data, and every third-party module the code imports is declared in pyproject.toml."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import tomllib
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
FIRST_PARTY = {"ghost", "experiments", "tests", "hubconf", *(path.stem for path in REPO.glob("tests/*.py"))}


def test_wheel_installs_and_imports_outside_the_checkout(tmp_path):
    """Built from a copy holding only what the build reads (pyproject.toml, README.md, ghost/), so that the
    checkout gets no build/ or egg-info; installed with --no-deps next to this environment's dependencies."""
    source = tmp_path / "source"
    shutil.copytree(REPO / "ghost", source / "ghost", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist"),
                    str(source)], check=True, timeout=120)
    (wheel,) = (tmp_path / "dist").glob("ghost-0.1.0-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ghost/recipes/quick.json" in names and "ghost/models/weights.py" in names
    assert not any(name.startswith(("experiments/", "tests/")) for name in names)
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(tmp_path / "site"), str(wheel)],
                   check=True, timeout=120)
    work = tmp_path / "elsewhere"
    work.mkdir()
    script = (
        "import json, ghost, ghost.predict; from ghost.train import list_recipes, load_recipe; "
        "print(json.dumps([ghost.__file__, load_recipe('quick').epochs, len(list_recipes())]))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run([sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    location, epochs, recipes = json.loads(done.stdout)
    assert Path(location).is_relative_to(tmp_path / "site")  # the installed copy, not the checkout
    assert epochs == 1 and recipes == len(list((REPO / "ghost" / "recipes").glob("*.json")))


def _imported_modules(source: str) -> set[str]:
    """Top-level names of the absolute imports in ``source`` (at any depth: lazy imports count)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _code_sources() -> dict[str, str]:
    files = [*REPO.glob("ghost/**/*.py"), *REPO.glob("experiments/*.py"), *REPO.glob("tests/*.py"),
             REPO / "hubconf.py"]
    sources = {str(path.relative_to(REPO)): path.read_text(encoding="utf-8") for path in files}
    for path in REPO.glob("notebooks/*.ipynb"):
        cells = nbformat.read(path, as_version=4).cells
        lines = [line for cell in cells if cell.cell_type == "code" for line in cell.source.splitlines()]
        sources[str(path.relative_to(REPO))] = "\n".join(line for line in lines if not line.startswith("%"))
    return sources


def test_every_imported_package_is_declared():
    project = PYPROJECT["project"]
    declared = {Requirement(r).name.lower() for r in project["dependencies"]}
    declared |= {Requirement(r).name.lower() for extra in project["optional-dependencies"].values() for r in extra}
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for file, source in _code_sources().items():
        for module in _imported_modules(source) - FIRST_PARTY - set(sys.stdlib_module_names):
            providers = {name.lower() for name in distributions.get(module, [module])}
            if not providers & declared:
                undeclared.setdefault(module, []).append(file)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_dependencies_are_pinned_in_one_place():
    project = PYPROJECT["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values()
                                                for r in extra)]
    for text in requirements:
        requirement = Requirement(text)
        if requirement.name != "ghost":  # the 'all' extra refers to the other extras
            assert requirement.specifier, f"{text} is neither pinned nor bounded"
    assert "torch===2.13.0" in project["dependencies"]
    lines = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert [line for line in lines if line and not line.startswith("#")] == ["-e .[all]"]
