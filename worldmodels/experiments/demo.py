"""The tour that ``make demo`` runs: the whole story of worldmodels on a fresh clone, in minutes on 2 CPU cores.

1. collect small rollout datasets (ImageNav-v0 with Poisson action repeats; BouncingBall-v0), GIFs and
   contact sheets of them;
2. train a tiny GTM-SM on ImageNav (the recipe of the slow test: displacement loss, KL annealing,
   2,000 updates; :mod:`worldmodels.experiments.gtmsm_imagenav` with a small budget) and evaluate 100-step
   open-loop predictions against the no-memory baseline;
3. a 100-step imagination video beside the truth, from the tiny model and from the shipped
   ``gtmsm-imagenav`` checkpoint (``worldmodels.load("gtmsm-imagenav")``);
4. KVAE imputation of missing bouncing-ball frames (tiny preset, filtering vs smoothing;
   :mod:`worldmodels.experiments.kvae_common`);
5. a planning episode: GTM-SM localises a goal frame in its memory and plans there (ImageNav;
   :func:`worldmodels.experiments.planning_imagenav.run_agent`), and MPC pushes a ball into a region;

then a summary table (also ``runs/demo/summary.md``) with every file written. Commands::

    worldmodels experiment demo              # = make demo = python scripts/demo.py; re-running reuses what is there
    worldmodels experiment demo --out DIR    # another output folder (relative: from the source checkout)

One phase, ``tour``: the steps share what they made in memory (the datasets, the tiny GTM-SM), so they run
together. Each step is a function of the :class:`Tour` (what the steps share) with the demo's budget as
defaults; :func:`run` runs :data:`STEPS` in order and writes the table.

Example:
    >>> tour = Tour(Path("runs/demo"))
    >>> tour.row("collect BouncingBall-v0", "32 episodes x 20 steps", Path("runs/demo/ball.gif"))
    >>> summary_lines(tour)[2]
    '| collect BouncingBall-v0 | 32 episodes x 20 steps | runs/demo/ball.gif |'
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import imageio.v3 as iio
import numpy as np

import envs  # noqa: F401  (registers the environments)
from agents.explorers import explorer_factory
from worldmodels.data import RolloutDataset, collect
from worldmodels.experiments import Experiment, gtmsm_imagenav, planning_imagenav
from worldmodels.experiments import kvae_common as kc
from worldmodels.files import atomic_save

__all__ = ["Args", "EXPERIMENT", "ROOT", "OUT", "SEED", "DATASETS", "GTMSM_TAU", "GTMSM_HORIZON", "Tour",
           "gtmsm_args", "step_collect", "step_gif", "step_contact_sheet", "step_gtmsm_train", "step_gtmsm_imagine",
           "step_kvae_impute", "step_plan_gtmsm", "step_plan", "STEPS", "summary_lines", "run", "run_tour"]

ROOT = Path(__file__).resolve().parents[2]  # the source checkout
OUT = ROOT / "runs" / "demo"
SEED = 0
# env id -> (episodes, steps, explorer, explorer kwargs, pixel upscale for viewing)
DATASETS: dict[str, tuple[int, int, str, dict[str, Any], int]] = {
    "ImageNav-v0": (32, 64, "poisson", {"lam": 2.0}, 12),
    "BouncingBall-v0": (32, 20, "uniform", {}, 4),
}
GTMSM_TAU, GTMSM_HORIZON = 100, 100  # memorised and predicted frames of the tiny GTM-SM's test


@dataclass
class Args:
    """Arguments; the defaults are the demo's."""

    out: str = "runs/demo"  # output folder; a relative path is taken from the source checkout (ROOT)


def _shown(path: Path) -> str:
    """``path`` relative to the source checkout when inside it (as the demo prints paths), else as it is."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


@dataclass
class Tour:
    """What the steps share: the output folder, the datasets of :func:`step_collect` (with their pixel upscale
    for viewing), the tiny GTM-SM of :func:`step_gtmsm_train` (its checkpoint and test episodes) and the summary
    rows ``(step, result, files)``."""

    out: Path
    datasets: dict[str, tuple[RolloutDataset, int]] = field(default_factory=dict)
    gtmsm_checkpoint: Path | None = None
    gtmsm_test_data: Path | None = None
    summary: list[tuple[str, str, list[str]]] = field(default_factory=list)

    def row(self, step: str, result: str, *files: Path) -> None:
        """One line of the final summary table."""
        self.summary.append((step, result, [_shown(f) for f in files]))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one thread (tiny ops: one thread is faster than two on a busy machine), restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _upscale(frames: np.ndarray, k: int) -> np.ndarray:
    """[..., H, W, C] -> [..., kH, kW, 3] nearest neighbour, grey to RGB."""
    frames = frames.repeat(k, axis=-3).repeat(k, axis=-2)
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def _tile(images: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Images [H, W, 3] side by side with a white gap."""
    h = images[0].shape[0]
    gap = np.full((h, pad, 3), 255, np.uint8)
    return np.concatenate([x for img in images for x in (img, gap)][:-1], axis=1)


def _write_image(path: Path, image: np.ndarray, **kwargs: Any) -> None:
    """A PNG (``image [H, W, 3]``) or GIF (``image [T, H, W, 3]``; ``kwargs`` e.g. ``duration``), atomically."""
    atomic_save(path, lambda tmp: iio.imwrite(tmp, image, **kwargs))


def step_collect(tour: Tour, datasets: dict[str, tuple[int, int, str, dict[str, Any], int]] = DATASETS) -> None:
    """Collect one dataset per env (resumes if present) and print its summary."""
    for env_id, (episodes, steps, policy, kwargs, k) in datasets.items():
        policy_factory = explorer_factory(policy, **kwargs)
        out = tour.out / "data" / env_id
        collect(env_id, out, episodes, steps, policy=policy_factory, num_envs=8, seed=SEED)
        data = RolloutDataset(out, verify="open")
        print(data.summary())
        tour.datasets[env_id] = (data, k)


def step_gif(tour: Tour, n_episodes: int = 4) -> None:
    """A GIF per env: ``n_episodes`` episodes side by side, frame by frame."""
    for env_id, (data, k) in tour.datasets.items():
        eps = [data[i] for i in range(n_episodes)]
        T = max(ep.obs.shape[0] for ep in eps)
        frames = []
        for t in range(T):  # an episode that ended early holds its last frame
            frames.append(_tile([_upscale(ep.obs[min(t, ep.obs.shape[0] - 1)], k) for ep in eps]))
        path = tour.out / f"{env_id}_episodes.gif"
        _write_image(path, np.stack(frames), duration=80, loop=0)
        print(f"wrote {_shown(path)} ({n_episodes} episodes, {T} frames)")
        tour.row(f"collect {env_id}", f"{data.num_episodes} episodes x {int(data.lengths.max())} steps",
                 tour.out / "data" / env_id, path)


def step_contact_sheet(tour: Tour, n_episodes: int = 6, n_frames: int = 12) -> None:
    """A PNG per env: one row per episode, ``n_frames`` evenly spaced frames."""
    for env_id, (data, k) in tour.datasets.items():
        rows = []
        for i in range(n_episodes):
            ep = data[i]
            ts = np.linspace(0, ep.obs.shape[0] - 1, n_frames).round().astype(int)
            rows.append(_tile([_upscale(ep.obs[t], k) for t in ts]))
        gap = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
        sheet = np.concatenate([x for r in rows for x in (r, gap)][:-1], axis=0)
        path = tour.out / f"{env_id}_contact_sheet.png"
        _write_image(path, sheet)
        print(f"wrote {_shown(path)} ({n_episodes} episodes x {n_frames} frames)")


def gtmsm_args(out: Path) -> gtmsm_imagenav.Args:
    """The tiny GTM-SM run of the demo (:class:`worldmodels.experiments.gtmsm_imagenav.Args`) under ``out``:
    the ``imagenav_tiny`` preset on 400 episodes, curriculum 24/48/96 frames (2,000 updates), displacement loss,
    KL annealing, no baselines, tested on 8 episodes with τ = :data:`GTMSM_TAU`, :data:`GTMSM_HORIZON` steps."""
    # one thread: the model is tiny, and two OpenMP threads on a busy 2-core machine spin-wait (10x slower)
    return gtmsm_imagenav.Args(
        out=str(out / "gtmsm"), results=str(out / "gtmsm" / "results"), train_episodes=400, test_episodes=8,
        preset="imagenav_tiny", curriculum="24:400,48:800,96:800", displacement_weight=100.0, m_init_scale=0.1,
        lr=3e-3, beta0=0.01, beta_anneal_steps=1000, baselines="", test_tau=GTMSM_TAU, test_horizon=GTMSM_HORIZON,
        threads=1, checkpoint_every=500)


def step_gtmsm_train(tour: Tour, args: gtmsm_imagenav.Args | None = None) -> None:
    """GTM-SM (thesis Ch. 7): train the tiny ImageNav preset (2,000 updates), evaluate 100-step predictions.

    ``args``: the :mod:`~worldmodels.experiments.gtmsm_imagenav` arguments (default :func:`gtmsm_args`)."""
    args = gtmsm_args(tour.out) if args is None else args
    gtmsm_imagenav.EXPERIMENT.run(args)  # every phase: data, train, eval, report
    res = Path(args.results)
    m = json.loads((res / "gtmsm_imagenav.json").read_text())["metrics"]
    got, base = m["summary"]["gtmsm"]["mse_mean"], m["summary"]["no_memory"]["mse_mean"]
    r2 = m["state_r2"]["gtmsm"]["all"]
    tour.gtmsm_checkpoint = Path(args.out) / args.gtmsm_dir / "last"
    tour.gtmsm_test_data = gtmsm_imagenav.data_dirs(args)[1]
    print(f"   tiny GTM-SM: mean MSE over {args.test_horizon} predicted steps {got:.4f} vs no-memory {base:.4f}; "
          f"state R² {r2:.3f}")
    tour.row(f"train tiny GTM-SM ({sum(n for _, n in gtmsm_imagenav.stages(args)):,} updates)",
             f"{args.test_horizon}-step MSE {got:.4f} (no memory {base:.4f}), state R² {r2:.2f}",
             tour.gtmsm_checkpoint, res / "gtmsm.md")


def _shipped(name: str) -> Any:
    """The shipped checkpoint ``name`` (``worldmodels.load``), or None (said) when it is not available."""
    import worldmodels

    try:
        return worldmodels.load(name)
    except (ValueError, FileNotFoundError) as e:
        print(f"   (shipped checkpoint {name!r} not available: {e})")
        return None


def step_gtmsm_imagine(tour: Tour, tau: int = GTMSM_TAU, horizon: int = GTMSM_HORIZON,
                       shipped_tau: int = 256) -> None:
    """100-step imagination beside the truth: the tiny model, then the shipped gtmsm-imagenav (τ = 256)."""
    from worldmodels.evaluate import imagine_checkpoint

    if tour.gtmsm_checkpoint is None or tour.gtmsm_test_data is None:
        raise ValueError("demo: expected the tiny GTM-SM of step_gtmsm_train, received none (run that step first)")
    r = imagine_checkpoint(tour.gtmsm_checkpoint, tour.gtmsm_test_data, 0, tau, horizon, tour.out / "gtmsm" / "imagine")
    print(f"   tiny model, episode 0: mean MSE over {horizon} imagined steps {r['mean_mse']:.4f}")
    tour.row(f"imagine {horizon} steps (tiny GTM-SM)", f"mean MSE {r['mean_mse']:.4f}",
             tour.out / "gtmsm" / "imagine" / "imagination.gif")
    if _shipped("gtmsm-imagenav") is None:
        return
    data = collect("ImageNav-v0", tour.out / "data" / "imagenav_long", 2, shipped_tau + horizon,
                   policy=explorer_factory("poisson", lam=2.0), seed=SEED + 20_000, progress=False)
    r = imagine_checkpoint("gtmsm-imagenav", data, 0, shipped_tau, horizon, tour.out / "gtmsm_shipped")
    print(f"   shipped gtmsm-imagenav ({shipped_tau} frames memorised): mean MSE over {horizon} steps "
          f"{r['mean_mse']:.4f}")
    tour.row(f"imagine {horizon} steps (shipped gtmsm-imagenav)", f"mean MSE {r['mean_mse']:.4f}",
             tour.out / "gtmsm_shipped" / "imagination.gif")


def step_kvae_impute(tour: Tour, steps: int = 1200, seed: int = SEED, sequences: tuple[int, int] = (600, 100)
                     ) -> None:
    """KVAE (thesis Ch. 6): train the tiny preset on 600 bouncing-ball videos, impute missing frames (GIF).

    ``sequences``: training and test videos (20 frames each); ``steps``: updates."""
    import torch

    from worldmodels.evaluate import drop_mask, gap_mask
    from worldmodels.models import build_model
    from worldmodels.models.kvae import KVAE
    from worldmodels.train import TrainConfig, Trainer

    out = tour.out / "kvae"
    uniform = explorer_factory("uniform")
    with _one_thread():
        train_path = collect("BouncingBall-v0", out / "train", sequences[0], 19, policy=uniform, num_envs=100,
                             seed=SEED, progress=False)
        test_path = collect("BouncingBall-v0", out / "test", sequences[1], 19, policy=uniform, num_envs=100,
                            seed=SEED + 1, progress=False)

        def small(path: Path) -> tuple[torch.Tensor, torch.Tensor]:  # 32x32 -> 16x16 (2x2 max-pool): tiny preset
            obs, act = kc.load_sequences(path, use_actions=False)
            x = torch.nn.functional.max_pool2d(obs.flatten(0, 1).float(), 2)
            return x.view(*obs.shape[:3], 16, 16).to(torch.uint8), act

        (obs, act), (tobs, tact) = small(train_path), small(test_path)
        torch.manual_seed(seed)
        model = cast(KVAE, build_model("kvae", "debug", filters=(16, 16), alpha_units=16))
        cfg = TrainConfig(lr=0.007, grad_clip=150.0, batch_size=16, epochs=100, max_steps=steps, seed=seed,
                          freeze_until={"alpha_net": 8}, log_every=25)
        Trainer(model, kc.SeqData(obs, act), cfg).fit()
        model.eval()
        x = kc.to_float(tobs)
        masks = {"p=0.8": drop_mask(0.8, kc.T_INIT)(len(x), 20, torch.Generator().manual_seed(seed)),
                 "gap 10": gap_mask(10, kc.T_INIT, middle_of="after_first")(len(x), 20, torch.Generator())}
        with torch.no_grad():
            for label, mask in masks.items():
                errors = {name: float(((pred > 0.5) != (x[~mask] > 0.5)).float().mean())
                          for name, pred in kc.kvae_method(model)(x, tact)(mask).items()}
                errors["blank frames"] = float(x[~mask].mean())
                print(f"   wrong pixels on the missing frames ({label}): "
                      + ", ".join(f"{k} {v:.4f}" for k, v in errors.items()))
            mask = masks["gap 10"]
            rows = [("observed", x[0]), ("filtering", model.impute(x[:1], tact[:1], mask[:1], smooth=False)[0]),
                    ("smoothing", model.impute(x[:1], tact[:1], mask[:1], smooth=True)[0]), ("ground truth", x[0])]
        kc.save_gif(rows, out / "kvae_imputation.gif", scale=8, masks=mask[0])
    tour.row("KVAE imputation (tiny, 16x16 balls)", f"wrong pixels, gap 10: {errors['KVAE smoothing']:.4f} "
             f"smoothing vs {errors['blank frames']:.4f} blank", out / "kvae_imputation.gif")
    print(f"wrote {_shown(out / 'kvae_imputation.gif')} (10 middle frames missing; tiny preset on "
          f"16x16 frames, {steps} updates; the full experiments are in docs/results/kvae.md)")


def step_plan_gtmsm(tour: Tour, episodes: int = 3, tau: int = 256) -> None:
    """Planning with memory: after 256 exploration steps GTM-SM localises a goal frame and plans to it."""
    import gymnasium as gym

    model = _shipped("gtmsm-imagenav")
    if model is None:
        return
    args = planning_imagenav.Args(episodes=episodes, tau=tau, name="demo")
    env = gym.make("ImageNav-v0")
    with _one_thread():
        rows = [planning_imagenav.run_agent(env, args.seed + i, args.tau, "gtmsm", model, args,
                                            tour.out / "plan_gtmsm.gif" if i == 0 else None) for i in range(episodes)]
    ok = sum(r["success"] for r in rows)
    print(f"   GTM-SM reached the goal cell in {ok}/{episodes} episodes (budget 2x optimal; steps "
          f"{[r['steps'] for r in rows]} vs optimal {[r['optimal'] for r in rows]})")
    tour.row("plan: reach a remembered goal (shipped GTM-SM)", f"{ok}/{episodes} goals reached",
             tour.out / "plan_gtmsm.gif")


def step_plan(tour: Tour, steps: int = 12, seed: int = SEED) -> None:
    """Planning: MPC (CEM) pushes the ball into a target region; GIF of real frames beside the imagined plan."""
    import gymnasium as gym

    from agents.mpc import MPCAgent
    from agents.planners import CEM
    from agents.tasks import BallRegionTask, SimulatorModel, run_episodes
    from worldmodels.checkpoint import load

    gif = tour.out / "plan_ball.gif"
    with _one_thread():
        env = gym.make("BouncingBallForce-v0", max_episode_steps=steps)
        ckpt = ROOT / "runs" / "kvae_force" / "last"  # written by `python scripts/kvae_ball.py --variant force`
        model, label = (load(ckpt), "KVAE runs/kvae_force/last") if ckpt.exists() else (
            SimulatorModel(env), "true dynamics (no KVAE checkpoint yet)")
        planner = CEM(env.action_space, horizon=6, num_candidates=100, num_elites=10, iterations=2, seed=seed)
        out = run_episodes(env, BallRegionTask(max_steps=steps),
                           lambda obj: MPCAgent(model, planner, obj, env.action_space, max_context=8),
                           episodes=1, seed=seed, gif_path=gif, gif_title=label, progress=False)
    print(f"   planning with {label}: final distance to the region {out['mean_final_distance']:.2f} px, "
          f"{out['plan_seconds_per_step']:.2f} s per planning step")
    print(f"wrote {_shown(gif)} (real frame | open-loop imagination of the plan; green box = target region)")
    tour.row(f"plan: push the ball ({label.split(' ')[0]})", f"final distance {out['mean_final_distance']:.2f} px",
             gif)


STEPS: list[Callable[[Tour], None]] = [step_collect, step_gif, step_contact_sheet, step_gtmsm_train,
                                       step_gtmsm_imagine, step_kvae_impute, step_plan_gtmsm, step_plan]


def summary_lines(tour: Tour) -> list[str]:
    """The summary table (Markdown): one row per :meth:`Tour.row`."""
    return ["| step | result | files |", "|---|---|---|"] + [
        f"| {step} | {result} | {', '.join(files)} |" for step, result, files in tour.summary]


def run(out: str | os.PathLike = OUT, steps: Sequence[Callable[[Tour], None]] = STEPS) -> Tour:
    """Run ``steps`` in order on a :class:`Tour` writing under ``out`` (re-running reuses what is there), print
    each step's time and the summary table, and write the table to ``<out>/summary.md``."""
    tour = Tour(Path(out).resolve())
    tour.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for step in steps:
        print(f"== {step.__name__}: {(step.__doc__ or '').splitlines()[0]}", flush=True)
        t = time.perf_counter()
        step(tour)
        print(f"   ({time.perf_counter() - t:.1f} s)", flush=True)
    lines = summary_lines(tour)
    text = "\n".join(["# make demo", "", *lines, ""])
    atomic_save(tour.out / "summary.md", lambda tmp: tmp.write_text(text))
    print("\n".join(["", *lines, ""]))
    print(f"demo done in {time.perf_counter() - start:.1f} s; outputs in {_shown(tour.out)}/ "
          f"(this table: {_shown(tour.out / 'summary.md')})")
    return tour


def run_tour(args: Args) -> None:
    """Phase ``tour``: every step of :data:`STEPS` under ``args.out`` (default :data:`OUT`), then the table."""
    run(ROOT / args.out)


EXPERIMENT = Experiment("demo", "the tour of make demo: data, tiny GTM-SM (Ch. 7) and KVAE (Ch. 6), imagination, "
                        "planning", Args, {"tour": run_tour})
