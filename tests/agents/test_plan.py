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


def test_exploration_phase_redraws_the_goal_among_visited_cells_and_is_memorised() -> None:
    env = gym.make("ImageNavGoal-v0")
    task = GoalImageTask(max_steps=3, explore=40)
    seen, memorised = [], []
    explored = task.explored

    def spy_explored(env_, ex, rng):
        explored(env_, ex, rng)
        cells = [tuple(int(v) for v in i["pose"]) for i in ex.infos]
        goal = tuple(int(v) for v in env_.unwrapped.core.goal[0])
        seen.append((cells, goal, task.goal.clone(), env_.unwrapped.core.crops(np.array([goal]))[0]))

    task.explored = spy_explored  # type: ignore[method-assign]

    class Spy(RandomAgent):
        def memorise(self, frames, actions):
            memorised.append((len(frames), actions[0]))

    run_episodes(env, task, lambda obj: Spy(env.action_space, 0), episodes=3, seed=0, explore=40, progress=False)
    assert memorised == [(41, None)] * 3
    for cells, goal, goal_x, crop in seen:
        assert goal in cells and goal != cells[-1]  # a remembered cell, not where the exploration ended
        torch.testing.assert_close(goal_x, frames_to_tensor(crop))  # the goal frame the task shows
    assert len({g for _, g, _, _ in seen}) > 1


def _tiny_gtmsm_with_true_moves():
    """An untrained encoder with the true action matrix (linear transition): memory and localize are what
    work (as the tiny preset of tests/worldmodels/experiments/test_planning_imagenav.py)."""
    from envs.image_nav import MOVES
    from worldmodels.models.gtmsm import GTMSM, GTMSMConfig

    torch.manual_seed(0)
    model = GTMSM(GTMSMConfig(obs_shape=(3, 8, 8), action_dim=5, z_dim=8, hidden=16, k=1, transition="linear"))
    with torch.no_grad():
        model.M.copy_(torch.tensor(MOVES.T, dtype=torch.float32))
    return model.eval()


def test_plan_in_env_memorises_localizes_and_reaches_remembered_goals() -> None:
    # a 29x29 grid keeps the 32-step exploration away from the walls, where a linear transition would drift
    lines: list[str] = []
    res = plan_in_env(_tiny_gtmsm_with_true_moves(), "ImageNavGoal-v0", episodes=3, horizon=8, num_candidates=60,
                      num_elites=6, iterations=2, max_steps=16, seed=50_000, agents=("model", "random"),
                      env_kwargs={"image_size": 64, "n_positions": 29}, explore=32, progress=False, log=lines.append)
    assert "after 32 exploration steps" in lines[0] and "localizes the goal frame" in lines[1], lines
    assert res["model"]["success_rate"] == 1.0 and res["random"]["success_rate"] < 1.0, res


def test_plan_setup_says_what_runs_and_refuses_what_it_cannot_do() -> None:
    from agents.tasks import plan_setup
    from worldmodels.models import build_model

    gtmsm = build_model("gtmsm", "debug", obs_shape=(3, 8, 8), action_dim=5)
    setup = plan_setup(gtmsm, "ImageNavGoal-v0", agents=("model", "true", "random"))
    assert setup.explore == 256 and setup.localize and not setup.warnings  # what the env's task asks for
    assert [line.split(":")[0] for line in setup.lines[1:]] == ["model", "true", "random"]
    assert plan_setup(gtmsm, "ImageNavGoal-v0", explore=5).explore == 5
    rssm = build_model("rssm", "debug", obs_shape=(3, 8, 8), action_dim=5)
    memoryless = plan_setup(rssm, "ImageNavGoal-v0")
    assert not memoryless.localize and memoryless.explore == 256
    assert "rssm has no memory to look the goal up in (no localize" in memoryless.warnings[0]
    assert plan_setup(None, "PixelPendulum-v0", agents=("true",)).explore == 0  # swing-up needs no memory
    with pytest.raises(ValueError, match="explore 0 leaves gtmsm's memory with one frame"):
        plan_setup(gtmsm, "ImageNavGoal-v0", explore=0)
    with pytest.raises(ValueError, match="max_context 10 would keep only the last 10 of the 257 exploration frames"):
        plan_setup(gtmsm, "ImageNavGoal-v0", max_context=10)
    with pytest.raises(ValueError, match=r"action_dim 3, ImageNavGoal-v0 has Discrete\(5\)"):
        plan_setup(build_model("rnn", "debug", obs_shape=(3, 8, 8), action_dim=3), "ImageNavGoal-v0")
    with pytest.raises(ValueError, match=r"sees observations of shape \(192,\), ImageNavGoal-v0's \(8, 8, 3\)"):
        plan_setup(build_model("rnn", "debug", obs_shape=(192,), action_dim=5), "ImageNavGoal-v0")
    with pytest.raises(ValueError, match="expected explore >= 0"):
        plan_setup(gtmsm, "ImageNavGoal-v0", explore=-1)
    with pytest.warns(UserWarning, match="rssm has no memory"):
        plan_in_env(rssm, "ImageNavGoal-v0", episodes=1, max_steps=1, horizon=2, num_candidates=8, num_elites=2,
                    iterations=1, explore=4, progress=False)


def test_plan_cli_with_memory_runs_end_to_end_and_prints_refusals(tmp_path, capsys) -> None:
    from worldmodels.checkpoint import save
    from worldmodels.cli import main
    from worldmodels.models import build_model

    torch.manual_seed(0)
    save(tmp_path / "gtmsm", build_model("gtmsm", "debug", obs_shape=(3, 8, 8), action_dim=5))
    save(tmp_path / "rnn", build_model("rnn", "debug", obs_shape=(3, 8, 8), action_dim=5))
    tiny = ["--env", "ImageNavGoal-v0", "--episodes", "1", "--max-steps", "2", "--horizon", "2", "--candidates", "8",
            "--elites", "2", "--iterations", "1", "--no-progress"]
    out = tmp_path / "plan"
    rc = main(["plan", "--checkpoint", str(tmp_path / "gtmsm"), "--agents", "model,true,random", "--explore", "8",
               "--out", str(out), *tiny])
    assert rc == 0
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["metrics"]) == {"model", "true", "random"}
    assert "after 8 exploration steps" in report["setup"][0] and "localizes the goal frame" in report["setup"][1]
    assert "plan: model: gtmsm (memory with localize)" in capsys.readouterr().out
    assert (out / "model.gif").exists()

    assert main(["plan", "--checkpoint", str(tmp_path / "rnn"), "--explore", "4", "--out", str(out), *tiny]) == 0
    assert "plan: warning: rnn has no memory to look the goal up in" in capsys.readouterr().err
    assert main(["plan", "--checkpoint", str(tmp_path / "gtmsm"), "--explore", "0", "--out", str(out), *tiny]) == 2
    assert "worldmodels plan: error: plan: explore 0 leaves gtmsm's memory" in capsys.readouterr().err
