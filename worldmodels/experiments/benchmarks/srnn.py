"""Benchmark of the SRNN training step on the music preset (thesis §5.4 sizes: GRU 300, z 100, MLPs 500).

Row: training throughput in sequences x steps per second (forward + backward + Adam update) of
``SRNN`` smooth+Res_q on batches of 16 piano-roll chunks of 100 steps, with 2 threads ("2 cores").
Baseline, measured in the same process on the same batch and weights: a straightforward per-step
implementation of the same model (GRU cells stepped one at a time in both directions, every first layer
applied to its concatenated inputs inside the loop, the emission evaluated step by step); the benchmark
first checks that both compute the same ELBO terms. The piano rolls are Bernoulli(3.9 / 88) noise (the
chorales' note density) so the benchmark needs no data download.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from worldmodels.api import Batch
from worldmodels.models import build_model
from worldmodels.models.srnn import gaussian_kl

B, T, THREADS, REPEATS = 16, 100, 2, 3


def _naive_terms(model, batch: Batch, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same ELBO terms as ``model.elbo_terms`` computed step by step (no batched pre-computation)."""
    obs, mask, is_first = batch.obs, batch.mask, batch.is_first
    xfeat = model.features.encode(obs, mask)
    u = model.features.inputs(batch.action, xfeat, is_first)
    g, gb = model.rnn, model.inference_net
    h = obs.new_zeros(B, g.hidden_size)
    ds = []
    for t in range(T):
        h = torch.gru_cell(u[:, t], h, g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)
        ds.append(h)
    a = obs.new_zeros(B, gb.hidden_size)
    as_: list[torch.Tensor] = [a] * T
    for t in reversed(range(T)):
        a = torch.gru_cell(torch.cat([ds[t], xfeat[:, t]], -1), a, gb.weight_ih_l0, gb.weight_hh_l0,
                           gb.bias_ih_l0, gb.bias_hh_l0)
        as_[t] = a
    z = obs.new_zeros(B, model.config.z_dim)
    log_px, kl = [], []
    for t in range(T):
        mu_p, std_p = model.prior(z, model.prior.pre(ds[t]))
        mu_q, std_q = model.posterior(z, model.posterior.pre(as_[t]))
        mu_q = mu_p + mu_q  # Res_q
        z = mu_q + std_q * eps[:, t]
        kl.append(gaussian_kl(mu_q, std_q, mu_p, std_p))
        log_px.append(model.emission(torch.cat([z, ds[t]], -1)).log_prob(obs[:, t]) * mask[:, t])  # p(x_t | z_t, d_t)
    return torch.stack(log_px, 1), torch.stack(kl, 1)


def _throughput(step, repeats: int) -> float:
    step()  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        step()
    return repeats * B * T / (time.perf_counter() - t)


def run() -> list[dict]:
    n_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        torch.manual_seed(0)
        model: Any = build_model("srnn", "music")
        g = torch.Generator().manual_seed(0)
        batch = Batch(obs=(torch.rand(B, T, 88, generator=g) < 3.9 / 88).float(), action=torch.zeros(B, T, 0))
        # same maths: the fast path and the per-step loop agree on the ELBO terms
        torch.manual_seed(1)
        fast = model.elbo_terms(batch)
        torch.manual_seed(1)
        eps = torch.randn(B, T, model.config.z_dim)
        lp, kl = _naive_terms(model, batch, eps)
        torch.testing.assert_close(lp, fast["log_px"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(kl, fast["kl"], rtol=1e-4, atol=1e-3)

        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def fast_step() -> None:
            out = model.loss(batch, beta=0.2)
            opt.zero_grad()
            out.loss.backward()
            opt.step()

        def naive_step() -> None:
            e = torch.randn(B, T, model.config.z_dim)
            lp, kl = _naive_terms(model, batch, e)
            loss = -(lp.sum() - 0.2 * kl.sum()) / batch.mask.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()

        ours = _throughput(fast_step, REPEATS)
        base = _throughput(naive_step, REPEATS)
        ours = max(ours, _throughput(fast_step, REPEATS))  # interleaved: both see the same machine load
        base = max(base, _throughput(naive_step, REPEATS))
    finally:
        torch.set_num_threads(n_threads)
    ratio = ours / base
    return [{
        "group": "srnn", "name": f"SRNN smooth+Res_q train step, music preset, B={B} T={T}, {THREADS} threads",
        "value": ours, "unit": "seq·steps/s", "baseline": "per-step loop of the same model",
        "baseline_value": base, "ratio": ratio, "goal": ">= 1.2x", "met": bool(ratio >= 1.2),
        "notes": f"{B * T / ours:.2f} s per update of {B}x{T} steps; one thesis-sized JSB epoch (~15 such "
                 f"batches of ~55 steps) takes ~{15 * 55 * B / ours:.0f} s. Machine shared with other jobs.",
    }]


if __name__ == "__main__":
    for row in run():
        print(row)
