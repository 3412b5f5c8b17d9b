"""Variational recurrent neural network (VRNN, Chung et al. 2015), thesis §4.4.2.

Generative model, eq. (4.16): ``d_t = GRU(d_{t-1}, [u_t, phi_z(z_{t-1})])`` (the stochastic state feeds
the recurrence), prior ``p(z_t | d_t)``, emission ``p(x_t | z_t, d_t)``. Inference, eq. (4.17):
``q(z_t | x_t, d_t)`` (filtering; the generative and inference networks share ``d_t``), sampled
ancestrally as in Algorithm 1. The inputs ``u_t``, observation features, Gaussian heads, KL and
emission are the SRNN's (:mod:`worldmodels.models.srnn`), so the baselines differ only in structure.

Example:
    >>> import torch
    >>> from worldmodels.api import Batch
    >>> from worldmodels.models import build_model
    >>> model = build_model("vrnn", "debug", obs_shape=(6,), action_dim=2)
    >>> batch = Batch(obs=(torch.rand(3, 5, 6) > 0.5).float(), action=torch.rand(3, 5, 2))
    >>> sorted(model.loss(batch).metrics)
    ['elbo', 'kl', 'log_px']
    >>> model.predict(batch.obs, batch.action, torch.rand(3, 4, 2)).latent.shape
    torch.Size([3, 4, 20])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from worldmodels.api import Batch
from worldmodels.models import register_model
from worldmodels.models.srnn import (
    _DEBUG,
    ClippedLeakyReLU,
    ConditionalGaussian,
    InputFeatures,
    LatentSequenceModel,
    SequenceConfig,
    gaussian_kl,
)
from worldmodels.nn import Emission, ObsDistribution

__all__ = ["VRNNConfig", "VRNN"]


@dataclass
class VRNNConfig(SequenceConfig):
    """Hyper-parameters of the VRNN; defaults match the SRNN music model (GRU 300, z 100, MLPs 500).

    Attributes: those of :class:`~worldmodels.models.srnn.SequenceConfig` (``d_dim``: GRU units;
    ``hidden`` is also the size of ``phi_z(z)``).
    """

    PRESETS: ClassVar[dict[str, dict]] = {
        "default": {},
        "music": {},
        "video": {"obs_shape": (1, 32, 32), "d_dim": 128, "z_dim": 16, "hidden": 128, "embed_dim": 128,
                  "input_prev_obs": False, "train_drop_prob": 0.3, "train_drop_init": 4},
        "debug": {k: v for k, v in _DEBUG.items() if k != "a_dim"},
    }


@register_model("vrnn")
class VRNN(LatentSequenceModel):
    """VRNN, eq. (4.16)-(4.17); see the module docstring."""

    def __init__(self, config: VRNNConfig) -> None:
        super().__init__()
        c = self.config = config
        self.features = InputFeatures(c.obs_shape, c.action_dim, c.embed_dim, c.hidden, c.input_prev_obs,
                                      c.conv_channels, c.dropout)
        self.drop_d = nn.Dropout(c.dropout)  # on d_t where it enters the emission (training only)
        if self.features.u_dim == 0 and c.z_dim == 0:
            raise ValueError("VRNN: no inputs u_t; expected action_dim > 0 or input_prev_obs=True")
        self.phi_z = nn.Sequential(nn.Linear(c.z_dim, c.hidden), ClippedLeakyReLU())
        self.cell = nn.GRUCell(self.features.u_dim + c.hidden, c.d_dim)
        self.prior = ConditionalGaussian(c.d_dim, 0, c.hidden, c.z_dim, c.min_std)  # p(z_t | d_t)
        self.posterior = ConditionalGaussian(c.d_dim, self.features.x_dim, c.hidden, c.z_dim, c.min_std)
        self.emission = Emission(c.z_dim + c.d_dim, c.obs_shape, c.obs_kind, hidden=(c.hidden,),
                                 channels=c.conv_channels, min_std=c.obs_min_std)

    def _emit(self, z: Tensor, d: Tensor) -> ObsDistribution:
        return self.emission(torch.cat([z, d], -1))

    def chain(self, obs: Tensor, action: Tensor, mask: Tensor, is_first: Tensor, sample: bool = True,
              generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Algorithm 1: ``d_t``, ``z_t ~ q(z_t | x_t, d_t)`` and the prior of every step, ``[B, T, .]``."""
        c = self.config
        B, T = obs.shape[:2]
        xfeat = self.features.encode(obs, mask)  # [B, T, E+1]
        u = self.features.inputs(action, xfeat if c.input_prev_obs else None, is_first)  # [B, T, U]
        pre_q = self.posterior.pre(xfeat)  # [B, T, hidden]
        eps = (torch.randn(B, T, c.z_dim, generator=generator, device=obs.device, dtype=obs.dtype)
               if sample else None)
        keep = (~is_first).to(obs.dtype)[..., None]
        d, z = obs.new_zeros(B, c.d_dim), obs.new_zeros(B, c.z_dim)
        out: dict[str, list[Tensor]] = {k: [] for k in ("d", "z", "mu_q", "std_q", "mu_p", "std_p")}
        for t in range(T):
            d, z = d * keep[:, t], z * keep[:, t]
            d = self.cell(torch.cat([u[:, t], self.phi_z(z)], -1), d)  # d_t = f(d_{t-1}, z_{t-1}, u_t)
            mu_p, std_p = self.prior(d, None)
            assert pre_q is not None
            mu_q, std_q = self.posterior(d, pre_q[:, t])
            z = mu_q + std_q * eps[:, t] if eps is not None else mu_q
            step = {"d": d, "z": z, "mu_q": mu_q, "std_q": std_q, "mu_p": mu_p, "std_p": std_p}
            for k, v in step.items():
                out[k].append(v)
        return {k: torch.stack(v, 1) for k, v in out.items()}

    def elbo_terms(self, batch: Batch, sample: bool = True) -> dict[str, Tensor]:
        """``log p(x_t | z_t, d_t)`` (observed steps) and ``KL(q(z_t | x_t, d_t) || p(z_t | d_t))``:
        ``[B, T]``."""
        ch = self.chain(batch.obs, batch.action, batch.mask, batch.is_first, sample=sample)
        log_px = self._emit(ch["z"], self.drop_d(ch["d"])).log_prob(batch.obs) * batch.mask.to(batch.obs.dtype)
        kl = gaussian_kl(ch["mu_q"], ch["std_q"], ch["mu_p"], ch["std_p"])
        inside = self._in_sequence(batch.mask)
        if inside is not None:  # padding steps are not part of any sequence: no latent state, no KL
            kl = kl * inside.to(kl.dtype)
        return {"log_px": log_px, "kl": kl, "z": ch["z"], "d": ch["d"]}

    def features_per_step(self, obs: Tensor, action: Tensor, mask: Tensor | None = None) -> Tensor:
        """``[B, T, d + z]``: ``observe(obs[:, :t+1], ...).features = [d_t, E_q z_t]`` of every ``t`` in one pass
        (the VRNN's posterior filters), with gradients (:func:`worldmodels.heads.belief_features`)."""
        B, T = obs.shape[:2]
        mask = torch.ones(B, T, dtype=torch.bool, device=obs.device) if mask is None else mask
        self._check_inputs(obs, action, mask)
        d, ch = self._posterior_path(obs, action, mask, self._first(mask))
        return torch.cat([d, ch["mu_q"]], -1)

    # -- hooks of the WorldModel API in LatentSequenceModel
    def _posterior_path(self, obs: Tensor, action: Tensor, mask: Tensor,
                        is_first: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        ch = self.chain(obs, action, mask, is_first, sample=False)
        return ch["d"], ch

    def _prior_step(self, u: Tensor, d: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        d = self.cell(torch.cat([u, self.phi_z(z)], -1), d.contiguous())  # d_t = f(d_{t-1}, z_{t-1}, u_t)
        mu_p, std_p = self.prior(d, None)  # p(z_t | d_t)
        return d, mu_p, std_p
