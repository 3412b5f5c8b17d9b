"""GTM-SM image navigation (thesis §7.4.1, §7.7.1) against RSSM / VRNN / SRNN and a no-memory baseline.

One command runs everything (collect -> train every model -> evaluate -> plots, GIF, JSON, Markdown)::

    worldmodels experiment gtmsm-imagenav                                  # full budget of this experiment
    worldmodels experiment gtmsm-imagenav --phase train --model gtmsm      # one part (resumable)
    worldmodels experiment gtmsm-imagenav --phase report --name gtmsm_elbo # docs/results/gtmsm_elbo.md

(``python scripts/gtmsm_imagenav.py OPTIONS`` is the same command.) Phases: ``data`` (collect), ``train``
(``--model``), ``eval`` (JSON, plots, GIF, then the page), ``report`` (``docs/results/<name>.md`` from
``<name>_imagenav.json``).

Data: ``ImageNav-v0`` (32x32 image, 8x8 crop, 9x9 positions, crop offset 3·position, 5 actions, start
in the centre, walls), Poisson action repeats (``agents.explorers.PoissonRepeat``, λ = 2). The thesis
used CelebA faces; offline we use the procedural textures of ``envs/images.py`` (a new image per
episode). Training windows start at the beginning of an episode (the agent starts in the centre, so
``s = 0`` is the same place in every window, which the wall gate σ_d of eq. (7.3) needs).

GTM-SM is trained with a curriculum on the window length (short windows first: the agent cannot reach
a wall in its first 4 steps, so the linear transition of eq. (7.2) is learned before the walls; the gate
σ_d is switched on when windows reach ``gate_from_len``). A window of T ≤ τ frames memorises its
first half. Baselines are trained on random windows of ``baseline_len`` frames of the same episodes.

Test: τ = 256 memorised frames, 256 predicted frames (T = 512), episodes from a seed never used in
training. Metrics per prediction step 1..256: pixel MSE and binary cross-entropy of the predicted mean
frame vs the true frame; GTM-SM state accuracy: R² of an affine map from ``s_t`` to the true position.

Example:
    >>> stages(Args(curriculum="12:1500,24:500"))
    [(12, 1500), (24, 500)]
"""

from __future__ import annotations

import dataclasses
import json
import shutil
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
from worldmodels.data import EpisodeStartWindows, MappedWindows, WindowDataset, collect
from worldmodels.experiments import Experiment, record
from worldmodels.files import atomic_save, write_json
from worldmodels.probes import affine_fit, affine_r2
from worldmodels.train import TrainConfig, Trainer, TrainResult
from worldmodels.viz import columns_gif

__all__ = ["Args", "EXPERIMENT", "TRAIN_LEN", "BASELINE_PRESETS", "MappedWindows", "stages", "data_dirs",
           "flat_obs", "save_train_args", "baseline_likelihood_overrides", "train_model", "fit_gtmsm",
           "selection_elbo", "train_gtmsm", "test_batches", "gtmsm_runs", "evaluate", "plots", "write_results",
           "write_markdown", "data", "train", "eval", "report"]

_REPO = Path(__file__).resolve().parents[2]  # docs/benchmarks.json of a source checkout (memory scaling)


@dataclass
class Args:
    """Arguments (CleanRL style: one dataclass, read top to bottom); the defaults are the experiment's preset."""

    model: str = "all"  # gtmsm | rssm | vrnn | srnn | all (train phase)
    out: str = "runs/gtmsm_imagenav"
    results: str = "docs/results"
    name: str = "gtmsm"  # results file stem
    seed: int = 0
    train_episodes: int = 3000
    test_episodes: int = 64
    image: str = "texture"
    preset: str = "imagenav"
    # GTM-SM curriculum: "window_length:updates,..." (windows from the episode start)
    curriculum: str = "12:1500,24:1500,48:2000,96:2000,160:2000,288:3000"
    gate_from_len: int = 48
    lr: float = 1e-3
    lr_final: float = 5e-5
    lr_decay_steps: int = 50_000
    batch_size: int = 16
    baselines: str = "rssm,vrnn,srnn"  # train: model names; eval: run folders under ``out`` (= labels)
    # baseline observation likelihood: "" = the preset's (Bernoulli), "gaussian" = RSSM with a learned
    # per-channel pixel σ (as GTM-SM's ``learn_obs_std``), VRNN/SRNN with their Gaussian emission (mean and
    # per-pixel σ from the network, floor ``obs_min_std``)
    baseline_likelihood: str = ""
    baseline_suffix: str = ""  # baseline run folder = model name + suffix (e.g. "_gauss" -> runs/.../rssm_gauss)
    baseline_steps: int = 3000
    baseline_len: int = 64
    test_tau: int = 256
    test_horizon: int = 256
    threads: int = 1
    checkpoint_every: int = 250
    gtmsm_dir: str = "gtmsm"  # run folder of the GTM-SM model under ``out``
    gtmsm_eval: str = ""  # GTM-SM variants to evaluate, "label:folder,..." (default: gtmsm:<gtmsm_dir>)
    displacement_weight: float = 0.0  # > 0: regress d_t on info["displacement"] (as §7.4.2.2 / §7.10.1)
    m_init_scale: float = 0.1  # std of the initial action matrix M (sessions 1-3: 1.0; see gtmsm_notes.md)
    gate_bias: float = 3.0  # initial output bias of the wall gate σ_d (3: open; 0: σ_d ≈ 0.5)
    beta0: float = 1.0  # KL weight at the start of GTM-SM training (annealed linearly to 1)
    beta_anneal_steps: int = 0
    init_from: str = ""  # start GTM-SM from the weights of this checkpoint folder (e.g. a run's ``last``)
    init_skip: str = ""  # parameter-name prefixes NOT taken from ``init_from``, e.g. "encoder,decoder" (fresh VAE)
    # restarts > 1: train this many GTM-SM candidates (seeds seed + 1000·k, k = 0..restarts-1) for
    # ``restart_steps`` updates, keep the one with the highest ELBO on fixed training windows (no labels),
    # and train only that one to the end of the curriculum (see gtmsm_notes.md: a run that has not formed
    # the grid by the end of the 48-frame stage has a clearly lower ELBO there and never recovers)
    restarts: int = 1
    restart_steps: int = 6000


TRAIN_LEN = 288  # frames per training episode: τ = 256 + 32 prediction steps (§7.7.1)
BASELINE_PRESETS = {"rssm": ("rssm", "imagenav"), "vrnn": ("vrnn", "video"), "srnn": ("srnn", "video")}


def stages(args: Args) -> list[tuple[int, int]]:
    """The GTM-SM curriculum ``[(window length, updates), ...]`` of ``args.curriculum``."""
    out = []
    for part in args.curriculum.split(","):
        length, sep, steps = part.partition(":")
        if not sep or not length.strip().isdigit() or not steps.strip().isdigit():
            raise ValueError(f"--curriculum: expected 'length:updates,...', received {args.curriculum!r}")
        out.append((int(length), int(steps)))
    if any(length > TRAIN_LEN for length, _ in out):
        raise ValueError(f"curriculum: window lengths must be <= {TRAIN_LEN}, received {args.curriculum!r}")
    return out


# ----------------------------------------------------------------------------- data


def data_dirs(args: Args) -> tuple[Path, Path]:
    """The training and test dataset folders under ``args.out``."""
    return Path(args.out) / "data" / "train", Path(args.out) / "data" / "test"


def data(args: Args) -> None:
    """Phase ``data``: training episodes of ``TRAIN_LEN`` frames (seed ``seed``) and test episodes of
    ``test_tau + test_horizon + 1`` frames from a seed never used in training (``seed + 10_000``)."""
    from agents.explorers import explorer_factory

    train_dir, test_dir = data_dirs(args)
    kwargs = {"image": args.image}
    policy = explorer_factory("poisson", lam=2.0)
    collect("ImageNav-v0", train_dir, args.train_episodes, TRAIN_LEN - 1, policy=policy, num_envs=16,
            seed=args.seed, env_kwargs=kwargs)
    collect("ImageNav-v0", test_dir, args.test_episodes, args.test_tau + args.test_horizon, policy=policy,
            num_envs=16, seed=args.seed + 10_000, env_kwargs=kwargs)


def flat_obs(windows: WindowDataset) -> MappedWindows:
    """Batches with frames flattened to vectors ``[B, T, C·H·W]`` (VRNN/SRNN encoders take 16/32/64 px
    images or vectors; our 8x8 crops go in as 192-d vectors)."""
    return MappedWindows(windows, lambda b: dataclasses.replace(b, obs=b.obs.flatten(2)))


def save_train_args(out_dir: Path, args: Any, which: str) -> None:
    """Record the arguments (a dataclass) of a training run next to its checkpoint, as
    ``out_dir/train_args.json`` (read back by the results writer); ``phase`` is ``"train"`` unless ``args``
    has its own, ``model`` is ``which``."""
    record.save_run_args(out_dir, args, phase="train", model=which)


def baseline_likelihood_overrides(args: Args, which: str) -> dict[str, Any]:
    """Config overrides of a baseline for ``--baseline-likelihood`` (empty: the preset's Bernoulli).

    Example:
        >>> baseline_likelihood_overrides(Args(baseline_likelihood="gaussian"), "rssm")
        {'likelihood': 'gaussian', 'learn_obs_std': True}
    """
    if args.baseline_likelihood in ("", "bernoulli"):
        return {}
    if args.baseline_likelihood != "gaussian":
        raise ValueError(f"--baseline-likelihood: expected '', 'bernoulli' or 'gaussian', received "
                         f"{args.baseline_likelihood!r}")
    if which == "rssm":  # one learned σ per channel, initial 0.1, floor 0.01: GTM-SM's `imagenav` setting
        return {"likelihood": "gaussian", "learn_obs_std": True}
    return {"obs_kind": "gaussian"}  # VRNN/SRNN: σ per pixel from the emission network (floor obs_min_std)


def train_model(args: Args, which: str) -> Path:
    """Train (or resume) model ``which`` (``gtmsm`` or a baseline of ``BASELINE_PRESETS``); its run folder."""
    if which != "gtmsm" and which not in BASELINE_PRESETS:
        raise ValueError(f"--model: expected one of {['gtmsm', *BASELINE_PRESETS, 'all']}, received {which!r}")
    torch.set_num_threads(args.threads)
    train_dir, _ = data_dirs(args)
    out_dir = Path(args.out) / (args.gtmsm_dir if which == "gtmsm" else which + args.baseline_suffix)
    save_train_args(out_dir, args, which)
    if which == "gtmsm":
        return train_gtmsm(args, out_dir)
    name, preset = BASELINE_PRESETS[which]
    windows = WindowDataset(train_dir, args.baseline_len)
    train_data: WindowDataset | MappedWindows
    if which == "rssm":
        model = worldmodels.build_model(name, preset, **baseline_likelihood_overrides(args, which))
        train_data = windows
    else:
        model = worldmodels.build_model(name, preset, obs_shape=(192,), action_dim=5,
                                        **baseline_likelihood_overrides(args, which))
        train_data = flat_obs(windows)
    steps_per_epoch = len(windows) // args.batch_size
    cfg = TrainConfig(lr=args.lr, lr_schedule="constant", grad_clip=10.0, beta0=0.2 if which != "rssm" else 1.0,
                      beta_anneal_steps=1000 if which != "rssm" else 0,
                      epochs=max(1, -(-args.baseline_steps // steps_per_epoch)), max_steps=args.baseline_steps,
                      batch_size=args.batch_size, seed=args.seed, out_dir=str(out_dir),
                      checkpoint_every=args.checkpoint_every, log_every=25, tensorboard=False)
    _stop_on_signal(Trainer(model, train_data, cfg, collate_fn=train_data.collate).fit())
    return out_dir


def fit_gtmsm(args: Args, seed: int, out_dir: Path, stop_at: int | None = None) -> TrainResult:
    """Train (or resume) GTM-SM with seed ``seed`` in ``out_dir``, up to ``stop_at`` updates (None: all).

    The seed sets the initial weights, the order of the training windows and the Trainer's RNG."""
    plan = stages(args)
    gate_from = sum(n for length, n in plan if length < args.gate_from_len)
    torch.manual_seed(seed)  # initial weights
    model = worldmodels.build_model("gtmsm", args.preset, wall_gate_from=gate_from,
                                    displacement_weight=args.displacement_weight, m_init_scale=args.m_init_scale,
                                    gate_bias=args.gate_bias)
    if args.init_from:  # warm start; parameters the parent lacks (e.g. a learned pixel σ) keep their init
        skip = tuple(p for p in args.init_skip.split(",") if p)
        parent = {k: v for k, v in worldmodels.load(args.init_from).state_dict().items() if not k.startswith(skip)}
        missing, unexpected = model.load_state_dict(parent, strict=False)
        if unexpected:
            raise ValueError(f"--init-from {args.init_from}: parameters unknown to preset {args.preset!r}: {unexpected}")
        if missing:
            print(f"--init-from: not in the parent, initialised fresh: {missing}")
        model.updates.zero_()
    train_dir, _ = data_dirs(args)
    batches = EpisodeStartWindows(train_dir, plan, args.batch_size, seed)
    cfg = TrainConfig(lr=args.lr, lr_schedule="linear", lr_final=args.lr_final, lr_decay_steps=args.lr_decay_steps,
                      beta0=args.beta0, beta_anneal_steps=args.beta_anneal_steps, epochs=1,
                      max_steps=len(batches) if stop_at is None else stop_at, batch_size=args.batch_size, seed=seed,
                      out_dir=str(out_dir), checkpoint_every=args.checkpoint_every, log_every=25,
                      tensorboard=False)
    result = Trainer(model, batches, cfg).fit()
    _stop_on_signal(result)
    return result


@torch.no_grad()
def selection_elbo(args: Args, run: Path, length: int, episodes: int = 64) -> float:
    """Mean ELBO per window of ``run``'s model on ``episodes`` fixed training episodes (windows of ``length``
    frames from the episode start): the restart criterion, the training objective on fixed data."""
    model = worldmodels.load(run / "last").eval()
    train_dir, _ = data_dirs(args)
    w = WindowDataset(train_dir, length)
    eps = np.random.default_rng(12345).choice(w.data.num_episodes, episodes, replace=False)
    starts = w.episode_starts()  # [n] the window at frame 0 of each episode
    total = 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12345)
        for e0 in range(0, episodes, args.batch_size):
            idx = starts[eps[e0:e0 + args.batch_size]].tolist()
            total += model.loss(w.collate(w.__getitems__(idx)), beta=1.0).metrics["elbo"] * len(idx)
    return total / episodes


def train_gtmsm(args: Args, out_dir: Path) -> Path:
    """Train GTM-SM in ``out_dir``; with ``--restarts K`` first pick the best of K candidates (resumable)."""
    seed = args.seed
    if args.restarts > 1:
        restarts = out_dir / "restarts.json"
        if not restarts.exists():
            plan = stages(args)
            length = EpisodeStartWindows.length_of(plan, args.restart_steps - 1)
            scores = {}
            for k in range(args.restarts):
                seed_k = args.seed + 1000 * k
                cand = out_dir / "restarts" / f"seed{seed_k}"
                fit_gtmsm(args, seed_k, cand, stop_at=args.restart_steps)
                scores[seed_k] = selection_elbo(args, cand, length)
                print(f"restart seed {seed_k}: ELBO {scores[seed_k]:.2f} after {args.restart_steps} updates")
            best = max(scores, key=scores.__getitem__)
            for f in ("last", "metrics.csv"):  # the chosen candidate continues in out_dir
                src, dst = out_dir / "restarts" / f"seed{best}" / f, out_dir / f
                if src.is_dir():
                    shutil.copytree(src, dst, dirs_exist_ok=True)
                else:
                    shutil.copy2(src, dst)
            write_json(restarts, {"restart_steps": args.restart_steps, "window_length": length,
                                  "episodes": 64, "elbo": {str(k): v for k, v in scores.items()},
                                  "chosen_seed": best})
        seed = int(json.loads(restarts.read_text())["chosen_seed"])
    fit_gtmsm(args, seed, out_dir)
    return out_dir


def _stop_on_signal(result: TrainResult) -> None:
    """SIGTERM/SIGINT: the Trainer saved its checkpoint; end the experiment too (the same command resumes)."""
    if result.stopped == "signal":
        raise SystemExit(130)


def train(args: Args) -> None:
    """Phase ``train``: GTM-SM and every baseline of ``--baselines`` (``--model all``), or ``--model``."""
    todo = ["gtmsm", *args.baselines.split(",")] if args.model == "all" else [args.model]
    for which in todo:
        if which:
            train_model(args, which)


# ----------------------------------------------------------------------------- evaluation


def test_batches(args: Args, chunk: int = 16) -> Iterator[Batch]:
    """The test episodes' windows of ``test_tau + test_horizon`` frames from frame 0, ``chunk`` at a time."""
    _, test_dir = data_dirs(args)
    w = WindowDataset(test_dir, args.test_tau + args.test_horizon)
    starts = w.episode_starts()  # [n]
    for e0 in range(0, len(starts), chunk):
        yield w.collate(w.__getitems__(starts[e0:e0 + chunk].tolist()))


def _bce(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-4, 1 - 1e-4)
    return -(x * p.log() + (1 - x) * (1 - p).log())


def gtmsm_runs(args: Args) -> dict[str, str]:
    """GTM-SM variants to evaluate: ``label -> run folder`` (``--gtmsm-eval "gtmsm:gtmsm_b,..."``).

    Example:
        >>> gtmsm_runs(Args()), gtmsm_runs(Args(gtmsm_eval="a:gtmsm,b:gtmsm_b"))
        ({'gtmsm': 'gtmsm'}, {'a': 'gtmsm', 'b': 'gtmsm_b'})
    """
    if not args.gtmsm_eval:
        return {"gtmsm": args.gtmsm_dir}
    parts = [part.split(":") for part in args.gtmsm_eval.split(",")]
    if any(len(p) != 2 for p in parts):
        raise ValueError(f"--gtmsm-eval: expected 'label:folder,...', received {args.gtmsm_eval!r}")
    return dict((label, folder) for label, folder in parts)


@torch.no_grad()
def evaluate(args: Args) -> dict[str, Any]:
    """Open-loop prediction errors of every run on the test episodes, the references and the GTM-SM state
    accuracy; writes the plots and the GIF (:func:`plots`) and returns the metrics."""
    torch.set_num_threads(args.threads)
    tau, H = args.test_tau, args.test_horizon
    runs = {**gtmsm_runs(args), **{b: b for b in args.baselines.split(",") if b}}
    models = {}
    for label, folder in runs.items():
        path = Path(args.out) / folder / "last"
        if path.exists():
            models[label] = worldmodels.load(path)
        else:
            print(f"skip {label}: no checkpoint at {path}")
    gt_labels = [k for k, m in models.items() if m.config.__class__.__name__ == "GTMSMConfig"]
    # observation likelihood each baseline was trained with ("bernoulli" | "gaussian"), for the goal per set
    base_lik = {k: getattr(m.config, "likelihood", getattr(m.config, "obs_kind", "?")) for k, m in models.items()
                if k not in gt_labels}
    sums = {k: {"mse": torch.zeros(H, dtype=torch.float64), "bce": torch.zeros(H, dtype=torch.float64)}
            for k in [*models, "no_memory"]}
    n = 0
    states: dict[str, list[torch.Tensor]] = {k: [] for k in gt_labels}
    poses: list[torch.Tensor] = []
    example: dict[str, Any] = {}
    # split of the error by whether the true position was seen during memorisation, the memory_copy
    # reference (the memorised crop at the true position where there is one, else the context mean: what a
    # perfect lookup without spatial generalisation achieves) and the GTM-SM VAE reconstruction error
    split = {k: torch.zeros(2, dtype=torch.float64) for k in [*models, "no_memory", "memory_copy"]}
    n_visited = 0
    # per step: the error summed over episodes whose true position was seen during memorisation, and their count
    seen_step = {k: torch.zeros(H, dtype=torch.float64) for k in [*models, "no_memory", "memory_copy"]}
    n_seen_step = torch.zeros(H, dtype=torch.float64)
    copy_mse = torch.zeros(H, dtype=torch.float64)
    recon = {k: 0.0 for k in gt_labels}
    for batch in test_batches(args):
        obs, act, state = batch.obs, batch.action, batch.state
        if state is None:
            raise ValueError(f"gtmsm-imagenav: expected test episodes with true positions (extras 'pose') in "
                             f"{data_dirs(args)[1]}, received none")
        truth = obs[:, tau : tau + H]
        preds = {"no_memory": mean_frame(obs[:, :tau], H)}
        copy, visited = memory_copy(obs[:, :tau], state[:, :tau], state[:, tau : tau + H],
                                    fallback=preds["no_memory"])
        copy_mse += (copy - truth).square().mean((2, 3, 4)).sum(0).double()
        n_visited += int(visited.sum())
        n_seen_step += visited.sum(0).double()
        for which, model in models.items():
            if len(model.config.obs_shape) == 1:  # VRNN/SRNN trained on flattened 192-d frames
                im = model.predict(obs[:, :tau].flatten(2), act[:, :tau], act[:, tau : tau + H])
                preds[which] = im.obs.reshape(truth.shape).clamp(0, 1)
            else:
                im = model.predict(obs[:, :tau], act[:, :tau], act[:, tau : tau + H])
                preds[which] = im.obs.clamp(0, 1)
            if which in gt_labels:
                recon[which] += float((model.frame_mean(model.decode(model.encode(truth)[0])) - truth).square().sum())
                s_mem, _ = model.rollout_states(act[:, :tau])
                states[which].append(torch.cat([s_mem, im.extras["s"]], 1))
        poses.append(state[:, : tau + H])
        for k, p in preds.items():
            sums[k]["mse"] += (p - truth).square().mean((2, 3, 4)).sum(0).double()
            sums[k]["bce"] += _bce(p, truth).mean((2, 3, 4)).sum(0).double()
        for k, p in {**preds, "memory_copy": copy}.items():
            e = (p - truth).square().mean((2, 3, 4)).double()  # [B, H]
            split[k] += torch.stack([e[visited].sum(), e[~visited].sum()])
            seen_step[k] += (e * visited).sum(0)
        if not example:
            example = {"truth": truth[0], **{k: v[0] for k, v in preds.items()}}
            example["states"] = {k: v[0][0] for k, v in states.items()}
            example["pose"] = poses[0][0]
        n += obs.shape[0]
    curves = {k: {m: (v / n).tolist() for m, v in d.items()} for k, d in sums.items()}
    metrics: dict[str, Any] = {"episodes": n, "tau": tau, "horizon": H, "curves": curves, "summary": {},
                               "runs": runs, "state_r2": {}, "goals": {}}
    for k, d in curves.items():
        mse = np.array(d["mse"])
        metrics["summary"][k] = {
            "mse_step1": float(mse[0]), "mse_step32": float(mse[min(31, H - 1)]),
            "mse_step64": float(mse[min(63, H - 1)]), "mse_step256": float(mse[-1]), "mse_mean": float(mse.mean()),
            "bce_step1": float(d["bce"][0]), "bce_step256": float(d["bce"][-1]), "bce_mean": float(np.mean(d["bce"])),
        }
    n_unvisited = n * H - n_visited
    for k, (sv, su) in split.items():
        if k in metrics["summary"]:
            metrics["summary"][k].update(mse_visited=float(sv) / max(n_visited, 1),
                                         mse_unvisited=float(su) / max(n_unvisited, 1))
    cm = (copy_mse / n).numpy()
    metrics["reference"] = {
        "frac_unvisited": n_unvisited / (n * H),
        "memory_copy": {"mse": cm.tolist(), "mse_step1": float(cm[0]), "mse_step256": float(cm[-1]),
                        "mse_mean": float(cm.mean()), "mse_unvisited": float(split["memory_copy"][1]) / max(n_unvisited, 1)},
        "recon_mse": {k: v / (n * H * truth[0, 0].numel()) for k, v in recon.items()},
        "frac_unvisited_per_step": (1 - n_seen_step / n).tolist(),
        # how much the error grows over the prediction where the memory holds the answer: mean error at seen
        # positions over the last 32 predicted steps / over the first 32 (32-step windows: ~50 seen frames per step)
        "seen_last32_over_first32": {
            k: float((v[-32:].sum() / n_seen_step[-32:].sum()) / (v[:32].sum() / n_seen_step[:32].sum()))
            for k, v in seen_step.items() if k != "memory_copy"},  # memory_copy is exact at seen positions
    }
    pose = torch.cat(poses)
    for label in gt_labels:
        s = torch.cat(states[label])
        metrics["state_r2"][label] = {"all": affine_r2(s, pose), "memorisation": affine_r2(s[:, :tau], pose[:, :tau]),
                                      "prediction": affine_r2(s[:, tau:], pose[:, tau:])}
        g = metrics["summary"][label]
        base = {k: v["mse_step256"] for k, v in metrics["summary"].items() if k not in gt_labels}
        metrics["goals"][label] = {
            "step256_over_step1": g["mse_step256"] / max(g["mse_step1"], 1e-12),
            "step256_within_1.5x_step1": g["mse_step256"] <= 1.5 * g["mse_step1"],
            "baseline_over_gtmsm_step256": {k: v / max(g["mse_step256"], 1e-12) for k, v in base.items()},
            "3x_lower_than_every_baseline": all(v >= 3 * g["mse_step256"] for v in base.values()),
        }
        # the same goal per likelihood of the trained baselines (each set with the no_memory baseline)
        by_lik: dict[str, dict[str, Any]] = {}
        for lik in sorted(set(base_lik.values())):
            keys = [k for k, v in base_lik.items() if v == lik] + ["no_memory"]
            by_lik[lik] = {"baselines": keys, "met": all(base[k] >= 3 * g["mse_step256"] for k in keys)}
        metrics["goals"][label]["3x_lower_by_baseline_likelihood"] = by_lik
    plots(args, metrics, example)
    return metrics


def plots(args: Args, metrics: dict[str, Any], example: dict[str, Any]) -> None:
    """``<name>_imagenav_error.png`` (error vs horizon), ``<name>_imagenav_states_<label>.png`` (Fig. 7.2c),
    ``<name>_imagenav_predictions.gif`` (truth | each model, x6) and its column list, in ``args.results``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    for i, (k, d) in enumerate(metrics["curves"].items()):
        steps = np.arange(1, len(d["mse"]) + 1)
        style = {"color": f"C{i % 10}", "ls": ("-", "-.", ":")[min(i // 10, 2)]}  # > 10 curves: new line style
        axes[0].plot(steps, d["mse"], label=k, **style)
        axes[1].plot(steps, d["bce"], label=k, **style)
    if "reference" in metrics:
        ref = metrics["reference"]["memory_copy"]["mse"]
        axes[0].plot(np.arange(1, len(ref) + 1), ref, "k--", lw=1, label="memory_copy (reference)")
    for ax, lab in zip(axes, ("pixel MSE", "binary cross-entropy per pixel")):
        ax.set_xlabel(f"prediction step (open loop, after τ = {metrics['tau']} memorised frames)")
        ax.set_ylabel(lab)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()  # below the axes: the curves stay visible
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    fig.suptitle(f"ImageNav test set ({metrics['episodes']} episodes): open-loop prediction error vs horizon")
    fig.tight_layout(rect=(0, 0.06 * (len(labels) // 5 + 1), 1, 1))
    fig.savefig(res / f"{args.name}_imagenav_error.png", dpi=110)
    plt.close(fig)
    for label, s in example.get("states", {}).items():  # Fig. 7.2c: learned states vs true positions
        s, pose = s.double(), example["pose"].double()
        tau = metrics["tau"]
        fit = affine_fit(s, pose)[1].numpy()
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
        s_np = s.numpy()
        axes[0].plot(s_np[:tau, 1], s_np[:tau, 0], ".-", alpha=0.5, label="memorisation")
        axes[0].plot(s_np[tau:, 1], s_np[tau:, 0], ".-", alpha=0.5, label="prediction")
        axes[0].set_title(f"{label}: learned states s_t (raw)")
        axes[0].legend()
        p_np = pose.numpy()
        axes[1].scatter(p_np[:, 1] + 0.1 * np.random.default_rng(0).standard_normal(len(p_np)),
                        p_np[:, 0] + 0.1 * np.random.default_rng(1).standard_normal(len(p_np)),
                        s=6, c="k", alpha=0.3, label="true position (jittered)")
        axes[1].plot(fit[:, 1], fit[:, 0], "r.", ms=3, alpha=0.6, label="affine map of s_t")
        axes[1].invert_yaxis()
        axes[1].set_title("true vs affinely mapped learned positions")
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(res / f"{args.name}_imagenav_states_{label}.png", dpi=110)
        plt.close(fig)
    # side-by-side GIF: truth | each model (open-loop predictions), upscaled x6
    keys = ["truth", *[k for k in example if k not in ("truth", "states", "pose")]]
    columns_gif(res / f"{args.name}_imagenav_predictions.gif", [example[k] for k in keys], scale=6, sep=3,
                duration=0.08)
    (res / f"{args.name}_imagenav_predictions.txt").write_text(
        "columns, left to right: " + ", ".join(keys)
        + f" (open-loop predictions, prediction steps 1..{example['truth'].shape[0]})\n")


# ----------------------------------------------------------------------------- results


def _train_args(folder: Path) -> dict[str, Any]:
    """The recorded training arguments of a run that matter for its model (plus the run it started from)."""
    path = folder / "train_args.json"
    if not path.exists():
        return {}
    ta = json.loads(path.read_text())
    keep: tuple[str, ...]
    if ta.get("model") == "gtmsm":
        keep = ("seed", "preset", "curriculum", "lr", "beta0", "beta_anneal_steps", "displacement_weight",
                "m_init_scale", "batch_size", "train_episodes", "init_from", "init_skip")
    else:
        keep = ("model", "seed", "baseline_steps", "baseline_len", "lr", "batch_size", "train_episodes",
                "baseline_likelihood")
    out = {k: ta[k] for k in keep if k in ta and ta[k] != ""}
    if out.get("init_from"):
        parent = Path(out["init_from"]).parent
        csv = parent / "metrics.csv"
        steps = csv.read_text().strip().splitlines()[-1].split(",")[0] if csv.exists() else "?"
        out["init_from_run"] = {"updates": steps, **_train_args(parent)}
    return out


def write_results(args: Args, metrics: dict[str, Any], wall_clock: float, command: str) -> Path:
    """``<results>/<name>_imagenav.json``: the record of an evaluation (with each run's training budget and
    arguments from its folder under ``args.out``)."""
    budgets: dict[str, dict[str, Any]] = {}
    for which, folder in {**gtmsm_runs(args), **{b: b for b in args.baselines.split(",") if b}}.items():
        csv = Path(args.out) / folder / "metrics.csv"
        if csv.exists():
            lines = csv.read_text().strip().splitlines()
            header = lines[0].split(",")
            last = dict(zip(header, lines[-1].split(",")))
            budgets[which] = {k: last[k] for k in ("step", "epoch", "wall_clock_s", "elapsed_s", "time_s") if k in last}
            budgets[which]["train_args"] = _train_args(Path(args.out) / folder)
            cfg_path = Path(args.out) / folder / "last" / "config.json"
            if cfg_path.exists():  # the observation likelihood the run was trained with
                mc = json.loads(cfg_path.read_text())["config"]
                lik = mc.get("likelihood", mc.get("obs_kind", "?"))
                if mc.get("learn_obs_std"):
                    lik += " (learned σ)"
                elif lik == "gaussian" and "obs_std" in mc:
                    lik += f" (σ = {mc.get('obs_std')})"
                elif lik == "gaussian":  # VRNN/SRNN emission: σ per pixel from the network
                    lik += f" (per-pixel σ from the network, floor {mc.get('obs_min_std')})"
                budgets[which]["likelihood"] = lik
    metrics["training"] = budgets
    budget = {"test_episodes": metrics["episodes"],
              **{f"{k}_updates": int(float(v["step"])) for k, v in budgets.items() if "step" in v}}
    rec = record.record("gtmsm_imagenav", command, args.seed, wall_clock, budget, metrics)
    return record.write(rec, Path(args.results) / f"{args.name}_imagenav.json")


def write_markdown(args: Args) -> Path:
    """Generate ``<results>/<name>.md`` from ``<name>_imagenav.json`` (+ the gtmsm rows of
    ``docs/benchmarks.json`` when present, + ``<name>_notes.md`` when present)."""
    res = Path(args.results)
    doc = json.loads((res / f"{args.name}_imagenav.json").read_text())
    m = doc["metrics"]
    lines = [
        "# GTM-SM results",
        "",
        "Generated by `python scripts/gtmsm_imagenav.py --phase report` from "
        f"`{res}/{args.name}_imagenav.json`; do not edit by hand.",
        "",
        "## Experiment 1: image navigation (§7.4.1, §7.7.1)",
        "",
        f"Command: `{doc['command']}` · commit `{doc['git_commit']}` · seed {doc['seed']} · "
        f"machine: {doc['machine']} · wall clock of the evaluation command {doc['wall_clock_s']:.0f} s.",
        "",
        "Data: `ImageNav-v0` (32x32 image, 8x8 crop, 9x9 positions, crop offset 3·position, 5 actions, walls), "
        "Poisson action repeats (λ = 2). The thesis used CelebA faces; offline we use the procedural "
        "textures of `envs/images.py` (a new image per episode). "
        f"Test: {m['episodes']} episodes from a seed never used in training, τ = {m['tau']} memorised frames, "
        f"{m['horizon']} open-loop predicted frames. All errors are of open-loop predictions (not "
        "reconstructions). `no_memory` predicts the mean frame of the memorised context.",
        "",
        "Training budgets (optimizer updates of batch 16, from each run's `metrics.csv`; the arguments each "
        "run was trained with, from its `train_args.json`):",
        "",
    ]
    for k, v in m.get("training", {}).items():
        lik = f"likelihood {v['likelihood']}; " if "likelihood" in v else ""
        lines.append(f"- `{k}`: {v.get('step', '?')} updates; {lik}{json.dumps(v.get('train_args', {}))}")
    lines += [f"- GTM-SM runs (label: folder under `{args.out}`): {m.get('runs', {})}", ""]
    lines += ["| model | MSE step 1 | MSE step 32 | MSE step 64 | MSE step 256 | MSE mean | MSE mean, seen "
              "position | MSE mean, unseen position | BCE step 1 | BCE step 256 |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for k, v in m["summary"].items():
        vis = " | ".join(f"{v[c]:.4f}" if c in v else "–" for c in ("mse_visited", "mse_unvisited"))
        lines.append(f"| {k} | {v['mse_step1']:.4f} | {v['mse_step32']:.4f} | {v['mse_step64']:.4f} | "
                     f"{v['mse_step256']:.4f} | {v['mse_mean']:.4f} | {vis} | {v['bce_step1']:.4f} | "
                     f"{v['bce_step256']:.4f} |")
    lines.append("")
    ref = m.get("reference")
    if ref:
        mc = ref["memory_copy"]
        rec = ", ".join(f"`{k}` {v:.4f}" for k, v in ref["recon_mse"].items())
        lines += [
            f"{100 * ref['frac_unvisited']:.1f}% of the predicted frames are at positions the agent never visited "
            "during memorisation (seen / unseen columns split the error by that). Reference `memory_copy` (the "
            "memorised crop at the true position where there is one, the context mean elsewhere: a perfect "
            "lookup without spatial generalisation; dashed in the plot): MSE step 1 "
            f"{mc['mse_step1']:.4f}, step 256 {mc['mse_step256']:.4f}, mean {mc['mse_mean']:.4f}, "
            f"unseen positions {mc['mse_unvisited']:.4f}. GTM-SM VAE reconstruction MSE of the predicted frames "
            f"(encoder mean → decoder, the floor of a memory read): {rec}.",
            "",
        ]
        if "seen_last32_over_first32" in ref:
            fu = ref["frac_unvisited_per_step"]
            growth = ", ".join(f"`{k}` {v:.2f}" for k, v in ref["seen_last32_over_first32"].items())
            lines += [
                "Growth of the error where the memory holds the answer: unvisited positions are "
                f"{100 * fu[0]:.1f}% of step 1, {100 * np.mean(fu[:32]):.1f}% of steps 1–32 and "
                f"{100 * np.mean(fu[-32:]):.1f}% of steps 225–256; the mean error at *seen* positions over steps "
                f"225–256 divided by that over steps 1–32 is {growth}.",
                "",
            ]
    for label, r2 in m.get("state_r2", {}).items():
        lines += [
            f"`{label}` learned-state accuracy (R² of an affine map from `s_t` to the true position, mean over "
            f"the two axes): all steps {r2['all']:.3f}, memorisation {r2['memorisation']:.3f}, "
            f"prediction {r2['prediction']:.3f}.",
            "",
        ]
    for label, g in m.get("goals", {}).items():
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in g["baseline_over_gtmsm_step256"].items())
        lines += [
            f"Goals of the issue for `{label}`:",
            "",
            f"- MSE at step 256 / step 1 = {g['step256_over_step1']:.2f} (goal ≤ 1.5): "
            f"{'met' if g['step256_within_1.5x_step1'] else 'NOT met'}.",
            f"- baseline MSE / `{label}` MSE at step 256: {ratios} (goal ≥ 3x for every baseline): "
            f"{'met' if g['3x_lower_than_every_baseline'] else 'NOT met'}.",
            *[f"- ≥ 3x lower than every {lik}-likelihood baseline at step 256 ({', '.join(d['baselines'])}): "
              f"{'met' if d['met'] else 'NOT met'}."
              for lik, d in g.get("3x_lower_by_baseline_likelihood", {}).items()],
            "",
        ]
    lines += [
        f"![error vs horizon]({args.name}_imagenav_error.png)",
        "",
        *[f"![{label}: learned vs true states (Fig. 7.2c)]({args.name}_imagenav_states_{label}.png)\n"
          for label in m.get("state_r2", {})],
        f"Side-by-side GIF of true and predicted frames (open loop): `{args.name}_imagenav_predictions.gif` "
        f"(column order in `{args.name}_imagenav_predictions.txt`).",
        "",
    ]
    bench = _REPO / "docs" / "benchmarks.json"
    if bench.exists():
        group = json.loads(bench.read_text())["groups"].get("gtmsm")
        if group:
            lines += ["## Experiment 4: memory scaling (`make bench`, `python scripts/bench.py --only gtmsm`)", "",
                      f"Machine: {group['machine']} (shared) · commit `{group['git_commit']}` · {group['date']}.", "",
                      "| benchmark | time | brute-force torch | speed-up |", "|---|---|---|---|"]
            for r in group["rows"]:
                lines.append(f"| {r['name']} | {r['value']:.3g} s | {r['baseline_value']:.3g} s | {r['ratio']:.2f}x |")
            lines += [""] + [f"- {r['name']}: {r['notes']}" for r in group["rows"]] + [""]
    extra = res / f"{args.name}_notes.md"
    if extra.exists():
        lines += [extra.read_text()]
    out = res / f"{args.name}.md"
    text = "\n".join(lines) + "\n"
    atomic_save(out, lambda tmp: tmp.write_text(text))
    return out


def eval(args: Args) -> None:
    """Phase ``eval``: evaluate every run, write ``<name>_imagenav.json`` (and plots, GIF), then the page."""
    start = time.time()
    metrics = evaluate(args)
    write_results(args, metrics, time.time() - start, record.command(EXPERIMENT.name, args, phase="eval"))
    print(json.dumps(metrics["summary"], indent=1))
    print("state_r2", metrics["state_r2"], "goals", metrics["goals"])
    report(args)


def report(args: Args) -> None:
    """Phase ``report``: ``<results>/<name>.md`` from the committed ``<name>_imagenav.json``."""
    print("wrote", write_markdown(args))


EXPERIMENT = Experiment("gtmsm-imagenav", "GTM-SM image navigation vs RSSM/VRNN/SRNN and no memory (§7.4.1, §7.7.1)",
                        Args, {"data": data, "train": train, "eval": eval, "report": report})
