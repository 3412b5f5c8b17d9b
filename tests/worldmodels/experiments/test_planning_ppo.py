"""planning-ppo end to end on a tiny budget: an untrained debug KVAE, one PPO rollout each, 1 evaluation episode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from worldmodels.experiments.planning_ppo import FixedRegion, TrueReward


def test_fixed_region_and_true_reward() -> None:
    import gymnasium as gym

    import envs  # noqa: F401

    task = FixedRegion((11.0, 21.0), max_steps=5)
    env = TrueReward(gym.make("BouncingBallForce-v0"), task)
    _, info = env.reset(seed=0)
    task.reset(env, None, info, np.random.default_rng(1))
    assert task.centre.tolist() == [11.0, 21.0]
    _, reward, *_, info = env.step(np.zeros(2, np.float32))
    assert reward == pytest.approx(-task.distance(env, info) ** 2 / 100.0)


def test_train_and_report_phases_write_record_plot_gifs_and_page(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    from agents.explorers import explorer_factory
    from worldmodels.checkpoint import save
    from worldmodels.cli import main
    from worldmodels.data import collect
    from worldmodels.models import build_model

    torch.manual_seed(0)
    data = collect("BouncingBallForce-v0", tmp_path / "data", episodes=4, steps=8,
                   policy=explorer_factory("poisson"), progress=False)
    ckpt = tmp_path / "kvae"
    save(ckpt, build_model("kvae", "debug", obs_shape=(1, 32, 32), action_dim=2))
    out = tmp_path / "results"
    assert main(["experiment", "planning-ppo", "--checkpoint", str(ckpt), "--data", str(data), "--steps", "64",
                 "--num-envs", "2", "--context", "3", "--max-steps", "4", "--eval-episodes", "1",
                 "--results", str(out)]) == 0
    rec = json.loads((out / "planning_ppo.json").read_text())
    assert rec["experiment"] == "planning_ppo" and "--steps 64" in rec["command"]
    names = ["PPO in KVAE imagination", "PPO on real steps", "random"]
    assert list(rec["metrics"]["evaluation"]) == names
    assert rec["metrics"]["training"]["PPO in KVAE imagination"]["real_env_steps"] == 0
    assert rec["metrics"]["training"]["PPO on real steps"]["real_env_steps"] == 64
    media = out / "planning"
    assert {p.name for p in media.iterdir()} == {"ppo_success.png", "ppo_in_imagination.gif",
                                                 "ppo_on_real_steps.gif", "ppo_random_baseline.gif"}
    page = (out / "planning.md").read_text()
    assert "## Experiment 4 — PPO trained inside the KVAE (ImaginationEnv) vs PPO on real steps" in page
    assert "- GIF: [ppo_on_real_steps.gif](planning/ppo_on_real_steps.gif)" in page
    assert "| PPO in KVAE imagination |" in page and "**training**" in page
