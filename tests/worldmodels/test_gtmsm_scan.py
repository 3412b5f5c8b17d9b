"""The fused wall-transition (eq. 7.3) and momentum-transition (§7.4.2.2) scans against the step-by-step autograd
loops, and the restarting cumulative sum of the linear transition against its recurrence."""

from __future__ import annotations

import contextlib

import pytest
import torch

from worldmodels.api import Batch
from worldmodels.models import build_model
from worldmodels.models.gtmsm import cumsum_restart
from worldmodels.models.gtmsm_scan import _MomentumScan, _WallScan, momentum_scan, step_by_step


def _imagenav_batch(B: int = 4, T: int = 40) -> Batch:
    """Random ImageNav-shaped frames and one-hot actions, one episode per row."""
    first = torch.zeros(B, T, dtype=torch.bool)
    first[:, 0] = True
    return Batch(obs=torch.rand(B, T, 3, 8, 8), action=torch.eye(5)[torch.randint(0, 5, (B, T))], is_first=first)


def _gate_model(act: str):  # noqa: ANN202
    torch.manual_seed(0)
    m = build_model("gtmsm", "imagenav", gate_act=act, hidden=16).double()
    m.updates.fill_(10**6)  # gate on
    with torch.no_grad():  # an unsaturated gate: σ_d between ~0.1 and ~0.9, many ReLUs active
        m.gate[0].weight.normal_(0, 1.0)
        m.gate[0].bias.normal_(0, 0.5)
        m.gate[2].weight.normal_(0, 0.3)
        m.gate[2].bias.fill_(0.5)
    return m


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_fused_scan_equals_step_by_step_loop_float64(act: str) -> None:
    m = _gate_model(act)
    B, T = 4, 40
    g = torch.Generator().manual_seed(1)
    a = torch.eye(5, dtype=torch.float64)[torch.randint(0, 5, (B, T), generator=g)]
    first = torch.rand(B, T, generator=g) < 0.1
    first[0, 0] = True
    s0 = torch.randn(B, 2, dtype=torch.float64, generator=g).requires_grad_()
    outs = []
    for fused in (True, False):
        torch.manual_seed(3)
        with contextlib.nullcontext() if fused else step_by_step():
            outs.append(m.rollout_states(a, first, s0=s0, noise=True))
    (s_f, d_f), (s_r, d_r) = outs
    torch.testing.assert_close(s_f, s_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d_f, d_r, rtol=1e-12, atol=1e-12)
    gate = torch.sigmoid(m.gate(s_r - d_r)).detach()  # sanity: the test exercises the gate's non-linearity
    assert 0.05 < float(gate.min()) and float(gate.max()) < 0.95 and float(gate.std()) > 0.05
    w, v = torch.randn_like(s_f), torch.randn_like(d_f)
    params = [m.M, s0, *m.gate.parameters()]
    g_f = torch.autograd.grad((s_f * w).sum() + (d_f * v).sum(), params)
    g_r = torch.autograd.grad((s_r * w).sum() + (d_r * v).sum(), params)
    for x, y in zip(g_f, g_r):
        assert float(y.abs().max()) > 1e-3  # every parameter gets a real gradient
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_fused_scan_gradcheck(act: str) -> None:
    m = _gate_model(act)
    B, T = 2, 7
    ma = (torch.eye(5, dtype=torch.float64)[torch.randint(0, 5, (B, T))] @ m.M.T).detach().requires_grad_()
    eps = 1e-3 * torch.randn(B, T, 2, dtype=torch.float64)
    first = torch.tensor([[False, False, True, False, False, False, False], [True] + [False] * 6])
    s0 = torch.randn(B, 2, dtype=torch.float64, requires_grad=True)
    w1, b1 = m.gate[0].weight.detach().requires_grad_(), m.gate[0].bias.detach().requires_grad_()
    w2 = m.gate[2].weight.detach().reshape(-1).requires_grad_()
    b2 = m.gate[2].bias.detach().reshape(()).requires_grad_()
    fn = lambda *x: _WallScan.apply(x[0], eps, first, *x[1:], act == "tanh")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (ma, s0, w1, b1, w2, b2))


def test_training_loss_and_gradients_match_in_float32() -> None:
    """The ImageNav update of the preset (B 4, T 40, gate on) gives the same loss and gradients either way."""
    torch.manual_seed(0)
    m = build_model("gtmsm", "imagenav", tau=30, wall_gate_from=0)
    batch = _imagenav_batch()
    grads = []
    for fused in (True, False):
        m.zero_grad()
        torch.manual_seed(5)
        with contextlib.nullcontext() if fused else step_by_step():
            loss = m.loss(batch).loss
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in m.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    for x, y in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-5)


def test_cumsum_restart_equals_the_recurrence_float64() -> None:
    torch.manual_seed(0)
    inc = torch.randn(3, 25, 2, dtype=torch.float64)
    first = torch.rand(3, 25) < 0.15
    first[2] = False
    s0 = torch.randn(3, 2, dtype=torch.float64)
    s, ref = s0.clone(), []
    for t in range(25):
        s = torch.where(first[:, t, None], torch.zeros_like(s), s) + inc[:, t]
        ref.append(s)
    torch.testing.assert_close(cumsum_restart(s0, inc, first), torch.stack(ref, 1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cumsum_restart(s0, inc, None), s0[:, None] + inc.cumsum(1))


def test_bfloat16_vae_matches_float32_and_keeps_the_rest_in_float32() -> None:
    """``vae_precision="bfloat16"``: the loss within 2% and the gradient direction (cosine > 0.99) of the
    float32 model with the same weights; outputs of encode/decode are float32."""
    torch.manual_seed(0)
    m32 = build_model("gtmsm", "imagenav", tau=30, wall_gate_from=0)
    m16 = build_model("gtmsm", "imagenav", tau=30, wall_gate_from=0, vae_precision="bfloat16")
    m16.load_state_dict(m32.state_dict())
    batch = _imagenav_batch()
    out = []
    for m in (m32, m16):
        torch.manual_seed(5)
        loss = m.loss(batch).loss
        loss.backward()
        out.append((loss.item(), torch.cat([p.grad.flatten() for p in m.parameters()])))
    (l32, g32), (l16, g16) = out
    assert l16 == pytest.approx(l32, rel=0.02)
    assert float(torch.nn.functional.cosine_similarity(g32, g16, dim=0)) > 0.99
    mu, std = m16.encode(batch.obs)
    assert mu.dtype == std.dtype == m16.decode(mu).dtype == torch.float32
    with pytest.raises(ValueError, match="vae_precision"):
        build_model("gtmsm", "imagenav", vae_precision="float16")


def _momentum_model():  # noqa: ANN202
    """The walking preset (small VAE) in float64 with friction, saturation and M away from their initial values."""
    torch.manual_seed(0)
    m = build_model("gtmsm", "miniworld_walk", hidden=16, z_dim=4, tau=12).double()
    with torch.no_grad():
        m.M.copy_(torch.tensor([[0.0, 0.1, 0.9], [0.05, -0.05, 0.2], [0.4, -0.5, 0.1]]))  # turns of ~0.5 rad
        m.c_f.copy_(torch.tensor([0.5, -1.0, 1.5]))
        m.c_s.copy_(torch.tensor([0.8, 1.2, 0.6]))
    return m


@pytest.mark.parametrize("noise,restarts", [(True, True), (False, False)])
def test_momentum_scan_equals_step_by_step_loop_float64(noise: bool, restarts: bool) -> None:
    """Values and gradients (M, c_f, c_s, s0, d0) of the fused scan and the loop, with episode restarts inside the
    window and the noisy training path, or the mean path of observe/imagine."""
    m = _momentum_model()
    B, T = 4, 40
    g = torch.Generator().manual_seed(1)
    a = torch.eye(3, dtype=torch.float64)[torch.randint(0, 3, (B, T), generator=g)]
    first = None
    if restarts:
        first = torch.rand(B, T, generator=g) < 0.1
        first[0, 0] = True
    s0 = torch.randn(B, 3, dtype=torch.float64, generator=g).requires_grad_()
    d0 = torch.randn(B, 3, dtype=torch.float64, generator=g).requires_grad_()
    outs = []
    for fused in (True, False):
        torch.manual_seed(3)
        with contextlib.nullcontext() if fused else step_by_step():
            outs.append(m.rollout_states(a, first, s0=s0, d0=d0, noise=noise))
    (s_f, d_f), (s_r, d_r) = outs
    torch.testing.assert_close(s_f, s_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d_f, d_r, rtol=1e-12, atol=1e-12)
    assert float(s_r[..., 2].detach().abs().max()) > 1.5  # the heading turns far enough for the rotation to matter
    w, v = torch.randn_like(s_f), torch.randn_like(d_f)
    params = [m.M, m.c_f, m.c_s, s0, d0]
    g_f = torch.autograd.grad((s_f * w).sum() + (d_f * v).sum(), params)
    g_r = torch.autograd.grad((s_r * w).sum() + (d_r * v).sum(), params)
    for x, y in zip(g_f, g_r):
        assert float(y.abs().max()) > 1e-3  # every parameter gets a real gradient
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_momentum_scan_gradcheck() -> None:
    torch.manual_seed(0)
    B, T = 2, 7
    ma = (0.8 * torch.randn(B, T, 3, dtype=torch.float64)).requires_grad_()
    eps = 1e-2 * torch.randn(B, T, 3, dtype=torch.float64)
    first = torch.tensor([[False, False, True, False, False, False, False], [True] + [False] * 6])
    s0 = torch.randn(B, 3, dtype=torch.float64, requires_grad=True)
    d0 = torch.randn(B, 3, dtype=torch.float64, requires_grad=True)
    f = torch.tensor([0.3, 0.6, 0.8], dtype=torch.float64, requires_grad=True)
    cs = torch.tensor([0.9, 1.3, 0.7], dtype=torch.float64, requires_grad=True)
    fn = lambda *x: _MomentumScan.apply(x[0], eps, first, *x[1:])  # noqa: E731
    assert torch.autograd.gradcheck(fn, (ma, s0, d0, f, cs))
    with pytest.raises(ValueError, match=r"expected M a \[B, T, 3\], received \(2, 7, 2\)"):
        momentum_scan(ma[..., :2], eps[..., :2], first, s0[:, :2], d0[:, :2], f[:2], cs[:2])


def test_walking_training_loss_and_gradients_match_in_float32() -> None:
    """The walking update (small VAE, B 3, T 20, displacement loss on a pose) is the same either way."""
    torch.manual_seed(0)
    m = build_model("gtmsm", "miniworld_walk", hidden=16, z_dim=4, tau=12, displacement_weight=100.0)
    B, T = 3, 20
    first = torch.zeros(B, T, dtype=torch.bool)
    first[:, 0] = True
    batch = Batch(obs=torch.rand(B, T, 3, 32, 32), action=torch.eye(3)[torch.randint(0, 3, (B, T))], is_first=first,
                  state=torch.cumsum(0.1 * torch.randn(B, T, 3), 1))
    grads = []
    for fused in (True, False):
        m.zero_grad()
        torch.manual_seed(5)
        with contextlib.nullcontext() if fused else step_by_step():
            loss = m.loss(batch).loss
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in m.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    for x, y in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-5)
