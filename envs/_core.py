"""Shared machinery of the 2-D envs: one batched numpy core, a single env and a VectorEnv over it.

Every 2-D env is written once as a *core* that steps ``N`` copies in one numpy call. The single
``gymnasium.Env`` runs a core with ``N = 1``; the ``gymnasium.vector.VectorEnv`` (registered as the id's
``vector_entry_point`` so ``gymnasium.make_vec(id, n)`` returns it) runs a core with ``N = n``. Each copy
draws its random start from its own generator, seeded exactly as ``SyncVectorEnv`` seeds its sub-envs
(``seed + i``), so the batched env yields the same frames as ``n`` single envs.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space


class InvalidKwargError(TypeError, ValueError):
    """An unknown keyword argument (the message lists the valid ones), or one of the wrong type."""


def build_config(cls: type, kwargs: dict[str, Any], env_name: str) -> Any:
    """``cls(**kwargs)`` for a config dataclass, naming the valid fields when a key is unknown.

    Values of fields typed ``bool``, ``int``, ``float`` or ``str`` (or those ``| None``) must be of that type
    (an int is a float too; a bool is neither an int nor a float; floats are finite), else
    :class:`InvalidKwargError` ("expected X, received Y").

    Example:
        >>> from envs.image_nav import ImageNavConfig
        >>> build_config(ImageNavConfig, {"rgb": "yes"}, "ImageNav")
        Traceback (most recent call last):
        envs._core.InvalidKwargError: ImageNav: expected rgb true or false, received 'yes'
    """
    names = [f.name for f in dataclasses.fields(cls)]
    for key in kwargs:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=2)
            hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise InvalidKwargError(
                f"{env_name} got an unknown keyword argument {key!r}; valid ones are "
                f"{names + ['render_mode']}.{hint}"
            )
    hints = typing.get_type_hints(cls)
    for key, value in kwargs.items():
        _check_kwarg_type(env_name, key, value, hints.get(key))
    return cls(**kwargs)


def _check_kwarg_type(env_name: str, key: str, value: Any, hint: Any) -> None:
    """Raise :class:`InvalidKwargError` when ``value`` is not of the simple type ``hint`` (other hints pass)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else None
    is_bool = isinstance(value, bool | np.bool_)
    if hint is bool:
        ok, what = is_bool, "true or false"
    elif hint is int:
        ok, what = isinstance(value, int | np.integer) and not is_bool, "an int"
    elif hint is float:
        ok = isinstance(value, int | float | np.integer | np.floating) and not is_bool and bool(np.isfinite(value))
        what = "a finite number"
    elif hint is str:
        ok, what = isinstance(value, str), "a string"
    else:
        return
    if not ok:
        raise InvalidKwargError(f"{env_name}: expected {key} {what}, received {value!r}")


def check_choice(name: str, value: Any, valid: tuple[Any, ...]) -> None:
    """Raise ``ValueError`` naming the valid values when ``value`` is not one of them."""
    if value not in valid:
        close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"{name} must be one of {list(valid)}, got {value!r}.{hint}")


def validate_action(space: spaces.Space, action: Any) -> np.ndarray:
    """Return ``action`` as an array if it lies in ``space`` (single env), else raise ``ValueError``.

    Box actions are accepted in any float dtype (cast to the space's dtype) but must have the space's
    shape, be finite and lie within the bounds.
    """
    if isinstance(space, spaces.Discrete):
        a = np.asarray(action)
        ok = a.shape == () and a.dtype.kind in "iu" and space.start <= int(a) < space.start + space.n
        if not ok and a.shape == () and a.dtype.kind == "f" and float(a).is_integer():
            a = a.astype(np.int64)
            ok = space.start <= int(a) < space.start + space.n
        if not ok:
            raise ValueError(f"action {action!r} is not in the action space {space} (integers "
                             f"{space.start}..{space.start + space.n - 1})")
        return a.astype(np.int64)
    assert isinstance(space, spaces.Box)
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"action {action!r} is not in the action space {space}") from e
    if a.shape != space.shape or not np.all(np.isfinite(a)) or np.any(a < space.low) or np.any(a > space.high):
        raise ValueError(f"action {action!r} (shape {a.shape}) is not in the action space {space}")
    return a


def validate_batch_action(space: spaces.Space, actions: Any, n: int) -> np.ndarray:
    """Vectorised :func:`validate_action` for ``n`` actions stacked on axis 0."""
    a = np.asarray(actions)
    if isinstance(space, spaces.Discrete):
        if a.dtype.kind in "iu" and a.shape == (n,) and n:  # the common case: two reductions, no copy
            lo, hi = a.min(), a.max()
            if lo >= space.start and hi < space.start + space.n:
                return a.astype(np.int64, copy=False)
        if a.dtype.kind == "f" and np.all(np.mod(a, 1) == 0):
            a = a.astype(np.int64)
        if a.shape != (n,) or a.dtype.kind not in "iu" or np.any(a < space.start) or np.any(
            a >= space.start + space.n
        ):
            raise ValueError(f"actions {actions!r} (shape {a.shape}, dtype {a.dtype}) are not in the "
                             f"batched action space: expected shape ({n},) of integers in {space}")
        return a.astype(np.int64)
    assert isinstance(space, spaces.Box)
    a = np.asarray(a, dtype=np.float64)
    if a.shape != (n, *space.shape) or not np.all(np.isfinite(a)) or np.any(a < space.low) or np.any(
        a > space.high
    ):
        raise ValueError(f"actions of shape {a.shape} are not in the batched action space: expected "
                         f"shape {(n, *space.shape)} within {space}")
    return a


class Core:
    """A batch of ``num`` environment copies stepped together (subclasses implement the physics).

    Subclasses set ``observation_space`` / ``action_space`` (single-copy spaces) and implement
    :meth:`reset_rows`, :meth:`step`, :meth:`observe`, :meth:`info` and :meth:`render_rgb`.
    ``step`` must be deterministic: all randomness is drawn in ``reset_rows`` from the given generators.
    """

    observation_space: spaces.Space
    action_space: spaces.Space

    def __init__(self, num: int) -> None:
        self.num = num

    def reset_rows(self, rows: np.ndarray, rngs: list[np.random.Generator], options: dict | None) -> None:
        raise NotImplementedError

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance all copies; returns ``(reward [N] float64, terminated [N] bool)``."""
        raise NotImplementedError

    def observe(self) -> np.ndarray:
        """Observations ``[N, *obs_shape]`` uint8 (a fresh array)."""
        raise NotImplementedError

    def info(self) -> dict[str, np.ndarray]:
        """Ground truth, each value ``[N, ...]`` (fresh arrays)."""
        raise NotImplementedError

    def render_rgb(self, i: int) -> np.ndarray:
        """An RGB frame ``[H, W, 3]`` uint8 of copy ``i`` for videos and the human window."""
        raise NotImplementedError


class HumanWindow:
    """A pygame window showing RGB frames (works headless with ``SDL_VIDEODRIVER=dummy``)."""

    def __init__(self, title: str, fps: int) -> None:
        self.title, self.fps = title, fps
        self._screen: Any = None
        self._clock: Any = None

    def show(self, frame: np.ndarray) -> None:
        import pygame

        if self._screen is None:
            pygame.init()
            pygame.display.init()
            pygame.display.set_caption(self.title)
            self._screen = pygame.display.set_mode((frame.shape[1], frame.shape[0]))
            self._clock = pygame.time.Clock()
        surf = pygame.surfarray.make_surface(np.ascontiguousarray(frame.transpose(1, 0, 2)))
        self._screen.blit(surf, (0, 0))
        pygame.event.pump()
        pygame.display.flip()
        self._clock.tick(self.fps)

    def close(self) -> None:
        if self._screen is not None:
            import pygame

            pygame.display.quit()
            self._screen = None


def upscale(frame: np.ndarray, min_size: int = 256) -> np.ndarray:
    """Nearest-neighbour upscale ``[H, W, C]`` by an integer factor so the short side is >= ``min_size``."""
    k = max(1, -(-min_size // min(frame.shape[:2])))
    return np.repeat(np.repeat(frame, k, axis=0), k, axis=1)


class CoreEnv(gym.Env):
    """A single env over a core with ``N = 1`` (subclasses build the core in ``__init__``)."""

    metadata: dict[str, Any] = {"render_modes": ["human", "rgb_array"], "render_fps": 10}
    core: Core

    def _setup(self, core: Core, render_mode: str | None) -> None:
        check_choice("render_mode", render_mode, (None, "human", "rgb_array"))
        self.core = core
        self.observation_space = core.observation_space
        self.action_space = core.action_space
        self.render_mode = render_mode
        self._window: HumanWindow | None = None

    def _info0(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.core.info().items()}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.core.reset_rows(np.zeros(1, dtype=np.int64), [self.np_random], options)
        if self.render_mode == "human":
            self.render()
        return self.core.observe()[0], self._info0()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = validate_action(self.action_space, action)
        reward, terminated = self.core.step(a[None])
        if self.render_mode == "human":
            self.render()
        return self.core.observe()[0], float(reward[0]), bool(terminated[0]), False, self._info0()

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' or 'human'")
            return None
        frame = self.core.render_rgb(0)
        if self.render_mode == "rgb_array":
            return frame
        if self._window is None:
            self._window = HumanWindow(type(self).__name__, self.metadata["render_fps"])
        self._window.show(frame)
        return None

    def close(self) -> None:
        if self._window is not None:
            self._window.close()
            self._window = None


class CoreVectorEnv(VectorEnv):
    """``num_envs`` copies in one numpy core with next-step autoreset, like ``SyncVectorEnv``.

    Episodes are truncated after ``max_episode_steps`` (the registered value unless overridden), as the
    ``TimeLimit`` wrapper does for the single env. After an episode ends, the next ``step`` resets that copy
    (ignoring its action) and returns the first observation with reward 0 (``AutoresetMode.NEXT_STEP``).
    """

    metadata: dict[str, Any] = {
        "render_modes": ["rgb_array"],
        "render_fps": 10,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def _setup(self, core: Core, max_episode_steps: int | None, render_mode: str | None) -> None:
        check_choice("render_mode", render_mode, (None, "rgb_array"))
        self.core = core
        self.num_envs = core.num
        self.single_observation_space = core.observation_space
        self.single_action_space = core.action_space
        self.observation_space = batch_space(core.observation_space, core.num)
        self.action_space = batch_space(core.action_space, core.num)
        self.render_mode = render_mode
        self.max_episode_steps = max_episode_steps
        self._rngs: list[np.random.Generator] | None = None
        self._t = np.zeros(core.num, dtype=np.int64)
        self._autoreset = np.zeros(core.num, dtype=bool)
        self._masks: dict[str, np.ndarray] = {}

    def _vector_info(self) -> dict[str, np.ndarray]:
        info = self.core.info()
        for k in list(info):
            mask = self._masks.get(k)
            if mask is None:  # every copy has every key: one read-only all-true mask per key, shared
                mask = self._masks[k] = np.ones(self.num_envs, dtype=bool)
                mask.flags.writeable = False
            info["_" + k] = mask
        return info

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"expected {self.num_envs} seeds, got {len(seeds)}")
        if self._rngs is None:
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
        else:
            self._rngs = [seeding.np_random(s)[0] if s is not None else r for s, r in zip(seeds, self._rngs)]
        self.core.reset_rows(np.arange(self.num_envs), self._rngs, options)
        self._t[:] = 0
        self._autoreset[:] = False
        return self.core.observe(), self._vector_info()

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        if self._rngs is None:
            raise RuntimeError("call reset() before step()")
        a = validate_batch_action(self.single_action_space, actions, self.num_envs)
        reward, terminated = self.core.step(a)
        self._t += 1
        truncated = np.zeros(self.num_envs, dtype=bool)
        if self.max_episode_steps is not None:
            truncated = self._t >= self.max_episode_steps
        if self._autoreset.any():
            rows = np.flatnonzero(self._autoreset)
            self.core.reset_rows(rows, [self._rngs[i] for i in rows], None)
            reward[rows], terminated[rows], truncated[rows], self._t[rows] = 0.0, False, False, 0
        self._autoreset = terminated | truncated
        return self.core.observe(), reward, terminated, truncated, self._vector_info()

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode != "rgb_array":
            return None
        return tuple(self.core.render_rgb(i) for i in range(self.num_envs))


# ------------------------------------------------------------------------------------------ keyboard play
# What an env declares so that `scripts/play.py` (envs/play.py) drives it, in gymnasium.utils.play's terms:
# ``get_keys_to_action()`` and ``metadata["play"]`` (``noop``, ``wait_on_player``); see envs/play.py.
DIRECTIONS = ("up", "down", "left", "right")


def direction_keys() -> dict[str, tuple[int, int]]:
    """pygame key codes of each direction: the arrow key and its WASD twin."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # no banner on stdout at the first import
    import pygame

    return {"up": (pygame.K_UP, pygame.K_w), "down": (pygame.K_DOWN, pygame.K_s),
            "left": (pygame.K_LEFT, pygame.K_a), "right": (pygame.K_RIGHT, pygame.K_d)}


def direction_keys_to_action(actions: dict[str, Any], combine: str = "first",
                             space: spaces.Box | None = None) -> dict[tuple[int, ...], Any]:
    """Gymnasium's ``keys_to_action`` (sorted pygame key codes -> action, as ``gymnasium.utils.play.play``
    reads it) for direction keys, arrows or WASD, held in any combination.

    ``actions`` maps direction names (``up``, ``down``, ``left``, ``right``) to actions. ``combine="first"``:
    a combination gives the action of the first held direction in ``actions``' order (discrete moves);
    ``"sum"``: the sum of the held directions' actions (a key and its twin count once), clipped to the Box
    ``space`` (forces, torques).

    Example:
        >>> keys = direction_keys_to_action({"up": 0, "down": 1})
        >>> keys[(ord("w"),)], keys[(ord("s"),)], keys[(ord("s"), ord("w"))], len(keys)
        (0, 1, 0, 15)
        >>> box = spaces.Box(-1.0, 1.0, (2,), np.float32)
        >>> both = direction_keys_to_action({"up": [0, -1], "right": [1, 0]}, "sum", box)
        >>> both[(ord("d"), ord("w"))].tolist()
        [1.0, -1.0]
    """
    check_choice("combine", combine, ("first", "sum"))
    for d in actions:
        check_choice("direction", d, DIRECTIONS)
    if combine == "sum" and not isinstance(space, spaces.Box):
        raise ValueError(f"direction_keys_to_action: combine='sum' expected a Box space, received {space!r}")
    codes = direction_keys()
    keys = [(k, d) for d in actions for k in codes[d]]
    table: dict[tuple[int, ...], Any] = {}
    for mask in range(1, 2 ** len(keys)):
        held = [(k, d) for i, (k, d) in enumerate(keys) if mask >> i & 1]
        dirs = [d for d in actions if any(d == h for _, h in held)]  # in the order of ``actions``
        if combine == "first":
            action = actions[dirs[0]]
        else:
            assert isinstance(space, spaces.Box)
            total = np.sum([np.asarray(actions[d], dtype=np.float64) for d in dirs], axis=0)
            action = np.clip(total, space.low, space.high).astype(space.dtype)
        table[tuple(sorted(k for k, _ in held))] = action
    return table
