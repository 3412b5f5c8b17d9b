"""Explorers: run-length and frequency statistics against scipy, seeding, actions inside the space."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from scipy import stats

from agents.explorers import (
    EXPLORERS,
    PoissonRepeat,
    RandomWalkMomentum,
    RotateInPlace,
    UniformRandom,
    explorer_factory,
    make_explorer,
)

BOX = spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, 4.0], np.float32))


def _runs(actions: list[np.ndarray]) -> np.ndarray:
    """Lengths of maximal runs of identical consecutive actions."""
    lengths, n = [], 1
    for prev, cur in zip(actions[:-1], actions[1:]):
        if np.array_equal(prev, cur):
            n += 1
        else:
            lengths.append(n)
            n = 1
    return np.array(lengths)  # the last (possibly cut) run is dropped


@pytest.mark.parametrize("lam", [0.5, 2.0, 5.0])
def test_poisson_run_lengths_match_one_plus_poisson(lam: float) -> None:
    # Box actions: two runs never draw the same action, so runs are exactly the repeats.
    p = PoissonRepeat(BOX, lam=lam)
    p.reset(seed=1)
    runs = _runs([p.act(None) for _ in range(60_000)])
    k = runs - 1  # ~ Poisson(lam)
    n = k.size
    assert abs(runs.mean() - (lam + 1)) < 4 * np.sqrt(lam / n)
    # chi-square goodness of fit of k against the Poisson pmf, tail pooled
    kmax = int(stats.poisson.ppf(0.999, lam))
    observed = np.bincount(np.minimum(k, kmax), minlength=kmax + 1)
    expected = stats.poisson.pmf(np.arange(kmax + 1), lam) * n
    expected[-1] = stats.poisson.sf(kmax - 1, lam) * n
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_poisson_discrete_marginal_is_uniform() -> None:
    p = PoissonRepeat(spaces.Discrete(5, start=2), lam=2.0)
    actions = []
    for ep in range(400):
        p.reset(seed=ep)
        actions += [int(p.act(None)) for _ in range(60)]
    counts = np.bincount(np.array(actions) - 2, minlength=5)
    assert counts.sum() == 24_000 and stats.chisquare(counts).pvalue > 1e-3


def test_uniform_frequencies() -> None:
    d = UniformRandom(spaces.Discrete(7))
    d.reset(seed=0)
    counts = np.bincount([int(d.act(None)) for _ in range(21_000)], minlength=7)
    assert stats.chisquare(counts).pvalue > 1e-3
    b = UniformRandom(BOX)
    b.reset(seed=0)
    x = np.array([b.act(None) for _ in range(5000)])
    assert stats.kstest(x[:, 0], stats.uniform(-1, 2).cdf).pvalue > 1e-3
    assert stats.kstest(x[:, 1], stats.uniform(0, 4).cdf).pvalue > 1e-3


SPACES = [spaces.Discrete(5), BOX, spaces.MultiDiscrete([3, 4])]


@pytest.mark.parametrize("name", sorted(EXPLORERS))
@pytest.mark.parametrize("space", SPACES, ids=["discrete", "box", "multidiscrete"])
def test_seeding_and_actions_in_space(name: str, space: spaces.Space) -> None:
    kwargs = {}
    if name == "rotate":
        if not isinstance(space, spaces.Discrete):
            with pytest.raises(TypeError, match="Discrete"):
                make_explorer(name, space)
            return
        kwargs = {"action": 0, "opposite": 1, "random_direction": True}
    p = make_explorer(name, space, **kwargs)

    def episode(seed: int) -> list:
        p.reset(seed=seed)
        return [np.asarray(p.act(None)).copy() for _ in range(50)]

    a, b = episode(3), episode(3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(space.contains(np.asarray(x, dtype=space.dtype).reshape(space.shape)) for x in a)
    if name != "rotate":
        c = episode(4)
        assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_rotate_in_place_directions() -> None:
    p = RotateInPlace(spaces.Discrete(3), action=0, opposite=1, random_direction=True)
    firsts = []
    for seed in range(2000):
        p.reset(seed=seed)
        acts = {int(p.act(None)) for _ in range(5)}
        assert len(acts) == 1  # one direction for the whole episode
        firsts.append(acts.pop())
    assert set(firsts) == {0, 1}
    assert stats.binomtest(firsts.count(0), 2000, 0.5).pvalue > 1e-3
    fixed = RotateInPlace(spaces.Discrete(3), action=2)
    fixed.reset(seed=0)
    assert {int(fixed.act(None)) for _ in range(10)} == {2}
    with pytest.raises(ValueError, match="opposite"):
        RotateInPlace(spaces.Discrete(3), action=0, random_direction=True)
    with pytest.raises(ValueError, match="action"):
        RotateInPlace(spaces.Discrete(3), action=5)


def test_momentum_discrete_keep_probability() -> None:
    n, p_keep = 4, 0.7
    p = RandomWalkMomentum(spaces.Discrete(n), p_keep=p_keep)
    p.reset(seed=0)
    a = np.array([int(p.act(None)) for _ in range(40_000)])
    same = np.mean(a[1:] == a[:-1])
    expected = p_keep + (1 - p_keep) / n
    assert abs(same - expected) < 4 * np.sqrt(expected * (1 - expected) / a.size)
    assert stats.chisquare(np.bincount(a, minlength=n)).pvalue > 1e-4  # marginal stays uniform


def test_momentum_box_autocorrelation() -> None:
    m = 0.9
    p = RandomWalkMomentum(spaces.Box(-2.0, 2.0, (1,)), momentum=m, sigma=0.2)  # clipping at 5 sigma
    p.reset(seed=0)
    x = np.array([p.act(None)[0] for _ in range(50_000)])[100:]
    assert abs(np.corrcoef(x[:-1], x[1:])[0, 1] - m) < 0.01
    assert abs(x.std() - 0.2 * 2.0) < 0.03  # stationary std sigma * half_width
    assert np.all(np.abs(x) <= 2.0)


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match=r"expected one of \['momentum', 'poisson', 'rotate', 'uniform'\]"):
        make_explorer("poison", spaces.Discrete(2))
    with pytest.raises(ValueError, match="lam"):
        explorer_factory("poisson", lambda_=3)
    with pytest.raises(ValueError, match="lam >= 0"):
        PoissonRepeat(spaces.Discrete(2), lam=-1)
    with pytest.raises(ValueError, match="bounded Box"):
        UniformRandom(spaces.Box(-np.inf, np.inf, (2,)))
    make = explorer_factory("poisson", lam=3.0)
    assert isinstance(make(spaces.Discrete(2)), PoissonRepeat) and make(spaces.Discrete(2)).lam == 3.0


@pytest.mark.parametrize("name", sorted(EXPLORERS))
@pytest.mark.parametrize("space", SPACES, ids=["discrete", "box", "multidiscrete"])
def test_vectorized_rows_equal_single_explorers(name: str, space: spaces.Space) -> None:
    if name == "rotate" and not isinstance(space, spaces.Discrete):
        return
    kwargs = {"action": 0, "opposite": 1, "random_direction": True} if name == "rotate" else {}
    n = 5
    batch = EXPLORERS[name].vectorize([make_explorer(name, space, **kwargs) for _ in range(n)])
    singles = [make_explorer(name, space, **kwargs) for _ in range(n)]
    for episode in range(3):  # a reset clears each row's state (runs in progress, previous action)
        seeds = [100 * episode + 7 * i for i in range(n)]
        batch.reset(seeds)
        for e, s in zip(singles, seeds):
            e.reset(seed=s)
        for _ in range(40):
            a = batch.act(np.zeros((n, 3)))
            assert a.shape == (n, *space.shape) and a.dtype == space.dtype
            for i, e in enumerate(singles):
                np.testing.assert_array_equal(a[i], np.asarray(e.act(None)))


def test_vectorized_subclass_gets_its_row_and_bad_batches_fail() -> None:
    class Echo(PoissonRepeat):  # overrides act: the batch must call it row by row with row i of obs
        def act(self, obs):  # noqa: ANN001, ANN202
            return np.int64(obs[0])

    batch = Echo.vectorize([Echo(spaces.Discrete(5)) for _ in range(3)])
    batch.reset([0, 1, 2])
    np.testing.assert_array_equal(batch.act(np.array([[4], [0], [2]])), [4, 0, 2])
    with pytest.raises(ValueError, match="one class and action space"):
        UniformRandom.vectorize([UniformRandom(spaces.Discrete(5)), PoissonRepeat(spaces.Discrete(5))])
    with pytest.raises(ValueError, match="expected 2 seeds, received 3"):
        UniformRandom.vectorize([UniformRandom(spaces.Discrete(5))] * 2).reset([1, 2, 3])


def test_miniworld_agents_build_their_explorers_for_the_env_actions() -> None:
    from agents.explorers import MINIWORLD_AGENTS, CollectionAgent

    assert list(MINIWORLD_AGENTS) == ["rotate", "walk", "walk_fourrooms"]
    assert [a.walking for a in MINIWORLD_AGENTS.values()] == [False, True, True]
    rot = MINIWORLD_AGENTS["rotate"].policy()(spaces.Discrete(2))
    assert isinstance(rot, RotateInPlace) and rot.random_direction and (rot.action, rot.opposite) == (0, 1)
    walk = MINIWORLD_AGENTS["walk"].policy()(spaces.Discrete(3))
    assert isinstance(walk, RandomWalkMomentum) and walk.p_keep == 0.8
    direct = explorer_factory("momentum", p_keep=0.8)(spaces.Discrete(3))
    walk.reset(5)
    direct.reset(5)
    assert [int(walk.act(None)) for _ in range(50)] == [int(direct.act(None)) for _ in range(50)]
    assert dict(MINIWORLD_AGENTS["walk_fourrooms"].env_kwargs) == {"miniworld_max_steps": 300}
    with pytest.raises(ValueError, match="unknown explorer 'spin'"):
        CollectionAgent("WM-MiniWorld-OneRoom-v0", 10, "spin").policy()


def test_explore_records_frames_actions_and_infos_and_refuses_truncation() -> None:
    import gymnasium as gym

    import envs  # noqa: F401
    from agents.explorers import explore

    env = gym.make("ImageNavGoal-v0", max_episode_steps=40)
    obs, info = env.reset(seed=1)
    policy = PoissonRepeat(env.action_space)
    policy.reset(1)
    ex = explore(env, policy, 30, obs, info)  # may pass the env's goal: termination is not an end here
    assert len(ex.frames) == len(ex.actions) == len(ex.infos) == 31 and ex.actions[0] is None
    assert ex.obs is ex.frames[-1] and ex.info is ex.infos[-1] and ex.explorer is policy
    np.testing.assert_array_equal(ex.obs, env.unwrapped.core.observe()[0])
    replay = PoissonRepeat(env.action_space)
    replay.reset(1)
    assert [int(a) for a in ex.actions[1:]] == [int(replay.act(None)) for _ in range(30)]
    obs, info = env.reset(seed=1)
    with pytest.raises(ValueError, match="truncated the episode after 40 of 50 exploration steps"):
        explore(env, policy, 50, obs, info)
    with pytest.raises(ValueError, match="expected steps >= 0"):
        explore(env, policy, -1, obs, info)
