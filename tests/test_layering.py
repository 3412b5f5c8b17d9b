"""Dependencies run one way: ``envs <- worldmodels core <- agents <- worldmodels.experiments / worldmodels.cli``.

The import graph is read from the source (AST, imports inside functions included), so a cycle hidden by
a function-level import fails here too. Scripts are thin: no ``sys.path`` inserts, no imports of other
scripts, at most 60 lines (the experiments live in ``worldmodels/experiments``; scripts are shims of
``worldmodels experiment NAME``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("envs", "worldmodels", "agents")
TOP = ("worldmodels.cli", "worldmodels.experiments", "worldmodels.__main__")  # may import agents
MAX_SCRIPT_LINES = 60

def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(f): f for pkg in PACKAGES for f in sorted((ROOT / pkg).rglob("*.py"))}


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules that ``path`` (module ``name``) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return {m for m in out if m in known} - {name}


def import_graph() -> dict[str, set[str]]:
    mods = project_modules()
    return {name: imported_modules(path, name, set(mods)) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def layer(module: str) -> int:
    if module.startswith(TOP):
        return 3
    return PACKAGES.index(module.split(".")[0])


def test_the_cycle_finder_finds_cycles_and_only_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"b"}}) == []
    assert imported_modules(ROOT / "worldmodels" / "evaluate.py", "worldmodels.evaluate",
                            set(project_modules())) >= {"worldmodels.api", "worldmodels.data"}


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_dependencies_run_one_way() -> None:
    against = sorted((a, b) for a, bs in import_graph().items() for b in bs if layer(a) < layer(b))
    assert against == [], f"imports against the layering envs <- worldmodels <- agents <- cli/experiments: {against}"


# the patterns, spelled in parts so that this file does not contain them (it is checked too)
PATH_EDITS = tuple(".".join(("sys", "path", verb)) for verb in ("insert", "append"))
FILE_LOADS = "_".join(("spec", "from", "file", "location"))


def _script_problems(path: Path) -> list[str]:
    text = path.read_text()
    problems = []
    if any(edit in text for edit in PATH_EDITS):
        problems.append("sys.path insert")
    if FILE_LOADS in text:
        problems.append("loads a file as a module")
    siblings = {p.stem for p in (ROOT / "scripts").glob("*.py")}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom | ast.Import):
            mods = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            if any(m.split(".")[0] in siblings | {"scripts"} for m in mods):
                problems.append(f"imports a script ({mods[0]})")
                break
    if path.parent.name == "scripts" and len(text.splitlines()) > MAX_SCRIPT_LINES:
        problems.append(f"{len(text.splitlines())} lines (> {MAX_SCRIPT_LINES})")
    return problems


THIN = sorted([*(ROOT / "scripts").glob("*.py"), *(ROOT / "tests").rglob("*.py")])


@pytest.mark.parametrize("path", THIN,
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_scripts_and_tests_are_thin_and_import_only_packages(path: Path) -> None:
    assert _script_problems(path) == [], f"{path.relative_to(ROOT)}: {_script_problems(path)}"


@pytest.mark.parametrize("code", ["import worldmodels.cli", "import worldmodels, worldmodels.experiments",
                                  "from worldmodels.cli import main; main(['--help'])"])
def test_the_cli_starts_without_torch(code: str) -> None:
    probe = f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_the_script_rules_catch_what_they_name(tmp_path: Path) -> None:
    bad = tmp_path / "scripts" / "bad.py"
    bad.parent.mkdir()
    bad.write_text(f"import {PATH_EDITS[0].rsplit('.', 1)[0]}\n{PATH_EDITS[0]}(0, 'x')\n"
                   f"import importlib.util\nimportlib.util.{FILE_LOADS}\nfrom scripts import x\n" + "pass\n" * 60)
    assert _script_problems(bad) == ["sys.path insert", "loads a file as a module", "imports a script (scripts)",
                                     "65 lines (> 60)"]
