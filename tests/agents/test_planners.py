"""Planners on analytic models whose optimal action sequence is known (or brute-forced)."""

import itertools

import gymnasium as gym
import pytest
import torch

from agents.planners import CEM, MPPI, CategoricalCEM, RandomShooting, make_planner
from worldmodels.api import Belief, Imagination


class PointMass:
    """``s_t = s_{t-1} + v · a_t`` for continuous ``a`` or one-hot ``a`` over moves ``v``; uncertainty ``|a|``."""

    def __init__(self, moves: list[float] | None = None) -> None:
        self.moves = None if moves is None else torch.tensor(moves)
        self.calls = 0

    def imagine(self, belief: Belief, actions: torch.Tensor) -> Imagination:
        self.calls += 1
        step = actions[..., 0] if self.moves is None else actions @ self.moves  # [N, H]
        s = belief.features[:, :1] + step.cumsum(1)
        return Imagination(obs=s[..., None], latent=s[..., None], uncertainty=step.abs())


def track(target: torch.Tensor):
    return lambda im: -((im.obs[..., 0] - target) ** 2).sum(1)


BOX = gym.spaces.Box(-1.0, 1.0, (1,))
START = Belief(torch.zeros(1, 1))


@pytest.mark.parametrize("cls", [CEM, MPPI])
def test_continuous_planners_find_unique_optimum(cls) -> None:
    # tracking s_t = 0.5 t is achieved only by a_t = 0.5 at every step
    H = 6
    target = 0.5 * torch.arange(1, H + 1)
    kw = {"num_elites": 50} if cls is CEM else {"temperature": 0.01, "noise_std": 0.05}
    plan = cls(BOX, H, num_candidates=500, iterations=8, seed=1, **kw).optimize(
        PointMass(), START, track(target)
    )
    torch.testing.assert_close(plan.imagination.obs[0, :, 0], target, atol=0.05, rtol=0)
    assert plan.score > -0.01 and (plan.actions[:, 0] - 0.5).abs().max() < 0.1
    assert plan.imagination.obs.shape == (1, H, 1)


def test_cem_beats_random_shooting_on_same_budget() -> None:
    H, target = 8, 0.3 * torch.arange(1, 9)
    cem = CEM(BOX, H, num_candidates=200, iterations=5, num_elites=20, seed=0).optimize(
        PointMass(), START, track(target)
    )
    rs = RandomShooting(BOX, H, num_candidates=200, iterations=5, seed=0).optimize(
        PointMass(), START, track(target)
    )
    assert cem.score > rs.score


def test_categorical_cem_matches_brute_force() -> None:
    # a 1-D grid walk with moves {-1, 0, +1}: reach +3 fast and stay; brute force over all 3^6 sequences
    H, moves = 6, [-1.0, 0.0, 1.0]
    model, objective = PointMass(moves), (lambda im: -(im.obs[..., 0] - 3).abs().sum(1))
    all_seq = torch.tensor(list(itertools.product(range(3), repeat=H)))
    brute = objective(model.imagine(START, torch.nn.functional.one_hot(all_seq, 3).float()))
    best = all_seq[brute.argmax()]
    assert (brute == brute.max()).sum() == 1  # the optimum is unique
    model.calls = 0
    plan = CategoricalCEM(
        gym.spaces.Discrete(3), H, num_candidates=100, iterations=6, num_elites=10, seed=0
    ).optimize(model, START, objective)
    assert plan.actions.argmax(-1).tolist() == best.tolist() == [2, 2, 2, 1, 1, 1]
    assert plan.score == pytest.approx(float(brute.max()))
    assert model.calls == 6 + 1  # one batched imagine per iteration (+1 to imagine the winner)
    assert plan.env_action(0) == 2


def test_uncertainty_weight_changes_the_choice() -> None:
    # with a flat objective, a penalty on uncertainty (|a|) drives actions to zero, a bonus to the bounds
    flat = lambda im: torch.zeros(im.obs.shape[0])  # noqa: E731
    pen = CEM(BOX, 4, num_candidates=300, iterations=6, num_elites=30, uncertainty_weight=-1.0, seed=0)
    bonus = CEM(BOX, 4, num_candidates=300, iterations=6, num_elites=30, uncertainty_weight=1.0, seed=0)
    assert pen.optimize(PointMass(), START, flat).actions.abs().max() < 0.1
    assert bonus.optimize(PointMass(), START, flat).actions.abs().min() > 0.9


def test_warm_start_is_a_candidate() -> None:
    H, target = 5, 0.5 * torch.arange(1, 6)
    init = torch.full((H, 1), 0.5)  # already optimal: one iteration of random shooting keeps it
    plan = RandomShooting(BOX, H, num_candidates=10, seed=0).optimize(
        PointMass(), START, track(target), init=init
    )
    torch.testing.assert_close(plan.actions, init)


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match="expected a Box action space"):
        CEM(gym.spaces.Discrete(3), 4)
    with pytest.raises(ValueError, match="expected a Discrete action space"):
        CategoricalCEM(BOX, 4)
    with pytest.raises(ValueError, match="bounded Box"):
        CEM(gym.spaces.Box(-float("inf"), float("inf"), (1,)), 4)
    with pytest.raises(ValueError, match=r"expected init of shape \(4, 1\), received \(3, 1\)"):
        CEM(BOX, 4, num_candidates=10, num_elites=2).optimize(
            PointMass(), START, track(torch.zeros(4)), init=torch.zeros(3, 1)
        )
    with pytest.raises(ValueError, match=r"expected scores of shape \(10,\)"):
        RandomShooting(BOX, 4, num_candidates=10).optimize(PointMass(), START, lambda im: torch.zeros(3))
    with pytest.raises(ValueError, match="unknown planner 'cme'"):
        make_planner("cme", BOX, 4)
    assert isinstance(make_planner("auto", gym.spaces.Discrete(5), 4), CategoricalCEM)
