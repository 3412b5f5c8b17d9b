"""Reading GTM-SM's spatial memory (thesis §7.3.3, §7.4.1, §7.7.2, §7.10): the prior ``p(z_t | s_t, m)`` from the
states nearest to ``s_t``, and the landmark posterior ``q(s_t | s_{t-1}, a_t, z_t, m_{1:t-1})`` from the frames
nearest to ``z_t``.

The memory of a window holds ``(s_t, μ_z,t, σ_z,t)`` of its memorisation steps; :func:`knn_gather` finds the
``K`` nearest keys of each query inside each batch element (exact, no gradient) and gathers the rows from the
torch tensors, so gradients reach the keys (states) and values (z statistics). A memory shared by many queries is
searched with :class:`worldmodels.memory.DND` by the model.

Priors, one class per ``config.prior`` (:data:`PRIORS`), each called as ``prior(s, keys, mu_m, std_m, valid)``:

* :class:`MixturePrior` ``"mixture"``: ``Σ_k w_k N(z | μ_k, σ_k²)``, ``w_k ∝ 1 / (d_k² + δ)`` (§7.4.1).
* :class:`CombinerPrior` ``"combiner"``: an MLP over the retrieved ``{s̃_k, μ_k, σ_k}`` gives ``h_t``; a second
  MLP maps ``(h_t, s̃_t)`` to a Gaussian; ``s̃ = (x, y, cos θ, sin θ)`` for 3-D states (§7.7.2).

:class:`LandmarkInference` is the landmark inference network of §7.10 (the reverse, z -> s, lookup of
:func:`causal_reverse_search`); it returns a :class:`LandmarkPosterior`.

Like the transitions (:mod:`worldmodels.models.gtmsm_transitions`), a prior or landmark network holds references
to modules that GTM-SM registers on itself under the names of ``named_parts()`` (``combine_in``, ``combine_out``,
``beta_net``, ``beta_prior_logit``, ``var_net``).

Example:
    >>> prior = MixturePrior(k=2, delta=1e-4)
    >>> keys = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]]])  # [B, N, S]
    >>> mu_m, std_m = torch.tensor([[[0.0], [1.0], [5.0]]]), torch.ones(1, 3, 1)  # [B, N, z]
    >>> log_w, mu, std, d2 = prior(torch.tensor([[[0.9, 0.0]]]), keys, mu_m, std_m, None)
    >>> [round(w, 3) for w in log_w.exp().flatten().tolist()], mu.flatten().tolist()
    ([0.988, 0.012], [1.0, 0.0])
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldmodels.models.gtmsm_transitions import Transition, wrap_heading

__all__ = ["knn_gather", "gather_rows", "inverse_distance_weights", "gaussian_log_prob", "gaussian_kl",
           "mixture_log_prob", "state_features", "causal_reverse_search", "PriorConfig", "MemoryPrior",
           "MixturePrior", "CombinerPrior", "PRIORS", "LandmarkConfig", "LandmarkInference", "LandmarkPosterior"]

_LOG_2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------------------------
# DND read: exact search (no gradient) + differentiable gather (NOTES: squared distances)
# --------------------------------------------------------------------------------------------


def knn_gather(
    query: Tensor, keys: Tensor, valid: Tensor | None, k: int, chunk: int | None = None
) -> tuple[Tensor, Tensor]:
    """K nearest keys of each query inside each batch element, with differentiable distances.

    Args:
        query: ``[B, Q, S]``.
        keys: ``[B, N, S]``.
        valid: ``[B, Q, N]`` or ``[B, 1, N]`` bool, ``False`` = entry may not be returned; or None.
        k: neighbours (clipped to N).

    Returns:
        ``d2 [B, Q, k]`` squared distances (``inf`` for invalid entries; differentiable w.r.t.
        query and keys) and ``idx [B, Q, k]`` indices into ``N``, nearest first.

    Example:
        >>> keys = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]])
        >>> d2, idx = knn_gather(torch.tensor([[[0.9, 0.0]]]), keys, None, 2)
        >>> idx.tolist(), [round(v, 2) for v in d2.flatten().tolist()]
        ([[[1, 0]]], [0.01, 0.81])
    """
    B, Q, _ = query.shape
    N = keys.shape[1]
    k = min(k, N)
    chunk = chunk or max(1, 2**24 // max(1, B * N))  # bound the [B, chunk, N] distance block
    idx_parts = []
    with torch.no_grad():
        for q0 in range(0, Q, chunk):
            q = query[:, q0 : q0 + chunk].detach()
            d = torch.cdist(q, keys.detach()).square()  # [B, q, N]
            if valid is not None:
                v = valid if valid.shape[1] == 1 else valid[:, q0 : q0 + chunk]
                d = d.masked_fill(~v, float("inf"))
            idx_parts.append(d.topk(k, dim=-1, largest=False).indices)
    idx = torch.cat(idx_parts, dim=1)  # [B, Q, k]
    picked = gather_rows(keys, idx)  # [B, Q, k, S]
    d2 = (picked - query.unsqueeze(2)).square().sum(-1)  # [B, Q, k]
    if valid is not None:
        v = valid.expand(B, Q, N) if valid.shape[1] == 1 else valid
        ok = v.gather(2, idx)
        d2 = d2.masked_fill(~ok, float("inf"))
    return d2, idx


def gather_rows(values: Tensor, idx: Tensor) -> Tensor:
    """``values [B, N, D]``, ``idx [B, Q, k]`` -> ``[B, Q, k, D]`` (differentiable in ``values``)."""
    B, Q, k = idx.shape
    D = values.shape[-1]
    flat = idx.reshape(B, Q * k, 1).expand(B, Q * k, D)
    return values.gather(1, flat).reshape(B, Q, k, D)


def inverse_distance_weights(d2: Tensor, delta: float) -> tuple[Tensor, Tensor]:
    """``w_k ∝ 1 / (d_k² + δ)`` over the last dim (§7.4.1), ``inf`` distances get weight 0.

    Returns ``(log_w [..., k], any_valid [...])``; rows without a valid entry get uniform weights.
    """
    finite = torch.isfinite(d2)
    logits = -torch.log(torch.where(finite, d2, torch.ones_like(d2)) + delta)
    logits = logits.masked_fill(~finite, -1e30)
    any_valid = finite.any(-1)
    logits = torch.where(any_valid.unsqueeze(-1), logits, torch.zeros_like(logits))
    return torch.log_softmax(logits, dim=-1), any_valid


def gaussian_log_prob(z: Tensor, mu: Tensor, std: Tensor) -> Tensor:
    """Diagonal Gaussian log-density summed over the last dim."""
    return (-0.5 * ((z - mu) / std).square() - torch.log(std) - 0.5 * _LOG_2PI).sum(-1)


def gaussian_kl(mu_q: Tensor, std_q: Tensor, mu_p: Tensor, std_p: Tensor) -> Tensor:
    """``KL(N(μ_q, σ_q²) || N(μ_p, σ_p²))`` of diagonal Gaussians, summed over the last dim."""
    var_ratio = (std_q / std_p).square()
    return 0.5 * (var_ratio + ((mu_q - mu_p) / std_p).square() - 1.0 - torch.log(var_ratio)).sum(-1)


def mixture_log_prob(z: Tensor, log_w: Tensor, mu: Tensor, std: Tensor) -> Tensor:
    """``log Σ_k w_k N(z | μ_k, σ_k²)``: z ``[..., D]``, log_w ``[..., K]``, mu/std ``[..., K, D]``.

    Example:
        >>> z = torch.zeros(1, 2)
        >>> lp = mixture_log_prob(z, torch.log(torch.tensor([[0.5, 0.5]])), torch.zeros(1, 2, 2), torch.ones(1, 2, 2))
        >>> round(float(lp), 4) == round(-math.log(2 * math.pi), 4)
        True
    """
    comp = gaussian_log_prob(z.unsqueeze(-2), mu, std)  # [..., K]
    return torch.logsumexp(log_w + comp, dim=-1)


def state_features(s: Tensor) -> Tensor:
    """DND key of a state: ``s`` for 2-D, ``(x, y, cos θ, sin θ)`` for 3-D states (§7.7.2)."""
    if s.shape[-1] == 3:
        return torch.cat([s[..., :2], torch.cos(s[..., 2:3]), torch.sin(s[..., 2:3])], dim=-1)
    return s



def causal_reverse_search(
    mu_z: Tensor, valid: Tensor, k: int, is_first: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Reverse DND lookup of §7.10 for every step of a sequence: the ``k`` memorised steps ``i < t`` whose
    frame encodings are nearest to ``z_t`` (z-codes as keys; the caller gathers the states as values).

    Equivalent to writing ``(s_i, μ_z,i)`` into a :class:`worldmodels.memory.DND` after each step ``i`` and
    calling ``reverse_read(μ_z,t, k)`` before writing step ``t`` (tested against it), but batched over
    ``t``: the codes do not depend on the states, so all searches run at once.

    Args:
        mu_z: encoder means ``[B, T, z]``.
        valid: ``[B, T]`` bool, steps written into the memory (observed frames); a step whose own frame
            is missing retrieves nothing.
        k: K'.
        is_first: ``[B, T]`` bool or None: a step never retrieves entries of an earlier episode.

    Returns:
        ``delta2 [B, T, k]`` squared z-space distances δ^(k)² (differentiable in ``mu_z``; ``inf`` where
        nothing was found) and ``idx [B, T, k]`` the retrieved time steps (-1 where nothing was found),
        nearest first, ties towards the earlier step (as the DND's exact search).
    """
    B, T, Z = mu_z.shape
    with torch.no_grad():
        m = mu_z.detach()
        D = torch.zeros(B, T, T, dtype=m.dtype, device=m.device)  # [B, t, i]
        for j in range(Z):  # Σ_j (z_t,j − z_i,j)², coordinate order like the DND's torch search
            D += (m[:, :, None, j] - m[:, None, :, j]).square()
        allowed = torch.ones(T, T, dtype=torch.bool, device=m.device).tril(-1)  # i < t
        allowed = allowed & valid[:, None, :] & valid[:, :, None]
        if is_first is not None:
            seg = torch.cumsum(is_first.long(), 1)
            allowed = allowed & (seg[:, :, None] == seg[:, None, :])
        D = D.masked_fill(~allowed, math.inf)
        kk = min(k, T)
        order = torch.sort(D, dim=-1, stable=True).indices[..., :kk]  # [B, T, kk]
        found = torch.isfinite(D.gather(-1, order))
        if kk < k:
            order = F.pad(order, (0, k - kk))
            found = F.pad(found, (0, k - kk))
    delta2 = (gather_rows(mu_z, order) - mu_z.unsqueeze(2)).square().sum(-1)  # [B, T, k]
    return delta2.masked_fill(~found, math.inf), torch.where(found, order, torch.full_like(order, -1))


@dataclass
class LandmarkPosterior:
    """States inferred by the landmark inference network (§7.10) over ``T`` steps.

    Attributes:
        s: ``[B, T, S]`` samples of ``q*(s_t)`` (ancestral, reparameterised) or the mean path.
        d: ``[B, T, S]`` displacements ``d_t`` of the prior transition.
        s_prev: ``[B, T, S]`` the ``s_{t-1}`` each step started from (0 at an episode start).
        mu_p: ``[B, T, S]`` prior mean ``μ_p`` of ``p(s_t | s_{t-1}, a_t)``; its std is
            ``config.landmark_prior_std``.
        mu_q, std_q: ``[B, T, S]`` posterior mean and std.
        beta: ``[B, T, K']`` β_k (0 where nothing was retrieved); ``Σ_k β_k <= 1``.
        idx: ``[B, T, K']`` retrieved time steps (-1: none); delta2 ``[B, T, K']`` δ^(k)².
        kl: ``[B, T]`` ``KL[q(s_t | ...) || p(s_t | s_{t-1}, a_t)]``.
    """

    s: Tensor
    d: Tensor
    s_prev: Tensor
    mu_p: Tensor
    mu_q: Tensor
    std_q: Tensor
    beta: Tensor
    idx: Tensor
    delta2: Tensor
    kl: Tensor


# --------------------------------------------------------------------------------------------
# The prior p(z_t | s_t, m): K nearest states -> a mixture (§7.4.1) or a learned combiner (§7.7.2)
# --------------------------------------------------------------------------------------------


class PriorConfig(Protocol):
    """The fields of :class:`worldmodels.models.gtmsm.GTMSMConfig` that the priors read."""

    state_dim: int
    z_dim: int
    hidden: int
    k: int
    delta: float
    min_std: float


class MemoryPrior(abc.ABC):
    """VAE prior ``p(z_t | s_t, m)`` from the ``k`` memories nearest to ``s_t`` (squared distances of
    :func:`state_features`, inverse-distance weights ``1 / (d² + δ)``).

    Attributes:
        name: the ``config.prior`` value.
        k: neighbours retrieved; delta: δ of the weights.
    """

    name: ClassVar[str]

    def __init__(self, k: int, delta: float) -> None:
        self.k, self.delta = k, delta

    @classmethod
    def from_config(cls, c: PriorConfig) -> MemoryPrior:
        """A prior for ``c`` with fresh parameters (if it has any)."""
        return cls(c.k, c.delta)

    def named_parts(self) -> dict[str, nn.Module]:
        """The modules to register on the owning model, by attribute name (its state_dict keys)."""
        return {}

    def __call__(
        self, s: Tensor, keys: Tensor, mu_m: Tensor, std_m: Tensor, valid: Tensor | None, idx: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The prior at the queries ``s``.

        Args:
            s: queries ``[B, Q, S]``; keys ``[B, N, S]``; mu_m/std_m ``[B, N, z]``;
            valid: ``[B, Q, N]`` / ``[B, 1, N]`` bool or None.
            idx: ``[B, Q, K]`` neighbour indices found elsewhere (a DND index); searched here when None.

        Returns:
            ``log_w [B, Q, K']``, ``mu [B, Q, K', z]``, ``std [B, Q, K', z]`` of a mixture
            (``K' = 1`` for the combiner), and ``d2 [B, Q, K]`` the squared neighbour distances.
        """
        fq, fk = state_features(s), state_features(keys)
        if idx is None:
            d2, idx = knn_gather(fq, fk, valid, self.k)
        else:
            d2 = (gather_rows(fk, idx) - fq.unsqueeze(2)).square().sum(-1)
        mu_k, std_k = gather_rows(mu_m, idx), gather_rows(std_m, idx)  # [B, Q, k, z]
        log_w, any_valid = inverse_distance_weights(d2, self.delta)
        log_w, mu, std = self.from_neighbours(fq, fk, idx, d2, log_w, any_valid, mu_k, std_k)
        return log_w, mu, std, d2

    @abc.abstractmethod
    def from_neighbours(
        self, fq: Tensor, fk: Tensor, idx: Tensor, d2: Tensor, log_w: Tensor, any_valid: Tensor, mu_k: Tensor,
        std_k: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(log_w, mu, std)`` of the prior from the retrieved neighbours: query/key features ``fq [B, Q, F]``,
        ``fk [B, N, F]``, ``idx``/``d2``/``log_w`` ``[B, Q, k]``, ``any_valid [B, Q]``, ``mu_k``/``std_k``
        ``[B, Q, k, z]``."""


class MixturePrior(MemoryPrior):
    """``p(z_t | s_t, m) = Σ_k w_k N(z | μ_k, σ_k²)``, ``w_k ∝ 1 / (d_k² + δ)`` (§7.4.1); ``N(0, I)`` where no
    memory is valid."""

    name = "mixture"

    def from_neighbours(
        self, fq: Tensor, fk: Tensor, idx: Tensor, d2: Tensor, log_w: Tensor, any_valid: Tensor, mu_k: Tensor,
        std_k: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        none = ~any_valid.unsqueeze(-1).unsqueeze(-1)  # no memory: fall back to N(0, I)
        mu_k = torch.where(none, torch.zeros_like(mu_k), mu_k)
        std_k = torch.where(none, torch.ones_like(std_k), std_k)
        return log_w, mu_k, std_k


class CombinerPrior(MemoryPrior):
    """``h_t = f({s̃_k - s̃_t, μ_k, log σ_k, d_k²})``, ``p(z_t | s_t, m) = N(g(h_t, s̃_t))`` (§7.7.2): one Gaussian
    (``K' = 1``) from two MLPs, ``combine_in`` (f) and ``combine_out`` (g); ``σ = softplus(.) + min_std``.

    Empty neighbour slots (fewer than ``k`` memories, or invalid ones) enter as zeros with distance 10.

    Example:
        >>> from types import SimpleNamespace
        >>> prior = CombinerPrior.from_config(SimpleNamespace(state_dim=2, z_dim=3, hidden=8, k=2, delta=1e-4, min_std=1e-3))
        >>> log_w, mu, std, d2 = prior(torch.zeros(1, 4, 2), torch.randn(1, 5, 2), torch.randn(1, 5, 3),
        ...                            torch.ones(1, 5, 3), None)
        >>> log_w.shape, mu.shape, sorted(prior.named_parts())
        (torch.Size([1, 4, 1]), torch.Size([1, 4, 1, 3]), ['combine_in', 'combine_out'])
    """

    name = "combiner"

    def __init__(self, k: int, delta: float, combine_in: nn.Module, combine_out: nn.Module, min_std: float) -> None:
        super().__init__(k, delta)
        self.combine_in, self.combine_out, self.min_std = combine_in, combine_out, min_std

    @classmethod
    def from_config(cls, c: PriorConfig) -> MemoryPrior:
        F_s, Z = 4 if c.state_dim == 3 else c.state_dim, c.z_dim  # size of s̃
        combine_in = nn.Sequential(
            nn.Linear(c.k * (F_s + 2 * Z + 1), c.hidden), nn.ReLU(), nn.Linear(c.hidden, c.hidden), nn.ReLU()
        )
        combine_out = nn.Sequential(nn.Linear(c.hidden + F_s, c.hidden), nn.ReLU(), nn.Linear(c.hidden, 2 * Z))
        return cls(c.k, c.delta, combine_in, combine_out, c.min_std)

    def named_parts(self) -> dict[str, nn.Module]:
        return {"combine_in": self.combine_in, "combine_out": self.combine_out}

    def from_neighbours(
        self, fq: Tensor, fk: Tensor, idx: Tensor, d2: Tensor, log_w: Tensor, any_valid: Tensor, mu_k: Tensor,
        std_k: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        f_k = gather_rows(fk, idx)  # [B, Q, k, F]
        finite = torch.isfinite(d2).unsqueeze(-1)
        d_in = torch.where(finite, d2.unsqueeze(-1), torch.full_like(d2.unsqueeze(-1), 10.0))
        rel = torch.where(finite, f_k - fq.unsqueeze(2), torch.zeros_like(f_k))
        feats = torch.cat([rel, torch.where(finite, mu_k, 0.0), torch.where(finite, std_k.log(), 0.0), d_in], -1)
        kk = feats.shape[2]
        if kk < self.k:  # fewer memories than K: pad
            feats = F.pad(feats, (0, 0, 0, self.k - kk))
        h = self.combine_in(feats.flatten(2))  # h_t = f({s_i, z_i})
        mu, pre = self.combine_out(torch.cat([h, fq], -1)).chunk(2, -1)
        std = F.softplus(pre) + self.min_std
        return log_w.new_zeros(*log_w.shape[:-1], 1), mu.unsqueeze(2), std.unsqueeze(2)


#: ``config.prior`` -> class.
PRIORS: dict[str, type[MemoryPrior]] = {cls.name: cls for cls in (MixturePrior, CombinerPrior)}


# --------------------------------------------------------------------------------------------
# The landmark posterior q(s_t | s_{t-1}, a_t, z_t, m_{1:t-1}) of §7.10
# --------------------------------------------------------------------------------------------


class LandmarkConfig(Protocol):
    """The fields of :class:`worldmodels.models.gtmsm.GTMSMConfig` that the landmark network reads."""

    state_dim: int
    landmark_k: int
    landmark_hidden: int
    landmark_prior_std: float


class LandmarkInference:
    """Landmark inference network ``q(s_t | s_{t-1}, a_t, z_t, m_{1:t-1})`` of §7.10, run over a sequence.

    With ``μ_p`` the mean of ``p(s_t | s_{t-1}, a_t)`` (eqs. 7.2-7.4, from the sample ``s_{t-1}``),
    σ_p = ``prior_std`` and the K' entries ``(δ^(k), μ_k, σ_k²)`` retrieved by :func:`causal_reverse_search`::

        μ_q = μ_p + Σ_k β_k (μ_k − μ_p)                                       §7.10
        β_{0:K'} = softmax(c_0, f(δ^(1)), …, f(δ^(K')))   (β_0: stay at μ_p; so β_k ∈ [0, 1], Σ_k β_k ≤ 1)
        log σ_q² = log σ_p² + g(δ^(1:K'), σ²_(1:K'), σ_p²)                     §7.10

    ``f`` (``beta_net``) sees ``log(δ² + 1e-4)`` of one entry (the thesis's "simple network with input δ"); the
    softmax with a stay-slot (logit ``c_0 = beta_prior_logit``) keeps the update convex when several stored
    frames match (repeated visits). ``μ_k, σ_k²`` are the stored posterior mean and variance of step ``k`` (§7.10:
    "we stored in the DND the mean and the variance"); ``g`` is ``var_net``. Heading differences are wrapped for
    3-D states.

    Args:
        beta_net: ``1 -> 1`` network f; beta_prior_logit: scalar c_0; var_net: ``K'(2 + S) + S -> S`` network g;
        state_dim: S; k: K'; prior_std: σ_p.
    """

    def __init__(self, beta_net: nn.Module, beta_prior_logit: Tensor, var_net: nn.Module, state_dim: int, k: int,
                 prior_std: float) -> None:
        self.beta_net, self.beta_prior_logit, self.var_net = beta_net, beta_prior_logit, var_net
        self.state_dim, self.k, self.prior_std = state_dim, k, prior_std

    @classmethod
    def from_config(cls, c: LandmarkConfig) -> LandmarkInference:
        """Fresh networks: β_k ≈ 0 and σ_q = 0.1 σ_p at the start (the posterior starts at the prior's mean)."""
        Kp, Hl, S = c.landmark_k, c.landmark_hidden, c.state_dim
        beta_net = nn.Sequential(nn.Linear(1, Hl), nn.Tanh(), nn.Linear(Hl, 1))  # logit of β_k
        beta_prior_logit = nn.Parameter(torch.tensor(4.0))  # logit of "stay at μ_p": β_k ≈ 0 at start
        var_net = nn.Sequential(nn.Linear(Kp * (2 + S) + S, Hl), nn.Tanh(), nn.Linear(Hl, S))
        out: nn.Linear = var_net[-1]  # type: ignore[assignment]
        nn.init.zeros_(out.weight)
        nn.init.constant_(out.bias, 2 * math.log(0.1))  # σ_q = 0.1 σ_p at start
        return cls(beta_net, beta_prior_logit, var_net, S, Kp, c.landmark_prior_std)

    def named_parts(self) -> dict[str, nn.Module | nn.Parameter]:
        """The modules and parameters to register on the owning model, by attribute name (its state_dict keys)."""
        if not isinstance(self.beta_prior_logit, nn.Parameter):
            raise TypeError("LandmarkInference.named_parts: expected beta_prior_logit to be an nn.Parameter, "
                            f"received {type(self.beta_prior_logit).__name__}")
        return {"beta_net": self.beta_net, "beta_prior_logit": self.beta_prior_logit, "var_net": self.var_net}

    def __call__(
        self, transition: Transition, action: Tensor, mu_z: Tensor, valid: Tensor, is_first: Tensor | None = None,
        noise: bool = False,
    ) -> LandmarkPosterior:
        """The posterior over ``T`` steps: step ``t`` queries the memory of the steps ``i < t`` of its episode
        (z-codes as keys, states as values), then writes its own ``(s_t, z_t)``.

        Args:
            transition: the prior transition ``p(s_t | s_{t-1}, a_t)`` (its :meth:`~Transition.step` gives μ_p).
            action: ``[B, T, A]``; mu_z: encoder means ``[B, T, z]``; valid: ``[B, T]`` bool (observed);
            is_first: ``[B, T]`` or None (state, displacement and memory restart there).
            noise: sample ``s_t = μ_q + σ_q ε`` (training: the ELBO's ancestral ``q*(s_t)``) or the mean path.

        Returns:
            :class:`LandmarkPosterior`, with ``kl [B, T]`` the closed-form Gaussian KL of each step.
        """
        B, T, _ = action.shape
        S, Kp = self.state_dim, self.k
        delta2, idx = causal_reverse_search(mu_z, valid, Kp, is_first)  # [B, T, K'] each
        found = idx >= 0
        u = torch.log(torch.where(found, delta2, torch.ones_like(delta2)) + 1e-4)  # log δ², [B, T, K']
        logit_k = self.beta_net(0.25 * u.unsqueeze(-1)).squeeze(-1).masked_fill(~found, -1e30)
        logits = torch.cat([self.beta_prior_logit.expand(B, T, 1).to(logit_k), logit_k], -1)
        beta = torch.softmax(logits, -1)[..., 1:] * found  # [B, T, K']
        log_var_p = torch.full((B, S), 2 * math.log(self.prior_std), dtype=mu_z.dtype, device=mu_z.device)
        u_in = torch.where(found, u, torch.full_like(u, 5.0))  # "far" for empty slots
        s = action.new_zeros(B, S)
        d = action.new_zeros(B, S)
        out: dict[str, list[Tensor]] = {k: [] for k in ("s", "d", "s_prev", "mu_p", "mu_q", "lv_q")}
        for t in range(T):
            if is_first is not None:
                first = is_first[:, t].unsqueeze(-1)
                s = torch.where(first, torch.zeros_like(s), s)
                d = torch.where(first, torch.zeros_like(d), d)
            out["s_prev"].append(s)
            mu_p, d = transition.step(s, d, action[:, t])  # [B, S]
            if t > 0:
                j = idx[:, t].clamp_min(0).unsqueeze(-1).expand(B, Kp, S)  # [B, K', S] slots i < t
                mu_k = torch.stack(out["mu_q"], 1).gather(1, j)  # [B, K', S]
                lv_k = torch.stack(out["lv_q"], 1).gather(1, j)
            else:
                mu_k = mu_p.unsqueeze(1).expand(B, Kp, S)
                lv_k = log_var_p.unsqueeze(1).expand(B, Kp, S)
            f_t = found[:, t].unsqueeze(-1)  # [B, K', 1]
            diff = torch.where(f_t, wrap_heading(mu_k - mu_p.unsqueeze(1)), torch.zeros_like(mu_k))
            mu_q = mu_p + (beta[:, t].unsqueeze(-1) * diff).sum(1)  # μ_q = μ_p + Σ β_k (μ_k − μ_p)
            feats = torch.cat([u_in[:, t], found[:, t].to(u_in.dtype),
                               torch.where(f_t, lv_k, torch.zeros_like(lv_k)).flatten(1), log_var_p], -1)
            lv_q = log_var_p + self.var_net(feats)  # log σ_q² = log σ_p² + g(...)
            s = mu_q + torch.exp(0.5 * lv_q) * torch.randn_like(mu_q) if noise else mu_q
            for k, v in (("s", s), ("d", d), ("mu_p", mu_p), ("mu_q", mu_q), ("lv_q", lv_q)):
                out[k].append(v)
        st = {k: torch.stack(v, 1) for k, v in out.items()}  # [B, T, S] each
        std_q = torch.exp(0.5 * st["lv_q"])
        kl = gaussian_kl(st["mu_q"], std_q, st["mu_p"], torch.full_like(std_q, self.prior_std))  # [B, T]
        return LandmarkPosterior(s=st["s"], d=st["d"], s_prev=st["s_prev"], mu_p=st["mu_p"], mu_q=st["mu_q"],
                                 std_q=std_q, beta=beta, idx=idx, delta2=delta2, kl=kl)
