"""Metrics used by the experiments: ELBO per time step, prediction error over the horizon, imputation error.

Data arguments accept what :class:`worldmodels.train.Trainer` accepts: a map-style Dataset whose
items collate to :class:`~worldmodels.api.Batch` (e.g. ``data.WindowDataset``) or an iterable of
``Batch``.

Example:
    >>> import torch
    >>> from worldmodels.api import Batch
    >>> from worldmodels.models import build_model
    >>> model = build_model("rnn", "debug", obs_shape=(1, 16, 16), action_dim=2).eval()
    >>> data = [Batch(obs=torch.rand(4, 8, 1, 16, 16).round(), action=torch.zeros(4, 8, 2))]
    >>> prediction_error(model, data, context=5, horizon=3).shape
    (3,)
    >>> 0.0 <= imputation_error(model, data, drop_mask(0.5, first_observed=4)) <= 1.0
    True
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from worldmodels.api import Batch, WorldModel
from worldmodels.data import iterate_batches

__all__ = [
    "elbo_per_step",
    "prediction_error",
    "imputation_error",
    "drop_mask",
    "gap_mask",
    "evaluate",
    "evaluate_checkpoint",
    "imagine_checkpoint",
    "impute_checkpoint",
    "batch_for",
]

MaskFn = Callable[[int, int, torch.Generator], Tensor]


def _check_count(who: str, name: str, value: Any, low: int) -> None:
    """Refuse ``value`` unless it is an int (not a bool) ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{who}: expected {name} an int >= {low}, received {value!r}")


@torch.no_grad()
def elbo_per_step(model: nn.Module, data: Any, batch_size: int = 32, seed: int = 0) -> float:
    """``metrics["elbo"]`` (unweighted ELBO per observed time step) averaged over ``data``, weighted by
    each batch's number of observed steps. Sampling models use a fixed ``seed``."""
    model.eval()
    total, n = 0.0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for b in iterate_batches(data, batch_size):
            steps = int(b.mask.sum())
            total += cast(WorldModel, model).loss(b, beta=1.0).metrics["elbo"] * steps
            n += steps
    if n == 0:
        raise ValueError("elbo_per_step: the data holds no observed step")
    return total / n


@torch.no_grad()
def prediction_error(
    model: nn.Module, data: Any, context: int, horizon: int, metric: str = "mse", batch_size: int = 32
) -> np.ndarray:
    """Open-loop prediction error per step ``[horizon]``: observe ``context`` frames, then imagine
    ``horizon`` frames under the true actions and compare the predicted means with the true frames.

    Args:
        metric: ``"mse"`` (mean squared error per dimension) or ``"bce"`` (binary cross-entropy per
            dimension, for binary data) or ``"pixel"`` (fraction of pixels wrong at threshold 0.5).
    """
    if metric not in ("mse", "bce", "pixel"):
        raise ValueError(f"prediction_error: expected metric in ('mse', 'bce', 'pixel'), received {metric!r}")
    model.eval()
    sums, n = torch.zeros(horizon, dtype=torch.float64), 0
    for b in iterate_batches(data, batch_size):
        B, T = b.shape
        if T < context + horizon:
            raise ValueError(
                f"prediction_error: expected windows of >= context + horizon = "
                f"{context + horizon} steps, received {T}"
            )
        pred = cast(WorldModel, model).predict(
            b.obs[:, :context], b.action[:, :context], b.action[:, context : context + horizon]
        )
        p, x = pred.obs, b.obs[:, context : context + horizon]  # [B, H, ...]
        if metric == "mse":
            err = (p - x) ** 2
        elif metric == "bce":
            err = torch.nn.functional.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), x, reduction="none")
        else:
            err = ((p > 0.5) != (x > 0.5)).double()
        sums += err.flatten(2).mean(-1).sum(0).double()
        n += B
    if n == 0:
        raise ValueError("prediction_error: the data holds no batch")
    return (sums / n).numpy()


def drop_mask(p: float, first_observed: int = 4) -> MaskFn:
    """A mask function dropping each frame with probability ``p`` after ``first_observed`` frames
    (KVAE §6.10 random-drop experiment, Fig. 6.3a).

    The draw is ``torch.rand(B, T, generator=g) >= p`` (one uniform per frame, the first
    ``first_observed`` frames then forced observed), so masks are reproducible bit for bit under a
    seeded generator; successive calls with one generator continue its stream.

    Example:
        >>> drop_mask(0.5, first_observed=2)(1, 6, torch.Generator().manual_seed(0)).int().tolist()
        [[1, 1, 0, 0, 0, 1]]
    """

    if isinstance(p, bool) or not isinstance(p, int | float | np.floating) or not 0.0 <= p <= 1.0:
        raise ValueError(f"drop_mask: expected a probability p in [0, 1], received {p!r}")
    _check_count("drop_mask", "first_observed", first_observed, 0)

    def fn(B_: int, T_: int, g: torch.Generator) -> Tensor:
        m = torch.rand(B_, T_, generator=g) >= p
        m[:, :first_observed] = True
        return m

    return fn


GAP_PLACEMENTS = ("window", "after_first")


def gap_mask(gap: int, first_observed: int = 4, middle_of: str = "window") -> MaskFn:
    """A mask function hiding ``gap`` consecutive frames in the middle (KVAE §6.10, Fig. 6.3b).

    Where the gap goes, for windows of ``T`` frames (``first_observed`` frames always observed):

    * ``middle_of="window"`` (default; ``worldmodels impute --gap``, the SRNN video experiment): centred in
      the whole window, frames ``start .. start + gap - 1`` with ``start = max(first_observed, (T - gap) // 2)``;
    * ``middle_of="after_first"`` (the KVAE ball experiments, ``worldmodels experiment kvae-ball``): centred
      in the ``T - first_observed`` frames after the first ones,
      ``start = first_observed + (T - first_observed - gap) // 2``.

    Either way ``gap <= T - first_observed`` (the mask function raises ``ValueError`` otherwise).

    The generator argument is unused (the mask is deterministic).

    Example:
        >>> g = torch.Generator()
        >>> gap_mask(2, first_observed=4)(1, 10, g).int().tolist()
        [[1, 1, 1, 1, 0, 0, 1, 1, 1, 1]]
        >>> gap_mask(2, first_observed=4, middle_of="after_first")(1, 10, g).int().tolist()
        [[1, 1, 1, 1, 1, 1, 0, 0, 1, 1]]
    """
    if middle_of not in GAP_PLACEMENTS:
        raise ValueError(f"gap_mask: expected middle_of in {GAP_PLACEMENTS}, received {middle_of!r}")
    _check_count("gap_mask", "gap", gap, 1)
    _check_count("gap_mask", "first_observed", first_observed, 0)

    def fn(B: int, T: int, g: torch.Generator) -> Tensor:
        m = torch.ones(B, T, dtype=torch.bool)
        if gap > T - first_observed:
            raise ValueError(f"gap_mask: expected a gap of at most T - first_observed = {T - first_observed} "
                             f"frames, received {gap}")
        if middle_of == "window":
            start = max(first_observed, (T - gap) // 2)
        else:
            start = first_observed + (T - first_observed - gap) // 2
        m[:, start : start + gap] = False
        return m

    return fn


@torch.no_grad()
def imputation_error(
    model: nn.Module, data: Any, mask_fn: MaskFn, seed: int = 0, batch_size: int = 32, metric: str = "pixel"
) -> float:
    """Error on the missing frames only. ``metric="pixel"``: the fraction of wrongly guessed pixels (KVAE's
    metric, thesis §6.10: threshold the imputed mean and the true frame at 0.5 and count disagreements);
    ``"mse"``: the mean squared error per pixel value.

    ``mask_fn(B, T, generator) -> [B, T] bool`` chooses the observed frames (:func:`drop_mask`,
    :func:`gap_mask`). An all-blank prediction scores ~0.024 on bouncing-ball box data (NOTES.md).
    """
    if metric not in ("pixel", "mse"):
        raise ValueError(f"imputation_error: expected metric 'pixel' or 'mse', received {metric!r}")
    model.eval()
    g = torch.Generator().manual_seed(seed)
    wrong, total = 0.0, 0
    for b in iterate_batches(data, batch_size):
        B, T = b.shape
        mask = mask_fn(B, T, g) & b.mask
        x = cast(WorldModel, model).impute(b.obs, b.action, mask)
        missing = ~mask  # [B, T]
        diff = (((x > 0.5) != (b.obs > 0.5)) if metric == "pixel" else (x - b.obs) ** 2).flatten(2)  # [B, T, D]
        wrong += float(diff[missing].sum())
        total += int(missing.sum()) * diff.shape[-1]
    if total == 0:
        raise ValueError("imputation_error: the mask hid no frame")
    return wrong / total


def evaluate(
    model: nn.Module,
    data: Iterable[Batch] | Any,
    context: int | None = None,
    horizon: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """The standard report: ELBO per step, open-loop prediction MSE over the horizon (half the window
    as context by default), imputation error with half the frames dropped at random."""
    _check_count("evaluate", "batch_size", batch_size, 1)
    first = next(iter(iterate_batches(data, batch_size)))
    T = first.shape[1]
    context = context if context is not None else max(1, T // 2)
    horizon = horizon if horizon is not None else T - context
    _check_count("evaluate", "context", context, 1)
    _check_count("evaluate", "horizon", horizon, 1)
    if context + horizon > T:
        raise ValueError(f"evaluate: expected context + horizon <= the window's {T} frames, received "
                         f"{context} + {horizon} = {context + horizon}")
    mse = prediction_error(model, data, context, horizon, "mse", batch_size)
    return {
        "elbo_per_step": elbo_per_step(model, data, batch_size, seed),
        "prediction_mse": [float(v) for v in mse],
        "prediction_mse_mean": float(mse.mean()),
        "context": context,
        "horizon": horizon,
        "imputation_error_drop50": imputation_error(
            model, data, drop_mask(0.5, min(4, T - 1)), seed, batch_size
        ),
    }


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    data_dir: str | os.PathLike,
    window: int = 20,
    context: int | None = None,
    horizon: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    plots: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """What ``worldmodels evaluate`` does: :func:`evaluate` a saved model on the windows of a dataset.

    With ``plots`` (a folder) it also writes ``prediction_error.png`` (MSE vs horizon, open-loop) and
    ``rollout.gif`` (ground truth vs open-loop prediction of the first window).
    """
    model, windows, collate = _load_for(checkpoint, data_dir, window, "evaluate")
    first = collate([windows[0]])
    data = _Collated(windows, collate)
    report = evaluate(model, data, context, horizon, batch_size, seed)
    report["checkpoint"] = str(checkpoint)
    report["model"] = type(model).model_name  # type: ignore[attr-defined]  # set by @register_model
    report["data"] = str(data_dir)
    if plots is not None:
        from worldmodels.viz import plot_metric, rollout_gif

        out = Path(plots)
        plot_metric(
            out / "prediction_error.png", {report["model"]: report["prediction_mse"]}, ylabel="MSE per pixel"
        )
        with torch.no_grad():
            c, h = report["context"], report["horizon"]
            wm = cast(WorldModel, model)
            pred = wm.predict(first.obs[:, :c], first.action[:, :c], first.action[:, c : c + h]).obs
        shown = torch.cat([first.obs[0, :c], pred[0]])
        rollout_gif(out / "rollout.gif", first.obs[0, : c + h], shown, context=c)
    return report


class _Collated(torch.utils.data.Dataset):
    """A WindowDataset whose ``collate`` the evaluation helpers pick up automatically."""

    def __init__(self, windows: Any, collate: Callable[[Any], Batch]):
        self.windows = windows
        self.collate = collate

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> Any:
        return self.windows[i]


def batch_for(model: nn.Module, batch: Batch) -> Batch:
    """``batch`` as ``model`` takes it: a model without control inputs (``config.action_dim == 0``, e.g. KVAE on
    the free ball) gets no actions, whatever the dataset recorded."""
    if int(cast(Any, model).config.action_dim) == 0:
        return dataclasses.replace(batch, action=batch.action[..., :0])
    return batch


def _load_for(checkpoint: str | os.PathLike, data_dir: str | os.PathLike, length: int,
              who: str) -> tuple[nn.Module, Any, Callable[[Any], Batch]]:
    """The saved model (eval mode), the ``length``-frame windows of the dataset, and a collate function giving
    the model their batches: a model without control inputs (``action_dim`` 0, e.g. KVAE on the free ball)
    gets none. Checks that the data fits."""
    from worldmodels.checkpoint import load
    from worldmodels.data import WindowDataset

    model = load(checkpoint)  # first: a missing checkpoint is the error to report
    windows = WindowDataset(data_dir, length=length)
    cfg: Any = model.config  # the model's own XConfig dataclass

    def collate(items: Any) -> Batch:
        return batch_for(model, windows.collate(items))

    first = collate([windows[0]])
    want, got = (tuple(cfg.obs_shape), int(cfg.action_dim)), (tuple(first.obs.shape[2:]), first.action.shape[-1])
    if want != got:
        raise ValueError(f"{who}: the model expects obs_shape {want[0]} and action_dim {want[1]}, the dataset "
                         f"gives {got[0]} and {got[1]}")
    return model.eval(), windows, collate


def _episode_window(checkpoint: str | os.PathLike, data_dir: str | os.PathLike, episode: int,
                    length: int, who: str) -> tuple[nn.Module, Batch]:
    """The saved model and the first ``length`` frames of ``episode`` as a batch of one."""
    model, windows, collate = _load_for(checkpoint, data_dir, length, who)
    return model, collate([windows[windows.index_of(episode)]])


@torch.no_grad()
def imagine_checkpoint(
    checkpoint: str | os.PathLike,
    data_dir: str | os.PathLike,
    episode: int = 0,
    context: int = 20,
    horizon: int = 100,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """What ``worldmodels imagine`` does: observe ``context`` frames of one episode, imagine ``horizon``
    more under the episode's own actions, and score the imagined frames against the true ones.

    With ``out`` (a folder) it writes ``imagination.gif`` (truth | imagination, side by side),
    ``imagination_mse.png`` and ``imagination.json``.

    Returns:
        ``{"mse": [horizon] per-step MSE, "mean_mse", "context", "horizon", "episode", ...}``.
    """
    _check_count("imagine", "context", context, 1)
    _check_count("imagine", "horizon", horizon, 1)
    model, b = _episode_window(checkpoint, data_dir, episode, context + horizon, "imagine")
    pred = cast(WorldModel, model).predict(b.obs[:, :context], b.action[:, :context], b.action[:, context:])
    mse = ((pred.obs - b.obs[:, context:]) ** 2).flatten(2).mean(-1)[0]  # [H]
    report = {"checkpoint": str(checkpoint), "data": str(data_dir), "episode": episode, "context": context,
              "horizon": horizon, "mean_mse": float(mse.mean()), "mse": [round(float(v), 6) for v in mse]}
    if out is not None:
        from worldmodels.files import write_json
        from worldmodels.viz import plot_metric, rollout_gif

        folder = Path(out)
        rollout_gif(folder / "imagination.gif", b.obs[0], torch.cat([b.obs[0, :context], pred.obs[0]]), context)
        plot_metric(folder / "imagination_mse.png", {type(model).__name__: mse.numpy()}, ylabel="MSE per pixel",
                    xlabel="imagined step")
        write_json(folder / "imagination.json", report)
    return report


@torch.no_grad()
def impute_checkpoint(
    checkpoint: str | os.PathLike,
    data_dir: str | os.PathLike,
    episode: int = 0,
    window: int = 20,
    drop: float | None = None,
    gap: int | None = None,
    first_observed: int = 4,
    seed: int = 0,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """What ``worldmodels impute`` does: hide frames of one episode window (each frame after
    ``first_observed`` with probability ``drop``, or ``gap`` consecutive middle frames), fill them with
    ``model.impute`` and score the filled frames (MSE and the fraction of wrong pixels at threshold 0.5).

    With ``out`` it writes ``imputation.gif`` (truth | observed-or-imputed) and ``imputation.json``.
    """
    if (drop is None) == (gap is None):
        raise ValueError(f"impute: expected exactly one of drop (a probability) or gap (frames), received "
                         f"drop={drop!r}, gap={gap!r}")
    _check_count("impute", "window", window, 1)
    _check_count("impute", "first_observed", first_observed, 0)
    if first_observed >= window:
        raise ValueError(f"impute: expected first_observed < window = {window}, received {first_observed}")
    if drop is not None and (isinstance(drop, bool) or not isinstance(drop, int | float | np.floating)
                             or not 0.0 <= drop < 1.0):
        raise ValueError(f"impute: expected drop a probability in [0, 1), received {drop!r}")
    if gap is not None:
        _check_count("impute", "gap", gap, 1)
        if gap > window - first_observed:
            raise ValueError(f"impute: expected gap <= window - first_observed = {window} - {first_observed} = "
                             f"{window - first_observed} frames, received {gap}")
    model, b = _episode_window(checkpoint, data_dir, episode, window, "impute")
    mask_fn = drop_mask(drop, first_observed) if drop is not None else gap_mask(int(gap or 0), first_observed)
    mask = mask_fn(1, window, torch.Generator().manual_seed(seed))  # [1, T]
    if bool(mask.all()):
        raise ValueError(f"impute: the mask hides no frame of the {window}-frame window; raise drop or gap")
    x = cast(WorldModel, model).impute(b.obs, b.action, mask)
    missing = ~mask[0]
    err = ((x[0] - b.obs[0]) ** 2).flatten(1).mean(-1)  # [T]
    wrong = ((x[0] > 0.5) != (b.obs[0] > 0.5)).flatten(1).double().mean(-1)  # [T]
    report = {"checkpoint": str(checkpoint), "data": str(data_dir), "episode": episode, "window": window,
              "drop": drop, "gap": gap, "seed": seed, "missing_frames": missing.nonzero()[:, 0].tolist(),
              "mse_missing": float(err[missing].mean()), "pixels_wrong_missing": float(wrong[missing].mean())}
    if out is not None:
        from worldmodels.files import write_json
        from worldmodels.viz import rollout_gif

        rollout_gif(Path(out) / "imputation.gif", b.obs[0], x[0], pred_label="imputed", observed=mask[0].tolist())
        write_json(Path(out) / "imputation.json", report)
    return report
