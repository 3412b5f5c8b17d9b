"""Windows from the start of episodes (``WindowDataset.episode_starts``, ``EpisodeStartWindows``,
``MappedWindows``) against an oracle that reads each episode's frames 0..L-1 from the RolloutDataset."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import envs  # noqa: F401
from agents.explorers import explorer_factory
from worldmodels.api import Batch
from worldmodels.data import (
    EpisodeStartWindows,
    MappedWindows,
    RolloutDataset,
    WindowDataset,
    collect,
    iterate_batches,
)

POISSON = explorer_factory("poisson", lam=2.0)


@pytest.fixture(scope="module")
def equal(tmp_path_factory: pytest.TempPathFactory) -> RolloutDataset:
    """ImageNav-v0 never ends an episode early: 7 episodes of 24 frames (the scripts' kind of data)."""
    out = collect("ImageNav-v0", tmp_path_factory.mktemp("equal"), 7, 23, policy=POISSON, seed=2,
                  episodes_per_shard=3, progress=False)
    data = RolloutDataset(out)
    assert data.lengths.tolist() == [23] * 7
    return data


@pytest.fixture(scope="module")
def ragged(tmp_path_factory: pytest.TempPathFactory) -> RolloutDataset:
    """ImageNavGoal episodes end at the goal: a seed whose episodes have different lengths."""
    root = tmp_path_factory.mktemp("ragged")
    for seed in range(20):
        data = RolloutDataset(collect("ImageNavGoal-v0", root / str(seed), 8, 12, policy=POISSON, seed=seed,
                                      episodes_per_shard=3, progress=False))
        if len(set(data.lengths.tolist())) >= 3 and data.lengths.max() == 12:
            return data
    raise AssertionError("no seed in 0..19 gave ImageNavGoal-v0 episodes of three different lengths")


def _assert_frames_0_to_L(batch: Batch, data: RolloutDataset, episodes: list[int], L: int) -> None:
    """Row b of ``batch`` is frames 0..L-1 of episode ``episodes[b]``, read directly from the dataset."""
    assert batch.obs.shape[:2] == (len(episodes), L)
    for b, e in enumerate(episodes):
        ep = data[e]
        np.testing.assert_allclose(batch.obs[b].numpy(), ep.obs[:L].transpose(0, 3, 1, 2) / 255.0, atol=1e-7)
        led_to = np.eye(5)[np.concatenate([[0], ep.action[: L - 1]]).astype(int)]  # action[t] led to obs[t]
        led_to[0] = 0
        np.testing.assert_array_equal(batch.action[b].numpy(), led_to)
        np.testing.assert_array_equal(batch.is_first[b].numpy(), np.arange(L) == 0)
        np.testing.assert_array_equal(batch.state[b].numpy(), ep.extras["pose"][:L].astype(np.float32))


def _same(a: Batch, b: Batch) -> bool:
    return all(
        (x is None and y is None) or (x is not None and y is not None and x.dtype == y.dtype and torch.equal(x, y))
        for x, y in ((getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(Batch))
    )


def test_episode_starts_are_the_first_window_of_every_episode_long_enough(ragged: RolloutDataset) -> None:
    frames = [ragged[e].length + 1 for e in range(ragged.num_episodes)]
    for L in (1, 5, 9, 13):
        windows = WindowDataset(ragged, L)
        starts = windows.episode_starts()
        long_enough = [e for e, n in enumerate(frames) if n >= L]
        assert starts.dtype == np.int64
        assert [windows.position(int(i)) for i in starts] == [(e, 0) for e in long_enough]
        assert starts.tolist() == [windows.index_of(e) for e in long_enough]
    across = WindowDataset(ragged, 14, across_episodes=True)  # longer than every episode: runs into the next
    has_room = [e for e in range(len(frames)) if sum(frames[e:]) >= 14]
    assert [across.position(int(i)) for i in across.episode_starts()] == [(e, 0) for e in has_room]
    assert len(has_room) < len(frames)


def test_each_window_is_frames_0_to_L_of_the_episode_drawn_for_seed_and_batch(equal: RolloutDataset) -> None:
    plan, B, seed = [(5, 2), (24, 1), (11, 2)], 6, 3
    batches = list(EpisodeStartWindows(equal, plan, B, seed))
    assert [b.obs.shape[1] for b in batches] == [5, 5, 24, 11, 11]
    for i, (batch, L) in enumerate(zip(batches, [5, 5, 24, 11, 11])):
        drawn = np.random.default_rng([seed, i]).integers(0, equal.num_episodes, B).tolist()
        _assert_frames_0_to_L(batch, equal, drawn, L)


def test_lengths_follow_the_plan_and_stay_at_the_last_stage(equal: RolloutDataset) -> None:
    plan = [(4, 3), (6, 0), (9, 2)]
    windows = EpisodeStartWindows(equal, plan, 2)
    assert len(windows) == 5
    assert [windows.length_at(i) for i in range(9)] == [4, 4, 4, 9, 9, 9, 9, 9, 9]
    assert [EpisodeStartWindows.length_of(plan, i) for i in range(9)] == [windows.length_at(i) for i in range(9)]
    assert [b.obs.shape[1] for b in windows] == [4, 4, 4, 9, 9]
    assert windows.batch(40).obs.shape[:2] == (2, 9)


def test_batch_i_depends_only_on_seed_and_i(equal: RolloutDataset) -> None:
    plan = [(3, 4), (8, 4)]
    first = list(EpisodeStartWindows(equal.path, plan, 4, seed=5))
    again = EpisodeStartWindows(equal, plan, 4, seed=5)
    assert all(_same(a, b) for a, b in zip(first, again))  # a new instance
    assert all(_same(a, b) for a, b in zip(first, again))  # iterated a second time
    assert all(_same(first[i], again.batch(i)) for i in reversed(range(8)))  # read directly, any order
    resumed = EpisodeStartWindows(equal, [(8, 4)], 4, seed=5)  # another plan: same length and (seed, i)
    assert all(_same(first[i], resumed.batch(i)) for i in range(4, 8))
    other = list(EpisodeStartWindows(equal, plan, 4, seed=6))
    assert not all(_same(a, b) for a, b in zip(first, other))


def test_episodes_shorter_than_a_stage_are_skipped_in_that_stage(ragged: RolloutDataset) -> None:
    plan, B, seed = [(3, 2), (13, 3)], 5, 1
    batches = list(EpisodeStartWindows(ragged, plan, B, seed))
    for i, batch in enumerate(batches):
        L = EpisodeStartWindows.length_of(plan, i)
        long_enough = [e for e in range(ragged.num_episodes) if ragged[e].length + 1 >= L]
        drawn = np.random.default_rng([seed, i]).integers(0, len(long_enough), B)
        _assert_frames_0_to_L(batch, ragged, [long_enough[d] for d in drawn], L)
    assert sum(ragged.lengths + 1 >= 13) < ragged.num_episodes  # the 13-frame stage did skip some
    with pytest.raises(ValueError, match="window length 14 exceeds every episode"):
        EpisodeStartWindows(ragged, [(3, 2), (14, 1)], B, seed)


@pytest.mark.parametrize("plan", [[], [(0, 3)], [(4, -1)], [(4.0, 3)], [4, 3], "4:3", [(4, 3, 1)], [(True, 2)]])
def test_bad_plans_raise(equal: RolloutDataset, plan) -> None:
    with pytest.raises(ValueError, match=r"expected plan \[\(length >= 1, n_batches >= 0\), \.\.\.\], received"):
        EpisodeStartWindows(equal, plan, 2)


def test_bad_batch_size_and_index_raise(equal: RolloutDataset) -> None:
    with pytest.raises(ValueError, match="expected batch_size >= 1, received 0"):
        EpisodeStartWindows(equal, [(4, 1)], 0)
    with pytest.raises(IndexError, match="expected a batch index >= 0, received -1"):
        EpisodeStartWindows(equal, [(4, 1)], 2).batch(-1)


def test_mapped_windows_collate_through_fn(equal: RolloutDataset, tmp_path: Path) -> None:
    windows = WindowDataset(equal, 6)

    def flat(b: Batch) -> Batch:
        return dataclasses.replace(b, obs=b.obs.flatten(2))

    mapped = MappedWindows(windows, flat)
    assert len(mapped) == len(windows) == 7 * (24 - 6 + 1)
    assert all(torch.equal(mapped[5][k], windows[5][k]) for k in windows[5])
    idx = [0, 19, 60, 132]
    assert _same(mapped.collate(mapped.__getitems__(idx)), flat(windows.collate(windows.__getitems__(idx))))
    assert _same(mapped.collate([mapped[i] for i in idx]), flat(windows.collate([windows[i] for i in idx])))
    batches = list(iterate_batches(mapped, 50))  # what the Trainer / evaluation see
    assert [b.obs.shape for b in batches] == [(50, 6, 192), (50, 6, 192), (33, 6, 192)]
