"""GTM-SM's state transitions ``p(s_t | s_{t-1}, a_t) = N(μ_t, r² I)`` (thesis §7.3-§7.4), one class per kind.

The state ``s_t`` (position, optionally heading ``s³``) moves by a displacement ``d_t`` computed from the one-hot
action ``a_t`` through the learned matrix ``M [S, A]`` and the prior knowledge of the agent's physics:

========================  ==========================================================================  ===========
``config.transition``     mean ``μ_t`` of ``p(s_t | s_{t-1}, a_t)``                                   thesis
========================  ==========================================================================  ===========
``"linear"``              ``s_{t-1} + M a_t``                                                         §7.4.1
``"wall"``                ``s_{t-1} + M a_t · σ_d(s_{t-1} + M a_t)``                                  eq. (7.3)
``"rotation"``            ``s_{t-1} + R(s³_{t-1}) M a_t``  (``state_dim = 3``)                        eq. (7.4)
``"momentum"``            ``d_t = c_s ⊙ tanh(σ(c_f) ⊙ d_{t-1} + M a_t)``, ``s_{t-1} + R(s³_{t-1}) d_t``  §7.4.2.2
========================  ==========================================================================  ===========

Every kind answers the same two calls: :meth:`Transition.step` (one step of the mean, ``[N, S]``) and
:meth:`Transition.rollout` (a whole window ``[B, T, S]`` with restarts at episode starts and the noise
``ε_t ~ N(0, r² I)`` added after each step); the linear kind rolls out as one cumulative sum, the wall and
momentum kinds as the fused numba scans of :mod:`worldmodels.models.gtmsm_scan` on CPU. :data:`TRANSITIONS` maps the config
name to the class; :class:`worldmodels.models.gtmsm.GTMSM` picks one once, in its constructor.

A transition holds references to its parameter tensors; GTM-SM registers them on itself under the names of
:meth:`Transition.named_parts` (``M``, ``gate.*``, ``c_f``, ``c_s``), so its ``state_dict`` keys do not mention
the transition. Code that replaces a parameter *object* of the model (``load_state_dict(..., assign=True)``,
``torch.func.functional_call``) must build the model anew; in-place changes (``copy_``, ``.to``, ``.double``,
``load_state_dict``) are seen by the transition.

Example:
    >>> import torch
    >>> M = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # [S, A]
    >>> a = torch.eye(2)[[0, 0, 1]].unsqueeze(0)  # [1, T, A]
    >>> LinearTransition(M).rollout(a, None, torch.zeros(1, 2), torch.zeros(1, 2), None)[0].tolist()
    [[[1.0, 0.0], [2.0, 0.0], [2.0, 1.0]]]
    >>> rot = RotationTransition(torch.tensor([[1.0], [0.0], [1.5707964]]))  # forward and turn left
    >>> s, d = rot.rollout(torch.ones(1, 2, 1), None, torch.zeros(1, 3), torch.zeros(1, 3), None)
    >>> [round(v, 4) for v in s[0, 1].tolist()]  # the second step goes along the new heading (+y)
    [1.0, 1.0, 3.1416]
"""

from __future__ import annotations

import abc
from typing import ClassVar, Protocol

import torch
from torch import Tensor, nn

from worldmodels.models.gtmsm_scan import momentum_scan, scan_available, wall_scan

__all__ = ["TransitionConfig", "Transition", "LinearTransition", "WallTransition", "RotationTransition",
           "MomentumTransition", "TRANSITIONS", "rotate", "wrap_heading", "cumsum_restart"]


class TransitionConfig(Protocol):
    """The fields of :class:`worldmodels.models.gtmsm.GTMSMConfig` that the transitions read."""

    state_dim: int
    action_dim: int
    m_init_scale: float
    gate_act: str
    gate_bias: float
    wall_gate_from: int


def rotate(v: Tensor, theta: Tensor) -> Tensor:
    """``R(θ) v`` of eq. (7.4): rotate the first two components of ``v [..., 3]`` by ``θ [...]``.

    Example:
        >>> [round(x, 6) for x in rotate(torch.tensor([1.0, 0.0, 0.3]), torch.tensor(torch.pi / 2)).tolist()]
        [-0.0, 1.0, 0.3]
    """
    c, s = torch.cos(theta), torch.sin(theta)
    x = c * v[..., 0] - s * v[..., 1]
    y = s * v[..., 0] + c * v[..., 1]
    return torch.stack([x, y, v[..., 2]], dim=-1)


def wrap_heading(v: Tensor) -> Tensor:
    """Wrap the heading component of 3-D state differences ``[..., 3]`` to ``(-π, π]`` (2-D: unchanged).

    Example:
        >>> [round(x, 4) for x in wrap_heading(torch.tensor([1.0, 2.0, 1.5 * torch.pi])).tolist()]
        [1.0, 2.0, -1.5708]
    """
    if v.shape[-1] != 3:
        return v
    return torch.cat([v[..., :2], torch.atan2(torch.sin(v[..., 2:]), torch.cos(v[..., 2:]))], -1)


def cumsum_restart(s0: Tensor, inc: Tensor, is_first: Tensor | None) -> Tensor:
    """``s_t = s_{t-1} + inc_t`` from ``s0 [B, S]``, with ``s_{t-1} = 0`` where ``is_first [B, T]``: ``[B, T, S]``.

    Example:
        >>> inc = torch.ones(1, 4, 1)
        >>> cumsum_restart(torch.full((1, 1), 5.0), inc, torch.tensor([[False, False, True, False]])).flatten().tolist()
        [6.0, 7.0, 1.0, 2.0]
    """
    c = torch.cumsum(inc, dim=1)  # [B, T, S]
    if is_first is None:
        return s0.unsqueeze(1) + c
    B, T = is_first.shape
    c0 = torch.cat([c.new_zeros(B, 1, c.shape[-1]), c], 1)  # c0[:, j] = Σ_{i<j} inc_i
    t = torch.arange(T, device=inc.device).expand(B, T)
    start = torch.where(is_first, t, torch.zeros_like(t)).cummax(1).values  # latest restart <= t (0: none)
    restarted = torch.cumsum(is_first.long(), 1) > 0
    base = c0.gather(1, start.unsqueeze(-1).expand(B, T, c.shape[-1]))  # Σ_{i<start} inc_i
    return c - base + torch.where(restarted.unsqueeze(-1), torch.zeros_like(c), s0.unsqueeze(1).expand_as(c))


def _init_M(c: TransitionConfig) -> nn.Parameter:
    """``M ~ N(0, m_init_scale²)``, ``[S, A]``: maps one-hot actions to displacements (agent frame for 3-D states)."""
    return nn.Parameter(c.m_init_scale * torch.randn(c.state_dim, c.action_dim))


def _as_parameter(t: Tensor) -> nn.Parameter:
    """``t`` as the :class:`torch.nn.Parameter` it is (a transition built from plain tensors has nothing to register)."""
    if not isinstance(t, nn.Parameter):
        raise TypeError(f"Transition.named_parts: expected an nn.Parameter, received {type(t).__name__}")
    return t


def _scan_inputs(action: Tensor, is_first: Tensor | None, s0: Tensor, eps: Tensor | None) -> tuple[Tensor, Tensor]:
    """The restart flags ``[B, T]`` and state noise ``[B, T, S]`` a fused scan takes (no restarts / zero noise
    where not given)."""
    B, T, S = action.shape[0], action.shape[1], s0.shape[-1]
    first = torch.zeros(B, T, dtype=torch.bool) if is_first is None else is_first
    return first, torch.zeros(B, T, S, dtype=action.dtype) if eps is None else eps


class Transition(abc.ABC):
    """Mean of ``p(s_t | s_{t-1}, a_t)`` and the displacement ``d_t`` for one kind of agent physics.

    Subclasses implement :meth:`step`; :meth:`rollout` is the step-by-step loop unless a subclass has a
    faster exact form.

    Attributes:
        name: the ``config.transition`` value.
        needs_heading: the kind rotates by the heading ``s³`` (``state_dim = 3``).
        M: ``[S, A]`` action matrix.
    """

    name: ClassVar[str]
    needs_heading: ClassVar[bool] = False

    def __init__(self, M: Tensor) -> None:
        self.M = M

    @classmethod
    def from_config(cls, c: TransitionConfig) -> Transition:
        """Fresh parameters for ``c`` (drawn in the order GTM-SM has always drawn them: ``M``, then the rest)."""
        return cls(_init_M(c))

    def named_parts(self) -> dict[str, nn.Parameter | nn.Module]:
        """The parameters and modules to register on the owning model, by attribute name (its state_dict keys)."""
        return {"M": _as_parameter(self.M)}

    def gate_on(self, training: bool, updates: Tensor) -> bool:
        """Whether a learned gate scales the move at this point of training (σ_d of eq. 7.3; False here)."""
        return False

    def in_force(self, training: bool, updates: Tensor) -> Transition:
        """The transition used at this point of training: itself (the wall kind starts linear)."""
        return self

    @abc.abstractmethod
    def step(self, s: Tensor, d: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """Mean of ``p(s_t | s_{t-1}, a_t)`` and ``d_t``: ``s = s_{t-1}``, ``d = d_{t-1}`` ``[N, S]``, ``a`` ``[N, A]``."""

    def rollout(
        self, action: Tensor, is_first: Tensor | None, s0: Tensor, d0: Tensor, eps: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """States and displacements over a window (ancestral sampling of ``p*(s_t)`` of §7.3.3, or its mean path).

        Args:
            action: ``[B, T, A]``; ``action[:, t]`` leads to ``s_t``.
            is_first: ``[B, T]`` bool or None: ``s_{t-1}`` and ``d_{t-1}`` restart at 0 there.
            s0, d0: ``[B, S]`` state and displacement before the first step.
            eps: ``[B, T, S]`` transition noise ``ε_t`` added after each step, or None (the mean path).

        Returns:
            ``s [B, T, S]`` and ``d [B, T, S]``.
        """
        s, d = s0, d0
        ss, ds = [], []
        for t in range(action.shape[1]):
            if is_first is not None:
                first_t = is_first[:, t].unsqueeze(-1)
                s = torch.where(first_t, torch.zeros_like(s), s)
                d = torch.where(first_t, torch.zeros_like(d), d)
            s, d = self.step(s, d, action[:, t])
            if eps is not None:
                s = s + eps[:, t]
            ss.append(s)
            ds.append(d)
        return torch.stack(ss, 1), torch.stack(ds, 1)


class LinearTransition(Transition):
    """``s_t = s_{t-1} + M a_t + ε_t`` (§7.4.1): a cumulative sum that restarts at episode starts.

    Example:
        >>> tr = LinearTransition(torch.tensor([[2.0, 0.0]]))  # S = 1, A = 2
        >>> tr.step(torch.ones(1, 1), torch.zeros(1, 1), torch.tensor([[1.0, 0.0]]))
        (tensor([[3.]]), tensor([[2.]]))
    """

    name = "linear"

    def step(self, s: Tensor, d: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        Ma = a @ self.M.T  # [N, S]
        return s + Ma, Ma

    def rollout(
        self, action: Tensor, is_first: Tensor | None, s0: Tensor, d0: Tensor, eps: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        disp = action @ self.M.T  # [B, T, S]
        return cumsum_restart(s0, disp if eps is None else disp + eps, is_first), disp


class WallTransition(Transition):
    """``s_t = s_{t-1} + M a_t · σ_d(s_{t-1} + M a_t) + ε_t``, eq. (7.3): a learned gate stops moves into walls.

    ``σ_d`` is ``sigmoid(gate(·))`` with ``gate = Linear(S, 64) → act → Linear(64, 1)``. For the first
    ``gate_from`` training updates the gate is held open (``σ_d ≡ 1``: :meth:`in_force` is the linear
    transition with the same ``M``).

    Args:
        M: ``[S, A]``; gate: the network before the sigmoid; gate_act: ``"tanh"`` or ``"relu"`` (its
            activation, for the fused scan); gate_from: curriculum length in training updates.

    Example:
        >>> gate = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
        >>> tr = WallTransition(torch.eye(2), gate, "tanh", gate_from=10)
        >>> tr.gate_on(True, torch.tensor(3)), type(tr.in_force(True, torch.tensor(3))).__name__, tr.gate_on(False, torch.tensor(3))
        (False, 'LinearTransition', True)
    """

    name = "wall"

    def __init__(self, M: Tensor, gate: nn.Sequential, gate_act: str = "tanh", gate_from: int = 0) -> None:
        super().__init__(M)
        if gate_act not in ("tanh", "relu"):
            raise ValueError(f"WallTransition: expected gate_act 'tanh' or 'relu', received {gate_act!r}")
        self.gate, self.gate_act, self.gate_from = gate, gate_act, gate_from
        self.open = LinearTransition(M)  # σ_d ≡ 1 during the curriculum

    @classmethod
    def from_config(cls, c: TransitionConfig) -> Transition:
        M = _init_M(c)
        act = nn.ReLU() if c.gate_act == "relu" else nn.Tanh()
        gate = nn.Sequential(nn.Linear(c.state_dim, 64), act, nn.Linear(64, 1))  # σ_d, eq. (7.3)
        last: nn.Linear = gate[-1]  # type: ignore[assignment]
        nn.init.constant_(last.bias, c.gate_bias)  # 3: starts open (≈ linear transition)
        return cls(M, gate, c.gate_act, c.wall_gate_from)

    def named_parts(self) -> dict[str, nn.Parameter | nn.Module]:
        return {**super().named_parts(), "gate": self.gate}

    def gate_on(self, training: bool, updates: Tensor) -> bool:
        return not training or int(updates) >= self.gate_from

    def in_force(self, training: bool, updates: Tensor) -> Transition:
        return self if self.gate_on(training, updates) else self.open

    def step(self, s: Tensor, d: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        Ma = a @ self.M.T  # [N, S]
        disp = Ma * torch.sigmoid(self.gate(s + Ma))  # eq. (7.3)
        return s + disp, disp

    def rollout(
        self, action: Tensor, is_first: Tensor | None, s0: Tensor, d0: Tensor, eps: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        if not scan_available(action):  # other devices, or inside gtmsm_scan.step_by_step()
            return super().rollout(action, is_first, s0, d0, eps)
        first, eps = _scan_inputs(action, is_first, s0, eps)
        return wall_scan(action @ self.M.T, eps, first, s0, self.gate, self.gate_act)  # one fused scan (gtmsm_scan)


class RotationTransition(Transition):
    """``s_t = s_{t-1} + R(s³_{t-1}) M a_t + ε_t``, eq. (7.4): ``M a_t`` is a move in the agent's frame
    (forward, sideways, turn) rotated by the heading ``s³``; ``d_t = M a_t``.

    Example:
        >>> tr = RotationTransition(torch.tensor([[1.0], [0.0], [0.0]]))
        >>> s, d = tr.step(torch.tensor([[0.0, 0.0, torch.pi / 2]]), torch.zeros(1, 3), torch.ones(1, 1))
        >>> [round(v, 4) + 0.0 for v in s[0].tolist()], d.tolist()  # + 0.0: no -0.0
        ([0.0, 1.0, 1.5708], [[1.0, 0.0, 0.0]])
    """

    name = "rotation"
    needs_heading = True

    def step(self, s: Tensor, d: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        Ma = a @ self.M.T  # [N, S]
        return s + rotate(Ma, s[..., 2]), Ma  # eq. (7.4)


class MomentumTransition(Transition):
    """Momentum, friction and saturation (§7.4.2.2): ``d_t = c_s ⊙ tanh(σ(c_f) ⊙ d_{t-1} + M a_t)``,
    ``s_t = s_{t-1} + R(s³_{t-1}) d_t + ε_t``; a window rolls out as the fused scan of
    :func:`worldmodels.models.gtmsm_scan.momentum_scan` on CPU.

    Args:
        M: ``[S, A]``; c_f: ``[S]`` friction logits (``σ(c_f)`` of the last move is kept); c_s: ``[S]`` saturation
            scales.

    Example:
        >>> tr = MomentumTransition(torch.tensor([[1.0], [0.0], [0.0]]), torch.zeros(3), torch.ones(3))
        >>> s, d = tr.rollout(torch.ones(1, 3, 1), None, torch.zeros(1, 3), torch.zeros(1, 3), None)
        >>> [round(v, 3) for v in d[0, :, 0].tolist()]  # speeds up towards the saturation c_s = 1
        [0.762, 0.881, 0.894]
    """

    name = "momentum"
    needs_heading = True

    def __init__(self, M: Tensor, c_f: Tensor, c_s: Tensor) -> None:
        super().__init__(M)
        self.c_f, self.c_s = c_f, c_s

    @classmethod
    def from_config(cls, c: TransitionConfig) -> Transition:
        M = _init_M(c)
        return cls(M, nn.Parameter(torch.zeros(c.state_dim)), nn.Parameter(torch.ones(c.state_dim)))

    def named_parts(self) -> dict[str, nn.Parameter | nn.Module]:
        return {**super().named_parts(), "c_f": _as_parameter(self.c_f), "c_s": _as_parameter(self.c_s)}

    def step(self, s: Tensor, d: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        Ma = a @ self.M.T  # [N, S]
        d_new = self.c_s * torch.tanh(torch.sigmoid(self.c_f) * d + Ma)  # momentum, friction, saturation
        return s + rotate(d_new, s[..., 2]), d_new

    def rollout(
        self, action: Tensor, is_first: Tensor | None, s0: Tensor, d0: Tensor, eps: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        if not scan_available(action):  # other devices, or inside gtmsm_scan.step_by_step()
            return super().rollout(action, is_first, s0, d0, eps)
        first, eps = _scan_inputs(action, is_first, s0, eps)
        f = torch.sigmoid(self.c_f)  # [S]
        return momentum_scan(action @ self.M.T, eps, first, s0, d0, f, self.c_s)  # one fused scan (gtmsm_scan)


#: ``config.transition`` -> class.
TRANSITIONS: dict[str, type[Transition]] = {
    cls.name: cls for cls in (LinearTransition, WallTransition, RotationTransition, MomentumTransition)
}
