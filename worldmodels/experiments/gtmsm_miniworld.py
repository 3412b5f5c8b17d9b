"""GTM-SM in MiniWorld 3-D (thesis §7.4.2, §7.7.2) against RSSM (and VRNN, SRNN) on the same data and budget.

One command per phase (each resumable; ``all``, the default, runs them in order, training GTM-SM and every
``--baselines`` model)::

    worldmodels experiment gtmsm-miniworld --phase collect                 # datasets
    worldmodels experiment gtmsm-miniworld --phase train --model gtmsm     # resumable checkpoints
    worldmodels experiment gtmsm-miniworld --phase train --model rssm
    worldmodels experiment gtmsm-miniworld --phase eval                    # metrics JSON + plots + GIF
    worldmodels experiment gtmsm-miniworld --phase report                  # Markdown from the JSON

(``python scripts/gtmsm_miniworld.py ...`` takes the same options.) The agents are the data-collection agents
:data:`agents.explorers.MINIWORLD_AGENTS`; :data:`PROTOCOLS` holds each one's windows and GTM-SM preset.

``--agent rotate`` (default, §7.4.2.1): ``WM-MiniWorld-Rotate-v0`` (a room with objects, the agent turns in
place by 360/41 degrees per step, one direction per episode drawn at random), 80-step episodes, 32x32
frames. Training windows of 49 frames (τ = 33 memorised + 16 predicted, §7.7.2); test: τ = 33 memorised,
45 predicted open loop (the unseen last 60° of the first turn and a whole second turn).

``--agent walk`` (§7.4.2.2): ``WM-MiniWorld-OneRoom-v0`` (one 10 m room, as in the thesis; MiniWorld's
FourRooms caps episodes at 250 steps) with a correlated random walk over
{turn left, turn right, forward}; training windows 150 + 32, test τ = 150 memorised, 150 predicted.

``--agent walk_fourrooms`` (issue #8, experiment 3): the same walker in ``WM-MiniWorld-FourRooms-v0`` (four
6 m rooms joined by doorways) with MiniWorld's 250-step limit replaced by 300 (``miniworld_max_steps``), so
τ = 150 + 150 fit in one episode. Baselines may train on shorter windows (``--train-len 64``: RSSM's
cost grows with every frame it encodes and decodes) and still filter over all τ = 150 frames at test time::

    worldmodels experiment gtmsm-miniworld --phase collect --agent walk_fourrooms --train-episodes 800
    worldmodels experiment gtmsm-miniworld --phase train --agent walk_fourrooms --model gtmsm --steps 1500
    worldmodels experiment gtmsm-miniworld --phase train --agent walk_fourrooms --model rssm --train-len 64 \
        --steps 900
    worldmodels experiment gtmsm-miniworld --phase eval --agent walk_fourrooms --baselines rssm,vrnn,srnn

GTM-SM uses the 3-D state ``(x, y, θ)``, the combiner prior over the K = 4 retrieved memories with
``(x, y, cos θ, sin θ)`` keys, z ∈ R^64, r = 1e-2 (presets ``miniworld_rotate`` / ``miniworld_walk`` of
``worldmodels/models/gtmsm.py``) and the displacement regression loss of §7.4.2.2 on the true pose from
``info`` (a training target only, never a model input). MiniWorld's ground plane is ``(x, z)`` with the
heading turning from +x towards −z, so the pose is given to the model as ``(x, −z, θ)``
(:func:`envs.miniworld_nav.right_handed`: a right-handed frame in which "forward" is ``(cos θ, sin θ)``, the
convention of eq. (7.4)).

Metrics on episodes from a seed never used in training: pixel MSE of the open-loop predicted mean frame per
prediction step; R² of an affine map from the learned state features to the true pose relative to the
window start (heading as ``(cos, sin)``; position for the walking agent); for walking agents also a
held-out ridge probe from every model's open-loop latent features to the pose. References: ``no_memory`` (the
mean memorised frame) and ``oracle_lookup`` (the memorised frame whose TRUE pose is nearest: what a perfect
state estimate plus a 1-nearest-neighbour memory read would give; it uses the true pose, so it is not a
model).

Example:
    >>> EXPERIMENT.name, list(EXPERIMENT.phases)
    ('gtmsm-miniworld', ['collect', 'train', 'eval', 'report'])
    >>> PROTOCOLS["rotate"].tau + PROTOCOLS["rotate"].horizon <= MINIWORLD_AGENTS["rotate"].episode_steps + 1
    True
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import envs  # noqa: F401  (registers the WM-MiniWorld ids)
import worldmodels
from agents.explorers import MINIWORLD_AGENTS
from envs.miniworld_nav import right_handed
from worldmodels.api import Batch
from worldmodels.baselines import mean_frame
from worldmodels.data import MappedWindows, RolloutDataset, WindowDataset
from worldmodels.data import collect as collect_rollouts
from worldmodels.experiments import Experiment, record
from worldmodels.files import atomic_save
from worldmodels.malloc import keep_freed_memory
from worldmodels.models import build_model
from worldmodels.probes import affine_fit, affine_r2, heldout_probe_r2
from worldmodels.train import TrainConfig, Trainer
from worldmodels.viz import columns_gif

__all__ = ["Args", "Protocol", "PROTOCOLS", "EXPERIMENT", "relative_pose", "pose_features", "pose_windows"]

NAME = "gtmsm-miniworld"
SUMMARY = "GTM-SM in MiniWorld 3-D, rotating and walking agents, against RSSM, VRNN, SRNN (§7.4.2)"


@dataclass
class Args:
    """Arguments (CleanRL style: one dataclass, read top to bottom); the defaults are the preset."""

    agent: str = "rotate"  # rotate (§7.4.2.1) | walk (§7.4.2.2, OneRoom) | walk_fourrooms (issue #8, FourRooms)
    model: str = ""  # train phase: gtmsm | rssm | vrnn | srnn (comma-separated); "": gtmsm and every --baselines
    out: str = "runs/gtmsm_miniworld"
    data: str = "data/gtmsm_miniworld"
    results: str = "docs/results"
    seed: int = 0
    train_episodes: int = 1000
    test_episodes: int = 64
    steps: int = 3000  # optimizer updates of the model trained (the budget of each is recorded beside it)
    train_len: int = 0  # training window in frames (0: the agent's τ + training prediction steps)
    batch_size: int = 16
    lr: float = 1e-3
    lr_final: float = 1e-4  # linear decay over ``steps`` (the thesis: 3e-3 -> 5e-5 over 100,000 updates)
    displacement_weight: float = 1e4  # §7.4.2.2 regression loss (at 100 the KL gradients held M at ~70% of the turn)
    m_init_scale: float = 0.1
    beta0: float = 1.0  # KL weight at the start (linearly to 1 over beta_anneal_steps)
    beta_anneal_steps: int = 0
    threads: int = 1
    vae_precision: str = "float32"  # GTM-SM's VAE: float32 | bfloat16 (opt-in: ~1.4x faster updates, other numbers)
    keep_freed_memory: bool = True  # train phase: glibc malloc keeps freed blocks (worldmodels.malloc; ~2x faster)
    checkpoint_every: int = 200
    baselines: str = "rssm"  # evaluated besides GTM-SM (those with a checkpoint)


@dataclass(frozen=True)
class Protocol:
    """One agent's windows (§7.7.2) and the GTM-SM preset trained on them."""

    train_len: int  # training window (τ + training prediction steps)
    tau: int  # memorised frames
    horizon: int  # predicted frames at test time
    preset: str  # worldmodels.models.gtmsm preset


PROTOCOLS: dict[str, Protocol] = {
    "rotate": Protocol(33 + 16, 33, 45, "miniworld_rotate"),
    "walk": Protocol(150 + 32, 150, 150, "miniworld_walk"),
    "walk_fourrooms": Protocol(150 + 32, 150, 150, "miniworld_walk"),
}
SECTION_TITLES = {"rotate": "Rotating agent", "walk": "Walking agent",
                  "walk_fourrooms": "Walking agent in four rooms (issue #8, experiment 3)"}
UNSEEN_DEFAULT = "worlds never seen in training"
UNSEEN = {"walk_fourrooms": "episode seeds never used in training: new start poses, goal-box places and walks; "
                            "FourRooms itself has one fixed layout and fixed textures"}
REFERENCES = ("no_memory", "oracle_lookup", "gtmsm_vae_reconstruction")  # not models' open-loop predictions
BASELINE_PRESETS = {"rssm": ("rssm", "miniworld"), "vrnn": ("vrnn", "video"), "srnn": ("srnn", "video")}
THESIS_UPDATES = 100_000  # §7.7.2: 3e-3 -> 5e-5 over 100,000 updates


def _check(args: Args) -> None:
    if args.agent not in MINIWORLD_AGENTS or args.agent not in PROTOCOLS:
        raise ValueError(f"--agent: expected one of {sorted(PROTOCOLS)}, received {args.agent!r}")


def data_dirs(args: Args) -> tuple[Path, Path]:
    base = Path(f"{args.data}_{args.agent}")
    return base / "train", base / "test"


def run_dir(args: Args, which: str) -> Path:
    return Path(args.out) / args.agent / which


def baselines(args: Args) -> list[str]:
    return [b for b in args.baselines.split(",") if b]


# ----------------------------------------------------------------------------- data


def collect(args: Args) -> None:
    """Phase ``collect``: the train set (seed ``seed``) and the test set (seed ``seed + 10_000``: other worlds)."""
    _check(args)
    ag = MINIWORLD_AGENTS[args.agent]
    policy = ag.policy()
    train_dir, test_dir = data_dirs(args)
    kw = dict(ag.env_kwargs)
    collect_rollouts(ag.env_id, train_dir, args.train_episodes, ag.episode_steps, policy=policy, seed=args.seed,
                     env_kwargs=kw)
    collect_rollouts(ag.env_id, test_dir, args.test_episodes, ag.episode_steps, policy=policy,
                     seed=args.seed + 10_000, env_kwargs=kw)


def pose_windows(data: WindowDataset) -> MappedWindows:
    """Windows of a dataset as :class:`Batch` es with the pose in the right-handed frame (see module doc)."""
    return MappedWindows(data, lambda b: dataclasses.replace(
        b, state=None if b.state is None else right_handed(b.state)))


def build(args: Args, which: str, action_dim: int) -> torch.nn.Module:
    if which == "gtmsm":
        return build_model("gtmsm", PROTOCOLS[args.agent].preset, action_dim=action_dim,
                           displacement_weight=args.displacement_weight, m_init_scale=args.m_init_scale,
                           vae_precision=args.vae_precision)
    name, preset = BASELINE_PRESETS[which]
    return build_model(name, preset, obs_shape=(3, 32, 32), action_dim=action_dim)


def train_model(args: Args, which: str) -> Path:
    """Train one model for ``args.steps`` updates on random ``train_len`` windows (resumes from ``last``).

    With ``keep_freed_memory`` the process's ``malloc`` keeps freed blocks for the next update
    (:func:`worldmodels.malloc.keep_freed_memory`: the walking update's ~1 GB of activations are otherwise faulted in
    again every update, about half of its time here; ``make bench``, group ``gtmsm_miniworld_train``).
    """
    torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        keep_freed_memory()
    train_dir, _ = data_dirs(args)
    windows = pose_windows(WindowDataset(train_dir, args.train_len or PROTOCOLS[args.agent].train_len))
    model = build(args, which, windows.data.action_dim)
    out_dir = run_dir(args, which)
    record.save_run_args(out_dir, args, model=which)
    steps_per_epoch = max(1, len(windows) // args.batch_size)
    gtmsm = which == "gtmsm"
    cfg = TrainConfig(
        lr=args.lr, lr_schedule="linear", lr_final=args.lr_final, lr_decay_steps=args.steps, grad_clip=10.0,
        beta0=args.beta0 if gtmsm else 1.0, beta_anneal_steps=args.beta_anneal_steps if gtmsm else 0,
        epochs=max(1, -(-args.steps // steps_per_epoch)), max_steps=args.steps, batch_size=args.batch_size,
        seed=args.seed, out_dir=str(out_dir), checkpoint_every=args.checkpoint_every, log_every=25,
        tensorboard=False,
    )
    Trainer(model, windows, cfg, collate_fn=windows.collate).fit()
    return out_dir


def train(args: Args) -> None:
    """Phase ``train``: the models of ``--model`` (default: GTM-SM and every ``--baselines`` model) in turn."""
    _check(args)
    which = [m for m in args.model.split(",") if m] or ["gtmsm", *baselines(args)]
    unknown = [m for m in which if m != "gtmsm" and m not in BASELINE_PRESETS]
    if unknown:
        raise ValueError(f"--model: expected models among {['gtmsm', *BASELINE_PRESETS]}, received {unknown}")
    for m in which:
        train_model(args, m)


# ----------------------------------------------------------------------------- evaluation


def relative_pose(pose: torch.Tensor) -> torch.Tensor:
    """Pose ``[B, T, 3]`` (right-handed) in the frame of the window's first pose: ``(x, y, Δθ)``.

    Example:
        >>> p = torch.tensor([[[1.0, 1.0, np.pi / 2], [1.0, 2.0, np.pi / 2]]])  # one step along +y, facing +y
        >>> [abs(round(v, 6)) for v in relative_pose(p)[0, 1].tolist()]  # straight ahead in the start frame
        [1.0, 0.0, 0.0]
    """
    p0 = pose[:, :1]
    d = pose[..., :2] - p0[..., :2]
    c, s = torch.cos(-p0[..., 2]), torch.sin(-p0[..., 2])
    xy = torch.stack([c * d[..., 0] - s * d[..., 1], s * d[..., 0] + c * d[..., 1]], -1)
    return torch.cat([xy, pose[..., 2:] - p0[..., 2:]], -1)


def pose_features(p: torch.Tensor) -> torch.Tensor:
    """``(x, y, θ) -> (x, y, cos θ, sin θ)`` (the DND key features of §7.7.2)."""
    return torch.cat([p[..., :2], torch.cos(p[..., 2:]), torch.sin(p[..., 2:])], -1)


def eval_batches(args: Args, chunk: int = 16) -> Iterator[Batch]:
    """The test episodes as windows of ``τ + horizon`` frames from their first frame."""
    p = PROTOCOLS[args.agent]
    _, test_dir = data_dirs(args)
    w = pose_windows(WindowDataset(test_dir, p.tau + p.horizon))
    firsts = w.data.episode_starts().tolist()
    for i in range(0, len(firsts), chunk):
        yield w.collate(w.__getitems__(firsts[i : i + chunk]))


@torch.no_grad()
def evaluate_models(args: Args) -> tuple[dict, dict]:
    """Open-loop predictions of every model with a checkpoint and the references on the test episodes:
    ``(metrics, example)`` (``example``: the first test episode's frames, for the plots)."""
    torch.set_num_threads(args.threads)
    ag, prot = MINIWORLD_AGENTS[args.agent], PROTOCOLS[args.agent]
    tau, H = prot.tau, prot.horizon
    models = {}
    for which in ["gtmsm", *baselines(args)]:
        path = run_dir(args, which) / "last"
        if path.exists():
            models[which] = worldmodels.load(path).eval()
        else:
            print(f"skip {which}: no checkpoint at {path}")
    labels = [*models, "no_memory", "oracle_lookup", *(["gtmsm_vae_reconstruction"] if "gtmsm" in models else [])]
    sse = {k: torch.zeros(H, dtype=torch.float64) for k in labels}
    n = 0
    s_all, rel_all, pose_all = [], [], []
    latents: dict[str, list[torch.Tensor]] = {k: [] for k in models}
    example: dict = {}
    for batch in eval_batches(args):
        obs, act = batch.obs, batch.action
        assert batch.state is not None  # MiniWorld datasets record the pose
        truth = obs[:, tau : tau + H]  # [B, H, C, H, W]
        rel = relative_pose(batch.state)  # [B, T, 3]
        f = pose_features(rel)
        d2 = torch.cdist(f[:, tau : tau + H], f[:, :tau]).square()  # [B, H, tau]
        nearest = d2.argmin(-1)  # [B, H]
        preds = {
            "no_memory": mean_frame(obs[:, :tau], H),
            "oracle_lookup": obs[:, :tau].gather(1, nearest[..., None, None, None].expand_as(truth)),
        }
        for which, model in models.items():
            im = model.predict(obs[:, :tau], act[:, :tau], act[:, tau : tau + H])
            preds[which] = im.obs.reshape(truth.shape).clamp(0, 1)
            latents[which].append(im.latent)  # [B, H, F] open-loop latent features
            if which == "gtmsm":
                s, _ = model.rollout_states(act[:, : tau + H])
                s_all.append(s)
                mu_z, _ = model.encode(truth)  # teacher-forced floor of the decoder: NOT a prediction
                preds["gtmsm_vae_reconstruction"] = model.frame_mean(model.decode(mu_z))
        rel_all.append(rel[:, : tau + H])
        pose_all.append(batch.state[:, : tau + H])  # world frame (right-handed)
        for k, p in preds.items():
            sse[k] += (p - truth).square().mean((2, 3, 4)).sum(0).double()
        if not example:
            example = {"truth": truth[0], **{k: v[0] for k, v in preds.items()},
                       "context": obs[0, :tau], "rel": rel[0, : tau + H]}
            if s_all:
                example["s"] = s_all[0][0]
        n += obs.shape[0]
    curves = {k: (v / n).tolist() for k, v in sse.items()}
    summary = {}
    early = 41 - tau if args.agent == "rotate" else prot.train_len - tau  # unseen part of turn 1 / training horizon
    for k, c in curves.items():
        mse = np.array(c)
        summary[k] = {"mse_step1": float(mse[0]), "mse_step8": float(mse[min(7, H - 1)]),
                      "mse_step_last": float(mse[-1]), "mse_mean": float(mse.mean()),
                      "mse_mean_early": float(mse[:early].mean())}
        if H >= 50:
            summary[k]["mse_step50"] = float(mse[49])
    metrics: dict = {"agent": args.agent, "env_id": ag.env_id, "episodes": n, "tau": tau, "horizon": H,
                     "curves": curves, "summary": summary, "state": {}, "latent_probe": {}}
    if ag.walking and models:
        # every model: held-out affine probe from its open-loop latent features to the true pose over the H
        # predicted steps, relative to the window start (GTM-SM's frame) and in the world frame (FourRooms has
        # one layout, so a model may also localise absolutely)
        rel_p = pose_features(torch.cat(rel_all)[:, tau:])  # [N, H, 4]
        abs_p = pose_features(torch.cat(pose_all)[:, tau:])
        for which in models:
            lat = torch.cat(latents[which])
            metrics["latent_probe"][which] = {
                "latent_dim": int(lat.shape[-1]),
                "relative_position_r2": heldout_probe_r2(lat, rel_p[..., :2]),
                "relative_heading_r2": heldout_probe_r2(lat, rel_p[..., 2:]),
                "world_position_r2": heldout_probe_r2(lat, abs_p[..., :2]),
                "world_heading_r2": heldout_probe_r2(lat, abs_p[..., 2:]),
            }
    if s_all:
        s, rel = torch.cat(s_all), torch.cat(rel_all)
        fs, fr = pose_features(s), pose_features(rel)
        st: dict = {
            "heading_r2_all": affine_r2(fs[..., 2:], fr[..., 2:]),
            "heading_r2_prediction": affine_r2(fs[:, tau:, 2:], fr[:, tau:, 2:]),
            "M": models["gtmsm"].M.detach().tolist(),
        }
        dth = torch.atan2(torch.sin(s[..., 2] - rel[..., 2]), torch.cos(s[..., 2] - rel[..., 2]))  # [B, T]
        st["heading_abs_error_deg_last_step"] = float(dth[:, -1].abs().mean() * 180 / np.pi)
        st["heading_abs_error_deg_mean"] = float(dth.abs().mean() * 180 / np.pi)
        if ag.walking:
            st["position_r2_all"] = affine_r2(s[..., :2], rel[..., :2])
            st["position_r2_prediction"] = affine_r2(s[:, tau:, :2], rel[:, tau:, :2])
        metrics["state"] = st
    return metrics, example


def plots(args: Args, metrics: dict, example: dict) -> list[str]:
    """Error-vs-horizon PNG, learned-vs-true state PNG, side-by-side prediction GIF; returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ag = MINIWORLD_AGENTS[args.agent]
    res = Path(args.results)
    stem = f"gtmsm_miniworld_{args.agent}"
    tau, H = metrics["tau"], metrics["horizon"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, c in metrics["curves"].items():
        ref = k in REFERENCES
        ax.plot(np.arange(tau + 1, tau + H + 1), np.maximum(c, 1e-4), label=k + (" (reference)" if ref else ""),
                ls=":" if ref else "-")
    if args.agent == "rotate":
        ax.axvline(41, color="gray", lw=0.8)
        ax.text(41.5, ax.get_ylim()[1] * 0.9, "first turn complete", fontsize=8, color="gray")
    ax.set_xlabel(f"time step (open-loop prediction after τ = {tau} memorised frames)")
    ax.set_ylabel("pixel MSE (values < 1e-4 drawn at 1e-4)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{metrics['env_id']}: test set ({metrics['episodes']} episodes, unseen seeds)")
    fig.tight_layout()
    atomic_save(res / f"{stem}_error.png", lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    files = [f"{stem}_error.png"]
    if "s" in example:
        s, rel = example["s"].double(), example["rel"].double()
        t = np.arange(1, len(s) + 1)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        axes[0].plot(t, np.unwrap(rel[:, 2].numpy()), "k-", label="true heading change Δθ")
        axes[0].plot(t, s[:, 2].numpy(), "r--", label="learned s³")
        axes[0].axvline(tau + 0.5, color="gray", lw=0.8)
        axes[0].set_xlabel("time step (memorisation | prediction)")
        axes[0].set_ylabel("radians")
        axes[0].legend(fontsize=8)
        axes[0].set_title("heading: learned vs true (one test episode)")
        if ag.walking:
            _, fit = affine_fit(s[:, :2], rel[:, :2])
            axes[1].plot(rel[:tau, 0], rel[:tau, 1], "k-", label="true (memorisation)")
            axes[1].plot(rel[tau:, 0], rel[tau:, 1], "k:", label="true (prediction)")
            axes[1].plot(fit[:, 0], fit[:, 1], "r--", label="affine map of learned s_{1:2}")
            axes[1].set_title("position in the start frame")
            axes[1].axis("equal")
        else:
            axes[1].plot(np.cos(rel[:, 2]), np.sin(rel[:, 2]), "k.", label="true (cos Δθ, sin Δθ)")
            axes[1].plot(0.9 * np.cos(s[:, 2]), 0.9 * np.sin(s[:, 2]), "r.", label="learned (cos s³, sin s³) × 0.9")
            axes[1].axis("equal")
            axes[1].set_title("heading on the unit circle")
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        atomic_save(res / f"{stem}_states.png", lambda tmp: fig.savefig(tmp, dpi=110))
        plt.close(fig)
        files.append(f"{stem}_states.png")
    keys = ["truth", *[k for k in metrics["curves"] if k in example and k != "gtmsm_vae_reconstruction"]]
    up = 3 if H <= 60 else 2  # long walking horizons: smaller frames keep the GIF small
    every = 1 if H <= 60 else 2  # and every second step
    columns_gif(res / f"{stem}_predictions.gif", [example[k] for k in keys], scale=up, sep=2,
                duration=0.15 * every, every=every)
    files.append(f"{stem}_predictions.gif")
    metrics["gif_columns"] = keys
    metrics["gif_every"] = every
    return files


def tqdm_elapsed(args: Args, which: str) -> float:
    """Elapsed seconds of the last tqdm line of ``<out>/train_<agent>_<model>.log`` (NaN without a log)."""
    log = Path(args.out) / f"train_{args.agent}_{which}.log"
    if not log.exists():
        return float("nan")
    found = re.findall(r"\| *\d+/\d+ \[(?:(\d+):)?(\d+):(\d+)<", log.read_text(errors="replace"))
    if not found:
        return float("nan")
    h, m, sec = found[-1]
    return 3600 * int(h or 0) + 60 * int(m) + int(sec)


def data_stats(args: Args) -> dict:
    """Episodes per split, how many are long enough for the windows, and (walking agents) the fraction of
    forward actions a wall blocked (zero displacement: the momentum model of §7.4.2.2 cannot represent it)."""
    ag, prot = MINIWORLD_AGENTS[args.agent], PROTOCOLS[args.agent]
    out: dict = {}
    for split, path, need in zip(("train", "test"), data_dirs(args), (prot.train_len, prot.tau + prot.horizon)):
        d = RolloutDataset(path)
        lengths = [d.episode(i).length + 1 for i in range(d.num_episodes)]  # frames
        row: dict = {"episodes": d.num_episodes, "episodes_with_enough_frames": int(sum(n >= need for n in lengths)),
                     "frames_needed": need, "ended_at_goal": int(sum(d.episode(i).terminated
                                                                     for i in range(d.num_episodes)))}
        if ag.walking:
            fwd = blocked = 0
            for i in range(d.num_episodes):
                e = d.episode(i)
                step = np.linalg.norm(np.diff(np.asarray(e.extras["pose"])[:, :2], axis=0), axis=1)  # [T]
                is_fwd = np.asarray(e.action) == 2  # MiniWorld's move_forward
                fwd += int(is_fwd.sum())
                blocked += int((is_fwd & (step < 1e-9)).sum())
            row["forward_steps_blocked_by_wall"] = blocked / max(fwd, 1)
        out[split] = row
    return out


def training_budgets(args: Args) -> dict:
    """Per model with a training log: updates, tqdm wall clock, the last metrics row and its run arguments."""
    out = {}
    for which in ["gtmsm", *baselines(args)]:
        folder = run_dir(args, which)
        csv = folder / "metrics.csv"
        if not csv.exists():
            continue
        lines = csv.read_text().strip().splitlines()
        last = dict(zip(lines[0].split(","), lines[-1].split(",")))
        ta = json.loads((folder / "train_args.json").read_text()) if (folder / "train_args.json").exists() else {}
        keep: tuple[str, ...] = ("seed", "steps", "batch_size", "lr", "lr_final", "train_len")
        if which == "gtmsm":
            keep += ("displacement_weight", "m_init_scale", "beta0", "beta_anneal_steps")
        out[which] = {"updates": int(float(last.get("step", 0))), "wall_clock_s": tqdm_elapsed(args, which),
                      "last_row": last, "train_args": {k: ta[k] for k in keep if k in ta},
                      "window_frames": ta.get("train_len") or PROTOCOLS[args.agent].train_len,
                      "train_episodes_in_data": RolloutDataset(data_dirs(args)[0]).num_episodes}
    return out


def evaluate(args: Args) -> None:
    """Phase ``eval``: metrics, plots and GIF -> ``<results>/gtmsm_miniworld_<agent>.json``, then the page."""
    _check(args)
    start = time.time()
    metrics, example = evaluate_models(args)
    plots(args, metrics, example)
    metrics["training"] = training_budgets(args)
    metrics["data"] = data_stats(args)
    budget = {"test_episodes": metrics["episodes"],
              **{f"{k}_updates": v["updates"] for k, v in metrics["training"].items()},
              "thesis_updates": THESIS_UPDATES}
    rec = record.record(f"gtmsm_miniworld_{args.agent}", record.command(NAME, args, phase="eval"), seed=args.seed,
                        wall_clock_s=time.time() - start, budget=budget, metrics=metrics,
                        args=dataclasses.asdict(args))
    record.write(rec, Path(args.results) / f"gtmsm_miniworld_{args.agent}.json")
    print(json.dumps(metrics["summary"], indent=1), json.dumps(metrics["state"], indent=1))
    print("wrote", write_markdown(args))


# ----------------------------------------------------------------------------- report


def write_markdown(args: Args) -> Path:
    """Generate ``<results>/gtmsm_miniworld.md`` from every ``gtmsm_miniworld_<agent>.json``."""
    res = Path(args.results)
    lines = ["# GTM-SM in MiniWorld 3-D (thesis §7.4.2)", "",
             "Generated by `python scripts/gtmsm_miniworld.py --phase report` from "
             "`docs/results/gtmsm_miniworld_<agent>.json`; do not edit by hand.", ""]
    for agent in PROTOCOLS:
        path = res / f"gtmsm_miniworld_{agent}.json"
        if not path.exists():
            continue
        d = json.loads(path.read_text())
        m = d["metrics"]
        tau, H = m["tau"], m["horizon"]
        lines += [
            f"## {SECTION_TITLES[agent]} (`{m['env_id']}`)", "",
            f"Command: `{d['command']}` · commit `{d['git_commit']}` · seed {d['seed']} · machine: {d['machine']} · "
            f"wall clock of the evaluation {d['wall_clock_s']:.0f} s.", "",
            f"Test: {m['episodes']} episodes from seed {d['seed'] + 10_000} ({UNSEEN.get(agent, UNSEEN_DEFAULT)}), "
            f"τ = {tau} memorised frames, {H} open-loop predicted frames (32x32 RGB). Errors are of open-loop "
            "predictions, not reconstructions. `no_memory` = mean memorised frame; `oracle_lookup` = the "
            "memorised frame with the nearest TRUE pose (uses ground truth: a reference, not a model; 0 where the "
            "exact view was memorised); `gtmsm_vae_reconstruction` = GTM-SM's decoder applied to the encoder mean "
            "of the TRUE frame (teacher-forced, not a prediction: the floor set by the VAE).", "",
        ]
        training = m.get("training", {})
        batch = training.get("gtmsm", {}).get("train_args", {}).get("batch_size", "?")
        same = len({(v["updates"], v.get("window_frames")) for v in training.values()}) <= 1
        lines += [f"Training (every model on the same windows, same number of updates of batch {batch}):" if same
                  else f"Training (same training episodes, seed and batch {batch}; updates and window length per "
                  "model as listed: the wall-clock budget, not the update count, was matched):", ""]
        gtmsm_only = ("displacement_weight", "m_init_scale", "beta0", "beta_anneal_steps")
        for k, v in m.get("training", {}).items():
            targs = {a: b for a, b in v["train_args"].items() if k == "gtmsm" or a not in gtmsm_only}
            window = f"windows of {v['window_frames']} frames, " if "window_frames" in v else ""
            lines.append(f"- `{k}`: {v['updates']} updates, {v['wall_clock_s'] / 60:.1f} min (tqdm; one thread), "
                         f"{window}{v.get('train_episodes_in_data', '?')} training episodes; "
                         f"{json.dumps(targs)}")
        if "data" in m:
            tr, te = m["data"]["train"], m["data"]["test"]
            lines += ["", f"Data: {tr['episodes']} training episodes ({tr['episodes_with_enough_frames']} with at least "
                      f"{tr['frames_needed']} frames; {tr['ended_at_goal']} ended at the goal box), {te['episodes']} "
                      f"test episodes ({te['episodes_with_enough_frames']} with all {te['frames_needed']} frames, "
                      "the ones evaluated)"
                      + (f"; a wall blocked {100 * tr['forward_steps_blocked_by_wall']:.0f}% of the forward steps "
                         f"(test {100 * te['forward_steps_blocked_by_wall']:.0f}%)."
                         if "forward_steps_blocked_by_wall" in tr else ".")]
        last_col = (f"MSE mean, t = {tau + 1}–41 (unseen part of turn 1)" if agent == "rotate" else
                    f"MSE mean, first {PROTOCOLS[agent].train_len - tau} steps (the training horizon)")
        # rotating agent: views memorised in turn 1 come back at t = 42..74 (heading within the first 33 frames)
        revisit = (42 - tau - 1, 74 - tau) if agent == "rotate" else None
        rev_col = " MSE mean, t = 42–74 (views seen in memory) |" if revisit else ""
        step50 = H >= 50 and agent != "rotate"
        lines += ["", f"| model | MSE step 1 (t = {tau + 1}) | MSE step 8 |"
                  + (f" MSE step 50 (t = {tau + 50}) |" if step50 else "")
                  + f" MSE step {H} (t = {tau + H}) | MSE mean | {last_col} |{rev_col}",
                  "|---|---|---|---|---|---|" + ("---|" if revisit else "") + ("---|" if step50 else "")]
        for k, v in m["summary"].items():
            rev = f" {np.mean(m['curves'][k][revisit[0] : revisit[1]]):.4f} |" if revisit else ""
            s50 = f" {m['curves'][k][49]:.4f} |" if step50 else ""
            lines.append(f"| {k} | {v['mse_step1']:.4f} | {v['mse_step8']:.4f} |{s50} {v['mse_step_last']:.4f} | "
                         f"{v['mse_mean']:.4f} | {v.get('mse_mean_early', float('nan')):.4f} |{rev}")
        lines.append("")
        if m.get("latent_probe"):
            lines += ["Pose read from every model's open-loop latent features over the predicted steps (R² of a "
                      "ridge affine map fitted on half of the test episodes and scored on the other half, and back; "
                      "(x, y) and (cos θ, sin θ), relative to the window start and in the world frame):", "",
                      "| model | latent dim | position R² (relative) | heading R² (relative) | position R² (world) | "
                      "heading R² (world) |", "|---|---|---|---|---|---|"]
            for k, v in m["latent_probe"].items():
                lines.append(f"| {k} | {v['latent_dim']} | {v['relative_position_r2']:.3f} | "
                             f"{v['relative_heading_r2']:.3f} | {v['world_position_r2']:.3f} | "
                             f"{v['world_heading_r2']:.3f} |")
            lines.append("")
        st = m.get("state", {})
        if st:
            lines += [
                "GTM-SM learned state vs true pose (relative to the window start; R² of an affine map from "
                "`(cos s³, sin s³)` to `(cos Δθ, sin Δθ)`): "
                f"all steps {st['heading_r2_all']:.4f}, prediction steps {st['heading_r2_prediction']:.4f}; "
                f"mean |heading error| {st['heading_abs_error_deg_mean']:.2f}° (last step "
                f"{st['heading_abs_error_deg_last_step']:.2f}°). Learned M (rows x, y, θ; columns = actions): "
                f"{np.round(np.array(st['M']), 4).tolist()} (true per step: "
                + (f"turn ±{360 / 41:.3f}° = ±{2 * np.pi / 41:.4f} rad)." if agent == "rotate" else
                   f"turn ±15° = ±{np.pi / 12:.4f} rad, forward 0.15 m unless blocked by a wall; the momentum "
                   "model's d_t = c_s ⊙ tanh(σ(c_f) ⊙ d_(t-1) + M a_t) also scales these)."),
                "",
            ]
            if "position_r2_all" in st:
                lines += [f"Position R² (affine map of `s_(1:2)`): all {st['position_r2_all']:.4f}, "
                          f"prediction {st['position_r2_prediction']:.4f}.", ""]
        stem = f"gtmsm_miniworld_{agent}"
        lines += [f"![error vs horizon]({stem}_error.png)", ""]
        if st:
            lines += [f"![learned vs true state]({stem}_states.png)", ""]
        every = m.get("gif_every", 1)
        lines += [f"Side-by-side GIF of the open-loop predictions{' (every second step)' if every == 2 else ''} "
                  f"(columns: {', '.join(m.get('gif_columns', []))}): "
                  f"`{stem}_predictions.gif`", "", f"![predictions]({stem}_predictions.gif)", ""]
    notes = res / "gtmsm_miniworld_notes.md"
    if notes.exists():
        lines += [notes.read_text()]
    out = res / "gtmsm_miniworld.md"
    text = "\n".join(lines) + "\n"
    return atomic_save(out, lambda tmp: tmp.write_text(text))


def report(args: Args) -> None:
    """Phase ``report``: ``<results>/gtmsm_miniworld.md`` from the agents' JSON records."""
    _check(args)
    print("wrote", write_markdown(args))


EXPERIMENT = Experiment(NAME, SUMMARY, Args, {"collect": collect, "train": train, "eval": evaluate,
                                              "report": report})
