"""Why does ELBO-only GTM-SM fail to learn the grid on ImageNav (thesis §7.4.1)? Training diagnostics.

Trains GTM-SM on the data of ``scripts/gtmsm_imagenav.py`` (windows from the episode start, a curriculum on
the window length, the thesis's linear learning-rate decay) and logs, every ``--log-every`` updates:

* the gradient that reaches the transition matrix ``M`` (per entry) and the wall gate σ_d through the memory
  read (in q(z, s | x, a) = q(z | x) p(s | a), eq. 7.2, the states enter the ELBO only through the DND read
  of the prediction steps), beside the encoder's;
* the singular values of ``M``'s move columns and how far ``M`` is from a grid (``M_up + M_down`` and
  ``M_left + M_right`` relative to the column lengths; the stay column's length);
* the inverse-distance weights of the memory read (largest weight, entropy);
* the state R² (affine map to the true position) of the memorisation phase of held-out test episodes.

``--relabel-blocked`` is an oracle check, not a training recipe: moves the walls blocked become "stay"
(from the true positions), so the dynamics are exactly linear.

Example::

    python scripts/gtmsm_diagnostics.py --name kl_mc --set kl=mc --curriculum 12:1500,24:1500
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import worldmodels  # noqa: E402
from worldmodels.api import Batch  # noqa: E402
from worldmodels.data import RolloutDataset  # noqa: E402
from worldmodels.files import write_json  # noqa: E402
from worldmodels.models import build_model  # noqa: E402
from worldmodels.models.gtmsm import affine_r2  # noqa: E402


def load(path: Path, n: int | None = None, relabel_blocked: bool = False) -> dict[str, torch.Tensor]:
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="runs/gtmsm_imagenav/data")
    p.add_argument("--out", default="runs/gtmsm_diag")
    p.add_argument("--name", help="run name (results in OUT/NAME.json)")
    p.add_argument("--plot", nargs="*", help="instead of training: plot these runs of OUT (label=name ..., split at the last '=') to --png")
    p.add_argument("--png", default="docs/results/gtmsm_diagnostics.png")
    p.add_argument("--gate-map", help="instead of training: draw σ_d of run OUT/NAME over the true positions to --png")
    p.add_argument("--preset", default="imagenav")
    p.add_argument("--set", nargs="*", default=[], help="config overrides key=value (JSON values)")
    p.add_argument("--curriculum", default="12:1500,24:1500,48:2000")
    p.add_argument("--gate-from-len", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-final", type=float, default=5e-5)
    p.add_argument("--lr-decay-steps", type=int, default=50_000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--relabel-blocked", action="store_true")
    p.add_argument("--train-episodes", type=int, default=None)
    a = p.parse_args(argv)
    if a.plot:
        return plot(Path(a.out), [x.rsplit("=", 1) if "=" in x else (x, x) for x in a.plot], Path(a.png))
    if a.gate_map:
        return gate_map(Path(a.out) / a.gate_map, load(Path(a.data) / "test", 32), Path(a.png))
    if not a.name:
        p.error("--name is required for training")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    plan = [(int(x.split(":")[0]), int(x.split(":")[1])) for x in a.curriculum.split(",")]
    gate_from = sum(n for length, n in plan if length < a.gate_from_len)
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.set)}
    model = build_model("gtmsm", a.preset, **{"wall_gate_from": gate_from, **overrides})
    train = load(Path(a.data) / "train", a.train_episodes, a.relabel_blocked)
    test = load(Path(a.data) / "test", 32, a.relabel_blocked)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    total = sum(n for _, n in plan)
    rng = np.random.default_rng(a.seed)
    log: list[dict] = []
    acc: dict[str, float] = {}
    step, t0 = 0, time.perf_counter()
    enc_params = list(model.encoder.parameters())
    for length, n in plan:
        for _ in range(n):
            for g in opt.param_groups:
                g["lr"] = a.lr + (a.lr_final - a.lr) * min(1.0, step / a.lr_decay_steps)
            idx = torch.from_numpy(rng.integers(0, train["obs"].shape[0], a.batch_size))
            batch = window(train, idx, length)
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
            if step % a.log_every == 0 or step == total:
                row = {"step": step, "length": length, "lr": opt.param_groups[0]["lr"],
                       "wall_s": round(time.perf_counter() - t0, 1),
                       **{k: v / a.log_every for k, v in acc.items()}, **m_report(model.M), **evaluate(model, test)}
                acc = {}
                log.append(row)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / f"{a.name}.json", {"args": vars(a), "log": log, "M": model.M.detach().tolist()})
    worldmodels.save(out_dir / a.name, model)  # for a look at the learned gate σ_d


@torch.no_grad()
def evaluate(model, test: dict[str, torch.Tensor]) -> dict[str, float]:  # noqa: ANN001
    """State R² of the memorisation phase (mean path, 256 steps) and the memory-read weights of the
    32 prediction steps of 288-frame test windows."""
    model.eval()
    b = window(test, torch.arange(test["obs"].shape[0]), 288)
    s, _ = model.rollout_states(b.action, b.is_first)
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
    import matplotlib.pyplot as plt

    model = worldmodels.load(run).eval()
    b = window(test, torch.arange(test["obs"].shape[0]), 256)
    s, _ = model.rollout_states(b.action, b.is_first)
    X = torch.cat([b.state.reshape(-1, 2), torch.ones(s[..., :1].numel(), 1)], 1).double()
    W = torch.linalg.lstsq(X, s.reshape(-1, 2).double()).solution  # [3, 2]: position -> s
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
    fig.savefig(png, dpi=80)
    print(f"wrote {png}")


def plot(out: Path, runs: list[tuple[str, str]], png: Path) -> None:
    """Four panels over updates: memorisation-state R², grid error of M, singular values of M, gradient norms."""
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
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
