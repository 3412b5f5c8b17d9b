"""Planning tasks in real envs, a simulator "model" for true-dynamics baselines, and the MPC episode loop.

A :class:`Task` says what the agent should achieve in an env: it draws a target at the start of an
episode, builds the planner's objective (scores imagined rollouts, :mod:`agents.objectives`), and
judges success and distance on the env's ground truth (``info``), which the agent never sees.

* :class:`GoalImageTask` — reach the cell whose crop is ``info["goal_obs"]`` (``ImageNavGoal-v0``).
* :class:`BallRegionTask` — push the ball of ``BouncingBallForce-v0`` into a square region and keep it there.
* :class:`SwingUpTask` — swing ``PixelPendulum-v0`` up and hold it upright.

:class:`SimulatorModel` answers ``observe`` / ``imagine`` with the env's own numpy simulator (copies of
its current state): "the same planner on true dynamics". :func:`run_episodes` runs any agent with
``reset()`` / ``act(obs)`` for N episodes and writes a GIF of real frames beside the imagined plans.

Example:
    >>> import gymnasium as gym, envs
    >>> from agents.mpc import MPCAgent
    >>> from agents.planners import CEM
    >>> env = gym.make("BouncingBallForce-v0", max_episode_steps=12)
    >>> task = BallRegionTask(max_steps=12)
    >>> model = SimulatorModel(env)
    >>> planner = CEM(env.action_space, horizon=6, num_candidates=100, num_elites=10, iterations=2, seed=0)
    >>> out = run_episodes(env, task, lambda obj: MPCAgent(model, planner, obj, env.action_space),
    ...                    episodes=1, seed=0, progress=False)
    >>> sorted(out)[:3]
    ['episodes', 'mean_final_distance', 'mean_return']
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from agents.objectives import Reduce, goal_image, reduce_distance
from agents.planners import Objective
from worldmodels.api import Belief, Imagination, frames_to_tensor
from worldmodels.files import atomic_save

__all__ = [
    "Task",
    "GoalImageTask",
    "BallRegionTask",
    "SwingUpTask",
    "TASKS",
    "task_for_env",
    "SimulatorModel",
    "RandomAgent",
    "ball_centroid",
    "run_episodes",
    "plan_gif",
]


# ------------------------------------------------------------------ tasks
class Task:
    """Base class. Subclasses set ``name`` and implement the four hooks.

    Args:
        max_steps: real steps per episode.
    """

    name = "task"
    stop_on_success = False  # end the episode at the first success (goal reaching)

    def __init__(self, max_steps: int = 50) -> None:
        if max_steps < 1:
            raise ValueError(f"{type(self).__name__}: expected max_steps >= 1, received {max_steps}")
        self.max_steps = max_steps

    def reset(self, env: gym.Env, obs: Any, info: dict, rng: np.random.Generator) -> None:
        """Draw this episode's target (ground truth stays in the task)."""

    def objective(self) -> Objective:
        """The planner's objective for the current target (sees only imagined rollouts)."""
        raise NotImplementedError

    def distance(self, env: gym.Env, info: dict) -> float:
        """Ground-truth distance to the target after a real step (0 = there)."""
        raise NotImplementedError

    def success(self, env: gym.Env, info: dict, history: list[float]) -> bool:
        """Success after a real step, given the distances of the episode so far."""
        return history[-1] == 0.0

    def draw(self, frame: np.ndarray) -> np.ndarray:
        """Mark the target on a real uint8 RGB frame ``[H, W, 3]`` for videos (default: unchanged)."""
        return frame


class GoalImageTask(Task):
    """Reach the cell shown in ``info["goal_obs"]`` (ImageNav with ``goal=True``).

    The objective is :func:`agents.objectives.goal_image` of the goal crop (``reduce="sum"``: get there
    early and stay). Distance: grid (Manhattan) distance between ``info["pose"]`` and
    ``info["goal"]``; success: standing on the goal (the env terminates there).
    """

    name = "goal-image"
    stop_on_success = True

    def __init__(self, max_steps: int = 50, reduce: Reduce = "sum") -> None:
        super().__init__(max_steps)
        self.reduce = reduce

    def reset(self, env: gym.Env, obs: Any, info: dict, rng: np.random.Generator) -> None:
        if "goal_obs" not in info:
            raise KeyError(
                "GoalImageTask: the env gives no info['goal_obs']; use ImageNavGoal-v0 (goal=True)"
            )
        self.goal = frames_to_tensor(np.asarray(info["goal_obs"]))  # [C, H, W]

    def objective(self) -> Objective:
        return goal_image(self.goal, reduce=self.reduce)

    def distance(self, env: gym.Env, info: dict) -> float:
        return float(np.abs(np.asarray(info["pose"]) - np.asarray(info["goal"])).sum())


def ball_centroid(frames: Tensor) -> Tensor:
    """Intensity-weighted centre ``(x, y)`` in pixels of frames ``[..., 1, H, W]`` -> ``[..., 2]``
    (pixel centres at ``j + 0.5``; the frame centre for blank frames)."""
    H, W = frames.shape[-2:]
    m = frames[..., 0, :, :].clamp_min(0)  # [..., H, W]
    mass = m.sum((-1, -2))  # [...]
    xs = torch.arange(W, dtype=m.dtype) + 0.5
    ys = torch.arange(H, dtype=m.dtype) + 0.5
    cx = (m.sum(-2) * xs).sum(-1) / mass.clamp_min(1e-6)
    cy = (m.sum(-1) * ys).sum(-1) / mass.clamp_min(1e-6)
    blank = mass < 1e-6
    cx = torch.where(blank, torch.full_like(cx, W / 2), cx)
    cy = torch.where(blank, torch.full_like(cy, H / 2), cy)
    return torch.stack([cx, cy], -1)


class BallRegionTask(Task):
    """Push the ball (``BouncingBallForce-v0``) into a square region and keep it there.

    The region's centre is drawn uniformly in ``[centre_low, centre_high]²`` pixels per episode; its
    half side is ``half``. The objective is minus the summed squared distance of the imagined ball
    centroid (:func:`ball_centroid` of the predicted frames) outside the region; the ground-truth
    distance is that of ``info["state"][:2]``. Success: the ball is inside the region for the last
    ``hold`` steps of the episode.
    """

    name = "ball-region"

    def __init__(
        self,
        max_steps: int = 30,
        half: float = 4.0,
        centre_low: float = 10.0,
        centre_high: float = 22.0,
        hold: int = 5,
    ) -> None:
        super().__init__(max_steps)
        self.half, self.lo, self.hi, self.hold = half, centre_low, centre_high, hold
        self.centre = np.array([16.0, 16.0])

    def reset(self, env: gym.Env, obs: Any, info: dict, rng: np.random.Generator) -> None:
        self.centre = rng.uniform(self.lo, self.hi, size=2)

    def _outside(self, p: Tensor) -> Tensor:
        c = torch.as_tensor(self.centre, dtype=p.dtype)
        return torch.relu((p - c).abs() - self.half).pow(2).sum(-1)

    def objective(self) -> Objective:
        def score(im: Imagination) -> Tensor:
            return reduce_distance(self._outside(ball_centroid(im.obs)), "sum")  # [N]

        return score

    def distance(self, env: gym.Env, info: dict) -> float:
        p = torch.as_tensor(np.asarray(info["state"])[:2], dtype=torch.float64)
        return float(self._outside(p).sqrt())

    def success(self, env: gym.Env, info: dict, history: list[float]) -> bool:
        return len(history) >= self.hold and all(d == 0.0 for d in history[-self.hold :])

    def draw(self, frame: np.ndarray) -> np.ndarray:
        """Outline the region (the ball centre must lie inside it) in green."""
        out = frame.copy()
        H, W = out.shape[:2]
        x0, y0 = (int(np.floor(v - self.half)) for v in self.centre)
        x1, y1 = (int(np.ceil(v + self.half)) - 1 for v in self.centre)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W - 1), min(y1, H - 1)
        out[y0 : y1 + 1, [x0, x1]] = (0, 200, 0)
        out[[y0, y1], x0 : x1 + 1] = (0, 200, 0)
        return out


class SwingUpTask(Task):
    """Swing ``PixelPendulum-v0`` up: the objective compares imagined frames with the upright frame.

    Distance: ``|θ|`` (radians, wrapped); success: ``|θ| < tol`` for the last ``hold`` steps.
    """

    name = "swing-up"

    def __init__(self, max_steps: int = 100, tol: float = 0.3, hold: int = 10) -> None:
        super().__init__(max_steps)
        self.tol, self.hold = tol, hold
        self.goal: Tensor | None = None

    def reset(self, env: gym.Env, obs: Any, info: dict, rng: np.random.Generator) -> None:
        core = copy.deepcopy(env.unwrapped.core)  # type: ignore[attr-defined]
        core.theta[:], core.thetadot[:] = 0.0, 0.0
        self.goal = frames_to_tensor(core.observe()[0])  # [1, H, W] upright rod

    def objective(self) -> Objective:
        assert self.goal is not None, "SwingUpTask.reset first"
        return goal_image(self.goal, reduce="sum")

    def distance(self, env: gym.Env, info: dict) -> float:
        th = float(np.asarray(info["state"])[0])
        return abs((th + np.pi) % (2 * np.pi) - np.pi)

    def success(self, env: gym.Env, info: dict, history: list[float]) -> bool:
        return len(history) >= self.hold and all(d < self.tol for d in history[-self.hold :])


TASKS: dict[str, type[Task]] = {
    "goal-image": GoalImageTask,
    "ball-region": BallRegionTask,
    "swing-up": SwingUpTask,
}


def task_for_env(env_id: str, name: str = "auto", env_kwargs: dict | None = None, **kwargs: Any) -> Task:
    """The task ``name`` with ``kwargs``. ``auto``: the task the env declares, ``metadata["planning_task"] =
    {"name": ..., "kwargs": {...}}`` of ``gymnasium.make(env_id, **env_kwargs)`` (``kwargs`` override its kwargs).

    Example:
        >>> import envs
        >>> type(task_for_env("PixelPendulum-v0")).__name__, task_for_env("ImageNavGoal-v0", max_steps=7).max_steps
        ('SwingUpTask', 7)
    """
    if name == "auto":
        if env_id not in gym.registry:
            raise ValueError(f"no default planning task for {env_id!r}: expected a registered Gymnasium id")
        env = gym.make(env_id, **(env_kwargs or {}))
        declared = env.metadata.get("planning_task")
        env.close()
        if declared is None:
            raise ValueError(
                f"no default planning task for {env_id!r} (its metadata declares no 'planning_task'); "
                f"expected an explicit task in {sorted(TASKS)}"
            )
        if not (isinstance(declared, dict) and isinstance(declared.get("name"), str)
                and isinstance(declared.get("kwargs", {}), dict) and set(declared) <= {"name", "kwargs"}):
            raise ValueError(f"{env_id}: expected metadata['planning_task'] = {{'name': str, 'kwargs': dict}}, "
                             f"received {declared!r}")
        name, kwargs = declared["name"], {**declared.get("kwargs", {}), **kwargs}
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)} or 'auto'")
    return TASKS[name](**kwargs)


# ------------------------------------------------------------------ true dynamics
class SimulatorModel:
    """The env's own simulator behind the world-model API (``observe`` / ``imagine``): an oracle.

    ``observe`` ignores the frames and snapshots the env's current simulator state (the numpy core of
    the 2-D envs); ``imagine`` steps ``N`` copies of it under the candidate actions and renders real
    frames. Used for "the same planner on true dynamics" baselines. ``extras["s"]`` is the true
    ``info["pose"]`` (or ``info["state"]``) per imagined step, for :func:`agents.objectives.goal_state`.

    Args:
        env: a 2-D env of this package (its ``unwrapped.core``), with one copy (not a vector env).
    """

    def __init__(self, env: gym.Env) -> None:
        core = getattr(env.unwrapped, "core", None)
        if core is None or getattr(core, "num", None) != 1:
            raise ValueError(f"SimulatorModel: expected a single 2-D env of this package, received {env}")
        self.env, self.space = env, env.action_space

    def observe(self, obs: Tensor, action: Tensor, mask: Tensor | None = None) -> Belief:
        core = copy.deepcopy(self.env.unwrapped.core)  # type: ignore[attr-defined]
        info = core.info()
        feats = torch.as_tensor(
            np.concatenate([np.asarray(v, np.float64).reshape(1, -1) for v in info.values()], 1)
        )
        return Belief(features=feats.float(), state={"core": core})  # type: ignore[dict-item]

    def imagine(self, belief: Belief, actions: Tensor) -> Imagination:
        N, H = actions.shape[:2]
        core = _expand_core(belief.state["core"], N)
        frames, rewards, states = [], [], []
        for t in range(H):
            a = actions[:, t]
            if isinstance(self.space, gym.spaces.Discrete):
                act = (a.argmax(-1) + int(self.space.start)).numpy()
            else:
                assert self.space.shape is not None  # a Box always has a shape
                act = a.numpy().astype(self.space.dtype).reshape(N, *self.space.shape)
            r, _ = core.step(act)
            frames.append(frames_to_tensor(core.observe()))
            rewards.append(torch.as_tensor(r, dtype=torch.float32))
            info = core.info()
            key = "pose" if "pose" in info else "state" if "state" in info else next(iter(info))
            states.append(torch.as_tensor(info[key], dtype=torch.float32).reshape(N, -1))
        obs = torch.stack(frames, 1)  # [N, H, C, h, w]
        s = torch.stack(states, 1)
        return Imagination(
            obs=obs,
            latent=s,
            uncertainty=torch.zeros(N, H),
            extras={"s": s, "reward": torch.stack(rewards, 1)},
        )


def _expand_core(src: Any, n: int) -> Any:
    """A fresh core of ``n`` copies holding the state of the 1-copy core ``src``.

    State = the per-copy arrays (first dim 1) of ``src`` that differ from a freshly built 1-copy core;
    they are broadcast in place into the fresh ``n``-copy core (views such as ImageNav's crop windows stay
    valid; per-copy constants such as row indices keep their ``n``-copy values).
    """
    cls = type(src)
    extra = {"source": src.source} if hasattr(src, "source") else {}
    fresh1, core = cls(1, src.cfg, **extra), cls(n, src.cfg, **extra)
    for k, v in vars(src).items():
        if not isinstance(v, np.ndarray) or v.ndim == 0 or v.shape[0] != 1:
            continue
        f1, fn = getattr(fresh1, k, None), getattr(core, k, None)
        if not isinstance(fn, np.ndarray) or fn.shape != (n, *v.shape[1:]) or not fn.flags.writeable:
            continue
        if isinstance(f1, np.ndarray) and f1.shape == v.shape and np.array_equal(f1, v):
            continue  # unchanged since construction: a constant (e.g. row indices)
        fn[...] = v
    return core


class RandomAgent:
    """Uniformly random actions (the random explorer baseline)."""

    def __init__(self, space: gym.Space, seed: int = 0) -> None:
        self.space = space
        self.space.seed(seed)
        self.imagination = None

    def reset(self) -> None:
        return None

    def act(self, obs: Any) -> Any:
        return self.space.sample()


# ------------------------------------------------------------------ episodes
@dataclass
class _Frames:
    real: list[np.ndarray]
    plans: list[np.ndarray | None]


def _frames_uint8(x: Tensor | np.ndarray) -> np.ndarray:
    """``[..., C, H, W]`` float in [0, 1] or uint8 ``[H, W, C]`` -> uint8 RGB ``[..., H, W, 3]``."""
    if isinstance(x, np.ndarray) and x.dtype == np.uint8:
        img = x if x.ndim == 3 else x[..., None]
        return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3]
    t = torch.as_tensor(x).detach().float().clamp(0, 1)
    if t.shape[-3] == 1:
        t = t.expand(*t.shape[:-3], 3, *t.shape[-2:])
    return (t[..., :3, :, :] * 255).round().to(torch.uint8).movedim(-3, -1).numpy()


def plan_gif(
    path: str | os.PathLike,
    real: list[np.ndarray],
    plans: list[np.ndarray | None],
    max_plan: int = 8,
    fps: int = 4,
    title: str = "",
) -> Path:
    """GIF: each frame shows the real observation beside the first ``max_plan`` imagined frames of the
    plan made at that step, labelled "real" and "open-loop imagination".

    Args:
        real: uint8 RGB frames ``[h, w, 3]`` per step.
        plans: uint8 RGB ``[H, h, w, 3]`` per step (``None`` for agents that do not imagine).
    """
    from PIL import Image, ImageDraw

    h, w = real[0].shape[:2]
    if all(p is None for p in plans):  # a model-free agent: no imagination to show
        max_plan = 0
    scale = max(1, -(-64 // h))
    gap, top = 4, 14
    width = (1 + max_plan) * (w * scale + gap) + gap
    images = []
    for t, (frame, plan) in enumerate(zip(real, plans)):
        canvas = Image.new("RGB", (width, h * scale + top + gap + 12), (30, 30, 30))
        draw = ImageDraw.Draw(canvas)
        draw.text((gap, 1), "real", fill=(255, 255, 255))
        if max_plan:
            draw.text((w * scale + 2 * gap, 1), "open-loop imagination (plan)", fill=(255, 200, 80))
        big = np.repeat(np.repeat(frame, scale, 0), scale, 1)
        canvas.paste(Image.fromarray(big), (gap, top))
        if plan is not None:
            for k, f in enumerate(plan[:max_plan]):
                big = np.repeat(np.repeat(f, scale, 0), scale, 1)
                canvas.paste(Image.fromarray(big), (gap + (k + 1) * (w * scale + gap), top))
        draw.text((gap, h * scale + top + 1), f"step {t}  {title}", fill=(200, 200, 200))
        images.append(canvas)
    duration = int(1000 / fps)
    return atomic_save(
        path, lambda tmp: images[0].save(tmp, save_all=True, append_images=images[1:], duration=duration, loop=0)
    )


def run_episodes(
    env: gym.Env,
    task: Task,
    make_agent: Callable[[Objective], Any],
    episodes: int,
    seed: int = 0,
    gif_path: str | os.PathLike | None = None,
    gif_title: str = "",
    progress: bool = True,
    desc: str = "plan",
) -> dict[str, Any]:
    """Run ``episodes`` episodes of an agent on ``task``; returns metrics (and writes a GIF of episode 0).

    ``make_agent(objective)`` builds the agent (``reset()``, ``act(obs)``; an ``imagination`` attribute
    holding the current plan's :class:`Imagination` is drawn in the GIF). The GIF shows ``info["frame"]``
    when the env gives it (:class:`agents.wrappers.BeliefObservation`), else the observation. Episode ``i`` resets the env
    with seed ``seed + i`` and draws the task's target from ``numpy.random.default_rng([seed, i])``.

    Returns:
        ``success_rate``, ``mean_steps`` (steps to the first success, ``max_steps`` for failures),
        ``mean_return`` (minus the summed ground-truth distance), ``mean_final_distance``,
        ``plan_seconds_per_step`` and per-episode lists under ``episodes``.
    """
    from tqdm.auto import tqdm

    rows = []
    step_time, n_steps = 0.0, 0
    frames = _Frames([], [])
    for i in tqdm(range(episodes), desc=desc, disable=not progress, unit="ep"):
        obs, info = env.reset(seed=seed + i)
        task.reset(env, obs, info, np.random.default_rng([seed, i]))
        agent = make_agent(task.objective())
        agent.reset()
        history: list[float] = []
        first_success = None
        for t in range(task.max_steps):
            t0 = time.perf_counter()
            action = agent.act(obs)
            step_time += time.perf_counter() - t0
            n_steps += 1
            if i == 0 and gif_path is not None:
                im = getattr(agent, "imagination", None)
                frames.real.append(task.draw(_frames_uint8(np.asarray(info.get("frame", obs)))))
                frames.plans.append(None if im is None else _frames_uint8(im.obs[0]))
            obs, _, terminated, truncated, info = env.step(action)
            history.append(task.distance(env, info))
            if first_success is None and task.success(env, info, history):
                first_success = t + 1
                if task.stop_on_success:
                    break
            if terminated or truncated:
                break
        if i == 0 and gif_path is not None:
            frames.real.append(task.draw(_frames_uint8(np.asarray(info.get("frame", obs)))))
            frames.plans.append(None)
        ok = task.success(env, info, history) if not task.stop_on_success else first_success is not None
        rows.append(
            {
                "success": bool(ok),
                "steps": int(first_success if first_success is not None else task.max_steps),
                "return": -float(sum(history)),
                "final_distance": float(history[-1]),
            }
        )
    if gif_path is not None and frames.real:
        plan_gif(gif_path, frames.real, frames.plans, title=gif_title)
    return {
        "success_rate": float(np.mean([r["success"] for r in rows])),
        "mean_steps": float(np.mean([r["steps"] for r in rows])),
        "mean_return": float(np.mean([r["return"] for r in rows])),
        "mean_final_distance": float(np.mean([r["final_distance"] for r in rows])),
        "plan_seconds_per_step": step_time / max(n_steps, 1),
        "episodes": rows,
    }


def plan_in_env(
    model: Any | None,
    env_id: str,
    episodes: int = 10,
    task: str = "auto",
    planner: str = "auto",
    horizon: int = 10,
    num_candidates: int = 500,
    iterations: int = 3,
    num_elites: int = 50,
    max_steps: int | None = None,
    max_context: int | None = None,
    seed: int = 0,
    agents: tuple[str, ...] = ("model",),
    env_kwargs: dict | None = None,
    gif_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """MPC with a world model in the real env ``env_id`` (what ``worldmodels plan`` runs).

    ``agents`` picks what to run on the same episodes (same env seeds and targets): ``"model"`` (MPC
    with ``model``), ``"true"`` (the same planner on :class:`SimulatorModel`), ``"random"``. Returns
    ``{agent: metrics}`` (:func:`run_episodes`); ``gif_dir`` receives ``<agent>.gif`` of episode 0.
    """
    from agents.mpc import MPCAgent
    from agents.planners import make_planner

    unknown = set(agents) - {"model", "true", "random"}
    if unknown:
        raise ValueError(f"plan: unknown agents {sorted(unknown)}; expected model, true or random")
    if "model" in agents and model is None:
        raise ValueError("plan: agent 'model' needs a model (checkpoint)")
    kwargs = dict(env_kwargs or {})
    t = task_for_env(env_id, task, kwargs)
    if max_steps is not None:
        t = type(t)(max_steps=max_steps)
    kwargs.setdefault("max_episode_steps", max(t.max_steps, 1))
    env = gym.make(env_id, **kwargs)
    space = env.action_space
    if model is not None:
        want = getattr(getattr(model, "config", None), "action_dim", None)
        have = int(space.n) if isinstance(space, gym.spaces.Discrete) else int(np.prod(space.shape or ()))
        if want is not None and want != have:
            raise ValueError(
                f"plan: the model acts with action_dim {want}, {env_id} has {space} (size {have})"
            )

    def planner_for() -> Any:
        kw: dict[str, Any] = {"num_candidates": num_candidates, "iterations": iterations, "seed": seed}
        name = planner
        if name == "auto":
            name = "categorical-cem" if isinstance(space, gym.spaces.Discrete) else "cem"
        if name in ("cem", "categorical-cem"):
            kw["num_elites"] = min(num_elites, num_candidates)
        return make_planner(name, space, horizon, **kw)

    def agent_factory(who: str) -> Callable[[Objective], Any]:
        if who == "random":
            return lambda obj: RandomAgent(space, seed)
        m = model if who == "model" else SimulatorModel(env)
        ctx = 1 if who == "true" else max_context
        return lambda obj: MPCAgent(m, planner_for(), obj, space, max_context=ctx)

    results: dict[str, Any] = {}
    for who in agents:
        make = agent_factory(who)

        gif = None if gif_dir is None else Path(gif_dir) / f"{who}.gif"
        results[who] = run_episodes(
            env,
            t,
            make,
            episodes,
            seed,
            gif_path=gif,
            gif_title=f"{who} / {env_id}",
            progress=progress,
            desc=who,
        )
    env.close()
    return results
