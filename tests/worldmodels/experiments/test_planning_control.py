"""planning-control end to end on a tiny budget: untrained debug KVAEs, 1 episode of 3 steps per agent."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from worldmodels.checkpoint import save
from worldmodels.cli import main
from worldmodels.models import build_model


def test_eval_and_report_phases_write_record_plot_gifs_and_page(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ball, pendulum = tmp_path / "ball", tmp_path / "pendulum"
    save(ball, build_model("kvae", "debug", obs_shape=(1, 32, 32), action_dim=2))
    save(pendulum, build_model("kvae", "debug", obs_shape=(1, 16, 16), action_dim=1))
    out = tmp_path / "results"
    assert main(["experiment", "planning-control", "--checkpoint", str(ball), "--pendulum-checkpoint",
                 str(pendulum), "--episodes", "1", "--max-steps", "3", "--horizon", "2", "--candidates", "8",
                 "--iterations", "1", "--pendulum-episodes", "1", "--pendulum-steps", "2",
                 "--results", str(out)]) == 0
    rec = json.loads((out / "planning_control.json").read_text())
    assert rec["experiment"] == "planning_control" and rec["seed"] == 0
    assert rec["command"].startswith(f"worldmodels experiment planning-control --checkpoint {ball} ")
    assert list(rec["metrics"]["ball_region"]) == ["CEM on KVAE", "CEM on true dynamics", "random",
                                                   "MPPI on KVAE", "MPPI on true dynamics"]
    assert list(rec["metrics"]["pendulum_swing_up"]) == ["CEM on KVAE", "CEM on true dynamics", "random"]
    assert rec["budget"] == {"ball_episodes": 1, "ball_steps": 3, "pendulum_episodes": 1, "pendulum_steps": 2}
    assert "Pendulum model: `" in rec["notes"][1]
    media = out / "planning"
    assert (media / "control_ball_success.png").exists()
    assert {p.name for p in (media / "control_ball_cem").iterdir()} == {"model.gif", "true.gif", "random.gif"}
    assert {p.name for p in (media / "control_pendulum").iterdir()} == {"model.gif", "true.gif", "random.gif"}
    page = (out / "planning.md").read_text()
    assert "## Experiment 3 — continuous control with a KVAE (MPC: CEM / MPPI)" in page
    assert "![control_ball_success](planning/control_ball_success.png)" in page
    assert "| MPPI on KVAE |" in page
