"""BeliefObservation: features equal model.observe on the real episode so far; check_env; SB3 learns on them."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from agents.wrappers import BeliefObservation
from worldmodels.api import Belief, encode_actions, frames_to_tensor
from worldmodels.models import build_model

torch.set_num_threads(1)


class LineEnv(gym.Env):
    """Position on a line in [-10, 10]; Discrete(3) moves -1/0/+1; reward = new position; 5 steps."""

    observation_space = gym.spaces.Box(-10, 10, (1,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = float(self.np_random.integers(-3, 4)), 0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x = float(np.clip(self.x + int(action) - 1, -10, 10))
        self.t += 1
        return np.array([self.x], np.float32), self.x, False, self.t >= 5, {}


class LastFrame:
    """'Model' whose belief is the last observation plus the number of frames seen and actions summed."""

    def observe(self, obs, action, mask=None):
        T = torch.full((obs.shape[0], 1), float(obs.shape[1]))
        return Belief(features=torch.cat([obs[:, -1], T, action.sum(1)], -1))


def test_check_env_image_env_with_rnn() -> None:
    torch.manual_seed(0)
    model = build_model("rnn", "debug", obs_shape=(1, 32, 32), action_dim=2).eval()
    env = BeliefObservation(gym.make("BouncingBallForce-v0"), model, max_context=6)
    check_env(env, skip_render_check=True)


def test_features_equal_observe_on_the_episode() -> None:
    torch.manual_seed(0)
    model = build_model("rnn", "debug", obs_shape=(3, 16, 16), action_dim=5).eval()
    env = BeliefObservation(gym.make("ImageNav-v0", image_size=48, crop_size=16), model)
    frames, acts = [], []
    obs, info = env.reset(seed=1)
    frames.append(info["frame"])
    rng = np.random.default_rng(0)
    for _ in range(7):
        a = int(rng.integers(5))
        obs, _, _, _, info = env.step(a)
        frames.append(info["frame"]), acts.append(a)
    # oracle: the whole episode filtered at once, action[t] led to frame[t], zero at t = 0
    x = frames_to_tensor(np.stack(frames))[None]  # [1, 8, C, H, W]
    u = torch.cat([torch.zeros(1, 5), encode_actions(np.array(acts), gym.spaces.Discrete(5))])[None]
    with torch.no_grad():
        want = model.observe(x, u).features[0].numpy()
    np.testing.assert_allclose(obs, want, atol=1e-6)
    assert env.observation_space.contains(obs)


def test_max_context_keeps_the_last_frames_and_zeroes_their_first_action() -> None:
    env = BeliefObservation(LineEnv(), LastFrame(), max_context=3)
    obs, _ = env.reset(seed=0)
    x0 = obs[0]
    assert obs.tolist() == [x0, 1.0, 0.0, 0.0, 0.0]
    obs, *_ = env.step(2)
    assert obs.tolist() == [x0 + 1, 2.0, 0.0, 0.0, 1.0]  # the +1 move, one-hot
    for _ in range(3):
        obs, *_ = env.step(0)
    # context = last 3 frames; actions that led to frames 2 and 3 are "-1" moves, the first is zeroed
    assert obs.tolist() == [x0 - 2, 3.0, 2.0, 0.0, 0.0]


def test_bad_inputs() -> None:
    model = build_model("rnn", "debug", obs_shape=(1, 32, 32), action_dim=3).eval()
    with pytest.raises(ValueError, match="expects actions of size 3"):
        BeliefObservation(gym.make("BouncingBallForce-v0"), model)
    with pytest.raises(ValueError, match="max_context >= 1"):
        BeliefObservation(LineEnv(), LastFrame(), max_context=0)
    with pytest.raises(RuntimeError, match="reset"):
        BeliefObservation(LineEnv(), LastFrame()).step(0)


def test_ppo_learns_on_belief_features() -> None:
    """Reward = position: PPO acting on the wrapper's features learns to always move right."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(lambda: BeliefObservation(LineEnv(), LastFrame(), max_context=2), n_envs=4, seed=0)
    agent = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=4, learning_rate=3e-3, gamma=0.9,
                seed=0, device="cpu", policy_kwargs={"net_arch": [16]})
    agent.learn(total_timesteps=2048)
    env = BeliefObservation(LineEnv(), LastFrame(), max_context=2)
    obs, _ = env.reset(seed=5)
    total = 0.0
    for _ in range(5):
        a, _ = agent.predict(obs, deterministic=True)
        obs, r, _, _, _ = env.step(int(a))
        total += r
    x0 = float(env.unwrapped.x) - 5
    assert total == pytest.approx(sum(x0 + k for k in range(1, 6)))  # moved right every step
