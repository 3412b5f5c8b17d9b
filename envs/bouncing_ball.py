"""Bouncing-ball family of the KVAE experiments (thesis §6.5.1, §6.5.3, §6.12).

A ball of radius 3 px moves in a 32x32 binary video with time step 0.2 and bounces elastically off walls
at 2 and 30 px (NOTES: start at (16, 16) plus N(0, 10²) noise clipped to [6, 26], speed uniform in
[10, 15], direction uniform). Variants:

* ``box`` — no forces, elastic walls (§6.5.1).
* ``gravity`` — constant downward acceleration (§6.5.3 (ii)).
* ``polygon`` — walls form an irregular convex polygon (§6.5.3 (i)); collisions reflect the velocity
  about each edge normal.
* ``pong`` — two paddles (drawn) follow the ball's vertical position, so the ball bounces between them and
  stays in the frame (§6.5.3 (iii)).

The thesis videos are passive; ``action_mode="force"`` adds a bounded continuous force on the ball so a
world model trained on such data can be planned with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from envs._core import (
    Core,
    CoreEnv,
    CoreVectorEnv,
    build_config,
    check_choice,
    direction_keys_to_action,
    upscale,
)

VARIANTS = ("box", "gravity", "polygon", "pong")

# An irregular convex hexagon inside the 32x32 frame (vertices (x, y), counter-clockwise on screen).
DEFAULT_POLYGON: tuple[tuple[float, float], ...] = (
    (3.0, 10.0), (12.0, 2.5), (27.0, 4.0), (30.0, 19.0), (21.0, 30.0), (6.0, 26.0),
)


@dataclass
class BouncingBallConfig:
    """Parameters of :class:`BouncingBallEnv` (defaults: the KVAE box data, NOTES.md).

    Attributes:
        variant: ``"box"``, ``"gravity"``, ``"polygon"`` or ``"pong"``.
        size: frame side in pixels (frames are ``size x size``).
        dt: integration time step.
        radius: ball radius in pixels.
        walls: ``(low, high)`` wall coordinates of the box on both axes (pixels).
        start_std: std of the Gaussian start noise around the frame centre.
        start_clip: ``(low, high)`` clip of the start position.
        speed_range: ``(low, high)`` of the uniform initial speed (pixels per unit time).
        gravity: downward acceleration of the ``gravity`` variant (pixels per unit time²).
        polygon: polygon vertices ``(x, y)`` of the ``polygon`` variant (must be convex).
        paddle_height: paddle length of the ``pong`` variant (pixels).
        paddle_width: paddle thickness of the ``pong`` variant (pixels).
        action_mode: ``"none"`` (passive, ``Discrete(1)``) or ``"force"`` (``Box(-1, 1, (2,))`` scaled by
            ``max_force``).
        max_force: acceleration produced by an action of norm 1 per axis.
        max_speed: speed cap in ``force`` mode (keeps long pushes bounded).
    """

    variant: str = "box"
    size: int = 32
    dt: float = 0.2
    radius: float = 3.0
    walls: tuple[float, float] = (2.0, 30.0)
    start_std: float = 10.0
    start_clip: tuple[float, float] = (6.0, 26.0)
    speed_range: tuple[float, float] = (10.0, 15.0)
    gravity: float = 10.0
    polygon: tuple[tuple[float, float], ...] = DEFAULT_POLYGON
    paddle_height: float = 8.0
    paddle_width: float = 2.0
    action_mode: str = "none"
    max_force: float = 10.0
    max_speed: float = 30.0

    def __post_init__(self) -> None:
        check_choice("variant", self.variant, VARIANTS)
        check_choice("action_mode", self.action_mode, ("none", "force"))
        if self.size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {self.size}")
        lo, hi = self.walls
        if not 0 <= lo < hi <= self.size or hi - lo <= 2 * self.radius + 1:
            raise ValueError(f"walls {self.walls} must lie in [0, {self.size}] and leave room for a ball of "
                             f"radius {self.radius}")
        if self.dt <= 0 or self.radius <= 0:
            raise ValueError(f"dt and radius must be positive, got dt={self.dt}, radius={self.radius}")


def _polygon_halfplanes(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inward unit normals ``n [E, 2]`` and offsets ``c [E]`` so that inside means ``n·p >= c``."""
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3:
        raise ValueError(f"polygon must be >= 3 vertices (x, y), got shape {v.shape}")
    centroid = v.mean(axis=0)
    e = np.roll(v, -1, axis=0) - v
    n = np.stack([-e[:, 1], e[:, 0]], axis=1)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    c = np.einsum("ij,ij->i", n, v)
    flip = (n @ centroid) < c
    n[flip], c[flip] = -n[flip], -c[flip]
    if np.any(np.einsum("ij,kj->ik", n, v) < c[:, None] - 1e-9):
        raise ValueError("polygon must be convex")
    return n, c


class BouncingBallCore(Core):
    """``N`` balls stepped together; state ``pos [N, 2]`` (x = column, y = row, pixels), ``vel [N, 2]``."""

    def __init__(self, num: int, cfg: BouncingBallConfig) -> None:
        super().__init__(num)
        self.cfg = cfg
        s = cfg.size
        self.observation_space = spaces.Box(0, 255, (s, s, 1), np.uint8)
        if cfg.action_mode == "force":
            self.action_space: spaces.Space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        else:
            self.action_space = spaces.Discrete(1)
        self.pos = np.zeros((num, 2))  # [N, 2] (x, y)
        self.vel = np.zeros((num, 2))  # [N, 2]
        lo, hi = cfg.walls
        r = cfg.radius
        # axis-aligned bounds of the ball centre: [[x_lo, y_lo], [x_hi, y_hi]]
        self.lo = np.array([lo + r, lo + r])
        self.hi = np.array([hi - r, hi - r])
        if cfg.variant == "pong":  # the paddles' faces are the left/right walls
            self.lo[0] += cfg.paddle_width
            self.hi[0] -= cfg.paddle_width
        if cfg.variant == "polygon":
            self.normals, self.offsets = _polygon_halfplanes(np.array(cfg.polygon))
        self.paddle_y = np.zeros(num)  # [N] paddle centres (pong)
        centres = np.arange(s) + 0.5
        self._grid = centres  # pixel centres
        self._k = int(np.ceil(2 * cfg.radius)) + 2  # the ball covers at most a k x k block
        self._offs = np.arange(self._k)
        self._centres = self._offs + 0.5  # [k] pixel-centre offsets inside a block
        self._rows = np.arange(num)
        self._2lo, self._2hi = 2 * self.lo, 2 * self.hi

    # -- reset --------------------------------------------------------------------------------------
    def _inside(self, p: np.ndarray) -> bool:
        if self.cfg.variant == "polygon":
            return bool(np.all(self.normals @ p >= self.offsets + self.cfg.radius))
        return bool(np.all(p >= self.lo) and np.all(p <= self.hi))

    def _draw(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start positions and velocities ``[M, 2]`` from uniforms ``u [M, 4]`` (Box-Muller for the noise)."""
        cfg = self.cfg
        rad = np.sqrt(-2.0 * np.log1p(-u[:, 0]))  # 1 - u in (0, 1]
        z = rad[:, None] * np.stack([np.cos(2 * np.pi * u[:, 1]), np.sin(2 * np.pi * u[:, 1])], axis=1)
        p = np.clip(cfg.size / 2 + cfg.start_std * z, *cfg.start_clip)
        p = np.clip(p, self.lo, self.hi)
        speed = cfg.speed_range[0] + (cfg.speed_range[1] - cfg.speed_range[0]) * u[:, 2]
        angle = 2 * np.pi * u[:, 3]
        v = speed[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        return p, v

    def reset_rows(self, rows: np.ndarray, rngs: list[np.random.Generator], options: dict | None) -> None:
        state = None if options is None else options.get("state")
        if state is not None:
            st = np.asarray(state, dtype=np.float64)
            if st.shape != (4,) or not np.all(np.isfinite(st)) or not self._inside(st[:2]):
                raise ValueError(f"options['state'] must be a finite (x, y, vx, vy) with the ball inside "
                                 f"the walls, got {state!r}")
            self.pos[rows], self.vel[rows] = st[:2], st[2:]
        else:
            # one generator call per copy; everything else is vectorised over the rows
            p, v = self._draw(np.stack([rng.random(4) for rng in rngs]))
            # rejection sampling: only the polygon can reject (_draw clips into the box)
            for j, rng in enumerate(rngs if self.cfg.variant == "polygon" else ()):
                tries = 0
                while not self._inside(p[j]) and tries < 1000:
                    p[j], v[j] = (a[0] for a in self._draw(rng.random((1, 4))))
                    tries += 1
            self.pos[rows], self.vel[rows] = p, v
        self._update_paddles()

    # -- dynamics -----------------------------------------------------------------------------------
    def _update_paddles(self) -> None:
        cfg = self.cfg
        if cfg.variant == "pong":
            half = cfg.paddle_height / 2
            self.paddle_y = np.clip(self.pos[:, 1], cfg.walls[0] + half, cfg.walls[1] - half)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.cfg
        if cfg.variant == "gravity" or cfg.action_mode == "force":
            acc = np.zeros_like(self.vel)
            if cfg.variant == "gravity":
                acc[:, 1] += cfg.gravity  # y grows downwards
            if cfg.action_mode == "force":
                acc += cfg.max_force * actions.astype(np.float64)
            self.vel += acc * cfg.dt  # semi-implicit Euler
            if cfg.action_mode == "force":
                speed = np.linalg.norm(self.vel, axis=1, keepdims=True)
                self.vel *= np.minimum(1.0, cfg.max_speed / np.maximum(speed, 1e-12))
        self.pos += self.vel * cfg.dt
        if cfg.variant == "polygon":
            self._collide_polygon()
        else:
            self._collide_box()
        self._update_paddles()
        return np.zeros(self.num), np.zeros(self.num, dtype=bool)

    def _collide_box(self) -> None:
        # exact elastic reflection about each wall (repeat for the rare double bounce in one step)
        pos, vel = self.pos, self.vel  # [N, 2], updated in place
        for _ in range(3):
            over, under = pos > self.hi, pos < self.lo  # [N, 2], disjoint
            if not (over.any() or under.any()):
                break
            np.subtract(self._2hi, pos, out=pos, where=over)  # pos = 2 hi - pos past the high wall
            np.subtract(self._2lo, pos, out=pos, where=under)  # pos = 2 lo - pos past the low wall
            np.abs(vel, out=vel, where=over | under)
            np.negative(vel, out=vel, where=over)  # -|v| after the high wall, |v| after the low one
        np.minimum(np.maximum(self.pos, self.lo, out=self.pos), self.hi, out=self.pos)  # = np.clip, 5x cheaper

    def _collide_polygon(self) -> None:
        r = self.cfg.radius
        for _ in range(4):  # deepest penetrated edge first; repeat for corners
            depth = self.pos @ self.normals.T - self.offsets - r  # [N, E], < 0: penetrating edge e
            rows = np.flatnonzero(depth.min(axis=1) < 0)
            if rows.size == 0:
                break
            e = depth[rows].argmin(axis=1)  # [M]
            d, n = depth[rows, e], self.normals[e]  # [M], [M, 2]
            self.pos[rows] -= 2 * d[:, None] * n  # mirror the centre across the shifted edge
            vn = np.einsum("ij,ij->i", self.vel[rows], n)
            self.vel[rows] -= 2 * np.minimum(vn, 0.0)[:, None] * n  # reflect the approaching component

    # -- observation --------------------------------------------------------------------------------
    def observe(self) -> np.ndarray:
        cfg = self.cfg
        n, s = self.num, cfg.size
        frame = np.zeros((n, s, s), dtype=np.uint8)  # [N, H, W]
        # the ball covers at most a k x k block: evaluate the disc there only, then scatter
        k, offs = self._k, self._offs
        corner = np.minimum(np.maximum(np.floor(self.pos - cfg.radius).astype(np.int64), 0), s - k)  # [N, 2]
        # squared distances of the block's pixel centres to the ball centre along x and y: [N, 2, k]
        d2 = corner[:, :, None] + self._centres - self.pos[:, :, None]
        d2 *= d2
        disc = (d2[:, 1, :, None] + d2[:, 0, None, :]) <= cfg.radius**2  # [N, k, k] (rows, columns)
        if k <= s:  # write each k x k block through a strided view of all blocks (basic indexing per row)
            blocks = np.ndarray((n, s - k + 1, s - k + 1, k, k), np.uint8, frame, 0, (s * s, s, 1, s, 1))
            blocks[self._rows, corner[:, 1], corner[:, 0]] = disc.view(np.uint8) * np.uint8(255)
        else:  # a ball as large as the frame: scatter pixel by pixel
            cx, cy = corner[:, 0:1] + offs, corner[:, 1:2] + offs  # [N, k] columns, rows
            frame[self._rows[:, None, None], cy[:, :, None], cx[:, None, :]] = disc.view(np.uint8) * np.uint8(255)
        if cfg.variant == "pong":  # pixel centres within the paddle rectangles, again on a small block
            g = self._grid
            lo, hi = cfg.walls
            cols = np.flatnonzero((g >= lo) & (g < lo + cfg.paddle_width) | (g > hi - cfg.paddle_width) & (g <= hi))
            kp = min(s, int(np.ceil(cfg.paddle_height)) + 2)
            top = np.clip(np.floor(self.paddle_y - cfg.paddle_height / 2).astype(np.int64), 0, s - kp)  # [N]
            prow = top[:, None] + np.arange(kp)  # [N, kp]
            on = np.abs(prow + 0.5 - self.paddle_y[:, None]) <= cfg.paddle_height / 2  # [N, kp]
            blk = frame[np.arange(n)[:, None, None], prow[:, :, None], cols[None, None, :]]  # [N, kp, ncols]
            blk |= (on.view(np.uint8) * np.uint8(255))[:, :, None]
            frame[np.arange(n)[:, None, None], prow[:, :, None], cols[None, None, :]] = blk
        return frame[..., None]

    def info(self) -> dict[str, np.ndarray]:
        return {"state": np.concatenate([self.pos, self.vel], axis=1)}  # [N, 4] (x, y, vx, vy)

    def render_rgb(self, i: int) -> np.ndarray:
        frame = np.repeat(self.observe()[i], 3, axis=-1)
        frame = np.where(frame > 0, 255, 40).astype(np.uint8)
        return upscale(frame, 256)


class BouncingBallEnv(CoreEnv):
    """A ball bouncing in a 32x32 binary video (KVAE, thesis §6.5.1 and §6.5.3).

    ## Description
    The ball moves with constant velocity (``box``), under gravity (``gravity``), inside an irregular
    polygon (``polygon``) or between two paddles that track it (``pong``); every collision is elastic.

    ## Action Space
    ``action_mode="none"`` (default): ``Discrete(1)``, a no-op — the videos are passive, as in the thesis.
    ``action_mode="force"``: ``Box(-1, 1, (2,), float32)``, an acceleration ``max_force * a`` on (x, y).
    Keyboard (``scripts/play.py``, force mode): arrows or WASD push, combined keys push diagonally
    (:meth:`get_keys_to_action`).

    ## Observation Space
    ``Box(0, 255, (32, 32, 1), uint8)``: binary frames (0 or 255); pixel (row i, col j) is on when its
    centre (j + 0.5, i + 0.5) lies within ``radius`` of the ball centre (and paddle pixels in ``pong``).

    ## Rewards
    Always 0 (a video source for world models; planners bring their own objective).

    ## Starting State
    Position (16, 16) + N(0, 10²) per axis clipped to [6, 26]; speed uniform in [10, 15], direction
    uniform. ``reset(options={"state": (x, y, vx, vy)})`` sets it explicitly.

    ## Episode End
    Never terminates; truncated after ``max_episode_steps`` (20 as in the thesis, change it in ``make``).

    ## Info
    ``info["state"]``: float64 ``(x, y, vx, vy)`` after the step (x = column, y = row, pixels).

    ## Arguments
    See :class:`BouncingBallConfig`; e.g. ``gymnasium.make("BouncingBall-v0", variant="gravity")``.
    The box in force mode declares its planning task, ``metadata["planning_task"]`` (push the ball into a region).

    Example:
        >>> import gymnasium as gym, envs
        >>> env = gym.make("BouncingBall-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, info["state"].shape
        ((32, 32, 1), (4,))
    """

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        self.config = build_config(BouncingBallConfig, kwargs, "BouncingBall")
        self._setup(BouncingBallCore(1, self.config), render_mode)
        if self.config.action_mode == "force" and self.config.variant == "box":  # `worldmodels plan --task auto`
            self.metadata = {**self.metadata, "planning_task": {"name": "ball-region"}}

    def get_keys_to_action(self) -> dict[tuple[int, ...], Any]:
        """Force mode: arrows or WASD push along x (left/right) and y (up/down, y downwards), summed and
        clipped; passive mode: no keys (its one action is the no-op)."""
        if not isinstance(self.action_space, spaces.Box):
            return {}
        pushes = {"up": [0, -1], "down": [0, 1], "left": [-1, 0], "right": [1, 0]}
        return direction_keys_to_action(pushes, "sum", self.action_space)


class BouncingBallVectorEnv(CoreVectorEnv):
    """``num_envs`` bouncing balls stepped in one numpy call (``gymnasium.make_vec("BouncingBall-v0", n)``).

    Same frames as ``n`` :class:`BouncingBallEnv` seeded ``seed + i``; see :class:`envs._core.CoreVectorEnv`.

    Example:
        >>> import gymnasium as gym, envs
        >>> venv = gym.make_vec("BouncingBall-v0", num_envs=4)
        >>> obs, info = venv.reset(seed=0)
        >>> obs.shape
        (4, 32, 32, 1)
    """

    def __init__(
        self, num_envs: int = 1, max_episode_steps: int | None = None, render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.config = build_config(BouncingBallConfig, kwargs, "BouncingBall")
        self._setup(BouncingBallCore(num_envs, self.config), max_episode_steps, render_mode)
