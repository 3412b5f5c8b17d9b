"""Collection: rollouts of a policy in vector envs, written as atomic shards (:mod:`worldmodels.data.format`).

Determinism. Episode ``i`` is reset with seeds drawn from ``numpy.random.SeedSequence([seed, i])``
(env seed, policy seed), so the content of a dataset depends neither on ``num_envs`` nor on
interruptions, and ``shard_index / num_shards`` split the shard grid across machines writing into
one folder (shard ``s`` belongs to writer ``s % num_shards``). ``meta.json`` holds no timestamps:
a killed and resumed collection is bit-identical to an uninterrupted one.
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
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from worldmodels.data.format import (
    _GROUND_TRUTH,
    _SHARD,
    FORMAT_NAME,
    FORMAT_VERSION,
    _HashingFile,
    _read_json,
    _time_axis,
    _write_json,
    episode_seeds,
    space_to_json,
)
from worldmodels.data.resize import area_resize
from worldmodels.files import dead_temps, explain_write_error, remove, temp_path

__all__ = ["BatchPolicy", "Policy", "collect", "resolve_env_id"]

_TARGET_SHARD_BYTES = 32 * 2**20  # default episodes_per_shard aims at ~32 MB shards


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


# --------------------------------------------------------------------------------------------------
# helpers: env ids, observation sources, policy descriptions, versions


def resolve_env_id(env_id: str) -> gym.envs.registration.EnvSpec:
    """The spec of ``env_id`` after ``import envs``; unknown ids raise with close matches.

    Besides registered ids, takes Gymnasium's ``"module:Id"`` (``module`` is imported first, as
    ``gymnasium.make`` does: a third-party package registering its envs on import) and MiniWorld's own
    ``"MiniWorld-<Name>-v0"`` ids (``miniworld`` is imported headless first; the ``miniworld`` extra).

    Example:
        >>> resolve_env_id("CartPole-v1").id
        'CartPole-v1'
        >>> resolve_env_id("envs:ImageNav-v0").id
        'ImageNav-v0'
        >>> resolve_env_id("CartPol-v1")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown environment id 'CartPol-v1'. Did you mean 'CartPole-v1' or ...?
    """
    import importlib

    import envs  # noqa: F401  (registers our ids)
    from envs.miniworld_nav import import_miniworld

    if not isinstance(env_id, str):
        raise TypeError(f"resolve_env_id: expected an id string, received {type(env_id).__name__}")
    module, _, name = env_id.rpartition(":")
    try:
        if module:
            importlib.import_module(module)
        elif name.startswith("MiniWorld-") and name not in gym.registry:
            import_miniworld()
    except ImportError as e:
        raise ValueError(
            f"environment id {env_id!r}: importing {module or 'miniworld'!r} (which registers it) failed: {e}"
        ) from e
    if name not in gym.registry:
        close = difflib.get_close_matches(name, list(gym.registry), n=3, cutoff=0.6)
        hint = (
            f" Did you mean {' or '.join(repr(c) for c in close)}?"
            if close
            else f" Known ids include {sorted(gym.registry)[:8]}..."
        )
        where = f" (module {module!r} was imported but does not register {name!r})" if module else ""
        raise ValueError(f"unknown environment id {env_id!r}{where}.{hint}")
    return gym.spec(name)


def _is_image_space(space: spaces.Space) -> bool:
    return (
        isinstance(space, spaces.Box)
        and space.dtype == np.uint8
        and (len(space.shape) == 2 or (len(space.shape) == 3 and space.shape[-1] in (1, 3, 4)))
    )


def _callable_spec(factory: Callable[..., Any], what: str = "policy") -> dict[str, Any]:
    """``{"name", "kwargs"}`` of a policy (or env) factory (a class, a function or ``functools.partial`` of
    one), with default arguments filled in, so equal factories describe themselves equally."""
    spec = getattr(factory, "spec", None)
    if isinstance(spec, dict):
        return spec
    func, kwargs = factory, {}
    if isinstance(factory, functools.partial):
        func, kwargs = factory.func, dict(factory.keywords)
        if factory.args:
            raise ValueError(f"collect: pass {what} arguments by keyword (functools.partial(cls, name=value))")
    try:
        params = inspect.signature(func).parameters
        bound = inspect.signature(func).bind_partial(**kwargs)
        bound.apply_defaults()
        variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        kwargs = {
            k: v for k, v in bound.arguments.items()
            if k != "action_space" and not (params[k].kind in variadic and not v)  # an empty **kwargs says nothing
        }
    except (TypeError, ValueError):
        pass
    name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"
    return {"name": name, "kwargs": json.loads(json.dumps(kwargs, default=str))}


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
        env = gym.make_vec(spec, num_envs, vectorization_mode="vector_entry_point", **kwargs)
        first = _seeds_per_env(env)
        if first is not None:
            return env, first
        env.close()  # one seed for the whole batch would tie the data to num_envs
    if num_envs > 1:
        return gym.make_vec(
            spec, num_envs, vectorization_mode="async", vector_kwargs={"context": "spawn"}, **kwargs
        ), None
    return gym.make_vec(spec, 1, vectorization_mode="sync", **kwargs), None


def _frames(env: gym.vector.VectorEnv, obs: Any, render: bool, obs_size: tuple[int, int] | None) -> np.ndarray:
    """The frames to store of a batch of observations, uint8 ``[n, H, W(, C)]``: the observations themselves
    or ``env.render()``, area-resized to ``obs_size`` when given."""
    if render:
        rendered = env.render()
        if rendered is None:
            raise ValueError("collect: expected frames from render() (render_mode='rgb_array'), received None")
        frames = np.stack([np.asarray(f) for f in rendered])  # [n, H, W, C]
        if frames.dtype != np.uint8 or frames.ndim not in (3, 4):
            raise ValueError(
                f"collect: expected uint8 frames [H, W(, C)] from render(), received {frames.dtype} "
                f"{frames.shape[1:]}"
            )
    else:
        frames = np.asarray(obs)
    return frames if obs_size is None else area_resize(frames, obs_size, axes=(1, 2))


class _EnvSource:
    """Where the envs of a collection come from and how they are vectorised (``collect``'s ``env_id``).

    ``name`` and ``description`` are what ``meta.json`` records (``env_id``, ``env_source``); :meth:`open`
    makes the vector env; :meth:`close` closes it unless it is the caller's instance.
    """

    kind: str  # "id" | "factory" | "instance"
    name: str
    description: dict[str, Any]

    def __init__(self, env: Any, num_envs: int, env_kwargs: dict[str, Any]) -> None:
        self.env, self.num_envs, self.env_kwargs = env, num_envs, env_kwargs
        self.spec: Any = None
        if isinstance(env, str):
            self.kind, self.name, self.description = "id", env, {"kind": "id"}
            self.spec = resolve_env_id(env)
            return
        if isinstance(env, (gym.Env, gym.vector.VectorEnv)):
            self.kind = "instance"
            if env_kwargs:
                raise ValueError("collect: env_kwargs go to gymnasium.make or a factory, not to an env instance")
            if isinstance(env, gym.vector.VectorEnv):
                inner: Any = env
                if num_envs not in (1, env.num_envs):
                    raise ValueError(
                        f"collect: expected num_envs=1 or the vector env's {env.num_envs}, received {num_envs}"
                    )
            else:
                inner = env.unwrapped
                if num_envs != 1:
                    raise ValueError(
                        f"collect: an env instance is one env, expected num_envs=1, received {num_envs}; pass a "
                        "factory (a callable returning an env) for several sub-environments"
                    )
            cls = f"{type(inner).__module__}.{type(inner).__qualname__}"
            spec = getattr(env, "spec", None)
            self.name = spec.id if spec is not None else cls
            self.description = {
                "kind": "vector_instance" if isinstance(env, gym.vector.VectorEnv) else "instance",
                "class": cls,
                "spec_kwargs": json.loads(json.dumps(spec.kwargs, default=str)) if spec is not None else None,
            }
            return
        if callable(env):
            self.kind = "factory"
            spec = _callable_spec(env, "env factory")
            self.name, self.description = spec["name"], {"kind": "factory", **spec}
            return
        raise TypeError(
            "collect: expected an env id (str), an env factory (a callable returning a gymnasium.Env) or an env "
            f"instance (gymnasium.Env or gymnasium.vector.VectorEnv), received {type(env).__name__}"
        )

    def open(self, render: bool | None) -> tuple[gym.vector.VectorEnv, tuple[Any, dict] | None, bool]:
        """The vector env, its probe reset (or ``None``) and whether frames come from ``render()``
        (``render=None``: exactly when the observations are not images)."""
        if self.kind == "id":
            if render is None:
                env, first = _make_vec(self.spec, self.num_envs, self.env_kwargs, render=False)
                if _is_image_space(env.single_observation_space):
                    return env, first, False
                env.close()
                render = True
            return (*_make_vec(self.spec, self.num_envs, self.env_kwargs, render), render)
        if self.kind == "factory":
            return self._open_factory(render)
        env = self.env
        vector = isinstance(env, gym.vector.VectorEnv)
        space = env.single_observation_space if vector else env.observation_space
        render = not _is_image_space(space) if render is None else render
        if render and env.render_mode != "rgb_array":
            raise ValueError(
                f"collect: the env instance's observations are not images ({space}), so frames come from "
                f"render(); expected render_mode='rgb_array', received {env.render_mode!r}"
            )
        if not vector:
            return gym.vector.SyncVectorEnv([lambda: env]), None, render
        mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if gym.vector.AutoresetMode(mode) != gym.vector.AutoresetMode.NEXT_STEP:
            raise ValueError(
                f"collect: expected a vector env with next-step autoreset (Gymnasium's default), received {mode}"
            )
        first = _seeds_per_env(env)
        if first is None:
            raise ValueError(
                "collect: expected a vector env that takes one seed per sub-env (reset(seed=[...])); "
                "pass a factory instead"
            )
        return env, first, render

    def _open_factory(self, render: bool | None) -> tuple[gym.vector.VectorEnv, None, bool]:
        factory, kwargs = self.env, self.env_kwargs
        one = factory(**kwargs)
        if not isinstance(one, gym.Env):
            raise TypeError(f"collect: expected the env factory to return a gymnasium.Env, received {type(one)}")
        space = one.observation_space
        render = not _is_image_space(space) if render is None else render
        if render and one.render_mode != "rgb_array":  # ask the factory for frames
            one.close()
            kwargs = {**kwargs, "render_mode": "rgb_array"}
            try:
                one = factory(**kwargs)
            except TypeError as e:
                raise ValueError(
                    f"collect: the env's observations are not images ({space}), so frames come from render(); "
                    f"expected the factory to take render_mode='rgb_array' (or to make its env with it): {e}"
                ) from e
            if one.render_mode != "rgb_array":
                raise ValueError(
                    f"collect: expected the env factory called with render_mode='rgb_array' to make an env "
                    f"that renders rgb_array frames, received render_mode {one.render_mode!r}"
                )
        if self.num_envs == 1:
            return gym.vector.SyncVectorEnv([lambda: one]), None, render
        one.close()
        fn = functools.partial(factory, **kwargs)
        return gym.vector.AsyncVectorEnv([fn] * self.num_envs, context="spawn"), None, render

    def close(self, env: gym.vector.VectorEnv) -> None:
        if self.kind != "instance":  # the caller's env stays open
            env.close()


@dataclass
class _Layout:
    """Per-episode array shapes/dtypes of a dataset (``meta["arrays"]``)."""

    arrays: dict[str, dict[str, Any]] = field(default_factory=dict)

    def alloc(self, n: int) -> dict[str, np.ndarray]:
        return {k: np.zeros((n, *v["shape"]), dtype=np.dtype(v["dtype"])) for k, v in self.arrays.items()}


def _probe(
    env: gym.vector.VectorEnv,
    render: bool,
    steps: int,
    first: tuple[Any, dict] | None = None,
    obs_size: tuple[int, int] | None = None,
) -> tuple[_Layout, dict[str, Any]]:
    """Reset once (or use ``first``, the same reset already done) to learn frame shape and
    ground-truth keys; returns the layout and obs info."""
    seeds = [episode_seeds(0, i)[0] for i in range(env.num_envs)]
    obs, info = first or env.reset(seed=seeds)  # type: ignore[arg-type]  # list seed: see _seeds_per_env
    raw = _frames(env, obs, render, None)[:1]  # [1, H, W(, C)] as the env gives it
    frame = (raw if obs_size is None else area_resize(raw, obs_size, axes=(1, 2)))[0]
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
    if obs_size is not None:
        source.update(env_shape=list(raw.shape[1:]), resize="area")
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
    obs_size: tuple[int, int] | None = None,
) -> int:
    """Run ``env.num_envs`` episodes in lock step into ``out`` (arrays ``[num_envs, ...]`` of the
    layout, reused between batches: every entry is overwritten); rows beyond ``len(indices)`` are
    filler. Returns the number of frames of the real rows.

    Every row is written at every step without masks; after an early end the rows are cut back to
    zero padding once, at the end (the batch env autoresets ended rows; what it writes there is
    erased; format 2 writes the episodes without it)."""
    n = env.num_envs
    idx = list(indices) + [indices[-1]] * (n - len(indices))  # pad a short last batch
    env_seeds, policy_seeds = zip(*(episode_seeds(seed, i) for i in idx))
    obs, info = env.reset(seed=list(env_seeds))  # type: ignore[arg-type]  # list seed: see _seeds_per_env
    policy.reset(list(policy_seeds))
    gt = [k for k in (*_GROUND_TRUTH, "env_obs") if k in out]
    frames, action, reward = out["obs"], out["action"], out["reward"]  # [n, T + 1, ...], [n, T, ...], [n, T]
    length, terminated, truncated = out["length"], out["terminated"], out["truncated"]  # [n]

    def record(t: int, obs: Any, info: dict) -> None:
        frames[:, t] = _frames(env, obs, render, obs_size)
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


def _write_shard(
    out_dir: Path, index: int, first: int, arrays: dict[str, np.ndarray], version: int = FORMAT_VERSION
) -> dict[str, Any]:
    """Write one shard directory atomically (in format ``version``); returns its ``meta["shards"]`` entry.

    All files are written (and hashed) first, then fsync'ed concurrently (one thread each: the disk
    gets all requests at once; 2-4x faster than one after the other here), then the directory is
    renamed into place."""
    name = _SHARD.format(index)
    for stale in out_dir.glob(f".{name}.tmp-*"):  # left by a killed writer of this (our) shard
        shutil.rmtree(stale, ignore_errors=True)
    tmp = temp_path(out_dir / name)
    tmp.mkdir()
    try:
        entry = _write_shard_files(tmp, first, arrays, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk gets its space back
        raise
    os.replace(tmp, out_dir / name)
    return entry


def _stored_rows(key: str, a: np.ndarray, lengths: np.ndarray, version: int) -> tuple[tuple[int, ...], list]:
    """Shape on disk and the contiguous pieces, in order, of shard array ``key`` (buffer ``a [E, ...]``):
    format 1 the buffer as it is (zero padding included), format 2 each episode cut to its length."""
    axis = _time_axis(key)
    if version == 1 or axis == "episode":
        return a.shape, [np.ascontiguousarray(a)]
    extra = 1 if axis == "frame" else 0  # frames: length + 1, steps: length
    rows = [a[i, : int(n) + extra] for i, n in enumerate(lengths)]
    return (sum(len(r) for r in rows), *a.shape[2:]), rows


def _write_shard_files(tmp: Path, first: int, arrays: dict[str, np.ndarray], version: int) -> dict[str, Any]:
    files, handles = {}, []
    try:
        for key in sorted(arrays):
            shape, rows = _stored_rows(key, arrays[key], arrays["length"], version)
            f = open(tmp / f"{key}.npy", "wb")  # noqa: SIM115 - closed below, after the fsyncs
            handles.append(f)
            h = _HashingFile(f)
            # the bytes of np.save (format 1.0 header, then the data), without its chunk copies
            header = np.lib.format.header_data_from_array_1_0(arrays[key])
            np.lib.format.write_array_header_1_0(h, {**header, "shape": shape})
            for r in rows:
                if r.size:
                    h.write(np.ascontiguousarray(r).reshape(-1).view(np.uint8))
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

    def __init__(self, out_dir: Path, layout: _Layout, version: int = FORMAT_VERSION, max_pending: int = 2) -> None:
        self.out_dir, self.layout, self.version, self.max_pending = out_dir, layout, version, max_pending
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="shard-writer")
        self._pending: list[tuple[Future, dict[str, np.ndarray]]] = []
        self._free: list[dict[str, np.ndarray]] = []

    def _write(self, s: int, first: int, arrays: dict[str, np.ndarray]) -> None:
        try:
            entry = _write_shard(self.out_dir, s, first, arrays, self.version)
            _refresh_meta(self.out_dir, {_SHARD.format(s): entry})
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


_IDENTITY = ("format", "env_id", "env_source", "env_kwargs", "obs_size", "policy", "seed", "episodes", "steps",
             "episodes_per_shard")
_IDENTITY_DEFAULTS: dict[str, Any] = {"env_source": {"kind": "id"}, "obs_size": None}  # datasets without the key
_KEPT = ("episodes_per_shard",)  # None requested: keep the dataset's


def _check_compatible(out_dir: Path, meta: dict[str, Any], want: dict[str, Any]) -> None:
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{out_dir}: dataset format version {version!r} is newer than this reader's {FORMAT_VERSION}; "
            "upgrade worldmodels or choose another --out"
        )
    diff = [
        f"{k}: dataset has {meta.get(k, _IDENTITY_DEFAULTS.get(k))!r}, requested {want.get(k)!r}"
        for k in _IDENTITY
        if not (k in _KEPT and want.get(k) is None) and meta.get(k, _IDENTITY_DEFAULTS.get(k)) != want.get(k)
    ]
    if diff:
        raise FileExistsError(
            f"{out_dir} holds a different dataset; refusing to add to or overwrite it "
            f"(choose another out_dir):\n  " + "\n  ".join(diff)
        )


def _check_obs_size(obs_size: Any) -> tuple[int, int] | None:
    if obs_size is None:
        return None
    size = tuple(obs_size) if isinstance(obs_size, (tuple, list)) else ()
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in size):
        raise ValueError(f"collect: expected obs_size (height, width) of positive ints, received {obs_size!r}")
    return int(size[0]), int(size[1])


def collect(
    env_id: str | Callable[..., gym.Env] | gym.Env | gym.vector.VectorEnv,
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
    obs_size: tuple[int, int] | None = None,
    progress: bool = True,
) -> Path:
    """Collect ``episodes`` rollouts of ``steps`` actions into the dataset folder ``out_dir``.

    Resumes: shards already in ``out_dir`` are kept and skipped. Refuses a folder holding a dataset
    of another env, kwargs, frame size, policy, seed or size, or of a newer format.

    Frames: the observations when they are uint8 images ``[H, W(, C)]``, else ``env.render()``
    (``render_mode="rgb_array"``; the observation itself is stored beside them as ``env_obs`` when it is a
    vector), area-resized to ``obs_size`` when given (:func:`worldmodels.data.resize.area_resize`). Episodes
    the env ends before ``steps`` actions (termination, or a time limit shorter than ``steps``) are stored
    at their own length, without padding: ``RolloutDataset.lengths`` and ``summary()`` report them.

    Args:
        env_id: the env, one of

            * a Gymnasium id (``import envs`` registers ours), Gymnasium's ``"module:Id"`` (``module`` is
              imported first) or MiniWorld's ``"MiniWorld-<Name>-v0"``: vectorised with the env's batched
              ``vector_entry_point`` when it has one that seeds each sub-env, else ``AsyncVectorEnv``
              (``spawn``) for ``num_envs > 1``, else ``SyncVectorEnv``. Unknown ids raise with suggestions.
            * an env factory, ``factory(**env_kwargs) -> gymnasium.Env`` (a function, class or
              ``functools.partial``; called with ``render_mode="rgb_array"`` too when frames come from
              ``render()`` and its env does not render so already): ``SyncVectorEnv`` for ``num_envs=1``,
              else ``AsyncVectorEnv`` (``spawn``: the factory must pickle, by reference or with cloudpickle).
              ``meta.json`` names it by its qualified name (and a ``partial``'s keywords).
            * an env instance: a ``gymnasium.Env`` (``num_envs=1``; wrapped in ``SyncVectorEnv``) or a
              ``gymnasium.vector.VectorEnv`` used as it is (next-step autoreset, one seed per sub-env); made
              with ``render_mode="rgb_array"`` when its observations are not images. It is not closed.
        out_dir: dataset folder (created).
        episodes: number of episodes in the whole dataset (all shards, all writers).
        steps: actions per episode (``steps + 1`` frames); shorter only when the env ends it.
        policy: ``action_space -> policy`` factory, e.g. ``agents.explorers.explorer_factory("poisson")``
            or a class; one instance per sub-env, ``reset(seed)`` per episode. Classes with a
            ``vectorize`` classmethod (the explorers) act for all sub-envs in one call, with the
            same actions as the per-env instances.
        num_envs: parallel sub-environments (see ``env_id``).
        seed: master seed; episode ``i`` uses :func:`episode_seeds` ``(seed, i)``.
        shard_index, num_shards: this writer collects shards ``s`` with ``s % num_shards == shard_index``.
        env_kwargs: keyword arguments of ``gymnasium.make`` (or of the factory).
        episodes_per_shard: default: shards of about 32 MB (kept from ``meta.json`` when resuming).
        obs_size: ``(height, width)`` of the stored frames (area resize); default: as the env gives them.
        progress: show a tqdm bar.

    Returns:
        ``Path(out_dir)``.

    Example:
        >>> import tempfile
        >>> from agents.explorers import explorer_factory
        >>> d = collect("CartPole-v1", tempfile.mkdtemp(), episodes=3, steps=5,
        ...             policy=explorer_factory("poisson"), obs_size=(32, 48), progress=False)
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
    size = _check_obs_size(obs_size)
    env_kwargs = dict(env_kwargs or {})
    if "render_mode" in env_kwargs:
        raise ValueError("collect: do not pass render_mode; frames come from render() only when needed")
    source = _EnvSource(env_id, int(num_envs), env_kwargs)
    limit = env_kwargs.get("max_episode_steps", getattr(source.spec, "max_episode_steps", None))
    if isinstance(limit, int) and steps > limit:
        warnings.warn(f"collect: steps {steps} > the env's max_episode_steps {limit}: every episode ends after "
                      f"{limit} actions (pass env_kwargs max_episode_steps to change the limit)", stacklevel=2)
    out = Path(out_dir)
    want = {
        "format": FORMAT_NAME,
        "env_id": source.name,
        "env_source": source.description,
        "env_kwargs": json.loads(json.dumps(env_kwargs)),
        "obs_size": None if size is None else list(size),
        "policy": _callable_spec(policy),
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
        env, first, render = source.open(render=None)
        layout, frames_from = _probe(env, render, steps, first, size)
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
            "observation": frames_from,
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
            source.close(env)
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
            env, _, _ = source.open(render)
        n = env.num_envs
        batch_policy = _batch_policy([policy(env.single_action_space) for _ in range(n)], env)
        queue = [i for s in todo for i in range(s * eps, min((s + 1) * eps, episodes))]
        rollout = layout.alloc(n)  # one batch, reused
        shards: dict[int, tuple[dict[str, np.ndarray], list[int]]] = {}  # s -> (arrays, rows filled)
        writer = _ShardWriter(out, layout, version=int(meta["format_version"]))  # resuming: the dataset's
        bar = tqdm(total=len(queue), unit="ep", disable=not progress, desc=f"collect {source.name}")
        start, frames = time.perf_counter(), 0
        try:
            for b in range(0, len(queue), n):
                batch = queue[b : b + n]
                frames += _run_batch(env, batch_policy, batch, seed, steps, render, rollout, size)
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
            source.close(env)
    elif env is not None:
        source.close(env)
    _refresh_meta(out)
    return out
