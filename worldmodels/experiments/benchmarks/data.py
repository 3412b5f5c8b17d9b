"""Benchmarks of worldmodels/data.py: collection frames/s and window loading windows/s.

Rows (ratios measured in the same process):

* collection, for ImageNav-v0 with its defaults (32x32 image, 8x8 RGB crops), ImageNav-v0 at 64x64 RGB
  (64x64 crops of a 128x128 texture) and BouncingBall-v0 (32x32 binary, 20-step episodes):
  ``collect`` with 16 batched envs (Poisson explorer, shards written with fsync and sha256, env
  construction and meta.json included) vs. a hand loop over one ``gym.make`` env (reset per
  episode, same explorer) that stores nothing. Each figure is the best of two runs (the machine is
  shared); ``notes`` also give ``collect`` with ``num_envs=1``.
* windows (uint8): random windows of L = 32 frames, 64x64 RGB, batches of 64 via
  ``WindowDataset.__getitems__`` from the memory-mapped ``.npy`` shards vs. the same code reading the same
  arrays loaded into RAM (goal >= 5,000 windows/s from disk). The shards were just written, so "disk" is
  the page cache, which is what repeated training epochs see.
* windows (float Batch): the same through ``collate`` to a ``worldmodels.api.Batch`` (float32
  [B, T, C, H, W] in [0, 1], one-hot actions) vs. the uint8 windows.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import envs  # noqa: F401
from agents.explorers import explorer_factory
from worldmodels.data import RolloutDataset, WindowDataset, collect

ENV, KW = "ImageNav-v0", {"image_size": 128, "crop_size": 64}
EPISODES, STEPS, L, B = 48, 128, 32, 64
# (row name, env id, kwargs, episodes, steps) of the collection rows
COLLECT = [
    ("ImageNav-v0 32x32 defaults (8x8 RGB crops)", "ImageNav-v0", {}, 96, 128),
    ("ImageNav-v0 64x64 RGB (128x128 image)", ENV, KW, EPISODES, STEPS),
    ("BouncingBall-v0 32x32 binary, 20 steps", "BouncingBall-v0", {}, 512, 20),
]


def _hand_loop_fps(env_id: str, kwargs: dict, episodes: int, steps: int) -> float:
    """Naive collection: one ``gym.make`` env, reset per episode, stepped by hand, nothing stored."""
    env = gym.make(env_id, **kwargs)
    policy = explorer_factory("poisson")(env.action_space)
    t = time.perf_counter()
    frames = 0
    for e in range(episodes):
        obs, _ = env.reset(seed=e)
        policy.reset(seed=e)
        frames += 1
        for _ in range(steps):
            obs, _, terminated, truncated, _ = env.step(policy.act(obs))
            frames += 1
            if terminated or truncated:
                break
    env.close()
    return frames / (time.perf_counter() - t)


def _collect_fps(out: Path, env_id: str, kwargs: dict, episodes: int, steps: int, num_envs: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    collect(env_id, out, episodes, steps, policy=explorer_factory("poisson"), num_envs=num_envs,
            env_kwargs=kwargs, progress=False)
    dt = time.perf_counter() - t
    return int(RolloutDataset(out, verify="none").lengths.sum() + episodes) / dt


def _windows_per_s(win: WindowDataset, batches: int, as_batch: bool, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    idx = [rng.integers(0, len(win), B).tolist() for _ in range(batches)]
    win.__getitems__(idx[0])  # warm-up (lazy checksum of touched shards)
    t = time.perf_counter()
    for i in idx:
        raw = win.__getitems__(i)
        if as_batch:
            win.collate(raw)
    return batches * B / (time.perf_counter() - t)


def run() -> list[dict]:
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, env_id, kwargs, episodes, steps in COLLECT:
            out = Path(tmp) / "d"
            fps = max(_collect_fps(out, env_id, kwargs, episodes, steps, 16) for _ in range(2))
            one = _collect_fps(out, env_id, kwargs, max(episodes // 4, 1), steps, 1)
            base = max(_hand_loop_fps(env_id, kwargs, max(episodes // 4, 1), steps) for _ in range(2))
            rows.append(
                {
                    "group": "data",
                    "name": f"collect {name}, 16 envs",
                    "value": fps,
                    "unit": "frames/s",
                    "baseline": "single gym.make env, hand loop, no storage",
                    "baseline_value": base,
                    "ratio": fps / base,
                    "goal": ">= 5x",
                    "met": fps >= 5 * base,
                    "notes": f"{episodes} episodes x {steps} steps, shards written with fsync and sha256; "
                    f"num_envs=1: {one:,.0f} frames/s ({one / base:.2f}x)",
                }
            )
        out = Path(tmp) / "d"
        _collect_fps(out, ENV, KW, EPISODES, STEPS, 16)  # the dataset of the window rows
        data = RolloutDataset(out, verify="open")
        size = data.summary().splitlines()[-1].strip()
        disk = WindowDataset(data, L)
        ram_data = RolloutDataset(out, verify="open")
        for s in range(len(ram_data.shard_names)):  # the same arrays, copied into RAM
            ram_data._arrays[s] = {k: np.array(v) for k, v in ram_data.shard_arrays(s).items()}
        ram = WindowDataset(ram_data, L)
        d_u8 = max(_windows_per_s(disk, 30, False, r) for r in range(2))
        m_u8 = max(_windows_per_s(ram, 30, False, r) for r in range(2))
        rows.append(
            {
                "group": "data",
                "name": f"windows uint8 L={L} 64x64x3 from disk (mmap)",
                "value": d_u8,
                "unit": "windows/s",
                "baseline": "same windows from in-RAM numpy",
                "baseline_value": m_u8,
                "ratio": d_u8 / m_u8,
                "goal": ">= 5,000 windows/s",
                "met": d_u8 >= 5000,
                "notes": f"batches of {B} via WindowDataset.__getitems__; dataset {size}",
            }
        )
        d_f = max(_windows_per_s(disk, 15, True, r) for r in range(2))
        rows.append(
            {
                "group": "data",
                "name": f"windows float Batch L={L} 64x64x3 from disk",
                "value": d_f,
                "unit": "windows/s",
                "baseline": "uint8 windows from disk",
                "baseline_value": d_u8,
                "ratio": d_f / d_u8,
                "goal": "",
                "met": None,
                "notes": "collate: float32 [B, T, C, H, W] in [0, 1] + one-hot actions, 1 torch thread; bound by writing "
                "4 bytes per pixel (a bare uint8->float32 conversion of the batch takes the same time here)",
            }
        )
    return rows
