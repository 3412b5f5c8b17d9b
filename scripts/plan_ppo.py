"""Experiment 4: a world model inside a model-free agent — PPO trained only in a KVAE's imagination.

Task: push the ball of ``BouncingBallForce-v0`` into a FIXED square region (centre ``--centre``, side 8 px);
reward per step ``-(distance of the ball centre outside the region)² / 100``.

* **PPO in imagination**: Stable-Baselines3 PPO on :func:`agents.imagination_env.sb3_vec_env` — ``N`` rollouts
  of the KVAE stepped by one ``imagine`` call, started from beliefs after real context windows of the
  KVAE's training data; the reward is computed from the imagined frame (ball centroid).
* **PPO on real steps**: the same PPO on the real env, observed through the same KVAE features
  (:class:`agents.wrappers.BeliefObservation`), reward from the simulator's true position; the same
  number of environment steps.

Both policies act on belief features, so both are evaluated in the real env under
``BeliefObservation`` on the same episodes (plus random actions), with the success test of experiment 3
(ball centre inside for the last 5 of 20 steps).

Run: ``python scripts/plan_ppo.py --checkpoint runs/kvae_force/last``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import plan_common as pc  # noqa: E402


@dataclass
class Args:
    checkpoint: str = "runs/kvae_force/last"
    data: str = "data/kvae/force_T20/train5000"
    steps: int = 16384
    num_envs: int = 16
    context: int = 6
    max_steps: int = 20
    centre_x: float = 11.0
    centre_y: float = 21.0
    eval_episodes: int = 20
    seed: int = 0
    threads: int = 1


def parse() -> Args:
    return pc.parse_args(Args, __doc__.splitlines()[0])


def main() -> None:
    args = parse()
    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    import envs  # noqa: F401
    from agents.imagination_env import ImaginationBatch, sb3_vec_env
    from agents.tasks import BallRegionTask, RandomAgent, run_episodes
    from agents.wrappers import BeliefObservation
    from worldmodels.checkpoint import load
    from worldmodels.data import WindowDataset

    torch.set_num_threads(args.threads)
    t0 = time.time()
    model = load(args.checkpoint)
    state = Path(args.checkpoint) / "state.json"
    trained = json.loads(state.read_text()).get("trainer", {}) if state.exists() else {}

    class FixedRegion(BallRegionTask):
        def reset(self, env, obs, info, rng):  # noqa: ANN001 - the region never moves
            return None

    task = FixedRegion(max_steps=args.max_steps)
    task.centre = np.array([args.centre_x, args.centre_y])
    score = task.objective()

    def imagined_reward(im):  # noqa: ANN001
        return score(im) / 100.0  # one-step imagination: -outside² / 100

    class TrueReward(gym.Wrapper):
        def step(self, action):  # noqa: ANN001
            obs, _, term, trunc, info = self.env.step(action)
            return obs, -task.distance(self.env, info) ** 2 / 100.0, term, trunc, info

    def real_env() -> gym.Env:
        return BeliefObservation(TrueReward(gym.make("BouncingBallForce-v0", max_episode_steps=args.max_steps)),
                                 model, max_context=args.context)

    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm.auto import tqdm

    class Progress(BaseCallback):  # SB3's own progress bar needs `rich`; tqdm is already a dependency
        def __init__(self, desc: str) -> None:
            super().__init__()
            self.desc = desc

        def _on_training_start(self) -> None:
            self.bar = tqdm(total=args.steps, desc=self.desc, unit="step")

        def _on_step(self) -> bool:
            self.bar.update(self.training_env.num_envs)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    ppo_kw = dict(n_steps=128, batch_size=256, n_epochs=5, learning_rate=3e-4, gamma=0.95, seed=args.seed,
                  device="cpu", policy_kwargs={"net_arch": [64, 64]}, verbose=0)
    # --- PPO inside the model
    windows = WindowDataset(args.data, length=args.context)
    core = ImaginationBatch(model, windows, imagined_reward, gym.spaces.Box(-1, 1, (2,), np.float32),
                            num_envs=args.num_envs, max_episode_steps=args.max_steps, seed=args.seed)
    t1 = time.time()
    ppo_imag = PPO("MlpPolicy", sb3_vec_env(core), **ppo_kw)
    ppo_imag.learn(total_timesteps=args.steps, callback=Progress("PPO in imagination"))
    imag_s = time.time() - t1
    # --- PPO on the same number of real steps
    t1 = time.time()
    venv = make_vec_env(real_env, n_envs=args.num_envs, seed=args.seed)
    ppo_real = PPO("MlpPolicy", venv, **ppo_kw)
    ppo_real.learn(total_timesteps=args.steps, callback=Progress("PPO on real steps"))
    real_s = time.time() - t1

    class PolicyAgent:
        imagination = None

        def __init__(self, ppo) -> None:  # noqa: ANN001
            self.ppo = ppo

        def reset(self) -> None:
            return None

        def act(self, obs):  # noqa: ANN001
            return self.ppo.predict(obs, deterministic=True)[0]

    env = real_env()
    results = {}
    for name, slug, make in [
        ("PPO in KVAE imagination", "ppo_in_imagination", lambda obj: PolicyAgent(ppo_imag)),
        ("PPO on real steps", "ppo_on_real_steps", lambda obj: PolicyAgent(ppo_real)),
        ("random", "ppo_random_baseline", lambda obj: RandomAgent(env.action_space, args.seed)),
    ]:
        results[name] = run_episodes(env, task, make, args.eval_episodes, seed=10_000 + args.seed,
                                     gif_path=pc.MEDIA / f"{slug}.gif", gif_title=name, desc=name)
    training = {
        "PPO in KVAE imagination": {"env_steps": args.steps, "real_env_steps": 0, "train_seconds": imag_s},
        "PPO on real steps": {"env_steps": args.steps, "real_env_steps": args.steps, "train_seconds": real_s},
    }
    pc.bar_plot(pc.MEDIA / "ppo_success.png", {k: v["success_rate"] for k, v in results.items()}, "success rate",
                "Ball to a fixed region, evaluated in the real env")
    notes = [
        f"Model: `{args.checkpoint}` (trained {trained.get('step', '?')} updates / epoch {trained.get('epoch', '?')} "
        f"when this ran). Region centre ({args.centre_x}, {args.centre_y}), side 8 px; {args.eval_episodes} real "
        f"evaluation episodes of {args.max_steps} steps (env seeds 10000+), success = inside for the last 5 steps.",
        f"PPO (SB3 {__import__('stable_baselines3').__version__}): {args.steps} environment steps each, "
        f"{args.num_envs} parallel envs, n_steps 128, 5 epochs, lr 3e-4, gamma 0.95, MLP 64-64, on KVAE belief "
        f"features (context {args.context} frames). Imagination contexts: windows of `{args.data}`.",
    ]
    cmd = "python scripts/plan_ppo.py " + " ".join(sys.argv[1:])
    pc.write_json("ppo", cmd, args.seed, time.time() - t0, {"evaluation": results, "training": training}, notes)
    print(pc.write_report())
    for k, m in results.items():
        print(f"{k:>26}: success {m['success_rate']:.0%} return {m['mean_return']:.1f} "
              f"final distance {m['mean_final_distance']:.2f}")


if __name__ == "__main__":
    main()
