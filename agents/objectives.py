"""Objectives that score imagined rollouts: ``Imagination`` with ``N`` candidates -> ``[N]`` (higher is better).

Each factory returns a plain callable, so users can combine them or pass their own function.
Distances are accumulated over the horizon with ``reduce``:

* ``"sum"`` (default): ``-Σ_t d_t`` — reach the goal early and stay there;
* ``"final"``: ``-d_H`` — only the last imagined step counts;
* ``"min"``: ``-min_t d_t`` — pass by the goal at some step.

Example:
    >>> import torch
    >>> from worldmodels.api import Belief, Imagination
    >>> im = Imagination(obs=torch.zeros(2, 3, 1, 4, 4), latent=torch.zeros(2, 3, 5),
    ...                  uncertainty=torch.zeros(2, 3), extras={"s": torch.tensor([[[0., 0]] * 3, [[1., 1]] * 3])})
    >>> goal_state(torch.tensor([1., 1.]), reduce="final")(im).tolist()
    [-2.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from worldmodels.api import Belief, Imagination

__all__ = ["goal_image", "goal_latent", "goal_state", "localized_goal", "stay_in_region", "reduce_distance"]

Reduce = Literal["sum", "final", "min"]


def reduce_distance(d: Tensor, reduce: Reduce) -> Tensor:
    """Per-step distances ``[N, H]`` -> scores ``[N]`` (negated as ``0 - d`` so a zero distance scores 0.0, not -0.0)."""
    if reduce == "sum":
        return 0.0 - d.sum(1)
    if reduce == "final":
        return 0.0 - d[:, -1]
    if reduce == "min":
        return 0.0 - d.min(1).values
    raise ValueError(f"reduce: expected 'sum', 'final' or 'min', received {reduce!r}")


def _check_goal(name: str, goal: Tensor, per_step: Tensor) -> None:
    if tuple(goal.shape) != tuple(per_step.shape[2:]):
        raise ValueError(
            f"{name}: goal of shape {tuple(goal.shape)} does not match the imagined shape "
            f"{tuple(per_step.shape[2:])} (imagination [N, H, ...] = {tuple(per_step.shape)})"
        )


def goal_image(goal: Tensor, reduce: Reduce = "sum") -> Callable[[Imagination], Tensor]:
    """Mean squared pixel distance of the predicted frames to ``goal`` (``[C, H, W]`` in [0, 1])."""

    def objective(im: Imagination) -> Tensor:
        _check_goal("goal_image", goal, im.obs)
        d = (im.obs - goal.to(im.obs)).pow(2).flatten(2).mean(-1)  # [N, H]
        return reduce_distance(d, reduce)

    return objective


def goal_latent(goal: Tensor, reduce: Reduce = "sum") -> Callable[[Imagination], Tensor]:
    """Squared Euclidean distance in the model's latent space to ``goal`` (``[F]``), e.g. the
    ``Belief.features`` of the goal frame."""

    def objective(im: Imagination) -> Tensor:
        _check_goal("goal_latent", goal, im.latent)
        return reduce_distance((im.latent - goal.to(im.latent)).pow(2).sum(-1), reduce)

    return objective


def goal_state(goal: Tensor, key: str = "s", reduce: Reduce = "sum") -> Callable[[Imagination], Tensor]:
    """Squared distance of a model state in ``Imagination.extras[key]`` (GTM-SM's ``s_t``) to ``goal``."""

    def objective(im: Imagination) -> Tensor:
        if key not in im.extras:
            raise KeyError(
                f"goal_state: the model's imagination has no extras[{key!r}]; it has {sorted(im.extras)}"
            )
        s = im.extras[key]
        _check_goal("goal_state", goal, s)
        return reduce_distance((s - goal.to(s)).pow(2).sum(-1), reduce)

    return objective


def localized_goal(
    model: Any, belief: Belief, frame: Tensor, key: str = "s", reduce: Reduce = "sum"
) -> Callable[[Imagination], Tensor]:
    """:func:`goal_state` at the state where the model's memory saw ``frame`` (``[C, H, W]``): the
    reverse lookup ``model.localize(belief, frame[None])[0]`` of a model with memory (GTM-SM), after it
    observed an exploration that passed by the goal.

    Example:
        >>> class Memory:  # remembers that the frame of ones was seen at s = 3
        ...     def localize(self, belief, frames):
        ...         return torch.full((frames.shape[0], 1), 3.0)
        >>> im = Imagination(obs=torch.zeros(2, 1, 1, 2, 2), latent=torch.zeros(2, 1, 1),
        ...                  uncertainty=torch.zeros(2, 1), extras={"s": torch.tensor([[[3.0]], [[1.0]]])})
        >>> localized_goal(Memory(), Belief(features=torch.zeros(1, 1)), torch.ones(1, 2, 2))(im).tolist()
        [0.0, -4.0]
    """
    localize = getattr(model, "localize", None)
    if not callable(localize):
        raise TypeError(
            f"localized_goal: {type(model).__name__} has no localize(belief, frames) (a memory to look up where "
            f"a frame was seen, as GTM-SM's); expected a model with memory"
        )
    if frame.dim() < 2:
        raise ValueError(f"localized_goal: expected one frame [C, H, W], received shape {tuple(frame.shape)}")
    with torch.no_grad():
        s_goal = localize(belief, frame[None])[0]  # [S]
    return goal_state(s_goal, key, reduce)


def stay_in_region(
    low: Tensor, high: Tensor, key: str = "s", reduce: Reduce = "sum"
) -> Callable[[Imagination], Tensor]:
    """Squared distance of ``extras[key]`` outside the box ``[low, high]`` (0 inside)."""

    def objective(im: Imagination) -> Tensor:
        if key not in im.extras:
            raise KeyError(
                f"stay_in_region: the model's imagination has no extras[{key!r}]; it has {sorted(im.extras)}"
            )
        s = im.extras[key]
        _check_goal("stay_in_region", low, s)
        out = torch.relu(low.to(s) - s) + torch.relu(s - high.to(s))
        return reduce_distance(out.pow(2).sum(-1), reduce)

    return objective
