"""KVAE training speed: one epoch of the ``box`` preset (5,000 sequences x 20 frames of 32x32, batch 32).

The epoch time is extrapolated from timed training steps (Adam update included) on random binary
frames of the thesis shape: ``157 steps x median step time``. The baseline, measured in the same
process, is the same model in the default NCHW memory format (our preset runs the convolutions in
``channels_last``, NOTES.md). A second row times ``conv_precision="bfloat16"`` (the encoder/decoder
convolutions under ``torch.autocast``; Kalman smoother, heads and weights in float32) against the
float32 preset. The thesis reports ~55 s per epoch on an NVIDIA Titan X (§6.8).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from worldmodels.api import Batch
from worldmodels.models import build_model

STEPS_PER_EPOCH = 5000 // 32


def _bf16_native() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 / AMX), not emulated."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _step_time(channels_last: bool, steps: int, batch: Batch, precision: str = "float32") -> tuple[float, float]:
    """Median wall-clock and median process CPU time of one training step."""
    torch.manual_seed(0)
    model: Any = build_model("kvae", "box", channels_last=channels_last, conv_precision=precision)
    opt = torch.optim.Adam(model.parameters(), lr=0.007)
    times, cpu = [], []
    for i in range(steps + 2):
        t, c = time.perf_counter(), time.process_time()
        out = model.loss(batch)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 150.0)
        opt.step()
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return sorted(times)[len(times) // 2], sorted(cpu)[len(cpu) // 2]


def run(steps: int = 8) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    batch = Batch(obs=(torch.rand(32, 20, 1, 32, 32, generator=g) > 0.97).float(), action=torch.zeros(32, 20, 0))
    rows = []
    for threads in (2, 1):
        torch.set_num_threads(threads)
        ours, ours_cpu = _step_time(True, steps, batch)
        base, base_cpu = _step_time(False, steps, batch)
        bf, bf_cpu = _step_time(True, steps, batch, "bfloat16")
        epoch, base_epoch = ours * STEPS_PER_EPOCH, base * STEPS_PER_EPOCH
        rows.append({
            "group": "kvae",
            "name": f"box preset, bfloat16 convolutions: one training epoch, {threads} thread(s)",
            "value": round(bf * STEPS_PER_EPOCH, 1), "unit": "s",
            "baseline": "same model, float32 (the row below)", "baseline_value": round(epoch, 1),
            "ratio": round(ours / bf, 2),
            "goal": "<= 60 s on 2 CPU cores (thesis: ~55 s on a Titan X GPU)", "met": bf * STEPS_PER_EPOCH <= 60.0,
            "notes": f"conv_precision='bfloat16' (mixed precision, convolutions only); native bf16 on this CPU: "
                     f"{_bf16_native()}; {bf:.3f} s/step wall, process CPU {bf_cpu * STEPS_PER_EPOCH:.0f} CPU-s "
                     f"per epoch",
        })
        rows.append({
            "group": "kvae",
            "name": f"box preset: one training epoch (5,000 x 20 frames, batch 32), {threads} thread(s)",
            "value": round(epoch, 1), "unit": "s",
            "baseline": "same model, NCHW memory format", "baseline_value": round(base_epoch, 1),
            "ratio": round(base_epoch / epoch, 2),
            "goal": "<= 60 s on 2 CPU cores (thesis: ~55 s on a Titan X GPU)", "met": epoch <= 60.0,
            "notes": f"{STEPS_PER_EPOCH} steps x median of {steps} timed steps ({ours:.3f} s/step wall, "
                     f"baseline {base:.3f} s/step); process CPU time {ours_cpu:.3f} s/step = "
                     f"{ours_cpu * STEPS_PER_EPOCH:.0f} CPU-s per epoch (baseline {base_cpu:.3f} s/step); "
                     f"torch {torch.__version__}; the machine is shared, so wall-clock times are inflated "
                     f"while other jobs run",
        })
    torch.set_num_threads(2)
    return rows
