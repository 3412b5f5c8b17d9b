"""Trainer: KL annealing, clipping, freezing, bit-exact resume (max_steps and SIGTERM), NaN stop, CSV."""

from __future__ import annotations

import csv
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import nn

import worldmodels
from worldmodels.api import Batch, LossOutput
from worldmodels.models import build_model, register_model
from worldmodels.schedules import kl_beta
from worldmodels.train import NonFiniteError, TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class NoisyConfig:
    obs_shape: tuple[int, ...] = (4,)
    action_dim: int = 1
    PRESETS: ClassVar[dict[str, dict]] = {"debug": {}}


@register_model("_test_noisy")
class Noisy(nn.Module):
    """A stochastic loss (global-RNG noise) with two parameter groups: tests RNG restore and freezing."""

    def __init__(self, config: NoisyConfig):
        super().__init__()
        self.config = config
        self.encoder = nn.Linear(4, 4)
        self.alpha_net = nn.Linear(4, 4)
        self.betas: list[float] = []

    def loss(self, batch: Batch, beta: float = 1.0) -> LossOutput:
        self.betas.append(beta)
        noise = 0.1 * torch.randn_like(batch.obs)
        pred = self.alpha_net(torch.relu(self.encoder(batch.obs + noise)))
        loss = ((pred - batch.obs) ** 2).mean()
        return LossOutput(loss, {"elbo": -float(loss.detach()), "noise": float(noise.abs().mean())})


class Items(torch.utils.data.Dataset):
    """A map-style dataset of dict items with its own collate (like data.WindowDataset)."""

    def __init__(self, n: int = 20, T: int = 3):
        g = torch.Generator().manual_seed(1)
        self.obs = torch.rand(n, T, 4, generator=g)

    def __len__(self) -> int:
        return len(self.obs)

    def __getitem__(self, i: int) -> dict:
        return {"obs": self.obs[i], "action": torch.zeros(self.obs.shape[1], 1)}

    def collate(self, items: list[dict]) -> Batch:
        return Batch(
            obs=torch.stack([it["obs"] for it in items]), action=torch.stack([it["action"] for it in items])
        )


def _noisy() -> Noisy:
    torch.manual_seed(0)
    return Noisy(NoisyConfig())


def _cfg(tmp_path, name: str, **kw) -> TrainConfig:
    base = dict(
        lr=1e-2,
        epochs=3,
        batch_size=4,
        out_dir=str(tmp_path / name),
        progress=False,
        log_every=2,
        checkpoint_every=0,
        lr_schedule="linear",
        lr_final=1e-3,
        lr_decay_steps=10,
        beta0=0.2,
        beta_anneal_steps=7,
        grad_clip=1.0,
        freeze_until={"alpha_net": 1},
    )
    base.update(kw)
    return TrainConfig(**base)


def test_beta_annealing_freezing_and_clipping(tmp_path):
    model = _noisy()
    data = Items(n=8)
    trainer = Trainer(model, data, _cfg(tmp_path, "a", epochs=2, grad_clip=1e-3))
    frozen0 = model.alpha_net.weight.detach().clone()
    enc0 = model.encoder.weight.detach().clone()
    trainer._apply_freeze()
    batch = data.collate([data[i] for i in range(4)])
    trainer.train_step(batch)
    assert torch.equal(model.alpha_net.weight, frozen0), "alpha_net trained in epoch 0 despite freeze_until"
    assert not torch.equal(model.encoder.weight, enc0)
    assert model.alpha_net.weight not in trainer.optimizer.state  # no Adam moments for a frozen group
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert (
        abs(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) - 1e-3) < 1e-7
    )  # clipped
    model.betas.clear()
    result = Trainer(model, data, _cfg(tmp_path, "b", epochs=2)).fit()  # 2 steps / epoch
    assert result.step == 4 and result.epoch == 2 and result.stopped == "completed"
    assert [round(b, 9) for b in model.betas] == [round(kl_beta(s, 0.2, 7), 9) for s in range(4)]
    assert not torch.equal(model.alpha_net.weight, frozen0), "alpha_net must train from epoch 1 on"
    with pytest.raises(ValueError, match="no parameter starts with 'alpah_net'.*did you mean 'alpha_net'"):
        Trainer(model, data, _cfg(tmp_path, "c", freeze_until={"alpah_net": 3}))


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_is_bit_exact_map_dataset(tmp_path):
    """3 epochs uninterrupted == 5 steps, a new process-like Trainer, then the rest (mid-epoch stop)."""
    data = Items(n=18)  # 4 steps per epoch, 2 items dropped
    full = _noisy()
    r = Trainer(full, data, _cfg(tmp_path, "full")).fit()
    assert r.step == 12

    part = _noisy()
    r1 = Trainer(part, data, _cfg(tmp_path, "part", max_steps=5)).fit()
    assert (r1.step, r1.stopped) == (5, "max_steps")
    torch.manual_seed(999)  # resume must not depend on the state of the global RNG
    resumed = _noisy()
    r2 = Trainer(resumed, data, _cfg(tmp_path, "part")).fit()
    assert (r2.step, r2.epoch, r2.stopped) == (12, 3, "completed")
    for k, v in _params(full).items():
        assert torch.equal(v, resumed.state_dict()[k]), f"{k} differs after resume"
    # the CSV of the resumed run equals the uninterrupted one (no duplicated or missing rows)
    rows = lambda name: list(csv.DictReader(open(tmp_path / name / "metrics.csv")))  # noqa: E731
    assert rows("full") == rows("part")
    assert [int(r["step"]) for r in rows("full")] == [2, 4, 6, 8, 10, 12]
    loaded = worldmodels.load(tmp_path / "part" / "last")
    for k, v in _params(full).items():
        assert torch.equal(v, loaded.state_dict()[k])


class KillAt:
    """An iterable of Batch that sends SIGTERM to this process while yielding item ``k`` once."""

    def __init__(self, batches: list[Batch], k: int):
        self.batches, self.k, self.fired = batches, k, False

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for i, b in enumerate(self.batches):
            if i == self.k and not self.fired:
                self.fired = True
                os.kill(os.getpid(), signal.SIGTERM)
            yield b


def test_sigterm_checkpoints_and_resume_is_bit_exact_rnn(tmp_path):
    g = torch.Generator().manual_seed(0)
    batches = [
        Batch(obs=torch.rand(4, 5, 6, generator=g).round(), action=torch.zeros(4, 5, 2)) for _ in range(5)
    ]

    def rnn():
        torch.manual_seed(0)
        return build_model("rnn", "debug", obs_shape=(6,), action_dim=2)

    cfg = dict(freeze_until={}, epochs=2, checkpoint_every=3)
    full = rnn()
    Trainer(full, batches, _cfg(tmp_path, "full", **cfg)).fit()
    part = rnn()
    r1 = Trainer(part, KillAt(batches, 3), _cfg(tmp_path, "part", **cfg)).fit()
    assert r1.stopped == "signal" and r1.step == 4  # the step in flight finishes, then it saves and stops
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))
    resumed = rnn()
    r2 = Trainer(resumed, batches, _cfg(tmp_path, "part", **cfg)).fit()
    assert r2.step == 10
    for k, v in _params(full).items():
        assert torch.equal(v, resumed.state_dict()[k]), f"{k} differs after SIGTERM + resume"


def test_nan_batch_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    g = torch.Generator().manual_seed(0)
    batches = [Batch(obs=torch.rand(4, 3, 4, generator=g), action=torch.zeros(4, 3, 1)) for _ in range(6)]
    batches[4].obs[2, 1, 0] = float("nan")
    model = _noisy()
    with pytest.raises(NonFiniteError, match=r"step 5 .*Batch.obs.*rows \[2\].*last good checkpoint"):
        Trainer(model, batches, _cfg(tmp_path, "nan", checkpoint_every=2, freeze_until={})).fit()
    meta = worldmodels.checkpoint.read_meta(tmp_path / "nan" / "last")
    assert meta["metadata"]["step"] == 4


def test_nan_loss_stops(tmp_path):
    model = _noisy()
    with torch.no_grad():
        model.encoder.weight.fill_(float("inf"))
    batches = [Batch(obs=torch.rand(2, 3, 4), action=torch.zeros(2, 3, 1))]
    with pytest.raises(NonFiniteError, match="step 1 .*loss is nan"):
        Trainer(model, batches, _cfg(tmp_path, "nanloss", freeze_until={})).fit()


def test_validation_metrics_and_csv(tmp_path):
    model = _noisy()
    val = [Batch(obs=torch.rand(2, 3, 4), action=torch.zeros(2, 3, 1)) for _ in range(2)]
    r = Trainer(model, Items(n=8), _cfg(tmp_path, "val", epochs=2, freeze_until={}), val_data=val).fit()
    rows = list(csv.DictReader(open(tmp_path / "val" / "val_metrics.csv")))
    assert [int(x["epoch"]) for x in rows] == [1, 2]
    assert r.val_metrics is not None and abs(r.val_metrics["loss"] + r.val_metrics["elbo"]) < 1e-6
    header = next(csv.reader(open(tmp_path / "val" / "metrics.csv")))
    assert {"step", "epoch", "loss", "elbo", "lr", "beta", "grad_norm", "noise"} <= set(header)


def test_rejects_bad_data():
    model = _noisy()
    with pytest.raises(TypeError, match="iterable of Batch"):
        Trainer(model, 3, TrainConfig(progress=False))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="iterable of Batch, received an item of type int"):
        Trainer(model, [1, 2], TrainConfig(progress=False)).fit()


# a subprocess training the debug RNN on N_BATCHES fixed batches (the DDP and SIGKILL tests)
_RNN_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from worldmodels.api import Batch
from worldmodels.models import build_model
from worldmodels.train import TrainConfig, Trainer
g = torch.Generator().manual_seed(0)
batches = [Batch(obs=torch.rand(4, 5, 6, generator=g).round(), action=torch.zeros(4, 5, 2)) for _ in range(N_BATCHES)]
torch.manual_seed(0)
model = build_model("rnn", "debug", obs_shape=(6,), action_dim=2)
"""

_DDP_SCRIPT = _RNN_SCRIPT.replace("N_BATCHES", "4") + """
Trainer(model, batches, TrainConfig(lr=1e-2, epochs=2, out_dir=sys.argv[1], progress=False, grad_clip=1.0)).fit()
"""


@pytest.mark.slow
def test_ddp_two_processes_gloo_equals_single_process_on_joined_batches(tmp_path):
    """torchrun --nproc_per_node 2: rank r trains on batches r, r+2; DDP averages gradients, which equals
    one process on the joined batches (the loss is a mean over equally many observed steps)."""
    import subprocess
    import sys

    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            str(script),
            str(tmp_path / "ddp"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=os.getcwd(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = worldmodels.load(tmp_path / "ddp" / "last")
    g = torch.Generator().manual_seed(0)
    batches = [
        Batch(obs=torch.rand(4, 5, 6, generator=g).round(), action=torch.zeros(4, 5, 2)) for _ in range(4)
    ]
    joined = [
        Batch(
            obs=torch.cat([batches[i].obs, batches[i + 1].obs]),
            action=torch.cat([batches[i].action, batches[i + 1].action]),
        )
        for i in (0, 2)
    ]
    torch.manual_seed(0)
    single = build_model("rnn", "debug", obs_shape=(6,), action_dim=2)
    Trainer(single, joined, TrainConfig(lr=1e-2, epochs=2, out_dir=None, progress=False, grad_clip=1.0)).fit()
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ddp.state_dict()[k], v, atol=1e-5, rtol=1e-4)
    state = worldmodels.checkpoint.load_state(tmp_path / "ddp" / "last")
    assert state["trainer"]["world_size"] == 2 and len(state["rng"]["torch_per_rank"]) == 2


_KILL_SCRIPT = _RNN_SCRIPT.replace("N_BATCHES", "5") + """
print("ready", flush=True)
Trainer(model, batches, TrainConfig(lr=1e-2, epochs=int(sys.argv[2]), out_dir=sys.argv[1], progress=False,
                                    grad_clip=1.0, checkpoint_every=1, log_every=3)).fit()
"""


def _saved_step(out: Path) -> int:
    try:
        return worldmodels.checkpoint.read_meta(out / "last", verify=False)["metadata"]["step"]
    except (FileNotFoundError, ValueError):
        return -1


def sigkill_resume_trial(out: Path, kills: int, epochs: int, seed: int) -> dict[str, int]:
    """Train in a subprocess, SIGKILL it ``kills`` times, resume until it completes.

    Odd kills land at a random moment; even kills fire as soon as a checkpoint write is in flight (its temp
    folder exists), the moment an overwrite is most fragile. Returns counts: kills injected, kills that
    left an unfinished checkpoint write behind, processes started."""
    import random
    import subprocess
    import sys
    import time

    rng = random.Random(seed)
    counts = {"kills": 0, "mid_write": 0, "runs": 0}
    script = out.parent / "train_kill.py"
    script.write_text(_KILL_SCRIPT)
    while True:
        counts["runs"] += 1
        proc = subprocess.Popen([sys.executable, str(script), str(out), str(epochs)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        if counts["kills"] < kills:
            if counts["kills"] % 2:
                time.sleep(rng.uniform(0.05, 1.0))  # the run takes ~3 s after "ready"
            else:
                deadline = time.monotonic() + rng.uniform(0.1, 1.0)
                while proc.poll() is None and not (time.monotonic() > deadline and any(out.glob(".last.*"))):
                    pass
            if proc.poll() is None:
                step_before = _saved_step(out)
                proc.kill()
                proc.wait()
                counts["kills"] += 1
                counts["mid_write"] += any(out.glob(".last.*"))
                worldmodels.checkpoint.recover(out / "last")  # what the next run's Trainer does first
                assert _saved_step(out) >= step_before, f"kill {counts['kills']} lost saved progress"
                continue
        assert proc.wait(timeout=120) == 0
        return counts


def test_sigkill_at_random_points_then_resume_reaches_the_same_parameters(tmp_path):
    # ~3 s of training after start-up on an idle 2-core machine, so the first kill (<= 1 s) lands; each kill
    # costs up to 1 s of progress, so scripts/reliability.py asks for longer runs when it injects more kills
    epochs = int(os.environ.get("WM_FAULT_EPOCHS", "12"))
    ref_dir = tmp_path / "ref"
    sigkill_resume_trial(ref_dir, kills=0, epochs=epochs, seed=0)
    killed = tmp_path / "killed"
    counts = sigkill_resume_trial(killed, kills=int(os.environ.get("WM_FAULT_KILLS", "3")), epochs=epochs, seed=1)
    assert counts["kills"] >= 1
    ref, got = worldmodels.load(ref_dir / "last"), worldmodels.load(killed / "last")
    assert worldmodels.checkpoint.read_meta(killed / "last")["metadata"]["step"] == 5 * epochs
    for k, v in ref.state_dict().items():
        assert torch.equal(v, got.state_dict()[k]), f"{k} differs after {counts}"
    assert not [p.name for p in killed.iterdir() if p.name.startswith(".")], "temp folders left behind"
    assert (killed / "metrics.csv").read_text() == (ref_dir / "metrics.csv").read_text()  # no lost/doubled rows
    if os.environ.get("WM_FAULT_REPORT"):  # scripts/reliability.py collects the counts
        import json

        Path(os.environ["WM_FAULT_REPORT"]).write_text(json.dumps(counts))


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    from worldmodels import checkpoint as ck

    g = torch.Generator().manual_seed(0)
    batches = [Batch(obs=torch.rand(4, 5, 6, generator=g).round(), action=torch.zeros(4, 5, 2)) for _ in range(5)]
    torch.manual_seed(0)
    model = build_model("rnn", "debug", obs_shape=(6,), action_dim=2)
    cfg = _cfg(tmp_path, "run", freeze_until={}, epochs=2, checkpoint_every=3)
    real_save_file, calls = ck.save_file, {"n": 0}

    def save_file(tensors, filename, *a, **kw):
        calls["n"] += 1
        if calls["n"] > 2:  # the first checkpoint (weights + state) fits, the second finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save_file(tensors, filename, *a, **kw)

    monkeypatch.setattr(ck, "save_file", save_file)
    with pytest.raises(OSError, match=r"checkpoint.save: cannot write to .*last: no space left on the device\. "
                                      r"The previous checkpoint there is intact"):
        Trainer(model, batches, cfg).fit()
    assert ck.read_meta(tmp_path / "run" / "last")["metadata"]["step"] == 3
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["last", "metrics.csv"]  # no temp left
    monkeypatch.undo()
    torch.manual_seed(0)
    resumed = build_model("rnn", "debug", obs_shape=(6,), action_dim=2)
    assert Trainer(resumed, batches, cfg).fit().step == 10


@pytest.mark.slow
def test_torchrun_cli_on_a_dataset_collected_by_two_shards_equals_one_process(tmp_path):
    """Scale-out end to end: `worldmodels collect --shard-index i --num-shards 2` (two processes, one folder)
    equals one collection byte for byte; `torchrun --nproc_per_node 2 -m worldmodels train` with batch 4 per
    process equals one process with batch 8 (rank r takes items r, r+2, ... of the same permutation, so the
    two ranks' batch k is the single run's batch k; DDP averages the gradients of equal-size means).
    Tolerance 1e-5: only the order of float additions differs."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    col = ["collect", "--env", "ImageNav-v0", "--episodes", "8", "--steps", "20", "--episodes-per-shard", "2",
           "--seed", "5", "--no-progress"]
    procs = [subprocess.Popen([sys.executable, "-m", "worldmodels", *col, "--out", str(tmp_path / "split"),
                               "--shard-index", str(i), "--num-shards", "2"], env=env) for i in (0, 1)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    subprocess.run([sys.executable, "-m", "worldmodels", *col, "--out", str(tmp_path / "one")], env=env, check=True)
    from worldmodels.data import RolloutDataset

    split, one = RolloutDataset(tmp_path / "split", verify="open"), RolloutDataset(tmp_path / "one")
    assert split.complete and split.meta["shards"] == one.meta["shards"]  # same files, same sha256 each
    train = ["train", "--model", "rnn", "--config", "debug", "--data", str(tmp_path / "split"), "--window", "8",
             "--steps", "6", "--set", "progress=false", "--set", "lr=1e-2"]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29534", "-m", "worldmodels", *train, "--set", "batch_size=4", "--out", str(tmp_path / "ddp")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    subprocess.run([sys.executable, "-m", "worldmodels", *train, "--set", "batch_size=8", "--out",
                    str(tmp_path / "single")], env=env, check=True, capture_output=True)
    a, b = worldmodels.load(tmp_path / "ddp" / "last"), worldmodels.load(tmp_path / "single" / "last")
    assert worldmodels.checkpoint.read_meta(tmp_path / "ddp" / "last")["metadata"]["step"] == 6
    for k, v in b.state_dict().items():
        torch.testing.assert_close(a.state_dict()[k], v, atol=1e-5, rtol=1e-5)
