"""The ``worldmodels`` command. The only module that parses command-line arguments (DESIGN §1).

Each subcommand is a pair ``(add_arguments(parser), run(args) -> int)`` registered in
``COMMANDS``; the work itself lives in the library modules so it can be called from Python.

Example:
    $ worldmodels --help
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import math
import os
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

os.environ.setdefault("PYGLET_HEADLESS", "1")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

AddArgs = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

# name -> (help, add_arguments, run); filled below, one block per subcommand.
COMMANDS: dict[str, tuple[str, AddArgs, Run]] = {}


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose help may end with ``more_help()``, text computed only when the help is
    shown: listing the models needs torch, which ``worldmodels --help`` must not import."""

    more_help: Callable[[], str] | None = None

    def format_help(self) -> str:
        text = super().format_help()
        return f"{text}\n{self.more_help()}\n" if self.more_help is not None else text


# --- argument types: values refused here exit with status 2 and "argument --x: expected X, received Y" --------
def _number(text: str, kind: type, what: str) -> Any:
    """``text`` as a finite ``kind`` (int or float), or ``ArgumentTypeError`` naming ``what`` was expected."""
    try:
        value = kind(text.strip())
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected {what}, received {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, received {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argument type: an int ``>= 1``.

    Example:
        >>> positive_int("3")
        3
        >>> positive_int("0")
        Traceback (most recent call last):
        argparse.ArgumentTypeError: expected an int >= 1, received '0'
    """
    value = _number(text, int, "an int >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, received {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    """An argument type: an int ``>= 0``.

    Example:
        >>> nonnegative_int("0")
        0
    """
    value = _number(text, int, "an int >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, received {text!r}")
    return value


def finite_float(text: str) -> float:
    """An argument type: a finite float (``nan``, ``inf`` and overflowing values such as ``1e400`` are refused).

    Example:
        >>> finite_float("1e-3")
        0.001
        >>> finite_float("1e400")
        Traceback (most recent call last):
        argparse.ArgumentTypeError: expected a finite float, received '1e400'
    """
    return float(_number(text, float, "a finite float"))


def probability(text: str) -> float:
    """An argument type: a probability in ``[0, 1)`` (a fraction of frames or windows, never all of them).

    Example:
        >>> probability("0.5")
        0.5
        >>> probability("1")
        Traceback (most recent call last):
        argparse.ArgumentTypeError: expected a probability in [0, 1), received '1'
    """
    value = _number(text, float, "a probability in [0, 1)")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1), received {text!r}")
    return float(value)


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
    p.add_argument("--env", required=True,
                   help="Gymnasium id: ImageNav-v0, CartPole-v1, module:Id (imports module first), "
                        "MiniWorld-OneRoom-v0 (the miniworld extra)")
    p.add_argument("--out", required=True, help="dataset folder (created; an interrupted run resumes)")
    p.add_argument("--episodes", type=positive_int, required=True, help="episodes in the whole dataset")
    p.add_argument("--steps", type=positive_int, required=True, help="actions per episode (steps + 1 frames)")
    p.add_argument("--num-envs", type=positive_int, default=1, help="parallel sub-environments (default 1)")
    p.add_argument("--policy", default="poisson", help="explorer: uniform, poisson, rotate, momentum")
    p.add_argument("--policy-kwargs", type=_json_dict, default={}, help="JSON, e.g. '{\"lam\": 3}'")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="master seed (default 0)")
    p.add_argument("--shard-index", type=nonnegative_int, default=0, help="this machine's index (default 0)")
    p.add_argument("--num-shards", type=positive_int, default=1, help="machines sharing the collection (default 1)")
    p.add_argument("--env-kwargs", type=_json_dict, default={}, help="JSON kwargs of gymnasium.make")
    p.add_argument("--episodes-per-shard", type=positive_int, default=None, help="default: ~32 MB shards")
    p.add_argument("--obs-size", type=positive_int, nargs=2, metavar=("H", "W"), default=None,
                   help="store frames area-resized to H x W (observations, or render() frames when the "
                        "observations are not images); default: as the env gives them")
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
        obs_size=None if args.obs_size is None else tuple(args.obs_size),
        progress=not args.no_progress,
    )
    data = RolloutDataset(out)
    print(data.summary())
    short = data.lengths < args.steps
    if short.any():
        print(f"note: {int(short.sum())} of {len(short)} episodes ended before --steps {args.steps} (the env "
              f"terminated or truncated them; lengths {data.lengths.min()}-{data.lengths.max()}); they are "
              "stored at their own length, and windows never cross an episode's end", file=sys.stderr)
    frame = data.frame_shape
    if data.meta["observation"]["source"] == "render" and args.obs_size is None and frame[0] * frame[1] > 128 * 128:
        print(f"hint: frames come from render() at {frame[0]}x{frame[1]}; --obs-size 64 64 stores them "
              "area-resized (a fraction of the disk space)", file=sys.stderr)
    return 0


COMMANDS["collect"] = ("collect rollouts from an environment into a dataset", _collect_args, _collect_run)


# --- train: a registered model on a dataset folder (worldmodels/train.py) ------------------------------
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="registered model name, e.g. rnn, kvae, srnn, gtmsm (required unless --frozen)")
    p.add_argument("--data", required=True, help="dataset folder written by `worldmodels collect`")
    p.add_argument(
        "--config",
        default="default",
        help="preset of the model config and its training recipe (listed below; default: default)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model-config or TrainConfig field, e.g. --set lr=3e-4 --set z_dim=8 (repeatable; "
        "beats the training recipe)",
    )
    p.add_argument(
        "--out", default=None, help="run folder (checkpoint last/, metrics.csv); default runs/MODEL-PRESET"
    )
    p.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="stop after this many updates (TrainConfig.max_steps; lifts the recipe's epochs unless "
        "--set epochs=N)",
    )
    p.add_argument("--window", type=positive_int, default=20, help="frames per training window (default 20)")
    p.add_argument(
        "--val-fraction", type=probability, default=0.0, help="windows held out for validation (default 0)"
    )
    p.add_argument(
        "--heads", default=None, metavar="reward,cont",
        help="also train a reward and/or continue head on the model's belief features (from the dataset's "
        "reward / terminated; the checkpoint is a with_heads model), jointly with the ELBO",
    )
    p.add_argument(
        "--frozen", default=None, metavar="CHECKPOINT",
        help="with --heads: train only the heads, post hoc, on this frozen checkpoint's model (folder or "
        "shipped name; --model/--config/model --set keys not used)",
    )
    if isinstance(p, _Parser):
        p.more_help = _train_configs


def _train_configs() -> str:
    """Every model's config names grouped by the training recipe they pick (the end of `train --help`)."""
    from worldmodels.models import MODELS, _load_all, config_names, train_preset_name

    _load_all()
    lines = [
        "configs (--config NAME) of each model and the training recipe each trains with: TRAIN_PRESETS[NAME]",
        'of the model file, else TRAIN_PRESETS["default"], else the TrainConfig defaults; --set beats all:',
    ]
    for model in sorted(m for m in MODELS if not m.startswith("_")):
        by_recipe: dict[str | None, list[str]] = {}
        for config in config_names(model):
            by_recipe.setdefault(train_preset_name(model, config), []).append(config)
        groups = [
            f"{', '.join(configs)} -> " + (f"TRAIN_PRESETS[{key!r}]" if key else "TrainConfig defaults")
            for key, configs in sorted(by_recipe.items(), key=lambda kv: kv[1])
        ]
        for i, group in enumerate(groups):
            first = f"  {model:<6} " if i == 0 else " " * 9
            lines += textwrap.wrap(group, 110, initial_indent=first, subsequent_indent=" " * 11)
    return "\n".join(lines)


def parse_value(text: str) -> Any:
    """A ``--set`` value: ints, floats, bools (true/false), none, tuples ``(1, 2)`` / ``1,2``, JSON-ish
    dicts ``{"alpha_net": 10}``; anything else stays a string.

    Example:
        >>> [parse_value(v) for v in ("3", "1e-3", "true", "(1,32,32)", "2,3", "none", "gaussian")]
        [3, 0.001, True, (1, 32, 32), (2, 3), None, 'gaussian']
    """
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text
    return tuple(value) if isinstance(value, list) else value


def typed_value(text: str, hint: Any, key: str = "value") -> Any:
    """A ``--set`` value parsed by :func:`parse_value` and checked against its dataclass field's type ``hint``:
    ``bool`` (true/false), ``int`` (an integral float such as ``1e3`` becomes an int), ``float`` (finite: ``nan``,
    ``inf`` and overflowing ``1e400`` are refused), ``str`` (the text as it is), ``X | None`` (``none`` or an
    ``X``), ``tuple[X, ...]`` (one value is a 1-tuple) and ``dict[K, V]``; other hints take the parsed value.
    A mismatch raises ``ValueError("--set KEY: expected X, received 'TEXT'")``.

    Example:
        >>> typed_value("1e3", int), typed_value("8,8", tuple[int, ...]), typed_value("none", float | None)
        (1000, (8, 8), None)
        >>> typed_value("nan", float, "lr")
        Traceback (most recent call last):
        ValueError: --set lr: expected a finite float, received 'nan'
    """
    def fail(what: str) -> ValueError:
        return ValueError(f"--set {key}: expected {what}, received {text!r}")

    def check(value: Any, hint: Any) -> Any:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            rest = [a for a in args if a is not type(None)]
            if len(rest) == 1:
                return check(value, rest[0])
            return value
        if hint is bool:
            if not isinstance(value, bool):
                raise fail("true or false")
            return value
        if hint is int:
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                return int(value)
            if not isinstance(value, int) or isinstance(value, bool):
                raise fail("an int")
            return value
        if hint is float:
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise fail("a finite float")
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise fail("a string")
            return value
        if origin is tuple:
            items = value if isinstance(value, tuple) else (value,)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(check(v, args[0]) for v in items)
            if args and len(items) != len(args):
                raise fail(f"a tuple of {len(args)} values")
            return tuple(check(v, a) for v, a in zip(items, args, strict=False)) if args else items
        if origin is dict:
            if not isinstance(value, dict):
                raise fail('a dict such as {"name": 1}')
            k, v = args if len(args) == 2 else (Any, Any)
            return {check(a, k): check(b, v) for a, b in value.items()}
        return value

    if hint is str or (typing.get_origin(hint) in (typing.Union, types.UnionType) and str in typing.get_args(hint)):
        stripped = text.strip()
        return None if stripped.lower() in ("none", "null") and type(None) in typing.get_args(hint) else stripped
    return check(parse_value(text), hint)


def split_overrides(pairs: Iterable[str], config_cls: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """``["key=value", ...]`` -> (model config overrides, :class:`~worldmodels.train.TrainConfig` overrides).

    A key is looked up in the model config first, then in ``TrainConfig``; unknown keys raise
    ``ValueError`` naming the valid ones (and close matches), values are checked against the field's type
    (:func:`typed_value`).
    """
    from worldmodels.train import TrainConfig

    model_keys = [f.name for f in dataclasses.fields(config_cls)]
    train_keys = [f.name for f in dataclasses.fields(TrainConfig)]
    model_hints, train_hints = typing.get_type_hints(config_cls), typing.get_type_hints(TrainConfig)
    model_over: dict[str, Any] = {}
    train_over: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set: expected key=value, received {pair!r}")
        key, text = pair.split("=", 1)
        key = key.strip()
        if key in model_keys:
            model_over[key] = typed_value(text, model_hints[key], key)
        elif key in train_keys:
            train_over[key] = typed_value(text, train_hints[key], key)
        else:
            close = difflib.get_close_matches(key, model_keys + train_keys, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"--set: unknown key {key!r}{hint} Model keys ({config_cls.__name__}): {model_keys}; "
                f"training keys (TrainConfig): {train_keys}"
            )
    return model_over, train_over


def _train_run(args: argparse.Namespace) -> int:
    from worldmodels.checkpoint import read_meta
    from worldmodels.models import get_config_class, train_preset, train_preset_name
    from worldmodels.train import train_on_dataset

    heads = [h.strip() for h in args.heads.split(",") if h.strip()] if args.heads else []
    if args.frozen is not None:
        if not heads:
            raise ValueError("--frozen trains heads on a frozen model; expected --heads reward,cont")
        frozen_model = read_meta(args.frozen)["model"]
        if args.model not in (None, frozen_model):
            raise ValueError(f"--model {args.model} but the --frozen checkpoint holds {frozen_model!r}")
        args.model = frozen_model
    elif args.model is None:
        raise ValueError("expected --model NAME (or --heads ... --frozen CHECKPOINT)")
    model_over, train_over = split_overrides(args.set, get_config_class(args.model))
    if args.frozen is not None:
        line = f"heads {','.join(heads)} post hoc on the frozen {args.model} of {args.frozen}: the TrainConfig defaults"
    else:
        key = train_preset_name(args.model, args.config)  # raises naming the configs for an unknown one
        recipe = train_preset(args.model, args.config)
        line = f"training recipe of {args.model} --config {args.config}: "
        if key is None:
            line += "the TrainConfig defaults (no TRAIN_PRESETS entry)"
        else:
            line += f"{args.model} TRAIN_PRESETS[{key!r}] " + " ".join(f"{k}={v!r}" for k, v in recipe.items())
        if heads:
            line += f"; with heads {','.join(heads)} (jointly)"
    if train_over:
        line += "; overridden by --set " + " ".join(f"{k}={v!r}" for k, v in train_over.items())
    print(line)
    r = train_on_dataset(
        args.model, args.data, args.config, model_over, train_over, args.out, args.steps, args.window,
        args.val_fraction, heads, args.frozen,
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
    p.add_argument("--window", type=positive_int, default=20, help="frames per window (default 20)")
    p.add_argument(
        "--context", type=positive_int, default=None, help="observed frames before prediction (default: half)"
    )
    p.add_argument("--horizon", type=positive_int, default=None, help="predicted frames (default: the rest)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", default=None, help="also write the report to this JSON file")
    p.add_argument("--plots", default=None, help="folder for prediction_error.png and rollout.gif")


def _evaluate_run(args: argparse.Namespace) -> int:
    import json

    from worldmodels.evaluate import evaluate_checkpoint
    from worldmodels.files import write_json

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
        write_json(args.out, report)
    return 0


COMMANDS["evaluate"] = (
    "evaluate a checkpoint: ELBO/step, prediction and imputation error",
    _evaluate_args,
    _evaluate_run,
)


# --- plan: MPC with a checkpoint in the real env (agents/mpc.py, agents/tasks.py) ------------------------
def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (worldmodels.load); optional with --agents true,random")
    p.add_argument("--env", required=True, help="ImageNavGoal-v0, BouncingBallForce-v0 or PixelPendulum-v0")
    p.add_argument("--env-kwargs", type=_json_dict, default={}, help="JSON kwargs of gymnasium.make")
    p.add_argument("--task", default="auto", help="goal-image, ball-region, swing-up (default: the env's)")
    p.add_argument("--agents", default="model", help="comma list of model, true (simulator), random")
    p.add_argument("--episodes", type=positive_int, default=10)
    p.add_argument("--max-steps", type=positive_int, default=None, help="real steps per episode (default: the task's)")
    p.add_argument("--planner", default="auto", help="random, cem, categorical-cem, mppi (default: by space)")
    p.add_argument("--horizon", type=positive_int, default=10)
    p.add_argument("--candidates", type=positive_int, default=500)
    p.add_argument("--iterations", type=positive_int, default=3)
    p.add_argument("--elites", type=positive_int, default=50)
    p.add_argument("--max-context", type=positive_int, default=None, help="frames the model filters (default: episode)")
    p.add_argument("--explore", type=nonnegative_int, default=None,
                   help="exploration steps at the start of each episode, memorised by a model with memory "
                        "(default: what the task asks for, 256 for ImageNavGoal-v0, else 0)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="env seeds seed .. seed + episodes - 1 (default 0)")
    p.add_argument("--out", default="runs/plan", help="folder for metrics.json and <agent>.gif")
    p.add_argument("--no-progress", action="store_true")


def _plan_run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import envs  # noqa: F401  (registers the env ids)
    from agents.tasks import plan_in_env
    from worldmodels.checkpoint import load
    from worldmodels.files import write_json

    agents = tuple(a.strip() for a in args.agents.split(",") if a.strip())
    model = load(args.checkpoint) if args.checkpoint else None
    t0 = time.time()
    setup: list[str] = []

    def log(line: str) -> None:  # which combination runs, and its warnings
        setup.append(line)
        print(f"plan: {line}", file=sys.stderr if line.startswith("warning:") else sys.stdout)

    res = plan_in_env(
        model, args.env, args.episodes, args.task, args.planner, args.horizon, args.candidates,
        args.iterations, args.elites, args.max_steps, args.max_context, args.seed, agents,
        args.env_kwargs, args.out, not args.no_progress, explore=args.explore, log=log,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"command": "worldmodels plan " + " ".join(sys.argv[2:]), "checkpoint": args.checkpoint,
              "env": args.env, "seed": args.seed, "setup": setup, "wall_clock_s": round(time.time() - t0, 1),
              "metrics": res}
    write_json(out / "metrics.json", report)
    for who, m in res.items():
        print(f"{who:>7}: success {m['success_rate']:.0%}  steps {m['mean_steps']:.1f}  return "
              f"{m['mean_return']:.2f}  final distance {m['mean_final_distance']:.2f}  "
              f"plan {m['plan_seconds_per_step'] * 1e3:.0f} ms/step")
    print(f"wrote {out / 'metrics.json'} and GIFs ({', '.join(f'{a}.gif' for a in res)}) in {out}")
    return 0


COMMANDS["plan"] = ("run the MPC agent with a checkpoint in the real env (success metrics, GIF)", _plan_args, _plan_run)


# --- imagine / impute: one episode of a dataset through a checkpoint (worldmodels/evaluate.py) -----------
def _imagine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, e.g. runs/gtmsm-debug/last")
    p.add_argument("--data", required=True, help="dataset folder written by `worldmodels collect`")
    p.add_argument("--episode", type=nonnegative_int, default=0, help="episode index (default 0)")
    p.add_argument("--context", type=positive_int, default=20, help="observed frames (GTM-SM: its memorisation τ)")
    p.add_argument("--horizon", type=positive_int, default=100, help="imagined frames under the episode's actions")
    p.add_argument("--out", default="runs/imagine", help="folder for imagination.gif/.png/.json")


def _imagine_run(args: argparse.Namespace) -> int:
    from worldmodels.evaluate import imagine_checkpoint

    r = imagine_checkpoint(args.checkpoint, args.data, args.episode, args.context, args.horizon, args.out)
    mse = r["mse"]
    marks = sorted({0, min(9, len(mse) - 1), len(mse) // 2, len(mse) - 1})
    print(f"episode {r['episode']}: {r['context']} frames observed, {r['horizon']} imagined; MSE per pixel "
          + "  ".join(f"step {t + 1}: {mse[t]:.4f}" for t in marks) + f"  mean {r['mean_mse']:.4f}")
    print(f"wrote imagination.gif (truth | imagination), imagination_mse.png, imagination.json in {args.out}")
    return 0


COMMANDS["imagine"] = (
    "observe the start of an episode, imagine the rest under its actions; GIF beside the truth",
    _imagine_args,
    _imagine_run,
)


def _impute_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, e.g. runs/kvae-box/last")
    p.add_argument("--data", required=True, help="dataset folder written by `worldmodels collect`")
    p.add_argument("--episode", type=nonnegative_int, default=0, help="episode index (default 0)")
    p.add_argument("--window", type=positive_int, default=20, help="frames of the episode used (default 20)")
    hide = p.add_mutually_exclusive_group(required=True)
    hide.add_argument("--drop", type=probability, help="hide each frame after the first ones with this probability")
    hide.add_argument("--gap", type=positive_int, help="hide this many consecutive frames in the middle")
    p.add_argument("--first-observed", type=nonnegative_int, default=4, help="frames always observed first (default 4)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the random drop mask")
    p.add_argument("--out", default="runs/impute", help="folder for imputation.gif/.json")


def _impute_run(args: argparse.Namespace) -> int:
    from worldmodels.evaluate import impute_checkpoint

    r = impute_checkpoint(args.checkpoint, args.data, args.episode, args.window, args.drop, args.gap,
                          args.first_observed, args.seed, args.out)
    print(f"episode {r['episode']}: {len(r['missing_frames'])} of {r['window']} frames hidden "
          f"{r['missing_frames']}; on them MSE {r['mse_missing']:.4f}, pixels wrong "
          f"{r['pixels_wrong_missing']:.2%}")
    print(f"wrote imputation.gif (truth | observed or imputed) and imputation.json in {args.out}")
    return 0


COMMANDS["impute"] = ("fill hidden frames of an episode with a checkpoint; GIF and error", _impute_args, _impute_run)


# --- info: what is installed and registered ------------------------------------------------------------
def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def system_info() -> dict:
    """Environment ids, models and presets, versions, FAISS/GPU status (what ``worldmodels info`` prints)."""
    import importlib
    import platform
    from importlib import metadata

    import gymnasium as gym
    import torch

    import envs  # noqa: F401  (registers the env ids)
    from worldmodels.models import MODELS, _load_all, get_config_class

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    faiss_info: dict = {"installed": False}
    try:
        faiss = importlib.import_module("faiss")
        faiss_info = {"installed": True, "version": getattr(faiss, "__version__", None),
                      "gpus": int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0}
    except ImportError:
        pass
    _load_all()
    ours = sorted(k for k, spec in gym.registry.items() if str(spec.entry_point).startswith("envs"))
    return {
        "worldmodels": version("worldmodels"),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores",
        "packages": {d: version(d) for d in ("torch", "numpy", "gymnasium", "miniworld", "pygame",
                                                "faiss-cpu", "faiss-gpu", "safetensors", "music21")},
        "torch": {"threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
                  "cuda_devices": torch.cuda.device_count()},
        "faiss": faiss_info,
        "environments": ours,
        "models": {name: sorted(getattr(get_config_class(name), "PRESETS", {})) for name in sorted(MODELS)
                   if not name.startswith("_")},
    }


def _info_run(args: argparse.Namespace) -> int:
    import json

    info = system_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    f = info["faiss"]
    faiss_line = (f"faiss {f['version']} ({f['gpus']} GPU(s): {'GPU' if f['gpus'] else 'CPU'} index)"
                  if f["installed"] else "faiss not installed (the DND falls back to torch search)")
    print(f"worldmodels {info['worldmodels']}  python {info['python']}  {info['platform']}")
    print("packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v))
    print(f"torch: {info['torch']['threads']} threads, CUDA {'yes' if info['torch']['cuda'] else 'no'}; {faiss_line}")
    print(f"environments ({len(info['environments'])}): " + ", ".join(info["environments"]))
    print("models and presets (worldmodels train --model NAME --config PRESET):")
    for name, presets in info["models"].items():
        print(f"  {name:<6} " + ", ".join(presets))
    return 0


COMMANDS["info"] = ("environment ids, models and presets, versions, FAISS/GPU status", _info_args, _info_run)


# --- experiment: the thesis's experiments (worldmodels/experiments/) --------------------------------------
def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="experiment name (--list shows them)")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("options", nargs=argparse.REMAINDER,
                   help="--phase PHASE and the experiment's own options (NAME -h lists them)")


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, received {text!r}")


class _TupleAction(argparse.Action):
    """Store an option's values (``nargs="+"``) as a tuple, the type of the dataclass default."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, tuple(values) if isinstance(values, list) else values)


class _JoinWords(argparse.Action):
    """``nargs="*"`` words joined by spaces into the one ``str`` value of a dataclass field."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, " ".join(values))  # type: ignore[arg-type]


def dataclass_parser(cls: type, prog: str, description: str, phases: list[str] | None = None
                     ) -> argparse.ArgumentParser:
    """An argument parser with one ``--field-name`` option per field of dataclass ``cls`` (typed by its
    default; default: the field's), plus ``--phase`` when ``phases`` are given (default ``all``).

    A bool option alone means true (``--plots`` = ``--plots true``); a tuple default (of int, float or str)
    takes one or more values (``--envs ball nav``); a str field with ``metadata={"nargs": "*"}`` takes
    several words (``--set a=1 b=2``), joined by spaces.

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass
        ... class Args:
        ...     seed: int = 0
        ...     plots: bool = True
        ...     envs: tuple[str, ...] = ("ball",)
        ...     set: str = dataclasses.field(default="", metadata={"nargs": "*"})
        >>> vars(dataclass_parser(Args, "x", "demo").parse_args(["--seed", "3", "--plots", "false"]))
        {'seed': 3, 'plots': False, 'envs': ('ball',), 'set': ''}
        >>> vars(dataclass_parser(Args, "x", "demo").parse_args(["--envs", "ball", "nav", "--plots",
        ...                                                      "--set", "a=1", "b=2"]))
        {'seed': 0, 'plots': True, 'envs': ('ball', 'nav'), 'set': 'a=1 b=2'}
    """
    import dataclasses

    p = argparse.ArgumentParser(prog=prog, description=description)
    if phases is not None:
        p.add_argument("--phase", default="all", choices=["all", *phases], help="default all: every phase in turn")
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(default, bool):
            p.add_argument(flag, dest=f.name, type=_parse_bool, nargs="?", const=True, default=default,
                           metavar="{true,false}", help=f"default {default}")
        elif isinstance(default, str) and f.metadata.get("nargs") == "*":
            p.add_argument(flag, dest=f.name, nargs="*", action=_JoinWords, default=default, metavar="WORD",
                           help=f"words, default {default!r}")
        elif isinstance(default, int | float | str):
            p.add_argument(flag, dest=f.name, type=type(default), default=default, help=f"default {default!r}")
        elif (isinstance(default, tuple) and len({type(v) for v in default}) <= 1
              and all(isinstance(v, int | float | str) and not isinstance(v, bool) for v in default)):
            p.add_argument(flag, dest=f.name, type=type(default[0]) if default else str, nargs="+",
                           action=_TupleAction, default=default, help=f"default {' '.join(map(str, default))}")
        else:
            raise TypeError(f"dataclass_parser: {cls.__name__}.{f.name}: expected a bool, int, float or str "
                            f"default or a tuple of one of int, float, str, received {default!r}")
    return p


def _experiment_run(args: argparse.Namespace) -> int:
    from worldmodels import experiments

    if args.list or not args.name:
        for name in experiments.names():
            print(f"{name:<18} {experiments.summary(name)}")
        return 0
    exp = experiments.get(args.name)
    parser = dataclass_parser(exp.args, f"worldmodels experiment {exp.name}", exp.summary, list(exp.phases))
    options = vars(parser.parse_args(args.options))
    phase = options.pop("phase")
    exp.run(exp.args(**options), phase)
    return 0


COMMANDS["experiment"] = ("run a thesis experiment (phases data, train, eval, report)", _experiment_args,
                          _experiment_run)


# --- bench: the benchmark groups (worldmodels/experiments/benchmarks/) ------------------------------------
def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", nargs="*", default=None, help="benchmark groups, e.g. kvae planning memory")
    p.add_argument("--list", action="store_true", help="list the groups and exit")


def _bench_run(args: argparse.Namespace) -> int:
    from worldmodels.experiments import benchmarks

    if args.list:
        print("benchmark groups: " + ", ".join(benchmarks.groups()))
        return 0
    benchmarks.run(args.only or None)
    return 0


COMMANDS["bench"] = ("run the benchmarks (a source checkout); writes docs/benchmarks.md/.json", _bench_args,
                     _bench_run)


EXAMPLES = {
    "collect": ["worldmodels collect --env ImageNav-v0 --out data/nav --episodes 1000 --steps 511 --num-envs 16",
                "worldmodels collect --env CartPole-v1 --out data/cartpole --episodes 32 --steps 64 --obs-size 64 64",
                "worldmodels collect --env BouncingBall-v0 --out data/ball --episodes 5000 --steps 19 --policy uniform",
                "worldmodels collect ... --shard-index 0 --num-shards 4   # machine 0 of 4, one shared folder"],
    "train": ["worldmodels train --model gtmsm --config imagenav --data data/nav --window 288 --out runs/gtmsm",
              "worldmodels train --model kvae --config box --data data/ball --set lr=7e-3 --steps 5000",
              "torchrun --nproc_per_node 2 -m worldmodels train --model rnn --data data/nav   # DDP",
              "worldmodels train --model rssm --data data/ball --heads reward,cont   # + reward/continue heads",
              "worldmodels train --heads reward --frozen runs/rssm/last --data data/ball   # heads only, post hoc"],
    "evaluate": ["worldmodels evaluate --checkpoint runs/gtmsm/last --data data/nav_test --window 64 "
                 "--context 32 --plots runs/eval"],
    "imagine": ["worldmodels imagine --checkpoint gtmsm-imagenav --data data/nav_test --context 256 --horizon 100",
                "worldmodels imagine --checkpoint runs/rssm/last --data data/nav_test --episode 3"],
    "impute": ["worldmodels impute --checkpoint kvae-box --data data/ball_test --drop 0.5",
               "worldmodels impute --checkpoint kvae-box --data data/ball_test --gap 8 --episode 2"],
    "plan": ["worldmodels plan --checkpoint runs/kvae_force/last --env BouncingBallForce-v0 --agents model,true,random",
             "worldmodels plan --checkpoint gtmsm-imagenav-elbo --env ImageNavGoal-v0 --agents model,true,random "
             "--seed 50000   # 256 exploration steps, then localize the goal"],
    "experiment": ["worldmodels experiment --list",
                   "worldmodels experiment gtmsm-imagenav --phase report",
                   "worldmodels experiment gtmsm-imagenav -h   # the experiment's options"],
    "bench": ["worldmodels bench --list", "worldmodels bench --only memory planning"],
    "info": ["worldmodels info", "worldmodels info --json"],
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="worldmodels",
        description="Collect rollouts, train world models, imagine and plan with them.",
        epilog="A first run: worldmodels info; worldmodels imagine --checkpoint gtmsm-imagenav --data <ImageNav "
               "dataset> (shipped checkpoints: gtmsm-imagenav, gtmsm-imagenav-elbo, kvae-box, srnn-music). `worldmodels COMMAND -h` "
               "shows examples.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, add_arguments, _run) in COMMANDS.items():
        examples = "examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES.get(name, []))
        add_arguments(sub.add_parser(name, help=help_, description=help_, epilog=examples,
                                     formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command][2](args)
    except (ValueError, OSError, KeyError, IndexError) as e:  # OSError: missing files, full disk, read-only
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"worldmodels {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
