"""Drive any registered env with the keyboard in a pygame window (``scripts/play.py``).

Each env says what the keys do, in the terms of ``gymnasium.utils.play.play`` (so that function can play
our envs too), and nothing outside the env needs an edit for a new one:

* ``env.get_keys_to_action()`` (Gymnasium's hook, found through wrappers): a dict from sorted tuples of
  pygame key codes held together to the action (:func:`envs._core.direction_keys_to_action` builds it for
  arrows/WASD); an env without it has no mapped keys.
* ``env.metadata["play"]`` (optional): keyword arguments of ``gymnasium.utils.play.play`` for the env,
  ``noop`` (the action when no mapped key is held; default 0 for ``Discrete``, zeros for ``Box``) and
  ``wait_on_player`` (``True``: step only while a key is held, e.g. MiniWorld).

Digit keys pick a ``Discrete`` action by its number (before the mapping); R resets, Esc or Q quits.
Headless-safe: with ``SDL_VIDEODRIVER=dummy`` and ``steps`` it runs that many steps with no keys pressed
(``noop`` each step, also where the env waits for a key) and returns.

Example:
    >>> import gymnasium as gym, envs
    >>> keys = KeyMap.of(gym.make("ImageNav-v0"))
    >>> keys.action({ord("a")}), keys.action({ord("3")}), keys.action(set())  # left, digit 3, stay
    (2, 3, 4)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["KeyMap", "play"]


@dataclass(frozen=True)
class KeyMap:
    """What the keyboard does in one env (see the module docstring for where each part comes from).

    Attributes:
        keys_to_action: sorted tuple of pygame key codes held together -> action.
        noop: the action when no mapped key is held.
        wait_on_player: step only while a mapped key is held.
        digits: ``Discrete`` actions ``0 .. digits - 1`` that the digit keys pick (0 for other spaces).
    """

    keys_to_action: dict[tuple[int, ...], Any]
    noop: Any
    wait_on_player: bool = False
    digits: int = 0

    @classmethod
    def of(cls, env: gym.Env) -> KeyMap:
        """The key map ``env`` declares (``get_keys_to_action()``, ``metadata["play"]``)."""
        space = env.action_space
        table = env.get_wrapper_attr("get_keys_to_action")() if env.has_wrapper_attr("get_keys_to_action") else {}
        options = dict(env.metadata.get("play", {}))
        unknown = sorted(set(options) - {"noop", "wait_on_player"})
        if unknown:
            raise ValueError(f"play: expected metadata['play'] keys noop, wait_on_player, received {unknown}")
        default = np.zeros(space.shape, dtype=space.dtype) if isinstance(space, gym.spaces.Box) else 0
        noop = options.get("noop", default)
        for keys, action in [*table.items(), ((), noop)]:
            if not (isinstance(keys, tuple) and all(isinstance(k, int) for k in keys) and list(keys) == sorted(keys)):
                raise ValueError(f"play: expected sorted tuples of pygame key codes, received {keys!r}")
            if action not in space:
                raise ValueError(f"play: the action {action!r} of keys {keys} is not in the action space {space}")
        digits = min(int(space.n), 10) if isinstance(space, gym.spaces.Discrete) else 0
        return cls(dict(table), noop, bool(options.get("wait_on_player", False)), digits)

    @property
    def relevant(self) -> set[int]:
        """The key codes that do something: the mapped keys and the digit keys."""
        return {k for keys in self.keys_to_action for k in keys} | {ord(str(d)) for d in range(self.digits)}

    def action(self, pressed: Iterable[int]) -> Any | None:
        """The action for the held keys ``pressed`` (pygame key codes; others are ignored), or ``None``
        where the env waits for a key and none is held."""
        held = set(pressed) & self.relevant
        digits = sorted(k - ord("0") for k in held if ord("0") <= k < ord("0") + self.digits)
        if digits:
            return digits[0]
        keys = tuple(sorted(held))
        if keys in self.keys_to_action:
            return self.keys_to_action[keys]
        return None if self.wait_on_player else self.noop


def play(env_id: str, kwargs: dict | None = None, fps: int = 10, steps: int | None = None) -> int:
    """Play ``gymnasium.make(env_id, **kwargs)`` in a window (frames enlarged to ~512 px) at ``fps`` steps
    per second; ``steps``: stop after that many (headless runs). Returns the number of steps taken."""
    os.environ.setdefault("PYGLET_HEADLESS", "1")  # MiniWorld renders off-screen; pygame shows the frames
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    env = gym.make(env_id, render_mode="rgb_array", **(kwargs or {}))
    keymap = KeyMap.of(env)
    env.reset()
    pygame.init()
    frame = np.asarray(env.render())
    h, w = frame.shape[:2]
    zoom = max(1, 512 // max(h, w))
    screen = pygame.display.set_mode((w * zoom, h * zoom))
    pygame.display.set_caption(f"{env_id} — arrows/WASD, R reset, Esc quit")
    clock = pygame.time.Clock()
    taken, episode_return = 0, 0.0
    running = True
    while running:
        for event in pygame.event.get():
            quit_key = event.type == pygame.KEYDOWN and event.key in (pygame.K_ESCAPE, pygame.K_q)
            if event.type == pygame.QUIT or quit_key:
                running = False
            elif event.type == pygame.KEYDOWN and event.key == pygame.K_r:
                env.reset()
                episode_return = 0.0
        held = pygame.key.get_pressed()  # indexed by key code
        action = keymap.action(key for key in keymap.relevant if held[key])
        if action is None and steps is not None:
            action = keymap.noop  # headless run: keep stepping without keys
        if action is not None:
            _, reward, terminated, truncated, info = env.step(action)
            episode_return += float(reward)
            taken += 1
            if terminated or truncated:
                print(f"episode end: return {episode_return:.3f}, info keys {sorted(info)}")
                env.reset()
                episode_return = 0.0
        frame = np.asarray(env.render())
        big = np.repeat(np.repeat(frame, zoom, 0), zoom, 1)
        surf = pygame.surfarray.make_surface(np.ascontiguousarray(big.transpose(1, 0, 2)))
        screen.blit(surf, (0, 0))
        pygame.display.flip()
        clock.tick(fps)
        if steps is not None and taken >= steps:
            running = False
    env.close()
    pygame.quit()
    return taken
