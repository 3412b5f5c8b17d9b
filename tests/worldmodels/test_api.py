import pytest
import torch

from worldmodels.api import Batch, check_shape, one_hot_actions


def test_batch_defaults_and_shape_errors() -> None:
    b = Batch(obs=torch.rand(2, 4, 3), action=torch.zeros(2, 4, 1))
    assert b.mask.all() and b.is_first[:, 0].all() and not b.is_first[:, 1:].any()
    with pytest.raises(ValueError, match=r"Batch.action: expected shape \(2, 4, \*\), received \(2, 3, 1\)"):
        Batch(obs=torch.rand(2, 4, 3), action=torch.zeros(2, 3, 1))


def test_batch_check_finite_names_rows() -> None:
    obs = torch.rand(3, 2, 4)
    obs[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        Batch(obs=obs, action=torch.zeros(3, 2, 1)).check_finite()


def test_one_hot_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"expected actions in \[0, 2\]"):
        one_hot_actions(torch.tensor([3]), 3)


def test_check_shape_wildcard() -> None:
    check_shape("x", torch.zeros(2, 5), (2, None))
    with pytest.raises(ValueError):
        check_shape("x", torch.zeros(2, 5, 1), (2, None))
