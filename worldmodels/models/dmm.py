"""Deep Markov model / deep state-space model (DSSM), thesis §4.3 (Krishnan et al. 2015, 2017).

Generative model, eq. (4.3): ``p(z_t | z_{t-1}, u_t) = N(mu_t^(p), v_t^(p))`` with
``mu, log v = NN(z_{t-1}, u_t)`` (eq. (4.2); ``u_t`` first goes through a feature layer, as §4.3
recommends for image inputs) and ``p(x_t | z_t)`` (no deterministic path to ``x_t``: all memory is
in ``z``). Inference, eq. (4.6)-(4.9): ``q(z_t | z_{t-1}, a_t)`` with ``a_t`` from a backward GRU over
``[u_t, x_t]`` (smoothing, eq. (4.8)) or an MLP (filtering, Fig. 4.2b); optionally the residual
posterior mean of §4.8.1.

It is the SRNN of :mod:`worldmodels.models.srnn` without the GRU: the same code path
(:class:`~worldmodels.models.srnn.StateSpaceCore`) with ``d_t = act(W u_t + b)`` and the emission
reading ``z_t`` only. The inputs are the same as the SRNN's (``u_t = [action_t, x_{t-1}]`` by config).

Example:
    >>> import torch
    >>> from worldmodels.api import Batch
    >>> from worldmodels.models import build_model
    >>> model = build_model("dmm", "debug", obs_shape=(6,), action_dim=2)
    >>> batch = Batch(obs=(torch.rand(3, 5, 6) > 0.5).float(), action=torch.rand(3, 5, 2))
    >>> model.loss(batch).loss.shape
    torch.Size([])
    >>> model.impute(batch.obs, batch.action, torch.rand(3, 5) > 0.5).shape
    torch.Size([3, 5, 6])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from worldmodels.models import register_model
from worldmodels.models.srnn import _DEBUG, StateSpaceConfig, StateSpaceCore

__all__ = ["DMMConfig", "DMM"]


@dataclass
class DMMConfig(StateSpaceConfig):
    """Hyper-parameters of the DMM; defaults match the SRNN music model (same budget of units).

    Attributes: those of :class:`~worldmodels.models.srnn.StateSpaceConfig`, with
        d_dim: features of the inputs ``u_t`` fed to the transition and the inference network
            (a feed-forward layer; there is no recurrence in a DMM).
        inference: ``"smooth"`` (backward GRU, eq. (4.8)) or ``"filter"``.
        residual_q: residual posterior mean ``mu^(q) = mu^(p) + NN(z_{t-1}, a_t)`` (§4.8.1); off by default.
    """

    residual_q: bool = False

    PRESETS: ClassVar[dict[str, dict]] = {
        "default": {},
        "music": {},
        "video": {"obs_shape": (1, 32, 32), "d_dim": 128, "z_dim": 16, "a_dim": 128, "hidden": 128,
                  "embed_dim": 128, "input_prev_obs": False, "train_drop_prob": 0.3, "train_drop_init": 4},
        "debug": dict(_DEBUG),
    }


@register_model("dmm")
class DMM(StateSpaceCore):
    """Deep Markov model (DSSM of §4.3) with smoothing inference; see the module docstring."""

    recurrent = False
    emission_uses_d = False

    def __init__(self, config: DMMConfig) -> None:
        super().__init__(config)
