"""Shared pieces of the SRNN / VRNN / DMM tests: one-thread fixture, batches, the contract test classes
and the float64 oracle of eq. (5.1)-(5.12) (the DSSM of §4.3 for a DMM).

Test modules import ``_one_thread`` (an autouse fixture) and subclass :class:`VectorContract` /
:class:`ImageContract` as ``Test...`` classes, setting ``model_name`` (and ``image_overrides``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import distributions as D

from tests.worldmodels.contract import WorldModelContract
from worldmodels.api import Batch
from worldmodels.models import build_model


def make_batch(obs_shape, A, B, T, seed=0, binary=True, dtype=torch.float32) -> Batch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(B, T, *obs_shape, generator=g, dtype=dtype)
    if binary:
        obs = obs.round()
    if A:
        action = F.one_hot(torch.randint(0, A, (B, T), generator=g), A).to(dtype)
        action[:, 0] = 0
    else:
        action = torch.zeros(B, T, 0, dtype=dtype)
    return Batch(obs=obs, action=action)


class VectorContract(WorldModelContract):
    """The contract on Bernoulli vectors ``(10,)`` with 3 one-hot actions (debug preset of ``model_name``)."""

    model_name: ClassVar[str] = ""

    def make_model(self):
        return build_model(self.model_name, "debug", obs_shape=(10,), action_dim=3)

    def make_batch(self, B, T, seed=0):
        return make_batch((10,), 3, B, T, seed)


class ImageContract(WorldModelContract):
    """The contract on binary ``(1, 16, 16)`` images with 2 actions: conv encoder/decoder of worldmodels.nn."""

    T = 4
    overfit_steps = 25
    model_name: ClassVar[str] = ""
    image_overrides: ClassVar[dict[str, Any]] = {}

    def make_model(self):
        return build_model(self.model_name, "debug", obs_shape=(1, 16, 16), action_dim=2,
                           **self.image_overrides)

    def make_batch(self, B, T, seed=0):
        return make_batch((1, 16, 16), 2, B, T, seed)


# ----------------------------------------------------------------------------- float64 oracle


def _gru(gru, x, h):
    """One GRU step written out (PyTorch's gate equations)."""
    gi = x @ gru.weight_ih_l0.T + gru.bias_ih_l0
    gh = h @ gru.weight_hh_l0.T + gru.bias_hh_l0
    i_r, i_z, i_n = gi.chunk(3, -1)
    h_r, h_z, h_n = gh.chunk(3, -1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    return (1 - z) * torch.tanh(i_n + r * h_n) + z * h


def _act(x):  # leaky ReLU 1/3 clipped at +-3
    return torch.clamp(torch.where(x > 0, x, x / 3), -3, 3)


def _linear(lin, x):
    return x @ lin.weight.T + (lin.bias if lin.bias is not None else 0)


def _gauss(head, r, c):
    """``NN(r, c)`` of a ConditionalGaussian: one hidden layer, then mean and softplus std + floor."""
    h = 0
    if head.lin_ctx is not None:
        h = h + _linear(head.lin_ctx, c)
    if head.lin_loop is not None:
        h = h + _linear(head.lin_loop, r)
    mean, raw = _linear(head.out, _act(h)).chunk(2, -1)
    return mean, torch.log1p(torch.exp(raw)) + head.min_std


def _mlp(seq, x):
    """nn.Sequential of Linear / ReLU (the vector encoder and emission of worldmodels.nn)."""
    for layer in seq:
        x = _linear(layer, x) if isinstance(layer, torch.nn.Linear) else torch.relu(x)
    return x


def brute_elbo(model, batch: Batch, eps: torch.Tensor):
    """Per-sequence loop over eq. (5.1)-(5.12) (or the DSSM of §4.3 for a DMM): returns
    ``log_px [B, T]`` and ``kl [B, T]`` for the noise ``eps [B, T, z]`` (Bernoulli or Gaussian vectors)."""
    c = model.config
    B, T = batch.shape
    log_px, kl = torch.zeros(B, T, dtype=torch.float64), torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        x, act, m, first = batch.obs[b], batch.action[b], batch.mask[b].double(), batch.is_first[b]
        phi = torch.stack([_act(_mlp(model.features.phi.net, x[t] * m[t])) * m[t] for t in range(T)])
        xf = torch.cat([phi, m[:, None]], -1)  # [T, E+1]
        d_prev = torch.zeros(c.d_dim, dtype=torch.float64)
        ds = []
        for t in range(T):
            prev = xf[t - 1] if t > 0 and not first[t] else torch.zeros_like(xf[0])
            u = torch.cat([act[t], prev]) if c.input_prev_obs else act[t]
            if model.recurrent:
                d_prev = _gru(model.rnn, u, torch.zeros_like(d_prev) if first[t] else d_prev)
            else:
                d_prev = _act(_linear(model.rnn[0], u))
            ds.append(d_prev)
        d = torch.stack(ds)  # [T, d]
        inp = torch.cat([d, xf], -1)
        if c.inference == "smooth":  # a_t = g(a_{t+1}, [d_t, x_t]), a_{T+1} = 0, reset at episode ends
            a_next, as_ = torch.zeros(c.a_dim, dtype=torch.float64), [None] * T
            for t in reversed(range(T)):
                if t == T - 1 or first[t + 1]:
                    a_next = torch.zeros_like(a_next)
                a_next = _gru(model.inference_net, inp[t], a_next)
                as_[t] = a_next
            a = torch.stack(as_)
        else:
            a = _act(_linear(model.inference_net[0], inp))
        z = torch.zeros(c.z_dim, dtype=torch.float64)
        for t in range(T):
            if first[t]:
                z = torch.zeros_like(z)
            mu_p, std_p = _gauss(model.prior, z, d[t])
            mu_q, std_q = _gauss(model.posterior, z, a[t])
            if c.residual_q:
                mu_q = mu_p + mu_q
            kl[b, t] = D.kl_divergence(D.Normal(mu_q, std_q), D.Normal(mu_p, std_p)).sum()
            z = mu_q + std_q * eps[b, t]
            h = torch.cat([z, d[t]]) if model.emission_uses_d else z
            out = _mlp(model.emission.net, h)
            if c.obs_kind == "bernoulli":
                lp = D.Bernoulli(logits=out).log_prob(x[t]).sum()
            else:
                mean, raw = out.chunk(2)
                lp = D.Normal(mean, F.softplus(raw) + c.obs_min_std).log_prob(x[t]).sum()
            log_px[b, t] = lp * m[t]
    return log_px, kl
