"""Rollout datasets: collection from vector envs, atomic shards, a verifying reader, window sampling.

DESIGN §2. A rollout step: ``obs[t]`` is seen, ``action[t]`` is taken, ``obs[t + 1]`` results; an
episode of ``steps`` actions stores ``steps + 1`` frames.

Dataset layout (``FORMAT_VERSION = 1``)::

    out_dir/
      meta.json              env id + kwargs, spaces (JSON), policy, seeds, versions, per-shard checksums
      shard-000000/          written as .shard-000000.tmp-<host>-<pid>/, then os.replace'd (the commit point)
        obs.npy              uint8 [E, steps + 1, H, W(, C)]  channels-last as Gymnasium gives it
        action.npy           [E, steps, *action_shape]         the space's dtype (Discrete: int64)
        reward.npy           [E, steps]
        terminated.npy       bool [E]   the episode ended by termination at its last step
        truncated.npy        bool [E]   the env truncated it (not our fixed-length cut)
        length.npy           int64 [E]  actions actually taken (< steps after an early end)
        env_seed.npy         int64 [E]  the seed given to ``env.reset`` for this episode
        pose.npy / state.npy [E, steps + 1, ...]  ground truth from ``info`` when the env has it
        env_obs.npy          [E, steps + 1, D]  the env's own (non-image) observation when frames
                                                come from ``render()``
        shard.json           the same checksums as meta.json (lets writers on other machines merge)

Frames and actions after an early termination are zero padding (``length`` says where the episode
ended); readers only ever expose ``obs[:length + 1]``.

Determinism. Episode ``i`` is reset with seeds drawn from ``numpy.random.SeedSequence([seed, i])``
(env seed, policy seed), so the content of a dataset depends neither on ``num_envs`` nor on
interruptions, and ``shard_index / num_shards`` split the shard grid across machines writing into
one folder (shard ``s`` belongs to writer ``s % num_shards``). ``meta.json`` holds no timestamps:
a killed and resumed collection is bit-identical to an uninterrupted one.

Format choice (measured, ``/tmp`` benchmark on this 2-core machine while other jobs ran): 4 shards x
16 episodes x 129 frames of 64x64x3 uint8 (101 MB), random windows of L = 32 gathered into batches
of 64. Memory-mapped ``.npy`` read 40,800-51,600 windows/s, the same as the in-RAM array
(40,300-53,900); HDF5 (h5py 3.16, uncompressed) read 27,300 (contiguous), 14,100 (chunk = 8
frames) and 8,700-11,000 windows/s (chunk = 1 episode) -- 0.2-0.65x of ``.npy``, because every
h5py slice pays a fixed library overhead. Writing with fsync: ``.npy`` 2,100 MB/s, HDF5 chunked
1,100-1,400 MB/s, contiguous 310 MB/s. ``.npy`` wins on both and needs no extra dependency.

Example:
    >>> import tempfile, functools
    >>> from agents.explorers import UniformRandom
    >>> out = collect("CartPole-v1", tempfile.mkdtemp() + "/d", episodes=2, steps=4,
    ...               policy=UniformRandom, progress=False, env_kwargs={})
    >>> data = RolloutDataset(out)
    >>> len(data), data[0].obs.shape[0]
    (2, 5)
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import inspect
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from worldmodels.api import Batch
from worldmodels.files import dead_temps, explain_write_error, json_digest, remove, temp_path, write_json

__all__ = [
    "FORMAT_VERSION",
    "CorruptDatasetError",
    "CorruptShardError",
    "Episode",
    "Policy",
    "RolloutDataset",
    "WindowDataset",
    "collate_batches",
    "collect",
    "episode_seeds",
    "iterate_batches",
    "make_loader",
    "resolve_env_id",
    "space_from_json",
    "space_to_json",
]

FORMAT_VERSION = 1
FORMAT_NAME = "worldmodels-rollouts"
_SHARD = "shard-{:06d}"
_TARGET_SHARD_BYTES = 32 * 2**20  # default episodes_per_shard aims at ~32 MB shards
_GROUND_TRUTH = ("pose", "state")  # info keys stored when the env provides them at reset


class Policy(Protocol):
    """What :func:`collect` drives: one instance per sub-environment, reseeded every episode.

    A policy class may also offer a classmethod ``vectorize(policies) -> BatchPolicy`` that acts for
    all sub-environments at once; row ``i`` of the batch must act exactly as ``policies[i]`` would
    alone (``agents.explorers.Explorer.vectorize`` does). Without it the policies are called in turn.
    """

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, obs: Any) -> Any: ...


class BatchPolicy(Protocol):
    """``n`` policies acting on a batch: ``reset(seeds [n])``, ``act(obs [n, ...]) -> actions [n, ...]``."""

    def reset(self, seeds: Sequence[int]) -> None: ...

    def act(self, obs: Any) -> Any: ...


class CorruptDatasetError(ValueError):
    """A dataset file does not match its checksum (flipped bytes, truncation, unreadable JSON)."""


class CorruptShardError(CorruptDatasetError):
    """A shard's files do not match the checksums in ``meta.json`` (flipped bytes, truncation)."""


# --------------------------------------------------------------------------------------------------
# spaces <-> JSON


def _jsonable(v: Any) -> Any:
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v if np.isfinite(v) else str(v)  # "inf" / "-inf" / "nan": strict JSON has no infinities


def _compact(a: np.ndarray) -> Any:
    """A constant array as its scalar, else as a nested list (JSON-safe)."""
    a = np.asarray(a, dtype=np.float64)
    flat = a.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return _jsonable(flat[0].item())
    return _jsonable(a.tolist())


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """Describe a Gymnasium space in JSON (round trip with :func:`space_from_json`).

    Example:
        >>> space_to_json(spaces.Discrete(5))
        {'type': 'Discrete', 'n': 5, 'start': 0}
        >>> space_from_json(space_to_json(spaces.Box(0, 255, (2, 2, 3), np.uint8)))
        Box(0, 255, (2, 2, 3), uint8)
    """
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "start": space.start.tolist()}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": _compact(space.low),
            "high": _compact(space.high),
        }
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(s) for s in space.spaces]}
    raise TypeError(
        f"space_to_json: expected Box/Discrete/MultiDiscrete/MultiBinary/Dict/Tuple, received {space}"
    )


def space_from_json(d: dict[str, Any]) -> spaces.Space:
    """Rebuild a space described by :func:`space_to_json`."""
    kind = d.get("type")
    if kind == "Discrete":
        return spaces.Discrete(d["n"], start=d.get("start", 0))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(d["nvec"], start=d.get("start"))
    if kind == "MultiBinary":
        return spaces.MultiBinary(d["n"])
    if kind == "Box":
        dtype = np.dtype(d["dtype"])

        def arr(v: Any) -> np.ndarray:
            return np.broadcast_to(np.asarray(v, dtype=object).astype(np.float64), d["shape"]).astype(dtype)

        return spaces.Box(arr(d["low"]), arr(d["high"]), tuple(d["shape"]), dtype)
    if kind == "Dict":
        return spaces.Dict({k: space_from_json(s) for k, s in d["spaces"].items()})
    if kind == "Tuple":
        return spaces.Tuple([space_from_json(s) for s in d["spaces"]])
    raise ValueError(f"space_from_json: unknown space type {kind!r}")


def _is_image_space(space: spaces.Space) -> bool:
    return (
        isinstance(space, spaces.Box)
        and space.dtype == np.uint8
        and (len(space.shape) == 2 or (len(space.shape) == 3 and space.shape[-1] in (1, 3, 4)))
    )


# --------------------------------------------------------------------------------------------------
# helpers: env ids, policies, seeds, hashing


def resolve_env_id(env_id: str) -> gym.envs.registration.EnvSpec:
    """The spec of ``env_id`` after ``import envs``; unknown ids raise with close matches.

    Example:
        >>> resolve_env_id("CartPole-v1").id
        'CartPole-v1'
        >>> resolve_env_id("CartPol-v1")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown environment id 'CartPol-v1'. Did you mean 'CartPole-v1' or ...?
    """
    import envs  # noqa: F401  (registers our ids)

    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        hint = (
            f" Did you mean {' or '.join(repr(c) for c in close)}?"
            if close
            else f" Known ids include {sorted(gym.registry)[:8]}..."
        )
        raise ValueError(f"unknown environment id {env_id!r}.{hint}")
    return gym.spec(env_id)


def _policy_spec(factory: Callable[..., Any]) -> dict[str, Any]:
    """``{"name", "kwargs"}`` of a policy factory (a class or ``functools.partial`` of one),
    with default arguments filled in, so equal policies describe themselves equally."""
    spec = getattr(factory, "spec", None)
    if isinstance(spec, dict):
        return spec
    func, kwargs = factory, {}
    if isinstance(factory, functools.partial):
        func, kwargs = factory.func, dict(factory.keywords)
        if factory.args:
            raise ValueError("collect: pass policy arguments by keyword (functools.partial(cls, name=value))")
    try:
        bound = inspect.signature(func).bind_partial(**kwargs)
        bound.apply_defaults()
        kwargs = {k: v for k, v in bound.arguments.items() if k != "action_space"}
    except (TypeError, ValueError):
        pass
    name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"
    return {"name": name, "kwargs": json.loads(json.dumps(kwargs, default=str))}


def episode_seeds(seed: int, index: int) -> tuple[int, int]:
    """``(env_seed, policy_seed)`` of global episode ``index``: ``SeedSequence([seed, index])``.

    Example:
        >>> episode_seeds(0, 3) == episode_seeds(0, 3) != episode_seeds(0, 4)
        True
    """
    env_seed, policy_seed = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32)
    return int(env_seed), int(policy_seed)


class _HashingFile:
    """File wrapper feeding everything written to a sha256 (``np.save`` writes through it)."""

    def __init__(self, f: Any) -> None:
        self.f, self.sha = f, hashlib.sha256()
        self.nbytes = 0

    def write(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        self.sha.update(mv)
        self.nbytes += len(mv)
        return self.f.write(mv)


def _sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            sha.update(chunk)
    return sha.hexdigest()


_SELF_HASH = "json_sha256"  # meta.json / shard.json carry the sha256 of their own canonical content


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    body = {k: v for k, v in obj.items() if k != _SELF_HASH}
    write_json(path, {**body, _SELF_HASH: json_digest(body)}, indent=1, sort_keys=True)


def _read_json(path: Path) -> dict[str, Any]:
    """Read a meta.json / shard.json and check its self-checksum (files of format 1 without one pass)."""
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptDatasetError(f"{path}: expected a JSON object, the file is unreadable ({e}) (corrupt?)") from e
    if not isinstance(obj, dict):
        raise CorruptDatasetError(f"{path}: expected a JSON object, received {type(obj).__name__} (corrupt?)")
    stored = obj.pop(_SELF_HASH, None)
    if stored is not None and stored != json_digest(obj):
        raise CorruptDatasetError(f"{path}: content does not match its {_SELF_HASH} checksum (corrupt)")
    return obj


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__, "gymnasium": gym.__version__}
    try:
        out["worldmodels"] = metadata.version("worldmodels")
    except metadata.PackageNotFoundError:
        out["worldmodels"] = "unknown"
    return out


# --------------------------------------------------------------------------------------------------
# collection


def _seeds_per_env(env: gym.vector.VectorEnv) -> tuple[Any, dict] | None:
    """``env.reset`` with one seed per sub-env (those of :func:`_probe`): its result, or ``None`` when the
    env does not take per-env seeds (Gymnasium's own CartPole fast path does not)."""
    try:
        # VectorEnv.reset is annotated ``seed: int | None``; the vector envs take a list (one per sub-env)
        return env.reset(seed=[episode_seeds(0, i)[0] for i in range(env.num_envs)])  # type: ignore[arg-type]
    except (gym.error.Error, TypeError, ValueError, AssertionError):
        return None


def _make_vec(
    spec: Any, num_envs: int, env_kwargs: dict, render: bool
) -> tuple[gym.vector.VectorEnv, tuple[Any, dict] | None]:
    """The env's batched ``vector_entry_point`` when it has one that seeds each sub-env, else
    ``AsyncVectorEnv`` (``spawn``: MiniWorld's EGL hangs in forked children) for ``num_envs > 1``,
    else ``SyncVectorEnv``; and the probe reset of the batched env (``None`` for the others)."""
    kwargs = dict(env_kwargs)
    if render:
        kwargs["render_mode"] = "rgb_array"
    if spec.vector_entry_point is not None:
        env = gym.make_vec(spec.id, num_envs, vectorization_mode="vector_entry_point", **kwargs)
        first = _seeds_per_env(env)
        if first is not None:
            return env, first
        env.close()  # one seed for the whole batch would tie the data to num_envs
    if num_envs > 1:
        return gym.make_vec(
            spec.id, num_envs, vectorization_mode="async", vector_kwargs={"context": "spawn"}, **kwargs
        ), None
    return gym.make_vec(spec.id, 1, vectorization_mode="sync", **kwargs), None


def _frames(env: gym.vector.VectorEnv, obs: Any, render: bool) -> np.ndarray:
    if not render:
        return np.asarray(obs)
    rendered = env.render()
    if rendered is None:
        raise ValueError("collect: expected frames from render() (render_mode='rgb_array'), received None")
    frames = np.stack([np.asarray(f) for f in rendered])  # [n, H, W, C]
    if frames.dtype != np.uint8:
        raise ValueError(f"collect: expected uint8 frames from render(), received dtype {frames.dtype}")
    return frames


@dataclass
class _Layout:
    """Per-episode array shapes/dtypes of a dataset (``meta["arrays"]``)."""

    arrays: dict[str, dict[str, Any]] = field(default_factory=dict)

    def alloc(self, n: int) -> dict[str, np.ndarray]:
        return {k: np.zeros((n, *v["shape"]), dtype=np.dtype(v["dtype"])) for k, v in self.arrays.items()}


def _probe(
    env: gym.vector.VectorEnv, render: bool, steps: int, first: tuple[Any, dict] | None = None
) -> tuple[_Layout, dict[str, Any]]:
    """Reset once (or use ``first``, the same reset already done) to learn frame shape and
    ground-truth keys; returns the layout and obs info."""
    seeds = [episode_seeds(0, i)[0] for i in range(env.num_envs)]
    obs, info = first or env.reset(seed=seeds)  # type: ignore[arg-type]  # list seed: see _seeds_per_env
    frame = _frames(env, obs, render)[0]
    act = env.single_action_space
    if act.shape is None:
        raise ValueError(
            f"collect: expected an action space with an array shape (Discrete, MultiDiscrete, MultiBinary "
            f"or Box), received {act}"
        )
    arrays: dict[str, dict[str, Any]] = {
        "obs": {"shape": [steps + 1, *frame.shape], "dtype": "uint8"},
        "action": {"shape": [steps, *act.shape], "dtype": str(np.dtype(act.dtype))},
        "reward": {"shape": [steps], "dtype": "float64"},
        "terminated": {"shape": [], "dtype": "bool"},
        "truncated": {"shape": [], "dtype": "bool"},
        "length": {"shape": [], "dtype": "int64"},
        "env_seed": {"shape": [], "dtype": "int64"},
    }
    for key in _GROUND_TRUTH:
        if key in info:
            v = np.asarray(info[key])[0]
            arrays[key] = {"shape": [steps + 1, *v.shape], "dtype": str(v.dtype)}
    space = env.single_observation_space
    if render and isinstance(space, spaces.Box) and len(space.shape) == 1:
        arrays["env_obs"] = {"shape": [steps + 1, *space.shape], "dtype": str(np.dtype(space.dtype))}
    source = {"source": "render" if render else "observation", "shape": list(frame.shape), "dtype": "uint8"}
    return _Layout(arrays), source


class _PolicyLoop:
    """The :class:`BatchPolicy` of policies without ``vectorize``: each called on its own observation."""

    def __init__(self, policies: Sequence[Policy], observation_space: spaces.Space) -> None:
        self.policies, self.space = list(policies), observation_space

    def reset(self, seeds: Sequence[int]) -> None:
        for p, s in zip(self.policies, seeds):
            p.reset(seed=s)

    def act(self, obs: Any) -> np.ndarray:
        per_env = gym.vector.utils.iterate(self.space, obs)
        return np.stack([np.asarray(p.act(o)) for p, o in zip(self.policies, per_env)])


def _batch_policy(policies: Sequence[Policy], env: gym.vector.VectorEnv) -> BatchPolicy:
    kind = type(policies[0])
    vectorize = getattr(kind, "vectorize", None)
    if callable(vectorize) and all(type(p) is kind for p in policies):
        return vectorize(policies)
    return _PolicyLoop(policies, env.observation_space)


def _run_batch(
    env: gym.vector.VectorEnv,
    policy: BatchPolicy,
    indices: Sequence[int],
    seed: int,
    steps: int,
    render: bool,
    out: dict[str, np.ndarray],
) -> int:
    """Run ``env.num_envs`` episodes in lock step into ``out`` (arrays ``[num_envs, ...]`` of the
    layout, reused between batches: every entry is overwritten); rows beyond ``len(indices)`` are
    filler. Returns the number of frames of the real rows.

    Every row is written at every step without masks; after an early end the rows are cut back to
    zero padding once, at the end (the batch env autoresets ended rows; what it writes there is
    erased)."""
    n = env.num_envs
    idx = list(indices) + [indices[-1]] * (n - len(indices))  # pad a short last batch
    env_seeds, policy_seeds = zip(*(episode_seeds(seed, i) for i in idx))
    obs, info = env.reset(seed=list(env_seeds))  # type: ignore[arg-type]  # list seed: see _seeds_per_env
    policy.reset(list(policy_seeds))
    gt = [k for k in (*_GROUND_TRUTH, "env_obs") if k in out]
    frames, action, reward = out["obs"], out["action"], out["reward"]  # [n, T + 1, ...], [n, T, ...], [n, T]
    length, terminated, truncated = out["length"], out["terminated"], out["truncated"]  # [n]

    def record(t: int, obs: Any, info: dict) -> None:
        frames[:, t] = _frames(env, obs, render)
        for k in gt:
            src = obs if k == "env_obs" else info.get(k)
            out[k][:, t] = 0 if src is None else src

    alive = np.ones(n, dtype=bool)
    length[:] = steps
    terminated[:], truncated[:] = False, False
    out["env_seed"][:] = env_seeds
    record(0, obs, info)
    for t in range(steps):
        a = policy.act(obs)
        obs, r, term, trunc, info = env.step(a)
        action[:, t] = a
        reward[:, t] = r
        record(t + 1, obs, info)
        done = np.logical_or(term, trunc)
        if done.any():
            ended = alive & done
            length[ended] = t + 1
            terminated[ended] = np.asarray(term)[ended]
            truncated[ended] = np.asarray(trunc)[ended]
            alive &= ~ended
            if not alive.any():
                break
    for i in np.flatnonzero(length < steps).tolist():  # zero padding after an early end
        end = int(length[i])
        frames[i, end + 1 :] = 0
        action[i, end:] = 0
        reward[i, end:] = 0
        for k in gt:
            out[k][i, end + 1 :] = 0
    return int(length[: len(indices)].sum()) + len(indices)


def _write_shard(out_dir: Path, index: int, first: int, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Write one shard directory atomically; returns its ``meta["shards"]`` entry.

    All files are written (and hashed) first, then fsync'ed concurrently (one thread each: the disk
    gets all requests at once; 2-4x faster than one after the other here), then the directory is
    renamed into place."""
    name = _SHARD.format(index)
    for stale in out_dir.glob(f".{name}.tmp-*"):  # left by a killed writer of this (our) shard
        shutil.rmtree(stale, ignore_errors=True)
    tmp = temp_path(out_dir / name)
    tmp.mkdir()
    try:
        entry = _write_shard_files(tmp, first, arrays)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk gets its space back
        raise
    os.replace(tmp, out_dir / name)
    return entry


def _write_shard_files(tmp: Path, first: int, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    files, handles = {}, []
    try:
        for key in sorted(arrays):
            a = np.ascontiguousarray(arrays[key])
            f = open(tmp / f"{key}.npy", "wb")  # noqa: SIM115 - closed below, after the fsyncs
            handles.append(f)
            h = _HashingFile(f)
            # the bytes of np.save (format 1.0 header, then the data), without its chunk copies
            np.lib.format.write_array_header_1_0(h, np.lib.format.header_data_from_array_1_0(a))
            if a.size:
                h.write(a.reshape(-1).view(np.uint8))
            f.flush()
            files[key] = {"sha256": h.sha.hexdigest(), "bytes": h.nbytes}
        with ThreadPoolExecutor(len(handles), thread_name_prefix="fsync") as pool:
            list(pool.map(lambda f: os.fsync(f.fileno()), handles))
    finally:
        for f in handles:
            f.close()
    entry = {
        "first_episode": first,
        "episodes": int(len(arrays["length"])),
        "lengths": arrays["length"].tolist(),
        "files": files,
        "sha256": hashlib.sha256(
            "".join(f"{k}:{v['sha256']}\n" for k, v in sorted(files.items())).encode()
        ).hexdigest(),
    }
    _write_json(tmp / "shard.json", entry)
    return entry


class _ShardWriter:
    """Writes complete shards on one background thread and hands their arrays back for reuse.

    sha256, ``write`` and ``fsync`` release the GIL, so writing a shard overlaps with stepping the envs
    for the next one. At most ``max_pending`` shards wait (bounded memory); errors re-raise in the
    collecting thread at the next :meth:`submit` / :meth:`buffer` / :meth:`finish`. ``meta.json`` is
    refreshed after each shard, in shard completion order, on the writer thread.
    """

    def __init__(self, out_dir: Path, layout: _Layout, max_pending: int = 2) -> None:
        self.out_dir, self.layout, self.max_pending = out_dir, layout, max_pending
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="shard-writer")
        self._pending: list[tuple[Future, dict[str, np.ndarray]]] = []
        self._free: list[dict[str, np.ndarray]] = []

    def _write(self, s: int, first: int, arrays: dict[str, np.ndarray]) -> None:
        try:
            _refresh_meta(self.out_dir, {_SHARD.format(s): _write_shard(self.out_dir, s, first, arrays)})
        except OSError as e:
            raise explain_write_error(
                e, f"collect: shard {_SHARD.format(s)}", self.out_dir,
                "The shards written before it are intact; free space or fix permissions, then run the same "
                "command again to resume.",
            ) from e

    def _reap(self, wait_oldest: bool = False) -> None:
        if wait_oldest and self._pending:
            self._pending[0][0].result()
        still = []
        for fut, arrays in self._pending:
            if fut.done():
                fut.result()  # re-raises the writer's error
                self._free.append(arrays)
            else:
                still.append((fut, arrays))
        self._pending = still

    def buffer(self, episodes: int) -> dict[str, np.ndarray]:
        """Arrays for a shard of ``episodes`` rows: a written shard's, else new ones."""
        self._reap()
        for j, arrays in enumerate(self._free):
            if len(arrays["length"]) == episodes:
                return self._free.pop(j)
        return self.layout.alloc(episodes)

    def submit(self, s: int, first: int, arrays: dict[str, np.ndarray]) -> None:
        """Write shard ``s`` (whose first episode is ``first``) from ``arrays``; do not touch them after."""
        while len(self._pending) >= self.max_pending:
            self._reap(wait_oldest=True)
        self._pending.append((self._pool.submit(self._write, s, first, arrays), arrays))

    def finish(self, raise_errors: bool = True) -> None:
        """Wait for every shard; raise the first error (unless ``raise_errors`` is false)."""
        try:
            for fut, _ in self._pending:
                if raise_errors:
                    fut.result()
                else:
                    fut.exception()  # waits
        finally:
            self._pending = []
            self._pool.shutdown(wait=True)


def _refresh_meta(out_dir: Path, new: dict[str, dict] | None = None) -> dict[str, Any]:
    """Merge shards written by us (``new``) or other writers into ``meta.json`` (atomic)."""
    meta = _read_json(out_dir / "meta.json")
    shards = meta.setdefault("shards", {})
    shards.update(new or {})
    for d in sorted(out_dir.glob("shard-*")):
        if d.name not in shards and (d / "shard.json").exists():
            shards[d.name] = _read_json(d / "shard.json")
    meta["shards"] = dict(sorted(shards.items()))
    _write_json(out_dir / "meta.json", meta)
    return meta


_IDENTITY = ("format", "env_id", "env_kwargs", "policy", "seed", "episodes", "steps", "episodes_per_shard")


def _check_compatible(out_dir: Path, meta: dict[str, Any], want: dict[str, Any]) -> None:
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{out_dir}: dataset format version {version!r} is newer than this reader's {FORMAT_VERSION}; "
            "upgrade worldmodels or choose another --out"
        )
    diff = [
        f"{k}: dataset has {meta.get(k)!r}, requested {want[k]!r}"
        for k in _IDENTITY
        if want.get(k) is not None and meta.get(k) != want[k]
    ]
    if diff:
        raise FileExistsError(
            f"{out_dir} holds a different dataset; refusing to add to or overwrite it "
            f"(choose another out_dir):\n  " + "\n  ".join(diff)
        )


def collect(
    env_id: str,
    out_dir: str | Path,
    episodes: int,
    steps: int,
    *,
    policy: Callable[[spaces.Space], Policy],
    num_envs: int = 1,
    seed: int = 0,
    shard_index: int = 0,
    num_shards: int = 1,
    env_kwargs: dict[str, Any] | None = None,
    episodes_per_shard: int | None = None,
    progress: bool = True,
) -> Path:
    """Collect ``episodes`` rollouts of ``steps`` actions into the dataset folder ``out_dir``.

    Resumes: shards already in ``out_dir`` are kept and skipped. Refuses a folder holding a dataset
    of another env, kwargs, policy, seed or size, or of a newer format.

    Args:
        env_id: a Gymnasium id (``import envs`` registers ours). Unknown ids raise with suggestions.
        out_dir: dataset folder (created).
        episodes: number of episodes in the whole dataset (all shards, all writers).
        steps: actions per episode (``steps + 1`` frames); shorter only when the env ends it.
        policy: ``action_space -> policy`` factory, e.g. ``agents.explorers.explorer_factory("poisson")``
            or a class; one instance per sub-env, ``reset(seed)`` per episode. Classes with a
            ``vectorize`` classmethod (the explorers) act for all sub-envs in one call, with the
            same actions as the per-env instances.
        num_envs: parallel sub-environments; the vector entry point (batched numpy) when the env
            has one, else ``AsyncVectorEnv`` with ``spawn`` for ``num_envs > 1``, else sync.
        seed: master seed; episode ``i`` uses :func:`episode_seeds` ``(seed, i)``.
        shard_index, num_shards: this writer collects shards ``s`` with ``s % num_shards == shard_index``.
        env_kwargs: keyword arguments of ``gymnasium.make``.
        episodes_per_shard: default: shards of about 32 MB (kept from ``meta.json`` when resuming).
        progress: show a tqdm bar.

    Returns:
        ``Path(out_dir)``.

    Example:
        >>> import tempfile
        >>> from agents.explorers import explorer_factory
        >>> d = collect("CartPole-v1", tempfile.mkdtemp(), episodes=3, steps=5,
        ...             policy=explorer_factory("poisson"), progress=False)
        >>> sorted(p.name for p in d.iterdir())
        ['meta.json', 'shard-000000']
    """
    for name, v, lo in (("episodes", episodes, 1), ("steps", steps, 1), ("num_envs", num_envs, 1)):
        if not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"collect: expected {name} >= {lo}, received {v!r}")
    if not (0 <= shard_index < num_shards):
        raise ValueError(
            f"collect: expected 0 <= shard_index < num_shards, received {shard_index}, {num_shards}"
        )
    if episodes_per_shard is not None and episodes_per_shard < 1:
        raise ValueError(f"collect: expected episodes_per_shard >= 1, received {episodes_per_shard}")
    env_kwargs = dict(env_kwargs or {})
    if "render_mode" in env_kwargs:
        raise ValueError("collect: do not pass render_mode; frames come from render() only when needed")
    spec = resolve_env_id(env_id)
    out = Path(out_dir)
    want = {
        "format": FORMAT_NAME,
        "env_id": env_id,
        "env_kwargs": json.loads(json.dumps(env_kwargs)),
        "policy": _policy_spec(policy),
        "seed": int(seed),
        "episodes": int(episodes),
        "steps": int(steps),
        "episodes_per_shard": episodes_per_shard,
    }
    env = None
    if (out / "meta.json").exists():
        meta = _read_json(out / "meta.json")
        _check_compatible(out, meta, want)
        for p in dead_temps(out):  # left by a killed writer of this machine (others' are in use)
            remove(p)
        render = meta["observation"]["source"] == "render"
        layout = _Layout(meta["arrays"])
    else:
        if out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
            raise FileExistsError(
                f"{out} exists and is not a dataset folder (no meta.json); refusing to write into it"
            )
        probe, first = _make_vec(spec, num_envs, env_kwargs, render=False)
        render = not _is_image_space(probe.single_observation_space)
        if render:
            probe.close()
            probe, first = _make_vec(spec, num_envs, env_kwargs, render=True)
        env = probe
        layout, source = _probe(env, render, steps, first)
        ep_bytes = sum(
            int(np.prod(v["shape"], dtype=np.int64)) * np.dtype(v["dtype"]).itemsize
            for v in layout.arrays.values()
        )
        eps = episodes_per_shard or int(np.clip(_TARGET_SHARD_BYTES // max(ep_bytes, 1), 1, episodes))
        meta = {
            **want,
            "format_version": FORMAT_VERSION,
            "episodes_per_shard": eps,
            "num_shard_files": -(-episodes // eps),
            "seed_derivation": "SeedSequence([seed, episode]).generate_state(2): env seed, policy seed",
            "observation": source,
            "observation_space": space_to_json(env.single_observation_space),
            "action_space": space_to_json(env.single_action_space),
            "arrays": layout.arrays,
            "ground_truth": [k for k in (*_GROUND_TRUTH, "env_obs") if k in layout.arrays],
            "versions": _versions(),
            "shards": {},
        }
        try:
            out.mkdir(parents=True, exist_ok=True)
            if not (out / "meta.json").exists():  # another writer may have created it meanwhile
                _write_json(out / "meta.json", meta)
        except OSError as e:
            env.close()
            raise explain_write_error(e, "collect", out, "Nothing was written.") from e
        meta = _read_json(out / "meta.json")
        _check_compatible(out, meta, want)
    eps = int(meta["episodes_per_shard"])
    n_files = int(meta["num_shard_files"])
    todo = [
        s
        for s in range(shard_index, n_files, num_shards)
        if not (out / _SHARD.format(s) / "shard.json").exists()
    ]
    if todo:
        from tqdm.auto import tqdm

        if env is None:
            env, _ = _make_vec(spec, num_envs, env_kwargs, render)
        n = env.num_envs
        batch_policy = _batch_policy([policy(env.single_action_space) for _ in range(n)], env)
        queue = [i for s in todo for i in range(s * eps, min((s + 1) * eps, episodes))]
        rollout = layout.alloc(n)  # one batch, reused
        shards: dict[int, tuple[dict[str, np.ndarray], list[int]]] = {}  # s -> (arrays, rows filled)
        writer = _ShardWriter(out, layout)
        bar = tqdm(total=len(queue), unit="ep", disable=not progress, desc=f"collect {env_id}")
        start, frames = time.perf_counter(), 0
        try:
            for b in range(0, len(queue), n):
                batch = queue[b : b + n]
                frames += _run_batch(env, batch_policy, batch, seed, steps, render, rollout)
                row = 0
                while row < len(batch):  # consecutive rows of one shard are consecutive episodes
                    s = batch[row] // eps
                    lo, hi = s * eps, min((s + 1) * eps, episodes)  # episodes of shard s
                    k = min(len(batch) - row, hi - batch[row])
                    if s not in shards:
                        shards[s] = (writer.buffer(hi - lo), [0])
                    arrays, filled = shards[s]
                    r0 = batch[row] - lo
                    for key, buf in arrays.items():
                        buf[r0 : r0 + k] = rollout[key][row : row + k]
                    filled[0] += k
                    if filled[0] == hi - lo:
                        writer.submit(s, lo, shards.pop(s)[0])
                    row += k
                bar.update(len(batch))
                bar.set_postfix(fps=f"{frames / (time.perf_counter() - start):.0f}")
            writer.finish()
        except BaseException:
            writer.finish(raise_errors=False)  # let the shards in flight land; keep the first error
            raise
        finally:
            bar.close()
            env.close()
    elif env is not None:
        env.close()
    _refresh_meta(out)
    return out


# --------------------------------------------------------------------------------------------------
# reading


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


# --------------------------------------------------------------------------------------------------
# windows for training


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
