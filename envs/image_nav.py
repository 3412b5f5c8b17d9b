"""GTM-SM image navigation (thesis §7.4.1, §7.7.1, obstacles §7.10.1).

An agent walks on a grid of ``n_positions x n_positions`` cells over an image and sees the crop window
at its position. Thesis defaults: a 32x32 image, an 8x8 crop, 9 positions per axis with crop offset
``3 · position`` (crops overlap), 5 actions, start in the centre (4, 4), walls at the border (a move off the
grid leaves the agent where it is). Offsets generalise to ``round(position · (H - crop) / (n - 1))`` for
larger images and crops (e.g. a 64x64 crop of a 256x256 image).

The obstacles variant (§7.10.1) blocks random cells in each episode and paints them grey in the image,
so the agent can see what stops it. The goal mode draws a reachable target cell per episode and gives its
crop in ``info["goal_obs"]`` for planning; reaching it gives reward 1 and ends the episode.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

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
from envs.images import ImageSource, make_image_source

# action -> (d_row, d_col): up, down, left, right, stay
MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1], [0, 0]], dtype=np.int64)
ACTION_NAMES = ("up", "down", "left", "right", "stay")
OBSTACLE_GREY = 128


@dataclass
class ImageNavConfig:
    """Parameters of :class:`ImageNavEnv` (defaults: thesis §7.4.1).

    Attributes:
        image: image source: ``"texture"`` (procedural, new per episode), ``"faces"`` (scikit-image LFW
            crops, random per episode), a scikit-image sample name, a file path or an array
            (see :func:`envs.images.make_image_source`).
        image_size: side ``H = W`` of the image in pixels (every source is resized to it).
        crop_size: side of the square crop the agent sees.
        n_positions: positions per axis.
        rgb: RGB (3 channels) or grayscale (1 channel) observations.
        start: ``"centre"`` or ``"random"`` (a uniformly drawn free cell).
        n_obstacles: number of blocked cells drawn per episode (never the start cell).
        goal: draw a reachable goal cell per episode; reward 1 and termination on reaching it.
    """

    image: Any = "texture"
    image_size: int = 32
    crop_size: int = 8
    n_positions: int = 9
    rgb: bool = True
    start: str = "centre"
    n_obstacles: int = 0
    goal: bool = False

    def __post_init__(self) -> None:
        check_choice("start", self.start, ("centre", "random"))
        if self.crop_size < 1 or self.image_size < 1:
            raise ValueError(f"image_size and crop_size must be positive, got {self.image_size}, {self.crop_size}")
        if self.crop_size > self.image_size:
            raise ValueError(f"crop_size {self.crop_size} is larger than the image ({self.image_size}x"
                             f"{self.image_size}): the crop must fit inside the image")
        if not 2 <= self.n_positions <= self.image_size - self.crop_size + 1:
            raise ValueError(f"n_positions must be in [2, image_size - crop_size + 1 = "
                             f"{self.image_size - self.crop_size + 1}] so that positions map to distinct "
                             f"crops, got {self.n_positions}")
        cells = self.n_positions**2
        if not 0 <= self.n_obstacles <= cells - 2:
            raise ValueError(f"n_obstacles must be in [0, {cells - 2}], got {self.n_obstacles}")
        if isinstance(self.image, os.PathLike):
            self.image = str(self.image)


def _reachable(blocked: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """Cells reachable from ``start`` with 4-moves avoiding ``blocked [P, P]`` (breadth-first search)."""
    p = blocked.shape[0]
    seen = np.zeros_like(blocked)
    seen[start] = True
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES[:4]:
            rr, cc = r + dr, c + dc
            if 0 <= rr < p and 0 <= cc < p and not blocked[rr, cc] and not seen[rr, cc]:
                seen[rr, cc] = True
                queue.append((rr, cc))
    return seen


class ImageNavCore(Core):
    """``N`` agents on ``N`` images; ``pos [N, 2]`` (row, col) grid positions."""

    def __init__(self, num: int, cfg: ImageNavConfig, source: ImageSource | None = None) -> None:
        super().__init__(num)
        self.cfg = cfg
        ch = 3 if cfg.rgb else 1
        s, c, p = cfg.image_size, cfg.crop_size, cfg.n_positions
        self.source = source or make_image_source(cfg.image, (s, s), ch)
        self.observation_space = spaces.Box(0, 255, (c, c, ch), np.uint8)
        self.action_space = spaces.Discrete(5)
        self.offsets = np.round(np.arange(p) * (s - c) / (p - 1)).astype(np.int64)  # [P] pixel offsets
        self.images = np.zeros((num, s, s, ch), dtype=np.uint8)  # [N, H, W, C]
        self.blocked = np.zeros((num, p, p), dtype=bool)  # [N, P, P]
        self.pos = np.zeros((num, 2), dtype=np.int64)  # [N, 2]
        self.goal = np.zeros((num, 2), dtype=np.int64)  # [N, 2]
        self.disp = np.zeros((num, 2), dtype=np.int64)  # [N, 2] last displacement
        # every c x c window of every image as a strided view [N, H - c + 1, W - c + 1, c, c, C] of
        # ``images`` (no copy; resets write into ``images`` in place): a crop is one basic index per
        # row, ~300x faster than gathering its pixels with fancy indexing at 64x64 crops
        st = self.images.strides
        self._windows = np.lib.stride_tricks.as_strided(
            self.images, (num, s - c + 1, s - c + 1, c, c, ch), (st[0], st[1], st[2], st[1], st[2], st[3]),
            writeable=False,
        )
        self._rows = np.arange(num)
        centre = (p - 1) // 2
        self.centre = (centre, centre)

    def _paint_obstacles(self, i: int) -> None:
        c = self.cfg.crop_size
        stride = (self.cfg.image_size - c) / (self.cfg.n_positions - 1)
        side = max(1, int(round(stride)))
        for r, col in np.argwhere(self.blocked[i]):
            y0 = self.offsets[r] + c // 2 - side // 2
            x0 = self.offsets[col] + c // 2 - side // 2
            self.images[i, max(y0, 0) : y0 + side, max(x0, 0) : x0 + side] = OBSTACLE_GREY

    def reset_rows(self, rows: np.ndarray, rngs: list[np.random.Generator], options: dict | None) -> None:
        cfg = self.cfg
        p = cfg.n_positions
        self.images[rows] = self.source.sample_many(rngs)  # first draws of each row's generator
        for i, rng in zip(rows, rngs):
            self.blocked[i] = False
            start = self.centre
            if cfg.start == "random":
                row, col = rng.integers(0, p, size=2)
                start = (int(row), int(col))
            if options is not None and "pose" in options:
                pose = np.asarray(options["pose"])
                if pose.shape != (2,) or not np.all((0 <= pose) & (pose < p)):
                    raise ValueError(f"options['pose'] must be (row, col) in [0, {p}), got {options['pose']!r}")
                start = (int(pose[0]), int(pose[1]))
            if cfg.n_obstacles:
                free = np.flatnonzero(np.arange(p * p) != start[0] * p + start[1])
                cells = rng.choice(free, size=cfg.n_obstacles, replace=False)
                self.blocked[i].flat[cells] = True
                self._paint_obstacles(i)
            self.pos[i] = start
            self.disp[i] = 0
            if cfg.goal:
                reach = _reachable(self.blocked[i], start)
                reach[start] = False
                cand = np.argwhere(reach)
                if len(cand) == 0:  # pragma: no cover - start walled in by obstacles
                    cand = np.array([start])
                self.goal[i] = cand[rng.integers(len(cand))]

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.cfg.n_positions
        new = np.minimum(np.maximum(self.pos + MOVES[actions], 0), p - 1)  # walls: stay on the grid
        if self.cfg.n_obstacles:
            hit = self.blocked[np.arange(self.num), new[:, 0], new[:, 1]]
            new[hit] = self.pos[hit]  # obstacles: stay put
        self.disp = new - self.pos
        self.pos = new
        if self.cfg.goal:
            done = np.all(self.pos == self.goal, axis=1)
            return done.astype(np.float64), done
        return np.zeros(self.num), np.zeros(self.num, dtype=bool)

    def crops(self, pos: np.ndarray) -> np.ndarray:
        """The crops ``[N, c, c, C]`` at grid positions ``pos [N, 2]``."""
        off = self.offsets[pos]  # [N, 2] pixel offsets (row, col)
        return self._windows[self._rows, off[:, 0], off[:, 1]]  # [N, c, c, C] (a copy)

    def observe(self) -> np.ndarray:
        return self.crops(self.pos)

    def info(self) -> dict[str, np.ndarray]:
        out = {"pose": self.pos.astype(np.float64), "displacement": self.disp.astype(np.float64)}
        if self.cfg.goal:
            out["goal"] = self.goal.astype(np.float64)
            out["goal_obs"] = self.crops(self.goal)
        return out

    def render_rgb(self, i: int) -> np.ndarray:
        """The whole image with the crop window outlined in yellow (and the goal in green), as Fig. 7.2a."""
        img = self.images[i]
        img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
        k = max(1, -(-256 // img.shape[0]))
        big = upscale(img, 256).copy()
        c = self.cfg.crop_size

        def box(pos: np.ndarray, colour: tuple[int, int, int]) -> None:
            y0, x0 = self.offsets[pos[0]] * k, self.offsets[pos[1]] * k
            y1, x1 = y0 + c * k - 1, x0 + c * k - 1
            big[y0 : y1 + 1, [x0, x1]] = colour
            big[[y0, y1], x0 : x1 + 1] = colour

        if self.cfg.goal:
            box(self.goal[i], (0, 220, 0))
        box(self.pos[i], (255, 220, 0))
        return big


class ImageNavEnv(CoreEnv):
    """An agent sees a crop window moving over a larger image (GTM-SM, thesis §7.4.1).

    ## Description
    A ``n_positions x n_positions`` grid of crop windows over an ``image_size`` square image; the agent
    moves one cell per step. With ``n_obstacles > 0`` random cells are impassable and painted grey
    (§7.10.1); with ``goal=True`` a reachable target cell is drawn per episode.

    ## Action Space
    ``Discrete(5)``: 0 up, 1 down, 2 left, 3 right, 4 stay. Keyboard (``scripts/play.py``): arrows or WASD
    move, no key stays (:meth:`get_keys_to_action`, ``metadata["play"]``).

    ## Observation Space
    ``Box(0, 255, (crop, crop, C), uint8)`` with C = 3 (``rgb=True``) or 1: the crop at the agent's position,
    pixel offset ``round(position · (image_size - crop) / (n_positions - 1))`` (3 · position by default).

    ## Rewards
    0, except in goal mode: 1 on the step that reaches the goal.

    ## Starting State
    The centre cell ``((n-1)//2, (n-1)//2)`` (``start="random"``: a uniform free cell); a new image per
    episode for random sources; ``reset(options={"pose": (row, col)})`` sets the start.

    ## Episode End
    Terminates on reaching the goal (goal mode only); truncated after ``max_episode_steps``
    (512 = 256 memorisation + 256 prediction steps, the thesis's test length).

    ## Info
    ``info["pose"]``: float64 (row, col) grid position; ``info["displacement"]``: float64 (d_row, d_col) of
    the step (0 when a wall or obstacle stopped it); goal mode adds ``info["goal"]`` (row, col) and
    ``info["goal_obs"]``, the goal's crop.

    ## Arguments
    See :class:`ImageNavConfig`; e.g. ``gymnasium.make("ImageNav-v0", image_size=256, crop_size=64)``.
    With ``goal=True`` the env declares its planning task, ``metadata["planning_task"]`` (goal image).

    Example:
        >>> import gymnasium as gym, envs
        >>> env = gym.make("ImageNav-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, info["pose"].tolist()
        ((8, 8, 3), [4.0, 4.0])
        >>> obs, *_, info = env.step(3)  # right
        >>> info["pose"].tolist()
        [4.0, 5.0]
    """

    metadata: dict[str, Any] = {**CoreEnv.metadata, "play": {"noop": 4}}  # no key held: stay

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        self.config = build_config(ImageNavConfig, kwargs, "ImageNav")
        self._setup(ImageNavCore(1, self.config), render_mode)
        if self.config.goal:  # the task `worldmodels plan --task auto` plans for (agents.tasks.TASKS names it)
            self.metadata = {**self.metadata, "planning_task": {"name": "goal-image"}}

    def get_keys_to_action(self) -> dict[tuple[int, ...], int]:
        """Arrows or WASD move (the first held of up, down, left, right), as ``gymnasium.utils.play`` reads it."""
        return direction_keys_to_action({"up": 0, "down": 1, "left": 2, "right": 3})

    def set_goal(self, cell: tuple[int, int]) -> np.ndarray:
        """Goal mode: move this episode's goal to ``cell`` (row, col); returns its crop ``[h, w, C]`` uint8
        (the new ``info["goal_obs"]``). Termination, reward and ``info["goal"]`` follow the new goal.

        Example:
            >>> import gymnasium as gym, envs
            >>> env = gym.make("ImageNavGoal-v0")
            >>> _ = env.reset(seed=0)
            >>> env.unwrapped.set_goal((4, 5)).shape
            (8, 8, 3)
            >>> *_, terminated, _, info = env.step(3)  # right, from the centre (4, 4)
            >>> terminated, info["goal"].tolist()
            (True, [4.0, 5.0])
        """
        if not self.config.goal:
            raise ValueError("ImageNav.set_goal: expected an env made with goal=True (ImageNavGoal-v0)")
        goal = np.asarray(cell, dtype=np.int64)
        if goal.shape != (2,) or not ((goal >= 0) & (goal < self.config.n_positions)).all():
            raise ValueError(f"ImageNav.set_goal: expected a cell (row, col) on the grid, received {cell!r}")
        core = cast(ImageNavCore, self.core)
        core.goal[0] = goal
        return core.crops(goal[None])[0]


class ImageNavVectorEnv(CoreVectorEnv):
    """``num_envs`` ImageNav agents stepped in one numpy call (``gymnasium.make_vec("ImageNav-v0", n)``).

    Same frames as ``n`` :class:`ImageNavEnv` seeded ``seed + i``; see :class:`envs._core.CoreVectorEnv`.

    Example:
        >>> import gymnasium as gym, envs
        >>> venv = gym.make_vec("ImageNav-v0", num_envs=3)
        >>> obs, info = venv.reset(seed=0)
        >>> obs.shape, info["pose"].shape
        ((3, 8, 8, 3), (3, 2))
    """

    def __init__(
        self, num_envs: int = 1, max_episode_steps: int | None = None, render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.config = build_config(ImageNavConfig, kwargs, "ImageNav")
        self._setup(ImageNavCore(num_envs, self.config), max_episode_steps, render_mode)
