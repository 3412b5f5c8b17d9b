"""Image sources for :mod:`envs.image_nav`: procedural textures, bundled sample images, user files.

The thesis (§7.4.1, §7.7.1) walks an agent over 32x32 CelebA faces, a new face per sequence. CelebA
cannot ship here, so the sources are:

* ``"texture"`` — a procedural smooth random colour field, a new one per episode (always available;
  the default). Its 1/f^1.5 spectrum gives blobs at every scale, so crops are distinguishable.
* ``"faces"`` — the 200 25x25 face crops of Labeled Faces in the Wild that ship with scikit-image
  (``skimage.data.lfw_subset()``), a random face per episode: the closest offline match to CelebA.
* a scikit-image sample image by name (``"astronaut"``, ``"camera"``, ``"coffee"``, ``"chelsea"``, ...):
  one fixed image, centre-cropped to the aspect ratio and resized.
* a path to an image file (read with ``imageio``), or a ``numpy`` array ``[H, W]`` / ``[H, W, C]``.

scikit-image is optional at run time: asking for one of its images without it installed raises an
``ImportError`` that names the package.

Example:
    >>> import numpy as np
    >>> src = make_image_source("texture", size=(32, 32), channels=3)
    >>> img = src.sample(np.random.default_rng(0))
    >>> img.shape, img.dtype
    ((32, 32, 3), dtype('uint8'))
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "SKIMAGE_IMAGES",
    "ImageSource",
    "load_image_file",
    "make_image_source",
    "procedural_texture",
    "procedural_textures",
    "resize",
    "to_channels",
]

# scikit-image sample images that ship inside the wheel (checked offline with scikit-image 0.26).
SKIMAGE_IMAGES: tuple[str, ...] = (
    "astronaut", "brick", "camera", "cat", "chelsea", "clock", "coffee", "coins", "colorwheel",
    "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina",
    "rocket", "text",
)
PROCEDURAL: tuple[str, ...] = ("texture",)
COLLECTIONS: tuple[str, ...] = ("faces",)


def _skimage_data():  # noqa: ANN202 - module
    try:
        import skimage.data
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError(
            "this image source needs scikit-image, which is not installed: `pip install scikit-image` "
            "(or use image='texture' or a file path)"
        ) from e
    return skimage.data


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Convert ``[H, W]`` / ``[H, W, C]`` (C in 1, 3, 4) to ``[H, W, channels]`` uint8.

    RGB -> grayscale uses ITU-R 601 luma weights; grayscale -> RGB repeats the channel; alpha is dropped.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    a = np.asarray(img)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype.kind == "f":
        a = np.clip(a * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    else:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an image [H, W] or [H, W, C] with C in (1, 3, 4), got shape {a.shape}")
    a = a[..., :3] if a.shape[-1] == 4 else a
    if channels == 1 and a.shape[-1] == 3:
        luma = a.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        a = np.clip(luma.round(), 0, 255).astype(np.uint8)[..., None]
    elif channels == 3 and a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop ``img [H, W, C]`` to the aspect ratio of ``size`` and resize it (area-average + bilinear).

    Args:
        img: uint8 image ``[H, W, C]``.
        size: target ``(height, width)``.

    Returns:
        uint8 image ``[height, width, C]``.
    """
    h_t, w_t = size
    h, w = img.shape[:2]
    # centre crop to the target aspect ratio
    if h * w_t > w * h_t:
        h_c = max(1, round(w * h_t / w_t))
        top = (h - h_c) // 2
        img = img[top : top + h_c]
    elif h * w_t < w * h_t:
        w_c = max(1, round(h * w_t / h_t))
        left = (w - w_c) // 2
        img = img[:, left : left + w_c]
    x = img.astype(np.float64)
    # halve by 2x2 averaging while at least twice too large (anti-aliasing)
    while x.shape[0] >= 2 * h_t and x.shape[1] >= 2 * w_t:
        hh, ww = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
        x = x[:hh, :ww].reshape(hh // 2, 2, ww // 2, 2, -1).mean(axis=(1, 3))
    # bilinear sampling at pixel centres
    h, w = x.shape[:2]
    ys = np.clip((np.arange(h_t) + 0.5) * h / h_t - 0.5, 0, h - 1)
    xs = np.clip((np.arange(w_t) + 0.5) * w / w_t - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = x[y0][:, x0] * (1 - fx) + x[y0][:, x1] * fx
    bot = x[y1][:, x0] * (1 - fx) + x[y1][:, x1] * fx
    return np.clip((top * (1 - fy) + bot * fy).round(), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=16)
def _texture_filter(h: int, w: int) -> np.ndarray:
    """The 1/f^1.5 amplitude ``[h, w // 2 + 1]`` on the half spectrum of ``rfft2`` (read-only, cached)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy**2 + fx**2)
    f[0, 0] = 1.0
    amp = f**-1.5
    amp[0, 0] = 0.0
    amp.flags.writeable = False
    return amp


def procedural_texture(rng: np.random.Generator, size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """A smooth random colour field: white noise filtered to a 1/f^1.5 amplitude spectrum.

    Each channel is a random mix of three such fields, stretched to the full [0, 255] range.

    The filter runs on the real half spectrum (``rfft2`` / ``irfft2``, 1.6x faster at 128x128 than the
    full complex ``fft2`` / ``ifft2`` it replaced). The noise draws are unchanged and the filter is
    real and symmetric, so the images are the same: every pixel of 8,400 textures (seeds 0..999 at
    32x32, 64x64, 31x33 and 25x40, seeds 0..199 at 128x128; 1 and 3 channels) was equal to the
    full-FFT version's. :func:`procedural_textures` makes several at once (the same images).

    Args:
        rng: random generator (the texture is a deterministic function of its state).
        size: ``(height, width)``.
        channels: 1 or 3.

    Returns:
        uint8 ``[height, width, channels]``.
    """
    return procedural_textures([rng], size, channels)[0]


def procedural_textures(
    rngs: Sequence[np.random.Generator], size: tuple[int, int], channels: int = 3
) -> np.ndarray:
    """``[procedural_texture(rng, size, channels) for rng in rngs]`` as one array ``[R, h, w, channels]``.

    Each generator gives the same draws as alone (noise, then mix); the filtering, mixing and
    stretching run once for the whole batch (one FFT call instead of one per image: at 32x32 the
    per-call overhead is most of the cost of a texture).

    Example:
        >>> import numpy as np
        >>> many = procedural_textures([np.random.default_rng(s) for s in (1, 2)], (32, 32))
        >>> bool((many[1] == procedural_texture(np.random.default_rng(2), (32, 32))).all())
        True
    """
    h, w = size
    R = len(rngs)
    noise = np.empty((R, 3, h, w))  # [R, 3, h, w]
    mix = np.empty((R, channels, 3))  # [R, C, 3]
    for r, rng in enumerate(rngs):  # per generator: the noise first, then the mix
        rng.standard_normal((3, h, w), out=noise[r])
        mix[r] = rng.standard_normal((channels, 3))
    fields = np.fft.irfft2(np.fft.rfft2(noise) * _texture_filter(h, w), s=(h, w))  # [R, 3, h, w]
    out = np.einsum("rck,rkhw->rhwc", mix, fields)  # [R, h, w, C]
    lo, hi = out.min(axis=(1, 2), keepdims=True), out.max(axis=(1, 2), keepdims=True)
    # (out - lo) / max(hi - lo, 1e-12) * 255, rounded and clipped: the same operations, in place
    out -= lo
    out /= np.maximum(hi - lo, 1e-12)
    out *= 255
    np.rint(out, out=out)
    np.minimum(np.maximum(out, 0, out=out), 255, out=out)
    return out.astype(np.uint8)


def load_image_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file with ``imageio``; a clear ``ValueError`` if it cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file not found: {str(p)!r}")
    try:
        import imageio.v3 as iio

        img = np.asarray(iio.imread(p))
    except Exception as e:  # imageio raises many types for unreadable files
        raise ValueError(f"cannot read image file {str(p)!r} as an image: {type(e).__name__}: {e}") from e
    if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[-1] not in (1, 3, 4):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 4:  # animated: first frame
        img = img[0]
    if img.ndim not in (2, 3) or img.size == 0:
        raise ValueError(f"image file {str(p)!r} has unsupported shape {img.shape}")
    return img


class ImageSource:
    """Draws one uint8 image ``[H, W, C]`` per episode.

    Attributes:
        name: what the source was made from.
        size: ``(H, W)`` of every image.
        channels: ``C``.
        fixed: True when every episode sees the same image.
    """

    def __init__(
        self,
        name: str,
        size: tuple[int, int],
        channels: int,
        images: np.ndarray | None = None,
        procedural: bool = False,
    ) -> None:
        self.name, self.size, self.channels = name, size, channels
        self._images = images  # [K, H, W, C] or None for procedural
        self._procedural = procedural
        self.fixed = images is not None and len(images) == 1

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """A fresh image (a copy) for a new episode; ``rng`` is advanced only for random sources."""
        return self.sample_many([rng])[0]

    def sample_many(self, rngs: Sequence[np.random.Generator]) -> np.ndarray:
        """``[sample(rng) for rng in rngs]`` as one array ``[R, H, W, C]`` (procedural: one batched call)."""
        if self._procedural:
            return procedural_textures(rngs, self.size, self.channels)
        assert self._images is not None
        if self.fixed:
            return np.repeat(self._images[:1], len(rngs), axis=0)
        return self._images[[int(rng.integers(len(self._images))) for rng in rngs]]

    def __repr__(self) -> str:
        return f"ImageSource({self.name!r}, size={self.size}, channels={self.channels})"


def make_image_source(
    image: str | os.PathLike[str] | np.ndarray | Sequence[np.ndarray],
    size: tuple[int, int] = (32, 32),
    channels: int = 3,
) -> ImageSource:
    """Build an :class:`ImageSource` from a name, a file path or arrays.

    Args:
        image: ``"texture"``, ``"faces"``, a scikit-image sample name (:data:`SKIMAGE_IMAGES`), a file path,
            an array ``[H, W(, C)]`` or a list of such arrays (one drawn per episode).
        size: ``(height, width)`` every image is resized to.
        channels: 1 (grayscale) or 3 (RGB).

    Returns:
        The source.

    Raises:
        ValueError: unknown name (with close matches), unreadable file, bad size or channels.
        ImportError: a scikit-image image without scikit-image installed.
    """
    size = (int(size[0]), int(size[1]))
    if size[0] < 1 or size[1] < 1:
        raise ValueError(f"image size must be positive, got {size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if isinstance(image, np.ndarray) or (isinstance(image, (list, tuple)) and image
                                          and isinstance(image[0], np.ndarray)):
        arrs = [image] if isinstance(image, np.ndarray) else list(image)
        imgs = np.stack([resize(to_channels(a, channels), size) for a in arrs])
        return ImageSource("array", size, channels, imgs)
    if not isinstance(image, (str, os.PathLike)):
        raise ValueError(f"image must be a name, a file path or an array, got {type(image).__name__}")
    name = str(image)
    if name in PROCEDURAL:
        return ImageSource(name, size, channels, procedural=True)
    if name == "faces":
        faces = _skimage_data().lfw_subset()  # [200, 25, 25] float in [0, 1]
        imgs = np.stack([resize(to_channels(f, channels), size) for f in faces])
        return ImageSource(name, size, channels, imgs)
    if name in SKIMAGE_IMAGES:
        img = getattr(_skimage_data(), name)()
        return ImageSource(name, size, channels, resize(to_channels(img, channels), size)[None])
    looks_like_path = os.sep in name or "/" in name or Path(name).suffix != "" or Path(name).exists()
    if looks_like_path:
        img = load_image_file(name)
        return ImageSource(name, size, channels, resize(to_channels(img, channels), size)[None])
    valid = PROCEDURAL + COLLECTIONS + SKIMAGE_IMAGES
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"unknown image source {name!r}: expected a file path or one of {list(valid)}.{hint}")
