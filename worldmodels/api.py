"""The world-model API every model implements and every agent uses (DESIGN §3).

Conventions (DESIGN §2):

* ``obs``: float in [0, 1], images ``[B, T, C, H, W]`` or vectors ``[B, T, D]``.
* ``action``: float ``[B, T, A]``; ``action[:, t]`` is the action that *led to* ``obs[:, t]``
  (the thesis's ``a_t`` in ``s_t = s_{t-1} + M a_t``, eq. (7.2), and ``u_t`` in eq. (6.1)).
  It is zero where ``is_first`` is true. Discrete actions arrive one-hot encoded
  (:func:`one_hot_actions`); models never see integers.
* ``mask``: bool ``[B, T]``; ``False`` means frame ``t`` is missing (eq. (6.12)-(6.13)).
* ``is_first``: bool ``[B, T]``; ``True`` where a new episode starts inside the window.
* ``reward``: float ``[B, T]`` (optional); ``reward[:, t]`` is the reward of the transition that
  ``action[:, t]`` led to ``obs[:, t]`` (the env's reward of that step), zero where ``is_first``.
* ``terminated``: bool ``[B, T]`` (optional); ``True`` where ``obs[:, t]`` is terminal (the episode
  ended by termination there; a time-limit truncation is not a termination). ``cont = ~terminated``.

Example:
    >>> import torch
    >>> batch = Batch(obs=torch.rand(2, 5, 1, 32, 32), action=torch.zeros(2, 5, 3))
    >>> batch.mask.shape, batch.is_first[:, 0].tolist()
    (torch.Size([2, 5]), [True, True])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Batch",
    "Belief",
    "Imagination",
    "LossOutput",
    "WorldModel",
    "one_hot_actions",
    "check_shape",
    "frames_to_tensor",
    "encode_actions",
]


def check_shape(name: str, x: Tensor, expected: tuple[int | None, ...]) -> None:
    """Raise ``ValueError`` naming the expected and received shape of ``x``.

    ``None`` in ``expected`` matches any size.

    Example:
        >>> check_shape("obs", torch.zeros(2, 3), (2, None))
        >>> check_shape("obs", torch.zeros(2, 3), (2, 4))
        Traceback (most recent call last):
        ...
        ValueError: obs: expected shape (2, 4), received (2, 3)
    """
    ok = x.dim() == len(expected) and all(e is None or e == s for e, s in zip(expected, x.shape))
    if not ok:
        exp = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name}: expected shape {exp}, received {tuple(x.shape)}")


def one_hot_actions(action: Tensor, n: int) -> Tensor:
    """Integer actions ``[...]`` -> float one-hot ``[..., n]``.

    Example:
        >>> one_hot_actions(torch.tensor([0, 2]), 3).tolist()
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    if action.dtype.is_floating_point:
        raise TypeError(f"one_hot_actions: expected integer actions, received dtype {action.dtype}")
    if action.numel() and (int(action.min()) < 0 or int(action.max()) >= n):
        raise ValueError(
            f"one_hot_actions: expected actions in [0, {n - 1}], received range "
            f"[{int(action.min())}, {int(action.max())}]"
        )
    return torch.nn.functional.one_hot(action.long(), n).float()


def frames_to_tensor(frames: np.ndarray | Tensor) -> Tensor:
    """Gymnasium image observations -> model input: uint8 ``[..., H, W(, C)]`` -> float ``[..., C, H, W]``.

    Example:
        >>> frames_to_tensor(np.full((2, 4, 4, 3), 255, np.uint8)).shape
        torch.Size([2, 3, 4, 4])
    """
    x = torch.as_tensor(np.asarray(frames))
    if x.dtype != torch.uint8:
        raise TypeError(f"frames_to_tensor: expected uint8 frames, received dtype {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"frames_to_tensor: expected [..., H, W(, C)], received shape {tuple(x.shape)}")
    if x.dim() == 2 or x.shape[-1] not in (1, 3, 4):  # no channel axis: grayscale
        x = x.unsqueeze(-1)
    return x.movedim(-1, -3).float().div_(255.0)


def encode_actions(action: np.ndarray | Tensor | int | float, space: gym.Space) -> Tensor:
    """Env actions -> model actions ``[..., A]`` (one-hot for ``Discrete``, float for ``Box``).

    Example:
        >>> encode_actions(np.array([1, 0]), gym.spaces.Discrete(3)).tolist()
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    """
    a = torch.as_tensor(np.asarray(action))
    if isinstance(space, gym.spaces.Discrete):
        return one_hot_actions(a.long() - int(space.start), int(space.n))
    if isinstance(space, gym.spaces.Box):
        size = int(np.prod(space.shape))
        if a.dim() < len(space.shape) or tuple(a.shape[a.dim() - len(space.shape) :]) != space.shape:
            raise ValueError(f"encode_actions: expected actions [..., {space.shape}], received {tuple(a.shape)}")
        return a.float().reshape(*a.shape[: a.dim() - len(space.shape)], size)
    raise TypeError(f"encode_actions: expected a Discrete or Box space, received {space}")


@dataclass
class Batch:
    """A window of rollout steps, the input of every model.

    Attributes:
        obs: ``[B, T, C, H, W]`` or ``[B, T, D]`` float in [0, 1].
        action: ``[B, T, A]`` float; ``action[:, t]`` led to ``obs[:, t]``.
        mask: ``[B, T]`` bool, ``False`` = frame missing. Defaults to all observed.
        is_first: ``[B, T]`` bool, ``True`` = episode starts here. Defaults to ``t == 0``.
        state: optional ground truth ``[B, T, S]`` (e.g. ``info["pose"]``), never used for
            training unless a model asks for it explicitly (GTM-SM displacement loss).
        reward: optional ``[B, T]`` float; ``reward[:, t]`` is the reward of the step ``action[:, t]``
            led to ``obs[:, t]`` (zero where ``is_first``). Trains reward heads
            (:class:`worldmodels.models.with_heads.WithHeads`); models ignore it.
        terminated: optional ``[B, T]`` bool; ``True`` where ``obs[:, t]`` is a terminal state (not a
            time-limit truncation). Trains continue heads; models ignore it.
    """

    obs: Tensor
    action: Tensor
    mask: Tensor = None  # type: ignore[assignment]
    is_first: Tensor = None  # type: ignore[assignment]
    state: Tensor | None = None
    reward: Tensor | None = None
    terminated: Tensor | None = None

    def __post_init__(self) -> None:
        if self.obs.dim() < 3:
            raise ValueError(f"Batch.obs: expected [B, T, ...], received shape {tuple(self.obs.shape)}")
        B, T = self.obs.shape[:2]
        check_shape("Batch.action", self.action, (B, T, None))
        if self.mask is None:
            self.mask = torch.ones(B, T, dtype=torch.bool, device=self.obs.device)
        if self.is_first is None:
            self.is_first = torch.zeros(B, T, dtype=torch.bool, device=self.obs.device)
            self.is_first[:, 0] = True
        check_shape("Batch.mask", self.mask, (B, T))
        check_shape("Batch.is_first", self.is_first, (B, T))
        if self.state is not None:
            check_shape("Batch.state", self.state, (B, T, None))
        if self.reward is not None:
            check_shape("Batch.reward", self.reward, (B, T))
        if self.terminated is not None:
            check_shape("Batch.terminated", self.terminated, (B, T))

    @property
    def shape(self) -> tuple[int, int]:
        """``(B, T)``."""
        return int(self.obs.shape[0]), int(self.obs.shape[1])

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor to ``device``."""
        return replace(
            self,
            **{f.name: getattr(self, f.name).to(device) for f in fields(self) if getattr(self, f.name) is not None},
        )

    def check_finite(self) -> None:
        """Raise ``ValueError`` when ``obs`` or ``action`` holds NaN or inf, naming the rows."""
        for name in ("obs", "action"):
            x = getattr(self, name)
            bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
            if bad.any():
                rows = bad.nonzero().flatten().tolist()
                raise ValueError(f"Batch.{name}: expected finite values, received NaN/inf in rows {rows}")


@dataclass
class Belief:
    """What a model knows after observing a context; the start of imagination.

    Attributes:
        features: ``[B, F]`` a flat summary of the filtered state (for model-free agents,
            :class:`agents.wrappers.BeliefObservation`).
        state: model-specific tensors (hidden states, Kalman mean/covariance, memory, ...),
            each with batch dimension ``B`` first.
    """

    features: Tensor
    state: dict[str, object] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.features.shape[0])


class Imagination:
    """An open-loop rollout of a model under candidate action sequences.

    Attributes:
        obs: ``[N, H, C, H, W]`` or ``[N, H, D]`` predicted observation means in [0, 1]. A model may
            pass a zero-argument decoder instead of a tensor: the frames are then decoded on first
            access (in the grad mode of the ``imagine`` call), so planners whose objective reads only
            ``latent`` or ``extras`` never pay for decoding ``N x H`` frames.
        latent: ``[N, H, F]`` latent features per step (what latent-space objectives compare).
        uncertainty: ``[N, H]`` a per-step uncertainty (e.g. predictive variance), >= 0.
        samples: optional ``[N, H, ...]`` sampled observations.
        extras: model-specific ``[N, H, ...]`` tensors (GTM-SM ``"s"``, KVAE ``"alpha"``).
        belief: the belief (batch ``N``) after the last imagined step, so that imagination can be
            continued step by step (:class:`agents.imagination_env.ImaginationEnv`); ``None`` when the
            model cannot continue.
        reward: optional ``[N, H]`` predicted reward of each imagined step (the step ``actions[:, h]``
            led to), from a reward head (:class:`worldmodels.models.with_heads.WithHeads`); ``None``
            when the model has none.
        cont: optional ``[N, H]`` predicted probability in [0, 1] that the episode continues after
            step ``h`` (``1 - P(terminal)``), from a continue head; ``None`` when the model has none.

    Example:
        >>> calls = []
        >>> im = Imagination(obs=lambda: calls.append(1) or torch.zeros(2, 3, 4),
        ...                  latent=torch.zeros(2, 3, 5), uncertainty=torch.zeros(2, 3))
        >>> im.horizon, calls
        (3, [])
        >>> im.obs.shape, im.obs.shape, calls
        (torch.Size([2, 3, 4]), torch.Size([2, 3, 4]), [1])
    """

    def __init__(
        self,
        obs: Tensor | Callable[[], Tensor],
        latent: Tensor,
        uncertainty: Tensor,
        samples: Tensor | None = None,
        extras: dict[str, Tensor] | None = None,
        belief: Belief | None = None,
        reward: Tensor | None = None,
        cont: Tensor | None = None,
    ) -> None:
        self._obs = obs
        self._grad = torch.is_grad_enabled()
        self.latent, self.uncertainty, self.samples = latent, uncertainty, samples
        self.extras: dict[str, Tensor] = {} if extras is None else extras
        self.belief = belief
        self.reward, self.cont = reward, cont

    @property
    def obs(self) -> Tensor:
        if callable(self._obs):
            with torch.set_grad_enabled(self._grad):
                self._obs = self._obs()
        return self._obs

    @property
    def horizon(self) -> int:
        return int(self.latent.shape[1])

    def __repr__(self) -> str:
        obs = "<not decoded>" if callable(self._obs) else tuple(self._obs.shape)
        heads = "".join(f", {k}=yes" for k in ("reward", "cont") if getattr(self, k) is not None)
        return (f"Imagination(obs={obs}, latent={tuple(self.latent.shape)}, "
                f"extras={sorted(self.extras)}, belief={'yes' if self.belief is not None else 'no'}{heads})")


@dataclass
class LossOutput:
    """Result of :meth:`WorldModel.loss`.

    Attributes:
        loss: scalar to minimise (the negative ELBO per time step, with training weights such
            as the KL annealing factor ``beta`` applied).
        metrics: named floats for logging; ``"elbo"`` is the unweighted ELBO per time step.
    """

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class WorldModel(Protocol):
    """The protocol of DESIGN §3. Implementations subclass ``torch.nn.Module`` too.

    ``imagine`` takes candidate actions ``[N, H, A]``; the belief's batch must be 1 (it is
    shared by all N candidates) or N.
    """

    def loss(self, batch: Batch, beta: float = 1.0) -> LossOutput: ...

    def observe(self, obs: Tensor, action: Tensor, mask: Tensor | None = None) -> Belief: ...

    def imagine(self, belief: Belief, actions: Tensor) -> Imagination: ...

    def predict(self, obs: Tensor, action: Tensor, future_actions: Tensor) -> Imagination: ...

    def impute(self, obs: Tensor, action: Tensor, mask: Tensor) -> Tensor: ...
