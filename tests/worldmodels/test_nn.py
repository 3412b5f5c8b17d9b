"""nn.py layers against brute force / torch.distributions in float64."""

from __future__ import annotations

import pytest
import torch
from torch import distributions as D

from worldmodels.nn import (
    ActionEmbedding,
    ConvDecoder,
    ConvEncoder,
    Emission,
    GaussianHead,
    bernoulli_log_prob,
    discretized_gaussian_log_prob,
    gaussian_log_prob,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("size,layers", [(8, 1), (16, 2), (32, 3), (64, 4)])
def test_conv_stacks_shapes_and_depth(size, layers):
    enc = ConvEncoder((3, size, size), 7, channels=4)
    dec = ConvDecoder(7, (3, size, size), channels=4)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in enc.modules()) == layers  # KVAE: 3 at 32 px
    assert sum(isinstance(m, torch.nn.PixelShuffle) for m in dec.modules()) == layers
    x = torch.rand(2, 3, 3, size, size)
    z = enc(x)
    assert z.shape == (2, 3, 7)
    assert dec(z).shape == (2, 3, 3, size, size)
    # leading dims are only flattened: per-item results equal a batch-of-one call
    torch.testing.assert_close(enc(x[1, 2]), z[1, 2])


def test_channels_last_gives_same_numbers():
    torch.manual_seed(0)
    a = ConvEncoder((1, 32, 32), 5, channels=8, channels_last=True)
    b = ConvEncoder((1, 32, 32), 5, channels=8, channels_last=False)
    b.load_state_dict(a.state_dict())
    x = torch.rand(4, 1, 32, 32)
    torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=1e-5)
    c = ConvDecoder(5, (1, 32, 32), channels=8, channels_last=True)
    d = ConvDecoder(5, (1, 32, 32), channels=8, channels_last=False)
    d.load_state_dict(c.state_dict())
    h = torch.randn(4, 5)
    torch.testing.assert_close(c(h), d(h), atol=1e-5, rtol=1e-5)


def test_bad_image_shapes_are_named():
    with pytest.raises(ValueError, match=r"S in \(8, 16, 32, 64\), received \(1, 24, 24\)"):
        ConvEncoder((1, 24, 24), 4)
    enc = ConvEncoder((1, 16, 16), 4)
    with pytest.raises(ValueError, match=r"received \(2, 1, 32, 32\)"):
        enc(torch.zeros(2, 1, 32, 32))


def test_log_probs_match_torch_distributions_float64():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    x = torch.randint(0, 2, (3, 4, 5), generator=g).double()
    ref = D.Independent(D.Bernoulli(logits=logits), 1).log_prob(x)
    torch.testing.assert_close(bernoulli_log_prob(logits, x, 1), ref)
    mean, std = torch.randn(3, 4, 5, dtype=torch.float64), torch.rand(3, 4, 5, dtype=torch.float64) + 0.1
    y = torch.randn(3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(
        gaussian_log_prob(mean, std, y, 2), D.Normal(mean, std).log_prob(y).sum((-1, -2))
    )


def test_discretized_gaussian_is_a_distribution_over_256_bins():
    bins = torch.arange(256, dtype=torch.float64) / 255  # every possible pixel value
    for mean, std in [(0.3, 0.05), (0.0, 0.2), (1.2, 0.1), (0.5, 1e-3)]:
        m = torch.full((256,), mean, dtype=torch.float64)
        s = torch.full((256,), std, dtype=torch.float64)
        p = discretized_gaussian_log_prob(m, s, bins, 0).exp()
        assert abs(float(p.sum()) - 1.0) < 1e-6, (mean, std, float(p.sum()))
        # brute force for an interior bin: the Gaussian mass of [x - 0.5/255, x + 0.5/255]
        k = 100
        N = D.Normal(torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64))
        ref = N.cdf(bins[k] + 0.5 / 255) - N.cdf(bins[k] - 0.5 / 255)
        if ref > 1e-5:
            assert abs(float(p[k]) - float(ref)) < 1e-9


@torch.no_grad()
def test_emission_kinds_and_variance_floor():
    torch.manual_seed(0)
    h = torch.randn(2, 3, 6) * 50  # large inputs push the std towards its floor
    for kind in ("bernoulli", "gaussian", "discretized"):
        d = Emission(6, (1, 16, 16), kind=kind, channels=4, min_std=0.05)(h)
        assert d.mean.shape == (2, 3, 1, 16, 16) and 0 <= float(d.mean.min()) and float(d.mean.max()) <= 1
        assert d.log_prob(torch.rand(2, 3, 1, 16, 16).round()).shape == (2, 3)
        if kind != "bernoulli":
            assert float(d.scale.min()) >= 0.05
    v = Emission(6, (4,), kind="gaussian", hidden=(8,), min_std=0.1)(h)
    assert v.mean.shape == (2, 3, 4) and float(v.scale.min()) >= 0.1
    mean, std = GaussianHead(6, 2, hidden=(8,), min_std=0.2)(h)
    assert mean.shape == (2, 3, 2) and float(std.min()) >= 0.2


def test_action_embedding_is_an_embedding_table_on_one_hot_inputs():
    emb = ActionEmbedding(5, 3)
    table = torch.nn.Embedding(5, 3)
    with torch.no_grad():
        table.weight.copy_(emb.linear.weight.T + emb.linear.bias)
    ids = torch.tensor([[0, 4, 2]])
    torch.testing.assert_close(emb(torch.nn.functional.one_hot(ids, 5).float()), table(ids))
    with pytest.raises(ValueError, match=r"expected \[\.\.\., 5\], received \(1, 4\)"):
        emb(torch.zeros(1, 4))
