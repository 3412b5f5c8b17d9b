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
    p.add_argument("--policy-kwargs", type=_json_dict, default={}, help="JSON, e.g. '{\"lam\": 3}'")
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


# --- train: a registered model on a dataset folder (worldmodels/train.py) ------------------------------
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="registered model name, e.g. rnn, kvae, srnn, gtmsm")
    p.add_argument("--data", required=True, help="dataset folder written by `worldmodels collect`")
    p.add_argument("--config", default="default", help="preset of the model config (default, debug, ...)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model-config or TrainConfig field, e.g. --set lr=3e-4 --set z_dim=8 (repeatable)",
    )
    p.add_argument(
        "--out", default=None, help="run folder (checkpoint last/, metrics.csv); default runs/MODEL-PRESET"
    )
    p.add_argument(
        "--steps", type=int, default=None, help="stop after this many updates (TrainConfig.max_steps)"
    )
    p.add_argument("--window", type=int, default=20, help="frames per training window (default 20)")
    p.add_argument(
        "--val-fraction", type=float, default=0.0, help="windows held out for validation (default 0)"
    )


def _train_run(args: argparse.Namespace) -> int:
    from worldmodels.train import train_on_dataset

    r = train_on_dataset(
        args.model, args.data, args.config, args.set, args.out, args.steps, args.window, args.val_fraction
    )
    print(f"{r.stopped} after {r.step} steps ({r.epoch} epochs); checkpoint {r.checkpoint}")
    if r.metrics:
        print("  train " + "  ".join(f"{k}={v:.5g}" for k, v in sorted(r.metrics.items())))
    if r.val_metrics:
        print("  val   " + "  ".join(f"{k}={v:.5g}" for k, v in sorted(r.val_metrics.items())))
    return 130 if r.stopped == "signal" else 0


COMMANDS["train"] = (
    "train a world model on a dataset folder (resumes from OUT/last)",
    _train_args,
    _train_run,
)


# --- evaluate: a checkpoint on a dataset folder (worldmodels/evaluate.py) -------------------------------
def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, e.g. runs/rnn-default/last")
    p.add_argument("--data", required=True, help="dataset folder written by `worldmodels collect`")
    p.add_argument("--window", type=int, default=20, help="frames per window (default 20)")
    p.add_argument(
        "--context", type=int, default=None, help="observed frames before prediction (default: half)"
    )
    p.add_argument("--horizon", type=int, default=None, help="predicted frames (default: the rest)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the report to this JSON file")
    p.add_argument("--plots", default=None, help="folder for prediction_error.png and rollout.gif")


def _evaluate_run(args: argparse.Namespace) -> int:
    import json
    import os
    from pathlib import Path

    from worldmodels.evaluate import evaluate_checkpoint

    report = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        args.window,
        args.context,
        args.horizon,
        args.batch_size,
        args.seed,
        args.plots,
    )
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        tmp.write_text(text + "\n")
        os.replace(tmp, out)
    return 0


COMMANDS["evaluate"] = (
    "evaluate a checkpoint: ELBO/step, prediction and imputation error",
    _evaluate_args,
    _evaluate_run,
)


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
