"""``worldmodels experiment gtmsm-imagenav`` (§7.4.1): every phase on a tiny budget, the GTM-SM resume (bit-exact),
the results page from the committed JSON, and (slow) the tiny preset learning the grid."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from worldmodels import experiments
from worldmodels.cli import main
from worldmodels.experiments import gtmsm_imagenav as gi

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[3]

TINY = dict(train_episodes=64, test_episodes=3, test_tau=8, test_horizon=8, preset="imagenav_tiny",
            curriculum="12:3,24:3", gate_from_len=24, batch_size=4, baseline_steps=2, checkpoint_every=2)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 training episodes (the restart selection scores 64) and 3 test episodes of 17 frames."""
    out = tmp_path_factory.mktemp("gtmsm_imagenav")
    gi.data(gi.Args(out=str(out), **TINY))  # type: ignore[arg-type]
    return out


def _args(tiny_data: Path, tmp_path: Path, **kw: object) -> gi.Args:
    out = tmp_path / "runs"
    shutil.copytree(tiny_data / "data", out / "data")
    return gi.Args(out=str(out), results=str(tmp_path / "res"), **{**TINY, **kw})  # type: ignore[arg-type]


def test_every_phase_on_a_tiny_budget(tiny_data: Path, tmp_path: Path) -> None:
    args = _args(tiny_data, tmp_path, restarts=2, restart_steps=2)
    exp = experiments.get("gtmsm-imagenav")
    for phase in ("train", "eval"):  # "report" runs at the end of "eval" too
        exp.run(args, phase)
    out, res = Path(args.out), Path(args.results)
    restarts = json.loads((out / "gtmsm" / "restarts.json").read_text())
    assert set(restarts["elbo"]) == {"0", "1000"} and restarts["window_length"] == 12
    assert json.loads((out / "gtmsm" / "train_args.json").read_text())["phase"] == "train"
    rec = json.loads((res / "gtmsm_imagenav.json").read_text())
    assert rec["experiment"] == "gtmsm_imagenav" and rec["command"].startswith(
        "worldmodels experiment gtmsm-imagenav --phase eval --out ")
    m = rec["metrics"]
    assert set(m["summary"]) == {"gtmsm", "rssm", "vrnn", "srnn", "no_memory"} and m["episodes"] == 3
    assert m["training"]["gtmsm"]["step"] == "6" and m["training"]["rssm"]["step"] == "2"
    assert rec["budget"] == {"test_episodes": 3, "gtmsm_updates": 6, "rssm_updates": 2, "vrnn_updates": 2,
                             "srnn_updates": 2}
    assert 0 <= m["reference"]["frac_unvisited"] <= 1 and set(m["state_r2"]) == {"gtmsm"}
    for f in ("gtmsm_imagenav_error.png", "gtmsm_imagenav_states_gtmsm.png", "gtmsm_imagenav_predictions.gif"):
        assert (res / f).stat().st_size > 0
    page = (res / "gtmsm.md").read_text()
    assert f"Command: `{rec['command']}`" in page and "| gtmsm | " in page and "Goals of the issue for `gtmsm`" in page
    (res / "gtmsm.md").unlink()
    assert main(["experiment", "gtmsm-imagenav", "--phase", "report", "--results", str(res), "--out", args.out]) == 0
    assert (res / "gtmsm.md").read_text() == page


def test_gtmsm_training_resumes_bit_exactly(tiny_data: Path, tmp_path: Path) -> None:
    """Stopping after 2 updates (a checkpoint) and resuming gives the weights of a straight run."""
    args = _args(tiny_data, tmp_path, checkpoint_every=100)
    straight = gi.fit_gtmsm(args, 7, tmp_path / "straight")
    gi.fit_gtmsm(args, 7, tmp_path / "resumed", stop_at=2)
    resumed = gi.fit_gtmsm(args, 7, tmp_path / "resumed")
    assert straight.step == resumed.step == 6
    a = (tmp_path / "straight" / "last" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "resumed" / "last" / "model.safetensors").read_bytes()


def test_bad_options_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--curriculum: expected 'length:updates,...', received '12-3'"):
        gi.stages(gi.Args(curriculum="12-3"))
    with pytest.raises(ValueError, match="window lengths must be <= 288"):
        gi.stages(gi.Args(curriculum="300:1"))
    with pytest.raises(ValueError, match=r"--model: expected one of \['gtmsm', 'rssm', 'vrnn', 'srnn', 'all'\]"):
        gi.train_model(gi.Args(out=str(tmp_path)), "kvae")
    with pytest.raises(ValueError, match="--gtmsm-eval: expected 'label:folder,...'"):
        gi.gtmsm_runs(gi.Args(gtmsm_eval="a:b,c"))


@pytest.mark.parametrize(("name", "out"), [("gtmsm", "runs/gtmsm_imagenav"), ("gtmsm_elbo", "runs/gtmsm_imagenav"),
                                         ("gtmsm_faces", "runs/gtmsm_faces")])
def test_report_regenerates_the_committed_page(name: str, out: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The page from the committed JSON (+ notes) is the committed page, up to the memory-scaling section
    (from docs/benchmarks.json, which changes with every benchmark run)."""
    res = tmp_path / "docs" / "results"
    res.mkdir(parents=True)
    for f in (f"{name}_imagenav.json", f"{name}_notes.md"):
        if (ROOT / "docs" / "results" / f).exists():
            shutil.copy(ROOT / "docs" / "results" / f, res / f)
    monkeypatch.chdir(tmp_path)
    gi.report(gi.Args(name=name, out=out))
    cut = "## Experiment 4: memory scaling"
    assert (res / f"{name}.md").read_text().split(cut)[0] == (ROOT / "docs" / "results" / f"{name}.md").read_text().split(cut)[0]


@pytest.mark.slow
def test_tiny_imagenav_preset_learns_states_and_beats_no_memory_at_64_steps(tmp_path: Path) -> None:
    """Train the ``imagenav_tiny`` preset with the experiment's curriculum on ImageNav-v0 (with the displacement
    loss and KL annealing, the recipe that learned in our budget) and check that 64-step open-loop
    predictions beat the no-memory baseline (context-mean frame) and that the states track the positions."""
    torch.set_num_threads(2)
    assert main(["experiment", "gtmsm-imagenav", "--out", str(tmp_path), "--results", str(tmp_path / "res"),
                 "--train-episodes", "400", "--test-episodes", "16", "--preset", "imagenav_tiny",
                 "--curriculum", "24:400,48:800,96:800", "--displacement-weight", "100", "--m-init-scale", "0.1",
                 "--lr", "3e-3", "--beta0", "0.01", "--beta-anneal-steps", "1000", "--baselines", "",
                 "--test-tau", "64", "--test-horizon", "64", "--threads", "2"]) == 0
    metrics = json.loads((tmp_path / "res" / "gtmsm_imagenav.json").read_text())["metrics"]
    res = metrics["summary"]
    assert res["gtmsm"]["mse_step64"] < res["no_memory"]["mse_step64"], res
    assert metrics["state_r2"]["gtmsm"]["all"] > 0.9, metrics["state_r2"]
