"""Planning experiment 3: continuous control by planning in a KVAE (MPC with CEM / MPPI).

(a) Push the action-conditioned bouncing ball (``BouncingBallForce-v0``) into a square target region
    (side 8 px, centre drawn per episode) and keep it there for the last 5 steps
    (:class:`agents.tasks.BallRegionTask`). The objective sees only the model's imagined frames (ball
    centroid); success and distance use the simulator's true position.
(b) Swing up ``PixelPendulum-v0`` (:class:`agents.tasks.SwingUpTask`; the KVAE row needs a pendulum
    checkpoint, ``--pendulum-checkpoint``).

Each model-based agent is compared with the same planner on the true dynamics (the env's own simulator,
:class:`agents.tasks.SimulatorModel`) and with uniformly random actions, on the same episodes. Beyond the
thesis: it uses the KVAE of chapter 6 (Fraccaro et al.'s model) as a planner's model.

Run (phases ``eval``, ``report``; ~15 min on 2 busy cores)::

    worldmodels experiment planning-control --checkpoint runs/kvae_force/last
    python scripts/plan_control.py --checkpoint runs/kvae_force/last          # the same

Phase ``eval`` writes ``docs/results/planning_control.json``, the success plot and GIFs in
``docs/results/planning/``; phase ``report`` regenerates ``docs/results/planning.md``
(:mod:`worldmodels.experiments.planning`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worldmodels.experiments import Experiment, planning
from worldmodels.experiments.record import command

__all__ = ["Args", "ball_region", "swing_up", "evaluate", "EXPERIMENT"]


@dataclass
class Args:
    checkpoint: str = "runs/kvae_force/last"  # the ball model (BouncingBallForce-v0, action_dim 2)
    pendulum_checkpoint: str = ""  # "": the pendulum runs the true-dynamics planner and random actions only
    episodes: int = 8  # ball episodes (env seeds seed .. seed + episodes - 1)
    max_steps: int = 20  # real steps per ball episode
    horizon: int = 8  # MPC plan length (ball)
    candidates: int = 150  # action sequences per planner iteration (elites: a tenth, at least 2)
    iterations: int = 2
    planners: str = "cem,mppi"  # comma-separated; the first also runs the random baseline
    pendulum_episodes: int = 3
    pendulum_steps: int = 60  # real steps per pendulum episode (CEM horizon 15)
    seed: int = 0
    threads: int = 1  # torch threads
    results: str = str(planning.RESULTS)  # folder of planning_control.json, planning.md and planning/


def ball_region(args: Args, model: Any, media: Path) -> dict[str, dict[str, Any]]:
    """Ball to region with each planner on the KVAE and on the true dynamics (and random actions for the
    first planner): ``{"CEM on KVAE": metrics, "CEM on true dynamics": ..., "random": ..., "MPPI on ...": ...}``
    (:func:`agents.tasks.run_episodes` metrics); GIFs of episode 0 in ``media/control_ball_<planner>/``."""
    from agents.tasks import plan_in_env

    rows: dict[str, dict[str, Any]] = {}
    for i, planner in enumerate(args.planners.split(",")):
        who = ("model", "true", "random") if i == 0 else ("model", "true")
        res = plan_in_env(
            model, "BouncingBallForce-v0", args.episodes, "ball-region", planner, args.horizon, args.candidates,
            args.iterations, max(args.candidates // 10, 2), args.max_steps, None, args.seed, who,
            gif_dir=media / f"control_ball_{planner}",
        )
        for w, m in res.items():
            name = "random" if w == "random" else f"{planner.upper()} on {'KVAE' if w == 'model' else 'true dynamics'}"
            rows[name] = m
    return rows


def swing_up(args: Args, model: Any | None, media: Path) -> dict[str, dict[str, Any]]:
    """Pendulum swing-up with CEM (horizon 15) on the true dynamics, on ``model`` when given, and random
    actions; GIFs of episode 0 in ``media/control_pendulum/``."""
    from agents.tasks import plan_in_env

    who = ("model", "true", "random") if model is not None else ("true", "random")
    res = plan_in_env(
        model, "PixelPendulum-v0", args.pendulum_episodes, "swing-up", "cem", 15, args.candidates,
        args.iterations, max(args.candidates // 10, 2), args.pendulum_steps, None, args.seed, who,
        gif_dir=media / "control_pendulum",
    )
    return {("random" if w == "random" else f"CEM on {'KVAE' if w == 'model' else 'true dynamics'}"): m
            for w, m in res.items()}


def _notes(args: Args) -> list[str]:
    from worldmodels.checkpoint import read_meta

    trained = planning.trainer_progress(args.checkpoint)
    notes = [
        f"Ball model: `{args.checkpoint}` ({read_meta(args.checkpoint)['model']}, trained "
        f"{trained.get('step', '?')} updates / epoch {trained.get('epoch', '?')} when this ran). "
        f"MPC: horizon {args.horizon}, {args.candidates} candidates, {args.iterations} iterations, "
        f"{args.episodes} episodes of {args.max_steps} steps; region side 8 px, success = ball centre inside "
        "for the last 5 steps."
    ]
    if args.pendulum_checkpoint:
        notes.append(f"Pendulum model: `{args.pendulum_checkpoint}` ({read_meta(args.pendulum_checkpoint)['model']}, "
                     "trained by scripts/kvae_pendulum.py on 15-frame sequences; the plan horizon of 15 stays "
                     "within that length).")
    else:
        notes.append("Pendulum: no trained pendulum checkpoint was available, so only the true-dynamics planner "
                     "and random actions ran (the KVAE row is missing, not zero).")
    notes.append(f"Pendulum: CEM horizon 15, {args.pendulum_episodes} episodes of {args.pendulum_steps} steps; "
                 "success = |θ| < 0.3 rad for the last 10 steps.")
    return notes


def evaluate(args: Args) -> None:
    """Phase ``eval``: run every agent on the ball and pendulum episodes; write ``planning_control.json``,
    ``planning/control_ball_success.png`` and the GIFs."""
    import torch

    import envs  # noqa: F401  (registers BouncingBallForce-v0, PixelPendulum-v0)
    from worldmodels.checkpoint import load
    from worldmodels.viz import bar_plot

    torch.set_num_threads(args.threads)
    t0 = time.time()
    media = planning.media_dir(args.results)
    model = load(args.checkpoint)
    notes = _notes(args)
    ball = ball_region(args, model, media)
    bar_plot(media / "control_ball_success.png", {k: v["success_rate"] for k, v in ball.items()},
             "success rate", "Ball to region (BouncingBallForce-v0)")
    pendulum = swing_up(args, load(args.pendulum_checkpoint) if args.pendulum_checkpoint else None, media)
    metrics = {"ball_region": ball, "pendulum_swing_up": pendulum}
    budget = {"ball_episodes": args.episodes, "ball_steps": args.max_steps,
              "pendulum_episodes": args.pendulum_episodes, "pendulum_steps": args.pendulum_steps}
    planning.write_record("control", command(EXPERIMENT.name, args), args.seed, time.time() - t0, budget,
                          metrics, notes, results=args.results)
    for sec, rows in metrics.items():
        for k, m in rows.items():
            print(f"{sec:>18} {k:>26}: success {m['success_rate']:.0%} return {m['mean_return']:.1f}")


EXPERIMENT = Experiment("planning-control", "MPC (CEM / MPPI) in a KVAE: ball into a region, pendulum swing-up "
                        "(planning experiment 3)", Args, {"eval": evaluate, "report": planning.report})
