"""State probes: how much of a true quantity (position, heading) a learned state or latent holds.

A learned state space is a rotated / stretched copy of the true one (§7.4.1), so states are scored after
an affine fit (:func:`affine_r2`); wide latents (RSSM, VRNN, ...) are scored on held-out episodes
(:func:`heldout_probe_r2`), so that a map with many inputs cannot fit by chance.

Example:
    >>> s = torch.randn(50, 2, dtype=torch.float64)
    >>> pose = s @ torch.tensor([[0.0, 2.0], [-1.0, 0.0]], dtype=torch.float64) + 3
    >>> round(affine_r2(s, pose), 6)
    1.0
    >>> W, fitted = affine_fit(s, pose)
    >>> W.shape, bool(torch.allclose(fitted, pose))
    (torch.Size([3, 2]), True)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["affine_fit", "affine_r2", "heldout_probe_r2"]


def _rows(x: Tensor, y: Tensor, who: str) -> tuple[Tensor, Tensor]:
    if x.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"{who}: expected inputs [..., S] and targets [..., P] with the same leading shape, "
                         f"received {tuple(x.shape)} and {tuple(y.shape)}")
    return x.reshape(-1, x.shape[-1]).double(), y.reshape(-1, y.shape[-1]).double()


def affine_fit(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Least-squares affine map of ``x [..., S]`` onto ``y [..., P]`` in float64:
    ``(W [S + 1, P], fitted [N, P])`` with ``N`` the leading elements and the offset as ``W``'s last row."""
    X, Y = _rows(x, y, "affine_fit")
    X = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    W = torch.linalg.lstsq(X, Y).solution
    return W, X @ W


def affine_r2(x: Tensor, y: Tensor) -> float:
    """R² of the least-squares affine map ``x [..., S] -> y [..., P]`` (mean over the P outputs), fitted and
    scored on the same rows."""
    _, fitted = affine_fit(x, y)
    Y = y.reshape(-1, y.shape[-1]).double()
    ss_res = (fitted - Y).square().sum(0)
    ss_tot = (Y - Y.mean(0)).square().sum(0).clamp_min(1e-12)
    return float((1 - ss_res / ss_tot).mean())


def heldout_probe_r2(x: Tensor, y: Tensor, ridge: float = 1e-2) -> float:
    """R² (mean over outputs) of a ridge-regularised affine map ``x [N, H, F] -> y [N, H, P]``, two-fold over
    the N episodes (fit on the even ones, score the odd ones, and back).

    Features are standardised with the fitting fold's statistics; ``ridge`` is relative to the number of
    fitting rows, and the offset is not penalised.

    Example:
        >>> x = torch.randn(8, 20, 3, dtype=torch.float64)
        >>> round(heldout_probe_r2(x, 2 * x[..., :1] - 1, ridge=0.0), 6)
        1.0
    """
    if x.dim() != 3 or y.dim() != 3 or x.shape[:2] != y.shape[:2] or x.shape[0] < 2:
        raise ValueError(f"heldout_probe_r2: expected x [N, H, F] and y [N, H, P] with N >= 2 episodes, "
                         f"received {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.double(), y.double()
    folds = [torch.arange(x.shape[0]) % 2 == k for k in (0, 1)]
    resid = torch.zeros(y.shape[-1], dtype=torch.float64)
    for fit, score in (folds, folds[::-1]):
        X, Y = x[fit].reshape(-1, x.shape[-1]), y[fit].reshape(-1, y.shape[-1])
        mu, sd = X.mean(0), X.std(0).clamp_min(1e-6)
        Xs = torch.cat([(X - mu) / sd, torch.ones(len(X), 1, dtype=X.dtype)], 1)
        reg = ridge * len(X) * torch.eye(Xs.shape[1], dtype=X.dtype)
        reg[-1, -1] = 0  # no penalty on the offset
        W = torch.linalg.solve(Xs.T @ Xs + reg, Xs.T @ Y)
        Xt = x[score].reshape(-1, x.shape[-1])
        pred = torch.cat([(Xt - mu) / sd, torch.ones(len(Xt), 1, dtype=X.dtype)], 1) @ W
        resid += (pred - y[score].reshape(-1, y.shape[-1])).square().sum(0)
    flat = y.reshape(-1, y.shape[-1])
    return float((1 - resid / (flat - flat.mean(0)).square().sum(0).clamp_min(1e-12)).mean())
