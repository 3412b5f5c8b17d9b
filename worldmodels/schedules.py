"""The training tricks of thesis §4.8.1 that are plain functions of the step: schedules and free bits.

* :func:`kl_beta`: the KL weight ``beta_t``, annealed linearly from ``beta0`` to 1 (Bowman et al. 2015);
* :func:`learning_rate`: the learning rate ``eta_t`` of a constant, linear or step-decay schedule;
* :func:`free_bits_kl`: the KL term with a floor ``lambda`` below which shrinking it gains nothing,
  either on the batch mean per latent group (free bits, Kingma et al. 2016) or per time step (free
  nats, PlaNet / RSSM).

:class:`worldmodels.train.Trainer` calls the schedules every update (their parameters are fields of
:class:`~worldmodels.train.TrainConfig`); models call :func:`free_bits_kl` in their ``loss``. Nothing
here knows a model or a trainer.

Example:
    >>> [kl_beta(s, 0.5, 2) for s in range(4)]
    [0.5, 0.75, 1.0, 1.0]
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

__all__ = ["LR_SCHEDULES", "LearningRateConfig", "kl_beta", "learning_rate", "free_bits_kl"]

#: the names :func:`learning_rate` knows (``TrainConfig.lr_schedule``).
LR_SCHEDULES = ("constant", "linear", "step")


class LearningRateConfig(Protocol):
    """What :func:`learning_rate` reads (a :class:`~worldmodels.train.TrainConfig` has it)."""

    lr: float
    lr_schedule: str
    lr_final: float
    lr_decay_steps: int
    decay_rate: float
    decay_every: int


def kl_beta(step: int, beta0: float, anneal_steps: int) -> float:
    """KL annealing weight at ``step`` (0-based): linear from ``beta0`` to 1 over ``anneal_steps`` (§4.8.1).

    ``beta_t = min(1, beta0 + (1 - beta0) t / anneal_steps)``; ``anneal_steps <= 0`` gives 1 throughout.

    Example:
        >>> [round(kl_beta(s, 0.2, 4), 6) for s in (0, 2, 4, 10)]
        [0.2, 0.6, 1.0, 1.0]
    """
    if anneal_steps <= 0:
        return 1.0
    return min(1.0, beta0 + (1.0 - beta0) * step / anneal_steps)


def learning_rate(cfg: LearningRateConfig, step: int, epoch: int, total_steps: int | None = None) -> float:
    """Learning rate of the update with 0-based index ``step`` in 0-based ``epoch``.

    ``"constant"``: ``lr``; ``"linear"``: from ``lr`` to ``lr_final`` over ``n = lr_decay_steps`` steps
    (``0``: over ``total_steps``), ``lr_final`` afterwards; ``"step"``: ``lr * decay_rate ** (epoch //
    decay_every)`` (KVAE: 0.85 every 20 epochs, §6.8).

    Example:
        >>> from worldmodels.train import TrainConfig
        >>> cfg = TrainConfig(lr=1.0, lr_schedule="step", decay_rate=0.5, decay_every=2)
        >>> [learning_rate(cfg, 0, e) for e in range(5)]
        [1.0, 1.0, 0.5, 0.5, 0.25]
    """
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.decay_rate ** (epoch // cfg.decay_every)
    if cfg.lr_schedule != "linear":
        raise ValueError(
            f"learning_rate: expected a schedule in {LR_SCHEDULES}, received {cfg.lr_schedule!r}"
        )
    n = cfg.lr_decay_steps or total_steps
    if not n:
        raise ValueError(
            "TrainConfig: the linear schedule needs lr_decay_steps, max_steps, or data with a length"
        )
    return cfg.lr + (cfg.lr_final - cfg.lr) * min(step / n, 1.0)


def free_bits_kl(kl: Tensor, free_bits: float, mask: Tensor | None = None, per_step: bool = False) -> Tensor:
    """KL with a floor ``lambda`` (thesis §4.8.1): below it a term's gradient is zero.

    Two places for the floor, the expectation ``E`` being over the observed ``(b, t)``:

    * ``per_step=False`` (free bits, Kingma et al. 2016): ``sum_j max(lambda, E[KL_j])``, the floor on
      the batch mean of each latent group ``j``;
    * ``per_step=True`` (free nats, PlaNet / Dreamer's RSSM): ``sum_j E[max(lambda, KL_{b,t,j})]``,
      the floor on every step's KL.

    Args:
        kl: ``[B, T, K]`` KL per latent group ``j`` (``[B, T]`` = one group).
        free_bits: ``lambda`` in nats per group and time step; 0 gives the plain mean KL.
        mask: ``[B, T]`` bool; steps with ``False`` are left out of the expectation.
        per_step: clamp each step's KL instead of the mean (see above).

    Returns:
        scalar: the clamped KL per time step.

    Example:
        >>> kl = torch.tensor([[[0.1, 2.0], [0.3, 4.0]]])   # [B=1, T=2, K=2]
        >>> float(free_bits_kl(kl, 0.5))   # max(0.5, 0.2) + max(0.5, 3.0)
        3.5
        >>> round(float(free_bits_kl(kl, 0.5, per_step=True)), 6)   # (0.5 + 0.5) / 2 + (2 + 4) / 2
        3.5
        >>> round(float(free_bits_kl(kl, 3.0, per_step=True)), 6)   # 3 + (3 + 4) / 2
        6.5
    """
    if kl.dim() not in (2, 3):
        raise ValueError(f"free_bits_kl: expected kl [B, T] or [B, T, K], received {tuple(kl.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(kl.shape[:2]):
        raise ValueError(
            f"free_bits_kl: expected mask [B, T] = {tuple(kl.shape[:2])}, received {tuple(mask.shape)}"
        )
    if per_step:
        clamped = kl.clamp_min(free_bits) if free_bits > 0 else kl  # [B, T] or [B, T, K]
        if mask is None:
            return clamped.mean(dim=(0, 1)).sum()
        m = mask.to(kl.dtype)  # [B, T]
        if kl.dim() == 3:
            m = m.unsqueeze(-1)  # [B, T, 1]
        return ((clamped * m).sum(dim=(0, 1)) / mask.to(kl.dtype).sum().clamp_min(1.0)).sum()
    if kl.dim() == 2:
        kl = kl.unsqueeze(-1)  # [B, T, 1]
    if mask is None:
        mean = kl.mean(dim=(0, 1))  # [K]
    else:
        m = mask.to(kl.dtype).unsqueeze(-1)  # [B, T, 1]
        mean = (kl * m).sum(dim=(0, 1)) / m.sum().clamp_min(1.0)
    return torch.clamp(mean, min=free_bits).sum() if free_bits > 0 else mean.sum()
