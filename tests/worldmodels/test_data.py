"""Rollout datasets: bit-exact round trip against a hand-run single env, resume after kill -9,
corruption and foreign-dataset detection, window sampler against brute-force enumeration."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import envs  # noqa: F401
from agents.explorers import PoissonRepeat, UniformRandom, explorer_factory
from worldmodels.data import (
    CorruptShardError,
    RolloutDataset,
    WindowDataset,
    collect,
    episode_seeds,
    make_loader,
    space_from_json,
    space_to_json,
)

ROOT = Path(__file__).resolve().parents[2]
POISSON = explorer_factory("poisson", lam=2.0)


def _digest(d: Path) -> dict[str, str]:
    return {
        p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


def _hand_rollout(env_id: str, seed: int, index: int, steps: int, make_policy, **env_kwargs) -> dict:
    """The oracle: one plain ``gym.make`` env stepped by hand with the episode's seeds."""
    env = gym.make(env_id, **env_kwargs)
    env_seed, policy_seed = episode_seeds(seed, index)
    obs, info = env.reset(seed=env_seed)
    policy = make_policy(env.action_space)
    policy.reset(seed=policy_seed)
    out = {"obs": [obs], "action": [], "reward": [], "pose": [info.get("pose")], "state": [info.get("state")]}
    terminated = truncated = False
    for _ in range(steps):
        a = policy.act(obs)
        obs, r, terminated, truncated, info = env.step(a)
        out["obs"].append(obs)
        out["action"].append(a)
        out["reward"].append(r)
        out["pose"].append(info.get("pose"))
        out["state"].append(info.get("state"))
        if terminated or truncated:
            break
    env.close()
    out["terminated"], out["truncated"] = terminated, truncated
    return out


@pytest.mark.parametrize(
    "env_id, steps, policy",
    [("ImageNav-v0", 40, POISSON), ("BouncingBallForce-v0", 12, functools.partial(UniformRandom))],
)
def test_round_trip_matches_hand_rollout(tmp_path: Path, env_id: str, steps: int, policy) -> None:
    out = collect(env_id, tmp_path / "d", 7, steps, policy=policy, num_envs=3, seed=5, episodes_per_shard=3,
                  progress=False)
    data = RolloutDataset(out, verify="open")
    assert data.num_episodes == 7 and data.complete and len(data.shard_names) == 3
    key = "pose" if env_id.startswith("ImageNav") else "state"
    for i in range(7):
        ep, ref = data[i], _hand_rollout(env_id, 5, i, steps, policy)
        assert ep.obs.dtype == np.uint8
        np.testing.assert_array_equal(ep.obs, np.stack(ref["obs"]))
        np.testing.assert_array_equal(ep.action, np.stack(ref["action"]))
        np.testing.assert_array_equal(ep.reward, np.array(ref["reward"], dtype=np.float64))
        np.testing.assert_array_equal(ep.extras[key], np.stack(ref[key]))
        assert (ep.terminated, ep.truncated) == (ref["terminated"], ref["truncated"])
        assert ep.env_seed == episode_seeds(5, i)[0]
    # num_envs does not change a single byte
    again = collect(env_id, tmp_path / "e", 7, steps, policy=policy, num_envs=1, seed=5, episodes_per_shard=3,
                    progress=False)
    assert _digest(again) == _digest(out)
    assert space_from_json(data.meta["action_space"]) == gym.make(env_id).action_space


def test_early_end_is_recorded_and_stored_without_padding(tmp_path: Path) -> None:
    # BouncingBall-v0 is truncated by its TimeLimit after 20 steps; we ask for 30.
    data = RolloutDataset(collect("BouncingBall-v0", tmp_path / "d", 3, 30, policy=UniformRandom,
                                  num_envs=2, progress=False))
    assert data.lengths.tolist() == [20, 20, 20]
    ep = data[1]
    assert ep.obs.shape == (21, 32, 32, 1) and ep.action.shape == (20,) and ep.truncated and not ep.terminated
    raw = data.shard_arrays(0)  # on disk (format 2): the episodes end to end, no padding
    assert raw["obs"].shape == (3 * 21, 32, 32, 1) and raw["action"].shape == (3 * 20,)
    padded = data.padded("obs")  # in memory, as format 1 stored it: zeros after the end
    assert padded.shape == (3, 31, 32, 32, 1) and not padded[:, 21:].any()
    np.testing.assert_array_equal(padded[1, :21], ep.obs)
    ref = _hand_rollout("BouncingBall-v0", 0, 1, 30, UniformRandom)
    np.testing.assert_array_equal(ep.obs, np.stack(ref["obs"]))


def test_space_json_round_trip() -> None:
    for s in [
        gym.spaces.Discrete(4, start=1),
        gym.spaces.Box(np.array([-1.0, -np.inf]), np.array([2.0, np.inf]), dtype=np.float64),
        gym.spaces.Box(0, 255, (3, 4, 3), np.uint8),
        gym.spaces.MultiDiscrete([2, 3]),
        gym.spaces.Dict({"a": gym.spaces.Discrete(2), "b": gym.spaces.MultiBinary(3)}),
    ]:
        d = space_to_json(s)
        assert json.loads(json.dumps(d, allow_nan=False)) == d
        assert space_from_json(d) == s


def test_resume_after_kill_is_bit_identical(tmp_path: Path) -> None:
    args = ["--env", "ImageNav-v0", "--episodes", "40", "--steps", "300", "--episodes-per-shard", "2",
            "--seed", "3", "--no-progress"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "worldmodels.cli", "collect", "--out", str(killed), *args],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "shard-000000").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "collect ended before its first shard"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = RolloutDataset(killed)
    assert 1 <= len(partial.shard_names) < 20 and not partial.complete, "kill came too late to test resuming"
    assert "INCOMPLETE" in partial.summary()
    collect("ImageNav-v0", killed, 40, 300, policy=POISSON, seed=3, progress=False)
    clean = collect("ImageNav-v0", tmp_path / "clean", 40, 300, policy=POISSON, seed=3, episodes_per_shard=2,
                    progress=False)
    assert _digest(killed) == _digest(clean)  # every byte, meta.json included; no temp dirs left


def test_resume_removes_temps_of_dead_writers_of_this_machine_only(tmp_path: Path) -> None:
    # A SIGKILL during an atomic write leaves '.meta.json.tmp-<pid>.json' (or a shard temp folder).
    out = collect("ImageNav-v0", tmp_path / "d", 4, 10, policy=POISSON, episodes_per_shard=2, progress=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from worldmodels.files import temp_path

    ours_dead = temp_path(out / "meta.json", suffix=".json").name.replace(f"-{os.getpid()}.", f"-{dead.pid}.")
    stale_file = out / ours_dead  # .meta.json.tmp-<this host>-<dead pid>.json
    stale_dir = out / f".shard-000009.tmp-{dead.pid}"  # names without a host are this machine's
    live = out / f".meta.json.tmp-{os.getppid()}.json"  # a running writer's temp must survive
    other_host = out / f".meta.json.tmp-otherhost-{dead.pid}.json"  # a writer on another machine sharing the folder
    for f in (stale_file, live, other_host):
        f.write_text("{")
    stale_dir.mkdir()
    collect("ImageNav-v0", out, 4, 10, policy=POISSON, progress=False)
    assert not stale_file.exists() and not stale_dir.exists() and live.exists() and other_host.exists()


def test_corrupt_and_truncated_shards_are_named(tmp_path: Path) -> None:
    out = collect("ImageNav-v0", tmp_path / "d", 6, 10, policy=POISSON, episodes_per_shard=2, progress=False)
    obs = out / "shard-000001" / "obs.npy"
    raw = bytearray(obs.read_bytes())
    raw[-7] ^= 0xFF  # flip one pixel byte
    obs.write_bytes(bytes(raw))
    act = out / "shard-000002" / "action.npy"
    act.write_bytes(act.read_bytes()[:-8])  # truncate
    data = RolloutDataset(out)  # lazy: opening works
    assert data[0].obs.shape == (11, 8, 8, 3) and data[1].obs.any()  # shard 0 stays readable
    with pytest.raises(CorruptShardError, match=r"shard-000001: obs.npy does not match its sha256"):
        data[2]
    with pytest.raises(CorruptShardError, match="shard-000001"):  # stays bad
        data[3]
    with pytest.raises(CorruptShardError, match=r"shard-000002: action.npy has .* bytes.*truncated"):
        data[4]
    assert data[1].length == 10
    with pytest.raises(CorruptShardError, match=r"2 bad shard\(s\)"):
        data.verify()
    with pytest.raises(CorruptShardError, match="shard-00000[12]"):
        RolloutDataset(out, verify="open")


def test_foreign_newer_and_non_dataset_folders_are_refused(tmp_path: Path) -> None:
    out = collect("ImageNav-v0", tmp_path / "d", 2, 5, policy=POISSON, progress=False)
    before = _digest(out)
    for kwargs, field in [
        ({"env_id": "BouncingBall-v0"}, "env_id"),
        ({"policy": UniformRandom}, "policy"),
        ({"policy": explorer_factory("poisson", lam=3.0)}, "policy"),
        ({"env_kwargs": {"n_obstacles": 2}}, "env_kwargs"),
        ({"seed": 1}, "seed"),
        ({"steps": 6}, "steps"),
    ]:
        call = {"env_id": "ImageNav-v0", "out_dir": out, "episodes": 2, "steps": 5, "policy": POISSON,
                "progress": False, **kwargs}
        with pytest.raises(FileExistsError, match=f"different dataset(.|\n)*{field}: dataset has"):
            collect(**call)
    assert _digest(out) == before
    # the same dataset (default lam filled in) resumes, i.e. does nothing
    collect("ImageNav-v0", out, 2, 5, policy=functools.partial(PoissonRepeat), progress=False)
    assert _digest(out) == before
    meta = json.loads((out / "meta.json").read_text())
    meta["format_version"] = 99
    meta.pop("json_sha256")  # as a newer writer without a self-checksum would write it
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="version 99 is newer"):
        collect("ImageNav-v0", out, 2, 5, policy=POISSON, progress=False)
    with pytest.raises(ValueError, match="version 99 is newer"):
        RolloutDataset(out)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a dataset"):
        collect("ImageNav-v0", other, 2, 5, policy=POISSON, progress=False)


def test_unknown_env_id_suggests_close_matches(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown environment id 'ImageNv-v0'. Did you mean 'ImageNav-v0'"):
        collect("ImageNv-v0", tmp_path / "d", 1, 1, policy=POISSON)
    assert not (tmp_path / "d").exists()


def test_shards_split_across_writers(tmp_path: Path) -> None:
    kw = {"policy": POISSON, "episodes_per_shard": 2, "progress": False, "seed": 2}
    collect("ImageNav-v0", tmp_path / "split", 7, 8, shard_index=1, num_shards=2, **kw)
    half = RolloutDataset(tmp_path / "split")
    assert half.shard_names == ["shard-000001", "shard-000003"] and not half.complete
    collect("ImageNav-v0", tmp_path / "split", 7, 8, shard_index=0, num_shards=2, **kw)
    whole = collect("ImageNav-v0", tmp_path / "whole", 7, 8, **kw)
    assert _digest(tmp_path / "split") == _digest(whole)


# ---------------------------------------------------------------------------------------------- windows


@pytest.fixture(scope="module")
def nav(tmp_path_factory: pytest.TempPathFactory) -> RolloutDataset:
    """ImageNavGoal episodes end at the goal: a seed whose episodes have different lengths."""
    root = tmp_path_factory.mktemp("nav")
    for seed in range(20):
        out = collect("ImageNavGoal-v0", root / str(seed), 6, 12, policy=POISSON, seed=seed,
                      episodes_per_shard=2, progress=False)
        data = RolloutDataset(out)
        if len(set(data.lengths.tolist())) >= 2 and data.lengths.max() == 12:
            return data
    raise AssertionError("no seed in 0..19 gave ImageNavGoal-v0 episodes of different lengths")


def _oracle_stream(data: RolloutDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concatenated frames, the action that led to each, is_first and pose, built with plain loops."""
    obs, act, first, pose = [], [], [], []
    for e in range(data.num_episodes):
        ep = data[e]
        for t in range(ep.length + 1):
            obs.append(ep.obs[t])
            act.append(ep.action[t - 1] if t > 0 else 0)
            first.append(t == 0)
            pose.append(ep.extras["pose"][t])
    return np.stack(obs), np.array(act), np.array(first), np.stack(pose)


def test_windows_enumerate_every_start_once(nav: RolloutDataset) -> None:
    L = 4
    win = WindowDataset(nav, L)
    expected = [(e, s) for e in range(nav.num_episodes) for s in range(nav[e].length + 2 - L)]
    assert [win.position(i) for i in range(len(win))] == expected
    # one shuffled epoch of the loader visits each window exactly once
    seen = []
    for batch_idx in torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(win), 5, False):
        raw = win.__getitems__(batch_idx)
        seen += list(zip(raw["episode"].tolist(), raw["start"].tolist()))
    assert sorted(seen) == expected


def test_window_starts_are_uniform(nav: RolloutDataset) -> None:
    win = WindowDataset(nav, 3)
    loader = make_loader(nav, 3, batch_size=50, seed=1)
    sampler = torch.utils.data.RandomSampler(win, replacement=True, num_samples=20_000,
                                             generator=torch.Generator().manual_seed(0))
    counts = np.bincount(list(sampler), minlength=len(win))
    assert stats.chisquare(counts).pvalue > 1e-3
    batch = next(iter(loader))
    assert batch.obs.shape == (50, 3, 3, 8, 8) and batch.action.shape == (50, 3, 5)


@pytest.mark.parametrize("across", [False, True])
def test_window_contents_match_oracle(nav: RolloutDataset, across: bool) -> None:
    L = 7
    win = WindowDataset(nav, L, across_episodes=across)
    obs, act, first, pose = _oracle_stream(nav)
    starts = np.flatnonzero(first)
    n_frames = obs.shape[0]
    if across:
        assert len(win) == n_frames - L + 1
    batch = win.collate(win.__getitems__(list(range(len(win)))))
    assert batch.obs.dtype == torch.float32 and float(batch.obs.max()) <= 1.0
    for i in range(len(win)):
        e, s = win.position(i)
        g = starts[e] + s  # global frame of the window start
        sl = slice(g, g + L)
        exp_first = first[sl].copy()
        exp_first[0] = True
        if not across:
            assert not exp_first[1:].any()
        np.testing.assert_array_equal(batch.is_first[i].numpy(), exp_first)
        np.testing.assert_allclose(batch.obs[i].numpy(), obs[sl].transpose(0, 3, 1, 2) / 255.0, atol=1e-7)
        exp_action = np.eye(5)[act[sl]] * ~exp_first[:, None]  # led to obs[t]; zero at is_first
        np.testing.assert_array_equal(batch.action[i].numpy(), exp_action)
        np.testing.assert_array_equal(batch.state[i].numpy(), pose[sl].astype(np.float32))
    # a window crossing an episode boundary has is_first inside it
    assert batch.is_first[:, 1:].any() == across


def test_continuous_actions_and_collate_of_items(tmp_path: Path) -> None:
    data = RolloutDataset(collect("BouncingBallForce-v0", tmp_path / "d", 2, 6, policy=UniformRandom,
                                  progress=False))
    win = WindowDataset(data, 3)
    batch = win.collate([win[0], win[2]])
    ep = data[0]
    np.testing.assert_array_equal(batch.action[0].numpy(), np.concatenate([np.zeros((1, 2)), ep.action[0:2]]))
    np.testing.assert_array_equal(batch.action[1].numpy(), np.concatenate([np.zeros((1, 2)), ep.action[2:4]]))
    assert batch.obs.shape == (2, 3, 1, 32, 32) and batch.state.shape == (2, 3, 4)


def test_window_longer_than_every_episode(nav: RolloutDataset) -> None:
    with pytest.raises(ValueError, match="window length 14 exceeds every episode .longest has 13 frames"):
        WindowDataset(nav, 14)
    assert len(WindowDataset(nav, 14, across_episodes=True)) > 0
    with pytest.raises(ValueError, match="exceeds all"):
        WindowDataset(nav, 10_000, across_episodes=True)


def test_loader_with_worker_processes(nav: RolloutDataset) -> None:
    loader = make_loader(nav.path, 4, batch_size=8, num_workers=1, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader.dataset) // 8
    ref = make_loader(nav.path, 4, batch_size=8, num_workers=0, seed=0)
    for a, b in zip(batches, ref):
        torch.testing.assert_close(a.obs, b.obs)


# ------------------------------------------------------------------------------------------------
# property-based: random corruption of any file is detected, never silently read


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> tuple[Path, list]:
    out = collect("ImageNav-v0", tmp_path_factory.mktemp("clean") / "d", 6, 12, policy=POISSON,
                  episodes_per_shard=2, progress=False)
    data = RolloutDataset(out)
    return out, [(data.lengths.tolist(), data.action_space)] + [_episode_bytes(data[i]) for i in range(6)]


def _episode_bytes(ep) -> tuple:
    return (ep.obs.tobytes(), ep.action.tobytes(), ep.reward.tobytes(), ep.terminated, ep.truncated, ep.env_seed,
            tuple((k, v.tobytes()) for k, v in sorted(ep.extras.items())))


def _read_all(path: Path) -> list:
    data = RolloutDataset(path)
    return [(data.lengths.tolist(), data.action_space)] + [_episode_bytes(data[i]) for i in range(len(data))]


@given(file_pick=st.integers(0, 10**6), kind=st.sampled_from(["flip", "truncate", "append", "delete"]),
       where=st.floats(0, 1, exclude_max=True), xor=st.integers(1, 255))
def test_property_random_corruption_is_detected_never_read_silently(small_dataset, file_pick, kind, where, xor):
    import shutil
    import tempfile

    clean, expected = small_dataset
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d"
        shutil.copytree(clean, path)
        files = sorted(p for p in path.rglob("*") if p.is_file())
        victim = files[file_pick % len(files)]
        raw = bytearray(victim.read_bytes())
        at = int(where * len(raw))
        if kind == "flip":
            raw[at] ^= xor
            victim.write_bytes(bytes(raw))
        elif kind == "truncate":
            victim.write_bytes(bytes(raw[:at]))
        elif kind == "append":
            victim.write_bytes(bytes(raw) + bytes([xor]))
        else:
            victim.unlink()
        try:
            got = _read_all(path)
        except (ValueError, FileNotFoundError) as e:  # CorruptDatasetError/CorruptShardError are ValueErrors
            assert victim.name in str(e) or victim.parent.name in str(e), f"error does not name {victim}: {e}"
            return
        # a change that does not alter the content (e.g. whitespace in a JSON file) may read fine: but then
        # every byte a user can read must be the original
        assert got == expected, f"{kind} of {victim.relative_to(path)} at {at} was read silently"


# ------------------------------------------------------------------------------------------------
# disk full / read-only output (faults injected at the write calls: the tests run as root, for whom
# permission bits do not apply, and cannot mount a small file system)


def test_disk_full_names_the_shard_keeps_earlier_shards_and_resumes(tmp_path: Path, monkeypatch) -> None:
    import errno

    from worldmodels.data import format as data_format  # _HashingFile writes every shard file

    clean = collect("ImageNav-v0", tmp_path / "clean", 8, 10, policy=POISSON, episodes_per_shard=2,
                    progress=False)
    real_write, calls = data_format._HashingFile.write, {"n": 0}

    def write(self, b):
        calls["n"] += 1
        if calls["n"] > 2 * 10:  # 10 files per shard, 2 writes each: the third shard finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, b)

    monkeypatch.setattr(data_format._HashingFile, "write", write)
    out = tmp_path / "full"
    with pytest.raises(OSError, match=r"collect: shard shard-0000\d\d: cannot write to .*full: no space left "
                                      r"on the device\. The shards written before it are intact.*resume") as e:
        collect("ImageNav-v0", out, 8, 10, policy=POISSON, episodes_per_shard=2, progress=False)
    assert e.value.errno == errno.ENOSPC
    partial = RolloutDataset(out, verify="open")  # what was written reads back and verifies
    assert 1 <= len(partial.shard_names) < 4 and not partial.complete
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # the partial shard was removed
    for name in partial.shard_names:
        assert _digest(out / name) == _digest(clean / name)
    monkeypatch.setattr(data_format._HashingFile, "write", real_write)  # space freed: the same command resumes
    collect("ImageNav-v0", out, 8, 10, policy=POISSON, episodes_per_shard=2, progress=False)
    assert _digest(out) == _digest(clean)


def test_read_only_output_folder_gives_a_clear_error_and_changes_nothing(tmp_path: Path, monkeypatch) -> None:
    import errno
    import shutil

    out = collect("ImageNav-v0", tmp_path / "d", 4, 10, policy=POISSON, episodes_per_shard=2, progress=False)
    shutil.rmtree(out / "shard-000001")  # as if a run had been interrupted: the next call resumes it
    before = _digest(out)
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **kw):
        if str(self).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(OSError, match=r"collect: shard shard-000001: cannot write to .*: the file system is "
                                      r"read-only\. The shards written before it are intact"):
        collect("ImageNav-v0", out, 4, 10, policy=POISSON, progress=False)  # resume into a read-only folder
    with pytest.raises(OSError, match=r"collect: cannot write to .*new: the file system is read-only\. "
                                      r"Nothing was written"):
        collect("ImageNav-v0", tmp_path / "new", 4, 10, policy=POISSON, progress=False)
    monkeypatch.undo()
    assert _digest(out) == before
