"""Reward and continue heads on a world model's belief features, one mechanism for every model.

A head reads the features of one step (``Belief.features [B, F]`` after a context, ``Imagination.latent
[N, H, F]`` of imagined steps, or :func:`belief_features` ``[B, T, F]`` of every step of a window) and
predicts that step's reward (the reward of the transition that led to it, ``Batch.reward``) or the
probability that the episode continues after it (``1 - Batch.terminated``):

* :class:`RewardHead` — an MLP; ``"twohot"`` loss (DreamerV3: a categorical over 255 bins spaced evenly
  in :func:`symlog` space, the target spread over its two neighbouring bins; scale-free) or ``"mse"``.
* :class:`ContinueHead` — an MLP, Bernoulli (binary cross-entropy) on ``cont = ~terminated``.
* :func:`belief_features` — the filtered features after every step of a :class:`~worldmodels.api.Batch`,
  ``features[:, t] = model.observe(obs[:, s:t+1], action[:, s:t+1], mask[:, s:t+1]).features`` with ``s``
  the episode start of step ``t``: from the model's ``features_per_step`` (one differentiable pass; RSSM,
  RNN, VRNN, KVAE, GTM-SM) or else by observing every prefix (any model; no gradients, ``T`` passes).
* :func:`reward_errors` — a head's reward error on held-out windows (filtered and imagined) against a
  constant prediction.

:class:`worldmodels.models.with_heads.WithHeads` puts the heads on any registered model (trained jointly
with the ELBO or post hoc on the frozen model) and fills ``Imagination.reward`` / ``Imagination.cont``.

Example:
    >>> import torch
    >>> head = RewardHead(8, hidden=(16,))
    >>> f, r = torch.randn(4, 5, 8), torch.rand(4, 5)
    >>> with torch.no_grad():
    ...     head(f).shape, round(float(head(f).abs().max()), 4)   # the two-hot output layer starts at zero
    (torch.Size([4, 5]), 0.0)
    >>> float(head.loss(f, r, torch.ones(4, 5)).detach()) > 0
    True
    >>> [round(v, 4) for v in symexp(symlog(torch.tensor([-100.0, 0.5]))).tolist()]
    [-100.0, 0.5]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldmodels.api import Batch

__all__ = [
    "ContinueHead",
    "REWARD_LOSSES",
    "RewardHead",
    "belief_features",
    "prefix_features",
    "reward_errors",
    "symexp",
    "symlog",
    "twohot",
]

#: the losses of :class:`RewardHead`
REWARD_LOSSES = ("twohot", "mse")


def symlog(x: Tensor) -> Tensor:
    """``sign(x) log(1 + |x|)`` (DreamerV3): compresses large magnitudes, identity-like near 0."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: Tensor) -> Tensor:
    """The inverse of :func:`symlog`: ``sign(x) (exp(|x|) - 1)``."""
    return torch.sign(x) * torch.expm1(x.abs())


def twohot(y: Tensor, bins: Tensor) -> Tensor:
    """``y [...]`` -> ``[..., K]`` weights on the two bins around ``y`` (clipped to the range of ``bins``),
    linear in the distance, summing to 1, so that ``(twohot(y, bins) * bins).sum(-1) == y``.

    Example:
        >>> twohot(torch.tensor([0.25, 5.0]), torch.tensor([0.0, 1.0, 2.0])).tolist()
        [[0.75, 0.25, 0.0], [0.0, 0.0, 1.0]]
    """
    K = bins.shape[0]
    y = y.clamp(float(bins[0]), float(bins[-1]))
    hi = torch.searchsorted(bins, y.contiguous(), right=True).clamp(1, K - 1)  # [...] upper neighbour
    lo = hi - 1
    w_hi = (y - bins[lo]) / (bins[hi] - bins[lo])  # [...]
    out = y.new_zeros(*y.shape, K)
    out.scatter_(-1, lo.unsqueeze(-1), (1 - w_hi).unsqueeze(-1))
    return out.scatter_add(-1, hi.unsqueeze(-1), w_hi.unsqueeze(-1))


def _mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """``(Linear -> LayerNorm -> SiLU) x len(hidden) -> Linear`` (DreamerV3's heads)."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.LayerNorm(h), nn.SiLU()]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


def _check_features(who: str, features: Tensor, dim: int) -> None:
    if features.dim() < 1 or features.shape[-1] != dim:
        raise ValueError(f"{who}: expected features [..., {dim}], received shape {tuple(features.shape)}")


def _weighted_mean(x: Tensor, weight: Tensor) -> Tensor:
    w = weight.to(x.dtype)
    return (x * w).sum() / w.sum().clamp_min(1.0)


class RewardHead(nn.Module):
    """``r_t`` from the features of step ``t``: ``[..., F] -> [...]``.

    Args:
        feature_dim: ``F``.
        hidden: widths of the hidden layers.
        loss: ``"twohot"`` (categorical over ``bins`` bins evenly spaced in symlog space on [-20, 20],
            output layer initialised to zero: predicts 0 at first; the prediction is ``symexp`` of the
            expected bin) or ``"mse"`` (the output is the reward; squared error).
        bins: number of bins of ``"twohot"``.
    """

    bins: Tensor  # [K] bin centres in symlog space (a buffer, not saved)

    def __init__(self, feature_dim: int, hidden: Sequence[int] = (128, 128), loss: str = "twohot",
                 bins: int = 255) -> None:
        super().__init__()
        if loss not in REWARD_LOSSES:
            raise ValueError(f"RewardHead: expected loss in {REWARD_LOSSES}, received {loss!r}")
        if loss == "twohot" and bins < 2:
            raise ValueError(f"RewardHead: expected bins >= 2, received {bins}")
        self.feature_dim, self.kind = int(feature_dim), loss
        self.net = _mlp(self.feature_dim, hidden, bins if loss == "twohot" else 1)
        if loss == "twohot":
            last = self.net[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.register_buffer("bins", torch.linspace(-20.0, 20.0, bins), persistent=False)  # symlog space

    def forward(self, features: Tensor) -> Tensor:
        """Predicted reward ``[...]`` of features ``[..., F]``."""
        _check_features("RewardHead", features, self.feature_dim)
        out = self.net(features)
        if self.kind == "mse":
            return out.squeeze(-1)
        return symexp((out.softmax(-1) * self.bins.to(out)).sum(-1))

    def loss(self, features: Tensor, reward: Tensor, weight: Tensor) -> Tensor:
        """Mean over the steps where ``weight [...] > 0`` (weighted) of the head's loss against ``reward [...]``."""
        _check_features("RewardHead.loss", features, self.feature_dim)
        if reward.shape != features.shape[:-1]:
            raise ValueError(f"RewardHead.loss: expected reward {tuple(features.shape[:-1])}, received "
                             f"{tuple(reward.shape)}")
        out = self.net(features)
        if self.kind == "mse":
            return _weighted_mean((out.squeeze(-1) - reward).square(), weight)
        target = twohot(symlog(reward.to(out)), self.bins.to(out))  # [..., K]
        return _weighted_mean(-(target * out.log_softmax(-1)).sum(-1), weight)


class ContinueHead(nn.Module):
    """``P(the episode continues after step t)`` from the features of step ``t``: ``[..., F] -> [...]`` in [0, 1].

    Args:
        feature_dim: ``F``.
        hidden: widths of the hidden layers.
    """

    def __init__(self, feature_dim: int, hidden: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        self.feature_dim = int(feature_dim)
        self.net = _mlp(self.feature_dim, hidden, 1)

    def logits(self, features: Tensor) -> Tensor:
        _check_features("ContinueHead", features, self.feature_dim)
        return self.net(features).squeeze(-1)

    def forward(self, features: Tensor) -> Tensor:
        """Continue probability ``[...]`` of features ``[..., F]``."""
        return torch.sigmoid(self.logits(features))

    def loss(self, features: Tensor, cont: Tensor, weight: Tensor) -> Tensor:
        """Weighted mean binary cross-entropy against ``cont [...]`` (1 = continues, 0 = terminal)."""
        logits = self.logits(features)
        if cont.shape != logits.shape:
            raise ValueError(f"ContinueHead.loss: expected cont {tuple(logits.shape)}, received {tuple(cont.shape)}")
        bce = F.binary_cross_entropy_with_logits(logits, cont.to(logits), reduction="none")
        return _weighted_mean(bce, weight)


# ------------------------------------------------------------------------------------- features per step


def prefix_features(model: Any, obs: Tensor, action: Tensor, mask: Tensor | None = None) -> Tensor:
    """``[B, T, F]``: ``model.observe`` on every prefix ``obs[:, :t+1]`` (any model, ``T`` calls).

    The reference that a model's ``features_per_step`` must equal; gradients only where ``observe`` keeps
    them (most models observe under ``torch.no_grad``).
    """
    T = obs.shape[1]
    if T == 0:
        raise ValueError(f"prefix_features: expected at least one step, received obs {tuple(obs.shape)}")
    return torch.stack([
        model.observe(obs[:, : t + 1], action[:, : t + 1], None if mask is None else mask[:, : t + 1]).features
        for t in range(T)
    ], 1)


def belief_features(model: Any, batch: Batch) -> Tensor:
    """The belief features after every step of ``batch``: ``[B, T, F]``.

    ``features[:, t]`` is ``model.observe(obs[:, s:t+1], action[:, s:t+1], mask[:, s:t+1]).features``,
    ``s`` the last episode start (``is_first``) at or before ``t``. Computed by the model's
    ``features_per_step(obs, action, mask)`` when it has one (one pass, differentiable, so a head's loss
    reaches the model), else by :func:`prefix_features`. Episodes that start inside the window are
    filtered from their own start (one call per distinct segment).

    Example:
        >>> import torch
        >>> from worldmodels.models import build_model
        >>> model = build_model("rnn", "debug", obs_shape=(4,), action_dim=2).eval()
        >>> batch = Batch(obs=torch.rand(3, 5, 4), action=torch.zeros(3, 5, 2))
        >>> f = belief_features(model, batch)
        >>> f.shape, torch.allclose(f[:, 2], model.observe(batch.obs[:, :3], batch.action[:, :3]).features)
        (torch.Size([3, 5, 24]), True)
    """
    hook = getattr(model, "features_per_step", None)
    run: Callable[[Tensor, Tensor, Tensor], Tensor] = (
        hook if callable(hook) else lambda o, a, m: prefix_features(model, o, a, m)
    )
    B, T = batch.shape
    if not bool(batch.is_first[:, 1:].any()):
        return run(batch.obs, batch.action, batch.mask)
    first = batch.is_first.clone()
    first[:, 0] = True
    groups: dict[tuple[int, int], list[int]] = {}  # (start, end) of a segment -> rows holding it
    for b in range(B):
        starts = first[b].nonzero().flatten().tolist()
        for s, e in zip(starts, [*starts[1:], T]):
            groups.setdefault((s, e), []).append(b)
    out: Tensor | None = None
    for (s, e), rows in groups.items():
        r = torch.as_tensor(rows, device=batch.obs.device)
        f = run(batch.obs[r, s:e], batch.action[r, s:e], batch.mask[r, s:e])  # [n, e - s, F]
        if out is None:
            out = f.new_zeros(B, T, f.shape[-1])
        out[r, s:e] = f
    assert out is not None
    return out


# ------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def reward_errors(model: Any, batches: Iterable[Batch], context: int, constant: float) -> dict[str, Any]:
    """A reward head's mean squared error on held-out windows, against the constant prediction ``constant``.

    For every window (one episode each, ``T > context``): the *filtered* error of the head on
    :func:`belief_features` at steps ``context..T-1`` (the head reads features that saw the frame), and the
    *imagined* error of ``Imagination.reward`` after ``model.observe(obs[:, :context])`` and
    ``model.imagine`` under the window's own ``action[:, context:]`` (the head reads imagined features,
    as an agent in imagination does). ``constant`` is typically the mean training reward.

    Args:
        model: a model whose ``imagine`` fills ``Imagination.reward`` and with ``predict_reward(features)``
            (:class:`worldmodels.models.with_heads.WithHeads`).
        batches: windows with ``reward`` (e.g. :func:`worldmodels.data.iterate_batches` of held-out windows).
        context: observed frames before imagination (>= 1).
        constant: the baseline's prediction.

    Returns:
        ``{"filtered_mse", "imagined_mse", "constant_mse", "imagined_mse_by_step" (list over the horizon),
        "constant_mse_by_step", "steps"}``.
    """
    if context < 1:
        raise ValueError(f"reward_errors: expected context >= 1, received {context}")
    sums = {"filtered": 0.0, "imagined": 0.0, "constant": 0.0}
    by_step_im: Tensor | None = None
    by_step_c: Tensor | None = None
    n = rows = 0
    for batch in batches:
        if batch.reward is None:
            raise ValueError("reward_errors: expected batches with reward, received Batch.reward None")
        B, T = batch.shape
        if T <= context:
            raise ValueError(f"reward_errors: expected windows longer than context = {context}, received T = {T}")
        if bool(batch.is_first[:, 1:].any()):
            raise ValueError("reward_errors: expected windows inside one episode (is_first only at t = 0)")
        target = batch.reward[:, context:]  # [B, H]
        filtered = model.predict_reward(belief_features(model, batch)[:, context:])  # [B, H]
        im = model.imagine(model.observe(batch.obs[:, :context], batch.action[:, :context]), batch.action[:, context:])
        if im.reward is None:
            raise ValueError(f"reward_errors: {type(model).__name__}.imagine returned no Imagination.reward")
        err_im = (im.reward - target).square()  # [B, H]
        err_c = (constant - target).square()
        sums["filtered"] += float((filtered - target).square().sum())
        sums["imagined"] += float(err_im.sum())
        sums["constant"] += float(err_c.sum())
        by_step_im = err_im.sum(0) if by_step_im is None else by_step_im + err_im.sum(0)
        by_step_c = err_c.sum(0) if by_step_c is None else by_step_c + err_c.sum(0)
        n += target.numel()
        rows += B
    if n == 0 or by_step_im is None or by_step_c is None:
        raise ValueError("reward_errors: received no windows")
    return {
        "filtered_mse": sums["filtered"] / n,
        "imagined_mse": sums["imagined"] / n,
        "constant_mse": sums["constant"] / n,
        "imagined_mse_by_step": (by_step_im / rows).tolist(),
        "constant_mse_by_step": (by_step_c / rows).tolist(),
        "steps": n,
    }
