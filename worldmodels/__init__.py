"""worldmodels: sequential deep latent-variable world models (GTM-SM, KVAE, SRNN and baselines).

Example:
    >>> import worldmodels
    >>> model = worldmodels.build_model("rnn", "debug", obs_shape=(4,), action_dim=2)
    >>> isinstance(worldmodels.__version__, str)
    True
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("worldmodels")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.1.0"

from worldmodels.checkpoint import load, save  # noqa: E402
from worldmodels.models import build_model  # noqa: E402

__all__ = ["__version__", "load", "save", "build_model"]
