"""worldmodels: sequential deep latent-variable world models (GTM-SM, KVAE, SRNN and baselines).

``load``, ``save`` and ``build_model`` are imported on first use, so ``import worldmodels`` (and the
``worldmodels`` command's ``--help``) does not load torch.

Example:
    >>> import worldmodels
    >>> model = worldmodels.build_model("rnn", "debug", obs_shape=(4,), action_dim=2)
    >>> isinstance(worldmodels.__version__, str)
    True
"""

from __future__ import annotations

import importlib
from typing import Any

from worldmodels.version import __version__

__all__ = ["__version__", "load", "save", "build_model"]

_LAZY = {"load": "worldmodels.checkpoint", "save": "worldmodels.checkpoint", "build_model": "worldmodels.models"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'worldmodels' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
