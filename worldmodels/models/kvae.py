"""Kalman variational auto-encoder (KVAE), thesis Ch. 6.

A VAE encodes every frame ``x_t`` into a low-dimensional ``a_t`` (§6.3); a linear Gaussian
state-space model (LGSSM) over ``z_t`` is the prior of the sequence ``a`` (eq. (6.1)-(6.4)). The
LGSSM matrices are mixtures ``A_t = sum_k alpha_t^(k) A^(k)`` (same for ``B_t``, ``C_t``) with weights
``alpha_t = softmax(W d_t)``, ``d_t = LSTM(a_{t-1}, d_{t-1})`` of the dynamics parameter network
(eq. (6.10), §6.3.3). Inference uses the exact Kalman smoothing posterior ``p(z | a, u)``
(eq. (6.6)) from :mod:`worldmodels.kalman`; missing frames are handled by the masked ELBO (§6.10)
and by estimating ``a_t`` of a missing step with the filter's prediction ``C_t z_{t|t-1}``
(eq. (6.12)-(6.13)).

ELBO (eq. (6.7)): ``E_q(a|x)[ log p(x|a) - log q(a|x) + E_p(z|a,u)[log p(a,z|u) - log p(z|a,u)] ]``.
The inner expectation equals ``log p(a|u)`` for *every* ``z`` (the ratio of eq. (6.8) is the LGSSM
marginal likelihood, as the thesis notes below eq. (6.8)), so it is computed exactly by the Kalman
filter's log-likelihood (eq. (3.12)) instead of a single-``z`` sample: same value and gradients for
``gamma``, zero Monte Carlo variance in ``z``. ``tests/worldmodels/test_kvae.py`` checks that the
single-sample estimator of eq. (6.8) with a joint sample from :func:`worldmodels.kalman.sample_smoothed`
gives the same number.

Example:
    >>> import torch
    >>> from worldmodels.api import Batch
    >>> from worldmodels.models import build_model
    >>> model = build_model("kvae", "debug")
    >>> batch = Batch(obs=(torch.rand(2, 6, 1, 16, 16) > 0.8).float(), action=torch.zeros(2, 6, 0))
    >>> out = model.loss(batch)
    >>> out.loss.shape, sorted(out.metrics)[:3]
    (torch.Size([]), ['alpha_entropy', 'elbo', 'log_pa'])
    >>> model.impute(batch.obs, batch.action, torch.tensor([[1, 1, 0, 0, 1, 1]] * 2).bool()).shape
    torch.Size([2, 6, 1, 16, 16])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldmodels.api import Batch, Belief, Imagination, LossOutput, check_shape
from worldmodels.kalman import FilterResult, LGSSMParams, kalman_filter, kalman_smooth
from worldmodels.models import register_model
from worldmodels.nn import KVAEConvDecoder, KVAEConvEncoder, KVAEMLPEncoder, MLPDecoder

__all__ = ["KVAEConfig", "KVAE", "TRAIN_PRESETS"]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class KVAEConfig:
    """Hyper-parameters of the KVAE; defaults are the experimental details of §6.8 (bouncing ball ``box``).

    Attributes:
        obs_shape: ``(C, H, W)`` frames in [0, 1]; H and W divisible by ``2 ** len(filters)`` for the CNN.
            Vector observations ``(D,)`` always use the MLP encoder/decoder.
        action_dim: dimension of the control input ``u_t`` (0 = no control, as in the ball videos).
        a_dim: dimension of the VAE encoding ``a_t`` (pseudo-observation of the LGSSM).
        z_dim: dimension of the LGSSM state ``z_t``.
        K: number of mixture components ``A^(k), B^(k), C^(k)`` (eq. (6.10)).
        encoder: ``"cnn"`` (3 conv layers, stride 2, sub-pixel decoder, §6.8: :class:`worldmodels.nn.KVAEConvEncoder`
            / :class:`~worldmodels.nn.KVAEConvDecoder`) or ``"mlp"`` (§6.5.2: :class:`~worldmodels.nn.KVAEMLPEncoder`
            / :class:`~worldmodels.nn.MLPDecoder`).
        filters: channels of the conv layers (decoder mirrors them).
        mlp_units, mlp_layers: sizes of the MLP encoder/decoder.
        likelihood: ``"bernoulli"`` (binary frames) or ``"gaussian"`` with fixed ``pixel_var``.
        a_var_scale: variance of ``q(a_t|x_t)`` is ``a_var_scale * sigmoid(.)`` (small and bounded).
        noise_transition: ``Q = noise_transition * I`` (fixed).
        noise_emission: ``R = noise_emission * I`` (fixed).
        init_cov: ``p(z_1) = N(0, init_cov * I)``.
        init_kf_matrices: std of the Gaussian init of ``B^(k)`` and ``C^(k)``; ``A^(k) = I``.
        alpha_units: LSTM units of the dynamics parameter network.
        recon_weight: weight of ``log p(x|a)`` in the training loss (0.3 in §6.8; not in ``elbo``).
        train_drop_prob: probability that a frame is dropped during training (§6.10); frames before
            ``train_drop_init`` are always kept.
        train_drop_init: number of initial frames always observed when ``train_drop_prob > 0``.
        channels_last: run the convolutions in ``channels_last`` memory format (faster on CPU).
        conv_precision: ``"float32"`` or ``"bfloat16"``: run the conv layers of the encoder/decoder
            under ``torch.autocast`` in bfloat16 (mixed precision: weights, gradients, the linear heads
            and the whole Kalman filter/smoother stay float32). About 1.8x faster convolutions on
            CPUs with native bf16 (AVX512-BF16/AMX, ``make bench``); emulated, and slower, elsewhere.
    """

    obs_shape: tuple[int, ...] = (1, 32, 32)
    action_dim: int = 0
    a_dim: int = 2
    z_dim: int = 4
    K: int = 3
    encoder: str = "cnn"
    filters: tuple[int, ...] = (32, 32, 32)
    mlp_units: int = 128
    mlp_layers: int = 2
    likelihood: str = "bernoulli"
    pixel_var: float = 0.1
    a_var_scale: float = 0.03
    noise_transition: float = 0.08
    noise_emission: float = 0.03
    init_cov: float = 20.0
    init_kf_matrices: float = 0.05
    alpha_units: int = 50
    recon_weight: float = 0.3
    train_drop_prob: float = 0.0
    train_drop_init: int = 3
    channels_last: bool = True
    conv_precision: str = "float32"

    PRESETS: ClassVar[dict[str, dict]] = {
        "default": {},
        "box": {},
        "gravity": {"z_dim": 5},  # §6.8: a bias term for gravity
        "polygon": {"K": 7},  # §6.8: more complex dynamics
        "pong": {},
        "pendulum": {"obs_shape": (1, 16, 16), "a_dim": 2, "z_dim": 3, "K": 2, "action_dim": 1},  # §6.5.2
        "pendulum_mlp": {
            "obs_shape": (1, 16, 16), "a_dim": 2, "z_dim": 3, "K": 2, "action_dim": 1, "encoder": "mlp",
        },
        "debug": {"obs_shape": (1, 16, 16), "filters": (8, 8), "alpha_units": 8, "channels_last": False},
    }

    def __post_init__(self) -> None:
        if len(self.obs_shape) not in (1, 3):
            raise ValueError(f"KVAEConfig.obs_shape: expected (C, H, W) or (D,), received {self.obs_shape}")
        if self.encoder not in ("cnn", "mlp"):
            raise ValueError(f"KVAEConfig.encoder: expected 'cnn' or 'mlp', received {self.encoder!r}")
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(
                f"KVAEConfig.likelihood: expected 'bernoulli' or 'gaussian', received {self.likelihood!r}"
            )
        if self.conv_precision not in ("float32", "bfloat16"):
            raise ValueError(
                f"KVAEConfig.conv_precision: expected 'float32' or 'bfloat16', received {self.conv_precision!r}"
            )
        f = 2 ** len(self.filters)
        image = len(self.obs_shape) == 3
        if self.encoder == "cnn" and image and (self.obs_shape[1] % f or self.obs_shape[2] % f):
            raise ValueError(
                f"KVAEConfig.obs_shape: expected H and W divisible by {f} for {len(self.filters)} stride-2 "
                f"conv layers, received {self.obs_shape}"
            )
        for name in ("a_dim", "z_dim", "K", "alpha_units"):
            if getattr(self, name) < 1:
                raise ValueError(f"KVAEConfig.{name}: expected >= 1, received {getattr(self, name)}")
        if not 0.0 <= self.train_drop_prob < 1.0:
            raise ValueError(
                f"KVAEConfig.train_drop_prob: expected in [0, 1), received {self.train_drop_prob}"
            )


#: Training settings of §6.8 for :class:`worldmodels.train.TrainConfig` (Adam 0.007, ×0.85 every 20
#: epochs, gradient-norm clip 150, batch 32, ~80 epochs, alpha-network frozen for the first 10 epochs).
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "lr": 0.007, "lr_schedule": "step", "decay_rate": 0.85, "decay_every": 20, "grad_clip": 150.0,
        "batch_size": 32, "epochs": 80, "freeze_until": {"alpha_net": 10},
    },
    "debug": {"lr": 0.01, "lr_schedule": "constant", "grad_clip": 150.0, "batch_size": 8, "epochs": 2},
}


def _frames(mask: Tensor, obs: Tensor) -> Tensor:
    """``mask [B, T]`` broadcast against ``obs [B, T, ...]``."""
    return mask.view(*mask.shape, *([1] * (obs.dim() - 2)))


class _AlphaNet(nn.Module):
    """Dynamics parameter network: ``d_t = LSTM(a_{t-1}, d_{t-1})``, ``alpha_t = softmax(W d_t)`` (§6.3.3)."""

    def __init__(self, c: KVAEConfig) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(c.a_dim, c.alpha_units)
        self.out = nn.Linear(c.alpha_units, c.K)
        self.units = c.alpha_units

    def initial_state(self, batch: int, ref: Tensor) -> tuple[Tensor, Tensor]:
        h = ref.new_zeros(batch, self.units)
        return h, h.clone()

    def forward(self, a_prev: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, c = self.cell(a_prev, state)
        return torch.softmax(self.out(h), dim=-1), (h, c)


@register_model("kvae")
class KVAE(nn.Module):
    """Kalman variational auto-encoder (thesis Ch. 6) implementing :class:`worldmodels.api.WorldModel`.

    Parameters (names used by ``TrainConfig.freeze_until``): ``encoder.*``, ``decoder.*`` (VAE),
    ``A_k [K, z, z]``, ``B_k [K, z, u]``, ``C_k [K, a, z]``, ``a0 [a]`` (learned starting code of the
    alpha-network) and ``alpha_net.*`` (LSTM + softmax layer, trained after the first epochs, §6.8).
    ``Q``, ``R``, ``mu0``, ``Sigma0`` are fixed buffers.

    Example:
        >>> import torch
        >>> model = KVAE(KVAEConfig(**KVAEConfig.PRESETS["debug"]))
        >>> obs = (torch.rand(3, 5, 1, 16, 16) > 0.9).float()
        >>> belief = model.observe(obs, torch.zeros(3, 5, 0))
        >>> im = model.imagine(belief, torch.zeros(3, 4, 0))
        >>> im.obs.shape, im.extras["alpha"].shape
        (torch.Size([3, 4, 1, 16, 16]), torch.Size([3, 4, 3]))
    """

    Config = KVAEConfig
    Q: Tensor  # buffers, see __init__
    R: Tensor
    mu0: Tensor
    Sigma0: Tensor

    def __init__(self, config: KVAEConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.encoder == "cnn" and len(c.obs_shape) == 3:  # §6.8
            self.encoder: nn.Module = KVAEConvEncoder(c.obs_shape, c.a_dim, c.filters, c.a_var_scale,
                                                      c.channels_last, c.conv_precision)
            self.decoder: nn.Module = KVAEConvDecoder(c.a_dim, c.obs_shape, c.filters, c.channels_last,
                                                      c.conv_precision)
        else:  # §6.5.2
            hidden = (c.mlp_units,) * c.mlp_layers
            self.encoder = KVAEMLPEncoder(c.obs_shape, c.a_dim, hidden, c.a_var_scale)
            self.decoder = MLPDecoder(c.a_dim, c.obs_shape, hidden)
        z, a, u, K = c.z_dim, c.a_dim, c.action_dim, c.K
        # LGSSM mixture matrices, eq. (6.10); init of §6.8.
        self.A_k = nn.Parameter(torch.eye(z).repeat(K, 1, 1))  # [K, z, z]
        self.B_k = nn.Parameter(c.init_kf_matrices * torch.randn(K, z, u))  # [K, z, u]
        self.C_k = nn.Parameter(c.init_kf_matrices * torch.randn(K, a, z))  # [K, a, z]
        self.a0 = nn.Parameter(torch.zeros(a))  # [a] starting code a_0 of the alpha-network
        self.alpha_net = _AlphaNet(c)
        self.register_buffer("Q", c.noise_transition * torch.eye(z))  # [z, z]
        self.register_buffer("R", c.noise_emission * torch.eye(a))  # [a, a]
        self.register_buffer("mu0", torch.zeros(z))  # [z]
        self.register_buffer("Sigma0", c.init_cov * torch.eye(z))  # [z, z]

    # ------------------------------------------------------------------ helpers
    @property
    def _has_control(self) -> bool:
        return self.config.action_dim > 0

    def _check_inputs(self, obs: Tensor, action: Tensor, mask: Tensor | None = None) -> None:
        c = self.config
        if obs.dim() != 2 + len(c.obs_shape):
            shape = ", ".join(map(str, c.obs_shape))
            raise ValueError(f"KVAE: expected obs [B, T, {shape}], received shape {tuple(obs.shape)}")
        check_shape("KVAE obs", obs, (None, None, *c.obs_shape))
        B, T = obs.shape[:2]
        check_shape("KVAE action", action, (B, T, c.action_dim))
        if mask is not None:
            check_shape("KVAE mask", mask, (B, T))
            if mask.dtype != torch.bool:
                raise TypeError(f"KVAE mask: expected dtype torch.bool, received {mask.dtype}")
        if not torch.isfinite(action).all():
            raise ValueError("KVAE action: expected finite values, received NaN/inf")
        seen = obs if mask is None else obs[mask]
        if not torch.isfinite(seen).all():
            raise ValueError("KVAE obs: expected finite values on observed frames, received NaN/inf")

    def encode(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``q(a_t | x_t)`` for every frame: ``obs [B, T, C, H, W] -> (mean, var)`` each ``[B, T, a]``."""
        B, T = obs.shape[:2]
        mean, var = self.encoder(obs.reshape(B * T, *obs.shape[2:]))
        return mean.view(B, T, -1), var.view(B, T, -1)

    def decode_logits(self, a: Tensor) -> Tensor:
        """``a [..., a] ->`` logits (Bernoulli) or means (Gaussian) ``[..., C, H, W]`` of ``p(x_t|a_t)``."""
        lead = a.shape[:-1]
        out = self.decoder(a.reshape(-1, a.shape[-1]))
        return out.view(*lead, *out.shape[1:])

    def decode(self, a: Tensor) -> Tensor:
        """Mean frame in [0, 1] of ``p(x_t | a_t)``."""
        out = self.decode_logits(a)
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out.clamp(0.0, 1.0)

    def _log_px(self, x: Tensor, out: Tensor) -> Tensor:
        """``log p(x_t | a_t)`` summed over pixels: ``[B, T, ...] -> [B, T]``."""
        if self.config.likelihood == "bernoulli":
            lp = -F.binary_cross_entropy_with_logits(out, x, reduction="none")
        else:
            v = self.config.pixel_var
            lp = -0.5 * (_LOG_2PI + math.log(v) + (x - out) ** 2 / v)
        return lp.flatten(2).sum(-1)

    def mixture(self, alpha: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """Eq. (6.10): ``alpha [..., K] -> (A [..., z, z], B [..., z, u] or None, C [..., a, z])``."""
        A = torch.einsum("...k,kij->...ij", alpha, self.A_k)
        Bu = torch.einsum("...k,kij->...ij", alpha, self.B_k) if self._has_control else None
        C = torch.einsum("...k,kij->...ij", alpha, self.C_k)
        return A, Bu, C

    def _params(self) -> LGSSMParams:
        # A, C are ignored when a step_fn is given; they set the shapes for the Kalman API.
        return LGSSMParams(
            A=self.A_k[0], C=self.C_k[0], Q=self.Q, R=self.R, mu0=self.mu0, Sigma0=self.Sigma0,
            Bu=self.B_k[0] if self._has_control else None,
        )

    def _run_lgssm(
        self, a: Tensor, u: Tensor | None, mask: Tensor, smooth: bool
    ) -> tuple[FilterResult, tuple[Tensor, Tensor] | None, Tensor, tuple[Tensor, Tensor]]:
        """Kalman filter (and smoother) of ``a [B, T, a]`` with the alpha-network inside the recursion.

        The alpha-network sees ``a_{t-1}`` where observed and the filter's estimate
        ``C_{t-1} mu_{t-1|t-1}`` (= the prediction ``C_{t-1} z_{t-1|t-2}`` for a missing step),
        eq. (6.12)-(6.13).

        Returns:
            (filter result, smoothed means ``[B, T, z]`` and covariances as a tuple or None,
            ``alpha [B, T, K]``, final LSTM state ``(h, c)``).
        """
        B = a.shape[0]
        alphas: list[Tensor] = []
        state = [self.alpha_net.initial_state(B, a)]
        a0 = self.a0.expand(B, -1)

        def step_fn(t: int, y_prev: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
            alpha_t, state[0] = self.alpha_net(a0 if t == 0 else y_prev, state[0])  # [B, K]
            alphas.append(alpha_t)
            return self.mixture(alpha_t)

        params = self._params()
        if smooth:
            res = kalman_smooth(a, params, u=u, mask=mask, step_fn=step_fn)
            return res.filtered, (res.mean, res.cov), torch.stack(alphas, 1), state[0]
        fres = kalman_filter(a, params, u=u, mask=mask, step_fn=step_fn)
        return fres, None, torch.stack(alphas, 1), state[0]

    # ------------------------------------------------------------------ training
    def loss(self, batch: Batch, beta: float = 1.0) -> LossOutput:
        """Negative masked ELBO per observed frame, eq. (6.7)-(6.8) and §6.10.

        ``loss = -(recon_weight * log p(x|a) + beta * (log p(a|u) - log q(a|x))) / #observed frames``;
        ``metrics["elbo"]`` is the same with both weights 1.
        """
        c = self.config
        obs, action, mask = batch.obs, batch.action, batch.mask
        self._check_inputs(obs, action, mask)
        if self.training and c.train_drop_prob > 0:  # §6.10: train with missing frames
            drop = torch.rand(mask.shape, device=mask.device) < c.train_drop_prob
            drop[:, : c.train_drop_init] = False
            mask = mask & ~drop
        m = mask.to(obs.dtype)  # [B, T]
        x = torch.where(_frames(mask, obs), obs, torch.zeros_like(obs))
        a_mean, a_var = self.encode(x)  # [B, T, a]
        a = a_mean + a_var.sqrt() * torch.randn_like(a_mean)  # a ~ q(a|x), reparameterised
        log_qa = (-0.5 * (_LOG_2PI + a_var.log() + (a - a_mean) ** 2 / a_var)).sum(-1)  # [B, T]
        log_px = self._log_px(x, self.decode_logits(a))  # [B, T]
        u = action if self._has_control else None
        fres, _, alpha, _ = self._run_lgssm(a, u, mask, smooth=False)
        log_pa = fres.log_likelihood  # [B] = log p(a_obs | u), eq. (3.12)
        n = m.sum().clamp_min(1.0)
        s_px, s_qa, s_pa = (log_px * m).sum() / n, (log_qa * m).sum() / n, log_pa.sum() / n
        elbo = s_px + s_pa - s_qa
        loss = -(c.recon_weight * s_px + beta * (s_pa - s_qa))
        ent = -(alpha * alpha.clamp_min(1e-12).log()).sum(-1).mean()
        metrics = {
            "elbo": float(elbo.detach()), "log_px": float(s_px.detach()), "log_qa": float(s_qa.detach()),
            "log_pa": float(s_pa.detach()), "alpha_entropy": float(ent.detach()),
        }
        return LossOutput(loss=loss, metrics=metrics)

    @torch.no_grad()
    def elbo(self, batch: Batch, n_samples: int = 1) -> Tensor:
        """Unweighted ELBO per sequence ``[B]`` (sum over observed frames), averaged over ``n_samples``."""
        was = self.training
        self.eval()
        try:
            out = []
            for _ in range(n_samples):
                obs, mask = batch.obs, batch.mask
                x = torch.where(_frames(mask, obs), obs, torch.zeros_like(obs))
                a_mean, a_var = self.encode(x)
                a = a_mean + a_var.sqrt() * torch.randn_like(a_mean)
                log_qa = (-0.5 * (_LOG_2PI + a_var.log() + (a - a_mean) ** 2 / a_var)).sum(-1)
                log_px = self._log_px(x, self.decode_logits(a))
                u = batch.action if self._has_control else None
                fres, _, _, _ = self._run_lgssm(a, u, mask, smooth=False)
                m = mask.to(obs.dtype)
                out.append(((log_px - log_qa) * m).sum(1) + fres.log_likelihood)
            return torch.stack(out).mean(0)
        finally:
            self.train(was)

    # ------------------------------------------------------------------ WorldModel API
    def infer(
        self, obs: Tensor, action: Tensor, mask: Tensor | None = None, smooth: bool = True
    ) -> dict[str, Tensor]:
        """Encode, filter and (optionally) smooth a sequence; everything the imputation plots need.

        Returns a dict of ``a_enc [B, T, a]`` (encoder means), ``alpha [B, T, K]``, ``C [B, T, a, z]``,
        ``z_filt``/``z_smooth`` ``[B, T, z]``, ``a_filt``/``a_smooth`` ``[B, T, a]`` (``C_t`` times the
        filtered/smoothed mean), ``x_filt``/``x_smooth`` ``[B, T, C, H, W]`` decoded frames in [0, 1].
        """
        B, T = obs.shape[:2]
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=obs.device)
        self._check_inputs(obs, action, mask)
        x = torch.where(_frames(mask, obs), obs, torch.zeros_like(obs))
        a_enc, _ = self.encode(x)
        u = action if self._has_control else None
        fres, sm, alpha, lstm = self._run_lgssm(a_enc, u, mask, smooth=smooth)
        C = fres.C  # [B, T, a, z] the emission matrices the filter used
        assert C is not None
        out = {"a_enc": a_enc, "alpha": alpha, "C": C, "z_filt": fres.mean, "z_filt_cov": fres.cov}
        out["a_filt"] = (C @ fres.mean.unsqueeze(-1)).squeeze(-1)
        out["x_filt"] = self.decode(out["a_filt"])
        if sm is not None:
            out["z_smooth"], out["z_smooth_cov"] = sm
            out["a_smooth"] = (C @ sm[0].unsqueeze(-1)).squeeze(-1)
            out["x_smooth"] = self.decode(out["a_smooth"])
        out["lstm_h"], out["lstm_c"] = lstm
        # a_{T-1} as the alpha-network would see it next: observed encoding or the filter's estimate.
        out["a_last"] = torch.where(mask[:, -1:], a_enc[:, -1], out["a_filt"][:, -1])
        return out

    @torch.no_grad()
    def observe(self, obs: Tensor, action: Tensor, mask: Tensor | None = None) -> Belief:
        """Filtering: ``p(z_T | a_{1:T}, u_{1:T})`` plus the alpha-network state.

        ``features [B, z + a]`` = ``[mu_{T|T}, a_T]`` (``a_T`` the encoding or, if frame T is missing,
        its filtered estimate), matching ``Imagination.latent``.
        """
        out = self.infer(obs, action, mask, smooth=False)
        mean, cov = out["z_filt"][:, -1], out["z_filt_cov"][:, -1]
        state: dict[str, object] = {"mean": mean, "cov": cov, "h": out["lstm_h"], "c": out["lstm_c"], "a_prev": out["a_last"]}
        return Belief(features=torch.cat([mean, out["a_last"]], -1), state=state)

    def features_per_step(self, obs: Tensor, action: Tensor, mask: Tensor | None = None) -> Tensor:
        """``[B, T, z + a]``: ``observe(obs[:, :t+1], ...).features = [mu_{t|t}, a_t]`` of every ``t`` in one
        filtering pass, with gradients (:func:`worldmodels.heads.belief_features`)."""
        B, T = obs.shape[:2]
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=obs.device)
        self._check_inputs(obs, action, mask)
        a_enc, _ = self.encode(torch.where(_frames(mask, obs), obs, torch.zeros_like(obs)))  # [B, T, a]
        fres, _, _, _ = self._run_lgssm(a_enc, action if self._has_control else None, mask, smooth=False)
        assert fres.C is not None
        a_filt = (fres.C @ fres.mean.unsqueeze(-1)).squeeze(-1)  # [B, T, a]
        return torch.cat([fres.mean, torch.where(mask.unsqueeze(-1), a_enc, a_filt)], -1)

    @torch.no_grad()
    def imagine(self, belief: Belief, actions: Tensor) -> Imagination:
        """Forecast in ``z`` under ``actions [N, H, u]``, decode ``C_t z_t`` through the decoder.

        Deterministic generation (the means ``a_t = C_t mu_t`` feed the alpha-network); ``uncertainty``
        is the trace of the predictive covariance of ``a_t``, ``C_t P_t C_t^T + R``.
        """
        c = self.config
        if actions.dim() != 3 or actions.shape[-1] != c.action_dim:
            raise ValueError(
                f"KVAE.imagine: expected actions [N, H, {c.action_dim}], "
                f"received shape {tuple(actions.shape)}"
            )
        N, H = actions.shape[:2]
        Bb = belief.batch_size
        if Bb not in (1, N):
            raise ValueError(f"KVAE.imagine: belief batch must be 1 or N={N}, received {Bb}")
        st = {k: v.expand(N, *v.shape[1:]) for k, v in belief.state.items() if isinstance(v, Tensor)}
        mean, cov, a_prev = st["mean"], st["cov"], st["a_prev"]
        lstm = (st["h"].contiguous(), st["c"].contiguous())
        zs, as_, al, unc = [], [], [], []
        for t in range(H):
            alpha, lstm = self.alpha_net(a_prev, lstm)  # [N, K]
            A, Bu, C = self.mixture(alpha)
            mean = (A @ mean.unsqueeze(-1)).squeeze(-1)  # eq. (6.1) prediction
            if Bu is not None:
                mean = mean + (Bu @ actions[:, t].unsqueeze(-1)).squeeze(-1)
            cov = A @ cov @ A.transpose(-1, -2) + self.Q
            a_mean = (C @ mean.unsqueeze(-1)).squeeze(-1)  # eq. (6.2)
            a_cov = C @ cov @ C.transpose(-1, -2) + self.R
            zs.append(mean)
            as_.append(a_mean)
            al.append(alpha)
            unc.append(a_cov.diagonal(dim1=-2, dim2=-1).sum(-1))
            a_prev = a_mean
        z_seq, a_seq = torch.stack(zs, 1), torch.stack(as_, 1)  # [N, H, z], [N, H, a]
        return Imagination(
            obs=lambda: self.decode(a_seq), latent=torch.cat([z_seq, a_seq], -1), uncertainty=torch.stack(unc, 1),
            extras={"alpha": torch.stack(al, 1), "a": a_seq, "z": z_seq},
            belief=Belief(  # the predictive p(z_H | ...) and alpha-network state after the last step
                features=torch.cat([mean, a_prev], -1),
                state={"mean": mean, "cov": cov, "h": lstm[0], "c": lstm[1], "a_prev": a_prev},
            ),
        )

    @torch.no_grad()
    def predict(self, obs: Tensor, action: Tensor, future_actions: Tensor) -> Imagination:
        """Filter on the context, then :meth:`imagine` under ``future_actions [B, H, u]``."""
        return self.imagine(self.observe(obs, action), future_actions)

    @torch.no_grad()
    def impute(self, obs: Tensor, action: Tensor, mask: Tensor, smooth: bool = True) -> Tensor:
        """Fill the frames where ``mask`` is False (§6.4): decode ``C_t`` times the smoothed
        (``smooth=True``) or filtered mean of ``z_t``; observed frames are returned unchanged."""
        out = self.infer(obs, action, mask, smooth=smooth)
        x_hat = out["x_smooth"] if smooth else out["x_filt"]
        return torch.where(_frames(mask, obs), obs, x_hat)

    # ------------------------------------------------------------------ the LGSSM on given encodings
    # Public for callers that encode a batch once and filter it under many masks (the imputation curves of
    # ``worldmodels experiment kvae-ball``); :meth:`infer` is this after encoding the observed frames.
    def infer_codes(self, a: Tensor, action: Tensor, mask: Tensor, smooth: bool = True) -> dict[str, Tensor]:
        """Kalman filter (and smoother) of given encodings ``a [B, T, a]`` (e.g. ``encode(obs)[0]``) with the
        alpha-network inside the recursion; encodings where ``mask [B, T]`` is False are never used.

        Returns ``a_filt [B, T, a]`` (``C_t`` times the filtered mean of ``z_t``) and, with ``smooth``,
        ``a_smooth [B, T, a]`` (``C_t`` times the smoothed mean), the same as :meth:`infer` returns.

        Example:
            >>> model = KVAE(KVAEConfig(**KVAEConfig.PRESETS["debug"]))
            >>> a = model.encode(torch.rand(2, 5, 1, 16, 16))[0]
            >>> out = model.infer_codes(a, torch.zeros(2, 5, 0), torch.tensor([[1, 1, 0, 1, 0]] * 2).bool())
            >>> out["a_filt"].shape, out["a_smooth"].shape
            (torch.Size([2, 5, 2]), torch.Size([2, 5, 2]))
        """
        c = self.config
        check_shape("KVAE codes", a, (None, None, c.a_dim))
        B, T = a.shape[:2]
        check_shape("KVAE action", action, (B, T, c.action_dim))
        check_shape("KVAE mask", mask, (B, T))
        if mask.dtype != torch.bool:
            raise TypeError(f"KVAE mask: expected dtype torch.bool, received {mask.dtype}")
        fres, sm, _, _ = self._run_lgssm(a, action if self._has_control else None, mask, smooth=smooth)
        C = fres.C  # [B, T, a, z]
        assert C is not None
        out = {"a_filt": (C @ fres.mean.unsqueeze(-1)).squeeze(-1)}
        if sm is not None:
            out["a_smooth"] = (C @ sm[0].unsqueeze(-1)).squeeze(-1)
        return out
