"""Checkpoints: a folder of safetensors weights plus JSON metadata. No pickle anywhere.

Layout of a checkpoint folder::

    config.json          {"format": "worldmodels-checkpoint", "format_version": 1, "model": name,
                          "config": {...}, "worldmodels_version", "torch_version", "created",
                          "sha256": {file: hex digest}, "metadata": {...},
                          "config_sha256": sha256 of this JSON's own canonical content}
    model.safetensors    the model's ``state_dict``
    state.safetensors    optional training state tensors (optimizer moments, RNG states, ...)
    state.json           optional training state structure; tensors referenced by key

Any nested structure of dicts / lists / tuples / numbers / strings / tensors / numpy arrays (an
optimizer ``state_dict``, RNG states) is stored by :func:`save` as ``extra_state`` and returned
unchanged by :func:`load_state`. Writes go to a temporary folder that is renamed into place; an
overwrite moves the old folder aside first, so a process killed between the two renames leaves the old
and the new copy beside an empty name: :func:`recover` (called by :func:`save` and by the Trainer before
it resumes) puts the newest complete copy back.

Example:
    >>> import tempfile, torch
    >>> from worldmodels.models import build_model
    >>> model = build_model("rnn", "debug", obs_shape=(4,), action_dim=2)
    >>> d = tempfile.mkdtemp()
    >>> _ = save(d + "/ckpt", model, extra_state={"step": 3, "m": torch.ones(2)})
    >>> type(load(d + "/ckpt")).__name__, load_state(d + "/ckpt")["step"]
    ('RNN', 3)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from worldmodels.files import dead_temps, explain_write_error, json_digest, remove, temp_path
from worldmodels.version import __version__

__all__ = ["save", "load", "load_state", "read_meta", "recover", "is_checkpoint", "FORMAT", "FORMAT_VERSION"]

FORMAT = "worldmodels-checkpoint"
FORMAT_VERSION = 1
_MODEL_FILE, _CONFIG_FILE, _STATE_FILE, _STATE_JSON = (
    "model.safetensors",
    "config.json",
    "state.safetensors",
    "state.json",
)


def _version() -> str:
    return __version__


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------- nested state <-> JSON + tensors


def _encode(obj: Any, tensors: dict[str, torch.Tensor], key: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"{len(tensors)}:{key}"[:200]  # unique whatever the dict keys contain
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"{len(tensors)}:{key}"[:200]
        tensors[key] = torch.from_numpy(
            np.ascontiguousarray(obj).astype(np.int64 if obj.dtype.kind in "ui" else obj.dtype)
        )
        return {"__ndarray__": key, "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{key}.{k}") for k, v in obj.items()}
        return {
            "__items__": [
                [_encode(k, tensors, f"{key}.k{i}"), _encode(v, tensors, f"{key}.{i}")]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(
        f"checkpoint: cannot store a value of type {type(obj).__name__} at {key!r} without pickle"
    )


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy().astype(obj["dtype"])
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
        return {k: _decode(v, tensors) for k, v in obj.items()}
    return obj


# ----------------------------------------------------------------------------- save / load


def is_checkpoint(path: str | os.PathLike) -> bool:
    """``True`` when ``path`` is a folder holding a worldmodels ``config.json``."""
    p = Path(path) / _CONFIG_FILE
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("format") == FORMAT
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def save(
    path: str | os.PathLike,
    model: nn.Module,
    extra_state: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (and optional training state) to the checkpoint folder ``path``, atomically.

    Args:
        path: target folder; an existing checkpoint there is replaced, any other non-empty folder
            raises ``FileExistsError``.
        model: a registered model (``model.model_name``) with a dataclass ``model.config``.
        extra_state: nested training state (tensors, numbers, strings, lists, dicts); see module doc.
        metadata: small JSON-serialisable facts stored in ``config.json`` (dataset, step, ...).

    Returns:
        The checkpoint folder.
    """
    from worldmodels.models import config_to_dict

    path = Path(path)
    model = getattr(model, "module", model)  # unwrap DDP
    name = getattr(type(model), "model_name", None)
    config = getattr(model, "config", None)
    if name is None or config is None:
        raise TypeError(
            f"checkpoint.save: expected a registered model (@register_model) with a dataclass .config, "
            f"received {type(model).__name__}"
        )
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not is_checkpoint(path))):
        raise FileExistsError(
            f"checkpoint.save: {path} exists and is not a worldmodels checkpoint; not overwriting"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path)
    tmp = temp_path(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        weights = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / _MODEL_FILE))
        files = [_MODEL_FILE]
        if extra_state is not None:
            tensors: dict[str, torch.Tensor] = {}
            structure = _encode(extra_state, tensors, "s")
            save_file(tensors, str(tmp / _STATE_FILE))
            (tmp / _STATE_JSON).write_text(json.dumps(structure))
            files += [_STATE_FILE, _STATE_JSON]
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": name,
            "config": config_to_dict(config),
            "worldmodels_version": _version(),
            "torch_version": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "sha256": {f: _sha256(tmp / f) for f in files},
            "metadata": metadata or {},
        }
        meta["config_sha256"] = json_digest(meta)
        (tmp / _CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")  # written last: marks it complete
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk gets its space back
        if isinstance(e, OSError):
            raise explain_write_error(e, "checkpoint.save", path, "The previous checkpoint there is intact.") from e
        raise
    old = temp_path(path, "old")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)
    return path


def recover(path: str | os.PathLike) -> Path | None:
    """Finish an overwrite of ``path`` that a killed process left half done; remove dead writers' temps.

    :func:`save` writes ``.<name>.tmp-<host>-<pid>``, moves the existing ``<name>`` to ``.<name>.old-<host>-<pid>``,
    renames the temp into place and deletes the old copy. A kill between the renames leaves no ``<name>``:
    the complete temp (its ``config.json`` is written last and every hash verifies) is newer than the
    old copy, so it wins; otherwise the old copy is restored. Temps of live processes (and those of other
    machines, whose processes cannot be checked) are left alone.

    Returns:
        ``path`` when a checkpoint is there afterwards, else ``None``.

    Example:
        >>> import tempfile
        >>> recover(Path(tempfile.mkdtemp()) / "last") is None
        True
    """
    path = Path(path)
    leftovers = dead_temps(path.parent, f".{path.name}.*")
    if not path.exists():
        newest_first = sorted(leftovers, key=lambda p: (".tmp-" in p.name, p.stat().st_mtime), reverse=True)
        for cand in newest_first:
            try:
                read_meta(cand)
            except (ValueError, FileNotFoundError):
                continue
            os.replace(cand, path)
            break
    for p in leftovers:
        remove(p)
    return path if path.exists() else None


def _resolve(path: str | os.PathLike) -> Path:
    """``path``, or the folder of the shipped model of that name (:mod:`worldmodels.pretrained`) when
    ``path`` does not exist and has no path separator; an unknown name lists the shipped ones."""
    if Path(path).exists() or not isinstance(path, str):
        return Path(path)
    from worldmodels.pretrained.registry import is_name
    from worldmodels.pretrained.registry import path as shipped_path

    if not is_name(path):
        return Path(path)
    return shipped_path(path)  # FileNotFoundError naming the shipped models when unknown


def read_meta(path: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint, validated (foreign / newer / corrupt -> ``ValueError``).
    ``path`` may be the name of a shipped model (``"gtmsm-imagenav"``, see :mod:`worldmodels.pretrained`)."""
    path = _resolve(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint: {path} does not exist")
    cfg = path / _CONFIG_FILE
    if not path.is_dir() or not cfg.is_file():
        raise ValueError(
            f"checkpoint: {path} is not a worldmodels checkpoint (expected a folder with {_CONFIG_FILE})"
        )
    try:
        meta = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"checkpoint: {cfg} is corrupt (not valid JSON: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(
            f"checkpoint: {path} is not a worldmodels checkpoint (expected format {FORMAT!r}, "
            f"received {meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r})"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"checkpoint: {path} has format version {version} (written by worldmodels "
            f"{meta.get('worldmodels_version')}); this worldmodels {_version()} reads up to version "
            f"{FORMAT_VERSION}: upgrade worldmodels"
        )
    for key in ("model", "config", "sha256"):
        if key not in meta:
            raise ValueError(f"checkpoint: {cfg} is corrupt (missing {key!r})")
    stored = meta.pop("config_sha256", None)  # absent in checkpoints of worldmodels <= 0.1 sessions 1-2
    if stored is not None and stored != json_digest(meta):
        raise ValueError(f"checkpoint: {cfg} does not match its config_sha256 (edited or corrupt)")
    if verify:
        for f, digest in meta["sha256"].items():
            fp = path / f
            if not fp.is_file():
                raise ValueError(f"checkpoint: {path} is corrupt ({f} is missing)")
            if _sha256(fp) != digest:
                raise ValueError(
                    f"checkpoint: {path} is corrupt ({f} does not match its sha256 in {_CONFIG_FILE})"
                )
    return meta


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved in ``path`` (registry name + config) and load its weights; eval mode.

    ``path`` is a checkpoint folder or the name of a shipped model (``worldmodels.load("kvae-box")``,
    see :mod:`worldmodels.pretrained`), tried in that order.

    Raises:
        FileNotFoundError: ``path`` does not exist (nor is it a shipped model's name).
        ValueError: foreign, corrupt or newer checkpoint; unknown model name.
    """
    from worldmodels.models import config_from_dict, get_model_class

    path = _resolve(path)
    meta = read_meta(path)
    cls = get_model_class(meta["model"])
    from worldmodels.models import get_config_class

    model = cls(config_from_dict(get_config_class(cls), meta["config"]))
    try:
        weights = load_file(str(Path(path) / _MODEL_FILE), device=str(map_location))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"checkpoint: {path}/{_MODEL_FILE} is corrupt ({e})") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise ValueError(f"checkpoint: {path} does not match model {meta['model']!r}: {e}") from None
    return model.to(map_location).eval()


def load_state(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``extra_state`` stored by :func:`save` (``None`` when the checkpoint has none)."""
    meta = read_meta(path)
    if _STATE_FILE not in meta["sha256"]:
        return None
    try:
        tensors = load_file(str(Path(path) / _STATE_FILE))
        structure = json.loads((Path(path) / _STATE_JSON).read_text())
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise ValueError(f"checkpoint: {path} training state is corrupt ({e})") from None
    return _decode(structure, tensors)
