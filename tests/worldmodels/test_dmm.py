"""DMM / deep state-space model (thesis §4.3): the world-model contract, the ELBO of eq. (4.7) against the
float64 loop shared with the SRNN oracle (no recurrence, emission from z_t only), and the Markov
structure (all memory in z)."""

from __future__ import annotations

import pytest
import torch

from tests.worldmodels.contract import WorldModelContract, run_contract
from tests.worldmodels.test_srnn import brute_elbo, make_batch
from worldmodels.models import build_model


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TestDMMContractVectors(WorldModelContract):
    def make_model(self):
        return build_model("dmm", "debug", obs_shape=(10,), action_dim=3)

    def make_batch(self, B, T, seed=0):
        return make_batch((10,), 3, B, T, seed)


class TestDMMContractImages(WorldModelContract):
    T = 4
    overfit_steps = 25

    def make_model(self):
        return build_model("dmm", "debug", obs_shape=(1, 16, 16), action_dim=2, input_prev_obs=False)

    def make_batch(self, B, T, seed=0):
        return make_batch((1, 16, 16), 2, B, T, seed)


def test_contract_gaussian_filtering_residual():
    run_contract(
        lambda: build_model("dmm", "debug", obs_shape=(5,), action_dim=2, obs_kind="gaussian",
                            inference="filter", residual_q=True),
        lambda B, T, seed=0: make_batch((5,), 2, B, T, seed, binary=False),
        obs_range=None,
    )


@pytest.mark.parametrize("inference,residual_q", [("smooth", False), ("filter", True)])
def test_elbo_matches_float64_loop(inference, residual_q):
    torch.manual_seed(0)
    model = build_model("dmm", "debug", obs_shape=(6,), action_dim=2, inference=inference,
                        residual_q=residual_q).double()
    batch = make_batch((6,), 2, 3, 7, dtype=torch.float64)
    batch.is_first[0, 5] = True
    batch.mask[2, 1] = False
    torch.manual_seed(2)
    terms = model.elbo_terms(batch)
    torch.manual_seed(2)
    eps = torch.randn(3, 7, model.config.z_dim, dtype=torch.float64)
    log_px, kl = brute_elbo(model, batch, eps)
    torch.testing.assert_close(terms["log_px"], log_px, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(terms["kl"], kl, rtol=1e-10, atol=1e-10)


def test_emission_reads_only_z():
    """p(x_t | z_t): the same z gives the same frame whatever the inputs (no deterministic path to x)."""
    torch.manual_seed(0)
    model = build_model("dmm", "debug", obs_shape=(6,), action_dim=2)
    assert model.emission.net[0].in_features == model.config.z_dim
    assert not any(isinstance(m, torch.nn.GRU) for m in model.rnn.modules())
