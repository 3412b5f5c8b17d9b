"""JSB-chorales-style polyphonic music built from the Bach chorales that ``music21`` ships.

The thesis's music experiment (§5.4, Table 5.2) uses the JSB chorales of Boulanger-Lewandowski et al.
(2012): 88-key piano rolls sampled at quarter-note resolution, split 229/76/77. Those files are not
redistributable here, so we rebuild a comparable set from the chorales in the ``music21`` corpus
(``music21.corpus.chorales.Iterator()``: 371 Riemenschneider numbers, 350 unique files).

Construction (fixed, documented):

* one entry per unique file, numbered by its *first* Riemenschneider number ``n`` (1..371);
* every note of every part is sounding at quarter-note sample time ``k`` (``k = 0, 1, ...,
  ceil(highestTime) - 1`` in quarter lengths from the first beat) when ``onset <= k < onset + duration``;
  rests are silent frames, grace notes (duration 0) are dropped;
* keys are MIDI pitches 21 (A0) .. 108 (C8), column ``pitch - 21``;
* split by number: ``n % 5 == 0`` -> test, ``n % 5 == 3`` -> valid, otherwise train (about 60/20/20).

The built set is cached as ``jsb_chorales_music21_v1.npz`` under ``$WORLDMODELS_DATA`` (default
``~/.cache/worldmodels``), written atomically; later calls load it in milliseconds.

Example:
    >>> from worldmodels.music import build_chorales
    >>> data = build_chorales(numbers=[1, 2], progress=False)
    >>> [r.shape[1] for r in data.rolls]
    [88, 88]
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmodels.api import Batch

__all__ = [
    "N_KEYS",
    "LOWEST_MIDI",
    "FORMAT_VERSION",
    "ChoraleSet",
    "data_dir",
    "split_of",
    "piano_roll",
    "build_chorales",
    "load_chorales",
    "load_reference_npz",
    "MusicBuckets",
    "transpose_rolls",
    "evaluate_elbo",
    "evaluate_elbo_weighted",
    "evaluate_fivo",
    "pad_batch",
]

N_KEYS = 88
LOWEST_MIDI = 21
FORMAT_VERSION = 1
CACHE_NAME = f"jsb_chorales_music21_v{FORMAT_VERSION}.npz"
SPLITS = ("train", "valid", "test")


def data_dir() -> Path:
    """The user data directory: ``$WORLDMODELS_DATA`` or ``~/.cache/worldmodels``."""
    return Path(os.environ.get("WORLDMODELS_DATA", Path.home() / ".cache" / "worldmodels")).expanduser()


def split_of(number: int) -> str:
    """The split of Riemenschneider chorale ``number``: test if ``n % 5 == 0``, valid if ``n % 5 == 3``.

    Example:
        >>> [split_of(n) for n in (1, 3, 5, 8, 10)]
        ['train', 'valid', 'test', 'valid', 'test']
    """
    if number < 1:
        raise ValueError(f"split_of: expected a chorale number >= 1, received {number}")
    return "test" if number % 5 == 0 else ("valid" if number % 5 == 3 else "train")


@dataclass
class ChoraleSet:
    """Piano rolls of chorales with their numbers and corpus names.

    Attributes:
        rolls: list of ``[T_i, 88]`` uint8 binary piano rolls.
        numbers: Riemenschneider number of each roll.
        names: ``music21`` corpus name of each roll (e.g. ``"bach/bwv269"``).
    """

    rolls: list[np.ndarray]
    numbers: list[int]
    names: list[str]

    def split(self, name: str) -> ChoraleSet:
        """The subset of split ``name`` (``"train"``, ``"valid"`` or ``"test"``)."""
        if name not in SPLITS:
            raise ValueError(f"ChoraleSet.split: expected one of {SPLITS}, received {name!r}")
        keep = [i for i, n in enumerate(self.numbers) if split_of(n) == name]
        return ChoraleSet([self.rolls[i] for i in keep], [self.numbers[i] for i in keep],
                          [self.names[i] for i in keep])

    @property
    def n_frames(self) -> int:
        return int(sum(len(r) for r in self.rolls))

    def __len__(self) -> int:
        return len(self.rolls)


def piano_roll(score: object, resolution: float = 1.0) -> np.ndarray:
    """Sample a ``music21`` score into a binary ``[T, 88]`` piano roll, one row per ``resolution`` quarters.

    A key is on at sample time ``k * resolution`` when a note (or a chord member) sounds then:
    ``onset <= k * resolution < onset + duration``.

    Example:
        >>> from music21 import stream, note
        >>> s = stream.Stream([note.Note("C4", quarterLength=2), note.Note("E4", quarterLength=1)])
        >>> roll = piano_roll(s)
        >>> roll.shape, roll[:, 60 - 21].tolist(), roll[:, 64 - 21].tolist()
        ((3, 88), [1, 1, 0], [0, 0, 1])
    """
    if resolution <= 0:
        raise ValueError(f"piano_roll: expected resolution > 0 quarter lengths, received {resolution}")
    flat = score.flatten()  # type: ignore[attr-defined]
    T = int(math.ceil(float(flat.highestTime) / resolution - 1e-9))
    roll = np.zeros((T, N_KEYS), dtype=np.uint8)
    for n in flat.notes:
        onset, dur = float(n.offset), float(n.quarterLength)
        if dur <= 0:  # grace notes
            continue
        k0 = int(math.ceil(onset / resolution - 1e-9))
        k1 = int(math.ceil((onset + dur) / resolution - 1e-9))
        for p in n.pitches:
            key = int(p.midi) - LOWEST_MIDI
            if not 0 <= key < N_KEYS:
                raise ValueError(f"piano_roll: pitch {p} (MIDI {p.midi}) is outside the 88 piano keys")
            roll[k0:min(k1, T), key] = 1
    return roll


def _corpus_entries() -> list[tuple[int, str]]:
    """``(first Riemenschneider number, corpus name)`` of every unique chorale file."""
    from music21 import corpus

    names = list(corpus.chorales.Iterator(numberingSystem="riemenschneider", returnType="filename"))
    seen: dict[str, int] = {}
    for number, name in enumerate(names, start=1):
        seen.setdefault(name, number)
    return sorted((n, name) for name, n in seen.items())


def build_chorales(numbers: Sequence[int] | None = None, progress: bool = True,
                   resolution: float = 1.0) -> ChoraleSet:
    """Parse chorales from the ``music21`` corpus (all unique ones, or those with the given numbers), one
    piano-roll row per ``resolution`` quarter notes (1.0: quarter notes, 0.5: eighth notes).

    Numbers that are duplicates of an earlier chorale (same file) are not available; asking for
    one raises ``ValueError`` naming the number of the first occurrence.
    """
    try:
        from music21 import corpus
    except ImportError as e:  # pragma: no cover - music21 is in the `music` extra
        raise ImportError("the chorales need music21: pip install 'worldmodels[music]'") from e
    entries = _corpus_entries()
    if numbers is not None:
        by_number = dict(entries)
        unknown = [n for n in numbers if n not in by_number]
        if unknown:
            from music21 import corpus as _c

            all_names = list(_c.chorales.Iterator(returnType="filename"))
            hints = []
            for n in unknown:
                if 1 <= n <= len(all_names):
                    first = next(m for m, nm in entries if nm == all_names[n - 1])
                    hints.append(f"{n} (duplicate of {first})")
                else:
                    hints.append(f"{n} (outside 1..{len(all_names)})")
            raise ValueError(f"build_chorales: unavailable chorale numbers: {', '.join(hints)}")
        entries = [(n, by_number[n]) for n in numbers]
    from tqdm.auto import tqdm

    rolls, nums, names = [], [], []
    for n, name in tqdm(entries, desc="parsing chorales", disable=not progress):
        rolls.append(piano_roll(corpus.parse(name), resolution))
        nums.append(n)
        names.append(name)
    return ChoraleSet(rolls, nums, names)


def _save(path: Path, data: ChoraleSet) -> None:
    import music21

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp.npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez_compressed(
            tmp,
            format_version=np.int64(FORMAT_VERSION),
            music21_version=np.str_(music21.__version__),
            rolls=np.concatenate(data.rolls, axis=0),
            lengths=np.array([len(r) for r in data.rolls], dtype=np.int64),
            numbers=np.array(data.numbers, dtype=np.int64),
            names=np.array(data.names, dtype=np.str_),
        )
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(path: Path) -> ChoraleSet:
    try:
        with np.load(path, allow_pickle=False) as f:
            version = int(f["format_version"])
            if version != FORMAT_VERSION:
                raise ValueError(
                    f"{path}: expected chorale cache format {FORMAT_VERSION}, received {version}; "
                    "delete the file or call load_chorales(rebuild=True)"
                )
            flat, lengths = f["rolls"], f["lengths"]
            numbers, names = f["numbers"].tolist(), f["names"].tolist()
    except (OSError, KeyError, EOFError, ValueError) as e:
        if isinstance(e, ValueError) and "chorale cache format" in str(e):
            raise
        raise ValueError(
            f"{path}: expected a chorale cache (.npz with rolls/lengths/numbers/names), could not read it "
            f"({e}); delete it or call load_chorales(rebuild=True)"
        ) from e
    if flat.ndim != 2 or flat.shape[1] != N_KEYS or int(lengths.sum()) != flat.shape[0]:
        raise ValueError(f"{path}: corrupt chorale cache: rolls {flat.shape}, "
                         f"lengths sum {int(lengths.sum())}")
    rolls = np.split(flat, np.cumsum(lengths)[:-1])
    return ChoraleSet(list(rolls), [int(n) for n in numbers], [str(s) for s in names])


def load_chorales(
    cache_dir: str | Path | None = None, rebuild: bool = False, progress: bool = True, resolution: float = 1.0
) -> ChoraleSet:
    """All unique chorales, built once (~25 s) and cached as ``.npz`` under ``cache_dir``/:func:`data_dir`.

    ``resolution``: quarter notes per row (1.0, the default, or e.g. 0.5 for eighth notes; each
    resolution has its own cache file). Use ``.split("train" | "valid" | "test")`` for the fixed split
    of :func:`split_of`.
    """
    if resolution <= 0:
        raise ValueError(f"load_chorales: expected resolution > 0 quarter lengths, received {resolution}")
    name = CACHE_NAME if resolution == 1.0 else CACHE_NAME.replace("_v", f"_r{resolution:g}_v")
    path = Path(cache_dir).expanduser() / name if cache_dir is not None else data_dir() / name
    if path.exists() and not rebuild:
        return _load(path)
    data = build_chorales(progress=progress, resolution=resolution)
    _save(path, data)
    return data


def load_reference_npz(path: str | Path) -> dict[str, ChoraleSet]:
    """The music data file of the thesis's reference SRNN code (e.g. ``jsb_raw_batchsize16_seqlen100.npz``
    of github.com/marcofraccaro/srnn, not shipped here): ``{"train", "valid", "test"}`` chorale sets.

    The file holds ``x_train [N, 100, 88]`` and ``x_valid`` as chunks of 100 steps of concatenated songs,
    and ``x_test [N, T, 88]`` with ``mask_test [N, T]`` as whole songs; the ``u_*`` inputs are not read
    (our models build ``u_t = x_{t-1}`` themselves, with no input at ``t = 1``). Train/valid chunks become
    one roll each; test songs are cut to their mask.
    """
    try:
        with np.load(Path(path).expanduser(), allow_pickle=False) as f:
            x = {k: f[f"x_{k}"] for k in SPLITS}
            mask_test = f["mask_test"]
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: expected the reference .npz with x_train, x_valid, x_test and mask_test "
                         f"[N, T, {N_KEYS}] arrays, could not read it ({e})") from e
    for k, a in x.items():
        if a.ndim != 3 or a.shape[2] != N_KEYS or not np.isin(a, (0.0, 1.0)).all():
            raise ValueError(f"{path}: x_{k}: expected binary [N, T, {N_KEYS}], received shape {a.shape}")
    if mask_test.shape != x["test"].shape[:2]:
        raise ValueError(f"{path}: mask_test: expected shape {x['test'].shape[:2]}, received {mask_test.shape}")
    out = {}
    for k in SPLITS:
        lengths = mask_test.sum(1).astype(int) if k == "test" else [x[k].shape[1]] * len(x[k])
        rolls = [x[k][i, :n].astype(np.uint8) for i, n in enumerate(lengths) if n > 0]
        out[k] = ChoraleSet(rolls, list(range(1, len(rolls) + 1)), [f"reference/{k}/{i}" for i in range(len(rolls))])
    return out


def pad_batch(rolls: Sequence[np.ndarray], action_dim: int = 0) -> tuple[Batch, torch.Tensor]:
    """Right-pad rolls into a :class:`Batch` (``obs [B, T, 88]``) and return the lengths ``[B]``.

    Padded steps are marked missing (``mask = False``). Music has no actions: ``action`` is
    ``zeros [B, T, action_dim]`` (``action_dim = 1`` for models that need an action input).
    """
    lengths = torch.tensor([len(r) for r in rolls])
    B, T = len(rolls), int(lengths.max())
    obs = torch.zeros(B, T, N_KEYS)
    for i, r in enumerate(rolls):
        obs[i, : len(r)] = torch.from_numpy(np.asarray(r, dtype=np.float32))
    mask = torch.arange(T)[None, :] < lengths[:, None]  # [B, T]
    return Batch(obs=obs, action=torch.zeros(B, T, action_dim), mask=mask), lengths


def transpose_rolls(obs: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Shift every piano roll of ``obs [B, T, 88]`` by ``shifts [B]`` semitones (keys moved off the keyboard
    are dropped, vacated keys are silent).

    Example:
        >>> x = torch.zeros(2, 1, 88); x[:, 0, 40] = 1
        >>> y = transpose_rolls(x, torch.tensor([3, -2]))
        >>> y[0, 0].nonzero().flatten().tolist(), y[1, 0].nonzero().flatten().tolist()
        ([43], [38])
    """
    if obs.dim() != 3 or obs.shape[-1] != N_KEYS:
        raise ValueError(f"transpose_rolls: expected obs [B, T, {N_KEYS}], received shape {tuple(obs.shape)}")
    if shifts.shape != (obs.shape[0],):
        raise ValueError(f"transpose_rolls: expected shifts [{obs.shape[0]}], received shape {tuple(shifts.shape)}")
    src = torch.arange(N_KEYS)[None, :] - shifts[:, None].to(torch.long)  # [B, 88] source key of each key
    valid = (src >= 0) & (src < N_KEYS)
    out = torch.gather(obs, 2, src.clamp(0, N_KEYS - 1)[:, None, :].expand(-1, obs.shape[1], -1))
    return out * valid[:, None, :].to(obs.dtype)


class MusicBuckets(torch.utils.data.Dataset):
    """Training batches as a map-style dataset: chorales cut in chunks of ``<= chunk_len`` steps (§5.4),
    sorted by length and grouped ``batch_size`` at a time, so a batch needs almost no padding (padded
    steps have ``mask = False``). Item ``i`` is a whole :class:`Batch`: train with
    ``TrainConfig(batch_size=1)``; the :class:`worldmodels.train.Trainer` shuffles the batch order every
    epoch (and resumes exactly). Each chunk starts from the model's initial state (the thesis carries
    the state across chunks; with a median chorale length of ~50 quarter notes few chorales are cut).

    ``transpose = k > 0`` is data augmentation (off by default): every time a batch is drawn, each of its
    chorales is transposed by its own uniform random shift in ``-k..k`` semitones (drawn from the global
    torch RNG, which the Trainer saves and restores, so resumed runs draw the same shifts), narrowed so
    no note leaves the 88 keys. Chorales exist in every key, so a transposed chorale is a plausible one.

    Example:
        >>> data = ChoraleSet([np.ones((5, 88), np.uint8), np.ones((3, 88), np.uint8)], [1, 2], ["a", "b"])
        >>> buckets = MusicBuckets(data, batch_size=2, chunk_len=4)
        >>> len(buckets), buckets[0].obs.shape, buckets[0].mask.sum(1).tolist()
        (2, torch.Size([2, 3, 88]), [1, 3])
    """

    def __init__(self, data: ChoraleSet, batch_size: int = 16, chunk_len: int = 100, action_dim: int = 0,
                 transpose: int = 0):
        if chunk_len < 1 or batch_size < 1:
            raise ValueError(f"MusicBuckets: expected chunk_len >= 1 and batch_size >= 1, "
                             f"received {chunk_len}, {batch_size}")
        if not 0 <= transpose < N_KEYS:
            raise ValueError(f"MusicBuckets: expected 0 <= transpose < {N_KEYS} semitones, received {transpose}")
        self.transpose = transpose
        chunks = [r[s: s + chunk_len] for r in data.rolls for s in range(0, len(r), chunk_len)]
        chunks.sort(key=len)
        self.batches = [pad_batch(chunks[i: i + batch_size], action_dim)[0]
                        for i in range(0, len(chunks), batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Batch:
        b = self.batches[i]
        if not self.transpose:
            return b
        keys = torch.arange(N_KEYS, dtype=b.obs.dtype)
        on = b.obs.amax(1) > 0  # [B, 88] keys used by each chorale chunk
        lo = torch.where(on, keys, torch.full_like(keys, N_KEYS)).amin(1)  # lowest key, 88 if silent
        hi = torch.where(on, keys, torch.full_like(keys, -1)).amax(1)  # highest key, -1 if silent
        down = torch.clamp(lo, max=self.transpose).long()  # the largest allowed shift down ...
        up = torch.clamp(N_KEYS - 1 - hi, max=self.transpose).long()  # ... and up
        shifts = (torch.rand(len(lo)) * (up + down + 1).to(torch.float32)).long().clamp(max=up + down) - down
        return Batch(obs=transpose_rolls(b.obs, shifts), action=b.action, mask=b.mask, is_first=b.is_first)

    @staticmethod
    def collate(items: list[Batch]) -> Batch:
        if len(items) != 1:
            raise ValueError(f"MusicBuckets: items are whole batches; expected batch_size=1, "
                             f"received {len(items)}")
        return items[0]


@torch.no_grad()
def evaluate_elbo_weighted(model: Any, data: ChoraleSet, n_samples: int = 1, seed: int = 0) -> dict[str, float]:
    """Test ELBO per time step (nats) of whole chorales (no chunking), both ways of averaging:
    ``"frames"``: ``sum_sequences ELBO / #frames``; ``"sequences"``: the mean over chorales of each
    chorale's ELBO per step (how the reference SRNN code averages its test set).

    Chorales of equal length are batched together, so no padding enters the bound; the ELBO of every
    batch is averaged over ``n_samples`` passes (for the RNN it is the exact log-likelihood). Uses only
    ``model.loss(batch).metrics["elbo"]`` (per observed step), so any world model can be scored.
    """
    was = model.training
    model.eval()
    action_dim = int(getattr(model.config, "action_dim", 0))
    by_len: dict[int, list[np.ndarray]] = {}
    for r in data.rolls:
        by_len.setdefault(len(r), []).append(r)
    frames = seqs = 0.0
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for T, rolls in sorted(by_len.items()):
                batch, _ = pad_batch(rolls, action_dim)
                for _ in range(n_samples):
                    per_step = model.loss(batch).metrics["elbo"] * len(rolls) / n_samples  # sum of per-step ELBOs
                    frames += per_step * T
                    seqs += per_step
    finally:
        model.train(was)
    return {"frames": frames / data.n_frames, "sequences": seqs / len(data)}


def evaluate_elbo(model: Any, data: ChoraleSet, n_samples: int = 1, seed: int = 0) -> float:
    """Test ELBO per time step (nats): ``sum_sequences ELBO / #frames`` of whole chorales (no chunking);
    the ``"frames"`` value of :func:`evaluate_elbo_weighted`."""
    return evaluate_elbo_weighted(model, data, n_samples, seed)["frames"]


@torch.no_grad()
def evaluate_fivo(model: Any, data: ChoraleSet, n_particles: int = 16, seed: int = 0) -> float:
    """The particle-filter bound (``model.fivo``, thesis §4.3.2) per time step on whole chorales, batched
    by equal length like :func:`evaluate_elbo`; for models with a ``fivo`` method (SRNN, DMM)."""
    if not hasattr(model, "fivo"):
        raise TypeError(f"evaluate_fivo: {type(model).__name__} has no fivo(batch, n_particles) method")
    was = model.training
    model.eval()
    by_len: dict[int, list[np.ndarray]] = {}
    for r in data.rolls:
        by_len.setdefault(len(r), []).append(r)
    total = 0.0
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _, rolls in sorted(by_len.items()):
                batch, _ = pad_batch(rolls, int(model.config.action_dim))
                total += float(model.fivo(batch, n_particles).sum())
    finally:
        model.train(was)
    return total / data.n_frames
