"""Batched, differentiable linear Gaussian state-space model (LGSSM) inference.

The model of thesis §3.4 / eq. (6.1), batch first::

    p(z_1)             = N(mu0, Sigma0)                         (z_1 has no transition)
    z_t | z_{t-1}      = N(A_t z_{t-1} + Bu_t u_t, Q)           eq. (3.6), t >= 2
    x_t | z_t          = N(C_t z_t, R)                          eq. (3.7)

``A``, ``C``, ``Bu`` may be time-invariant (``[z, z]``, ``[B, z, z]``; a batch dimension of 1
broadcasts) or time-varying (``[B, T, z, z]``); ``A[:, 0]`` and ``u[:, 0]`` are never used.
A per-step observation mask skips the measurement update of missing steps (``K_t = 0``,
§3.4.2, eq. (6.12)-(6.13)); they also contribute nothing to the log-likelihood (eq. (3.12)).

Numerics: Cholesky solves (never explicit inverses), Joseph-form covariance update,
symmetrised covariances and a small *relative* diagonal jitter: a matrix ``M`` that is factorised
(the innovation covariance ``S_t = C_t Sigma_{t|t-1} C_t^T + R``, the smoother's
``Sigma_{t+1|t}``, the covariances square-rooted for sampling) gets ``eps * s(M) I`` added, with
``s(M)`` the mean of its diagonal and ``eps = 1e-6`` in float32, ``1e-12`` in float64 (override
with ``jitter=``, a relative value too). The jitter guards the factorisation against the rounding
of the products that form ``M``, which is relative to ``M``'s own scale. The Joseph-form update
uses ``R`` itself (it is exact for any gain), so the jitter never enters the state covariances
(added there, a jitter of ``S_t``'s scale overstates them while ``S_t >> R``, in the first steps). A
fixed jitter does not scale with ``R``: the former absolute ``1e-6`` doubled an ``R = 1e-6 I`` and
gave a float32 log-likelihood of 10200.4 against 10315.7 exact (float64) over T = 1000 steps;
relative, float32 gives 10315.7 (tests/worldmodels/test_kalman.py,
``test_tiny_R_float32_log_likelihood_is_unbiased``: within 5e-5 of the exact value, relative).

``Q``, ``R`` and ``Sigma0`` must be symmetric. The filter reads both triangles of them (Cholesky
columns, the closed-form 2 x 2 solve), so an asymmetric matrix would give a different likelihood
from its symmetric part. An asymmetry within rounding (``max |M - M^T| <= sqrt(eps_dtype) max |M|``
per matrix, e.g. a covariance the caller formed as ``A P A^T + Q``) is removed by using
``(M + M^T) / 2``; a larger one raises ``ValueError``: a visibly asymmetric covariance is almost
always a mistake (a Cholesky factor or a wrongly transposed product passed in), and silently using
its symmetric part would hide it.

When every covariance-relevant quantity (``A``, ``C``, ``Q``, ``R``,
``Sigma0`` and the mask) is shared by the whole batch, the covariance recursions do not depend
on the data and run once at batch size 1 (exact, not a steady-state approximation); the
returned covariances are then expanded views and ``FilterResult.shared`` is ``True``.

Example:
    >>> import torch
    >>> z, x, B, T = 2, 1, 3, 5
    >>> params = LGSSMParams(A=torch.eye(z), C=torch.ones(x, z), Q=0.1 * torch.eye(z),
    ...                      R=torch.eye(x), mu0=torch.zeros(z), Sigma0=torch.eye(z))
    >>> y = torch.randn(B, T, x)
    >>> mask = torch.ones(B, T, dtype=torch.bool); mask[:, 2] = False
    >>> sm = kalman_smooth(y, params, mask=mask)
    >>> sm.mean.shape, sm.cov.shape, sm.filtered.log_likelihood.shape
    (torch.Size([3, 5, 2]), torch.Size([3, 5, 2, 2]), torch.Size([3]))
    >>> sample_smoothed(sm, params, n=4).shape
    torch.Size([4, 3, 5, 2])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from worldmodels.api import check_shape

__all__ = [
    "LGSSMParams",
    "FilterResult",
    "SmoothResult",
    "StepFn",
    "kalman_filter",
    "kalman_smooth",
    "rts_smooth",
    "log_likelihood",
    "sample_smoothed",
    "forecast",
]

# step_fn(t, y_prev [B, x]) -> (A_t [B, z, z], Bu_t [B, z, u] | None, C_t [B, x, z])
StepFn = Callable[[int, Tensor], tuple[Tensor, Tensor | None, Tensor]]


@dataclass
class LGSSMParams:
    """Parameters of the LGSSM (eq. (6.1)).

    Attributes:
        A: transition ``[z, z]``, ``[B, z, z]`` or ``[B, T, z, z]`` (``A[:, t]`` maps z_{t-1} to z_t).
        C: emission ``[x, z]``, ``[B, x, z]`` or ``[B, T, x, z]``.
        Q: transition noise covariance ``[z, z]`` (``[B, z, z]``/``[B, T, z, z]`` also accepted).
        R: observation noise covariance ``[x, x]`` (``[B, x, x]``/``[B, T, x, x]`` also accepted).
        mu0: mean of p(z_1), ``[z]`` or ``[B, z]``.
        Sigma0: covariance of p(z_1), ``[z, z]`` or ``[B, z, z]``.
        Bu: optional control matrix ``[z, u]``, ``[B, z, u]`` or ``[B, T, z, u]``.
    """

    A: Tensor | None
    C: Tensor | None
    Q: Tensor
    R: Tensor
    mu0: Tensor
    Sigma0: Tensor
    Bu: Tensor | None = None


@dataclass
class FilterResult:
    """Output of :func:`kalman_filter`.

    Attributes:
        mean: filtered means mu_{t|t} ``[B, T, z]``.
        cov: filtered covariances Sigma_{t|t} ``[B, T, z, z]``.
        pred_mean: one-step predictions mu_{t|t-1} ``[B, T, z]`` (``pred_mean[:, 0] = mu0``).
        pred_cov: Sigma_{t|t-1} ``[B, T, z, z]``.
        log_likelihood: log p(x_{1:T} | u_{1:T}) over observed steps, eq. (3.12), ``[B]``.
        A: transition matrices actually used ``[B, T, z, z]`` (``A[:, 0]`` unused).
        C: emission matrices actually used ``[B, T, x, z]``.
        shared: ``True`` when the covariances are identical for every sequence (then ``cov``,
            ``pred_cov``, ``A`` and ``C`` may be expanded views).
    """

    mean: Tensor
    cov: Tensor
    pred_mean: Tensor
    pred_cov: Tensor
    log_likelihood: Tensor
    A: Tensor | None = None
    C: Tensor | None = None
    shared: bool = False


@dataclass
class SmoothResult:
    """Output of :func:`kalman_smooth` (RTS smoother, §3.4.1).

    Attributes:
        mean: smoothed means mu_{t|T} ``[B, T, z]``.
        cov: smoothed covariances Sigma_{t|T} ``[B, T, z, z]``.
        filtered: the forward pass.
        J: smoother gains J_t = Sigma_t A_{t+1}^T Sigma_{t+1|t}^{-1} ``[B, T-1, z, z]``.
        cond_cov: Cov[z_t | z_{t+1}, x_{1:t}] = Sigma_t - J_t Sigma_{t+1|t} J_t^T ``[B, T-1, z, z]``
            (used by :func:`sample_smoothed`).
    """

    mean: Tensor
    cov: Tensor
    filtered: FilterResult
    J: Tensor | None = None
    cond_cov: Tensor | None = None


# ---------------------------------------------------------------------------------------------
# input handling


def _jitter(dtype: torch.dtype, jitter: float | None) -> float:
    """The relative jitter ``eps``: ``jitter`` if given, else ``1e-12`` (float64) / ``1e-6``."""
    if jitter is not None:
        if not (isinstance(jitter, (int, float)) and math.isfinite(jitter) and jitter >= 0):
            raise ValueError(f"jitter: expected a finite relative jitter >= 0, received {jitter!r}")
        return float(jitter)
    return 1e-12 if dtype == torch.float64 else 1e-6


def _jitter_of(M: Tensor, eps: float) -> Tensor:
    """``eps * s(M)`` ``[..., 1, 1]`` for ``M [..., n, n]``, s(M) = mean of the diagonal (module doc)."""
    return eps * torch.diagonal(M, dim1=-2, dim2=-1).abs().mean(-1)[..., None, None]


def _jittered(M: Tensor, eps: float) -> Tensor:
    """``M + eps s(M) I``: the relative jitter of the module docstring."""
    return M + _jitter_of(M, eps) * torch.eye(M.shape[-1], dtype=M.dtype, device=M.device)


def _symmetric(name: str, M: Tensor) -> Tensor:
    """Covariance ``M [..., n, n]`` made exactly symmetric; refused beyond rounding (module doc)."""
    if torch.equal(M, M.mT):
        return M
    if not bool(torch.isfinite(M).all()):  # NaN is never equal to itself
        raise ValueError(f"{name}: expected a finite covariance matrix, received NaN/inf entries")
    tol = math.sqrt(torch.finfo(M.dtype).eps)
    with torch.no_grad():
        asym = (M - M.mT).abs().amax((-2, -1))  # [...]
        scale = M.abs().amax((-2, -1))
        bad = asym > tol * scale
    if bool(bad.any()):
        rel = (asym / scale.clamp_min(torch.finfo(M.dtype).tiny))[bad].max().item()
        raise ValueError(
            f"{name}: expected a symmetric covariance (max |M - M^T| <= {tol:.1e} max |M|), received "
            f"max |M - M^T| / max |M| = {rel:.2e}; pass (M + M^T) / 2 if the asymmetry is intended"
        )
    return _sym(M)


def _seq(name: str, M: Tensor, B: int, T: int, r: int, c: int) -> Tensor:
    """``[r, c]`` / ``[B|1, r, c]`` / ``[B|1, T, r, c]`` -> ``[B|1, T|1, r, c]``, with shape errors."""
    if not isinstance(M, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, received {type(M).__name__}")
    b = 1 if M.dim() >= 3 and M.shape[0] == 1 else B
    if M.dim() == 2:
        check_shape(name, M, (r, c))
        return M[None, None]
    if M.dim() == 3:
        check_shape(name, M, (b, r, c))
        return M[:, None]
    if M.dim() == 4:
        check_shape(name, M, (b, T, r, c))
        return M
    raise ValueError(
        f"{name}: expected shape ({r}, {c}), ({B}, {r}, {c}) or ({B}, {T}, {r}, {c}), "
        f"received {tuple(M.shape)}"
    )


def _vec0(name: str, v: Tensor, B: int, z: int) -> Tensor:
    if v.dim() == 1:
        check_shape(name, v, (z,))
        return v[None]
    check_shape(name, v, (1 if v.shape[0] == 1 else B, z))
    return v


def _mat0(name: str, M: Tensor, B: int, z: int) -> Tensor:
    if M.dim() == 2:
        check_shape(name, M, (z, z))
        return M[None]
    check_shape(name, M, (1 if M.shape[0] == 1 else B, z, z))
    return M


@dataclass
class _Inputs:
    y: Tensor  # [B, T, x], zero at missing steps
    mask: Tensor | None  # [B, T] bool
    u: Tensor | None  # [B, T, u]
    mu0: Tensor  # [B|1, z]
    Sigma0: Tensor  # [B|1, z, z]
    Q: Tensor  # [B|1, T|1, z, z]
    R: Tensor  # [B|1, T|1, x, x]
    A: Tensor | None  # [B|1, T|1, z, z]
    C: Tensor | None  # [B|1, T|1, x, z]
    Bu: Tensor | None  # [B|1, T|1, z, u]
    B: int
    T: int
    z: int
    x: int
    eps: float


def _prepare(
    y: Tensor, params: LGSSMParams, u: Tensor | None, mask: Tensor | None, step_fn: StepFn | None,
    jitter: float | None,
) -> _Inputs:
    if not isinstance(y, Tensor) or y.dim() != 3:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y: expected shape (B, T, x), received {shape}")
    if not y.dtype.is_floating_point:
        raise TypeError(f"y: expected a floating point tensor, received dtype {y.dtype}")
    B, T, x = y.shape
    if T == 0:
        raise ValueError("y: expected at least one time step, received T = 0")
    z = params.mu0.shape[-1]
    for name in ("A", "C", "Q", "R", "mu0", "Sigma0", "Bu"):
        v = getattr(params, name)
        if isinstance(v, Tensor) and v.dtype != y.dtype:
            raise TypeError(f"params.{name}: expected dtype {y.dtype} (the dtype of y), received {v.dtype}")
    mu0 = _vec0("params.mu0", params.mu0, B, z)
    Sigma0 = _symmetric("params.Sigma0", _mat0("params.Sigma0", params.Sigma0, B, z))
    Q = _symmetric("params.Q", _seq("params.Q", params.Q, B, T, z, z))
    R = _symmetric("params.R", _seq("params.R", params.R, B, T, x, x))
    A = C = Bu = None
    if step_fn is None:
        if params.A is None or params.C is None:
            raise ValueError("params.A, params.C: expected tensors when no step_fn is given, received None")
        A = _seq("params.A", params.A, B, T, z, z)
        C = _seq("params.C", params.C, B, T, x, z)
        if params.Bu is not None:
            Bu = _seq("params.Bu", params.Bu, B, T, z, params.Bu.shape[-1])
            if u is None:
                Bu = None  # no control input: the control term is zero
        elif u is not None:
            raise ValueError("u: received controls but params.Bu is None; expected a control matrix")
    if u is not None:
        check_shape("u", u, (B, T, Bu.shape[-1] if Bu is not None else None))
        if u.dtype != y.dtype:
            raise TypeError(f"u: expected dtype {y.dtype} (the dtype of y), received {u.dtype}")
    if mask is not None:
        check_shape("mask", mask, (B, T))
        if mask.dtype != torch.bool:
            raise TypeError(f"mask: expected dtype torch.bool (True = observed), received {mask.dtype}")
        bad = mask & ~torch.isfinite(y).all(-1)
        y = torch.where(mask[..., None], y, torch.zeros((), dtype=y.dtype, device=y.device))
    else:
        bad = ~torch.isfinite(y).all(-1)
    if bad.any():
        where = bad.nonzero()[:5].tolist()
        raise ValueError(f"y: expected finite values at observed steps, received NaN/inf at [b, t] = {where}")
    return _Inputs(y, mask, u, mu0, Sigma0, Q, R, A, C, Bu, B, T, z, x, _jitter(y.dtype, jitter))


def _control(inp: _Inputs) -> Tensor | None:
    """``Bu_t u_t`` for all steps, zero at t = 0 (z_1 has no transition): ``[B, T, z]``."""
    if inp.Bu is None or inp.u is None:
        return None
    bu = (inp.Bu @ inp.u[..., None])[..., 0]  # [B, T, z]
    return torch.cat([torch.zeros_like(bu[:, :1]), bu[:, 1:]], dim=1)


def _gauss_loglik(r: Tensor, S: Tensor, mask: Tensor | None) -> Tensor:
    """Sum over t of log N(r_t; 0, S_t) for r ``[B, T, x]``, S ``[B|1, T, x, x]`` -> ``[B]``, eq. (3.12)."""
    L = _chol(S)
    _not_finite("innovation covariance C Sigma_{t|t-1} C^T + R at [b, t]", L)
    x = r.shape[-1]
    w = _tri_solve(L, r[..., None])[..., 0]  # [B, T, x]
    logdet = torch.diagonal(L, dim1=-2, dim2=-1).log().sum(-1)  # [B|1, T]
    ll = -0.5 * (w.square().sum(-1) + x * math.log(2 * math.pi)) - logdet  # [B, T]
    if mask is not None:
        ll = ll * mask
    return ll.sum(-1)


def _sym(P: Tensor) -> Tensor:
    return 0.5 * (P + P.mT)


# ---------------------------------------------------------------------------------------------
# small dense linear algebra. Batched LAPACK calls on CPU loop over the batch (hundreds of us for
# 256 2x2 matrices, slower still in backward); for the few-dimensional matrices of a Kalman
# filter, unrolled Cholesky factorisations and substitutions in plain tensor ops are much faster
# and have cheap gradients. Larger matrices use LAPACK.

_SMALL = 8


def _chol(S: Tensor) -> Tensor:
    """Lower Cholesky factor of SPD ``S`` ``[..., n, n]``; NaN/inf entries flag a non-PD input."""
    n = S.shape[-1]
    if n > _SMALL:
        L, info = torch.linalg.cholesky_ex(S)
        return torch.where((info > 0)[..., None, None], torch.full_like(L, float("nan")), L)
    below = torch.ones(n, n, dtype=S.dtype, device=S.device).tril()  # column j keeps rows >= j
    cols: list[Tensor] = []
    Scols = S.mT.unbind(-2)  # n x [..., n]: columns of S
    for j in range(n):
        v = Scols[j]
        for k in range(j):
            v = v - cols[k] * cols[k][..., j : j + 1]
        v = v * torch.rsqrt(v[..., j : j + 1])
        cols.append(v * below[:, j] if j > 0 else v)
    return torch.stack(cols, -1)


def _tri_solve(L: Tensor, b: Tensor) -> Tensor:
    """Solve ``L w = b`` for lower-triangular ``L`` ``[..., n, n]``, ``b`` ``[..., n, m]``."""
    n = L.shape[-1]
    if n > _SMALL:
        return torch.linalg.solve_triangular(L, b, upper=False)
    Lrows, brows = L.unbind(-2), b.unbind(-2)  # n x [..., n], n x [..., m]
    w: list[Tensor] = []
    for i in range(n):
        acc = brows[i]
        for k in range(i):
            acc = acc - Lrows[i][..., k : k + 1] * w[k]
        w.append(acc / Lrows[i][..., i : i + 1])
    return torch.stack(w, -2)


def _tri_solve_t(L: Tensor, b: Tensor) -> Tensor:
    """Solve ``L^T w = b`` for lower-triangular ``L``."""
    n = L.shape[-1]
    if n > _SMALL:
        return torch.linalg.solve_triangular(L.mT, b, upper=True)
    Lcols, brows = L.unbind(-1), b.unbind(-2)  # column k of L = row k of L^T
    w: dict[int, Tensor] = {}  # filled from i = n-1 down to 0
    for i in range(n - 1, -1, -1):
        acc = brows[i]
        for k in range(i + 1, n):
            acc = acc - Lcols[i][..., k : k + 1] * w[k]
        w[i] = acc / Lcols[i][..., i : i + 1]
    return torch.stack([w[i] for i in range(n)], -2)


def _spd_solve(S: Tensor, b: Tensor) -> Tensor:
    """``S^{-1} b`` for SPD ``S`` ``[..., n, n]``: closed form for n <= 2, else Cholesky solves."""
    n = S.shape[-1]
    if n == 1:
        return b / S
    if n == 2:  # adjugate: S^{-1} = [[c, -b], [-b, a]] / (a c - b^2)
        a, off, _, c = S.flatten(-2).unbind(-1)
        det = a * c - off * off
        b0, b1 = b.unbind(-2)
        return torch.stack([c[..., None] * b0 - off[..., None] * b1, a[..., None] * b1 - off[..., None] * b0],
                           -2) / det[..., None, None]
    L = _chol(S)
    return _tri_solve_t(L, _tri_solve(L, b))


def _not_finite(what: str, M: Tensor) -> None:
    bad = ~torch.isfinite(M.flatten(-2)).all(-1)
    if bool(bad.any()):
        idx = bad.nonzero()[:5].tolist()
        raise ValueError(
            f"{what}: expected a positive definite matrix, received a singular/indefinite one at "
            f"indices {idx}; check that Q, R, Sigma0 are positive definite and finite"
        )


# ---------------------------------------------------------------------------------------------
# filtering


def kalman_filter(
    y: Tensor,
    params: LGSSMParams,
    u: Tensor | None = None,
    mask: Tensor | None = None,
    step_fn: StepFn | None = None,
    *,
    jitter: float | None = None,
) -> FilterResult:
    """Kalman filter (§3.4.1) with masks (§3.4.2) and the log-likelihood of eq. (3.12).

    Args:
        y: observations ``[B, T, x]``; values at masked steps are ignored (may be NaN).
        params: :class:`LGSSMParams`.
        u: controls ``[B, T, u]`` (needs ``params.Bu``); ``u[:, 0]`` is unused.
        mask: ``[B, T]`` bool, ``False`` = missing: no update (K_t = 0) and no likelihood term.
        step_fn: optional ``step_fn(t, y_prev) -> (A_t, Bu_t | None, C_t)`` called for every
            ``t = 0..T-1`` with ``y_prev = y[:, t-1]`` where observed, else the filter's own
            estimate ``C_{t-1} mu_{t-1|t-1}`` (eq. (6.12)-(6.13)), zeros at ``t = 0``. When given,
            ``params.A``, ``params.C`` and ``params.Bu`` are ignored.
        jitter: relative jitter ``eps``: ``eps * mean(diag S_t) I`` is added to the innovation
            covariances ``S_t`` (default ``1e-6`` in float32, ``1e-12`` in float64, see module doc).

    Returns:
        :class:`FilterResult`.

    Example:
        >>> p = LGSSMParams(torch.eye(2), torch.eye(2), torch.eye(2), torch.eye(2),
        ...                 torch.zeros(2), torch.eye(2))
        >>> [round(v, 4) for v in kalman_filter(torch.zeros(1, 30, 2), p).cov[0, -1].diagonal().tolist()]
        [0.618, 0.618]
    """
    inp = _prepare(y, params, u, mask, step_fn, jitter)
    if step_fn is None and _is_shared(inp):
        return _filter_shared(inp)
    return _filter_loop(inp, step_fn)


def _is_shared(inp: _Inputs) -> bool:
    """Covariance recursions are batch independent (exactly) when nothing they use varies over B."""
    assert inp.A is not None and inp.C is not None
    if any(M.shape[0] != 1 for M in (inp.A, inp.C, inp.Q, inp.R, inp.Sigma0)):
        return False
    return inp.mask is None or inp.B == 1 or bool((inp.mask == inp.mask[:1]).all())


def _filter_loop(inp: _Inputs, step_fn: StepFn | None) -> FilterResult:
    """The general recursion: per-sequence covariances, optional running ``step_fn``."""
    B, T, z, x = inp.B, inp.T, inp.z, inp.x
    y, mask = inp.y, inp.mask
    dtype, device = y.dtype, y.device
    I_z, I_x = torch.eye(z, dtype=dtype, device=device), torch.eye(x, dtype=dtype, device=device)
    ys = y[..., None].unbind(1)  # T x [B, x, 1]
    ms = mask[:, :, None, None].to(dtype).unbind(1) if mask is not None else None  # T x [B, 1, 1]
    Qs = _steps(inp.Q, T)
    Rs = _steps(inp.R, T)
    if step_fn is None:
        assert inp.A is not None and inp.C is not None
        As, ATs = _steps(inp.A, T), _steps(inp.A.mT, T)
        Cs, CTs = _steps(inp.C, T), _steps(inp.C.mT, T)
        bu = _control(inp)
        bus = bu[..., None].unbind(1) if bu is not None else None
    else:
        us = inp.u.unbind(1) if inp.u is not None else None
        y_prev = torch.zeros(B, x, dtype=dtype, device=device)
        A_used: list[Tensor] = []
        C_used: list[Tensor] = []

    mu = inp.mu0.expand(B, z)[..., None]  # [B, z, 1]
    P = inp.Sigma0.expand(B, z, z)  # [B, z, z]
    out_mp, out_Pp, out_mu, out_P, out_S, out_r = [], [], [], [], [], []
    for t in range(T):
        if step_fn is None:
            A_t, AT_t, C_t, CT_t = As[t], ATs[t], Cs[t], CTs[t]
            bu_t = bus[t] if bus is not None else None
        else:
            A_t, Bu_t, C_t = step_fn(t, y_prev)
            A_t = _step_mat(f"step_fn(t={t})[0] (A_t)", A_t, B, z, z)
            C_t = _step_mat(f"step_fn(t={t})[2] (C_t)", C_t, B, x, z)
            AT_t, CT_t = A_t.mT, C_t.mT
            A_used.append(A_t.expand(B, z, z))
            C_used.append(C_t.expand(B, x, z))
            bu_t = None
            if Bu_t is not None and us is not None and t > 0:
                Bu_t = _step_mat(f"step_fn(t={t})[1] (Bu_t)", Bu_t, B, z, us[t].shape[-1])
                bu_t = Bu_t @ us[t][..., None]
        if t > 0:  # prediction, §3.4.1
            mp = A_t @ mu  # [B, z, 1]
            if bu_t is not None:
                mp = mp + bu_t
            Pp = A_t @ P @ AT_t + Qs[t]  # [B, z, z]
        else:  # p(z_1) = N(mu0, Sigma0)
            mp, Pp = mu, P
        # measurement step with Cholesky solves
        CP = C_t @ Pp  # [B, x, z]
        S = CP @ CT_t + Rs[t]  # [B, x, x]
        S = S + _jitter_of(S, inp.eps) * I_x  # relative jitter (module doc)
        KT = _spd_solve(S, CP)  # K_t^T = S^{-1} C Pp  [B, x, z]
        if ms is not None:
            KT = KT * ms[t]  # K_t = 0 at missing steps
        K = KT.mT  # [B, z, x]
        r = ys[t] - C_t @ mp  # innovation [B, x, 1]
        mu = mp + K @ r
        IKC = I_z - K @ C_t
        P = _sym(IKC @ Pp @ IKC.mT + K @ Rs[t] @ KT)  # Joseph form, with R itself
        out_mp.append(mp)
        out_Pp.append(Pp)
        out_mu.append(mu)
        out_P.append(P)
        out_S.append(S)
        out_r.append(r)
        if step_fn is not None:
            est = (C_t @ mu)[..., 0]
            y_prev = est if mask is None else torch.where(mask[:, t, None], ys[t][..., 0], est)
    S = torch.stack(out_S, 1)  # [B, T, x, x]
    r = torch.stack(out_r, 1)[..., 0]  # [B, T, x]
    ll = _gauss_loglik(r, S, mask)  # checks S is PD
    if step_fn is None:
        assert inp.A is not None and inp.C is not None
        A_full = inp.A.expand(B, T, z, z)
        C_full = inp.C.expand(B, T, x, z)
    else:
        A_full, C_full = torch.stack(A_used, 1), torch.stack(C_used, 1)
    return FilterResult(
        mean=torch.stack(out_mu, 1)[..., 0],
        cov=torch.stack(out_P, 1),
        pred_mean=torch.stack(out_mp, 1)[..., 0],
        pred_cov=_sym(torch.stack(out_Pp, 1)),  # the loop uses A P A^T + Q as computed
        log_likelihood=ll,
        A=A_full,
        C=C_full,
    )


def _steps(M: Tensor, T: int) -> list[Tensor]:
    """``[B|1, T|1, r, c]`` -> T tensors ``[B|1, r, c]``."""
    return list(M.unbind(1)) if M.shape[1] == T else [M[:, 0]] * T


def _step_mat(name: str, M: Tensor, B: int, r: int, c: int) -> Tensor:
    if M.dim() == 2:
        check_shape(name, M, (r, c))
        return M[None]
    check_shape(name, M, (1 if M.shape[0] == 1 else B, r, c))
    return M


def _filter_shared(inp: _Inputs) -> FilterResult:
    """Exact fast path: covariances/gains once at batch 1, then a 1-op-per-step mean recursion.

    With shared covariances the filtered mean obeys mu_t = G_t mu_{t-1} + g_t with
    G_t = (I - K_t C_t) A_t and g_t = (I - K_t C_t) Bu_t u_t + K_t x_t.
    """
    assert inp.A is not None and inp.C is not None
    B, T, z, x = inp.B, inp.T, inp.z, inp.x
    y = inp.y
    dtype, device = y.dtype, y.device
    I_z, I_x = torch.eye(z, dtype=dtype, device=device), torch.eye(x, dtype=dtype, device=device)
    A1, C1 = inp.A[0], inp.C[0]  # [T|1, z, z], [T|1, x, z]
    As, ATs = _steps(inp.A, T), _steps(inp.A.mT, T)
    Cs, CTs = _steps(inp.C, T), _steps(inp.C.mT, T)
    Qs, Rs = _steps(inp.Q, T), _steps(inp.R, T)
    m_row = inp.mask[0].tolist() if inp.mask is not None else [True] * T
    P = inp.Sigma0  # [1, z, z]
    out_Pp, out_P, out_S, out_K = [], [], [], []
    for t in range(T):
        Pp = _sym(As[t] @ P @ ATs[t] + Qs[t]) if t > 0 else P  # batch 1: symmetrising is cheap
        CP = Cs[t] @ Pp
        S = CP @ CTs[t] + Rs[t]
        S = S + _jitter_of(S, inp.eps) * I_x  # as in _filter_loop
        if m_row[t]:
            KT = _spd_solve(S, CP)
            K = KT.mT
            IKC = I_z - K @ Cs[t]
            P = _sym(IKC @ Pp @ IKC.mT + K @ Rs[t] @ KT)  # Joseph form, with R itself
        else:  # missing step: K_t = 0
            K = torch.zeros(1, z, x, dtype=dtype, device=device)
            P = Pp
        out_Pp.append(Pp)
        out_P.append(P)
        out_S.append(S)
        out_K.append(K)
    Pp_all = torch.cat(out_Pp, 0)  # [T, z, z]
    P_all = torch.cat(out_P, 0)
    S_all = torch.cat(out_S, 0)  # [T, x, x]
    K_all = torch.cat(out_K, 0)  # [T, z, x]
    F = I_z - K_all @ C1  # [T, z, z]
    G = F @ A1  # [T, z, z]
    g = (K_all @ y[..., None])[..., 0]  # [B, T, z]
    bu = _control(inp)
    if bu is not None:
        g = g + (F @ bu[..., None])[..., 0]
    GTs = G.mT.unbind(0)  # G has T entries because K does
    gs = g.unbind(1)
    mu = inp.mu0.expand(B, z) @ F[0].mT + gs[0]  # t = 0: mp = mu0
    out_mu = [mu]
    for t in range(1, T):
        mu = torch.addmm(gs[t], mu, GTs[t])  # mu_t = G_t mu_{t-1} + g_t
        out_mu.append(mu)
    mean = torch.stack(out_mu, 1)  # [B, T, z]
    A_next = inp.A[:, 1:] if inp.A.shape[1] == T else inp.A  # [1, T-1|1, z, z]
    mp_rest = (mean[:, :-1, None, :] @ A_next.mT)[..., 0, :]  # A_t mu_{t-1}  [B, T-1, z]
    if bu is not None:
        mp_rest = mp_rest + bu[:, 1:]
    pred_mean = torch.cat([inp.mu0.expand(B, z)[:, None], mp_rest], 1)  # [B, T, z]
    r = y - (inp.C @ pred_mean[..., None])[..., 0]  # [B, T, x]
    return FilterResult(
        mean=mean,
        cov=P_all[None].expand(B, T, z, z),
        pred_mean=pred_mean,
        pred_cov=Pp_all[None].expand(B, T, z, z),
        log_likelihood=_gauss_loglik(r, S_all[None], inp.mask),
        A=inp.A.expand(B, T, z, z),
        C=inp.C.expand(B, T, x, z),
        shared=True,
    )


def log_likelihood(
    y: Tensor, params: LGSSMParams, u: Tensor | None = None, mask: Tensor | None = None, *,
    jitter: float | None = None,
) -> Tensor:
    """log p(x_{1:T} | u_{1:T}) of eq. (3.12) ``[B]``, masked steps skipped.

    Example:
        >>> p = LGSSMParams(torch.eye(1), torch.eye(1), torch.eye(1), torch.eye(1),
        ...                 torch.zeros(1), torch.eye(1))
        >>> round(log_likelihood(torch.zeros(1, 1, 1), p).item(), 4)  # N(0; 0, 2)
        -1.2655
    """
    return kalman_filter(y, params, u, mask, jitter=jitter).log_likelihood


# ---------------------------------------------------------------------------------------------
# smoothing


def kalman_smooth(
    y: Tensor,
    params: LGSSMParams,
    u: Tensor | None = None,
    mask: Tensor | None = None,
    step_fn: StepFn | None = None,
    *,
    jitter: float | None = None,
) -> SmoothResult:
    """Kalman filter followed by the Rauch-Tung-Striebel smoother (§3.4.1).

    Arguments as :func:`kalman_filter`. The smoother uses the ``A_t`` the filter used.

    Example:
        >>> p = LGSSMParams(torch.eye(1), torch.eye(1), torch.eye(1), torch.eye(1),
        ...                 torch.zeros(1), torch.eye(1))
        >>> sm = kalman_smooth(torch.ones(2, 4, 1), p)
        >>> bool((sm.cov <= sm.filtered.cov + 1e-6).all())
        True
    """
    return rts_smooth(kalman_filter(y, params, u, mask, step_fn, jitter=jitter), jitter=jitter)


def rts_smooth(filtered: FilterResult, *, jitter: float | None = None) -> SmoothResult:
    """RTS backward pass over a :class:`FilterResult` (needs ``filtered.A``).

    mu_{t|T} = mu_t + J_t (mu_{t+1|T} - mu_{t+1|t}),
    Sigma_{t|T} = Sigma_t + J_t (Sigma_{t+1|T} - Sigma_{t+1|t}) J_t^T,
    J_t = Sigma_t A_{t+1}^T Sigma_{t+1|t}^{-1}, computed for all t at once before the recursion
    (written as Sigma_{t|T} = D_t + J_t Sigma_{t+1|T} J_t^T with D_t = Sigma_t - J_t Sigma_{t+1|t} J_t^T).
    """
    f = filtered
    if f.A is None:
        raise ValueError("filtered.A: expected the transition matrices the filter used, received None")
    B, T, z = f.mean.shape
    if T == 1:
        return SmoothResult(f.mean, f.cov, f)
    eps = _jitter(f.mean.dtype, jitter)
    Bc = 1 if f.shared else B  # covariance batch
    P = f.cov[:Bc, :-1]  # Sigma_t [Bc, T-1, z, z]
    Pp_next = f.pred_cov[:Bc, 1:]  # Sigma_{t+1|t}
    A_next = f.A[:Bc, 1:]
    Lp = _chol(_jittered(Pp_next, eps))
    _not_finite("predicted covariance Sigma_{t+1|t} at [b, t]", Lp)
    J = _tri_solve_t(Lp, _tri_solve(Lp, A_next @ P)).mT  # (Sigma_{t+1|t}^{-1} A_{t+1} Sigma_t)^T
    D = _sym(P - J @ Pp_next @ J.mT)  # [Bc, T-1, z, z]
    c = f.mean[:, :-1] - (J @ f.pred_mean[:, 1:, :, None])[..., 0]  # [B, T-1, z]
    Js, JTs, Ds, cs = J.unbind(1), J.mT.unbind(1), D.unbind(1), c.unbind(1)
    ms = f.mean[:, -1]  # [B, z]
    Ps = f.cov[:Bc, -1]  # [Bc, z, z]
    out_m, out_P = [ms], [Ps]
    for t in range(T - 2, -1, -1):
        if Bc == 1:
            ms = torch.addmm(cs[t], ms, JTs[t][0])
        else:
            ms = torch.baddbmm(cs[t][..., None], Js[t], ms[..., None])[..., 0]
        Ps = torch.baddbmm(Ds[t], Js[t] @ Ps, JTs[t])
        out_m.append(ms)
        out_P.append(Ps)
    mean = torch.stack(out_m[::-1], 1)
    cov = _sym(torch.stack(out_P[::-1], 1))
    if Bc == 1 and B > 1:
        cov, J, D = cov.expand(B, T, z, z), J.expand(B, T - 1, z, z), D.expand(B, T - 1, z, z)
    return SmoothResult(mean=mean, cov=cov, filtered=f, J=J, cond_cov=D)


# ---------------------------------------------------------------------------------------------
# sampling and forecasting


def _psd_sqrt(M: Tensor, eps: float) -> Tensor:
    """A square root S with S S^T = M for PSD ``M`` (Cholesky with jitter, eigh fallback)."""
    L = _chol(_jittered(M, eps))
    if bool(torch.isfinite(L).all()):
        return L
    evals, evecs = torch.linalg.eigh(_sym(M))
    return evecs * evals.clamp_min(0).sqrt()[..., None, :]


def sample_smoothed(
    smooth: SmoothResult,
    params: LGSSMParams,
    n: int,
    generator: torch.Generator | None = None,
    *,
    jitter: float | None = None,
) -> Tensor:
    """Joint samples z_{1:T} ~ p(z_{1:T} | x_{1:T}, u_{1:T}) by backward sampling ``[n, B, T, z]``.

    z_T ~ N(mu_T, Sigma_T);
    z_t | z_{t+1} ~ N(mu_t + J_t (z_{t+1} - mu_{t+1|t}), Sigma_t - J_t Sigma_{t+1|t} J_t^T).
    Reparameterised: gradients flow to the filter outputs. ``params`` is used to check the
    state dimension only (the transitions are the ones stored in ``smooth.filtered.A``).

    Example:
        >>> p = LGSSMParams(torch.eye(1), torch.eye(1), torch.eye(1), torch.eye(1),
        ...                 torch.zeros(1), torch.eye(1))
        >>> sample_smoothed(kalman_smooth(torch.ones(2, 4, 1), p), p, n=3).shape
        torch.Size([3, 2, 4, 1])
    """
    f = smooth.filtered
    B, T, z = smooth.mean.shape
    if params.mu0.shape[-1] != z:
        raise ValueError(
            f"params.mu0: expected state dimension {z} (of smooth.mean), received {params.mu0.shape[-1]}"
        )
    if n < 1:
        raise ValueError(f"n: expected a positive number of samples, received {n}")
    if smooth.J is None and T > 1:
        smooth = rts_smooth(f, jitter=jitter)
    eps_j = _jitter(smooth.mean.dtype, jitter)
    dtype, device = smooth.mean.dtype, smooth.mean.device
    noise = torch.randn(n, B, T, z, generator=generator, dtype=dtype, device=device)
    L_T = _psd_sqrt(smooth.cov[:, -1], eps_j)  # [B, z, z]
    zt = smooth.mean[:, -1] + (L_T @ noise[:, :, -1, :, None])[..., 0]  # [n, B, z]
    out = [zt]
    if T > 1:
        assert smooth.J is not None and smooth.cond_cov is not None
        L_D = _psd_sqrt(smooth.cond_cov, eps_j)  # [B, T-1, z, z]
        c = f.mean[:, :-1] - (smooth.J @ f.pred_mean[:, 1:, :, None])[..., 0]  # [B, T-1, z]
        w = c + (L_D @ noise[:, :, :-1, :, None])[..., 0]  # [n, B, T-1, z]
        JTs, ws = smooth.J.mT.unbind(1), w.unbind(2)
        for t in range(T - 2, -1, -1):
            zt = ws[t] + (zt[:, :, None, :] @ JTs[t])[:, :, 0]  # z_t = c_t + J_t z_{t+1} + L_t eps
            out.append(zt)
    return torch.stack(out[::-1], 2)


def forecast(
    mean: Tensor,
    cov: Tensor,
    A: Tensor,
    C: Tensor,
    Q: Tensor,
    R: Tensor,
    Bu: Tensor | None = None,
    u: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Open-loop prediction H steps ahead from a belief N(mean, cov) at the current step (§3.4.2).

    Step h (0-based) is z_{t+h+1} = A[:, h] z_{t+h} + Bu[:, h] u[:, h] + eps, x = C[:, h] z + delta.

    Args:
        mean: ``[B, z]``; cov: ``[B, z, z]``.
        A: ``[z, z]``, ``[B, z, z]`` or ``[B, H, z, z]``; C: likewise ``[.., x, z]``.
        Q: ``[z, z]`` (or batched like A); R: ``[x, x]`` (or batched like C).
        Bu: optional ``[z, u]``, ``[B, z, u]`` or ``[B, H, z, u]``; u: future controls ``[B, H, u]``.

    Returns:
        ``(z_mean [B, H, z], z_cov [B, H, z, z], x_mean [B, H, x], x_cov [B, H, x, x])``.
        Without time-varying inputs H is taken from ``u``; give ``A`` ``[B, H, z, z]`` or ``u`` to set it.

    Example:
        >>> zm, zc, xm, xc = forecast(torch.zeros(1, 2), torch.eye(2)[None], torch.eye(2)[None, None]
        ...     .expand(1, 3, 2, 2), torch.eye(2), torch.eye(2), torch.eye(2))
        >>> xc[0, :, 0, 0].tolist()
        [3.0, 4.0, 5.0]
    """
    if mean.dim() != 2:
        raise ValueError(f"mean: expected shape (B, z), received {tuple(mean.shape)}")
    B, z = mean.shape
    check_shape("cov", cov, (B, z, z))
    H = None
    for v in (A, C, Q, R, Bu):
        if v is not None and v.dim() == 4:
            H = v.shape[1]
    if u is not None:
        if u.dim() != 3:
            raise ValueError(f"u: expected shape (B, H, u), received {tuple(u.shape)}")
        H = u.shape[1] if H is None else H
        check_shape("u", u, (B, H, None))
    if H is None:
        raise ValueError("forecast: horizon unknown; expected A/C of shape (B, H, ...) or u (B, H, u)")
    x = C.shape[-2]
    As = _steps(_seq("A", A, B, H, z, z), H)
    Cs = _seq("C", C, B, H, x, z)
    Qs = _steps(_symmetric("Q", _seq("Q", Q, B, H, z, z)), H)
    Rs = _symmetric("R", _seq("R", R, B, H, x, x))
    bus = None
    if Bu is not None and u is not None:
        Bus = _seq("Bu", Bu, B, H, z, u.shape[-1])
        bus = (Bus @ u[..., None]).unbind(1)  # H x [B, z, 1]
    m, P = mean[..., None], cov
    out_m, out_P = [], []
    for h in range(H):
        m = As[h] @ m
        if bus is not None:
            m = m + bus[h]
        P = _sym(As[h] @ P @ As[h].mT + Qs[h])
        out_m.append(m)
        out_P.append(P)
    z_mean = torch.stack(out_m, 1)  # [B, H, z, 1]
    z_cov = torch.stack(out_P, 1)  # [B, H, z, z]
    x_mean = (Cs @ z_mean)[..., 0]
    x_cov = _sym(Cs @ z_cov @ Cs.mT + Rs)
    return z_mean[..., 0], z_cov, x_mean.expand(B, H, x), x_cov.expand(B, H, x, x)
