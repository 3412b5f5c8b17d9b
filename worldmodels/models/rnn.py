"""A plain action-conditioned RNN world model with an exact log-likelihood (thesis §4.2).

Generative model (deterministic state, no latent variables)::

    h_t = GRU(h_{t-1}, [e(x_{t-1}), g(u_t)])      e = observation encoder, g = action embedding
    p(x_t | x_{<t}, u_{<=t}) = p(x_t | h_t)         Bernoulli / Gaussian / discretised Gaussian emission

with ``h_{-1} = 0`` and ``e(x_{-1}) = 0`` at the start of every episode (``is_first``). The sequence
log-likelihood is exact: ``log p(x_{1:T} | u_{1:T}) = sum_t log p(x_t | h_t)`` (eq. (4.1)); the loss is
its negative per observed time step. A missing frame (``mask = False``) contributes nothing to the
likelihood and is replaced, as the next input, by the model's own predicted mean; ``imagine`` feeds
its predicted means back the same way (or samples with ``sample=True``).

Example:
    >>> import torch
    >>> from worldmodels.api import Batch
    >>> model = RNN(RNNConfig(obs_shape=(6,), action_dim=2, **RNNConfig.PRESETS["debug"]))
    >>> batch = Batch(obs=torch.rand(3, 5, 6).round(), action=torch.zeros(3, 5, 2))
    >>> out = model.loss(batch)
    >>> out.loss.shape, round(out.metrics["elbo"], 6) == round(-float(out.loss), 6)
    (torch.Size([]), True)
    >>> model.predict(batch.obs, batch.action, torch.zeros(4, 7, 2)).obs.shape   # batch 3 -> needs N = 3
    Traceback (most recent call last):
    ...
    ValueError: RNN.imagine: expected a belief of batch 1 or N = 4, received batch 3
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from worldmodels.api import Batch, Belief, Imagination, LossOutput, check_shape
from worldmodels.models import register_model
from worldmodels.nn import EMISSION_KINDS, ActionEmbedding, Emission, ObsEncoder

__all__ = ["RNN", "RNNConfig"]


@dataclass
class RNNConfig:
    """Configuration of :class:`RNN`.

    Attributes:
        obs_shape: ``(D,)`` vectors or ``(C, S, S)`` images with ``S`` in 16/32/64.
        action_dim: size of the (one-hot or continuous) action vectors.
        emission: ``"bernoulli"`` (binary data), ``"gaussian"`` or ``"discretized"`` (8-bit images).
        hidden_dim: GRU state size.
        embed_dim: size of the observation embedding ``e(x)``.
        action_embed_dim: size of the action embedding ``g(u)``.
        mlp_hidden: hidden layers of the vector encoder / emission MLPs.
        channels: conv channels of the image encoder / decoder.
        min_std: variance floor (std) of Gaussian emissions (§4.8.1).
        channels_last: channels-last convolutions (faster on CPU).
        dropout: dropout rate on the observation embedding ``e(x)`` and on ``h_t`` where it enters the
            emission, in the training loss only (a regulariser for small data sets; 0 = off).
    """

    obs_shape: tuple[int, ...] = (1, 32, 32)
    action_dim: int = 1
    emission: str = "bernoulli"
    hidden_dim: int = 128
    embed_dim: int = 64
    action_embed_dim: int = 16
    mlp_hidden: tuple[int, ...] = (128,)
    channels: int = 32
    min_std: float = 1e-2
    channels_last: bool = True
    dropout: float = 0.0

    PRESETS: ClassVar[dict[str, dict]] = {
        "debug": {
            "hidden_dim": 16,
            "embed_dim": 8,
            "action_embed_dim": 4,
            "mlp_hidden": (16,),
            "channels": 4,
        },
        "music": {"hidden_dim": 300, "embed_dim": 500, "action_embed_dim": 1, "mlp_hidden": (500,)},
    }

    def __post_init__(self) -> None:
        self.obs_shape = tuple(int(s) for s in self.obs_shape)
        if self.emission not in EMISSION_KINDS:
            raise ValueError(
                f"RNNConfig.emission: expected one of {EMISSION_KINDS}, received {self.emission!r}"
            )
        if self.action_dim < 1:
            raise ValueError(f"RNNConfig.action_dim: expected >= 1, received {self.action_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"RNNConfig.dropout: expected in [0, 1), received {self.dropout}")


@register_model("rnn")
class RNN(nn.Module):
    """GRU world model with exact log-likelihood; implements :class:`worldmodels.api.WorldModel`."""

    Config = RNNConfig

    def __init__(self, config: RNNConfig):
        super().__init__()
        self.config = c = config
        self.encoder = ObsEncoder(c.obs_shape, c.embed_dim, c.mlp_hidden, c.channels, c.channels_last)
        self.action_embed = ActionEmbedding(c.action_dim, c.action_embed_dim)
        self.gru = nn.GRU(c.embed_dim + c.action_embed_dim, c.hidden_dim, batch_first=True)
        self.drop = nn.Dropout(c.dropout)  # no parameters: checkpoints are unchanged
        self.emission = Emission(
            c.hidden_dim, c.obs_shape, c.emission, c.mlp_hidden, c.channels, c.min_std, c.channels_last
        )

    # ------------------------------------------------------------------ checks

    def _check(self, who: str, obs: Tensor, action: Tensor, mask: Tensor | None = None) -> None:
        c = self.config
        check_shape(f"RNN.{who}: obs", obs, (None, None, *c.obs_shape))
        B, T = obs.shape[:2]
        check_shape(f"RNN.{who}: action", action, (B, T, c.action_dim))
        if not action.dtype.is_floating_point:
            raise TypeError(
                f"RNN.{who}: expected float (one-hot) actions, received dtype {action.dtype}; "
                "use worldmodels.api.one_hot_actions"
            )
        if mask is not None:
            check_shape(f"RNN.{who}: mask", mask, (B, T))
            if mask.dtype != torch.bool:
                raise TypeError(f"RNN.{who}: expected a bool mask, received dtype {mask.dtype}")

    # ------------------------------------------------------------------ recurrence

    def _drop_e(self, e: Tensor) -> Tensor:
        """Dropout on ``e(x)`` in the training loss only (``observe``/``imagine`` run without gradients)."""
        return self.drop(e) if self.config.dropout > 0 and self.training and torch.is_grad_enabled() else e

    def _step(self, h: Tensor, e_prev: Tensor, a_emb: Tensor) -> Tensor:
        """``h_t = GRU(h_{t-1}, [e(x_{t-1}), g(u_t)])``: ``[B, H], [B, E], [B, G] -> [B, H]``."""
        _, h_new = self.gru(torch.cat([e_prev, a_emb], -1).unsqueeze(1), h.unsqueeze(0))
        return h_new.squeeze(0)

    def _unroll(
        self, obs: Tensor, action: Tensor, mask: Tensor, is_first: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Teacher-forced pass; missing frames are replaced by predicted means as inputs.

        Returns:
            h: ``[B, T, H]``, the emission inputs; x: ``[B, T, *obs]`` observed-or-predicted frames;
            e_last: ``[B, E]`` embedding of ``x[:, -1]``; h_last ``[B, H]``.
        """
        B, T = obs.shape[:2]
        c = self.config
        a_emb = self.action_embed(action)  # [B, T, G]
        if bool(mask.all()) and not bool(is_first[:, 1:].any()):
            # fast path: every frame observed, one episode per row -> one cuDNN-style GRU call
            e = self.encoder(obs)  # [B, T, E]
            e = self._drop_e(e)
            e_prev = torch.cat([e.new_zeros(B, 1, c.embed_dim), e[:, :-1]], 1)  # e(x_{t-1}), zero at t = 0
            h, _ = self.gru(torch.cat([e_prev, a_emb], -1))  # [B, T, H]
            return h, obs, e[:, -1], h[:, -1]
        h_t = obs.new_zeros(B, c.hidden_dim)
        e_t = obs.new_zeros(B, c.embed_dim)
        hs, xs = [], []
        for t in range(T):
            keep = (~is_first[:, t]).to(obs.dtype).unsqueeze(-1)  # [B, 1] reset at episode starts
            h_t = self._step(h_t * keep, e_t * keep, a_emb[:, t])
            m = mask[:, t].view(B, *([1] * len(c.obs_shape)))
            if bool(mask[:, t].all()):
                x_t = obs[:, t]
            else:
                x_t = torch.where(m, obs[:, t], self.emission(h_t).mean)  # own prediction where missing
            e_t = self._drop_e(self.encoder(x_t))
            hs.append(h_t)
            xs.append(x_t)
        return torch.stack(hs, 1), torch.stack(xs, 1), e_t, h_t

    # ------------------------------------------------------------------ WorldModel API

    def loss(self, batch: Batch, beta: float = 1.0) -> LossOutput:
        """``-log p(x_t | x_{<t}, u_{<=t})`` per observed time step (``beta`` is unused: no KL term)."""
        self._check("loss", batch.obs, batch.action, batch.mask)
        run_mask = batch.mask
        if bool((batch.mask[:, 1:] <= batch.mask[:, :-1]).all()):
            # only trailing frames are missing (right-padded batches): they enter no earlier h_t and their
            # terms are masked out below, so the fused GRU over all frames gives the same loss
            run_mask = torch.ones_like(batch.mask)
        h, _, _, _ = self._unroll(batch.obs, batch.action, run_mask, batch.is_first)
        logp = self.emission(self.drop(h)).log_prob(batch.obs)  # [B, T]
        logp = torch.where(batch.mask, logp, torch.zeros_like(logp))
        n = batch.mask.sum().clamp_min(1)
        ll = logp.sum() / n  # log-likelihood per observed time step
        v = float(ll.detach())
        return LossOutput(loss=-ll, metrics={"elbo": v, "log_likelihood": v, "nll": -v})

    def observe(self, obs: Tensor, action: Tensor, mask: Tensor | None = None) -> Belief:
        """Filter a context ``obs [B, T, ...]``; ``features = [h_{T-1}, e(x_{T-1})]`` ``[B, H + E]``."""
        self._check("observe", obs, action, mask)
        B, T = obs.shape[:2]
        if T == 0:
            h_last = obs.new_zeros(B, self.config.hidden_dim)
            e_last = obs.new_zeros(B, self.config.embed_dim)
        else:
            mask = mask if mask is not None else torch.ones(B, T, dtype=torch.bool, device=obs.device)
            is_first = torch.zeros(B, T, dtype=torch.bool, device=obs.device)
            is_first[:, 0] = True
            _, _, e_last, h_last = self._unroll(obs, action, mask, is_first)
        return Belief(features=torch.cat([h_last, e_last], -1), state={"h": h_last, "e": e_last})

    def features_per_step(self, obs: Tensor, action: Tensor, mask: Tensor | None = None) -> Tensor:
        """``[B, T, H + E]``: ``observe(obs[:, :t+1], ...).features = [h_t, e(x_t)]`` of every ``t`` in one pass
        (missing frames: the predicted means), with gradients (:func:`worldmodels.heads.belief_features`)."""
        self._check("features_per_step", obs, action, mask)
        B, T = obs.shape[:2]
        mask = mask if mask is not None else torch.ones(B, T, dtype=torch.bool, device=obs.device)
        is_first = torch.zeros(B, T, dtype=torch.bool, device=obs.device)
        is_first[:, :1] = True
        h, x, _, _ = self._unroll(obs, action, mask, is_first)  # [B, T, H], [B, T, *obs]
        return torch.cat([h, self.encoder(x)], -1)

    def imagine(
        self, belief: Belief, actions: Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> Imagination:
        """Roll forward under candidate actions ``[N, H, A]``, feeding back predicted means (or samples).

        ``latent[:, k] = [h, e(x_hat)]`` of step k (same layout as ``Belief.features``);
        ``uncertainty`` is the mean per-dimension predictive variance.
        """
        c = self.config
        check_shape("RNN.imagine: actions", actions, (None, None, c.action_dim))
        N, H = actions.shape[:2]
        h, e = belief.state["h"], belief.state["e"]
        assert isinstance(h, Tensor) and isinstance(e, Tensor)
        if h.shape[0] == 1 and N != 1:
            h, e = h.expand(N, -1), e.expand(N, -1)
        elif h.shape[0] != N:
            raise ValueError(
                f"RNN.imagine: expected a belief of batch 1 or N = {N}, received batch {h.shape[0]}"
            )
        a_emb = self.action_embed(actions)  # [N, H, G]
        means, latents, unc, samples = [], [], [], []
        for k in range(H):
            h = self._step(h, e, a_emb[:, k])
            dist = self.emission(h)
            x_mean = dist.mean  # [N, *obs]
            x_next = x_mean
            if sample:
                x_next = dist.sample(generator)
                samples.append(x_next)
            e = self.encoder(x_next)
            means.append(x_mean)
            latents.append(torch.cat([h, e], -1))
            unc.append(dist.variance.flatten(1).mean(1))
        empty = actions.new_zeros(N, 0)
        return Imagination(
            obs=torch.stack(means, 1) if H else actions.new_zeros(N, 0, *c.obs_shape),
            latent=torch.stack(latents, 1) if H else empty.new_zeros(N, 0, c.hidden_dim + c.embed_dim),
            uncertainty=torch.stack(unc, 1) if H else empty,
            samples=torch.stack(samples, 1) if sample and H else None,
            belief=Belief(features=torch.cat([h, e], -1), state={"h": h, "e": e}),  # after the last step
        )

    def predict(self, obs: Tensor, action: Tensor, future_actions: Tensor) -> Imagination:
        """``imagine(observe(obs, action), future_actions)``: open-loop prediction after a context."""
        return self.imagine(self.observe(obs, action), future_actions)

    def impute(self, obs: Tensor, action: Tensor, mask: Tensor) -> Tensor:
        """Observed frames as given; missing frames = predicted mean given the past (filtering)."""
        self._check("impute", obs, action, mask)
        B, T = obs.shape[:2]
        is_first = torch.zeros(B, T, dtype=torch.bool, device=obs.device)
        if T:
            is_first[:, 0] = True
        _, x, _, _ = self._unroll(obs, action, mask, is_first)
        return x
