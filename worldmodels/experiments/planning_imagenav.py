"""Planning experiment 1: ImageNav goal reaching with memory (GTM-SM, thesis Ch. 7) against memory-less models.

Protocol per episode (``ImageNav-v0``: 9x9 grid of 8x8 crops over a 32x32 texture, walls at the border,
env seeds never used in training):

1. Exploration: ``τ = 256`` steps of the Poisson-repeat random explorer (λ = 2, as in the training data);
   every agent's world model observes these frames and actions.
2. Goal: the crop at a random previously visited cell (not the current one) is shown. Optimal steps =
   breadth-first shortest path on the true grid; the agent has ``2 x optimal`` steps.
3. Agents: **GTM-SM** localises the goal in its spatial memory (``GTMSM.localize``: reverse DND lookup,
   goal crop -> state ``s``) and plans in ``s`` (categorical CEM, objective ``goal_state``); **RSSM** /
   **SRNN** plan towards the goal crop in pixel space (``goal_image`` on their imagined frames: they have
   no memory to localise with); the **random explorer** continues exploring; the **true-dynamics shortest
   path** is the optimum (BFS). All agents see the same episodes, explorations and goals.

Metrics: success = standing on the goal cell within ``2 x optimal`` steps; extra steps = steps taken minus
optimal (successful episodes).

Run: ``worldmodels experiment planning-imagenav`` (= ``python scripts/plan_imagenav.py``; checkpoints from
``worldmodels experiment gtmsm-imagenav``: ``runs/gtmsm_imagenav/{gtmsm,rssm,srnn}/last``; a missing
checkpoint is skipped and reported). Phases: ``eval`` (every agent on the episodes:
``<results>/planning_<name>.json``, the success bar plot and one GIF per agent under ``<results>/planning/``),
``report`` (``<results>/planning.md`` from every ``planning_*.json``).

Example:
    >>> import numpy as np
    >>> shortest_path(np.zeros((3, 3), bool), (0, 0), (2, 2))
    4
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worldmodels.experiments import Experiment, planning, record
from worldmodels.viz import bar_plot

__all__ = ["Args", "EXPERIMENT", "shortest_path", "explore", "run_agent", "FlatFrames", "summarise", "run",
           "load_models", "eval"]


@dataclass
class Args:
    """Arguments; the defaults are the experiment's preset."""

    # label=kind:checkpoint, kind "gtmsm" (localize + plan in s) or "pixels" (plan towards the goal crop)
    models: str = ("GTM-SM=gtmsm:runs/gtmsm_imagenav/gtmsm/last,RSSM=pixels:runs/gtmsm_imagenav/rssm/last,"
                   "SRNN=pixels:runs/gtmsm_imagenav/srnn/last,VRNN=pixels:runs/gtmsm_imagenav/vrnn/last")
    episodes: int = 20
    tau: int = 256
    horizon: int = 16
    candidates: int = 300
    iterations: int = 3
    env_kwargs: str = "{}"
    seed: int = 50_000  # env seeds seed .. seed + episodes - 1 (training data uses small seeds)
    threads: int = 1
    name: str = "imagenav"
    note: str = ""  # appended to the notes of the results (e.g. how the checkpoints were trained)
    results: str = "docs/results"  # planning_<name>.json, planning.md; GIFs and plots in <results>/planning


def shortest_path(blocked: Any, start: tuple[int, int], goal: tuple[int, int]) -> int:
    """Breadth-first shortest path length on the grid (4 moves, ``blocked [P, P]`` cells impassable)."""
    from envs.image_nav import MOVES

    P = blocked.shape[0]
    dist = {start: 0}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            return dist[cell]
        for dr, dc in MOVES[:4]:
            nxt = (cell[0] + int(dr), cell[1] + int(dc))
            if 0 <= nxt[0] < P and 0 <= nxt[1] < P and not blocked[nxt] and nxt not in dist:
                dist[nxt] = dist[cell] + 1
                queue.append(nxt)
    raise ValueError(f"goal {goal} is not reachable from {start}")


def _cell(pose: Any) -> tuple[int, int]:
    """The grid cell ``(row, col)`` of an ``info["pose"]``."""
    row, col = (int(v) for v in pose)
    return row, col


def explore(env: Any, seed: int, tau: int) -> dict[str, Any]:
    """Reset with ``seed`` and run the Poisson explorer for ``tau`` steps (:func:`agents.explorers.explore`);
    draw the goal among the visited cells (:func:`agents.tasks.remembered_goal`)."""
    import numpy as np

    from agents.explorers import PoissonRepeat
    from agents.explorers import explore as explore_env
    from agents.tasks import remembered_goal

    obs, info = env.reset(seed=seed)
    explorer = PoissonRepeat(env.action_space, lam=2.0)
    explorer.reset(seed)
    ex = explore_env(env, explorer, tau, obs, info)
    poses = [_cell(i["pose"]) for i in ex.infos]
    here = poses[-1]
    goal = remembered_goal(poses, np.random.default_rng([seed, 1]))
    core = env.unwrapped.core
    goal_obs = core.crops(np.array([goal]))[0]
    optimal = shortest_path(core.blocked[0], here, goal)
    return {"frames": ex.frames, "actions": ex.actions, "poses": poses, "goal": goal, "goal_obs": goal_obs,
            "optimal": optimal, "explorer": explorer, "obs": ex.obs}


def _rgb(frames: Any) -> Any:
    """An env frame (uint8 ``[H, W, C]``) or model frames (float ``[..., C, H, W]``) as uint8 RGB ``[..., H, W, 3]``."""
    import numpy as np

    from worldmodels.api import frames_to_tensor
    from worldmodels.viz import to_uint8

    return to_uint8(frames_to_tensor(frames) if isinstance(frames, np.ndarray) else frames)


def run_agent(env: Any, seed: int, tau: int, kind: str, model: Any, args: Args,
              gif: Path | None = None) -> dict[str, Any]:
    """One episode of agent ``kind`` (``random``, ``gtmsm``, ``pixels``) after the shared exploration."""
    from agents.mpc import MPCAgent
    from agents.objectives import goal_image, localized_goal
    from agents.planners import CategoricalCEM
    from agents.tasks import plan_gif
    from worldmodels.api import frames_to_tensor

    ep = explore(env, seed, tau)
    budget = 2 * ep["optimal"]
    obs = ep["obs"]
    agent: Any = None
    if kind != "random":
        planner = CategoricalCEM(env.action_space, args.horizon, num_candidates=args.candidates,
                                 num_elites=max(args.candidates // 10, 2), iterations=args.iterations, seed=seed)
        goal_x = frames_to_tensor(ep["goal_obs"])  # [C, h, w]
        agent = MPCAgent(model, planner, goal_image(goal_x), env.action_space)
        agent.memorise(ep["frames"], ep["actions"])
        if kind == "gtmsm":  # where was the goal seen? reverse lookup in the spatial memory
            agent.objective = localized_goal(model, agent.belief, goal_x)
    real, plans = [], []
    steps, success = 0, False
    pose = ep["poses"][-1]
    while steps < budget:
        if agent is None:
            a = ep["explorer"].act(obs)
        else:
            a = agent.act(obs)  # the first frame was memorised with the exploration (observed once)
        if gif is not None:
            real.append(_rgb(obs))
            im = None if agent is None else agent.imagination
            plans.append(None if im is None else _rgb(im.obs[0]))
        obs, _, _, _, info = env.step(a)
        steps += 1
        pose = _cell(info["pose"])
        if pose == ep["goal"]:
            success = True
            break
    if gif is not None:
        real.append(_rgb(obs))
        plans.append(None)
        plan_gif(gif, real, plans, title=f"goal cell {ep['goal']}, optimal {ep['optimal']} steps")
    return {"success": success, "steps": steps, "optimal": ep["optimal"], "extra": steps - ep["optimal"],
            "final_distance": abs(pose[0] - ep["goal"][0]) + abs(pose[1] - ep["goal"][1])}


class FlatFrames:
    """Adapter for models trained on flattened crops (``obs_shape = (C*H*W,)``, as the VRNN/SRNN baselines of
    ``worldmodels experiment gtmsm-imagenav``): image frames in, image frames out."""

    def __init__(self, model: Any, image_shape: tuple[int, ...]) -> None:
        self.model, self.image_shape = model, tuple(image_shape)

    def observe(self, obs: Any, action: Any, mask: Any = None) -> Any:
        return self.model.observe(obs.flatten(2), action, mask)

    def imagine(self, belief: Any, actions: Any) -> Any:
        from worldmodels.api import Imagination

        im = self.model.imagine(belief, actions)
        return Imagination(obs=lambda: im.obs.reshape(*im.obs.shape[:2], *self.image_shape), latent=im.latent,
                           uncertainty=im.uncertainty, samples=im.samples, extras=im.extras, belief=im.belief)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Success rate, mean extra steps (successes), steps, optimal steps and final distance of episode ``rows``."""
    import numpy as np

    ok = [r for r in rows if r["success"]]
    return {
        "success_rate": float(np.mean([r["success"] for r in rows])),
        "mean_extra_steps": float(np.mean([r["extra"] for r in ok])) if ok else None,
        "mean_steps": float(np.mean([r["steps"] for r in rows])),
        "mean_optimal_steps": float(np.mean([r["optimal"] for r in rows])),
        "mean_final_distance": float(np.mean([r["final_distance"] for r in rows])),
        "episodes": rows,
    }


def run(args: Args, models: dict[str, tuple[str, Any]], progress: bool = True) -> dict[str, dict[str, Any]]:
    """All agents on ``args.episodes`` shared episodes; ``models``: label -> (kind, model). The first episode of
    each agent is drawn to ``<results>/planning/<name>_<agent>.gif``."""
    import gymnasium as gym
    from tqdm.auto import tqdm

    import envs  # noqa: F401  (registers ImageNav-v0)

    env = gym.make("ImageNav-v0", **json.loads(args.env_kwargs))
    seeds = range(args.seed, args.seed + args.episodes)
    media = Path(args.results) / "planning"
    results: dict[str, dict[str, Any]] = {}
    agents = [("random explorer", "random", None)] + [(k, kind, m) for k, (kind, m) in models.items()]
    for label, kind, model in agents:
        rows = []
        for i, s in enumerate(tqdm(seeds, desc=label, disable=not progress, unit="ep")):
            slug = "".join(ch if ch.isalnum() else "_" for ch in label.lower()).strip("_").replace("__", "_")
            gif = media / f"{args.name}_{slug}.gif" if i == 0 else None
            rows.append(run_agent(env, s, args.tau, kind, model, args, gif))
        results[label] = summarise(rows)
    opt = [explore(env, s, args.tau)["optimal"] for s in seeds]
    results["true-dynamics shortest path"] = summarise(
        [{"success": True, "steps": o, "optimal": o, "extra": 0, "final_distance": 0} for o in opt])
    return results


def load_models(args: Args) -> tuple[dict[str, tuple[str, Any]], list[str]]:
    """The checkpoints of ``--models`` (``label -> (kind, model)``) and one note per entry (a missing
    checkpoint is noted, not evaluated)."""
    models: dict[str, tuple[str, Any]] = {}
    notes = []
    for spec in filter(None, args.models.split(",")):
        label, sep, rest = spec.partition("=")
        kind, sep2, path = rest.partition(":")
        if not sep or not sep2:
            raise ValueError(f"--models: expected label=kind:checkpoint,..., received {spec!r}")
        if kind not in ("gtmsm", "pixels"):
            raise ValueError(f"--models: expected kind gtmsm or pixels for {label!r}, received {kind!r}")
        if (Path(path) / "config.json").exists():
            from worldmodels.checkpoint import load

            model: Any = load(path)
            if len(model.config.obs_shape) == 1:  # trained on flattened 8x8x3 crops
                model = FlatFrames(model, (3, 8, 8))
            models[label] = (kind, model)
            st = Path(path) / "state.json"
            step = json.loads(st.read_text()).get("trainer", {}).get("step", "?") if st.exists() else "?"
            how = "localize + plan in s" if kind == "gtmsm" else "plan towards the goal crop in pixel space"
            notes.append(f"{label}: `{path}` ({step} updates when this ran; {how}).")
        else:
            notes.append(f"{label}: no checkpoint at `{path}` when this ran — not evaluated (missing, not zero).")
    return models, notes


def eval(args: Args) -> None:
    """Phase ``eval``: every agent on the shared episodes; ``<results>/planning_<name>.json`` (a planning
    record: ``metrics.goal_reaching`` and ``notes``) and ``<results>/planning/<name>_success.png``."""
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.time()
    models, notes = load_models(args)
    res = run(args, models)
    notes.append(f"{args.episodes} episodes (env seeds {args.seed}..{args.seed + args.episodes - 1}), τ = {args.tau} "
                 f"exploration steps, budget 2 x optimal; categorical CEM horizon {args.horizon}, "
                 f"{args.candidates} candidates, {args.iterations} iterations.")
    if args.note:
        notes.append(args.note)
    bar_plot(planning.media_dir(args.results) / f"{args.name}_success.png",
             {k: v["success_rate"] for k, v in res.items()},
             "success rate (within 2x optimal)", "ImageNav: return to a remembered cell after τ steps")
    planning.write_record(args.name, record.command(EXPERIMENT.name, args, phase="eval"), args.seed,
                          time.time() - t0, {"episodes": args.episodes, "exploration_steps": args.tau},
                          {"goal_reaching": res}, notes=notes, results=args.results)
    for k, m in res.items():
        print(f"{k:>28}: success {m['success_rate']:.0%}  extra steps {m['mean_extra_steps']}")


EXPERIMENT = Experiment("planning-imagenav", "ImageNav goal reaching with memory: GTM-SM localize + plan vs memory-less models (Ch. 7)",
                        Args, {"eval": eval, "report": planning.report})
