"""Small trained checkpoints shipped inside the package, loadable by name.

Each shipped model is a folder ``worldmodels/pretrained/<name>/`` holding a weights-only checkpoint
(``model.safetensors`` + ``config.json``, see :mod:`worldmodels.checkpoint`) and ``card.json``: the
command that trained it, its budget, its data, and a machine-readable spec of a *fixed* evaluation set
with the metric measured on it (``evaluation``). :func:`evaluate` recomputes that metric from library
code only; the evaluation data are generated (or, for music, built from ``music21``) into the user data
folder (``$WORLDMODELS_DATA`` or ``~/.cache/worldmodels``), never into the package.

Shipped names:

* ``gtmsm-imagenav`` -- GTM-SM (Ch. 7) on ``ImageNav-v0``: open-loop prediction MSE of 256 frames after
  256 memorised frames (§7.7.1). Trained with the displacement regression loss (true displacements).
* ``gtmsm-imagenav-elbo`` -- the same evaluation; GTM-SM trained with the ELBO alone on frames and actions
  (§7.4.1, 50,000 updates with the §7.7.1 schedule).
* ``kvae-box`` -- KVAE (Ch. 6) on ``BouncingBall-v0``: fraction of wrong pixels on missing frames,
  smoothing, each frame after the 4th dropped with probability 0.5 (§6.10, Fig. 6.3a).
* ``srnn-music`` -- SRNN (smooth + Res_q, Ch. 5) on the music21 Bach chorales: test ELBO per time step
  (§5.4; our data, not the thesis's JSB file).

Example:
    >>> import worldmodels
    >>> from worldmodels import pretrained
    >>> pretrained.names()
    ['gtmsm-imagenav', 'gtmsm-imagenav-elbo', 'kvae-box', 'srnn-music']
    >>> type(worldmodels.load("kvae-box")).__name__
    'KVAE'
    >>> pretrained.card("kvae-box")["evaluation"]["metric"]
    'imputation_error'
"""

from __future__ import annotations

import functools
import importlib
import os
import time
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from worldmodels.pretrained.registry import card, is_name, names, path, unknown_name_error

__all__ = ["names", "card", "path", "load", "evaluate", "is_name", "unknown_name_error"]


def load(name: str, map_location: str | torch.device = "cpu") -> nn.Module:
    """The shipped model ``name`` in eval mode (same as ``worldmodels.load(name)``)."""
    from worldmodels.checkpoint import load as load_checkpoint

    return load_checkpoint(path(name), map_location)


# ----------------------------------------------------------------------------- evaluation


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    from worldmodels.music import data_dir

    return Path(cache_dir).expanduser() if cache_dir is not None else data_dir()


def _policy_factory(spec: dict[str, Any]) -> Any:
    """The ``action_space -> policy`` factory named in an evaluation spec (``{"name": "module.Class",
    "kwargs"}``, the same description a dataset's ``meta.json`` records), imported by name."""
    module, _, attr = spec["name"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"pretrained: the evaluation policy {spec['name']!r} cannot be imported ({e})") from e
    return functools.partial(cls, **spec.get("kwargs", {}))


def _rollouts(spec: dict[str, Any], cache: Path, progress: bool) -> Path:
    """The evaluation episodes of ``spec`` (collected once into ``cache``, reused afterwards)."""
    from worldmodels.data import RolloutDataset, collect
    from worldmodels.files import json_digest

    keys = ("env_id", "env_kwargs", "policy", "seed", "episodes", "steps")
    folder = cache / "pretrained-eval" / f"{spec['env_id']}-{json_digest({k: spec[k] for k in keys})[:12]}"
    if (folder / "meta.json").exists() and RolloutDataset(folder).complete:
        return folder
    return collect(spec["env_id"], folder, spec["episodes"], spec["steps"], policy=_policy_factory(spec["policy"]),
                   num_envs=spec.get("num_envs", 1), seed=spec["seed"], env_kwargs=spec["env_kwargs"],
                   progress=progress)


@torch.no_grad()
def _prediction_mse(model: nn.Module, spec: dict[str, Any], cache: Path, progress: bool) -> dict[str, float]:
    """Open-loop prediction MSE (GTM-SM §7.7.1): memorise ``context`` frames of each episode, imagine
    ``horizon`` frames under the true actions; MSE per pixel of the predicted mean frame (clipped to the
    data range [0, 1]) against the true frame, averaged over steps and episodes."""
    from worldmodels.api import WorldModel
    from worldmodels.data import WindowDataset

    tau, H = int(spec["context"]), int(spec["horizon"])
    windows = WindowDataset(_rollouts(spec, cache, progress), length=tau + H)
    n = windows.data.num_episodes
    sums = torch.zeros(H, dtype=torch.float64)  # [H]
    for e0 in range(0, n, spec["batch_size"]):
        b = windows.collate(windows.__getitems__([windows.index_of(e) for e in range(e0, min(n, e0 + spec["batch_size"]))]))
        pred = cast(WorldModel, model).predict(b.obs[:, :tau], b.action[:, :tau], b.action[:, tau : tau + H])
        err = (pred.obs.clamp(0, 1) - b.obs[:, tau : tau + H]).square().flatten(2).mean(-1)  # [B, H]
        sums += err.sum(0).double()
    mse = sums / n
    return {"value": float(mse.mean()), "mse_step1": float(mse[0]), f"mse_step{H}": float(mse[-1])}


@torch.no_grad()
def _imputation_error(model: nn.Module, spec: dict[str, Any], cache: Path, progress: bool) -> dict[str, float]:
    """KVAE's imputation metric (§6.10): :func:`worldmodels.evaluate.imputation_error` with
    :func:`~worldmodels.evaluate.drop_mask` on every episode of the evaluation set (smoothing)."""
    from worldmodels.data import WindowDataset
    from worldmodels.evaluate import batch_for, drop_mask, imputation_error

    windows = WindowDataset(_rollouts(spec, cache, progress), length=int(spec["steps"]) + 1)
    n = windows.data.num_episodes
    batch = batch_for(model, windows.collate(windows.__getitems__([windows.index_of(e) for e in range(n)])))
    m = spec["mask"]
    value = imputation_error(model, [batch], drop_mask(float(m["drop"]), int(m["first_observed"])),
                             seed=int(m["seed"]), batch_size=n)
    return {"value": value}


def _music_elbo(model: nn.Module, spec: dict[str, Any], cache: Path, progress: bool) -> dict[str, float]:
    """Test ELBO per time step on whole chorales (:func:`worldmodels.music.evaluate_elbo_weighted`)."""
    from worldmodels.music import evaluate_elbo_weighted, load_chorales

    data = load_chorales(cache, progress=progress, resolution=float(spec["resolution"])).split(spec["split"])
    both = evaluate_elbo_weighted(model, data, n_samples=int(spec["n_samples"]), seed=int(spec["seed"]))
    return {"value": both[spec["averaging"]], "elbo_frames": both["frames"], "elbo_sequences": both["sequences"]}


_METRICS = {"prediction_mse": _prediction_mse, "imputation_error": _imputation_error, "test_elbo_per_step": _music_elbo}


def evaluate(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    model: nn.Module | None = None,
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Recompute the metric of ``name``'s card on its fixed evaluation set.

    Args:
        name: a shipped model name (:func:`names`).
        cache_dir: where evaluation data are generated / cached (default ``$WORLDMODELS_DATA`` or
            ``~/.cache/worldmodels``).
        progress: show progress bars while the data are generated.
        model: score this model instead of the shipped weights (``scripts/ship_pretrained.py`` scores a
            run before it is shipped); default: the shipped model.
        spec: the evaluation spec; default: the card's ``evaluation``.

    Returns:
        ``{"name", "metric", "value", "stated", "tolerance", "within_tolerance", "wall_clock_s", ...}``:
        ``value`` is the metric measured now, ``stated`` the card's number (``None`` before it is written).
    """
    spec = spec if spec is not None else card(name)["evaluation"]
    kind = spec["metric"]
    if kind not in _METRICS:
        raise ValueError(f"pretrained: unknown metric {kind!r} in the card of {name!r}; expected one of {list(_METRICS)}")
    net = model if model is not None else load(name)
    net.eval()
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(spec.get("seed", 0)))
        out = _METRICS[kind](net, spec, _cache_root(cache_dir), progress)
    stated, tol = spec.get("value"), spec.get("tolerance")
    within = None if stated is None or tol is None else abs(out["value"] - stated) <= tol
    return {"name": name, "metric": kind, **out, "stated": stated, "tolerance": tol, "within_tolerance": within,
            "wall_clock_s": round(time.perf_counter() - t0, 2)}


# The fixed evaluation sets (copied into each card.json by scripts/ship_pretrained.py; the card is what
# evaluate() reads). Seeds and settings match the experiments that produced the documented numbers.
EVALUATIONS: dict[str, dict[str, Any]] = {
    "gtmsm-imagenav": {
        "metric": "prediction_mse",
        "description": "open-loop prediction MSE per pixel (mean over 256 predicted steps and the episodes) "
                       "after memorising 256 frames; predicted mean frames clipped to [0, 1]",
        "env_id": "ImageNav-v0", "env_kwargs": {"image": "texture"},
        "policy": {"name": "agents.explorers.PoissonRepeat", "kwargs": {"lam": 2.0}},
        "seed": 10000, "episodes": 16, "steps": 512, "num_envs": 16,
        "context": 256, "horizon": 256, "batch_size": 16,
    },
    "kvae-box": {
        "metric": "imputation_error",
        "description": "fraction of wrongly guessed pixels (threshold 0.5) on the missing frames, KVAE "
                       "smoothing; first 4 frames observed, each later frame dropped with probability 0.5",
        "env_id": "BouncingBall-v0", "env_kwargs": {},
        "policy": {"name": "agents.explorers.PoissonRepeat", "kwargs": {"lam": 2.0}},
        "seed": 10000, "episodes": 200, "steps": 19, "num_envs": 100,
        "mask": {"drop": 0.5, "first_observed": 4, "seed": 1},
    },
    "srnn-music": {
        "metric": "test_elbo_per_step",
        "description": "test ELBO per time step (nats) of whole chorales, frame-weighted (sum of ELBOs / "
                       "number of steps), averaged over 4 samples",
        "data": "music21 Bach chorales as 88-key piano rolls (worldmodels.music.load_chorales)",
        "resolution": 1.0, "split": "test", "averaging": "frames", "n_samples": 4, "seed": 2,
    },
}
EVALUATIONS["gtmsm-imagenav-elbo"] = dict(EVALUATIONS["gtmsm-imagenav"])  # the same fixed set, the ELBO-only model
