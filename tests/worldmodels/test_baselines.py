"""Model-free baselines against explicit loops over the batch."""

from __future__ import annotations

import pytest
import torch

from worldmodels.baselines import copy_last, mean_frame, memory_copy, memory_lookup


def test_mean_frame_and_copy_last() -> None:
    obs = torch.rand(3, 5, 1, 4, 4)
    assert torch.equal(mean_frame(obs, 7)[:, 6], obs.mean(1))
    assert mean_frame(obs, 7).shape == (3, 7, 1, 4, 4)
    assert torch.equal(copy_last(obs, 2), torch.stack([obs[:, -1]] * 2, 1))
    with pytest.raises(ValueError, match="horizon >= 1, received 0"):
        mean_frame(obs, 0)


def test_memory_copy_takes_the_last_visit_and_falls_back_elsewhere() -> None:
    g = torch.Generator().manual_seed(0)
    B, tau, Q = 4, 12, 9
    obs = torch.rand(B, tau, 3, 2, 2, generator=g)
    pose_mem = torch.randint(0, 3, (B, tau, 2), generator=g)
    pose = torch.randint(0, 4, (B, Q, 2), generator=g)  # some positions (coordinate 3) never visited
    pred, visited = memory_copy(obs, pose_mem, pose)
    for b in range(B):
        for q in range(Q):
            hits = [t for t in range(tau) if torch.equal(pose_mem[b, t], pose[b, q])]
            assert bool(visited[b, q]) == bool(hits)
            want = obs[b, hits[-1]] if hits else obs[b].mean(0)
            assert torch.allclose(pred[b, q], want)
    assert not visited.all() and visited.any()
    frames, _ = memory_lookup(obs, pose_mem, pose)
    assert frames.shape == (B, Q, 3, 2, 2)
    with pytest.raises(ValueError, match="memory_lookup: expected"):
        memory_lookup(obs, pose_mem[:, :3], pose)
