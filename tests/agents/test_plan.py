"""Planning tasks, the simulator oracle, the episode loop and the `worldmodels plan` CLI."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401
from agents.mpc import MPCAgent
from agents.objectives import goal_state
from agents.planners import CEM, CategoricalCEM
from agents.tasks import (
    BallRegionTask,
    GoalImageTask,
    RandomAgent,
    SimulatorModel,
    ball_centroid,
    plan_in_env,
    run_episodes,
    task_for_env,
)
from worldmodels.api import encode_actions, frames_to_tensor

torch.set_num_threads(1)


def test_ball_centroid_matches_true_position() -> None:
    env = gym.make("BouncingBallForce-v0")
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        c = ball_centroid(frames_to_tensor(obs)[None])[0].numpy()
        np.testing.assert_allclose(c, info["state"][:2], atol=0.35)  # a 3-px disc rasterised
    assert ball_centroid(torch.zeros(2, 1, 8, 8)).tolist() == [[4.0, 4.0], [4.0, 4.0]]


@pytest.mark.parametrize("env_id", ["BouncingBallForce-v0", "ImageNavGoal-v0", "PixelPendulum-v0"])
def test_simulator_model_equals_stepping_real_copies(env_id) -> None:
    env = gym.make(env_id)
    env.reset(seed=3)
    for a in [env.action_space.sample() for _ in range(2)]:
        env.step(a)
    model = SimulatorModel(env)
    belief = model.observe(None, None)
    env.action_space.seed(0)
    plans = [[env.action_space.sample() for _ in range(4)] for _ in range(3)]
    actions = torch.stack([encode_actions(np.array(p), env.action_space) for p in plans])  # [3, 4, A]
    im = model.imagine(belief, actions)
    state = belief.state["core"]
    for n, plan in enumerate(plans):  # oracle: a fresh env set to the same simulator state, stepped for real
        twin = gym.make(env_id)
        twin.reset(seed=3)
        import copy

        twin.unwrapped.core = copy.deepcopy(state)
        for t, a in enumerate(plan):
            obs, *_ = twin.step(a)
            torch.testing.assert_close(im.obs[n, t], frames_to_tensor(obs))
    # the real env was not moved by imagining
    assert model.observe(None, None).features.tolist() == belief.features.tolist()


def test_goal_reaching_on_true_dynamics_is_optimal_and_random_is_not() -> None:
    env = gym.make("ImageNavGoal-v0")
    task = GoalImageTask(max_steps=20)
    model = SimulatorModel(env)

    def mpc(obj):  # the true pose is the state: plan towards the goal cell (read after the reset)
        goal = torch.as_tensor(env.unwrapped.core.goal[0], dtype=torch.float32)
        return MPCAgent(model, CategoricalCEM(env.action_space, 8, num_candidates=200, num_elites=20,
                                              iterations=3, seed=0), goal_state(goal), env.action_space,
                        max_context=1)

    seeds, optimal = range(3), []
    for i in seeds:
        _, info = env.reset(seed=i)
        optimal.append(np.abs(info["pose"] - info["goal"]).sum())  # no obstacles: Manhattan distance
    out = run_episodes(env, task, mpc, episodes=3, seed=0, progress=False)
    assert out["success_rate"] == 1.0
    assert [r["steps"] for r in out["episodes"]] == [int(d) for d in optimal]
    rnd = run_episodes(env, task, lambda obj: RandomAgent(env.action_space, 0), episodes=3, seed=0, progress=False)
    assert rnd["mean_steps"] > out["mean_steps"]


def test_ball_region_true_dynamics_succeeds(tmp_path) -> None:
    env = gym.make("BouncingBallForce-v0", max_episode_steps=20)
    task = BallRegionTask(max_steps=20)
    model = SimulatorModel(env)

    def mpc(obj):
        return MPCAgent(model, CEM(env.action_space, 6, num_candidates=100, num_elites=10, iterations=2, seed=0),
                        obj, env.action_space, max_context=1)

    out = run_episodes(env, task, mpc, episodes=2, seed=0, gif_path=tmp_path / "b.gif", progress=False)
    assert out["success_rate"] == 1.0 and out["mean_final_distance"] == 0.0
    from PIL import Image

    gif = Image.open(tmp_path / "b.gif")
    assert gif.n_frames == 21  # 20 steps + the final frame


def test_plan_cli_with_a_checkpoint(tmp_path) -> None:
    from worldmodels.checkpoint import save
    from worldmodels.cli import main
    from worldmodels.models import build_model

    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt"
    save(ckpt, build_model("rnn", "debug", obs_shape=(1, 32, 32), action_dim=2))
    out = tmp_path / "plan"
    rc = main(["plan", "--checkpoint", str(ckpt), "--env", "BouncingBallForce-v0", "--agents", "model,random",
               "--episodes", "1", "--max-steps", "3", "--horizon", "3", "--candidates", "16", "--elites", "4",
               "--iterations", "1", "--out", str(out), "--no-progress"])
    assert rc == 0
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["metrics"]) == {"model", "random"} and report["env"] == "BouncingBallForce-v0"
    assert len(report["metrics"]["model"]["episodes"]) == 1
    assert (out / "model.gif").exists() and (out / "random.gif").exists()


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="no default planning task"):
        task_for_env("CartPole-v1")
    with pytest.raises(ValueError, match="unknown task"):
        task_for_env("ImageNavGoal-v0", "fly")
    from worldmodels.models import build_model

    model = build_model("rnn", "debug", obs_shape=(1, 32, 32), action_dim=3)
    with pytest.raises(ValueError, match="action_dim 3"):
        plan_in_env(model, "BouncingBallForce-v0", episodes=1, progress=False)
    with pytest.raises(ValueError, match="unknown agents"):
        plan_in_env(None, "BouncingBallForce-v0", agents=("oracle",), progress=False)
    with pytest.raises(KeyError, match="ImageNavGoal-v0"):
        GoalImageTask().reset(None, None, {}, np.random.default_rng(0))
