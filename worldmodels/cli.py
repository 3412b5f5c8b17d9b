"""The ``worldmodels`` command. The only module that parses command-line arguments (DESIGN §1).

Each subcommand is a pair ``(add_arguments(parser), run(args) -> int)`` registered in
``COMMANDS``; the work itself lives in the library modules so it can be called from Python.

Example:
    $ worldmodels --help
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

os.environ.setdefault("PYGLET_HEADLESS", "1")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

AddArgs = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

# name -> (help, add_arguments, run); filled below, one block per subcommand.
COMMANDS: dict[str, tuple[str, AddArgs, Run]] = {}


# --- collect: rollouts from a Gymnasium env into a dataset folder (worldmodels/data.py) ---------------
def _json_dict(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object, received {text!r} ({e})") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, received {text!r}")
    return value


def _collect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="Gymnasium id, e.g. ImageNav-v0")
    p.add_argument("--out", required=True, help="dataset folder (created; an interrupted run resumes)")
    p.add_argument("--episodes", type=int, required=True, help="episodes in the whole dataset")
    p.add_argument("--steps", type=int, required=True, help="actions per episode (steps + 1 frames)")
    p.add_argument("--num-envs", type=int, default=1, help="parallel sub-environments (default 1)")
    p.add_argument("--policy", default="poisson", help="explorer: uniform, poisson, rotate, momentum")
    p.add_argument("--policy-kwargs", type=_json_dict, default={}, help='JSON, e.g. \'{"lam": 3}\'')
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument("--shard-index", type=int, default=0, help="this machine's index (default 0)")
    p.add_argument("--num-shards", type=int, default=1, help="machines sharing the collection (default 1)")
    p.add_argument("--env-kwargs", type=_json_dict, default={}, help="JSON kwargs of gymnasium.make")
    p.add_argument("--episodes-per-shard", type=int, default=None, help="default: ~32 MB shards")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _collect_run(args: argparse.Namespace) -> int:
    from agents.explorers import explorer_factory
    from worldmodels.data import RolloutDataset, collect

    out = collect(
        args.env,
        args.out,
        args.episodes,
        args.steps,
        policy=explorer_factory(args.policy, **args.policy_kwargs),
        num_envs=args.num_envs,
        seed=args.seed,
        shard_index=args.shard_index,
        num_shards=args.num_shards,
        env_kwargs=args.env_kwargs,
        episodes_per_shard=args.episodes_per_shard,
        progress=not args.no_progress,
    )
    print(RolloutDataset(out).summary())
    return 0


COMMANDS["collect"] = ("collect rollouts from an environment into a dataset", _collect_args, _collect_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worldmodels",
        description="Collect rollouts, train world models, imagine and plan with them.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, add_arguments, _run) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_, description=help_))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command][2](args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"worldmodels {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
