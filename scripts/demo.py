"""`make demo`: the whole story of worldmodels on a fresh clone, in minutes on 2 CPU cores.

1. collect small rollout datasets (ImageNav-v0 with Poisson action repeats; BouncingBall-v0), GIFs and
   contact sheets of them;
2. train a tiny GTM-SM on ImageNav (the recipe of the slow test: displacement loss, KL annealing,
   2,000 updates) and evaluate 100-step open-loop predictions against the no-memory baseline;
3. a 100-step imagination video beside the truth, from the tiny model and from the shipped
   ``gtmsm-imagenav`` checkpoint (``worldmodels.load("gtmsm-imagenav")``);
4. KVAE imputation of missing bouncing-ball frames (tiny preset, filtering vs smoothing);
5. a planning episode: GTM-SM localises a goal frame in its memory and plans there (ImageNav), and MPC
   pushes a ball into a region;
then a summary table (also ``runs/demo/summary.md``) with every file written.

Usage: ``python scripts/demo.py`` (re-running resumes/reuses what is there).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("PYGLET_HEADLESS", "1")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import imageio.v3 as iio  # noqa: E402
import numpy as np  # noqa: E402

import envs  # noqa: E402,F401
from agents.explorers import explorer_factory  # noqa: E402
from worldmodels.data import RolloutDataset, collect  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # the experiment scripts the later steps run (also when imported)
OUT = ROOT / "runs" / "demo"
SEED = 0
# env id -> (episodes, steps, explorer, explorer kwargs, pixel upscale for viewing)
DATASETS = {
    "ImageNav-v0": (32, 64, "poisson", {"lam": 2.0}, 12),
    "BouncingBall-v0": (32, 20, "uniform", {}, 4),
}


def _upscale(frames: np.ndarray, k: int) -> np.ndarray:
    """[..., H, W, C] -> [..., kH, kW, 3] nearest neighbour, grey to RGB."""
    frames = frames.repeat(k, axis=-3).repeat(k, axis=-2)
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def _tile(images: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Images [H, W, 3] side by side with a white gap."""
    h = images[0].shape[0]
    gap = np.full((h, pad, 3), 255, np.uint8)
    return np.concatenate([x for img in images for x in (img, gap)][:-1], axis=1)


def step_collect(ctx: dict) -> None:
    """Collect one dataset per env (resumes if present) and print its summary."""
    for env_id, (episodes, steps, policy, kwargs, _) in DATASETS.items():
        policy_factory = explorer_factory(policy, **kwargs)
        out = OUT / "data" / env_id
        collect(env_id, out, episodes, steps, policy=policy_factory, num_envs=8, seed=SEED)
        data = RolloutDataset(out, verify="open")
        print(data.summary())
        ctx.setdefault("datasets", {})[env_id] = data


def step_gif(ctx: dict, n_episodes: int = 4) -> None:
    """A GIF per env: ``n_episodes`` episodes side by side, frame by frame."""
    for env_id, data in ctx["datasets"].items():
        k = DATASETS[env_id][4]
        eps = [data[i] for i in range(n_episodes)]
        T = max(ep.obs.shape[0] for ep in eps)
        frames = []
        for t in range(T):  # an episode that ended early holds its last frame
            frames.append(_tile([_upscale(ep.obs[min(t, ep.obs.shape[0] - 1)], k) for ep in eps]))
        path = OUT / f"{env_id}_episodes.gif"
        iio.imwrite(path, np.stack(frames), duration=80, loop=0)
        print(f"wrote {path.relative_to(ROOT)} ({n_episodes} episodes, {T} frames)")
        _row(ctx, f"collect {env_id}", f"{data.num_episodes} episodes x {int(data.lengths.max())} steps",
             OUT / "data" / env_id, path)


def step_contact_sheet(ctx: dict, n_episodes: int = 6, n_frames: int = 12) -> None:
    """A PNG per env: one row per episode, ``n_frames`` evenly spaced frames."""
    for env_id, data in ctx["datasets"].items():
        k = DATASETS[env_id][4]
        rows = []
        for i in range(n_episodes):
            ep = data[i]
            ts = np.linspace(0, ep.obs.shape[0] - 1, n_frames).round().astype(int)
            rows.append(_tile([_upscale(ep.obs[t], k) for t in ts]))
        gap = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
        sheet = np.concatenate([x for r in rows for x in (r, gap)][:-1], axis=0)
        path = OUT / f"{env_id}_contact_sheet.png"
        iio.imwrite(path, sheet)
        print(f"wrote {path.relative_to(ROOT)} ({n_episodes} episodes x {n_frames} frames)")


STEPS: list[Callable[[dict], None]] = [step_collect, step_gif, step_contact_sheet]


def _row(ctx: dict, step: str, result: str, *files: Path) -> None:
    """One line of the final summary table."""
    ctx.setdefault("summary", []).append((step, result, [str(f.relative_to(ROOT)) for f in files]))


GTMSM_TAU, GTMSM_HORIZON = 100, 100


def step_gtmsm_train(ctx: dict) -> None:
    """GTM-SM (thesis Ch. 7): train the tiny ImageNav preset (2,000 updates), evaluate 100-step predictions."""
    import json

    out, res = OUT / "gtmsm", OUT / "gtmsm" / "results"
    # one thread: the model is tiny, and two OpenMP threads on a busy 2-core machine spin-wait (10x slower)
    import gtmsm_imagenav  # the experiment scripts beside this one (scripts/ is on sys.path)

    gtmsm_imagenav.main([
        "--out", str(out), "--results", str(res), "--train-episodes", "400", "--test-episodes", "8",
        "--preset", "imagenav_tiny", "--curriculum", "24:400,48:800,96:800", "--displacement-weight", "100",
        "--m-init-scale", "0.1", "--lr", "3e-3", "--beta0", "0.01", "--beta-anneal-steps", "1000",
        "--baselines", "", "--test-tau", str(GTMSM_TAU), "--test-horizon", str(GTMSM_HORIZON), "--threads", "1",
        "--checkpoint-every", "500"])
    m = json.loads((res / "gtmsm_imagenav.json").read_text())["metrics"]
    got, base = m["summary"]["gtmsm"]["mse_mean"], m["summary"]["no_memory"]["mse_mean"]
    r2 = m["state_r2"]["gtmsm"]["all"]
    ctx["gtmsm_checkpoint"] = out / "gtmsm" / "last"
    print(f"   tiny GTM-SM: mean MSE over {GTMSM_HORIZON} predicted steps {got:.4f} vs no-memory {base:.4f}; "
          f"state R² {r2:.3f}")
    _row(ctx, "train tiny GTM-SM (2,000 updates)", f"{GTMSM_HORIZON}-step MSE {got:.4f} (no memory {base:.4f}), "
         f"state R² {r2:.2f}", ctx["gtmsm_checkpoint"], res / "gtmsm.md")


def _shipped(name: str):  # noqa: ANN202
    import worldmodels

    try:
        return worldmodels.load(name)
    except (ValueError, FileNotFoundError) as e:
        print(f"   (shipped checkpoint {name!r} not available: {e})")
        return None


def step_gtmsm_imagine(ctx: dict) -> None:
    """100-step imagination beside the truth: the tiny model, then the shipped gtmsm-imagenav (τ = 256)."""
    from worldmodels.evaluate import imagine_checkpoint

    test = OUT / "gtmsm" / "data" / "test"
    r = imagine_checkpoint(ctx["gtmsm_checkpoint"], test, 0, GTMSM_TAU, GTMSM_HORIZON, OUT / "gtmsm" / "imagine")
    print(f"   tiny model, episode 0: mean MSE over {GTMSM_HORIZON} imagined steps {r['mean_mse']:.4f}")
    _row(ctx, f"imagine {GTMSM_HORIZON} steps (tiny GTM-SM)", f"mean MSE {r['mean_mse']:.4f}",
         OUT / "gtmsm" / "imagine" / "imagination.gif")
    if _shipped("gtmsm-imagenav") is None:
        return
    from agents.explorers import explorer_factory as ef

    data = collect("ImageNav-v0", OUT / "data" / "imagenav_long", 2, 256 + GTMSM_HORIZON,
                   policy=ef("poisson", lam=2.0), seed=SEED + 20_000, progress=False)
    r = imagine_checkpoint("gtmsm-imagenav", data, 0, 256, GTMSM_HORIZON, OUT / "gtmsm_shipped")
    print(f"   shipped gtmsm-imagenav (256 frames memorised): mean MSE over {GTMSM_HORIZON} steps {r['mean_mse']:.4f}")
    _row(ctx, f"imagine {GTMSM_HORIZON} steps (shipped gtmsm-imagenav)", f"mean MSE {r['mean_mse']:.4f}",
         OUT / "gtmsm_shipped" / "imagination.gif")


STEPS += [step_gtmsm_train, step_gtmsm_imagine]


def step_kvae_impute(ctx: dict, steps: int = 1200, seed: int = SEED) -> None:
    """KVAE (thesis Ch. 6): train the tiny preset on 600 bouncing-ball videos, impute missing frames (GIF)."""
    import torch

    from worldmodels.evaluate import drop_mask, gap_mask
    from worldmodels.experiments import kvae_common as kc
    from worldmodels.models import build_model
    from worldmodels.train import TrainConfig, Trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is faster than two on a busy machine
    out = OUT / "kvae"
    uniform = explorer_factory("uniform")
    train_path = collect("BouncingBall-v0", out / "train", 600, 19, policy=uniform, num_envs=100, seed=SEED,
                         progress=False)
    test_path = collect("BouncingBall-v0", out / "test", 100, 19, policy=uniform, num_envs=100, seed=SEED + 1,
                        progress=False)

    def small(path: Path) -> tuple[torch.Tensor, torch.Tensor]:  # 32x32 -> 16x16 (2x2 max-pool): tiny preset
        obs, act = kc.load_sequences(path, use_actions=False)
        x = torch.nn.functional.max_pool2d(obs.flatten(0, 1).float(), 2)
        return x.view(*obs.shape[:3], 16, 16).to(torch.uint8), act

    (obs, act), (tobs, tact) = small(train_path), small(test_path)
    torch.manual_seed(seed)
    model = build_model("kvae", "debug", filters=(16, 16), alpha_units=16)
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
    _row(ctx, "KVAE imputation (tiny, 16x16 balls)", f"wrong pixels, gap 10: {errors['KVAE smoothing']:.4f} "
         f"smoothing vs {errors['blank frames']:.4f} blank", out / "kvae_imputation.gif")
    print(f"wrote {(out / 'kvae_imputation.gif').relative_to(ROOT)} (10 middle frames missing; tiny preset on "
          f"16x16 frames, {steps} updates; the full experiments are in docs/results/kvae.md)")
    torch.set_num_threads(threads)


STEPS.append(step_kvae_impute)


def step_plan(ctx: dict, steps: int = 12, seed: int = SEED) -> None:
    """Planning: MPC (CEM) pushes the ball into a target region; GIF of real frames beside the imagined plan."""
    import gymnasium as gym
    import torch

    from agents.mpc import MPCAgent
    from agents.planners import CEM
    from agents.tasks import BallRegionTask, SimulatorModel, run_episodes
    from worldmodels.checkpoint import load

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    env = gym.make("BouncingBallForce-v0", max_episode_steps=steps)
    ckpt = ROOT / "runs" / "kvae_force" / "last"  # written by `python scripts/kvae_ball.py --variant force`
    model, label = (load(ckpt), "KVAE runs/kvae_force/last") if ckpt.exists() else (
        SimulatorModel(env), "true dynamics (no KVAE checkpoint yet)")
    planner = CEM(env.action_space, horizon=6, num_candidates=100, num_elites=10, iterations=2, seed=seed)
    out = run_episodes(env, BallRegionTask(max_steps=steps),
                       lambda obj: MPCAgent(model, planner, obj, env.action_space, max_context=8),
                       episodes=1, seed=seed, gif_path=OUT / "plan_ball.gif", gif_title=label, progress=False)
    print(f"   planning with {label}: final distance to the region {out['mean_final_distance']:.2f} px, "
          f"{out['plan_seconds_per_step']:.2f} s per planning step")
    print(f"wrote {(OUT / 'plan_ball.gif').relative_to(ROOT)} (real frame | open-loop imagination of the plan; "
          "green box = target region)")
    _row(ctx, f"plan: push the ball ({label.split(' ')[0]})",
         f"final distance {out['mean_final_distance']:.2f} px", OUT / "plan_ball.gif")
    torch.set_num_threads(threads)


def step_plan_gtmsm(ctx: dict, episodes: int = 3) -> None:
    """Planning with memory: after 256 exploration steps GTM-SM localises a goal frame and plans to it."""
    import gymnasium as gym
    import torch

    model = _shipped("gtmsm-imagenav")
    if model is None:
        return
    import plan_imagenav as pi
    args = pi.Args(episodes=episodes, tau=256, name="demo")
    env = gym.make("ImageNav-v0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = [pi.run_agent(env, args.seed + i, args.tau, "gtmsm", model, args,
                         OUT / "plan_gtmsm.gif" if i == 0 else None) for i in range(episodes)]
    torch.set_num_threads(threads)
    ok = sum(r["success"] for r in rows)
    print(f"   GTM-SM reached the goal cell in {ok}/{episodes} episodes (budget 2x optimal; steps "
          f"{[r['steps'] for r in rows]} vs optimal {[r['optimal'] for r in rows]})")
    _row(ctx, "plan: reach a remembered goal (shipped GTM-SM)", f"{ok}/{episodes} goals reached",
         OUT / "plan_gtmsm.gif")


STEPS += [step_plan_gtmsm, step_plan]


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    ctx: dict = {}
    start = time.perf_counter()
    for step in STEPS:
        print(f"== {step.__name__}: {(step.__doc__ or '').splitlines()[0]}", flush=True)
        t = time.perf_counter()
        step(ctx)
        print(f"   ({time.perf_counter() - t:.1f} s)", flush=True)
    lines = ["| step | result | files |", "|---|---|---|"] + [
        f"| {step} | {result} | {', '.join(files)} |" for step, result, files in ctx.get("summary", [])]
    (OUT / "summary.md").write_text("\n".join(["# make demo", "", *lines, ""]))
    print("\n".join(["", *lines, ""]))
    print(f"demo done in {time.perf_counter() - start:.1f} s; outputs in {OUT.relative_to(ROOT)}/ "
          f"(this table: {(OUT / 'summary.md').relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
