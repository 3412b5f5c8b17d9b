"""Stochastic recurrent neural network (SRNN), thesis Ch. 5 (and §4.5), plus the pieces it shares
with the VRNN (§4.4.2, :mod:`worldmodels.models.vrnn`) and the deep state-space model / DMM
(§4.3, :mod:`worldmodels.models.dmm`).

Generative model, eq. (5.1): a deterministic GRU ``d_t = GRU(d_{t-1}, u_t)`` under a state-space layer

* prior ``p(z_t | z_{t-1}, d_t) = N(mu_t^(p), v_t^(p))`` with one-hidden-layer MLPs, eq. (5.3);
* emission ``p(x_t | z_t, d_t)``: Bernoulli (piano rolls), Gaussian or discretised Gaussian
  (:class:`worldmodels.nn.Emission`; images through the conv decoder of :mod:`worldmodels.nn`).

Inputs ``u_t = [action_t, m_{t-1} * phi(x_{t-1}), m_{t-1}]`` (the previous frame only when
``input_prev_obs``; ``m`` the observation mask, so a missing previous frame is an explicit zero input).
With ``action_dim = 0`` and ``input_prev_obs`` this is the thesis's ``u_t = x_{t-1}`` (§5.4).

Inference, eq. (5.7): ``q(z_t | z_{t-1}, a_t)`` with ``a_t = GRU_back(a_{t+1}, [d_t, m_t phi(x_t), m_t])``
(``inference="smooth"``) or ``a_t = MLP([d_t, m_t phi(x_t), m_t])`` (``"filter"``); mean either direct,
eq. (5.10), or residual ``mu_t^(q) = mu_t^(p) + NN_1^(q)(z_{t-1}, a_t)`` (``residual_q``, Res_q,
eq. (5.12), Algorithm 2). The four variants of Table 5.1 are presets ``music`` (smooth + Res_q),
``music_smooth``, ``music_filt_resq`` and ``music_filt``.

ELBO, eq. (5.8), one sample per step; the KL terms are analytic. Missing frames (``mask = False``)
contribute no reconstruction term (their KL term stays), and reach the inference network only
through the mask bit.

Example:
    >>> import torch
    >>> from worldmodels.api import Batch
    >>> from worldmodels.models import build_model
    >>> model = build_model("srnn", "debug", obs_shape=(6,), action_dim=2)
    >>> batch = Batch(obs=(torch.rand(3, 5, 6) > 0.5).float(), action=torch.rand(3, 5, 2))
    >>> out = model.loss(batch, beta=0.2)
    >>> sorted(out.metrics)
    ['elbo', 'kl', 'log_px']
    >>> model.predict(batch.obs, batch.action, torch.rand(3, 4, 2)).obs.shape
    torch.Size([3, 4, 6])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldmodels.api import Batch, Belief, Imagination, LossOutput, check_shape
from worldmodels.models import register_model
from worldmodels.nn import Emission, ObsDistribution, ObsEncoder, softplus_std

__all__ = [
    "SequenceConfig",
    "StateSpaceConfig",
    "SRNNConfig",
    "SRNN",
    "TRAIN_PRESETS",
    "ClippedLeakyReLU",
    "ConditionalGaussian",
    "gaussian_kl",
    "run_gru",
    "InputFeatures",
    "LatentSequenceModel",
    "StateSpaceCore",
]


# ----------------------------------------------------------------------------- shared building blocks


class ClippedLeakyReLU(nn.Module):
    """Leaky ReLU with leakiness 1/3 clipped at +-3, the activation of the SRNN experiments (Ch. 5 supp.).

    Example:
        >>> ClippedLeakyReLU()(torch.tensor([-12.0, -3.0, 1.0, 5.0])).tolist()
        [-3.0, -1.0, 1.0, 3.0]
    """

    def __init__(self, leak: float = 1.0 / 3.0, clip: float = 3.0):
        super().__init__()
        self.leak, self.clip = leak, clip

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.leak).clamp(-self.clip, self.clip)


class ConditionalGaussian(nn.Module):
    """Diagonal Gaussian ``N(mean, std^2)`` of ``NN(r_t, c_t)`` with one hidden layer, eq. (5.3)/(5.10).

    ``r_t`` is the input that is only known inside the time loop (``z_{t-1}``, or ``d_t`` in the VRNN);
    ``c_t`` is known for all steps beforehand (``d_t`` or ``a_t``), so its share of the first layer,
    :meth:`pre`, is one batched matmul outside the loop. ``std = softplus(.) + min_std`` (variance floor,
    §4.8.1).

    Example:
        >>> g = ConditionalGaussian(loop_dim=2, ctx_dim=3, hidden=8, out_dim=2, min_std=0.1)
        >>> mean, std = g(torch.zeros(4, 2), g.pre(torch.zeros(4, 3)))
        >>> mean.shape, bool((std > 0.1).all())
        (torch.Size([4, 2]), True)
    """

    def __init__(self, loop_dim: int, ctx_dim: int, hidden: int, out_dim: int, min_std: float):
        super().__init__()
        self.loop_dim, self.ctx_dim, self.hidden, self.min_std = loop_dim, ctx_dim, hidden, min_std
        self.lin_ctx = nn.Linear(ctx_dim, hidden) if ctx_dim > 0 else None
        self.lin_loop = nn.Linear(loop_dim, hidden, bias=self.lin_ctx is None) if loop_dim > 0 else None
        if self.lin_ctx is None and self.lin_loop is None:
            raise ValueError("ConditionalGaussian: expected loop_dim > 0 or ctx_dim > 0, received both 0")
        self.act = ClippedLeakyReLU()
        self.out = nn.Linear(hidden, 2 * out_dim)

    def pre(self, ctx: Tensor | None) -> Tensor | None:
        """First-layer contribution of the context ``[..., ctx_dim] -> [..., hidden]``."""
        return None if self.lin_ctx is None or ctx is None else self.lin_ctx(ctx)

    def forward(self, r: Tensor | None, pre: Tensor | None) -> tuple[Tensor, Tensor]:
        h = pre
        if self.lin_loop is not None and r is not None:
            h = self.lin_loop(r) if h is None else h + self.lin_loop(r)
        assert h is not None
        mean, raw = self.out(self.act(h)).chunk(2, dim=-1)
        return mean, softplus_std(raw, self.min_std)


def gaussian_kl(mu_q: Tensor, std_q: Tensor, mu_p: Tensor, std_p: Tensor) -> Tensor:
    """``KL(N(mu_q, std_q^2) || N(mu_p, std_p^2))`` of diagonal Gaussians, summed over the last dim.

    Example:
        >>> z = torch.zeros(3)
        >>> float(gaussian_kl(z, torch.ones(3), z, torch.ones(3)))
        0.0
    """
    var_ratio = (std_q / std_p) ** 2
    t = ((mu_q - mu_p) / std_p) ** 2
    return 0.5 * (var_ratio + t - 1.0 - torch.log(var_ratio)).sum(-1)


def _gru_weights(gru: nn.Module) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(W_ih, W_hh, b_ih, b_hh)`` of a single-layer ``nn.GRU`` for ``torch.gru_cell``."""
    return gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0  # type: ignore[return-value]


def run_gru(gru: nn.Module, x: Tensor, reset: Tensor | None = None, reverse: bool = False) -> Tensor:
    """Run a single-layer batch-first ``nn.GRU`` over ``x [B, T, I] -> [B, T, H]`` from a zero state.

    ``reset [B, T]`` (bool) zeroes the incoming state before step ``t`` (episode starts). With
    ``reverse`` the recursion runs from ``T`` down to 1 (``a_{T+1} = 0``, eq. (5.7)) and the state
    coming from ``t + 1`` is zeroed where ``reset[:, t + 1]`` (a new episode starts after ``t``).
    Without resets inside the window the fused ``nn.GRU`` kernel is used; otherwise a cell loop.

    Example:
        >>> gru = nn.GRU(2, 3, batch_first=True)
        >>> x = torch.randn(1, 4, 2)
        >>> torch.allclose(run_gru(gru, x), gru(x)[0])
        True
    """
    B, T, _ = x.shape
    if reverse:
        x = x.flip(1)
        if reset is not None:  # state from t+1 is zeroed where an episode starts at t+1
            reset = torch.cat([torch.ones_like(reset[:, :1]), reset.flip(1)[:, :-1]], 1)
    if reset is None or not bool(reset[:, 1:].any()):
        out = gru(x)[0]
    else:
        h = x.new_zeros(B, _gru_weights(gru)[1].shape[1])  # W_hh: [3H, H]
        outs = []
        for t in range(T):
            h = h * (~reset[:, t]).to(h.dtype)[:, None]
            h = torch.gru_cell(x[:, t], h, *_gru_weights(gru))
            outs.append(h)
        out = torch.stack(outs, 1)
    return out.flip(1) if reverse else out


class InputFeatures(nn.Module):
    """Observation features ``phi(x)`` and the model inputs ``u_t``.

    ``phi``: :class:`worldmodels.nn.ObsEncoder` (conv encoder for images, MLP for vectors) followed by
    the clipped leaky ReLU; shared by the generative model (``u_t``) and the inference network, as in
    the thesis's experiments ("we share a neural network to extract features", Ch. 5 supp.).

    ``u_t = [action_t, m_{t-1} phi(x_{t-1}), m_{t-1}]`` (the last two only when ``prev_obs``);
    ``m_{t-1} = 0`` at ``t = 1`` and where ``is_first[t]``. ``dropout > 0`` drops units of ``phi(x)``
    in training mode (a regulariser for small data sets; off by default).
    """

    def __init__(self, obs_shape: Sequence[int], action_dim: int, embed_dim: int, hidden: int, prev_obs: bool,
                 channels: int = 32, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.action_dim, self.embed_dim, self.prev_obs = action_dim, embed_dim, prev_obs
        self.phi = ObsEncoder(obs_shape, embed_dim, hidden=(hidden,), channels=channels)
        self.act = ClippedLeakyReLU()
        self.u_dim = action_dim + (embed_dim + 1 if prev_obs else 0)
        self.x_dim = embed_dim + 1  # [m_t phi(x_t), m_t] for the inference network

    def encode(self, obs: Tensor, mask: Tensor) -> Tensor:
        """``[m_t phi(x_t), m_t]``: ``[B, T, embed_dim + 1]``; missing frames are never looked at."""
        m = mask.to(obs.dtype)  # [B, T]
        x = obs * m.reshape(*m.shape, *([1] * (obs.dim() - 2)))
        return torch.cat([self.drop(self.act(self.phi(x))) * m[..., None], m[..., None]], -1)

    def inputs(self, action: Tensor, xfeat: Tensor | None, is_first: Tensor) -> Tensor:
        """``u_{1:T}`` from actions ``[B, T, A]`` and the features of :meth:`encode` (shifted by one)."""
        if not self.prev_obs:
            return action
        assert xfeat is not None
        prev = torch.cat([torch.zeros_like(xfeat[:, :1]), xfeat[:, :-1]], 1)  # [B, T, E+1]
        prev = prev * (~is_first).to(prev.dtype)[..., None]
        return torch.cat([action, prev], -1)

    def step_inputs(self, action_t: Tensor, x_prev: Tensor | None) -> Tensor:
        """``u_t`` for one step of imagination from the (predicted) previous frame ``x_prev [N, *obs]``."""
        if not self.prev_obs:
            return action_t
        assert x_prev is not None
        f = torch.cat([self.act(self.phi(x_prev)), x_prev.new_ones(x_prev.shape[0], 1)], -1)
        return torch.cat([action_t, f], -1)


def _reverse_padded(gru: nn.Module, x: Tensor, lengths: Tensor) -> Tensor:
    """Backward recursion of a batch-first ``nn.GRU`` over right-padded rows: row ``b`` runs from its own
    last step ``lengths[b] - 1`` down to 0 starting from a zero state; outputs at padding steps are
    unspecified. ``x [B, T, I]``, ``lengths [B]`` -> ``[B, T, H]``.

    Example:
        >>> gru = nn.GRU(2, 3, batch_first=True)
        >>> x = torch.randn(2, 4, 2)
        >>> out = _reverse_padded(gru, x, torch.tensor([4, 2]))
        >>> torch.allclose(out[1, :2], run_gru(gru, x[1:, :2], reverse=True)[0], atol=1e-6)
        True
    """
    T = x.shape[1]
    t = torch.arange(T, device=x.device)[None, :]  # [1, T]
    L = lengths.to(t.device)[:, None]  # [B, 1]
    idx = torch.where(t < L, L - 1 - t, t)  # [B, T]: each row's steps reversed in place (an involution)
    x_rev = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))
    out = gru(x_rev)[0]  # [B, T, H]
    return torch.gather(out, 1, idx[..., None].expand(-1, -1, out.shape[-1]))


def _frames(mask: Tensor, obs: Tensor) -> Tensor:
    """``mask [B, T]`` broadcast to ``obs [B, T, ...]``."""
    return mask.reshape(*mask.shape, *([1] * (obs.dim() - 2)))


class LatentSequenceModel(nn.Module):
    """The :class:`worldmodels.api.WorldModel` plumbing shared by SRNN, VRNN and DMM.

    Subclasses implement :meth:`elbo_terms` and the hooks :meth:`_emit`, :meth:`_posterior_path` and
    :meth:`_prior_step`, and set ``features`` (:class:`InputFeatures`); this class provides :meth:`loss`
    (negative ELBO per observed frame with the KL weight ``beta``), :meth:`elbo` (per sequence),
    :meth:`observe`, :meth:`imagine`, :meth:`impute`, :meth:`predict` and input checks.
    """

    config: Any
    features: InputFeatures

    def _check_inputs(self, obs: Tensor, action: Tensor, mask: Tensor | None = None) -> None:
        c = self.config
        name = type(self).__name__
        if obs.dim() != 2 + len(c.obs_shape) or tuple(obs.shape[2:]) != tuple(c.obs_shape):
            raise ValueError(f"{name}: expected obs [B, T, {', '.join(map(str, c.obs_shape))}], "
                             f"received shape {tuple(obs.shape)}")
        B, T = obs.shape[:2]
        check_shape(f"{name} action", action, (B, T, c.action_dim))
        if mask is not None:
            check_shape(f"{name} mask", mask, (B, T))
            if mask.dtype != torch.bool:
                raise TypeError(f"{name}: expected a bool mask, received dtype {mask.dtype}")

    def _train_mask(self, mask: Tensor) -> Tensor:
        """Randomly drop frames while training (``train_drop_prob``) so inference learns to impute."""
        c = self.config
        if self.training and c.train_drop_prob > 0:
            drop = torch.rand(mask.shape, device=mask.device) < c.train_drop_prob
            drop[:, : c.train_drop_init] = False
            mask = mask & ~drop
        return mask

    def elbo_terms(self, batch: Batch, sample: bool = True) -> dict[str, Tensor]:
        """Per-step ``log_px [B, T]`` (zero where missing) and ``kl [B, T]`` of the ELBO."""
        raise NotImplementedError

    def _in_sequence(self, mask: Tensor) -> Tensor | None:
        """With ``config.trailing_pad``: ``[B, T]`` bool, True up to each row's last observed frame (the
        steps after it are padding of a variable-length batch); ``None`` otherwise."""
        if not self.config.trailing_pad:
            return None
        return mask.flip(1).to(torch.int8).cummax(1).values.flip(1).bool()

    def loss(self, batch: Batch, beta: float = 1.0) -> LossOutput:
        """``-(sum m_t log p(x_t|.) - beta sum KL_t) / #observed frames``; ``metrics["elbo"]``: ``beta = 1``.

        Training may drop frames at random (``train_drop_prob``) like the KVAE's §6.10 training.
        """
        self._check_inputs(batch.obs, batch.action, batch.mask)
        mask = self._train_mask(batch.mask)
        if mask is not batch.mask:
            batch = Batch(obs=batch.obs, action=batch.action, mask=mask, is_first=batch.is_first)
        terms = self.elbo_terms(batch)
        n = batch.mask.sum().clamp_min(1).to(batch.obs.dtype)
        log_px, kl = terms["log_px"].sum() / n, terms["kl"].sum() / n
        return LossOutput(
            loss=-(log_px - beta * kl),
            metrics={"elbo": float((log_px - kl).detach()), "log_px": float(log_px.detach()),
                     "kl": float(kl.detach())},
        )

    @torch.no_grad()
    def elbo(self, batch: Batch, n_samples: int = 1) -> Tensor:
        """Unweighted ELBO of every sequence ``[B]`` (sum over steps), averaged over ``n_samples`` passes."""
        self._check_inputs(batch.obs, batch.action, batch.mask)
        out = []
        for _ in range(n_samples):
            t = self.elbo_terms(batch)
            out.append((t["log_px"] - t["kl"]).sum(1))
        return torch.stack(out).mean(0)

    @torch.no_grad()
    def predict(self, obs: Tensor, action: Tensor, future_actions: Tensor) -> Imagination:
        """:meth:`observe` the context, then :meth:`imagine` under ``future_actions [B, H, A]``."""
        return self.imagine(self.observe(obs, action), future_actions)

    def _check_actions(self, belief: Belief, actions: Tensor) -> tuple[int, int]:
        c, name = self.config, type(self).__name__
        if actions.dim() != 3 or actions.shape[-1] != c.action_dim:
            raise ValueError(f"{name}.imagine: expected actions [N, H, {c.action_dim}], "
                             f"received shape {tuple(actions.shape)}")
        N, H = actions.shape[:2]
        if belief.batch_size not in (1, N):
            raise ValueError(f"{name}.imagine: belief batch must be 1 or N={N}, received {belief.batch_size}")
        return N, H

    @staticmethod
    def _expand_state(belief: Belief, N: int) -> dict[str, Tensor]:
        return {k: v.expand(N, *v.shape[1:]) for k, v in belief.state.items() if isinstance(v, Tensor)}

    @staticmethod
    def _first(mask: Tensor) -> Tensor:
        """``is_first [B, T]`` of a context that starts at its first step."""
        is_first = torch.zeros_like(mask)
        is_first[:, 0] = True
        return is_first

    # -- hooks of the subclasses
    def _emit(self, z: Tensor, d: Tensor) -> ObsDistribution:
        """Emission ``p(x_t | z_t, d_t)`` of ``z [..., z]`` and ``d [..., d]``."""
        raise NotImplementedError

    def _posterior_path(self, obs: Tensor, action: Tensor, mask: Tensor,
                        is_first: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``d_{1:T} [B, T, d]`` and the posterior-mean chain (``sample=False``): ``z``, ``mu_q``,
        ``std_q``, ``mu_p``, ``std_p``, all ``[B, T, z]``."""
        raise NotImplementedError

    def _prior_step(self, u: Tensor, d: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One generative step from ``u_t [N, U]``, ``d_{t-1} [N, d]``, ``z_{t-1} [N, z]``:
        ``(d_t, mu_t^(p), std_t^(p))``."""
        raise NotImplementedError

    # -- WorldModel API
    @torch.no_grad()
    def observe(self, obs: Tensor, action: Tensor, mask: Tensor | None = None) -> Belief:
        """Run the inference network over the context; the belief is ``q(z_T)`` (mean, std), ``d_T`` and
        the last frame (the next ``u`` needs it). ``features [B, d + z] = [d_T, E_q z_T]``."""
        B, T = obs.shape[:2]
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=obs.device)
        self._check_inputs(obs, action, mask)
        d, ch = self._posterior_path(obs, action, mask, self._first(mask))
        z, std = ch["mu_q"][:, -1], ch["std_q"][:, -1]
        d_T = d[:, -1]
        x_last = obs[:, -1]
        if not bool(mask[:, -1].all()):  # a missing last frame: use the model's reconstruction
            x_hat = self._emit(ch["z"][:, -1], d_T).mean
            x_last = torch.where(_frames(mask[:, -1:], obs[:, -1:])[:, 0], x_last, x_hat)
        state: dict[str, object] = {"d": d_T, "z": z, "z_std": std, "x_prev": x_last}
        return Belief(features=torch.cat([d_T, z], -1), state=state)

    @torch.no_grad()
    def imagine(self, belief: Belief, actions: Tensor, sample: bool | None = None,
                generator: torch.Generator | None = None) -> Imagination:
        """Roll the prior forward under ``actions [N, H, A]``, feeding back the model's own frames.

        ``z_t`` follows the prior mean (``sample=False``, the default from ``config.imagine_sample``)
        or prior samples; the fed-back frame is the emission mean (or a sample when sampling).
        ``uncertainty`` is the mean prior variance of ``z_t``; ``latent = [d_t, z_t]``.
        """
        c = self.config
        N, H = self._check_actions(belief, actions)
        sample = c.imagine_sample if sample is None else sample
        st = self._expand_state(belief, N)
        d, z, x_prev = st["d"], st["z"], st["x_prev"]
        if sample:
            z = z + st["z_std"] * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        means, samples, lat, unc = [], [], [], []
        for t in range(H):
            u = self.features.step_inputs(actions[:, t], x_prev)  # [N, U]
            d, mu_p, std_p = self._prior_step(u, d, z)
            z = mu_p + std_p * torch.randn(mu_p.shape, generator=generator, device=d.device,
                                           dtype=d.dtype) if sample else mu_p
            px = self._emit(z, d)
            x_mean = px.mean
            x_s = px.sample(generator) if sample else x_mean
            means.append(x_mean)
            samples.append(x_s)
            lat.append(torch.cat([d, z], -1))
            unc.append((std_p**2).mean(-1))
            x_prev = x_s
        # belief after the last step (z is already a prior mean/sample: no extra noise when continuing)
        after: dict[str, object] = {"d": d, "z": z, "z_std": torch.zeros_like(z), "x_prev": x_prev}
        return Imagination(obs=torch.stack(means, 1), latent=torch.stack(lat, 1),
                           uncertainty=torch.stack(unc, 1),
                           samples=torch.stack(samples, 1) if sample else None,
                           belief=Belief(features=torch.cat([d, z], -1), state=after))

    @torch.no_grad()
    def impute(self, obs: Tensor, action: Tensor, mask: Tensor) -> Tensor:
        """Fill missing frames with the emission mean at the posterior mean path of ``q(z_{1:T})``
        (smoothing where the inference network looks ahead, filtering otherwise); observed frames
        unchanged."""
        self._check_inputs(obs, action, mask)
        d, ch = self._posterior_path(obs, action, mask, self._first(mask))
        x_hat = self._emit(ch["z"], d).mean
        return torch.where(_frames(mask, obs), obs, x_hat)


# ----------------------------------------------------------------------------- SRNN / DSSM core


class StateSpaceCore(LatentSequenceModel):
    """A state-space layer ``z`` over a context ``d`` with structured inference: SRNN and DMM.

    SRNN (``recurrent = True``): ``d_t = GRU(d_{t-1}, u_t)`` and ``p(x_t | z_t, d_t)``.
    DMM (``recurrent = False``): ``d_t = act(W u_t + b)`` (no memory; the deep state-space model of §4.3
    conditions its transition on ``u_t``) and ``p(x_t | z_t)``.
    """

    recurrent: ClassVar[bool] = True
    emission_uses_d: ClassVar[bool] = True

    def __init__(self, config: Any) -> None:
        super().__init__()
        c = self.config = config
        if c.inference not in ("smooth", "filter"):
            raise ValueError(f"{type(self).__name__}Config.inference: expected 'smooth' or 'filter', "
                             f"received {c.inference!r}")
        self.features = InputFeatures(c.obs_shape, c.action_dim, c.embed_dim, c.hidden, c.input_prev_obs,
                                      c.conv_channels, c.dropout)
        self.drop_d = nn.Dropout(c.dropout)  # on d_t where it enters the emission (training only)
        u_dim = self.features.u_dim
        if u_dim == 0:
            raise ValueError(f"{type(self).__name__}: no inputs u_t; expected action_dim > 0 or "
                             "input_prev_obs=True")
        if self.recurrent:
            self.rnn: nn.Module = nn.GRU(u_dim, c.d_dim, batch_first=True)
        else:
            self.rnn = nn.Sequential(nn.Linear(u_dim, c.d_dim), ClippedLeakyReLU())
        # prior p(z_t | z_{t-1}, d_t), eq. (5.3)
        self.prior = ConditionalGaussian(c.z_dim, c.d_dim, c.hidden, c.z_dim, c.min_std)
        # inference a_t, eq. (5.7): backward GRU (smoothing) or MLP (filtering) over [d_t, x_t]
        a_in = c.d_dim + self.features.x_dim
        if c.inference == "smooth":
            self.inference_net: nn.Module = nn.GRU(a_in, c.a_dim, batch_first=True)
        else:
            self.inference_net = nn.Sequential(nn.Linear(a_in, c.a_dim), ClippedLeakyReLU())
        # q(z_t | z_{t-1}, a_t), eq. (5.10) / (5.12)
        self.posterior = ConditionalGaussian(c.z_dim, c.a_dim, c.hidden, c.z_dim, c.min_std)
        e_in = c.z_dim + (c.d_dim if self.emission_uses_d else 0)
        self.emission = Emission(e_in, c.obs_shape, c.obs_kind, hidden=(c.hidden,), channels=c.conv_channels,
                                 min_std=c.obs_min_std)

    # -- deterministic parts
    def contexts(self, obs: Tensor, action: Tensor, mask: Tensor, is_first: Tensor) -> tuple[Tensor, Tensor]:
        """``d_{1:T} [B, T, d]`` and ``a_{1:T} [B, T, a]`` (both deterministic given the data)."""
        xfeat = self.features.encode(obs, mask)  # [B, T, E+1]
        u = self.features.inputs(action, xfeat if self.config.input_prev_obs else None, is_first)  # [B, T, U]
        d = run_gru(self.rnn, u, is_first) if self.recurrent else self.rnn(u)  # [B, T, d]
        inp = torch.cat([d, xfeat], -1)
        inside = self._in_sequence(mask)
        if self.config.inference == "smooth" and inside is not None and not bool(is_first[:, 1:].any()):
            # padded batch: every row's backward recursion starts at its own end, a_{T_i + 1} = 0
            a = _reverse_padded(self.inference_net, inp, inside.sum(1))  # eq. (5.7)
        elif self.config.inference == "smooth":
            if inside is not None:  # episode starts inside the window as well: zero the state at both
                pad_start = torch.cat([torch.zeros_like(inside[:, :1]), inside[:, :-1] & ~inside[:, 1:]], 1)
                is_first = is_first | pad_start
            a = run_gru(self.inference_net, inp, is_first, reverse=True)  # eq. (5.7), a_{T+1} = 0
        else:
            a = self.inference_net(inp)
        return d, a

    def _emit(self, z: Tensor, d: Tensor) -> ObsDistribution:
        return self.emission(torch.cat([z, d], -1) if self.emission_uses_d else z)

    def posterior_chain(self, d: Tensor, a: Tensor, is_first: Tensor, sample: bool = True,
                        generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Ancestral sampling from ``q(z_{1:T})`` (Algorithm 2) with the prior of every step.

        Returns ``z``, ``mu_q``, ``std_q``, ``mu_p``, ``std_p``, all ``[B, T, z]``. With ``sample=False``
        ``z_t`` is the posterior mean (used by :meth:`impute`).
        """
        c = self.config
        B, T, _ = d.shape
        pre_p, pre_q = self.prior.pre(d), self.posterior.pre(a)  # [B, T, hidden]
        assert pre_p is not None and pre_q is not None
        eps = (torch.randn(B, T, c.z_dim, generator=generator, device=d.device, dtype=d.dtype)
               if sample else None)
        keep = (~is_first).to(d.dtype)[..., None]  # [B, T, 1]
        z = d.new_zeros(B, c.z_dim)  # z_0 = 0
        out: dict[str, list[Tensor]] = {k: [] for k in ("z", "mu_q", "std_q", "mu_p", "std_p")}
        for t in range(T):
            z = z * keep[:, t]
            mu_p, std_p = self.prior(z, pre_p[:, t])  # eq. (5.3)
            mu_q, std_q = self.posterior(z, pre_q[:, t])  # eq. (5.10)
            if c.residual_q:
                mu_q = mu_p + mu_q  # Res_q, eq. (5.12)
            z = mu_q + std_q * eps[:, t] if eps is not None else mu_q
            for k, v in (("z", z), ("mu_q", mu_q), ("std_q", std_q), ("mu_p", mu_p), ("std_p", std_p)):
                out[k].append(v)
        return {k: torch.stack(v, 1) for k, v in out.items()}

    def elbo_terms(self, batch: Batch, sample: bool = True) -> dict[str, Tensor]:
        """Eq. (5.8): ``log p(x_t | z_t, d_t)`` (observed steps) and
        ``KL(q(z_t | z_{t-1}, a_t) || p(z_t | z_{t-1}, d_t))``, both ``[B, T]``."""
        obs, mask = batch.obs, batch.mask
        d, a = self.contexts(obs, batch.action, mask, batch.is_first)
        ch = self.posterior_chain(d, a, batch.is_first, sample=sample)
        px = self._emit(ch["z"], self.drop_d(d))
        log_px = px.log_prob(obs) * mask.to(obs.dtype)  # [B, T]
        kl = gaussian_kl(ch["mu_q"], ch["std_q"], ch["mu_p"], ch["std_p"])  # [B, T]
        inside = self._in_sequence(mask)
        if inside is not None:  # padding steps are not part of any sequence: no latent state, no KL
            kl = kl * inside.to(kl.dtype)
        return {"log_px": log_px, "kl": kl, "z": ch["z"], "d": d}

    def fivo(self, batch: Batch, n_particles: int = 16, ess_threshold: float = 0.5,
             generator: torch.Generator | None = None) -> Tensor:
        """Particle-filter bound on ``log p(x_{1:T} | u_{1:T})`` per sequence ``[B]`` (FIVO, §4.3.2, eq. (4.10)).

        ``n_particles`` paths ``z^(k)`` are drawn from ``q(z_t | z_{t-1}, a_t)`` (the inference network is
        the proposal) with incremental weights ``p(x_t | z_t, d_t) p(z_t | z_{t-1}, d_t) / q(z_t | z_{t-1}, a_t)``;
        when the effective sample size drops below ``ess_threshold * n_particles`` the running average of
        the weights enters the estimate and the particles are resampled (multinomial; no gradient flows
        through the resampling, as in the thesis). With one particle this is the single-sample ELBO
        estimator; its expectation grows towards ``log p`` with more particles.
        """
        c = self.config
        obs, mask, is_first = batch.obs, batch.mask, batch.is_first
        B, T = obs.shape[:2]
        K = n_particles
        if K < 1:
            raise ValueError(f"fivo: expected n_particles >= 1, received {K}")
        d, a = self.contexts(obs, batch.action, mask, is_first)
        pre_p0, pre_q0 = self.prior.pre(d), self.posterior.pre(a)
        assert pre_p0 is not None and pre_q0 is not None
        pre_p, pre_q = pre_p0.repeat_interleave(K, 0), pre_q0.repeat_interleave(K, 0)  # [B*K, T, hidden]
        dK = d.repeat_interleave(K, 0)  # [B*K, T, d]
        xK, mK = obs.repeat_interleave(K, 0), mask.to(obs.dtype).repeat_interleave(K, 0)  # [B*K, T, ...]
        keep = (~is_first).to(obs.dtype).repeat_interleave(K, 0)[..., None]
        eps = torch.randn(B * K, T, c.z_dim, generator=generator, device=obs.device, dtype=obs.dtype)
        z = obs.new_zeros(B * K, c.z_dim)
        log_w = obs.new_zeros(B, K)  # log weights since the last resampling
        log_p_hat = obs.new_zeros(B)
        log_K = math.log(K)
        rows = torch.arange(B, device=obs.device)[:, None] * K  # [B, 1]
        for t in range(T):
            z = z * keep[:, t]
            mu_p, std_p = self.prior(z, pre_p[:, t])
            mu_q, std_q = self.posterior(z, pre_q[:, t])
            if c.residual_q:
                mu_q = mu_p + mu_q
            z = mu_q + std_q * eps[:, t]
            log_pz = torch.distributions.Normal(mu_p, std_p).log_prob(z).sum(-1)
            log_qz = torch.distributions.Normal(mu_q, std_q).log_prob(z).sum(-1)
            log_px = self._emit(z, dK[:, t]).log_prob(xK[:, t]) * mK[:, t]
            log_w = log_w + (log_px + log_pz - log_qz).view(B, K)
            if t == T - 1:
                break
            w = torch.softmax(log_w.detach(), -1)  # [B, K]
            resample = 1.0 / (w**2).sum(-1) < ess_threshold * K  # [B]
            if bool(resample.any()):
                log_p_hat = log_p_hat + torch.where(resample, torch.logsumexp(log_w, -1) - log_K, 0.0)
                idx = torch.multinomial(w, K, replacement=True, generator=generator)  # [B, K]
                idx = torch.where(resample[:, None], idx, torch.arange(K, device=obs.device)[None])
                z = z[(rows + idx).flatten()]
                log_w = torch.where(resample[:, None], torch.zeros_like(log_w), log_w)
        return log_p_hat + torch.logsumexp(log_w, -1) - log_K

    # -- hooks of the WorldModel API in LatentSequenceModel
    def _posterior_path(self, obs: Tensor, action: Tensor, mask: Tensor,
                        is_first: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        d, a = self.contexts(obs, action, mask, is_first)
        return d, self.posterior_chain(d, a, is_first, sample=False)

    def _prior_step(self, u: Tensor, d: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.recurrent:
            d = torch.gru_cell(u, d.contiguous(), *_gru_weights(self.rnn))
        else:
            d = self.rnn(u)
        mu_p, std_p = self.prior(z, self.prior.pre(d))  # eq. (5.3)
        return d, mu_p, std_p


# ----------------------------------------------------------------------------- SRNN


_DEBUG = {"d_dim": 16, "z_dim": 4, "a_dim": 16, "hidden": 16, "embed_dim": 16, "conv_channels": 8}


@dataclass
class SequenceConfig:
    """Hyper-parameters shared by the SRNN, VRNN and DMM configs (each adds its own fields and presets).

    Attributes:
        obs_shape: ``(D,)`` vectors (88-key piano rolls) or ``(C, S, S)`` images, ``S`` in 16/32/64.
        action_dim: size of the (one-hot or continuous) action; 0 for music.
        obs_kind: emission ``"bernoulli"`` | ``"gaussian"`` | ``"discretized"``.
        d_dim: units of ``d_t`` (300).
        z_dim: stochastic units ``z_t`` (100).
        hidden: units of the one hidden layer of every MLP (500).
        embed_dim: size of the observation features ``phi(x)``.
        input_prev_obs: ``u_t`` includes the previous frame (``u_t = x_{t-1}`` in §5.4).
        min_std: std floor of prior and posterior (variance floor 1e-6, §4.8.1).
        obs_min_std: std floor of Gaussian emissions.
        conv_channels: channels of the conv encoder/decoder for images.
        train_drop_prob: probability of dropping a frame in training (learn to impute); frames before
            ``train_drop_init`` are kept.
        trailing_pad: missing frames after a row's last observed frame are padding of a variable-length
            batch (music), not latent steps: they add no KL term and the backward inference recursion
            starts at each row's own end (``a_{T_i+1} = 0``, eq. (5.7)). Off by default (trailing missing
            frames are then steps to impute); cannot be combined with ``train_drop_prob``.
        dropout: dropout rate on the observation features ``phi(x)`` and on the deterministic state where
            it enters the emission, training mode only (regulariser for the small music sets; 0 = off).
        imagine_sample: ``imagine`` samples ``z`` and frames instead of following means.

    Example:
        >>> SequenceConfig(obs_shape=(5,), z_dim=0)
        Traceback (most recent call last):
        ...
        ValueError: SequenceConfig.z_dim: expected >= 1, received 0
    """

    obs_shape: tuple[int, ...] = (88,)
    action_dim: int = 0
    obs_kind: str = "bernoulli"
    d_dim: int = 300
    z_dim: int = 100
    hidden: int = 500
    embed_dim: int = 500
    input_prev_obs: bool = True
    min_std: float = 1e-3
    obs_min_std: float = 1e-2
    conv_channels: int = 32
    train_drop_prob: float = 0.0
    train_drop_init: int = 1
    imagine_sample: bool = False
    trailing_pad: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _validate(self, type(self).__name__)


@dataclass
class StateSpaceConfig(SequenceConfig):
    """:class:`SequenceConfig` plus the structured inference network of the SRNN and the DMM.

    Attributes:
        a_dim: units of the inference network ``a_t`` (backward GRU or MLP).
        inference: ``"smooth"`` (backward GRU, eq. (5.7)) or ``"filter"`` (MLP of ``[d_t, x_t]``).
        residual_q: Res_q parameterisation of the posterior mean, eq. (5.12).
    """

    a_dim: int = 300
    inference: str = "smooth"
    residual_q: bool = True


@dataclass
class SRNNConfig(StateSpaceConfig):
    """Hyper-parameters of the SRNN; defaults are the thesis's polyphonic-music model (Ch. 5 supp.).

    Attributes: those of :class:`SequenceConfig` (``d_dim``: GRU units of ``d_t``) and
    :class:`StateSpaceConfig`.
    """

    PRESETS: ClassVar[dict[str, dict]] = {
        "default": {},
        # Table 5.1 / 5.2 variants on the music data (u_t = x_{t-1})
        "music": {},
        "music_smooth": {"residual_q": False},
        "music_filt_resq": {"inference": "filter"},
        "music_filt": {"inference": "filter", "residual_q": False},
        # action-conditioned video world model: u_t = previous action (and frame if input_prev_obs)
        "video": {"obs_shape": (1, 32, 32), "d_dim": 128, "z_dim": 16, "a_dim": 128, "hidden": 128,
                  "embed_dim": 128, "input_prev_obs": False, "train_drop_prob": 0.3, "train_drop_init": 4},
        "debug": dict(_DEBUG),
    }


def _validate(c: Any, name: str) -> None:
    if len(c.obs_shape) not in (1, 3):
        raise ValueError(f"{name}.obs_shape: expected (D,) or (C, S, S), received {tuple(c.obs_shape)}")
    if c.obs_kind not in ("bernoulli", "gaussian", "discretized"):
        raise ValueError(f"{name}.obs_kind: expected 'bernoulli', 'gaussian' or 'discretized', "
                         f"received {c.obs_kind!r}")
    for f in ("d_dim", "z_dim", "a_dim", "hidden", "embed_dim"):
        if hasattr(c, f) and getattr(c, f) < 1:
            raise ValueError(f"{name}.{f}: expected >= 1, received {getattr(c, f)}")
    if c.action_dim < 0:
        raise ValueError(f"{name}.action_dim: expected >= 0, received {c.action_dim}")
    if not 0.0 <= c.train_drop_prob < 1.0:
        raise ValueError(f"{name}.train_drop_prob: expected in [0, 1), received {c.train_drop_prob}")
    if c.min_std <= 0:
        raise ValueError(f"{name}.min_std: expected > 0, received {c.min_std}")
    if c.trailing_pad and c.train_drop_prob > 0:
        raise ValueError(f"{name}: trailing_pad treats trailing missing frames as padding; it cannot be combined "
                         f"with train_drop_prob={c.train_drop_prob} (dropped frames would become padding)")
    if not 0.0 <= c.dropout < 1.0:
        raise ValueError(f"{name}.dropout: expected in [0, 1), received {c.dropout}")


#: Training settings of the music experiments (§5.4 supp.) for :class:`worldmodels.train.TrainConfig`:
#: Adam 1e-3, batch 16, KL weight annealed linearly from 0.2 to 1.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "default": {"lr": 1e-3, "lr_schedule": "constant", "batch_size": 16, "beta0": 0.2,
                "beta_anneal_steps": 2000, "grad_clip": 10.0},
    "debug": {"lr": 3e-3, "lr_schedule": "constant", "batch_size": 8, "beta0": 0.2, "beta_anneal_steps": 10,
              "epochs": 2},
}


@register_model("srnn")
class SRNN(StateSpaceCore):
    """Stochastic recurrent neural network, eq. (5.1)-(5.12); see the module docstring.

    Example:
        >>> model = SRNN(SRNNConfig(**SRNNConfig.PRESETS["debug"], obs_shape=(5,)))
        >>> x = (torch.rand(2, 7, 5) > 0.5).float()
        >>> model.elbo(Batch(obs=x, action=torch.zeros(2, 7, 0))).shape
        torch.Size([2])
    """

    recurrent = True
    emission_uses_d = True

    def __init__(self, config: SRNNConfig) -> None:
        super().__init__(config)
