"""The encoders/decoders that KVAE and GTM-SM use (worldmodels.nn): shapes with leading dims, their layers, the
parameter names of the shipped checkpoints, and one behaviour each."""

from __future__ import annotations

import pytest
import torch

from worldmodels.nn import (
    MLP,
    GTMSMConvDecoder,
    GTMSMConvEncoder,
    KVAEConvDecoder,
    KVAEConvEncoder,
    KVAEMLPEncoder,
    MLPDecoder,
    MLPEncoder,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _keys(m: torch.nn.Module) -> list[str]:
    return list(m.state_dict())


def test_mlp_encoder_is_an_mlp_on_the_flattened_frame() -> None:
    torch.manual_seed(0)
    enc = MLPEncoder((3, 8, 8), 6, hidden=(16, 16))
    assert isinstance(enc.net, MLP) and _keys(enc)[::2] == ["net.0.weight", "net.2.weight", "net.4.weight"]
    x = torch.rand(2, 5, 3, 8, 8)
    y = enc(x)
    assert y.shape == (2, 5, 6)
    torch.testing.assert_close(y, enc.net(x.reshape(2, 5, 192)))
    torch.testing.assert_close(enc(x[1, 3]), y[1, 3])  # leading dims are only flattened
    with pytest.raises(ValueError, match=r"MLPEncoder: expected \[\.\.\., 3, 8, 8\], received \(2, 1, 8, 8\)"):
        enc(torch.zeros(2, 1, 8, 8))


def test_mlp_decoder_reshapes_the_mlp_output() -> None:
    dec = MLPDecoder(4, (3, 8, 8), hidden=(16,))
    h = torch.randn(2, 5, 4)
    x = dec(h)
    assert x.shape == (2, 5, 3, 8, 8) and _keys(dec) == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]
    torch.testing.assert_close(x.flatten(-3), dec.net(h))
    with pytest.raises(ValueError, match=r"MLPDecoder: expected \[\.\.\., 4\], received \(2, 3\)"):
        dec(torch.zeros(2, 3))


@pytest.mark.parametrize("obs_shape", [(1, 32, 32), (2, 16, 24)])
def test_kvae_conv_encoder_decoder_shapes_layers_and_bounded_variance(obs_shape) -> None:
    torch.manual_seed(0)
    enc = KVAEConvEncoder(obs_shape, 3, filters=(4, 6, 8), var_scale=0.2)
    dec = KVAEConvDecoder(3, obs_shape, filters=(4, 6, 8))
    C, H, W = obs_shape
    assert enc.feat_shape == dec.feat_shape == (8, H // 8, W // 8)
    assert [m.kernel_size for m in enc.conv if isinstance(m, torch.nn.Conv2d)] == [(3, 3)] * 3
    assert sum(isinstance(m, torch.nn.PixelShuffle) for m in dec.net) == 3
    assert dec.net[-1].kernel_size == (1, 1)
    assert _keys(enc)[-4:] == ["mean.weight", "mean.bias", "var.weight", "var.bias"]
    assert _keys(dec)[:2] == ["fc.weight", "fc.bias"]
    x = 10 * torch.rand(2, 4, *obs_shape)
    mean, var = enc(x)
    assert mean.shape == var.shape == (2, 4, 3)
    assert bool(((var > 0) & (var < 0.2)).all())  # var_scale · sigmoid(.)
    torch.testing.assert_close(enc(x[1])[0], mean[1])
    assert dec(mean).shape == (2, 4, *obs_shape)


def test_kvae_conv_stacks_reject_bad_shapes_and_precisions() -> None:
    with pytest.raises(ValueError, match=r"divisible by 8 for 3 stride-2 conv layers, received \(1, 20, 32\)"):
        KVAEConvEncoder((1, 20, 32), 2)
    with pytest.raises(ValueError, match=r"divisible by 4 for 2 stride-2 conv layers, received \(1, 18, 18\)"):
        KVAEConvDecoder(2, (1, 18, 18), filters=(8, 8))
    with pytest.raises(ValueError, match=r"conv_precision in \('float32', 'bfloat16'\), received 'fp16'"):
        KVAEConvEncoder((1, 32, 32), 2, conv_precision="fp16")


def test_kvae_conv_channels_last_and_bfloat16_touch_only_the_convs() -> None:
    torch.manual_seed(0)
    ref = KVAEConvEncoder((1, 32, 32), 2, filters=(8, 8, 8), channels_last=False)
    bf = KVAEConvEncoder((1, 32, 32), 2, filters=(8, 8, 8), conv_precision="bfloat16")
    bf.load_state_dict(ref.state_dict())
    x = torch.rand(4, 1, 32, 32)
    (m0, v0), (m1, v1) = ref(x), bf(x)
    torch.testing.assert_close(v1, v0, atol=1e-2, rtol=5e-2)
    assert m1.dtype == v1.dtype == torch.float32  # the heads run in float32
    torch.testing.assert_close(m1, m0, atol=5e-2, rtol=5e-2)
    dec_ref = KVAEConvDecoder(2, (1, 32, 32), filters=(8, 8, 8), channels_last=False)
    dec = KVAEConvDecoder(2, (1, 32, 32), filters=(8, 8, 8), channels_last=True)
    dec.load_state_dict(dec_ref.state_dict())
    torch.testing.assert_close(dec(m0), dec_ref(m0), atol=1e-5, rtol=1e-5)


def test_kvae_mlp_encoder_flattens_then_two_heads() -> None:
    torch.manual_seed(0)
    enc = KVAEMLPEncoder((1, 16, 16), 2, hidden=(32, 32), var_scale=0.5)
    assert isinstance(enc.net[0], torch.nn.Flatten)
    assert _keys(enc) == ["net.1.weight", "net.1.bias", "net.3.weight", "net.3.bias", "mean.weight", "mean.bias",
                          "var.weight", "var.bias"]
    x = torch.rand(3, 5, 1, 16, 16)
    mean, var = enc(x)
    assert mean.shape == (3, 5, 2) and bool(((var > 0) & (var < 0.5)).all())
    h = torch.relu(enc.net[3](torch.relu(enc.net[1](x.reshape(15, 256)))))
    torch.testing.assert_close(mean.reshape(15, 2), enc.mean(h))
    vec = KVAEMLPEncoder((6,), 2, hidden=(8,))  # vector observations
    assert vec(torch.zeros(4, 6))[0].shape == (4, 2)


@pytest.mark.parametrize("size,layers", [(8, 1), (16, 2), (32, 3), (64, 4)])
def test_gtmsm_conv_stacks_shapes_and_depth(size: int, layers: int) -> None:
    torch.manual_seed(0)
    enc = GTMSMConvEncoder((3, size, size), 10, hidden=16, channels=4)
    dec = GTMSMConvDecoder(5, (3, size, size), hidden=16, channels=4)
    convs = [m for m in enc.conv if isinstance(m, torch.nn.Conv2d)]
    deconvs = [m for m in dec.deconv if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) == len(deconvs) == layers and all(m.kernel_size == (4, 4) for m in convs + deconvs)
    assert deconvs[-1].out_channels == 3
    assert [k for k in _keys(enc) if k.startswith("head")] == ["head.1.weight", "head.1.bias", "head.3.weight",
                                                                "head.3.bias"]
    assert _keys(dec)[:4] == ["fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias"]
    x = torch.rand(2, 3, 3, size, size)
    assert enc(x).shape == (2, 3, 10)
    torch.testing.assert_close(enc(x[1, 2]), enc(x)[1, 2])
    z = torch.randn(2, 3, 5)
    assert dec(z).shape == (2, 3, 3, size, size)


def test_gtmsm_conv_stacks_channels_last_give_the_same_numbers_and_gradients() -> None:
    """The channels-last convs (the default) against the contiguous-format ones with the same weights."""
    torch.manual_seed(0)
    enc_ref = GTMSMConvEncoder((3, 32, 32), 10, hidden=16, channels=8, channels_last=False)
    dec_ref = GTMSMConvDecoder(5, (3, 32, 32), hidden=16, channels=8, channels_last=False)
    enc, dec = GTMSMConvEncoder((3, 32, 32), 10, hidden=16, channels=8), GTMSMConvDecoder(5, (3, 32, 32), 16, 8)
    assert enc.channels_last and dec.channels_last
    enc.load_state_dict(enc_ref.state_dict())
    dec.load_state_dict(dec_ref.state_dict())
    x, z = torch.rand(2, 3, 3, 32, 32), torch.randn(2, 3, 5)
    out = []
    for e, d in ((enc, dec), (enc_ref, dec_ref)):
        h, y = e(x), d(z)
        assert y.is_contiguous()
        (h.square().sum() + y.square().sum()).backward()
        out.append((h, y, [p.grad for p in (*e.parameters(), *d.parameters())]))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-5, atol=1e-6)
    for g, g_ref in zip(out[0][2], out[1][2]):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)


def test_gtmsm_conv_stacks_reject_frames_that_are_not_square_powers_of_two() -> None:
    for shape in [(1, 24, 24), (1, 4, 4), (1, 16, 32)]:
        with pytest.raises(ValueError, match=r"square power-of-two frames \(C, S, S\) with S >= 8, received"):
            GTMSMConvEncoder(shape, 4, hidden=8)
        with pytest.raises(ValueError, match=r"square power-of-two frames"):
            GTMSMConvDecoder(4, shape, hidden=8)
