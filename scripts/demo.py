"""`make demo`: a tour of worldmodels in a few steps, each a function of a shared context.

Step 1 collects small rollout datasets from the 2-D pixel environments (ImageNav-v0: GTM-SM image
navigation with Poisson action repeats; BouncingBall-v0: the KVAE ball), prints their summaries,
and writes a GIF of a few episodes and a PNG contact sheet per env under ``runs/demo/``.
Later issues append their steps (train, imagine, plan) to ``STEPS``.

Usage: ``python scripts/demo.py`` (re-running resumes/reuses the collected data).
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


def step_kvae_impute(ctx: dict, steps: int = 1200, seed: int = SEED) -> None:
    """KVAE (thesis Ch. 6): train the tiny preset on 600 bouncing-ball videos, impute missing frames (GIF)."""
    import torch

    sys.path.insert(0, str(ROOT / "scripts"))
    import kvae_common as kc

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
    masks = {"p=0.8": kc.mask_random(len(x), 20, 0.8, torch.Generator().manual_seed(seed)),
             "gap 10": kc.mask_gap(len(x), 20, 10)}
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
    torch.set_num_threads(threads)


STEPS.append(step_plan)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    ctx: dict = {}
    start = time.perf_counter()
    for step in STEPS:
        print(f"== {step.__name__}: {(step.__doc__ or '').splitlines()[0]}", flush=True)
        t = time.perf_counter()
        step(ctx)
        print(f"   ({time.perf_counter() - t:.1f} s)", flush=True)
    print(f"demo done in {time.perf_counter() - start:.1f} s; outputs in {OUT.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
