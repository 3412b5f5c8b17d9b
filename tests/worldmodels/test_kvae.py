"""KVAE (thesis Ch. 6): the ELBO, filtering, smoothing and imputation against float64 brute force.

The oracle is the joint Gaussian of ``(z_{1:T}, a_{1:T})`` built by unrolling eq. (6.1)-(6.2) with the
mixture matrices the model chose (eq. (6.10)); the alpha-network inputs are recomputed independently
(``a_0``, then ``a_{t-1}`` or, for a missing step, ``C_{t-1} mu_{t-1|t-1}``, eq. (6.12)-(6.13)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.worldmodels.contract import WorldModelContract
from worldmodels.api import Batch
from worldmodels.models import build_model
from worldmodels.models.kvae import KVAE, KVAEConfig


def _model(**over) -> KVAE:
    torch.manual_seed(0)
    m = build_model("kvae", "debug", **over)
    assert isinstance(m, KVAE)
    with torch.no_grad():  # make the mixture and the control visible in every test
        m.A_k.add_(0.2 * torch.randn_like(m.A_k))
        m.C_k.normal_()
        m.B_k.normal_()
        m.alpha_net.out.weight.mul_(5.0)
        m.alpha_net.cell.weight_ih.mul_(5.0)
    return m.double()


def _balls(n: int, T: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """A 3x3 square moving at constant velocity, bouncing off the edges: ``[n, T, 1, size, size]``."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, T, 1, size, size), np.float32)
    for i in range(n):
        p = rng.uniform(2, size - 3, 2)
        v = rng.uniform(-1.5, 1.5, 2)
        for t in range(T):
            r, c = int(round(p[0])), int(round(p[1]))
            x[i, t, 0, r - 1 : r + 2, c - 1 : c + 2] = 1.0
            p = p + v
            for d in range(2):
                if p[d] < 1 or p[d] > size - 2:
                    v[d] = -v[d]
                    p[d] = np.clip(p[d], 1, size - 2)
    return torch.from_numpy(x)


def _alpha_inputs_oracle(m: KVAE, a: torch.Tensor, mask: torch.Tensor, a_filt: torch.Tensor) -> torch.Tensor:
    """alpha_t from a fresh LSTM pass over ``[a_0, â_1, ..., â_{T-1}]`` (â = a if observed, else filter)."""
    B, T, _ = a.shape
    state = m.alpha_net.initial_state(B, a)
    prev = m.a0.expand(B, -1)
    out = []
    for t in range(T):
        alpha, state = m.alpha_net(prev, state)
        out.append(alpha)
        prev = torch.where(mask[:, t, None], a[:, t], a_filt[:, t])
    return torch.stack(out, 1)


def _joint_gaussian(m: KVAE, A: torch.Tensor, C: torch.Tensor, bu: torch.Tensor):
    """Mean and covariance of ``z [T z]`` and ``a [T x]`` for one sequence, eq. (6.1)-(6.2) unrolled.

    ``A [T, z, z]`` (``A[0]`` unused), ``C [T, x, z]``, ``bu [T, z]`` (``bu[0]`` unused).
    """
    T, z = A.shape[0], A.shape[1]
    x = C.shape[1]
    mz = torch.zeros(T, z, dtype=torch.float64)
    mz[0] = m.mu0
    for t in range(1, T):
        mz[t] = A[t] @ mz[t - 1] + bu[t]
    # z - mz = L e with e = (e_1 ~ N(0, Sigma0), w_2..w_T ~ N(0, Q))
    L = torch.zeros(T * z, T * z, dtype=torch.float64)
    for s in range(T):
        M = torch.eye(z, dtype=torch.float64)
        for t in range(s, T):
            if t > s:
                M = A[t] @ M
            L[t * z : (t + 1) * z, s * z : (s + 1) * z] = M
    S_e = torch.block_diag(m.Sigma0, *([m.Q] * (T - 1)))
    Szz = L @ S_e @ L.T
    Cb = torch.block_diag(*C)  # [T x, T z]
    Saa = Cb @ Szz @ Cb.T + torch.block_diag(*([m.R] * T))
    Sza = Szz @ Cb.T
    return mz.reshape(-1), Szz, (Cb @ mz.reshape(-1)), Saa, Sza, x


def test_log_p_a_matches_joint_gaussian_with_controls_and_mixture():
    m = _model(action_dim=2)
    B, T = 3, 6
    g = torch.Generator().manual_seed(1)
    a = torch.randn(B, T, m.config.a_dim, generator=g, dtype=torch.float64)
    u = torch.randn(B, T, 2, generator=g, dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.bool)
    fres, (zs, Ps), alpha, _ = m._run_lgssm(a, u, mask, smooth=True)
    alpha_ref = _alpha_inputs_oracle(m, a, mask, a)
    torch.testing.assert_close(alpha, alpha_ref)
    assert alpha.std(1).mean() > 0.05  # the mixture really changes over time
    for b in range(B):
        A = torch.einsum("tk,kij->tij", alpha_ref[b], m.A_k)
        C = torch.einsum("tk,kij->tij", alpha_ref[b], m.C_k)
        bu = torch.einsum("tk,kij,tj->ti", alpha_ref[b], m.B_k, u[b])
        mz, Szz, ma, Saa, Sza, _ = _joint_gaussian(m, A, C, bu)
        ref = torch.distributions.MultivariateNormal(ma, Saa).log_prob(a[b].reshape(-1))
        torch.testing.assert_close(fres.log_likelihood[b], ref)
        # exact smoothing posterior p(z | a, u): Gaussian conditioning
        post = mz + Sza @ torch.linalg.solve(Saa, a[b].reshape(-1) - ma)
        torch.testing.assert_close(zs[b].reshape(-1), post)
        post_cov = Szz - Sza @ torch.linalg.solve(Saa, Sza.T)
        for t in range(T):
            torch.testing.assert_close(Ps[b, t], post_cov[t * 4 : (t + 1) * 4, t * 4 : (t + 1) * 4])


def test_eq_6_8_with_a_joint_smoothed_sample_equals_log_p_a():
    """Eq. (6.8): log p(a, z|u) - log p(z|a, u) at a joint sample z ~ p(z|a, u) is log p(a|u) for every z."""
    from worldmodels.kalman import LGSSMParams, kalman_smooth, sample_smoothed

    m = _model(action_dim=1)
    B, T, z = 2, 5, m.config.z_dim
    g = torch.Generator().manual_seed(4)
    a = torch.randn(B, T, m.config.a_dim, generator=g, dtype=torch.float64)
    u = torch.randn(B, T, 1, generator=g, dtype=torch.float64)
    with torch.no_grad():
        fres, _, alpha, _ = m._run_lgssm(a, u, torch.ones(B, T, dtype=torch.bool), smooth=False)
        A, Bu, C = m.mixture(alpha)  # [B, T, ...] time-varying matrices of eq. (6.10)
        params = LGSSMParams(A=A, C=C, Q=m.Q, R=m.R, mu0=m.mu0, Sigma0=m.Sigma0, Bu=Bu)
        zs = sample_smoothed(kalman_smooth(a, params, u=u), params, n=3, generator=g)  # [3, B, T, z]
        for b in range(B):
            bu = torch.einsum("tij,tj->ti", Bu[b], u[b])
            mz, Szz, ma, Saa, Sza, _ = _joint_gaussian(m, A[b], C[b], bu)
            post_mean = mz + Sza @ torch.linalg.solve(Saa, a[b].reshape(-1) - ma)
            post_cov = Szz - Sza @ torch.linalg.solve(Saa, Sza.T)
            q = torch.distributions.MultivariateNormal(post_mean, post_cov)
            prior = torch.distributions.MultivariateNormal(mz, Szz)
            for zi in zs[:, b]:
                lik = torch.distributions.MultivariateNormal(
                    torch.einsum("tij,tj->ti", C[b], zi), m.R
                ).log_prob(a[b]).sum()
                est = prior.log_prob(zi.reshape(-1)) + lik - q.log_prob(zi.reshape(-1))
                torch.testing.assert_close(est, fres.log_likelihood[b])
    assert zs.shape == (3, B, T, z)


def test_missing_steps_use_filter_estimate_and_smoother_conditions_on_observed_only():
    m = _model()
    B, T = 2, 7
    obs = _balls(B, T).double()
    mask = torch.tensor([[1, 1, 0, 0, 1, 0, 1], [1, 0, 1, 0, 0, 0, 1]], dtype=torch.bool)
    out = m.infer(obs, torch.zeros(B, T, 0, dtype=torch.float64), mask, smooth=True)
    a = out["a_enc"]
    alpha_ref = _alpha_inputs_oracle(m, a, mask, out["a_filt"])
    torch.testing.assert_close(out["alpha"], alpha_ref)
    for b in range(B):
        A = torch.einsum("tk,kij->tij", alpha_ref[b], m.A_k)
        C = torch.einsum("tk,kij->tij", alpha_ref[b], m.C_k)
        mz, Szz, ma, Saa, Sza, x = _joint_gaussian(m, A, C, torch.zeros(T, 4, dtype=torch.float64))
        rows = torch.cat([torch.arange(t * x, (t + 1) * x) for t in range(T) if mask[b, t]])
        ao = a[b].reshape(-1)[rows]
        post = mz + Sza[:, rows] @ torch.linalg.solve(Saa[rows][:, rows], ao - ma[rows])
        torch.testing.assert_close(out["z_smooth"][b].reshape(-1), post)
        # filtering at t: condition on the observed a_{1:t} only
        for t in range(T):
            r = torch.cat([torch.arange(s * x, (s + 1) * x) for s in range(t + 1) if mask[b, s]])
            f = mz + Sza[:, r] @ torch.linalg.solve(Saa[r][:, r], a[b].reshape(-1)[r] - ma[r])
            torch.testing.assert_close(out["z_filt"][b, t], f[t * 4 : (t + 1) * 4])


def test_elbo_is_the_sum_of_its_terms_against_torch_distributions():
    m = _model()
    B, T = 2, 5
    obs = _balls(B, T).double()
    batch = Batch(obs=obs, action=torch.zeros(B, T, 0, dtype=torch.float64))
    torch.manual_seed(3)
    out = m.loss(batch, beta=0.5)
    torch.manual_seed(3)
    torch.set_grad_enabled(False)
    a_mean, a_var = m.encode(obs)
    a = a_mean + a_var.sqrt() * torch.randn_like(a_mean)
    probs = torch.sigmoid(m.decode_logits(a))
    log_px = torch.distributions.Bernoulli(probs=probs).log_prob(obs).sum((2, 3, 4))
    log_qa = torch.distributions.Normal(a_mean, a_var.sqrt()).log_prob(a).sum(-1)
    fres, _, _, _ = m._run_lgssm(a, None, torch.ones(B, T, dtype=torch.bool), smooth=False)
    n = B * T
    px, qa, pa = log_px.sum() / n, log_qa.sum() / n, fres.log_likelihood.sum() / n
    torch.set_grad_enabled(True)
    assert out.metrics["elbo"] == pytest.approx(float(px + pa - qa), rel=1e-6)
    assert float(out.loss.detach()) == pytest.approx(float(-(0.3 * px + 0.5 * (pa - qa))), rel=1e-6)


def test_masked_elbo_ignores_missing_frames():
    m = _model()
    B, T = 2, 6
    obs = _balls(B, T).double()
    mask = torch.tensor([[1, 1, 0, 1, 0, 1]] * B, dtype=torch.bool)
    other = obs.clone()
    other[:, 2] = 1.0 - other[:, 2]
    other[:, 4] = float("nan")  # missing frames may hold anything
    act = torch.zeros(B, T, 0, dtype=torch.float64)
    torch.manual_seed(0)
    l1 = m.loss(Batch(obs=obs, action=act, mask=mask))
    torch.manual_seed(0)
    l2 = m.loss(Batch(obs=other, action=act, mask=mask))
    assert l1.metrics == l2.metrics
    torch.manual_seed(0)
    l3 = m.loss(Batch(obs=obs, action=act))
    assert l3.metrics["elbo"] != l1.metrics["elbo"]
    x1 = m.impute(obs, act, mask)
    x2 = m.impute(other, act, mask)
    torch.testing.assert_close(x1[:, [2, 4]], x2[:, [2, 4]])
    torch.testing.assert_close(x1[mask], obs[mask])  # observed frames returned unchanged


def test_imagine_continues_the_filter_of_a_masked_tail():
    """observe + imagine == one filter pass where the future frames are missing (eq. (6.12)-(6.13))."""
    m = _model(action_dim=2)
    B, T, H = 3, 8, 4
    obs = _balls(B, T).double()
    act = torch.randn(B, T, 2, dtype=torch.float64)
    act[:, 0] = 0
    im = m.predict(obs[:, : T - H], act[:, : T - H], act[:, T - H :])
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[:, T - H :] = False
    out = m.infer(obs, act, mask, smooth=False)
    torch.testing.assert_close(im.extras["z"], out["z_filt"][:, T - H :])
    torch.testing.assert_close(im.extras["alpha"], out["alpha"][:, T - H :])
    torch.testing.assert_close(im.obs, out["x_filt"][:, T - H :])
    C = out["C"][:, T - H :]
    a_cov = C @ out["z_filt_cov"][:, T - H :] @ C.mT + m.R
    torch.testing.assert_close(im.uncertainty, a_cov.diagonal(dim1=-2, dim2=-1).sum(-1))
    # imagination continues from Imagination.belief: 2 + 2 steps == 4 steps
    bel = m.observe(obs[:, : T - H], act[:, : T - H])
    first = m.imagine(bel, act[:, T - H : T - 2])
    rest = m.imagine(first.belief, act[:, T - 2 :])
    torch.testing.assert_close(torch.cat([first.latent, rest.latent], 1), im.latent)
    # a belief of batch 1 is shared by N candidate action sequences
    bel = m.observe(obs[:1, :4], act[:1, :4])
    im2 = m.imagine(bel, act[:, 4:])
    assert im2.obs.shape == (B, 4, 1, 16, 16)
    assert not torch.allclose(im2.latent[0], im2.latent[1])  # different controls, different futures


def test_bad_inputs_raise_clear_errors():
    m = build_model("kvae", "debug")
    x = torch.zeros(2, 5, 1, 16, 16)
    with pytest.raises(ValueError, match=r"expected shape \(\*, \*, 1, 16, 16\)"):
        m.observe(torch.zeros(2, 5, 1, 32, 32), torch.zeros(2, 5, 0))
    with pytest.raises(ValueError, match="KVAE action"):
        m.observe(x, torch.zeros(2, 5, 3))
    bad = x.clone()
    bad[0, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        m.observe(bad, torch.zeros(2, 5, 0))
    with pytest.raises(TypeError, match="torch.bool"):
        m.impute(x, torch.zeros(2, 5, 0), torch.ones(2, 5))
    with pytest.raises(ValueError, match="belief batch"):
        m.imagine(m.observe(x, torch.zeros(2, 5, 0)), torch.zeros(3, 2, 0))
    with pytest.raises(ValueError, match="divisible by 8"):
        KVAEConfig(obs_shape=(1, 20, 20))
    with pytest.raises(ValueError, match="'cnn' or 'mlp'"):
        KVAEConfig(encoder="resnet")
    with pytest.raises(ValueError, match="'float32' or 'bfloat16', received 'fp8'"):
        KVAEConfig(conv_precision="fp8")
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("kvae", "tiny")


def test_bfloat16_convs_match_float32_and_keep_the_kalman_part_in_float32():
    """Mixed precision touches the conv layers only: same loss and gradients up to bf16 rounding."""
    torch.manual_seed(0)
    f32 = build_model("kvae", "box", filters=(8, 8, 8))
    bf16 = build_model("kvae", "box", filters=(8, 8, 8), conv_precision="bfloat16")
    bf16.load_state_dict(f32.state_dict())
    batch = Batch(obs=(torch.rand(4, 6, 1, 32, 32) > 0.95).float(), action=torch.zeros(4, 6, 0))
    grads, losses = [], []
    for m in (f32, bf16):
        torch.manual_seed(1)  # same q(a|x) sample
        out = m.loss(batch)
        out.loss.backward()
        losses.append(out.loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    assert bf16.decoder(torch.zeros(3, 2)).dtype == torch.float32
    assert losses[1] == pytest.approx(losses[0], rel=2e-2)
    assert losses[1] != losses[0]  # bf16 really ran
    cos = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cos > 0.99
    with torch.no_grad():  # the filter runs in float32
        assert bf16.observe(batch.obs, batch.action).features.dtype == torch.float32


def test_checkpoint_round_trip(tmp_path):
    from worldmodels import checkpoint

    m = build_model("kvae", "debug", action_dim=1).eval()
    obs = _balls(2, 6)
    act = torch.rand(2, 6, 1)
    mask = torch.tensor([[1, 1, 0, 0, 1, 1]] * 2, dtype=torch.bool)
    checkpoint.save(tmp_path / "kvae", m)
    m2 = checkpoint.load(tmp_path / "kvae")
    torch.testing.assert_close(m2.impute(obs, act, mask), m.impute(obs, act, mask), rtol=0, atol=0)


def _impute_error(m: KVAE, obs: torch.Tensor, mask: torch.Tensor, smooth: bool) -> float:
    x = m.impute(obs, torch.zeros(*obs.shape[:2], 0), mask, smooth=smooth)
    miss = ~mask
    return float(((x[miss] > 0.5).float() != obs[miss]).float().mean())


def _train(m: KVAE, data: torch.Tensor, steps: int, batch: int, lr: float, alpha_from: int) -> list[float]:
    torch.manual_seed(0)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    elbos = []
    for s in range(steps):
        m.alpha_net.requires_grad_(s >= alpha_from)
        idx = torch.randint(0, data.shape[0], (batch,))
        out = m.loss(Batch(obs=data[idx], action=torch.zeros(batch, data.shape[1], 0)))
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 150.0)
        opt.step()
        elbos.append(out.metrics["elbo"])
    return elbos


def test_overfit_debug_preset_on_a_few_bouncing_squares():
    """The tiny preset memorises 8 sequences: ELBO rises a lot and reconstructions become sharp."""
    torch.set_num_threads(1)
    data = _balls(8, 10)
    torch.manual_seed(0)
    m = build_model("kvae", "debug", filters=(16, 16), alpha_units=16)
    elbos = _train(m, data, steps=300, batch=8, lr=0.01, alpha_from=100)
    assert np.mean(elbos[-20:]) > np.mean(elbos[:5]) + 60.0, (elbos[:5], elbos[-20:])
    m.eval()
    with torch.no_grad():
        a_mean, _ = m.encode(data)
        recon = m.decode(a_mean)
    err = float(((recon > 0.5).float() != data).float().mean())
    blank = float(data.mean())
    assert err < 0.5 * blank, (err, blank)


@pytest.mark.slow
def test_smoothing_beats_filtering_after_training():
    """§6.5.1 / Fig. 6.3b in miniature: a 6-frame middle gap is imputed better with smoothing."""
    torch.set_num_threads(1)
    data = _balls(600, 12, seed=1)
    test = _balls(100, 12, seed=2)
    m = build_model("kvae", "debug", filters=(16, 16), alpha_units=16)
    _train(m, data, steps=1500, batch=16, lr=0.007, alpha_from=300)
    m.eval()
    mask = torch.ones(100, 12, dtype=torch.bool)
    mask[:, 3:9] = False
    smooth, filt = _impute_error(m, test, mask, True), _impute_error(m, test, mask, False)
    blank = float(test[:, 3:9].mean())
    assert smooth < filt and smooth < 0.8 * blank, (smooth, filt, blank)
    assert math.isfinite(filt)


def _contract_batch(obs_shape: tuple[int, ...], A: int):
    def make(B: int, T: int, seed: int = 0) -> Batch:
        g = torch.Generator().manual_seed(seed)
        obs = torch.rand(B, T, *obs_shape, generator=g).round()
        action = torch.randn(B, T, A, generator=g)
        action[:, 0] = 0
        return Batch(obs=obs, action=action)

    return make


class TestKVAEContractImages(WorldModelContract):
    """The WorldModel contract on binary 16x16 frames with a 2-d control input."""

    def make_model(self):
        return build_model("kvae", "debug", action_dim=2)

    def make_batch(self, B, T, seed=0):
        return _contract_batch((1, 16, 16), 2)(B, T, seed)


class TestKVAEContractVectors(WorldModelContract):
    """The contract on binary vectors (MLP encoder/decoder) without controls."""

    def make_model(self):
        return build_model("kvae", "debug", obs_shape=(12,), action_dim=0)

    def make_batch(self, B, T, seed=0):
        return _contract_batch((12,), 0)(B, T, seed)


def test_infer_codes_is_infer_on_given_encodings_under_any_mask():
    """Encoding once and filtering under many masks (the imputation curves) gives what ``infer`` gives."""
    m = _model(action_dim=2)
    B, T = 3, 7
    obs, u = _balls(B, T).double(), torch.randn(B, T, 2, dtype=torch.float64)
    a = m.encode(obs)[0]  # encodings of every frame; those of missing frames must not matter
    for mask in (torch.ones(B, T, dtype=torch.bool), torch.tensor([[1, 1, 0, 0, 1, 0, 1]] * B, dtype=torch.bool)):
        ref = m.infer(obs, u, mask, smooth=True)
        out = m.infer_codes(a, u, mask)
        torch.testing.assert_close(out["a_filt"], ref["a_filt"], rtol=0, atol=1e-12)
        torch.testing.assert_close(out["a_smooth"], ref["a_smooth"], rtol=0, atol=1e-12)
        scrambled = torch.where(mask[..., None], a, torch.randn_like(a))
        torch.testing.assert_close(m.infer_codes(scrambled, u, mask)["a_smooth"], out["a_smooth"], rtol=0, atol=0)
    assert sorted(m.infer_codes(a, u, mask, smooth=False)) == ["a_filt"]
    with pytest.raises(ValueError, match=r"KVAE codes: expected shape \(\*, \*, 2\), received \(3, 7, 5\)"):
        m.infer_codes(torch.zeros(B, T, 5, dtype=torch.float64), u, mask)
    with pytest.raises(ValueError, match=r"KVAE mask: expected shape \(3, 7\), received \(3, 6\)"):
        m.infer_codes(a, u, mask[:, 1:])
