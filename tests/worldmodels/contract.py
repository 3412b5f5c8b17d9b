"""The world-model contract (DESIGN §3): checks every model's test runs.

Two ways to use it:

1. Subclass :class:`WorldModelContract` in a test module (pytest collects its ``test_*`` methods)::

       from tests.worldmodels.contract import WorldModelContract

       class TestKVAEContract(WorldModelContract):
           def make_model(self):
               return build_model("kvae", "debug", obs_shape=(1, 16, 16), action_dim=2)

           def make_batch(self, B, T, seed=0):
               g = torch.Generator().manual_seed(seed)
               return Batch(obs=torch.rand(B, T, 1, 16, 16, generator=g).round(),
                            action=torch.randn(B, T, 2, generator=g))

   Class attributes tune it: ``T`` (window length, default 6), ``overfit_steps`` (40), ``overfit_lr``
   (1e-2), ``overfit_gain`` (the loss must drop by this fraction of its initial |value|, 0.05),
   ``atol`` (1e-5), ``obs_range`` ((0, 1) checks predicted means lie in [0, 1]; ``None`` skips),
   ``loss_is_negative_elbo`` (``loss(batch, beta=1) == -metrics["elbo"]``; set ``False`` when the debug
   config re-weights terms), ``stochastic_predictions`` (``False``: ``imagine`` must be a deterministic
   function of belief and actions, so broadcasting checks compare numbers; ``True``: only shapes).

2. Call :func:`run_contract(model_factory, batch_factory)` from a plain test function; it runs all
   checks and raises ``AssertionError`` naming the first failing one.

``make_model`` must build a fresh, registered model (it is saved and loaded by name). Models are
built under ``torch.manual_seed(0)``; ``make_batch(B, T, seed)`` must be deterministic in ``seed``.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import worldmodels
from worldmodels.api import Batch, Belief, Imagination, LossOutput

__all__ = ["WorldModelContract", "run_contract"]


def random_binary_batch(
    B: int, T: int, seed: int = 0, obs_shape: tuple[int, ...] = (1, 8, 8), A: int = 5
) -> Batch:
    """Seeded binary frames ``[B, T, *obs_shape]`` with one-hot actions over ``A`` (zero at t = 0)."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(B, T, *obs_shape, generator=g).round()
    action = torch.nn.functional.one_hot(torch.randint(0, A, (B, T), generator=g), A).float()
    action[:, 0] = 0
    return Batch(obs=obs, action=action)


def _seeded(fn: Callable[[], Any], seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return fn()


@pytest.mark.usefixtures("one_thread")
class WorldModelContract:
    """Base class of the contract tests; subclass and implement :meth:`make_model` / :meth:`make_batch`."""

    T: int = 6
    overfit_steps: int = 40
    overfit_lr: float = 1e-2
    overfit_gain: float = 0.05
    atol: float = 1e-5
    obs_range: tuple[float, float] | None = (0.0, 1.0)
    stochastic_predictions: bool = False
    loss_is_negative_elbo: bool = True

    # ------------------------------------------------------------------ to implement

    def make_model(self) -> nn.Module:
        raise NotImplementedError

    def make_batch(self, B: int, T: int, seed: int = 0) -> Batch:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers

    def model(self) -> nn.Module:
        return _seeded(self.make_model)

    def _shapes(self, model: nn.Module) -> tuple[tuple[int, ...], int]:
        cfg = model.config
        return tuple(cfg.obs_shape), int(cfg.action_dim)

    def _future(self, model: nn.Module, N: int, H: int, seed: int = 1) -> Tensor:
        return self.make_batch(N, H, seed=seed).action

    def _check_imagination(self, model: nn.Module, im: Imagination, N: int, H: int) -> None:
        obs_shape, _ = self._shapes(model)
        assert isinstance(im, Imagination), f"imagine returned {type(im).__name__}, expected Imagination"
        assert tuple(im.obs.shape) == (N, H, *obs_shape), f"Imagination.obs {tuple(im.obs.shape)}"
        assert im.latent.dim() == 3 and tuple(im.latent.shape[:2]) == (N, H), (
            f"Imagination.latent {tuple(im.latent.shape)}, expected [{N}, {H}, F]"
        )
        assert tuple(im.uncertainty.shape) == (N, H), f"Imagination.uncertainty {tuple(im.uncertainty.shape)}"
        for name in ("obs", "latent", "uncertainty"):
            assert torch.isfinite(getattr(im, name)).all(), f"Imagination.{name} is not finite"
        assert (im.uncertainty >= 0).all(), "Imagination.uncertainty must be >= 0"
        if self.obs_range is not None:
            lo, hi = self.obs_range
            assert im.obs.min() >= lo - 1e-6 and im.obs.max() <= hi + 1e-6, (
                f"predicted means outside {self.obs_range}: [{float(im.obs.min())}, {float(im.obs.max())}]"
            )
        for k, v in im.extras.items():
            assert tuple(v.shape[:2]) == (N, H), f"Imagination.extras[{k!r}] {tuple(v.shape)}"

    # ------------------------------------------------------------------ the checks

    def test_registered(self) -> None:
        model = self.model()
        name = getattr(type(model), "model_name", None)
        assert name is not None, f"{type(model).__name__} is not decorated with @register_model"
        from worldmodels.models import get_config_class, get_model_class

        assert get_model_class(name) is type(model)
        assert isinstance(model.config, get_config_class(name))
        assert "debug" in type(model.config).PRESETS, "a 'debug' preset is mandatory"

    def test_loss(self) -> None:
        model = self.model()
        batch = self.make_batch(3, self.T)
        out = model.loss(batch)
        assert isinstance(out, LossOutput)
        assert out.loss.dim() == 0 and torch.isfinite(out.loss), f"loss {out.loss}"
        assert out.loss.requires_grad
        assert "elbo" in out.metrics and isinstance(out.metrics["elbo"], float)
        assert all(isinstance(v, float) for v in out.metrics.values()), "metrics must be python floats"
        out.loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), "the loss reaches no parameter"
        assert all(torch.isfinite(g).all() for g in grads if g is not None)

    def test_loss_beta_one_is_elbo(self) -> None:
        """With ``beta = 1`` the loss is the negative ELBO unless the model re-weights terms."""
        model = self.model().eval()
        batch = self.make_batch(2, self.T)
        out = _seeded(lambda: model.loss(batch, beta=1.0), 3)
        weighted = any(
            getattr(model.config, k, None) not in (None, 0, 0.0, 1, 1.0)
            for k in ("free_bits", "reconstruction_weight", "recon_weight")
        )
        if self.loss_is_negative_elbo and not weighted:
            assert abs(float(out.loss.detach()) + out.metrics["elbo"]) <= 1e-4 * max(
                1.0, abs(out.metrics["elbo"])
            )

    def test_observe(self) -> None:
        model = self.model().eval()
        batch = self.make_batch(3, self.T)
        with torch.no_grad():
            belief = model.observe(batch.obs, batch.action, batch.mask)
        assert isinstance(belief, Belief)
        assert belief.features.dim() == 2 and belief.batch_size == 3
        assert torch.isfinite(belief.features).all()
        for k, v in belief.state.items():
            if isinstance(v, Tensor) and v.dim() > 0:
                assert v.shape[0] == 3, f"Belief.state[{k!r}] has batch {v.shape[0]}, expected 3"

    def test_imagine_broadcasts_belief(self) -> None:
        """A belief of batch 1 serves N candidates; equals batch N made of N copies and N separate calls."""
        model = self.model().eval()
        batch = self.make_batch(1, self.T)
        N, H = 4, 5
        actions = self._future(model, N, H)
        with torch.no_grad():
            b1 = model.observe(batch.obs, batch.action)
            im1 = _seeded(lambda: model.imagine(b1, actions))
            self._check_imagination(model, im1, N, H)
            rep = lambda x: x.expand(N, *x.shape[1:]).contiguous()  # noqa: E731
            bN = model.observe(rep(batch.obs), rep(batch.action))
            imN = _seeded(lambda: model.imagine(bN, actions))
            self._check_imagination(model, imN, N, H)
            if not self.stochastic_predictions:
                torch.testing.assert_close(im1.obs, imN.obs, atol=self.atol, rtol=1e-4)
                torch.testing.assert_close(im1.latent, imN.latent, atol=self.atol, rtol=1e-4)
                for n in (0, N - 1):
                    one = model.imagine(b1, actions[n : n + 1])
                    torch.testing.assert_close(one.obs[0], im1.obs[n], atol=self.atol, rtol=1e-4)

    def test_imagine_rejects_mismatched_batch(self) -> None:
        model = self.model().eval()
        batch = self.make_batch(2, self.T)
        with torch.no_grad():
            belief = model.observe(batch.obs, batch.action)
            with pytest.raises(ValueError):
                model.imagine(belief, self._future(model, 3, 2))

    def test_predict_is_observe_then_imagine(self) -> None:
        model = self.model().eval()
        batch = self.make_batch(2, self.T)
        future = self._future(model, 2, 3)
        with torch.no_grad():
            a = _seeded(lambda: model.predict(batch.obs, batch.action, future))
            b = _seeded(lambda: model.imagine(model.observe(batch.obs, batch.action), future))
        self._check_imagination(model, a, 2, 3)
        if not self.stochastic_predictions:
            torch.testing.assert_close(a.obs, b.obs, atol=self.atol, rtol=1e-4)

    def test_impute(self) -> None:
        model = self.model().eval()
        batch = self.make_batch(2, self.T)
        mask = torch.ones(2, self.T, dtype=torch.bool)
        mask[:, 2:4] = False
        with torch.no_grad():
            x = model.impute(batch.obs, batch.action, mask)
        assert tuple(x.shape) == tuple(batch.obs.shape), f"impute returned {tuple(x.shape)}"
        assert torch.isfinite(x).all()
        if self.obs_range is not None:
            assert x.min() >= self.obs_range[0] - 1e-6 and x.max() <= self.obs_range[1] + 1e-6

    def test_deterministic_under_seed(self) -> None:
        m1, m2 = self.model(), self.model()
        for (n1, p1), (n2, p2) in zip(m1.state_dict().items(), m2.state_dict().items()):
            assert n1 == n2 and torch.equal(p1, p2), f"parameter {n1} differs between two seeded builds"
        batch = self.make_batch(2, self.T)
        assert torch.equal(self.make_batch(2, self.T).obs, batch.obs), "make_batch is not deterministic"
        l1 = _seeded(lambda: m1.loss(batch), 5)
        l2 = _seeded(lambda: m2.loss(batch), 5)
        assert torch.equal(l1.loss, l2.loss)

    def test_save_load_round_trip(self) -> None:
        model = self.model().eval()
        batch = self.make_batch(2, self.T)
        future = self._future(model, 2, 3)
        with tempfile.TemporaryDirectory() as d:
            worldmodels.save(f"{d}/ckpt", model)
            loaded = worldmodels.load(f"{d}/ckpt")
        assert type(loaded) is type(model) and loaded.config == model.config
        for (n, p), (_, q) in zip(model.state_dict().items(), loaded.state_dict().items()):
            assert torch.equal(p, q), f"{n} changed in the round trip"
        with torch.no_grad():
            a = _seeded(lambda: model.loss(batch), 7)
            b = _seeded(lambda: loaded.loss(batch), 7)
            assert torch.equal(a.loss, b.loss)
            pa = _seeded(lambda: model.predict(batch.obs, batch.action, future), 7)
            pb = _seeded(lambda: loaded.predict(batch.obs, batch.action, future), 7)
            assert torch.equal(pa.obs, pb.obs)

    def test_overfits_tiny_batch(self) -> None:
        model = self.model().train()
        batch = self.make_batch(2, self.T)
        opt = torch.optim.Adam(model.parameters(), lr=self.overfit_lr)
        torch.manual_seed(0)
        with torch.no_grad():
            first = float(model.loss(batch).loss)
        for _ in range(self.overfit_steps):
            loss = model.loss(batch).loss
            assert torch.isfinite(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            last = float(model.loss(batch).loss)
        assert last < first - self.overfit_gain * max(abs(first), 1.0), f"loss {first:.4f} -> {last:.4f}"

    def test_bad_shapes_raise_value_error(self) -> None:
        model = self.model()
        batch = self.make_batch(2, self.T)
        obs_shape, A = self._shapes(model)
        bad_obs = torch.zeros(2, self.T, *[s + 1 for s in obs_shape])
        with pytest.raises(ValueError, match=r"expected.*received") as e:
            model.loss(Batch(obs=bad_obs, action=batch.action))
        assert str(tuple(bad_obs.shape)) in str(e.value), f"message does not name the shape: {e.value}"
        bad_action = torch.zeros(2, self.T, A + 1)
        with pytest.raises(ValueError, match=r"expected.*received"):
            model.observe(batch.obs, bad_action)
        with pytest.raises(ValueError, match=r"expected.*received"):
            model.impute(batch.obs, batch.action, torch.ones(2, self.T + 1, dtype=torch.bool))

    def test_mask_without_observed_step(self) -> None:
        model = self.model()
        batch = self.make_batch(2, self.T)
        none = torch.zeros(2, self.T, dtype=torch.bool)
        out = model.loss(dataclasses.replace(batch, mask=none))  # the batch's other fields as made
        assert torch.isfinite(out.loss), f"loss with no observed frame is {out.loss}"
        out.loss.backward()
        for n, p in model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), f"non-finite gradient in {n}"
        with torch.no_grad():
            x = model.impute(batch.obs, batch.action, none)
            assert tuple(x.shape) == tuple(batch.obs.shape) and torch.isfinite(x).all()
            belief = model.observe(batch.obs, batch.action, none)
            assert torch.isfinite(belief.features).all()


def run_contract(
    model_factory: Callable[[], nn.Module], batch_factory: Callable[..., Batch], **options: Any
) -> None:
    """Run every :class:`WorldModelContract` check on the model; ``options`` set its class attributes.

    Example (in a test)::

        run_contract(lambda: build_model("rnn", "debug", obs_shape=(8,), action_dim=2),
                     lambda B, T, seed=0: my_batch(B, T, seed), T=5)
    """
    attrs = {
        "make_model": lambda self: model_factory(),
        "make_batch": lambda self, B, T, seed=0: batch_factory(B, T, seed),
    }
    contract = type("Contract", (WorldModelContract,), {**attrs, **options})()
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run_all(contract)
    finally:
        torch.set_num_threads(n_threads)


def _run_all(contract: WorldModelContract) -> None:
    for name in sorted(dir(contract)):
        if name.startswith("test_"):
            try:
                torch.manual_seed(0)
                getattr(contract, name)()
            except Exception as e:
                raise AssertionError(f"contract check {name} failed: {type(e).__name__}: {e}") from e
