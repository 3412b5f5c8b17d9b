"""A real env observed through a world model: observations become the model's belief features.

:class:`BeliefObservation` replaces each observation by ``model.observe(context).features`` — the
filtered latent state of the world model after the episode's frames and the actions that led to
them (DESIGN §2 action convention). Any model-free agent (Stable-Baselines3 PPO, SAC, DQN, ...) then
acts on learned features, as the controller of World Models or the actor of Dreamer does; the same
features are what :class:`agents.imagination_env.ImaginationEnv` gives, so a policy trained in
imagination runs unchanged in the real env under this wrapper.

The world-model API filters a whole context per call, so each step re-observes the last
``max_context`` frames (``None``: the whole episode): the cost per step grows with the context.

Example:
    >>> import gymnasium as gym, envs
    >>> from worldmodels.models import build_model
    >>> model = build_model("rnn", "debug", obs_shape=(1, 32, 32), action_dim=2).eval()
    >>> env = BeliefObservation(gym.make("BouncingBallForce-v0"), model, max_context=8)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, info["frame"].shape
    ((24,), (32, 32, 1))
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from agents.mpc import to_model_obs
from worldmodels.api import encode_actions

__all__ = ["BeliefObservation"]


class BeliefObservation(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Observations = the world model's ``Belief.features`` ``[F]`` (float32) after the episode so far.

    ``info["frame"]`` keeps the real observation (for videos).

    Args:
        env: a Gymnasium env with image (uint8) or vector observations and a ``Discrete`` or 1-D ``Box``
            action space matching the model's ``action_dim``.
        model: a world model (``observe``).
        max_context: filter over at most this many recent frames (``None``: the whole episode).
    """

    def __init__(self, env: gym.Env, model: Any, max_context: int | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, model=model, max_context=max_context)
        gym.Wrapper.__init__(self, env)
        space = env.action_space
        if not isinstance(space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise ValueError(f"BeliefObservation: expected a Discrete or Box action space, received {space}")
        if not isinstance(env.observation_space, gym.spaces.Box):
            raise ValueError(
                f"BeliefObservation: expected a Box (image or vector) observation space, "
                f"received {env.observation_space}"
            )
        if max_context is not None and max_context < 1:
            raise ValueError(f"BeliefObservation: expected max_context >= 1 or None, received {max_context}")
        self.model, self.max_context = model, max_context
        self.action_dim = int(encode_actions(space.sample(), space).numel())
        want = getattr(getattr(model, "config", None), "action_dim", self.action_dim)
        if want != self.action_dim:
            raise ValueError(
                f"BeliefObservation: the model expects actions of size {want}, the env's {space} "
                f"encodes to size {self.action_dim}"
            )
        self._obs: list[Tensor] = []
        self._act: list[Tensor] = []
        self._push(env.observation_space.sample(), None)
        dim = int(self._features().shape[0])
        self._obs, self._act = [], []
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)

    def _push(self, obs: Any, action: Any) -> None:
        a = torch.zeros(self.action_dim) if action is None else encode_actions(action, self.env.action_space)
        self._obs.append(to_model_obs(obs))
        self._act.append(a.reshape(self.action_dim))
        if self.max_context is not None:
            del self._obs[: -self.max_context], self._act[: -self.max_context]
        self._act[0] = torch.zeros(self.action_dim)  # nothing in the context led to its first frame

    def _features(self) -> np.ndarray:
        obs = torch.stack(self._obs)[None]  # [1, T, ...]
        act = torch.stack(self._act)[None]  # [1, T, A]
        with torch.no_grad():
            f = self.model.observe(obs, act).features[0]  # [F]
        return f.detach().cpu().numpy().astype(np.float32)

    @property
    def context(self) -> tuple[Tensor, Tensor]:
        """The context the model filters: ``obs [1, T, ...]``, ``action [1, T, A]``."""
        return torch.stack(self._obs)[None], torch.stack(self._act)[None]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs, self._act = [], []
        self._push(obs, None)
        return self._features(), {**info, "frame": obs}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self._obs:
            raise RuntimeError("BeliefObservation: call reset() before step()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._push(obs, action)
        return self._features(), float(reward), terminated, truncated, {**info, "frame": obs}
