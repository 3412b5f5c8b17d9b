"""State probes against numpy's least squares (float64) and an explicit ridge solution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldmodels.probes import affine_fit, affine_r2, heldout_probe_r2


def _np_r2(x: np.ndarray, y: np.ndarray) -> float:
    X = np.c_[x, np.ones(len(x))]
    fit = X @ np.linalg.lstsq(X, y, rcond=None)[0]
    return float(np.mean(1 - ((fit - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)))


def test_affine_r2_equals_numpy_least_squares_on_noisy_states() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 30, 3, generator=g)
    pose = s[..., :2] @ torch.tensor([[1.0, 0.5], [-0.3, 2.0]]) + 0.7 * torch.randn(4, 30, 2, generator=g)
    want = _np_r2(s.reshape(-1, 3).double().numpy(), pose.reshape(-1, 2).double().numpy())
    assert affine_r2(s, pose) == pytest.approx(want, abs=1e-12)
    assert 0.2 < want < 0.95  # the noise makes it a real test of the residual term
    W, fitted = affine_fit(s, pose)
    assert W.shape == (4, 2) and fitted.shape == (120, 2) and fitted.dtype == torch.float64


def test_heldout_probe_scores_unseen_episodes_and_does_not_fit_noise() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 8, 40, generator=g)  # 40 features, 40 rows per fold: in-sample a perfect fit
    y = torch.randn(10, 8, 1, generator=g)
    assert affine_r2(x[::2], y[::2]) > 0.99  # in-sample
    assert heldout_probe_r2(x, y) < 0.1  # held out: no signal
    # signal on 2 of 40 features, both folds' ridge solutions by hand
    lin = x[..., :2].double() @ torch.tensor([[1.0], [-2.0]], dtype=torch.float64)
    yy = lin + 0.1 * torch.randn(10, 8, 1, generator=g, dtype=torch.float64)
    xs, ys = x.double().numpy(), yy.numpy()
    resid = 0.0
    for k in (0, 1):
        fit, score = np.arange(10) % 2 == k, np.arange(10) % 2 != k
        X, Y = xs[fit].reshape(-1, 40), ys[fit].reshape(-1, 1)
        mu, sd = X.mean(0), X.std(0, ddof=1)
        Xs = np.c_[(X - mu) / sd, np.ones(len(X))]
        reg = 0.05 * len(X) * np.eye(41)
        reg[-1, -1] = 0
        W = np.linalg.solve(Xs.T @ Xs + reg, Xs.T @ Y)
        Xt = np.c_[(xs[score].reshape(-1, 40) - mu) / sd, np.ones(40)]
        resid += ((Xt @ W - ys[score].reshape(-1, 1)) ** 2).sum()
    want = 1 - resid / ((ys - ys.mean()) ** 2).sum()
    assert heldout_probe_r2(x, yy, ridge=0.05) == pytest.approx(want, abs=1e-10)
    assert want > 0.8


def test_probes_refuse_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"affine_fit: expected .* received \(5, 2\) and \(4, 2\)"):
        affine_fit(torch.zeros(5, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="N >= 2 episodes"):
        heldout_probe_r2(torch.zeros(1, 3, 2), torch.zeros(1, 3, 1))
