"""worldmodels.kalman against the brute-force joint Gaussian (float64) and pykalman."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from worldmodels.kalman import (
    LGSSMParams,
    forecast,
    kalman_filter,
    kalman_smooth,
    log_likelihood,
    sample_smoothed,
)

D = torch.float64


# ------------------------------------------------------------------------------------------------
# problem generators and the brute-force oracle


def _spd(n: int, scale: float, g: torch.Generator, batch: tuple[int, ...] = ()) -> torch.Tensor:
    L = torch.randn(*batch, n, n, generator=g, dtype=D)
    return scale * (L @ L.mT / n + 0.3 * torch.eye(n, dtype=D))


def _problem(B=3, T=6, z=3, x=2, nu=2, varying=True, seed=0, p_missing=0.3):
    """Random LGSSM; time-varying per-sequence A, C, Bu when ``varying``, else shared [z, z]."""
    g = torch.Generator().manual_seed(seed)
    shape = (B, T) if varying else ()
    A = 0.9 * torch.linalg.matrix_exp(0.5 * torch.randn(*shape, z, z, generator=g, dtype=D))
    A = A / torch.linalg.matrix_norm(A, ord=2)[..., None, None].clamp_min(1.0) * 1.05
    C = torch.randn(*shape, x, z, generator=g, dtype=D)
    Bu = torch.randn(*shape, z, nu, generator=g, dtype=D)
    params = LGSSMParams(
        A=A, C=C, Q=_spd(z, 0.2, g), R=_spd(x, 0.5, g),
        mu0=torch.randn(B, z, generator=g, dtype=D) if varying else torch.randn(z, generator=g, dtype=D),
        Sigma0=_spd(z, 1.0, g), Bu=Bu,
    )
    y = torch.randn(B, T, x, generator=g, dtype=D) * 2
    u = torch.randn(B, T, nu, generator=g, dtype=D)
    mask = torch.rand(B, T, generator=g) > p_missing
    mask[:, 0] = True
    mask[0, -1] = False
    return y, params, u, mask


def _full(M: torch.Tensor, B: int, T: int) -> torch.Tensor:
    """Broadcast a [r, c] / [B, r, c] / [B, T, r, c] parameter to [B, T, r, c]."""
    if M.dim() == 2:
        M = M[None]
    if M.dim() == 3:
        M = M[:, None]
    return M.expand(B, T, *M.shape[-2:])


def _oracle(y, params, u, mask, b):
    """Exact posteriors of sequence ``b`` from the joint Gaussian of z_{1:T}, x_{1:T} (float64).

    z = M w with w_1 ~ N(mu0, Sigma0), w_t ~ N(Bu_t u_t, Q) and M[t, s] = A_t ... A_{s+1}.
    """
    B, T, x = y.shape
    z = params.Q.shape[-1]
    A, C = _full(params.A, B, T)[b], _full(params.C, B, T)[b]
    bu = torch.zeros(T, z, dtype=D)
    if u is not None:
        bu = (_full(params.Bu, B, T)[b] @ u[b][..., None])[..., 0]
    mu0 = params.mu0 if params.mu0.dim() == 1 else params.mu0[b]
    M = torch.zeros(T * z, T * z, dtype=D)
    for t in range(T):
        Phi = torch.eye(z, dtype=D)
        for s in range(t, -1, -1):
            M[t * z:(t + 1) * z, s * z:(s + 1) * z] = Phi
            Phi = Phi @ A[s]
    mw = torch.cat([mu0, bu[1:].reshape(-1)])
    Sw = torch.block_diag(params.Sigma0, *([params.Q] * (T - 1)))
    mz, Sz = M @ mw, M @ Sw @ M.T
    Cb = torch.block_diag(*C)
    mx, Sx = Cb @ mz, Cb @ Sz @ Cb.T + torch.block_diag(*([params.R] * T))
    Szx = Sz @ Cb.T
    yf = y[b].reshape(-1)

    def condition(steps):
        idx = [t * x + i for t in steps for i in range(x)]
        if not idx:
            return mz, Sz, torch.zeros((), dtype=D)
        Sxx = Sx[idx][:, idx]
        K = torch.linalg.solve(Sxx, Szx[:, idx].T).T
        mean = mz + K @ (yf[idx] - mx[idx])
        cov = Sz - K @ Szx[:, idx].T
        ll = torch.distributions.MultivariateNormal(mx[idx], Sxx).log_prob(yf[idx])
        return mean, cov, ll

    obs = [t for t in range(T) if mask is None or bool(mask[b, t])]
    blk = lambda v, t: v[t * z:(t + 1) * z]  # noqa: E731
    cblk = lambda S, t: S[t * z:(t + 1) * z, t * z:(t + 1) * z]  # noqa: E731
    out = {k: [] for k in ("fm", "fP", "pm", "pP")}
    for t in range(T):
        m, S, _ = condition([s for s in obs if s <= t])
        out["fm"].append(blk(m, t))
        out["fP"].append(cblk(S, t))
        m, S, _ = condition([s for s in obs if s < t])
        out["pm"].append(blk(m, t))
        out["pP"].append(cblk(S, t))
    sm, sS, ll = condition(obs)
    res = {k: torch.stack(v) for k, v in out.items()}
    res["sm"] = sm.reshape(T, z)
    res["sP"] = torch.stack([cblk(sS, t) for t in range(T)])
    res["sS_full"] = sS
    res["ll"] = ll
    return res


def _close(a, b, tol=1e-8):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------------
# exactness


@pytest.mark.parametrize("varying", [True, False], ids=["general", "shared"])
@pytest.mark.parametrize("use_mask", [True, False], ids=["mask", "nomask"])
def test_filter_and_smoother_equal_joint_gaussian(varying, use_mask):
    y, params, u, mask = _problem(varying=varying)
    if not use_mask:
        mask = None
    elif not varying:  # shared path needs a batch-shared mask; the general path gets per-row masks
        mask = mask[:1].expand_as(mask).clone()
    sm = kalman_smooth(y, params, u, mask)
    f = sm.filtered
    assert f.shared is (not varying)
    for b in range(y.shape[0]):
        o = _oracle(y, params, u, mask, b)
        _close(f.mean[b], o["fm"])
        _close(f.cov[b], o["fP"])
        _close(f.pred_mean[b], o["pm"])
        _close(f.pred_cov[b], o["pP"])
        _close(sm.mean[b], o["sm"])
        _close(sm.cov[b], o["sP"])
        _close(f.log_likelihood[b], o["ll"])
    _close(log_likelihood(y, params, u, mask), f.log_likelihood, 1e-12)


@pytest.mark.parametrize("z,x", [(2, 1), (2, 3), (9, 1), (3, 9)])
def test_other_dimensions_equal_joint_gaussian(z, x):
    """Closed-form (x <= 2), unrolled-Cholesky (<= 8) and LAPACK (> 8) solves all exact."""
    y, params, u, mask = _problem(B=2, T=4, z=z, x=x, varying=True, seed=z + x)
    sm = kalman_smooth(y, params, u, mask)
    for b in range(2):
        o = _oracle(y, params, u, mask, b)
        _close(sm.filtered.mean[b], o["fm"])
        _close(sm.mean[b], o["sm"])
        _close(sm.cov[b], o["sP"])
        _close(sm.filtered.log_likelihood[b], o["ll"])


def test_shared_fast_path_equals_general_path():
    y, params, u, mask = _problem(varying=False, T=9)
    mask = mask[:1].expand_as(mask).clone()
    B = y.shape[0]
    batched = LGSSMParams(
        A=params.A.expand(B, 3, 3), C=params.C.expand(B, 2, 3), Q=params.Q, R=params.R,
        mu0=params.mu0, Sigma0=params.Sigma0, Bu=params.Bu.expand(B, 3, 2),
    )
    fast, slow = kalman_smooth(y, params, u, mask), kalman_smooth(y, batched, u, mask)
    assert fast.filtered.shared and not slow.filtered.shared
    for name in ("mean", "cov"):
        _close(getattr(fast, name), getattr(slow, name), 1e-10)
    for name in ("mean", "cov", "pred_mean", "pred_cov", "log_likelihood", "A", "C"):
        _close(getattr(fast.filtered, name), getattr(slow.filtered, name), 1e-10)


def test_matches_pykalman_with_masked_arrays():
    pykalman = pytest.importorskip("pykalman")
    y, params, u, mask = _problem(B=3, T=12, varying=True, seed=3)
    sm = kalman_smooth(y, params, u, mask)
    bu = (params.Bu @ u[..., None])[..., 0]
    for b in range(y.shape[0]):
        kf = pykalman.KalmanFilter(
            transition_matrices=params.A[b, 1:].numpy(),
            observation_matrices=params.C[b].numpy(),
            transition_covariance=params.Q.numpy(),
            observation_covariance=params.R.numpy(),
            transition_offsets=bu[b, 1:].numpy(),
            observation_offsets=np.zeros(2),
            initial_state_mean=params.mu0[b].numpy(),
            initial_state_covariance=params.Sigma0.numpy(),
        )
        X = np.ma.array(y[b].numpy(), mask=np.repeat(~mask[b].numpy()[:, None], 2, axis=1))
        fm, fP = kf.filter(X)
        smm, smP = kf.smooth(X)
        np.testing.assert_allclose(sm.filtered.mean[b].numpy(), fm, rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(sm.filtered.cov[b].numpy(), fP, rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(sm.mean[b].numpy(), smm, rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(sm.cov[b].numpy(), smP, rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(sm.filtered.log_likelihood[b].item(), kf.loglikelihood(X), rtol=1e-9)


def test_no_observed_step_is_the_prior():
    y, params, u, mask = _problem(varying=True, T=5)
    y = torch.full_like(y, float("nan"))  # values at missing steps are never read
    none = torch.zeros_like(mask)
    sm = kalman_smooth(y, params, u, none)
    assert torch.equal(sm.filtered.log_likelihood, torch.zeros(y.shape[0], dtype=D))
    _close(sm.filtered.mean, sm.filtered.pred_mean, 0)
    _close(sm.mean, sm.filtered.mean)  # nothing observed: smoothed = filtered = prior marginals
    _close(sm.cov, sm.filtered.cov)
    o = _oracle(y, params, u, none, 1)
    _close(sm.mean[1], o["sm"])
    _close(sm.cov[1], o["sP"])
    assert torch.isfinite(sample_smoothed(sm, params, 3)).all()


def test_gradcheck_log_likelihood_and_smoother():
    y, params, u, mask = _problem(B=2, T=4, z=2, x=2, nu=1, varying=True, seed=5)
    g = torch.Generator().manual_seed(1)
    Lq, Lr, Ls = (torch.randn(n, n, generator=g, dtype=D) * 0.3 for n in (2, 2, 2))
    inputs = [t.clone().requires_grad_() for t in (y, params.A, params.C, params.Bu, params.mu0, Lq, Lr, Ls)]

    def fn(y, A, C, Bu, mu0, Lq, Lr, Ls):
        eye = torch.eye(2, dtype=D)
        p = LGSSMParams(A, C, Lq @ Lq.T + 0.3 * eye, Lr @ Lr.T + 0.5 * eye, mu0, Ls @ Ls.T + eye, Bu)
        sm = kalman_smooth(y, p, u, mask)
        return sm.filtered.log_likelihood, sm.mean, sm.cov

    assert torch.autograd.gradcheck(fn, inputs)
    # the shared fast path too (time-invariant A, C)
    y2, p2, u2, _ = _problem(B=2, T=4, z=2, x=2, nu=1, varying=False, seed=6)
    ins2 = [t.clone().requires_grad_() for t in (y2, p2.A, p2.C, p2.mu0)]

    def fn2(y, A, C, mu0):
        p = LGSSMParams(A, C, p2.Q, p2.R, mu0, p2.Sigma0, p2.Bu)
        sm = kalman_smooth(y, p, u2, mask[:1].expand(2, 4))
        return sm.filtered.log_likelihood, sm.mean, sm.cov

    assert torch.autograd.gradcheck(fn2, ins2)


def test_step_fn_equals_tensor_driven_filter():
    y, params, u, mask = _problem(varying=True, T=7, seed=8)
    seen = []

    def step_fn(t, y_prev):
        seen.append(y_prev.clone())
        return params.A[:, t], params.Bu[:, t], params.C[:, t]

    p_fn = LGSSMParams(None, None, params.Q, params.R, params.mu0, params.Sigma0)
    a = kalman_smooth(y, params, u, mask)
    b = kalman_smooth(y, p_fn, u, mask, step_fn=step_fn)
    for name in ("mean", "cov"):
        _close(getattr(a, name), getattr(b, name), 1e-12)
    for name in ("mean", "cov", "pred_mean", "pred_cov", "log_likelihood", "A", "C"):
        _close(getattr(a.filtered, name), getattr(b.filtered, name), 1e-12)
    # y_prev: zeros at t = 0, y[t-1] where observed, else C_{t-1} mu_{t-1|t-1} (eq. (6.12)-(6.13))
    assert torch.equal(seen[0], torch.zeros_like(seen[0]))
    est = (params.C @ a.filtered.mean[..., None])[..., 0]
    for t in range(1, y.shape[1]):
        expected = torch.where(mask[:, t - 1, None], y[:, t - 1], est[:, t - 1])
        _close(seen[t], expected, 1e-12)


def test_sample_smoothed_has_the_smoothed_joint_moments():
    y, params, u, mask = _problem(B=2, T=4, z=2, x=1, varying=True, seed=11)
    sm = kalman_smooth(y, params, u, mask)
    n = 40_000
    s = sample_smoothed(sm, params, n, generator=torch.Generator().manual_seed(0))  # [n, B, T, z]
    assert s.shape == (n, 2, 4, 2)
    for b in range(2):
        o = _oracle(y, params, u, mask, b)
        flat = s[:, b].reshape(n, -1)  # [n, T z]
        mean, S = o["sm"].reshape(-1), o["sS_full"]
        se_mean = (S.diagonal() / n).sqrt()
        assert ((flat.mean(0) - mean).abs() < 5 * se_mean).all()
        emp = torch.cov(flat.T)
        se_cov = ((S.diagonal()[:, None] * S.diagonal()[None] + S**2) / n).sqrt()
        assert ((emp - S).abs() < 5 * se_cov).all(), (emp - S).abs() / se_cov  # incl. cross-time terms


def test_forecast_equals_brute_force_propagation():
    T0, H = 4, 3
    y, params, u, mask = _problem(B=2, T=T0 + H, varying=True, seed=13, p_missing=0.0)
    future = mask.clone()
    future[:, T0:] = False
    f = kalman_filter(y[:, :T0], LGSSMParams(params.A[:, :T0], params.C[:, :T0], params.Q, params.R,
                                               params.mu0, params.Sigma0, params.Bu[:, :T0]), u[:, :T0])
    zm, zP, xm, xP = forecast(f.mean[:, -1], f.cov[:, -1], params.A[:, T0:], params.C[:, T0:], params.Q,
                              params.R, params.Bu[:, T0:], u[:, T0:])
    assert zm.shape == (2, H, 3) and zP.shape == (2, H, 3, 3)
    assert xm.shape == (2, H, 2) and xP.shape == (2, H, 2, 2)
    for b in range(2):
        o = _oracle(y, params, u, future, b)
        _close(zm[b], o["sm"][T0:])
        _close(zP[b], o["sP"][T0:])
        C = params.C[b, T0:]
        _close(xm[b], (C @ o["sm"][T0:, :, None])[..., 0])
        _close(xP[b], C @ o["sP"][T0:] @ C.mT + params.R)


# ------------------------------------------------------------------------------------------------
# numerics


def _assert_psd(P: torch.Tensor, tol: float) -> None:
    assert torch.isfinite(P).all()
    assert torch.equal(P, P.mT)
    ev = torch.linalg.eigvalsh(P.double())
    assert (ev > -tol * ev.abs().amax(-1, keepdim=True).clamp_min(1)).all()


@pytest.mark.parametrize("varying", [True, False], ids=["general", "shared"])
def test_float32_stable_over_1000_steps(varying):
    """A slowly rotating 4-d state observed in 2-d, with missing stretches; float32 vs float64."""
    B, T, z, x = 4, 1000, 4, 2
    g = torch.Generator().manual_seed(0)
    th = 0.1
    rot = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=D)
    A = torch.block_diag(rot, 0.999 * rot)
    C = torch.randn(x, z, generator=g, dtype=D)
    params = LGSSMParams(A, C, 1e-3 * torch.eye(z, dtype=D), 0.1 * torch.eye(x, dtype=D),
                         torch.zeros(z, dtype=D), 10 * torch.eye(z, dtype=D))
    if varying:
        params.A = A.expand(B, T, z, z)
    y = torch.randn(B, T, x, generator=g, dtype=D)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[:, 300:450] = False
    if varying:
        mask[1, 600:700] = False
    sm64 = kalman_smooth(y, params, mask=mask)
    p32 = LGSSMParams(*(getattr(params, k).float() for k in ("A", "C", "Q", "R", "mu0", "Sigma0")))
    sm32 = kalman_smooth(y.float(), p32, mask=mask)
    assert sm32.mean.dtype == torch.float32
    for P in (sm32.cov, sm32.filtered.cov, sm32.filtered.pred_cov):
        _assert_psd(P, 1e-5)
    assert torch.isfinite(sm32.mean).all() and torch.isfinite(sm32.filtered.log_likelihood).all()
    torch.testing.assert_close(sm32.mean.double(), sm64.mean, rtol=1e-3, atol=2e-3)
    torch.testing.assert_close(sm32.cov.double(), sm64.cov, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(sm32.filtered.log_likelihood.double(), sm64.filtered.log_likelihood, rtol=1e-4,
                               atol=0.1)


def test_thesis_ball_example_with_zero_process_noise_float32():
    """§3.4 ball tracking: Q = 0, R = 3 I, Sigma_{1|0} = 2 I; covariances collapse but stay PSD."""
    dt, T = 0.2, 1000
    A = torch.tensor([[1, dt, 0, 0], [0, 1, 0, 0], [0, 0, 1, dt], [0, 0, 0, 1]])
    Bu = torch.tensor([[0.0], [0.0], [-0.5 * dt**2], [-dt]])
    params = LGSSMParams(A, torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0]]), torch.zeros(4, 4), 3 * torch.eye(2),
                         torch.zeros(4), 2 * torch.eye(4), Bu)
    u = torch.full((1, T, 1), 9.81)
    z = torch.tensor([0.0, 10.0, 0.0, 1000.0])
    states = []
    for _ in range(T):
        states.append(z)
        z = A @ z + Bu[:, 0] * 9.81
    truth = torch.stack(states)[None]  # [1, T, 4]
    y = truth[..., [0, 2]] + 3**0.5 * torch.randn(1, T, 2)
    mask = torch.ones(1, T, dtype=torch.bool)
    mask[:, 10:-8] = False
    sm = kalman_smooth(y, params, u, mask)
    _assert_psd(sm.cov, 1e-4)
    _assert_psd(sm.filtered.cov, 1e-4)
    err = (sm.mean - truth)[..., [0, 2]].abs().amax()
    assert err < 0.05 * truth[..., [0, 2]].abs().amax()  # imputes the parabola from 18 observations


# ------------------------------------------------------------------------------------------------
# bad input


def test_shape_and_input_errors_name_expected_and_received():
    y, params, u, mask = _problem(B=3, T=6, varying=True)
    bad = LGSSMParams(params.A[:, :5], params.C, params.Q, params.R, params.mu0, params.Sigma0, params.Bu)
    with pytest.raises(ValueError, match=r"params\.A: expected shape \(3, 6, 3, 3\), received \(3, 5, 3, 3"):
        kalman_filter(y, bad, u, mask)
    with pytest.raises(ValueError, match=r"params\.C: expected shape \(2, 3\), received \(3, 3\)"):
        kalman_filter(y, LGSSMParams(params.A, torch.eye(3, dtype=D), params.Q, params.R, params.mu0,
                                     params.Sigma0), mask=mask)
    with pytest.raises(ValueError, match=r"mask: expected shape \(3, 6\), received \(3, 5\)"):
        kalman_filter(y, params, u, mask[:, :5])
    with pytest.raises(ValueError, match=r"y: expected shape \(B, T, x\), received \(6, 2\)"):
        kalman_filter(y[0], params, u, mask)
    with pytest.raises(ValueError, match=r"u: expected shape \(3, 6, 2\), received \(3, 6, 1\)"):
        kalman_filter(y, params, u[..., :1], mask)
    with pytest.raises(ValueError, match=r"u: received controls but params\.Bu is None"):
        kalman_filter(y, LGSSMParams(params.A, params.C, params.Q, params.R, params.mu0, params.Sigma0), u)
    with pytest.raises(TypeError, match=r"params\.Q: expected dtype torch\.float64.*received torch\.float32"):
        kalman_filter(y, LGSSMParams(params.A, params.C, params.Q.float(), params.R, params.mu0,
                                     params.Sigma0), mask=mask)
    with pytest.raises(TypeError, match="mask: expected dtype torch.bool"):
        kalman_filter(y, params, u, mask.float())
    y_nan = y.clone()
    y_nan[1, 2, 0] = float("nan")
    m = mask.clone()
    m[1, 2] = True
    with pytest.raises(ValueError, match=r"y: expected finite values at observed steps.*\[\[1, 2\]\]"):
        kalman_filter(y_nan, params, u, m)
    m[1, 2] = False
    assert torch.isfinite(kalman_filter(y_nan, params, u, m).log_likelihood).all()
    with pytest.raises(ValueError, match=r"step_fn\(t=0\)\[2\] \(C_t\): expected shape \(3, 2, 3\), rec"):
        kalman_filter(y, params, u, mask, step_fn=lambda t, yp: (params.A[:, t], None, params.C[:, t, :1]))
    notpd = LGSSMParams(params.A, params.C, params.Q, -torch.eye(2, dtype=D) * 10, params.mu0, params.Sigma0,
                        params.Bu)
    with pytest.raises(ValueError, match="innovation covariance .* expected a positive definite matrix"):
        kalman_filter(y, notpd, u, mask)


# ------------------------------------------------------------------------------------------------
# property-based: random stable systems, random masks, T up to 1,000


def _random_system(seed: int, T: int, z: int, x: int, radius: float, varying: bool, p_missing: float):
    """A random LGSSM with spectral norm(A) = radius ≤ 1 and Q, R bounded away from singular (float64)."""
    g = torch.Generator().manual_seed(seed)

    def stable(*shape):
        A = torch.randn(*shape, z, z, generator=g, dtype=D)
        return radius * A / torch.linalg.matrix_norm(A, ord=2)[..., None, None]

    A = stable(T) if varying else stable()
    C = torch.randn(*((T,) if varying else ()), x, z, generator=g, dtype=D)
    Q = _spd(z, 0.1, g) + 0.01 * torch.eye(z, dtype=D)
    R = _spd(x, 0.3, g) + 0.05 * torch.eye(x, dtype=D)
    params = LGSSMParams(A=A[None] if varying else A, C=C[None] if varying else C, Q=Q, R=R,
                         mu0=torch.randn(z, generator=g, dtype=D), Sigma0=_spd(z, 3.0, g))
    y = 2 * torch.randn(1, T, x, generator=g, dtype=D)
    mask = torch.rand(1, T, generator=g) >= p_missing
    return y, params, mask


@given(
    seed=st.integers(0, 2**31 - 1),
    T=st.one_of(st.integers(2, 40), st.integers(41, 1000)),
    z=st.integers(1, 4),
    x=st.integers(1, 3),
    radius=st.floats(0.3, 1.0),
    varying=st.booleans(),
    p_missing=st.sampled_from([0.0, 0.3, 0.9, 1.0]),
)
def test_property_random_stable_systems_match_pykalman_and_stay_psd_in_float32(seed, T, z, x, radius, varying,
                                                                              p_missing):
    pykalman = pytest.importorskip("pykalman")
    y, params, mask = _random_system(seed, T, z, x, radius, varying, p_missing)
    sm64 = kalman_smooth(y, params, mask=mask)
    # the float64 oracle: pykalman with masked observations (A_t for t ≥ 2 only: z_1 has no transition)
    kf = pykalman.KalmanFilter(
        transition_matrices=params.A[0, 1:].numpy() if varying else params.A.numpy(),
        observation_matrices=params.C[0].numpy() if varying else params.C.numpy(),
        transition_covariance=params.Q.numpy(), observation_covariance=params.R.numpy(),
        transition_offsets=np.zeros(z), observation_offsets=np.zeros(x),
        initial_state_mean=params.mu0.numpy(), initial_state_covariance=params.Sigma0.numpy(),
    )
    X = np.ma.array(y[0].numpy(), mask=np.repeat(~mask[0].numpy()[:, None], x, axis=1))
    fm, fP = kf.filter(X)
    smm, smP = kf.smooth(X)
    np.testing.assert_allclose(sm64.filtered.mean[0].numpy(), fm, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sm64.filtered.cov[0].numpy(), fP, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sm64.mean[0].numpy(), smm, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sm64.cov[0].numpy(), smP, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sm64.filtered.log_likelihood[0].item(), kf.loglikelihood(X), rtol=1e-8, atol=1e-8)
    # float32: finite, symmetric PSD covariances, close to float64
    p32 = LGSSMParams(*(getattr(params, k).float() for k in ("A", "C", "Q", "R", "mu0", "Sigma0")))
    sm32 = kalman_smooth(y.float(), p32, mask=mask)
    for P in (sm32.cov, sm32.filtered.cov, sm32.filtered.pred_cov):
        _assert_psd(P, 1e-5)
    scale = 1 + sm64.mean.abs().amax()
    assert (sm32.mean.double() - sm64.mean).abs().amax() <= 1e-3 * scale
    assert (sm32.cov.double() - sm64.cov).abs().amax() <= 1e-3 * (1 + sm64.cov.abs().amax())
    ll64 = sm64.filtered.log_likelihood
    assert (sm32.filtered.log_likelihood.double() - ll64).abs().item() <= 1e-4 * (1 + ll64.abs().item())


# ------------------------------------------------------------------------------------------------
# numeric edges (issue #19): asymmetric covariances, a tiny R in float32


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", ["Q", "R", "Sigma0"])
def test_asymmetric_covariance_within_rounding_is_its_symmetric_part(name, dtype):
    y, params, u, mask = _problem(B=3, T=6, varying=True, seed=21)
    y, u = y.to(dtype), u.to(dtype)
    params = LGSSMParams(**{k: None if v is None else v.to(dtype) for k, v in params.__dict__.items()})
    M = getattr(params, name)
    skew = torch.zeros_like(M)
    skew[0, 1] = 0.3 * math.sqrt(torch.finfo(dtype).eps) * M.abs().max()  # less than the tolerance
    M_asym = M + skew
    asym = LGSSMParams(**{**params.__dict__, name: M_asym})
    sym = LGSSMParams(**{**params.__dict__, name: 0.5 * (M_asym + M_asym.mT)})
    a, b = kalman_smooth(y, asym, u, mask), kalman_smooth(y, sym, u, mask)
    assert torch.equal(a.filtered.log_likelihood, b.filtered.log_likelihood)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.cov, b.cov)
    # and the (transposed) lower-triangle variant gives the same numbers: only the symmetric part counts
    c = kalman_smooth(y, LGSSMParams(**{**params.__dict__, name: M_asym.mT}), u, mask)
    assert torch.equal(c.filtered.log_likelihood, a.filtered.log_likelihood)


@pytest.mark.parametrize("name", ["Q", "R", "Sigma0"])
def test_asymmetric_covariance_beyond_rounding_is_refused(name):
    y, params, u, mask = _problem(B=3, T=6, varying=True, seed=22)
    M = getattr(params, name)
    skew = torch.zeros_like(M)
    skew[0, 1] = 0.1  # an upper triangle that disagrees with the lower one
    bad = LGSSMParams(**{**params.__dict__, name: M + skew})
    with pytest.raises(ValueError, match=rf"params\.{name}: expected a symmetric covariance .* received "
                                         r"max \|M - M\^T\| / max \|M\| = "):
        kalman_filter(y, bad, u, mask)
    # also per step of a time-varying R, and in forecast
    R_t = params.R.expand(3, 6, 2, 2).clone()
    R_t[1, 4, 1, 0] += 0.1
    with pytest.raises(ValueError, match=r"params\.R: expected a symmetric covariance"):
        kalman_filter(y, LGSSMParams(**{**params.__dict__, "R": R_t}), u, mask)
    nan = M.clone()
    nan[0, 1] = float("nan")
    with pytest.raises(ValueError, match=rf"params\.{name}: expected a finite covariance matrix, received NaN"):
        kalman_filter(y, LGSSMParams(**{**params.__dict__, name: nan}), u, mask)
    f = kalman_filter(y, params, u, mask)
    up = lambda n: torch.eye(n, dtype=D).roll(1, 1).triu() * 0.1  # noqa: E731  (a strictly upper entry)
    with pytest.raises(ValueError, match=r"^Q: expected a symmetric covariance"):
        forecast(f.mean[:, -1], f.cov[:, -1], params.A[:, :2], params.C[:, :2], params.Q + up(3), params.R)
    with pytest.raises(ValueError, match=r"^R: expected a symmetric covariance"):
        forecast(f.mean[:, -1], f.cov[:, -1], params.A[:, :2], params.C[:, :2], params.Q, params.R + up(2))


def _tiny_noise_system(z: int, x: int, seed: int, T: int = 1000, noise: float = 1e-6):
    """A rotating state observed through a random C with Q = R = noise * I, simulated from the model."""
    g = torch.Generator().manual_seed(seed)
    A = torch.eye(z, dtype=D)
    th = 0.1
    A[:2, :2] = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=D)
    C = torch.randn(x, z, generator=g, dtype=D)
    params = LGSSMParams(A, C, noise * torch.eye(z, dtype=D), noise * torch.eye(x, dtype=D),
                         torch.zeros(z, dtype=D), torch.eye(z, dtype=D))
    s, ys = torch.randn(z, generator=g, dtype=D), []
    for t in range(T):
        if t > 0:
            s = A @ s + noise**0.5 * torch.randn(z, generator=g, dtype=D)
        ys.append(C @ s + noise**0.5 * torch.randn(x, generator=g, dtype=D))
    return torch.stack(ys)[None], params


@pytest.mark.parametrize("varying", [False, True], ids=["shared", "general"])
@pytest.mark.parametrize("z,x,seed", [(2, 2, 1), (4, 2, 2)])
def test_tiny_R_float32_log_likelihood_is_unbiased(z, x, seed, varying):
    """R = 1e-6 I, T = 1000: the float32 log-likelihood is within 5e-5 (relative) of the exact float64 one.

    The jitter is relative to the innovation covariance; the former fixed 1e-6 doubled R here (float32:
    10200.4 vs 10315.7 exact for (2, 2, 1)), a bias 40x beyond this tolerance, reproduced below in float64.
    """
    y, params = _tiny_noise_system(z, x, seed)
    exact = kalman_filter(y, params).log_likelihood
    p32 = LGSSMParams(*(getattr(params, k).float() for k in ("A", "C", "Q", "R", "mu0", "Sigma0")))
    step_fn = (lambda t, y_prev: (p32.A, None, p32.C)) if varying else None  # the general recursion
    f32 = kalman_filter(y.float(), p32, step_fn=step_fn)
    assert f32.shared is not varying
    tol = 5e-5 * exact.abs()
    assert (f32.log_likelihood.double() - exact).abs() <= tol, (f32.log_likelihood.item(), exact.item())
    old = kalman_filter(y, LGSSMParams(params.A, params.C, params.Q, params.R + 1e-6 * torch.eye(x, dtype=D),
                                       params.mu0, params.Sigma0)).log_likelihood
    assert (old - exact).abs() > 20 * tol  # what an absolute jitter of 1e-6 did: the test would catch it
    sm = kalman_smooth(y.float(), p32)
    assert torch.isfinite(sm.mean).all() and torch.isfinite(sm.cov).all()
    sm64 = kalman_smooth(y, params)
    assert (sm.mean.double() - sm64.mean).abs().amax() <= 1e-3 * (1 + sm64.mean.abs().amax())


def test_jitter_is_checked_and_relative():
    y, params, u, mask = _problem(B=2, T=5, varying=True, seed=23)
    with pytest.raises(ValueError, match=r"jitter: expected a finite relative jitter >= 0, received -1"):
        kalman_filter(y, params, u, mask, jitter=-1)
    # scaling the whole problem's covariances (and y by the square root) scales nothing but the log-likelihood
    c = 1e-8
    scaled = LGSSMParams(params.A, params.C, c * params.Q, c * params.R, c**0.5 * params.mu0, c * params.Sigma0,
                         c**0.5 * params.Bu)
    a = kalman_filter(y, params, u, mask, jitter=1e-3)
    b = kalman_filter(c**0.5 * y, scaled, u, mask, jitter=1e-3)
    _close(b.mean, c**0.5 * a.mean, 1e-10)
    n_obs = mask.sum(1).to(D) * y.shape[-1]
    _close(b.log_likelihood, a.log_likelihood - 0.5 * math.log(c) * n_obs, 1e-10)
