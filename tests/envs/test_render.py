"""rgb_array frames, the pygame human window (dummy SDL driver) and keyboard play (envs/play.py), headless."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pygame
import pytest

import envs
from envs.play import KeyMap, play

TWO_D = [i for i in envs.ENV_IDS if i not in envs.MINIWORLD_IDS]


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


def _keys(env_id: str) -> KeyMap:
    return KeyMap.of(gym.make(env_id))


def test_key_mapping() -> None:
    nav = _keys("ImageNav-v0")
    assert nav.action({pygame.K_LEFT}) == 2 and nav.action({ord("w")}) == 0 and nav.action(set()) == 4
    assert nav.action({ord("3")}) == 3 and nav.action({ord("3"), pygame.K_UP}) == 3  # digits first
    assert nav.action({pygame.K_DOWN, pygame.K_RIGHT}) == 1  # the first held of up, down, left, right
    assert nav.action({pygame.K_LSHIFT, ord("d")}) == 3  # keys that map to nothing are ignored
    force = _keys("BouncingBallForce-v0")
    np.testing.assert_array_equal(force.action({pygame.K_RIGHT, pygame.K_UP}), [1, -1])
    np.testing.assert_array_equal(force.action({pygame.K_RIGHT, ord("d")}), [1, 0])  # a key and its twin: once
    np.testing.assert_array_equal(force.action(set()), [0, 0])
    np.testing.assert_array_equal(_keys("PixelPendulum-v0").action({ord("a")}), [-2])
    np.testing.assert_array_equal(_keys("PixelPendulum-v0").action({ord("a"), ord("d")}), [0])
    assert _keys("BouncingBall-v0").action({pygame.K_UP}) == 0 and _keys("BouncingBall-v0").action({ord("0")}) == 0
    maze = _keys("WM-MiniWorld-Maze-v0")
    assert maze.action({pygame.K_UP}) == 2 and maze.action({pygame.K_LEFT, pygame.K_UP}) == 0
    assert maze.action(set()) is None and maze.wait_on_player  # MiniWorld waits for a key
    assert _keys("WM-MiniWorld-Rotate-v0").action({pygame.K_UP}) is None  # turns only


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_every_env_declares_keys_gymnasium_play_accepts(env_id: str) -> None:
    """The declarations are in gymnasium.utils.play.play's terms: int key codes, actions in the space."""
    env = gym.make(env_id)
    table = env.get_wrapper_attr("get_keys_to_action")()
    assert all(isinstance(k, int) for keys in table for k in keys)
    assert all(a in env.action_space for a in table.values())
    assert set(env.metadata.get("play", {})) <= {"noop", "wait_on_player"}
    keymap = KeyMap.of(env)
    assert keymap.noop in env.action_space
    env.close()


def test_an_env_without_declarations_plays_by_digits() -> None:
    env = gym.make("CartPole-v1")
    keymap = KeyMap.of(env)
    assert keymap.keys_to_action == {} and keymap.action({ord("1")}) == 1 and keymap.action(set()) == 0


def test_bad_declarations_are_refused() -> None:
    class Bad(gym.Env):
        action_space = gym.spaces.Discrete(2)
        observation_space = gym.spaces.Discrete(1)
        metadata = {"play": {"noop": 5}}

        def get_keys_to_action(self) -> dict:
            return {(ord("w"),): 1}

    with pytest.raises(ValueError, match=r"the action 5 of keys \(\) is not in the action space Discrete\(2\)"):
        KeyMap.of(Bad())
    Bad.metadata = {"play": {"nop": 0}}
    with pytest.raises(ValueError, match=r"expected metadata\['play'\] keys noop, wait_on_player, received \['nop'\]"):
        KeyMap.of(Bad())
    Bad.metadata = {}
    Bad.get_keys_to_action = lambda self: {("w",): 1}  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="expected sorted tuples of pygame key codes, received"):
        KeyMap.of(Bad())


@pytest.mark.parametrize("env_id", ["ImageNavGoal-v0", "BouncingBallForce-v0", "WM-MiniWorld-OneRoom-v0"])
def test_play_runs_headless(env_id: str) -> None:
    assert play(env_id, {}, fps=1000, steps=5) == 5
