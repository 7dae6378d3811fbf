"""The wall between simulation and perception (ARCHITECTURE.md, "Three walls").

Every module in vision/ outside vision/sim/, and cabinet/reconcile.py, is walked through its
imports (every `import` statement anywhere in the file, lazy ones inside functions included),
transitively through the project's own packages. None may reach vision.sim: the reader must
learn products from photos and cameras from calibration frames, never from how the simulator
draws. The walker itself is tested on a small tree with a planted violation.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vision", "cabinet", "billing", "firmware_bridge")
SIM = "vision.sim"
# what the simulator's drawing is made of: a reader that names one of these knows how it draws
SIM_NAMES = ("PANEL_BGR", "BOARD_BGR", "FOREIGN_BGR", "render_cell", "render_shelf", "ProductLook")


def module_file(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(root: Path, name: str, path: Path) -> set[str]:
    """Project modules `path` (module `name`) imports anywhere in its body."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from vision import sim`
    out = set()
    for mod in found:
        if mod.split(".")[0] in PACKAGES and module_file(root, mod) is not None:
            out.add(mod)
    return out


def sim_paths(root: Path, start: str) -> list[list[str]]:
    """Import chains from `start` that reach a vision.sim module (empty: the wall holds)."""
    chains, seen = [], {start}
    stack = [[start]]
    while stack:
        chain = stack.pop()
        path = module_file(root, chain[-1])
        for mod in sorted(imports_of(root, chain[-1], path)):
            if mod == SIM or mod.startswith(SIM + "."):
                chains.append(chain + [mod])
            elif mod not in seen:
                seen.add(mod)
                stack.append(chain + [mod])
    return chains


def reader_modules(root: Path) -> list[str]:
    mods = [".".join(p.relative_to(root).with_suffix("").parts)
            for p in sorted((root / "vision").rglob("*.py"))
            if "sim" not in p.relative_to(root / "vision").parts[:1]]
    mods = [m.removesuffix(".__init__") for m in mods]
    return mods + ["cabinet.reconcile"]


@pytest.mark.parametrize("module", reader_modules(ROOT))
def test_no_reader_module_reaches_the_simulator(module):
    chains = sim_paths(ROOT, module)
    assert not chains, "the reader imports the simulator: " + "; ".join(" -> ".join(c) for c in chains)


def test_the_reader_names_nothing_the_simulator_draws_with():
    reader = ROOT / "vision" / "diff.py"
    text = reader.read_text(encoding="utf-8")
    named = [n for n in SIM_NAMES if n in text]
    assert not named, f"{reader} names {named}: it must learn cameras from calibration frames"


def test_the_reader_list_covers_the_reader_and_leaves_the_simulator_out():
    mods = reader_modules(ROOT)
    assert {"vision.diff", "vision.calibration", "vision.cameras", "cabinet.reconcile"} <= set(mods)
    assert not [m for m in mods if m.startswith(SIM)]


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_walker_finds_a_lazy_import_two_modules_away(tmp_path):
    root = _tree(tmp_path, {
        "vision/__init__.py": "", "vision/sim/__init__.py": "", "vision/sim/render.py": "X = 1\n",
        "vision/diff.py": "from vision import helper\n",
        "vision/helper.py": "def f():\n    from cabinet.catalog import g\n",
        "cabinet/__init__.py": "", "cabinet/catalog.py": "def g():\n    import vision.sim.render\n",
    })
    assert sim_paths(root, "vision.diff") == [
        ["vision.diff", "vision.helper", "cabinet.catalog", "vision.sim.render"]]


def test_the_walker_finds_relative_and_package_imports(tmp_path):
    root = _tree(tmp_path, {
        "vision/__init__.py": "", "vision/sim/__init__.py": "", "vision/sim/camera.py": "",
        "vision/a.py": "from .sim import camera\n", "vision/b.py": "from vision import sim\n",
        "vision/c.py": "import numpy\nfrom vision import a as _\n",
    })
    assert sim_paths(root, "vision.a") == [["vision.a", "vision.sim"], ["vision.a", "vision.sim.camera"]]
    assert sim_paths(root, "vision.b") == [["vision.b", "vision.sim"]]
    assert sim_paths(root, "vision.c")[0][:2] == ["vision.c", "vision.a"]
