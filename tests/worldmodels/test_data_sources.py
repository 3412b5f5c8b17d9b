"""Collection from any Gymnasium env (issue #18, item 1): ``module:Id`` and MiniWorld ids, env factories and
instances, ``obs_size`` area resize (against independent oracles), frames from ``render()``, episodes stored
without padding (format 2) and datasets of format 1 still read (and resumed) as before."""

from __future__ import annotations

import functools
import hashlib
import math
import shutil
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import envs  # noqa: F401
from agents.explorers import UniformRandom, explorer_factory
from worldmodels.cli import main
from worldmodels.data import RolloutDataset, WindowDataset, area_resize, collect, episode_seeds

FIXTURE_V1 = Path(__file__).parent / "fixtures" / "rollouts-format1"
POISSON = explorer_factory("poisson")  # the CLI's default policy


def _hand_rollout(env: gym.Env, seed: int, index: int, steps: int, policy, render: bool = False) -> dict:
    """The oracle: one plain env stepped by hand with episode ``index``'s seeds; frames from render() if asked."""
    env_seed, policy_seed = episode_seeds(seed, index)
    obs, _ = env.reset(seed=env_seed)
    pi = policy(env.action_space)
    pi.reset(seed=policy_seed)
    frames, actions = [env.render() if render else obs], []
    for _ in range(steps):
        a = pi.act(obs)
        obs, _, terminated, truncated, _ = env.step(a)
        frames.append(env.render() if render else obs)
        actions.append(a)
        if terminated or truncated:
            break
    return {"frames": np.stack(frames), "action": np.array(actions), "terminated": terminated}


def _block_means(frames: np.ndarray, k: int) -> np.ndarray:
    """``k x k`` block means of ``[T, H, W, C]`` frames rounded half up: the area resize by an integer factor."""
    T, H, W, C = frames.shape
    return np.floor(frames.reshape(T, H // k, k, W // k, k, C).mean((2, 4)) + 0.5).astype(np.uint8)


def _assert_unpadded_on_disk(data: RolloutDataset) -> None:
    """Every shard's files hold exactly sum(length + 1) frames and sum(length) actions, nothing more."""
    for s, info in enumerate(data.shard_info):
        lengths = np.array(info["lengths"])
        raw = data.shard_arrays(s)
        assert raw["obs"].shape == (int((lengths + 1).sum()), *data.frame_shape)
        assert raw["action"].shape[0] == raw["reward"].shape[0] == int(lengths.sum())
        path = data.path / data.shard_names[s] / "obs.npy"
        with open(path, "rb") as f:
            np.lib.format.read_magic(f)
            np.lib.format.read_array_header_1_0(f)
            header = f.tell()
        assert path.stat().st_size == header + raw["obs"].nbytes, "obs.npy holds more than its header and frames"


def _episodes_equal(a: RolloutDataset, b: RolloutDataset) -> None:
    assert a.lengths.tolist() == b.lengths.tolist()
    for i in range(len(a)):
        x, y = a[i], b[i]
        np.testing.assert_array_equal(x.obs, y.obs)
        np.testing.assert_array_equal(x.action, y.action)
        np.testing.assert_array_equal(x.reward, y.reward)
        assert (x.terminated, x.truncated, x.env_seed) == (y.terminated, y.truncated, y.env_seed)
        assert x.extras.keys() == y.extras.keys()
        for k in x.extras:
            np.testing.assert_array_equal(x.extras[k], y.extras[k])


# ------------------------------------------------------------------------------------------ the done-when


def test_cli_collects_cartpole_render_frames_resized_unpadded(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cartpole"
    assert main(["collect", "--env", "CartPole-v1", "--out", str(out), "--episodes", "3", "--steps", "40",
                 "--obs-size", "64", "64", "--seed", "1", "--no-progress"]) == 0
    std = capsys.readouterr()
    data = RolloutDataset(out, verify="open")
    assert data.frame_shape == (64, 64, 3) and data.meta["obs_size"] == [64, 64]
    assert data.meta["observation"] == {"source": "render", "shape": [64, 64, 3], "dtype": "uint8",
                                        "env_shape": [400, 600, 3], "resize": "area"}
    hand = gym.make("CartPole-v1", render_mode="rgb_array")
    for i in range(3):
        ref, ep = _hand_rollout(hand, 1, i, 40, POISSON, render=True), data[i]
        assert ep.length == len(ref["action"]) and ep.terminated == ref["terminated"]
        np.testing.assert_array_equal(ep.obs, area_resize(ref["frames"], (64, 64), axes=(1, 2)))
        np.testing.assert_array_equal(ep.action, ref["action"])
        assert ep.extras["env_obs"].shape == (ep.length + 1, 4)
    assert data.lengths.min() < 40  # a random CartPole falls within 40 steps: said, not hidden
    short = int((data.lengths < 40).sum())
    assert f"ended    {short} of 3 episodes before 40 steps" in std.out
    assert f"note: {short} of 3 episodes ended before --steps 40" in std.err
    _assert_unpadded_on_disk(data)
    windows = WindowDataset(data, 8)  # windows stay inside episodes, as before
    assert len(windows) == int(np.maximum(data.lengths + 1 - 8 + 1, 0).sum())


def test_cli_collects_a_module_id_env_resized_unpadded(tmp_path: Path, capsys) -> None:
    kw = {"image_size": 160, "crop_size": 128, "n_positions": 3}  # 128x128 crops -> 64x64: 2x2 block means
    out = tmp_path / "nav"
    assert main(["collect", "--env", "envs:ImageNavGoal-v0", "--out", str(out), "--episodes", "4",
                 "--steps", "12", "--num-envs", "2", "--obs-size", "64", "64", "--seed", "3",
                 "--env-kwargs", '{"image_size": 160, "crop_size": 128, "n_positions": 3}', "--no-progress"]) == 0
    capsys.readouterr()
    data = RolloutDataset(out, verify="open")
    assert data.meta["env_id"] == "envs:ImageNavGoal-v0" and data.frame_shape == (64, 64, 3)
    hand = gym.make("ImageNavGoal-v0", **kw)
    for i in range(4):
        ref, ep = _hand_rollout(hand, 3, i, 12, POISSON), data[i]
        assert ep.length == len(ref["action"])
        np.testing.assert_array_equal(ep.obs, _block_means(ref["frames"], 2))
        np.testing.assert_array_equal(ep.action, ref["action"])
    assert len(set(data.lengths.tolist())) > 1 and data.lengths.min() < 12  # some reach the goal early
    _assert_unpadded_on_disk(data)


# ------------------------------------------------------------------------------------------ env ids


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch):
    """A package ``wm_tp_pkg.envs_mod`` that registers ``ThirdPartyNav-v0`` when imported (and nothing else)."""
    pkg = tmp_path / "wm_tp_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "envs_mod.py").write_text(
        "from gymnasium.envs.registration import register\n"
        "register('ThirdPartyNav-v0', entry_point='envs.image_nav:ImageNavEnv', max_episode_steps=100,\n"
        "         kwargs={'goal': True, 'n_positions': 3})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "wm_tp_pkg.envs_mod:ThirdPartyNav-v0"
    gym.registry.pop("ThirdPartyNav-v0", None)
    for m in ("wm_tp_pkg.envs_mod", "wm_tp_pkg"):
        sys.modules.pop(m, None)


def test_a_third_party_module_id_is_imported_then_collected(tmp_path: Path, third_party: str) -> None:
    assert "ThirdPartyNav-v0" not in gym.registry
    data = RolloutDataset(collect(third_party, tmp_path / "d", 3, 8, policy=POISSON, progress=False))
    same = RolloutDataset(collect("ImageNavGoal-v0", tmp_path / "e", 3, 8, policy=POISSON, progress=False,
                                  env_kwargs={"n_positions": 3}))
    _episodes_equal(data, same)
    assert data.meta["env_id"] == third_party


def test_bad_module_ids_say_what_failed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="importing 'wm_no_such_pkg' .which registers it. failed"):
        collect("wm_no_such_pkg:Nav-v0", tmp_path / "d", 1, 1, policy=POISSON)
    with pytest.raises(ValueError, match="module 'envs' was imported but does not register 'ImageNv-v0'.*"
                                         "Did you mean 'ImageNav-v0'"):
        collect("envs:ImageNv-v0", tmp_path / "d", 1, 1, policy=POISSON)
    assert not (tmp_path / "d").exists()


def test_miniworld_plain_ids_import_miniworld_headless(tmp_path: Path) -> None:
    pytest.importorskip("miniworld")
    data = RolloutDataset(collect("MiniWorld-OneRoom-v0", tmp_path / "d", 2, 4, policy=UniformRandom,
                                  obs_size=(30, 40), progress=False))
    assert data.frame_shape == (30, 40, 3) and data.meta["observation"]["env_shape"] == [60, 80, 3]
    hand = gym.make("MiniWorld-OneRoom-v0")
    for i in range(2):
        ref = _hand_rollout(hand, 0, i, 4, UniformRandom)
        np.testing.assert_array_equal(data[i].obs, _block_means(ref["frames"], 2))
    hand.close()


# ------------------------------------------------------------------------------------------ factories, instances


def _goal_nav(**kwargs) -> gym.Env:
    """An env factory: ImageNavGoal with 3x3 positions (episodes end early at the goal)."""
    return gym.make("envs:ImageNavGoal-v0", n_positions=3, **kwargs)


@pytest.fixture(scope="module")
def by_id(tmp_path_factory) -> RolloutDataset:
    out = tmp_path_factory.mktemp("by_id") / "d"
    return RolloutDataset(collect("ImageNavGoal-v0", out, 5, 10, policy=POISSON, seed=4, progress=False,
                                  env_kwargs={"n_positions": 3}))


def test_an_env_factory_collects_the_same_episodes_as_the_id(tmp_path: Path, by_id: RolloutDataset) -> None:
    data = RolloutDataset(collect(_goal_nav, tmp_path / "d", 5, 10, policy=POISSON, seed=4, progress=False))
    _episodes_equal(data, by_id)
    assert data.meta["env_id"].endswith("_goal_nav") and data.meta["env_source"]["kind"] == "factory"
    # the same factory resumes (does nothing); another one is a different dataset
    collect(_goal_nav, data.path, 5, 10, policy=POISSON, seed=4, progress=False)
    with pytest.raises(FileExistsError, match="env_id: dataset has"):
        collect(functools.partial(gym.make, id="ImageNavGoal-v0"), data.path, 5, 10, policy=POISSON, seed=4)


@pytest.mark.slow  # two spawned workers start Python, numpy, gymnasium: ~10 s here
def test_an_env_factory_in_spawned_workers(tmp_path: Path, by_id: RolloutDataset) -> None:
    data = RolloutDataset(collect(_goal_nav, tmp_path / "d", 5, 10, policy=POISSON, seed=4, num_envs=2,
                                  progress=False))  # AsyncVectorEnv (spawn): the factory pickles by reference
    _episodes_equal(data, by_id)


def test_env_instances_collect_the_same_episodes_and_stay_open(tmp_path: Path, by_id: RolloutDataset) -> None:
    env = gym.make("ImageNavGoal-v0", n_positions=3)
    data = RolloutDataset(collect(env, tmp_path / "d", 5, 10, policy=POISSON, seed=4, progress=False))
    _episodes_equal(data, by_id)
    assert data.meta["env_id"] == "ImageNavGoal-v0" and data.meta["env_source"]["class"] == "envs.image_nav.ImageNavEnv"
    env.reset(seed=0)  # not closed: still the caller's
    vec = gym.make_vec("ImageNavGoal-v0", 3, vectorization_mode="vector_entry_point", n_positions=3)
    _episodes_equal(RolloutDataset(collect(vec, tmp_path / "v", 5, 10, policy=POISSON, seed=4, progress=False)),
                    by_id)
    with pytest.raises(ValueError, match="an env instance is one env, expected num_envs=1, received 2"):
        collect(env, tmp_path / "x", 1, 2, policy=POISSON, num_envs=2)
    with pytest.raises(ValueError, match="not to an env instance"):
        collect(env, tmp_path / "x", 1, 2, policy=POISSON, env_kwargs={"n_positions": 4})
    with pytest.raises(TypeError, match="expected an env id .str., an env factory"):
        collect(3, tmp_path / "x", 1, 2, policy=POISSON)


def test_non_image_instances_and_factories_render_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="observations are not images .* expected render_mode='rgb_array'"):
        collect(gym.make("CartPole-v1"), tmp_path / "x", 1, 2, policy=POISSON)
    with pytest.raises(ValueError, match="expected the factory to take render_mode='rgb_array'"):
        collect(lambda: gym.make("CartPole-v1"), tmp_path / "x", 1, 2, policy=POISSON)
    env = gym.make("CartPole-v1", render_mode="rgb_array")
    a = RolloutDataset(collect(env, tmp_path / "a", 2, 6, policy=POISSON, obs_size=(40, 60), progress=False))
    b = RolloutDataset(collect(functools.partial(gym.make, id="CartPole-v1"), tmp_path / "b", 2, 6, policy=POISSON,
                               obs_size=(40, 60), progress=False))  # called again with render_mode="rgb_array"
    c = RolloutDataset(collect("CartPole-v1", tmp_path / "c", 2, 6, policy=POISSON, obs_size=(40, 60),
                               progress=False))
    _episodes_equal(a, c)
    _episodes_equal(b, c)
    assert c.frame_shape == (40, 60, 3) and c.extras == ["env_obs"]
    with pytest.raises(FileExistsError, match=r"obs_size: dataset has \[40, 60\], requested None"):
        collect("CartPole-v1", tmp_path / "c", 2, 6, policy=POISSON)
    with pytest.raises(ValueError, match="expected obs_size .height, width. of positive ints, received"):
        collect("CartPole-v1", tmp_path / "y", 2, 6, policy=POISSON, obs_size=(0, 4))


# ------------------------------------------------------------------------------------------ area resize


def _area_oracle(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Area resize by definition: on a grid of (H h) x (W w) cells an input pixel is a block of h x w cells
    (np.repeat) and an output pixel a block of H x W cells: its value is the mean of those cells (exact integer
    sums, rounded half up)."""
    H, W = img.shape[:2]
    fine = np.repeat(np.repeat(img.astype(np.int64), h, 0), w, 1)  # [H h, W w, ...]
    sums = fine.reshape(h, H, w, W, *img.shape[2:]).sum((1, 3))
    return ((2 * sums + H * W) // (2 * H * W)).astype(np.uint8)


def test_area_resize_by_integer_factors_is_block_means() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 96, 120, 3), dtype=np.uint8)
    for k in (2, 3, 4, 8):
        np.testing.assert_array_equal(area_resize(frames, (96 // k, 120 // k), axes=(1, 2)), _block_means(frames, k))
    gray = rng.integers(0, 256, (64, 32), dtype=np.uint8)
    np.testing.assert_array_equal(area_resize(gray, (16, 8)), _block_means(gray[None, ..., None], 4)[0, ..., 0])
    assert area_resize(frames, (96, 120), axes=(1, 2)) is frames
    const = np.full((7, 11, 3), 200, np.uint8)
    assert (area_resize(const, (3, 5)) == 200).all() and (area_resize(const, (20, 30)) == 200).all()


@given(H=st.integers(1, 14), W=st.integers(1, 14), h=st.integers(1, 14), w=st.integers(1, 14),
       seed=st.integers(0, 2**16))
def test_property_area_resize_matches_the_definition(H: int, W: int, h: int, w: int, seed: int) -> None:
    img = np.random.default_rng(seed).integers(0, 256, (H, W, 2), dtype=np.uint8)
    np.testing.assert_array_equal(area_resize(img, (h, w)), _area_oracle(img, h, w))
    # the batch axes do not matter
    np.testing.assert_array_equal(area_resize(img[None].repeat(2, 0), (h, w), axes=(1, 2))[1], _area_oracle(img, h, w))


def test_area_resize_of_cartpole_sized_frames_agrees_with_the_definition() -> None:
    img = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)  # 400x600 / 10, 64x64 / 10
    np.testing.assert_array_equal(area_resize(img, (7, 7)), _area_oracle(img, 7, 7))
    assert math.gcd(40, 7) == 1 and math.gcd(60, 7) == 1  # every output edge cuts a pixel


def test_area_resize_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="expected uint8 frames, received dtype float32"):
        area_resize(np.zeros((4, 4), np.float32), (2, 2))
    with pytest.raises(ValueError, match="expected size .height, width. of positive ints"):
        area_resize(np.zeros((4, 4), np.uint8), (2, 0))
    with pytest.raises(ValueError, match="expected two distinct axes"):
        area_resize(np.zeros((4, 4), np.uint8), (2, 2), axes=(1, 1))


# ------------------------------------------------------------------------------------------ format 1 datasets


def _fixture_args() -> tuple[tuple, dict]:
    return ("ImageNavGoal-v0",), {"episodes": 5, "steps": 12, "policy": explorer_factory("poisson", lam=2.0),
                                  "seed": 2, "episodes_per_shard": 2, "env_kwargs": {"n_positions": 3},
                                  "progress": False}


def _digest(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_format_1_datasets_read_as_the_same_episodes_and_windows(tmp_path: Path) -> None:
    old = RolloutDataset(FIXTURE_V1, verify="open")
    assert old.meta["format_version"] == 1 and old.lengths.tolist() == [12, 7, 12, 12, 4]
    assert old.shard_arrays(0)["obs"].shape == (2, 13, 8, 8, 3)  # padded on disk
    assert not old.shard_arrays(0)["obs"][1, 8:].any()
    (env,), kw = _fixture_args()
    new = RolloutDataset(collect(env, tmp_path / "d", **kw))
    assert new.meta["format_version"] == 2 and new.shard_arrays(0)["obs"].shape == (13 + 8, 8, 8, 3)
    _episodes_equal(old, new)
    for key in ("obs", "action", "reward", "pose", "length", "terminated"):
        np.testing.assert_array_equal(old.padded(key), new.padded(key))
    for L, across in ((4, False), (9, False), (6, True)):
        a, b = WindowDataset(old, L, across_episodes=across), WindowDataset(new, L, across_episodes=across)
        assert len(a) == len(b) > 0
        every = list(range(len(a)))
        x, y = a.collate(a.__getitems__(every)), b.collate(b.__getitems__(every))
        for name in ("obs", "action", "is_first", "state"):
            torch.testing.assert_close(getattr(x, name), getattr(y, name), rtol=0, atol=0)
    assert "(format 1, seed 2)" in old.summary() and "ended    2 of 5 episodes before 12 steps" in old.summary()


def test_resuming_a_format_1_dataset_writes_format_1_bit_for_bit(tmp_path: Path) -> None:
    out = tmp_path / "old"
    shutil.copytree(FIXTURE_V1, out)
    shutil.rmtree(out / "shard-000001")  # as if the collection had been killed before this shard
    (env,), kw = _fixture_args()
    collect(env, out, **kw)
    assert _digest(out) == _digest(FIXTURE_V1)
