"""Model-predictive control in imagination: belief update -> plan -> act (receding horizon).

:class:`MPCAgent` keeps the episode's observations and actions, asks the world model for a belief
(:meth:`~worldmodels.api.WorldModel.observe`), lets a planner (:mod:`agents.planners`) search action
sequences in imagination, executes the first action and warm-starts the next search from the rest
of the plan.

Example:
    >>> import gymnasium as gym, torch
    >>> from agents.planners import CategoricalCEM
    >>> from agents.objectives import goal_state
    >>> from worldmodels.api import Belief, Imagination
    >>> class Line:  # exact model of a walk on a line: obs = [position], actions {-1, 0, +1}
    ...     def observe(self, obs, action, mask=None):
    ...         return Belief(features=obs[:, -1])
    ...     def imagine(self, belief, actions):
    ...         s = belief.features + (actions @ torch.tensor([-1., 0., 1.])).cumsum(1)[..., None]
    ...         return Imagination(obs=s, latent=s, uncertainty=torch.zeros(s.shape[:2]), extras={"s": s})
    >>> space = gym.spaces.Discrete(3)
    >>> agent = MPCAgent(Line(), CategoricalCEM(space, 4, num_candidates=64, num_elites=8, seed=0),
    ...                  goal_state(torch.tensor([2.0])), space)
    >>> agent.reset()
    >>> agent.act(np.array([0.0], np.float32))
    2
    >>> agent.reset()  # after an exploration: memorise it, then plan from its last frame (observed once)
    >>> agent.memorise([np.array([0.0], np.float32), np.array([3.0], np.float32)], [None, 2])
    >>> agent.act(np.array([3.0], np.float32))
    0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from agents.planners import Objective, Plan, Planner
from worldmodels.api import Belief, Imagination, encode_actions, frames_to_tensor

__all__ = ["MPCAgent", "to_model_obs"]


def to_model_obs(obs: Any) -> Tensor:
    """One env observation -> model input: uint8 images become float ``[C, H, W]`` in [0, 1],
    anything else a float vector."""
    a = np.asarray(obs)
    if a.dtype == np.uint8 and a.ndim >= 2:
        return frames_to_tensor(a)
    return torch.as_tensor(a, dtype=torch.float32).reshape(-1)


class MPCAgent:
    """Receding-horizon planning with a world model.

    Usage in an env loop::

        agent.reset()
        obs, info = env.reset()
        while not done:
            action = agent.act(obs)        # = observe(obs, previous action) + plan
            obs, reward, terminated, truncated, info = env.step(action)

    Each frame is observed once: after ``observe(obs, action)`` (or :meth:`memorise` of an exploration
    ending in ``obs``), ``act(obs)`` plans from it without recording it again.

    Args:
        model: anything with ``observe`` and ``imagine`` (:class:`worldmodels.api.WorldModel`).
        planner: a :class:`agents.planners.Planner` for the env's action space.
        objective: scores imagined rollouts (:mod:`agents.objectives` or a user callable);
            may be replaced between steps (``agent.objective = ...``).
        action_space: the env's action space (for encoding the actions the agent took).
        max_context: keep at most this many recent frames for ``observe`` (``None``: the episode).
        warm_start: start each search from the previous plan shifted by one step.
    """

    def __init__(
        self,
        model: Any,
        planner: Planner,
        objective: Objective,
        action_space: gym.Space,
        max_context: int | None = None,
        warm_start: bool = True,
    ) -> None:
        if planner.space != action_space:
            raise ValueError(
                f"MPCAgent: the planner plans for {planner.space}, the env acts in {action_space}"
            )
        self.model, self.planner, self.objective = model, planner, objective
        self.action_space, self.max_context, self.warm_start = action_space, max_context, warm_start
        self.reset()

    def reset(self) -> None:
        """Forget the episode: observations, actions, belief and plan."""
        self._obs: list[Tensor] = []
        self._act: list[Tensor] = []
        self._belief: Belief | None = None
        self._last_action: Any = None
        self._fresh = False  # the last recorded frame came from observe() and no action was taken since
        self.plan: Plan | None = None

    def observe(self, obs: Any, action: Any = None) -> None:
        """Record ``obs`` and the ``action`` that led to it (``None`` for the first frame of an episode)."""
        if action is not None and not self.action_space.contains(action):
            raise ValueError(
                f"MPCAgent.observe: action {action!r} is not in the action space {self.action_space}"
            )
        x = to_model_obs(obs)
        dim = self.planner.action_dim
        a = torch.zeros(dim) if action is None else encode_actions(action, self.action_space).reshape(dim)
        self._obs.append(x)
        self._act.append(a)
        if self.max_context is not None:
            del self._obs[: -self.max_context], self._act[: -self.max_context]
        self._belief = None
        self._fresh = True

    def memorise(self, frames: Sequence[Any], actions: Sequence[Any]) -> None:
        """Observe an exploration: ``frames[t]`` reached with ``actions[t]`` (``actions[0] = None`` at the
        start of an episode), e.g. an :class:`agents.explorers.Exploration`. A model with memory (GTM-SM)
        stores them; the next ``act(frames[-1])`` plans from the last frame without observing it again.
        """
        if len(frames) != len(actions) or not frames:
            raise ValueError(f"MPCAgent.memorise: expected as many actions as frames (at least one), "
                             f"received {len(frames)} frames and {len(actions)} actions")
        for frame, action in zip(frames, actions):
            self.observe(frame, action)

    @property
    def belief(self) -> Belief:
        """The model's belief given the recorded context (computed on demand)."""
        if not self._obs:
            raise RuntimeError("MPCAgent: no observation yet; call act(obs) or observe(obs) first")
        if self._belief is None:
            obs = torch.stack(self._obs)[None]  # [1, T, ...]
            act = torch.stack(self._act)[None]  # [1, T, A]
            with torch.no_grad():
                self._belief = self.model.observe(obs, act)
        return self._belief

    def act(self, obs: Any = None) -> Any:
        """Observe ``obs`` (when given; the previous action is taken as the one that led to it), plan,
        and return the first action in the form ``env.step`` takes."""
        if obs is not None and self._fresh:  # observe()/memorise() recorded this frame already
            if not torch.equal(to_model_obs(obs), self._obs[-1]):
                raise ValueError(
                    "MPCAgent.act: obs differs from the frame last given to observe() and no action was taken "
                    "since; expected act() or act(that frame) (observe() records the frame and its action)"
                )
        elif obs is not None:
            self.observe(obs, self._last_action)
        init = None
        if self.warm_start and self.plan is not None:
            prev = self.plan.actions
            init = torch.cat([prev[1:], prev[-1:]])  # shift by one step, repeat the last action
        self.plan = self.planner.optimize(self.model, self.belief, self.objective, init)
        self._last_action = self.plan.env_action(0)
        self._fresh = False
        return self._last_action

    @property
    def imagination(self) -> Imagination | None:
        """The imagined rollout of the current plan (for videos of what the agent expects)."""
        return None if self.plan is None else self.plan.imagination
