"""``make reliability`` (worldmodels.experiments.reliability): each job in its own pytest, counts, the page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worldmodels.experiments import reliability

ROOT = Path(__file__).resolve().parents[3]

TOY = '''
import json, os
from hypothesis import given, settings, strategies as st

@settings(max_examples=int(os.environ["WM_HYPOTHESIS_EXAMPLES"]), database=None, derandomize=True)
@given(st.integers())
def test_property(x):
    assert x == x

def test_fault():
    with open(os.environ["WM_FAULT_REPORT"], "w") as f:
        json.dump({"kills": int(os.environ["WM_FAULT_KILLS"]), "mid_write": 1, "runs": 4}, f)

def test_fails():
    assert False, "a broken check"
'''


def test_the_committed_page_is_the_markdown_of_the_committed_json(tmp_path: Path) -> None:
    page = (ROOT / "docs" / "reliability.md").read_text()
    assert reliability.markdown(json.loads((ROOT / "docs" / "reliability.json").read_text())) == page
    (tmp_path / "r.json").write_text((ROOT / "docs" / "reliability.json").read_text())
    assert reliability.render(tmp_path / "r").read_text() == page


def test_every_job_names_tests_that_exist() -> None:
    for _, what, tests in reliability.JOBS:
        for test in tests.split():
            path, _, name = test.partition("::")
            assert what and f"def {name.split('[')[0]}(" in (ROOT / path).read_text(), test


def test_run_counts_cases_reads_the_fault_report_and_writes_json_and_page(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    toy = tmp_path / "test_toy.py"
    toy.write_text(TOY)
    jobs = [("property", "a toy property", f"{toy}::test_property"), ("fault", "a toy fault", f"{toy}::test_fault"),
            ("check", "a broken check", f"{toy}::test_fails")]
    out = tmp_path / "reliability"
    rec = reliability.run(examples=7, kills=3, out=out, command="python scripts/reliability.py --examples 7",
                          jobs=jobs, progress=False)
    prop, fault, check = rec["rows"]
    assert prop["passed"] and prop["cases"] == 7 and prop["failing"] == 0
    assert fault["passed"] and (fault["kills"], fault["mid_write"], fault["runs"]) == (3, 1, 4)
    assert not check["passed"] and "a broken check" in capsys.readouterr().err
    assert rec["examples_per_property"] == 7 and rec["git_commit"] and rec["machine"]
    assert json.loads(out.with_suffix(".json").read_text()) == rec
    page = out.with_suffix(".md").read_text()
    assert page == reliability.markdown(rec) and "Command: `python scripts/reliability.py --examples 7`" in page
    assert "| a toy property | 7 | 0 | yes |" in page and "| a toy fault | 3 | 1 | 4 | yes |" in page
    assert "| a broken check | NO |" in page
