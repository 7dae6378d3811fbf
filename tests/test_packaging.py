"""Packaging tells the truth: pyproject.toml declares every third-party module the code imports,
and every declared distribution is imported (or listed below with the reason it is needed).

Imports are read with `ast` from every .py file (lazy imports inside functions included); the
module a distribution provides comes from the installed metadata (importlib.metadata), so
`opencv-python-headless` is known to provide `cv2` without a hand-kept table."""
from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cabinet", "firmware_bridge", "vision", "billing")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SHIM = tomllib.loads((ROOT / "scripts" / "dlib-shim" / "pyproject.toml").read_text())["project"]

# Declared but never imported by our code, each for a stated reason. Anything else declared and
# not imported is dead weight and fails the test.
NOT_IMPORTED = {
    "setuptools": "face_recognition_models imports pkg_resources, which setuptools 81 removes",
    "pytest-timeout": "a pytest plugin, used through the `timeout` option in pyproject.toml",
    "mutmut": "a command-line tool that `make mutation` runs",
    "python-multipart": "Starlette's request.form() parses the console's forms and uploads with it",
    "httpx2": "starlette.testclient drives the console and kiosk apps in tests with it",
}


# The `train` extra (torch, ultralytics, ...) lives in a separate virtualenv and is imported by
# vision/train.py alone: the cabinet never imports a training library. Its modules are not
# installed where the tests run, so they are matched by name: module -> distribution.
TRAIN_FILES = ("vision/train.py",)
TRAIN_MODULES = {"torch": "torch", "ultralytics": "ultralytics",
                 "matplotlib": "matplotlib"}
# Declared in the train extra for ultralytics (installed there with --no-deps), not imported by us.
TRAIN_NOT_IMPORTED = {
    "torchvision": "ultralytics' classification datasets and transforms",
    "ultralytics-thop": "ultralytics counts FLOPs with it when it builds a model",
    "polars": "ultralytics writes its results table with it",
    "psutil": "ultralytics checks memory with it",
    "scipy": "ultralytics' metrics and ops modules import it",
}


def norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def dist_name(requirement: str) -> str:
    for stop in "<>=!~[; ":
        requirement = requirement.split(stop, 1)[0]
    return norm(requirement.strip())


def imported_modules(files: list[Path], root: Path = ROOT) -> dict[str, set[str]]:
    """Top-level module -> the files that import it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(root)))
    return found


def third_party(found: dict[str, set[str]], local: set[str]) -> dict[str, set[str]]:
    return {m: f for m, f in found.items()
            if m not in sys.stdlib_module_names and m not in local and m != "__future__"}


def providers() -> dict[str, set[str]]:
    """Top-level module -> the installed distributions (normalised names) that provide it."""
    return {m: {norm(d) for d in dists} for m, dists in metadata.packages_distributions().items()}


def check(imports: dict[str, set[str]], declared: set[str]) -> tuple[list[str], set[str]]:
    """(problems with undeclared imports, the declared distributions that are imported)."""
    by_module = providers()
    problems, used = [], set()
    for module, files in sorted(imports.items()):
        dists = by_module.get(module, set())
        if not dists:
            problems.append(f"{module} (imported in {sorted(files)[0]}) is not installed; declare it in pyproject.toml")
        elif not dists & declared:
            problems.append(f"{module} (imported in {sorted(files)[0]}) comes from {sorted(dists)}, "
                            f"which pyproject.toml does not declare")
        used |= dists & declared
    return problems, used


def code_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                  if p.relative_to(ROOT).as_posix() not in TRAIN_FILES)


def train_files() -> list[Path]:
    return [ROOT / f for f in TRAIN_FILES]


def test_every_third_party_import_of_the_code_is_a_declared_dependency():
    runtime = {dist_name(r) for r in PYPROJECT["dependencies"]}
    imports = third_party(imported_modules(code_files()), set(PACKAGES))
    assert {"numpy", "cv2", "face_recognition"} <= set(imports)  # the scan sees the code
    problems, _ = check(imports, runtime)
    assert problems == []


def test_every_declared_dependency_is_imported_or_has_a_stated_reason():
    runtime = {dist_name(r) for r in PYPROJECT["dependencies"]}
    _, used = check(third_party(imported_modules(code_files()), set(PACKAGES)), runtime)
    unused = runtime - used - set(NOT_IMPORTED)
    assert unused == set(), f"declared in pyproject.toml but never imported: {sorted(unused)}"


def test_training_libraries_are_imported_only_by_the_trainer_and_declared_in_the_train_extra():
    runtime = {dist_name(r) for r in PYPROJECT["dependencies"]}
    train = {dist_name(r) for r in PYPROJECT["optional-dependencies"]["train"]}
    assert set(TRAIN_MODULES.values()) <= train
    outside = third_party(imported_modules(code_files()), set(PACKAGES))
    leaked = {m: sorted(f) for m, f in outside.items() if m in TRAIN_MODULES}
    assert leaked == {}, f"training libraries imported outside {TRAIN_FILES}: {leaked}"
    imports = third_party(imported_modules(train_files()), set(PACKAGES))
    assert {"torch", "ultralytics"} <= set(imports)           # the scan sees the trainer
    rest = {m: f for m, f in imports.items() if m not in TRAIN_MODULES}
    problems, _ = check(rest, runtime)
    assert problems == []
    unused = train - {TRAIN_MODULES[m] for m in imports if m in TRAIN_MODULES} - set(TRAIN_NOT_IMPORTED)
    assert unused == set(), f"train extra declares what nothing imports: {sorted(unused)}"


def test_test_imports_are_declared_and_test_extras_are_used():
    runtime = {dist_name(r) for r in PYPROJECT["dependencies"]}
    extras = {dist_name(r) for name, group in PYPROJECT["optional-dependencies"].items()
              if name != "train" for r in group}
    test_files = sorted((ROOT / "tests").rglob("*.py"))
    local = set(PACKAGES) | {p.stem for p in test_files} | {"tests"}
    imports = third_party(imported_modules(test_files), local)
    assert "pytest" in imports
    problems, used = check(imports, runtime | extras)
    assert problems == []
    unused = extras - used - set(NOT_IMPORTED)
    assert unused == set(), f"optional dependencies never imported: {sorted(unused)}"


def test_the_scan_catches_an_undeclared_import_and_an_unused_declaration(tmp_path):
    """The checks above can fail: an import of a module no declared distribution provides is
    reported, and a declared distribution nothing imports is left out of `used`."""
    source = tmp_path / "mod.py"
    source.write_text("import numpy\ndef later():\n    from yaml import safe_load\n")
    imports = third_party(imported_modules([source], tmp_path), set())
    assert set(imports) == {"numpy", "yaml"}
    problems, used = check(imports, {"numpy", "requests"})
    assert used == {"numpy"}
    assert len(problems) == 1 and "yaml" in problems[0] and "pyyaml" in problems[0]


def test_dlib_is_the_prebuilt_shim_so_pip_never_builds_it():
    """face-recognition requires `dlib`; scripts/dlib-shim is that distribution, with no code,
    depending only on dlib-bin. The environment the tests run in was set up through it."""
    assert SHIM["name"] == "dlib"
    assert [dist_name(r) for r in SHIM["dependencies"]] == ["dlib-bin"]
    face_rec = metadata.distribution("face-recognition")
    assert "dlib" in {dist_name(r) for r in face_rec.requires or ()}
    try:
        installed = metadata.version("dlib")
    except metadata.PackageNotFoundError:
        installed = None
    assert installed == SHIM["version"], (
        f"the installed `dlib` distribution is {installed}, not scripts/dlib-shim's {SHIM['version']}; "
        f"run `make setup` (without the shim pip would compile dlib from source)")
    files = [str(f) for f in metadata.distribution("dlib").files or ()]
    assert not any(f.endswith((".py", ".so")) for f in files), files
    # the module itself comes from dlib-bin (whose top_level.txt names only _dlib_pybind11)
    assert "dlib/__init__.py" in {str(f) for f in metadata.distribution("dlib-bin").files or ()}
