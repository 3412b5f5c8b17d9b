"""Shared pieces of the KVAE experiments (thesis §6.5, §6.10, §6.12): paths, data, imputation curves, plots.

Used by :mod:`worldmodels.experiments.kvae_ball` (``worldmodels experiment kvae-ball``),
:mod:`worldmodels.experiments.kvae_pendulum` (``kvae-pendulum``), :mod:`~worldmodels.experiments.kvae_baselines`
and :mod:`~worldmodels.experiments.kvae_report` (the ``report`` phase of both).

Data come from our Gymnasium environments through :func:`worldmodels.data.collect` (a dataset
folder under ``data/kvae/``), are held in memory as uint8 and batched into
:class:`worldmodels.api.Batch` objects. The imputation metric is the thesis's: threshold the mean
frame at 0.5 and count the wrongly guessed pixels on the missing frames (Fig. 6.3). The masks are
:func:`worldmodels.evaluate.drop_mask` and :func:`~worldmodels.evaluate.gap_mask` with the gap in the middle
of the frames after the first :data:`T_INIT` (``middle_of="after_first"``).

Example:
    >>> import torch
    >>> obs = torch.zeros(3, 20, 1, 8, 8, dtype=torch.uint8)
    >>> obs[:, :, :, 2, 2] = 1  # one lit pixel: blank frames miss 1 of 64 pixels
    >>> curves = imputation_curves({"blank": blank_method}, obs, torch.zeros(3, 20, 0), probs=(0.5,), gaps=(3,))
    >>> {k: round(v, 4) for k, v in curves["blank frames"].items()}
    {'drop_0.5': 0.0156, 'gap_3': 0.0156}
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from worldmodels.api import Batch
from worldmodels.evaluate import drop_mask, gap_mask
from worldmodels.files import atomic_save

ROOT = Path(__file__).resolve().parents[2]  # the source checkout: relative paths below are taken from here
T_INIT = 4  # the first 4 frames are always observed (§6.5.1)
DROP_PROBS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
GAPS = (1, 3, 5, 7, 9, 11, 13, 15)

# Thesis Fig. 6.3a/b, KVAE smoothing (approximate reading, NOTES.md).
THESIS_BOX_SMOOTHING = {
    "drop_0.1": 0.006, "drop_0.5": 0.0075, "drop_0.8": 0.013, "drop_0.9": 0.019, "drop_1.0": 0.027,
    "gap_1": 0.006, "gap_9": 0.015, "gap_15": 0.023,
}


@dataclass
class Paths:
    """Where the KVAE experiments keep datasets, runs and results (fields of their ``Args``).

    Relative paths are taken from the source checkout's root (not the working directory), as the scripts did.

    Example:
        >>> Paths().results_path() == ROOT / "docs" / "results"
        True
    """

    data_dir: str = "data/kvae"
    runs_dir: str = "runs"
    results_dir: str = "docs/results"

    def data_path(self) -> Path:
        return ROOT / self.data_dir

    def runs_path(self) -> Path:
        return ROOT / self.runs_dir

    def results_path(self) -> Path:
        return ROOT / self.results_dir


def shown(path: Path) -> str:
    """``path`` relative to the checkout when inside it (as results records state paths), else absolute."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def command() -> str:
    """This process's command line as typed: ``python scripts/kvae_ball.py ...`` (a shim), ``python -m
    worldmodels experiment ...`` or ``worldmodels experiment ...`` (results records state it)."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "__main__.py" and argv0.parent.name == "worldmodels":
        head = "python -m worldmodels"
    elif argv0.suffix == ".py":
        head = f"python {sys.argv[0]}"
    else:
        head = argv0.name
    return " ".join([head, *sys.argv[1:]])


# ----------------------------------------------------------------------------- data


def get_dataset(env_id: str, split: str, episodes: int, frames: int, seed: int, root: Path,
                env_kwargs: dict[str, Any] | None = None, name: str | None = None) -> Path:
    """Collect (or resume collecting) ``episodes`` episodes of ``frames`` frames into ``root/<name>/<split>``.

    Every environment gets the Poisson explorer (actions held for ``1 + Poisson(2)`` steps): uniform
    forces for the force variant and the pendulum's torques; the passive balls ignore their no-op action.
    """
    import envs  # noqa: F401  (registers the ids)
    from agents.explorers import explorer_factory
    from worldmodels.data import RolloutDataset, collect

    out = root / (name or env_id) / split
    if (out / "meta.json").exists():
        ds = RolloutDataset(out)
        if ds.complete:
            return out
    policy = explorer_factory("poisson")
    return collect(env_id, out, episodes=episodes, steps=frames - 1, policy=policy, num_envs=100,
                   seed=seed, env_kwargs=env_kwargs or {}, progress=True)


def load_sequences(path: Path, use_actions: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """All episodes of a dataset in memory: ``obs`` uint8 ``[N, T, C, H, W]``, ``action`` float ``[N, T, A]``.

    ``action[:, t]`` led to ``obs[:, t]`` (zero at t = 0); ``A = 0`` when ``use_actions`` is False.
    """
    from worldmodels.data import RolloutDataset

    ds = RolloutDataset(path)
    frames = ds.padded("obs")  # [N, T, H, W(, C)], zero after an early end
    if frames.ndim == 4:
        frames = frames[..., None]
    o = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 1, 4, 2, 3)))
    act = []
    if use_actions:
        u = torch.from_numpy(ds.padded("action").astype(np.float32)).flatten(2)  # [N, T-1, A]
        act.append(torch.cat([torch.zeros_like(u[:, :1]), u], 1))
    if o.max() > 1:
        o = (o > 127).to(torch.uint8) if _is_binary(o) else o
    u = torch.cat(act) if use_actions else torch.zeros(o.shape[0], o.shape[1], 0)
    return o, u


def _is_binary(o: torch.Tensor) -> bool:
    vals = torch.unique(o[: min(len(o), 50)])
    return bool(((vals == 0) | (vals == 255)).all())


def to_float(obs: torch.Tensor) -> torch.Tensor:
    """uint8 frames (0/1 binary or 0..255) -> float in [0, 1]."""
    x = obs.float()
    return x if obs.max() <= 1 else x / 255.0


class SeqData(torch.utils.data.Dataset):
    """In-memory sequences for :class:`worldmodels.train.Trainer` (items are indices, ``collate`` batches)."""

    def __init__(self, obs: torch.Tensor, action: torch.Tensor) -> None:
        self.obs, self.action = obs, action
        self.scale = 1.0 if obs.max() <= 1 else 1.0 / 255.0

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def __getitem__(self, i: int) -> int:
        return int(i)

    def collate(self, idx: list[int]) -> Batch:
        ix = torch.as_tensor(idx)
        return Batch(obs=self.obs[ix].float() * self.scale, action=self.action[ix])


# ----------------------------------------------------------------------------- imputation


# A method maps a chunk ``(x [B, T, C, H, W], u [B, T, A])`` to ``f(mask) -> {curve: frames}`` where the
# frames ``[M, C, H, W]`` are the method's mean guesses of the missing frames ``x[~mask]`` (in order).
Method = Callable[[torch.Tensor, torch.Tensor], Callable[[torch.Tensor], dict[str, torch.Tensor]]]


def kvae_method(model: Any) -> Method:
    """KVAE filtering and smoothing (§6.4): encode once, Kalman filter/smoother per mask, decode the missing."""

    def prep(x: torch.Tensor, u: torch.Tensor) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
        a_enc, _ = model.encode(x)  # [B, T, a]; encodings of missing frames are never used

        def f(mask: torch.Tensor) -> dict[str, torch.Tensor]:
            out = model.infer_codes(a_enc, u, mask, smooth=True)
            miss = ~mask
            return {"KVAE smoothing": model.decode(out["a_smooth"][miss]),
                    "KVAE filtering": model.decode(out["a_filt"][miss])}

        return f

    return prep


def blank_method(x: torch.Tensor, u: torch.Tensor) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """The floor: every missing frame is guessed all background."""
    return lambda mask: {"blank frames": torch.zeros_like(x[~mask])}


@torch.no_grad()
def imputation_curves(methods: dict[str, Method], obs: torch.Tensor, action: torch.Tensor,
                      seed: int = 0, batch: int = 250, probs: tuple[float, ...] = DROP_PROBS,
                      gaps: tuple[int, ...] = GAPS) -> dict[str, dict[str, float]]:
    """Fig. 6.3a/b: fraction of wrong pixels on the missing frames for every curve, mask kind and level.

    The drop masks are drawn in the order of ``probs`` from one generator seeded with ``seed``; the gaps sit
    in the middle of the frames after the first :data:`T_INIT`.
    """
    from tqdm.auto import tqdm

    N, T = obs.shape[:2]
    g = torch.Generator().manual_seed(seed)
    masks = {f"drop_{p:.1f}": drop_mask(p, T_INIT)(N, T, g) for p in probs}
    masks.update({f"gap_{k}": gap_mask(k, T_INIT, middle_of="after_first")(N, T, g) for k in gaps})
    wrong: dict[str, dict[str, float]] = {}
    total: dict[str, float] = {}
    for i in tqdm(range(0, N, batch), desc="imputation", leave=False):
        x = to_float(obs[i : i + batch])
        preps = [m(x, action[i : i + batch]) for m in methods.values()]
        for key, mask in masks.items():
            mk = mask[i : i + batch]
            target = x[~mk]
            total[key] = total.get(key, 0.0) + float(target.numel())
            for f in preps:
                for curve, pred in f(mk).items():
                    w = float(((pred > 0.5) != (target > 0.5)).sum())
                    wrong.setdefault(curve, {})
                    wrong[curve][key] = wrong[curve].get(key, 0.0) + w
    return {c: {k: v / max(total[k], 1.0) for k, v in d.items()} for c, d in wrong.items()}


# ----------------------------------------------------------------------------- plots and videos


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically (110 dpi) and close it."""
    try:
        atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        _pyplot().close(fig)


def plot_curves(curves: dict[str, dict[str, float]], path: Path, title: str,
                reference: dict[str, dict[str, float]] | None = None) -> None:
    """Fig. 6.3a/b: error vs drop probability (left) and vs gap length (right)."""
    plt = _pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, vals in curves.items():
        for ax, prefix in zip(axes, ("drop_", "gap_")):
            keys = [k for k in vals if k.startswith(prefix)]
            if keys:
                xs = [float(k[len(prefix):]) for k in keys]
                ax.plot(xs, [vals[k] for k in keys], "o-", label=name, ms=3)
    for name, vals in (reference or {}).items():
        for ax, prefix in zip(axes, ("drop_", "gap_")):
            keys = [k for k in vals if k.startswith(prefix)]
            if keys:
                ax.plot([float(k[len(prefix):]) for k in keys], [vals[k] for k in keys], "k--x", label=name,
                        ms=5, lw=1)
    axes[0].set_xlabel("drop probability p (frames after the first 4)")
    axes[1].set_xlabel("missing frames in the middle")
    for ax in axes:
        ax.set_ylabel("fraction of incorrect pixels (missing frames)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_trajectories(enc: np.ndarray, gen: np.ndarray, smooth: np.ndarray, mask: np.ndarray, path: Path,
                      title: str) -> None:
    """Fig. 6.3c: encoded (ground truth), generated and smoothed trajectories in a-space."""
    plt = _pyplot()

    n = enc.shape[0]
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2))
    for i, ax in enumerate(np.atleast_1d(axes)):
        ax.plot(enc[i, :, 0], enc[i, :, 1], "k.-", label="encoded (all frames)", lw=1)
        ax.plot(gen[i, :, 0], gen[i, :, 1], "r.-", label="generated (first 4)", lw=1)
        ax.plot(smooth[i, :, 0], smooth[i, :, 1], "b.-", label="smoothed (first+last 4)", lw=1)
        obs = mask[i]
        ax.plot(enc[i, obs, 0], enc[i, obs, 1], "ks", ms=5, mfc="none")
        ax.plot(enc[i, 0, 0], enc[i, 0, 1], "kh", ms=9, mfc="none")
        ax.set_xticks([])
        ax.set_yticks([])
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_alpha(a: np.ndarray, alpha: np.ndarray, path: Path, title: str) -> None:
    """Fig. 6.4 for an LSTM alpha-network: every encoded a_t coloured by its mixture weights alpha_t.

    With K = 3 the weights are shown as RGB; otherwise one panel per component (intensity = weight).
    """
    plt = _pyplot()

    K = alpha.shape[-1]
    a2, al2 = a.reshape(-1, a.shape[-1]), alpha.reshape(-1, K)
    panels = 1 + K if K != 3 else 4
    fig, axes = plt.subplots(1, panels, figsize=(3.3 * panels, 3.3))
    for k in range(K if K != 3 else 3):
        axes[k].scatter(a2[:, 0], a2[:, 1], c=al2[:, k], cmap="Greys", vmin=0, vmax=1, s=2)
        axes[k].set_title(f"alpha^({k + 1})", fontsize=9)
    if K == 3:
        axes[3].scatter(a2[:, 0], a2[:, 1], c=np.clip(al2, 0, 1), s=2)
        axes[3].set_title("RGB = (alpha1, alpha2, alpha3)", fontsize=9)
    for ax in axes[:panels]:
        ax.set_xticks([])
        ax.set_yticks([])
    if K != 3:
        axes[-1].axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_alpha_time(alpha: np.ndarray, frames: np.ndarray, path: Path, title: str) -> None:
    """Mixture weights over time for a few sequences, above the sequence drawn as one image (Fig. 6.4d)."""
    plt = _pyplot()

    n = alpha.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 5.2))
    for i in range(n):
        axes[0, i].stackplot(np.arange(alpha.shape[1]), alpha[i].T, labels=[f"k={k + 1}" for k in
                                                                           range(alpha.shape[2])])
        axes[0, i].set_xlabel("t")
        axes[0, i].set_ylim(0, 1)
        T = frames.shape[1]
        img = (frames[i, :, 0] * (np.arange(1, T + 1)[:, None, None] / T)).max(0)
        axes[1, i].imshow(img, cmap="Greys", vmin=0, vmax=1)
        axes[1, i].set_xticks([])
        axes[1, i].set_yticks([])
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def save_gif(rows: list[tuple[str, torch.Tensor]], path: Path, scale: int = 4, fps: int = 5,
             masks: torch.Tensor | None = None) -> None:
    """A labelled GIF: each row a sequence ``[T, C, H, W]`` in [0, 1]; masks ``[T]`` frame missing -> red."""
    import imageio.v2 as imageio
    from PIL import Image, ImageDraw

    T = rows[0][1].shape[0]
    H, W = rows[0][1].shape[-2:]
    label_w = 120
    frames: list[npt.ArrayLike] = []  # [H', W', 3] uint8 each
    for t in range(T):
        canvas = Image.new("RGB", (label_w + W * scale, len(rows) * (H * scale + 4)), "white")
        draw = ImageDraw.Draw(canvas)
        for r, (name, seq) in enumerate(rows):
            x = seq[t].float().mean(0).clamp(0, 1).numpy()
            img = np.stack([255 - (x * 255).astype(np.uint8)] * 3, -1)
            if masks is not None and name.startswith("observed") and not bool(masks[t]):
                img[...] = (255, 220, 220)
            im = Image.fromarray(img).resize((W * scale, H * scale), Image.Resampling.NEAREST)
            y0 = r * (H * scale + 4)
            canvas.paste(im, (label_w, y0))
            draw.text((4, y0 + H * scale // 2 - 6), name, fill="black")
        draw.text((4, 2), f"t={t + 1}", fill="gray")
        frames.append(np.asarray(canvas))
    atomic_save(path, lambda tmp: imageio.mimsave(tmp, frames, duration=1.0 / fps, loop=0))
