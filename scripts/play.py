"""Drive any registered env with the keyboard in a pygame window.

Keys: arrows or WASD move (ImageNav: up/down/left/right, space = stay; MiniWorld: left/right turn, up forward,
down back; BouncingBall force mode: push the ball; PixelPendulum: left/right torque), digits pick a discrete
action directly, R resets, Esc or Q quits. Headless-safe: with ``SDL_VIDEODRIVER=dummy`` and ``--steps N``
it runs N steps with no keys pressed and exits (used by the tests).

Usage:
    python scripts/play.py ImageNav-v0
    python scripts/play.py BouncingBallForce-v0 --fps 10
    python scripts/play.py WM-MiniWorld-Maze-v0 --kwargs '{"obs_size": 64}'
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PYGLET_HEADLESS", "1")  # MiniWorld renders off-screen; pygame shows the frames

import gymnasium as gym  # noqa: E402

import envs  # noqa: E402,F401

# direction names -> pygame key names
NO_KEY = -1  # "no action this frame" (MiniWorld steps only on a key press)
DIRECTION_KEYS = {"up": ("up", "w"), "down": ("down", "s"), "left": ("left", "a"), "right": ("right", "d")}


def key_action(env_id: str, space: gym.Space, pressed: set[str]) -> np.ndarray | int:
    """The action for the set of pressed key names (pygame names: 'up', 'w', 'space', '3', ...)."""
    held = {d for d, keys in DIRECTION_KEYS.items() if pressed & set(keys)}
    if isinstance(space, gym.spaces.Box):
        a = np.zeros(space.shape, dtype=space.dtype)
        if "Pendulum" in env_id:
            a[0] = space.high[0] * (("right" in held) - ("left" in held))
        else:  # a force (x, y) with y downwards
            a[0] = ("right" in held) - ("left" in held)
            a[1] = ("down" in held) - ("up" in held)
            a = np.clip(a, space.low, space.high)
        return a
    assert isinstance(space, gym.spaces.Discrete)
    digits = [int(k) for k in pressed if k.isdigit() and int(k) < space.n]
    if digits:
        return digits[0]
    if env_id.startswith("ImageNav"):
        order = ("up", "down", "left", "right")
        for i, d in enumerate(order):
            if d in held:
                return i
        return 4  # stay
    if env_id.startswith("WM-MiniWorld"):
        table = {"left": 0, "right": 1, "up": 2, "down": 3}
        for d, i in table.items():
            if d in held and i < space.n:
                return i
        return NO_KEY  # MiniWorld waits for a key
    return 0


def play(env_id: str, kwargs: dict, fps: int, steps: int | None, scale: int = 8) -> int:
    """Run the interactive loop; returns the number of steps taken."""
    import pygame

    env = gym.make(env_id, render_mode="rgb_array", **kwargs)
    env.reset()
    pygame.init()
    frame = env.render()
    h, w = frame.shape[:2]
    k = max(1, 512 // max(h, w))
    screen = pygame.display.set_mode((w * k, h * k))
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
        keys = pygame.key.get_pressed()
        pressed = {pygame.key.name(i) for i in range(len(keys)) if keys[i]}
        action = key_action(env_id, env.action_space, pressed)
        if isinstance(action, int) and action == NO_KEY and steps is not None:
            action = 0  # headless run (--steps): keep stepping without keys
        if not (isinstance(action, int) and action == NO_KEY):
            _, reward, terminated, truncated, info = env.step(action)
            episode_return += float(reward)
            taken += 1
            if terminated or truncated:
                print(f"episode end: return {episode_return:.3f}, info keys {sorted(info)}")
                env.reset()
                episode_return = 0.0
        frame = env.render()
        big = np.repeat(np.repeat(frame, k, 0), k, 1)
        surf = pygame.surfarray.make_surface(np.ascontiguousarray(big.transpose(1, 0, 2)))
        screen.blit(surf, (0, 0))
        pygame.display.flip()
        clock.tick(fps)
        if steps is not None and taken >= steps:
            running = False
    env.close()
    pygame.quit()
    return taken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env_id", help=f"one of {envs.ENV_IDS}")
    parser.add_argument("--kwargs", default="{}", help="JSON dict of env keyword arguments")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps (headless runs)")
    args = parser.parse_args(argv)
    if args.env_id not in gym.registry:
        import difflib

        close = difflib.get_close_matches(args.env_id, envs.ENV_IDS, n=3)
        parser.error(f"unknown env id {args.env_id!r}; did you mean {close}? Registered: {envs.ENV_IDS}")
    play(args.env_id, json.loads(args.kwargs), args.fps, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
