"""rgb_array frames, the pygame human window (dummy SDL driver) and scripts/play.py, headless."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import envs

TWO_D = [i for i in envs.ENV_IDS if i not in envs.MINIWORLD_IDS]
ROOT = Path(__file__).resolve().parents[2]


def _play_module():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("play", ROOT / "scripts" / "play.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("env_id", TWO_D)
def test_rgb_array_frames(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[-1] == 3 and min(frame.shape[:2]) >= 256


def test_imagenav_frame_outlines_the_crop() -> None:
    env = gym.make("ImageNav-v0", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()  # 32x32 image upscaled 8x: crop at pixels 12..19 -> 96..159
    assert (frame[96, 96:160] == [255, 220, 0]).all() and (frame[96:160, 159] == [255, 220, 0]).all()


def test_human_render_with_dummy_driver() -> None:
    import pygame

    env = gym.make("BouncingBall-v0", render_mode="human")
    env.reset(seed=0)
    env.step(0)
    surf = pygame.display.get_surface()
    assert surf is not None and surf.get_size() == (256, 256)
    env.close()
    assert pygame.display.get_surface() is None


def test_vector_rgb_render() -> None:
    venv = gym.make_vec("ImageNav-v0", 2, render_mode="rgb_array")
    venv.reset(seed=0)
    frames = venv.render()
    assert len(frames) == 2 and frames[0].shape == (256, 256, 3)


def test_key_mapping() -> None:
    play = _play_module()
    assert play.key_action("ImageNav-v0", gym.spaces.Discrete(5), {"left"}) == 2
    assert play.key_action("ImageNav-v0", gym.spaces.Discrete(5), {"w"}) == 0
    assert play.key_action("ImageNav-v0", gym.spaces.Discrete(5), set()) == 4
    assert play.key_action("ImageNav-v0", gym.spaces.Discrete(5), {"3"}) == 3
    box = gym.spaces.Box(-1, 1, (2,), np.float32)
    np.testing.assert_array_equal(play.key_action("BouncingBallForce-v0", box, {"right", "up"}), [1, -1])
    pend = gym.spaces.Box(-2, 2, (1,), np.float32)
    np.testing.assert_array_equal(play.key_action("PixelPendulum-v0", pend, {"a"}), [-2])
    assert play.key_action("WM-MiniWorld-Maze-v0", gym.spaces.Discrete(3), {"up"}) == 2
    assert play.key_action("WM-MiniWorld-Maze-v0", gym.spaces.Discrete(3), set()) == play.NO_KEY


@pytest.mark.parametrize("env_id", ["ImageNavGoal-v0", "BouncingBallForce-v0", "WM-MiniWorld-OneRoom-v0"])
def test_play_runs_headless(env_id: str) -> None:
    assert _play_module().play(env_id, {}, fps=1000, steps=5) == 5
