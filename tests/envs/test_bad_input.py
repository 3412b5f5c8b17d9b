"""Bad input gives clear errors that name what was expected."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401


@pytest.mark.parametrize("action", [5, -1, 2.5, "up", np.array([1, 2])])
def test_discrete_action_out_of_space(action: object) -> None:
    env = gym.make("ImageNav-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"Discrete\(5\)"):
        env.unwrapped.step(action)


@pytest.mark.parametrize("action", [np.array([1.5, 0.0]), np.array([0.0]), np.array([np.nan, 0.0])])
def test_box_action_out_of_space(action: np.ndarray) -> None:
    env = gym.make("BouncingBallForce-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"Box\(-1.0, 1.0, \(2,\)"):
        env.unwrapped.step(action)


def test_passive_ball_accepts_only_the_noop() -> None:
    env = gym.make("BouncingBall-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"Discrete\(1\)"):
        env.unwrapped.step(1)


def test_batched_action_errors() -> None:
    venv = gym.make_vec("ImageNav-v0", 3)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"expected shape \(3,\)"):
        venv.step(np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="Discrete"):
        venv.step(np.array([0, 7, 1]))
    pend = gym.make_vec("PixelPendulum-v0", 2)
    pend.reset(seed=0)
    with pytest.raises(ValueError, match=r"expected shape \(2, 1\)"):
        pend.step(np.zeros((2, 1)) + 3.0)


def test_unknown_kwarg_names_the_valid_ones() -> None:
    with pytest.raises(TypeError, match=r"'crop_sise'.*valid ones are.*crop_size.*Did you mean 'crop_size'"):
        gym.make("ImageNav-v0", crop_sise=4)
    with pytest.raises(TypeError, match="valid ones are.*variant"):
        gym.make("BouncingBall-v0", radious=2)
    with pytest.raises(TypeError, match="valid ones are.*obs_size"):
        gym.make("WM-MiniWorld-Maze-v0", obs_width=32)


def test_bad_choice_values() -> None:
    with pytest.raises(ValueError, match=r"variant must be one of.*Did you mean 'gravity'"):
        gym.make("BouncingBall-v0", variant="gravty")
    with pytest.raises(ValueError, match="env_name must be one of"):
        gym.make("WM-MiniWorld-Maze-v0", env_name="Mase")
    with pytest.raises(ValueError, match="render_mode"):
        gym.make("ImageNav-v0", render_mode="video")


def test_crop_larger_than_image() -> None:
    with pytest.raises(ValueError, match=r"crop_size 40 is larger than the image \(32x32\)"):
        gym.make("ImageNav-v0", crop_size=40)
    with pytest.raises(ValueError, match="n_positions"):
        gym.make("ImageNav-v0", crop_size=30, n_positions=9)


def test_unreadable_image_file(tmp_path) -> None:  # noqa: ANN001
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="cannot read image file .*broken.png"):
        gym.make("ImageNav-v0", image=str(bad))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        gym.make("ImageNav-v0", image=str(tmp_path / "missing.png"))


def test_unknown_image_name_suggests() -> None:
    with pytest.raises(ValueError, match=r"unknown image source 'astronot'.*Did you mean 'astronaut'"):
        gym.make("ImageNav-v0", image="astronot")


def test_bad_reset_options() -> None:
    env = gym.make("BouncingBall-v0")
    with pytest.raises(ValueError, match="inside the walls"):
        env.reset(options={"state": (0.0, 0.0, 1.0, 1.0)})
    with pytest.raises(ValueError, match=r"options\['pose'\]"):
        gym.make("ImageNav-v0").reset(options={"pose": (9, 0)})


def test_missing_miniworld_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from envs import miniworld_nav

    monkeypatch.setitem(sys.modules, "miniworld", None)  # makes `import miniworld` fail
    with pytest.raises(ImportError, match=r"pip install 'worldmodels\[miniworld\]'"):
        miniworld_nav.import_miniworld()
