"""Planning benchmarks: latency of one MPC planning step (CEM, 1,000 candidates x horizon 20) per model.

Every registered world model is built from the registry with its ``"debug"`` preset (tiny layers:
the numbers measure the planning machinery and the per-step recurrence of each model, not trained
model sizes), for 32x32 single-channel frames and a 2-D continuous action (``BouncingBallForce-v0``).
A planning step is ``CEM.optimize`` with one iteration: one batched ``imagine`` of 1,000 x 20 steps
scored by an objective, plus the re-imagination of the best plan (a CEM with k iterations costs about
k times this). Two objectives per model: the ball-region task, which reads the predicted *frames*
(every model decodes 20,000 frames), and a goal in the model's own latent space
(:func:`agents.objectives.goal_latent`), which lets models with lazily decoded
``Imagination.obs`` (KVAE, RSSM, GTM-SM) skip the decoder; models that feed their own frames back
(RNN, VRNN, SRNN, DMM) decode either way. The baseline, measured in the same process, is the
same CEM on the env's own numpy simulator (:class:`agents.tasks.SimulatorModel`, true dynamics):
ratio = simulator time / model time (> 1: the model plans faster than the simulator can).
Best of 2 repeats after a warm-up, ``torch.set_num_threads(2)``.

Run: ``python scripts/bench.py --only planning``.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import torch

import envs  # noqa: F401
from agents.objectives import goal_latent
from agents.planners import CEM
from agents.tasks import BallRegionTask, SimulatorModel
from worldmodels.models import MODELS, build_model, get_model_class

N, H, ITERS, REPEATS = 1000, 20, 1, 2


def _best(fn, repeats: int = REPEATS) -> float:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def run() -> list[dict]:
    torch.set_num_threads(2)
    env = gym.make("BouncingBallForce-v0")
    obs, info = env.reset(seed=0)
    task = BallRegionTask()
    task.reset(env, obs, info, __import__("numpy").random.default_rng(0))
    objective = task.objective()
    space = env.action_space
    frames = torch.rand(1, 8, 1, 32, 32).round()
    actions = torch.zeros(1, 8, 2)

    def plan(model, belief, objective=objective):
        return lambda: CEM(space, H, num_candidates=N, iterations=ITERS, num_elites=100, seed=0).optimize(
            model, belief, objective
        )

    sim = SimulatorModel(env)
    base = _best(plan(sim, sim.observe(None, None)))  # type: ignore[arg-type]  # the simulator reads the env
    get_model_class("rnn")  # load the registry
    rows: list[dict[str, Any]] = []
    for name in sorted(MODELS):
        try:
            model: Any = build_model(name, "debug", obs_shape=(1, 32, 32), action_dim=2).eval()
            with torch.no_grad():
                belief = model.observe(frames, actions)
                goal = torch.zeros(model.imagine(belief, torch.zeros(1, 1, 2)).latent.shape[-1])
            times = {"ball region (frames)": _best(plan(model, belief)),
                     "latent goal": _best(plan(model, belief, goal_latent(goal)))}
        except Exception as e:  # a model that cannot plan on these shapes gets a row saying why
            rows.append({"group": "planning", "name": f"CEM step {name} (debug)", "value": None, "unit": "ms",
                         "notes": f"not measured: {type(e).__name__}: {e}"[:200]})
            continue
        for objective_name, t in times.items():
            rows.append({
                "group": "planning",
                "name": f"CEM step {name} (debug preset), {objective_name} objective",
                "value": 1e3 * t,
                "unit": "ms",
                "baseline": "same CEM on the numpy simulator (true dynamics)",
                "baseline_value": 1e3 * base,
                "ratio": base / t,
                "goal": "<= 1000 ms per planning step",
                "met": t <= 1.0,
                "notes": f"{ITERS} CEM iteration x {N} candidates x horizon {H} + best-plan re-imagination; "
                         "debug-size model from the registry (latency of the machinery, not of trained sizes)",
            })
    return rows


if __name__ == "__main__":
    for r in run():
        print(r)
