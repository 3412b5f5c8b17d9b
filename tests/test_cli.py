"""The ``worldmodels`` command in a subprocess: collect smoke test and error handling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from worldmodels.cli import build_parser
from worldmodels.data import RolloutDataset

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worldmodels.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_collect_smoke(tmp_path: Path) -> None:
    out = tmp_path / "d"
    r = _run("collect", "--env", "BouncingBallForce-v0", "--out", str(out), "--episodes", "3", "--steps", "5",
             "--num-envs", "2", "--policy", "momentum", "--policy-kwargs", '{"momentum": 0.5}',
             "--env-kwargs", '{"max_episode_steps": 4}', "--seed", "7")
    assert r.returncode == 0, r.stderr
    assert "episodes 3/3" in r.stdout and "BouncingBallForce-v0" in r.stdout and '"momentum": 0.5' in r.stdout
    data = RolloutDataset(out, verify="open")
    assert data.meta["env_kwargs"] == {"max_episode_steps": 4} and data.meta["seed"] == 7
    assert data.lengths.tolist() == [4, 4, 4] and np.abs(data[0].action).max() <= 1.0


def test_collect_argument_errors(capsys, tmp_path: Path) -> None:
    parser = build_parser()
    base = ["collect", "--env", "X", "--out", "o", "--episodes", "1", "--steps", "1"]
    for bad in (["--env-kwargs", "{nope"], ["--policy-kwargs", "[1, 2]"]):
        try:
            parser.parse_args([*base, *bad])
        except SystemExit as e:
            assert e.code == 2
        else:
            raise AssertionError(f"{bad} was accepted")
        assert "expected a JSON object" in capsys.readouterr().err
    from worldmodels.cli import main

    assert main(["collect", "--env", "ImageNav-v0", "--out", "o", "--episodes", "1", "--steps", "1",
                 "--policy", "poison"]) == 2
    assert "unknown explorer 'poison'" in capsys.readouterr().err
    # unknown id: exit code 2, a suggestion, nothing written
    e = tmp_path / "e"
    assert main(["collect", "--env", "BouncingBal-v0", "--out", str(e), "--episodes", "1",
                 "--steps", "2"]) == 2
    assert "Did you mean 'BouncingBall-v0'" in capsys.readouterr().err and not e.exists()
