"""GTM-SM in MiniWorld (worldmodels.experiments.gtmsm_miniworld): the report against the committed page, the
phases end to end on a tiny budget, the run-arguments record and the argument checks."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

pytest.importorskip("miniworld")

from worldmodels.experiments import gtmsm_miniworld as gm  # noqa: E402
from worldmodels.experiments.record import save_run_args  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


def test_report_regenerates_the_committed_page(tmp_path: Path) -> None:
    results = ROOT / "docs" / "results"
    for p in [*results.glob("gtmsm_miniworld_*.json"), results / "gtmsm_miniworld_notes.md"]:
        shutil.copy(p, tmp_path / p.name)
    gm.EXPERIMENT.run(gm.Args(results=str(tmp_path)), "report")
    assert (tmp_path / "gtmsm_miniworld.md").read_text() == (results / "gtmsm_miniworld.md").read_text()


def _tiny(tmp_path: Path, **kw: object) -> gm.Args:
    tiny = {"train_episodes": 2, "test_episodes": 2, "steps": 2, "batch_size": 2, "checkpoint_every": 1,
            "keep_freed_memory": False, **kw}  # leave the test process's malloc as it is (tests/worldmodels/test_malloc.py)
    return gm.Args(out=str(tmp_path / "runs"), data=str(tmp_path / "data" / "mw"), results=str(tmp_path / "res"),
                   **tiny)  # type: ignore[arg-type]


def test_phases_end_to_end_on_a_tiny_budget(tmp_path: Path, one_thread: None) -> None:
    args = _tiny(tmp_path)
    gm.EXPERIMENT.run(args)  # collect, train GTM-SM and every baseline (rssm), eval, report
    for which in ("gtmsm", "rssm"):
        ta = json.loads((tmp_path / "runs" / "rotate" / which / "train_args.json").read_text())
        assert ta["model"] == which and ta["steps"] == 2 and (tmp_path / "runs" / "rotate" / which / "last").exists()
    doc = json.loads((tmp_path / "res" / "gtmsm_miniworld_rotate.json").read_text())
    assert doc["experiment"] == "gtmsm_miniworld_rotate" and doc["args"]["model"] == ""
    assert doc["command"].startswith("worldmodels experiment gtmsm-miniworld --phase eval --out ")
    assert doc["budget"] == {"test_episodes": 2, "gtmsm_updates": 2, "rssm_updates": 2, "thesis_updates": 100_000}
    m = doc["metrics"]
    assert (m["episodes"], m["tau"], m["horizon"]) == (2, 33, 45)
    assert list(m["summary"]) == ["gtmsm", "rssm", "no_memory", "oracle_lookup", "gtmsm_vae_reconstruction"]
    assert all(len(c) == 45 for c in m["curves"].values()) and len(m["state"]["M"]) == 3
    assert m["data"]["test"] == {"episodes": 2, "episodes_with_enough_frames": 2, "frames_needed": 78,
                                 "ended_at_goal": 0}
    assert m["gif_columns"] == ["truth", "gtmsm", "rssm", "no_memory", "oracle_lookup"]
    for f in ("error.png", "states.png", "predictions.gif"):
        assert (tmp_path / "res" / f"gtmsm_miniworld_rotate_{f}").stat().st_size > 0
    page = (tmp_path / "res" / "gtmsm_miniworld.md").read_text()
    assert "## Rotating agent (`WM-MiniWorld-Rotate-v0`)" in page and "| gtmsm | " in page
    # the windows carry the right-handed pose: the first frame of every test episode, in episode order
    batches = list(gm.eval_batches(args))
    assert sum(b.obs.shape[0] for b in batches) == 2 and batches[0].obs.shape[1] == 78
    assert torch.equal(gm.relative_pose(batches[0].state)[:, 0], torch.zeros(2, 3))


def test_one_model_is_trained_per_name_and_names_are_checked(tmp_path: Path, one_thread: None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    args = _tiny(tmp_path, model="rssm", train_episodes=1, test_episodes=1, steps=1, keep_freed_memory=True)
    kept: list[bool] = []
    monkeypatch.setattr(gm, "keep_freed_memory", lambda: kept.append(True) or True)  # the process-wide call
    gm.EXPERIMENT.run(args, "collect")
    gm.EXPERIMENT.run(args, "train")
    assert sorted(p.name for p in (tmp_path / "runs" / "rotate").iterdir()) == ["rssm"] and kept == [True]
    with pytest.raises(ValueError, match=r"--model: expected models among \['gtmsm', 'rssm', 'vrnn', 'srnn'\], "
                                         r"received \['kvae'\]"):
        gm.EXPERIMENT.run(replace(args, model="rssm,kvae"), "train")
    with pytest.raises(ValueError, match=r"--agent: expected one of \['rotate', 'walk', 'walk_fourrooms'\], "
                                         r"received 'fly'"):
        gm.EXPERIMENT.run(replace(args, agent="fly"), "report")


def test_save_run_args_records_the_fields_and_extras(tmp_path: Path) -> None:
    path = save_run_args(tmp_path / "new" / "run", gm.Args(steps=5), model="gtmsm", note="x")
    text = path.read_text()
    assert path == tmp_path / "new" / "run" / "train_args.json" and text.endswith("}\n")
    data = json.loads(text)
    assert data["steps"] == 5 and data["model"] == "gtmsm" and list(data)[-1] == "note"
    assert text == json.dumps({**vars(gm.Args(steps=5)), "model": "gtmsm", "note": "x"}, indent=1) + "\n"
    with pytest.raises(TypeError, match="save_run_args: expected a dataclass instance, received"):
        save_run_args(tmp_path, {"steps": 5})


def test_walking_agent_in_four_rooms_reports_the_latent_probe(tmp_path: Path, one_thread: None) -> None:
    args = _tiny(tmp_path, agent="walk_fourrooms", test_episodes=3, steps=1, train_len=20)
    gm.EXPERIMENT.run(args)
    m = json.loads((tmp_path / "res" / "gtmsm_miniworld_walk_fourrooms.json").read_text())["metrics"]
    assert (m["episodes"], m["tau"], m["horizon"]) == (3, 150, 150) and "mse_step50" in m["summary"]["gtmsm"]
    assert sorted(m["latent_probe"]) == ["gtmsm", "rssm"] and "position_r2_prediction" in m["state"]
    assert 0 <= m["data"]["train"]["forward_steps_blocked_by_wall"] <= 1
    assert m["training"]["gtmsm"]["window_frames"] == 20 and m["gif_every"] == 2
    page = (tmp_path / "res" / "gtmsm_miniworld.md").read_text()
    assert "## Walking agent in four rooms (issue #8, experiment 3)" in page and "| gtmsm | 67 |" in page


def test_the_registry_lists_the_experiment_with_its_summary() -> None:
    from worldmodels import experiments

    assert experiments.get(gm.NAME) is gm.EXPERIMENT and experiments.summary(gm.NAME) == gm.SUMMARY
