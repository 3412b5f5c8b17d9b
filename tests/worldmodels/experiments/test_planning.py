"""The planning records and page (worldmodels.experiments.planning): planning.md is generated from the
committed records, media go to the longest matching experiment stem, the report phase and its CLI."""

from __future__ import annotations

import json
from pathlib import Path

from worldmodels import experiments
from worldmodels.cli import main
from worldmodels.experiments import planning
from worldmodels.experiments.record import command


def test_committed_page_is_generated_from_the_committed_records() -> None:
    page = (planning.RESULTS / "planning.md").read_text()
    assert "\n".join(planning.report_lines()) == page


def _rows() -> dict:
    return {"MPC": {"success_rate": 1.0, "mean_steps": 3.0, "episodes": [{"success": True}]},
            "random": {"success_rate": 0.25, "mean_steps": 20.0}}


def test_records_tables_media_and_notes(tmp_path: Path) -> None:
    path = planning.write_record("nav", "worldmodels experiment x", 5, 12.34, {"episodes": 4},
                                 {"agents": _rows(), "training": {"PPO": {"env_steps": 64, "tag": "a"}},
                                  "empty": {}, "scalar": 3}, ["first note"], results=tmp_path)
    rec = json.loads(path.read_text())
    assert path == tmp_path / "planning_nav.json" == planning.record_path("nav", tmp_path)
    assert {"experiment", "command", "git_commit", "seed", "machine", "wall_clock_s", "metrics", "notes",
            "budget"} <= set(rec)
    assert rec["experiment"] == "planning_nav" and rec["wall_clock_s"] == 12.3 and rec["notes"] == ["first note"]
    planning.write_record("nav_b", "cmd b", 0, 1.0, {}, {"agents": _rows()}, results=tmp_path)
    media = planning.media_dir(tmp_path)
    for name in ("nav_success.png", "nav_b_success.png", "sub/nav_run.gif", "nav_b_x.txt", "other.png"):
        (media / name).parent.mkdir(parents=True, exist_ok=True)
        (media / name).write_bytes(b"")
    out = planning.write_report(tmp_path)
    assert out == tmp_path / "planning.md"
    text = out.read_text()
    nav, nav_b = text.split("## planning_nav_b")
    assert "![nav_success](planning/nav_success.png)" in nav and "- GIF: [sub/nav_run.gif](planning/sub/nav_run.gif)" in nav
    assert "nav_b_success" not in nav and "![nav_b_success](planning/nav_b_success.png)" in nav_b
    assert "other" not in text and ".txt" not in text
    assert "| MPC | 100% | 3.0 |  |  |  |  |  |" in nav and "- first note" in nav
    assert "**training**\n\n| agent | env_steps |\n|---|---|\n| PPO | 64 |" in nav  # numeric columns only
    assert "**empty**" not in text and "**scalar**" not in text
    assert "Command: `worldmodels experiment x` · seed 5 · commit `" in nav and "wall clock 12 s · data: `planning_nav.json`" in nav


def test_report_phase_from_the_cli(tmp_path: Path, capsys) -> None:
    planning.write_record("demo", "cmd", 0, 1.0, {}, {"agents": _rows()}, results=tmp_path)
    assert main(["experiment", "planning-report", "--results", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "planning.md")
    assert main(["experiment", "planning-control", "--phase", "report", "--results", str(tmp_path)]) == 0
    assert "## planning_demo" in (tmp_path / "planning.md").read_text()


def test_documented_commands_parse_and_rerun_as_recorded() -> None:
    from worldmodels.cli import dataclass_parser

    for exp, script in (("planning-control", "plan_control"), ("planning-ppo", "plan_ppo")):
        rec = json.loads((planning.RESULTS / f"planning_{script.removeprefix('plan_')}.json").read_text())
        flags = rec["command"].split(f"scripts/{script}.py")[1].split()
        e = experiments.get(exp)
        args = e.args(**{k: v for k, v in vars(dataclass_parser(e.args, exp, "", list(e.phases))
                                               .parse_args(flags)).items() if k != "phase"})
        assert args.checkpoint == "runs/plan/kvae_force_20ep"
        assert command(exp, args).startswith(f"worldmodels experiment {exp} --checkpoint runs/plan/kvae_force_20ep")
