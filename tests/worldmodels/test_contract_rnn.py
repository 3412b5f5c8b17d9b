"""The world-model contract over the RNN baseline: binary vectors, Gaussian vectors, binary images."""

from __future__ import annotations

import torch

from tests.worldmodels.contract import WorldModelContract, run_contract
from worldmodels.api import Batch
from worldmodels.models import build_model


def _batch(obs_shape: tuple[int, ...], A: int, binary: bool):
    def make(B: int, T: int, seed: int = 0) -> Batch:
        g = torch.Generator().manual_seed(seed)
        obs = torch.rand(B, T, *obs_shape, generator=g)
        if binary:
            obs = obs.round()
        action = torch.nn.functional.one_hot(torch.randint(0, A, (B, T), generator=g), A).float()
        action[:, 0] = 0
        return Batch(obs=obs, action=action)

    return make


class TestRNNBernoulliVectors(WorldModelContract):
    def make_model(self):
        return build_model("rnn", "debug", obs_shape=(10,), action_dim=3)

    def make_batch(self, B, T, seed=0):
        return _batch((10,), 3, True)(B, T, seed)


class TestRNNBernoulliImages(WorldModelContract):
    T = 4
    overfit_steps = 25

    def make_model(self):
        return build_model("rnn", "debug", obs_shape=(1, 16, 16), action_dim=2)

    def make_batch(self, B, T, seed=0):
        return _batch((1, 16, 16), 2, True)(B, T, seed)


def test_contract_gaussian_vectors_via_run_contract():
    run_contract(
        lambda: build_model("rnn", "debug", obs_shape=(5,), action_dim=2, emission="gaussian", min_std=0.05),
        _batch((5,), 2, False),
        obs_range=None,
    )
