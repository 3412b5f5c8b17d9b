"""The installed version of worldmodels (a leaf module: no package imports, so everything may use it).

Example:
    >>> from worldmodels.version import __version__
    >>> isinstance(__version__, str)
    True
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("worldmodels")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.1.0"
