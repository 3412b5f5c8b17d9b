"""Trainer overhead: ``Trainer.fit`` vs a bare Adam loop on the same model, data and seed.

The bare loop does exactly the numerical work (loss, backward, clip, Adam step); the trainer adds
the batch NaN check, schedules, freezing, metrics to CSV every 10 steps, the tqdm bar, the signal
handlers and one final checkpoint. Goal: overhead <= 5 % (ratio bare/trainer >= 0.95).
Timed alternately in 5 paired rounds (median ratio), 1 thread, in one process.
"""

from __future__ import annotations

import sys
import tempfile
import time

import torch

from worldmodels.api import Batch
from worldmodels.models import build_model
from worldmodels.train import TrainConfig, Trainer

STEPS = 30
ROUNDS = 5


def _data(n: int) -> list[Batch]:
    g = torch.Generator().manual_seed(0)
    return [
        Batch(
            obs=torch.rand(16, 10, 1, 32, 32, generator=g).round(),
            action=torch.nn.functional.one_hot(torch.randint(0, 4, (16, 10), generator=g), 4).float(),
        )
        for _ in range(n)
    ]


def _model():
    torch.manual_seed(0)
    return build_model("rnn", "default", obs_shape=(1, 32, 32), action_dim=4)


def _bare(data: list[Batch]) -> float:
    model = _model().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for b in data:
        loss = model.loss(b).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        opt.step()
    return time.perf_counter() - start


def _trainer(data: list[Batch]) -> float:
    model = _model()
    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(
            lr=1e-3, grad_clip=100.0, epochs=1, out_dir=d, checkpoint_every=0, log_every=10, progress=True
        )
        start = time.perf_counter()
        Trainer(model, data, cfg).fit()
        return time.perf_counter() - start


def run() -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = _data(STEPS)
        _bare(data[:3])  # warm-up
        bare, trainer = [], []
        for _ in range(ROUNDS):
            bare.append(_bare(data))
            trainer.append(_trainer(data))
    finally:
        torch.set_num_threads(threads)
    ratios = sorted(x / y for x, y in zip(bare, trainer))  # paired rounds: robust to load drifting
    ratio = ratios[len(ratios) // 2]
    b, t = sorted(bare)[len(bare) // 2], sorted(trainer)[len(trainer) // 2]
    return [
        {
            "group": "train",
            "name": f"RNN 32x32 B=16 T=10, {STEPS} steps",
            "value": 1000 * t / STEPS,
            "unit": "ms/step",
            "baseline": "bare Adam loop",
            "baseline_value": 1000 * b / STEPS,
            "ratio": ratio,
            "goal": ">= 0.95x (overhead <= 5%)",
            "met": ratio >= 0.95,
            "notes": f"Trainer.fit end to end (CSV every 10 steps, tqdm, final checkpoint); overhead "
            f"{100 * (t / b - 1):.1f}%; median of 5 paired alternating rounds, 1 thread; machine shared with other jobs, python {sys.version.split()[0]}",
        }
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
