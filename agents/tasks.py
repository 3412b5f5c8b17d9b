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

Planning with memory: a task that ``needs_memory`` (the goal-image task) asks for an exploration phase
(``Task.explore`` steps of its ``explorer``) at the start of each episode; the agent memorises it
(:meth:`agents.mpc.MPCAgent.memorise`), the task redraws its goal among the cells it visited
(:meth:`Task.explored`, :func:`remembered_goal`) and a model with ``localize`` (GTM-SM) plans towards the
state where it saw the goal frame (:func:`agents.objectives.localized_goal`). :func:`plan_setup` checks a
combination of model, env, task and agents before :func:`plan_in_env` (``worldmodels plan``) runs it.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from agents.explorers import Exploration, Explorer, make_explorer
from agents.explorers import explore as explore_env
from agents.mpc import to_model_obs
from agents.objectives import Reduce, goal_image, localized_goal, reduce_distance
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
    "remembered_goal",
    "PlanSetup",
    "plan_setup",
    "SimulatorModel",
    "RandomAgent",
    "ball_centroid",
    "run_episodes",
    "plan_gif",
]


# ------------------------------------------------------------------ tasks
class Task:
    """Base class. Subclasses set ``name`` and implement the four hooks.

    A task may need an exploration phase before its target is shown (``needs_memory``: the target is
    something seen during it, which only a model with memory can find again). ``explore`` is the number of
    exploration steps it asks for, ``explorer`` / ``explorer_kwargs`` name the explorer of
    :mod:`agents.explorers` that walks them; :meth:`explored` may redraw the target after it.

    Args:
        max_steps: real steps per episode (after the exploration).
    """

    name = "task"
    stop_on_success = False  # end the episode at the first success (goal reaching)
    needs_memory = False  # the target is a frame seen during the exploration (goal_frame(); memory finds it)
    explore = 0  # exploration steps the task asks for before its target is shown (worldmodels plan --explore)
    explorer = "uniform"  # the explorer of those steps (a name of agents.explorers.EXPLORERS) ...
    explorer_kwargs: dict[str, Any] = {}  # ... and its keyword arguments (read only)

    def __init__(self, max_steps: int = 50) -> None:
        if max_steps < 1:
            raise ValueError(f"{type(self).__name__}: expected max_steps >= 1, received {max_steps}")
        self.max_steps = max_steps

    def reset(self, env: gym.Env, obs: Any, info: dict, rng: np.random.Generator) -> None:
        """Draw this episode's target (ground truth stays in the task)."""

    def explored(self, env: gym.Env, exploration: Exploration, rng: np.random.Generator) -> None:
        """After an exploration phase (:func:`agents.explorers.explore`): redraw the target (default: unchanged)."""

    def goal_frame(self) -> Tensor | None:
        """The current target as a frame ``[C, H, W]`` (goal-image tasks, for ``localize``), else ``None``."""
        return None

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

    def describe(self, explore: int) -> str:
        """One line: the task, its episode length and the exploration before it (``explore`` steps)."""
        text = f"{self.name}: {self.max_steps} real steps per episode"
        if explore:
            kw = ", ".join(f"{k}={v}" for k, v in self.explorer_kwargs.items())
            text += f", after {explore} exploration steps ({self.explorer} explorer{', ' + kw if kw else ''}) shared by every agent"
        return text


def remembered_goal(cells: Sequence[tuple[int, int]], rng: np.random.Generator) -> tuple[int, int]:
    """A cell drawn uniformly among the distinct ``cells`` visited by an exploration, other than the last
    one (where the agent stands): a goal that a model with memory has seen.

    Example:
        >>> remembered_goal([(4, 4), (4, 5), (3, 5), (4, 5)], np.random.default_rng(0)) in [(4, 4), (3, 5)]
        True
    """
    visited = sorted(set(cells) - {cells[-1]})
    if not visited:
        raise ValueError(f"remembered_goal: the exploration visited no cell other than {cells[-1]}; expected "
                         f"a longer exploration")
    return visited[int(rng.integers(len(visited)))]


class GoalImageTask(Task):
    """Reach the cell shown in ``info["goal_obs"]`` (ImageNav with ``goal=True``).

    The objective is :func:`agents.objectives.goal_image` of the goal crop (``reduce="sum"``: get there
    early and stay). Distance: grid (Manhattan) distance between ``info["pose"]`` and
    ``info["goal"]``; success: standing on the goal (the env terminates there).

    With memory (thesis §7.10; ``worldmodels experiment planning-imagenav``): the task asks for
    ``explore = 256`` steps of the Poisson explorer (``lam = 2``, as the ImageNav training data), after
    which :meth:`explored` redraws the goal uniformly among the cells the exploration visited, other than
    the one it ended in (:func:`remembered_goal`; a cell it never saw cannot be remembered, and the env's
    own goal, uniform over the grid, was visited by 256 such steps in only about 70% of 200 episodes), and
    moves the env's goal there (its termination and ``info["goal"]`` follow). A model with ``localize`` (GTM-SM) then finds the goal frame in its memory.

    Args:
        max_steps: real steps per episode after the exploration.
        reduce: how the objective accumulates distances over the horizon.
        explore: the exploration steps the task asks for (``worldmodels plan --explore`` overrides).
    """

    name = "goal-image"
    stop_on_success = True
    needs_memory = True
    explorer = "poisson"
    explorer_kwargs = {"lam": 2.0}

    def __init__(self, max_steps: int = 50, reduce: Reduce = "sum", explore: int = 256) -> None:
        super().__init__(max_steps)
        if explore < 0:
            raise ValueError(f"GoalImageTask: expected explore >= 0, received {explore}")
        self.reduce, self.explore = reduce, explore

    def reset(self, env: gym.Env, obs: Any, info: dict, rng: np.random.Generator) -> None:
        if "goal_obs" not in info:
            raise KeyError(
                "GoalImageTask: the env gives no info['goal_obs']; use ImageNavGoal-v0 (goal=True)"
            )
        self.goal = frames_to_tensor(np.asarray(info["goal_obs"]))  # [C, H, W]

    def explored(self, env: gym.Env, exploration: Exploration, rng: np.random.Generator) -> None:
        """Redraw the goal among the cells the exploration visited (not the last) and move the env's goal there."""
        set_goal = getattr(env.unwrapped, "set_goal", None)
        if set_goal is None:
            raise ValueError(f"GoalImageTask.explored: expected an env with set_goal(cell) (ImageNavGoal-v0), "
                             f"received {env}")
        cells = [(int(i["pose"][0]), int(i["pose"][1])) for i in exploration.infos]
        self.goal = frames_to_tensor(set_goal(remembered_goal(cells, rng)))  # [C, H, W]

    def goal_frame(self) -> Tensor:
        return self.goal

    def objective(self) -> Objective:
        return goal_image(self.goal, reduce=self.reduce)

    def describe(self, explore: int) -> str:
        text = super().describe(explore)
        return text + ("; the goal: a cell the exploration visited, shown as its frame" if explore else "")

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


def _task_explorer(task: Task) -> Callable[[gym.Space], Explorer]:
    """The ``action_space -> explorer`` of the task's declared exploration."""
    return lambda space: make_explorer(task.explorer, space, **task.explorer_kwargs)


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
    explore: int = 0,
    explorer: Callable[[gym.Space], Explorer] | None = None,
    localize: bool = False,
) -> dict[str, Any]:
    """Run ``episodes`` episodes of an agent on ``task``; returns metrics (and writes a GIF of episode 0).

    ``make_agent(objective)`` builds the agent (``reset()``, ``act(obs)``; an ``imagination`` attribute
    holding the current plan's :class:`Imagination` is drawn in the GIF). The GIF shows ``info["frame"]``
    when the env gives it (:class:`agents.wrappers.BeliefObservation`), else the observation. Episode ``i`` resets the env
    with seed ``seed + i`` and draws the task's target from ``numpy.random.default_rng([seed, i])``.

    With ``explore > 0`` each episode starts with an exploration phase (:func:`agents.explorers.explore`):
    ``explorer(action_space)`` (default: the task's ``explorer``), reset with seed ``seed + i``, walks
    ``explore`` steps, then :meth:`Task.explored` may redraw the target; the agent is built after it and
    memorises the exploration when it can (``agent.memorise(frames, actions)``, :meth:`agents.mpc.MPCAgent.memorise`).
    ``localize``: the agent's objective becomes :func:`agents.objectives.localized_goal` of the task's
    goal frame (its model looks the goal up in its memory). The metrics count the steps after the exploration.

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
        rng = np.random.default_rng([seed, i])
        task.reset(env, obs, info, rng)
        exploration = None
        if explore:
            policy = (explorer or _task_explorer(task))(env.action_space)
            policy.reset(seed + i)
            exploration = explore_env(env, policy, explore, obs, info)
            obs, info = exploration.obs, exploration.info
            task.explored(env, exploration, rng)
        agent = make_agent(task.objective())
        agent.reset()
        memorise = getattr(agent, "memorise", None)
        if exploration is not None and memorise is not None:
            memorise(exploration.frames, exploration.actions)
        if localize:
            goal = task.goal_frame()
            if goal is None:
                raise ValueError(f"run_episodes: localize needs a task whose goal is a frame; {task.name} has none")
            agent.objective = localized_goal(agent.model, agent.belief, goal)
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


@dataclass(frozen=True)
class PlanSetup:
    """What :func:`plan_in_env` runs, checked before any episode (:func:`plan_setup`).

    Attributes:
        task: the task (with the run's ``max_steps``).
        explore: exploration steps at the start of every episode (0: none).
        localize: the model agent looks the goal frame up in its memory and plans in its state space.
        lines: which combination runs, one line per part (task, then each agent).
        warnings: combinations that run but cannot do what the task needs (a missing memory).
    """

    task: Task
    explore: int
    localize: bool
    lines: tuple[str, ...]
    warnings: tuple[str, ...]


def _action_size(space: gym.Space) -> int:
    return int(space.n) if isinstance(space, gym.spaces.Discrete) else int(np.prod(space.shape or ()))


def plan_setup(
    model: Any | None,
    env_id: str,
    task: str = "auto",
    explore: int | None = None,
    max_steps: int | None = None,
    max_context: int | None = None,
    agents: tuple[str, ...] = ("model",),
    env_kwargs: dict | None = None,
) -> PlanSetup:
    """Check the combination of model, env, task and agents and say what runs (``worldmodels plan``).

    ``explore=None``: what the task asks for (``Task.explore``: 256 steps for ImageNavGoal-v0's
    goal-image task, 0 for the others). A model with ``localize`` (GTM-SM) on a task that ``needs_memory``
    memorises the exploration and plans towards the state where it saw the goal frame
    (:func:`agents.objectives.localized_goal`).

    Raises:
        ValueError: unknown agents; ``model`` without a model; a model whose actions or observations do
            not match the env's; a memory model on a memory task without an exploration, or with a
            ``max_context`` that would cut its memory.

    A memory-less model on a task that needs memory runs with a warning (it plans towards the goal frame in
    pixel space from what its state kept of the exploration).

    Example:
        >>> import envs
        >>> setup = plan_setup(None, "ImageNavGoal-v0", agents=("true", "random"))
        >>> setup.explore, setup.localize, setup.lines[0]  # doctest: +ELLIPSIS
        (256, False, 'ImageNavGoal-v0, task goal-image: 50 real steps per episode, after 256 exploration steps ...')
    """
    unknown = set(agents) - {"model", "true", "random"}
    if unknown:
        raise ValueError(f"plan: unknown agents {sorted(unknown)}; expected model, true or random")
    if "model" in agents and model is None:
        raise ValueError("plan: agent 'model' needs a model (checkpoint)")
    t = task_for_env(env_id, task, env_kwargs, **({} if max_steps is None else {"max_steps": max_steps}))
    steps = t.explore if explore is None else explore
    if steps < 0:
        raise ValueError(f"plan: expected explore >= 0, received {steps}")
    env = gym.make(env_id, **(env_kwargs or {}))
    space, obs_space = env.action_space, env.observation_space
    env.close()
    lines = [f"{env_id}, task {t.describe(steps)}"]
    warnings: list[str] = []
    localize = False
    if model is not None and "model" in agents:
        name = getattr(model, "model_name", type(model).__name__)
        config = getattr(model, "config", None)
        want, have = getattr(config, "action_dim", None), _action_size(space)
        if want is not None and want != have:
            raise ValueError(
                f"plan: the model acts with action_dim {want}, {env_id} has {space} (size {have}); expected a "
                f"model trained on {env_id}'s actions"
            )
        shape = getattr(config, "obs_shape", None)
        sample = obs_space.sample() if obs_space.shape is not None else None
        if shape is not None and sample is not None:
            x = tuple(to_model_obs(sample).shape)
            if tuple(shape) != x:
                raise ValueError(
                    f"plan: the model sees observations of shape {tuple(shape)}, {env_id}'s {obs_space.shape} "
                    f"observations become {x}; expected a model trained on {env_id}'s observations"
                )
        has_localize = callable(getattr(model, "localize", None))
        if t.needs_memory and has_localize:
            if steps == 0:
                raise ValueError(
                    f"plan: explore 0 leaves {name}'s memory with one frame, and the {t.name} task shows a goal seen "
                    f"during an exploration; expected explore >= 1 (the task asks for {t.explore})"
                )
            if max_context is not None and max_context < steps + 1:
                raise ValueError(
                    f"plan: max_context {max_context} would keep only the last {max_context} of the {steps + 1} "
                    f"exploration frames in {name}'s memory; expected max_context >= {steps + 1} or none"
                )
            localize = True
        if localize:
            lines.append(f"model: {name} (memory with localize) memorises the exploration, localizes the goal "
                         f"frame in its memory and plans towards that state")
        else:
            seen = " after observing the exploration" if steps else ""
            lines.append(f"model: {name} plans with the task's objective on its imagined frames{seen}")
        if t.needs_memory and not has_localize:
            warnings.append(
                f"{name} has no memory to look the goal up in (no localize, as GTM-SM has): the {t.name} task of "
                f"{env_id} shows a frame seen during the exploration. {name} plans towards the goal frame in pixel "
                f"space with what its state kept of the exploration; expect about the random agent's success"
            )
    if "true" in agents:
        lines.append("true: the same planner on the env's own simulator (true dynamics)")
    if "random" in agents:
        lines.append("random: uniformly random actions")
    return PlanSetup(t, steps, localize, tuple(lines), tuple(warnings))


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
    explore: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """MPC with a world model in the real env ``env_id`` (what ``worldmodels plan`` runs).

    ``agents`` picks what to run on the same episodes (same env seeds, explorations and targets): ``"model"``
    (MPC with ``model``), ``"true"`` (the same planner on :class:`SimulatorModel`), ``"random"``. The
    combination is checked first (:func:`plan_setup`; ``explore=None``: what the task asks for); ``log``
    receives what runs, one line each, and the warnings (``None``: warnings go to :func:`warnings.warn`).
    Returns ``{agent: metrics}`` (:func:`run_episodes`); ``gif_dir`` receives ``<agent>.gif`` of episode 0.
    """
    from agents.mpc import MPCAgent
    from agents.planners import make_planner

    setup = plan_setup(model, env_id, task, explore, max_steps, max_context, agents, env_kwargs)
    t = setup.task
    kwargs = dict(env_kwargs or {})
    kwargs.setdefault("max_episode_steps", setup.explore + max(t.max_steps, 1))
    env = gym.make(env_id, **kwargs)
    space = env.action_space
    name = planner
    if name == "auto":
        name = "categorical-cem" if isinstance(space, gym.spaces.Discrete) else "cem"
    if log is not None:
        for line in setup.lines:
            log(line)
        if "model" in agents or "true" in agents:
            log(f"planner: {name}, horizon {horizon}, {num_candidates} candidates, {iterations} iterations")
    for w in setup.warnings:
        if log is not None:
            log(f"warning: {w}")
        else:
            import warnings

            warnings.warn(w, stacklevel=2)

    def planner_for() -> Any:
        kw: dict[str, Any] = {"num_candidates": num_candidates, "iterations": iterations, "seed": seed}
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
            explore=setup.explore,
            localize=setup.localize and who == "model",
        )
    env.close()
    return results
