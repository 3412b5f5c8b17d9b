"""Pictures of the environments for ``docs/envs/*.md``: one labelled contact sheet per env family.

Every row is a real rollout of the registered env (seed 0, a fixed seeded action sequence), rendered with
:func:`worldmodels.viz.contact_sheet`; the ImageNav map is the env's own ``render()`` (the whole image with the
agent's crop window in yellow and the goal in green). Writes small PNGs to ``docs/figures/``.

Usage::

    python scripts/docs_figures.py                # all families (MiniWorld rows need the miniworld extra)
    python scripts/docs_figures.py --only bouncing_ball image_nav
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("PYGLET_HEADLESS", "1")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
import numpy as np
import torch
from PIL import Image

import envs  # noqa: F401  (registers the ids)
from worldmodels.api import frames_to_tensor
from worldmodels.viz import contact_sheet

OUT = Path(__file__).resolve().parents[1] / "docs" / "figures"
STEPS = 12


def rollout(env_id: str, actions: Callable[[gym.Env, int], object], steps: int = STEPS, **kwargs: object) -> torch.Tensor:
    """Frames ``[steps, C, H, W]`` in [0, 1]: the reset observation, then ``steps - 1`` steps."""
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
    return env.action_space.sample()


def image_nav() -> list[Path]:
    moves = [3, 3, 3, 1, 1, 1, 2, 2, 0, 4, 3]  # right x3, down x3, left x2, up, stay, right
    seq = lambda env, t: moves[t % len(moves)]  # noqa: E731
    rows = {
        "ImageNav-v0": rollout("ImageNav-v0", seq),
        "ImageNavObstacles": rollout("ImageNavObstacles-v0", seq),
        "ImageNavGoal-v0": rollout("ImageNavGoal-v0", seq),
    }
    paths = [contact_sheet(OUT / "image_nav.png", rows)]
    env = gym.make("ImageNavObstacles-v0", render_mode="rgb_array")
    env.reset(seed=0)
    for a in moves[:4]:
        env.step(a)
    img = Image.fromarray(env.render()).resize((128, 128), Image.NEAREST)
    env.close()
    img.save(OUT / "image_nav_obstacles_map.png")
    paths.append(OUT / "image_nav_obstacles_map.png")
    return paths


def bouncing_ball() -> list[Path]:
    rows = {
        "box": rollout("BouncingBall-v0", sample),
        "gravity": rollout("BouncingBallGravity-v0", sample),
        "polygon": rollout("BouncingBallPolygon-v0", sample),
        "pong": rollout("BouncingBallPong-v0", sample),
        "force (random)": rollout("BouncingBallForce-v0", sample),
    }
    return [contact_sheet(OUT / "bouncing_ball.png", rows)]


def pixel_pendulum() -> list[Path]:
    rows = {
        "torque 0": rollout("PixelPendulum-v0", lambda env, t: np.zeros(1, np.float32)),
        "random torque": rollout("PixelPendulum-v0", sample),
    }
    return [contact_sheet(OUT / "pixel_pendulum.png", rows)]


def miniworld() -> list[Path]:
    walk = [2, 2, 2, 0, 0, 2, 2, 1, 2, 2, 2]  # forward / turn left / turn right
    rows = {
        "OneRoom (walk)": rollout("WM-MiniWorld-OneRoom-v0", lambda env, t: walk[t % len(walk)]),
        "Maze (walk)": rollout("WM-MiniWorld-Maze-v0", lambda env, t: walk[t % len(walk)]),
        "Rotate (turn)": rollout("WM-MiniWorld-Rotate-v0", lambda env, t: 0),
    }
    return [contact_sheet(OUT / "miniworld.png", rows)]


FAMILIES: dict[str, Callable[[], list[Path]]] = {
    "image_nav": image_nav, "bouncing_ball": bouncing_ball, "pixel_pendulum": pixel_pendulum, "miniworld": miniworld,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=sorted(FAMILIES), choices=sorted(FAMILIES))
    args = p.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        for path in FAMILIES[name]():
            print(f"{path.relative_to(OUT.parents[1])}  {path.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
