"""Dependencies run one way: ``envs <- worldmodels core <- agents <- worldmodels.experiments / worldmodels.cli``.

The import graph is read from the source (AST, imports inside functions included), so a cycle hidden by
a function-level import fails here too. Scripts are thin: no ``sys.path`` inserts, no imports of other
scripts, at most 60 lines. Scripts still being migrated into ``worldmodels/experiments`` are listed in
``LEGACY`` (a ratchet: an entry that no longer breaks the rules must be removed from the list).
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

# scripts (and tests) not yet migrated: what each still does against the rules
LEGACY: set[str] = {
}


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


def _script_problems(path: Path) -> list[str]:
    text = path.read_text()
    problems = []
    if "sys.path.insert" in text or "sys.path.append" in text:
        problems.append("sys.path insert")
    if "spec_from_file_location" in text:
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


THIN = sorted(p for p in [*(ROOT / "scripts").glob("*.py"), *(ROOT / "tests").rglob("*.py")]
              if p != Path(__file__).resolve())  # this file names the patterns it looks for


@pytest.mark.parametrize("path", THIN,
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_scripts_and_tests_are_thin_and_import_only_packages(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    problems = _script_problems(path)
    if rel in LEGACY:
        assert problems, f"{rel} follows the rules now: remove it from LEGACY"
    else:
        assert problems == [], f"{rel}: {problems}"


@pytest.mark.parametrize("code", ["import worldmodels.cli", "import worldmodels, worldmodels.experiments",
                                  "from worldmodels.cli import main; main(['--help'])"])
def test_the_cli_starts_without_torch(code: str) -> None:
    probe = f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
