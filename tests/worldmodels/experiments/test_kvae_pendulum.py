"""``worldmodels experiment kvae-pendulum`` (Table 6.1): every phase end to end on a tiny budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worldmodels.cli import main

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.usefixtures("one_thread")
def test_all_phases_on_a_tiny_budget(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tiny = ["--sequences", "32", "--epochs", "7", "--data-dir", str(tmp_path / "data"),
            "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    assert main(["experiment", "kvae-pendulum", "--phase", "eval", *tiny]) == 2  # nothing trained yet
    assert "expected KVAE (CNN) trained for 5 epochs (--epochs 7)" in capsys.readouterr().err
    assert main(["experiment", "kvae-pendulum", *tiny]) == 0
    rec = json.loads((tmp_path / "results" / "kvae_pendulum.json").read_text())
    committed = json.loads((ROOT / "docs" / "results" / "kvae_pendulum.json").read_text())
    assert set(committed) <= set(rec) and set(committed["metrics"]) == set(rec["metrics"])
    m = rec["metrics"]
    assert list(m["test_elbo"]) == ["KVAE (CNN)", "KVAE (MLP)", "DMM"] == list(m["train_wall_clock_s"])
    assert m["best_epoch"] == {"KVAE (CNN)": 5, "KVAE (MLP)": 5, "DMM": 5}
    assert m["budget"] == rec["budget"] and m["budget"]["sequences"] == "32/32/32"
    assert rec["wall_clock_s"] >= sum(m["train_wall_clock_s"].values()) - 0.2
    assert {p.name for p in (tmp_path / "data" / "pendulum_T15").iterdir()} == {"train32", "valid32", "test32"}
    assert (tmp_path / "runs" / "kvae_pendulum_best_dmm_video").is_dir()
    page = (tmp_path / "results" / "kvae.md").read_text()
    assert "### 3. Pixel pendulum with torque control (§6.5.2, Table 6.1)" in page
    assert f"| DMM | {m['test_elbo']['DMM']:.2f} | 784.7 |" in page


def test_bad_options_are_refused(capsys: pytest.CaptureFixture) -> None:
    assert main(["experiment", "kvae-pendulum", "--epochs", "3", "--phase", "report"]) == 2
    assert "expected --epochs >= 5 (validation every 5 epochs), received 3" in capsys.readouterr().err
    assert main(["experiment", "kvae-pendulum", "--sequences", "8", "--phase", "report"]) == 2
