"""Benchmarks of worldmodels/data.py: collection frames/s and window loading windows/s.

Rows (ratios measured in the same process):

* collection: ``collect`` of ImageNav-v0 at 64x64 RGB (16 batched envs, Poisson explorer, shards written
  and checksummed) vs. a hand loop over one ``gym.make`` env (reset per episode, same explorer) that
  stores nothing.
* windows (uint8): random windows of L = 32 frames, 64x64 RGB, batches of 64 via
  ``WindowDataset.__getitems__`` from the memory-mapped ``.npy`` shards vs. the same code reading the same
  arrays loaded into RAM (goal >= 5,000 windows/s from disk). The shards were just written, so "disk" is
  the page cache, which is what repeated training epochs see.
* windows (float Batch): the same through ``collate`` to a ``worldmodels.api.Batch`` (float32
  [B, T, C, H, W] in [0, 1], one-hot actions) vs. the uint8 windows.
"""

from __future__ import annotations

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


def _hand_loop_fps(episodes: int) -> float:
    """Naive collection: one ``gym.make`` env, reset per episode, stepped by hand, nothing stored."""
    env = gym.make(ENV, **KW)
    policy = explorer_factory("poisson")(env.action_space)
    t = time.perf_counter()
    for e in range(episodes):
        obs, _ = env.reset(seed=e)
        policy.reset(seed=e)
        for _ in range(STEPS):
            obs, *_ = env.step(policy.act(obs))
    return episodes * (STEPS + 1) / (time.perf_counter() - t)


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
        out = Path(tmp) / "d"
        t = time.perf_counter()
        collect(
            ENV,
            out,
            EPISODES,
            STEPS,
            policy=explorer_factory("poisson"),
            num_envs=16,
            env_kwargs=KW,
            progress=False,
        )
        fps = EPISODES * (STEPS + 1) / (time.perf_counter() - t)
        base = _hand_loop_fps(12)
        rows.append(
            {
                "group": "data",
                "name": "collect ImageNav-v0 64x64 RGB, 16 envs",
                "value": fps,
                "unit": "frames/s",
                "baseline": "single gym.make env, hand loop, no storage",
                "baseline_value": base,
                "ratio": fps / base,
                "goal": ">= 1x",
                "met": fps >= base,
                "notes": f"{EPISODES} episodes x {STEPS} steps, shards written with fsync and sha256",
            }
        )
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
