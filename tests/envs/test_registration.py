"""Every registered id passes Gymnasium's env checker; registration and import hygiene."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs

TWO_D = [i for i in envs.ENV_IDS if i not in envs.MINIWORLD_IDS]


def test_ids_registered_once_and_prefixed() -> None:
    assert len(set(envs.ENV_IDS)) == len(envs.ENV_IDS)
    for env_id in envs.MINIWORLD_IDS:
        assert env_id.startswith("WM-MiniWorld-") and env_id in gym.registry
    for env_id in TWO_D:
        assert gym.spec(env_id).vector_entry_point is not None


@pytest.mark.parametrize("env_id", TWO_D)
def test_check_env_2d(env_id: str) -> None:
    env = gym.make(env_id)
    check_env(env.unwrapped)  # includes the render check for "human" (dummy SDL) and "rgb_array"
    obs, info = env.reset(seed=1)
    assert obs.dtype == np.uint8 and obs.ndim == 3
    key = "state" if "Ball" in env_id or "Pendulum" in env_id else "pose"
    assert info[key].dtype == np.float64
    env.close()


@pytest.mark.parametrize("env_id", envs.MINIWORLD_IDS)
def test_check_env_miniworld(env_id: str) -> None:
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)  # rendering is covered once in test_miniworld.py
    obs, info = env.reset(seed=0)
    assert obs.shape == (32, 32, 3) and info["pose"].shape == (3,) and info["displacement"].shape == (3,)
    env.close()


def test_make_vec_returns_batched_env() -> None:
    from envs.bouncing_ball import BouncingBallVectorEnv
    from envs.image_nav import ImageNavVectorEnv

    assert isinstance(gym.make_vec("BouncingBall-v0", 3), BouncingBallVectorEnv)
    venv = gym.make_vec("ImageNavObstacles-v0", 2)
    assert isinstance(venv, ImageNavVectorEnv) and venv.max_episode_steps == 512
    assert venv.core.cfg.n_obstacles == 8


def test_envs_imports_nothing_of_ours() -> None:
    code = ("import sys, envs, envs.images, envs.image_nav, envs.bouncing_ball, envs.pixel_pendulum, "
            "envs.miniworld_nav; bad = [m for m in sys.modules if m.split('.')[0] in ('worldmodels', 'agents', "
            "'miniworld', 'pyglet', 'skimage', 'torch')]; print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
