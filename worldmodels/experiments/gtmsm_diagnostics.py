"""Why does ELBO-only GTM-SM fail to learn the grid on ImageNav (thesis §7.4.1)? Training diagnostics.

Trains GTM-SM on the data of :mod:`worldmodels.experiments.gtmsm_imagenav` (windows from the episode start, a
curriculum on the window length, the thesis's linear learning-rate decay) and logs, every ``--log-every``
updates:

* the gradient that reaches the transition matrix ``M`` (per entry) and the wall gate σ_d through the memory
  read (in q(z, s | x, a) = q(z | x) p(s | a), eq. 7.2, the states enter the ELBO only through the DND read
  of the prediction steps), beside the encoder's;
* the singular values of ``M``'s move columns and how far ``M`` is from a grid (``M_up + M_down`` and
  ``M_left + M_right`` relative to the column lengths; the stay column's length);
* the inverse-distance weights of the memory read (largest weight, entropy);
* the state R² (affine map to the true position) of the memorisation phase of held-out test episodes.

``--relabel-blocked`` is an oracle check, not a training recipe: moves the walls blocked become "stay"
(from the true positions), so the dynamics are exactly linear. Results: ``docs/results/gtmsm_notes.md``.

Phases: ``train`` (a run ``OUT/NAME.json`` + checkpoint ``OUT/NAME``; skipped when ``--plot`` or
``--gate-map`` is given, which draw instead of training), ``plot`` (``--plot label=name ...``: curves of
runs of ``OUT``; else ``--gate-map NAME``: σ_d of a run over the true positions; to ``--png``). Example::

    worldmodels experiment gtmsm-diagnostics --name kl_mc --set kl='"mc"' --curriculum 12:1500,24:1500
    worldmodels experiment gtmsm-diagnostics --plot base=base kl_mc=kl_mc

(``python scripts/gtmsm_diagnostics.py OPTIONS`` is the same command.)

Example:
    >>> m_report(torch.tensor([[-1.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 1.0, 0.0]]))["updown_sum"]
    0.0
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import worldmodels
from worldmodels.api import Batch
from worldmodels.data import RolloutDataset
from worldmodels.experiments import Experiment
from worldmodels.files import write_json
from worldmodels.probes import affine_fit, affine_r2

__all__ = ["Args", "EXPERIMENT", "overrides", "load_episodes", "window", "m_report", "evaluate", "gate_map",
           "plot_runs", "train", "plot"]


@dataclass
class Args:
    """Arguments; the defaults are the diagnostics' preset (``docs/results/gtmsm_notes.md``)."""

    data: str = "runs/gtmsm_imagenav/data"
    out: str = "runs/gtmsm_diag"
    name: str = ""  # run name (results in OUT/NAME.json); required for training
    # instead of training: plot these runs of OUT (label=name ..., split at the last '=') to --png
    plot: str = dataclasses.field(default="", metadata={"nargs": "*"})
    png: str = "docs/results/gtmsm_diagnostics.png"
    gate_map: str = ""  # instead of training: draw σ_d of run OUT/NAME over the true positions to --png
    preset: str = "imagenav"
    set: str = dataclasses.field(default="", metadata={"nargs": "*"})  # config overrides key=value (JSON values)
    curriculum: str = "12:1500,24:1500,48:2000"
    gate_from_len: int = 48
    lr: float = 1e-3
    lr_final: float = 5e-5
    lr_decay_steps: int = 50_000
    batch_size: int = 16
    log_every: int = 100
    seed: int = 0
    threads: int = 2
    relabel_blocked: bool = False
    train_episodes: int = 0  # 0: all


def overrides(args: Args) -> dict[str, Any]:
    """The config overrides of ``--set key=value ...`` (JSON values).

    Example:
        >>> overrides(Args(set='kl="mc" m_init_scale=0.1 learn_obs_std=false'))
        {'kl': 'mc', 'm_init_scale': 0.1, 'learn_obs_std': False}
    """
    out = {}
    for item in args.set.split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected key=value (a JSON value), received {item!r}")
        out[key] = json.loads(value)
    return out


def load_episodes(path: Path, n: int | None = None, relabel_blocked: bool = False) -> dict[str, torch.Tensor]:
    """Episodes as tensors: obs uint8 ``[N, T, C, H, W]``, one-hot action ``[N, T, A]`` (``action[:, t]``
    led to ``obs[:, t]``, zero at t = 0), pose ``[N, T, 2]``."""
    data = RolloutDataset(path)
    n = data.num_episodes if n is None else min(n, data.num_episodes)
    eps = [data.episode(i) for i in range(n)]
    obs = torch.from_numpy(np.stack([e.obs for e in eps])).permute(0, 1, 4, 2, 3).contiguous()
    act = np.stack([e.action for e in eps])  # [N, T-1]
    pose = np.stack([e.extras["pose"] for e in eps]).astype(np.float32)  # [N, T, 2]
    if relabel_blocked:
        moved = np.abs(np.diff(pose, axis=1)).sum(-1) > 0  # [N, T-1]
        act = np.where(moved, act, 4)
    onehot = torch.zeros(n, act.shape[1] + 1, 5)
    onehot[:, 1:] = torch.nn.functional.one_hot(torch.from_numpy(act), 5).float()
    return {"obs": obs, "action": onehot, "pose": torch.from_numpy(pose)}


def window(d: dict[str, torch.Tensor], idx: torch.Tensor, length: int) -> Batch:
    """The first ``length`` frames of episodes ``idx`` of :func:`load_episodes`'s tensors as a :class:`Batch`."""
    first = torch.zeros(len(idx), length, dtype=torch.bool)
    first[:, 0] = True
    return Batch(obs=d["obs"][idx, :length].float() / 255, action=d["action"][idx, :length], is_first=first,
                 state=d["pose"][idx, :length])


def m_report(M: torch.Tensor) -> dict[str, float]:
    """Grid structure of ``M [2, 5]`` (columns up, down, left, right, stay)."""
    M = M.detach().double()
    cols = M[:, :4].norm(dim=0)
    sv = torch.linalg.svdvals(M[:, :4])
    unit = cols.mean().clamp_min(1e-12)
    cos = float(torch.nn.functional.cosine_similarity(M[:, 0] - M[:, 1], M[:, 3] - M[:, 2], dim=0))
    return {"sv1": float(sv[0]), "sv2": float(sv[1]), "col_mean": float(unit),
            "updown_sum": float((M[:, 0] + M[:, 1]).norm() / unit),  # 0 on a grid
            "leftright_sum": float((M[:, 2] + M[:, 3]).norm() / unit),  # 0 on a grid
            "axes_cos": cos,  # cosine between the vertical and horizontal axes: 0 = perpendicular
            "stay": float(M[:, 4].norm() / unit)}


def _curriculum(text: str) -> list[tuple[int, int]]:
    try:
        return [(int(x.split(":")[0]), int(x.split(":")[1])) for x in text.split(",")]
    except (ValueError, IndexError):
        raise ValueError(f"--curriculum: expected 'length:updates,...', received {text!r}") from None


def train(args: Args) -> None:
    """Phase ``train``: train run ``NAME`` with the diagnostics logged every ``--log-every`` updates, write
    ``OUT/NAME.json`` (arguments, log, final ``M``) and the checkpoint ``OUT/NAME``. Skipped when ``--plot`` or
    ``--gate-map`` is given (those draw instead of training)."""
    if args.plot or args.gate_map:
        return
    if not args.name:
        raise ValueError("gtmsm-diagnostics: --name is required for training (or give --plot / --gate-map)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    plan = _curriculum(args.curriculum)
    gate_from = sum(n for length, n in plan if length < args.gate_from_len)
    model = worldmodels.build_model("gtmsm", args.preset, **{"wall_gate_from": gate_from, **overrides(args)})
    n_train = args.train_episodes if args.train_episodes > 0 else None
    train_eps = load_episodes(Path(args.data) / "train", n_train, args.relabel_blocked)
    test_eps = load_episodes(Path(args.data) / "test", 32, args.relabel_blocked)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    total = sum(n for _, n in plan)
    rng = np.random.default_rng(args.seed)
    log: list[dict[str, Any]] = []
    acc: dict[str, float] = {}
    step, t0 = 0, time.perf_counter()
    enc_params = list(model.encoder.parameters())
    for length, n in plan:
        for _ in range(n):
            for g in opt.param_groups:
                g["lr"] = args.lr + (args.lr_final - args.lr) * min(1.0, step / args.lr_decay_steps)
            idx = torch.from_numpy(rng.integers(0, train_eps["obs"].shape[0], args.batch_size))
            batch = window(train_eps, idx, length)
            model.train()
            out = model.loss(batch)
            opt.zero_grad()
            out.loss.backward()
            gM = model.M.grad.detach().abs()
            stats = {"loss": float(out.loss.detach()), **{k: v for k, v in out.metrics.items() if k != "tau"},
                     "grad_M": float(gM.norm()), "grad_M_max": float(gM.max()),
                     "grad_enc": float(torch.sqrt(sum(p.grad.square().sum() for p in enc_params)))}
            if hasattr(model, "gate"):
                gate_sq = [p.grad.square().sum() for p in model.gate.parameters() if p.grad is not None]
                stats["grad_gate"] = float(torch.stack(gate_sq).sum().sqrt()) if gate_sq else 0.0
            opt.step()
            for k, v in stats.items():
                acc[k] = acc.get(k, 0.0) + v
            step += 1
            if step % args.log_every == 0 or step == total:
                row = {"step": step, "length": length, "lr": opt.param_groups[0]["lr"],
                       "wall_s": round(time.perf_counter() - t0, 1),
                       **{k: v / args.log_every for k, v in acc.items()}, **m_report(model.M),
                       **evaluate(model, test_eps)}
                acc = {}
                log.append(row)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / f"{args.name}.json", {"args": _recorded_args(args), "log": log, "M": model.M.detach().tolist()})
    worldmodels.save(out_dir / args.name, model)  # for a look at the learned gate σ_d


def _recorded_args(args: Args) -> dict[str, Any]:
    """The arguments as the run JSON has them (``plot``/``set`` as lists; ``gate_map`` and ``train_episodes``
    None when not given)."""
    return {**dataclasses.asdict(args), "plot": args.plot.split() or None, "gate_map": args.gate_map or None,
            "set": args.set.split(), "train_episodes": args.train_episodes if args.train_episodes > 0 else None}


@torch.no_grad()
def evaluate(model: Any, test: dict[str, torch.Tensor]) -> dict[str, float]:
    """State R² of the memorisation phase (mean path, 256 steps) and the memory-read weights of the
    32 prediction steps of 288-frame test windows."""
    model.eval()
    b = window(test, torch.arange(test["obs"].shape[0]), 288)
    s, _ = model.rollout_states(b.action, b.is_first)
    assert b.state is not None  # window() sets the true positions
    r2 = affine_r2(s[:, :256], b.state[:, :256])
    mu, std = model.encode(b.obs[:, :256])
    log_w, _, _, d2 = model.prior(s[:, 256:], s[:, :256], mu, std, None)
    w = log_w.exp()
    ent = float(-(w * log_w.clamp_min(-1e30)).sum(-1).mean())
    return {"r2_mem": r2, "w_max": float(w.max(-1).values.mean()), "w_entropy": ent / math.log(w.shape[-1]),
            "d2_nn": float(d2[..., 0].mean())}


@torch.no_grad()
def gate_map(run: Path, test: dict[str, torch.Tensor], png: Path) -> None:
    """σ_d(s) over the true (row, col) plane: the learned states of the test memorisation phases give the affine
    map position -> s (least squares), through which a fine grid of positions is sent into the gate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = worldmodels.load(run).eval()
    b = window(test, torch.arange(test["obs"].shape[0]), 256)
    s, _ = model.rollout_states(b.action, b.is_first)
    assert b.state is not None  # window() sets the true positions
    W, _ = affine_fit(b.state, s)  # [3, 2]: position -> s
    g = torch.linspace(-2, 10, 121)
    P = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    S = (torch.cat([P, torch.ones(len(P), 1)], 1).double() @ W).float()
    sigma = torch.sigmoid(model.gate(S)).reshape(121, 121)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    im = ax.imshow(sigma.numpy(), extent=(-2, 10, 10, -2), vmin=0, vmax=1, cmap="viridis")
    ax.add_patch(plt.Rectangle((-0.5, -0.5), 9, 9, fill=False, color="w", ls="--"))
    ax.set(title=f"σ_d over true positions ({run.name}); box = the 9x9 cells", xlabel="column", ylabel="row")
    fig.colorbar(im)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80)
    plt.close(fig)
    print(f"wrote {png}")


def plot_runs(out: Path, runs: list[tuple[str, str]], png: Path) -> None:
    """Four panels over updates: memorisation-state R², grid error of M, singular values of M, gradient norms;
    ``runs``: ``(label, name)`` of the runs ``out/name.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(20, 4.5))
    for label, name in runs:
        log = json.loads((out / f"{name}.json").read_text())["log"]
        x = [r["step"] for r in log]
        line = ax[0].plot(x, [r["r2_mem"] for r in log], label=label)[0]
        ax[1].plot(x, [max(r["updown_sum"], r["leftright_sum"]) for r in log], color=line.get_color())
        ax[2].plot(x, [r["sv2"] / r["sv1"] for r in log], color=line.get_color())
        ax[3].plot(x, [r["grad_M"] for r in log], color=line.get_color())
        ax[3].plot(x, [r.get("grad_gate", 0.0) for r in log], color=line.get_color(), ls="--")
    ax[0].set(title="state R² (affine), memorisation, test", xlabel="update", ylim=(0, 1.02))
    ax[1].set(title="grid error of M: max(|M_up+M_down|, |M_l+M_r|) / |col|", xlabel="update", yscale="log")
    ax[2].set(title="σ2/σ1 of M's move columns (1 = isotropic)", xlabel="update", yscale="log")
    ax[3].set(title="|∂L/∂M| (solid), |∂L/∂σ_d params| (dashed)", xlabel="update", yscale="log")
    ax[0].legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80)
    plt.close(fig)
    print(f"wrote {png}")


def plot(args: Args) -> None:
    """Phase ``plot``: the runs of ``--plot label=name ...`` (a bare ``name`` is its own label), else the
    σ_d map of ``--gate-map NAME``, to ``--png`` (nothing without either: phase ``all`` after training)."""
    if args.plot:
        runs = [(x.rsplit("=", 1)[0], x.rsplit("=", 1)[1]) if "=" in x else (x, x) for x in args.plot.split()]
        plot_runs(Path(args.out), runs, Path(args.png))
    elif args.gate_map:
        gate_map(Path(args.out) / args.gate_map, load_episodes(Path(args.data) / "test", 32), Path(args.png))


EXPERIMENT = Experiment("gtmsm-diagnostics", "why ELBO-only GTM-SM misses the grid on ImageNav: training diagnostics (§7.4.1)",
                        Args, {"train": train, "plot": plot})
