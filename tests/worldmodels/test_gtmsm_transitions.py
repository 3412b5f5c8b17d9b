"""GTM-SM's transition family (worldmodels.models.gtmsm_transitions): every kind against its equation written
out as a plain numpy loop (float64, restarts, noise, non-zero start), the wall curriculum, and the parameters the
model registers for each kind (the state_dict keys of the checkpoints)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from worldmodels.models.gtmsm import GTMSM, GTMSMConfig
from worldmodels.models.gtmsm_scan import step_by_step
from worldmodels.models.gtmsm_transitions import (
    TRANSITIONS,
    LinearTransition,
    MomentumTransition,
    RotationTransition,
    Transition,
    WallTransition,
)

pytestmark = pytest.mark.usefixtures("one_thread")

B, T, A = 3, 11, 4


def _config(kind: str, gate_act: str = "tanh", gate_from: int = 0) -> SimpleNamespace:
    S = 3 if TRANSITIONS[kind].needs_heading else 2
    return SimpleNamespace(state_dim=S, action_dim=A, m_init_scale=0.7, gate_act=gate_act, gate_bias=0.5,
                           wall_gate_from=gate_from)


def _transition(kind: str, gate_act: str = "tanh") -> Transition:
    """A transition with float64 parameters away from their initial values (a gate that really gates)."""
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        tr = TRANSITIONS[kind].from_config(_config(kind, gate_act))
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        for part in tr.named_parts().values():
            for q in part.parameters() if isinstance(part, torch.nn.Module) else [part]:
                assert q.dtype == torch.float64
                q.add_(0.4 * torch.randn_like(q))
    return tr


def _inputs(S: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    action = torch.eye(A, dtype=torch.float64)[torch.randint(0, A, (B, T), generator=g)]
    action[:, 0] = 0
    action[0, 5] = 0  # a step without action
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[1, 4] = True
    is_first[2, 0] = True
    s0 = torch.randn(B, S, generator=g, dtype=torch.float64)
    d0 = torch.randn(B, S, generator=g, dtype=torch.float64)
    eps = 0.05 * torch.randn(B, T, S, generator=g, dtype=torch.float64)
    return action, is_first, s0, d0, eps


def _R(theta: float) -> np.ndarray:
    return np.array([[np.cos(theta), -np.sin(theta), 0.0], [np.sin(theta), np.cos(theta), 0.0], [0.0, 0.0, 1.0]])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _oracle(kind: str, tr: Transition, action, is_first, s0, d0, eps) -> tuple[np.ndarray, np.ndarray]:
    """The thesis's equations, one step at a time in numpy: §7.4.1, eq. (7.3), eq. (7.4), §7.4.2.2."""
    M = tr.M.detach().numpy()
    a, first, e = action.numpy(), is_first.numpy(), eps.numpy()
    s_out, d_out = np.zeros(e.shape), np.zeros(e.shape)
    for b in range(B):
        x, d = s0[b].numpy().copy(), d0[b].numpy().copy()
        for t in range(T):
            if first[b, t]:
                x, d = np.zeros_like(x), np.zeros_like(d)
            ma = M @ a[b, t]
            if kind == "linear":  # s_t = s_{t-1} + M a_t + ε_t
                d = ma
                x = x + d
            elif kind == "wall":  # s_t = s_{t-1} + M a_t σ_d(s_{t-1} + M a_t) + ε_t
                assert isinstance(tr, WallTransition)
                W1, b1 = tr.gate[0].weight.detach().numpy(), tr.gate[0].bias.detach().numpy()
                w2, b2 = tr.gate[2].weight.detach().numpy()[0], tr.gate[2].bias.detach().numpy()[0]
                pre = W1 @ (x + ma) + b1
                h = np.tanh(pre) if tr.gate_act == "tanh" else np.maximum(pre, 0.0)
                d = ma * _sigmoid(w2 @ h + b2)
                x = x + d
            elif kind == "rotation":  # s_t = s_{t-1} + R(s³_{t-1}) M a_t + ε_t
                d = ma
                x = x + _R(x[2]) @ d
            else:  # d_t = c_s tanh(σ(c_f) d_{t-1} + M a_t), s_t = s_{t-1} + R(s³_{t-1}) d_t + ε_t
                assert isinstance(tr, MomentumTransition)
                cf, cs = tr.c_f.detach().numpy(), tr.c_s.detach().numpy()
                d = cs * np.tanh(_sigmoid(cf) * d + ma)
                x = x + _R(x[2]) @ d
            x = x + e[b, t]
            s_out[b, t], d_out[b, t] = x, d
    return s_out, d_out


CASES = [("linear", "tanh"), ("wall", "tanh"), ("wall", "relu"), ("rotation", "tanh"), ("momentum", "tanh")]


@pytest.mark.parametrize("kind,gate_act", CASES)
@pytest.mark.parametrize("fused", [True, False])
def test_rollout_follows_the_equation_step_by_step_float64(kind: str, gate_act: str, fused: bool) -> None:
    tr = _transition(kind, gate_act)
    action, is_first, s0, d0, eps = _inputs(tr.M.shape[0])
    s_ref, d_ref = _oracle(kind, tr, action, is_first, s0, d0, eps)
    with contextlib.nullcontext() if fused else step_by_step():  # wall: the numba scan or the autograd loop
        s, d = tr.rollout(action, is_first, s0, d0, eps)
    np.testing.assert_allclose(s.detach().numpy(), s_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(d.detach().numpy(), d_ref, rtol=1e-10, atol=1e-12)
    # without noise and restarts: the mean path from s0
    s_mean, _ = tr.rollout(action, None, s0, d0, None)
    s_ref, _ = _oracle(kind, tr, action, torch.zeros_like(is_first), s0, d0, torch.zeros_like(eps))
    np.testing.assert_allclose(s_mean.detach().numpy(), s_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind,gate_act", CASES)
def test_step_is_one_step_of_the_rollout(kind: str, gate_act: str) -> None:
    tr = _transition(kind, gate_act)
    action, _, s0, d0, _ = _inputs(tr.M.shape[0])
    s, d = tr.rollout(action[:, :2], None, s0, d0, None)
    s1, d1 = tr.step(s0, d0, action[:, 0])
    s2, d2 = tr.step(s1, d1, action[:, 1])
    torch.testing.assert_close(torch.stack([s1, s2], 1), s)
    torch.testing.assert_close(torch.stack([d1, d2], 1), d)


def test_rollout_gradients_reach_every_parameter() -> None:
    for kind in TRANSITIONS:
        tr = _transition(kind)
        action, is_first, s0, d0, eps = _inputs(tr.M.shape[0])
        s, d = tr.rollout(action, is_first, s0, d0, eps)
        (s.square().sum() + d.sum()).backward()
        for name, part in tr.named_parts().items():
            params = list(part.parameters()) if isinstance(part, torch.nn.Module) else [part]
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params), (kind, name)


def test_wall_gate_is_held_open_for_gate_from_training_updates() -> None:
    torch.manual_seed(0)
    tr = WallTransition.from_config(_config("wall", gate_from=5))
    assert isinstance(tr, WallTransition)
    early, late = torch.tensor(4), torch.tensor(5)
    assert not tr.gate_on(True, early) and tr.gate_on(True, late) and tr.gate_on(False, early)
    lin = tr.in_force(True, early)
    assert isinstance(lin, LinearTransition) and lin.M is tr.M  # σ_d ≡ 1 with the same M
    assert tr.in_force(True, late) is tr and tr.in_force(False, early) is tr
    a = torch.eye(A)[torch.randint(0, A, (2, 6))]
    s_lin, _ = lin.rollout(a, None, torch.zeros(2, 2), torch.zeros(2, 2), None)
    torch.testing.assert_close(s_lin, torch.cumsum(a @ tr.M.detach().T, 1))
    for kind in ("linear", "rotation", "momentum"):
        other = TRANSITIONS[kind].from_config(_config(kind))
        assert not other.gate_on(False, late) and other.in_force(True, early) is other


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match=r"gate_act 'tanh' or 'relu', received 'gelu'"):
        WallTransition(torch.zeros(2, A), torch.nn.Sequential(), "gelu")
    with pytest.raises(TypeError, match=r"expected an nn.Parameter, received Tensor"):
        RotationTransition(torch.zeros(3, A)).named_parts()


# ----------------------------------------------------------------------------- inside the model


def test_the_model_picks_one_transition_from_the_config() -> None:
    assert tuple(TRANSITIONS) == ("linear", "wall", "rotation", "momentum")
    for kind, cls in TRANSITIONS.items():
        S = 3 if cls.needs_heading else 2
        m = GTMSM(GTMSMConfig(**{**GTMSMConfig.PRESETS["debug"], "transition": kind, "state_dim": S}))
        assert type(m.transition) is cls and cls.name == kind
        assert m.transition.M is m.M  # the model's parameter, not a copy
        for name, part in m.transition.named_parts().items():
            assert getattr(m, name) is part
    with pytest.raises(ValueError, match=r"needs state_dim=3"):
        GTMSMConfig(transition="momentum", state_dim=2)


VAE = ["encoder.net.0.weight", "encoder.net.0.bias", "encoder.net.2.weight", "encoder.net.2.bias",
       "encoder.net.4.weight", "encoder.net.4.bias", "decoder.net.0.weight", "decoder.net.0.bias",
       "decoder.net.2.weight", "decoder.net.2.bias", "decoder.net.4.weight", "decoder.net.4.bias"]
COMBINER = ["combine_in.0.weight", "combine_in.0.bias", "combine_in.2.weight", "combine_in.2.bias",
            "combine_out.0.weight", "combine_out.0.bias", "combine_out.2.weight", "combine_out.2.bias"]
LANDMARK = ["beta_net.0.weight", "beta_net.0.bias", "beta_net.2.weight", "beta_net.2.bias", "var_net.0.weight",
            "var_net.0.bias", "var_net.2.weight", "var_net.2.bias"]
GATE = ["gate.0.weight", "gate.0.bias", "gate.2.weight", "gate.2.bias"]


@pytest.mark.parametrize("kw,expected", [
    (dict(transition="linear"), ["M", "updates", *VAE]),
    (dict(transition="wall"), ["M", "updates", *VAE, *GATE]),
    (dict(transition="rotation", state_dim=3), ["M", "updates", *VAE]),
    (dict(transition="momentum", state_dim=3), ["M", "c_f", "c_s", "updates", *VAE]),
    (dict(transition="wall", prior="combiner", landmark_inference=True),
     ["M", "beta_prior_logit", "updates", *VAE, *GATE, *COMBINER, *LANDMARK]),
    (dict(transition="momentum", state_dim=3, prior="combiner", landmark_inference=True),
     ["M", "c_f", "c_s", "beta_prior_logit", "updates", *VAE, *COMBINER, *LANDMARK]),
])
def test_state_dict_keys_are_those_of_the_checkpoints(kw: dict, expected: list[str]) -> None:
    """The keys (and their order) of the model before the transitions, priors and landmark network moved out."""
    m = GTMSM(GTMSMConfig(**{**GTMSMConfig.PRESETS["debug"], **kw}))
    assert list(m.state_dict()) == expected


def test_the_transition_follows_the_model_through_dtype_loads_and_copies() -> None:
    torch.manual_seed(0)
    c = GTMSMConfig(**{**GTMSMConfig.PRESETS["debug"], "transition": "momentum", "state_dim": 3})
    m, other = GTMSM(c), GTMSM(c)
    a = torch.eye(5)[torch.randint(0, 5, (2, 7))]
    other.load_state_dict(m.state_dict())
    torch.testing.assert_close(other.rollout_states(a)[0], m.rollout_states(a)[0])
    with torch.no_grad():
        m.c_s.mul_(2.0)  # in place: seen by the transition
    assert not torch.allclose(other.rollout_states(a)[0], m.rollout_states(a)[0])
    twin = copy.deepcopy(m)
    assert twin.transition.M is twin.M and twin.transition.M is not m.M
    with torch.no_grad():
        twin.M.zero_()
    assert twin.rollout_states(a)[0].abs().max() == 0 and m.rollout_states(a)[0].abs().max() > 0
    m.double()
    assert m.transition.M is m.M and m.transition.M.dtype == torch.float64
    assert m.rollout_states(a.double())[0].dtype == torch.float64


def test_a_wall_model_rolls_out_linearly_during_its_curriculum() -> None:
    """Before ``wall_gate_from`` updates a wall model trains on the linear path, after it on eq. (7.3)."""
    c = GTMSMConfig(**{**GTMSMConfig.PRESETS["debug"], "wall_gate_from": 1})
    m = GTMSM(c)
    a = torch.eye(5)[torch.randint(0, 5, (2, 7))]
    linear = dataclasses.replace(c, transition="linear")
    lin = GTMSM(linear)
    lin.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("gate.")})
    torch.testing.assert_close(m.rollout_states(a)[0], lin.rollout_states(a)[0])  # updates = 0 < 1
    m.updates.fill_(1)
    assert not torch.allclose(m.rollout_states(a)[0], lin.rollout_states(a)[0])
