"""One :class:`Trainer` for every model (thesis §4.8.1 training tricks switched by config).

What the trainer does: Adam with a constant / linear / step-decay learning rate, gradient-norm
clipping, KL annealing (``beta`` from ``beta0`` to 1, passed to ``model.loss(batch, beta=...)``),
alternating parameter groups (``freeze_until``: a parameter-name prefix is trained only from a given
epoch on; KVAE's mixture network), a tqdm bar, metrics to ``out_dir/metrics.csv`` (and TensorBoard
when installed), checkpoints every ``checkpoint_every`` steps, at the end and on SIGTERM/SIGINT,
exact resume from ``out_dir/last`` (weights, optimizer, step/epoch, RNG states and the position in
the data), DDP when started with ``torchrun`` (gloo on CPU, nccl on GPU). A NaN/inf in a batch, the
loss or the gradient norm stops training with :class:`NonFiniteError` naming the step; the last good
checkpoint is kept.

Training data, two kinds:

* a map-style ``torch.utils.data.Dataset``: the trainer draws a fresh permutation every epoch from
  ``(seed, epoch)`` (sharded over DDP ranks, last incomplete batch dropped) and collates items into a
  :class:`~worldmodels.api.Batch` with ``collate_fn`` (the Trainer argument, else the dataset's
  ``collate`` / ``collate_fn`` attribute, else :func:`collate_batches`, which stacks ``Batch`` items or
  dicts with ``obs``/``action``/``mask``/``is_first``/``state`` tensors);
* any re-iterable of ready ``Batch`` objects (a list, a generator factory object); it is iterated once
  per epoch in its own order, and on resume the batches already used in the epoch are skipped.

The schedules (:func:`~worldmodels.schedules.kl_beta`, :func:`~worldmodels.schedules.learning_rate`)
are plain functions in :mod:`worldmodels.schedules`; model-side tricks live in the model config (free
bits via :func:`worldmodels.schedules.free_bits_kl`, reconstruction weights, variance floors).
:func:`train_on_dataset` is what ``worldmodels train`` runs: a dataset folder, a registered model, its
config preset and training recipe (``TRAIN_PRESETS``) and explicit overrides.

Example:
    >>> import torch, tempfile
    >>> from worldmodels.api import Batch
    >>> from worldmodels.models import build_model
    >>> model = build_model("rnn", "debug", obs_shape=(4,), action_dim=2)
    >>> data = [Batch(obs=torch.rand(8, 5, 4).round(), action=torch.zeros(8, 5, 2)) for _ in range(3)]
    >>> cfg = TrainConfig(epochs=2, lr=1e-2, out_dir=tempfile.mkdtemp(), progress=False)
    >>> result = Trainer(model, data, cfg).fit()
    >>> result.step, result.stopped
    (6, 'completed')
"""

from __future__ import annotations

import atexit
import csv
import dataclasses
import difflib
import math
import os
import random
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from worldmodels import checkpoint
from worldmodels.api import Batch, WorldModel
from worldmodels.data import collate_batches, iterate_batches
from worldmodels.data.windows import _collate_of, _is_map_dataset
from worldmodels.schedules import LR_SCHEDULES, kl_beta, learning_rate

__all__ = [
    "TrainConfig",
    "Trainer",
    "TrainResult",
    "NonFiniteError",
    "collate_batches",
    "iterate_batches",
    "train_on_dataset",
]


_TRAIN_FLOATS = ("lr", "lr_final", "decay_rate", "grad_clip", "beta0", "weight_decay")
_TRAIN_INTS = ("lr_decay_steps", "decay_every", "beta_anneal_steps", "epochs", "max_steps", "batch_size", "seed",
               "checkpoint_every", "log_every", "val_every", "num_workers")


@dataclass
class TrainConfig:
    """Everything the trainer needs; model hyper-parameters live in the model config.

    Attributes:
        lr: initial learning rate of Adam.
        lr_schedule: ``"constant"``; ``"linear"`` from ``lr`` to ``lr_final`` over ``lr_decay_steps``
            steps (0 = over this run's epochs / max_steps), constant afterwards; ``"step"``: ``lr x decay_rate`` every
            ``decay_every`` epochs (KVAE: 0.85 every 20).
        lr_final, lr_decay_steps, decay_rate, decay_every: schedule parameters, see above.
        grad_clip: maximum global gradient norm (``None``: no clipping; the norm is still logged).
        beta0, beta_anneal_steps: KL weight ``beta`` goes linearly from ``beta0`` to 1 over that many
            steps (§4.8.1); ``beta_anneal_steps = 0`` means ``beta = 1`` throughout.
        epochs: passes over the training data; ``max_steps`` stops earlier when set.
        batch_size: per process, for map-style datasets (ignored for iterables of ``Batch``).
        seed: seeds the data order and, on a fresh run, torch / numpy / random (``seed + rank``).
        out_dir: where ``last/`` (checkpoint), ``metrics.csv`` and ``val_metrics.csv`` go; ``None``
            trains in memory only (no checkpoints, no resume).
        checkpoint_every: steps between checkpoints (0 = only at the end / on a signal).
        log_every: steps between CSV rows (each row averages the steps since the previous one).
        val_every: epochs between validation passes over ``val_data``.
        freeze_until: parameter-name prefix -> first epoch (0-based) in which it is trained
            (KVAE: ``{"alpha_net": 10}``).
        weight_decay: Adam's L2 penalty.
        num_workers: DataLoader workers for map-style datasets (exact resume needs items that do
            not draw from the global RNG when > 0).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        progress: show a tqdm bar.
        tensorboard: also log to TensorBoard when ``tensorboard`` is installed.
    """

    lr: float = 1e-3
    lr_schedule: str = "constant"
    lr_final: float = 0.0
    lr_decay_steps: int = 0
    decay_rate: float = 0.85
    decay_every: int = 20
    grad_clip: float | None = None
    beta0: float = 1.0
    beta_anneal_steps: int = 0
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    seed: int = 0
    out_dir: str | None = None
    checkpoint_every: int = 1000
    log_every: int = 10
    val_every: int = 1
    freeze_until: dict[str, int] = field(default_factory=dict)
    weight_decay: float = 0.0
    num_workers: int = 0
    device: str = "cpu"
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            close = difflib.get_close_matches(self.lr_schedule, LR_SCHEDULES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"TrainConfig.lr_schedule: expected one of {LR_SCHEDULES}, received "
                f"{self.lr_schedule!r}{hint}"
            )
        for name in _TRAIN_FLOATS + _TRAIN_INTS:
            v, kind = getattr(self, name), "an int" if name in _TRAIN_INTS else "a finite number"
            if v is None and name in ("grad_clip", "max_steps"):
                continue
            ok = isinstance(v, int | np.integer) if name in _TRAIN_INTS else isinstance(v, int | float | np.number)
            if isinstance(v, bool) or not ok or not math.isfinite(v):
                raise ValueError(f"TrainConfig.{name}: expected {kind}, received {v!r}")
        for name in ("lr_final", "lr_decay_steps", "beta_anneal_steps", "checkpoint_every", "weight_decay",
                     "num_workers", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name}: expected >= 0, received {getattr(self, name)}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"TrainConfig.grad_clip: expected > 0 or None, received {self.grad_clip}")
        for name in ("lr", "decay_rate", "batch_size", "epochs", "decay_every", "log_every", "val_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name}: expected > 0, received {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"TrainConfig.max_steps: expected >= 0 or None, received {self.max_steps}")
        if not 0.0 <= self.beta0 <= 1.0:
            raise ValueError(f"TrainConfig.beta0: expected in [0, 1], received {self.beta0}")


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        step: optimizer steps done in total (including resumed ones).
        epoch: completed epochs.
        stopped: ``"completed"`` (all epochs), ``"max_steps"`` or ``"signal"`` (SIGTERM/SIGINT).
        metrics: training metrics averaged over the last logging interval.
        val_metrics: metrics of the last validation pass (``None`` without ``val_data``).
        checkpoint: path of ``out_dir/last`` (``None`` without ``out_dir``).
    """

    step: int
    epoch: int
    stopped: str
    metrics: dict[str, float]
    val_metrics: dict[str, float] | None
    checkpoint: Path | None


class NonFiniteError(ValueError):
    """NaN/inf in a batch, a loss or a gradient; the message names the step."""


# ----------------------------------------------------------------------------- the trainer


class _LossModule(nn.Module):
    """``forward(batch, beta) -> (loss, metrics)`` so that DDP's gradient hooks see the call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch, beta: float) -> tuple[Tensor, dict[str, float]]:
        out = cast(WorldModel, self.model).loss(batch, beta=beta)  # models are nn.Module + WorldModel
        return out.loss, out.metrics


def _destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class Trainer:
    """Train any world model (anything with ``loss(batch, beta) -> LossOutput``) on rollout batches.

    Args:
        model: the model; for checkpoints it must be registered (``@register_model``) with ``.config``.
        train_data: a map-style Dataset (items collated to ``Batch``) or a re-iterable of ``Batch``.
        config: :class:`TrainConfig`.
        val_data: optional, same kinds as ``train_data``; evaluated every ``val_every`` epochs.
        collate_fn: items -> ``Batch`` for map-style datasets (default: see module docstring).

    Call :meth:`fit`; it resumes from ``out_dir/last`` when that exists.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Iterable[Batch] | torch.utils.data.Dataset,
        config: TrainConfig,
        val_data: Iterable[Batch] | torch.utils.data.Dataset | None = None,
        collate_fn: Callable[[list[Any]], Batch] | None = None,
    ):
        if not callable(getattr(model, "loss", None)):
            raise TypeError(
                f"Trainer: expected a model with .loss(batch, beta), received {type(model).__name__}"
            )
        self.config = cfg = config
        self.train_data, self.val_data = train_data, val_data
        self.collate_fn = collate_fn
        self._map = _is_map_dataset(train_data)
        if not self._map and not isinstance(train_data, Iterable):
            raise TypeError(
                f"Trainer: expected a torch Dataset or an iterable of Batch, "
                f"received {type(train_data).__name__}"
            )
        if not self._map and iter(train_data) is train_data and cfg.epochs > 1:  # type: ignore[call-overload]
            raise ValueError(
                "Trainer: train_data is a one-shot iterator; pass a list or a re-iterable for epochs > 1"
            )

        # distributed set-up (torchrun sets WORLD_SIZE / RANK / LOCAL_RANK)
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if self.world_size > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
            dist.init_process_group(backend=backend)
            atexit.register(_destroy_process_group)  # we created it: tear it down before the interpreter does
        self.rank = dist.get_rank() if self.world_size > 1 else 0
        if cfg.device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            device = cfg.device
        if device == "cuda" and self.world_size > 1:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        self.device = torch.device(device)

        self.model = model.to(self.device)
        self._loss_module: nn.Module = _LossModule(self.model)
        if self.world_size > 1:
            self._loss_module = nn.parallel.DistributedDataParallel(
                self._loss_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self.named_params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        names = [n for n, _ in self.named_params]
        for prefix in cfg.freeze_until:
            if not any(n.startswith(prefix) for n in names):
                tops = sorted({n.split(".")[0] for n in names})
                close = difflib.get_close_matches(prefix, tops, n=3)
                hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
                raise ValueError(
                    f"TrainConfig.freeze_until: no parameter starts with {prefix!r} "
                    f"(top-level modules: {tops}){hint}"
                )
        self.optimizer = torch.optim.Adam(
            [p for _, p in self.named_params], lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.step = 0  # optimizer updates done
        self.epoch = 0  # completed epochs
        self.step_in_epoch = 0  # batches consumed in the current epoch (this rank)
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir else None
        self._stop_signal: int | None = None
        self._frozen: list[nn.Parameter] = []
        self._csv: Any = None
        self._csv_writer: csv.DictWriter | None = None
        self._tb: Any = None
        self.val_metrics: dict[str, float] | None = None
        self._sums: dict[str, float] = {}  # metrics summed since the last CSV row
        self._count = 0
        self._total = self.total_steps()

    # --------------------------------------------------------------- data

    def steps_per_epoch(self) -> int | None:
        """Optimizer steps per epoch for this process (``None`` for iterables without a length)."""
        if self._map:
            n = len(self.train_data) // self.world_size  # type: ignore[arg-type]
            return n // self.config.batch_size
        if hasattr(self.train_data, "__len__"):
            return len(self.train_data) // self.world_size  # type: ignore[arg-type]
        return None

    def total_steps(self) -> int | None:
        spe = self.steps_per_epoch()
        total = spe * self.config.epochs if spe is not None else None
        if self.config.max_steps is not None:
            total = self.config.max_steps if total is None else min(total, self.config.max_steps)
        return total

    def _epoch_batches(self, epoch: int, start: int) -> Iterator[Batch]:
        cfg = self.config
        if self._map:
            n = len(self.train_data)  # type: ignore[arg-type]
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            perm = torch.randperm(n, generator=g)
            mine: list[int] = perm[: n - n % self.world_size][self.rank :: self.world_size].tolist()
            nb = len(mine) // cfg.batch_size
            if nb == 0:
                raise ValueError(
                    f"Trainer: the dataset has {n} items for {self.world_size} process(es), fewer "
                    f"than batch_size={cfg.batch_size}"
                )
            index_batches = [mine[i * cfg.batch_size : (i + 1) * cfg.batch_size] for i in range(start, nb)]
            if not index_batches:
                return
            yield from torch.utils.data.DataLoader(
                self.train_data,  # type: ignore[arg-type]
                batch_sampler=index_batches,
                collate_fn=_collate_of(self.train_data, self.collate_fn),
                num_workers=cfg.num_workers,
                # own generator: a DataLoader iterator otherwise draws its worker seed from the global
                # RNG, which would make the global RNG depend on where in the epoch a run resumed
                generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch + 7),
            )
        else:
            k = 0
            assert isinstance(self.train_data, Iterable)  # checked in __init__
            for i, b in enumerate(self.train_data):
                if i % self.world_size != self.rank:
                    continue
                if k >= start:
                    if not isinstance(b, Batch):
                        raise TypeError(
                            f"Trainer: expected an iterable of Batch, received an item of type "
                            f"{type(b).__name__}"
                        )
                    yield b
                k += 1

    # --------------------------------------------------------------- one update

    def _apply_freeze(self) -> None:
        frozen = {
            p
            for prefix, first in self.config.freeze_until.items()
            if self.epoch < first
            for n, p in self.named_params
            if n.startswith(prefix)
        }
        self._frozen = [p for _, p in self.named_params if p in frozen]

    def _nonfinite(self, what: str) -> NonFiniteError:
        return NonFiniteError(
            f"training stopped at step {self.step + 1} (epoch {self.epoch}): {what}; "
            f"the last good checkpoint is kept" + (f" in {self.out_dir / 'last'}" if self.out_dir else "")
        )

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimizer update on ``batch``; returns the logged values of this step."""
        cfg = self.config
        batch = batch.to(self.device)
        try:
            batch.check_finite()
        except ValueError as e:
            raise self._nonfinite(str(e)) from None
        beta = kl_beta(self.step, cfg.beta0, cfg.beta_anneal_steps)
        lr = learning_rate(cfg, self.step, self.epoch, self._total)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        loss, metrics = self._loss_module(batch, beta)
        if not bool(torch.isfinite(loss)):
            raise self._nonfinite(f"the loss is {float(loss.detach())}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for p in self._frozen:
            p.grad = None  # Adam skips parameters without a gradient: frozen moments stay untouched
        grads = [p for _, p in self.named_params if p.grad is not None]
        max_norm = cfg.grad_clip if cfg.grad_clip is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(grads, max_norm)) if grads else 0.0
        if not math.isfinite(grad_norm):
            raise self._nonfinite(f"the gradient norm is {grad_norm}")
        self.optimizer.step()
        self.step += 1
        self.step_in_epoch += 1
        row = {"loss": float(loss.detach()), "grad_norm": grad_norm, "lr": lr, "beta": beta}
        row.update({k: float(v) for k, v in metrics.items()})
        return row

    # --------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Training state for exact resume (no model weights)."""
        rng: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        if self.world_size > 1:
            own = torch.get_rng_state().to(self.device)
            gathered = [torch.empty_like(own) for _ in range(self.world_size)]
            dist.all_gather(gathered, own)
            rng["torch_per_rank"] = [g.cpu() for g in gathered]
        return {
            "trainer": {
                "log_sums": dict(self._sums),
                "log_count": self._count,
                "step": self.step,
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "world_size": self.world_size,
            },
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "train_config": dataclasses.asdict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        t = state["trainer"]
        if t["world_size"] != self.world_size:
            raise ValueError(
                f"Trainer: the checkpoint was written by {t['world_size']} process(es), this run has "
                f"{self.world_size}; the data position cannot be restored"
            )
        self.step, self.epoch, self.step_in_epoch = t["step"], t["epoch"], t["step_in_epoch"]
        self._sums, self._count = dict(t.get("log_sums", {})), int(t.get("log_count", 0))
        self.optimizer.load_state_dict(state["optimizer"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch_per_rank"][self.rank] if "torch_per_rank" in rng else rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def save_checkpoint(self) -> Path | None:
        """Write ``out_dir/last`` (rank 0 only; all ranks take part in gathering the RNG states)."""
        if self.out_dir is None:
            return None
        state = self.state_dict()
        path = self.out_dir / "last"
        if self.rank == 0:
            checkpoint.save(
                path, self.model, extra_state=state, metadata={"step": self.step, "epoch": self.epoch}
            )
        if self.world_size > 1:
            dist.barrier()
        return path

    def _resume(self) -> bool:
        if self.out_dir is None:
            return False
        if self.rank == 0:
            checkpoint.recover(self.out_dir / "last")
        if self.world_size > 1:
            dist.barrier()  # rank 0 may have just put a killed run's checkpoint back in place
        if not (self.out_dir / "last").exists():
            return False
        path = self.out_dir / "last"
        meta = checkpoint.read_meta(path)
        name = getattr(type(self.model), "model_name", None)
        if meta["model"] != name:
            raise ValueError(
                f"Trainer: {path} holds a {meta['model']!r} model, training a {name!r}; use another out_dir"
            )
        from safetensors.torch import load_file

        weights = load_file(str(path / "model.safetensors"), device=str(self.device))
        self.model.load_state_dict(weights)
        state = checkpoint.load_state(path)
        if state is None:
            raise ValueError(f"Trainer: {path} has no training state to resume from")
        self.load_state_dict(state)
        return True

    # --------------------------------------------------------------- logging

    def _open_logs(self, resumed: bool) -> None:
        if self.out_dir is None or self.rank != 0:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.csv", "val_metrics.csv"):
            p = self.out_dir / name
            if p.exists():
                if not resumed:
                    p.unlink()
                    continue
                with open(p, newline="") as f:  # drop rows logged after the checkpoint
                    rows = list(csv.DictReader(f))
                    fields = list(rows[0].keys()) if rows else []
                # rows after the last regular one are re-averaged from the restored accumulators
                last_regular = self.step - self.step % self.config.log_every
                keep = [r for r in rows if int(r["step"]) <= last_regular or name.startswith("val")]
                keep = [r for r in keep if int(r["step"]) <= self.step]
                tmp = p.with_suffix(".csv.tmp")
                with open(tmp, "w", newline="") as f:
                    if fields:
                        w = csv.DictWriter(f, fieldnames=fields)
                        w.writeheader()
                        w.writerows(keep)
                os.replace(tmp, p)
        if self.config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self.step)
            except Exception:  # tensorboard not installed
                self._tb = None

    def _log(self, name: str, row: dict[str, float]) -> None:
        if self.out_dir is None or self.rank != 0:
            return
        p = self.out_dir / name
        row = {"step": self.step, "epoch": self.epoch, **row}
        new = not p.exists() or p.stat().st_size == 0
        if not new:
            with open(p, newline="") as f:
                fields = next(csv.reader(f))
        else:
            fields = list(row)
        with open(p, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        if self._tb is not None:
            tag = "val" if name.startswith("val") else "train"
            for k, v in row.items():
                if k not in ("step", "epoch"):
                    self._tb.add_scalar(f"{tag}/{k}", v, self.step)

    # --------------------------------------------------------------- validation

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean metrics (``loss``, ``elbo``, ...) over ``val_data`` with ``beta = 1``, in eval mode.

        Runs under a forked RNG with a fixed seed so it neither depends on nor disturbs training.
        """
        assert self.val_data is not None
        self.model.eval()
        sums: dict[str, float] = {}
        n = 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed + 12345)
            for b in iterate_batches(self.val_data, self.config.batch_size, self.collate_fn):
                out = cast(WorldModel, self.model).loss(b.to(self.device), beta=1.0)
                vals = {"loss": float(out.loss), **{k: float(v) for k, v in out.metrics.items()}}
                for k, v in vals.items():
                    sums[k] = sums.get(k, 0.0) + v * b.shape[0]
                n += b.shape[0]
        self.model.train()
        if n == 0:
            raise ValueError("Trainer: val_data produced no batches")
        return {k: v / n for k, v in sums.items()}

    # --------------------------------------------------------------- the loop

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_signal = signum

    def _should_stop(self) -> bool:
        flag = self._stop_signal is not None
        if self.world_size > 1:
            t = torch.tensor([1 if flag else 0], device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item())
        return flag

    def fit(self) -> TrainResult:
        """Train until ``epochs`` or ``max_steps``; resumes from ``out_dir/last`` when it exists."""
        cfg = self.config
        resumed = self._resume()
        if not resumed:
            torch.manual_seed(cfg.seed + self.rank)
            np.random.seed(cfg.seed + self.rank)
            random.seed(cfg.seed + self.rank)
        self._total = self.total_steps()
        if cfg.lr_schedule == "linear":
            learning_rate(cfg, 0, 0, self._total)  # fail early without a horizon
        self._open_logs(resumed)
        handlers: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers[sig] = signal.signal(sig, self._on_signal)
        bar = tqdm(
            total=self._total,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            disable=not cfg.progress or self.rank != 0,
            desc="train",
        )
        stopped = "completed"
        last: dict[str, float] = {}
        try:
            while self.epoch < cfg.epochs:
                if cfg.max_steps is not None and self.step >= cfg.max_steps:
                    stopped = "max_steps"
                    break
                self._apply_freeze()
                for batch in self._epoch_batches(self.epoch, self.step_in_epoch):
                    row = self.train_step(batch)
                    for k, v in row.items():
                        self._sums[k] = self._sums.get(k, 0.0) + v
                    self._count += 1
                    bar.update(1)
                    if self.step % cfg.log_every == 0:
                        last = {k: v / self._count for k, v in self._sums.items()}
                        self._log("metrics.csv", last)
                        bar.set_postfix(
                            {k: f"{last[k]:.4g}" for k in ("loss", "elbo", "lr", "beta") if k in last},
                            refresh=False,
                        )
                        self._sums, self._count = {}, 0
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                        self.save_checkpoint()
                    if self._should_stop():
                        stopped = "signal"
                        break
                    if cfg.max_steps is not None and self.step >= cfg.max_steps:
                        stopped = "max_steps"
                        break
                else:
                    self.epoch += 1
                    self.step_in_epoch = 0
                    if self.val_data is not None and self.epoch % cfg.val_every == 0:
                        self.val_metrics = self.validate()
                        self._log("val_metrics.csv", self.val_metrics)
                    continue
                break
            if self._count:  # a partial interval: logged now, re-averaged if this run is resumed
                last = {k: v / self._count for k, v in self._sums.items()}
                self._log("metrics.csv", last)
            path = self.save_checkpoint()
        finally:
            bar.close()
            for sig, h in handlers.items():
                signal.signal(sig, h)
            if self._tb is not None:
                self._tb.close()
                self._tb = None
        if stopped == "completed" and cfg.max_steps is not None and self.step >= cfg.max_steps:
            stopped = "max_steps" if self.epoch < cfg.epochs else "completed"
        return TrainResult(self.step, self.epoch, stopped, last, self.val_metrics, path)


# ----------------------------------------------------------------------------- a dataset folder


def train_on_dataset(
    model_name: str,
    data_dir: str | os.PathLike,
    preset: str = "default",
    model_overrides: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike | None = None,
    steps: int | None = None,
    window: int = 20,
    val_fraction: float = 0.0,
    heads: Sequence[str] = (),
    frozen: str | os.PathLike | None = None,
) -> TrainResult:
    """What ``worldmodels train`` does: windows of a dataset folder -> a registered model -> :class:`Trainer`.

    The model config: preset ``preset`` of the model (:func:`worldmodels.models.make_config`) with
    ``obs_shape`` and ``action_dim`` from the dataset's ``meta.json``, then ``model_overrides``. The
    :class:`TrainConfig`, lowest precedence first: its defaults, the model's training recipe for
    ``preset`` (:func:`worldmodels.models.train_preset`), ``out_dir`` (default ``runs/MODEL-PRESET``)
    and ``steps``, then ``train_overrides``. ``steps`` sets ``max_steps`` (above all) and lifts the
    epoch limit unless ``train_overrides`` sets ``epochs``.

    ``heads`` (``"reward"``, ``"cont"``) wraps the model in :class:`~worldmodels.models.with_heads.WithHeads`
    (the checkpoint is then a ``with_heads`` model): trained jointly with the ELBO (the recipe's
    ``freeze_until`` prefixes are moved under ``model.``), or, with ``frozen`` (a checkpoint folder or
    shipped name whose model is ``model_name``), post hoc on that frozen model: only the heads learn, with
    the ``TrainConfig`` defaults and ``train_overrides`` (no recipe; ``preset`` and ``model_overrides``
    are not used), default ``out_dir`` ``runs/MODEL-heads``.

    Example (not run: it trains):
        train_on_dataset("kvae", "data/ball", "box", train_overrides={"lr": 3e-3}, steps=5000)
        train_on_dataset("kvae", "data/ball", heads=("reward",), frozen="runs/kvae-box/last", steps=2000)
    """
    from worldmodels.data import WindowDataset
    from worldmodels.models import config_from_dict, get_model_class, make_config, train_preset
    from worldmodels.models.with_heads import WithHeads

    for what, over in (("model_overrides", model_overrides), ("train_overrides", train_overrides)):
        if over is not None and not isinstance(over, Mapping):
            raise TypeError(
                f"train_on_dataset: expected {what} as a dict {{field: value}}, received "
                f"{type(over).__name__} {over!r} (the CLI parses `--set key=value` into these dicts)"
            )
    model_over = dict(model_overrides or {})
    train_over = dict(train_overrides or {})
    heads = tuple(heads)
    if any(h not in ("reward", "cont") for h in heads) or len(set(heads)) != len(heads):
        raise ValueError(f"train_on_dataset: expected heads among 'reward', 'cont', received {list(heads)}")
    if frozen is not None and not heads:
        raise ValueError("train_on_dataset: frozen trains heads on a frozen model; expected heads, received none")
    if frozen is not None and model_over:
        raise ValueError(f"train_on_dataset: the frozen model keeps its config; received model_overrides "
                         f"{sorted(model_over)}")
    if frozen is None:
        values = train_preset(model_name, preset)  # raises naming the config names for an unknown preset
        values["out_dir"] = str(out_dir or Path("runs") / f"{model_name}-{preset}")
        if heads and "freeze_until" in values:  # the wrapped model's parameters are named model.*
            values["freeze_until"] = {f"model.{k}": v for k, v in values["freeze_until"].items()}
    else:
        values = {"out_dir": str(out_dir or Path("runs") / f"{model_name}-heads")}
    if steps is not None and "epochs" not in train_over:
        values["epochs"] = 10**9  # --steps counts the updates, not the recipe's epochs
    values.update(train_over)
    if steps is not None:
        values["max_steps"] = steps
    cfg: TrainConfig = config_from_dict(TrainConfig, values)
    windows = WindowDataset(data_dir, length=window)
    frame = tuple(windows.data.frame_shape)  # uint8 (H, W) or (H, W, C), channels-last
    H, W, C = (*frame, 1) if len(frame) == 2 else frame
    model_over.setdefault("obs_shape", (C, H, W))
    model_over.setdefault("action_dim", windows.action_dim)
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed only (DDP then broadcasts rank 0's)
    model: nn.Module
    if frozen is None:
        model = get_model_class(model_name)(make_config(model_name, preset, **model_over))
    else:
        model = checkpoint.load(frozen)
        name = getattr(type(model), "model_name", None)
        frozen_config = cast(Any, model).config
        shapes = (tuple(frozen_config.obs_shape), int(frozen_config.action_dim))
        if name != model_name or shapes != ((C, H, W), windows.action_dim):
            raise ValueError(
                f"train_on_dataset: expected the frozen checkpoint to hold model {model_name!r} for frames "
                f"{(C, H, W)} and {windows.action_dim} actions (the dataset's), received {name!r} for "
                f"frames {shapes[0]} and {shapes[1]} actions"
            )
    if heads:
        model = WithHeads(model, reward="reward" in heads, cont="cont" in heads, frozen=frozen is not None)
    train_set: Any = windows
    val_set = None
    if val_fraction > 0:
        n_val = max(1, int(len(windows) * val_fraction))
        idx = torch.randperm(len(windows), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        train_set = torch.utils.data.Subset(windows, idx[n_val:])
        val_set = torch.utils.data.Subset(windows, idx[:n_val])
    return Trainer(model, train_set, cfg, val_data=val_set, collate_fn=windows.collate).fit()
