"""SRNN (and the KVAE) as action-conditioned video world models: open-loop prediction and imputation
(the second experiment of the SRNN results, docs/results/srnn.md §2; SRNN thesis Ch. 5, KVAE Ch. 6).

Two data sets collected with random explorers (``worldmodels.data.collect``):

* ``ball``: ``BouncingBallForce-v0`` (32x32 binary frames, a continuous 2-D force on the ball each step),
  48-frame episodes, uniform random forces; the models see the frames average-pooled to 16x16 (a 4x
  cheaper conv stack on this shared 2-core machine; the errors are measured at 16x16);
* ``nav``: ``ImageNav-v0`` (8x8 RGB crops of a new procedural texture per episode, 5 moves with Poisson
  action repeats), 48-frame episodes; the crops are modelled as 192-dim vectors (the conv stacks of
  ``worldmodels.nn`` start at 16 px).

Models, trained with the same number of updates on the same windows: SRNN (smooth + Res_q, preset
``video``: ``u_t`` = previous action, frames dropped with p = 0.3 during training so the smoothing
network learns to impute) and, on ``ball``, the KVAE (Ch. 6, control input ``B u_t``, same frame
dropping). Metrics on held-out episodes: open-loop prediction error over 32 steps after 16 context
frames (pixel error at threshold 0.5 on ``ball``, MSE on ``nav``), imputation error with half the
frames dropped at random and with a gap of 8 frames (first 4 always observed), next to the naive
"repeat the last context frame", "mean context frame" and "blank frame" predictors.

Phases: ``train`` (per environment in turn: collect the episodes, train each model, evaluate it and
write ``docs/results/srnn_video.json`` + GIFs + the prediction plot; resumable) and ``report``
(``docs/results/srnn.md`` from the JSON files, :func:`worldmodels.experiments.srnn_music.write_page`).

Command (what produced docs/results/srnn_video.json; ``python scripts/srnn_video.py`` takes the same options)::

    worldmodels experiment srnn-video --envs ball nav
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.explorers import explorer_factory
from worldmodels import baselines, checkpoint, viz
from worldmodels.api import Batch
from worldmodels.data import WindowDataset, collect
from worldmodels.evaluate import drop_mask, gap_mask, imputation_error, prediction_error
from worldmodels.experiments import Experiment, record
from worldmodels.experiments.srnn_music import write_page
from worldmodels.models import build_model
from worldmodels.train import TrainConfig, Trainer, iterate_batches

__all__ = ["Args", "ENVS", "Flat", "naive_errors", "run_env", "train", "report", "EXPERIMENT"]

ROOT = Path(__file__).resolve().parents[2]  # the checkout: --out and --results are relative to it

ENVS: dict[str, dict[str, Any]] = {
    "ball": {"env_id": "BouncingBallForce-v0", "env_kwargs": {"max_episode_steps": 64}, "policy": "uniform",
             "metric": "pixel"},
    "nav": {"env_id": "ImageNav-v0", "env_kwargs": {}, "policy": "poisson", "metric": "mse"},
}


@dataclass
class Args:
    envs: tuple[str, ...] = ("ball", "nav")
    train_episodes: int = 320
    test_episodes: int = 128
    frames: int = 48
    context: int = 16
    horizon: int = 32
    epochs: int = 30  # nav: same number of updates for every model (30 epochs of 320 windows, batch 16)
    epochs_ball: int = 30  # ball: the same budget (kept separate to allow a smaller one for the conv models)
    batch_size: int = 16
    seed: int = 0
    threads: int = 1
    out: str = "runs/srnn_video"
    results: str = "docs/results"  # folder of srnn_video.json, its GIFs and plots, and srnn.md


class Flat(torch.utils.data.Dataset):
    """Windows with image crops flattened to vectors ``[B, T, C*H*W]`` (ImageNav 8x8 crops), or with
    frames average-pooled by ``pool`` (``flatten=False``)."""

    def __init__(self, windows: WindowDataset, flatten: bool = True, pool: int = 1):
        self.windows, self.flatten, self.pool = windows, flatten, pool

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        return self.windows[i]

    def collate(self, items: list) -> Batch:
        b = self.windows.collate(items)
        obs = b.obs
        if self.pool > 1:
            B, T = obs.shape[:2]
            x = torch.nn.functional.avg_pool2d(obs.flatten(0, 1), self.pool)  # [B*T, C, H/p, W/p]
            obs = x.reshape(B, T, *x.shape[1:])
        if self.flatten:
            obs = obs.flatten(2)
        return Batch(obs=obs, action=b.action, mask=b.mask, is_first=b.is_first)


def _data(env: str, args: Args) -> tuple[Flat, Flat]:
    spec = ENVS[env]
    sets = []
    for split, n, seed in (("train", args.train_episodes, args.seed), ("test", args.test_episodes, args.seed + 1)):
        path = collect(spec["env_id"], ROOT / args.out / "data" / f"{env}_{split}", episodes=n,
                       steps=args.frames - 1, policy=explorer_factory(spec["policy"]), num_envs=16, seed=seed,
                       env_kwargs=spec["env_kwargs"], progress=False)
        w = WindowDataset(path, args.frames)
        sets.append(Flat(w) if env == "nav" else Flat(w, flatten=False, pool=2))
    return sets[0], sets[1]


def _models(env: str, obs_shape: tuple[int, ...], action_dim: int) -> dict[str, tuple[Any, dict]]:
    """name -> (model, TrainConfig overrides)."""
    out: dict[str, tuple[Any, dict]] = {}
    torch.manual_seed(0)
    srnn_kw: dict[str, Any] = {"obs_shape": obs_shape, "action_dim": action_dim}
    if env == "nav":
        srnn_kw |= {"obs_kind": "bernoulli"}  # cross-entropy on [0, 1] intensities keeps means in [0, 1]
    out["SRNN"] = (build_model("srnn", "video", **srnn_kw),
                   {"lr": 1e-3, "beta0": 0.2, "beta_anneal_steps": 200, "grad_clip": 100.0})
    if env == "ball":
        torch.manual_seed(0)
        kvae = build_model("kvae", "box", obs_shape=obs_shape, action_dim=action_dim, train_drop_prob=0.3,
                           train_drop_init=4)
        out["KVAE"] = (kvae, {"lr": 0.007, "lr_schedule": "step", "decay_rate": 0.85, "decay_every": 20,
                              "grad_clip": 150.0, "freeze_until": {"alpha_net": 5}})
    return out


@torch.no_grad()
@torch.no_grad()
def naive_errors(data: Any, context: int, horizon: int, metric: str) -> dict[str, list[float]]:
    """Error per horizon step ``[horizon]`` of repeating the last context frame, of the mean context frame
    and of a blank (all-zero) frame (``metric``: ``"pixel"``, wrong pixels at 0.5, or ``"mse"``)."""
    sums = {k: np.zeros(horizon) for k in ("repeat last frame", "mean context frame", "blank frame")}
    n = 0
    for b in iterate_batches(data, 64):
        x = b.obs[:, context:context + horizon]
        preds = {"repeat last frame": baselines.copy_last(b.obs[:, :context], horizon),
                 "mean context frame": baselines.mean_frame(b.obs[:, :context], horizon),
                 "blank frame": torch.zeros_like(x)}
        for k, p in preds.items():
            err = ((p > 0.5) != (x > 0.5)).float() if metric == "pixel" else (p - x) ** 2
            sums[k] += err.flatten(2).mean(-1).sum(0).double().numpy()
        n += b.shape[0]
    return {k: (v / n).tolist() for k, v in sums.items()}


def run_env(env: str, args: Args) -> dict:
    """Collect, train and evaluate every model of ``env``; writes its GIFs and prediction plot and returns
    its entry of ``srnn_video.json``'s metrics."""
    spec = ENVS[env]
    docs = ROOT / args.results
    train_set, test = _data(env, args)
    first = next(iter(iterate_batches(test, 4)))
    obs_shape, action_dim = tuple(first.obs.shape[2:]), int(first.action.shape[-1])
    res: dict = {"env_id": spec["env_id"], "obs_shape": list(obs_shape), "action_dim": action_dim,
                 "epochs": args.epochs_ball if env == "ball" else args.epochs,
                 "train_windows": len(train_set), "test_windows": len(test), "metric": spec["metric"], "models": {}}
    res["naive"] = naive_errors(test, args.context, args.horizon, spec["metric"])
    for name, (untrained, overrides) in _models(env, obs_shape, action_dim).items():
        run = ROOT / args.out / f"{env}_{name.lower()}"
        t0 = time.perf_counter()
        epochs = args.epochs_ball if env == "ball" else args.epochs
        cfg = TrainConfig(epochs=epochs, batch_size=args.batch_size, seed=args.seed, out_dir=str(run),
                          checkpoint_every=100, log_every=10, progress=False, tensorboard=False, **overrides)
        fit = Trainer(untrained, train_set, cfg).fit()
        if fit.stopped == "signal":
            raise SystemExit(f"{env}/{name}: interrupted at step {fit.step}; rerun to resume")
        wall = time.perf_counter() - t0
        model: Any = checkpoint.load(run / "last")
        pe = prediction_error(model, test, args.context, args.horizon, spec["metric"])
        m = {"steps": fit.step, "train_wall_clock_s_this_session": wall, "prediction_error": pe.tolist(),
             "prediction_error_mean": float(pe.mean()), "params": sum(p.numel() for p in model.parameters())}
        if spec["metric"] == "pixel":
            m["imputation_drop50"] = imputation_error(model, test, drop_mask(0.5, 4), seed=args.seed)
            m["imputation_gap8"] = imputation_error(model, test, gap_mask(8, 4), seed=args.seed)
        else:
            m["imputation_drop50_mse"] = imputation_error(model, test, drop_mask(0.5, 4), seed=args.seed, metric="mse")
            m["imputation_gap8_mse"] = imputation_error(model, test, gap_mask(8, 4), seed=args.seed, metric="mse")
        res["models"][name] = m
        print(f"[{env}/{name}] {fit.step} steps, prediction error {m['prediction_error_mean']:.4f}", flush=True)
        # one held-out sequence as a GIF: context, then open-loop prediction under the true actions
        b = next(iter(iterate_batches(test, 1)))
        pred = model.predict(b.obs[:, :args.context], b.action[:, :args.context],
                             b.action[:, args.context:args.context + args.horizon]).obs
        seq = torch.cat([b.obs[:, :args.context], pred], 1)[0]
        true = b.obs[0, :args.context + args.horizon]
        if env == "nav":
            seq, true = seq.reshape(-1, 3, 8, 8), true.reshape(-1, 3, 8, 8)
        viz.rollout_gif(docs / f"srnn_video_{env}_{name.lower()}.gif", true, seq.clamp(0, 1), context=args.context)
    curves = {k: v["prediction_error"] for k, v in res["models"].items()} | res["naive"]
    viz.plot_metric(docs / f"srnn_video_{env}_prediction.png", curves,
                    ylabel="pixel error" if res["metric"] == "pixel" else "MSE per pixel",
                    title=f"{res['env_id'].split('-')[0]}: open loop after {args.context} frames")
    return res


def train(args: Args) -> None:
    """Phase ``train``: :func:`run_env` for every environment of ``args.envs``; ``srnn_video.json`` is
    rewritten after each (kept environments of an earlier invocation with the same budget stay in it)."""
    unknown = [e for e in args.envs if e not in ENVS]
    if unknown:
        raise ValueError(f"srnn-video: expected envs among {list(ENVS)}, received {unknown}")
    torch.set_num_threads(args.threads)
    path = ROOT / args.results / "srnn_video.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    budget = {"epochs": args.epochs, "epochs_ball": args.epochs_ball, "batch_size": args.batch_size,
              "train_episodes": args.train_episodes, "test_episodes": args.test_episodes, "frames": args.frames}
    metrics = old.get("metrics", {}) if old.get("budget") == budget else {}
    wall = old.get("wall_clock_s", 0.0) if metrics else 0.0
    command = record.command_line()
    for env in args.envs:  # the JSON is rewritten after every environment
        t0 = time.perf_counter()
        metrics[env] = run_env(env, args)
        wall += time.perf_counter() - t0
        rec = record.record("srnn_video", command, seed=args.seed, wall_clock_s=wall, budget=budget,
                            metrics=metrics, context=args.context, horizon=args.horizon)
        record.write(rec, path)


def report(args: Args) -> None:
    """Phase ``report``: ``srnn.md`` from ``srnn_music.json`` and ``srnn_video.json`` in ``args.results``."""
    write_page(ROOT / args.results)


EXPERIMENT = Experiment("srnn-video", "SRNN and KVAE as action-conditioned video world models: prediction and "
                        "imputation error (Ch. 5-6)", Args, {"train": train, "report": report})
