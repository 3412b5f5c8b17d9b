"""Adding an environment needs no edit outside it: a new env declares its keyboard mapping and its default
planning task itself, and ``scripts/play.py`` (envs/play.py) and ``worldmodels plan --task auto``
(agents/tasks.py) read them. The env here is registered by this test only, nothing else knows it."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pygame
import pytest
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec

from agents.tasks import BallRegionTask, plan_in_env, task_for_env
from envs._core import direction_keys_to_action
from envs.play import KeyMap, play

ENV_ID = "ToyDot-v0"


class ToyDotEnv(gym.Env):
    """A dot on a 32x32 frame pushed by a 2-D force; ``info["state"]`` = (x, y, 0, 0) in pixels."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10,
                "planning_task": {"name": "ball-region", "kwargs": {"max_steps": 4, "half": 8.0}},
                "play": {"noop": np.array([0.5, 0.0], np.float32)}}

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = spaces.Box(0, 255, (32, 32, 1), np.uint8)
        self.pos = np.array([16.0, 16.0])

    def _obs(self) -> np.ndarray:
        frame = np.zeros((32, 32, 1), np.uint8)
        x, y = self.pos.astype(int)
        frame[y - 1 : y + 2, x - 1 : x + 2] = 255
        return frame

    def _info(self) -> dict[str, Any]:
        return {"state": np.array([*self.pos, 0.0, 0.0])}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.pos = np.array([16.0, 16.0])
        return self._obs(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.pos = np.clip(self.pos + 2 * np.asarray(action, np.float64), 1, 30)
        return self._obs(), 0.0, False, False, self._info()

    def render(self) -> np.ndarray:
        return np.repeat(self._obs(), 3, axis=-1)

    def get_keys_to_action(self) -> dict[tuple[int, ...], Any]:
        pushes = {"up": [0, -1], "down": [0, 1], "left": [-1, 0], "right": [1, 0]}
        return direction_keys_to_action(pushes, "sum", self.action_space)


@pytest.fixture
def toy_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(gym.registry, ENV_ID, EnvSpec(ENV_ID, entry_point=ToyDotEnv, max_episode_steps=50))
    return ENV_ID


def test_play_reads_the_keys_the_new_env_declares(toy_env: str) -> None:
    keys = KeyMap.of(gym.make(toy_env))
    np.testing.assert_array_equal(keys.action({pygame.K_LEFT, ord("s")}), [-1, 1])
    np.testing.assert_array_equal(keys.action(set()), [0.5, 0])  # its declared noop
    assert play(toy_env, fps=1000, steps=3) == 3


def test_plan_uses_the_task_the_new_env_declares(toy_env: str, tmp_path) -> None:  # noqa: ANN001
    task = task_for_env(toy_env)
    assert isinstance(task, BallRegionTask) and (task.max_steps, task.half) == (4, 8.0)
    again = task_for_env(toy_env, max_steps=9)  # explicit kwargs override the declared ones
    assert (again.max_steps, again.half) == (9, 8.0)
    res = plan_in_env(None, toy_env, episodes=1, agents=("random",), gif_dir=tmp_path, progress=False)
    assert res["random"]["episodes"][0]["steps"] == 4 and (tmp_path / "random.gif").exists()


def test_a_malformed_declaration_is_refused(toy_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ToyDotEnv, "metadata", {**ToyDotEnv.metadata, "planning_task": "ball-region"})
    with pytest.raises(ValueError, match=r"expected metadata\['planning_task'\] = \{'name': str, 'kwargs': dict\}"):
        task_for_env(toy_env)
