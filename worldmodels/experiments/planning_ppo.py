"""Planning experiment 4: a world model inside a model-free agent — PPO trained only in a KVAE's imagination.

Task: push the ball of ``BouncingBallForce-v0`` into a FIXED square region (centre ``--centre-x``,
``--centre-y``, side 8 px); reward per step ``-(distance of the ball centre outside the region)² / 100``.

* **PPO in imagination**: Stable-Baselines3 PPO on :func:`agents.imagination_env.sb3_vec_env` — ``N`` rollouts
  of the KVAE stepped by one ``imagine`` call, started from beliefs after real context windows of the
  KVAE's training data (``--data``); the reward is computed from the imagined frame (ball centroid).
* **PPO on real steps**: the same PPO on the real env, observed through the same KVAE features
  (:class:`agents.wrappers.BeliefObservation`), reward from the simulator's true position; the same
  number of environment steps.

Both policies act on belief features, so both are evaluated in the real env under
``BeliefObservation`` on the same episodes (plus random actions), with the success test of planning
experiment 3 (ball centre inside for the last 5 of 20 steps). Beyond the thesis (it uses chapter 6's KVAE).
Needs ``stable-baselines3`` (extra ``dev``).

Run (phases ``train`` — both PPOs, then their evaluation; the policies are not saved — and ``report``)::

    worldmodels experiment planning-ppo --checkpoint runs/kvae_force/last
    python scripts/plan_ppo.py --checkpoint runs/kvae_force/last          # the same

Phase ``train`` writes ``docs/results/planning_ppo.json``, ``planning/ppo_success.png`` and the GIFs;
phase ``report`` regenerates ``docs/results/planning.md`` (:mod:`worldmodels.experiments.planning`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from agents.tasks import BallRegionTask
from worldmodels.experiments import Experiment, planning
from worldmodels.experiments.record import command

__all__ = ["Args", "FixedRegion", "TrueReward", "PolicyAgent", "train", "EXPERIMENT"]


@dataclass
class Args:
    checkpoint: str = "runs/kvae_force/last"  # the KVAE of BouncingBallForce-v0 (imagination and features)
    data: str = "data/kvae/force_T20/train5000"  # its training data: the imagination's context windows
    steps: int = 16384  # environment steps of each PPO (imagined or real)
    num_envs: int = 16  # parallel rollouts (imagination batch / real vector env)
    context: int = 6  # frames of context before imagining; belief features over the last this many frames
    max_steps: int = 20  # steps per episode (training and evaluation)
    centre_x: float = 11.0  # the fixed region's centre (pixels)
    centre_y: float = 21.0
    eval_episodes: int = 20  # real evaluation episodes (env seeds 10000 + seed ..)
    seed: int = 0
    threads: int = 1  # torch threads
    results: str = str(planning.RESULTS)  # folder of planning_ppo.json, planning.md and planning/


class FixedRegion(BallRegionTask):
    """:class:`agents.tasks.BallRegionTask` with a region that never moves (centre ``centre``, pixels).

    Example:
        >>> task = FixedRegion((11.0, 21.0), max_steps=20)
        >>> task.reset(None, None, {}, np.random.default_rng(0)); task.centre.tolist()
        [11.0, 21.0]
    """

    def __init__(self, centre: tuple[float, float], max_steps: int) -> None:
        super().__init__(max_steps=max_steps)
        self.centre = np.array(centre)

    def reset(self, env: gym.Env, obs: Any, info: dict, rng: np.random.Generator) -> None:
        return None


class TrueReward(gym.Wrapper):
    """Replace the env's reward by ``-task.distance(env, info)² / 100`` (the simulator's true position)."""

    def __init__(self, env: gym.Env, task: BallRegionTask) -> None:
        super().__init__(env)
        self.task = task

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, _, term, trunc, info = self.env.step(action)
        return obs, -self.task.distance(self.env, info) ** 2 / 100.0, term, trunc, info


class PolicyAgent:
    """An agent of :func:`agents.tasks.run_episodes` acting with a trained SB3 policy (deterministic)."""

    imagination = None

    def __init__(self, ppo: Any) -> None:
        self.ppo = ppo

    def reset(self) -> None:
        return None

    def act(self, obs: Any) -> Any:
        return self.ppo.predict(obs, deterministic=True)[0]


def _progress(total: int, desc: str) -> Any:
    """An SB3 callback showing a tqdm bar over ``total`` steps (SB3's own bar needs ``rich``)."""
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm.auto import tqdm

    class Progress(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = tqdm(total=total, desc=desc, unit="step")

        def _on_step(self) -> bool:
            self.bar.update(self.training_env.num_envs)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    return Progress()


def train(args: Args) -> None:
    """Phase ``train``: PPO in the KVAE's imagination and PPO on as many real steps, then both (and random
    actions) evaluated in the real env; writes ``planning_ppo.json``, the success plot and the GIFs."""
    import stable_baselines3
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    import envs  # noqa: F401  (registers BouncingBallForce-v0)
    from agents.imagination_env import ImaginationBatch, sb3_vec_env
    from agents.tasks import RandomAgent, run_episodes
    from agents.wrappers import BeliefObservation
    from worldmodels.checkpoint import load
    from worldmodels.data import WindowDataset
    from worldmodels.viz import bar_plot

    torch.set_num_threads(args.threads)
    t0 = time.time()
    media = planning.media_dir(args.results)
    model = load(args.checkpoint)
    trained = planning.trainer_progress(args.checkpoint)
    task = FixedRegion((args.centre_x, args.centre_y), max_steps=args.max_steps)
    score = task.objective()

    def imagined_reward(im: Any) -> Any:
        return score(im) / 100.0  # one-step imagination: -outside² / 100

    def real_env() -> gym.Env:
        return BeliefObservation(TrueReward(gym.make("BouncingBallForce-v0", max_episode_steps=args.max_steps), task),
                                 model, max_context=args.context)

    ppo_kw: dict[str, Any] = dict(n_steps=128, batch_size=256, n_epochs=5, learning_rate=3e-4, gamma=0.95,
                                  seed=args.seed, device="cpu", policy_kwargs={"net_arch": [64, 64]}, verbose=0)
    # --- PPO inside the model
    windows = WindowDataset(args.data, length=args.context)
    core = ImaginationBatch(model, windows, imagined_reward, gym.spaces.Box(-1, 1, (2,), np.float32),
                            num_envs=args.num_envs, max_episode_steps=args.max_steps, seed=args.seed)
    t1 = time.time()
    ppo_imag = PPO("MlpPolicy", sb3_vec_env(core), **ppo_kw)
    ppo_imag.learn(total_timesteps=args.steps, callback=_progress(args.steps, "PPO in imagination"))
    imag_s = time.time() - t1
    # --- PPO on the same number of real steps
    t1 = time.time()
    venv = make_vec_env(real_env, n_envs=args.num_envs, seed=args.seed)
    ppo_real = PPO("MlpPolicy", venv, **ppo_kw)
    ppo_real.learn(total_timesteps=args.steps, callback=_progress(args.steps, "PPO on real steps"))
    real_s = time.time() - t1

    env = real_env()
    results = {}
    for name, slug, make in [
        ("PPO in KVAE imagination", "ppo_in_imagination", lambda obj: PolicyAgent(ppo_imag)),
        ("PPO on real steps", "ppo_on_real_steps", lambda obj: PolicyAgent(ppo_real)),
        ("random", "ppo_random_baseline", lambda obj: RandomAgent(env.action_space, args.seed)),
    ]:
        results[name] = run_episodes(env, task, make, args.eval_episodes, seed=10_000 + args.seed,
                                     gif_path=media / f"{slug}.gif", gif_title=name, desc=name)
    training = {
        "PPO in KVAE imagination": {"env_steps": args.steps, "real_env_steps": 0, "train_seconds": imag_s},
        "PPO on real steps": {"env_steps": args.steps, "real_env_steps": args.steps, "train_seconds": real_s},
    }
    bar_plot(media / "ppo_success.png", {k: v["success_rate"] for k, v in results.items()}, "success rate",
             "Ball to a fixed region, evaluated in the real env")
    notes = [
        f"Model: `{args.checkpoint}` (trained {trained.get('step', '?')} updates / epoch {trained.get('epoch', '?')} "
        f"when this ran). Region centre ({args.centre_x}, {args.centre_y}), side 8 px; {args.eval_episodes} real "
        f"evaluation episodes of {args.max_steps} steps (env seeds 10000+), success = inside for the last 5 steps.",
        f"PPO (SB3 {stable_baselines3.__version__}): {args.steps} environment steps each, "
        f"{args.num_envs} parallel envs, n_steps 128, 5 epochs, lr 3e-4, gamma 0.95, MLP 64-64, on KVAE belief "
        f"features (context {args.context} frames). Imagination contexts: windows of `{args.data}`.",
    ]
    budget = {"env_steps_per_agent": args.steps, "real_env_steps": args.steps, "eval_episodes": args.eval_episodes}
    planning.write_record("ppo", command(EXPERIMENT.name, args), args.seed, time.time() - t0, budget,
                          {"evaluation": results, "training": training}, notes, results=args.results)
    for k, m in results.items():
        print(f"{k:>26}: success {m['success_rate']:.0%} return {m['mean_return']:.1f} "
              f"final distance {m['mean_final_distance']:.2f}")


EXPERIMENT = Experiment("planning-ppo", "PPO trained inside a KVAE's imagination vs PPO on real steps "
                        "(planning experiment 4)", Args, {"train": train, "report": planning.report})
