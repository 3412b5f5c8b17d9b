"""Rollout datasets: collection from vector envs, atomic shards, a verifying reader, window sampling.

DESIGN §2. A rollout step: ``obs[t]`` is seen, ``action[t]`` is taken, ``obs[t + 1]`` results; an
episode of ``steps`` actions stores ``steps + 1`` frames.

One module per concern, dependencies one way (``format <- reader <- windows``, ``format, resize <- collect``):

* :mod:`worldmodels.data.format`: the dataset folder (``meta.json``, shards, checksums, format version),
  spaces as JSON, :func:`episode_seeds`, :class:`CorruptDatasetError` / :class:`CorruptShardError`;
* :mod:`worldmodels.data.collect`: :func:`collect` (policies in vector envs -> atomic shards, resumable; env
  ids, ``module:Id``, MiniWorld ids, env factories or instances);
* :mod:`worldmodels.data.resize`: :func:`area_resize` (numpy area averaging of uint8 frames, ``obs_size``);
* :mod:`worldmodels.data.reader`: :class:`RolloutDataset`, :class:`Episode`;
* :mod:`worldmodels.data.windows`: :class:`WindowDataset`, :func:`make_loader`, :class:`EpisodeStartWindows`,
  :class:`MappedWindows`, :func:`collate_batches`, :func:`iterate_batches`.

Every public name is importable from ``worldmodels.data``.

Example:
    >>> import tempfile, functools
    >>> from agents.explorers import UniformRandom
    >>> out = collect("CartPole-v1", tempfile.mkdtemp() + "/d", episodes=2, steps=4,
    ...               policy=UniformRandom, progress=False, env_kwargs={})
    >>> data = RolloutDataset(out)
    >>> len(data), data[0].obs.shape[0]
    (2, 5)
"""

from __future__ import annotations

from worldmodels.data.collect import BatchPolicy, Policy, collect, resolve_env_id
from worldmodels.data.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    CorruptDatasetError,
    CorruptShardError,
    episode_seeds,
    packed_offsets,
    space_from_json,
    space_to_json,
)
from worldmodels.data.reader import Episode, RolloutDataset
from worldmodels.data.resize import area_resize
from worldmodels.data.windows import (
    EpisodeStartWindows,
    MappedWindows,
    WindowDataset,
    collate_batches,
    iterate_batches,
    make_loader,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "BatchPolicy",
    "CorruptDatasetError",
    "CorruptShardError",
    "Episode",
    "EpisodeStartWindows",
    "MappedWindows",
    "Policy",
    "RolloutDataset",
    "WindowDataset",
    "area_resize",
    "collate_batches",
    "collect",
    "episode_seeds",
    "iterate_batches",
    "make_loader",
    "packed_offsets",
    "resolve_env_id",
    "space_from_json",
    "space_to_json",
]
