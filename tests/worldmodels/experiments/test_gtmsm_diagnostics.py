"""``worldmodels experiment gtmsm-diagnostics`` (docs/results/gtmsm_notes.md): the documented commands parse and
mean what they did, a tiny training run logs the diagnostics, and the plots draw from its log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from agents.explorers import explorer_factory
from worldmodels.cli import dataclass_parser
from worldmodels.data import collect
from worldmodels.experiments import gtmsm_diagnostics as gd

pytestmark = pytest.mark.usefixtures("one_thread")


def _parse(*argv: str) -> gd.Args:
    options = vars(dataclass_parser(gd.Args, "x", "", list(gd.EXPERIMENT.phases)).parse_args(argv))
    options.pop("phase")
    return gd.Args(**options)


def test_the_documented_commands_parse() -> None:
    a = _parse("--name", "base", "--curriculum", "12:1500,24:1500,48:2000", "--relabel-blocked",
               "--set", "learn_obs_std=false", "obs_std=0.125")
    assert a.relabel_blocked and gd.overrides(a) == {"learn_obs_std": False, "obs_std": 0.125}
    assert gd.overrides(_parse("--set", 'kl="mc"')) == {"kl": "mc"}
    assert _parse("--plot", "a=b", "c").plot == "a=b c" and _parse("--gate-map", "m01_g3").gate_map == "m01_g3"
    assert not _parse().relabel_blocked and _parse().train_episodes == 0
    with pytest.raises(ValueError, match="--set: expected key=value"):
        gd.overrides(gd.Args(set="kl"))
    with pytest.raises(ValueError, match="--name is required for training"):
        gd.train(gd.Args())


def test_train_then_plot_and_gate_map(tmp_path: Path) -> None:
    policy = explorer_factory("poisson", lam=2.0)
    for part in ("train", "test"):  # the diagnostics read 288-frame windows of the test episodes
        collect("ImageNav-v0", tmp_path / "data" / part, 4, 287, policy=policy, seed=0, progress=False)
    args = gd.Args(data=str(tmp_path / "data"), out=str(tmp_path / "diag"), name="t", preset="imagenav_tiny",
                   curriculum="12:2,24:2", gate_from_len=24, batch_size=2, log_every=2, threads=1,
                   set="k=3", relabel_blocked=True)
    gd.EXPERIMENT.run(args)  # train; plot draws nothing without --plot / --gate-map
    run = json.loads((tmp_path / "diag" / "t.json").read_text())
    assert [r["step"] for r in run["log"]] == [2, 4] and run["args"]["set"] == ["k=3"]
    assert run["args"]["plot"] is None and run["args"]["train_episodes"] is None
    assert {"r2_mem", "grad_M", "grad_gate", "sv1", "w_entropy"} <= set(run["log"][-1])
    assert torch.tensor(run["M"]).shape == (2, 5) and (tmp_path / "diag" / "t" / "model.safetensors").exists()
    png = tmp_path / "plots" / "p.png"
    gd.EXPERIMENT.run(gd.Args(out=args.out, plot="A=t t", png=str(png)))  # plots instead of training
    assert png.stat().st_size > 0 and not (tmp_path / "diag" / "A.json").exists()
    gd.EXPERIMENT.run(gd.Args(data=args.data, out=args.out, gate_map="t", png=str(tmp_path / "g.png")), "plot")
    assert (tmp_path / "g.png").stat().st_size > 0
