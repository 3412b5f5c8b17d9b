"""Model-agnostic planners: optimise action sequences by scoring imagined rollouts.

A planner never looks inside a model: it proposes ``N`` candidate action sequences ``[N, H, A]``,
asks the model for one batched :meth:`~worldmodels.api.WorldModel.imagine`, scores the resulting
:class:`~worldmodels.api.Imagination` with an *objective* (``Imagination -> [N]`` scores, higher is
better) and refines its proposal distribution.

* :class:`RandomShooting` — best of N uniform samples.
* :class:`CEM` — cross-entropy method with a diagonal Gaussian over continuous actions.
* :class:`CategoricalCEM` — cross-entropy method with per-step categorical distributions over
  discrete actions (the thesis's environments are discrete).
* :class:`MPPI` — model-predictive path integral control (Williams et al., 2017): exponentially
  weighted average of Gaussian perturbations.

Every planner takes ``uncertainty_weight``: the score becomes
``objective(imagination) + uncertainty_weight * imagination.uncertainty.sum(1)``, so a negative weight
penalises and a positive weight rewards uncertain (unexplored) futures.

Actions inside the planners are float tensors ``[N, H, A]`` as the models expect (one-hot for discrete
spaces); :meth:`Plan.env_action` converts the first step to what ``env.step`` takes.

Example:
    >>> import gymnasium as gym, torch
    >>> from worldmodels.api import Belief, Imagination
    >>> class Walk:  # s_{t+1} = s_t + a, a point mass on a line
    ...     def imagine(self, belief, actions):
    ...         s = belief.features[:, :1] + actions.cumsum(1)[..., 0]            # [N, H]
    ...         return Imagination(obs=s[..., None], latent=s[..., None], uncertainty=torch.zeros_like(s))
    >>> planner = CEM(gym.spaces.Box(-1, 1, (1,)), horizon=5, num_candidates=200, iterations=5, seed=0)
    >>> plan = planner.optimize(Walk(), Belief(torch.zeros(1, 1)), lambda im: -(im.obs[:, -1, 0] - 3) ** 2)
    >>> round(float(plan.actions.sum()), 1)
    3.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from worldmodels.api import Belief, Imagination

__all__ = [
    "Objective",
    "Plan",
    "Planner",
    "RandomShooting",
    "CEM",
    "CategoricalCEM",
    "MPPI",
    "make_planner",
]

#: Scores imagined rollouts: ``Imagination`` with ``N`` candidates -> ``[N]`` (higher is better).
Objective = Callable[[Imagination], Tensor]


class _Imaginer(Protocol):
    def imagine(self, belief: Belief, actions: Tensor) -> Imagination: ...


@dataclass
class Plan:
    """The result of :meth:`Planner.optimize`.

    Attributes:
        actions: ``[H, A]`` the best action sequence found (one-hot rows for discrete spaces).
        score: its score.
        imagination: the imagined rollout of ``actions`` (batch 1), for visualisation.
        space: the action space the plan is for.
    """

    actions: Tensor
    score: float
    imagination: Imagination
    space: gym.Space

    def env_action(self, step: int = 0) -> int | np.ndarray:
        """The action of ``step`` in the form ``env.step`` takes."""
        a = self.actions[step]
        if isinstance(self.space, gym.spaces.Discrete):
            return int(a.argmax()) + int(self.space.start)
        return a.detach().cpu().numpy().astype(self.space.dtype)


class Planner:
    """Base class: holds the action space, horizon, batching and scoring.

    Subclasses implement :meth:`_search`, which returns the candidate set of the last iteration.

    Args:
        space: a ``gym.spaces.Discrete`` or bounded ``gym.spaces.Box`` of shape ``(A,)``.
        horizon: ``H``, the number of imagined steps.
        num_candidates: ``N``, candidate sequences per ``imagine`` call.
        iterations: refinement rounds (one ``imagine`` call each).
        uncertainty_weight: added ``weight * uncertainty.sum(1)`` to the objective.
        seed: seed of the planner's own random generator.
    """

    discrete_only = False
    continuous_only = False

    def __init__(
        self,
        space: gym.Space,
        horizon: int,
        num_candidates: int = 1000,
        iterations: int = 1,
        uncertainty_weight: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if isinstance(space, gym.spaces.Discrete):
            self.action_dim = int(space.n)
            self.discrete = True
        elif isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
                raise ValueError(
                    f"{type(self).__name__}: expected a bounded Box action space, received {space}"
                )
            self.action_dim = int(space.shape[0])
            self.discrete = False
            self.low = torch.as_tensor(space.low, dtype=torch.float32)
            self.high = torch.as_tensor(space.high, dtype=torch.float32)
        else:
            raise ValueError(
                f"{type(self).__name__}: expected a Discrete or 1-D Box action space, received {space}"
            )
        if self.discrete and self.continuous_only:
            raise ValueError(f"{type(self).__name__}: expected a Box action space, received {space}")
        if not self.discrete and self.discrete_only:
            raise ValueError(f"{type(self).__name__}: expected a Discrete action space, received {space}")
        for name, v in (("horizon", horizon), ("num_candidates", num_candidates), ("iterations", iterations)):
            if v < 1:
                raise ValueError(f"{type(self).__name__}: expected {name} >= 1, received {v}")
        self.space = space
        self.horizon = horizon
        self.num_candidates = num_candidates
        self.iterations = iterations
        self.uncertainty_weight = uncertainty_weight
        self.generator = torch.Generator().manual_seed(
            int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, ()))
        )

    # -- shared pieces -------------------------------------------------------------------------
    def _score(
        self, model: _Imaginer, belief: Belief, objective: Objective, actions: Tensor
    ) -> tuple[Tensor, Imagination]:
        with torch.no_grad():
            imagination = model.imagine(belief, actions)
            score = objective(imagination).float()
            if score.shape != (actions.shape[0],):
                raise ValueError(
                    f"objective: expected scores of shape ({actions.shape[0]},), received {tuple(score.shape)}"
                )
            if self.uncertainty_weight:
                score = score + self.uncertainty_weight * imagination.uncertainty.sum(1).float()
        return torch.nan_to_num(score, nan=-math.inf), imagination

    def _one_hot(self, index: Tensor) -> Tensor:
        return torch.nn.functional.one_hot(index, self.action_dim).float()

    def _check_init(self, init: Tensor | None) -> Tensor | None:
        if init is not None and init.shape != (self.horizon, self.action_dim):
            raise ValueError(
                f"{type(self).__name__}.optimize: expected init of shape ({self.horizon}, {self.action_dim}), "
                f"received {tuple(init.shape)}"
            )
        return init

    def optimize(
        self, model: _Imaginer, belief: Belief, objective: Objective, init: Tensor | None = None
    ) -> Plan:
        """Search for the action sequence with the highest score.

        Args:
            model: anything with ``imagine(belief, actions [N, H, A]) -> Imagination``.
            belief: the model's belief (batch 1, shared by all candidates).
            objective: ``Imagination -> [N]`` scores, higher is better.
            init: optional ``[H, A]`` warm start (e.g. the previous plan shifted by one step).
        """
        if belief.batch_size != 1:
            raise ValueError(
                f"{type(self).__name__}.optimize: expected a belief of batch 1, received {belief.batch_size}"
            )
        best_actions, best_score = None, -math.inf
        for actions, scores in self._search(model, belief, objective, self._check_init(init)):
            i = int(scores.argmax())
            if best_actions is None or float(scores[i]) > best_score:
                best_actions, best_score = actions[i].clone(), float(scores[i])
        assert best_actions is not None
        _, imagination = self._score(model, belief, objective, best_actions[None])
        return Plan(best_actions, best_score, imagination, self.space)

    def _search(self, model: _Imaginer, belief: Belief, objective: Objective, init: Tensor | None):  # type: ignore[no-untyped-def]
        """Yield ``(actions [N, H, A], scores [N])`` once per iteration."""
        raise NotImplementedError

    def _uniform(self, n: int) -> Tensor:
        H, A = self.horizon, self.action_dim
        if self.discrete:
            return self._one_hot(torch.randint(0, A, (n, H), generator=self.generator))
        u = torch.rand(n, H, A, generator=self.generator)
        return self.low + u * (self.high - self.low)

    def _initial_mean(self, init: Tensor | None) -> Tensor:
        """``[H, A]``: the warm start, else the centre of the action box."""
        if init is not None:
            return init.clone()
        return ((self.low + self.high) / 2).expand(self.horizon, -1).clone()

    def _gaussian(self, mean: Tensor, std: Tensor) -> Tensor:
        """``N`` samples ``mean + std * eps`` clipped to the action box: ``[N, H, A]``."""
        noise = torch.randn(self.num_candidates, self.horizon, self.action_dim, generator=self.generator)
        return torch.maximum(torch.minimum(mean + std * noise, self.high), self.low)

    def _check_elites(self, num_elites: int) -> int:
        if not 1 <= num_elites <= self.num_candidates:
            raise ValueError(
                f"{type(self).__name__}: expected 1 <= num_elites <= {self.num_candidates}, received {num_elites}"
            )
        return num_elites


class RandomShooting(Planner):
    """Best of ``iterations * num_candidates`` uniformly random sequences (plus ``init`` if given)."""

    def _search(self, model, belief, objective, init):  # type: ignore[no-untyped-def]
        for _ in range(self.iterations):
            actions = self._uniform(self.num_candidates)  # [N, H, A]
            if init is not None:
                actions[0] = init
            yield actions, self._score(model, belief, objective, actions)[0]


class CEM(Planner):
    """Cross-entropy method over continuous actions: a diagonal Gaussian ``[H, A]`` refit to the elites.

    Args:
        num_elites: candidates kept per iteration to refit mean and std.
        init_std: initial std as a fraction of the action range.
        smoothing: ``new = smoothing * old + (1 - smoothing) * elite_fit``.
        min_std: std floor as a fraction of the action range.
    """

    continuous_only = True

    def __init__(
        self,
        space: gym.Space,
        horizon: int,
        num_candidates: int = 1000,
        iterations: int = 5,
        num_elites: int = 100,
        init_std: float = 0.5,
        smoothing: float = 0.1,
        min_std: float = 0.01,
        **kw: object,
    ) -> None:
        super().__init__(space, horizon, num_candidates, iterations, **kw)  # type: ignore[arg-type]
        self.num_elites = self._check_elites(num_elites)
        self.init_std, self.smoothing, self.min_std = init_std, smoothing, min_std

    def _search(self, model, belief, objective, init):  # type: ignore[no-untyped-def]
        span = self.high - self.low  # [A]
        mean = self._initial_mean(init)  # [H, A]
        std = (self.init_std * span).expand(self.horizon, -1).clone()  # [H, A]
        for _ in range(self.iterations):
            actions = self._gaussian(mean, std)  # [N, H, A]
            actions[0] = mean.clamp(self.low, self.high)
            scores, _ = self._score(model, belief, objective, actions)
            elites = actions[scores.topk(self.num_elites).indices]  # [E, H, A]
            mean = self.smoothing * mean + (1 - self.smoothing) * elites.mean(0)
            std = self.smoothing * std + (1 - self.smoothing) * elites.std(0, unbiased=False)
            std = torch.maximum(std, self.min_std * span)
            yield actions, scores


class CategoricalCEM(Planner):
    """Cross-entropy method over discrete actions: per-step categorical probabilities ``[H, n]``.

    Args:
        num_elites: candidates kept per iteration to refit the probabilities.
        smoothing: ``new = smoothing * old + (1 - smoothing) * elite_frequencies``.
        min_prob: probability floor per action (keeps exploring).
    """

    discrete_only = True

    def __init__(
        self,
        space: gym.Space,
        horizon: int,
        num_candidates: int = 1000,
        iterations: int = 5,
        num_elites: int = 100,
        smoothing: float = 0.1,
        min_prob: float = 0.01,
        **kw: object,
    ) -> None:
        super().__init__(space, horizon, num_candidates, iterations, **kw)  # type: ignore[arg-type]
        self.num_elites = self._check_elites(num_elites)
        self.smoothing, self.min_prob = smoothing, min_prob

    def _search(self, model, belief, objective, init):  # type: ignore[no-untyped-def]
        H, A = self.horizon, self.action_dim
        probs = torch.full((H, A), 1.0 / A)  # [H, A]
        if init is not None:  # lean towards the previous plan without committing to it
            probs = 0.5 * probs + 0.5 * init
        for _ in range(self.iterations):
            index = torch.multinomial(
                probs, self.num_candidates, replacement=True, generator=self.generator
            ).T
            actions = self._one_hot(index)  # [N, H, A]
            actions[0] = self._one_hot(probs.argmax(-1))
            scores, _ = self._score(model, belief, objective, actions)
            freq = actions[scores.topk(self.num_elites).indices].mean(0)  # [H, A]
            probs = self.smoothing * probs + (1 - self.smoothing) * freq
            probs = probs.clamp_min(self.min_prob)
            probs = probs / probs.sum(-1, keepdim=True)
            yield actions, scores


class MPPI(Planner):
    """Model-predictive path integral control over continuous actions.

    Each iteration samples ``mean + std * eps``, weights candidates by ``softmax(score / temperature)``
    and moves the mean to the weighted average.

    Args:
        temperature: ``λ``; small values approach taking the best candidate.
        noise_std: perturbation std as a fraction of the action range.
    """

    continuous_only = True

    def __init__(
        self,
        space: gym.Space,
        horizon: int,
        num_candidates: int = 1000,
        iterations: int = 3,
        temperature: float = 1.0,
        noise_std: float = 0.3,
        **kw: object,
    ) -> None:
        super().__init__(space, horizon, num_candidates, iterations, **kw)  # type: ignore[arg-type]
        if temperature <= 0:
            raise ValueError(f"MPPI: expected temperature > 0, received {temperature}")
        self.temperature, self.noise_std = temperature, noise_std

    def _search(self, model, belief, objective, init):  # type: ignore[no-untyped-def]
        mean = self._initial_mean(init)  # [H, A]
        std = self.noise_std * (self.high - self.low)  # [A]
        for _ in range(self.iterations):
            actions = self._gaussian(mean, std)  # [N, H, A]
            actions[0] = mean
            scores, _ = self._score(model, belief, objective, actions)
            finite = torch.isfinite(scores)
            w = torch.softmax(torch.where(finite, scores, -1e30) / self.temperature, 0)  # [N]
            mean = (w[:, None, None] * actions).sum(0)
            yield actions, scores


PLANNERS: dict[str, type[Planner]] = {
    "random": RandomShooting,
    "cem": CEM,
    "categorical-cem": CategoricalCEM,
    "mppi": MPPI,
}


def make_planner(name: str, space: gym.Space, horizon: int, **kw: object) -> Planner:
    """Build a planner by name (``random``, ``cem``, ``categorical-cem``, ``mppi``; ``auto`` picks
    categorical CEM for discrete spaces and CEM for continuous ones)."""
    if name == "auto":
        name = "categorical-cem" if isinstance(space, gym.spaces.Discrete) else "cem"
    if name not in PLANNERS:
        raise ValueError(f"unknown planner {name!r}; expected one of {sorted(PLANNERS)} or 'auto'")
    return PLANNERS[name](space, horizon, **kw)  # type: ignore[arg-type]
