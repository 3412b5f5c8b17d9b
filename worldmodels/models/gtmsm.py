"""GTM-SM: Generative Temporal Model with Spatial Memory (thesis Ch. 7).

Two sets of latent variables per time step (Fig. 7.1):

* ``s_t`` — a low-dimensional state (position, optionally heading) driven by the one-hot actions
  through a state-space model with prior knowledge of the agent's physics, ``p(s_t | s_{t-1}, a_t) =
  N(μ_t, r² I)`` (eq. 7.2): ``config.transition`` picks one of the transitions of
  :mod:`worldmodels.models.gtmsm_transitions` — ``"linear"`` (§7.4.1), ``"wall"`` (eq. 7.3),
  ``"rotation"`` (eq. 7.4, ``state_dim = 3``) or ``"momentum"`` (§7.4.2.2).  When ``Batch.state`` holds the
  true pose, a regression loss pulls the displacement ``d_t`` towards the true one (in the agent's frame) —
  the target only, never an input.
* ``z_t`` — a VAE latent per frame, ``q(z_t | x_t)`` Gaussian (encoder and decoder from :mod:`worldmodels.nn`:
  :class:`~worldmodels.nn.MLPEncoder` / :class:`~worldmodels.nn.MLPDecoder` for small frames,
  :class:`~worldmodels.nn.GTMSMConvEncoder` / :class:`~worldmodels.nn.GTMSMConvDecoder` for 16-64 px).

Memorisation (``t <= τ``) writes ``(s_t, μ_z, σ_z)`` into a DND (keys ``s``, values the ``z``
statistics; §7.3.3).  Prediction (``t > τ``) reads the K nearest keys of ``s_t`` and forms the VAE
prior ``p(z_t | s_t, m)`` (``config.prior``, :mod:`worldmodels.models.gtmsm_memory`):

* ``"mixture"``:  ``Σ_k w_k N(z | μ_k, σ_k²)``, ``w_k ∝ 1 / (d_k² + δ)`` with squared distances  §7.4.1
* ``"combiner"``: an MLP over the retrieved ``{s̃_k, μ_k, σ_k}`` gives ``h_t``; a second MLP maps
  ``(h_t, s̃_t)`` to a Gaussian; ``s̃ = (x, y, cos θ, sin θ)`` for 3-D states                §7.7.2

The ELBO of §7.3.4 with ``q(z, s | x, a) = q(z | x) p(s | a)`` (eq. 7.2)::

    F = Σ_{t>τ} E_q(z_t|x_t)[log p(x_t | z_t)] - E_p*(s_t)[KL(q(z_t | x_t) || p(z_t | s_t, m))]

With ``landmark_inference`` (§7.10, off by default) the memorisation-phase states come instead from the
landmark inference network ``q(s_t | s_{t-1}, a_t, z_t, m_{1:t-1})`` (a reverse z -> s lookup of the steps
already memorised; :meth:`GTMSM.landmark_posterior`) and the ELBO gains ``Σ_{t<=τ} KL[q(s_t | ...) || p(s_t |
s_{t-1}, a_t)]``; the prediction phase keeps the prior.

The KL to the mixture prior has no closed form and is estimated with the same single sample.
The search itself is not differentiable: indices come from an exact search (torch top-k inside
a batch, :class:`worldmodels.memory.DND` for shared memories in ``imagine``/``localize``) and the
rows are gathered from torch tensors so gradients reach keys (states) and values (z statistics).

The transition, the prior and the landmark network are objects picked once from the config; their parameters
are registered on :class:`GTMSM` itself (``M``, ``gate.*``, ``c_f``, ``c_s``, ``combine_in.*``,
``combine_out.*``, ``beta_net.*``, ``beta_prior_logit``, ``var_net.*``: the keys of every checkpoint).

Example:
    >>> import torch
    >>> from worldmodels.api import Batch
    >>> model = GTMSM(GTMSMConfig(**GTMSMConfig.PRESETS["debug"]))
    >>> batch = Batch(obs=torch.rand(2, 12, 1, 8, 8), action=torch.eye(5)[torch.randint(0, 5, (2, 12))])
    >>> out = model.loss(batch)
    >>> out.loss.shape, "elbo" in out.metrics
    (torch.Size([]), True)
    >>> imag = model.predict(batch.obs, batch.action, torch.eye(5)[torch.randint(0, 5, (2, 7))])
    >>> imag.obs.shape, imag.extras["s"].shape
    (torch.Size([2, 7, 1, 8, 8]), torch.Size([2, 7, 2]))
"""

from __future__ import annotations

import math
import typing
import weakref
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldmodels.api import Batch, Belief, Imagination, LossOutput, check_shape
from worldmodels.memory import BACKENDS, DND
from worldmodels.models import register_model
from worldmodels.models.gtmsm_memory import (
    PRIORS,
    LandmarkInference,
    LandmarkPosterior,
    MemoryPrior,
    causal_reverse_search,
    gather_rows,
    gaussian_kl,
    gaussian_log_prob,
    inverse_distance_weights,
    knn_gather,
    mixture_log_prob,
    state_features,
)
from worldmodels.models.gtmsm_transitions import TRANSITIONS, Transition, cumsum_restart, rotate, wrap_heading
from worldmodels.nn import GTMSMConvDecoder, GTMSMConvEncoder, MLPDecoder, MLPEncoder
from worldmodels.probes import affine_r2

# The model and its config; the rest are re-exported from gtmsm_memory / gtmsm_transitions, their home.
__all__ = ["GTMSMConfig", "GTMSM", "affine_r2", "LandmarkPosterior", "causal_reverse_search", "cumsum_restart",
           "gaussian_kl", "inverse_distance_weights", "knn_gather", "mixture_log_prob", "rotate"]

_LOG_2PI = math.log(2 * math.pi)


@dataclass
class GTMSMConfig:
    """Hyper-parameters of :class:`GTMSM` (defaults: the ImageNav experiment of §7.4.1 / §7.7.1).

    Attributes:
        obs_shape: ``(C, H, W)`` of one frame.
        action_dim: number of (one-hot) actions.
        state_dim: 2 (position) or 3 (position + heading, eq. 7.4).
        z_dim: VAE latent size (16 ImageNav, 64 Labyrinth).
        hidden: width of the MLP encoder/decoder and of the small networks.
        encoder: ``"mlp"`` (small frames), ``"conv"`` (32/64 px frames) or ``"auto"``.
        likelihood: ``"bernoulli"`` (cross-entropy on [0, 1] pixels) or ``"gaussian"``.
        obs_std: pixel standard deviation of the Gaussian likelihood (fixed, or the initial value when
            ``learn_obs_std``).
        learn_obs_std: learn one pixel standard deviation per channel (maximum likelihood; §2.4.1: a
            Gaussian with learned mean and variance for continuous data), floored at ``min_obs_std``. A
            fixed σ (or the Bernoulli
            cross-entropy on continuous pixels, whose curvature corresponds to σ² ≈ x(1 - x) ≈ 0.25) that
            is larger than the true reconstruction error makes the ELBO call most of the frame noise
            and the codes carry little information; the learned σ shrinks with the error.
        min_obs_std: floor of the learned pixel standard deviation.
        tau: memorisation steps of a training window (the rest is the prediction phase).
        k: neighbours retrieved from the DND.
        delta: stabiliser of the inverse-distance weights ``1/(d² + δ)``.
        r: transition noise standard deviation.
        transition: ``"linear"`` | ``"wall"`` | ``"rotation"`` | ``"momentum"``
            (:data:`worldmodels.models.gtmsm_transitions.TRANSITIONS`).
        wall_gate_from: curriculum — the gate σ_d is forced to 1 for this many training updates.
        vae_precision: ``"float32"`` or ``"bfloat16"``: run the VAE encoder and decoder under ``torch.autocast`` in
            bfloat16 (their outputs, the transition, the memory read and the ELBO stay float32; weights and
            gradients float32). The encoder on all T frames is most of a training update once the state scan is
            fused; bfloat16 halves it on CPUs with native bf16 (``make bench``, group ``gtmsm_train``).
        gate_bias: initial bias of σ_d's output (before the sigmoid): 3 starts open (σ_d ≈ 0.95, close to the
            linear transition, but in the flat part of the sigmoid), 0 starts at σ_d ≈ 0.5 where its slope is 5x
            larger (see ``docs/results/gtmsm_notes.md``).
        prior: ``"mixture"`` (inverse-distance) or ``"combiner"`` (learned MLP, §7.7.2)
            (:data:`worldmodels.models.gtmsm_memory.PRIORS`).
        m_init_scale: standard deviation of the initial action matrix ``M``.
        displacement_weight: weight of the displacement regression loss (needs ``Batch.state``).
        min_std: floor of the encoder standard deviation.
        kl: KL to the mixture prior: ``"mc"`` single-sample estimate ``log q(z) - log p(z)`` or
            ``"bound"`` the closed-form upper bound ``Σ_k w_k KL(q || N(μ_k, σ_k²))`` (convexity of the
            KL; the objective stays a lower bound of the ELBO, with much lower gradient variance).
        memory_backend: search of a memory shared by many queries (``imagine`` with a batch-1 belief,
            ``localize``): a :data:`worldmodels.memory.BACKENDS` name (``"auto"``: exact torch up to 16k
            entries, exact FAISS above; ``"faiss-hnsw"`` / ``"faiss-ivf"`` approximate) or
            ``"brute"`` (chunked torch ``cdist`` + top-k, the reference). Training always searches
            the in-batch memories exactly in torch.
        landmark_inference: **[changed, session 3]** infer the memorisation-phase states with the landmark
            inference network of §7.10, ``q(s_t | s_{t-1}, a_t, z_t, m_{1:t-1})``, instead of the transition
            prior (eq. 7.2); see :meth:`GTMSM.landmark_posterior`. Off by default (every preset and
            checkpoint of sessions 1-2 is unchanged).
        landmark_k: K', entries retrieved by the reverse (z -> s) lookup.
        landmark_hidden: width of the β and variance networks.
        landmark_prior_std: σ_p of ``p(s_t | s_{t-1}, a_t) = N(μ_p, σ_p² I)`` against which the landmark
            posterior is scored (the extra KL of the ELBO under Fig. 7.5). ``r`` (1e-3) would charge
            ~5·10⁵ nats for following a landmark one cell away from the action-predicted move; obstacles
            at unknown places make the transition genuinely this uncertain. The prediction phase keeps ``r``.
        landmark_displacement_std: > 0: the true displacement (``Batch.state``) is an observation of the
            inferred step ``s_t - s_{t-1}`` with this std (Gaussian log-likelihood added to the ELBO;
            §7.10.1 "we use displacement information"); 0: off.
    """

    obs_shape: tuple[int, ...] = (3, 8, 8)
    action_dim: int = 5
    state_dim: int = 2
    z_dim: int = 16
    hidden: int = 256
    encoder: str = "auto"
    likelihood: str = "bernoulli"
    obs_std: float = 0.1
    learn_obs_std: bool = False
    min_obs_std: float = 1e-2
    tau: int = 256
    k: int = 5
    delta: float = 1e-4
    r: float = 1e-3
    transition: str = "wall"
    wall_gate_from: int = 0
    gate_bias: float = 3.0
    vae_precision: str = "float32"
    prior: str = "mixture"
    m_init_scale: float = 1.0
    displacement_weight: float = 0.0
    min_std: float = 1e-3
    kl: str = "bound"
    memory_backend: str = "auto"
    gate_act: str = "tanh"
    landmark_inference: bool = False
    landmark_k: int = 3
    landmark_hidden: int = 32
    landmark_prior_std: float = 0.5
    landmark_displacement_std: float = 0.0

    PRESETS: ClassVar[dict[str, dict]] = {
        "debug": dict(obs_shape=(1, 8, 8), action_dim=5, z_dim=4, hidden=16, tau=6, k=3),
        # §7.4.1 / §7.7.1: 32x32 image, 8x8 crop, τ = 256, K = 5, z ∈ R^16, δ = 1e-4, r = 1e-3.
        # Continuous pixels: Gaussian likelihood with a learned per-channel σ (see ``learn_obs_std``).
        # M ~ N(0, 0.1²): from N(0, 1) the learned grid is stretched ~10x along one axis and σ_d learns only
        # that axis's walls (docs/results/gtmsm_notes.md, session 4).
        "imagenav": dict(obs_shape=(3, 8, 8), action_dim=5, z_dim=16, hidden=256, tau=256, k=5,
                         delta=1e-4, r=1e-3, transition="wall", wall_gate_from=2000, gate_act="relu",
                         likelihood="gaussian", learn_obs_std=True, m_init_scale=0.1),
        # a small ImageNav model for the slow test and quick runs
        "imagenav_tiny": dict(obs_shape=(3, 8, 8), action_dim=5, z_dim=8, hidden=64, tau=64, k=5,
                              delta=1e-4, r=1e-3, transition="wall", wall_gate_from=300, gate_act="relu"),
        # §7.4.2.1 rotating agent: s = (x, y, θ), combiner prior, K = 4, z ∈ R^64, r = 1e-2.
        "miniworld_rotate": dict(obs_shape=(3, 32, 32), action_dim=3, state_dim=3, z_dim=64, hidden=256,
                                 tau=33, k=4, r=1e-2, transition="rotation", prior="combiner",
                                 likelihood="gaussian", displacement_weight=1.0),
        # §7.4.2.2 walking agent: momentum / friction / saturation + displacement loss.
        "miniworld_walk": dict(obs_shape=(3, 32, 32), action_dim=3, state_dim=3, z_dim=64, hidden=256,
                               tau=150, k=4, r=1e-2, transition="momentum", prior="combiner",
                               likelihood="gaussian", displacement_weight=1.0),
    }

    def __post_init__(self) -> None:
        self.obs_shape = tuple(int(v) for v in self.obs_shape)
        choices = {
            "encoder": ("auto", "mlp", "conv"),
            "likelihood": ("bernoulli", "gaussian"),
            "transition": tuple(TRANSITIONS),
            "prior": tuple(PRIORS),
            "kl": ("mc", "bound"),
            "memory_backend": ("brute", *BACKENDS),
            "gate_act": ("tanh", "relu"),
            "vae_precision": ("float32", "bfloat16"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"GTMSMConfig.{name}: expected one of {allowed}, received {getattr(self, name)!r}")
        if len(self.obs_shape) != 3:
            raise ValueError(f"GTMSMConfig.obs_shape: expected (C, H, W), received {self.obs_shape}")
        if TRANSITIONS[self.transition].needs_heading and self.state_dim != 3:
            raise ValueError(
                f"GTMSMConfig: transition {self.transition!r} needs state_dim=3 (x, y, θ), received {self.state_dim}"
            )
        if self.state_dim not in (2, 3):
            raise ValueError(f"GTMSMConfig.state_dim: expected 2 or 3, received {self.state_dim}")
        if self.obs_std <= 0 or self.min_obs_std <= 0:
            raise ValueError(f"GTMSMConfig: expected obs_std > 0 and min_obs_std > 0, received "
                             f"obs_std={self.obs_std}, min_obs_std={self.min_obs_std}")
        if self.k < 1 or self.tau < 1:
            raise ValueError(f"GTMSMConfig: expected k >= 1 and tau >= 1, received k={self.k}, tau={self.tau}")
        if self.landmark_k < 1 or self.landmark_hidden < 1 or self.landmark_prior_std <= 0 \
                or self.landmark_displacement_std < 0:
            raise ValueError(
                "GTMSMConfig: expected landmark_k >= 1, landmark_hidden >= 1, landmark_prior_std > 0 and "
                f"landmark_displacement_std >= 0, received landmark_k={self.landmark_k}, "
                f"landmark_hidden={self.landmark_hidden}, landmark_prior_std={self.landmark_prior_std}, "
                f"landmark_displacement_std={self.landmark_displacement_std}")


def _state(belief: Belief) -> dict[str, Tensor]:
    """The belief's memory tensors (``Belief.state`` is typed ``dict[str, object]``)."""
    return typing.cast("dict[str, Tensor]", belief.state)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


@register_model("gtmsm")
class GTMSM(nn.Module):
    """Generative Temporal Model with Spatial Memory (Ch. 7); implements :class:`worldmodels.api.WorldModel`.

    Example:
        >>> import torch
        >>> model = GTMSM(GTMSMConfig(**GTMSMConfig.PRESETS["debug"]))
        >>> obs, act = torch.rand(1, 10, 1, 8, 8), torch.eye(5)[torch.randint(0, 5, (1, 10))]
        >>> belief = model.observe(obs, act)
        >>> model.imagine(belief, torch.eye(5)[torch.randint(0, 5, (4, 3))]).obs.shape
        torch.Size([4, 3, 1, 8, 8])
        >>> model.localize(belief, obs[0, :2]).shape
        torch.Size([2, 2])
    """

    Config = GTMSMConfig

    def __init__(self, config: GTMSMConfig) -> None:
        super().__init__()
        self.config = c = config
        Z = c.z_dim
        use_conv = c.encoder == "conv" or (c.encoder == "auto" and c.obs_shape[1] >= 16)
        if use_conv:  # q(z | x) -> (μ, pre-softplus σ): 2z outputs
            self.encoder: nn.Module = GTMSMConvEncoder(c.obs_shape, 2 * Z, c.hidden)
            self.decoder: nn.Module = GTMSMConvDecoder(Z, c.obs_shape, c.hidden)
        else:
            self.encoder = MLPEncoder(c.obs_shape, 2 * Z, (c.hidden, c.hidden))
            self.decoder = MLPDecoder(Z, c.obs_shape, (c.hidden, c.hidden))
        if c.learn_obs_std:  # log σ of p(x | z) per channel, maximum likelihood
            self.obs_log_std = nn.Parameter(torch.full((c.obs_shape[0],), math.log(c.obs_std)))
        # p(s_t | s_{t-1}, a_t) (eqs. 7.2-7.4), p(z_t | s_t, m) (§7.4.1 / §7.7.2) and q(s_t | s_{t-1}, a_t, z_t, m)
        # (§7.10), each picked once from the config; their parameters are drawn in this order
        self.transition: Transition = TRANSITIONS[c.transition].from_config(c)
        self.memory_prior: MemoryPrior = PRIORS[c.prior].from_config(c)
        self.landmark: LandmarkInference | None = LandmarkInference.from_config(c) if c.landmark_inference else None
        for part in (self.transition, self.memory_prior, self.landmark):
            for name, value in ({} if part is None else part.named_parts()).items():
                setattr(self, name, value)  # registered on the model: keys M, gate.*, c_f, c_s, combine_in.*, ...
        self.updates: Tensor
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self._dnd_cache: dict[int, tuple[weakref.ref, DND]] = {}  # id(belief keys) -> index

    # ---------------------------------------------------------------- pieces
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``q(z | x)``: frames ``[..., C, H, W]`` -> ``(μ, σ)`` each ``[..., z]``."""
        lead = x.shape[: -3]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.config.vae_precision == "bfloat16"):
            h = self.encoder(x.reshape(-1, *self.config.obs_shape))
        mu, pre = h.to(x.dtype).chunk(2, dim=-1)
        std = F.softplus(pre) + self.config.min_std
        return mu.reshape(*lead, -1), std.reshape(*lead, -1)

    def decode(self, z: Tensor) -> Tensor:
        """``p(x | z)`` parameters (logits for Bernoulli, means for Gaussian): ``[..., z] -> [..., C, H, W]``."""
        lead = z.shape[:-1]
        with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=self.config.vae_precision == "bfloat16"):
            out = self.decoder(z.reshape(-1, z.shape[-1]))
        return out.to(z.dtype).reshape(*lead, *self.config.obs_shape)

    def frame_mean(self, params: Tensor) -> Tensor:
        """Predicted frame in [0, 1] from decoder output."""
        return torch.sigmoid(params) if self.config.likelihood == "bernoulli" else params.clamp(0, 1)

    def log_likelihood(self, params: Tensor, x: Tensor) -> Tensor:
        """``log p(x | z)`` summed over pixels: ``[..., C, H, W] -> [...]``."""
        if self.config.likelihood == "bernoulli":
            ll = -F.binary_cross_entropy_with_logits(params, x, reduction="none")
        else:
            std = self.pixel_std().to(params)  # [C, 1, 1]
            ll = -0.5 * ((x - params) / std).square() - torch.log(std) - 0.5 * _LOG_2PI
        return ll.flatten(-3).sum(-1)

    def pixel_std(self) -> Tensor:
        """σ of the Gaussian likelihood per channel, ``[C, 1, 1]`` (learned when ``learn_obs_std``)."""
        c = self.config
        if c.learn_obs_std:
            return self.obs_log_std.exp().clamp_min(c.min_obs_std).reshape(-1, 1, 1)
        return torch.full((c.obs_shape[0], 1, 1), c.obs_std)

    def _gate_on(self) -> bool:
        """Whether σ_d of eq. (7.3) gates the moves now (a wall transition after ``wall_gate_from`` updates)."""
        return self.transition.gate_on(self.training, self.updates)

    def _transition_now(self) -> Transition:
        """The transition in force at this point of training (the wall transition is linear during its curriculum)."""
        return self.transition.in_force(self.training, self.updates)

    def transition_step(self, s: Tensor, d: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """Mean of ``p(s_t | s_{t-1}, a_t)`` and the displacement ``d_t``: s/d ``[N, S]``, a ``[N, A]``.

        The linear transition of §7.4.1, eqs. (7.3), (7.4) or the momentum model of §7.4.2.2
        (``config.transition``; :mod:`worldmodels.models.gtmsm_transitions`).
        """
        return self._transition_now().step(s, d, a)

    def rollout_states(
        self, action: Tensor, is_first: Tensor | None = None, s0: Tensor | None = None, d0: Tensor | None = None,
        noise: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Ancestral sampling (``noise=True``) or the mean path of ``p*(s_t)`` (§7.3.3).

        Args:
            action: ``[B, T, A]``; ``action[:, t]`` leads to ``s_t``.
            is_first: ``[B, T]`` — the state (and displacement) restart at 0 there.
            s0, d0: ``[B, S]`` state and displacement before the first step (zeros by default).

        Returns:
            ``s [B, T, S]`` and displacements ``d [B, T, S]``.
        """
        B, T, _ = action.shape
        c = self.config
        s = action.new_zeros(B, c.state_dim) if s0 is None else s0
        d = action.new_zeros(B, c.state_dim) if d0 is None else d0
        eps = c.r * torch.randn(B, T, c.state_dim, dtype=action.dtype, device=action.device) if noise else None
        return self._transition_now().rollout(action, is_first, s, d, eps)

    def landmark_posterior(
        self, action: Tensor, mu_z: Tensor, valid: Tensor, is_first: Tensor | None = None, noise: bool = False
    ) -> LandmarkPosterior:
        """Landmark inference network ``q(s_t | s_{t-1}, a_t, z_t, m_{1:t-1})`` of §7.10, run over a sequence.

        Which steps use it: every step that is written into the memory, i.e. the memorisation phase
        (``observe`` and the first τ steps of a training window). Step ``t`` first queries the memory of the
        steps ``i < t`` of its episode in reverse (z-codes as keys, states as values; §7.10 item 2) and
        then writes its own ``(s_t, z_t)`` — so when an obstacle stops a move (``x_t = x_{t-1}``, §7.10.1)
        the inferred state can stay where it was and the memory does not get a wrong key. The prediction
        phase (``imagine``, steps ``> τ`` of ``loss``) has no frames and keeps the prior of eq. (7.2).

        The equations (``μ_q = μ_p + Σ_k β_k (μ_k − μ_p)``, ``log σ_q² = log σ_p² + g(...)``, §7.10) are those of
        :class:`worldmodels.models.gtmsm_memory.LandmarkInference`, with σ_p = ``config.landmark_prior_std``, K' =
        ``config.landmark_k`` and ``μ_p`` from the transition in force.

        Args:
            action: ``[B, T, A]``; mu_z: encoder means ``[B, T, z]``; valid: ``[B, T]`` bool (observed);
            is_first: ``[B, T]`` or None (state, displacement and memory restart there).
            noise: sample ``s_t = μ_q + σ_q ε`` (training: the ELBO's ancestral ``q*(s_t)``) or the mean path.

        Returns:
            :class:`LandmarkPosterior`, with ``kl [B, T]`` the closed-form Gaussian KL of each step.
        """
        if self.landmark is None:
            raise RuntimeError("GTMSM.landmark_posterior: the model was built with landmark_inference=False")
        return self.landmark(self._transition_now(), action, mu_z, valid, is_first, noise)

    def prior(
        self, s: Tensor, keys: Tensor, mu_m: Tensor, std_m: Tensor, valid: Tensor | None, idx: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """VAE prior ``p(z_t | s_t, m)`` from the K nearest memories (§7.4.1 mixture or §7.7.2 combiner).

        Args:
            s: queries ``[B, Q, S]``; keys ``[B, N, S]``; mu_m/std_m ``[B, N, z]``;
            valid: ``[B, Q, N]`` / ``[B, 1, N]`` bool or None.
            idx: ``[B, Q, K]`` neighbour indices found elsewhere (a DND index); searched here when None.

        Returns:
            ``log_w [B, Q, K']``, ``mu [B, Q, K', z]``, ``std [B, Q, K', z]`` of a mixture
            (``K' = 1`` for the combiner), and ``d2 [B, Q, K]`` the squared neighbour distances.
        """
        return self.memory_prior(s, keys, mu_m, std_m, valid, idx)

    def _memory_split(self, T: int) -> int:
        """τ of a window of length T: ``config.tau``, or T // 2 for windows shorter than τ + 1."""
        return self.config.tau if T > self.config.tau else max(1, T // 2)

    @staticmethod
    def _segments(is_first: Tensor) -> Tensor:
        return torch.cumsum(is_first.long(), dim=1)  # [B, T] episode id inside the window

    def _check(self, obs: Tensor, action: Tensor) -> None:
        c = self.config
        if obs.dim() != 5 or tuple(obs.shape[2:]) != c.obs_shape:
            raise ValueError(f"GTMSM: expected obs [B, T, {', '.join(map(str, c.obs_shape))}], "
                             f"received {tuple(obs.shape)}")
        check_shape("GTMSM action", action, (obs.shape[0], obs.shape[1], c.action_dim))

    # ---------------------------------------------------------------- ELBO
    def loss(self, batch: Batch, beta: float = 1.0) -> LossOutput:
        """Negative ELBO of §7.3.4 per prediction step (eq. 7.2 inference), + displacement loss.

        The first ``τ`` steps of the window are memorised; steps ``τ+1..T`` are scored.
        """
        c = self.config
        self._check(batch.obs, batch.action)
        B, T = batch.shape
        S = c.state_dim
        tau = self._memory_split(T)
        mu_z, std_z = self.encode(batch.obs)  # [B, T, z]
        lm = None
        if c.landmark_inference:  # memorisation: q(s_t | s_{t-1}, a_t, z_t, m_{1:t-1}) of §7.10; prediction: prior
            lm = self.landmark_posterior(batch.action[:, :tau], mu_z[:, :tau], batch.mask[:, :tau],
                                         batch.is_first[:, :tau], noise=True)
            s_f, d_f = self.rollout_states(batch.action[:, tau:], batch.is_first[:, tau:], s0=lm.s[:, -1],
                                           d0=lm.d[:, -1], noise=True)
            s, d = torch.cat([lm.s, s_f], 1), torch.cat([lm.d, d_f], 1)  # [B, T, S]
        else:
            s, d = self.rollout_states(batch.action, batch.is_first, noise=True)  # [B, T, S]
        seg = self._segments(batch.is_first)
        # memory: t < tau, observed; read by t >= tau from the same episode
        keys, mu_m, std_m = s[:, :tau], mu_z[:, :tau], std_z[:, :tau]
        valid = (seg[:, tau:].unsqueeze(-1) == seg[:, :tau].unsqueeze(1)) & batch.mask[:, :tau].unsqueeze(1)
        log_w, mu_p, std_p, _ = self.prior(s[:, tau:], keys, mu_m, std_m, valid)
        mu_q, std_q = mu_z[:, tau:], std_z[:, tau:]
        z = mu_q + std_q * torch.randn_like(mu_q)  # [B, P, z]
        rec = self.log_likelihood(self.decode(z), batch.obs[:, tau:])  # [B, P]
        if c.kl == "mc":
            kl = gaussian_log_prob(z, mu_q, std_q) - mixture_log_prob(z, log_w, mu_p, std_p)  # [B, P]
        else:  # Σ_k w_k KL(q || p_k) >= KL(q || Σ_k w_k p_k)
            kl = (log_w.exp() * gaussian_kl(mu_q.unsqueeze(2), std_q.unsqueeze(2), mu_p, std_p)).sum(-1)
        m = batch.mask[:, tau:].float()
        n = m.sum().clamp_min(1.0)
        rec_m, kl_m = (rec * m).sum() / n, (kl * m).sum() / n
        loss = -(rec_m - beta * kl_m)
        metrics = {"elbo": float((rec_m - kl_m).detach()), "rec": float(rec_m.detach()), "kl": float(kl_m.detach()),
                   "tau": float(tau)}
        if c.learn_obs_std:
            metrics["obs_std"] = float(self.pixel_std().mean().detach())
        if lm is not None:  # + KL[q(s_t | s_{t-1}, a_t, z_t, m) || p(s_t | s_{t-1}, a_t)] (ELBO under Fig. 7.5)
            kl_s = lm.kl.sum() / n  # summed over the memorisation steps, per scored step like the other terms
            loss = loss + beta * kl_s
            metrics["elbo"] -= float(kl_s.detach())
            metrics["kl_s"] = float(kl_s.detach())
            metrics["landmark_beta"] = float(lm.beta.sum(-1).mean().detach())
            metrics["landmark_std"] = float(lm.std_q.mean().detach())
            if c.landmark_displacement_std > 0 and batch.state is not None:
                # displacement information (§7.10.1) as a Gaussian observation of the inferred step s_t − s_{t-1}
                step = wrap_heading(lm.s - lm.s_prev)  # [B, τ, S]
                if S == 3:
                    step = rotate(step, -lm.s_prev[..., 2])
                target = self.true_displacement(batch.state[:, :tau], batch.is_first[:, :tau])
                ok = (~batch.is_first[:, :tau]).unsqueeze(-1)
                sq = torch.where(ok, step - target, torch.zeros_like(step)).square()
                nll = (0.5 * sq / c.landmark_displacement_std**2 + ok * (math.log(c.landmark_displacement_std)
                                                                       + 0.5 * _LOG_2PI)).sum() / n
                loss = loss + nll
                metrics["elbo"] -= float(nll.detach())
                metrics["landmark_displacement_nll"] = float(nll.detach())
                metrics["landmark_displacement_mse"] = float(sq.detach().sum() / (ok.sum() * S).clamp_min(1))
        if c.displacement_weight > 0 and batch.state is not None:
            target = self.true_displacement(batch.state, batch.is_first)  # [B, T, S]
            valid_d = (~batch.is_first).float().unsqueeze(-1)
            disp = ((d - target).square() * valid_d).sum() / valid_d.sum().clamp_min(1.0)
            loss = loss + c.displacement_weight * disp
            metrics["displacement_mse"] = float(disp.detach())
        if batch.state is not None and batch.state.shape[-1] >= 2:
            metrics["state_r2"] = affine_r2(s.detach(), batch.state[..., : min(S, batch.state.shape[-1])])
        if self.training:
            self.updates += 1
        return LossOutput(loss=loss, metrics=metrics)

    def true_displacement(self, pose: Tensor, is_first: Tensor) -> Tensor:
        """Displacement targets from poses ``[B, T, P]`` (``(x, y)`` or ``(x, y, θ)``): ``[B, T, S]``.

        For 3-D states the world-frame step is rotated into the agent frame of the previous pose
        (``R(-θ_{t-1})``) and the heading change is wrapped to ``(-π, π]``; zero where ``is_first``.
        """
        S = self.config.state_dim
        if pose.shape[-1] < S:
            raise ValueError(f"GTMSM displacement loss: expected Batch.state [B, T, >= {S}], received {tuple(pose.shape)}")
        prev = torch.cat([pose[:, :1], pose[:, :-1]], 1)
        step = pose[..., :S] - prev[..., :S]
        if S == 3:
            step = torch.cat([step[..., :2], torch.atan2(torch.sin(step[..., 2:]), torch.cos(step[..., 2:]))], -1)
            step = rotate(step, -prev[..., 2])
        return step.masked_fill(is_first.unsqueeze(-1), 0.0)

    # ---------------------------------------------------------------- WorldModel API
    @torch.no_grad()
    def observe(self, obs: Tensor, action: Tensor, mask: Tensor | None = None) -> Belief:
        """Memorisation phase (§7.3.3): infer ``s_{1:T}`` (mean path) and write ``(s_t, μ_z, σ_z)``.

        The states are the mean path of the transition prior, or of the landmark posterior (§7.10) when
        ``config.landmark_inference``.

        Returns a :class:`Belief` with ``state`` = ``keys [B, T, S]``, ``mu [B, T, z]``,
        ``std [B, T, z]``, ``valid [B, T]`` (observed frames), ``s [B, S]`` and ``d [B, S]`` (last
        state and displacement); ``features = [s_T, μ_z of the last observed frame]``.
        """
        self._check(obs, action)
        B, T = obs.shape[:2]
        mask = torch.ones(B, T, dtype=torch.bool, device=obs.device) if mask is None else mask.bool()
        check_shape("GTMSM mask", mask, (B, T))
        mu_z, std_z = self.encode(obs)
        if self.config.landmark_inference:  # §7.10: each step reads the memory of the earlier steps, then writes
            lm = self.landmark_posterior(action, mu_z, mask)
            s, d = lm.s, lm.d
        else:
            s, d = self.rollout_states(action)
        last = (mask.long() * torch.arange(1, T + 1, device=obs.device)).argmax(1)
        z_last = mu_z[torch.arange(B), last] * mask.any(1, keepdim=True)
        state: dict[str, object] = {"keys": s, "mu": mu_z, "std": std_z, "valid": mask, "s": s[:, -1], "d": d[:, -1]}
        return Belief(features=torch.cat([s[:, -1], z_last], -1), state=state)

    def features_per_step(self, obs: Tensor, action: Tensor, mask: Tensor | None = None) -> Tensor:
        """``[B, T, S + z]``: ``observe(obs[:, :t+1], ...).features = [s_t, μ_z of the last observed frame up to
        t]`` of every ``t`` in one pass, with gradients (:func:`worldmodels.heads.belief_features`)."""
        self._check(obs, action)
        B, T = obs.shape[:2]
        mask = torch.ones(B, T, dtype=torch.bool, device=obs.device) if mask is None else mask.bool()
        check_shape("GTMSM mask", mask, (B, T))
        mu_z, _ = self.encode(obs)  # [B, T, z]
        s = self.landmark_posterior(action, mu_z, mask).s if self.config.landmark_inference else self.rollout_states(action)[0]
        seen = (mask.long() * torch.arange(1, T + 1, device=obs.device)).cummax(1).values  # [B, T] last seen + 1
        idx = (seen - 1).clamp_min(0).unsqueeze(-1).expand(-1, -1, mu_z.shape[-1])
        z_last = mu_z.gather(1, idx) * (seen > 0).unsqueeze(-1)  # [B, T, z]
        return torch.cat([s, z_last], -1)

    @torch.no_grad()
    def imagine(self, belief: Belief, actions: Tensor, sample: bool = False) -> Imagination:
        """Prediction phase: roll ``s`` forward under candidate ``actions [N, H, A]`` and decode the prior.

        The belief's batch is 1 (one memory shared by all candidates: searched with
        :class:`worldmodels.memory.DND` when available) or ``N``.

        Returns ``obs [N, H, C, H, W]`` (frame decoded from the prior mixture mean), ``latent``
        ``[N, H, S + z]`` = ``(s_t, E[z_t])``, ``uncertainty [N, H]`` (mean prior variance of z),
        extras ``"s" [N, H, S]`` and ``"nn_dist2" [N, H]`` (squared distance to the nearest memory:
        large = unexplored).
        """
        N, H, A = actions.shape
        if A != self.config.action_dim:
            raise ValueError(f"GTMSM.imagine: expected actions [N, H, {self.config.action_dim}], received {tuple(actions.shape)}")
        st = _state(belief)
        Bm = st["keys"].shape[0]
        if Bm not in (1, N):
            raise ValueError(f"GTMSM.imagine: belief batch must be 1 or N={N}, received {Bm}")
        s0, d0 = st["s"].expand(N, -1), st["d"].expand(N, -1)
        s, d_path = self.rollout_states(actions, s0=s0, d0=d0, noise=sample)  # [N, H, S] each
        if Bm == 1:
            log_w, mu_p, std_p, d2 = self._shared_prior(belief, s.reshape(1, N * H, -1))
            log_w, mu_p, std_p, d2 = (x.reshape(N, H, *x.shape[2:]) for x in (log_w, mu_p, std_p, d2))
        else:
            log_w, mu_p, std_p, d2 = self.prior(s, st["keys"], st["mu"], st["std"], st["valid"].unsqueeze(1))
        w = log_w.exp().unsqueeze(-1)  # [N, H, K, 1]
        z_mean = (w * mu_p).sum(2)  # [N, H, z]
        z_var = (w * (std_p.square() + mu_p.square())).sum(2) - z_mean.square()
        samples = None
        if sample:
            comp = torch.distributions.Categorical(logits=log_w).sample()  # [N, H]
            pick = comp[..., None, None].expand(N, H, 1, mu_p.shape[-1])
            z = mu_p.gather(2, pick).squeeze(2) + std_p.gather(2, pick).squeeze(2) * torch.randn_like(z_mean)
            p = self.frame_mean(self.decode(z))
            samples = torch.bernoulli(p) if self.config.likelihood == "bernoulli" else p
        nn_d2 = d2[..., 0].nan_to_num(posinf=1e30)
        return Imagination(
            obs=lambda: self.frame_mean(self.decode(z_mean)),  # decoded on first access
            latent=torch.cat([s, z_mean], -1),
            uncertainty=z_var.clamp_min(0).mean(-1),
            samples=samples,
            extras={"s": s, "nn_dist2": nn_d2},
            belief=Belief(  # after the last step: same memory (read-only in prediction), moved state
                features=torch.cat([s[:, -1], z_mean[:, -1]], -1),
                state={**{k: st[k].expand(N, *st[k].shape[1:]) for k in ("keys", "mu", "std", "valid")},
                       "s": s[:, -1], "d": d_path[:, -1]},
            ),
        )

    def _shared_prior(self, belief: Belief, s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Prior for many queries ``[1, Q, S]`` against one memory (batch-1 belief), searched with
        ``config.memory_backend`` (a :class:`worldmodels.memory.DND` index cached in the belief)."""
        st = _state(belief)
        valid = st["valid"][0]
        keys, mu, std = st["keys"][0, valid], st["mu"][0, valid], st["std"][0, valid]
        if keys.shape[0] == 0:
            return self.prior(s, st["keys"][:, :1], st["mu"][:, :1], st["std"][:, :1],
                              torch.zeros(1, 1, 1, dtype=torch.bool, device=s.device))
        if self.config.memory_backend == "brute":
            return self.prior(s, keys[None], mu[None], std[None], None)
        entry = self._dnd_cache.get(id(st["keys"]))  # one index per memory, built on first use
        dnd = entry[1] if entry is not None and entry[0]() is st["keys"] else None
        if dnd is None or dnd.backend != self.config.memory_backend:
            fk = state_features(keys)[None]  # [1, N, F]
            dnd = DND(key_dim=fk.shape[-1], value_dim=1, backend=self.config.memory_backend,
                      delta=self.config.delta, update_existing=False)
            dnd.write(fk, torch.zeros(1, fk.shape[1], 1, dtype=fk.dtype, device=fk.device))
            self._dnd_cache[id(st["keys"])] = (weakref.ref(st["keys"]), dnd)
            weakref.finalize(st["keys"], self._dnd_cache.pop, id(st["keys"]), None)  # dropped with the belief
        k = min(self.config.k, keys.shape[0])
        idx = dnd.read(state_features(s), k).index  # [1, Q, k] (search only; rows gathered below)
        return self.prior(s, keys[None], mu[None], std[None], None, idx=idx.clamp_min(0))

    @torch.no_grad()
    def predict(self, obs: Tensor, action: Tensor, future_actions: Tensor) -> Imagination:
        """``observe`` then ``imagine`` with per-sequence memories (``future_actions [B, H, A]``)."""
        return self.imagine(self.observe(obs, action), future_actions)

    @torch.no_grad()
    def impute(self, obs: Tensor, action: Tensor, mask: Tensor) -> Tensor:
        """Fill missing frames from the spatial memory of the observed ones: ``[B, T, C, H, W]``."""
        belief = self.observe(obs, action, mask)
        st = _state(belief)
        log_w, mu_p, std_p, _ = self.prior(st["keys"], st["keys"], st["mu"], st["std"], st["valid"].unsqueeze(1))
        z = (log_w.exp().unsqueeze(-1) * mu_p).sum(2)
        pred = self.frame_mean(self.decode(z))
        return torch.where(mask.bool()[..., None, None, None], obs, pred)

    @torch.no_grad()
    def localize(self, belief: Belief, frames: Tensor, k: int | None = None) -> Tensor:
        """Where was this seen? Reverse lookup of the memory (z as key, s as value, the reversed DND of §7.10;
        an exhaustive torch kNN over the stored ``μ_z``): ``[N, C, H, W] -> [N, S]``.

        The encoder mean of each frame is compared with the stored ``μ_z`` of the belief's memory
        (batch 1, or N aligned with the frames); the estimate is the inverse-distance weighted mean
        of the states of the ``k`` nearest stored frames (``k = config.k`` by default).
        """
        if frames.dim() != 4 or tuple(frames.shape[1:]) != self.config.obs_shape:
            raise ValueError(f"GTMSM.localize: expected frames [N, {', '.join(map(str, self.config.obs_shape))}], "
                             f"received {tuple(frames.shape)}")
        st = _state(belief)
        Nf = frames.shape[0]
        Bm = st["keys"].shape[0]
        if Bm not in (1, Nf):
            raise ValueError(f"GTMSM.localize: belief batch must be 1 or N={Nf}, received {Bm}")
        if not bool(st["valid"].any(1).all()):
            raise ValueError("GTMSM.localize: the belief's memory is empty (no observed frame)")
        mu_q, _ = self.encode(frames)  # [N, z]
        if Bm == 1:
            v = st["valid"][0]
            d2, idx = knn_gather(mu_q[None], st["mu"][0, v][None], None, k or self.config.k)
            s_k = gather_rows(st["keys"][0, v][None], idx)[0]  # [N, k, S]
            d2 = d2[0]
        else:
            d2, idx = knn_gather(mu_q[:, None], st["mu"], st["valid"][:, None], k or self.config.k)
            s_k = gather_rows(st["keys"], idx)[:, 0]
            d2 = d2[:, 0]
        log_w, _ = inverse_distance_weights(d2, self.config.delta)
        return (log_w.exp().unsqueeze(-1) * s_k).sum(1)
