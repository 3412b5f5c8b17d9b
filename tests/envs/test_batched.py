"""The batched VectorEnvs give exactly the frames of single envs (and of SyncVectorEnv); seeds determine runs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs

TWO_D = [i for i in envs.ENV_IDS if i not in envs.MINIWORLD_IDS]


def _actions(space: gym.Space, n: int, T: int, seed: int) -> list[np.ndarray]:
    space.seed(seed)
    return [np.stack([space.sample() for _ in range(n)]) for _ in range(T)]


@pytest.mark.parametrize("env_id", TWO_D)
def test_batched_equals_sync_vector_env(env_id: str) -> None:
    n, T = 3, 45  # T crosses the 20-step time limits of the ball envs, so autoreset is compared too
    batched = gym.make_vec(env_id, n)
    sync = gym.make_vec(env_id, n, vectorization_mode="sync")
    assert type(batched) is not type(sync)
    o1, i1 = batched.reset(seed=7)
    o2, i2 = sync.reset(seed=7)
    np.testing.assert_array_equal(o1, o2)
    key = "state" if "state" in i1 else "pose"
    np.testing.assert_allclose(i1[key], i2[key], rtol=0, atol=1e-12)
    for a in _actions(batched.single_action_space, n, T, seed=3):
        r1 = batched.step(a)
        r2 = sync.step(a)
        np.testing.assert_array_equal(r1[0], r2[0])  # frames
        np.testing.assert_allclose(r1[1], r2[1], atol=1e-12)  # rewards
        np.testing.assert_array_equal(r1[2], r2[2])  # terminated
        np.testing.assert_array_equal(r1[3], r2[3])  # truncated
        np.testing.assert_allclose(r1[4][key], r2[4][key], rtol=0, atol=1e-9)
    batched.close()
    sync.close()


def test_batched_equals_single_env_seeded_seed_plus_i() -> None:
    n = 4
    venv = gym.make_vec("ImageNavObstacles-v0", n)
    obs_v, _ = venv.reset(seed=100)
    singles = [gym.make("ImageNavObstacles-v0") for _ in range(n)]
    obs_s = np.stack([e.reset(seed=100 + i)[0] for i, e in enumerate(singles)])
    np.testing.assert_array_equal(obs_v, obs_s)
    rng = np.random.default_rng(0)
    for _ in range(30):
        a = rng.integers(0, 5, size=n)
        obs_v = venv.step(a)[0]
        obs_s = np.stack([e.step(int(a[i]))[0] for i, e in enumerate(singles)])
        np.testing.assert_array_equal(obs_v, obs_s)


@pytest.mark.parametrize("env_id", TWO_D)
def test_determinism_per_seed(env_id: str) -> None:
    def run(seed: int) -> np.ndarray:
        env = gym.make(env_id)
        frames = [env.reset(seed=seed)[0]]
        env.action_space.seed(seed)
        for _ in range(15):
            frames.append(env.step(env.action_space.sample())[0])
        return np.stack(frames)

    a, b, c = run(5), run(5), run(6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_autoreset_next_step_semantics() -> None:
    venv = gym.make_vec("BouncingBall-v0", 2, max_episode_steps=3)
    venv.reset(seed=0)
    for t in range(3):
        _, _, term, trunc, _ = venv.step(np.zeros(2, dtype=np.int64))
        assert not term.any()
        assert trunc.all() == (t == 2)
    obs, rew, term, trunc, info = venv.step(np.zeros(2, dtype=np.int64))  # the reset step
    assert not trunc.any() and np.all(rew == 0)
    fresh = gym.make_vec("BouncingBall-v0", 2)
    fresh.reset(seed=0)
    # the reset draws continue each copy's generator, so the new start differs from the first one
    assert not np.allclose(info["state"], fresh.reset(seed=0)[1]["state"])
