"""Experiment 3: continuous control by planning in a KVAE (MPC with CEM / MPPI).

(a) Push the action-conditioned bouncing ball (``BouncingBallForce-v0``) into a square target region
    (side 8 px, centre drawn per episode) and keep it there for the last 5 steps
    (:class:`agents.tasks.BallRegionTask`). The objective sees only the model's imagined frames (ball
    centroid); success and distance use the simulator's true position.
(b) Swing up ``PixelPendulum-v0`` (:class:`agents.tasks.SwingUpTask`; needs a pendulum checkpoint).

Each model-based agent is compared with the same planner on the true dynamics (the env's own simulator,
:class:`agents.tasks.SimulatorModel`) and with uniformly random actions, on the same episodes.

Run (one command; ~15 min on 2 busy cores)::

    python scripts/plan_control.py --checkpoint runs/kvae_force/last

Writes ``docs/results/planning_control.json``, plots and GIFs in ``docs/results/planning/`` and
regenerates ``docs/results/planning.md``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import plan_common as pc  # noqa: E402


@dataclass
class Args:
    checkpoint: str = "runs/kvae_force/last"
    pendulum_checkpoint: str = ""
    episodes: int = 8
    max_steps: int = 20
    horizon: int = 8
    candidates: int = 150
    iterations: int = 2
    planners: str = "cem,mppi"
    pendulum_episodes: int = 3
    pendulum_steps: int = 60
    seed: int = 0
    threads: int = 1


def parse() -> Args:
    return pc.parse_args(Args, __doc__.splitlines()[0])


def main() -> None:
    args = parse()
    import torch

    import envs  # noqa: F401
    from agents.tasks import plan_in_env
    from worldmodels.checkpoint import load, read_meta

    torch.set_num_threads(args.threads)
    t0 = time.time()
    metrics: dict[str, dict] = {}
    notes = []
    model = load(args.checkpoint)
    state = Path(args.checkpoint) / "state.json"
    trained = json.loads(state.read_text()).get("trainer", {}) if state.exists() else {}
    notes.append(
        f"Ball model: `{args.checkpoint}` ({read_meta(args.checkpoint)['model']}, trained "
        f"{trained.get('step', '?')} updates / epoch {trained.get('epoch', '?')} when this ran). "
        f"MPC: horizon {args.horizon}, {args.candidates} candidates, {args.iterations} iterations, "
        f"{args.episodes} episodes of {args.max_steps} steps; region side 8 px, success = ball centre inside "
        "for the last 5 steps."
    )
    ball: dict[str, dict] = {}
    for i, planner in enumerate(args.planners.split(",")):
        who = ("model", "true", "random") if i == 0 else ("model", "true")
        res = plan_in_env(
            model, "BouncingBallForce-v0", args.episodes, "ball-region", planner, args.horizon, args.candidates,
            args.iterations, max(args.candidates // 10, 2), args.max_steps, None, args.seed, who,
            gif_dir=pc.MEDIA / f"control_ball_{planner}",
        )
        for w, m in res.items():
            name = "random" if w == "random" else f"{planner.upper()} on {'KVAE' if w == 'model' else 'true dynamics'}"
            ball[name] = m
    metrics["ball_region"] = ball
    pc.bar_plot(pc.MEDIA / "control_ball_success.png", {k: v["success_rate"] for k, v in ball.items()},
                "success rate", "Ball to region (BouncingBallForce-v0)")
    # pendulum: true dynamics and random always; the model only with a checkpoint
    pend_who = ("model", "true", "random") if args.pendulum_checkpoint else ("true", "random")
    pmodel = load(args.pendulum_checkpoint) if args.pendulum_checkpoint else None
    res = plan_in_env(
        pmodel, "PixelPendulum-v0", args.pendulum_episodes, "swing-up", "cem", 15, args.candidates,
        args.iterations, max(args.candidates // 10, 2), args.pendulum_steps, None, args.seed, pend_who,
        gif_dir=pc.MEDIA / "control_pendulum",
    )
    metrics["pendulum_swing_up"] = {
        ("random" if w == "random" else f"CEM on {'KVAE' if w == 'model' else 'true dynamics'}"): m
        for w, m in res.items()
    }
    if args.pendulum_checkpoint:
        notes.append(f"Pendulum model: `{args.pendulum_checkpoint}` ({read_meta(args.pendulum_checkpoint)['model']}, "
                     "trained by scripts/kvae_pendulum.py on 15-frame sequences; the plan horizon of 15 stays "
                     "within that length).")
    else:
        notes.append("Pendulum: no trained pendulum checkpoint was available, so only the true-dynamics planner "
                     "and random actions ran (the KVAE row is missing, not zero).")
    notes.append(f"Pendulum: CEM horizon 15, {args.pendulum_episodes} episodes of {args.pendulum_steps} steps; "
                 "success = |θ| < 0.3 rad for the last 10 steps.")
    cmd = "python scripts/plan_control.py " + " ".join(sys.argv[1:])
    pc.write_json("control", cmd, args.seed, time.time() - t0, metrics, notes)
    print(pc.write_report())
    for sec, rows in metrics.items():
        for k, m in rows.items():
            print(f"{sec:>18} {k:>26}: success {m['success_rate']:.0%} return {m['mean_return']:.1f}")


if __name__ == "__main__":
    main()
