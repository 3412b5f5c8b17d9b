"""Windows for training: a torch Dataset of windows of consecutive frames, loaders, batches.

A window of ``L`` frames becomes a :class:`worldmodels.api.Batch` (float obs ``[B, T, C, H, W]`` in [0, 1],
one-hot actions, ``action[:, t]`` the action that led to ``obs[:, t]``, zero where ``is_first``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from worldmodels.api import Batch
from worldmodels.data.reader import RolloutDataset

__all__ = ["WindowDataset", "collate_batches", "iterate_batches", "make_loader"]


class WindowDataset(torch.utils.data.Dataset):
    """All windows of ``length`` consecutive frames of a :class:`RolloutDataset` (torch Dataset).

    Item ``i`` is a dict of tensors: ``obs`` uint8 ``[L, H, W, C]``, ``action`` ``[L, ...]`` (raw
    dtype; ``action[t]`` led to ``obs[t]``), ``is_first`` bool ``[L]``, ``state`` float32 ``[L, S]``
    (first of pose / state / env_obs present), ``episode`` and ``start``. :meth:`collate` turns items
    into a :class:`worldmodels.api.Batch` (float obs ``[B, T, C, H, W]`` in [0, 1], one-hot actions
    zeroed where ``is_first``).

    ``is_first[0]`` is always true (a window is where a model starts filtering) and so is the
    first frame of every episode inside a window; ``action`` is zero there.

    Args:
        dataset: a :class:`RolloutDataset` or its path.
        length: window length ``L`` in frames.
        across_episodes: ``False``: windows lie inside one episode (episodes shorter than ``L`` are
            skipped); ``True``: windows run over the concatenation of all episodes.

    Example:
        >>> import tempfile
        >>> from agents.explorers import UniformRandom
        >>> from worldmodels.data import collect
        >>> d = collect("CartPole-v1", tempfile.mkdtemp(), 2, 6, policy=UniformRandom, progress=False)
        >>> windows = WindowDataset(d, length=4)
        >>> len(windows) <= 2 * (7 - 4 + 1)
        True
        >>> windows.collate([windows[0], windows[1]]).obs.shape[:2]
        torch.Size([2, 4])
    """

    def __init__(
        self, dataset: RolloutDataset | str | os.PathLike, length: int, across_episodes: bool = False
    ) -> None:
        self.data = dataset if isinstance(dataset, RolloutDataset) else RolloutDataset(dataset)
        if not isinstance(length, (int, np.integer)) or length < 1:
            raise ValueError(f"WindowDataset: expected length >= 1, received {length!r}")
        self.length, self.across = int(length), bool(across_episodes)
        frames = self.data.lengths + 1  # [N] frames per episode
        if frames.size == 0:
            raise ValueError(f"WindowDataset: dataset {self.data.path} holds no complete shard")
        self._starts = np.concatenate([[0], np.cumsum(frames)])  # first global frame of each episode
        if self.across:
            if frames.sum() < length:
                raise ValueError(
                    f"WindowDataset: window length {length} exceeds all {int(frames.sum())} frames "
                    "of the dataset"
                )
            counts = np.array([frames.sum() - length + 1])
        else:
            if frames.max() < length:
                raise ValueError(
                    f"WindowDataset: window length {length} exceeds every episode (longest has "
                    f"{int(frames.max())} frames = steps + 1); use a shorter window or across_episodes=True"
                )
            counts = np.maximum(frames - length + 1, 0)
        self._cum = np.concatenate([[0], np.cumsum(counts)])  # [N + 1] windows before episode e
        space = self.data.action_space
        if isinstance(space, spaces.Discrete):
            self.action_dim, self._onehot = int(space.n), [int(space.n)]
        elif isinstance(space, spaces.MultiDiscrete):
            self.action_dim, self._onehot = int(space.nvec.sum()), [int(n) for n in space.nvec.reshape(-1)]
        elif isinstance(space, spaces.Box):
            self.action_dim, self._onehot = int(np.prod(space.shape)), []
        else:
            raise TypeError(
                f"WindowDataset: expected a Discrete/MultiDiscrete/Box action space, received {space}"
            )
        self._state_key = next(iter(self.data.extras), None)

    def __len__(self) -> int:
        return int(self._cum[-1])

    def index_of(self, episode: int, start: int = 0) -> int:
        """Index of the window of ``episode`` that starts at frame ``start`` (inverse of :meth:`position`)."""
        if self.across:
            i = int(self._starts[episode]) + start if 0 <= episode < len(self._starts) else -1
        else:
            n = int(self._cum[episode + 1] - self._cum[episode]) if 0 <= episode < len(self._cum) - 1 else 0
            i = int(self._cum[episode]) + start if 0 <= start < n else -1
        if not 0 <= i < len(self):
            raise IndexError(f"WindowDataset: no window of {self.length} frames starts at frame {start} of "
                             f"episode {episode} ({self.data.num_episodes} episodes, lengths "
                             f"{self.data.lengths.min()}-{self.data.lengths.max()} steps)")
        return i

    def position(self, i: int) -> tuple[int, int]:
        """``(episode, start frame)`` of window ``i`` (``across_episodes``: episode holding frame 0)."""
        if not 0 <= i < len(self):
            raise IndexError(f"window index {i} out of range for {len(self)} windows")
        if self.across:
            e = int(np.searchsorted(self._starts, i, side="right") - 1)
            return e, int(i - self._starts[e])
        e = int(np.searchsorted(self._cum, i, side="right") - 1)
        return e, int(i - self._cum[e])

    def _fill(self, i: int, out: dict[str, np.ndarray], b: int) -> None:
        """Write window ``i`` into row ``b`` of the preallocated arrays ``out``."""
        L = self.length
        e, start = self.position(i)
        out["episode"][b], out["start"][b] = e, start
        o = 0
        while o < L:
            s, r = self.data.locate(e)
            a = self.data.shard_arrays(s)
            n = int(a["length"][r]) + 1  # frames in episode e
            k = min(n - start, L - o)  # frames taken from this episode
            out["obs"][b, o : o + k] = a["obs"][r, start : start + k]
            if k > 1:  # action[t] led to obs[t]: stored action[start + j - 1] for j >= 1
                out["action"][b, o + 1 : o + k] = a["action"][r, start : start + k - 1]
            out["action"][b, o] = 0
            out["is_first"][b, o] = True
            if self._state_key is not None:
                out["state"][b, o : o + k] = a[self._state_key][r, start : start + k].reshape(k, -1)
            o, e, start = o + k, e + 1, 0

    def _alloc(self, B: int) -> dict[str, np.ndarray]:
        L = self.length
        space = self.data.action_space
        assert space.shape is not None  # Discrete, MultiDiscrete or Box (checked in __init__)
        out = {
            "obs": np.empty((B, L, *self.data.frame_shape), np.uint8),
            "action": np.empty((B, L, *space.shape), np.dtype(space.dtype)),
            "is_first": np.zeros((B, L), bool),
            "episode": np.empty(B, np.int64),
            "start": np.empty(B, np.int64),
        }
        if self._state_key is not None:
            shape = self.data.meta["arrays"][self._state_key]["shape"][1:]
            out["state"] = np.empty((B, L, int(np.prod(shape, dtype=np.int64))), np.float32)
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        out = self._alloc(1)
        self._fill(int(i), out, 0)
        return {k: torch.as_tensor(v[0]) for k, v in out.items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A whole batch at once (used by ``DataLoader``): one copy per window, no per-item stacking."""
        out = self._alloc(len(indices))
        for b, i in enumerate(indices):
            self._fill(int(i), out, b)
        return {k: torch.from_numpy(v) for k, v in out.items()}

    def collate(self, items: Sequence[dict[str, torch.Tensor]] | dict[str, torch.Tensor]) -> Batch:
        """Items (or a ``__getitems__`` batch) -> :class:`Batch` with float obs and actions."""
        if isinstance(items, dict):
            raw = items
        else:
            raw = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        obs = raw["obs"]  # uint8 [B, T, H, W(, C)]
        if obs.dim() == 4:
            obs = obs.unsqueeze(-1)
        B, T = obs.shape[:2]
        x = torch.empty((B, T, obs.shape[4], obs.shape[2], obs.shape[3]), dtype=torch.float32)
        x.copy_(obs.permute(0, 1, 4, 2, 3)).mul_(1.0 / 255.0)  # [B, T, C, H, W] in [0, 1]
        is_first = raw["is_first"]
        a = raw["action"]
        if self._onehot:
            a = a.reshape(B, T, -1).long()
            parts = [torch.nn.functional.one_hot(a[..., j], n).float() for j, n in enumerate(self._onehot)]
            action = torch.cat(parts, dim=-1)  # [B, T, A]
        else:
            action = a.reshape(B, T, -1).float()  # [B, T, A]
        action = action * (~is_first).unsqueeze(-1)
        return Batch(obs=x, action=action, is_first=is_first.clone(), state=raw.get("state"))


def make_loader(
    dataset: RolloutDataset | str | Path,
    length: int,
    batch_size: int = 32,
    *,
    across_episodes: bool = False,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    seed: int = 0,
) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` of :class:`Batch` es of random windows (seeded, batched reads).

    Example:
        >>> import tempfile
        >>> from agents.explorers import UniformRandom
        >>> from worldmodels.data import collect
        >>> d = collect("CartPole-v1", tempfile.mkdtemp(), 2, 8, policy=UniformRandom, progress=False)
        >>> batch = next(iter(make_loader(d, length=3, batch_size=4)))
        >>> batch.obs.shape[:2], batch.action.shape
        (torch.Size([4, 3]), torch.Size([4, 3, 2]))
    """
    windows = WindowDataset(dataset, length, across_episodes=across_episodes)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        windows,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=windows.collate,
        generator=generator,
        persistent_workers=num_workers > 0,
    )


# ----------------------------------------------------------------------------- batches


def collate_batches(items: list[Any]) -> Batch:
    """Stack a list of :class:`Batch` (any B) or dicts of per-window tensors into one ``Batch``.

    Dict items hold ``obs [T, ...]``, ``action [T, A]`` and optionally ``mask``, ``is_first``, ``state``.
    """
    if not items:
        raise ValueError("collate_batches: received no items")
    if isinstance(items[0], Batch):

        def cat(name: str) -> torch.Tensor | None:
            vals = [getattr(b, name) for b in items]
            return None if any(v is None for v in vals) else torch.cat(vals)

        joined = {name: cat(name) for name in ("obs", "action", "mask", "is_first", "state")}
    elif isinstance(items[0], dict):

        def stack(name: str) -> torch.Tensor | None:
            vals = [it.get(name) for it in items]
            return None if any(v is None for v in vals) else torch.stack([torch.as_tensor(v) for v in vals])

        joined = {name: stack(name) for name in ("obs", "action", "mask", "is_first", "state")}
    else:
        raise TypeError(
            f"collate_batches: expected Batch or dict items, received {type(items[0]).__name__}; "
            "pass collate_fn=..."
        )
    obs, action = joined.pop("obs"), joined.pop("action")
    if obs is None or action is None:
        raise ValueError("collate_batches: expected every item to hold 'obs' and 'action'")
    # a missing mask / is_first / state takes Batch's default
    return Batch(obs=obs, action=action, **{k: v for k, v in joined.items() if v is not None})


def _is_map_dataset(data: Any) -> bool:
    return isinstance(data, torch.utils.data.Dataset) and not isinstance(
        data, torch.utils.data.IterableDataset
    )


def _collate_of(data: Any, collate_fn: Callable | None) -> Callable:
    return (
        collate_fn or getattr(data, "collate", None) or getattr(data, "collate_fn", None) or collate_batches
    )


def iterate_batches(
    data: Any, batch_size: int = 32, collate_fn: Callable | None = None, num_workers: int = 0
) -> Iterator[Batch]:
    """Iterate ``data`` (map-style Dataset in order, or an iterable of ``Batch``) as ``Batch`` objects.

    Used by :mod:`worldmodels.evaluate` and for validation; keeps the last incomplete batch.
    """
    if _is_map_dataset(data):
        n = len(data)
        index_batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
        yield from torch.utils.data.DataLoader(
            data,
            batch_sampler=index_batches,
            collate_fn=_collate_of(data, collate_fn),
            num_workers=num_workers,
            generator=torch.Generator().manual_seed(0),
        )
    else:
        for b in data:
            if not isinstance(b, Batch):
                raise TypeError(f"expected an iterable of Batch, received an item of type {type(b).__name__}")
            yield b
