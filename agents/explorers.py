"""Data-collection policies (explorers) for rollout datasets (DESIGN §2, thesis §7.4 and §7.7).

Every explorer is a small class built from one environment's (single, not batched) action space
with the narrow interface ``reset(seed)`` / ``act(obs) -> action``. An explorer draws all of its
randomness from a ``numpy.random.Generator`` seeded in ``reset``, so an episode's actions depend only
on the seed it was given (the collector derives one seed per episode, see
:func:`worldmodels.data.collect`).

* :class:`UniformRandom` -- an action drawn uniformly from the space at every step.
* :class:`PoissonRepeat` -- the image-navigation agent of thesis §7.4.1/§7.7: an action drawn
  uniformly and repeated for ``1 + k`` steps, ``k ~ Poisson(lam)`` (mean run length ``lam + 1``).
* :class:`RotateInPlace` -- the rotating agent of thesis §7.4.2.1: always the same turn action,
  optionally a random direction per episode.
* :class:`RandomWalkMomentum` -- a correlated random walk: discrete actions are kept with
  probability ``p_keep``; continuous actions follow a clipped AR(1) process with coefficient
  ``momentum``.

Supported spaces: ``Discrete``, ``MultiDiscrete`` and bounded ``Box`` (``RotateInPlace``: ``Discrete``
only). Names map to classes in :data:`EXPLORERS`; :func:`make_explorer` builds one by name and
:func:`explorer_factory` returns the ``action_space -> explorer`` callable that
:func:`worldmodels.data.collect` takes.

Example:
    >>> from gymnasium.spaces import Discrete
    >>> policy = make_explorer("poisson", Discrete(5), lam=2.0)
    >>> policy.reset(seed=0)
    >>> actions = [policy.act(None) for _ in range(8)]
    >>> all(0 <= a < 5 for a in actions)
    True
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces

__all__ = [
    "EXPLORERS",
    "Explorer",
    "PoissonRepeat",
    "RandomWalkMomentum",
    "RotateInPlace",
    "UniformRandom",
    "explorer_factory",
    "make_explorer",
]


def _check_space(action_space: spaces.Space, who: str) -> None:
    if isinstance(action_space, (spaces.Discrete, spaces.MultiDiscrete)):
        return
    if isinstance(action_space, spaces.Box):
        if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
            raise ValueError(f"{who}: expected a bounded Box action space, received {action_space}")
        return
    raise TypeError(
        f"{who}: expected a Discrete, MultiDiscrete or bounded Box action space, received {action_space}"
    )


class Explorer:
    """Base class: owns the action space and a seeded generator.

    Args:
        action_space: the single-environment action space.
    """

    def __init__(self, action_space: spaces.Space) -> None:
        _check_space(action_space, type(self).__name__)
        self.action_space = action_space
        self.rng = np.random.default_rng(0)

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode; all randomness of the episode comes from ``seed``."""
        self.rng = np.random.default_rng(seed)

    def act(self, obs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _uniform(self) -> Any:
        """One action drawn uniformly from the space, as the space's dtype."""
        space = self.action_space
        if isinstance(space, spaces.Discrete):
            return np.int64(space.start + self.rng.integers(space.n))
        if isinstance(space, spaces.MultiDiscrete):
            return (space.start + self.rng.integers(0, space.nvec)).astype(space.dtype)
        assert isinstance(space, spaces.Box)
        return self.rng.uniform(space.low, space.high).astype(space.dtype)


class UniformRandom(Explorer):
    """An action drawn uniformly from the action space at every step.

    Example:
        >>> from gymnasium.spaces import Box
        >>> p = UniformRandom(Box(-1.0, 1.0, (2,)))
        >>> p.reset(3)
        >>> p.act(None).shape
        (2,)
    """

    def act(self, obs: Any) -> Any:
        return self._uniform()


class PoissonRepeat(Explorer):
    """Uniform action repeated ``1 + k`` times, ``k ~ Poisson(lam)`` (thesis §7.4.1, §7.7).

    The image-navigation data of the thesis favour exploring the whole image by repeating each
    uniformly drawn action; the run length ``1 + k`` has mean ``lam + 1`` (``lam = 2`` in NOTES.md).
    Two consecutive runs may draw the same discrete action, so observed runs of *identical*
    actions are longer on average.

    Args:
        action_space: single-environment action space.
        lam: Poisson rate of the extra repetitions, ``>= 0``.

    Example:
        >>> from gymnasium.spaces import Discrete
        >>> p = PoissonRepeat(Discrete(5), lam=0.0)   # lam = 0: a new action every step
        >>> p.reset(0)
        >>> len([p.act(None) for _ in range(4)])
        4
    """

    def __init__(self, action_space: spaces.Space, lam: float = 2.0) -> None:
        super().__init__(action_space)
        if not (np.isfinite(lam) and lam >= 0):
            raise ValueError(f"PoissonRepeat: expected lam >= 0, received {lam}")
        self.lam = float(lam)
        self._action: Any = None
        self._left = 0

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._action, self._left = None, 0

    def act(self, obs: Any) -> Any:
        if self._left == 0:
            self._action = self._uniform()
            self._left = 1 + int(self.rng.poisson(self.lam))
        self._left -= 1
        return self._action


class RotateInPlace(Explorer):
    """Always the same turn action: the rotating agent of thesis §7.4.2.1.

    Args:
        action_space: a ``Discrete`` action space.
        action: index of the turn action (MiniWorld: 0 = turn left, 1 = turn right).
        opposite: index of the opposite turn; required when ``random_direction`` is true.
        random_direction: draw ``action`` or ``opposite`` with probability 1/2 in every ``reset``.

    Example:
        >>> from gymnasium.spaces import Discrete
        >>> p = RotateInPlace(Discrete(3), action=0, opposite=1, random_direction=True)
        >>> p.reset(0)
        >>> len({int(p.act(None)) for _ in range(10)})
        1
    """

    def __init__(
        self,
        action_space: spaces.Space,
        action: int = 0,
        opposite: int | None = None,
        random_direction: bool = False,
    ) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise TypeError(f"RotateInPlace: expected a Discrete action space, received {action_space}")
        super().__init__(action_space)
        for name, a in (("action", action), ("opposite", opposite)):
            if a is not None and not action_space.contains(np.int64(a)):
                raise ValueError(f"RotateInPlace: expected {name} in {action_space}, received {a}")
        if random_direction and opposite is None:
            raise ValueError("RotateInPlace: random_direction=True needs the opposite turn action index")
        self.action, self.opposite, self.random_direction = int(action), opposite, bool(random_direction)
        self._current = np.int64(self.action)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        turn = self.action
        if self.random_direction and self.rng.random() < 0.5:
            turn = int(self.opposite)  # type: ignore[arg-type]
        self._current = np.int64(turn)

    def act(self, obs: Any) -> Any:
        return self._current


class RandomWalkMomentum(Explorer):
    """A correlated random walk over actions.

    Discrete spaces: keep the previous action with probability ``p_keep``, else draw uniformly
    (so ``P(a_t = a_{t-1}) = p_keep + (1 - p_keep) / n`` and the marginal stays uniform).
    Box spaces: in coordinates ``x in [-1, 1]`` of the box, an AR(1) process
    ``x_t = clip(m x_{t-1} + sqrt(1 - m^2) sigma eps_t, -1, 1)``, ``eps_t ~ N(0, I)``, ``x_0 ~ U[-1, 1]``,
    mapped to ``action = centre + half_width * x``; lag-1 autocorrelation ``~= m`` away from the walls.

    Args:
        action_space: single-environment action space.
        p_keep: probability of keeping the previous discrete action.
        momentum: AR(1) coefficient ``m`` in ``[0, 1)`` for Box spaces.
        sigma: stationary standard deviation of ``x`` before clipping.

    Example:
        >>> from gymnasium.spaces import Box
        >>> p = RandomWalkMomentum(Box(-2.0, 2.0, (1,)), momentum=0.9)
        >>> p.reset(0)
        >>> bool(abs(p.act(None)[0]) <= 2.0)
        True
    """

    def __init__(
        self, action_space: spaces.Space, p_keep: float = 0.8, momentum: float = 0.9, sigma: float = 0.5
    ) -> None:
        super().__init__(action_space)
        if not 0.0 <= p_keep <= 1.0:
            raise ValueError(f"RandomWalkMomentum: expected p_keep in [0, 1], received {p_keep}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"RandomWalkMomentum: expected momentum in [0, 1), received {momentum}")
        if not sigma > 0:
            raise ValueError(f"RandomWalkMomentum: expected sigma > 0, received {sigma}")
        self.p_keep, self.momentum, self.sigma = float(p_keep), float(momentum), float(sigma)
        self._prev: Any = None

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._prev = None

    def act(self, obs: Any) -> Any:
        space = self.action_space
        if isinstance(space, spaces.Box):
            low, high = space.low.astype(np.float64), space.high.astype(np.float64)
            if self._prev is None:
                x = self.rng.uniform(-1.0, 1.0, size=space.shape)
            else:
                m = self.momentum
                eps = self.rng.standard_normal(space.shape)
                x = np.clip(m * self._prev + np.sqrt(1.0 - m * m) * self.sigma * eps, -1.0, 1.0)
            self._prev = x
            return ((low + high) / 2 + (high - low) / 2 * x).astype(space.dtype)
        if self._prev is None or self.rng.random() >= self.p_keep:
            self._prev = self._uniform()
        return self._prev


EXPLORERS: dict[str, type[Explorer]] = {
    "uniform": UniformRandom,
    "poisson": PoissonRepeat,
    "rotate": RotateInPlace,
    "momentum": RandomWalkMomentum,
}


def _lookup(name: str) -> type[Explorer]:
    if name not in EXPLORERS:
        close = difflib.get_close_matches(name, EXPLORERS, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown explorer {name!r}; expected one of {sorted(EXPLORERS)}.{hint}")
    return EXPLORERS[name]


def make_explorer(name: str, action_space: spaces.Space, **kwargs: Any) -> Explorer:
    """Build the explorer registered as ``name`` for ``action_space``.

    Example:
        >>> from gymnasium.spaces import Discrete
        >>> type(make_explorer("uniform", Discrete(3))).__name__
        'UniformRandom'
        >>> make_explorer("poison", Discrete(3))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown explorer 'poison'; expected one of [...]. Did you mean 'poisson'?
    """
    return _lookup(name)(action_space, **kwargs)


def explorer_factory(name: str, **kwargs: Any) -> Callable[[spaces.Space], Explorer]:
    """An ``action_space -> explorer`` callable for :func:`worldmodels.data.collect`.

    Unknown names and keyword arguments fail here, before any environment is built.

    Example:
        >>> from gymnasium.spaces import Discrete
        >>> make = explorer_factory("poisson", lam=3.0)
        >>> make(Discrete(4)).lam
        3.0
    """
    cls = _lookup(name)
    try:
        inspect.signature(cls).bind(None, **kwargs)
    except TypeError as e:
        params = [p for p in inspect.signature(cls).parameters if p != "action_space"]
        raise ValueError(
            f"explorer {name!r}: expected keyword arguments among {params}, received {kwargs}"
        ) from e
    return functools.partial(cls, **kwargs)
