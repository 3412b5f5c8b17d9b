"""DMM / deep state-space model (thesis §4.3): the world-model contract, the ELBO of eq. (4.7) against the
float64 loop shared with the SRNN oracle (no recurrence, emission from z_t only), and the Markov
structure (all memory in z)."""

from __future__ import annotations

import pytest
import torch

from tests.worldmodels._seq_models import (
    ImageContract,
    VectorContract,
    brute_elbo,
    make_batch,
)
from tests.worldmodels.contract import run_contract
from worldmodels.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

class TestDMMContractVectors(VectorContract):
    model_name = "dmm"


class TestDMMContractImages(ImageContract):
    model_name = "dmm"
    image_overrides = {"input_prev_obs": False}


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
