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
:func:`worldmodels.data.collect` takes. A :class:`CollectionAgent` names an explorer, its arguments, an
environment and the episode length: :data:`MINIWORLD_AGENTS` holds the rotating and walking agents of §7.4.2.

Batches. :meth:`Explorer.vectorize` turns ``n`` explorers (one per sub-environment) into a
:class:`VectorExplorer` that acts on a whole batch at once: ``reset(seeds)``, ``act(obs [n, ...]) ->
actions [n, ...]``. Row ``i`` draws from explorer ``i``'s own generator in exactly the order explorer
``i`` would alone, so its actions are identical to the per-env explorer's (the collector relies on
this: a dataset does not depend on ``num_envs``); only the bookkeeping between draws is vectorised.

Example:
    >>> from gymnasium.spaces import Discrete
    >>> policy = make_explorer("poisson", Discrete(5), lam=2.0)
    >>> policy.reset(seed=0)
    >>> actions = [policy.act(None) for _ in range(8)]
    >>> all(0 <= a < 5 for a in actions)
    True
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

__all__ = [
    "EXPLORERS",
    "Explorer",
    "VectorExplorer",
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


def _check_kwarg(who: str, name: str, value: Any, kind: str) -> None:
    """Raise ``TypeError`` unless ``value`` is of ``kind``: ``"number"`` (a finite real, not a bool), ``"int"``
    (not a bool), ``"int | None"`` or ``"bool"``."""
    if kind == "int | None" and value is None:
        return
    if kind == "bool":
        ok = isinstance(value, bool | np.bool_)
    elif kind.startswith("int"):
        ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    else:
        ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool) \
            and bool(np.isfinite(value))
    if not ok:
        what = {"number": "a finite number", "bool": "true or false"}.get(kind, f"an {kind}")
        raise TypeError(f"{who}: expected {name} {what}, received {value!r}")


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

    @classmethod
    def vectorize(cls, explorers: Sequence[Explorer]) -> VectorExplorer:
        """One :class:`VectorExplorer` acting for all ``explorers`` (one per sub-environment)."""
        return VectorExplorer(explorers)

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
        _check_kwarg("PoissonRepeat", "lam", lam, "number")
        if not lam >= 0:
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
        _check_kwarg("RotateInPlace", "action", action, "int")
        _check_kwarg("RotateInPlace", "opposite", opposite, "int | None")
        _check_kwarg("RotateInPlace", "random_direction", random_direction, "bool")
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
        for name, value in (("p_keep", p_keep), ("momentum", momentum), ("sigma", sigma)):
            _check_kwarg("RandomWalkMomentum", name, value, "number")
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


def _row(obs: Any, i: int) -> Any:
    """Row ``i`` of a batched observation (array, dict or tuple of arrays, or ``None``)."""
    if obs is None:
        return None
    if isinstance(obs, dict):
        return {k: _row(v, i) for k, v in obs.items()}
    if isinstance(obs, tuple):
        return tuple(_row(v, i) for v in obs)
    return obs[i]


class VectorExplorer:
    """``n`` explorers acting on a batch of sub-environments; row ``i`` acts exactly as ``explorers[i]``.

    Each row keeps its explorer's generator and draws from it in the explorer's own order, so the
    actions of row ``i`` after ``reset(seeds)`` equal those of ``explorers[i]`` after
    ``reset(seeds[i])``, whatever the other rows do. :class:`PoissonRepeat` and :class:`RotateInPlace`
    keep their state (current action, steps left) in arrays ``[n]`` and only touch the rows that draw
    (a new run starts in about ``1 / (lam + 1)`` of the rows per step); other explorers (and
    subclasses that override ``act``) are called row by row. The explorers' own per-episode state
    (``_action``, ``_left``) is not advanced by the batch; their generators are.

    Args:
        explorers: ``n >= 1`` explorers of one class with the same action space and parameters.

    Example:
        >>> from gymnasium.spaces import Discrete
        >>> singles = [PoissonRepeat(Discrete(5)) for _ in range(3)]
        >>> batch = PoissonRepeat.vectorize([PoissonRepeat(Discrete(5)) for _ in range(3)])
        >>> batch.reset([7, 8, 9])
        >>> for e, s in zip(singles, [7, 8, 9]):
        ...     e.reset(s)
        >>> rows = np.stack([batch.act(None) for _ in range(6)])            # [T, n]
        >>> cols = np.array([[int(e.act(None)) for e in singles] for _ in range(6)])
        >>> bool((rows == cols).all()), rows.shape
        (True, (6, 3))
    """

    def __init__(self, explorers: Sequence[Explorer]) -> None:
        self.explorers = list(explorers)
        if not self.explorers:
            raise ValueError("VectorExplorer: expected at least one explorer, received none")
        first = self.explorers[0]
        kind = type(first)
        for e in self.explorers[1:]:
            if type(e) is not kind or e.action_space != first.action_space:
                raise ValueError(
                    f"VectorExplorer: expected explorers of one class and action space, received "
                    f"{kind.__name__} on {first.action_space} and {type(e).__name__} on {e.action_space}"
                )
        self.n = len(self.explorers)
        self.action_space = first.action_space
        space = self.action_space
        assert space.shape is not None  # Discrete, MultiDiscrete or Box (checked by _check_space)
        self.actions = np.zeros((self.n, *space.shape), dtype=space.dtype)  # [n, *shape]
        self._left = [0] * self.n  # steps left in each row's current run (Poisson); a list: 16 rows
        # are cheaper to scan in Python than through numpy's per-call overhead
        self._discrete = (int(space.start), int(space.n)) if isinstance(space, spaces.Discrete) else None
        # vectorised bookkeeping only where ``act`` is the class's own (not a subclass override)
        if kind.act is PoissonRepeat.act:
            self._mode = "poisson"
        elif kind.act is RotateInPlace.act:
            self._mode = "constant"
        else:
            self._mode = "rows"

    def reset(self, seeds: Sequence[int | None]) -> None:
        """Start a new episode in every row; row ``i`` is seeded with ``seeds[i]``."""
        if len(seeds) != self.n:
            raise ValueError(f"VectorExplorer.reset: expected {self.n} seeds, received {len(seeds)}")
        for e, s in zip(self.explorers, seeds):
            e.reset(seed=s)
        self._left = [0] * self.n
        if self._mode == "constant":
            for i, e in enumerate(self.explorers):
                self.actions[i] = e._current  # type: ignore[attr-defined]

    def act(self, obs: Any) -> np.ndarray:
        """Actions ``[n, *action_shape]`` (the space's dtype, a fresh array) for the batch ``obs``."""
        if self._mode == "poisson":  # PoissonRepeat.act with the state of row i in _left[i], actions[i]
            left, actions, explorers = self._left, self.actions, self.explorers
            discrete = self._discrete
            for i in range(self.n):
                if left[i] == 0:  # a new run: same draws, same order as the single explorer
                    e = explorers[i]
                    if discrete is not None:  # e._uniform() inlined: start + rng.integers(n)
                        actions[i] = discrete[0] + e.rng.integers(discrete[1])
                    else:
                        actions[i] = e._uniform()
                    left[i] = int(e.rng.poisson(e.lam))  # type: ignore[attr-defined]  # 1 + k, minus this step
                else:
                    left[i] -= 1
        elif self._mode == "rows":
            for i, e in enumerate(self.explorers):
                self.actions[i] = e.act(_row(obs, i))
        return self.actions.copy()


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

    Unknown names and keyword arguments, and values of the wrong type (``lam="abc"``), fail here with
    ``ValueError``, before any environment is built; the explorer checks their range when it is built.

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
    hints = typing.get_type_hints(cls.__init__)
    kinds: dict[Any, str] = {float: "number", int: "int", bool: "bool", int | None: "int | None"}
    for key, value in kwargs.items():
        kind = kinds.get(hints.get(key))
        if kind is not None:
            try:
                _check_kwarg(f"explorer {name!r}", key, value, kind)
            except TypeError as e:
                raise ValueError(str(e)) from None
    return functools.partial(cls, **kwargs)


# ------------------------------------------------------------------ exploration phases


@dataclasses.dataclass
class Exploration:
    """The frames, actions and infos of an exploration phase (what a world model with memory memorises).

    Attributes:
        frames: ``steps + 1`` observations; ``frames[0]`` is where the exploration started.
        actions: ``[None, a_1, ..., a_steps]``: ``actions[t]`` led to ``frames[t]`` (the form
            :meth:`agents.mpc.MPCAgent.memorise` takes).
        infos: the ``steps + 1`` infos beside the frames.
        explorer: the explorer, ready to go on exploring.
    """

    frames: list[Any]
    actions: list[Any]
    infos: list[dict]
    explorer: Explorer

    @property
    def obs(self) -> Any:
        """The last observation (where the exploration ended)."""
        return self.frames[-1]

    @property
    def info(self) -> dict:
        """The info of the last step."""
        return self.infos[-1]


def explore(env: Any, explorer: Explorer, steps: int, obs: Any, info: dict) -> Exploration:
    """Run ``explorer`` for ``steps`` steps of ``env`` from its current ``obs`` / ``info`` (after a reset).

    The env's termination is not an end of the exploration: the target of a task is drawn after it
    (:meth:`agents.tasks.Task.explored`; the envs of this package keep stepping after a termination).
    Truncation is an error: the env's ``max_episode_steps`` must leave room for the exploration and what
    follows it.

    Example:
        >>> import gymnasium as gym, envs
        >>> env = gym.make("ImageNav-v0")
        >>> obs, info = env.reset(seed=0)
        >>> policy = PoissonRepeat(env.action_space)
        >>> policy.reset(0)
        >>> ex = explore(env, policy, 8, obs, info)
        >>> len(ex.frames), ex.actions[0], ex.obs.shape
        (9, None, (8, 8, 3))
    """
    if steps < 0:
        raise ValueError(f"explore: expected steps >= 0, received {steps}")
    frames, actions, infos = [obs], [None], [info]
    for t in range(steps):
        a = explorer.act(obs)
        obs, _, _, truncated, info = env.step(a)
        frames.append(obs)
        actions.append(a)
        infos.append(info)
        if truncated:  # the phase after the exploration would start in a finished episode
            raise ValueError(f"explore: the env truncated the episode after {t + 1} of {steps} exploration "
                             f"steps; expected max_episode_steps > {steps}")
    return Exploration(frames, actions, infos, explorer)


__all__ += ["Exploration", "explore"]


# ------------------------------------------------------------------ data-collection agents


@dataclasses.dataclass(frozen=True)
class CollectionAgent:
    """How a rollout dataset is collected: a registered explorer acting in one environment for a fixed
    number of steps per episode (the "rotating" and "walking" agents of thesis §7.4.2).

    Attributes:
        env_id: the Gymnasium id (``envs`` registers the ``WM-*`` ids).
        episode_steps: actions per episode (frames = ``episode_steps + 1``).
        explorer: a name in :data:`EXPLORERS`.
        explorer_kwargs: the explorer's keyword arguments, as ``(name, value)`` pairs.
        env_kwargs: ``gymnasium.make`` keyword arguments, as ``(name, value)`` pairs.

    Example:
        >>> agent = MINIWORLD_AGENTS["rotate"]
        >>> agent.env_id, agent.walking
        ('WM-MiniWorld-Rotate-v0', False)
        >>> from gymnasium.spaces import Discrete
        >>> type(agent.policy()(Discrete(2))).__name__
        'RotateInPlace'
    """

    env_id: str
    episode_steps: int
    explorer: str
    explorer_kwargs: tuple[tuple[str, Any], ...] = ()
    env_kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def walking(self) -> bool:
        """The agent moves (position matters); else it only turns in place."""
        return self.explorer != "rotate"

    def policy(self) -> Callable[[spaces.Space], Explorer]:
        """The ``action_space -> explorer`` callable :func:`worldmodels.data.collect` takes."""
        return explorer_factory(self.explorer, **dict(self.explorer_kwargs))


# The MiniWorld agents of thesis §7.4.2 (MiniWorld actions: 0 turn left, 1 turn right, 2 forward).
MINIWORLD_AGENTS: dict[str, CollectionAgent] = {
    # §7.4.2.1: a room with objects, turning in place by 360/41° per step, one direction per episode at random
    "rotate": CollectionAgent("WM-MiniWorld-Rotate-v0", 80, "rotate",
                              (("action", 0), ("opposite", 1), ("random_direction", True))),
    # §7.4.2.2: a correlated random walk in a single 10 m room as in the thesis (MiniWorld's FourRooms
    # hard-codes 250-step episodes, too short for τ = 150 + 150); episodes may end early at the red box
    "walk": CollectionAgent("WM-MiniWorld-OneRoom-v0", 300, "momentum", (("p_keep", 0.8),),
                            (("env_kwargs", {"max_episode_steps": 400}),)),
    # issue #8, experiment 3: the walker in four connected 6 m rooms; MiniWorld's 250-step limit of FourRooms
    # is replaced by 300 (``miniworld_max_steps``) so τ = 150 + 150 fit in one episode
    "walk_fourrooms": CollectionAgent("WM-MiniWorld-FourRooms-v0", 300, "momentum", (("p_keep", 0.8),),
                                      (("miniworld_max_steps", 300),)),
}

__all__ += ["CollectionAgent", "MINIWORLD_AGENTS"]
