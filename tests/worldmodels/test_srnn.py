"""SRNN (thesis Ch. 5): the world-model contract, the ELBO of eq. (5.8) against a float64 per-sequence
loop written from the equations, the smoothing/filtering and Res_q structure (Table 5.1 variants),
imagination that feeds back its own frames, and imputation."""

from __future__ import annotations

import pytest
import torch
from torch import distributions as D

from tests.worldmodels._seq_models import (
    ImageContract,
    VectorContract,
    _act,
    _gauss,
    _gru,
    _mlp,
    brute_elbo,
    make_batch,
)
from tests.worldmodels.contract import run_contract
from worldmodels.api import Batch
from worldmodels.models import build_model
from worldmodels.models.srnn import SRNNConfig, gaussian_kl, run_gru

pytestmark = pytest.mark.usefixtures("one_thread")

# ----------------------------------------------------------------------------- contract


class TestSRNNContractVectors(VectorContract):
    """smooth + Res_q, Bernoulli vectors, u_t = [action, x_{t-1}]."""

    model_name = "srnn"


class TestSRNNContractImages(ImageContract):
    """Action-conditioned video world model: conv encoder/decoder of worldmodels.nn, previous frame in u_t."""

    model_name = "srnn"
    image_overrides = {"input_prev_obs": True}


@pytest.mark.parametrize("inference,residual_q", [("filter", False), ("filter", True), ("smooth", False)])
def test_contract_other_variants_gaussian(inference, residual_q):
    """The other Table 5.1 variants with Gaussian vectors and actions only (no previous frame)."""
    run_contract(
        lambda: build_model("srnn", "debug", obs_shape=(5,), action_dim=2, obs_kind="gaussian",
                            inference=inference, residual_q=residual_q, input_prev_obs=False),
        lambda B, T, seed=0: make_batch((5,), 2, B, T, seed, binary=False),
        obs_range=None,
    )


# ----------------------------------------------------------------------------- float64 oracle


@pytest.mark.parametrize("preset", ["music", "music_smooth", "music_filt_resq", "music_filt"])
def test_elbo_matches_float64_loop(preset):
    """All four Table 5.1 variants, with a mid-window episode start and missing frames."""
    sizes = dict(SRNNConfig.PRESETS["debug"])
    torch.manual_seed(0)
    model = build_model("srnn", preset, obs_shape=(6,), action_dim=2, **sizes).double()
    batch = make_batch((6,), 2, 3, 7, dtype=torch.float64)
    batch.is_first[1, 4] = True
    batch.mask[0, 2] = batch.mask[2, 5] = False
    torch.manual_seed(11)
    terms = model.elbo_terms(batch)
    torch.manual_seed(11)
    eps = torch.randn(3, 7, model.config.z_dim, dtype=torch.float64)
    log_px, kl = brute_elbo(model, batch, eps)
    torch.testing.assert_close(terms["log_px"], log_px, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(terms["kl"], kl, rtol=1e-10, atol=1e-10)


def test_loss_is_per_observed_frame_and_beta_weights_kl():
    model = build_model("srnn", "debug", obs_shape=(6,), action_dim=2).double()
    batch = make_batch((6,), 2, 3, 5, dtype=torch.float64)
    batch.mask[0, 1:3] = False
    torch.manual_seed(3)
    with torch.no_grad():
        t = model.elbo_terms(batch)
    n = float(batch.mask.sum())
    for beta in (0.2, 1.0):
        torch.manual_seed(3)
        out = model.loss(batch, beta=beta)
        expect = -(t["log_px"].sum() - beta * t["kl"].sum()) / n
        assert float(out.loss.detach()) == pytest.approx(float(expect), rel=1e-10)
        assert out.metrics["elbo"] == pytest.approx(float((t["log_px"].sum() - t["kl"].sum()) / n), rel=1e-6)


def test_gaussian_kl_against_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)
    sq, sp = torch.rand(4, 5, generator=g, dtype=torch.float64) + 0.1, torch.rand(4, 5, generator=g,
                                                                                  dtype=torch.float64) + 0.1
    expect = D.kl_divergence(D.Normal(mq, sq), D.Normal(mp, sp)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mq, sq, mp, sp), expect)


def test_run_gru_resets_match_separate_episodes():
    """A reset inside the window equals running the two episodes separately, forward and backward."""
    torch.manual_seed(0)
    gru = torch.nn.GRU(3, 4, batch_first=True).double()
    x = torch.randn(1, 7, 3, dtype=torch.float64)
    reset = torch.zeros(1, 7, dtype=torch.bool)
    reset[0, 0] = reset[0, 3] = True
    for reverse in (False, True):
        got = run_gru(gru, x, reset, reverse=reverse)
        parts = [run_gru(gru, x[:, :3], reverse=reverse), run_gru(gru, x[:, 3:], reverse=reverse)]
        torch.testing.assert_close(got, torch.cat(parts, 1))
    torch.testing.assert_close(run_gru(gru, x, reverse=True), gru(x.flip(1))[0].flip(1))


# ----------------------------------------------------------------------------- structure of the variants


def _posteriors(model, batch):
    d, a = model.contexts(batch.obs, batch.action, batch.mask, batch.is_first)
    return model.posterior_chain(d, a, batch.is_first, sample=False)


@pytest.mark.parametrize("inference", ["smooth", "filter"])
def test_smoothing_uses_the_future_and_filtering_does_not(inference):
    """q(z_t | z_{t-1}, a_t): a_t sees x_{t:T} with the backward GRU (eq. (5.7)), only [d_t, x_t] when filtering."""
    torch.manual_seed(0)
    model = build_model("srnn", "debug", obs_shape=(6,), action_dim=0, inference=inference).double()
    batch = make_batch((6,), 0, 2, 8, dtype=torch.float64)
    changed = Batch(obs=batch.obs.clone(), action=batch.action)
    changed.obs[:, 5:] = 1 - changed.obs[:, 5:]
    p0, p1 = _posteriors(model, batch), _posteriors(model, changed)
    d0, _ = model.contexts(batch.obs, batch.action, batch.mask, batch.is_first)
    d1, _ = model.contexts(changed.obs, changed.action, changed.mask, changed.is_first)
    torch.testing.assert_close(d0[:, :5], d1[:, :5])  # the deterministic path never looks ahead
    diff = (p0["mu_q"][:, :5] - p1["mu_q"][:, :5]).abs().max()
    if inference == "smooth":
        assert diff > 1e-6
    else:
        assert diff == 0


@pytest.mark.parametrize("residual_q", [True, False])
def test_res_q_learns_the_residual_of_the_prior_mean(residual_q):
    """eq. (5.12): with NN_1^(q) = 0 the posterior mean is the prior mean (Res_q) or zero (eq. (5.10))."""
    torch.manual_seed(0)
    model = build_model("srnn", "debug", obs_shape=(6,), action_dim=0, residual_q=residual_q).double()
    with torch.no_grad():
        z = model.config.z_dim
        model.posterior.out.weight[:z] = 0
        model.posterior.out.bias[:z] = 0
    p = _posteriors(model, make_batch((6,), 0, 2, 5, dtype=torch.float64))
    expect = p["mu_p"] if residual_q else torch.zeros_like(p["mu_q"])
    torch.testing.assert_close(p["mu_q"], expect)
    assert (p["std_q"] >= model.config.min_std).all() and (p["std_p"] >= model.config.min_std).all()


def test_imagine_feeds_back_its_own_predictions():
    """Imagination step by step from the belief: d_t = GRU(d_{t-1}, [a_t, phi(x_hat_{t-1}), 1]),
    z_t = prior mean, x_hat_t = emission mean (float64 loop)."""
    torch.manual_seed(0)
    model = build_model("srnn", "debug", obs_shape=(6,), action_dim=2, input_prev_obs=True).double().eval()
    batch = make_batch((6,), 2, 2, 5, dtype=torch.float64)
    future = make_batch((6,), 2, 2, 3, seed=1, dtype=torch.float64).action
    belief = model.observe(batch.obs, batch.action)
    im = model.imagine(belief, future)
    for b in range(2):
        d, z, x = belief.state["d"][b], belief.state["z"][b], batch.obs[b, -1]
        for t in range(3):
            u = torch.cat([future[b, t], _act(_mlp(model.features.phi.net, x)), torch.ones(1, dtype=torch.float64)])
            d = _gru(model.rnn, u, d)
            z, _ = _gauss(model.prior, z, d)
            x = torch.sigmoid(_mlp(model.emission.net, torch.cat([z, d])))
            torch.testing.assert_close(im.obs[b, t], x)
    # the belief is the last step of the posterior-mean path
    p = _posteriors(model, batch)
    torch.testing.assert_close(belief.state["z"], p["mu_q"][:, -1])


def test_imagine_samples_are_stochastic_and_binary():
    torch.manual_seed(0)
    model = build_model("srnn", "debug", obs_shape=(6,), action_dim=0).eval()
    batch = make_batch((6,), 0, 1, 4)
    belief = model.observe(batch.obs, batch.action)
    g = torch.Generator().manual_seed(0)
    a = model.imagine(belief, torch.zeros(3, 10, 0), sample=True, generator=g)
    assert a.samples is not None and set(a.samples.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(a.samples[0], a.samples[1])


@pytest.mark.parametrize("inference", ["smooth", "filter"])
def test_impute_keeps_observed_frames_and_smoothing_looks_ahead(inference):
    torch.manual_seed(0)
    model = build_model("srnn", "debug", obs_shape=(6,), action_dim=2, inference=inference,
                        input_prev_obs=False).double().eval()
    batch = make_batch((6,), 2, 2, 8, dtype=torch.float64)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[:, 3:5] = False
    x = model.impute(batch.obs, batch.action, mask)
    torch.testing.assert_close(x[mask], batch.obs[mask])
    assert ((x[~mask] > 0) & (x[~mask] < 1)).all()
    later = batch.obs.clone()
    later[:, 6:] = 1 - later[:, 6:]
    y = model.impute(later, batch.action, mask)
    diff = (x[:, 3:5] - y[:, 3:5]).abs().max()
    assert (diff > 1e-6) if inference == "smooth" else (diff == 0)


def test_bad_config_values_raise():
    with pytest.raises(ValueError, match="inference"):
        build_model("srnn", "debug", obs_shape=(4,), action_dim=1, inference="smoothing")
    with pytest.raises(ValueError, match="obs_kind"):
        build_model("srnn", "debug", obs_shape=(4,), action_dim=1, obs_kind="poisson")
    with pytest.raises(ValueError, match="no inputs"):
        build_model("srnn", "debug", obs_shape=(4,), action_dim=0, input_prev_obs=False)
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("srnn", "musik", obs_shape=(4,), action_dim=1)


# ----------------------------------------------------------------------------- padded batches, dropout


@pytest.mark.parametrize("name,overrides", [("srnn", {}), ("srnn", {"inference": "filter"}), ("dmm", {}),
                                            ("vrnn", {})])
def test_trailing_pad_makes_a_padded_batch_the_sum_of_its_sequences(name, overrides):
    """trailing_pad: a right-padded batch gives each row the ELBO terms of that row alone (a_{T_i+1} = 0,
    no KL on padding); without it the padding changes the bound (KL of padded steps, backward GRU)."""
    torch.manual_seed(0)
    model = build_model(name, "debug", obs_shape=(6,), action_dim=0, trailing_pad=True, **overrides).double()
    lengths = [7, 4, 2]
    batch = make_batch((6,), 0, 3, 7, dtype=torch.float64)
    batch.mask[:] = torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]
    batch.obs[~batch.mask] = 0.0
    got = model.elbo_terms(batch, sample=False)
    got_elbo = (got["log_px"] - got["kl"]).sum(1)
    for b, L in enumerate(lengths):
        one = Batch(obs=batch.obs[b:b + 1, :L], action=batch.action[b:b + 1, :L])
        ref = model.elbo_terms(one, sample=False)
        torch.testing.assert_close(got_elbo[b], (ref["log_px"] - ref["kl"]).sum(1)[0])
    model.config.trailing_pad = False
    plain = model.elbo_terms(batch, sample=False)
    assert float((got_elbo - (plain["log_px"] - plain["kl"]).sum(1)).detach().abs()[1:].min()) > 1e-6
    with pytest.raises(ValueError, match="trailing_pad"):
        build_model(name, "debug", obs_shape=(6,), action_dim=0, trailing_pad=True, train_drop_prob=0.2)


def test_trailing_pad_with_an_episode_start_inside_the_window():
    """Row 0 holds two episodes (t < 3, 3 <= t < 6) then padding: its ELBO is the sum of both episodes'."""
    torch.manual_seed(0)
    model = build_model("srnn", "debug", obs_shape=(6,), action_dim=0, trailing_pad=True).double()
    batch = make_batch((6,), 0, 2, 8, dtype=torch.float64)
    batch.mask[0, 6:] = False
    batch.is_first[0, 3] = True
    got = model.elbo_terms(batch, sample=False)
    got_elbo = (got["log_px"] - got["kl"]).sum(1)
    ref = 0.0
    for lo, hi in ((0, 3), (3, 6)):
        t = model.elbo_terms(Batch(obs=batch.obs[:1, lo:hi], action=batch.action[:1, lo:hi]), sample=False)
        ref = ref + (t["log_px"] - t["kl"]).sum()
    torch.testing.assert_close(got_elbo[0], ref)
    full = model.elbo_terms(Batch(obs=batch.obs[1:], action=batch.action[1:]), sample=False)
    torch.testing.assert_close(got_elbo[1], (full["log_px"] - full["kl"]).sum())


@pytest.mark.parametrize("name", ["srnn", "vrnn", "dmm"])
def test_dropout_acts_in_training_mode_only(name):
    torch.manual_seed(0)
    model = build_model(name, "debug", obs_shape=(6,), action_dim=1, dropout=0.5)
    batch = make_batch((6,), 1, 3, 5)
    model.eval()
    a, b = model.elbo_terms(batch, sample=False), model.elbo_terms(batch, sample=False)
    torch.testing.assert_close(a["log_px"], b["log_px"])
    model.train()
    c = model.elbo_terms(batch, sample=False)
    assert float((c["log_px"] - a["log_px"]).abs().max()) > 1e-4
    with pytest.raises(ValueError, match="dropout"):
        build_model(name, "debug", obs_shape=(6,), action_dim=1, dropout=1.0)


# ----------------------------------------------------------------------------- FIVO (§4.3.2)


def test_fivo_with_one_particle_is_the_single_sample_elbo_estimator():
    """K = 1: no resampling, log p_hat = sum_t log p(x_t|z_t,d_t) + log p(z_t|.) - log q(z_t|.) on one path."""
    torch.manual_seed(0)
    model = build_model("srnn", "debug", obs_shape=(6,), action_dim=2).double()
    batch = make_batch((6,), 2, 3, 6, dtype=torch.float64)
    batch.mask[1, 2] = False
    torch.manual_seed(4)
    got = model.fivo(batch, n_particles=1)
    torch.manual_seed(4)
    terms = model.elbo_terms(batch)  # same noise: the same z path
    d, a = model.contexts(batch.obs, batch.action, batch.mask, batch.is_first)
    torch.manual_seed(4)
    ch = model.posterior_chain(d, a, batch.is_first)
    log_ratio = (D.Normal(ch["mu_p"], ch["std_p"]).log_prob(ch["z"])
                 - D.Normal(ch["mu_q"], ch["std_q"]).log_prob(ch["z"])).sum(-1)
    torch.testing.assert_close(got, (terms["log_px"] + log_ratio).sum(1))


def test_fivo_bound_is_tighter_than_the_elbo_on_average():
    """More particles -> a larger expected bound: E[FIVO_32] > E[FIVO_4] > ELBO (analytic KL), 20 repeats."""
    torch.manual_seed(0)
    model = build_model("srnn", "debug", obs_shape=(6,), action_dim=0).double().eval()
    batch = make_batch((6,), 0, 4, 10, dtype=torch.float64)
    with torch.no_grad():
        torch.manual_seed(0)
        elbo = float(model.elbo(batch, n_samples=20).sum())
        f4 = float(torch.stack([model.fivo(batch, 4) for _ in range(20)]).mean(0).sum())
        f32 = float(torch.stack([model.fivo(batch, 32) for _ in range(20)]).mean(0).sum())
    assert elbo < f4 < f32, (elbo, f4, f32)
    with pytest.raises(ValueError, match="n_particles"):
        model.fivo(batch, 0)


# ----------------------------------------------------------------------------- slow: an experiment check


@pytest.mark.slow
def test_smoothing_beats_filtering_on_a_small_music_subset():
    """Table 5.1's ordering on a small chorale subset: with the same budget, SRNN (smooth) reaches a higher
    ELBO than SRNN (filt) on the chorales it was trained on (the backward GRU sees x_{t:T})."""
    pytest.importorskip("music21")
    from worldmodels.music import MusicBuckets, build_chorales, evaluate_elbo, split_of
    from worldmodels.train import TrainConfig, Trainer

    numbers = [n for n in range(1, 60) if split_of(n) == "train"][:24]
    data = build_chorales(numbers=numbers, progress=False)  # 24 unique chorales, ~1,300 steps
    sizes = {"d_dim": 64, "z_dim": 16, "a_dim": 64, "hidden": 128, "embed_dim": 64}
    elbo = {}
    for preset in ("music_smooth", "music_filt"):
        torch.manual_seed(0)
        model = build_model("srnn", preset, **sizes)
        cfg = TrainConfig(lr=3e-3, batch_size=1, beta0=0.2, beta_anneal_steps=100, epochs=60, seed=0,
                          grad_clip=100.0, progress=False, tensorboard=False)
        Trainer(model, MusicBuckets(data, batch_size=8), cfg).fit()
        elbo[preset] = evaluate_elbo(model, data, n_samples=8)
    assert elbo["music_smooth"] > elbo["music_filt"], elbo
