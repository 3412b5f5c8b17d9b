"""Fused state rollouts of GTM-SM's transitions for the CPU training step: the wall transition, eq. (7.3), and
the momentum transition of §7.4.2.2.

``s_t = s_{t-1} + M a_t · σ_d(s_{t-1} + M a_t) + ε_t`` is a sequential scan of tiny operations: a
2 → 64 → 1 gate network on a ``[B, S]`` state, 288 times per ImageNav window. Through autograd each step
costs ~40 small kernels (forward and backward), which made the scan 57% of a training update (50 of
88 ms, B = 16, T = 288, 2 threads). Here the scan and its hand-derived backward run as two numba loops
(about 1 ms together); ``M a_t`` is computed outside (one matmul), so autograd carries the gradient on to
``M``.

The walking agent's momentum transition, ``d_t = c_s ⊙ tanh(σ(c_f) ⊙ d_{t-1} + M a_t)``,
``s_t = s_{t-1} + R(θ_{t-1}) d_t + ε_t`` (``θ = s³``), is the same kind of scan (~30 kernels a step through
autograd, 182 steps a MiniWorld window): :func:`momentum_scan` runs it and its backward as numba loops, with
``M a_t`` and ``σ(c_f)`` computed outside.

:func:`wall_scan` and :func:`momentum_scan` are tested against the step-by-step autograd loops of
:meth:`worldmodels.models.gtmsm_transitions.WallTransition.step` and
:meth:`~worldmodels.models.gtmsm_transitions.MomentumTransition.step` (values and gradients in float64,
gradcheck). They run on CPU tensors; other devices use the step-by-step loop.

Example:
    >>> import torch
    >>> ma, eps = torch.randn(2, 5, 2), torch.zeros(2, 5, 2)
    >>> first = torch.zeros(2, 5, dtype=torch.bool)
    >>> gate = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    >>> s, d = wall_scan(ma, eps, first, torch.zeros(2, 2), gate, "relu")
    >>> s.shape, bool(torch.allclose(s[:, 0], d[:, 0]))
    (torch.Size([2, 5, 2]), True)
    >>> ma = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.5707964], [1.0, 0.0, 0.0]]])  # forward, turn, forward
    >>> s, d = momentum_scan(ma, torch.zeros(1, 3, 3), torch.zeros(1, 3, dtype=torch.bool), torch.zeros(1, 3),
    ...                      torch.zeros(1, 3), torch.zeros(3), torch.ones(3))  # no momentum: σ(c_f) = 0
    >>> [round(v, 3) for v in s[0, -1].tolist()]  # tanh(1) along +x, turn by tanh(π/2) rad, tanh(1) along it
    [1.225, 0.605, 0.917]
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
from numba import njit
from torch import Tensor, nn

__all__ = ["wall_scan", "momentum_scan", "scan_available", "step_by_step"]

_enabled = True


def scan_available(t: Tensor) -> bool:
    """Whether :func:`wall_scan` and :func:`momentum_scan` can run on tensors like ``t`` (CPU, float32/float64, not disabled)."""
    return _enabled and t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


@contextlib.contextmanager
def step_by_step() -> Iterator[None]:
    """Use the step-by-step autograd loops instead of the fused scans (the oracle in tests, the baseline in
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


@njit(cache=True)
def _momentum_forward(ma, eps, first, s0, d0, f, cs):  # noqa: ANN001, ANN202
    """s, d ``[B, T, 3]`` and ``tanh(u_t)`` ``[B, T, 3]``, ``u_t = σ(c_f) ⊙ d_{t-1} + M a_t``."""
    B, T, S = ma.shape
    s = np.empty_like(ma)
    d = np.empty_like(ma)
    th = np.empty_like(ma)
    sp = np.empty(S, ma.dtype)
    dp = np.empty(S, ma.dtype)
    for b in range(B):
        sp[:] = s0[b]
        dp[:] = d0[b]
        for t in range(T):
            if first[b, t]:
                sp[:] = 0.0
                dp[:] = 0.0
            for k in range(S):
                h = math.tanh(f[k] * dp[k] + ma[b, t, k])
                th[b, t, k] = h
                dp[k] = cs[k] * h  # d_t
                d[b, t, k] = dp[k]
            c, sn = math.cos(sp[2]), math.sin(sp[2])  # R(θ_{t-1})
            x = sp[0] + (c * dp[0] - sn * dp[1])
            y = sp[1] + (sn * dp[0] + c * dp[1])
            sp[0] = x + eps[b, t, 0]
            sp[1] = y + eps[b, t, 1]
            sp[2] = sp[2] + dp[2] + eps[b, t, 2]
            for k in range(S):
                s[b, t, k] = sp[k]
    return s, d, th


@njit(cache=True)
def _momentum_backward(gs_out, gd_out, first, s0, d0, s, d, th, f, cs):  # noqa: ANN001, ANN202
    """Gradients w.r.t. ``M a`` ``[B, T, 3]``, ``s0``, ``d0`` ``[B, 3]``, ``σ(c_f)`` and ``c_s`` ``[3]``."""
    B, T, S = s.shape
    gma = np.zeros_like(s)
    gs0 = np.zeros_like(s0)
    gd0 = np.zeros_like(d0)
    gf = np.zeros(S, s.dtype)
    gcs = np.zeros(S, s.dtype)
    cs_ = np.zeros(S, s.dtype)  # dL/ds_t carried from step t + 1
    cd_ = np.zeros(S, s.dtype)  # dL/dd_t carried from step t + 1 (through u_{t+1})
    gd = np.empty(S, s.dtype)
    sp = np.empty(S, s.dtype)
    dp = np.empty(S, s.dtype)
    for b in range(B):
        cs_[:] = 0.0
        cd_[:] = 0.0
        for t in range(T - 1, -1, -1):
            for k in range(S):  # s_{t-1}, d_{t-1} (0 at an episode start)
                if first[b, t]:
                    sp[k] = 0.0
                    dp[k] = 0.0
                elif t > 0:
                    sp[k] = s[b, t - 1, k]
                    dp[k] = d[b, t - 1, k]
                else:
                    sp[k] = s0[b, k]
                    dp[k] = d0[b, k]
            g0 = gs_out[b, t, 0] + cs_[0]  # dL/ds_t
            g1 = gs_out[b, t, 1] + cs_[1]
            g2 = gs_out[b, t, 2] + cs_[2]
            c, sn = math.cos(sp[2]), math.sin(sp[2])
            d0t, d1t = d[b, t, 0], d[b, t, 1]
            # s_t = s_{t-1} + R(θ_{t-1}) d_t + ε_t: dL/dd_t gets R^T dL/ds_t, dL/dθ_{t-1} gets (dR/dθ d_t) · dL/ds_t
            gd[0] = gd_out[b, t, 0] + cd_[0] + c * g0 + sn * g1
            gd[1] = gd_out[b, t, 1] + cd_[1] - sn * g0 + c * g1
            gd[2] = gd_out[b, t, 2] + cd_[2] + g2
            gtheta = g0 * (-sn * d0t - c * d1t) + g1 * (c * d0t - sn * d1t)
            for k in range(S):  # d_t = c_s ⊙ tanh(u_t), u_t = σ(c_f) ⊙ d_{t-1} + M a_t
                h = th[b, t, k]
                gcs[k] += gd[k] * h
                gu = gd[k] * cs[k] * (1.0 - h * h)
                gma[b, t, k] = gu
                gf[k] += gu * dp[k]
                cd_[k] = gu * f[k]  # dL/dd_{t-1}
            cs_[0] = g0
            cs_[1] = g1
            cs_[2] = g2 + gtheta  # dL/ds_{t-1}
            if first[b, t]:
                cs_[:] = 0.0
                cd_[:] = 0.0
            elif t == 0:
                gs0[b] = cs_
                gd0[b] = cd_
    return gma, gs0, gd0, gf, gcs


class _MomentumScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ma, eps, first, s0, d0, f, cs):  # noqa: ANN001, ANN205
        ma_, eps_, s0_, d0_, f_, cs_ = (x.detach().contiguous().numpy() for x in (ma, eps, s0, d0, f, cs))
        first_ = first.contiguous().numpy()
        s, d, th = _momentum_forward(ma_, eps_, first_, s0_, d0_, f_, cs_)
        ctx.numpy = (first_, s0_, d0_, s, d, th, f_, cs_)
        return torch.from_numpy(s), torch.from_numpy(d)

    @staticmethod
    def backward(ctx, gs, gd):  # noqa: ANN001, ANN205
        first, s0, d0, s, d, th, f, cs = ctx.numpy
        gs = np.zeros_like(s) if gs is None else gs.contiguous().numpy()
        gd = np.zeros_like(s) if gd is None else gd.contiguous().numpy()
        out = [torch.from_numpy(x) for x in _momentum_backward(gs, gd, first, s0, d0, s, d, th, f, cs)]
        return out[0], None, None, out[1], out[2], out[3], out[4]


def momentum_scan(ma: Tensor, eps: Tensor, first: Tensor, s0: Tensor, d0: Tensor, f: Tensor,
                  cs: Tensor) -> tuple[Tensor, Tensor]:
    """States and displacements of the momentum transition (§7.4.2.2) over a window, state ``(x, y, θ)``.

    ``d_t = c_s ⊙ tanh(σ(c_f) ⊙ d_{t-1} + M a_t)``, ``s_t = s_{t-1} + R(θ_{t-1}) d_t + ε_t``, with
    ``s_{t-1} = d_{t-1} = 0`` where ``first``.

    Args:
        ma: ``M a_t`` ``[B, T, 3]`` (differentiable: the gradient flows on to ``M``).
        eps: transition noise ``ε_t`` ``[B, T, 3]`` (zeros for the mean path; no gradient).
        first: ``[B, T]`` bool, the state and displacement restart at 0 before the step.
        s0, d0: ``[B, 3]`` state and displacement before the first step (differentiable).
        f: ``σ(c_f)`` ``[3]``, the kept fraction of the last move; cs: ``c_s`` ``[3]`` saturation (differentiable).

    Returns:
        ``s [B, T, 3]`` and ``d [B, T, 3]``.
    """
    if ma.dim() != 3 or ma.shape[-1] != 3:
        raise ValueError(f"momentum_scan: expected M a [B, T, 3], received {tuple(ma.shape)}")
    dtype = ma.dtype
    return _MomentumScan.apply(ma, eps.to(dtype), first.bool(), s0.to(dtype), d0.to(dtype), f.to(dtype),
                               cs.to(dtype))
