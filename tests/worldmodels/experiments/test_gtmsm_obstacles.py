"""``worldmodels experiment gtmsm-obstacles`` (§7.10.1): every phase on a tiny budget, the step classification,
and the results page from the committed JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from worldmodels import experiments
from worldmodels.experiments import gtmsm_obstacles as go

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[3]


def test_every_phase_on_a_tiny_budget(tmp_path: Path) -> None:
    """No warm start (``--init-from ''``): the ``imagenav`` preset from scratch, 3 updates per variant."""
    args = go.Args(out=str(tmp_path / "runs"), results=str(tmp_path / "res"), train_episodes=4, test_episodes=3,
                   tau=16, train_pred=8, test_horizon=8, updates=3, batch_size=2, checkpoint_every=2, init_from="")
    experiments.get("gtmsm-obstacles").run(args)
    rec = json.loads((tmp_path / "res" / "gtmsm_obstacles.json").read_text())
    assert rec["experiment"] == "gtmsm_obstacles" and rec["args"]["tau"] == 16 and "phase" not in rec["args"]
    m = rec["metrics"]
    assert set(m["summary"]) == {"prior", "landmark", "no_memory", "memory_copy"} and m["episodes"] == 3
    assert {v: info["updates"] for v, info in m["training"].items()} == {"prior": 3, "landmark": 3}
    assert set(m["states"]) == {"prior", "landmark"} and set(m["landmark_beta"]) == {"landmark"}
    assert rec["budget"] == {"test_episodes": 3, "prior_updates": 3, "landmark_updates": 3}
    for f in ("gtmsm_obstacles_error.png", "gtmsm_obstacles_states.png", "gtmsm_obstacles_predictions.gif"):
        assert (tmp_path / "res" / f).stat().st_size > 0
    page = (tmp_path / "res" / "gtmsm_obstacles.md").read_text()
    assert f"Command: `{rec['command']}`" in page and "| landmark | " in page
    with pytest.raises(ValueError, match=r"--variant: expected one of \('prior', 'landmark'\), received 'x'"):
        go.train_variant(args, "x")


def test_step_kinds_tell_obstacle_wall_free_and_stay_apart() -> None:
    # t = 1: up from (1, 1) but still there -> obstacle; t = 2: up to (0, 1) -> free; t = 3: right -> free;
    # t = 4: stay
    action = torch.nn.functional.one_hot(torch.tensor([[0, 0, 0, 3, 4]]), 5).double()
    action[:, 0] = 0  # no action led to the first frame
    pose = torch.tensor([[[1, 1], [1, 1], [0, 1], [0, 2], [0, 2]]]).double()
    kinds = go.step_kinds(action, pose)
    assert kinds["obstacle"].tolist() == [[False, True, False, False, False]]
    assert kinds["free"].tolist() == [[False, False, True, True, False]]
    assert kinds["stay"].tolist() == [[False, False, False, False, True]]
    wall = go.step_kinds(action[:, :2], torch.zeros(1, 2, 2))  # up from row 0: off the grid
    assert wall["wall"].tolist() == [[False, True]] and not wall["obstacle"].any()


def test_report_regenerates_the_committed_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = tmp_path / "docs" / "results"
    res.mkdir(parents=True)
    for f in ("gtmsm_obstacles.json", "gtmsm_obstacles_notes.md"):
        shutil.copy(ROOT / "docs" / "results" / f, res / f)
    monkeypatch.chdir(tmp_path)
    go.report(go.Args())
    assert (res / "gtmsm_obstacles.md").read_text() == (ROOT / "docs" / "results" / "gtmsm_obstacles.md").read_text()
