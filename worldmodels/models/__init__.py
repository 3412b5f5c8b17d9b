"""Model registry: every model registers itself by name; the CLI and checkpoints build models from it.

A model file holds a config dataclass ``XConfig`` (with ``obs_shape``, ``action_dim``, the model's
hyper-parameters and ``PRESETS: ClassVar[dict[str, dict]]``; a tiny ``"debug"`` preset is mandatory)
and the model ``X(nn.Module)`` built as ``X(config)`` and decorated with ``@register_model("x")``.
The config class is found as ``X.Config`` when set, else from the annotation of ``X.__init__``'s
``config`` argument, else as ``XConfig`` in the model's module.

A config name (``worldmodels train --config NAME``) picks a preset of the model config and, when the
model file defines ``TRAIN_PRESETS: dict[str, dict]`` (``TrainConfig`` fields of the thesis's training
recipes, keyed by config name), a training recipe: ``TRAIN_PRESETS[NAME]`` if present, else
``TRAIN_PRESETS["default"]``, else none (:func:`train_preset`). Explicit overrides beat the recipe,
which beats the ``TrainConfig`` defaults.

Example:
    >>> from worldmodels.models import build_model, MODELS
    >>> model = build_model("rnn", "debug", obs_shape=(8,), action_dim=2)
    >>> "rnn" in MODELS, type(model).__name__, model.config.obs_shape
    (True, 'RNN', (8,))
    >>> train_preset("kvae", "box") == train_preset("kvae", "default"), train_preset_name("kvae", "box")
    (True, 'default')
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import pkgutil
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

__all__ = [
    "MODELS",
    "register_model",
    "build_model",
    "get_model_class",
    "get_config_class",
    "make_config",
    "config_from_dict",
    "config_to_dict",
    "config_keys",
    "config_names",
    "train_preset",
    "train_preset_name",
]

#: name -> model class, filled by :func:`register_model` when the model modules are imported.
MODELS: dict[str, type[nn.Module]] = {}

M = TypeVar("M", bound=type)
_loaded = False
_import_errors: dict[str, str] = {}


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: register a model class under ``name`` (sets ``cls.model_name``)."""

    def deco(cls: M) -> M:
        other = MODELS.get(name)
        if other is not None and (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(
                f"register_model: name {name!r} already used by {other.__module__}.{other.__qualname__}"
            )
        cls.model_name = name  # type: ignore[attr-defined]
        MODELS[name] = cls  # type: ignore[assignment]
        return cls

    return deco


def _load_all() -> None:
    """Import every module in ``worldmodels.models`` so that their decorators run."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            try:
                importlib.import_module(f"{__name__}.{info.name}")
            except Exception as e:  # one broken model file must not hide the others
                _import_errors[info.name] = f"{type(e).__name__}: {e}"


def _unknown(kind: str, name: str, options: typing.Iterable[str], of: str = "") -> ValueError:
    options = sorted(options)
    close = difflib.get_close_matches(name, options, n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}{of}: expected one of {options}{hint}")


def get_model_class(name: str) -> type[nn.Module]:
    """The model class registered as ``name`` (``ValueError`` with close names otherwise)."""
    _load_all()
    if name not in MODELS:
        err = _unknown("model", name, MODELS)
        if _import_errors:
            err = ValueError(f"{err} (model modules that failed to import: {_import_errors})")
        raise err
    return MODELS[name]


def get_config_class(model: str | type) -> type:
    """The config dataclass of a model class or registered name."""
    cls: type[Any] = get_model_class(model) if isinstance(model, str) else model
    cfg = getattr(cls, "Config", None)
    if cfg is None:
        try:
            cfg = typing.get_type_hints(cls.__init__).get("config")
        except Exception:  # unresolved forward references: fall back to the naming convention
            cfg = None
    if cfg is None:
        cfg = getattr(importlib.import_module(cls.__module__), f"{cls.__name__}Config", None)
    if not isinstance(cfg, type) or not dataclasses.is_dataclass(cfg):
        raise TypeError(f"{cls.__name__}: cannot find its config dataclass (set {cls.__name__}.Config)")
    return cfg


def config_keys(config_cls: type) -> list[str]:
    """Names of the fields of a config dataclass."""
    return [f.name for f in dataclasses.fields(config_cls)]


def _coerce(value: Any, annotation: Any) -> Any:
    """JSON values back to the dataclass field type (lists -> tuples, nested)."""
    origin = typing.get_origin(annotation)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if args and len(args) == len(value):
            return tuple(_coerce(v, a) for v, a in zip(value, args))
        return tuple(value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in typing.get_args(annotation):
            if arg is not type(None) and value is not None:
                coerced = _coerce(value, arg)
                if coerced is not value:
                    return coerced
        return value
    if annotation is tuple and isinstance(value, list):
        return tuple(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def config_from_dict(config_cls: type, values: Mapping[str, Any]) -> Any:
    """Build ``config_cls(**values)``; unknown keys raise ``ValueError`` naming the valid ones."""
    keys = config_keys(config_cls)
    for k in values:
        if k not in keys:
            raise _unknown(f"{config_cls.__name__} key", k, keys)
    hints = typing.get_type_hints(config_cls)
    return config_cls(**{k: _coerce(v, hints.get(k, Any)) for k, v in values.items()})


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-ready dict (tuples become lists)."""
    return json_ready(dataclasses.asdict(config))


def json_ready(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    return x


def _presets(name: str) -> dict[str, dict]:
    return dict(getattr(get_config_class(name), "PRESETS", {}) or {})


def _train_presets(name: str) -> Mapping[str, Mapping[str, Any]]:
    module = importlib.import_module(get_model_class(name).__module__)
    return getattr(module, "TRAIN_PRESETS", None) or {}


def config_names(name: str) -> list[str]:
    """The config names of model ``name``: its config's ``PRESETS`` and ``"default"`` (sorted).

    Example:
        >>> config_names("rnn")
        ['debug', 'default', 'music']
    """
    return sorted(set(_presets(name)) | {"default"})


def make_config(name: str, preset: str = "default", **overrides: Any) -> Any:
    """The config of model ``name``: defaults, then ``PRESETS[preset]``, then ``overrides``.

    ``preset="default"`` applies ``PRESETS["default"]`` when it exists and nothing otherwise.
    """
    presets = _presets(name)
    if preset not in config_names(name):
        raise _unknown("preset", preset, config_names(name), of=f" of model {name!r}")
    values = {**presets.get(preset, {}), **overrides}
    return config_from_dict(get_config_class(name), values)


def train_preset_name(name: str, config: str = "default") -> str | None:
    """The key of the model file's ``TRAIN_PRESETS`` that config ``config`` trains with.

    ``config`` itself if it has a recipe, else ``"default"`` if that has one, else ``None`` (the
    ``TrainConfig`` defaults). ``ValueError`` naming the choices when ``config`` is not a config name.

    Example:
        >>> train_preset_name("kvae", "debug"), train_preset_name("kvae", "gravity"), train_preset_name("rnn")
        ('debug', 'default', None)
    """
    if config not in config_names(name):
        raise _unknown("preset", config, config_names(name), of=f" of model {name!r}")
    recipes = _train_presets(name)
    return config if config in recipes else "default" if "default" in recipes else None


def train_preset(name: str, config: str = "default") -> dict[str, Any]:
    """``TrainConfig`` overrides: model ``name``'s training recipe for ``config`` (:func:`train_preset_name`).

    Example:
        >>> from worldmodels.train import TrainConfig
        >>> cfg = TrainConfig(**train_preset("kvae", "box"))   # §6.8: Adam 0.007 x 0.85 every 20 epochs
        >>> cfg.lr, cfg.lr_schedule, cfg.freeze_until
        (0.007, 'step', {'alpha_net': 10})
        >>> train_preset("rnn", "debug")
        {}
    """
    key = train_preset_name(name, config)
    return {} if key is None else copy.deepcopy(dict(_train_presets(name)[key]))


def build_model(name: str, preset: str = "default", **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` from a preset plus keyword overrides of config fields.

    Example:
        >>> m = build_model("rnn", "debug", obs_shape=(1, 16, 16), action_dim=3)
        >>> m.config.hidden_dim
        16
    """
    return get_model_class(name)(make_config(name, preset, **overrides))
