"""Shared layers: conv encoders/decoders for 16/32/64 px images, MLPs, Gaussian heads with variance
floors, observation distributions (Bernoulli / Gaussian / discretised Gaussian) and action embeddings.

Every layer accepts any number of leading batch dimensions (``[B, T, ...]`` or ``[B, ...]``).
The conv stacks follow the KVAE architecture (NOTES.md, thesis §6.5): the encoder is ``log2(size) - 2``
3x3 stride-2 convolutions with 32 channels and ReLU down to 4x4; the decoder mirrors it with
sub-pixel convolutions (conv to ``4 c`` channels, then pixel shuffle x2).

Every encoder and decoder of the package lives here (models define none of their own):

=========================  =================================================================  ============
class                      architecture                                                       used by
=========================  =================================================================  ============
:class:`ConvEncoder`       3x3 stride-2 convs to 4x4, one linear layer                        ObsEncoder
:class:`ConvDecoder`       linear + ReLU, (3x3 conv, pixel shuffle, ReLU) per 2x, 3x3 conv    Emission
:class:`MLPEncoder`        an :class:`MLP` on the flattened observation                       GTM-SM
:class:`MLPDecoder`        an :class:`MLP` whose output is reshaped to the observation        GTM-SM, KVAE
:class:`KVAEConvEncoder`   §6.8: 3x3 stride-2 convs (``filters``), mean and bounded variance  KVAE
:class:`KVAEConvDecoder`   §6.8: linear, (3x3 conv, ReLU, pixel shuffle) per 2x, 1x1 conv     KVAE
:class:`KVAEMLPEncoder`    §6.5.2: ReLU MLP on the flattened frame, mean and bounded variance KVAE
:class:`GTMSMConvEncoder`  4x4 stride-2 convs to 4x4, a two-layer MLP head                    GTM-SM
:class:`GTMSMConvDecoder`  a two-layer MLP to 4x4 maps, 4x4 stride-2 transposed convs         GTM-SM
=========================  =================================================================  ============

The parameter names of each class (``state_dict`` keys) are those of the shipped checkpoints
(``worldmodels/pretrained``); a class that looks like another one but has other keys or layers stays
a class of its own.

Example:
    >>> import torch
    >>> enc, dec = ConvEncoder((1, 32, 32), 16), ConvDecoder(16, (1, 32, 32))
    >>> x = torch.rand(2, 5, 1, 32, 32)
    >>> enc(x).shape, dec(enc(x)).shape
    (torch.Size([2, 5, 16]), torch.Size([2, 5, 1, 32, 32]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "IMAGE_SIZES",
    "is_image_shape",
    "MLP",
    "ConvEncoder",
    "ConvDecoder",
    "GaussianHead",
    "ActionEmbedding",
    "ObsDistribution",
    "Emission",
    "ObsEncoder",
    "MLPEncoder",
    "MLPDecoder",
    "KVAEConvEncoder",
    "KVAEConvDecoder",
    "KVAEMLPEncoder",
    "GTMSMConvEncoder",
    "GTMSMConvDecoder",
    "bernoulli_log_prob",
    "gaussian_log_prob",
    "discretized_gaussian_log_prob",
    "softplus_std",
]

IMAGE_SIZES = (8, 16, 32, 64)  # 8 px: GTM-SM ImageNav crops
_LOG_2PI = math.log(2 * math.pi)


def is_image_shape(obs_shape: Sequence[int]) -> bool:
    """``True`` for ``(C, H, W)`` observation shapes, ``False`` for vectors ``(D,)``."""
    return len(obs_shape) == 3


def _check_image_shape(obs_shape: Sequence[int], who: str) -> tuple[int, int, int]:
    if len(obs_shape) != 3 or obs_shape[1] != obs_shape[2] or obs_shape[1] not in IMAGE_SIZES:
        raise ValueError(
            f"{who}: expected an image shape (C, S, S) with S in {IMAGE_SIZES}, received {tuple(obs_shape)}"
        )
    return int(obs_shape[0]), int(obs_shape[1]), int(obs_shape[2])


def _flat(x: Tensor, event_dims: int) -> tuple[Tensor, tuple[int, ...]]:
    """Merge leading dims: ``[*lead, *event] -> [N, *event]``; returns the leading shape too."""
    lead = tuple(x.shape[: x.dim() - event_dims])
    return x.reshape(-1, *x.shape[x.dim() - event_dims :]), lead


class MLP(nn.Sequential):
    """``Linear -> act -> ... -> Linear`` (no activation after the last layer).

    Example:
        >>> MLP(4, (32, 32), 2)(torch.zeros(3, 4)).shape
        torch.Size([3, 2])
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, act: type[nn.Module] = nn.ReLU):
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), act()]
            d = h
        layers.append(nn.Linear(d, out_dim))
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim


class ConvEncoder(nn.Module):
    """Image ``[..., C, S, S] -> [..., out_dim]``: ``log2(S) - 2`` conv(3x3, stride 2) + ReLU, then linear.

    Args:
        obs_shape: ``(C, S, S)`` with ``S`` in 16, 32, 64.
        out_dim: size of the output features.
        channels: channels of every conv layer (32 in KVAE).
        channels_last: run the convs in ``torch.channels_last`` memory format (faster on CPU).

    Example:
        >>> ConvEncoder((3, 64, 64), 8)(torch.rand(4, 3, 64, 64)).shape
        torch.Size([4, 8])
    """

    def __init__(
        self, obs_shape: Sequence[int], out_dim: int, channels: int = 32, channels_last: bool = True
    ):
        super().__init__()
        c, s, _ = _check_image_shape(obs_shape, "ConvEncoder")
        self.obs_shape, self.out_dim, self.channels_last = (c, s, s), out_dim, channels_last
        n_layers = int(math.log2(s)) - 2  # down to 4x4
        convs: list[nn.Module] = []
        for i in range(n_layers):
            convs += [nn.Conv2d(c if i == 0 else channels, channels, 3, stride=2, padding=1), nn.ReLU()]
        self.convs = nn.Sequential(*convs)
        self.linear = nn.Linear(channels * 16, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-3:]) != self.obs_shape:
            raise ValueError(
                f"ConvEncoder: expected [..., {', '.join(map(str, self.obs_shape))}], "
                f"received {tuple(x.shape)}"
            )
        x, lead = _flat(x, 3)  # [N, C, S, S]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.convs(x)  # [N, c, 4, 4]
        return self.linear(h.flatten(1)).reshape(*lead, self.out_dim)


class ConvDecoder(nn.Module):
    """Features ``[..., in_dim] -> [..., out_channels, S, S]`` with sub-pixel (pixel-shuffle) convolutions.

    A linear layer maps to ``channels x 4 x 4``; each of the ``log2(S) - 2`` blocks is
    ``conv3x3(channels -> 4 channels) -> PixelShuffle(2) -> ReLU``; a final conv3x3 gives
    ``out_channels`` maps (logits or means, untransformed).

    Example:
        >>> ConvDecoder(8, (1, 16, 16), out_channels=2)(torch.zeros(3, 8)).shape
        torch.Size([3, 2, 16, 16])
    """

    def __init__(
        self,
        in_dim: int,
        obs_shape: Sequence[int],
        out_channels: int | None = None,
        channels: int = 32,
        channels_last: bool = True,
    ):
        super().__init__()
        c, s, _ = _check_image_shape(obs_shape, "ConvDecoder")
        self.in_dim, self.size, self.channels, self.channels_last = in_dim, s, channels, channels_last
        self.out_channels = out_channels if out_channels is not None else c
        self.linear = nn.Linear(in_dim, channels * 16)
        blocks: list[nn.Module] = []
        for _ in range(int(math.log2(s)) - 2):
            blocks += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2), nn.ReLU()]
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Conv2d(channels, self.out_channels, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        if h.shape[-1] != self.in_dim:
            raise ValueError(f"ConvDecoder: expected [..., {self.in_dim}], received {tuple(h.shape)}")
        h, lead = _flat(h, 1)
        x = F.relu(self.linear(h)).reshape(-1, self.channels, 4, 4)  # [N, c, 4, 4]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.out(self.blocks(x))  # [N, C_out, S, S]
        return x.contiguous().reshape(*lead, self.out_channels, self.size, self.size)


def softplus_std(raw: Tensor, min_std: float) -> Tensor:
    """Standard deviation with a floor: ``softplus(raw) + min_std`` (thesis §4.8.1, variance floors)."""
    return F.softplus(raw) + min_std


class GaussianHead(nn.Module):
    """MLP -> ``(mean, std)`` of a diagonal Gaussian, ``std = softplus(.) + min_std``.

    Example:
        >>> mean, std = GaussianHead(4, 3, hidden=(16,), min_std=0.1)(torch.zeros(2, 4))
        >>> mean.shape, bool((std >= 0.1).all())
        (torch.Size([2, 3]), True)
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (), min_std: float = 1e-3):
        super().__init__()
        self.out_dim, self.min_std = out_dim, min_std
        self.net = MLP(in_dim, hidden, 2 * out_dim)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw = self.net(h).chunk(2, dim=-1)
        return mean, softplus_std(raw, self.min_std)


class ActionEmbedding(nn.Module):
    """One-hot (or continuous) actions ``[..., A] -> [..., E]``.

    For one-hot inputs this is exactly an embedding table lookup (row ``a`` of the weight plus bias)
    and stays valid for continuous actions; zeros (no action, ``is_first``) map to the bias.

    Example:
        >>> emb = ActionEmbedding(3, 4)
        >>> torch.allclose(emb(torch.eye(3))[1], emb.linear.weight[:, 1] + emb.linear.bias)
        True
    """

    def __init__(self, action_dim: int, embed_dim: int):
        super().__init__()
        self.action_dim, self.embed_dim = action_dim, embed_dim
        self.linear = nn.Linear(action_dim, embed_dim)

    def forward(self, action: Tensor) -> Tensor:
        if action.shape[-1] != self.action_dim:
            raise ValueError(
                f"ActionEmbedding: expected [..., {self.action_dim}], received {tuple(action.shape)}"
            )
        return self.linear(action)


# ----------------------------------------------------------------------------- log-likelihoods


def bernoulli_log_prob(logits: Tensor, x: Tensor, event_dims: int) -> Tensor:
    """``log Bern(x | sigmoid(logits))`` summed over the last ``event_dims`` dims (x may be in [0, 1])."""
    lp = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return lp.flatten(lp.dim() - event_dims).sum(-1) if event_dims else lp


def gaussian_log_prob(mean: Tensor, std: Tensor, x: Tensor, event_dims: int) -> Tensor:
    """``log N(x | mean, std^2)`` summed over the last ``event_dims`` dims."""
    lp = -0.5 * (((x - mean) / std) ** 2 + _LOG_2PI) - torch.log(std)
    return lp.flatten(lp.dim() - event_dims).sum(-1) if event_dims else lp


def discretized_gaussian_log_prob(
    mean: Tensor, std: Tensor, x: Tensor, event_dims: int, bins: int = 256
) -> Tensor:
    """Log-probability of 8-bit pixel values ``x`` in [0, 1] under a Gaussian discretised into ``bins``.

    Bin ``k`` covers ``[(k - 0.5)/(bins - 1), (k + 0.5)/(bins - 1)]``; the first and last bins extend to
    -inf and +inf, so the probabilities of all bins sum to one (a proper discrete distribution).
    """
    half = 0.5 / (bins - 1)
    k = torch.round(x * (bins - 1))
    xc = k / (bins - 1)
    inv = 1.0 / (std * math.sqrt(2.0))
    upper = torch.where(k >= bins - 1, torch.ones_like(xc), 0.5 * (1 + torch.erf((xc + half - mean) * inv)))
    lower = torch.where(k <= 0, torch.zeros_like(xc), 0.5 * (1 + torch.erf((xc - half - mean) * inv)))
    p = (upper - lower).clamp_min(1e-12)
    # far in the tails the CDF difference underflows: use the density x bin width there
    dens = gaussian_log_prob(mean, std, xc, 0) + math.log(2 * half)
    lp = torch.where(p > 1e-5, torch.log(p), dens)
    return lp.flatten(lp.dim() - event_dims).sum(-1) if event_dims else lp


@dataclass
class ObsDistribution:
    """A factorised observation distribution ``p(x | h)`` over ``event_dims`` trailing dims.

    Attributes:
        kind: ``"bernoulli"`` (``loc`` = logits), ``"gaussian"`` or ``"discretized"`` (``loc`` = mean).
        loc: ``[..., *obs_shape]``.
        scale: standard deviation ``[..., *obs_shape]`` (``None`` for Bernoulli).
        event_dims: number of trailing observation dims (3 for images, 1 for vectors).
    """

    kind: str
    loc: Tensor
    scale: Tensor | None
    event_dims: int

    @property
    def mean(self) -> Tensor:
        return torch.sigmoid(self.loc) if self.kind == "bernoulli" else self.loc

    @property
    def variance(self) -> Tensor:
        if self.kind == "bernoulli":
            p = torch.sigmoid(self.loc)
            return p * (1 - p)
        assert self.scale is not None
        return self.scale**2

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` summed over the observation dims: ``[...]``."""
        if self.kind == "bernoulli":
            return bernoulli_log_prob(self.loc, x, self.event_dims)
        assert self.scale is not None
        if self.kind == "gaussian":
            return gaussian_log_prob(self.loc, self.scale, x, self.event_dims)
        return discretized_gaussian_log_prob(self.loc, self.scale, x, self.event_dims)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        if self.kind == "bernoulli":
            return torch.bernoulli(torch.sigmoid(self.loc), generator=generator)
        assert self.scale is not None
        eps = torch.randn(self.loc.shape, generator=generator, device=self.loc.device, dtype=self.loc.dtype)
        x = self.loc + self.scale * eps
        if self.kind == "discretized":
            x = torch.round(x.clamp(0, 1) * 255) / 255
        return x


EMISSION_KINDS = ("bernoulli", "gaussian", "discretized")


class Emission(nn.Module):
    """Features ``[..., in_dim]`` -> :class:`ObsDistribution` over ``obs_shape``.

    Images go through a :class:`ConvDecoder`; vectors through an :class:`MLP`. For ``"gaussian"`` and
    ``"discretized"`` the network also outputs a per-dimension std with floor ``min_std``; image means
    are squashed into [0, 1] with a sigmoid, vector means are unconstrained.

    Example:
        >>> em = Emission(8, (1, 16, 16), kind="bernoulli", channels=4)
        >>> d = em(torch.zeros(2, 3, 8))
        >>> d.mean.shape, d.log_prob(torch.zeros(2, 3, 1, 16, 16)).shape
        (torch.Size([2, 3, 1, 16, 16]), torch.Size([2, 3]))
    """

    def __init__(
        self,
        in_dim: int,
        obs_shape: Sequence[int],
        kind: str = "bernoulli",
        hidden: Sequence[int] = (),
        channels: int = 32,
        min_std: float = 1e-2,
        channels_last: bool = True,
    ):
        super().__init__()
        if kind not in EMISSION_KINDS:
            raise ValueError(f"Emission: expected kind in {EMISSION_KINDS}, received {kind!r}")
        self.kind, self.obs_shape, self.min_std = kind, tuple(obs_shape), min_std
        self.image = is_image_shape(obs_shape)
        mult = 1 if kind == "bernoulli" else 2
        if self.image:
            c = int(obs_shape[0])
            self.net: nn.Module = ConvDecoder(in_dim, obs_shape, c * mult, channels, channels_last)
        else:
            if len(obs_shape) != 1:
                raise ValueError(
                    f"Emission: expected obs_shape (D,) or (C, S, S), received {tuple(obs_shape)}"
                )
            self.net = MLP(in_dim, hidden, int(obs_shape[0]) * mult)

    def forward(self, h: Tensor) -> ObsDistribution:
        out = self.net(h)  # [..., mult*C, S, S] or [..., mult*D]
        event_dims = 3 if self.image else 1
        if self.kind == "bernoulli":
            return ObsDistribution("bernoulli", out, None, event_dims)
        ch = -3 if self.image else -1
        loc, raw = out.chunk(2, dim=ch)
        if self.image:
            loc = torch.sigmoid(loc)
        return ObsDistribution(self.kind, loc, softplus_std(raw, self.min_std), event_dims)


class ObsEncoder(nn.Module):
    """Observations ``[..., *obs_shape] -> [..., out_dim]``: :class:`ConvEncoder` for images, MLP for vectors.

    Example:
        >>> ObsEncoder((5,), 4, hidden=(8,))(torch.zeros(2, 3, 5)).shape
        torch.Size([2, 3, 4])
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        out_dim: int,
        hidden: Sequence[int] = (),
        channels: int = 32,
        channels_last: bool = True,
    ):
        super().__init__()
        self.obs_shape, self.out_dim = tuple(obs_shape), out_dim
        if is_image_shape(obs_shape):
            self.net: nn.Module = ConvEncoder(obs_shape, out_dim, channels, channels_last)
        else:
            if len(obs_shape) != 1:
                raise ValueError(
                    f"ObsEncoder: expected obs_shape (D,) or (C, S, S), received {tuple(obs_shape)}"
                )
            self.net = MLP(int(obs_shape[0]), hidden, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# ----------------------------------------------------------------------------- flat (MLP) encoder / decoder


class MLPEncoder(nn.Module):
    """Observations ``[..., *obs_shape] -> [..., out_dim]``: an :class:`MLP` on the flattened observation.

    For frames too small for the conv stacks (GTM-SM's 8x8 ImageNav crops). Parameters: ``net.*``.

    Args:
        obs_shape: shape of one observation, e.g. ``(C, H, W)``.
        out_dim: output size.
        hidden: widths of the hidden ReLU layers.

    Example:
        >>> enc = MLPEncoder((3, 8, 8), 4, hidden=(16, 16))
        >>> enc(torch.zeros(2, 5, 3, 8, 8)).shape, [k for k in enc.state_dict()][:2]
        (torch.Size([2, 5, 4]), ['net.0.weight', 'net.0.bias'])
    """

    def __init__(self, obs_shape: Sequence[int], out_dim: int, hidden: Sequence[int] = ()):
        super().__init__()
        self.obs_shape, self.out_dim = tuple(int(v) for v in obs_shape), out_dim
        self.net = MLP(math.prod(self.obs_shape), hidden, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        n = len(self.obs_shape)
        if tuple(x.shape[x.dim() - n :]) != self.obs_shape:
            raise ValueError(
                f"MLPEncoder: expected [..., {', '.join(map(str, self.obs_shape))}], received {tuple(x.shape)}"
            )
        return self.net(x.flatten(x.dim() - n))


class MLPDecoder(nn.Module):
    """Features ``[..., in_dim] -> [..., *obs_shape]``: an :class:`MLP` whose output is reshaped.

    The output is untransformed (logits or means). Parameters: ``net.*``.

    Args:
        in_dim: size of the input features.
        obs_shape: shape of one observation.
        hidden: widths of the hidden ReLU layers.

    Example:
        >>> MLPDecoder(4, (3, 8, 8), hidden=(16,))(torch.zeros(2, 5, 4)).shape
        torch.Size([2, 5, 3, 8, 8])
    """

    def __init__(self, in_dim: int, obs_shape: Sequence[int], hidden: Sequence[int] = ()):
        super().__init__()
        self.in_dim, self.obs_shape = in_dim, tuple(int(v) for v in obs_shape)
        self.net = MLP(in_dim, hidden, math.prod(self.obs_shape))

    def forward(self, h: Tensor) -> Tensor:
        if h.shape[-1] != self.in_dim:
            raise ValueError(f"MLPDecoder: expected [..., {self.in_dim}], received {tuple(h.shape)}")
        return self.net(h).reshape(*h.shape[:-1], *self.obs_shape)


# ----------------------------------------------------------------------------- KVAE (thesis §6.5, §6.8)

PRECISIONS = ("float32", "bfloat16")


def _check_precision(precision: str, who: str) -> bool:
    """``True`` for bfloat16 autocast; raises for anything but the two :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"{who}: expected conv_precision in {PRECISIONS}, received {precision!r}")
    return precision == "bfloat16"


def _kvae_feature_shape(obs_shape: Sequence[int], filters: Sequence[int], who: str) -> tuple[int, int, int]:
    """``(channels, H / 2^L, W / 2^L)`` after ``L = len(filters)`` stride-2 convs."""
    f = 2 ** len(filters)
    if len(obs_shape) != 3 or obs_shape[1] % f or obs_shape[2] % f:
        raise ValueError(
            f"{who}: expected (C, H, W) with H and W divisible by {f} for {len(filters)} stride-2 conv layers, "
            f"received {tuple(obs_shape)}"
        )
    C, H, W = (int(v) for v in obs_shape)
    return (int(filters[-1]) if filters else C, H // f, W // f)


class KVAEConvEncoder(nn.Module):
    """``x_t [..., C, H, W] -> (mean, var)`` of ``q(a_t | x_t)``, each ``[..., out_dim]`` (thesis §6.8).

    One 3x3 stride-2 convolution + ReLU per entry of ``filters``, then two linear layers on the flattened
    maps: the mean and the variance ``var_scale * sigmoid(.)`` (small and bounded). Differs from
    :class:`ConvEncoder` in the per-layer channels, non-square frames, the two heads and the names
    (``conv.*``, ``mean``, ``var``).

    Args:
        obs_shape: ``(C, H, W)``, H and W divisible by ``2 ** len(filters)``.
        out_dim: size of ``a_t``.
        filters: channels of the conv layers.
        var_scale: upper bound of the variance.
        channels_last: run the convs in ``torch.channels_last`` memory format (faster on CPU).
        conv_precision: ``"float32"`` or ``"bfloat16"`` (the convs under ``torch.autocast``; the heads
            stay in the input's dtype).

    Attributes:
        feat_shape: ``(channels, H', W')`` of the last conv's output.

    Example:
        >>> mean, var = KVAEConvEncoder((1, 32, 32), 2, filters=(8, 8, 8))(torch.rand(4, 1, 32, 32))
        >>> mean.shape, bool(((var > 0) & (var < 0.03)).all())
        (torch.Size([4, 2]), True)
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        out_dim: int,
        filters: Sequence[int] = (32, 32, 32),
        var_scale: float = 0.03,
        channels_last: bool = True,
        conv_precision: str = "float32",
    ):
        super().__init__()
        self.feat_shape = _kvae_feature_shape(obs_shape, filters, "KVAEConvEncoder")
        self.bf16 = _check_precision(conv_precision, "KVAEConvEncoder")
        self.obs_shape, self.out_dim = tuple(int(v) for v in obs_shape), out_dim
        layers: list[nn.Module] = []
        ch = self.obs_shape[0]
        for f in filters:
            layers += [nn.Conv2d(ch, f, 3, stride=2, padding=1), nn.ReLU()]
            ch = f
        self.conv = nn.Sequential(*layers)
        n = math.prod(self.feat_shape)
        self.mean = nn.Linear(n, out_dim)
        self.var = nn.Linear(n, out_dim)
        self.var_scale, self.channels_last = var_scale, channels_last

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if tuple(x.shape[-3:]) != self.obs_shape:
            raise ValueError(
                f"KVAEConvEncoder: expected [..., {', '.join(map(str, self.obs_shape))}], received {tuple(x.shape)}"
            )
        x, lead = _flat(x, 3)  # [N, C, H, W]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            h = self.conv(x).flatten(1).to(x.dtype)  # [N, F]
        mean, var = self.mean(h), self.var_scale * torch.sigmoid(self.var(h))
        return mean.reshape(*lead, self.out_dim), var.reshape(*lead, self.out_dim)


class KVAEConvDecoder(nn.Module):
    """``a_t [..., in_dim] ->`` logits or means ``[..., C, H, W]`` of ``p(x_t | a_t)`` (thesis §6.8).

    A linear layer to the encoder's last maps ``(filters[-1], H', W')`` (no activation), then per entry of
    ``reversed(filters)`` a 3x3 conv to ``4 f`` channels, ReLU and a sub-pixel shuffle x2, and a 1x1 conv
    to ``C`` channels. Differs from :class:`ConvDecoder` (ReLU after the linear layer, 3x3 output conv,
    names ``linear``/``blocks``/``out``): its names are ``fc`` and ``net.*``.

    Args:
        in_dim: size of ``a_t``.
        obs_shape: ``(C, H, W)``, H and W divisible by ``2 ** len(filters)``.
        filters: channels of the encoder's conv layers (mirrored).
        channels_last, conv_precision: as in :class:`KVAEConvEncoder` (autocast covers the convs).

    Example:
        >>> KVAEConvDecoder(2, (1, 32, 32), filters=(8, 8, 8))(torch.zeros(3, 5, 2)).shape
        torch.Size([3, 5, 1, 32, 32])
    """

    def __init__(
        self,
        in_dim: int,
        obs_shape: Sequence[int],
        filters: Sequence[int] = (32, 32, 32),
        channels_last: bool = True,
        conv_precision: str = "float32",
    ):
        super().__init__()
        self.feat_shape = _kvae_feature_shape(obs_shape, filters, "KVAEConvDecoder")
        self.bf16 = _check_precision(conv_precision, "KVAEConvDecoder")
        self.in_dim = in_dim
        self.fc = nn.Linear(in_dim, math.prod(self.feat_shape))
        layers: list[nn.Module] = []
        ch = self.feat_shape[0]
        for f in reversed(filters):
            layers += [nn.Conv2d(ch, 4 * f, 3, padding=1), nn.ReLU(), nn.PixelShuffle(2)]
            ch = f
        layers.append(nn.Conv2d(ch, int(obs_shape[0]), 1))
        self.net = nn.Sequential(*layers)
        self.channels_last = channels_last

    def forward(self, a: Tensor) -> Tensor:
        if a.shape[-1] != self.in_dim:
            raise ValueError(f"KVAEConvDecoder: expected [..., {self.in_dim}], received {tuple(a.shape)}")
        a, lead = _flat(a, 1)
        h = self.fc(a).view(-1, *self.feat_shape)  # [N, F, H', W']
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        with torch.autocast(h.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            x = self.net(h).to(h.dtype).contiguous()  # [N, C, H, W]
        return x.reshape(*lead, *x.shape[1:])


class KVAEMLPEncoder(nn.Module):
    """``x_t [..., *obs_shape] -> (mean, var)`` of ``q(a_t | x_t)``, each ``[..., out_dim]`` (thesis §6.5.2).

    ``Linear + ReLU`` per entry of ``hidden`` on the flattened observation (``net.*``; ``net.0`` is the
    flatten), then the mean and the variance ``var_scale * sigmoid(.)`` heads of :class:`KVAEConvEncoder`.

    Example:
        >>> mean, var = KVAEMLPEncoder((1, 16, 16), 2, hidden=(32, 32))(torch.rand(4, 1, 16, 16))
        >>> mean.shape, var.shape
        (torch.Size([4, 2]), torch.Size([4, 2]))
    """

    def __init__(
        self, obs_shape: Sequence[int], out_dim: int, hidden: Sequence[int] = (128, 128), var_scale: float = 0.03
    ):
        super().__init__()
        self.obs_shape, self.out_dim = tuple(int(v) for v in obs_shape), out_dim
        layers: list[nn.Module] = [nn.Flatten()]
        d = math.prod(self.obs_shape)
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.net = nn.Sequential(*layers)
        self.mean = nn.Linear(d, out_dim)
        self.var = nn.Linear(d, out_dim)
        self.var_scale = var_scale

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n = len(self.obs_shape)
        if tuple(x.shape[x.dim() - n :]) != self.obs_shape:
            raise ValueError(
                f"KVAEMLPEncoder: expected [..., {', '.join(map(str, self.obs_shape))}], received {tuple(x.shape)}"
            )
        x, lead = _flat(x, n)
        h = self.net(x)
        mean, var = self.mean(h), self.var_scale * torch.sigmoid(self.var(h))
        return mean.reshape(*lead, self.out_dim), var.reshape(*lead, self.out_dim)


# ----------------------------------------------------------------------------- GTM-SM (thesis Ch. 7)


def _check_power_of_two(obs_shape: Sequence[int], who: str) -> tuple[int, int]:
    if len(obs_shape) != 3 or obs_shape[1] != obs_shape[2] or obs_shape[1] < 8 or obs_shape[1] & (obs_shape[1] - 1):
        raise ValueError(f"{who}: expected square power-of-two frames (C, S, S) with S >= 8, received "
                         f"{tuple(obs_shape)}")
    return int(obs_shape[0]), int(obs_shape[1])


class GTMSMConvEncoder(nn.Module):
    """Frames ``[..., C, S, S] -> [..., out_dim]``: 4x4 stride-2 convs + ReLU down to 4x4, then a two-layer MLP.

    GTM-SM's encoder for 16/32/64 px frames (MiniWorld, §7.4.2). Differs from :class:`ConvEncoder`
    (3x3 kernels, one linear layer) in kernel size and head; parameters ``conv.*`` and ``head.*``
    (``head.0`` is the flatten).

    Args:
        obs_shape: ``(C, S, S)``, S a power of two >= 8.
        out_dim: output size (GTM-SM: ``2 z``, mean and pre-softplus scale).
        hidden: width of the MLP head.
        channels: channels of every conv layer.
        channels_last: run the convs in ``torch.channels_last`` memory format (the same numbers up to float
            rounding; on CPU the encoder's forward + backward on the 2,912 frames of a MiniWorld walking update
            take ~0.7x the time with glibc's default malloc, and the whole update ~0.94x once freed memory is kept:
            ``make bench``, group ``gtmsm_miniworld_train``).

    Example:
        >>> GTMSMConvEncoder((3, 32, 32), 8, hidden=16, channels=4)(torch.rand(2, 5, 3, 32, 32)).shape
        torch.Size([2, 5, 8])
    """

    def __init__(self, obs_shape: Sequence[int], out_dim: int, hidden: int, channels: int = 32,
                 channels_last: bool = True):
        super().__init__()
        C, S = _check_power_of_two(obs_shape, "GTMSMConvEncoder")
        self.obs_shape, self.out_dim, self.channels_last = (C, S, S), out_dim, channels_last
        layers: list[nn.Module] = []
        c, size = C, S
        while size > 4:
            layers += [nn.Conv2d(c, channels, 4, 2, 1), nn.ReLU()]
            c, size = channels, size // 2
        self.conv = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels * 16, hidden), nn.ReLU(),
                                  nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-3:]) != self.obs_shape:
            raise ValueError(
                f"GTMSMConvEncoder: expected [..., {', '.join(map(str, self.obs_shape))}], received {tuple(x.shape)}"
            )
        x, lead = _flat(x, 3)  # [N, C, S, S]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.conv(x)).reshape(*lead, self.out_dim)


class GTMSMConvDecoder(nn.Module):
    """Codes ``[..., in_dim] -> [..., C, S, S]``: a two-layer ReLU MLP to ``channels x 4 x 4``, then 4x4
    stride-2 transposed convs (ReLU between them) up to ``S``; the output is untransformed.

    GTM-SM's decoder for 16/32/64 px frames. Differs from :class:`ConvDecoder` (one linear layer,
    sub-pixel convolutions); parameters ``fc.*`` and ``deconv.*``. ``channels_last``: run the transposed convs
    in ``torch.channels_last`` memory format (the same numbers up to float rounding, faster on CPU).

    Example:
        >>> GTMSMConvDecoder(8, (3, 32, 32), hidden=16, channels=4)(torch.zeros(2, 5, 8)).shape
        torch.Size([2, 5, 3, 32, 32])
    """

    def __init__(self, in_dim: int, obs_shape: Sequence[int], hidden: int, channels: int = 32,
                 channels_last: bool = True):
        super().__init__()
        C, S = _check_power_of_two(obs_shape, "GTMSMConvDecoder")
        self.in_dim, self.obs_shape, self.ch, self.channels_last = in_dim, (C, S, S), channels, channels_last
        self.fc = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, channels * 16), nn.ReLU())
        layers: list[nn.Module] = []
        size = 4
        while size < S:
            last = size * 2 == S
            layers += [nn.ConvTranspose2d(channels, C if last else channels, 4, 2, 1)]
            if not last:
                layers.append(nn.ReLU())
            size *= 2
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        if z.shape[-1] != self.in_dim:
            raise ValueError(f"GTMSMConvDecoder: expected [..., {self.in_dim}], received {tuple(z.shape)}")
        z, lead = _flat(z, 1)
        h = self.fc(z).reshape(-1, self.ch, 4, 4)  # [N, ch, 4, 4]
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        return self.deconv(h).contiguous().reshape(*lead, *self.obs_shape)
