"""Any registered model with a reward head and a continue head: ``WithHeads(model)``, itself a WorldModel.

The heads (:mod:`worldmodels.heads`) read the model's belief features of a step: :func:`~worldmodels.heads.
belief_features` of every step of a training window, ``Imagination.latent`` of imagined steps. Training
targets come from the batch: ``Batch.reward[:, t]`` (the reward of the step ``action[:, t]`` led to
``obs[:, t]``; steps where ``is_first`` have none and are left out) and ``cont = ~Batch.terminated``
(windows of a dataset carry both, :class:`worldmodels.data.WindowDataset`).

* joint (``frozen=False``): ``loss = model's loss + reward_weight * reward loss + cont_weight * cont loss``;
  the heads' gradient reaches the model's features where the model computes them in one differentiable
  pass (``features_per_step``: RSSM, RNN, VRNN, KVAE, GTM-SM; others re-filter each prefix without
  gradients, so only the heads learn from the rewards).
* post hoc (``frozen=True``): the model is frozen (``requires_grad`` off, kept in eval mode) and
  ``loss`` is the heads' loss alone. In training mode the model's own loss is not computed (it cannot
  change, and e.g. RSSM's decoder costs 15x the features); in eval mode (validation,
  :func:`worldmodels.evaluate.evaluate`) ``metrics`` also hold the frozen model's (``"elbo"``).

``imagine`` and ``predict`` are the model's, with ``Imagination.reward`` ``[N, H]`` and
``Imagination.cont`` ``[N, H]`` (probability of continuing) filled in, so
:class:`agents.imagination_env.ImaginationEnv` needs no reward function. ``observe`` and ``impute`` are
the model's; any other attribute (GTM-SM's ``localize``, ``elbo``, ...) is the model's too. The wrapped
model's parameters keep their names under ``model.`` (the checkpoint stores ``model.*``, ``reward_head.*``,
``cont_head.*`` and the config below, so :func:`worldmodels.load` rebuilds the wrapper).

Example:
    >>> import torch
    >>> from worldmodels.api import Batch
    >>> from worldmodels.models import build_model
    >>> rssm = build_model("rssm", "debug")                      # frames (1, 8, 8), 5 actions
    >>> model = WithHeads(rssm, hidden=(16,))
    >>> batch = Batch(obs=torch.rand(2, 6, 1, 8, 8).round(), action=torch.zeros(2, 6, 5),
    ...               reward=torch.rand(2, 6), terminated=torch.zeros(2, 6, dtype=torch.bool))
    >>> out = model.loss(batch)
    >>> sorted(k for k in out.metrics if k.startswith(("reward", "cont")))
    ['cont_loss', 'reward_loss', 'reward_mse']
    >>> im = model.predict(batch.obs, batch.action, torch.zeros(2, 3, 5))
    >>> im.reward.shape, im.cont.shape, model.config.model
    (torch.Size([2, 3]), torch.Size([2, 3]), 'rssm')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from worldmodels.api import Batch, Belief, Imagination, LossOutput
from worldmodels.heads import REWARD_LOSSES, ContinueHead, RewardHead, belief_features
from worldmodels.models import (
    config_from_dict,
    config_to_dict,
    get_config_class,
    get_model_class,
    register_model,
)
from worldmodels.models.rnn import RNNConfig

__all__ = ["WithHeads", "WithHeadsConfig"]


@dataclass
class WithHeadsConfig:
    """The wrapped model (name + full config) and the heads.

    Attributes:
        model: registered name of the wrapped model.
        model_config: its config as a dict (missing fields take the config's defaults; stored complete).
        obs_shape, action_dim: the wrapped model's (given: they override ``model_config``; else read from it).
        reward, cont: which heads to build (at least one).
        frozen: post hoc training: the wrapped model is frozen and only the heads learn.
        hidden: widths of the heads' hidden layers.
        reward_loss: ``"twohot"`` (DreamerV3, symlog bins) or ``"mse"`` (:class:`worldmodels.heads.RewardHead`).
        reward_bins: bins of ``"twohot"``.
        reward_weight, cont_weight: weights of the heads' losses.
    """

    model: str = "rnn"
    model_config: dict[str, Any] = field(default_factory=dict)
    obs_shape: tuple[int, ...] | None = None
    action_dim: int | None = None
    reward: bool = True
    cont: bool = True
    frozen: bool = False
    hidden: tuple[int, ...] = (128, 128)
    reward_loss: str = "twohot"
    reward_bins: int = 255
    reward_weight: float = 1.0
    cont_weight: float = 1.0

    PRESETS: ClassVar[dict[str, dict]] = {
        "debug": {"model": "rnn", "model_config": dict(RNNConfig.PRESETS["debug"]), "hidden": (16,)},
    }

    def __post_init__(self) -> None:
        if self.model == "with_heads":
            raise ValueError("WithHeadsConfig.model: expected a model other than 'with_heads', received it")
        if not isinstance(self.model_config, dict):
            raise ValueError(f"WithHeadsConfig.model_config: expected a dict, received {self.model_config!r}")
        if not (self.reward or self.cont):
            raise ValueError("WithHeadsConfig: expected reward=True or cont=True, received neither")
        if self.reward_loss not in REWARD_LOSSES:
            raise ValueError(f"WithHeadsConfig.reward_loss: expected one of {REWARD_LOSSES}, received "
                             f"{self.reward_loss!r}")
        self.hidden = tuple(int(h) for h in self.hidden)
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"WithHeadsConfig.hidden: expected widths >= 1, received {self.hidden}")
        values = dict(self.model_config)
        if self.obs_shape is not None:
            values["obs_shape"] = tuple(self.obs_shape)
        if self.action_dim is not None:
            values["action_dim"] = int(self.action_dim)
        inner = config_from_dict(get_config_class(self.model), values)  # unknown keys raise, naming the valid
        self.model_config = config_to_dict(inner)
        self.obs_shape = tuple(int(v) for v in inner.obs_shape)
        self.action_dim = int(inner.action_dim)

    def inner_config(self) -> Any:
        """The wrapped model's config dataclass."""
        return config_from_dict(get_config_class(self.model), self.model_config)


@register_model("with_heads")
class WithHeads(nn.Module):
    """A world model with reward / continue heads; implements :class:`worldmodels.api.WorldModel`.

    Args:
        model: a registered model to wrap (its weights are kept), or a :class:`WithHeadsConfig` (builds a
            fresh model; what :func:`worldmodels.load` and ``build_model("with_heads", ...)`` do).
        **options: :class:`WithHeadsConfig` fields (``reward``, ``cont``, ``frozen``, ``hidden``,
            ``reward_loss``, ...) when ``model`` is a model.
    """

    Config = WithHeadsConfig
    model: Any  # the wrapped world model (an nn.Module answering the WorldModel API)

    def __init__(self, model: nn.Module | WithHeadsConfig, **options: Any) -> None:
        super().__init__()
        if isinstance(model, WithHeadsConfig):
            if options:
                raise TypeError(f"WithHeads: options {sorted(options)} go into the WithHeadsConfig, not beside it")
            config = model
            inner = get_model_class(config.model)(config.inner_config())
        else:
            name, inner_cfg = getattr(type(model), "model_name", None), getattr(model, "config", None)
            if not isinstance(model, nn.Module) or name is None or not dataclasses.is_dataclass(inner_cfg):
                raise TypeError(f"WithHeads: expected a registered model (@register_model, dataclass .config) "
                                f"or a WithHeadsConfig, received {type(model).__name__}")
            for key in ("model", "model_config", "obs_shape", "action_dim"):
                if key in options:
                    raise TypeError(f"WithHeads: {key!r} comes from the wrapped model; received it as an option")
            config = config_from_dict(WithHeadsConfig, {"model": name, "model_config": config_to_dict(inner_cfg),
                                                        **options})
            inner = model
        self.config = config
        self.model = inner
        self.feature_dim = self._probe_feature_dim()
        c = config
        self.reward_head = RewardHead(self.feature_dim, c.hidden, c.reward_loss, c.reward_bins) if c.reward else None
        self.cont_head = ContinueHead(self.feature_dim, c.hidden) if c.cont else None
        if c.frozen:
            self.model.requires_grad_(False)
            self.model.eval()

    def _probe_feature_dim(self) -> int:
        """``F``: the size of ``Belief.features`` (one observed zero frame)."""
        c = self.config
        assert c.obs_shape is not None and c.action_dim is not None
        p = next(iter(self.model.parameters()), None)
        kw: dict[str, Any] = {} if p is None else {"device": p.device, "dtype": p.dtype}
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                belief = self.model.observe(torch.zeros(1, 1, *c.obs_shape, **kw), torch.zeros(1, 1, c.action_dim, **kw))
        finally:
            self.model.train(was)
        return int(belief.features.shape[-1])

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("model")
            if inner is None or name.startswith("_"):
                raise
            return getattr(inner, name)

    def train(self, mode: bool = True) -> WithHeads:
        """As ``nn.Module.train``; a frozen wrapped model stays in eval mode."""
        super().train(mode)
        if self.config.frozen:
            self.model.eval()
        return self

    # ---------------------------------------------------------------- heads
    def predict_reward(self, features: Tensor) -> Tensor:
        """Predicted reward ``[...]`` of belief features ``[..., F]``."""
        if self.reward_head is None:
            raise ValueError("WithHeads.predict_reward: this model has no reward head (built with reward=False)")
        return self.reward_head(features)

    def predict_cont(self, features: Tensor) -> Tensor:
        """Predicted probability ``[...]`` that the episode continues, of belief features ``[..., F]``."""
        if self.cont_head is None:
            raise ValueError("WithHeads.predict_cont: this model has no continue head (built with cont=False)")
        return self.cont_head(features)

    def _fill(self, im: Imagination) -> Imagination:
        if im.latent.shape[-1] != self.feature_dim:
            raise ValueError(f"WithHeads: expected Imagination.latent [N, H, {self.feature_dim}] (the size of "
                             f"Belief.features), received {tuple(im.latent.shape)} from {self.config.model}")
        if self.reward_head is not None:
            im.reward = self.reward_head(im.latent)  # [N, H]
        if self.cont_head is not None:
            im.cont = self.cont_head(im.latent)  # [N, H]
        return im

    # ---------------------------------------------------------------- WorldModel API
    def loss(self, batch: Batch, beta: float = 1.0) -> LossOutput:
        """The model's loss plus the heads' losses (frozen: the heads' losses only); see the module doc."""
        c = self.config
        if c.frozen:
            out = LossOutput(torch.zeros((), device=batch.obs.device))
            if not self.training:  # evaluation: also the frozen model's own metrics (its ELBO)
                with torch.no_grad():
                    out = self.model.loss(batch, beta)
            total: Tensor = torch.zeros((), device=batch.obs.device)
        else:
            out = self.model.loss(batch, beta)
            total = out.loss
        if self.reward_head is not None and batch.reward is None:
            raise ValueError("WithHeads.loss: expected Batch.reward [B, T] for the reward head (windows of a "
                             "dataset carry it), received None")
        if self.cont_head is not None and batch.terminated is None:
            raise ValueError("WithHeads.loss: expected Batch.terminated [B, T] for the continue head (windows of "
                             "a dataset carry it), received None")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not c.frozen):
            f = belief_features(self.model, batch)  # [B, T, F]
        metrics = dict(out.metrics)
        if self.reward_head is not None:
            assert batch.reward is not None
            has_reward = ~batch.is_first  # nothing in the window led to a first frame
            reward = batch.reward.to(f)
            loss_r = self.reward_head.loss(f, reward, has_reward)
            with torch.no_grad():
                err = (self.reward_head(f) - reward).square()
                metrics["reward_mse"] = float((err * has_reward).sum() / has_reward.sum().clamp_min(1))
            metrics["reward_loss"] = float(loss_r.detach())
            total = total + c.reward_weight * loss_r
        if self.cont_head is not None:
            assert batch.terminated is not None
            loss_c = self.cont_head.loss(f, (~batch.terminated.bool()).to(f), torch.ones_like(batch.is_first))
            metrics["cont_loss"] = float(loss_c.detach())
            total = total + c.cont_weight * loss_c
        return LossOutput(loss=total, metrics=metrics)

    def observe(self, obs: Tensor, action: Tensor, mask: Tensor | None = None) -> Belief:
        """The wrapped model's ``observe``."""
        return self.model.observe(obs, action, mask)

    def imagine(self, belief: Belief, actions: Tensor, **kwargs: Any) -> Imagination:
        """The wrapped model's ``imagine`` (``kwargs`` passed on) with ``reward`` and ``cont`` ``[N, H]``."""
        return self._fill(self.model.imagine(belief, actions, **kwargs))

    def predict(self, obs: Tensor, action: Tensor, future_actions: Tensor) -> Imagination:
        """The wrapped model's ``predict`` with ``reward`` and ``cont`` ``[B, H]``."""
        return self._fill(self.model.predict(obs, action, future_actions))

    def impute(self, obs: Tensor, action: Tensor, mask: Tensor) -> Tensor:
        """The wrapped model's ``impute``."""
        return self.model.impute(obs, action, mask)
