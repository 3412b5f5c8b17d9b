"""Reading a dataset folder written by :func:`worldmodels.data.collect`: verified, memory-mapped episodes.

Episodes come at their own length, ``obs[:length + 1]``, from datasets of either format
(:mod:`worldmodels.data.format`: format 2 stores them so, format 1 padded them with zeros on disk);
:meth:`RolloutDataset.padded` gives all episodes in one zero-padded array.
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
    _time_axis,
    packed_offsets,
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
        self.format_version = version
        # where episode e lies in packed_arrays(shard): shard, first frame, first step, each [N]
        self._shard_of = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        steps = int(meta["steps"])
        offsets = [
            (np.arange(len(sh["lengths"])) * (steps + 1), np.arange(len(sh["lengths"])) * steps)
            if version == 1
            else packed_offsets(np.asarray(sh["lengths"], dtype=np.int64))
            for sh in self.shard_info
        ]
        self._frame0 = np.concatenate([f for f, _ in offsets] or [np.zeros(0)]).astype(np.int64)
        self._step0 = np.concatenate([a for _, a in offsets] or [np.zeros(0)]).astype(np.int64)
        self._arrays: dict[int, dict[str, np.ndarray]] = {}
        self._packed: dict[int, dict[str, np.ndarray]] = {}
        self._errors: dict[int, CorruptShardError] = {}
        self.action_space = space_from_json(meta["action_space"])
        self.observation_space = space_from_json(meta["observation_space"])
        if verify == "open":
            self.verify()

    # --- state for DataLoader workers: never pickle memory maps
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"], state["_packed"] = {}, {}
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

    def _check_shapes(self, s: int, arrays: dict[str, np.ndarray]) -> None:
        """The stored shapes that the lengths and ``meta["arrays"]`` imply (the files may pass their checksums
        with ``verify="none"`` and still not fit)."""
        lengths = np.asarray(self.shard_info[s]["lengths"], dtype=np.int64)
        for key, a in arrays.items():
            per_episode = tuple(self.meta["arrays"][key]["shape"]) if key in self.meta["arrays"] else a.shape[1:]
            axis = _time_axis(key)
            if self.format_version == 1 or axis == "episode":
                want = (len(lengths), *per_episode)
            else:
                want = (int(lengths.sum() + (len(lengths) if axis == "frame" else 0)), *per_episode[1:])
            if a.shape != want:
                raise CorruptShardError(
                    f"shard {self.shard_names[s]}: {key}.npy has shape {a.shape}, expected {want} "
                    f"(format {self.format_version}, lengths {lengths.tolist()})"
                )

    def shard_arrays(self, s: int) -> dict[str, np.ndarray]:
        """Memory-mapped arrays of shard ``s`` as stored (checked on first access): format 2 packs the
        episodes end to end along time (:mod:`worldmodels.data.format`), format 1 pads each to ``steps``;
        :meth:`packed_arrays` views both alike."""
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
                self._check_shapes(s, arrays)
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

    def packed_arrays(self, s: int) -> dict[str, np.ndarray]:
        """Shard ``s``'s arrays with time flattened (plain ndarray views of the memory maps, no copy): frame
        arrays (``obs``, ground truth) ``[F, ...]``, ``action`` / ``reward`` ``[A, ...]``, per-episode arrays
        ``[E]``. Episode ``index`` of the shard lies at :meth:`locate_frames` ``(index)``; in format 1
        datasets the padding lies between the episodes."""
        if s not in self._packed:
            self._packed[s] = {
                k: np.asarray(a) if self.format_version != 1 or _time_axis(k) == "episode"
                else np.asarray(a).reshape(-1, *a.shape[2:])
                for k, a in self.shard_arrays(s).items()
            }
        return self._packed[s]

    def locate_frames(self, index: int) -> tuple[int, int, int]:
        """``(shard, first frame, first step)`` of episode ``index`` in :meth:`packed_arrays` ``(shard)``: its
        frames are ``[first frame, first frame + length + 1)``, its actions ``[first step, first step + length)``.

        Example:
            >>> import tempfile
            >>> from agents.explorers import UniformRandom
            >>> from worldmodels.data import collect
            >>> data = RolloutDataset(collect("BouncingBall-v0", tempfile.mkdtemp(), 3, 30, policy=UniformRandom,
            ...                                progress=False))  # its time limit ends every episode at 20 steps
            >>> data.lengths.tolist(), data.locate_frames(2)
            ([20, 20, 20], (0, 42, 40))
        """
        if not -self.num_episodes <= index < self.num_episodes:
            raise IndexError(f"episode index {index} out of range for {self.num_episodes} episodes")
        index %= self.num_episodes
        return int(self._shard_of[index]), int(self._frame0[index]), int(self._step0[index])

    def episode(self, index: int) -> Episode:
        """Episode ``index``, trimmed to its length."""
        s, f0, a0 = self.locate_frames(index)
        a = self.packed_arrays(s)
        index %= self.num_episodes
        r = int(index - self._offsets[s])
        n = int(self.lengths[index])
        return Episode(
            index=int(index),
            obs=a["obs"][f0 : f0 + n + 1],
            action=a["action"][a0 : a0 + n],
            reward=a["reward"][a0 : a0 + n],
            terminated=bool(a["terminated"][r]),
            truncated=bool(a["truncated"][r]),
            env_seed=int(a["env_seed"][r]),
            extras={k: a[k][f0 : f0 + n + 1] for k in self.extras},
        )

    def padded(self, key: str) -> np.ndarray:
        """Array ``key`` of every episode in one in-memory array, zero after each episode's end: frame arrays
        (``obs``, ground truth) ``[N, steps + 1, ...]``, ``action`` / ``reward`` ``[N, steps, ...]``, per-episode
        arrays ``[N]``; :attr:`lengths` say where each episode ends. (Format 1 stored shards so.)

        Example:
            >>> import tempfile
            >>> from agents.explorers import UniformRandom
            >>> from worldmodels.data import collect
            >>> data = RolloutDataset(collect("BouncingBall-v0", tempfile.mkdtemp(), 2, 25, policy=UniformRandom,
            ...                                progress=False))
            >>> obs = data.padded("obs")
            >>> obs.shape, bool(obs[:, 21:].any()), data.padded("length").tolist()
            ((2, 26, 32, 32, 1), False, [20, 20])
        """
        if key not in self.meta["arrays"]:
            raise KeyError(f"RolloutDataset.padded: expected one of {sorted(self.meta['arrays'])}, received {key!r}")
        spec = self.meta["arrays"][key]
        out = np.zeros((self.num_episodes, *spec["shape"]), dtype=np.dtype(spec["dtype"]))
        axis = _time_axis(key)
        for e in range(self.num_episodes):
            s, f0, a0 = self.locate_frames(e)
            a = self.packed_arrays(s)[key]
            if axis == "episode":
                out[e] = a[e - int(self._offsets[s])]
            else:
                n = int(self.lengths[e]) + (1 if axis == "frame" else 0)
                first = f0 if axis == "frame" else a0
                out[e, :n] = a[first : first + n]
        return out

    __getitem__ = episode

    def summary(self) -> str:
        """A few human-readable lines describing the dataset."""
        m = self.meta
        size = sum(f["bytes"] for s in self.shard_info for f in s["files"].values())
        lengths = self.lengths
        kw = json.dumps(m["env_kwargs"]) if m["env_kwargs"] else ""
        kind = m.get("env_source", {}).get("kind", "id")
        pol = m["policy"]
        extras = ", ".join(f"{k} {tuple(m['arrays'][k]['shape'][1:])}" for k in self.extras) or "none"
        obs = m["observation"]
        resized = f", area-resized from {tuple(obs['env_shape'])}" if "env_shape" in obs else ""
        ended = int((lengths < int(m["steps"])).sum())
        lines = [
            f"dataset {self.path} (format {m['format_version']}, seed {m['seed']})",
            f"  env      {m['env_id']}{'' if kind == 'id' else f' ({kind})'} {kw}".rstrip(),
            f"  policy   {pol['name']} {json.dumps(pol['kwargs'])}",
            f"  episodes {self.num_episodes}/{m['episodes']} in "
            f"{len(self.shard_names)}/{m['num_shard_files']} shards"
            + ("" if self.complete else "  (INCOMPLETE: resume the collection)"),
            f"  steps    {m['steps']} per episode; lengths min/mean/max "
            + (f"{lengths.min()}/{lengths.mean():.1f}/{lengths.max()}" if lengths.size else "-/-/-")
            + f"; {int(lengths.sum()) + lengths.size} frames",
        ]
        if ended:
            lines.append(
                f"  ended    {ended} of {self.num_episodes} episodes before {m['steps']} steps (the env "
                "terminated or truncated them); each is stored at its own length"
            )
        lines += [
            f"  obs      uint8 {tuple(self.frame_shape)} from {obs['source']}{resized}",
            f"  action   {self.action_space}",
            f"  truth    {extras}",
            f"  size     {size / 2**20:.1f} MiB",
        ]
        return "\n".join(lines)
