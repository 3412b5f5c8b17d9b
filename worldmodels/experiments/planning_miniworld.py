"""Planning experiment 2: return to a remembered view in MiniWorld 3-D (GTM-SM, thesis Ch. 7) after τ steps of
exploration.

Protocol per episode (env seeds never used in training: ``--seed`` .. ``--seed + episodes - 1``; the training
data of :mod:`worldmodels.experiments.gtmsm_miniworld` uses hashed ``SeedSequence([0, i])`` seeds and its test
set seed 10000):

1. Exploration: ``τ`` steps of the walking agent's exploration policy (``MINIWORLD_AGENTS["walk"]`` of
   :mod:`agents.explorers`: ``WM-MiniWorld-OneRoom-v0``, a 10 m room, actions {turn left 15°, turn right 15°,
   forward 0.15 m}, correlated random walk ``p_keep = 0.8``; ``τ = 150``). Every agent's world model observes
   these frames and actions.
2. Goal: the real frame seen at a random previously visited pose (not one that already satisfies the
   success criterion) is shown. Success = the TRUE position within ``--radius`` metres of the goal's position
   AND the true heading within ``--heading-tol`` degrees of the goal's heading (the same view), at any step
   within a budget of ``2 x optimal`` steps; the episode stops at the first success. ``optimal`` = the
   shortest turn-walk-turn-walk(-turn) action sequence that meets the criterion (exhaustive over two straight
   segments, the room's walls respected, the box ignored: a slight under-estimate of the optimum, so the budget
   is if anything tight). "reached position" counts episodes whose position came within the radius at some
   step of the budget, whatever the heading.
3. Agents (same episodes, same explorations, same goals):
   **GTM-SM** localises the goal frame in its spatial memory (``GTMSM.localize``: reverse DND lookup, frame ->
   state ``s = (x, y, θ)`` in the model's own frame) and plans in ``s`` with categorical CEM + MPC
   re-planning every step (objective :func:`pose_objective` on ``Imagination.extras["s"]``);
   **RSSM** (when a walking-agent checkpoint exists) plans towards the goal frame in pixel space;
   **true dynamics** = the same planner and objective on the env's true pose and the known action effects
   (:class:`TruePoseModel`: MiniWorld's turn/forward steps, walls and box collisions: an upper bound);
   **random explorer** = the exploration policy continued.

``--parts rotate`` is the reduced version for the rotating agent (``WM-MiniWorld-Rotate-v0``, turns of
360/41° in place, τ = 33 as in its training): "turn back to a remembered view"; success = the heading within
half a turn step of the goal's (exactly the remembered view: headings lie on a 360/41° lattice), optimal =
the fewer turns either way; position is not part of the objective (the agent cannot move).

Run (``--snapshot 1`` first copies ``runs/gtmsm_miniworld/<agent>/<model>/last`` to
``runs/plan/miniworld_<agent>_<model>``)::

    worldmodels experiment planning-miniworld --snapshot 1                 # phases eval, then report
    worldmodels experiment planning-miniworld --phase report               # planning.md from the JSON

(``python scripts/plan_miniworld.py ...`` takes the same options.) Phase ``eval`` writes
``<results>/planning_miniworld.json``, GIFs and plots under ``<results>/planning/miniworld_*``; phase
``report`` regenerates ``<results>/planning.md`` from every ``planning_*.json``.

Example:
    >>> EXPERIMENT.name, list(EXPERIMENT.phases)
    ('planning-miniworld', ['eval', 'report'])
    >>> optimal_steps(np.zeros(3), np.array([0.45, 0.0, 0.0]), np.deg2rad(15), 0.15, 0.01, 0.01,
    ...               np.array([-9.0, -9.0]), np.array([9.0, 9.0]))  # three steps forward
    3
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs  # noqa: F401  (registers the WM-MiniWorld ids)
from agents.explorers import MINIWORLD_AGENTS
from agents.mpc import MPCAgent
from agents.objectives import goal_image, reduce_distance
from agents.planners import CategoricalCEM, Objective
from envs.miniworld_nav import right_handed, wrap_angle
from worldmodels.api import Belief, Imagination, frames_to_tensor
from worldmodels.experiments import Experiment, planning, record
from worldmodels.experiments.gtmsm_miniworld import relative_pose
from worldmodels.files import atomic_save, temp_path
from worldmodels.viz import bar_plot, to_uint8

__all__ = ["Args", "EXPERIMENT", "Part", "TruePoseModel", "optimal_steps", "pose_objective", "localization_error"]

NAME = "planning-miniworld"
SUMMARY = "MiniWorld 3-D: return to a remembered view with MPC in GTM-SM's state space (Ch. 7)"


@dataclass
class Args:
    """Arguments (one dataclass, read top to bottom); the defaults are the preset."""

    parts: str = "walk,rotate"  # walk (experiment 2) and/or rotate (reduced: turn back to a remembered view)
    merge: int = 1  # 1: keep the parts of an existing planning_miniworld.json that this run does not redo
    snapshot: int = 0  # 1: copy <source>/<agent>/<model>/last to <checkpoints>_<agent>_<model> first
    source: str = "runs/gtmsm_miniworld"
    models: str = "gtmsm,rssm"  # which world models to evaluate (each when its checkpoint exists)
    checkpoints: str = "runs/plan/miniworld"  # <checkpoints>_<agent>_<model>, e.g. runs/plan/miniworld_walk_gtmsm
    results: str = "docs/results"  # planning_miniworld.json, planning.md and the media folder planning/
    episodes: int = 10
    episodes_rotate: int = 10
    tau: int = 150  # walk: exploration steps
    tau_rotate: int = 33  # rotate: the rotating model's training memory length
    radius: float = 1.0  # metres
    heading_tol: float = 30.0  # degrees (walk)
    heading_weight: float = 0.3  # m² per unit of 2 (1 - cos Δθ) in the pose objective (1.0: stalls near walls)
    horizon: int = 16
    candidates: int = 200
    iterations: int = 3
    horizon_rotate: int = 12
    candidates_rotate: int = 64
    seed: int = 50_000
    threads: int = 1
    gifs: int = 1  # episodes per agent with a GIF
    note: str = ""


def _parts(args: Args) -> list[str]:
    names = [n for n in args.parts.split(",") if n]
    bad = [n for n in names if n not in ("walk", "rotate")]
    if bad:
        raise ValueError(f"--parts: expected walk and/or rotate, received {bad[0]!r}")
    return names


# ----------------------------------------------------------------------------- objective and true model


def pose_objective(goal: torch.Tensor, heading_weight: float = 1.0, position: bool = True,
                   radius: float | None = None, key: str = "s") -> Objective:
    """Distance of the imagined state ``extras[key] [N, H, 3] = (x, y, θ)`` to ``goal [3]``, summed over the
    horizon: ``|Δxy|² + heading_weight * g * 2 (1 - cos Δθ)`` (wrap-free; ``≈ Δθ²`` near the goal).

    ``g = exp(-|Δxy|² / radius²)`` when ``radius`` is given (else 1): the heading counts only near the goal
    position, so matching it far away is no local optimum that stops the walk (seen with ``g = 1``)."""

    def objective(im: Imagination) -> torch.Tensor:
        s = im.extras[key]  # [N, H, 3]
        g = goal.to(s)
        d = heading_weight * 2 * (1 - torch.cos(s[..., 2] - g[2]))  # [N, H]
        if position:
            d2 = (s[..., :2] - g[:2]).pow(2).sum(-1)  # [N, H]
            if radius is not None:
                d = d * torch.exp(-d2 / radius**2)
            d = d + d2
        return reduce_distance(d, "sum")

    return objective


class TruePoseModel:
    """The env's true pose and MiniWorld's known action effects behind ``observe`` / ``imagine``.

    State = the right-handed pose ``(x, −z, θ)`` of :func:`envs.miniworld_nav.right_handed`. Actions: 0 turn
    left (``θ += turn``), 1 turn right, 2 forward (``xy += fwd (cos θ, sin θ)``, rejected — the agent stays —
    when the agent's circle would cross a wall of the rectangular room or touch an entity, as
    ``MiniWorldEnv.move_agent`` does). ``extras["s"]`` is the imagined pose; no frames are rendered (``obs`` is
    empty).
    """

    def __init__(self, env: Any) -> None:
        inner = env.unwrapped.inner
        self.env = env
        self.turn = np.deg2rad(float(inner.params.sample(None, "turn_step")))
        self.fwd = float(inner.params.sample(None, "forward_step"))
        if float(inner.params.sample(None, "forward_drift")) != 0.0 or inner.domain_rand:
            raise ValueError("TruePoseModel: expected no forward drift and no domain randomisation")
        if len(inner.rooms) != 1:
            raise ValueError(f"TruePoseModel: expected one rectangular room, received {len(inner.rooms)} rooms")
        r = inner.rooms[0]
        rad = float(inner.agent.radius)
        # right-handed y = -z: the room spans y in [-max_z, -min_z]
        self.low = torch.tensor([r.min_x + rad, -r.max_z + rad], dtype=torch.float64)
        self.high = torch.tensor([r.max_x - rad, -r.min_z - rad], dtype=torch.float64)
        ents = [e for e in inner.entities if e is not inner.agent]
        self.ent_xy = torch.tensor([[e.pos[0], -e.pos[2]] for e in ents], dtype=torch.float64).reshape(-1, 2)
        self.ent_r = torch.tensor([rad + e.radius for e in ents], dtype=torch.float64)

    def pose(self) -> torch.Tensor:
        """The env's current right-handed pose ``[3]`` (float64)."""
        return torch.as_tensor(right_handed(self.env.unwrapped.pose()))

    def observe(self, obs: torch.Tensor, action: torch.Tensor, mask: torch.Tensor | None = None) -> Belief:
        p = self.pose()[None]  # [1, 3]
        return Belief(features=p.float(), state={"s": p})

    def step(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """One step of poses ``s [N, 3]`` (float64) under action indices ``a [N]``."""
        th = s[:, 2] + self.turn * ((a == 0).double() - (a == 1).double())
        fwd = self.fwd * (a == 2).double()
        xy = s[:, :2] + fwd[:, None] * torch.stack([torch.cos(s[:, 2]), torch.sin(s[:, 2])], -1)
        ok = ((xy > self.low) & (xy < self.high)).all(-1)
        if len(self.ent_r):
            ok &= (torch.cdist(xy, self.ent_xy) >= self.ent_r).all(-1)
        xy = torch.where(ok[:, None], xy, s[:, :2])
        return torch.cat([xy, th[:, None]], -1)

    def imagine(self, belief: Belief, actions: torch.Tensor) -> Imagination:
        N, H, _ = actions.shape
        s = belief.state["s"].expand(N, 3)  # type: ignore[union-attr,index,attr-defined]
        idx = actions.argmax(-1)  # [N, H]
        path = []
        for t in range(H):
            s = self.step(s, idx[:, t])
            path.append(s)
        ss = torch.stack(path, 1).float()  # [N, H, 3]
        return Imagination(obs=torch.zeros(N, H, 0), latent=ss, uncertainty=torch.zeros(N, H), extras={"s": ss})


# ----------------------------------------------------------------------------- optimal steps


def optimal_steps(p0: np.ndarray, goal: np.ndarray, turn: float, fwd: float, radius: float, tol: float,
                  low: np.ndarray, high: np.ndarray, max_fwd: int = 80) -> int:
    """Fewest actions from pose ``p0`` to within ``radius`` of ``goal[:2]`` and ``tol`` rad of ``goal[2]``.

    Exhaustive over turn ``k1`` - forward ``n1`` - turn ``k2`` - forward ``n2`` - turn ``k3`` sequences
    (``|k| <= π / turn``); forward steps must keep the position inside ``[low, high]`` (a convex room: the
    endpoints suffice); obstacles inside the room are ignored. Returns ``-1`` if none is found.
    """
    K = int(np.ceil(np.pi / turn))
    ks = np.arange(-K, K + 1)
    ns = np.arange(0, max_fwd + 1)
    best = 10**9
    th1 = p0[2] + ks * turn  # [K1]
    u1 = np.stack([np.cos(th1), np.sin(th1)], -1)  # [K1, 2]
    xy1 = p0[:2] + fwd * ns[None, :, None] * u1[:, None, :]  # [K1, N1, 2]
    in1 = ((xy1 > low) & (xy1 < high)).all(-1)
    for k2 in ks:
        th2 = th1 + k2 * turn  # [K1]
        u2 = np.stack([np.cos(th2), np.sin(th2)], -1)
        xy2 = xy1[:, :, None, :] + fwd * ns[None, None, :, None] * u2[:, None, None, :]  # [K1, N1, N2, 2]
        ok = in1[:, :, None] & ((xy2 > low) & (xy2 < high)).all(-1)
        ok &= np.linalg.norm(xy2 - goal[:2], axis=-1) < radius
        # final turns to bring the heading within tol
        dth = wrap_angle(goal[2] - th2)  # [K1]
        k3 = np.array([min((abs(k) for k in ks if abs(wrap_angle(d - k * turn)) < tol), default=10**6) for d in dth])
        cost = (np.abs(ks)[:, None, None] + ns[None, :, None] + abs(k2) + ns[None, None, :]
                + k3[:, None, None])  # [K1, N1, N2]
        if ok.any():
            best = min(best, int(cost[ok].min()))
    return best if best < 10**6 else -1


# ----------------------------------------------------------------------------- episodes


@dataclass
class Part:
    """One part of the experiment: the agent (``walk`` | ``rotate``), its exploration and success criterion,
    and the planner's budget."""

    name: str  # walk | rotate
    tau: int
    radius: float  # metres (inf: position ignored)
    tol: float  # radians
    horizon: int
    candidates: int
    episodes: int


def make_env(part: str) -> Any:
    import gymnasium as gym

    ag = MINIWORLD_AGENTS[part]
    return gym.make(ag.env_id, **dict(ag.env_kwargs))


def explore(env: Any, part: Part, seed: int) -> dict[str, Any]:
    """Reset with ``seed``, run the agent's exploration policy for ``τ`` steps, draw the goal."""
    ag = MINIWORLD_AGENTS[part.name]
    obs, info = env.reset(seed=seed)
    explorer = ag.policy()(env.action_space)
    explorer.reset(int(np.random.SeedSequence([seed, 2]).generate_state(1)[0]))
    frames, poses = [obs], [right_handed(info["pose"])]
    actions: list[int | None] = [None]  # actions[t] led to frames[t]
    for _ in range(part.tau):
        a = explorer.act(obs)
        obs, _, _, _, info = env.step(a)
        frames.append(obs)
        actions.append(int(a))
        poses.append(right_handed(info["pose"]))
    here = poses[-1]
    far = [i for i, p in enumerate(poses[:-1]) if not satisfied(here, p, part)]
    rng = np.random.default_rng([seed, 1])
    gi = far[int(rng.integers(len(far)))]
    tm = TruePoseModel(env)
    opt = optimal_steps(here, poses[gi], tm.turn, tm.fwd, part.radius, part.tol, tm.low.numpy(), tm.high.numpy())
    return {"frames": frames, "actions": actions, "poses": poses, "goal_index": gi, "goal": poses[gi],
            "goal_obs": frames[gi], "optimal": opt, "explorer": explorer, "obs": obs}


def satisfied(p: np.ndarray, goal: np.ndarray, part: Part) -> bool:
    return bool(np.linalg.norm(p[:2] - goal[:2]) < part.radius
                and abs(wrap_angle(p[2] - goal[2])) < part.tol + 1e-6)


def run_agent(env: Any, part: Part, seed: int, kind: str, model: Any, args: Args,
              gif: Path | None = None) -> dict[str, Any]:
    """One episode of agent ``kind`` (``random``, ``gtmsm``, ``pixels``, ``true``) after the shared exploration.

    GIF frames: the real observations (MiniWorld's uint8 RGB ``[h, w, 3]``) and the plans' imagined frames."""
    ep = explore(env, part, seed)
    budget = 2 * ep["optimal"]
    obs = ep["obs"]
    agent: Any = None
    position = part.name == "walk"
    rad = part.radius if position else None
    s_goal_est = None
    t_plan = 0.0
    if kind != "random":
        planner = CategoricalCEM(env.action_space, part.horizon, num_candidates=part.candidates,
                                 num_elites=max(part.candidates // 10, 2), iterations=args.iterations, seed=seed)
        goal_x = frames_to_tensor(ep["goal_obs"])  # [C, h, w]
        if kind == "true":
            m = TruePoseModel(env)
            agent = MPCAgent(m, planner, pose_objective(torch.as_tensor(ep["goal"]), args.heading_weight, position, rad),
                             env.action_space, max_context=1)
            agent.observe(obs)
        else:
            agent = MPCAgent(model, planner, goal_image(goal_x), env.action_space)
            for frame, a in zip(ep["frames"], ep["actions"]):
                agent.observe(frame, a)
            if kind == "gtmsm":  # where was the goal seen? reverse lookup in the spatial memory
                with torch.no_grad():
                    s_goal_est = model.localize(agent.belief, goal_x[None])[0]
                s_now_est = agent.belief.state["s"][0]  # the model's own pose after the exploration
                agent.objective = pose_objective(s_goal_est, args.heading_weight, position, rad)
    real, plans = [], []
    steps, success, reached = 0, False, False
    pose = ep["poses"][-1]
    goal = ep["goal"]
    path = [pose[:2].tolist()]
    while steps < budget:
        t0 = time.perf_counter()
        if agent is None:
            a = ep["explorer"].act(obs)
        else:
            a = agent.act(obs if steps else None)  # the first frame was observed with the exploration
        t_plan += time.perf_counter() - t0
        if gif is not None:
            real.append(obs)
            im = None if agent is None or kind == "true" else agent.imagination
            plans.append(None if im is None else to_uint8(im.obs[0]))
        obs, _, _, _, info = env.step(a)  # termination at OneRoom's red box is ignored: the world persists
        steps += 1
        pose = right_handed(info["pose"])
        path.append(pose[:2].tolist())
        reached |= bool(np.linalg.norm(pose[:2] - goal[:2]) < part.radius)
        if satisfied(pose, goal, part):
            success = True
            break
    if gif is not None:
        real.append(obs)
        plans.append(None)
        episode_gif(gif, real, ep["goal_obs"], plans,
                    f"{kind}, optimal {ep['optimal']}, budget {budget} steps, {'success' if success else 'failure'}")
    row = {"success": success, "reached_position": reached, "steps": steps, "optimal": ep["optimal"],
           "extra": steps - ep["optimal"], "final_distance": float(np.linalg.norm(pose[:2] - goal[:2])),
           "final_heading_error_deg": round(float(np.degrees(abs(wrap_angle(pose[2] - goal[2])))), 6),
           "plan_seconds_per_step": t_plan / max(steps, 1), "path": path, "goal_xy": goal[:2].tolist()}
    if gif is not None:  # the shared exploration, for the paths plot
        row["explore_path"] = np.stack(ep["poses"])[:, :2].round(3).tolist()
        row["goal_pose"] = goal.tolist()
    if s_goal_est is not None:  # localisation error in the model's frame, after aligning the start poses
        row["localize"] = localization_error(ep, s_goal_est, s_now_est)
    return row


def episode_gif(path: Path, real: list[np.ndarray], goal: np.ndarray, plans: list[np.ndarray | None],
                title: str, max_plan: int = 8, scale: int = 2) -> Path:
    """GIF per step: the real frame, the goal view, and the first ``max_plan`` frames of the plan's open-loop
    imagination (uint8 ``[h, w, 3]`` frames; ``plans[t]`` is ``[H, h, w, 3]`` or ``None``)."""
    from PIL import Image, ImageDraw

    h, w = real[0].shape[:2]
    n_plan = max_plan if any(p is not None for p in plans) else 0
    gap, top, W = 4, 14, w * scale

    def big(f: np.ndarray) -> Image.Image:
        return Image.fromarray(np.kron(f, np.ones((scale, scale, 1), np.uint8)))

    images = []
    for t, (frame, plan) in enumerate(zip(real, plans)):
        canvas = Image.new("RGB", ((2 + n_plan) * (W + gap) + gap, h * scale + top + 14), (30, 30, 30))
        draw = ImageDraw.Draw(canvas)
        draw.text((gap, 1), "real", fill=(255, 255, 255))
        draw.text((W + 2 * gap, 1), "goal view", fill=(120, 255, 120))
        canvas.paste(big(frame), (gap, top))
        canvas.paste(big(goal), (W + 2 * gap, top))
        if n_plan:
            draw.text((2 * (W + gap) + gap, 1), "open-loop imagination (plan)", fill=(255, 200, 80))
        for k, f in enumerate([] if plan is None else plan[:n_plan]):
            canvas.paste(big(f), ((2 + k) * (W + gap) + gap, top))
        draw.text((gap, h * scale + top + 1), f"step {t}: {title}", fill=(200, 200, 200))
        images.append(canvas)
    return atomic_save(path, lambda tmp: images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                                                        duration=300, loop=0))


def localization_error(ep: dict[str, Any], s_goal: torch.Tensor, s_now: torch.Tensor) -> dict[str, float]:
    """Errors of GTM-SM's goal state (``localize``) and of its own state after the exploration against the true
    poses expressed in the episode's start frame (the model's ``s`` starts at 0 with heading 0:
    :func:`worldmodels.experiments.gtmsm_miniworld.relative_pose`)."""
    rel = relative_pose(torch.as_tensor(np.stack(ep["poses"]))[None])[0].numpy()  # [T, 3]
    out = {}
    for key, state, true in (("", s_goal, rel[ep["goal_index"]]), ("self_", s_now, rel[-1])):
        s = state.double().numpy()
        out[f"{key}position_m"] = float(np.linalg.norm(s[:2] - true[:2]))
        out[f"{key}heading_deg"] = float(np.degrees(abs(wrap_angle(s[2] - true[2]))))

    def in_own_frame(goal: np.ndarray, own: np.ndarray) -> np.ndarray:  # goal pose seen from the own pose
        c, sn = np.cos(-own[2]), np.sin(-own[2])
        d = goal[:2] - own[:2]
        return np.array([c * d[0] - sn * d[1], sn * d[0] + c * d[1], goal[2] - own[2]])

    est = in_own_frame(s_goal.double().numpy(), s_now.double().numpy())
    true = in_own_frame(rel[ep["goal_index"]], rel[-1])
    out["relative_position_m"] = float(np.linalg.norm(est[:2] - true[:2]))
    out["relative_heading_deg"] = float(np.degrees(abs(wrap_angle(est[2] - true[2]))))
    return out


def summarise(rows: list[dict[str, Any]], part: Part) -> dict[str, Any]:
    ok = [r for r in rows if r["success"]]
    walk = part.name == "walk"
    out = {
        "success_rate": float(np.mean([r["success"] for r in rows])),
        "mean_extra_steps": float(np.mean([r["extra"] for r in ok])) if ok else None,
        "mean_steps": float(np.mean([r["steps"] for r in rows])),
        "mean_optimal_steps": float(np.mean([r["optimal"] for r in rows])),
        "mean_final_distance": float(np.mean([r["final_distance"] for r in rows])) if walk else None,
        "plan_seconds_per_step": float(np.mean([r["plan_seconds_per_step"] for r in rows])),
        "episodes": rows,
    }
    return out


def details(res: dict[str, dict[str, Any]], part: Part) -> dict[str, dict[str, float]]:
    """Per agent: the numbers the generic agent table has no column for (rendered as a second table)."""
    out = {}
    for label, m in res.items():
        rows = m["episodes"]
        d = {"final heading error (deg)": float(np.mean([r["final_heading_error_deg"] for r in rows]))}
        if part.name == "walk":
            d[f"reached {part.radius:g} m at some step (any heading)"] = float(
                np.mean([r["reached_position"] for r in rows]))
        loc = [r["localize"] for r in rows if "localize" in r]
        if loc:
            if part.name == "walk":
                d["localize: goal position error (m)"] = float(np.mean([x["position_m"] for x in loc]))
            d["localize: goal heading error (deg)"] = float(np.mean([x["heading_deg"] for x in loc]))
            if part.name == "walk":
                d["own pose after exploration: position error (m)"] = float(
                    np.mean([x["self_position_m"] for x in loc]))
                d["goal relative to own pose: position error (m)"] = float(
                    np.mean([x["relative_position_m"] for x in loc]))
            d["goal relative to own pose: heading error (deg)"] = float(
                np.mean([x["relative_heading_deg"] for x in loc]))
        out[label] = d
    return out


def slug(label: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in label.lower()).strip("_").replace("__", "_")


def run_part(part: Part, models: dict[str, tuple[str, Any]], args: Args) -> dict[str, dict[str, Any]]:
    """All agents on ``part.episodes`` shared episodes; ``models``: label -> (kind, model)."""
    from tqdm.auto import tqdm

    env = make_env(part.name)
    seeds = range(args.seed, args.seed + part.episodes)
    agents = ([("random explorer", "random", None)] + [(k, kind, m) for k, (kind, m) in models.items()]
              + [("true dynamics (CEM)", "true", None)])
    results: dict[str, dict[str, Any]] = {}
    for label, kind, model in agents:
        rows = []
        for i, s in enumerate(tqdm(seeds, desc=f"{part.name}: {label}", unit="ep")):
            gif = planning.media_dir(args.results) / f"miniworld_{part.name}_{slug(label)}.gif" if i < args.gifs else None
            rows.append(run_agent(env, part, s, kind, model, args, gif))
        results[label] = summarise(rows, part)
    env.close()
    return results


def paths_plot(path: Path, res: dict[str, dict[str, Any]], title: str, radius: float) -> Path:
    """Top view of episode 0: the exploration, every agent's true path after it, the goal disc and heading."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    first = res[next(iter(res))]["episodes"][0]
    if "explore_path" in first:
        ex = np.array(first["explore_path"])
        ax.plot(ex[:, 0], ex[:, 1], "-", color="0.75", lw=0.8, label="exploration (τ steps)")
    for label, m in res.items():
        ep = m["episodes"][0]
        xy = np.array(ep["path"])
        ax.plot(xy[:, 0], xy[:, 1], "-", lw=1.4, label=f"{label} ({'success' if ep['success'] else 'failure'})")
    g, start = first["goal_xy"], first["path"][0]
    ax.add_patch(plt.Circle(g, radius, color="g", alpha=0.2))
    ax.plot(*g, "g*", ms=12, label=f"goal (disc: {radius:g} m)")
    if "goal_pose" in first:
        th = first["goal_pose"][2]
        ax.arrow(g[0], g[1], 0.6 * np.cos(th), 0.6 * np.sin(th), color="g", width=0.03)
    ax.plot(*start, "ko", label="start of return")
    ax.plot([0, 10, 10, 0, 0], [0, 0, -10, -10, 0], "k-", lw=1)  # OneRoom's walls
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y = −z (m)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    try:
        return atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=110))
    finally:
        plt.close(fig)


def snapshot(src: Path, dst: Path) -> None:
    """Copy a checkpoint folder atomically (``dst`` replaced only after a complete copy that loads)."""
    from worldmodels.checkpoint import load

    tmp = temp_path(dst)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    load(tmp)  # verifies the checksums of a complete copy
    old = temp_path(dst, "old")
    if dst.exists():
        dst.replace(old)
    tmp.replace(dst)
    shutil.rmtree(old, ignore_errors=True)


def updates(path: Path) -> Any:
    cfg = json.loads((path / "config.json").read_text())
    return cfg.get("metadata", {}).get("step", "?")


# ----------------------------------------------------------------------------- phases


def evaluate(args: Args) -> None:
    """Phase ``eval``: every part's agents on the shared episodes -> ``<results>/planning_miniworld.json`` (with
    the parts this run does not redo kept from the old file when ``--merge 1``), plots and GIFs."""
    from worldmodels.checkpoint import load

    names = _parts(args)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    metrics: dict[str, Any] = {}
    notes: list[str] = []
    for name in names:
        models: dict[str, tuple[str, Any]] = {}
        for which, label, kind in (("gtmsm", "GTM-SM", "gtmsm"), ("rssm", "RSSM", "pixels")):
            if which not in args.models.split(","):
                continue
            dst = Path(f"{args.checkpoints}_{name}_{which}")
            src = Path(args.source) / name / which / "last"
            if args.snapshot and (src / "config.json").exists():
                snapshot(src, dst)
            if (dst / "config.json").exists():
                models[label] = (kind, load(dst).eval())
                how = "localize + CEM in s" if kind == "gtmsm" else "CEM towards the goal frame in pixel space"
                notes.append(f"{name}: {label} = `{dst}` (snapshot of `{src}` with {updates(dst)} training updates "
                             f"when this ran; {how}).")
            else:
                notes.append(f"{name}: {label}: no checkpoint at `{dst}` when this ran — not evaluated.")
        if name == "walk":
            part = Part("walk", args.tau, args.radius, np.deg2rad(args.heading_tol), args.horizon, args.candidates,
                        args.episodes)
            crit = f"position within {args.radius} m and heading within {args.heading_tol:.0f}°"
        else:
            step = 2 * np.pi / 41
            part = Part("rotate", args.tau_rotate, float("inf"), step / 2, args.horizon_rotate,
                        args.candidates_rotate, args.episodes_rotate)
            crit = f"heading within {np.degrees(step / 2):.2f}° (half a turn step: the remembered view itself)"
        res = run_part(part, models, args)
        metrics[name] = res
        metrics[f"{name} (details)"] = details(res, part)
        notes.append(f"{name}: `{MINIWORLD_AGENTS[name].env_id}`, {part.episodes} episodes (env seeds {args.seed}.."
                     f"{args.seed + part.episodes - 1}), τ = {part.tau} exploration steps, success = {crit} within "
                     f"2 x optimal steps; categorical CEM horizon {part.horizon}, {part.candidates} candidates, "
                     f"{args.iterations} iterations, MPC re-planning every step.")
        bar_plot(planning.media_dir(args.results) / f"miniworld_{name}_success.png", {k: v["success_rate"] for k, v in res.items()},
                 "success rate (within 2x optimal)",
                 f"MiniWorld {name}: return to a remembered view after τ = {part.tau} steps")
        if name == "walk":
            paths_plot(planning.media_dir(args.results) / "miniworld_walk_paths.png", res, "episode 0: true paths (top view)",
                       args.radius)
        for label, m in res.items():
            extra = "  ".join(f"{k} {v:.2f}" for k, v in metrics[f"{name} (details)"][label].items())
            print(f"{name:>6} {label:>22}: success {m['success_rate']:.0%}  optimal {m['mean_optimal_steps']:.1f}  "
                  f"{extra}")
    if args.note:
        notes.append(args.note)
    old_path = planning.record_path("miniworld", args.results)
    if args.merge and old_path.exists():
        old = json.loads(old_path.read_text())
        done = set(names)
        for name in ("walk", "rotate"):
            if name in done or name not in old["metrics"]:
                continue
            for key in (name, f"{name} (details)"):
                if key in old["metrics"]:
                    metrics[key] = old["metrics"][key]
            kept = [n for n in old["notes"] if n.startswith(f"{name}:")]
            notes += kept
            if not any("earlier run" in n for n in kept):
                notes.append(f"{name}: results from an earlier run: `{old['command']}` at commit "
                             f"`{old['git_commit']}` (wall clock {old['wall_clock_s']:.0f} s for the parts it ran).")
    notes.append("Agents: random explorer = the exploration policy continued (rotating agent: it keeps turning the "
                 "same way, so it succeeds whenever the goal lies ahead within the budget); true dynamics = the same "
                 "CEM and objective on the env's true pose with MiniWorld's known turn/forward steps and collisions "
                 "(an upper bound); walking episodes ignore OneRoom's termination at the red box (the world "
                 "persists). 'steps to success' counts the whole budget for failures; 'final distance' is the true "
                 "position error at the end (m, walk only).")
    budget = {f"{n}_episodes": args.episodes if n == "walk" else args.episodes_rotate for n in names}
    planning.write_record("miniworld", record.command(NAME, args), args.seed, time.time() - t0, budget, metrics,
                          notes, results=args.results)


EXPERIMENT = Experiment(NAME, SUMMARY, Args, {"eval": evaluate, "report": planning.report})
