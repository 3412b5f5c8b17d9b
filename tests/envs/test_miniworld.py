"""MiniWorld wrapper, headless: pose and displacement against MiniWorld's own agent."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import envs  # noqa: F401


def test_pose_and_displacement_track_the_agent() -> None:
    env = gym.make("WM-MiniWorld-OneRoom-v0", obs_size=64)
    obs, info = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    agent = env.unwrapped.inner.agent
    np.testing.assert_allclose(info["pose"][:2], [agent.pos[0], agent.pos[2]])
    pose0 = info["pose"]
    _, _, _, _, info = env.step(2)  # forward
    d = info["displacement"]
    np.testing.assert_allclose(info["pose"], pose0 + d, atol=1e-12)
    heading = pose0[2]
    if np.linalg.norm(d[:2]) > 0:  # MiniWorld walks along (cos θ, -sin θ) in (x, z)
        np.testing.assert_allclose(d[:2], 0.15 * np.array([np.cos(heading), -np.sin(heading)]), atol=1e-9)
    _, _, _, _, info = env.step(0)  # turn left 15°
    np.testing.assert_allclose(info["displacement"], [0, 0, np.deg2rad(15)], atol=1e-9)


def test_rotating_agent_period() -> None:
    env = gym.make("WM-MiniWorld-Rotate-v0")
    _, info = env.reset(seed=0)
    assert env.action_space == gym.spaces.Discrete(2)
    start = info["pose"].copy()
    total = 0.0
    for _ in range(41):
        info = env.step(0)[4]
        total += info["displacement"][2]
        np.testing.assert_allclose(info["pose"][:2], start[:2])  # in place
    np.testing.assert_allclose(total, 2 * np.pi, atol=1e-9)  # one full turn in 41 steps


def test_rgb_render_and_truncation() -> None:
    env = gym.make("WM-MiniWorld-Rotate-v0", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[-1] == 3 and frame.dtype == np.uint8
    truncated, steps = False, 0
    while not truncated:
        truncated = env.step(1)[3]
        steps += 1
    assert steps == 80


def _steps_until_truncated(env: gym.Env, action: int) -> int:
    """Turn in place (never reaching the goal box) until the episode is truncated."""
    env.reset(seed=1)
    for t in range(1, 1000):
        _, _, terminated, truncated, _ = env.step(action)
        assert not terminated
        if truncated:
            return t
    raise AssertionError("no truncation within 1000 steps")


def test_miniworld_max_steps_replaces_the_hard_coded_limit() -> None:
    # FourRooms hard-codes 250 steps and takes no max_episode_steps argument; gym.make's max_episode_steps
    # is an outer TimeLimit that cannot lengthen the episode; miniworld_max_steps can (τ + 150 = 300)
    assert _steps_until_truncated(gym.make("WM-MiniWorld-FourRooms-v0"), 0) == 250
    assert _steps_until_truncated(gym.make("WM-MiniWorld-FourRooms-v0", max_episode_steps=300), 0) == 250
    longer = gym.make("WM-MiniWorld-FourRooms-v0", miniworld_max_steps=300)
    assert longer.unwrapped.inner.max_episode_steps == 300
    assert _steps_until_truncated(longer, 0) == 300
    assert _steps_until_truncated(gym.make("WM-MiniWorld-FourRooms-v0", miniworld_max_steps=40), 1) == 40


def test_step_limits_reject_nonpositive() -> None:
    import pytest

    with pytest.raises(ValueError, match="miniworld_max_steps must be an int >= 1"):
        gym.make("WM-MiniWorld-FourRooms-v0", miniworld_max_steps=0)
    with pytest.raises(ValueError, match="max_episode_steps must be an int >= 1"):
        envs.miniworld_nav.MiniWorldNavConfig(max_episode_steps=-3)


def test_right_handed_pose_walks_forward_along_cos_sin_and_pose_reads_the_agent() -> None:
    import pytest
    import torch

    from envs.miniworld_nav import right_handed

    env = gym.make("WM-MiniWorld-OneRoom-v0")
    _, info = env.reset(seed=3)
    np.testing.assert_array_equal(env.unwrapped.pose(), info["pose"])
    moved = 0
    for _ in range(6):
        before = right_handed(info["pose"])
        _, _, _, _, info = env.step(2)  # forward (or blocked by a wall: no move)
        np.testing.assert_array_equal(env.unwrapped.pose(), info["pose"])
        step = right_handed(info["pose"])[:2] - before[:2]
        if np.linalg.norm(step) > 0:
            moved += 1
            np.testing.assert_allclose(step, 0.15 * np.array([np.cos(before[2]), np.sin(before[2])]), atol=1e-9)
    assert moved
    pose = torch.tensor([[1.0, 2.0, 0.5], [0.0, -3.0, -1.0]])
    out = right_handed(pose)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.tolist() == [[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]] and pose[0, 1] == 2.0  # a copy
    a = np.array([1.0, 2.0, 0.5])
    assert right_handed(a)[1] == -2.0 and a[1] == 2.0
    with pytest.raises(ValueError, match=r"expected a pose \[..., 3\] \(x, z, heading\), received shape \(2,\)"):
        right_handed(np.zeros(2))
