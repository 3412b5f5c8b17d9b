"""RNN baseline: the exact log-likelihood against a float64 hand-written GRU loop."""

from __future__ import annotations

import pytest
import torch
from torch import distributions as D

from worldmodels.api import Batch
from worldmodels.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _gru(gru: torch.nn.GRU, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One GRU step written out (PyTorch's gate equations), float64."""
    W_ih, W_hh, b_ih, b_hh = gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0
    gi, gh = x @ W_ih.T + b_ih, h @ W_hh.T + b_hh
    i_r, i_z, i_n = gi.chunk(3, -1)
    h_r, h_z, h_n = gh.chunk(3, -1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def _brute_loglik(model, batch: Batch) -> tuple[float, torch.Tensor]:
    """sum_t log p(x_t | h_t) over observed steps, the fed-back inputs, by a per-sequence loop."""
    c = model.config
    B, T = batch.shape
    total, filled = 0.0, batch.obs.clone()
    for b in range(B):
        h = torch.zeros(c.hidden_dim, dtype=torch.float64)
        e = torch.zeros(c.embed_dim, dtype=torch.float64)
        for t in range(T):
            if batch.is_first[b, t]:
                h, e = torch.zeros_like(h), torch.zeros_like(e)
            u = model.action_embed.linear(batch.action[b, t])
            h = _gru(model.gru, torch.cat([e, u]), h)
            logits = model.emission.net(h)
            if batch.mask[b, t]:
                total += float(D.Bernoulli(logits=logits).log_prob(batch.obs[b, t]).sum())
            else:
                filled[b, t] = torch.sigmoid(logits)
            e = model.encoder(filled[b, t])
    return total, filled


def _batch(B=3, T=7, D_=6, A=2, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(B, T, D_, generator=g, dtype=torch.float64).round()
    action = torch.nn.functional.one_hot(torch.randint(0, A, (B, T), generator=g), A).double()
    return Batch(obs=obs, action=action)


@pytest.mark.parametrize("case", ["full", "episode_reset", "missing"])
def test_exact_log_likelihood_matches_brute_force(case):
    torch.manual_seed(0)
    model = build_model("rnn", "debug", obs_shape=(6,), action_dim=2).double()
    batch = _batch()
    if case == "episode_reset":
        batch.is_first[1, 4] = True
        batch.action[1, 4] = 0
    if case == "missing":
        batch.mask[0, 2] = batch.mask[2, 5] = batch.mask[1, 0] = False
    with torch.no_grad():
        out = model.loss(batch)
        total, filled = _brute_loglik(model, batch)
    n = int(batch.mask.sum())
    assert abs(float(out.loss) - (-total / n)) < 1e-10
    assert abs(out.metrics["elbo"] - total / n) < 1e-10
    if case == "missing":
        with torch.no_grad():
            imputed = model.impute(batch.obs, batch.action, batch.mask)
        torch.testing.assert_close(imputed, filled, atol=1e-12, rtol=0)
        torch.testing.assert_close(imputed[batch.mask], batch.obs[batch.mask], atol=0, rtol=0)


def test_imagine_feeds_back_predicted_means_and_impute_agrees_with_predict():
    torch.manual_seed(0)
    model = build_model("rnn", "debug", obs_shape=(6,), action_dim=2).double()
    batch = _batch(B=2, T=8)
    ctx = 5
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[:, ctx:] = False  # impute the tail = open-loop prediction from the context
    with torch.no_grad():
        pred = model.predict(batch.obs[:, :ctx], batch.action[:, :ctx], batch.action[:, ctx:])
        imputed = model.impute(batch.obs, batch.action, mask)
        _, filled = _brute_loglik(model, Batch(obs=batch.obs, action=batch.action, mask=mask))
    torch.testing.assert_close(pred.obs, imputed[:, ctx:], atol=1e-12, rtol=0)
    torch.testing.assert_close(pred.obs, filled[:, ctx:], atol=1e-12, rtol=0)
    p = pred.obs
    torch.testing.assert_close(pred.uncertainty, (p * (1 - p)).mean(-1))


def test_sampled_imagination_is_binary_and_seeded():
    torch.manual_seed(0)
    model = build_model("rnn", "debug", obs_shape=(6,), action_dim=2)
    batch = _batch(B=1, T=4)
    with torch.no_grad():
        belief = model.observe(batch.obs.float(), batch.action.float())
        acts = torch.zeros(5, 3, 2)
        a = model.imagine(belief, acts, sample=True, generator=torch.Generator().manual_seed(1))
        b = model.imagine(belief, acts, sample=True, generator=torch.Generator().manual_seed(1))
    assert a.samples is not None and a.samples.shape == (5, 3, 6)
    assert set(a.samples.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a.samples, b.samples)


def test_learns_a_deterministic_action_effect():
    """obs_t = one-hot of the action that led to it: after training, prediction follows the actions."""
    torch.manual_seed(0)
    model = build_model("rnn", "debug", obs_shape=(3,), action_dim=3)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 3, (64, 6), generator=g)
    action = torch.nn.functional.one_hot(ids, 3).float()
    batch = Batch(obs=action.clone(), action=action)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(150):
        loss = model.loss(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    future = torch.nn.functional.one_hot(torch.tensor([[2, 0, 1, 1]]), 3).float()
    with torch.no_grad():
        pred = model.predict(batch.obs[:1], batch.action[:1], future).obs
    assert (pred.argmax(-1) == future.argmax(-1)).all() and float(pred.max(-1).values.min()) > 0.8


def test_right_padded_batch_loss_equals_per_sequence_log_likelihood():
    """Trailing missing frames (padding) take the fused path; the loss is still the exact per-frame
    log-likelihood of each row's observed prefix."""
    torch.manual_seed(0)
    model = build_model("rnn", "debug", obs_shape=(6,), action_dim=2).double()
    batch = _batch(B=3, T=7)
    batch = Batch(obs=batch.obs.double(), action=batch.action.double(),
                  mask=torch.arange(7)[None, :] < torch.tensor([7, 4, 2])[:, None])
    got = model.loss(batch).metrics["elbo"]
    total = sum(_brute_loglik(model, Batch(obs=batch.obs[b:b + 1, :L], action=batch.action[b:b + 1, :L]))[0]
                for b, L in enumerate([7, 4, 2]))
    assert got == pytest.approx(total / 13, rel=1e-9)


def test_dropout_only_in_the_training_loss():
    torch.manual_seed(0)
    model = build_model("rnn", "debug", obs_shape=(6,), action_dim=2, dropout=0.5).double()
    batch = _batch()
    model.eval()
    a, b = model.loss(batch).metrics["elbo"], model.loss(batch).metrics["elbo"]
    assert a == b
    model.train()
    assert model.loss(batch).metrics["elbo"] != a
    with torch.no_grad():  # observe/imagine stay deterministic in training mode
        f1 = model.observe(batch.obs, batch.action).features
        f2 = model.observe(batch.obs, batch.action).features
    torch.testing.assert_close(f1, f2)
    with pytest.raises(ValueError, match="dropout"):
        build_model("rnn", "debug", obs_shape=(6,), action_dim=2, dropout=1.5)
