"""Reading a dataset folder written by :func:`worldmodels.data.collect`: verified, memory-mapped episodes.

Episodes are trimmed to their length: readers only ever expose ``obs[:length + 1]`` (the frames after an
early end are zero padding on disk, :mod:`worldmodels.data.format`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.data.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    CorruptShardError,
    _read_json,
    _sha256_file,
    space_from_json,
)

__all__ = ["Episode", "RolloutDataset"]


@dataclass
class Episode:
    """One episode, arrays trimmed to its length (memory-mapped views; copy to modify).

    Attributes:
        obs: uint8 ``[length + 1, H, W(, C)]``.
        action: ``[length, *action_shape]``; ``action[t]`` taken at ``obs[t]``, led to ``obs[t + 1]``.
        reward: ``[length]``.
        terminated, truncated: how the episode ended (both False: cut at ``steps``).
        extras: ground truth ``[length + 1, ...]`` (``pose``, ``state``, ``env_obs``) when stored.
    """

    index: int
    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    terminated: bool
    truncated: bool
    env_seed: int
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.action.shape[0])


class RolloutDataset:
    """Read a dataset folder written by :func:`collect`.

    Shards are checked against ``meta.json`` when first touched (``verify="lazy"``), all at once
    (``"open"``: raises on the first bad shard) or never (``"none"``). A corrupt or truncated shard
    raises :class:`CorruptShardError` naming it whenever it is accessed; other shards stay readable.
    Only complete shards are exposed; episodes are numbered over them in order.

    Args:
        path: the dataset folder.
        verify: ``"lazy"`` | ``"open"`` | ``"none"``.

    Example:
        >>> import tempfile
        >>> from agents.explorers import UniformRandom
        >>> from worldmodels.data import collect
        >>> data = RolloutDataset(collect("CartPole-v1", tempfile.mkdtemp(), 2, 3, policy=UniformRandom,
        ...                                progress=False))
        >>> data.num_episodes, data[1].action.shape, data.action_space
        (2, (3,), Discrete(2))
    """

    def __init__(self, path: str | os.PathLike, verify: str = "lazy") -> None:
        if verify not in ("lazy", "open", "none"):
            raise ValueError(f"RolloutDataset: expected verify in 'lazy'|'open'|'none', received {verify!r}")
        self.path = Path(path)
        if not (self.path / "meta.json").exists():
            raise FileNotFoundError(f"{self.path}: expected a dataset folder with meta.json, none found")
        meta = _read_json(self.path / "meta.json")
        if meta.get("format") != FORMAT_NAME:
            raise ValueError(
                f"{self.path}/meta.json: expected format {FORMAT_NAME!r}, received {meta.get('format')!r}"
            )
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{self.path}: dataset format version {version!r} is newer than this reader's "
                f"{FORMAT_VERSION}; upgrade worldmodels"
            )
        shards = dict(meta.get("shards", {}))
        for d in sorted(self.path.glob("shard-*")):  # written by another machine after the last merge
            if d.name not in shards and (d / "shard.json").exists():
                shards[d.name] = _read_json(d / "shard.json")
        self.meta = meta
        self.verify_mode = verify
        self.shard_names = sorted(shards)
        self.shard_info = [shards[n] for n in self.shard_names]
        counts = np.array([s["episodes"] for s in self.shard_info], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])  # [S + 1]
        self.lengths = np.array([n for s in self.shard_info for n in s["lengths"]], dtype=np.int64)  # [N]
        self._arrays: dict[int, dict[str, np.ndarray]] = {}
        self._errors: dict[int, CorruptShardError] = {}
        self.action_space = space_from_json(meta["action_space"])
        self.observation_space = space_from_json(meta["observation_space"])
        if verify == "open":
            self.verify()

    # --- state for DataLoader workers: never pickle memory maps
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state

    @property
    def num_episodes(self) -> int:
        return int(self._offsets[-1])

    def __len__(self) -> int:
        return self.num_episodes

    @property
    def complete(self) -> bool:
        """All ``meta["episodes"]`` episodes are present."""
        return self.num_episodes == int(self.meta["episodes"])

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["observation"]["shape"])

    @property
    def extras(self) -> list[str]:
        """Ground-truth arrays stored beside ``obs`` (``pose``, ``state``, ``env_obs``)."""
        return list(self.meta.get("ground_truth", []))

    def locate(self, index: int) -> tuple[int, int]:
        """``(shard, row)`` of episode ``index``."""
        if not -self.num_episodes <= index < self.num_episodes:
            raise IndexError(f"episode index {index} out of range for {self.num_episodes} episodes")
        index %= self.num_episodes
        s = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return s, int(index - self._offsets[s])

    def _check_shard(self, s: int) -> None:
        name, info = self.shard_names[s], self.shard_info[s]
        for key, f in sorted(info["files"].items()):
            p = self.path / name / f"{key}.npy"
            if not p.exists():
                raise CorruptShardError(f"shard {name}: file {key}.npy is missing")
            size = p.stat().st_size
            if size != f["bytes"]:
                raise CorruptShardError(
                    f"shard {name}: {key}.npy has {size} bytes, expected {f['bytes']} (truncated?)"
                )
            if self.verify_mode != "none" and _sha256_file(p) != f["sha256"]:
                raise CorruptShardError(
                    f"shard {name}: {key}.npy does not match its sha256 checksum (corrupt)"
                )

    def shard_arrays(self, s: int) -> dict[str, np.ndarray]:
        """Memory-mapped arrays of shard ``s`` (checked on first access)."""
        if s in self._errors:
            raise self._errors[s]
        if s not in self._arrays:
            try:
                self._check_shard(s)
                arrays = {
                    k: np.load(
                        self.path / self.shard_names[s] / f"{k}.npy", mmap_mode="r", allow_pickle=False
                    )
                    for k in self.shard_info[s]["files"]
                }
            except CorruptShardError as e:
                self._errors[s] = e
                raise
            except ValueError as e:  # np.load on a damaged header
                self._errors[s] = CorruptShardError(f"shard {self.shard_names[s]}: unreadable ({e})")
                raise self._errors[s] from e
            self._arrays[s] = arrays
        return self._arrays[s]

    def verify(self) -> None:
        """Check every shard now; raise :class:`CorruptShardError` listing all bad shards."""
        bad = []
        for s in range(len(self.shard_names)):
            try:
                self.shard_arrays(s)
            except CorruptShardError as e:
                bad.append(str(e))
        if bad:
            raise CorruptShardError(f"{self.path}: {len(bad)} bad shard(s):\n  " + "\n  ".join(bad))

    def episode(self, index: int) -> Episode:
        """Episode ``index``, trimmed to its length."""
        s, r = self.locate(index)
        a = self.shard_arrays(s)
        n = int(a["length"][r])
        return Episode(
            index=int(self._offsets[s] + r),
            obs=a["obs"][r, : n + 1],
            action=a["action"][r, :n],
            reward=a["reward"][r, :n],
            terminated=bool(a["terminated"][r]),
            truncated=bool(a["truncated"][r]),
            env_seed=int(a["env_seed"][r]),
            extras={k: a[k][r, : n + 1] for k in self.extras},
        )

    __getitem__ = episode

    def summary(self) -> str:
        """A few human-readable lines describing the dataset."""
        m = self.meta
        size = sum(f["bytes"] for s in self.shard_info for f in s["files"].values())
        lengths = self.lengths
        kw = json.dumps(m["env_kwargs"]) if m["env_kwargs"] else ""
        pol = m["policy"]
        extras = ", ".join(f"{k} {tuple(m['arrays'][k]['shape'][1:])}" for k in self.extras) or "none"
        lines = [
            f"dataset {self.path} (format {m['format_version']}, seed {m['seed']})",
            f"  env      {m['env_id']} {kw}".rstrip(),
            f"  policy   {pol['name']} {json.dumps(pol['kwargs'])}",
            f"  episodes {self.num_episodes}/{m['episodes']} in "
            f"{len(self.shard_names)}/{m['num_shard_files']} shards"
            + ("" if self.complete else "  (INCOMPLETE: resume the collection)"),
            f"  steps    {m['steps']} per episode; lengths min/mean/max "
            + (f"{lengths.min()}/{lengths.mean():.1f}/{lengths.max()}" if lengths.size else "-/-/-")
            + f"; {int(lengths.sum()) + lengths.size} frames",
            f"  obs      uint8 {tuple(self.frame_shape)} from {m['observation']['source']}",
            f"  action   {self.action_space}",
            f"  truth    {extras}",
            f"  size     {size / 2**20:.1f} MiB",
        ]
        return "\n".join(lines)
