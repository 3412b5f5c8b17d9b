"""Environments whose dynamics are a trained world model: model-free agents learn in imagination.

The agent observes the model's belief features (``Belief.features``, the same features
:class:`agents.wrappers.BeliefObservation` gives in the real env), acts, and the model imagines one
step: :meth:`~worldmodels.api.WorldModel.imagine` under the action, with the reward an objective
(:mod:`agents.objectives`, or any ``Imagination -> [N]`` callable) evaluated on that one-step
:class:`~worldmodels.api.Imagination` -- or, without one, the model's own predicted reward
``Imagination.reward`` (a model with a reward head, ``worldmodels.models.with_heads.WithHeads``), and
terminations from ``Imagination.cont`` (continue probability below 1/2) unless ``terminate_fn`` is given;
the next observation the features of
``Imagination.belief`` (the belief after the imagined step; models that cannot continue imagination
leave it ``None`` and are refused). Start states are beliefs after real context windows
(``model.observe`` on windows of a rollout dataset), as in Dreamer's imagination training.

* :class:`ImaginationBatch` — ``N`` imagined rollouts stepped by ONE ``imagine`` call per step.
* :class:`ImaginationEnv` — a single-rollout ``gymnasium.Env`` (passes ``check_env``).
* :func:`sb3_vec_env` — a Stable-Baselines3 ``VecEnv`` over an :class:`ImaginationBatch` (SB3 is
  imported only there; it lives in the ``dev`` extra).

Example:
    >>> import gymnasium as gym, torch
    >>> from worldmodels.api import Batch
    >>> from worldmodels.models import build_model
    >>> from agents.objectives import goal_image
    >>> model = build_model("rnn", "debug", obs_shape=(1, 16, 16), action_dim=2).eval()
    >>> contexts = Batch(obs=torch.rand(8, 4, 1, 16, 16), action=torch.zeros(8, 4, 2))
    >>> env = ImaginationEnv(model, contexts, goal_image(torch.zeros(1, 16, 16)),
    ...                      gym.spaces.Box(-1, 1, (2,)), max_episode_steps=5)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape == env.observation_space.shape, info["context_index"] in range(8)
    (True, True)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> reward <= 0.0
    True

    A model with reward and continue heads needs no reward function:

    >>> from worldmodels.models.with_heads import WithHeads
    >>> env = ImaginationEnv(WithHeads(model, hidden=(8,)), contexts, action_space=gym.spaces.Box(-1, 1, (2,)))
    >>> _ = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> isinstance(reward, float), 0.0 <= info["cont"] <= 1.0
    (True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from worldmodels.api import Batch, Belief, Imagination, encode_actions

__all__ = [
    "ContextSource",
    "ImaginationBatch",
    "ImaginationEnv",
    "sb3_vec_env",
    "belief_rows",
    "set_belief_rows",
]

#: ``Imagination`` (one step, ``N`` rollouts) -> ``[N]`` rewards, or ``[N]`` bool terminations.
RewardFn = Callable[[Imagination], Tensor]


def _action_size(space: gym.Space | None) -> int:
    """The model's action size ``A`` of a ``Discrete`` (one-hot) or 1-D ``Box`` space."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    assert isinstance(space, gym.spaces.Box)  # checked by the caller
    return int(np.prod(space.shape))


# ------------------------------------------------------------------ beliefs as batched row stores
def _tensor_state(belief: Belief, who: str) -> dict[str, Tensor]:
    for k, v in belief.state.items():
        if not isinstance(v, Tensor):
            raise TypeError(
                f"{who}: expected every Belief.state entry to be a tensor with the batch first, "
                f"received {type(v).__name__} for key {k!r}"
            )
    return belief.state  # type: ignore[return-value]


def belief_rows(belief: Belief, rows: Tensor | np.ndarray | list[int]) -> Belief:
    """The beliefs of ``rows`` (every tensor indexed along its batch dimension)."""
    idx = torch.as_tensor(np.asarray(rows), dtype=torch.long)
    state: dict[str, object] = {k: v[idx] for k, v in _tensor_state(belief, "belief_rows").items()}
    return Belief(features=belief.features[idx], state=state)


def set_belief_rows(belief: Belief, rows: Tensor | np.ndarray | list[int], new: Belief) -> Belief:
    """A copy of ``belief`` whose ``rows`` hold ``new`` (batch ``len(rows)``, the same keys)."""
    idx = torch.as_tensor(np.asarray(rows), dtype=torch.long)
    old, upd = _tensor_state(belief, "set_belief_rows"), _tensor_state(new, "set_belief_rows")
    if set(old) != set(upd):
        raise ValueError(f"set_belief_rows: belief keys {sorted(old)} differ from {sorted(upd)}")

    def put(x: Tensor, y: Tensor) -> Tensor:
        out = x.clone()
        out[idx] = y.to(out)
        return out

    return Belief(features=put(belief.features, new.features), state={k: put(old[k], upd[k]) for k in old})


# ------------------------------------------------------------------ start states
class ContextSource:
    """Real context windows to start imagination from: a :class:`~worldmodels.api.Batch` of ``M``
    windows, or a :class:`worldmodels.data.WindowDataset` (windows read on demand).

    Args:
        contexts: a ``Batch`` (``obs [M, T, ...]``, ``action [M, T, A]``) or a ``WindowDataset``.
        length: use the last ``length`` frames of each window (default: all).
    """

    def __init__(self, contexts: Any, length: int | None = None) -> None:
        if isinstance(contexts, Batch):
            self.batch: Batch | None = contexts
            self.windows = None
            self.size = contexts.shape[0]
        elif hasattr(contexts, "collate") and hasattr(contexts, "__getitems__"):
            self.batch, self.windows = None, contexts
            self.size = len(contexts)
        else:
            raise TypeError(
                f"ContextSource: expected a worldmodels.api.Batch or a worldmodels.data.WindowDataset, "
                f"received {type(contexts).__name__}"
            )
        if self.size < 1:
            raise ValueError("ContextSource: expected at least one context window, received none")
        if length is not None and length < 1:
            raise ValueError(f"ContextSource: expected length >= 1, received {length}")
        self.length = length

    def get(self, index: np.ndarray) -> tuple[Tensor, Tensor]:
        """``obs [n, L, ...]``, ``action [n, L, A]`` of the windows ``index`` (action 0 at the window start)."""
        if self.batch is not None:
            i = torch.as_tensor(index, dtype=torch.long)
            obs, action = self.batch.obs[i], self.batch.action[i]
        else:
            assert self.windows is not None
            b = self.windows.collate(self.windows.__getitems__([int(j) for j in index]))
            obs, action = b.obs, b.action
        if self.length is not None:
            obs, action = obs[:, -self.length :], action[:, -self.length :].clone()
            action[:, 0] = 0.0  # the window now starts here: nothing led to its first frame
        return obs, action


# ------------------------------------------------------------------ the batched core
class ImaginationBatch:
    """``N`` rollouts in a world model, all stepped by one ``imagine`` call.

    Args:
        model: a world model (``observe``, ``imagine`` returning ``Imagination.belief``).
        contexts: start windows (:class:`ContextSource` or what it accepts).
        reward_fn: ``Imagination`` (one step, batch ``n``) -> rewards ``[n]`` (e.g. ``goal_image(...)``);
            ``None``: the model's ``Imagination.reward`` (a model with a reward head; else ``ValueError``).
        action_space: the (real env's) ``Discrete`` or 1-D ``Box`` action space (required); Box actions are
            clipped to its bounds before the model sees them (as the real env would bound them).
        num_envs: ``N``.
        max_episode_steps: imagined steps before truncation.
        terminate_fn: optional ``Imagination -> [n]`` bool (e.g. a goal reached in imagination); ``None``:
            terminated where the model's ``Imagination.cont`` is below 1/2 (never when it has none).
        context_length: use the last frames of each context window only.
        seed: seed of the context sampling.
    """

    def __init__(
        self,
        model: Any,
        contexts: Any,
        reward_fn: RewardFn | None = None,
        action_space: gym.Space | None = None,
        num_envs: int = 1,
        max_episode_steps: int = 50,
        terminate_fn: RewardFn | None = None,
        context_length: int | None = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)) or (
            isinstance(action_space, gym.spaces.Box) and len(action_space.shape) != 1
        ):
            raise ValueError(
                f"ImaginationBatch: expected a Discrete or 1-D Box action space, received {action_space}"
            )
        if num_envs < 1 or max_episode_steps < 1:
            raise ValueError(
                f"ImaginationBatch: expected num_envs >= 1 and max_episode_steps >= 1, "
                f"received {num_envs} and {max_episode_steps}"
            )
        self.model, self.reward_fn, self.terminate_fn = model, reward_fn, terminate_fn
        self.contexts = (
            contexts if isinstance(contexts, ContextSource) else ContextSource(contexts, context_length)
        )
        self.action_space, self.num_envs, self.max_episode_steps = action_space, num_envs, max_episode_steps
        self.rng = np.random.default_rng(seed)
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.context_index = np.zeros(num_envs, dtype=np.int64)
        self.render_mode: str | None = None  # read by SB3's VecEnv
        self.belief: Belief | None = None
        self.frame: Tensor | None = None  # [N, *obs] last real context frame or imagined mean
        with torch.no_grad():
            probe = self._observe(np.zeros(1, dtype=np.int64))[0]
            if reward_fn is None:  # the model must predict rewards itself
                zero = torch.zeros(1, 1, _action_size(action_space), dtype=probe.features.dtype)
                if self.model.imagine(probe, zero).reward is None:
                    raise ValueError(
                        f"ImaginationBatch: expected a reward_fn or a model whose Imagination has a reward "
                        f"(e.g. worldmodels.models.with_heads.WithHeads(model)), received neither: "
                        f"{type(model).__name__}.imagine gives Imagination.reward None"
                    )
        self.feature_dim = int(probe.features.shape[-1])
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.feature_dim,), np.float32)

    def _observe(self, index: np.ndarray) -> tuple[Belief, Tensor]:
        obs, action = self.contexts.get(index)
        return self.model.observe(obs, action), obs[:, -1]

    def reset_rows(self, rows: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Start rows ``rows`` from fresh context windows; returns their features ``[len(rows), F]``."""
        rows = np.asarray(rows, dtype=np.int64)
        index = (rng or self.rng).integers(0, self.contexts.size, size=rows.size)
        with torch.no_grad():
            new, frame = self._observe(index)
        if (
            self.belief is None
            or rows.size == self.num_envs
            and np.array_equal(rows, np.arange(self.num_envs))
        ):
            self.belief, self.frame = new, frame
        else:
            self.belief = set_belief_rows(self.belief, rows, new)
            assert self.frame is not None
            self.frame = self.frame.clone()
            self.frame[torch.as_tensor(rows)] = frame
        self.t[rows], self.context_index[rows] = 0, index
        return new.features.detach().cpu().numpy().astype(np.float32)

    def reset(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """Start every row; features ``[N, F]``."""
        self.belief = None
        return self.reset_rows(np.arange(self.num_envs), rng)

    def encode(self, actions: Any) -> Tensor:
        """Env actions ``[N]`` (Discrete) / ``[N, A]`` (Box) -> model actions ``[N, 1, A]``."""
        a = np.asarray(actions)
        space = self.action_space
        if isinstance(space, gym.spaces.Box):
            a = np.clip(a.astype(np.float32, copy=False), space.low, space.high)
        else:
            a = a.astype(np.int64).reshape(-1)
        expected = (self.num_envs,) + tuple(space.shape or ())
        if a.shape != expected:
            raise ValueError(
                f"ImaginationBatch.step: expected actions of shape {expected}, received {a.shape}"
            )
        return encode_actions(a, space)[:, None]  # [N, 1, A]

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Imagination]:
        """One imagined step of all ``N`` rollouts: features ``[N, F]``, rewards, terminated, truncated
        (all ``[N]``) and the one-step ``Imagination`` (no automatic reset)."""
        if self.belief is None:
            raise RuntimeError("ImaginationBatch: call reset() before step()")
        u = self.encode(actions)
        with torch.no_grad():
            im = self.model.imagine(self.belief, u)
            if im.belief is None:
                raise ValueError(
                    f"{type(self.model).__name__}.imagine returned no Imagination.belief; the model cannot "
                    "continue imagination step by step"
                )
            reward = self._reward(im)
            if reward.shape != (self.num_envs,):
                raise ValueError(
                    f"reward_fn: expected rewards of shape ({self.num_envs},), received {tuple(reward.shape)}"
                )
            if self.terminate_fn is not None:
                term = self.terminate_fn(im).bool().reshape(self.num_envs)
            elif im.cont is not None:
                term = (im.cont[:, -1] < 0.5).cpu()
            else:
                term = torch.zeros(self.num_envs, dtype=torch.bool)
        self.belief, self.frame = im.belief, im.obs[:, -1]
        self.t += 1
        truncated = self.t >= self.max_episode_steps
        feats = im.belief.features.detach().cpu().numpy().astype(np.float32)
        return feats, reward.cpu().numpy().astype(np.float32), term.cpu().numpy(), truncated, im

    def _reward(self, im: Imagination) -> Tensor:
        if self.reward_fn is not None:
            return self.reward_fn(im).float()
        if im.reward is None:
            raise ValueError(
                f"ImaginationBatch: no reward_fn and {type(self.model).__name__}.imagine gave Imagination.reward None"
            )
        return im.reward[:, -1].float()

    def render_frames(self) -> np.ndarray:
        """The current frame of every row as uint8 RGB ``[N, H, W, 3]`` (image models only)."""
        if self.frame is None:
            raise RuntimeError("ImaginationBatch: call reset() before render")
        x = self.frame
        if x.dim() != 4:
            raise ValueError(f"render: expected image observations [N, C, H, W], received {tuple(x.shape)}")
        img = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3]


# ------------------------------------------------------------------ single env
class ImaginationEnv(gym.Env):
    """A ``gymnasium.Env`` whose transitions are one imagined step of a world model.

    ## Observation Space
    ``Box(-inf, inf, (F,), float32)``: the model's ``Belief.features`` (after the context, then after
    each imagined step).

    ## Action Space
    The real env's action space (``Discrete`` or 1-D ``Box``; Box actions are clipped to its bounds).

    ## Rewards
    ``reward_fn`` on the one-step ``Imagination`` (e.g. ``goal_image(goal)`` = minus the mean squared
    pixel distance of the imagined frame to the goal); without one, the model's predicted
    ``Imagination.reward`` (a model with a reward head).

    ## Starting State
    The model's belief after a real context window drawn uniformly from ``contexts``
    (``info["context_index"]``).

    ## Episode End
    Terminated when ``terminate_fn`` says so (without one: when the model's continue probability
    ``Imagination.cont`` drops below 1/2), truncated after ``max_episode_steps`` imagined steps.

    ## Info
    ``info["uncertainty"]``: the model's uncertainty of the step; ``info["cont"]``: its continue
    probability, when it predicts one.

    Args:
        See :class:`ImaginationBatch` (``num_envs`` is 1); ``render_mode="rgb_array"`` renders the
        current imagined frame (image models).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        model: Any,
        contexts: Any,
        reward_fn: RewardFn | None = None,
        action_space: gym.Space | None = None,
        max_episode_steps: int = 50,
        terminate_fn: RewardFn | None = None,
        context_length: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(
                f"ImaginationEnv: expected render_mode None or 'rgb_array', received {render_mode!r}"
            )
        self.core = ImaginationBatch(
            model, contexts, reward_fn, action_space, 1, max_episode_steps, terminate_fn, context_length
        )
        self.action_space = self.core.action_space
        self.observation_space = self.core.observation_space
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        feats = self.core.reset(self.np_random)
        return feats[0], {"context_index": int(self.core.context_index[0])}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if isinstance(self.action_space, gym.spaces.Discrete) and not self.action_space.contains(action):
            raise ValueError(f"ImaginationEnv.step: action {action!r} is not in {self.action_space}")
        feats, reward, term, trunc, im = self.core.step(np.asarray(action)[None])
        info = {"uncertainty": float(im.uncertainty[0, -1])}
        if im.cont is not None:
            info["cont"] = float(im.cont[0, -1])
        return feats[0], float(reward[0]), bool(term[0]), bool(trunc[0]), info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("ImaginationEnv.render() called without render_mode='rgb_array'")
            return None
        return self.core.render_frames()[0]


# ------------------------------------------------------------------ Stable-Baselines3 adapter
_SB3_CLASS: type | None = None


def _sb3_class() -> type:
    global _SB3_CLASS
    if _SB3_CLASS is not None:
        return _SB3_CLASS
    try:
        from stable_baselines3.common.vec_env import VecEnv
    except ImportError as e:  # pragma: no cover - depends on the installed extras
        raise ImportError("sb3_vec_env needs stable-baselines3 (pip install 'worldmodels[dev]')") from e

    class ImaginationVecEnv(VecEnv):
        """SB3 ``VecEnv`` over an :class:`ImaginationBatch`: one ``imagine`` call per step, automatic reset
        of finished rows with ``info["terminal_observation"]`` and ``info["TimeLimit.truncated"]``."""

        def __init__(self, core: ImaginationBatch) -> None:
            self.core = core
            super().__init__(core.num_envs, core.observation_space, core.action_space)
            self._actions: np.ndarray | None = None

        def reset(self) -> np.ndarray:
            if self._seeds[0] is not None:
                self.core.rng = np.random.default_rng(self._seeds[0])
            self._reset_seeds()
            self._reset_options()
            self.reset_infos = [{} for _ in range(self.num_envs)]
            return self.core.reset()

        def step_async(self, actions: np.ndarray) -> None:
            self._actions = actions

        def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
            assert self._actions is not None
            obs, reward, term, trunc, _ = self.core.step(self._actions)
            done = term | trunc
            infos: list[dict] = [{} for _ in range(self.num_envs)]
            rows = np.flatnonzero(done)
            for i in rows:
                infos[i]["terminal_observation"] = obs[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(trunc[i] and not term[i])
            if rows.size:
                obs = obs.copy()
                obs[rows] = self.core.reset_rows(rows)
            return obs, reward, done, infos

        def close(self) -> None:
            return None

        def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
            return [getattr(self.core, attr_name) for _ in self._get_indices(indices)]

        def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
            setattr(self.core, attr_name, value)

        def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
            raise AttributeError(f"ImaginationVecEnv has no per-env method {method_name!r}")

        def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
            return [False for _ in self._get_indices(indices)]

        def get_images(self) -> list[np.ndarray]:
            return list(self.core.render_frames())

    _SB3_CLASS = ImaginationVecEnv
    return ImaginationVecEnv


def sb3_vec_env(core: ImaginationBatch) -> Any:
    """A Stable-Baselines3 ``VecEnv`` stepping all rows of ``core`` with one ``imagine`` call.

    Example:
        >>> import gymnasium as gym, torch
        >>> from worldmodels.api import Batch
        >>> from worldmodels.models import build_model
        >>> model = build_model("rnn", "debug", obs_shape=(3,), action_dim=2, emission="gaussian")
        >>> core = ImaginationBatch(model, Batch(obs=torch.rand(4, 3, 3), action=torch.zeros(4, 3, 2)),
        ...                         lambda im: -im.obs[:, -1].pow(2).sum(-1), gym.spaces.Discrete(2),
        ...                         num_envs=6, max_episode_steps=3, seed=0)
        >>> venv = sb3_vec_env(core)
        >>> venv.reset().shape, venv.num_envs
        ((6, 24), 6)
    """
    return _sb3_class()(core)
