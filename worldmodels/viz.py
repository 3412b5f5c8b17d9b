"""Pictures of what models do: labelled rollout GIFs, metric plots (PNG), contact sheets (PNG).

Every panel says what it shows: ``"ground truth"``, ``"open-loop prediction"`` (imagined from a
context, no frames seen) or ``"reconstruction"`` (teacher-forced / filtered, frames seen) — NOTES.md
pitfall: users cannot tell these apart otherwise. Frames are float ``[T, C, H, W]`` in [0, 1].

Example:
    >>> import torch, tempfile
    >>> d = tempfile.mkdtemp()
    >>> true, pred = torch.rand(6, 1, 16, 16), torch.rand(6, 1, 16, 16)
    >>> rollout_gif(d + "/r.gif", true, pred, context=2).suffix
    '.gif'
    >>> plot_metric(d + "/m.png", {"rnn": [0.1, 0.2, 0.3]}, ylabel="MSE").suffix
    '.png'
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, ImageDraw

from worldmodels.files import atomic_save

__all__ = ["rollout_gif", "plot_metric", "contact_sheet", "to_uint8", "plot_curves", "bar_plot", "columns_gif"]

LABELS = ("ground truth", "open-loop prediction", "reconstruction", "imputed")


def to_uint8(frames: torch.Tensor | np.ndarray, scale: int = 1) -> np.ndarray:
    """``[..., C, H, W]`` floats in [0, 1] -> ``[..., H*scale, W*scale, 3]`` uint8 (grey -> RGB)."""
    x = torch.as_tensor(frames).detach().float().cpu().clamp(0, 1)
    if x.shape[-3] == 1:
        x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    img = (x * 255).round().to(torch.uint8).movedim(-3, -1).numpy()
    if scale > 1:
        img = img.repeat(scale, axis=-3).repeat(scale, axis=-2)
    return img


def rollout_gif(
    path: str | os.PathLike,
    true: torch.Tensor,
    pred: torch.Tensor,
    context: int = 0,
    pred_label: str = "open-loop prediction",
    fps: int = 5,
    scale: int | None = None,
    observed: Sequence[bool] | None = None,
) -> Path:
    """Side-by-side GIF: ground truth | model, each panel labelled, with a step counter.

    Args:
        true: ``[T, C, H, W]`` frames.
        pred: ``[T, C, H, W]`` model frames (for steps ``< context`` the context the model saw is shown
            and labelled ``"context (observed)"``).
        pred_label: one of :data:`LABELS` after the first (the right panel's title).
        observed: ``[T]`` flags for imputation: frames the model saw are labelled ``"observed"``, the
            others ``pred_label`` (``"imputed"``); ``context`` is then ignored.
    """
    if true.shape != pred.shape or true.dim() != 4:
        raise ValueError(
            f"rollout_gif: expected true and pred [T, C, H, W] of one shape, received "
            f"{tuple(true.shape)} and {tuple(pred.shape)}"
        )
    if pred_label not in LABELS:
        raise ValueError(f"rollout_gif: expected pred_label in {LABELS}, received {pred_label!r}")
    T, _, H, W = true.shape
    scale = scale or max(1, 128 // max(H, W))
    a, b = to_uint8(true, scale), to_uint8(pred, scale)
    h, w = a.shape[1:3]
    pad, top = 4, 24
    frames: list[npt.ArrayLike] = []  # [H', W', 3] uint8 each (the type imageio.mimsave asks for)
    if observed is not None and len(observed) != T:
        raise ValueError(f"rollout_gif: expected {T} observed flags, received {len(observed)}")
    for t in range(T):
        seen = bool(observed[t]) if observed is not None else t < context
        canvas = Image.new("RGB", (2 * w + 3 * pad, h + top + pad), (255, 255, 255))
        canvas.paste(Image.fromarray(a[t]), (pad, top))
        canvas.paste(Image.fromarray(a[t] if seen else b[t]), (2 * pad + w, top))
        draw = ImageDraw.Draw(canvas)
        draw.text((pad, 2), "ground truth", fill=(0, 0, 0))
        label = ("observed" if observed is not None else "context (observed)") if seen else pred_label
        draw.text((2 * pad + w, 2), label, fill=(0, 0, 160) if seen else (160, 0, 0))
        draw.text((pad, 12), f"t={t}", fill=(90, 90, 90))
        frames.append(np.asarray(canvas))

    def save(tmp: Path) -> None:
        import imageio.v2 as imageio

        imageio.mimsave(tmp, frames, duration=1000 / fps, loop=0)

    return atomic_save(Path(path), save)


def plot_metric(
    path: str | os.PathLike,
    curves: Mapping[str, Sequence[float] | np.ndarray],
    xlabel: str = "prediction horizon (steps)",
    ylabel: str = "error",
    title: str = "open-loop prediction error",
    x: Sequence[float] | None = None,
) -> Path:
    """A PNG line plot of one or more named curves (e.g. error vs horizon per model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for name, ys in curves.items():
        ys = np.asarray(ys, dtype=float)
        xs = np.asarray(x, dtype=float) if x is not None else np.arange(1, len(ys) + 1)
        ax.plot(xs, ys, marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    fig.tight_layout()

    def save(tmp: Path) -> None:
        fig.savefig(tmp, format="png")

    try:
        return atomic_save(Path(path), save)
    finally:
        plt.close(fig)


def contact_sheet(
    path: str | os.PathLike,
    rows: Mapping[str, torch.Tensor],
    scale: int | None = None,
) -> Path:
    """A PNG grid: one labelled row per entry ``name -> [T, C, H, W]`` (same T, H, W for all rows).

    Name rows by what they are, e.g. ``{"ground truth": x, "open-loop prediction": p}``.
    """
    arrays = list(rows.values())
    if not arrays:
        raise ValueError("contact_sheet: received no rows")
    T, _, H, W = arrays[0].shape
    for name, v in rows.items():
        if v.dim() != 4 or (v.shape[0], v.shape[2], v.shape[3]) != (T, H, W):
            raise ValueError(
                f"contact_sheet: row {name!r}: expected [{T}, C, {H}, {W}], received {tuple(v.shape)}"
            )
    scale = scale or max(1, 64 // max(H, W))
    h, w, pad, left = H * scale, W * scale, 2, 130
    sheet = Image.new("RGB", (left + T * (w + pad), len(rows) * (h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (name, v) in enumerate(rows.items()):
        img = to_uint8(v, scale)
        y = pad + r * (h + pad)
        draw.text((4, y + h // 2 - 5), name, fill=(0, 0, 0))
        for t in range(T):
            sheet.paste(Image.fromarray(img[t]), (left + t * (w + pad), y))
    return atomic_save(Path(path), lambda tmp: sheet.save(tmp, format="PNG"))


def plot_curves(
    path: str | os.PathLike,
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str,
    dashed: Sequence[str] = (),
) -> Path:
    """A PNG line plot of named curves that each have their own x values, ``name -> (xs, ys)`` (e.g. the
    validation ELBO per epoch of runs that stopped at different epochs); the curves named in ``dashed``
    are drawn dashed.

    Example:
        >>> import tempfile
        >>> curves = {"short run": ([5, 10], [-5.0, -4.8]), "longer run": ([5, 10, 15], [-5.0, -4.8, -4.7])}
        >>> plot_curves(tempfile.mkdtemp() + "/c.png", curves, "epoch", "ELBO", "validation",
        ...             dashed=["longer run"]).suffix
        '.png'
    """
    for name, xy in curves.items():
        if len(xy) != 2 or len(xy[0]) != len(xy[1]):
            raise ValueError(f"plot_curves: curve {name!r}: expected (xs, ys) of one length, received "
                             f"{[len(v) for v in xy]} values")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, (xs, ys) in curves.items():
        ax.plot(xs, ys, label=name, ls="--" if name in dashed else "-")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        return atomic_save(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def bar_plot(path: str | os.PathLike, values: Mapping[str, float], ylabel: str, title: str) -> Path:
    """A PNG bar chart: one bar per entry ``name -> value``, named below and its value (two decimals) on top.

    Example:
        >>> import tempfile
        >>> bar_plot(tempfile.mkdtemp() + "/s.png", {"CEM": 0.88, "random": 0.0}, "success rate", "demo").suffix
        '.png'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(values)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(names), 3.2))
    ax.bar(range(len(names)), [values[n] for n in names], color="#4477aa")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    for i, n in enumerate(names):
        ax.text(i, values[n], f"{values[n]:.2f}", ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    try:
        return atomic_save(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)



def columns_gif(path: str | os.PathLike, columns: Sequence[torch.Tensor], scale: int, sep: int,
                duration: float, every: int = 1) -> Path:
    """An unlabelled GIF of sequences side by side: frame ``t`` shows ``columns[k][t]`` (each ``[T, C, H, W]``
    in [0, 1], C = 3) left to right, upscaled ``scale`` x, separated by ``sep`` white pixels; every ``every``-th
    step, ``duration`` per frame (imageio's unit). Written atomically. Label the columns beside it (a ``.txt``).

    Example:
        >>> import tempfile
        >>> x = torch.rand(4, 3, 8, 8)
        >>> columns_gif(tempfile.mkdtemp() + "/p.gif", [x, 1 - x], scale=2, sep=1, duration=0.1).suffix
        '.gif'
    """
    import imageio.v2 as imageio

    if not columns or any(c.dim() != 4 or c.shape[1] != 3 or c.shape[0] != columns[0].shape[0] for c in columns):
        raise ValueError(f"columns_gif: expected sequences [T, 3, H, W] of one length, received "
                         f"{[tuple(c.shape) for c in columns]}")
    frames: list[npt.ArrayLike] = []  # uint8 [H * scale, width, 3]
    for t in range(0, columns[0].shape[0], every):
        row = [np.kron(c[t].permute(1, 2, 0).numpy(), np.ones((scale, scale, 1))) for c in columns]
        gap = np.ones((row[0].shape[0], sep, 3))
        img = np.concatenate(sum(([r, gap] for r in row), [])[:-1], axis=1)
        frames.append((img * 255).astype(np.uint8))
    return atomic_save(Path(path), lambda tmp: imageio.mimsave(tmp, frames, duration=duration, loop=0))
