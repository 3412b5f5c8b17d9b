"""GTM-SM training update, ``imagenav`` preset (B = 16, T = 288: τ = 256 memorised + 32 scored, wall gate on):
the fused wall-transition scan (``worldmodels.models.gtmsm_scan``) against the step-by-step autograd loop of
the same model (the implementation before session 4), same process, same random data; and the fused scan with
the VAE in bfloat16 (``vae_precision="bfloat16"``) against the same loop.

An update is loss + backward + Adam step. Timed in 5 paired alternating rounds of 20 updates (median
ratio); 2 threads and 1 thread. Goal (issue #14): 50,000 updates in <= 30 min, i.e. <= 36 ms per update on
the 2 cores with nothing else running; the load average at the start is in the notes.
"""

from __future__ import annotations

import contextlib
import os
import time

import torch

from worldmodels.api import Batch
from worldmodels.models import build_model
from worldmodels.models.gtmsm_scan import step_by_step

UPDATES, ROUNDS = 20, 5


def _setup(**kw):  # noqa: ANN003, ANN202
    torch.manual_seed(0)
    model = build_model("gtmsm", "imagenav", wall_gate_from=0, **kw).train()
    g = torch.Generator().manual_seed(0)
    B, T = 16, 288
    first = torch.zeros(B, T, dtype=torch.bool)
    first[:, 0] = True
    batch = Batch(obs=torch.rand(B, T, 3, 8, 8, generator=g),
                  action=torch.eye(5)[torch.randint(0, 5, (B, T), generator=g)], is_first=first)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3), batch


def _time(model, opt, batch: Batch, fused: bool) -> float:  # noqa: ANN001
    start = time.perf_counter()
    for _ in range(UPDATES):
        with contextlib.nullcontext() if fused else step_by_step():
            loss = model.loss(batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return (time.perf_counter() - start) / UPDATES


def run() -> list[dict]:
    threads = torch.get_num_threads()
    load = os.getloadavg()[0]
    rows = []
    try:
        for n, precision in ((2, "float32"), (1, "float32"), (2, "bfloat16")):
            torch.set_num_threads(n)
            model, opt, batch = _setup(vae_precision=precision)
            _time(model, opt, batch, True), _time(model, opt, batch, False)  # warm-up (numba compile/cache)
            fused, loop = [], []
            for _ in range(ROUNDS):
                fused.append(_time(model, opt, batch, True))
                loop.append(_time(model, opt, batch, False))
            ratio = sorted(b / a for a, b in zip(fused, loop))[ROUNDS // 2]
            f, b = sorted(fused)[ROUNDS // 2], sorted(loop)[ROUNDS // 2]
            rows.append({
                "group": "gtmsm_train",
                "name": f"ImageNav update B=16 T=288, {n} thread{'s' if n > 1 else ''}"
                        + (", VAE in bfloat16" if precision == "bfloat16" else ""),
                "value": 1000 * f, "unit": "ms/update",
                "baseline": "step-by-step autograd loop (sessions 1-3)", "baseline_value": 1000 * b,
                "ratio": ratio,
                "goal": "<= 36 ms (50,000 updates <= 30 min) on 2 threads" if n == 2 else "",
                "met": 1000 * f <= 36 if n == 2 else None,
                "notes": f"50,000 updates: {50_000 * f / 60:.0f} min (loop: {50_000 * b / 60:.0f} min); load average "
                         f"{load:.2f} at the start; median of {ROUNDS} paired rounds of {UPDATES} updates"
                         + ("; the loop baseline also runs its VAE in bfloat16" if precision == "bfloat16" else ""),
            })
    finally:
        torch.set_num_threads(threads)
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
