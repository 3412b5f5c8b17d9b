"""GTM-SM image navigation with obstacles (thesis §7.10.1): the landmark inference network of §7.10.

One command runs everything (collect -> train both variants -> evaluate -> plots, GIF, JSON, Markdown)::

    worldmodels experiment gtmsm-obstacles                                     # full budget of this experiment
    worldmodels experiment gtmsm-obstacles --phase train --variant landmark    # one part (resumable)
    worldmodels experiment gtmsm-obstacles --phase report                      # docs/results/gtmsm_obstacles.md

(``python scripts/gtmsm_obstacles.py OPTIONS`` is the same command.) Phases: ``data``, ``train``
(``--variant``), ``eval`` (JSON, plots, GIF, then the page), ``report`` (the page from the JSON).

Data: ``ImageNavObstacles-v0`` (ImageNav of §7.4.1 with 8 impassable grey cells at random places in every
episode; a blocked move leaves the agent where it is and ``info["displacement"]`` is 0), procedural
textures, Poisson action repeats (λ = 2), start in the centre. Training windows are the first
``tau + train_pred`` frames of an episode (τ = 128 memorised, 32 scored), test episodes come from a seed
never used in training.

Two GTM-SM variants, same data, same seed, same number of updates, both warm-started from the ImageNav
checkpoint of session 2 (``runs/gtmsm_imagenav/gtmsm_disp_gauss/last``: Gaussian likelihood with a learned
pixel σ, displacement-regressed transition; the landmark networks start fresh):

* ``prior``: memorisation states from the transition prior (eq. 7.2), the prior's displacement ``d_t``
  regressed on the ACTUAL displacement (0 for blocked moves; §7.10.1 "we use displacement information").
* ``landmark``: the same, plus the landmark inference network ``q(s_t | s_{t-1}, a_t, z_t, m_{1:t-1})``
  during memorisation (§7.10), the KL of the ELBO under Fig. 7.5 and the actual displacement as a Gaussian
  observation of the inferred step (``landmark_displacement_std``).

Metrics: (a) inferred-state accuracy during memorisation: R² and mean position error (grid cells) after one
least-squares affine map from ``s_t`` to the true position per variant (fitted on all test memorisation
steps), split into steps whose move was blocked by an obstacle, blocked by a wall, free moves; (b) pixel MSE
per prediction step after τ, with the ``no_memory`` and ``memory_copy`` references of
:mod:`worldmodels.experiments.gtmsm_imagenav` (:mod:`worldmodels.baselines`).

Example:
    >>> run_labels(Args(eval_suffixes="_s1"))
    ['prior', 'landmark', 'prior_s1', 'landmark_s1']
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import worldmodels
from worldmodels.api import Batch
from worldmodels.baselines import mean_frame, memory_copy
from worldmodels.data import EpisodeStartWindows, WindowDataset, collect
from worldmodels.experiments import Experiment, record
from worldmodels.experiments.gtmsm_imagenav import TRAIN_LEN, save_train_args
from worldmodels.files import atomic_save
from worldmodels.probes import affine_fit, affine_r2
from worldmodels.train import TrainConfig, Trainer
from worldmodels.viz import columns_gif

__all__ = ["Args", "EXPERIMENT", "ENV_ID", "VARIANTS", "MOVES", "data_dirs", "model_overrides", "train_variant",
           "step_kinds", "test_windows", "evaluate", "run_labels", "plots", "run_info", "write_results",
           "write_markdown", "data", "train", "eval", "report"]

ENV_ID = "ImageNavObstacles-v0"
VARIANTS = ("prior", "landmark")


@dataclass
class Args:
    """Arguments (CleanRL style: one dataclass, read top to bottom); the defaults are the experiment's preset."""

    variant: str = "all"  # prior | landmark | all (train phase)
    out: str = "runs/gtmsm_obstacles"
    results: str = "docs/results"
    seed: int = 0
    train_episodes: int = 2000
    test_episodes: int = 128
    test_seed_offset: int = 20_000  # test episodes: SeedSequence([seed + offset, i]), never used in training
    tau: int = 128
    train_pred: int = 32
    test_horizon: int = 64
    updates: int = 4000
    lr: float = 5e-4
    lr_final: float = 5e-5
    batch_size: int = 16
    displacement_weight: float = 1.0
    landmark_k: int = 3
    landmark_prior_std: float = 0.5
    landmark_displacement_std: float = 0.05
    init_from: str = "runs/gtmsm_imagenav/gtmsm_disp_gauss/last"
    threads: int = 1
    checkpoint_every: int = 250
    train_seed: int = -1  # seed of the training run (data order, noise); -1: ``seed``
    run_suffix: str = ""  # run folder = variant + suffix (e.g. "_s1" for a second training seed)
    eval_suffixes: str = ""  # extra run suffixes to evaluate besides "", comma-separated (e.g. "_s1")


# ----------------------------------------------------------------------------- data


def data_dirs(args: Args) -> tuple[Path, Path]:
    """The training and test dataset folders under ``args.out``."""
    return Path(args.out) / "data" / "train", Path(args.out) / "data" / "test"


def data(args: Args) -> None:
    """Phase ``data``: train episodes have ``TRAIN_LEN`` frames (as in gtmsm-imagenav); training reads their
    first ``tau + train_pred`` frames. Test episodes: ``tau + test_horizon + 1`` frames, seed
    ``seed + test_seed_offset``."""
    from agents.explorers import explorer_factory

    train_dir, test_dir = data_dirs(args)
    kwargs = {"image": "texture"}
    policy = explorer_factory("poisson", lam=2.0)
    collect(ENV_ID, train_dir, args.train_episodes, TRAIN_LEN - 1, policy=policy, num_envs=16, seed=args.seed,
            env_kwargs=kwargs)
    collect(ENV_ID, test_dir, args.test_episodes, args.tau + args.test_horizon, policy=policy, num_envs=16,
            seed=args.seed + args.test_seed_offset, env_kwargs=kwargs)


# ----------------------------------------------------------------------------- training


def model_overrides(args: Args, variant: str) -> dict[str, Any]:
    """Config of a variant: the ``imagenav`` preset with τ = ``args.tau`` and the warm-started gate on.

    Example:
        >>> model_overrides(Args(), "prior")
        {'tau': 128, 'wall_gate_from': 0, 'displacement_weight': 1.0}
    """
    out: dict[str, Any] = dict(tau=args.tau, wall_gate_from=0, displacement_weight=args.displacement_weight)
    if variant == "landmark":
        out.update(landmark_inference=True, landmark_k=args.landmark_k, landmark_prior_std=args.landmark_prior_std,
                   landmark_displacement_std=args.landmark_displacement_std)
    return out


def train_variant(args: Args, variant: str) -> Path:
    """Train (or resume) ``variant`` in ``out/<variant><run_suffix>``; its run folder."""
    if variant not in VARIANTS:
        raise ValueError(f"--variant: expected one of {VARIANTS}, received {variant!r}")
    torch.set_num_threads(args.threads)
    train_dir, _ = data_dirs(args)
    out_dir = Path(args.out) / (variant + args.run_suffix)
    seed = args.seed if args.train_seed < 0 else args.train_seed
    save_train_args(out_dir, args, variant)
    model = worldmodels.build_model("gtmsm", "imagenav", **model_overrides(args, variant))
    if args.init_from and not (out_dir / "last").exists():  # warm start (a resumed run loads its own `last`)
        parent = worldmodels.load(args.init_from).state_dict()
        missing, unexpected = model.load_state_dict(parent, strict=False)
        if unexpected:
            raise ValueError(f"--init-from {args.init_from}: parameters unknown to the model: {unexpected}")
        print(f"--init-from {args.init_from}: initialised fresh: {missing}")
    length = args.tau + args.train_pred
    batches = EpisodeStartWindows(train_dir, [(length, args.updates)], args.batch_size, seed)
    cfg = TrainConfig(lr=args.lr, lr_schedule="linear", lr_final=args.lr_final, lr_decay_steps=args.updates,
                      epochs=1, max_steps=args.updates, batch_size=args.batch_size, seed=seed,
                      out_dir=str(out_dir), checkpoint_every=args.checkpoint_every, log_every=25,
                      tensorboard=False)
    Trainer(model, batches, cfg).fit()
    return out_dir


def train(args: Args) -> None:
    """Phase ``train``: both variants (``--variant all``) or ``--variant``."""
    for v in VARIANTS if args.variant == "all" else (args.variant,):
        train_variant(args, v)


# ----------------------------------------------------------------------------- evaluation

MOVES = torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1], [0, 0]], dtype=torch.float64)  # envs.image_nav


def step_kinds(action: torch.Tensor, pose: torch.Tensor, n_positions: int = 9) -> dict[str, torch.Tensor]:
    """Classify every step ``t >= 1`` by what the move ``action[:, t]`` did: ``[B, T]`` bool masks.

    ``obstacle``: a move whose target cell is on the grid but the agent did not move (an obstacle stopped
    it); ``wall``: a move off the grid; ``free``: a move that happened; ``stay``: the stay action.
    ``action`` is one-hot ``[B, T, 5]`` (zero at t = 0), ``pose`` the true ``(row, col)`` ``[B, T, 2]``.
    """
    a = action.argmax(-1)  # [B, T]
    acted = action.sum(-1) > 0
    prev = torch.cat([pose[:, :1], pose[:, :-1]], 1).double()
    target = prev + MOVES[a]
    off = ((target < 0) | (target > n_positions - 1)).any(-1)
    still = (pose.double() == prev).all(-1)
    move = acted & (a != 4)
    return {"obstacle": move & still & ~off, "wall": move & off, "free": move & ~still,
            "stay": acted & (a == 4)}


def test_windows(args: Args, chunk: int = 16) -> Iterator[Batch]:
    """The test episodes' windows of ``tau + test_horizon`` frames from frame 0, ``chunk`` at a time."""
    _, test_dir = data_dirs(args)
    w = WindowDataset(test_dir, args.tau + args.test_horizon)
    starts = w.episode_starts()  # [n]
    for e0 in range(0, len(starts), chunk):
        yield w.collate(w.__getitems__(starts[e0:e0 + chunk].tolist()))


@torch.no_grad()
def evaluate(args: Args) -> dict[str, Any]:
    """State accuracy during memorisation and open-loop prediction errors of every run (:func:`run_labels`)
    on the test episodes, with the references; writes the plots and the GIF and returns the metrics."""
    torch.set_num_threads(args.threads)
    tau, H = args.tau, args.test_horizon
    models = {}
    for v in run_labels(args):
        path = Path(args.out) / v / "last"
        if path.exists():
            models[v] = worldmodels.load(path)
        else:
            print(f"skip {v}: no checkpoint at {path}")
    mse = {k: torch.zeros(H, dtype=torch.float64) for k in [*models, "no_memory", "memory_copy"]}
    # split of the error by whether an obstacle has already stopped a move in the prediction phase (from then on
    # the prior rollout is off by a cell whatever the memory holds): [sum before, sum after]
    split = {k: torch.zeros(2, dtype=torch.float64) for k in mse}
    n_before = 0
    s_mem: dict[str, list[torch.Tensor]] = {k: [] for k in models}
    s_pred: dict[str, list[torch.Tensor]] = {k: [] for k in models}
    beta: dict[str, list[torch.Tensor]] = {}
    poses, kinds_all = [], []
    example: dict[str, Any] = {}
    n = 0
    for batch in test_windows(args):
        obs, act, pose = batch.obs, batch.action, batch.state
        if pose is None:
            raise ValueError(f"gtmsm-obstacles: expected test episodes with true positions (extras 'pose') in "
                             f"{data_dirs(args)[1]}, received none")
        truth = obs[:, tau : tau + H]
        preds = {"no_memory": mean_frame(obs[:, :tau], H)}
        preds["memory_copy"], _ = memory_copy(obs[:, :tau], pose[:, :tau], pose[:, tau : tau + H],
                                              fallback=preds["no_memory"])
        for v, model in models.items():
            belief = model.observe(obs[:, :tau], act[:, :tau])
            im = model.imagine(belief, act[:, tau : tau + H])
            preds[v] = im.obs.clamp(0, 1)
            s_mem[v].append(belief.state["keys"])  # type: ignore[index]
            s_pred[v].append(im.extras["s"])
            if model.config.landmark_inference:
                mu_z, _ = model.encode(obs[:, :tau])
                lm = model.landmark_posterior(act[:, :tau], mu_z, torch.ones(mu_z.shape[:2], dtype=torch.bool))
                beta.setdefault(v, []).append(lm.beta.sum(-1))
        hit = step_kinds(act[:, : tau + H], pose[:, : tau + H])["obstacle"][:, tau:]  # [B, H]
        clean = hit.long().cumsum(1) == 0  # no obstacle-blocked move yet in the prediction phase
        n_before += int(clean.sum())
        for k, p in preds.items():
            e = (p - truth).square().mean((2, 3, 4)).double()  # [B, H]
            mse[k] += e.sum(0)
            split[k] += torch.stack([e[clean].sum(), e[~clean].sum()])
        poses.append(pose[:, : tau + H].double())
        kinds_all.append(step_kinds(act[:, : tau + H], pose[:, : tau + H]))
        if not example:
            example = {"truth": truth[0], **{k: v[0] for k, v in preds.items()}}
        n += obs.shape[0]
    pose = torch.cat(poses)  # [N, τ + H, 2]
    kinds = {k: torch.cat([d[k] for d in kinds_all]) for k in kinds_all[0]}  # [N, τ + H]
    mem = {k: v[:, :tau] for k, v in kinds.items()}
    metrics: dict[str, Any] = {
        "episodes": n, "tau": tau, "horizon": H,
        "data": {"frac_of_moves_" + k: float(mem[k].sum() / (mem["obstacle"] | mem["wall"] | mem["free"]).sum())
                 for k in ("obstacle", "wall", "free")}
                | {"obstacle_blocked_per_episode_memorisation": float(mem["obstacle"].sum(1).double().mean()),
                   "obstacle_blocked_per_episode_prediction": float(kinds["obstacle"][:, tau:].sum(1).double().mean())},
        "curves": {k: (v / n).tolist() for k, v in mse.items()}, "summary": {}, "states": {}, "state_curves": {},
        "examples": {},
    }
    for k, v in metrics["curves"].items():
        c = np.array(v)
        metrics["summary"][k] = {"mse_step1": float(c[0]), "mse_step32": float(c[min(31, H - 1)]),
                                 f"mse_step{H}": float(c[-1]), "mse_mean": float(c.mean()),
                                 "mse_before_pred_block": float(split[k][0]) / max(n_before, 1),
                                 "mse_after_pred_block": float(split[k][1]) / max(n * H - n_before, 1)}
    metrics["data"]["frac_pred_steps_before_pred_block"] = n_before / (n * H)
    for v in models:
        s = torch.cat(s_mem[v]).double()  # [N, τ, S]
        sp = torch.cat(s_pred[v]).double()  # [N, H, S]
        W, fit = affine_fit(s.reshape(-1, s.shape[-1]), pose[:, :tau].reshape(-1, 2))
        err = (fit.reshape(n, tau, 2) - pose[:, :tau]).norm(dim=-1)  # [N, τ] grid cells
        Xp = torch.cat([sp, torch.ones(*sp.shape[:2], 1, dtype=torch.float64)], -1)
        err_p = (Xp @ W - pose[:, tau:]).norm(dim=-1)  # [N, H], with the memorisation-phase map
        row = {"r2_memorisation": affine_r2(s, pose[:, :tau]),
               "pos_err_memorisation": float(err.mean()),
               "pos_err_prediction": float(err_p.mean()),
               "pos_err_last_memorised": float(err[:, -1].mean())}
        for k in ("obstacle", "wall", "free", "stay"):
            row[f"pos_err_after_{k}"] = float(err[mem[k]].mean())
            row[f"n_{k}"] = int(mem[k].sum())
        metrics["states"][v] = row
        metrics["state_curves"][v] = {"memorisation": err.mean(0).tolist(), "prediction": err_p.mean(0).tolist()}
        if v in VARIANTS:  # one example episode of the main runs for the trajectory plot
            metrics["examples"][v] = {"fit": fit.reshape(n, tau, 2)[0].tolist()}
    metrics["landmark_beta"] = {}
    for v, bs in beta.items():
        bsum = torch.cat(bs)  # [N, τ]
        metrics["landmark_beta"][v] = {f"after_{k}": float(bsum[mem[k]].mean()) for k in ("obstacle", "wall", "free", "stay")}
    metrics["examples"]["pose"] = pose[0, :tau].tolist()
    metrics["examples"]["obstacle_steps"] = mem["obstacle"][0].nonzero()[:, 0].tolist()
    a0 = batch_first_actions(args)
    metrics["examples"]["bumped_cells"] = [
        (pose[0, t - 1] + MOVES[int(a0[t])]).tolist() for t in metrics["examples"]["obstacle_steps"]]
    plots(args, metrics, example)
    return metrics


def run_labels(args: Args) -> list[str]:
    """Run folders to evaluate: every variant with suffix "" and each of ``--eval-suffixes``."""
    return [v + s for s in ["", *[x for x in args.eval_suffixes.split(",") if x]] for v in VARIANTS]


def batch_first_actions(args: Args) -> torch.Tensor:
    """Action indices ``[τ]`` of the first test episode (for the bumped obstacle cells of the plot)."""
    batch = next(iter(test_windows(args, chunk=1)))
    return batch.action[0, : args.tau].argmax(-1)


def plots(args: Args, metrics: dict[str, Any], example: dict[str, Any]) -> None:
    """``gtmsm_obstacles_error.png`` (state and prediction errors), ``gtmsm_obstacles_states.png`` (learned vs
    true trajectories of test episode 0) and ``gtmsm_obstacles_predictions.gif``, in ``args.results``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    tau, H = metrics["tau"], metrics["horizon"]
    colours = {"prior": "tab:orange", "landmark": "tab:blue", "no_memory": "tab:gray", "memory_copy": "k"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for v, c in metrics["state_curves"].items():
        if v not in VARIANTS:
            continue
        axes[0].plot(np.arange(1, tau + 1), c["memorisation"], color=colours[v], label=f"{v}: memorisation")
        axes[0].plot(np.arange(tau + 1, tau + H + 1), c["prediction"], color=colours[v], ls=":",
                     label=f"{v}: prediction (prior rollout)")
    axes[0].axvline(tau + 0.5, color="k", lw=0.5)
    axes[0].set_xlabel("time step")
    axes[0].set_ylabel("position error after the affine map (grid cells)")
    axes[0].set_title("inferred-state error (mean over test episodes)")
    axes[0].legend(fontsize=8)
    for k, c in metrics["curves"].items():
        if k not in colours:
            continue
        axes[1].plot(np.arange(1, len(c) + 1), c, color=colours.get(k), ls="--" if k == "memory_copy" else "-",
                     label=k + (" (reference)" if k in ("no_memory", "memory_copy") else ""))
    axes[1].set_xlabel(f"prediction step (open loop, after τ = {tau} memorised frames)")
    axes[1].set_ylabel("pixel MSE")
    axes[1].set_yscale("log")
    axes[1].set_title("prediction error vs horizon")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"ImageNavObstacles-v0, {metrics['episodes']} test episodes (unseen seeds)")
    fig.tight_layout()
    fig.savefig(res / "gtmsm_obstacles_error.png", dpi=110)
    plt.close(fig)
    # learned vs true trajectories of one test episode (memorisation phase), obstacle-blocked steps marked
    ex = metrics["examples"]
    pose = np.array(ex["pose"])
    vs = [v for v in VARIANTS if v in ex]
    fig, axes = plt.subplots(1, len(vs), figsize=(5.2 * len(vs), 5), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, v in zip(axes[0], vs):
        fit = np.array(ex[v]["fit"])
        for cell in ex["bumped_cells"]:
            ax.add_patch(plt.Rectangle((cell[1] - 0.5, cell[0] - 0.5), 1, 1, color="0.6", alpha=0.6))
        jit = 0.08 * rng.standard_normal(pose.shape)
        ax.plot(pose[:, 1] + jit[:, 1], pose[:, 0] + jit[:, 0], "k.-", lw=0.6, ms=3, alpha=0.5, label="true position (jittered)")
        ax.plot(fit[:, 1], fit[:, 0], ".-", color=colours[v], lw=0.8, ms=3, label="affine map of s_t")
        ob = ex["obstacle_steps"]
        ax.plot(fit[ob, 1], fit[ob, 0], "rx", ms=7, label="s_t after a move blocked by an obstacle")
        ax.set_xlim(-1, 9)
        ax.set_ylim(9, -1)
        ax.set_aspect("equal")
        st = metrics["states"][v]
        ax.set_title(f"{v}: mean error {st['pos_err_memorisation']:.2f} cells (all test episodes)", fontsize=10)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"Memorisation phase of test episode 0 (τ = {tau}); grey: obstacle cells the agent bumped into")
    fig.tight_layout()
    fig.savefig(res / "gtmsm_obstacles_states.png", dpi=110)
    plt.close(fig)
    keys = ["truth", *[k for k in ("prior", "landmark") if k in example]]
    columns_gif(res / "gtmsm_obstacles_predictions.gif", [example[k] for k in keys], scale=6, sep=3, duration=0.12)


# ----------------------------------------------------------------------------- results


def run_info(folder: Path) -> dict[str, Any]:
    """Updates and training wall clock of a run (train_args.json written at start, last checkpoint at end)."""
    csv = folder / "metrics.csv"
    out: dict[str, Any] = {}
    if csv.exists():
        lines = csv.read_text().strip().splitlines()
        last = dict(zip(lines[0].split(","), lines[-1].split(",")))
        out = {"updates": int(last["step"]), "last_row": {k: float(v) for k, v in last.items() if v}}
    ck = folder / "last" / "model.safetensors"
    if ck.exists() and (folder / "train_args.json").exists():
        out["train_wall_clock_s"] = ck.stat().st_mtime - (folder / "train_args.json").stat().st_mtime
    ta = folder / "train_args.json"
    if ta.exists():
        targs = json.loads(ta.read_text())
        out["train_seed"] = targs["seed"] if targs.get("train_seed", -1) < 0 else targs["train_seed"]
    cfg = folder / "last" / "config.json"
    if cfg.exists():
        c = json.loads(cfg.read_text())["config"]
        out["config"] = {k: c[k] for k in ("tau", "r", "displacement_weight", "landmark_inference", "landmark_k",
                                           "landmark_prior_std", "landmark_displacement_std") if k in c}
    return out


def write_results(args: Args, metrics: dict[str, Any], wall_clock: float, command: str) -> Path:
    """``<results>/gtmsm_obstacles.json``: the record of an evaluation (with each run's updates, training wall
    clock, seed and config from its folder under ``args.out``, and the arguments)."""
    metrics["training"] = {v: run_info(Path(args.out) / v) for v in run_labels(args) if (Path(args.out) / v).exists()}
    budget = {"test_episodes": metrics["episodes"],
              **{f"{v}_updates": info["updates"] for v, info in metrics["training"].items() if "updates" in info}}
    rec = record.record("gtmsm_obstacles", command, args.seed, wall_clock, budget, metrics,
                        args=dataclasses.asdict(args))
    return record.write(rec, Path(args.results) / "gtmsm_obstacles.json")


def write_markdown(args: Args) -> Path:
    """Generate ``docs/results/gtmsm_obstacles.md`` from ``gtmsm_obstacles.json`` (+ notes file if present)."""
    res = Path(args.results)
    doc = json.loads((res / "gtmsm_obstacles.json").read_text())
    m, a = doc["metrics"], doc["args"]
    H = m["horizon"]
    d = m["data"]
    lines = [
        "# GTM-SM with obstacles: the landmark inference network (§7.10, §7.10.1)", "",
        "Generated by `python scripts/gtmsm_obstacles.py --phase report` from `docs/results/gtmsm_obstacles.json`; "
        "do not edit by hand.", "",
        f"Command: `{doc['command']}` · commit `{doc['git_commit']}` · seed {doc['seed']} · machine: "
        f"{doc['machine']} · wall clock of the evaluation command {doc['wall_clock_s']:.0f} s.", "",
        f"Data: `{ENV_ID}` (ImageNav, 9x9 positions, 8x8 crops of a 32x32 procedural texture, 8 impassable grey "
        "cells at random places in every episode), Poisson action repeats (λ = 2), start in the centre. "
        f"{a['train_episodes']} training episodes (seed {a['seed']}); {m['episodes']} test episodes from seed "
        f"{a['seed'] + a['test_seed_offset']} (never used in training or tuning). Of the moves in the test "
        f"memorisation phases {100 * d['frac_of_moves_obstacle']:.1f}% were stopped by an obstacle, "
        f"{100 * d['frac_of_moves_wall']:.1f}% by a wall, {100 * d['frac_of_moves_free']:.1f}% happened; "
        f"{d['obstacle_blocked_per_episode_memorisation']:.1f} obstacle-blocked steps per episode in the τ = "
        f"{m['tau']} memorised steps, {d['obstacle_blocked_per_episode_prediction']:.1f} in the {H} predicted ones.", "",
        "Training (same data, batch 16 and number of updates for every run; the two variants of one training "
        "seed see the same batches in the same order; all warm-started from "
        f"`{a['init_from']}`, the ImageNav model of session 2 without obstacles; windows of the first "
        f"{a['tau'] + a['train_pred']} frames, τ = {a['tau']}; lr {a['lr']} → {a['lr_final']} linearly):", "",
    ]
    for v, info in m["training"].items():
        wc = info.get("train_wall_clock_s")
        wc_s = f"{wc / 60:.1f} min" if wc else "?"
        lines.append(f"- `{v}`: training seed {info.get('train_seed', '?')}, {info.get('updates', '?')} updates, {wc_s} of training wall clock "
                     f"(one thread, nice 5, 2 cores shared with other jobs); config {json.dumps(info.get('config', {}))}")
    lines += ["", "### Summary (landmark vs prior, per training seed)", ""]
    for suf in sorted({k[len("landmark"):] for k in m["states"] if k.startswith("landmark")}):
        lm, pr = "landmark" + suf, "prior" + suf
        if pr not in m["states"]:  # a landmark-only variant (e.g. "_elbo"): against the prior run of its seed
            seed = m["training"].get(lm, {}).get("train_seed")
            same = [s for s in m["states"] if s.startswith("prior") and m["training"].get(s, {}).get("train_seed") == seed]
            pr = same[0] if same else pr
        if pr not in m["states"]:
            continue
        sl, sp = m["states"][lm], m["states"][pr]
        ql, qp = m["summary"][lm], m["summary"][pr]
        lines.append(
            f"- training seed {m['training'].get(lm, {}).get('train_seed', '?')} (`{lm}` vs `{pr}`): memorisation "
            f"state error {sl['pos_err_memorisation']:.3f} vs {sp['pos_err_memorisation']:.3f} cells "
            f"(after an obstacle block {sl['pos_err_after_obstacle']:.3f} vs {sp['pos_err_after_obstacle']:.3f}); "
            f"prediction MSE mean {ql['mse_mean']:.4f} vs {qp['mse_mean']:.4f} "
            f"({ql['mse_mean'] / qp['mse_mean']:.2f}x), before the first obstacle block of the prediction phase "
            f"{ql['mse_before_pred_block']:.4f} vs {qp['mse_before_pred_block']:.4f} "
            f"({ql['mse_before_pred_block'] / qp['mse_before_pred_block']:.2f}x), after it "
            f"{ql['mse_after_pred_block']:.4f} vs {qp['mse_after_pred_block']:.4f}.")
    lines += ["", "### (a) Inferred states during memorisation", "",
              "One least-squares affine map from `s_t` to the true (row, col) per variant, fitted on all test "
              "memorisation steps (the learned state space is a rotated/stretched copy, §7.4.1); errors in grid "
              "cells after that map. \"after obstacle\": the step whose move an obstacle stopped (the agent did "
              "not move, `x_t = x_{t-1}`).", "",
              "| variant | R² (memorisation) | mean error, all | after obstacle | after wall | after free move | "
              "after stay | last memorised step | prediction phase (prior rollout) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for v, s in m["states"].items():
        lines.append(f"| {v} | {s['r2_memorisation']:.3f} | {s['pos_err_memorisation']:.3f} | "
                     f"{s['pos_err_after_obstacle']:.3f} | {s['pos_err_after_wall']:.3f} | {s['pos_err_after_free']:.3f} | "
                     f"{s['pos_err_after_stay']:.3f} | {s['pos_err_last_memorised']:.3f} | {s['pos_err_prediction']:.3f} |")
    for v, b in m.get("landmark_beta", {}).items():
        lines += ["", f"`{v}`: mean Σ_k β_k of the landmark network (1 = the inferred mean moves onto the retrieved "
                  f"states, 0 = it stays at the prior mean): after obstacle {b['after_obstacle']:.3f}, after wall "
                  f"{b['after_wall']:.3f}, after free move {b['after_free']:.3f}, after stay {b['after_stay']:.3f}."]
    lines += ["", "### (b) Open-loop prediction after τ", "",
              f"Pixel MSE of the predicted mean frame, per prediction step 1..{H} (only the prior is available "
              "here, no frames: both variants roll the transition forward from the last memorised state and read "
              "the memory). `no_memory`: the mean memorised frame; `memory_copy`: the memorised crop at the true "
              "position where there is one (a perfect lookup), else the context mean.", "",
              f"The last two columns split the steps by whether an obstacle has already stopped a move in the "
              f"prediction phase ({100 * d['frac_pred_steps_before_pred_block']:.1f}% of the predicted steps come "
              "before the first such block; after it the prior rollout is off by at least a cell).", "",
              f"| model | MSE step 1 | MSE step 32 | MSE step {H} | MSE mean | MSE mean, before the first block "
              "in prediction | MSE mean, after it |", "|---|---|---|---|---|---|---|"]
    for k, s in m["summary"].items():
        lines.append(f"| {k} | {s['mse_step1']:.4f} | {s['mse_step32']:.4f} | {s[f'mse_step{H}']:.4f} | "
                     f"{s['mse_mean']:.4f} | {s['mse_before_pred_block']:.4f} | {s['mse_after_pred_block']:.4f} |")
    lines += ["", "![state error and prediction error](gtmsm_obstacles_error.png)", "",
              "![learned vs true trajectories](gtmsm_obstacles_states.png)", "",
              "Side-by-side GIF of the open-loop predictions of test episode 0 (columns: truth, prior, landmark): "
              "`gtmsm_obstacles_predictions.gif`.", ""]
    notes = res / "gtmsm_obstacles_notes.md"
    if notes.exists():
        lines += [notes.read_text()]
    out = res / "gtmsm_obstacles.md"
    text = "\n".join(lines) + "\n"
    atomic_save(out, lambda tmp: tmp.write_text(text))
    return out


def eval(args: Args) -> None:
    """Phase ``eval``: evaluate every run, write ``gtmsm_obstacles.json`` (and plots, GIF), then the page."""
    start = time.time()
    metrics = evaluate(args)
    write_results(args, metrics, time.time() - start, record.command(EXPERIMENT.name, args, phase="eval"))
    print(json.dumps({"states": metrics["states"], "summary": metrics["summary"]}, indent=1))
    report(args)


def report(args: Args) -> None:
    """Phase ``report``: ``<results>/gtmsm_obstacles.md`` from the committed ``gtmsm_obstacles.json``."""
    print("wrote", write_markdown(args))


EXPERIMENT = Experiment("gtmsm-obstacles", "GTM-SM with obstacles: landmark inference network vs prior (§7.10, §7.10.1)",
                        Args, {"data": data, "train": train, "eval": eval, "report": report})
