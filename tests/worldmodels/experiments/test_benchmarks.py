"""The benchmark runner (``make bench``, ``worldmodels bench``): groups, JSON + Markdown, rows kept per group."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from worldmodels.cli import main
from worldmodels.experiments import benchmarks

ROOT = Path(__file__).resolve().parents[3]


def test_the_committed_page_is_the_markdown_of_the_committed_json() -> None:
    results = json.loads((ROOT / "docs" / "benchmarks.json").read_text())
    assert benchmarks.markdown(results) == (ROOT / "docs" / "benchmarks.md").read_text()


def test_groups_are_the_modules_of_the_package(capsys: pytest.CaptureFixture) -> None:
    names = benchmarks.groups()
    assert names == sorted(names) and {"data", "envs", "kalman", "memory", "planning", "train"} <= set(names)
    assert main(["bench", "--list"]) == 0
    assert capsys.readouterr().out.strip() == "benchmark groups: " + ", ".join(names)


@pytest.fixture
def toy_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("toy_a", 2.0), ("toy_b", 3.0)):
        module = types.ModuleType(f"{benchmarks.__name__}.{name}")
        module.run = lambda name=name, value=value: [  # type: ignore[attr-defined]
            {"group": name, "name": f"{name} step", "value": value, "unit": "ms", "ratio": value, "met": True,
             "notes": "a note"}]
        monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(benchmarks, "groups", lambda: ["toy_a", "toy_b"])


@pytest.mark.usefixtures("toy_groups")
def test_run_writes_json_and_markdown_and_keeps_groups_not_run(tmp_path: Path) -> None:
    benchmarks.run(["toy_a"], docs=tmp_path)
    first = json.loads((tmp_path / "benchmarks.json").read_text())
    assert list(first["groups"]) == ["toy_a"] and first["groups"]["toy_a"]["rows"][0]["value"] == 2.0
    entry = first["groups"]["toy_a"]
    assert entry["git_commit"] and entry["machine"] and entry["wall_clock_s"] >= 0 and entry["date"]
    benchmarks.run(["toy_b"], docs=tmp_path)
    both = json.loads((tmp_path / "benchmarks.json").read_text())
    assert both["groups"]["toy_a"] == entry and both["groups"]["toy_b"]["rows"][0]["value"] == 3.0
    page = (tmp_path / "benchmarks.md").read_text()
    assert page == benchmarks.markdown(both)
    assert "## toy_a" in page and "| toy_b step | 3 ms |" in page and "- *toy_a step*: a note" in page


@pytest.mark.usefixtures("toy_groups")
def test_unknown_groups_are_refused_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match=r"expected groups in \['toy_a', 'toy_b'\], received \['nope'\]"):
        benchmarks.run(["toy_a", "nope"], docs=tmp_path)
    assert not (tmp_path / "benchmarks.json").exists()
    assert main(["bench", "--only", "nope"]) == 2
    assert "expected groups in" in capsys.readouterr().err
