"""``worldmodels experiment demo`` (``make demo``): every step on a tiny budget, in order, and the summary table it writes."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from worldmodels.cli import main
from worldmodels.experiments import demo

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_DATASETS = {"ImageNav-v0": (8, 16, "poisson", {"lam": 2.0}, 2), "BouncingBall-v0": (8, 8, "uniform", {}, 1)}


def _tiny(step: Callable[..., None], **budget: Any) -> Callable[[demo.Tour], None]:
    """``step`` with a tiny ``budget``, keeping its name and docstring (``run`` prints them)."""
    return functools.update_wrapper(functools.partial(step, **budget), step)


def test_every_step_on_a_tiny_budget(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gtmsm = dataclasses.replace(demo.gtmsm_args(tmp_path), train_episodes=8, test_episodes=2, test_tau=8,
                                test_horizon=8, curriculum="12:3,24:3", gate_from_len=24, batch_size=4,
                                checkpoint_every=2)
    steps = [_tiny(demo.step_collect, datasets=TINY_DATASETS), demo.step_gif, demo.step_contact_sheet,
             _tiny(demo.step_gtmsm_train, args=gtmsm), _tiny(demo.step_gtmsm_imagine, tau=8, horizon=8, shipped_tau=8),
             _tiny(demo.step_kvae_impute, steps=2, sequences=(16, 4)), _tiny(demo.step_plan_gtmsm, episodes=1, tau=16),
             _tiny(demo.step_plan, steps=2)]
    assert [s.__name__ for s in steps] == [s.__name__ for s in demo.STEPS]
    tour = demo.run(tmp_path, steps)
    out = capsys.readouterr().out
    assert "== step_gtmsm_train: GTM-SM (thesis Ch. 7): train the tiny ImageNav preset" in out
    assert f"outputs in {tmp_path}/" in out
    table = (tmp_path / "summary.md").read_text()
    assert table == "\n".join(["# make demo", "", *demo.summary_lines(tour), ""])
    assert [row[0] for row in tour.summary] == [
        "collect ImageNav-v0", "collect BouncingBall-v0", "train tiny GTM-SM (6 updates)", "imagine 8 steps (tiny GTM-SM)",
        "imagine 8 steps (shipped gtmsm-imagenav)", "KVAE imputation (tiny, 16x16 balls)",
        "plan: reach a remembered goal (shipped GTM-SM)", "plan: push the ball (true)"]
    assert tour.summary[0][1] == "8 episodes x 16 steps" and tour.summary[6][1].endswith("/1 goals reached")
    for _, _, files in tour.summary:  # every file the table names is there
        assert all(Path(f).exists() for f in files), files
    for name in ("ImageNav-v0_contact_sheet.png", "BouncingBall-v0_contact_sheet.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_imagine_needs_the_trained_model_and_the_cli_runs_the_tour(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="expected the tiny GTM-SM of step_gtmsm_train, received none"):
        demo.step_gtmsm_imagine(demo.Tour(tmp_path))
    ran: list[Path] = []
    monkeypatch.setattr(demo, "run", lambda out: ran.append(Path(out)))
    assert main(["experiment", "demo", "--out", str(tmp_path / "d")]) == 0
    assert main(["experiment", "demo", "--phase", "tour", "--out", "elsewhere"]) == 0
    assert main(["experiment", "demo"]) == 0
    assert ran == [tmp_path / "d", demo.ROOT / "elsewhere", demo.OUT]
