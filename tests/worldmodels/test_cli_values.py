"""Bad command-line values (issue #19): every one exits with status 2 and a one-line "expected X, received Y"
raised from our code; the argument types and the API checks behind them, unit by unit."""

from __future__ import annotations

import argparse
import math

import pytest

from worldmodels.cli import (
    finite_float,
    main,
    nonnegative_int,
    positive_int,
    probability,
    split_overrides,
    typed_value,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[str, str, str]:
    """A 4-episode ImageNav dataset (12 steps), an RNN trained on it for 1 update, a scratch folder."""
    d = tmp_path_factory.mktemp("cli_values")
    data, out = str(d / "data"), str(d / "run")
    assert main(["collect", "--env", "ImageNav-v0", "--out", data, "--episodes", "4", "--steps", "12",
                 "--no-progress"]) == 0
    assert main(["train", "--model", "rnn", "--config", "debug", "--data", data, "--out", out, "--window", "8",
                 "--steps", "1", "--set", "batch_size=2", "--set", "progress=false",
                 "--set", "tensorboard=false"]) == 0
    return data, f"{out}/last", str(d)


def _exit_code(argv: list[str]) -> int:
    """``main(argv)``'s status, also when argparse refuses a value (``SystemExit``)."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code or 0)


FLOAT = "expected a finite float, received"
INT1 = "expected an int >= 1, received"
PROB = "expected a probability in [0, 1), received"

# (command, its arguments with {data}, {ckpt}, {tmp} filled in, the message expected on stderr)
BAD = [
    ("train", ["--set", "lr=nan"], f"--set lr: {FLOAT} 'nan'"),
    ("train", ["--set", "lr=inf"], f"--set lr: {FLOAT} 'inf'"),
    ("train", ["--set", "lr=abc"], f"--set lr: {FLOAT} 'abc'"),
    ("train", ["--set", "lr=1e400"], f"--set lr: {FLOAT} '1e400'"),
    ("train", ["--set", "lr=-1"], "TrainConfig.lr: expected > 0, received -1.0"),
    ("train", ["--set", "batch_size=2.5"], "--set batch_size: expected an int, received '2.5'"),
    ("train", ["--set", "batch_size=0"], "TrainConfig.batch_size: expected > 0, received 0"),
    ("train", ["--set", "progress=yes"], "--set progress: expected true or false, received 'yes'"),
    ("train", ["--set", "hidden_dim=abc"], "--set hidden_dim: expected an int, received 'abc'"),
    ("train", ["--val-fraction", "1.5"], f"argument --val-fraction: {PROB} '1.5'"),
    ("train", ["--window", "0"], f"argument --window: {INT1} '0'"),
    ("impute", ["--drop", "1.5"], f"argument --drop: {PROB} '1.5'"),
    ("impute", ["--drop", "nan"], f"argument --drop: {PROB} 'nan'"),
    ("impute", ["--drop", "-0.1"], f"argument --drop: {PROB} '-0.1'"),
    ("impute", ["--gap", "1000"], "impute: expected gap <= window - first_observed = 8 - 4 = 4 frames, received 1000"),
    ("impute", ["--gap", "0"], f"argument --gap: {INT1} '0'"),
    ("evaluate", ["--context", "0"], f"argument --context: {INT1} '0'"),
    ("evaluate", ["--horizon", "0"], f"argument --horizon: {INT1} '0'"),
    ("evaluate", ["--horizon", "-3"], f"argument --horizon: {INT1} '-3'"),
    ("evaluate", ["--batch-size", "0"], f"argument --batch-size: {INT1} '0'"),
    ("evaluate", ["--context", "6", "--horizon", "6"],
     "evaluate: expected context + horizon <= the window's 8 frames, received 6 + 6 = 12"),
    ("evaluate", ["--context", "8"], "evaluate: expected horizon an int >= 1, received 0"),
    ("imagine", ["--context", "0"], f"argument --context: {INT1} '0'"),
    ("imagine", ["--horizon", "-3"], f"argument --horizon: {INT1} '-3'"),
    ("collect", ["--policy-kwargs", '{"lam": "abc"}'], "explorer 'poisson': expected lam a finite number, received 'abc'"),
    ("collect", ["--env-kwargs", '{"rgb": "yes"}'], "ImageNav: expected rgb true or false, received 'yes'"),
    ("collect", ["--steps", "0"], f"argument --steps: {INT1} '0'"),
    ("collect", ["--episodes", "x"], f"argument --episodes: {INT1} 'x'"),
]

BASE = {
    "train": ["--model", "rnn", "--config", "debug", "--data", "{data}", "--out", "{tmp}/bad-train", "--window", "8",
              "--steps", "1"],
    "impute": ["--checkpoint", "{ckpt}", "--data", "{data}", "--window", "8", "--out", "{tmp}/bad-impute"],
    "evaluate": ["--checkpoint", "{ckpt}", "--data", "{data}", "--window", "8"],
    "imagine": ["--checkpoint", "{ckpt}", "--data", "{data}", "--out", "{tmp}/bad-imagine"],
    "collect": ["--env", "ImageNav-v0", "--out", "{tmp}/bad-collect", "--episodes", "1", "--steps", "4",
                "--no-progress"],
}


@pytest.mark.parametrize(("command", "extra", "message"), BAD, ids=[f"{c} {' '.join(a)}" for c, a, _ in BAD])
def test_bad_values_exit_2_with_our_one_line_message(run, capsys, command, extra, message):
    data, ckpt, tmp = run
    fill = {"data": data, "ckpt": ckpt, "tmp": tmp}
    base = [a.format(**fill) for a in BASE[command]]
    if command == "impute" and not {"--drop", "--gap"} & set(extra):
        base += ["--gap", "2"]
    # argparse keeps the last of a repeated option: the bad value comes after the base's
    assert _exit_code([command, *base, *extra]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"worldmodels {command}: error: ") and last.endswith(message), err


def test_steps_beyond_the_env_limit_warn_naming_both(tmp_path, capsys):
    with pytest.warns(UserWarning, match=r"steps 32 > the env's max_episode_steps 20"):
        assert main(["collect", "--env", "BouncingBall-v0", "--out", str(tmp_path / "ball"), "--episodes", "1",
                     "--steps", "32", "--no-progress"]) == 0
    assert "1 of 1 episodes ended before --steps 32" in capsys.readouterr().err


# --- the argument types -----------------------------------------------------------------------------
@pytest.mark.parametrize(("fn", "good", "bad"), [
    (positive_int, {"1": 1, " 7 ": 7}, ["0", "-3", "1.5", "abc", ""]),
    (nonnegative_int, {"0": 0, "12": 12}, ["-1", "nan", "1e3"]),
    (finite_float, {"1e-3": 1e-3, "-2": -2.0, "0": 0.0}, ["nan", "inf", "-inf", "1e400", "abc"]),
    (probability, {"0": 0.0, "0.5": 0.5, "0.999": 0.999}, ["1", "1.5", "-0.1", "nan", "inf", "x"]),
])
def test_argument_types(fn, good, bad):
    for text, value in good.items():
        assert fn(text) == value and type(fn(text)) is type(value)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=r"^expected .+, received " + repr(text)):
            fn(text)


def test_typed_value_follows_the_field_type():
    assert typed_value("3", int) == 3 and typed_value("1e3", int) == 1000
    assert typed_value("3", float) == 3.0 and type(typed_value("3", float)) is float
    assert typed_value("true", bool) is True and typed_value("False", bool) is False
    assert typed_value("3", str) == "3" and typed_value(" cuda:1 ", str) == "cuda:1"
    assert typed_value("none", str | None) is None and typed_value("auto", str | None) == "auto"
    assert typed_value("none", float | None) is None and typed_value("2.5", float | None) == 2.5
    assert typed_value("8,8", tuple[int, ...]) == (8, 8) and typed_value("8", tuple[int, ...]) == (8,)
    assert typed_value('{"alpha_net": 10}', dict[str, int]) == {"alpha_net": 10}
    for text, hint, what in [
        ("nan", float, "a finite float"), ("1e400", float, "a finite float"), ("-inf", float, "a finite float"),
        ("true", float, "a finite float"), ("abc", int, "an int"), ("2.5", int, "an int"), ("1", bool, "true or false"),
        ("yes", bool, "true or false"), ("8,x", tuple[int, ...], "an int"), ("nan", int | None, "an int"),
        ('{"alpha_net": 1.5}', dict[str, int], "an int"), ("3", dict[str, int], "a dict"),
    ]:
        with pytest.raises(ValueError, match=rf"^--set k: expected {what}.*, received {text!r}$".replace("{", r"\{")
                           .replace("(", r"\(")):
            typed_value(text, hint, "k")


def test_split_overrides_checks_types_of_both_configs():
    from worldmodels.models.rnn import RNNConfig

    model, train = split_overrides(["hidden_dim=1e2", "lr=3e-4", "grad_clip=none"], RNNConfig)
    assert model == {"hidden_dim": 100} and train == {"lr": 3e-4, "grad_clip": None}
    with pytest.raises(ValueError, match=r"^--set dropout: expected a finite float, received 'nan'$"):
        split_overrides(["dropout=nan"], RNNConfig)


# --- the API checks behind them ------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lr": math.nan}, "TrainConfig.lr: expected a finite number, received nan"),
    ({"lr": math.inf}, "TrainConfig.lr: expected a finite number, received inf"),
    ({"lr": "abc"}, "TrainConfig.lr: expected a finite number, received 'abc'"),
    ({"grad_clip": 0.0}, "TrainConfig.grad_clip: expected > 0 or None, received 0.0"),
    ({"batch_size": 2.0}, "TrainConfig.batch_size: expected an int, received 2.0"),
    ({"epochs": True}, "TrainConfig.epochs: expected an int, received True"),
    ({"weight_decay": -1e-4}, "TrainConfig.weight_decay: expected >= 0, received -0.0001"),
])
def test_train_config_refuses_bad_numbers(kwargs, message):
    from worldmodels.train import TrainConfig

    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        TrainConfig(**kwargs)
    TrainConfig(lr=1, grad_clip=None, max_steps=None)  # ints are floats too; None where optional


def test_masks_refuse_bad_parameters():
    import torch

    from worldmodels.evaluate import drop_mask, gap_mask

    for p in (1.5, -0.1, math.nan, "0.5", True):
        with pytest.raises(ValueError, match=r"drop_mask: expected a probability p in \[0, 1\], received"):
            drop_mask(p)  # type: ignore[arg-type]
    assert bool((~drop_mask(1.0, 2)(1, 6, torch.Generator())[0, 2:]).all())  # p = 1: the KVAE curve's end
    for gap in (0, -3, 2.5):
        with pytest.raises(ValueError, match=r"gap_mask: expected gap an int >= 1, received"):
            gap_mask(gap)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected a gap of at most T - first_observed = 6 frames, received 1000"):
        gap_mask(1000)(1, 10, torch.Generator())


def test_explorers_refuse_values_of_the_wrong_type():
    from gymnasium.spaces import Discrete

    from agents.explorers import PoissonRepeat, RandomWalkMomentum, RotateInPlace, explorer_factory

    with pytest.raises(ValueError, match=r"^explorer 'poisson': expected lam a finite number, received 'abc'$"):
        explorer_factory("poisson", lam="abc")
    with pytest.raises(ValueError, match=r"^explorer 'rotate': expected random_direction true or false, received 'yes'$"):
        explorer_factory("rotate", random_direction="yes")
    with pytest.raises(ValueError, match=r"^explorer 'momentum': expected sigma a finite number, received nan$"):
        explorer_factory("momentum", sigma=math.nan)
    assert explorer_factory("poisson", lam=3)(Discrete(4)).lam == 3.0  # an int is a number
    with pytest.raises(TypeError, match=r"^PoissonRepeat: expected lam a finite number, received 'abc'$"):
        PoissonRepeat(Discrete(3), lam="abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^RotateInPlace: expected action an int, received 0.5$"):
        RotateInPlace(Discrete(3), action=0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^RandomWalkMomentum: expected p_keep a finite number, received None$"):
        RandomWalkMomentum(Discrete(3), p_keep=None)  # type: ignore[arg-type]


def test_env_configs_refuse_values_of_the_wrong_type():
    import gymnasium as gym

    import envs  # noqa: F401  (registers the env ids)
    from envs._core import InvalidKwargError

    for kwargs, message in [({"rgb": "yes"}, "ImageNav: expected rgb true or false, received 'yes'"),
                            ({"image_size": 32.5}, "ImageNav: expected image_size an int, received 32.5"),
                            ({"goal": 1}, "ImageNav: expected goal true or false, received 1")]:
        with pytest.raises(InvalidKwargError, match=f"^{message}"):
            gym.make("ImageNav-v0", **kwargs)
    gym.make("ImageNav-v0", rgb=False, image_size=32).close()
