"""GTM-SM training update of the MiniWorld walking agent (issue #16): the ``miniworld_walk`` model of
``worldmodels experiment gtmsm-miniworld --agent walk`` (B = 16, T = 182: τ = 150 memorised + 32 scored, 32x32 RGB
frames, displacement loss on the pose), before and after session #16's changes.

An update is loss + backward + Adam step, on the same random frames, actions and poses every time. Paths:

* ``loop``: the momentum transition as the step-by-step autograd loop (``gtmsm_scan.step_by_step()``) and the
  conv encoder/decoder in contiguous format (``channels_last=False``): the update before #16;
* ``fused``: the fused momentum scan (``gtmsm_scan.momentum_scan``), contiguous convs;
* ``fused_cl``: the fused scan and channels-last convs (the defaults now);
* ``fused_cl_bf16``: the same with the VAE in bfloat16 (``vae_precision="bfloat16"``, opt-in: other numbers).

The paths run in two worker processes, one with glibc's default ``malloc`` and one after
:func:`worldmodels.malloc.keep_freed_memory` (what the experiment's training phase calls; it cannot be undone in a
process). Every round times each path of both workers in turn (one worker runs while the other waits, so both see
the same machine load); a ratio is the median over the rounds of the per-round ratio. Code ratios (``fused_cl`` vs
``loop``) are measured inside one process; the allocator's share across the two, in the same rounds. Minor page
faults per update and the load average at the start are in the notes.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

UPDATES, ROUNDS = 4, 5
THESIS_UPDATES = 100_000  # §7.7.2
PATHS = {"default": ("loop", "fused_cl"), "keep": ("loop", "fused", "fused_cl", "fused_cl_bf16")}
_TAG = "@@ "  # prefix of the worker's protocol lines on stdout
_MODULE = __spec__.name if __spec__ is not None else __name__  # also when run with python -m


def _setup():  # noqa: ANN202
    """The experiment's walking model (float32 and a bfloat16-VAE copy), their optimizers and one batch."""
    import torch

    from worldmodels.api import Batch
    from worldmodels.experiments.gtmsm_miniworld import PROTOCOLS, Args, build

    args = Args(agent="walk")
    torch.manual_seed(0)
    model = build(args, "gtmsm", 3).train()
    bf16 = build(Args(agent="walk", vae_precision="bfloat16"), "gtmsm", 3).train()
    bf16.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(0)
    B, T = args.batch_size, PROTOCOLS["walk"].train_len
    first = torch.zeros(B, T, dtype=torch.bool)
    first[:, 0] = True
    pose = torch.cumsum(0.1 * torch.randn(B, T, 3, generator=g), 1)  # a random walk (x, y, θ)
    batch = Batch(obs=torch.rand(B, T, 3, 32, 32, generator=g),
                  action=torch.eye(3)[torch.randint(0, 3, (B, T), generator=g)], is_first=first, state=pose)
    opts = {id(m): torch.optim.Adam(m.parameters(), lr=1e-3) for m in (model, bf16)}
    return model, bf16, opts, batch


def _time(model, bf16, opts, batch, path: str, updates: int) -> tuple[float, float]:  # noqa: ANN001
    """Seconds and minor page faults per update of ``path``."""
    from worldmodels.models.gtmsm_scan import step_by_step

    m = bf16 if path == "fused_cl_bf16" else model
    m.encoder.channels_last = m.decoder.channels_last = path.startswith("fused_cl")
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(updates):
        with step_by_step() if path == "loop" else contextlib.nullcontext():
            loss = m.loss(batch).loss
            opts[id(m)].zero_grad(set_to_none=True)
            loss.backward()
            opts[id(m)].step()
    seconds = (time.perf_counter() - start) / updates
    return seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / updates


def _worker(malloc: str) -> None:
    """Worker loop: one JSON command per stdin line (``{"path", "threads", "updates"}`` or ``{"rss": true}``)."""
    if malloc == "keep":
        from worldmodels.malloc import keep_freed_memory

        keep_freed_memory()
    import torch

    model, bf16, opts, batch = _setup()
    for path in PATHS[malloc]:  # warm-up: numba's compiled scans, the first allocations
        _time(model, bf16, opts, batch, path, 1)
    print(_TAG + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("rss"):
            out: dict = {"max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        else:
            torch.set_num_threads(cmd["threads"])
            s, faults = _time(model, bf16, opts, batch, cmd["path"], cmd["updates"])
            out = {"s": s, "faults": faults}
        print(_TAG + json.dumps(out), flush=True)


class _Worker:
    def __init__(self, malloc: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", _MODULE, "--worker", malloc], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.ask(None)

    def ask(self, cmd: dict | None) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if cmd is not None:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(_TAG):
                return json.loads(line[len(_TAG):])
        raise RuntimeError(f"gtmsm_miniworld_train: the worker exited with {self.proc.wait()}")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _median(v: list[float]) -> float:
    return sorted(v)[len(v) // 2]


def run(threads: tuple[int, ...] = (2, 1)) -> list[dict]:
    """Rows for each thread count in ``threads`` (``make bench``: 2 and 1)."""
    load = os.getloadavg()[0]
    workers = {m: _Worker(m) for m in PATHS}
    rows: list[dict[str, Any]] = []
    try:
        for n in threads:
            t: dict[tuple[str, str], list[float]] = {(m, p): [] for m in PATHS for p in PATHS[m]}
            faults: dict[tuple[str, str], list[float]] = {k: [] for k in t}
            for _ in range(ROUNDS):
                for m, w in workers.items():
                    for p in PATHS[m]:
                        r = w.ask({"path": p, "threads": n, "updates": UPDATES})
                        t[m, p].append(r["s"])
                        faults[m, p].append(r["faults"])

            def ratio(base: tuple[str, str], new: tuple[str, str]) -> float:
                return _median([b / a for a, b in zip(t[new], t[base])])  # noqa: B023

            med = {k: _median(v) for k, v in t.items()}
            flt = {k: _median(v) for k, v in faults.items()}
            old = ("default", "loop")
            per_hour = {k: 3600 / v for k, v in med.items()}
            th = f"{n} thread{'s' if n > 1 else ''}"
            common = (f"load average {load:.2f} at the start; median of {ROUNDS} paired rounds of {UPDATES} updates; "
                      f"minor page faults per update: before {flt[old]:,.0f}")
            rows.append({
                "group": "gtmsm_miniworld_train",
                "name": f"walking update B=16 T=182, {th}: fused momentum scan + channels-last convs",
                "value": 1000 * med["default", "fused_cl"], "unit": "ms/update",
                "baseline": "step-by-step loop, contiguous convs (before #16), same process", "baseline_value":
                    1000 * med[old], "ratio": ratio(old, ("default", "fused_cl")), "goal": "", "met": None,
                "notes": f"glibc's default malloc in both; {common}, after {flt['default', 'fused_cl']:,.0f}",
            })
            new = ("keep", "fused_cl")
            rows.append({
                "group": "gtmsm_miniworld_train",
                "name": f"walking update B=16 T=182, {th}: + keep_freed_memory (what the experiment trains with)",
                "value": 1000 * med[new], "unit": "ms/update",
                "baseline": "step-by-step loop, contiguous convs, default malloc (before #16)",
                "baseline_value": 1000 * med[old], "ratio": ratio(old, new),
                "goal": "updates per hour for the thesis budget of 100,000 (§7.7.2)", "met": None,
                "notes": f"{per_hour[new]:,.0f} updates/hour, {THESIS_UPDATES:,} updates in "
                         f"{THESIS_UPDATES / per_hour[new]:.1f} h (before: {per_hour[old]:,.0f}/hour, "
                         f"{THESIS_UPDATES / per_hour[old]:.1f} h); the two sides run in two processes, alternately "
                         f"in each round; inside the keep_freed_memory process: fused scan alone "
                         f"{ratio(('keep', 'loop'), ('keep', 'fused')):.2f}x, fused scan + channels-last "
                         f"{ratio(('keep', 'loop'), new):.2f}x the loop; {common}, after {flt[new]:,.0f}",
            })
            bf = ("keep", "fused_cl_bf16")
            rows.append({
                "group": "gtmsm_miniworld_train",
                "name": f"walking update B=16 T=182, {th}: + VAE in bfloat16 (vae_precision, opt-in)",
                "value": 1000 * med[bf], "unit": "ms/update",
                "baseline": "step-by-step loop, contiguous convs, default malloc (before #16)",
                "baseline_value": 1000 * med[old], "ratio": ratio(old, bf), "goal": "", "met": None,
                "notes": f"{per_hour[bf]:,.0f} updates/hour; {ratio(new, bf):.2f}x the float32 VAE in the same "
                         f"process; bfloat16 changes the numbers (the encoder and decoder outputs to ~1e-2)",
            })
        rss = {m: w.ask({"rss": True})["max_rss_mb"] for m, w in workers.items()}
        for r in rows:
            r["notes"] += f"; peak resident memory {rss['default']:,.0f} MB (default) / {rss['keep']:,.0f} MB (kept)"
    finally:
        for w in workers.values():
            w.close()
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker(sys.argv[2])
    else:
        for row in run(tuple(int(v) for v in sys.argv[1:]) or (2, 1)):
            print(row)
