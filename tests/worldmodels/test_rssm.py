"""RSSM (PlaNet/Dreamer): contract on small frames (flat MLPs) and 16 px images (conv), float64 oracles
for the KL and the ELBO, masked steps, resets at is_first."""

from __future__ import annotations

import math

import pytest
import torch

from tests.worldmodels.contract import WorldModelContract, random_binary_batch
from worldmodels.api import Batch
from worldmodels.models import build_model
from worldmodels.models.rssm import RSSM, RSSMConfig


class TestRSSMContract(WorldModelContract):
    def make_model(self):
        return build_model("rssm", "debug")

    def make_batch(self, B, T, seed=0):
        return random_binary_batch(B, T, seed)


class TestRSSMConvGaussianContract(WorldModelContract):
    T = 4

    def make_model(self):
        return build_model("rssm", "debug", obs_shape=(3, 16, 16), action_dim=2, likelihood="gaussian")

    def make_batch(self, B, T, seed=0):
        g = torch.Generator().manual_seed(seed)
        return Batch(obs=torch.rand(B, T, 3, 16, 16, generator=g), action=torch.randn(B, T, 2, generator=g))


def test_elbo_matches_float64_recomputation() -> None:
    """The ELBO (free nats off) equals a step-by-step float64 recomputation with the same noise."""
    torch.manual_seed(0)
    m = RSSM(RSSMConfig(**RSSMConfig.PRESETS["debug"])).double()
    b = random_binary_batch(2, 5)
    b = Batch(obs=b.obs.double(), action=b.action.double())
    torch.manual_seed(1)
    out = m.loss(b)
    torch.manual_seed(1)
    c = m.config
    h = torch.zeros(2, c.deter, dtype=torch.float64)
    s = torch.zeros(2, c.stoch, dtype=torch.float64)
    total = 0.0
    for t in range(5):
        h = m.gru(m.inp(torch.cat([s, b.action[:, t]], -1)), h)
        mp, rp = m.prior_net(h).chunk(2, -1)
        sp = torch.nn.functional.softplus(rp) + c.min_std
        mq, rq = m.post_net(torch.cat([h, m.encoder(b.obs[:, t])], -1)).chunk(2, -1)
        sq = torch.nn.functional.softplus(rq) + c.min_std
        s = mq + sq * torch.randn_like(mq)
        p = torch.sigmoid(m.decoder(torch.cat([h, s], -1)))
        x = b.obs[:, t]
        rec = (x * torch.log(p) + (1 - x) * torch.log(1 - p)).flatten(1).sum(-1)
        kl = (torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5).sum(-1)
        total = total + (rec - kl).sum()
    assert math.isclose(out.metrics["elbo"], float(total) / 10, rel_tol=1e-9)
    assert math.isclose(float(out.loss), -float(total) / 10, rel_tol=1e-9)


def test_free_nats_clip_each_step_from_below() -> None:
    m = build_model("rssm", "debug", free_nats=50.0)
    b = random_binary_batch(2, 4)
    out = m.loss(b)
    # every step's KL is below 50 nats at initialisation, so the loss is -rec + 50
    assert out.metrics["kl"] < 50
    assert math.isclose(float(out.loss), -out.metrics["rec"] + 50.0, rel_tol=1e-5)


def test_missing_frames_do_not_reach_the_state() -> None:
    """With mask False at t, the frame at t cannot change the belief, the loss or the imputation of t."""
    m = build_model("rssm", "debug").eval()
    b = random_binary_batch(1, 6, seed=2)
    mask = torch.ones(1, 6, dtype=torch.bool)
    mask[0, 3] = False
    other = b.obs.clone()
    other[0, 3] = 1 - other[0, 3]
    b1 = m.observe(b.obs, b.action, mask)
    b2 = m.observe(other, b.action, mask)
    torch.testing.assert_close(b1.features, b2.features)
    torch.testing.assert_close(m.impute(b.obs, b.action, mask)[0, 3], m.impute(other, b.action, mask)[0, 3])
    torch.manual_seed(0)
    l1 = m.loss(Batch(obs=b.obs, action=b.action, mask=mask))
    torch.manual_seed(0)
    l2 = m.loss(Batch(obs=other, action=b.action, mask=mask))
    torch.testing.assert_close(l1.loss, l2.loss)


def test_state_restarts_at_is_first() -> None:
    """A window with a new episode at t = 3 scores steps 3.. exactly as a window starting there."""
    m = build_model("rssm", "debug", free_nats=0.0).eval()
    b = random_binary_batch(1, 7, seed=3)
    first = torch.zeros(1, 7, dtype=torch.bool)
    first[0, [0, 3]] = True
    action = b.action.clone()
    action[0, 3] = 0
    whole = m._filter(b.obs, action, b.mask, first, sample=False)
    tail = m._filter(b.obs[:, 3:], action[:, 3:], b.mask[:, 3:], first[:, 3:], sample=False)
    torch.testing.assert_close(whole["s"][:, 3:], tail["s"])


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="RSSMConfig.likelihood: expected 'bernoulli' or 'gaussian', received 'bern'"):
        RSSMConfig(likelihood="bern")
    m = build_model("rssm", "debug")
    belief = m.observe(*(lambda b: (b.obs, b.action))(random_binary_batch(2, 3)))
    with pytest.raises(ValueError, match=r"belief batch must be 1 or N=3, received 2"):
        m.imagine(belief, torch.zeros(3, 2, 5))


class TestRSSMLearnedStdContract(WorldModelContract):
    T = 4

    def make_model(self):
        return build_model("rssm", "debug", obs_shape=(3, 8, 8), likelihood="gaussian", learn_obs_std=True)

    def make_batch(self, B, T, seed=0):
        g = torch.Generator().manual_seed(seed)
        return Batch(obs=torch.rand(B, T, 3, 8, 8, generator=g), action=torch.eye(5)[torch.randint(0, 5, (B, T), generator=g)])


@pytest.mark.parametrize("obs_shape", [(3, 4, 4), (3, 16, 16)])
def test_gaussian_likelihood_with_learned_pixel_std_float64(obs_shape: tuple[int, ...]) -> None:
    """``log p(x | h, s)`` with a learned per-channel σ (flat MLP and conv decoders) equals torch's Normal
    log-density in float64; σ is floored at ``min_obs_std``, gets a gradient, and maximising over it alone
    recovers the per-channel residual RMS; the fixed-σ default is unchanged."""
    cfg = {**RSSMConfig.PRESETS["debug"], "obs_shape": obs_shape, "likelihood": "gaussian"}
    m = RSSM(RSSMConfig(**cfg, learn_obs_std=True, obs_std=0.2, min_obs_std=0.05)).double()
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 5, m.config.deter, generator=g, dtype=torch.float64)
    s = torch.randn(2, 5, m.config.stoch, generator=g, dtype=torch.float64)
    x = torch.rand(2, 5, *obs_shape, generator=g, dtype=torch.float64)
    assert torch.allclose(m.pixel_std().flatten(), torch.full((3,), 0.2, dtype=torch.float64))
    with torch.no_grad():
        m.obs_log_std.copy_(torch.log(torch.tensor([0.3, 0.1, 0.01], dtype=torch.float64)))  # last below floor
    mean = m.obs_dist(h, s).mean.detach()
    sigma = torch.tensor([0.3, 0.1, 0.05], dtype=torch.float64).reshape(3, 1, 1)
    expect = torch.distributions.Normal(mean, sigma.expand_as(mean)).log_prob(x).flatten(-3).sum(-1)
    ll = m.obs_dist(h, s).log_prob(x)  # [2, 5]
    torch.testing.assert_close(ll, expect)
    ll.sum().backward()
    assert m.obs_log_std.grad is not None and m.obs_log_std.grad[:2].abs().min() > 0
    assert m.obs_log_std.grad[2] == 0  # floored channel
    with torch.no_grad():
        m.obs_log_std.fill_(0.0)
    opt = torch.optim.Adam([m.obs_log_std], 0.05)
    for _ in range(400):
        opt.zero_grad()
        (-m.obs_dist(h, s).log_prob(x).sum()).backward()
        opt.step()
    rms = (x - mean).square().mean((0, 1, 3, 4)).sqrt()
    torch.testing.assert_close(m.pixel_std().flatten(), rms.clamp_min(0.05), atol=2e-3, rtol=0)
    assert "obs_std" in m.loss(Batch(obs=x[:, :3], action=torch.zeros(2, 3, 5, dtype=torch.float64))).metrics
    fixed = RSSM(RSSMConfig(**cfg, obs_std=0.2)).double()  # default: fixed σ, no extra parameter
    assert not hasattr(fixed, "obs_log_std")
    torch.testing.assert_close(fixed.obs_dist(h, s).scale, torch.full_like(x, 0.2))


def test_learned_std_config_errors() -> None:
    with pytest.raises(ValueError, match="learn_obs_std: expected likelihood='gaussian', received likelihood='bernoulli'"):
        RSSMConfig(learn_obs_std=True)
    with pytest.raises(ValueError, match=r"obs_std > 0.*received obs_std=0"):
        RSSMConfig(likelihood="gaussian", obs_std=0.0)
