"""MiniWorld 3-D rooms and mazes for the GTM-SM walking and rotating agents (thesis §7.4.2, Labyrinth).

A thin env around a ``miniworld`` env (the optional ``miniworld`` extra): small square observations,
headless rendering, and the ground truth the GTM-SM needs — ``info["pose"] = (x, z, heading)`` and the
per-step ``info["displacement"]`` (§7.4.2.2 "the agent feels its movement"). ``actions="rotate"`` keeps
only the two turn actions with the rotational period of §7.4.2.1 (about 41 steps per turn).

Ids are ``WM-MiniWorld-<Name>-v0`` so they never clash with MiniWorld's own ``MiniWorld-<Name>-v0``.
``PYGLET_HEADLESS=1`` is set (unless already set) before pyglet is first imported, so no display is
needed; ``render_mode="human"`` needs a display and ``PYGLET_HEADLESS`` unset.
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs._core import build_config, check_choice, direction_keys_to_action, validate_action

# MiniWorld env names wrapped by ``envs`` (the part after ``MiniWorld-`` and before ``-v0``).
MINIWORLD_NAMES: tuple[str, ...] = (
    "Maze", "MazeS2", "MazeS3", "MazeS3Fast", "FourRooms", "OneRoom", "OneRoomS6", "TMaze", "YMaze",
    "ThreeRooms", "Hallway", "RoomObjects", "WallGap", "Sidewalk",
)
ROTATION_PERIOD = 41  # steps per full turn of the rotating agent (§7.4.2.1)
PoseT = TypeVar("PoseT")  # a numpy array or a torch tensor of poses [..., 3]


def import_miniworld(render_mode: str | None = None) -> Any:
    """Import ``miniworld`` headless; a clear ``ImportError`` if the extra is missing."""
    if "pyglet" not in sys.modules and render_mode != "human":
        os.environ.setdefault("PYGLET_HEADLESS", "1")
    try:
        import miniworld
    except ImportError as e:
        raise ImportError(
            "the MiniWorld envs need the optional 'miniworld' extra: pip install 'worldmodels[miniworld]' "
            f"(miniworld>=2.1, pyglet<2); import failed with: {e}"
        ) from e
    return miniworld


def wrap_angle(a: np.ndarray | float) -> np.ndarray:
    """Angles to [-π, π)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def right_handed(pose: PoseT) -> PoseT:
    """MiniWorld's pose ``(x, z, θ)`` -> ``(x, −z, θ)``, a right-handed frame in which a forward step moves
    along ``(cos θ, sin θ)`` (the convention of thesis eq. (7.4)).

    MiniWorld's ground plane is ``(x, z)`` and its heading turns from +x towards −z, so ``info["pose"]`` is
    left-handed. ``pose [..., 3]`` is a numpy array or a torch tensor (a copy of the same type and dtype
    comes back).

    Example:
        >>> right_handed(np.array([1.0, 2.0, 0.5]))
        array([ 1. , -2. ,  0.5])
    """
    shape = getattr(pose, "shape", None)
    if shape is None or len(shape) == 0 or shape[-1] != 3:
        raise ValueError(f"right_handed: expected a pose [..., 3] (x, z, heading), received shape {shape}")
    p: Any = pose
    out = p.clone() if hasattr(p, "clone") else np.array(p, copy=True)  # torch tensor | numpy array
    out[..., 1] = -out[..., 1]
    return cast(PoseT, out)


@dataclass
class MiniWorldNavConfig:
    """Parameters of :class:`MiniWorldNavEnv`.

    Attributes:
        env_name: MiniWorld env name, one of :data:`MINIWORLD_NAMES` (e.g. ``"Maze"``).
        obs_size: observation side in pixels (32 as in the thesis, or 64).
        actions: ``"default"`` (the MiniWorld env's own action space) or ``"rotate"`` (turn left/right only).
        turn_step: degrees per turn action (``None``: MiniWorld's 15, or 360/41 in ``rotate`` mode).
        forward_step: metres per forward step (``None``: MiniWorld's 0.15).
        max_episode_steps: truncate after this many steps (``None``: only the MiniWorld env's own limit).
            Reachable through the registration only: ``gym.make(id, max_episode_steps=n)`` is gymnasium's
            own outer ``TimeLimit``, which cannot lengthen an episode MiniWorld ends first.
        miniworld_max_steps: replaces the MiniWorld env's own step limit (``None``: keep it). FourRooms,
            Hallway, ... hard-code 250 steps and take no such argument; e.g.
            ``gym.make("WM-MiniWorld-FourRooms-v0", miniworld_max_steps=300)``. MiniWorld's goal reward
            ``1 - 0.2 * step / limit`` uses the new limit.
        domain_rand: MiniWorld's domain randomisation.
        env_kwargs: extra keyword arguments for the MiniWorld env (e.g. ``{"num_rows": 4}``).
    """

    env_name: str = "Maze"
    obs_size: int = 32
    actions: str = "default"
    turn_step: float | None = None
    forward_step: float | None = None
    max_episode_steps: int | None = None
    miniworld_max_steps: int | None = None
    domain_rand: bool = False
    env_kwargs: dict | None = None

    def __post_init__(self) -> None:
        check_choice("env_name", self.env_name, MINIWORLD_NAMES)
        check_choice("actions", self.actions, ("default", "rotate"))
        for name in ("max_episode_steps", "miniworld_max_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an int >= 1 or None, got {value!r}")
        if self.obs_size < 8:
            raise ValueError(f"obs_size must be >= 8 pixels, got {self.obs_size}")


class MiniWorldNavEnv(gym.Env):
    """A MiniWorld room or maze seen through ``obs_size`` square frames, with the agent's pose in ``info``.

    ## Description
    A first-person agent walks in a 3-D world generated anew each episode (§7.4.2 uses DeepMind Lab;
    MiniWorld is the open substitute). Rendering is off-screen (EGL) and needs no display.

    ## Action Space
    The MiniWorld env's own (``Discrete(3)`` for the mazes: 0 turn left, 1 turn right, 2 forward;
    more for rooms with objects); ``actions="rotate"``: ``Discrete(2)`` (0 turn left, 1 turn right).
    Keyboard (``scripts/play.py``): left/right turn, up forward, down back (where the space has them); the
    agent waits for a key (:meth:`get_keys_to_action`, ``metadata["play"]``).

    ## Observation Space
    ``Box(0, 255, (obs_size, obs_size, 3), uint8)``, the agent's camera.

    ## Rewards
    MiniWorld's (e.g. reaching the goal box in the mazes).

    ## Starting State
    MiniWorld's random world and agent placement for the seed.

    ## Episode End
    MiniWorld's (goal reached, or its step limit: ``miniworld_max_steps`` replaces it, e.g. FourRooms' 250
    steps), or truncation after ``max_episode_steps``.

    ## Info
    ``info["pose"]``: float64 ``(x, z, heading)`` (metres, radians in [-π, π)); ``info["displacement"]``:
    float64 ``(dx, dz, dheading)`` of the last step in world coordinates (zeros after reset).

    ## Arguments
    See :class:`MiniWorldNavConfig`; e.g. ``gymnasium.make("WM-MiniWorld-Maze-v0", obs_size=64)``.

    Example:
        >>> import contextlib, io, gymnasium as gym, envs
        >>> with contextlib.redirect_stdout(io.StringIO()):  # MiniWorld may print its OpenGL fallbacks
        ...     env = gym.make("WM-MiniWorld-OneRoom-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, info["pose"].shape
        ((32, 32, 3), (3,))
    """

    metadata: dict[str, Any] = {"render_modes": ["human", "rgb_array"], "render_fps": 30,
                                "play": {"wait_on_player": True}}  # steps only while a key is held

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        self.config = cfg = build_config(MiniWorldNavConfig, kwargs, "MiniWorldNav")
        check_choice("render_mode", render_mode, (None, "human", "rgb_array"))
        import_miniworld(render_mode)
        from miniworld.params import DEFAULT_PARAMS

        params = DEFAULT_PARAMS.copy()
        turn = cfg.turn_step if cfg.turn_step is not None else (
            360.0 / ROTATION_PERIOD if cfg.actions == "rotate" else None
        )
        if turn is not None:
            params.set("turn_step", turn, turn, turn)
        if cfg.forward_step is not None:
            params.set("forward_step", cfg.forward_step, cfg.forward_step, cfg.forward_step)
        spec = gym.spec(f"MiniWorld-{cfg.env_name}-v0")
        entry = spec.entry_point  # resolved as gym.make does
        if entry is None:
            raise ValueError(f"MiniWorldNav: {spec.id} is registered without an entry_point")
        creator = entry if callable(entry) else gym.envs.registration.load_env_creator(entry)
        inner_kwargs = dict(spec.kwargs)
        inner_kwargs.update(cfg.env_kwargs or {})
        inner_kwargs.update(
            obs_width=cfg.obs_size, obs_height=cfg.obs_size, params=params, domain_rand=cfg.domain_rand,
            render_mode=render_mode,
        )
        inner: Any = creator(**inner_kwargs)  # a miniworld MiniWorldEnv (miniworld ships no types)
        if cfg.miniworld_max_steps is not None:
            inner.max_episode_steps = cfg.miniworld_max_steps  # read by MiniWorldEnv.step and _reward
        self.inner: Any = inner
        self.render_mode = render_mode
        self.observation_space = self.inner.observation_space
        self.action_space = spaces.Discrete(2) if cfg.actions == "rotate" else self.inner.action_space
        self._pose = np.zeros(3)
        self._steps = 0

    def _read_pose(self) -> np.ndarray:
        agent = self.inner.agent
        return np.array([agent.pos[0], agent.pos[2], float(wrap_angle(agent.dir))], dtype=np.float64)

    def pose(self) -> np.ndarray:
        """The agent's pose now: float64 ``(x, z, heading)`` ``[3]``, as ``info["pose"]`` (a fresh array)."""
        return self._read_pose()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is None and self.inner._np_random is None:
            seed = int(self.np_random.integers(2**31))  # derive the world's seed from ours
        obs, info = self.inner.reset(seed=seed, options=options)
        self._pose = self._read_pose()
        self._steps = 0
        info = dict(info)
        info["pose"], info["displacement"] = self._pose.copy(), np.zeros(3)
        return obs, info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = int(validate_action(self.action_space, action))
        obs, reward, terminated, truncated, info = self.inner.step(a)
        pose = self._read_pose()
        disp = pose - self._pose
        disp[2] = wrap_angle(disp[2])
        self._pose = pose
        self._steps += 1
        if self.config.max_episode_steps is not None and self._steps >= self.config.max_episode_steps:
            truncated = True
        info = copy.deepcopy(info)  # MiniWorld may return live objects (e.g. TMaze's goal_pos)
        info["pose"], info["displacement"] = pose, disp
        return obs, float(reward), bool(terminated), bool(truncated), info

    def get_keys_to_action(self) -> dict[tuple[int, ...], int]:
        """Arrows or WASD: left/right turn (0, 1), up forward (2), down back (3), those the space has."""
        n = int(cast(spaces.Discrete, self.action_space).n)
        return direction_keys_to_action({d: i for d, i in (("left", 0), ("right", 1), ("up", 2), ("down", 3)) if i < n})

    def render(self) -> np.ndarray | None:
        return self.inner.render()

    def close(self) -> None:
        self.inner.close()
