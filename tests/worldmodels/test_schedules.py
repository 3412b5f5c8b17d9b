"""schedules.py: learning-rate and KL-weight schedules; free bits (batch mean and per step) against loops."""

from __future__ import annotations

import math

import pytest
import torch

from worldmodels.schedules import free_bits_kl, kl_beta, learning_rate
from worldmodels.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_schedules():
    cfg = TrainConfig(lr=1.0, lr_schedule="linear", lr_final=0.0, lr_decay_steps=4)
    assert [learning_rate(cfg, s, 0) for s in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    cfg = TrainConfig(lr=0.007, lr_schedule="step", decay_rate=0.85, decay_every=20)  # KVAE
    assert learning_rate(cfg, 0, 19) == 0.007 and abs(learning_rate(cfg, 0, 45) - 0.007 * 0.85**2) < 1e-15
    assert [round(kl_beta(s, 0.0, 10), 9) for s in (0, 5, 10, 20)] == [0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="did you mean 'linear'"):
        TrainConfig(lr_schedule="linar")
    with pytest.raises(ValueError, match="linear schedule needs lr_decay_steps"):
        learning_rate(TrainConfig(lr_schedule="linear"), 0, 0)


def test_free_bits_against_loop_and_gradient_is_zero_below_threshold():
    g = torch.Generator().manual_seed(0)
    kl = (
        torch.rand(3, 4, 5, generator=g, dtype=torch.float64) * torch.tensor([0.1, 0.2, 1.0, 2.0, 3.0])
    ).requires_grad_()
    mask = torch.rand(3, 4, generator=g) > 0.3
    lam = 0.5
    ref = 0.0
    for j in range(5):
        vals = [float(kl[b, t, j]) for b in range(3) for t in range(4) if mask[b, t]]
        ref += max(lam, sum(vals) / len(vals))
    out = free_bits_kl(kl, lam, mask)
    assert math.isclose(float(out), ref, rel_tol=1e-12)
    out.backward()
    means = [(kl[..., j][mask]).mean() for j in range(5)]
    for j in range(5):
        expect_zero = float(means[j]) < lam
        assert bool((kl.grad[..., j] == 0).all()) == expect_zero
    assert math.isclose(
        float(free_bits_kl(kl.detach(), 0.0)), float(kl.detach().mean((0, 1)).sum()), rel_tol=1e-12
    )


def test_free_nats_per_step_against_loop_and_gradient_is_zero_below_threshold():
    g = torch.Generator().manual_seed(1)
    kl = (torch.rand(3, 4, 2, generator=g, dtype=torch.float64) * 2.0).requires_grad_()  # [B, T, K]
    mask = torch.rand(3, 4, generator=g) > 0.3
    lam = 1.0
    steps = [(b, t) for b in range(3) for t in range(4) if mask[b, t]]
    ref = sum(max(lam, float(kl[b, t, j])) for b, t in steps for j in range(2)) / len(steps)
    out = free_bits_kl(kl, lam, mask, per_step=True)
    assert math.isclose(float(out), ref, rel_tol=1e-12)
    out.backward()
    expect = torch.where(mask.unsqueeze(-1) & (kl.detach() > lam), 1.0 / len(steps), 0.0)
    torch.testing.assert_close(kl.grad, expect.double())
    no_mask = sum(max(lam, float(v)) for v in kl.detach().flatten()) / 12
    assert math.isclose(float(free_bits_kl(kl.detach(), lam, per_step=True)), no_mask, rel_tol=1e-12)


@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (16, 50), (3, 288)])
def test_per_step_on_one_group_is_the_rssm_formula_bit_for_bit(shape):
    """RSSM's free nats were ``kl.clamp_min(free_nats).mean()``: the shared function gives the same bits."""
    kl = (torch.rand(*shape) * 6).requires_grad_()
    a, b = kl.clamp_min(3.0).mean(), free_bits_kl(kl, 3.0, per_step=True)
    assert a.shape == b.shape and torch.equal(a, b)
    assert torch.equal(torch.autograd.grad(a, kl)[0], torch.autograd.grad(b, kl)[0])


def test_free_bits_names_bad_shapes():
    with pytest.raises(ValueError, match=r"expected kl \[B, T\] or \[B, T, K\], received \(3,\)"):
        free_bits_kl(torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match=r"expected mask \[B, T\] = \(2, 3\), received \(3, 2\)"):
        free_bits_kl(torch.zeros(2, 3), 1.0, torch.ones(3, 2, dtype=torch.bool))
