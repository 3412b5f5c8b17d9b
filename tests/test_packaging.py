"""The distribution ships the three import packages the user asked for, typed, with the CLI."""

import ast
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("worldmodels", "envs", "agents")


def test_wheel_contains_all_packages_typed_and_the_console_script(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("worldmodels-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == set(PACKAGES)
    for pkg in PACKAGES:
        assert f"{pkg}/py.typed" in names
    assert "worldmodels/models/__init__.py" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "worldmodels = worldmodels.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_editable_install_resolves_to_this_checkout() -> None:
    for pkg in PACKAGES:
        spec = importlib.util.find_spec(pkg)
        assert spec is not None and spec.origin is not None
        assert Path(spec.origin).resolve().is_relative_to(ROOT), (pkg, spec.origin)


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] if a.name.split(".")[0] in PACKAGES else a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_dependencies_point_one_way() -> None:
    """DESIGN §1: envs imports nothing of ours; only worldmodels/cli.py and worldmodels/experiments/ import
    agents; kalman.py and memory.py know no model; agents use models only through worldmodels.api (and loading
    helpers)."""
    for path in (ROOT / "envs").rglob("*.py"):
        ours = {m for m in _imports(path) if m.split(".")[0] in ("worldmodels", "agents")}
        assert not ours, f"{path.relative_to(ROOT)} imports {ours}"
    for path in (ROOT / "worldmodels").rglob("*.py"):
        if path.name == "cli.py" or path.parent == ROOT / "worldmodels" / "experiments":
            continue
        uses_agents = {m for m in _imports(path) if m.split(".")[0] == "agents"}
        assert not uses_agents, f"{path.relative_to(ROOT)} imports {uses_agents}"
    for name in ("kalman.py", "memory.py"):
        models = {m for m in _imports(ROOT / "worldmodels" / name) if m.startswith("worldmodels.models")}
        assert not models, f"worldmodels/{name} imports {models}"
    for path in (ROOT / "agents").rglob("*.py"):
        models = {m for m in _imports(path) if m.startswith("worldmodels.models.")}
        assert not models, f"{path.relative_to(ROOT)} reaches into a model module: {models}"
