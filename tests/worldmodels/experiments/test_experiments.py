"""The experiment registry and ``worldmodels experiment``: phases in order, options from the Args dataclass."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest

from worldmodels import experiments
from worldmodels.cli import main


@dataclass
class ToyArgs:
    seed: int = 0
    lr: float = 1e-3
    name: str = "toy"
    plots: bool = True


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    phases = {p: (lambda a, p=p: calls.append((p, a.seed, a.lr, a.name, a.plots))) for p in ("data", "train", "report")}
    module = types.ModuleType("toy_experiment")
    module.EXPERIMENT = experiments.Experiment("toy", "a toy experiment", ToyArgs, phases)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "toy_experiment", module)
    monkeypatch.setitem(experiments.EXPERIMENTS, "toy", ("toy_experiment", "a toy experiment"))
    return calls


def test_cli_runs_one_phase_or_all_with_typed_options(toy: list, capsys: pytest.CaptureFixture) -> None:
    assert main(["experiment", "toy", "--phase", "train", "--seed", "3", "--lr", "0.5", "--plots", "no"]) == 0
    assert toy == [("train", 3, 0.5, "toy", False)]
    assert main(["experiment", "toy", "--name", "x"]) == 0
    assert [c[0] for c in toy[1:]] == ["data", "train", "report"] and toy[-1][3] == "x"
    assert main(["experiment", "--list"]) == 0
    assert "toy                a toy experiment" in capsys.readouterr().out


def test_cli_refuses_unknown_phases_options_and_names(toy: list, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["experiment", "toy", "--phase", "eval"])  # toy has no eval phase
    assert "invalid choice: 'eval'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["experiment", "toy", "--seed", "x"])
    with pytest.raises(ValueError, match=r"expected one of \[.*'toy'.*\], received 'nope'"):
        experiments.get("nope")
    assert toy == []


def test_python_api_and_registry_checks(toy: list, monkeypatch: pytest.MonkeyPatch) -> None:
    experiments.run("toy", phase="report", seed=7)
    assert toy == [("report", 7, 1e-3, "toy", True)]
    with pytest.raises(ValueError, match="expected a phase in"):
        experiments.get("toy").run(ToyArgs(), "eval")
    monkeypatch.setitem(experiments.EXPERIMENTS, "other", ("toy_experiment", "mislabelled"))
    with pytest.raises(TypeError, match="expected toy_experiment.EXPERIMENT to be the Experiment named 'other'"):
        experiments.get("other")


def test_bool_options_alone_mean_true_and_tuple_options_take_several_values() -> None:
    from worldmodels.cli import dataclass_parser

    @dataclass
    class Args:
        pad: bool = False
        sizes: tuple[int, ...] = (1,)

    p = dataclass_parser(Args, "x", "demo")
    assert vars(p.parse_args(["--pad", "--sizes", "3", "4"])) == {"pad": True, "sizes": (3, 4)}
    assert vars(p.parse_args(["--pad", "false"])) == {"pad": False, "sizes": (1,)}

    @dataclass
    class Mixed:
        values: tuple = (1, "a")

    with pytest.raises(TypeError, match=r"Mixed.values: expected .* or a tuple of one of int, float, str"):
        dataclass_parser(Mixed, "x", "demo")
