"""Planning experiment 1 (``worldmodels experiment planning-imagenav``): BFS optimum, and on a tiny preset (slow)
GTM-SM localises the goal in memory and beats the random explorer; the report regenerates planning.md."""

from pathlib import Path

import numpy as np
import pytest
import torch

from worldmodels.experiments import planning_imagenav as pi

ROOT = Path(__file__).resolve().parents[3]


def test_shortest_path_is_bfs_with_obstacles() -> None:
    blocked = np.zeros((4, 4), bool)
    blocked[1, :3] = True  # a wall with a gap at column 3
    assert pi.shortest_path(blocked, (0, 0), (2, 0)) == 8
    assert pi.shortest_path(np.zeros((4, 4), bool), (0, 0), (3, 3)) == 6
    blocked[1, 3] = True
    with pytest.raises(ValueError, match="not reachable"):
        pi.shortest_path(blocked, (0, 0), (2, 0))


def test_models_option_errors_and_missing_checkpoints(tmp_path: Path) -> None:
    models, notes = pi.load_models(pi.Args(models=f"A=gtmsm:{tmp_path}/none"))
    assert models == {} and "no checkpoint" in notes[0]
    with pytest.raises(ValueError, match="expected kind gtmsm or pixels for 'A', received 'x'"):
        pi.load_models(pi.Args(models="A=x:runs/a"))
    with pytest.raises(ValueError, match="expected label=kind:checkpoint"):
        pi.load_models(pi.Args(models="A"))


def test_report_regenerates_the_committed_page(tmp_path: Path) -> None:
    results = ROOT / "docs" / "results"
    (tmp_path / "planning").symlink_to(results / "planning")
    for p in results.glob("planning_*.json"):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    pi.EXPERIMENT.run(pi.Args(results=str(tmp_path)), "report")
    assert (tmp_path / "planning.md").read_text() == (results / "planning.md").read_text()


@pytest.mark.slow
def test_gtmsm_agent_beats_random_explorer_on_tiny_imagenav(tmp_path) -> None:
    from envs.image_nav import MOVES
    from worldmodels.models.gtmsm import GTMSM, GTMSMConfig

    torch.manual_seed(0)
    torch.set_num_threads(1)
    # tiny preset: an untrained encoder and the true action matrix (linear transition, no wall gate) -- the
    # memory and the reverse lookup (localize) are what is exercised. A 29x29 grid keeps the 32-step
    # exploration away from the walls, where a linear transition would drift (a trained model learns σ_d).
    model = GTMSM(GTMSMConfig(obs_shape=(3, 8, 8), action_dim=5, z_dim=8, hidden=16, k=1, transition="linear"))
    model = model.eval()
    with torch.no_grad():
        model.M.copy_(torch.tensor(MOVES.T, dtype=torch.float32))
    args = pi.Args(episodes=6, tau=32, horizon=10, candidates=100, iterations=2, seed=50_000,
                   env_kwargs='{"image_size": 64, "n_positions": 29}', results=str(tmp_path))
    res = pi.run(args, {"GTM-SM": ("gtmsm", model)}, progress=False)
    gtmsm, rnd, opt = res["GTM-SM"], res["random explorer"], res["true-dynamics shortest path"]
    assert gtmsm["success_rate"] >= 0.8 and gtmsm["success_rate"] > rnd["success_rate"] + 0.3, res
    assert opt["success_rate"] == 1.0 and opt["mean_extra_steps"] == 0.0
    assert (tmp_path / "planning" / "imagenav_gtm_sm.gif").exists()
