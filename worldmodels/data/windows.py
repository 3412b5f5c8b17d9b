"""Windows for training: a torch Dataset of windows of consecutive frames, loaders, batches from episode starts.

A window of ``L`` frames becomes a :class:`worldmodels.api.Batch` (float obs ``[B, T, C, H, W]`` in [0, 1],
one-hot actions, ``action[:, t]`` the action that led to ``obs[:, t]``, zero where ``is_first``; ``reward[:, t]``
the reward of that same step, zero where ``is_first``; ``terminated[:, t]`` true where ``obs[:, t]`` ends its
episode by termination).
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

__all__ = [
    "EpisodeStartWindows",
    "MappedWindows",
    "WindowDataset",
    "collate_batches",
    "iterate_batches",
    "make_loader",
]


class WindowDataset(torch.utils.data.Dataset):
    """All windows of ``length`` consecutive frames of a :class:`RolloutDataset` (torch Dataset).

    Item ``i`` is a dict of tensors: ``obs`` uint8 ``[L, H, W, C]``, ``action`` ``[L, ...]`` (raw
    dtype; ``action[t]`` led to ``obs[t]``), ``reward`` float32 ``[L]`` (``reward[t]``: the env's reward
    of the step ``action[t]`` led to ``obs[t]``, i.e. the stored ``reward[start + t - 1]``),
    ``terminated`` bool ``[L]`` (``obs[t]`` is the last frame of an episode that terminated; a
    truncated or cut episode has none), ``is_first`` bool ``[L]``, ``state`` float32 ``[L, S]`` (first
    of pose / state / env_obs present), ``episode`` and ``start``. :meth:`collate` turns items into a
    :class:`worldmodels.api.Batch` (float obs ``[B, T, C, H, W]`` in [0, 1], one-hot actions zeroed
    where ``is_first``, ``reward`` and ``terminated`` as stored).

    ``is_first[0]`` is always true (a window is where a model starts filtering) and so is the
    first frame of every episode inside a window; ``action`` and ``reward`` are zero there (no step
    of the window led to that frame).

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

    def episode_starts(self) -> np.ndarray:
        """Window indices int64 ``[n]``, in episode order, of the window that starts at frame 0 of each
        episode that has one: every episode of at least ``length`` frames (``across_episodes``: every
        episode with at least ``length`` frames from its first frame to the end of the dataset).

        Example:
            >>> import tempfile
            >>> from agents.explorers import UniformRandom
            >>> from worldmodels.data import collect
            >>> d = collect("ImageNav-v0", tempfile.mkdtemp(), 3, 5, policy=UniformRandom, progress=False)
            >>> windows = WindowDataset(d, length=4)  # 6 frames per episode: 3 windows each
            >>> windows.episode_starts().tolist(), windows.position(3)
            ([0, 3, 6], (1, 0))
        """
        if self.across:
            firsts = self._starts[:-1]  # [N] first global frame of each episode
            return firsts[firsts < len(self)].astype(np.int64)
        return self._cum[:-1][np.diff(self._cum) > 0].astype(np.int64)

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
            s, f0, a0 = self.data.locate_frames(e)
            a = self.data.packed_arrays(s)  # episodes end to end along time
            n = int(self.data.lengths[e]) + 1  # frames in episode e
            k = min(n - start, L - o)  # frames taken from this episode
            f, t = f0 + start, a0 + start
            out["obs"][b, o : o + k] = a["obs"][f : f + k]
            if k > 1:  # action[t] led to obs[t]: stored action[start + j - 1] for j >= 1 (reward alike)
                out["action"][b, o + 1 : o + k] = a["action"][t : t + k - 1]
                out["reward"][b, o + 1 : o + k] = a["reward"][t : t + k - 1]
            out["action"][b, o] = 0
            out["reward"][b, o] = 0
            out["is_first"][b, o] = True
            out["terminated"][b, o : o + k] = False
            if start + k == n and a["terminated"][self.data.locate(e)[1]]:  # the episode's terminal frame
                out["terminated"][b, o + k - 1] = True
            if self._state_key is not None:
                out["state"][b, o : o + k] = a[self._state_key][f : f + k].reshape(k, -1)
            o, e, start = o + k, e + 1, 0

    def _alloc(self, B: int) -> dict[str, np.ndarray]:
        L = self.length
        space = self.data.action_space
        assert space.shape is not None  # Discrete, MultiDiscrete or Box (checked in __init__)
        out = {
            "obs": np.empty((B, L, *self.data.frame_shape), np.uint8),
            "action": np.empty((B, L, *space.shape), np.dtype(space.dtype)),
            "reward": np.empty((B, L), np.float32),
            "terminated": np.zeros((B, L), bool),
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
        reward, terminated = raw.get("reward"), raw.get("terminated")
        return Batch(
            obs=x, action=action, is_first=is_first.clone(), state=raw.get("state"),
            reward=None if reward is None else reward.float(),
            terminated=None if terminated is None else terminated.clone(),
        )


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


# ----------------------------------------------------------------------------- windows from episode starts


class EpisodeStartWindows:
    """Re-iterable of :class:`Batch`: windows that start at frame 0 of random episodes, lengths by a curriculum.

    Batch ``i`` holds ``batch_size`` windows of :meth:`length_at` ``(i)`` frames, from frame 0 of the episodes
    ``np.random.default_rng([seed, i]).integers(0, n, batch_size)`` (uniform, with replacement) among the ``n``
    episodes that have that many frames, in episode order (:meth:`WindowDataset.episode_starts`). So batch
    ``i`` depends only on ``(seed, i)``: iterating again gives the same batches, and the Trainer's resume
    (which skips the batches already consumed) restores the data position exactly.

    Episodes shorter than a stage's window length are skipped in that stage, as :class:`WindowDataset` skips
    them (with episodes of equal length, draw ``e`` is episode ``e``); a stage longer than every episode
    raises ``ValueError``.

    Args:
        dataset: a :class:`RolloutDataset` or its path.
        plan: the curriculum ``[(length, n_batches), ...]``: ``n_batches`` batches of windows of ``length``
            frames, stage after stage. Iteration yields the ``sum(n_batches)`` batches of the plan;
            :meth:`batch` and :meth:`length_at` after the plan keep the last stage's length.
        batch_size: windows per batch.
        seed: seed of the episode draws.

    Example:
        >>> import tempfile
        >>> from agents.explorers import UniformRandom
        >>> from worldmodels.data import collect
        >>> d = collect("ImageNav-v0", tempfile.mkdtemp(), 4, 7, policy=UniformRandom, progress=False)
        >>> batches = EpisodeStartWindows(d, plan=[(3, 2), (8, 1)], batch_size=5, seed=0)
        >>> [tuple(b.obs.shape[:2]) for b in batches], len(batches), batches.length_at(10)
        ([(5, 3), (5, 3), (5, 8)], 3, 8)
        >>> b = batches.batch(1)  # the same batch as the second one iterated
        >>> bool(b.is_first[:, 0].all()), bool(b.is_first[:, 1:].any())
        (True, False)
    """

    def __init__(
        self, dataset: RolloutDataset | str | os.PathLike, plan: Sequence[tuple[int, int]], batch_size: int,
        seed: int = 0,
    ) -> None:
        self.data = dataset if isinstance(dataset, RolloutDataset) else RolloutDataset(dataset)
        self.plan = _curriculum(plan)
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"EpisodeStartWindows: expected batch_size >= 1, received {batch_size!r}")
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.windows = {length: WindowDataset(self.data, length) for length, _ in self.plan}
        self.starts = {length: w.episode_starts() for length, w in self.windows.items()}  # length -> [n]

    def __len__(self) -> int:
        return sum(n for _, n in self.plan)

    def length_at(self, i: int) -> int:
        """Window length of batch ``i``."""
        return self.length_of(self.plan, i)

    @staticmethod
    def length_of(plan: Sequence[tuple[int, int]], i: int) -> int:
        """Window length of batch ``i`` under ``plan`` (the last stage's after the plan ends).

        Example:
            >>> [EpisodeStartWindows.length_of([(8, 2), (16, 1)], i) for i in range(5)]
            [8, 8, 16, 16, 16]
        """
        for length, n in plan:
            if i < n:
                return length
            i -= n
        return plan[-1][0]

    def batch(self, i: int) -> Batch:
        """Batch ``i`` (any ``i >= 0``), read directly."""
        if not isinstance(i, (int, np.integer)) or i < 0:
            raise IndexError(f"EpisodeStartWindows: expected a batch index >= 0, received {i!r}")
        length = self.length_at(int(i))
        w, starts = self.windows[length], self.starts[length]
        draws = np.random.default_rng([self.seed, int(i)]).integers(0, len(starts), self.batch_size)  # [B]
        return w.collate(w.__getitems__(starts[draws].tolist()))

    def __iter__(self) -> Iterator[Batch]:
        for i in range(len(self)):
            yield self.batch(i)


def _curriculum(plan: Any) -> list[tuple[int, int]]:
    """``plan`` as a list of ``(length >= 1, n_batches >= 0)`` int pairs; anything else raises."""
    def is_int(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    stages = list(plan) if isinstance(plan, Sequence) and not isinstance(plan, str) else []
    if not stages or not all(
        isinstance(s, Sequence) and len(s) == 2 and is_int(s[0]) and is_int(s[1]) and s[0] >= 1 and s[1] >= 0
        for s in stages
    ):
        raise ValueError(
            f"EpisodeStartWindows: expected plan [(length >= 1, n_batches >= 0), ...], received {plan!r}"
        )
    return [(int(length), int(n)) for length, n in stages]


class MappedWindows(torch.utils.data.Dataset):
    """The windows of a :class:`WindowDataset` whose collated :class:`Batch` goes through ``fn``.

    A map-style dataset like ``data`` (same length, items and ``__getitems__``); :meth:`collate` is
    ``fn(data.collate(items))``, so the Trainer and :func:`iterate_batches` train on the mapped batches.

    Example:
        >>> import dataclasses, tempfile
        >>> from agents.explorers import UniformRandom
        >>> from worldmodels.data import collect
        >>> d = collect("ImageNav-v0", tempfile.mkdtemp(), 2, 5, policy=UniformRandom, progress=False)
        >>> flat = MappedWindows(WindowDataset(d, 4), lambda b: dataclasses.replace(b, obs=b.obs.flatten(2)))
        >>> len(flat), flat.collate(flat.__getitems__([0, 1])).obs.shape  # 8x8 RGB frames as vectors
        (6, torch.Size([2, 4, 192]))
    """

    def __init__(self, data: WindowDataset, fn: Callable[[Batch], Batch]) -> None:
        self.data, self.fn = data, fn

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.data[i]

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        return self.data.__getitems__(indices)

    def collate(self, items: Sequence[dict[str, torch.Tensor]] | dict[str, torch.Tensor]) -> Batch:
        """``fn`` of :meth:`WindowDataset.collate`."""
        return self.fn(self.data.collate(items))


# ----------------------------------------------------------------------------- batches


_BATCH_FIELDS = ("obs", "action", "mask", "is_first", "state", "reward", "terminated")


def collate_batches(items: list[Any]) -> Batch:
    """Stack a list of :class:`Batch` (any B) or dicts of per-window tensors into one ``Batch``.

    Dict items hold ``obs [T, ...]``, ``action [T, A]`` and optionally ``mask``, ``is_first``, ``state``,
    ``reward``, ``terminated``.
    """
    if not items:
        raise ValueError("collate_batches: received no items")
    if isinstance(items[0], Batch):

        def cat(name: str) -> torch.Tensor | None:
            vals = [getattr(b, name) for b in items]
            return None if any(v is None for v in vals) else torch.cat(vals)

        joined = {name: cat(name) for name in _BATCH_FIELDS}
    elif isinstance(items[0], dict):

        def stack(name: str) -> torch.Tensor | None:
            vals = [it.get(name) for it in items]
            return None if any(v is None for v in vals) else torch.stack([torch.as_tensor(v) for v in vals])

        joined = {name: stack(name) for name in _BATCH_FIELDS}
    else:
        raise TypeError(
            f"collate_batches: expected Batch or dict items, received {type(items[0]).__name__}; "
            "pass collate_fn=..."
        )
    obs, action = joined.pop("obs"), joined.pop("action")
    if obs is None or action is None:
        raise ValueError("collate_batches: expected every item to hold 'obs' and 'action'")
    # a missing mask / is_first / state / reward / terminated takes Batch's default
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
