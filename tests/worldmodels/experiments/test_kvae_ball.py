"""``worldmodels experiment kvae-ball``: every phase end to end on a tiny budget, the shim's ``--stage``, the
AE-RNN/VAE-RNN baselines, and the report phase against the committed ``docs/results/kvae.md``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from worldmodels.cli import main
from worldmodels.experiments import get, kvae_baselines
from worldmodels.experiments import kvae_common as kc
from worldmodels.experiments.kvae_report import write_report

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "docs" / "results"


def _paths(tmp: Path) -> list[str]:
    return ["--data-dir", str(tmp / "data"), "--runs-dir", str(tmp / "runs"), "--results-dir", str(tmp / "results")]


@pytest.mark.usefixtures("one_thread")
def test_all_phases_on_a_tiny_budget(tmp_path: Path) -> None:
    tiny = ["--train", "32", "--test", "6", "--epochs", "1", "--baseline-steps", "2", "--filters", "8,8,8",
            "--threads", "1", *_paths(tmp_path)]
    assert main(["experiment", "kvae-ball", *tiny]) == 0
    res, runs = tmp_path / "results", tmp_path / "runs"
    rec = json.loads((res / "kvae_box.json").read_text())
    committed = json.loads((RESULTS / "kvae_box.json").read_text())
    assert set(committed) <= set(rec) and set(committed["metrics"]) == set(rec["metrics"])  # the fields docs read
    m = rec["metrics"]
    assert rec["experiment"] == "kvae_box" and rec["budget"] == m["budget"] == {
        "epochs": 1.0, "steps": 1, "batch_size": 32, "thesis_epochs": 80}
    assert set(m["imputation_error"]) == {"KVAE smoothing", "KVAE filtering", "AE-RNN", "VAE-RNN", "blank frames"}
    assert set(m["imputation_error"]["AE-RNN"]) == {f"drop_{p:.1f}" for p in kc.DROP_PROBS} | {
        f"gap_{k}" for k in kc.GAPS}
    assert m["checkpoint"] == str(runs / "kvae_box" / "last") and m["baselines"]["VAE-RNN"]["ae_steps"] == 2
    assert m["train_commands"] == [rec["command"]] and m["train_wall_clock_s"] > 0
    figures = {"imputation.png", "trajectories.png", "alpha.png", "alpha_time.png", "generation.gif",
               "generation_a.npy", *(f"impute_{k}_{i}.gif" for k in ("drop80", "gap12") for i in (0, 1))}
    assert {p.name for p in (res / "kvae_box").iterdir()} == figures
    page = (res / "kvae.md").read_text()
    assert "### 1. Bouncing ball `box` (§6.5.1, Fig. 6.3)" in page and "- VAE-RNN: auto-encoder" in page
    assert f"{m['imputation_error']['KVAE smoothing']['drop_0.5']:.4f}" in page

    # the saved baselines load as trained, and train_one keeps a trained one
    obs = torch.zeros(2, 5, 1, 32, 32, dtype=torch.uint8)
    again = kvae_baselines.train_one("aernn", obs, runs / "kvae_box_aernn", steps=1, seed=3)
    saved = load_file(str(runs / "kvae_box_aernn" / "model.safetensors"))
    assert again.label == "AE-RNN" and all(torch.equal(v, saved[k]) for k, v in again.state_dict().items())

    # more training resumes the run and appends its command and wall clock
    assert main(["experiment", "kvae-ball", "--phase", "train", *tiny[:4], "--epochs", "2", *tiny[6:]]) == 0
    assert len(json.loads((runs / "kvae_box" / "train_commands.json").read_text())) == 2


@pytest.mark.usefixtures("one_thread")
def test_force_variant_records_action_conditioning_and_skips_baselines(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    tiny = ["--variant", "force", "--train", "32", "--test", "6", "--epochs", "1", "--filters", "8,8,8",
            "--threads", "1", *_paths(tmp_path)]
    for phase in ("data", "train", "baselines", "eval"):
        assert main(["experiment", "kvae-ball", "--phase", phase, *tiny]) == 0
    assert "no baselines for variant 'force'" in capsys.readouterr().out
    m = json.loads((tmp_path / "results" / "kvae_force.json").read_text())["metrics"]
    assert set(m["action_conditioning"]) == {"true forces", "zero forces", "blank frames"}
    assert m["baselines"] == {} and m["model_config"]["action_dim"] == 2
    assert {"forces_0.gif", "forces_1.gif"} <= {p.name for p in (tmp_path / "results" / "kvae_force").iterdir()}
    assert "### 5. Action-conditioned bouncing ball" in (tmp_path / "results" / "kvae.md").read_text()


def test_bad_options_are_refused_with_the_expected_values(capsys: pytest.CaptureFixture) -> None:
    assert main(["experiment", "kvae-ball", "--variant", "square", "--phase", "report"]) == 2
    assert "expected --variant in ['box', 'force', 'gravity', 'polygon', 'pong'], received 'square'" in \
        capsys.readouterr().err
    assert main(["experiment", "kvae-ball", "--precision", "fp16", "--phase", "report"]) == 2
    assert main(["experiment", "kvae-ball", "--filters", "32,x", "--phase", "report"]) == 2
    assert "expected --filters as positive channels like 32,32,32, received '32,x'" in capsys.readouterr().err
    assert get("kvae-ball").defaults(name="box_n1000").run_name == "box_n1000"


def test_report_phase_regenerates_the_committed_page(tmp_path: Path) -> None:
    """Every section built from docs/results/kvae*.json is the committed page's, byte for byte; the speed
    section comes from docs/benchmarks.json, re-run by ``make bench`` since the page was last written."""
    res = tmp_path / "docs" / "results"
    res.mkdir(parents=True)
    for p in RESULTS.glob("kvae*.json"):
        shutil.copy(p, res / p.name)
    write_report(res, tmp_path / "docs" / "benchmarks.json")  # no benchmarks: no speed section
    committed = (RESULTS / "kvae.md").read_text().split("### Speed")[0]
    assert (res / "kvae.md").read_text().rstrip("\n") == committed.rstrip("\n")


def test_the_script_shim_takes_stage_for_phase(tmp_path: Path) -> None:
    res = tmp_path / "results"
    res.mkdir()
    shutil.copy(RESULTS / "kvae_pong.json", res / "kvae_pong.json")
    out = subprocess.run([sys.executable, "scripts/kvae_ball.py", "--stage", "report", "--results-dir", str(res)],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    assert f"wrote {res / 'kvae.md'}" in out.stdout
    assert "### 2c. `pong` (§6.5.3, Fig. 6.8g-h)" in (res / "kvae.md").read_text()


def test_code_rnn_initialises_as_the_script_did_and_imputes_only_missing_frames() -> None:
    torch.manual_seed(0)
    model = kvae_baselines.CodeRNN((1, 16, 16), variational=True)
    state = model.state_dict()
    # sums of the parameters the script's CodeRNN (scripts/kvae_baselines.py) drew under torch.manual_seed(0)
    golden = {"encoder.conv.0.weight": -4.403385692101438, "encoder.var.bias": -0.06161940563470125,
              "decoder.fc.weight": 6.918293762333633, "decoder.net.6.weight": 4.710148437439784,
              "lstm.weight_ih": 2.602717086672783, "head.bias": -0.046740323305130005}
    for k, v in golden.items():
        assert float(state[k].double().sum()) == pytest.approx(v, abs=1e-9), k
    assert len(state) == 26 and list(state)[:2] == ["encoder.conv.0.weight", "encoder.conv.0.bias"]
    x = torch.rand(2, 6, 1, 16, 16).round()
    mask = torch.tensor([[1, 1, 0, 0, 1, 0], [1, 0, 1, 1, 1, 1]], dtype=torch.bool)
    out = model.impute(x, torch.zeros(2, 6, 0), mask)
    assert torch.equal(out[mask], x[mask]) and not torch.equal(out[~mask], x[~mask])
    assert model.method(x, torch.zeros(2, 6, 0))(mask)["VAE-RNN"].shape == (4, 1, 16, 16)
    with pytest.raises(ValueError, match=r"expected image frames \(C, H, W\), received obs_shape \(8,\)"):
        kvae_baselines.CodeRNN((8,), variational=False)
    with pytest.raises(FileNotFoundError, match="expected info.json and model.safetensors in"):
        kvae_baselines.load(Path("no/such/run"))
