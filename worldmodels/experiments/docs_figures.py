"""Pictures of the environments for ``docs/envs/*.md``: one labelled contact sheet per env family.

Every row is a real rollout of the registered env (seed 0, a fixed seeded action sequence), rendered with
:func:`worldmodels.viz.contact_sheet`; the ImageNav map is the env's own ``render()`` (the whole image with the
agent's crop window in yellow and the goal in green). :func:`draw` writes small PNGs to ``docs/figures/``;
the command is ``python scripts/docs_figures.py [--only FAMILY ...]`` (MiniWorld rows need the miniworld extra).

Example:
    >>> sorted(FAMILIES)
    ['bouncing_ball', 'image_nav', 'miniworld', 'pixel_pendulum']
    >>> rollout("BouncingBall-v0", sample, steps=3).shape
    torch.Size([3, 1, 32, 32])
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from PIL import Image

import envs  # noqa: F401  (registers the ids)
from worldmodels.api import frames_to_tensor
from worldmodels.viz import contact_sheet

__all__ = ["OUT", "STEPS", "FAMILIES", "rollout", "sample", "draw"]

OUT = Path(__file__).resolve().parents[2] / "docs" / "figures"
STEPS = 12
Actions = Callable[[gym.Env, int], object]  # (env, step index) -> action


def rollout(env_id: str, actions: Actions, steps: int = STEPS, **kwargs: Any) -> torch.Tensor:
    """Frames ``[steps, C, H, W]`` in [0, 1]: the reset observation (seed 0), then ``steps - 1`` steps."""
    env = gym.make(env_id, **kwargs)
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    frames = [obs]
    for t in range(steps - 1):
        obs, *_ = env.step(actions(env, t))
        frames.append(obs)
    env.close()
    return frames_to_tensor(np.stack(frames))


def sample(env: gym.Env, t: int) -> object:
    """A uniform action from the env's (seeded) action space."""
    return env.action_space.sample()


def image_nav(out: Path) -> list[Path]:
    moves = [3, 3, 3, 1, 1, 1, 2, 2, 0, 4, 3]  # right x3, down x3, left x2, up, stay, right
    seq = lambda env, t: moves[t % len(moves)]  # noqa: E731
    rows = {
        "ImageNav-v0": rollout("ImageNav-v0", seq),
        "ImageNavObstacles": rollout("ImageNavObstacles-v0", seq),
        "ImageNavGoal-v0": rollout("ImageNavGoal-v0", seq),
    }
    paths = [contact_sheet(out / "image_nav.png", rows)]
    env = gym.make("ImageNavObstacles-v0", render_mode="rgb_array")
    env.reset(seed=0)
    for a in moves[:4]:
        env.step(a)
    img = Image.fromarray(np.asarray(env.render())).resize((128, 128), Image.Resampling.NEAREST)
    env.close()
    img.save(out / "image_nav_obstacles_map.png")
    paths.append(out / "image_nav_obstacles_map.png")
    return paths


def bouncing_ball(out: Path) -> list[Path]:
    rows = {
        "box": rollout("BouncingBall-v0", sample),
        "gravity": rollout("BouncingBallGravity-v0", sample),
        "polygon": rollout("BouncingBallPolygon-v0", sample),
        "pong": rollout("BouncingBallPong-v0", sample),
        "force (random)": rollout("BouncingBallForce-v0", sample),
    }
    return [contact_sheet(out / "bouncing_ball.png", rows)]


def pixel_pendulum(out: Path) -> list[Path]:
    rows = {
        "torque 0": rollout("PixelPendulum-v0", lambda env, t: np.zeros(1, np.float32)),
        "random torque": rollout("PixelPendulum-v0", sample),
    }
    return [contact_sheet(out / "pixel_pendulum.png", rows)]


def miniworld(out: Path) -> list[Path]:
    walk = [2, 2, 2, 0, 0, 2, 2, 1, 2, 2, 2]  # forward / turn left / turn right
    rows = {
        "OneRoom (walk)": rollout("WM-MiniWorld-OneRoom-v0", lambda env, t: walk[t % len(walk)]),
        "Maze (walk)": rollout("WM-MiniWorld-Maze-v0", lambda env, t: walk[t % len(walk)]),
        "Rotate (turn)": rollout("WM-MiniWorld-Rotate-v0", lambda env, t: 0),
    }
    return [contact_sheet(out / "miniworld.png", rows)]


# family -> fn(out folder) -> the PNGs it wrote
FAMILIES: dict[str, Callable[[Path], list[Path]]] = {
    "image_nav": image_nav, "bouncing_ball": bouncing_ball, "pixel_pendulum": pixel_pendulum, "miniworld": miniworld,
}


def draw(families: list[str] | None = None, out: str | os.PathLike = OUT) -> list[Path]:
    """Write the PNGs of ``families`` (default: all) into ``out``; returns their paths."""
    unknown = sorted(set(families or []) - set(FAMILIES))
    if unknown:
        raise ValueError(f"docs_figures: expected families in {sorted(FAMILIES)}, received {unknown}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return [path for name in (families or sorted(FAMILIES)) for path in FAMILIES[name](folder)]
