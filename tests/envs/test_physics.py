"""Physics against closed forms and trusted libraries (float64)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.classic_control.pendulum import PendulumEnv

import envs  # noqa: F401
from envs.bouncing_ball import BouncingBallConfig, BouncingBallCore


def _fold(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Free flight folded into [lo, hi]: the exact position of an elastically bouncing point."""
    w = hi - lo
    y = np.mod(x - lo, 2 * w)
    return lo + np.where(y > w, 2 * w - y, y)


def test_box_matches_unfolded_free_flight_and_keeps_speed() -> None:
    env = gym.make("BouncingBall-v0", max_episode_steps=None)
    _, info = env.reset(seed=0, options={"state": (10.0, 20.0, 13.0, -11.0)})
    p0, v0 = info["state"][:2].copy(), info["state"][2:].copy()
    for t in range(1, 200):
        _, _, _, _, info = env.step(0)
        expected = _fold(p0 + v0 * 0.2 * t, 5.0, 27.0)  # ball centre between walls 2 + r and 30 - r
        np.testing.assert_allclose(info["state"][:2], expected, atol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(info["state"][2:]), np.linalg.norm(v0), rtol=1e-12)


def test_box_frame_is_the_disc() -> None:
    env = gym.make("BouncingBall-v0")
    obs, info = env.reset(seed=3)
    x, y = info["state"][:2]
    rows, cols = np.mgrid[0:32, 0:32] + 0.5
    disc = ((cols - x) ** 2 + (rows - y) ** 2 <= 9.0).astype(np.uint8) * 255
    np.testing.assert_array_equal(obs[..., 0], disc)
    assert set(np.unique(obs)) <= {0, 255}


def test_start_distribution_as_in_kvae_data() -> None:
    venv = gym.make_vec("BouncingBall-v0", 2000)
    _, info = venv.reset(seed=0)
    s = info["state"]
    speed = np.linalg.norm(s[:, 2:], axis=1)
    assert speed.min() >= 10 and speed.max() <= 15
    assert s[:, :2].min() >= 6 and s[:, :2].max() <= 26
    assert abs(s[:, :2].mean() - 16) < 0.5


def test_gravity_accelerates_downwards() -> None:
    env = gym.make("BouncingBallGravity-v0")
    _, info = env.reset(seed=0, options={"state": (16.0, 8.0, 0.0, 0.0)})
    vys = []
    for _ in range(5):
        vys.append(env.step(0)[4]["state"][3])
    np.testing.assert_allclose(np.diff(vys), 10.0 * 0.2, rtol=1e-12)  # dv = g dt away from walls
    assert vys[-1] > 0  # falling (y grows downwards)


def test_polygon_reflection_keeps_speed_and_stays_inside() -> None:
    cfg = BouncingBallConfig(variant="polygon")
    core = BouncingBallCore(64, cfg)
    core.reset_rows(np.arange(64), [np.random.default_rng(i) for i in range(64)], None)
    speed0 = np.linalg.norm(core.vel, axis=1)
    bounced = np.zeros(64, dtype=bool)
    for _ in range(100):
        v_before = core.vel.copy()
        core.step(np.zeros(64, dtype=np.int64))
        bounced |= np.any(core.vel != v_before, axis=1)
        np.testing.assert_allclose(np.linalg.norm(core.vel, axis=1), speed0, rtol=1e-12)
        assert np.all(core.pos @ core.normals.T - core.offsets >= cfg.radius - 1e-9)
    assert bounced.all()


def test_polygon_single_bounce_mirrors_about_the_edge() -> None:
    cfg = BouncingBallConfig(variant="polygon", polygon=((2, 2), (30, 2), (30, 30), (2, 30)), dt=1.0)
    core = BouncingBallCore(1, cfg)
    core.reset_rows(np.zeros(1, dtype=np.int64), [None], {"state": (16.0, 6.0, 1.0, -2.0)})  # type: ignore[list-item]
    core.step(np.zeros(1, dtype=np.int64))
    # free flight to y = 4 penetrates the edge y = 2 + r = 5 by 1 -> mirrored to y = 6
    np.testing.assert_allclose(core.pos[0], [17.0, 6.0], atol=1e-12)
    np.testing.assert_allclose(core.vel[0], [1.0, 2.0], atol=1e-12)


def test_pong_paddles_follow_the_ball_and_bounce_it() -> None:
    env = gym.make("BouncingBallPong-v0", max_episode_steps=None)
    obs, info = env.reset(seed=0, options={"state": (16.0, 16.0, 14.0, 3.0)})
    xs = []
    for _ in range(60):
        obs, *_, info = env.step(0)
        x, y = info["state"][:2]
        xs.append(x)
        core = env.unwrapped.core
        assert core.paddle_y[0] == np.clip(y, 6.0, 26.0)
        assert obs[int(core.paddle_y[0]), 2:4, 0].all() and obs[int(core.paddle_y[0]), 28:30, 0].all()
    assert min(xs) >= 7.0 - 1e-9 and max(xs) <= 25.0 + 1e-9 and min(xs) < 9 and max(xs) > 23


def test_force_mode_accelerates_the_ball() -> None:
    env = gym.make("BouncingBallForce-v0")
    _, info = env.reset(seed=0, options={"state": (16.0, 16.0, 0.0, 0.0)})
    info = env.step(np.array([1.0, -0.5], dtype=np.float32))[4]
    np.testing.assert_allclose(info["state"][2:], [10.0 * 0.2, -5.0 * 0.2], rtol=1e-6)


def test_pendulum_matches_gymnasium_pendulum_v1() -> None:
    ours = gym.make("PixelPendulum-v0").unwrapped
    ref = PendulumEnv()
    _, info = ours.reset(seed=42)
    ref.reset(seed=42)
    np.testing.assert_allclose(info["state"], ref.state, rtol=0, atol=0)  # same start distribution
    rng = np.random.default_rng(0)
    for _ in range(100):
        u = rng.uniform(-2, 2, size=1).astype(np.float32)
        _, r, _, _, info = ours.step(u)
        _, r_ref, _, _, _ = ref.step(u)
        # Pendulum-v1 multiplies the float32 torque in float32 (NEP 50); we compute in float64
        np.testing.assert_allclose(info["state"], ref.state, rtol=0, atol=1e-6)
        np.testing.assert_allclose(r, r_ref, rtol=1e-6)


def test_pendulum_frame_shows_the_rod_direction() -> None:
    env = gym.make("PixelPendulum-v0")
    up = env.reset(options={"state": (0.0, 0.0)})[0][..., 0].astype(float)
    down = env.reset(options={"state": (np.pi, 0.0)})[0][..., 0].astype(float)
    assert up[:7].sum() > 5 * up[9:].sum()  # upright rod: mass in the top half
    assert down[9:].sum() > 5 * down[:7].sum()
    np.testing.assert_allclose(down, up[::-1, ::-1], atol=1)  # rotation by π


# ---------------------------------------------------------------- ImageNav


def test_imagenav_crop_geometry_and_walls() -> None:
    env = gym.make("ImageNav-v0")
    obs, info = env.reset(seed=0)
    img = env.unwrapped.core.images[0]
    assert info["pose"].tolist() == [4.0, 4.0]
    np.testing.assert_array_equal(obs, img[12:20, 12:20])  # offset = 3 * position
    for _ in range(6):  # walk into the left wall
        obs, _, _, _, info = env.step(2)
    assert info["pose"].tolist() == [4.0, 0.0] and info["displacement"].tolist() == [0.0, 0.0]
    np.testing.assert_array_equal(obs, img[12:20, 0:8])
    for _ in range(6):
        obs, _, _, _, info = env.step(1)  # down into the bottom wall
    assert info["pose"].tolist() == [8.0, 0.0]
    np.testing.assert_array_equal(obs, img[24:32, 0:8])
    obs, *_, info = env.step(4)
    assert info["displacement"].tolist() == [0.0, 0.0]


def test_imagenav_random_walk_matches_brute_force() -> None:
    env = gym.make("ImageNav-v0", image_size=64, crop_size=16, n_positions=7, rgb=False)
    obs, info = env.reset(seed=1)
    img = env.unwrapped.core.images[0]
    r, c = 3, 3
    rng = np.random.default_rng(0)
    moves = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1), 4: (0, 0)}
    for _ in range(200):
        a = int(rng.integers(5))
        obs, *_, info = env.step(a)
        r, c = min(max(r + moves[a][0], 0), 6), min(max(c + moves[a][1], 0), 6)
        assert info["pose"].tolist() == [r, c]
        np.testing.assert_array_equal(obs, img[8 * r : 8 * r + 16, 8 * c : 8 * c + 16])


def test_large_crop_of_large_image() -> None:
    env = gym.make("ImageNav-v0", image_size=256, crop_size=64)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3)
    np.testing.assert_array_equal(obs, env.unwrapped.core.images[0][96:160, 96:160])


def test_obstacles_block_and_are_drawn() -> None:
    env = gym.make("ImageNavObstacles-v0")
    env.reset(seed=0)
    core = env.unwrapped.core
    blocked = core.blocked[0]
    assert blocked.sum() == 8 and not blocked[4, 4]
    for r, c in np.argwhere(blocked):  # painted grey at the cell's crop centre
        assert np.all(core.images[0, 3 * r + 3 : 3 * r + 6, 3 * c + 3 : 3 * c + 6] == 128)
    # brute force: walk randomly and check every move against the blocked grid
    rng = np.random.default_rng(1)
    pos = np.array([4, 4])
    moves = np.array([[-1, 0], [1, 0], [0, -1], [0, 1], [0, 0]])
    stopped = 0
    for _ in range(400):
        a = int(rng.integers(5))
        info = env.step(a)[4]
        new = np.clip(pos + moves[a], 0, 8)
        if blocked[new[0], new[1]]:
            new, stopped = pos, stopped + 1
        pos = new
        assert info["pose"].tolist() == pos.tolist()
        assert not blocked[pos[0], pos[1]]
    assert stopped > 0


def test_obstacles_change_per_episode() -> None:
    env = gym.make("ImageNavObstacles-v0")
    env.reset(seed=0)
    first = env.unwrapped.core.blocked[0].copy()
    env.reset()
    assert not np.array_equal(first, env.unwrapped.core.blocked[0])


def test_goal_mode_reward_and_goal_crop() -> None:
    env = gym.make("ImageNavGoal-v0")
    obs, info = env.reset(seed=4)
    gr, gc = info["goal"].astype(int)
    np.testing.assert_array_equal(info["goal_obs"], env.unwrapped.core.images[0][3 * gr : 3 * gr + 8, 3 * gc : 3 * gc + 8])
    path = [1 if gr > 4 else 0] * abs(gr - 4) + [3 if gc > 4 else 2] * abs(gc - 4)
    for k, a in enumerate(path):
        obs, reward, terminated, _, info = env.step(a)
        assert terminated == (k == len(path) - 1) and reward == float(terminated)
    np.testing.assert_array_equal(obs, info["goal_obs"])


@pytest.mark.parametrize("rgb", [True, False])
def test_grayscale_and_rgb(rgb: bool) -> None:
    obs, _ = gym.make("ImageNav-v0", rgb=rgb).reset(seed=0)
    assert obs.shape == (8, 8, 3 if rgb else 1)
