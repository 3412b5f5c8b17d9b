"""Area resize of uint8 frames in numpy (what ``collect(obs_size=...)`` stores; no OpenCV needed).

Output pixel ``(i, j)`` of an ``H x W -> h x w`` resize is the mean of the input over the rectangle it
covers, ``[i H / h, (i + 1) H / h) x [j W / w, (j + 1) W / w)``, each input pixel weighted by its overlap
with it (OpenCV's ``INTER_AREA``, PIL's ``BOX``), rounded to the nearest integer (halves up). For an integer
factor ``k = H / h = W / w`` it is the mean of each ``k x k`` block; enlarging repeats pixels and blends
the ones cut by an output pixel's edge.

The sums are exact integers: along an axis of ``n -> m`` pixels, in units where an input pixel is ``m``
long and an output pixel ``n`` long, every overlap is an integer and output ``i`` is the difference of
the prefix sums at ``i n`` and ``(i + 1) n`` (one cumulative sum per axis, ``O(H W)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["area_resize"]


def _area_sums(x: np.ndarray, m: int, axis: int) -> np.ndarray:
    """Overlap-weighted sums along ``axis`` of ``x`` (``n`` long) -> int64, ``m`` long; weights sum to ``n``.

    In units where input pixel ``j`` spans ``[j m, (j + 1) m)``, output ``i`` spans ``[i n, (i + 1) n)``
    and is ``I((i + 1) n) - I(i n)``, ``I(p) = m S[p // m] + (p % m) x[p // m]`` the integral of the input
    up to ``p`` (``S[k]``: the sum of its first ``k`` pixels)."""
    n = x.shape[axis]
    k, frac = np.divmod(np.arange(m + 1, dtype=np.int64) * n, m)  # [m + 1] edge -> (pixel, offset in it)
    shape = [1] * x.ndim
    shape[axis] = m + 1
    if n >= m:  # shrinking: S at the edges from sums of the runs between them (one pass, no int64 copy)
        runs = np.add.reduceat(x, k[:-1], axis=axis, dtype=np.int64)  # [.., m, ..] pixels k[i] .. k[i + 1] - 1
        prefix = np.concatenate([np.zeros_like(np.take(runs, [0], axis)), np.cumsum(runs, axis=axis)], axis)
    else:  # enlarging: the input is the smaller array
        cum = np.cumsum(x, axis=axis, dtype=np.int64)
        prefix = np.take(np.concatenate([np.zeros_like(np.take(cum, [0], axis)), cum], axis), k, axis)
    at = np.take(x, np.minimum(k, n - 1), axis).astype(np.int64)  # x[p // m] (its weight is 0 at p = n m)
    integral = m * prefix + frac.reshape(shape) * at  # [.., m + 1, ..]
    return np.diff(integral, axis=axis)


def area_resize(frames: np.ndarray, size: Sequence[int], axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Resize uint8 ``frames`` to ``size = (h, w)`` along ``axes`` (height, width) by area averaging.

    Args:
        frames: uint8 array, e.g. one frame ``[H, W(, C)]`` (``axes=(0, 1)``) or a batch
            ``[N, H, W(, C)]`` (``axes=(1, 2)``).
        size: ``(h, w)``, positive.
        axes: the height and width axes of ``frames``.

    Returns:
        uint8 array, ``frames.shape`` with ``h, w`` on ``axes`` (``frames`` itself when the size is unchanged).

    Example:
        >>> x = np.array([[0, 2, 4, 6], [2, 4, 6, 9]], dtype=np.uint8)
        >>> area_resize(x, (1, 2))  # the means of the two 2x2 blocks, 2.0 and 6.25
        array([[2, 6]], dtype=uint8)
        >>> area_resize(np.arange(3, dtype=np.uint8)[None], (1, 2))  # means over [0, 1.5) and [1.5, 3)
        array([[0, 2]], dtype=uint8)
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise TypeError(f"area_resize: expected uint8 frames, received dtype {frames.dtype}")
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in size):
        raise ValueError(f"area_resize: expected size (height, width) of positive ints, received {size!r}")
    ah, aw = (a % frames.ndim for a in axes) if frames.ndim >= 2 else (0, 0)
    if frames.ndim < 2 or ah == aw:
        raise ValueError(f"area_resize: expected two distinct axes of frames {frames.shape}, received {axes}")
    H, W = frames.shape[ah], frames.shape[aw]
    h, w = int(size[0]), int(size[1])
    if (h, w) == (H, W):
        return frames
    sums = _area_sums(_area_sums(frames, h, ah), w, aw)  # weights sum to H * W
    den = H * W
    return ((2 * sums + den) // (2 * den)).astype(np.uint8)  # round half up
