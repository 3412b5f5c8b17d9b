"""Fused state rollout of GTM-SM's wall transition, eq. (7.3), for the CPU training step.

``s_t = s_{t-1} + M a_t · σ_d(s_{t-1} + M a_t) + ε_t`` is a sequential scan of tiny operations: a
2 → 64 → 1 gate network on a ``[B, S]`` state, 288 times per ImageNav window. Through autograd each step
costs ~40 small kernels (forward and backward), which made the scan 57% of a training update (50 of
88 ms, B = 16, T = 288, 2 threads). Here the scan and its hand-derived backward run as two numba loops
(about 1 ms together); ``M a_t`` is computed outside (one matmul), so autograd carries the gradient on to
``M``.

:func:`wall_scan` is tested against the step-by-step autograd loop of
:meth:`worldmodels.models.gtmsm_transitions.WallTransition.step` (values and gradients in float64, gradcheck).
It runs on CPU tensors; other devices use the step-by-step loop.

Example:
    >>> import torch
    >>> ma, eps = torch.randn(2, 5, 2), torch.zeros(2, 5, 2)
    >>> first = torch.zeros(2, 5, dtype=torch.bool)
    >>> gate = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    >>> s, d = wall_scan(ma, eps, first, torch.zeros(2, 2), gate, "relu")
    >>> s.shape, bool(torch.allclose(s[:, 0], d[:, 0]))
    (torch.Size([2, 5, 2]), True)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
from numba import njit
from torch import Tensor, nn

__all__ = ["wall_scan", "scan_available", "step_by_step"]

_enabled = True


def scan_available(t: Tensor) -> bool:
    """Whether :func:`wall_scan` can run on tensors like ``t`` (CPU, float32/float64, not disabled)."""
    return _enabled and t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


@contextlib.contextmanager
def step_by_step() -> Iterator[None]:
    """Use the step-by-step autograd loop instead of the fused scan (the oracle in tests, the baseline in
    ``make bench``)::

        with step_by_step():
            loss = model.loss(batch)
    """
    global _enabled
    old, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = old


@njit(cache=True)
def _forward(ma, eps, first, s0, w1, b1, w2, b2, use_tanh):  # noqa: ANN001, ANN202
    """s, d ``[B, T, S]``, hidden ``[B, T, H]`` (after the activation), gate ``[B, T]``."""
    B, T, S = ma.shape
    H = w1.shape[0]
    s = np.empty_like(ma)
    d = np.empty_like(ma)
    hid = np.empty((B, T, H), ma.dtype)
    g = np.empty((B, T), ma.dtype)
    prev = np.empty(S, ma.dtype)
    for b in range(B):
        prev[:] = s0[b]
        for t in range(T):
            if first[b, t]:
                prev[:] = 0.0
            acc = b2
            for j in range(H):
                x = b1[j]
                for k in range(S):
                    x += w1[j, k] * (prev[k] + ma[b, t, k])  # projected position p = s_{t-1} + M a_t
                x = math.tanh(x) if use_tanh else max(x, 0.0)
                hid[b, t, j] = x
                acc += w2[j] * x
            gt = 1.0 / (1.0 + math.exp(-acc))  # σ_d(p)
            g[b, t] = gt
            for k in range(S):
                d[b, t, k] = ma[b, t, k] * gt
                prev[k] = prev[k] + d[b, t, k] + eps[b, t, k]
                s[b, t, k] = prev[k]
    return s, d, hid, g


@njit(cache=True)
def _backward(gs_out, gd_out, ma, first, s0, s, hid, g, w1, w2, use_tanh):  # noqa: ANN001, ANN202
    """Gradients w.r.t. ``M a`` ``[B, T, S]``, ``s0`` ``[B, S]`` and the gate's W1, b1, w2, b2."""
    B, T, S = ma.shape
    H = w1.shape[0]
    gma = np.zeros_like(ma)
    gs0 = np.zeros_like(s0)
    gw1 = np.zeros_like(w1)
    gb1 = np.zeros(H, ma.dtype)
    gw2 = np.zeros(H, ma.dtype)
    gb2 = np.zeros(1, ma.dtype)
    carry = np.zeros(S, ma.dtype)
    gs = np.empty(S, ma.dtype)
    gp = np.empty(S, ma.dtype)
    p = np.empty(S, ma.dtype)
    for b in range(B):
        carry[:] = 0.0
        for t in range(T - 1, -1, -1):
            for k in range(S):  # p = s_{t-1} + M a_t (s_{t-1} = 0 at an episode start)
                prev_k = 0.0 if first[b, t] else (s[b, t - 1, k] if t > 0 else s0[b, k])
                p[k] = prev_k + ma[b, t, k]
            gt = g[b, t]
            gg = 0.0
            for k in range(S):
                gs[k] = gs_out[b, t, k] + carry[k]  # dL/ds_t
                gdisp = gs[k] + gd_out[b, t, k]  # s_t = s_{t-1} + d_t + ε_t, d_t = M a_t σ_d
                gg += gdisp * ma[b, t, k]
                gma[b, t, k] = gdisp * gt
                gp[k] = 0.0
            gpre = gg * gt * (1.0 - gt)
            gb2[0] += gpre
            for j in range(H):
                h = hid[b, t, j]
                gw2[j] += gpre * h
                gh = gpre * w2[j]
                ghp = gh * (1.0 - h * h) if use_tanh else (gh if h > 0.0 else 0.0)
                gb1[j] += ghp
                for k in range(S):
                    gw1[j, k] += ghp * p[k]
                    gp[k] += ghp * w1[j, k]
            for k in range(S):
                gma[b, t, k] += gp[k]
                gprev = gs[k] + gp[k]  # dL/ds_{t-1}
                if first[b, t]:
                    carry[k] = 0.0
                elif t > 0:
                    carry[k] = gprev
                else:
                    gs0[b, k] = gprev
    return gma, gs0, gw1, gb1, gw2, gb2


class _WallScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ma, eps, first, s0, w1, b1, w2, b2, use_tanh):  # noqa: ANN001, ANN205
        arrays = [x.detach().contiguous().numpy() for x in (ma, eps, s0, w1, b1, w2)]
        f = first.contiguous().numpy()
        s, d, hid, g = _forward(arrays[0], arrays[1], f, arrays[2], arrays[3], arrays[4], arrays[5],
                                float(b2), use_tanh)
        ctx.use_tanh = use_tanh
        ctx.numpy = (arrays[0], f, arrays[2], s, hid, g, arrays[3], arrays[5])
        return torch.from_numpy(s), torch.from_numpy(d)

    @staticmethod
    def backward(ctx, gs, gd):  # noqa: ANN001, ANN205
        ma, f, s0, s, hid, g, w1, w2 = ctx.numpy
        gs = np.zeros_like(ma) if gs is None else gs.contiguous().numpy()
        gd = np.zeros_like(ma) if gd is None else gd.contiguous().numpy()
        gma, gs0, gw1, gb1, gw2, gb2 = _backward(gs, gd, ma, f, s0, s, hid, g, w1, w2, ctx.use_tanh)
        out = [torch.from_numpy(x) for x in (gma, gs0, gw1, gb1, gw2, gb2)]
        return out[0], None, None, out[1], out[2], out[3], out[4], out[5].reshape(()), None


def wall_scan(ma: Tensor, eps: Tensor, first: Tensor, s0: Tensor, gate: nn.Sequential,
              act: str) -> tuple[Tensor, Tensor]:
    """States and displacements of eq. (7.3) with the gate ``Linear(S, H) → act → Linear(H, 1) → sigmoid``.

    Args:
        ma: ``M a_t`` ``[B, T, S]`` (differentiable: the gradient flows on to ``M``).
        eps: transition noise ``ε_t`` ``[B, T, S]`` (zeros for the mean path; no gradient).
        first: ``[B, T]`` bool, the state restarts at 0 before the step.
        s0: ``[B, S]`` state before the first step (differentiable).
        gate: σ_d before its sigmoid (``gate[0]``, ``gate[2]`` are the linear layers).
        act: ``"relu"`` or ``"tanh"``.

    Returns:
        ``s [B, T, S]`` and ``d [B, T, S] = M a_t σ_d(s_{t-1} + M a_t)``.
    """
    lin1, lin2 = gate[0], gate[2]
    assert isinstance(lin1, nn.Linear) and isinstance(lin2, nn.Linear)
    dtype = ma.dtype
    w1, b1 = lin1.weight.to(dtype), lin1.bias.to(dtype)
    w2, b2 = lin2.weight.to(dtype).reshape(-1), lin2.bias.to(dtype).reshape(())
    return _WallScan.apply(ma, eps.to(dtype), first.bool(), s0.to(dtype), w1, b1, w2, b2, act == "tanh")
