"""KVAE on the bouncing-ball videos: imputation as in Fig. 6.3 / 6.8 (thesis §6.5.1, §6.5.3, §6.10, §6.12).

One command per variant; every stage resumes (data shards, ``runs/kvae_<name>/last`` checkpoints):

    python scripts/kvae_ball.py --variant box                  # data, KVAE, baselines, evaluation, docs
    python scripts/kvae_ball.py --variant box --stage train --epochs 20     # only (more) training
    python scripts/kvae_ball.py --variant box --train-missing 0.3           # §6.10, trained with 30% missing

Stages: ``data`` (5,000 train / 1,000 test sequences of 20 frames, 32x32 binary), ``train`` (KVAE with the
§6.8 settings: Adam 0.007 ×0.85 every 20 epochs, clip 150, batch 32, alpha-network from epoch 10 — the
budget is ``--epochs``), ``baselines`` (AE-RNN and VAE-RNN of §6.5.1, ``scripts/kvae_baselines.py``),
``eval`` (imputation curves for filtering / smoothing / baselines / blank frames, test ELBO, plots, GIFs,
``docs/results/kvae_<name>.json``) and ``report`` (regenerates ``docs/results/kvae.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kvae_common as kc  # noqa: E402

VARIANTS = {  # variant -> (env id, model preset)
    "box": ("BouncingBall-v0", "box"),
    "gravity": ("BouncingBallGravity-v0", "gravity"),
    "polygon": ("BouncingBallPolygon-v0", "polygon"),
    "pong": ("BouncingBallPong-v0", "pong"),
    "force": ("BouncingBallForce-v0", "box"),  # action-conditioned: a force on the ball is u_t (eq. (6.1))
}

# Thesis Fig. 6.3a/b, KVAE smoothing (approximate reading, NOTES.md).
THESIS_BOX_SMOOTHING = {
    "drop_0.1": 0.006, "drop_0.5": 0.0075, "drop_0.8": 0.013, "drop_0.9": 0.019, "drop_1.0": 0.027,
    "gap_1": 0.006, "gap_9": 0.015, "gap_15": 0.023,
}


@dataclass
class Args:
    variant: str = "box"
    stage: str = "all"
    epochs: int = 20
    train: int = 5000
    test: int = 1000
    frames: int = 20
    seed: int = 0
    train_missing: float = 0.0
    baseline_steps: int = 1000
    alpha_from: int = 10
    filters: str = "32,32,32"
    threads: int = 2
    name: str = ""
    precision: str = "float32"

    @property
    def actions(self) -> bool:
        return self.variant == "force"

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        miss = f"_miss{int(round(100 * self.train_missing))}" if self.train_missing > 0 else ""
        return f"{self.variant}{miss}"


def parse() -> Args:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = Args()
    p.add_argument("--variant", choices=sorted(VARIANTS), default=d.variant)
    p.add_argument("--stage", choices=["all", "data", "train", "baselines", "eval", "report"], default=d.stage)
    p.add_argument("--epochs", type=int, default=d.epochs, help="KVAE training epochs in total (thesis: 80)")
    p.add_argument("--train", type=int, default=d.train, help="training sequences")
    p.add_argument("--test", type=int, default=d.test, help="test sequences")
    p.add_argument("--frames", type=int, default=d.frames, help="frames per sequence (T)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--train-missing", type=float, default=d.train_missing,
                   help="fraction of frames dropped during training (§6.10)")
    p.add_argument("--baseline-steps", type=int, default=d.baseline_steps,
                   help="updates of each baseline auto-encoder and of each LSTM")
    p.add_argument("--alpha-from", type=int, default=d.alpha_from,
                   help="first epoch in which the alpha-network is trained (thesis: 10)")
    p.add_argument("--filters", default=d.filters,
                   help="conv channels of encoder/decoder (thesis §6.8: 32,32,32)")
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--name", default="", help="run name (default: the variant, plus _missNN)")
    p.add_argument("--precision", choices=["float32", "bfloat16"], default=d.precision,
                   help="conv layers in float32 or bfloat16 mixed precision (KVAEConfig.conv_precision)")
    a = p.parse_args()
    return Args(**{k.replace("-", "_"): v for k, v in vars(a).items()})


def data(args: Args) -> tuple[Path, Path]:
    env_id, _ = VARIANTS[args.variant]
    name = f"{args.variant}_T{args.frames}"
    train = kc.get_dataset(env_id, f"train{args.train}", args.train, args.frames, seed=args.seed, name=name)
    test = kc.get_dataset(env_id, f"test{args.test}", args.test, args.frames, seed=args.seed + 10_000, name=name)
    return train, test


def train(args: Args) -> Path:
    from worldmodels.models import build_model
    from worldmodels.models.kvae import TRAIN_PRESETS
    from worldmodels.train import TrainConfig, Trainer

    tr, te = data(args)
    obs, act = kc.load_sequences(tr, use_actions=args.actions)
    tobs, tact = kc.load_sequences(te, use_actions=args.actions)
    _, preset = VARIANTS[args.variant]
    torch.manual_seed(args.seed)
    model = build_model("kvae", preset, obs_shape=tuple(obs.shape[2:]), action_dim=int(act.shape[-1]),
                        train_drop_prob=args.train_missing,
                        filters=tuple(int(f) for f in args.filters.split(",")), conv_precision=args.precision)
    preset = {**TRAIN_PRESETS["default"], "epochs": args.epochs, "freeze_until": {"alpha_net": args.alpha_from}}
    cfg = TrainConfig(**preset, seed=args.seed,
                      out_dir=str(kc.RUNS / f"kvae_{args.run_name}"), checkpoint_every=50, log_every=10)
    val = kc.SeqData(tobs[:256], tact[:256])
    cmd_file = Path(cfg.out_dir) / "train_commands.json"  # every (resumed) training invocation
    cmds = json.loads(cmd_file.read_text()) if cmd_file.exists() else []
    kc.write_json(cmd_file, cmds + [" ".join(["python"] + sys.argv)])
    result = Trainer(model, kc.SeqData(obs, act), cfg, val_data=val).fit()
    print(f"trained: {result.stopped} at step {result.step}, epoch {result.epoch}; val {result.val_metrics}")
    return Path(cfg.out_dir)


def run_dir(args: Args) -> Path:
    return kc.RUNS / f"kvae_{args.run_name}"


def evaluate(args: Args, t_start: float) -> dict:
    import kvae_baselines as kb

    from worldmodels import checkpoint
    from worldmodels.api import Batch

    _, te = data(args)
    tobs, tact = kc.load_sequences(te, use_actions=args.actions)
    ckpt = run_dir(args) / "last"
    model = checkpoint.load(ckpt)
    state = checkpoint.load_state(ckpt) or {}
    trained_steps = int(state.get("trainer", {}).get("step", -1))
    meta = checkpoint.read_meta(ckpt)
    model.eval()
    methods: dict[str, kc.Method] = {"KVAE": kc.kvae_method(model)}
    base_info = {}
    for kind in ("aernn", "vaernn"):
        path = kc.RUNS / f"kvae_{args.run_name}_{kind}"
        if (path / "model.safetensors").exists():
            bl = kb.load(path)
            methods[bl.label] = bl.method
            base_info[bl.label] = json.loads((path / "info.json").read_text())
    methods["blank"] = kc.blank_method
    curves = kc.imputation_curves(methods, tobs, tact, seed=args.seed + 1)

    # test ELBO (unweighted, per frame) on the whole test set
    elbos = []
    with torch.no_grad():
        torch.manual_seed(args.seed)
        for i in range(0, tobs.shape[0], 250):
            b = Batch(obs=kc.to_float(tobs[i : i + 250]), action=tact[i : i + 250])
            elbos.append(model.elbo(b))
    test_elbo_seq = float(torch.cat(elbos).mean())

    action_cond = action_conditioning(model, tobs, tact) if args.actions else None
    out_dir = kc.RESULTS / f"kvae_{args.run_name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = {"thesis KVAE smoothing (Fig. 6.3, approx.)": THESIS_BOX_SMOOTHING} if args.variant == "box" else None
    kc.plot_curves(curves, out_dir / "imputation.png",
                   f"KVAE {args.run_name}: imputation on {tobs.shape[0]} test sequences", reference=ref)
    figures(model, tobs, tact, out_dir, args)
    metrics = {
        "imputation_error": curves,
        "test_elbo_per_sequence": test_elbo_seq,
        "test_elbo_per_frame": test_elbo_seq / tobs.shape[1],
        "train_sequences": args.train, "test_sequences": int(tobs.shape[0]), "frames": int(tobs.shape[1]),
        "train_missing": args.train_missing,
        "budget": {"epochs": round(trained_steps / (args.train // 32), 2), "steps": trained_steps,
                   "batch_size": 32, "thesis_epochs": 80},
        "model_config": meta["config"],
        "checkpoint": str(ckpt.relative_to(kc.ROOT)),
        "baselines": base_info,
        "train_wall_clock_s": _train_wall_clock(run_dir(args)),
        "train_commands": json.loads((run_dir(args) / "train_commands.json").read_text())
        if (run_dir(args) / "train_commands.json").exists() else None,
    }
    if action_cond is not None:
        metrics["action_conditioning"] = action_cond
    rec = kc.result_record(f"kvae_{args.run_name}", " ".join(["python"] + sys.argv), args.seed,
                           time.time() - t_start, metrics)
    kc.write_json(kc.RESULTS / f"kvae_{args.run_name}.json", rec)
    return rec


@torch.no_grad()
def action_conditioning(model, tobs: torch.Tensor, tact: torch.Tensor) -> dict[str, float]:
    """Open-loop prediction error of frames 5..T given the first 4, with the true forces vs. zero forces."""
    N, T = tobs.shape[:2]
    mask = torch.zeros(N, T, dtype=torch.bool)
    mask[:, : kc.T_INIT] = True
    out = {"true forces": 0.0, "zero forces": 0.0, "blank frames": 0.0}
    n = 0.0
    for i in range(0, N, 250):
        x, u, mk = kc.to_float(tobs[i : i + 250]), tact[i : i + 250], mask[i : i + 250]
        target = x[~mk] > 0.5
        for name, uu in (("true forces", u), ("zero forces", torch.zeros_like(u))):
            pred = kc.kvae_method(model)(x, uu)(mk)["KVAE filtering"]
            out[name] += float(((pred > 0.5) != target).sum())
        out["blank frames"] += float(target.sum())
        n += float(target.numel())
    return {k: v / n for k, v in out.items()}


def _train_wall_clock(run: Path) -> float | None:
    """Wall clock of training from the trainer's ``metrics.csv`` (sum of logged intervals when present)."""
    p = run / "wall_clock.json"
    if p.exists():
        return float(json.loads(p.read_text())["seconds"])
    return None


@torch.no_grad()
def figures(model, tobs: torch.Tensor, tact: torch.Tensor, out_dir: Path, args: Args) -> None:
    """Fig. 6.3c trajectories, Fig. 6.4 mixture weights, imputation and generation GIFs."""
    T = tobs.shape[1]
    idx = torch.arange(6)
    x = kc.to_float(tobs[idx])
    u = tact[idx]
    full = model.infer(x, u, None, smooth=True)
    gen_mask = torch.zeros(len(idx), T, dtype=torch.bool)
    gen_mask[:, : kc.T_INIT] = True
    gen = model.infer(x, u, gen_mask, smooth=False)
    sm_mask = gen_mask.clone()
    sm_mask[:, -kc.T_INIT :] = True
    sm = model.infer(x, u, sm_mask, smooth=True)
    kc.plot_trajectories(full["a_enc"][:4].numpy(), gen["a_filt"][:4].numpy(), sm["a_smooth"][:4].numpy(),
                         sm_mask[:4].numpy(), out_dir / "trajectories.png",
                         "a-space: encoded (all frames), generated (first 4), smoothed (first + last 4)")
    many = kc.to_float(tobs[:300])
    res = model.infer(many, tact[:300], None, smooth=False)
    kc.plot_alpha(res["a_enc"].numpy(), res["alpha"].numpy(), out_dir / "alpha.png",
                  "mixture weights alpha_t at the encodings a_t (300 test sequences)")
    kc.plot_alpha_time(res["alpha"][:4].numpy(), many[:4].numpy(), out_dir / "alpha_time.png",
                       "alpha_t over time (top) and the sequence, darker = later (bottom)")
    g = torch.Generator().manual_seed(args.seed + 7)
    m80 = kc.mask_random(len(idx), T, 0.8, g)
    for i in range(2):
        rows = [("observed (p=0.8)", x[i]), ("filtering", model.impute(x[i : i + 1], u[i : i + 1], m80[i : i + 1],
                                                                        smooth=False)[0]),
                ("smoothing", model.impute(x[i : i + 1], u[i : i + 1], m80[i : i + 1], smooth=True)[0]),
                ("ground truth", x[i])]
        kc.save_gif(rows, out_dir / f"impute_drop80_{i}.gif", masks=m80[i])
    gap = kc.mask_gap(len(idx), T, 12)
    for i in range(2):
        rows = [("observed (gap 12)", x[i]), ("filtering", model.impute(x[i : i + 1], u[i : i + 1], gap[i : i + 1],
                                                                         smooth=False)[0]),
                ("smoothing", model.impute(x[i : i + 1], u[i : i + 1], gap[i : i + 1], smooth=True)[0]),
                ("ground truth", x[i])]
        kc.save_gif(rows, out_dir / f"impute_gap12_{i}.gif", masks=gap[i])
    # long generation: observe 4 frames, imagine 60 (open loop, deterministic means)
    belief = model.observe(x[:3, : kc.T_INIT], u[:3, : kc.T_INIT])
    im = model.imagine(belief, torch.zeros(3, 60, u.shape[-1]))
    rows = [(f"generated #{i + 1}", torch.cat([x[i, : kc.T_INIT], im.obs[i]])) for i in range(3)]
    kc.save_gif(rows, out_dir / "generation.gif")
    np.save(out_dir / "generation_a.npy", im.extras["a"].numpy())
    if args.actions:  # the same 4 observed frames imagined forward under the true and under zero forces
        belief = model.observe(x[:2, : kc.T_INIT], u[:2, : kc.T_INIT])
        true_u = model.imagine(belief, u[:2, kc.T_INIT :]).obs
        zero_u = model.imagine(belief, torch.zeros_like(u[:2, kc.T_INIT :])).obs
        for i in range(2):
            rows = [("ground truth", x[i]), ("true forces", torch.cat([x[i, : kc.T_INIT], true_u[i]])),
                    ("zero forces", torch.cat([x[i, : kc.T_INIT], zero_u[i]]))]
            kc.save_gif(rows, out_dir / f"forces_{i}.gif")


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    if args.stage in ("all", "data"):
        data(args)
    if args.stage in ("all", "train"):
        t = time.time()
        train(args)
        p = run_dir(args) / "wall_clock.json"
        prev = json.loads(p.read_text())["seconds"] if p.exists() else 0.0
        kc.write_json(p, {"seconds": prev + time.time() - t})
    if args.stage in ("all", "baselines") and args.variant == "box" and args.train_missing == 0:
        import kvae_baselines as kb

        tr, _ = data(args)
        kb.train_all(tr, kc.RUNS / f"kvae_{args.run_name}", args.baseline_steps, args.seed)
    if args.stage in ("all", "eval"):
        evaluate(args, t0)
    if args.stage in ("all", "eval", "report"):
        import kvae_report

        kvae_report.main()


if __name__ == "__main__":
    main()
