"""ImaginationEnv / ImaginationBatch / SB3 adapter: step-by-step imagination equals one long imagination,
batched rows equal single envs, resets touch only finished rows, PPO learns inside an exact model."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from agents.imagination_env import ImaginationBatch, ImaginationEnv, sb3_vec_env, set_belief_rows
from agents.objectives import goal_image
from worldmodels.api import Batch, Belief, Imagination
from worldmodels.models import build_model

torch.set_num_threads(1)


class LineModel:
    """Exact model of a walk on a line (obs = [x], Discrete(3) moves -1/0/+1); counts imagine calls."""

    def __init__(self) -> None:
        self.calls = 0

    def observe(self, obs, action, mask=None):
        x = obs[:, -1]  # [B, 1]
        return Belief(features=x.clone(), state={"x": x.clone()})

    def imagine(self, belief, actions):
        self.calls += 1
        step = (actions @ torch.tensor([-1.0, 0.0, 1.0])).cumsum(1)[..., None]  # [N, H, 1]
        x = belief.state["x"][:, None] + step  # [N, H, 1]
        return Imagination(obs=x, latent=x, uncertainty=torch.zeros(x.shape[:2]),
                           belief=Belief(features=x[:, -1], state={"x": x[:, -1]}))


def line_contexts(m: int = 5) -> Batch:
    x0 = torch.arange(m, dtype=torch.float32)[:, None, None].expand(m, 2, 1).clone()  # [M, 2, 1]
    return Batch(obs=x0, action=torch.zeros(m, 2, 3))


def position_reward(im):
    return im.obs[:, -1, 0]  # [N]


def rnn_setup(action_space, seed=0):
    torch.manual_seed(seed)
    dim = int(action_space.n) if isinstance(action_space, gym.spaces.Discrete) else action_space.shape[0]
    model = build_model("rnn", "debug", obs_shape=(1, 16, 16), action_dim=dim).eval()
    g = torch.Generator().manual_seed(seed)
    contexts = Batch(obs=torch.rand(6, 4, 1, 16, 16, generator=g), action=torch.zeros(6, 4, dim))
    return model, contexts


@pytest.mark.parametrize("space", [gym.spaces.Box(-1, 1, (2,), np.float32), gym.spaces.Discrete(5)])
def test_check_env(space) -> None:
    model, contexts = rnn_setup(space)
    env = ImaginationEnv(model, contexts, goal_image(torch.zeros(1, 16, 16)), space, max_episode_steps=4,
                         render_mode="rgb_array")
    check_env(env, skip_render_check=False)
    env.reset(seed=1)
    assert env.render().shape == (16, 16, 3)


def test_step_by_step_equals_one_long_imagination() -> None:
    space = gym.spaces.Box(-1, 1, (2,), np.float32)
    model, contexts = rnn_setup(space)
    goal = torch.full((1, 16, 16), 0.3)
    env = ImaginationEnv(model, contexts, goal_image(goal), space, max_episode_steps=6)
    obs, info = env.reset(seed=3)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1.5, 1.5, size=(6, 2)).astype(np.float32)  # out of range: the env clips
    feats, rewards, truncs = [], [], []
    for a in actions:
        f, r, term, trunc, _ = env.step(a)
        feats.append(f), rewards.append(r), truncs.append(trunc)
    # oracle: observe the same context, imagine all 6 clipped steps in one call
    i = info["context_index"]
    with torch.no_grad():
        belief = model.observe(contexts.obs[i : i + 1], contexts.action[i : i + 1])
        np.testing.assert_allclose(obs, belief.features[0].numpy(), atol=1e-6)
        im = model.imagine(belief, torch.as_tensor(np.clip(actions, -1, 1))[None])
    np.testing.assert_allclose(np.stack(feats), im.latent[0].numpy(), atol=1e-5)
    d = (im.obs[0] - goal).pow(2).flatten(1).mean(-1)  # [H] per-step distances
    np.testing.assert_allclose(rewards, -d.numpy(), atol=1e-6)
    assert truncs == [False] * 5 + [True]


def test_batched_rows_are_independent_and_share_one_imagine_call() -> None:
    model = LineModel()
    core = ImaginationBatch(model, line_contexts(), position_reward, gym.spaces.Discrete(3), num_envs=4,
                            max_episode_steps=3, seed=0)
    x0 = core.reset()[:, 0].copy()
    assert set(x0) <= set(range(5)) and np.array_equal(x0, core.context_index.astype(np.float32))
    calls = model.calls
    obs, reward, term, trunc, _ = core.step(np.array([2, 0, 1, 2]))
    assert model.calls == calls + 1  # all rows in one imagine call
    np.testing.assert_array_equal(obs[:, 0], x0 + [1, -1, 0, 1])
    np.testing.assert_array_equal(reward, x0 + [1, -1, 0, 1])
    assert not term.any() and not trunc.any()
    # reset only row 2: the other rows keep their position
    core.reset_rows(np.array([2]))
    obs2, *_ = core.step(np.array([1, 1, 1, 1]))
    np.testing.assert_array_equal(obs2[[0, 1, 3], 0], obs[[0, 1, 3], 0])
    assert obs2[2, 0] == core.context_index[2] and core.t.tolist() == [2, 2, 1, 2]


def test_sb3_vec_env_autoreset_semantics() -> None:
    model = LineModel()
    core = ImaginationBatch(model, line_contexts(), position_reward, gym.spaces.Discrete(3), num_envs=3,
                            max_episode_steps=2, seed=0)
    venv = sb3_vec_env(core)
    venv.seed(7)
    x0 = venv.reset()[:, 0].copy()
    venv.step(np.array([2, 2, 2]))
    obs, reward, done, infos = venv.step(np.array([2, 0, 2]))
    assert done.all()
    final = np.array([info["terminal_observation"][0] for info in infos])
    np.testing.assert_array_equal(final, x0 + [2, 0, 2])
    np.testing.assert_array_equal(reward, final)
    assert all(info["TimeLimit.truncated"] for info in infos)
    np.testing.assert_array_equal(obs[:, 0], core.context_index.astype(np.float32))  # fresh starts
    venv.seed(7)
    np.testing.assert_array_equal(venv.reset()[:, 0], x0)  # seeded resets repeat


def test_bad_inputs() -> None:
    class NoBelief(LineModel):
        def imagine(self, belief, actions):
            im = super().imagine(belief, actions)
            im.belief = None
            return im

    core = ImaginationBatch(NoBelief(), line_contexts(), position_reward, gym.spaces.Discrete(3), num_envs=2)
    core.reset()
    with pytest.raises(ValueError, match="no Imagination.belief"):
        core.step(np.array([0, 1]))
    core = ImaginationBatch(LineModel(), line_contexts(), position_reward, gym.spaces.Discrete(3), num_envs=2)
    with pytest.raises(RuntimeError, match="reset"):
        core.step(np.array([0, 1]))
    core.reset()
    with pytest.raises(ValueError, match=r"expected actions of shape \(2,\)"):
        core.step(np.array([0, 1, 2]))
    bad = ImaginationBatch(LineModel(), line_contexts(), lambda im: im.obs[:, -1], gym.spaces.Discrete(3))
    bad.reset()
    with pytest.raises(ValueError, match=r"reward_fn: expected rewards of shape \(1,\)"):
        bad.step(np.array([0]))
    with pytest.raises(TypeError, match="expected a worldmodels.api.Batch or a worldmodels.data.WindowDataset"):
        ImaginationBatch(LineModel(), [1, 2], position_reward, gym.spaces.Discrete(3))
    with pytest.raises(ValueError, match="Discrete or 1-D Box"):
        ImaginationBatch(LineModel(), line_contexts(), position_reward, gym.spaces.MultiBinary(3))
    b = Belief(torch.zeros(2, 1), {"x": torch.zeros(2, 1)})
    with pytest.raises(ValueError, match="keys"):
        set_belief_rows(b, [0], Belief(torch.ones(1, 1), {"y": torch.ones(1, 1)}))


def test_ppo_learns_inside_an_exact_model() -> None:
    """Reward = position: the optimal policy always moves right (+1). PPO trained only in imagination."""
    from stable_baselines3 import PPO

    core = ImaginationBatch(LineModel(), line_contexts(), position_reward, gym.spaces.Discrete(3), num_envs=8,
                            max_episode_steps=5, seed=0)
    venv = sb3_vec_env(core)
    agent = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=4, learning_rate=3e-3, gamma=0.9,
                seed=0, device="cpu", policy_kwargs={"net_arch": [16]})
    agent.learn(total_timesteps=2048)
    obs = np.arange(5, dtype=np.float32)[:, None]
    actions, _ = agent.predict(obs, deterministic=True)
    assert (actions == 2).all(), actions


@pytest.mark.parametrize("name", ["rnn", "kvae", "srnn", "vrnn", "dmm", "rssm", "gtmsm"])
def test_models_continue_imagination_exactly(name) -> None:
    """imagine(b, a[:, :2]) then imagine(belief, a[:, 2:]) == imagine(b, a) (for every model returning a belief)."""
    torch.manual_seed(0)
    model = build_model(name, "debug", obs_shape=(1, 32, 32), action_dim=2).eval()
    g = torch.Generator().manual_seed(0)
    obs = (torch.rand(3, 4, 1, 32, 32, generator=g) > 0.9).float()
    actions = torch.rand(3, 5, 2, generator=g) * 2 - 1
    with torch.no_grad():
        belief = model.observe(obs, torch.zeros(3, 4, 2))
        whole = model.imagine(belief, actions)
        first = model.imagine(belief, actions[:, :2])
        assert first.belief is not None
        rest = model.imagine(first.belief, actions[:, 2:])
    torch.testing.assert_close(first.belief.features, whole.latent[:, 1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rest.obs, whole.obs[:, 2:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rest.latent, whole.latent[:, 2:], atol=1e-5, rtol=1e-5)


def test_rewards_and_terminations_from_the_models_heads() -> None:
    """Without reward_fn / terminate_fn the env uses Imagination.reward / .cont of a model with heads."""
    from worldmodels.models.with_heads import WithHeads

    space = gym.spaces.Box(-1, 1, (2,), np.float32)
    rnn, contexts = rnn_setup(space)
    model = WithHeads(rnn, hidden=(8,), reward_loss="mse").eval()
    env = ImaginationEnv(model, contexts, action_space=space, max_episode_steps=4)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(space.sample())
        with torch.no_grad():  # RNN: the features after a step are that step's Imagination.latent
            f = torch.as_tensor(obs)[None]
            assert reward == pytest.approx(float(model.predict_reward(f)[0]), abs=1e-5)
            assert info["cont"] == pytest.approx(float(model.predict_cont(f)[0]), abs=1e-5)
        assert terminated == (info["cont"] < 0.5)
    with torch.no_grad():
        model.cont_head.net[-1].bias.fill_(-50.0)  # certain termination
    env.reset(seed=0)
    assert env.step(space.sample())[2] is True
    # an explicit reward_fn / terminate_fn still wins
    env = ImaginationEnv(model, contexts, position_reward_of_latent, space, terminate_fn=lambda im: im.latent[:, -1, 0] > 1e9)
    env.reset(seed=0)
    _, reward, terminated, _, _ = env.step(space.sample())
    assert terminated is False and reward == pytest.approx(float(env.core.belief.features[0, 0]))


def position_reward_of_latent(im):
    return im.latent[:, -1, 0]


def test_no_reward_function_and_no_reward_head_is_refused() -> None:
    space = gym.spaces.Discrete(5)
    model, contexts = rnn_setup(space)
    with pytest.raises(ValueError, match=r"expected a reward_fn or a model whose Imagination has a reward.*"
                                         r"WithHeads.*received neither"):
        ImaginationEnv(model, contexts, action_space=space)
    with pytest.raises(ValueError, match=r"expected a Discrete or 1-D Box action space, received None"):
        ImaginationEnv(model, contexts, goal_image(torch.zeros(1, 16, 16)))
