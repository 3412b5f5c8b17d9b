"""VRNN (thesis §4.4.2): the world-model contract and the ELBO of eq. (4.16)-(4.17) against a float64
per-sequence loop (Algorithm 1); inference is filtering only."""

from __future__ import annotations

import pytest
import torch
from torch import distributions as D

from tests.worldmodels._seq_models import (
    ImageContract,
    VectorContract,
    _act,
    _gauss,
    _linear,
    _mlp,
    make_batch,
)
from tests.worldmodels.contract import run_contract
from worldmodels.api import Batch
from worldmodels.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

class TestVRNNContractVectors(VectorContract):
    model_name = "vrnn"


class TestVRNNContractImages(ImageContract):
    model_name = "vrnn"
    image_overrides = {"input_prev_obs": False}


def test_contract_gaussian_vectors():
    run_contract(
        lambda: build_model("vrnn", "debug", obs_shape=(5,), action_dim=2, obs_kind="gaussian"),
        lambda B, T, seed=0: make_batch((5,), 2, B, T, seed, binary=False),
        obs_range=None,
    )


def _cell(cell, x, h):
    gi, gh = x @ cell.weight_ih.T + cell.bias_ih, h @ cell.weight_hh.T + cell.bias_hh
    i_r, i_z, i_n = gi.chunk(3, -1)
    h_r, h_z, h_n = gh.chunk(3, -1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    return (1 - z) * torch.tanh(i_n + r * h_n) + z * h


def brute_vrnn(model, batch: Batch, eps):
    """Algorithm 1 per sequence: d_t = f(d_{t-1}, z_{t-1}, u_t); q(z_t | x_t, d_t); p(z_t | d_t)."""
    c = model.config
    B, T = batch.shape
    log_px, kl = torch.zeros(B, T, dtype=torch.float64), torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        x, act, m, first = batch.obs[b], batch.action[b], batch.mask[b].double(), batch.is_first[b]
        xf = torch.stack([torch.cat([_act(_mlp(model.features.phi.net, x[t] * m[t])) * m[t], m[t:t + 1]])
                          for t in range(T)])
        d, z = torch.zeros(c.d_dim, dtype=torch.float64), torch.zeros(c.z_dim, dtype=torch.float64)
        for t in range(T):
            if first[t]:
                d, z = torch.zeros_like(d), torch.zeros_like(z)
            prev = xf[t - 1] if t > 0 and not first[t] else torch.zeros_like(xf[0])
            u = torch.cat([act[t], prev]) if c.input_prev_obs else act[t]
            d = _cell(model.cell, torch.cat([u, _act(_linear(model.phi_z[0], z))]), d)
            mu_p, std_p = _gauss(model.prior, d, None)
            mu_q, std_q = _gauss(model.posterior, d, xf[t])
            kl[b, t] = D.kl_divergence(D.Normal(mu_q, std_q), D.Normal(mu_p, std_p)).sum()
            z = mu_q + std_q * eps[b, t]
            logits = _mlp(model.emission.net, torch.cat([z, d]))
            log_px[b, t] = D.Bernoulli(logits=logits).log_prob(x[t]).sum() * m[t]
    return log_px, kl


@pytest.mark.parametrize("prev_obs", [True, False])
def test_elbo_matches_float64_loop(prev_obs):
    torch.manual_seed(0)
    model = build_model("vrnn", "debug", obs_shape=(6,), action_dim=2, input_prev_obs=prev_obs).double()
    batch = make_batch((6,), 2, 3, 7, dtype=torch.float64)
    batch.is_first[2, 3] = True
    batch.mask[1, 4] = False
    torch.manual_seed(5)
    terms = model.elbo_terms(batch)
    torch.manual_seed(5)
    eps = torch.randn(3, 7, model.config.z_dim, dtype=torch.float64)
    log_px, kl = brute_vrnn(model, batch, eps)
    torch.testing.assert_close(terms["log_px"], log_px, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(terms["kl"], kl, rtol=1e-10, atol=1e-10)


def test_posterior_is_filtering():
    """q(z_t | x_t, d_t) never sees the future: imputation of a gap ignores frames after it."""
    torch.manual_seed(0)
    model = build_model("vrnn", "debug", obs_shape=(6,), action_dim=2).double().eval()
    batch = make_batch((6,), 2, 2, 8, dtype=torch.float64)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[:, 3:5] = False
    later = batch.obs.clone()
    later[:, 6:] = 1 - later[:, 6:]
    x, y = model.impute(batch.obs, batch.action, mask), model.impute(later, batch.action, mask)
    torch.testing.assert_close(x[:, :6], y[:, :6])
    torch.testing.assert_close(x[mask], batch.obs[mask])
