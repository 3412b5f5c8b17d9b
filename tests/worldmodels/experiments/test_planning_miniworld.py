"""Planning experiment 2 (worldmodels.experiments.planning_miniworld): the true-dynamics model against MiniWorld
itself, the optimal step count against a breadth-first search over action sequences, the pose objective, the
phases end to end on a tiny budget and the report against the committed page."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("miniworld")

from envs.miniworld_nav import right_handed  # noqa: E402
from worldmodels.experiments import planning_miniworld as pm  # noqa: E402
from worldmodels.experiments.gtmsm_miniworld import relative_pose  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]

TURN, FWD = np.deg2rad(15.0), 0.15
FREE_LOW, FREE_HIGH = np.array([-100.0, -100.0]), np.array([100.0, 100.0])


def _bfs_steps(goal: np.ndarray, radius: float, tol: float, max_depth: int) -> int:
    """Fewest actions (0 left, 1 right, 2 forward) from (0, 0, 0) meeting the criterion, in free space."""
    frontier = {(0.0, 0.0, 0)}  # (x, y, heading index)
    for depth in range(max_depth + 1):
        for x, y, k in frontier:
            dth = (goal[2] - k * TURN + np.pi) % (2 * np.pi) - np.pi
            if np.hypot(x - goal[0], y - goal[1]) < radius and abs(dth) < tol:
                return depth
        nxt = set()
        for x, y, k in frontier:
            nxt.add((x, y, k + 1))
            nxt.add((x, y, k - 1))
            nxt.add((round(x + FWD * np.cos(k * TURN), 9), round(y + FWD * np.sin(k * TURN), 9), k))
        frontier = nxt
    return -1


def _run(actions: list[int]) -> np.ndarray:
    x, y, th = 0.0, 0.0, 0.0
    for a in actions:
        if a == 2:
            x, y = x + FWD * np.cos(th), y + FWD * np.sin(th)
        else:
            th += TURN if a == 0 else -TURN
    return np.array([x, y, th])


def test_optimal_steps_against_breadth_first_search() -> None:
    rng = np.random.default_rng(0)
    tol = np.deg2rad(1.0)
    for trial in range(12):
        if trial < 6:  # turn-walk-turn-walk-turn: the class optimal_steps searches, so the optimum is exact
            k1, n1, k2, n2, k3 = rng.integers(-2, 3), rng.integers(0, 3), rng.integers(-2, 3), rng.integers(0, 3), 0
            acts = [0 if k1 > 0 else 1] * abs(k1) + [2] * n1 + [0 if k2 > 0 else 1] * abs(k2) + [2] * n2
            acts += [0] * k3
        else:  # any short sequence: the two-segment search can only be longer, never shorter
            acts = list(rng.integers(0, 3, size=6))
        goal = _run(acts)
        bfs = _bfs_steps(goal, 0.05, tol, len(acts))
        opt = pm.optimal_steps(np.zeros(3), goal, TURN, FWD, 0.05, tol, FREE_LOW, FREE_HIGH, max_fwd=8)
        assert 0 <= bfs <= len(acts)
        if trial < 6:
            assert opt == bfs, (acts, opt, bfs)
        else:
            assert opt == -1 or opt >= bfs, (acts, opt, bfs)


def test_optimal_steps_rotation_lattice_and_walls() -> None:
    step = 2 * np.pi / 41
    for k in (1, 5, 20, 21, 33):
        goal = np.array([0.0, 0.0, k * step])
        assert pm.optimal_steps(np.zeros(3), goal, step, FWD, np.inf, step / 2, FREE_LOW, FREE_HIGH, max_fwd=2) \
            == min(k, 41 - k)
    # 1 m ahead behind a wall 0.5 m ahead: unreachable inside the room, 7 steps in free space
    goal = np.array([1.0, 0.0, 0.0])
    assert pm.optimal_steps(np.zeros(3), goal, TURN, FWD, 0.08, 0.1, FREE_LOW, FREE_HIGH, max_fwd=10) == 7
    assert pm.optimal_steps(np.zeros(3), goal, TURN, FWD, 0.08, 0.1, np.array([-1, -1]), np.array([0.5, 1]),
                            max_fwd=10) == -1


def test_true_pose_model_reproduces_miniworld_steps_walls_and_box() -> None:
    import gymnasium as gym

    from agents.explorers import MINIWORLD_AGENTS

    ag = MINIWORLD_AGENTS["walk"]
    env = gym.make(ag.env_id, **dict(ag.env_kwargs))
    obs, info = env.reset(seed=50_000)
    model = pm.TruePoseModel(env)
    belief = model.observe(None, None)
    inner = env.unwrapped.inner
    # face the red box (to the nearest 15°) and walk into it, then turn away and walk into a wall
    p = right_handed(info["pose"])
    box = np.array([inner.box.pos[0], -inner.box.pos[2]])
    want = np.arctan2(*(box - p[:2])[::-1])
    k = int(np.round(((want - p[2] + np.pi) % (2 * np.pi) - np.pi) / TURN))
    acts = [0 if k > 0 else 1] * abs(k) + [2] * 70 + [0] * 12 + [2] * 70 + [1, 2, 2, 0, 0, 2]
    poses = []
    for a in acts:
        obs, _, _, _, info = env.step(a)  # termination at the box is ignored, as in the experiment
        poses.append(right_handed(info["pose"]))
    poses = np.stack(poses)
    one_hot = torch.nn.functional.one_hot(torch.tensor(acts), 3).float()[None]
    s = model.imagine(belief, one_hot).extras["s"][0].double().numpy()
    dth = (s[:, 2] - poses[:, 2] + np.pi) % (2 * np.pi) - np.pi
    np.testing.assert_allclose(s[:, :2], poses[:, :2], atol=1e-4)
    np.testing.assert_allclose(dth, 0, atol=1e-4)
    blocked = [i for i in range(1, len(acts)) if acts[i] == 2 and np.allclose(poses[i, :2], poses[i - 1, :2])]
    assert blocked, "the sequence should bump into the box and a wall"
    near_box = np.linalg.norm(poses[:, :2] - box, axis=1).min()
    assert near_box < inner.agent.radius + inner.box.radius + FWD
    env.close()


def test_pose_objective_prefers_the_goal_and_ignores_heading_wraps() -> None:
    from worldmodels.api import Imagination

    goal = torch.tensor([1.0, 2.0, 0.5])
    s = torch.tensor([[[1.0, 2.0, 0.5 + 2 * np.pi]], [[1.0, 2.0, 0.5]], [[1.5, 2.0, 0.5]], [[1.0, 2.0, 1.0]]])
    im = Imagination(obs=torch.zeros(4, 1, 0), latent=s, uncertainty=torch.zeros(4, 1), extras={"s": s})
    score = pm.pose_objective(goal, heading_weight=1.0)(im)
    assert torch.allclose(score[:2], torch.zeros(2), atol=1e-5)
    assert score[2] == pytest.approx(-0.25) and score[3] == pytest.approx(-2 * (1 - np.cos(0.5)), rel=1e-5)
    assert pm.pose_objective(goal, position=False)(im)[2] == pytest.approx(0.0, abs=1e-6)


def test_bfs_oracle_itself() -> None:  # three forward steps reach 0.45 m ahead; a quarter turn takes 6 turns
    assert _bfs_steps(np.array([0.45, 0.0, 0.0]), 0.01, 0.01, 4) == 3
    assert _bfs_steps(np.array([0.0, 0.0, np.pi / 2]), 0.01, 0.01, 7) == 6


def test_localization_error_relative_part_is_invariant_to_the_model_frame() -> None:

    rng = np.random.default_rng(1)
    poses = [np.array([2.0, -3.0, 0.4])]
    for _ in range(20):
        poses.append(poses[-1] + np.array([*rng.normal(0, 0.3, 2), rng.normal(0, 0.4)]))
    ep = {"poses": poses, "goal_index": 7}
    rel = relative_pose(torch.as_tensor(np.stack(poses))[None])[0]
    exact = pm.localization_error(ep, rel[7], rel[-1])
    assert max(exact.values()) < 1e-9
    a = 0.5  # the model's frame rotated by 0.5 rad and shifted: absolute errors, no relative error
    R = torch.tensor([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], dtype=torch.float64)
    moved = torch.cat([rel[:, :2] @ R.T + torch.tensor([1.0, 2.0], dtype=torch.float64), rel[:, 2:] + a], -1)
    err = pm.localization_error(ep, moved[7], moved[-1])
    assert err["position_m"] > 0.5 and err["heading_deg"] == pytest.approx(np.degrees(a))
    assert err["relative_position_m"] < 1e-9 and err["relative_heading_deg"] < 1e-9
    off = pm.localization_error(ep, rel[7] + torch.tensor([0.3, 0.4, 0.0], dtype=torch.float64), rel[-1])
    assert off["relative_position_m"] == pytest.approx(0.5) and off["position_m"] == pytest.approx(0.5)


def _tiny(tmp_path: Path, **kw: object) -> pm.Args:
    return pm.Args(results=str(tmp_path / "res"), source=str(tmp_path / "src"), checkpoints=str(tmp_path / "ck/mw"),
                   episodes=1, episodes_rotate=1, tau=10, tau_rotate=8, horizon=3, horizon_rotate=3, candidates=8,
                   candidates_rotate=8, iterations=1, **kw)  # type: ignore[arg-type]


def test_phases_end_to_end_with_a_snapshot_merge_and_report(tmp_path: Path, one_thread: None) -> None:
    from worldmodels.checkpoint import save
    from worldmodels.models import build_model

    torch.manual_seed(0)
    save(tmp_path / "src" / "rotate" / "gtmsm" / "last", build_model("gtmsm", "miniworld_rotate", action_dim=2),
         metadata={"step": 7})
    pm.EXPERIMENT.run(_tiny(tmp_path, snapshot=1, models="gtmsm"))
    res = tmp_path / "res"
    doc = json.loads((res / "planning_miniworld.json").read_text())
    assert doc["experiment"] == "planning_miniworld" and doc["budget"] == {"walk_episodes": 1, "rotate_episodes": 1}
    assert doc["command"].startswith("worldmodels experiment planning-miniworld --snapshot 1 --source ")
    assert " --models gtmsm " in doc["command"] and doc["command"].endswith(" --candidates-rotate 8")
    assert set(doc["metrics"]) == {"walk", "walk (details)", "rotate", "rotate (details)"}
    assert list(doc["metrics"]["rotate"]) == ["random explorer", "GTM-SM", "true dynamics (CEM)"]
    assert "localize" in doc["metrics"]["rotate"]["GTM-SM"]["episodes"][0]
    assert (tmp_path / "ck" / "mw_rotate_gtmsm" / "config.json").exists()  # the snapshot
    assert any("7 training updates" in n for n in doc["notes"])
    assert any("walk: GTM-SM: no checkpoint" in n for n in doc["notes"])
    media = sorted(p.name for p in (res / "planning").iterdir())
    assert "miniworld_walk_paths.png" in media and "miniworld_rotate_gtm_sm.gif" in media
    page = (res / "planning.md").read_text()
    assert "## Experiment 2 — MiniWorld: return to a remembered view" in page and "**rotate (details)**" in page
    # redo one part: the other is kept from the file, with a note naming the earlier run
    pm.EXPERIMENT.run(_tiny(tmp_path, parts="rotate", models=""), "eval")
    again = json.loads((res / "planning_miniworld.json").read_text())
    assert again["metrics"]["walk"] == doc["metrics"]["walk"] and list(again["metrics"]["rotate"]) == [
        "random explorer", "true dynamics (CEM)"]
    assert any(n.startswith("walk: results from an earlier run: `worldmodels experiment") for n in again["notes"])
    with pytest.raises(ValueError, match="--parts: expected walk and/or rotate, received 'fly'"):
        pm.EXPERIMENT.run(_tiny(tmp_path, parts="walk,fly"))


def test_report_regenerates_the_committed_planning_page(tmp_path: Path) -> None:
    results = ROOT / "docs" / "results"
    for p in results.glob("planning_*.json"):
        shutil.copy(p, tmp_path / p.name)
    for p in (results / "planning").rglob("*"):  # the page only names the media files
        if p.is_file():
            (tmp_path / p.relative_to(results)).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / p.relative_to(results)).touch()
    pm.EXPERIMENT.run(pm.Args(results=str(tmp_path)), "report")
    assert (tmp_path / "planning.md").read_text() == (results / "planning.md").read_text()


def test_the_registry_lists_the_experiment_with_its_summary() -> None:
    from worldmodels import experiments

    assert experiments.get(pm.NAME) is pm.EXPERIMENT and experiments.summary(pm.NAME) == pm.SUMMARY
