"""Experiment 2 (scripts/plan_miniworld.py): the true-dynamics model against MiniWorld itself, the optimal step
count against a breadth-first search over action sequences, the pose objective."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

pytest.importorskip("miniworld")

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
    import plan_miniworld as pm

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
    import plan_miniworld as pm

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
    import plan_miniworld as pm
    from gtmsm_miniworld import AGENTS, right_handed

    ag = AGENTS["walk"]
    env = gym.make(ag.env_id, **dict(ag.env_kwargs))
    obs, info = env.reset(seed=50_000)
    model = pm.TruePoseModel(env)
    belief = model.observe(None, None)
    inner = env.unwrapped.inner
    # face the red box (to the nearest 15°) and walk into it, then turn away and walk into a wall
    p = right_handed(torch.as_tensor(info["pose"])).numpy()
    box = np.array([inner.box.pos[0], -inner.box.pos[2]])
    want = np.arctan2(*(box - p[:2])[::-1])
    k = int(np.round(((want - p[2] + np.pi) % (2 * np.pi) - np.pi) / TURN))
    acts = [0 if k > 0 else 1] * abs(k) + [2] * 70 + [0] * 12 + [2] * 70 + [1, 2, 2, 0, 0, 2]
    poses = []
    for a in acts:
        obs, _, _, _, info = env.step(a)  # termination at the box is ignored, as in the experiment
        poses.append(right_handed(torch.as_tensor(info["pose"])).numpy())
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
    import plan_miniworld as pm

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
    import plan_miniworld as pm
    from gtmsm_miniworld import relative_pose

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
