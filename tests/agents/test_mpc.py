"""MPCAgent in a real Gymnasium loop with an exact model: it must act optimally."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.mpc import MPCAgent, to_model_obs
from agents.objectives import goal_image, goal_latent, goal_state, localized_goal, stay_in_region
from agents.planners import CEM, CategoricalCEM
from worldmodels.api import Belief, Imagination


class LineEnv(gym.Env):
    """Position on a line; Discrete(3) moves {-1, 0, +1} or a Box force in [-1, 1]."""

    def __init__(self, continuous: bool = False) -> None:
        self.observation_space = gym.spaces.Box(-100, 100, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32) if continuous else gym.spaces.Discrete(3)
        self.continuous = continuous

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = 0.0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x += float(action[0]) if self.continuous else float(action) - 1.0
        return np.array([self.x], np.float32), 0.0, False, False, {}


class LineModel:
    """The exact world model of LineEnv, through the WorldModel API; counts observe calls."""

    def __init__(self, continuous: bool) -> None:
        self.continuous, self.observed = continuous, []

    def observe(self, obs, action, mask=None):
        self.observed.append((obs.clone(), action.clone()))
        return Belief(features=obs[:, -1])

    def imagine(self, belief, actions):
        step = actions[..., 0] if self.continuous else actions @ torch.tensor([-1.0, 0.0, 1.0])
        s = belief.features + step.cumsum(1)[..., None]  # [N, H, 1]
        return Imagination(obs=s, latent=s, uncertainty=torch.zeros(s.shape[:2]), extras={"s": s})


def run(agent, env, steps):
    obs, _ = env.reset(seed=0)
    agent.reset()
    xs = []
    for _ in range(steps):
        obs, *_ = env.step(agent.act(obs))
        xs.append(float(obs[0]))
    return xs


def test_discrete_mpc_reaches_goal_in_optimal_steps_and_stays() -> None:
    env = LineEnv()
    model = LineModel(False)
    planner = CategoricalCEM(env.action_space, 5, num_candidates=100, num_elites=10, iterations=4, seed=0)
    agent = MPCAgent(model, planner, goal_state(torch.tensor([3.0])), env.action_space)
    assert run(agent, env, 6) == [1.0, 2.0, 3.0, 3.0, 3.0, 3.0]
    # the belief is updated with the real frames and the actions that led to them
    obs, act = model.observed[-1]
    assert obs.shape == (1, 6, 1) and obs[0, :, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert act[0, 0].tolist() == [0.0, 0.0, 0.0] and act[0, 1].tolist() == [0.0, 0.0, 1.0]


def test_continuous_mpc_with_cem_reaches_goal() -> None:
    env = LineEnv(continuous=True)
    planner = CEM(env.action_space, 4, num_candidates=200, num_elites=20, iterations=4, seed=0)
    agent = MPCAgent(LineModel(True), planner, goal_state(torch.tensor([2.5])), env.action_space)
    xs = run(agent, env, 5)
    assert abs(xs[-1] - 2.5) < 0.1 and xs[1] > 1.8  # moves at full speed, then holds


def test_warm_start_and_max_context() -> None:
    env = LineEnv()
    planner = CategoricalCEM(env.action_space, 4, num_candidates=50, num_elites=5, seed=0)
    seen = []
    optimize = planner.optimize
    planner.optimize = lambda m, b, o, init=None: seen.append(init) or optimize(m, b, o, init)  # type: ignore[method-assign]
    model = LineModel(False)
    agent = MPCAgent(model, planner, goal_state(torch.tensor([3.0])), env.action_space, max_context=2)
    run(agent, env, 3)
    assert seen[0] is None and seen[1].shape == (4, 3)
    assert model.observed[-1][0].shape == (1, 2, 1)


def test_a_frame_is_observed_once_after_observe_or_memorise() -> None:
    """act(obs) after observe(obs) / memorise(..., obs) plans from the recorded frame: the model's context
    holds each frame once (the spy model records every observe call), as when act(obs) observes it itself."""
    env = LineEnv()

    def make(model):
        planner = CategoricalCEM(env.action_space, 3, num_candidates=30, num_elites=5, seed=0)
        return MPCAgent(model, planner, goal_state(torch.tensor([3.0])), env.action_space)

    f0, f1 = np.array([0.0], np.float32), np.array([1.0], np.float32)
    plain, spy = LineModel(False), LineModel(False)
    a, b = make(plain), make(spy)
    assert a.act(f0) == 2
    b.observe(f0)
    assert b.act(f0) == 2  # f0 is not observed a second time (with a zero action)
    assert [o.shape for o, _ in spy.observed] == [(1, 1, 1)]
    torch.testing.assert_close(spy.observed[-1], plain.observed[-1])
    a.act(f1), b.act(f1)  # the next frame is observed with the action taken
    assert [o.shape for o, _ in spy.observed] == [(1, 1, 1), (1, 2, 1)]
    torch.testing.assert_close(spy.observed[-1], plain.observed[-1])
    assert spy.observed[-1][1][0, 1].tolist() == [0.0, 0.0, 1.0]  # one-hot of action 2

    mem = LineModel(False)
    c = make(mem)
    c.memorise([f0, f1, np.array([2.0], np.float32)], [None, 2, 2])  # an exploration that ends at 2
    assert c.act(np.array([2.0], np.float32)) == 2
    assert len(mem.observed) == 1 and mem.observed[0][0].flatten().tolist() == [0.0, 1.0, 2.0]
    assert mem.observed[0][1][0].tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
    c.observe(f1, 0)
    with pytest.raises(ValueError, match="obs differs from the frame last given to observe"):
        c.act(f0)
    with pytest.raises(ValueError, match="expected as many actions as frames"):
        c.memorise([f0, f1], [None])


def test_objectives_and_errors() -> None:
    s = torch.tensor([[[0.0], [1.0]], [[2.0], [2.0]]])  # [N=2, H=2, 1]
    im = Imagination(obs=torch.zeros(2, 2, 1, 2, 2), latent=s, uncertainty=torch.zeros(2, 2), extras={"s": s})
    assert goal_state(torch.tensor([2.0]))(im).tolist() == [-5.0, 0.0]
    assert goal_state(torch.tensor([2.0]), reduce="min")(im).tolist() == [-1.0, 0.0]
    assert goal_latent(torch.tensor([0.0]), reduce="final")(im).tolist() == [-1.0, -4.0]
    assert stay_in_region(torch.tensor([-1.0]), torch.tensor([1.5]))(im).tolist() == [0.0, -0.5]
    assert goal_image(torch.ones(1, 2, 2))(im).tolist() == [-2.0, -2.0]
    with pytest.raises(ValueError, match=r"goal of shape \(2,\) does not match the imagined shape \(1,\)"):
        goal_state(torch.zeros(2))(im)
    with pytest.raises(KeyError, match="no extras"):
        goal_state(torch.zeros(1), key="pose")(im)
    env = LineEnv()
    agent = MPCAgent(
        LineModel(False),
        CategoricalCEM(env.action_space, 2, 10, num_elites=2),
        goal_state(torch.zeros(1)),
        env.action_space,
    )
    with pytest.raises(ValueError, match="not in the action space Discrete"):
        agent.observe(np.zeros(1, np.float32), 7)
    with pytest.raises(RuntimeError, match="no observation yet"):
        agent.act()
    with pytest.raises(ValueError, match="the planner plans for"):
        MPCAgent(
            LineModel(False),
            CategoricalCEM(gym.spaces.Discrete(4), 2, 10, num_elites=2),
            goal_state(torch.zeros(1)),
            env.action_space,
        )


def test_localized_goal_looks_the_frame_up_in_memory() -> None:
    class Memory(LineModel):  # remembers where each frame was seen: the frame's value is its position
        def localize(self, belief, frames):
            return frames.flatten(1)[:, :1]

    im = Imagination(obs=torch.zeros(2, 1, 1), latent=torch.zeros(2, 1, 1), uncertainty=torch.zeros(2, 1),
                     extras={"s": torch.tensor([[[2.0]], [[0.0]]])})
    belief = Belief(features=torch.zeros(1, 1))
    assert localized_goal(Memory(False), belief, torch.full((1, 1, 1), 2.0))(im).tolist() == [0.0, -4.0]
    with pytest.raises(TypeError, match="LineModel has no localize"):
        localized_goal(LineModel(False), belief, torch.zeros(1, 1, 1))
    with pytest.raises(ValueError, match=r"expected one frame \[C, H, W\]"):
        localized_goal(Memory(False), belief, torch.zeros(1))


def test_to_model_obs() -> None:
    assert to_model_obs(np.zeros((8, 8, 3), np.uint8)).shape == (3, 8, 8)
    assert to_model_obs(np.zeros((2,), np.float64)).dtype == torch.float32
