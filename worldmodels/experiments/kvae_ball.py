"""KVAE on the bouncing-ball videos: imputation as in Fig. 6.3 / 6.8 (thesis §6.5.1, §6.5.3, §6.10, §6.12).

One command per variant; every phase resumes (data shards, ``runs/kvae_<name>/last`` checkpoints)::

    worldmodels experiment kvae-ball --variant box                   # data, KVAE, baselines, evaluation, docs
    worldmodels experiment kvae-ball --variant box --phase train --epochs 20    # only (more) training
    worldmodels experiment kvae-ball --variant box --train-missing 0.3          # §6.10, trained with 30% missing
    python scripts/kvae_ball.py --variant box --stage eval            # the script: the same (--stage = --phase)

Phases: ``data`` (5,000 train / 1,000 test sequences of 20 frames, 32x32 binary, ``data/kvae/``), ``train``
(KVAE with the §6.8 settings: Adam 0.007 x0.85 every 20 epochs, clip 150, batch 32, alpha-network from epoch
10 — the budget is ``--epochs``), ``baselines`` (AE-RNN and VAE-RNN of §6.5.1,
:mod:`worldmodels.experiments.kvae_baselines`; ``box`` without missing training frames only), ``eval``
(imputation curves for filtering / smoothing / baselines / blank frames, test ELBO, plots, GIFs,
``docs/results/kvae_<name>.json``; it ends by regenerating the page, as the script's stage did) and ``report``
(regenerates ``docs/results/kvae.md``, :mod:`worldmodels.experiments.kvae_report`).

Example (the preset and its run name):
    >>> args = EXPERIMENT.defaults(variant="box", train_missing=0.3)
    >>> args.run_name, args.epochs, args.filters
    ('box_miss30', 20, '32,32,32')
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmodels.evaluate import drop_mask, gap_mask
from worldmodels.experiments import Experiment, kvae_baselines, record
from worldmodels.experiments import kvae_common as kc
from worldmodels.experiments.kvae_report import report
from worldmodels.files import atomic_save, write_json

VARIANTS = {  # variant -> (env id, model preset)
    "box": ("BouncingBall-v0", "box"),
    "gravity": ("BouncingBallGravity-v0", "gravity"),
    "polygon": ("BouncingBallPolygon-v0", "polygon"),
    "pong": ("BouncingBallPong-v0", "pong"),
    "force": ("BouncingBallForce-v0", "box"),  # action-conditioned: a force on the ball is u_t (eq. (6.1))
}
PRECISIONS = ("float32", "bfloat16")


@dataclass
class Args(kc.Paths):
    """The preset (the script's defaults). ``epochs``: KVAE training epochs in total (thesis: 80); ``train`` /
    ``test``: sequences; ``frames``: frames per sequence; ``train_missing``: fraction of frames dropped in
    training (§6.10); ``baseline_steps``: updates of each baseline auto-encoder (its LSTM gets twice as many);
    ``alpha_from``: first epoch in which the alpha-network is trained (thesis: 10); ``filters``: conv
    channels of encoder/decoder (§6.8: 32,32,32); ``name``: run name (default: the variant, plus
    ``_missNN``); ``precision``: conv layers in ``float32`` or ``bfloat16`` (``KVAEConfig.conv_precision``)."""

    variant: str = "box"
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

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"kvae-ball: expected --variant in {sorted(VARIANTS)}, received {self.variant!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"kvae-ball: expected --precision in {PRECISIONS}, received {self.precision!r}")
        try:
            ok = all(int(f) > 0 for f in self.filters.split(","))
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"kvae-ball: expected --filters as positive channels like 32,32,32, received "
                             f"{self.filters!r}")

    @property
    def actions(self) -> bool:
        return self.variant == "force"

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        miss = f"_miss{int(round(100 * self.train_missing))}" if self.train_missing > 0 else ""
        return f"{self.variant}{miss}"


def run_dir(args: Args) -> Path:
    return args.runs_path() / f"kvae_{args.run_name}"


def datasets(args: Args) -> tuple[Path, Path]:
    """The train and test dataset folders (collected, or resumed, when incomplete)."""
    env_id, _ = VARIANTS[args.variant]
    name, root = f"{args.variant}_T{args.frames}", args.data_path()
    train = kc.get_dataset(env_id, f"train{args.train}", args.train, args.frames, seed=args.seed, root=root,
                           name=name)
    test = kc.get_dataset(env_id, f"test{args.test}", args.test, args.frames, seed=args.seed + 10_000, root=root,
                          name=name)
    return train, test


def data(args: Args) -> None:
    """Phase ``data``: collect the train and test sequences."""
    torch.set_num_threads(args.threads)
    datasets(args)


def train(args: Args) -> None:
    """Phase ``train``: train (or resume) the KVAE to ``--epochs``; adds its wall clock to
    ``runs/kvae_<name>/wall_clock.json`` and its command to ``train_commands.json``."""
    from worldmodels.models import build_model
    from worldmodels.models.kvae import TRAIN_PRESETS
    from worldmodels.train import TrainConfig, Trainer

    torch.set_num_threads(args.threads)
    t = time.time()
    tr, te = datasets(args)
    obs, act = kc.load_sequences(tr, use_actions=args.actions)
    tobs, tact = kc.load_sequences(te, use_actions=args.actions)
    _, preset = VARIANTS[args.variant]
    torch.manual_seed(args.seed)
    model = build_model("kvae", preset, obs_shape=tuple(obs.shape[2:]), action_dim=int(act.shape[-1]),
                        train_drop_prob=args.train_missing,
                        filters=tuple(int(f) for f in args.filters.split(",")), conv_precision=args.precision)
    settings = {**TRAIN_PRESETS["default"], "epochs": args.epochs, "freeze_until": {"alpha_net": args.alpha_from}}
    out = run_dir(args)
    cfg = TrainConfig(**settings, seed=args.seed, out_dir=str(out), checkpoint_every=50, log_every=10)
    val = kc.SeqData(tobs[:256], tact[:256])
    cmd_file = out / "train_commands.json"  # every (resumed) training invocation
    cmds = json.loads(cmd_file.read_text()) if cmd_file.exists() else []
    write_json(cmd_file, cmds + [kc.command()])
    result = Trainer(model, kc.SeqData(obs, act), cfg, val_data=val).fit()
    print(f"trained: {result.stopped} at step {result.step}, epoch {result.epoch}; val {result.val_metrics}")
    p = out / "wall_clock.json"
    prev = json.loads(p.read_text())["seconds"] if p.exists() else 0.0
    write_json(p, {"seconds": prev + time.time() - t})


def baselines(args: Args) -> None:
    """Phase ``baselines``: AE-RNN and VAE-RNN (``runs/kvae_<name>_aernn``, ``..._vaernn``); only for the
    ``box`` variant trained without missing frames (the comparison of Fig. 6.3)."""
    torch.set_num_threads(args.threads)
    if args.variant != "box" or args.train_missing != 0:
        print(f"kvae-ball: no baselines for variant {args.variant!r} with train_missing {args.train_missing} "
              "(box with complete training sequences only)")
        return
    tr, _ = datasets(args)
    kvae_baselines.train_all(tr, run_dir(args), args.baseline_steps, args.seed)


def evaluate(args: Args) -> None:
    """Phase ``eval``: imputation curves, test ELBO, figures and ``docs/results/kvae_<name>.json``; then the
    report. ``wall_clock_s`` of the record is this phase's."""
    from worldmodels import checkpoint
    from worldmodels.api import Batch

    torch.set_num_threads(args.threads)
    t_start = time.time()
    _, te = datasets(args)
    tobs, tact = kc.load_sequences(te, use_actions=args.actions)
    ckpt = run_dir(args) / "last"
    model: Any = checkpoint.load(ckpt)  # a KVAE
    state = checkpoint.load_state(ckpt) or {}
    trained_steps = int(state.get("trainer", {}).get("step", -1))
    meta = checkpoint.read_meta(ckpt)
    model.eval()
    methods: dict[str, kc.Method] = {"KVAE": kc.kvae_method(model)}
    base_info = {}
    for kind in ("aernn", "vaernn"):
        path = args.runs_path() / f"kvae_{args.run_name}_{kind}"
        if (path / "model.safetensors").exists():
            bl = kvae_baselines.load(path)
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
    results = args.results_path()
    out_dir = results / f"kvae_{args.run_name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = {"thesis KVAE smoothing (Fig. 6.3, approx.)": kc.THESIS_BOX_SMOOTHING} if args.variant == "box" else None
    kc.plot_curves(curves, out_dir / "imputation.png",
                   f"KVAE {args.run_name}: imputation on {tobs.shape[0]} test sequences", reference=ref)
    figures(model, tobs, tact, out_dir, args)
    commands = run_dir(args) / "train_commands.json"
    budget = {"epochs": round(trained_steps / (args.train // 32), 2), "steps": trained_steps, "batch_size": 32,
              "thesis_epochs": 80}
    metrics = {
        "imputation_error": curves,
        "test_elbo_per_sequence": test_elbo_seq,
        "test_elbo_per_frame": test_elbo_seq / tobs.shape[1],
        "train_sequences": args.train, "test_sequences": int(tobs.shape[0]), "frames": int(tobs.shape[1]),
        "train_missing": args.train_missing,
        "budget": budget,
        "model_config": meta["config"],
        "checkpoint": kc.shown(ckpt),
        "baselines": base_info,
        "train_wall_clock_s": _train_wall_clock(run_dir(args)),
        "train_commands": json.loads(commands.read_text()) if commands.exists() else None,
    }
    if action_cond is not None:
        metrics["action_conditioning"] = action_cond
    rec = record.record(f"kvae_{args.run_name}", kc.command(), args.seed, time.time() - t_start, budget=budget,
                        metrics=metrics)
    record.write(rec, results / f"kvae_{args.run_name}.json")
    report(args)


@torch.no_grad()
def action_conditioning(model: Any, tobs: torch.Tensor, tact: torch.Tensor) -> dict[str, float]:
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
    """Wall clock of training (seconds, summed over the train invocations) from ``wall_clock.json``."""
    p = run / "wall_clock.json"
    if p.exists():
        return float(json.loads(p.read_text())["seconds"])
    return None


@torch.no_grad()
def figures(model: Any, tobs: torch.Tensor, tact: torch.Tensor, out_dir: Path, args: Args) -> None:
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
    m80 = drop_mask(0.8, kc.T_INIT)(len(idx), T, g)
    for i in range(2):
        rows = [("observed (p=0.8)", x[i]), ("filtering", model.impute(x[i : i + 1], u[i : i + 1], m80[i : i + 1],
                                                                        smooth=False)[0]),
                ("smoothing", model.impute(x[i : i + 1], u[i : i + 1], m80[i : i + 1], smooth=True)[0]),
                ("ground truth", x[i])]
        kc.save_gif(rows, out_dir / f"impute_drop80_{i}.gif", masks=m80[i])
    gap = gap_mask(12, kc.T_INIT, middle_of="after_first")(len(idx), T, g)
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
    a_gen = im.extras["a"].numpy()  # [3, 60, a]
    atomic_save(out_dir / "generation_a.npy", lambda tmp: np.save(tmp, a_gen))
    if args.actions:  # the same 4 observed frames imagined forward under the true and under zero forces
        belief = model.observe(x[:2, : kc.T_INIT], u[:2, : kc.T_INIT])
        true_u = model.imagine(belief, u[:2, kc.T_INIT :]).obs
        zero_u = model.imagine(belief, torch.zeros_like(u[:2, kc.T_INIT :])).obs
        for i in range(2):
            rows = [("ground truth", x[i]), ("true forces", torch.cat([x[i, : kc.T_INIT], true_u[i]])),
                    ("zero forces", torch.cat([x[i, : kc.T_INIT], zero_u[i]]))]
            kc.save_gif(rows, out_dir / f"forces_{i}.gif")


EXPERIMENT = Experiment(
    "kvae-ball",
    "KVAE imputation on the bouncing-ball videos, baselines, missing-data training (§6.5, §6.10)",
    Args,
    {"data": data, "train": train, "baselines": baselines, "eval": evaluate, "report": report},
)
