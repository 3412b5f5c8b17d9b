"""Torque-controlled pendulum seen as 16x16 frames (KVAE vs. DVBF comparison, thesis §6.5.2).

The dynamics, reward and start distribution are those of Gymnasium's ``Pendulum-v1`` (re-written batched
in numpy; ``tests/envs`` checks them step by step against ``gymnasium.envs.classic_control.PendulumEnv``).
The observation is a grayscale frame of the rod instead of ``(cos θ, sin θ, θ̇)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from gymnasium import spaces

from envs._core import Core, CoreEnv, CoreVectorEnv, build_config, direction_keys_to_action, upscale


@dataclass
class PixelPendulumConfig:
    """Parameters of :class:`PixelPendulumEnv` (physics defaults: ``Pendulum-v1``).

    Attributes:
        size: frame side in pixels.
        g: gravity.
        max_torque: torque bound (the action space is ``[-max_torque, max_torque]``).
        max_speed: angular-speed clip.
        dt: time step.
        rod_length: rod length as a fraction of half the frame side.
        rod_width: rod thickness in pixels.
    """

    size: int = 16
    g: float = 10.0
    max_torque: float = 2.0
    max_speed: float = 8.0
    dt: float = 0.05
    rod_length: float = 0.85
    rod_width: float = 2.0

    def __post_init__(self) -> None:
        if self.size < 4:
            raise ValueError(f"size must be >= 4 pixels, got {self.size}")
        if self.max_torque <= 0 or self.dt <= 0:
            raise ValueError(f"max_torque and dt must be positive, got {self.max_torque}, {self.dt}")


def angle_normalize(x: np.ndarray) -> np.ndarray:
    """Wrap angles to [-π, π) (as in ``Pendulum-v1``)."""
    return ((x + np.pi) % (2 * np.pi)) - np.pi


class PixelPendulumCore(Core):
    """``N`` pendulums; state ``theta [N]`` (0 = upright) and ``thetadot [N]``."""

    m = 1.0
    length = 1.0

    def __init__(self, num: int, cfg: PixelPendulumConfig) -> None:
        super().__init__(num)
        self.cfg = cfg
        self.observation_space = spaces.Box(0, 255, (cfg.size, cfg.size, 1), np.uint8)
        self.action_space = spaces.Box(-cfg.max_torque, cfg.max_torque, (1,), np.float32)
        self.theta = np.zeros(num)
        self.thetadot = np.zeros(num)
        self._grid = np.arange(cfg.size) + 0.5

    def reset_rows(self, rows: np.ndarray, rngs: list[np.random.Generator], options: dict | None) -> None:
        state = None if options is None else options.get("state")
        for i, rng in zip(rows, rngs):
            if state is not None:
                st = np.asarray(state, dtype=np.float64)
                if st.shape != (2,) or not np.all(np.isfinite(st)):
                    raise ValueError(f"options['state'] must be a finite (theta, thetadot), got {state!r}")
            else:
                st = rng.uniform(low=[-np.pi, -1.0], high=[np.pi, 1.0])  # as Pendulum-v1.reset
            self.theta[i], self.thetadot[i] = st

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.cfg
        th, thdot = self.theta, self.thetadot
        u = np.clip(actions[:, 0].astype(np.float64), -cfg.max_torque, cfg.max_torque)
        costs = angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * u**2
        newthdot = thdot + (3 * cfg.g / (2 * self.length) * np.sin(th) + 3.0 / (self.m * self.length**2) * u) * cfg.dt
        newthdot = np.clip(newthdot, -cfg.max_speed, cfg.max_speed)
        self.theta = th + newthdot * cfg.dt
        self.thetadot = newthdot
        return -costs, np.zeros(self.num, dtype=bool)

    def observe(self) -> np.ndarray:
        """Anti-aliased rod from the centre: intensity ``clip(w/2 + 1/2 - dist(pixel, rod), 0, 1)``."""
        cfg = self.cfg
        c = cfg.size / 2
        L = cfg.rod_length * c
        # tip in image coordinates (x = column, y = row down); θ = 0 points up, as Pendulum-v1 renders it
        tx = c - L * np.sin(self.theta)  # [N]
        ty = c - L * np.cos(self.theta)  # [N]
        px = self._grid[None, None, :] - c  # [1, 1, W]
        py = self._grid[None, :, None] - c  # [1, H, 1]
        dx, dy = (tx - c)[:, None, None], (ty - c)[:, None, None]  # [N, 1, 1]
        t = np.clip((px * dx + py * dy) / (L**2), 0.0, 1.0)  # projection onto the segment
        dist = np.sqrt((px - t * dx) ** 2 + (py - t * dy) ** 2)  # [N, H, W]
        inten = np.clip(cfg.rod_width / 2 + 0.5 - dist, 0.0, 1.0)
        return (inten * 255).round().astype(np.uint8)[..., None]

    def info(self) -> dict[str, np.ndarray]:
        return {"state": np.stack([self.theta, self.thetadot], axis=1)}  # [N, 2]

    def render_rgb(self, i: int) -> np.ndarray:
        return upscale(np.repeat(self.observe()[i], 3, axis=-1), 256)


class PixelPendulumEnv(CoreEnv):
    """Gymnasium's ``Pendulum-v1`` seen through 16x16 grayscale frames (thesis §6.5.2).

    ## Description
    A rod swinging about its fixed end under gravity and a torque; the goal of ``Pendulum-v1`` is to
    swing it up and keep it upright.

    ## Action Space
    ``Box(-2, 2, (1,), float32)``: the torque. Keyboard (``scripts/play.py``): left/right (or A/D) apply the
    largest torque (:meth:`get_keys_to_action`).

    ## Observation Space
    ``Box(0, 255, (16, 16, 1), uint8)``: the rod drawn anti-aliased from the frame centre, upright at θ = 0.

    ## Rewards
    ``-(θ² + 0.1 θ̇² + 0.001 u²)`` with θ normalised to [-π, π), as ``Pendulum-v1``.

    ## Starting State
    θ uniform in [-π, π], θ̇ uniform in [-1, 1]; ``reset(options={"state": (theta, thetadot)})`` sets it.

    ## Episode End
    Never terminates; truncated after ``max_episode_steps`` (200, as ``Pendulum-v1``; the thesis data used
    sequences of 15 frames).

    ## Info
    ``info["state"]``: float64 ``(theta, thetadot)`` after the step (θ not wrapped).

    ## Arguments
    See :class:`PixelPendulumConfig`; e.g. ``gymnasium.make("PixelPendulum-v0", size=32)``.

    Example:
        >>> import gymnasium as gym, envs
        >>> env = gym.make("PixelPendulum-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, info["state"].shape
        ((16, 16, 1), (2,))
    """

    # planning_task: what `worldmodels plan --task auto` plans for (a name of agents.tasks.TASKS + kwargs)
    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 20, "planning_task": {"name": "swing-up"}}

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        self.config = build_config(PixelPendulumConfig, kwargs, "PixelPendulum")
        self._setup(PixelPendulumCore(1, self.config), render_mode)

    def get_keys_to_action(self) -> dict[tuple[int, ...], np.ndarray]:
        """Left/right (arrows or A/D): the largest torque either way (both held: none)."""
        space = cast(spaces.Box, self.action_space)
        high = float(space.high.reshape(-1)[0])
        return direction_keys_to_action({"left": [-high], "right": [high]}, "sum", space)


class PixelPendulumVectorEnv(CoreVectorEnv):
    """``num_envs`` pixel pendulums stepped in one numpy call (``gymnasium.make_vec("PixelPendulum-v0", n)``).

    Example:
        >>> import gymnasium as gym, envs
        >>> venv = gym.make_vec("PixelPendulum-v0", num_envs=2)
        >>> venv.reset(seed=0)[0].shape
        (2, 16, 16, 1)
    """

    def __init__(
        self, num_envs: int = 1, max_episode_steps: int | None = None, render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.config = build_config(PixelPendulumConfig, kwargs, "PixelPendulum")
        self._setup(PixelPendulumCore(num_envs, self.config), max_episode_steps, render_mode)
