"""RSSM: the recurrent state-space model of PlaNet / Dreamer (Hafner et al., 2019) — the baseline most
users would pick today (DESIGN §4).

Per step a deterministic GRU path ``h_t`` and a stochastic Gaussian state ``s_t``::

    h_t = GRU(h_{t-1}, MLP([s_{t-1}, a_t]))              deterministic path
    p(s_t | h_t)          = N(μ_p(h_t), σ_p(h_t)²)         prior (used in imagination)
    q(s_t | h_t, x_t)     = N(μ_q(h_t, e_t), σ_q²)         posterior, e_t = encoder(x_t)
    p(x_t | h_t, s_t)                                     decoder (Bernoulli or Gaussian pixels)

ELBO per time step (filtering, as in PlaNet)::

    Σ_t E_q[log p(x_t | h_t, s_t)] - KL(q(s_t | h_t, x_t) || p(s_t | h_t))

trained with free nats (the KL of each step is clipped from below at ``free_nats``: §4.8.1's free
bits per step, :func:`worldmodels.schedules.free_bits_kl` with ``per_step=True``) and the standard
deviation floor ``min_std``. A missing frame (``mask = False``) uses the prior as posterior and adds no
reconstruction term. The state restarts at zero where ``is_first``.

Example:
    >>> import torch
    >>> from worldmodels.api import Batch
    >>> model = RSSM(RSSMConfig(**RSSMConfig.PRESETS["debug"]))
    >>> batch = Batch(obs=torch.rand(2, 6, 1, 8, 8), action=torch.eye(5)[torch.randint(0, 5, (2, 6))])
    >>> out = model.loss(batch)
    >>> out.loss.shape, sorted(out.metrics)[:2]
    (torch.Size([]), ['elbo', 'kl'])
    >>> model.predict(batch.obs, batch.action, torch.eye(5)[torch.randint(0, 5, (2, 4))]).obs.shape
    torch.Size([2, 4, 1, 8, 8])
"""

from __future__ import annotations

import functools
import math
import typing
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldmodels.api import Batch, Belief, Imagination, LossOutput, check_shape
from worldmodels.models import register_model
from worldmodels.nn import MLP, Emission, MLPDecoder, ObsDistribution, ObsEncoder
from worldmodels.schedules import free_bits_kl

__all__ = ["RSSMConfig", "RSSM"]

_CONV_SIZES = (16, 32, 64)  # smaller frames (ImageNav's 8x8 crops) go through MLPs on flat pixels


@dataclass
class RSSMConfig:
    """Hyper-parameters of :class:`RSSM` (defaults: PlaNet's sizes, 200/30).

    Attributes:
        obs_shape: ``(C, H, W)`` (H in 16/32/64 uses conv layers; smaller frames and vectors use MLPs).
        action_dim: action size (one-hot for discrete actions).
        deter: GRU size of ``h_t``.
        stoch: size of the Gaussian state ``s_t``.
        hidden: width of the MLPs.
        embed: size of the frame embedding ``e_t``.
        min_std: floor of the prior/posterior standard deviations.
        free_nats: per-step KL floor (0 disables).
        likelihood: ``"bernoulli"`` or ``"gaussian"`` pixels.
        obs_std: pixel std of the Gaussian likelihood (fixed as in PlaNet, or the initial value when
            ``learn_obs_std``).
        learn_obs_std: learn one pixel std per channel (maximum likelihood, as GTM-SM's
            ``learn_obs_std``), floored at ``min_obs_std``; Gaussian likelihood only.
        min_obs_std: floor of the learned pixel std.
    """

    obs_shape: tuple[int, ...] = (3, 8, 8)
    action_dim: int = 5
    deter: int = 200
    stoch: int = 30
    hidden: int = 200
    embed: int = 256
    min_std: float = 0.1
    free_nats: float = 3.0
    likelihood: str = "bernoulli"
    obs_std: float = 0.1
    learn_obs_std: bool = False
    min_obs_std: float = 1e-2

    PRESETS: ClassVar[dict[str, dict]] = {
        "debug": dict(obs_shape=(1, 8, 8), action_dim=5, deter=16, stoch=4, hidden=16, embed=16, free_nats=0.0),
        "imagenav": dict(obs_shape=(3, 8, 8), action_dim=5, deter=200, stoch=30, hidden=200, embed=256),
        "imagenav_tiny": dict(obs_shape=(3, 8, 8), action_dim=5, deter=64, stoch=8, hidden=64, embed=64),
        "miniworld": dict(obs_shape=(3, 32, 32), action_dim=3, deter=200, stoch=30, hidden=200, embed=256,
                          likelihood="gaussian"),
    }

    def __post_init__(self) -> None:
        self.obs_shape = tuple(int(v) for v in self.obs_shape)
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"RSSMConfig.likelihood: expected 'bernoulli' or 'gaussian', received {self.likelihood!r}")
        if self.learn_obs_std and self.likelihood != "gaussian":
            raise ValueError("RSSMConfig.learn_obs_std: expected likelihood='gaussian', received "
                             f"likelihood={self.likelihood!r}")
        if self.obs_std <= 0 or self.min_obs_std <= 0:
            raise ValueError(f"RSSMConfig: expected obs_std > 0 and min_obs_std > 0, received "
                             f"obs_std={self.obs_std}, min_obs_std={self.min_obs_std}")
        for name in ("deter", "stoch", "hidden", "embed", "action_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"RSSMConfig.{name}: expected >= 1, received {getattr(self, name)}")


@register_model("rssm")
class RSSM(nn.Module):
    """Recurrent state-space model (PlaNet/Dreamer); implements :class:`worldmodels.api.WorldModel`.

    Example:
        >>> import torch
        >>> model = RSSM(RSSMConfig(**RSSMConfig.PRESETS["debug"]))
        >>> belief = model.observe(torch.rand(1, 5, 1, 8, 8), torch.zeros(1, 5, 5))
        >>> model.imagine(belief, torch.zeros(3, 2, 5)).latent.shape
        torch.Size([3, 2, 20])
    """

    Config = RSSMConfig

    def __init__(self, config: RSSMConfig) -> None:
        super().__init__()
        self.config = c = config
        # frames smaller than the conv stacks support (e.g. ImageNav's 8x8 crops): MLPs on flat pixels
        self._flat = len(c.obs_shape) == 3 and not (c.obs_shape[1] == c.obs_shape[2] and c.obs_shape[1] in _CONV_SIZES)
        if self._flat:
            self.encoder: nn.Module = nn.Sequential(nn.Flatten(-3), MLP(math.prod(c.obs_shape), (c.hidden,), c.embed))
            self.decoder: nn.Module = MLPDecoder(c.deter + c.stoch, c.obs_shape, (c.hidden, c.hidden))  # frames too small for conv
        else:
            self.encoder = ObsEncoder(c.obs_shape, c.embed, hidden=(c.hidden,))
            kind = "bernoulli" if c.likelihood == "bernoulli" else "gaussian"
            self.decoder = Emission(c.deter + c.stoch, c.obs_shape, kind=kind, hidden=(c.hidden,))
        self.inp = nn.Sequential(nn.Linear(c.stoch + c.action_dim, c.hidden), nn.ELU())
        self.gru = nn.GRUCell(c.hidden, c.deter)
        self.prior_net = MLP(c.deter, (c.hidden,), 2 * c.stoch, act=nn.ELU)
        self.post_net = MLP(c.deter + c.embed, (c.hidden,), 2 * c.stoch, act=nn.ELU)
        if c.learn_obs_std:  # log σ of p(x | h, s) per channel (one value for vectors), maximum likelihood
            n_std = c.obs_shape[0] if len(c.obs_shape) == 3 else 1
            self.obs_log_std = nn.Parameter(torch.full((n_std,), math.log(c.obs_std)))

    # ---------------------------------------------------------------- pieces
    def _gauss(self, out: Tensor) -> tuple[Tensor, Tensor]:
        mu, raw = out.chunk(2, -1)
        return mu, F.softplus(raw) + self.config.min_std

    def img_step(self, h: Tensor, s: Tensor, a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One prior step: ``h_t`` and the prior ``(μ, σ)`` of ``s_t``: ``[N, deter]``, ``[N, stoch]`` x 2."""
        h = self.gru(self.inp(torch.cat([s, a], -1)), h)
        mu, std = self._gauss(self.prior_net(h))
        return h, mu, std

    def pixel_std(self) -> Tensor:
        """σ of the Gaussian likelihood, ``[C, 1, 1]`` for images, ``[1]`` for vectors (learned per channel
        when ``learn_obs_std``, else the fixed ``obs_std``)."""
        c = self.config
        shape = (-1, 1, 1) if len(c.obs_shape) == 3 else (-1,)
        if c.learn_obs_std:
            return self.obs_log_std.exp().clamp_min(c.min_obs_std).reshape(shape)
        return torch.full((c.obs_shape[0] if len(c.obs_shape) == 3 else 1,), c.obs_std).reshape(shape)

    def obs_dist(self, h: Tensor, s: Tensor) -> ObsDistribution:
        """``p(x_t | h_t, s_t)`` over frames ``[..., C, H, W]``."""
        feat = torch.cat([h, s], -1)
        if self._flat:
            loc = self.decoder(feat)
            if self.config.likelihood == "bernoulli":
                return ObsDistribution("bernoulli", loc, None, 3)
            mean = torch.sigmoid(loc)
            return ObsDistribution("gaussian", mean, self.pixel_std().to(mean).expand_as(mean), 3)
        d = self.decoder(feat)
        if self.config.likelihood == "gaussian":  # fixed pixel std as in PlaNet, or learned per channel
            return ObsDistribution("gaussian", d.loc, self.pixel_std().to(d.loc).expand_as(d.loc), d.event_dims)
        return d

    def _check(self, obs: Tensor, action: Tensor) -> None:
        c = self.config
        n = len(c.obs_shape)
        if obs.dim() != 2 + n or tuple(obs.shape[2:]) != c.obs_shape:
            raise ValueError(f"RSSM: expected obs [B, T, {', '.join(map(str, c.obs_shape))}], received {tuple(obs.shape)}")
        check_shape("RSSM action", action, (obs.shape[0], obs.shape[1], c.action_dim))

    def _filter(
        self, obs: Tensor, action: Tensor, mask: Tensor, is_first: Tensor, sample: bool
    ) -> dict[str, Tensor]:
        """Run the posterior over a window; returns per-step tensors ``[B, T, ...]``."""
        c = self.config
        B, T = obs.shape[:2]
        embed = self.encoder(obs)  # [B, T, E]
        h = obs.new_zeros(B, c.deter)
        s = obs.new_zeros(B, c.stoch)
        keys = ("h", "s", "mu_q", "std_q", "mu_p", "std_p")
        out: dict[str, list[Tensor]] = {k: [] for k in keys}
        for t in range(T):
            first = is_first[:, t].unsqueeze(-1)
            h = torch.where(first, torch.zeros_like(h), h)
            s = torch.where(first, torch.zeros_like(s), s)
            h, mu_p, std_p = self.img_step(h, s, action[:, t])
            mu_q, std_q = self._gauss(self.post_net(torch.cat([h, embed[:, t]], -1)))
            seen = mask[:, t].unsqueeze(-1)
            mu_q, std_q = torch.where(seen, mu_q, mu_p), torch.where(seen, std_q, std_p)
            s = mu_q + std_q * torch.randn_like(mu_q) if sample else mu_q
            for k, v in zip(keys, (h, s, mu_q, std_q, mu_p, std_p)):
                out[k].append(v)
        return {k: torch.stack(v, 1) for k, v in out.items()}

    # ---------------------------------------------------------------- ELBO
    def loss(self, batch: Batch, beta: float = 1.0) -> LossOutput:
        """Negative ELBO per time step with free nats on the KL (PlaNet)."""
        self._check(batch.obs, batch.action)
        r = self._filter(batch.obs, batch.action, batch.mask, batch.is_first, sample=True)
        rec = self.obs_dist(r["h"], r["s"]).log_prob(batch.obs)  # [B, T]
        var_q, var_p = r["std_q"].square(), r["std_p"].square()
        kl = 0.5 * (var_q / var_p + (r["mu_q"] - r["mu_p"]).square() / var_p - 1 + torch.log(var_p / var_q)).sum(-1)
        m = batch.mask.float()
        n = m.sum().clamp_min(1.0)
        rec_m = (rec * m).sum() / n
        kl_m = kl.sum() / kl.numel()
        kl_clip = free_bits_kl(kl, self.config.free_nats, per_step=True) if self.config.free_nats > 0 else kl_m
        loss = -(rec_m - beta * kl_clip)
        metrics = {"elbo": float((rec_m - kl_m).detach()), "rec": float(rec_m.detach()), "kl": float(kl_m.detach())}
        if self.config.learn_obs_std:
            metrics["obs_std"] = float(self.pixel_std().mean().detach())
        return LossOutput(loss=loss, metrics=metrics)

    # ---------------------------------------------------------------- WorldModel API
    @torch.no_grad()
    def observe(self, obs: Tensor, action: Tensor, mask: Tensor | None = None) -> Belief:
        """Filter the context (posterior means); ``features = [h_T, s_T]``."""
        self._check(obs, action)
        B, T = obs.shape[:2]
        mask = torch.ones(B, T, dtype=torch.bool, device=obs.device) if mask is None else mask.bool()
        check_shape("RSSM mask", mask, (B, T))
        is_first = torch.zeros(B, T, dtype=torch.bool, device=obs.device)
        is_first[:, 0] = True
        r = self._filter(obs, action, mask, is_first, sample=False)
        h, s = r["h"][:, -1], r["s"][:, -1]
        return Belief(features=torch.cat([h, s], -1), state={"h": h, "s": s})

    def features_per_step(self, obs: Tensor, action: Tensor, mask: Tensor | None = None) -> Tensor:
        """``[B, T, deter + stoch]``: ``observe(obs[:, :t+1], ...).features`` of every ``t`` in one pass, with
        gradients (:func:`worldmodels.heads.belief_features`)."""
        self._check(obs, action)
        B, T = obs.shape[:2]
        mask = torch.ones(B, T, dtype=torch.bool, device=obs.device) if mask is None else mask.bool()
        check_shape("RSSM mask", mask, (B, T))
        is_first = torch.zeros(B, T, dtype=torch.bool, device=obs.device)
        is_first[:, 0] = True
        r = self._filter(obs, action, mask, is_first, sample=False)
        return torch.cat([r["h"], r["s"]], -1)

    @torch.no_grad()
    def imagine(self, belief: Belief, actions: Tensor, sample: bool = False) -> Imagination:
        """Open-loop prior rollout under ``actions [N, H, A]`` (belief batch 1 or N)."""
        N, H, A = actions.shape
        if A != self.config.action_dim:
            raise ValueError(f"RSSM.imagine: expected actions [N, H, {self.config.action_dim}], received {tuple(actions.shape)}")
        h0, s0 = typing.cast(Tensor, belief.state["h"]), typing.cast(Tensor, belief.state["s"])
        Bm = h0.shape[0]
        if Bm not in (1, N):
            raise ValueError(f"RSSM.imagine: belief batch must be 1 or N={N}, received {Bm}")
        h, s = h0.expand(N, -1), s0.expand(N, -1)
        hs, ss, stds = [], [], []
        for t in range(H):
            h, mu, std = self.img_step(h, s, actions[:, t])
            s = mu + std * torch.randn_like(mu) if sample else mu
            hs.append(h)
            ss.append(s)
            stds.append(std)
        h_all, s_all = torch.stack(hs, 1), torch.stack(ss, 1)
        dist = functools.cache(lambda: self.obs_dist(h_all, s_all))  # decode at most once, only when read
        return Imagination(
            obs=lambda: dist().mean.clamp(0, 1),
            latent=torch.cat([h_all, s_all], -1),
            uncertainty=torch.stack(stds, 1).square().mean(-1),
            samples=dist().sample() if sample else None,
            belief=Belief(features=torch.cat([h, s], -1), state={"h": h, "s": s}),  # after the last step
        )

    @torch.no_grad()
    def predict(self, obs: Tensor, action: Tensor, future_actions: Tensor) -> Imagination:
        """``observe`` then ``imagine`` (``future_actions [B, H, A]``)."""
        return self.imagine(self.observe(obs, action), future_actions)

    @torch.no_grad()
    def impute(self, obs: Tensor, action: Tensor, mask: Tensor) -> Tensor:
        """Filtering imputation: missing frames are decoded from the prior of that step."""
        self._check(obs, action)
        B, T = obs.shape[:2]
        check_shape("RSSM mask", mask, (B, T))
        is_first = torch.zeros(B, T, dtype=torch.bool, device=obs.device)
        is_first[:, 0] = True
        r = self._filter(obs, action, mask.bool(), is_first, sample=False)
        pred = self.obs_dist(r["h"], r["s"]).mean.clamp(0, 1)
        keep = mask.bool().reshape(B, T, *([1] * (obs.dim() - 2)))
        return torch.where(keep, obs, pred)
