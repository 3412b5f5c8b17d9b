"""Predictions without a model, to put beside every model's number: what a model must beat.

All take the context (memorised) frames ``obs [B, τ, ...]`` and give ``H`` predicted frames ``[B, H, ...]``:

- :func:`mean_frame`: the mean context frame at every step (``no_memory`` in the GTM-SM results);
- :func:`copy_last`: the last context frame at every step;
- :func:`memory_copy`: where the true position of a predicted step was visited in the context, the frame
  memorised there (the last visit); elsewhere the fallback (default: the mean frame). A perfect lookup
  without spatial generalisation: a reference for models with a spatial memory, which needs true poses.

Example:
    >>> obs = torch.arange(3.0).reshape(1, 3, 1)          # [B=1, τ=3, 1]: frames 0, 1, 2
    >>> mean_frame(obs, 2).flatten().tolist(), copy_last(obs, 2).flatten().tolist()
    ([1.0, 1.0], [2.0, 2.0])
    >>> pose_mem = torch.tensor([[[0], [1], [0]]])         # positions of the context frames
    >>> pred, visited = memory_copy(obs, pose_mem, torch.tensor([[[0], [5]]]))
    >>> pred.flatten().tolist(), visited.tolist()           # position 0: last visit (frame 2); 5: mean
    ([2.0, 1.0], [[True, False]])
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mean_frame", "copy_last", "memory_lookup", "memory_copy"]


def _context(obs: Tensor, horizon: int, who: str) -> None:
    if obs.dim() < 2 or obs.shape[1] < 1:
        raise ValueError(f"{who}: expected context frames [B, τ >= 1, ...], received {tuple(obs.shape)}")
    if horizon < 1:
        raise ValueError(f"{who}: expected a horizon >= 1, received {horizon}")


def mean_frame(obs: Tensor, horizon: int) -> Tensor:
    """The mean of the context frames ``obs [B, τ, ...]``, repeated ``horizon`` times: ``[B, horizon, ...]``."""
    _context(obs, horizon, "mean_frame")
    m = obs.mean(1, keepdim=True)
    return m.expand(m.shape[0], horizon, *m.shape[2:])


def copy_last(obs: Tensor, horizon: int) -> Tensor:
    """The last context frame ``obs[:, -1]``, repeated ``horizon`` times: ``[B, horizon, ...]``."""
    _context(obs, horizon, "copy_last")
    last = obs[:, -1:]
    return last.expand(last.shape[0], horizon, *last.shape[2:])


def memory_lookup(obs_mem: Tensor, pose_mem: Tensor, pose: Tensor) -> tuple[Tensor, Tensor]:
    """The last memorised frame at each query's true position, and whether that position was memorised.

    Args:
        obs_mem: memorised frames ``[B, τ, ...]``; pose_mem: their true positions ``[B, τ, P]`` (compared
            exactly: grid positions); pose: true positions of the queries ``[B, Q, P]``.

    Returns:
        ``frames [B, Q, ...]`` (the first memorised frame where not visited) and ``visited [B, Q]`` bool.
    """
    if pose_mem.shape[:2] != obs_mem.shape[:2] or pose.dim() != 3 or pose.shape[::2] != pose_mem.shape[::2]:
        raise ValueError(f"memory_lookup: expected obs_mem [B, τ, ...], pose_mem [B, τ, P], pose [B, Q, P], "
                         f"received {tuple(obs_mem.shape)}, {tuple(pose_mem.shape)}, {tuple(pose.shape)}")
    same = (pose[:, :, None] == pose_mem[:, None]).all(-1)  # [B, Q, τ]
    last = (same.long() * torch.arange(1, pose_mem.shape[1] + 1, device=same.device)).argmax(-1)  # [B, Q]
    return obs_mem[torch.arange(obs_mem.shape[0], device=same.device)[:, None], last], same.any(-1)


def memory_copy(obs_mem: Tensor, pose_mem: Tensor, pose: Tensor,
                fallback: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """:func:`memory_lookup` where the position was visited, ``fallback [B, Q, ...]`` (default: the mean
    context frame) elsewhere: ``(frames [B, Q, ...], visited [B, Q])``."""
    seen, visited = memory_lookup(obs_mem, pose_mem, pose)
    if fallback is None:
        fallback = mean_frame(obs_mem, pose.shape[1])
    v = visited.reshape(*visited.shape, *([1] * (seen.dim() - 2)))
    return torch.where(v, seen, fallback), visited
