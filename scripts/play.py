"""Drive any registered env with the keyboard in a pygame window.

Keys: arrows or WASD move (ImageNav: up/down/left/right, no key = stay; MiniWorld: left/right turn, up forward,
down back; BouncingBall force mode: push the ball; PixelPendulum: left/right torque), digits pick a discrete
action directly, R resets, Esc or Q quits. Each env declares its keys (:mod:`envs.play`). Headless-safe: with
``SDL_VIDEODRIVER=dummy`` and ``--steps N`` it runs N steps with no keys pressed and exits.

Usage:
    python scripts/play.py ImageNav-v0
    python scripts/play.py BouncingBallForce-v0 --fps 10
    python scripts/play.py WM-MiniWorld-Maze-v0 --kwargs '{"obs_size": 64}'
"""

import argparse
import difflib
import json
import sys

import gymnasium as gym

import envs
from envs.play import play


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env_id", help=f"one of {envs.ENV_IDS}")
    parser.add_argument("--kwargs", default="{}", help="JSON dict of env keyword arguments")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps (headless runs)")
    args = parser.parse_args(argv)
    if args.env_id not in gym.registry:
        close = difflib.get_close_matches(args.env_id, envs.ENV_IDS, n=3)
        parser.error(f"unknown env id {args.env_id!r}; did you mean {close}? Registered: {envs.ENV_IDS}")
    play(args.env_id, json.loads(args.kwargs), args.fps, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
