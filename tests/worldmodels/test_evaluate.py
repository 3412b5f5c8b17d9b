"""evaluate.py metrics against loops over a model with known outputs; viz files are written and labelled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from worldmodels.api import Batch, Imagination
from worldmodels.evaluate import drop_mask, gap_mask, imputation_error, prediction_error
from worldmodels.viz import contact_sheet, plot_metric, rollout_gif


class Blank(torch.nn.Module):
    """Predicts constant 0.3 frames; imputes blank frames where missing."""

    def predict(self, obs, action, future):
        N, H = future.shape[:2]
        return Imagination(
            obs=torch.full((N, H, *obs.shape[2:]), 0.3),
            latent=torch.zeros(N, H, 1),
            uncertainty=torch.zeros(N, H),
        )

    def impute(self, obs, action, mask):
        return torch.where(mask.view(*mask.shape, 1, 1, 1), obs, torch.zeros_like(obs))


def _data():
    g = torch.Generator().manual_seed(0)
    return [
        Batch(obs=(torch.rand(3, 10, 1, 8, 8, generator=g) > 0.8).float(), action=torch.zeros(3, 10, 2))
        for _ in range(2)
    ]


def test_imputation_error_is_fraction_of_wrong_pixels_on_missing_frames():
    data = _data()
    err = imputation_error(Blank(), data, gap_mask(3))
    # brute force: blank imputation is wrong exactly on the lit pixels of frames 4..6 (gap of 3 in T=10)
    lit = sum(float(b.obs[:, 4:7].sum()) for b in data)
    assert abs(err - lit / (2 * 3 * 3 * 64)) < 1e-12
    # MSE on grey frames (0.25 / 0.75): a blank imputation's squared error is the frame squared
    data = [Batch(obs=0.5 * b.obs + 0.25, action=b.action) for b in data]
    sq = sum(float(b.obs[:, 4:7].square().sum()) for b in data)
    assert imputation_error(Blank(), data, gap_mask(3), metric="mse") == pytest.approx(sq / (2 * 3 * 3 * 64), abs=1e-12)
    with pytest.raises(ValueError, match="expected metric 'pixel' or 'mse', received 'l1'"):
        imputation_error(Blank(), data, gap_mask(3), metric="l1")
    m = drop_mask(0.5, first_observed=4)(5, 10, torch.Generator().manual_seed(0))
    assert m[:, :4].all() and not m.all()


def test_prediction_error_per_step_matches_loop():
    data = _data()
    mse = prediction_error(Blank(), data, context=4, horizon=5)
    ref = np.zeros(5)
    for k in range(5):
        ref[k] = np.mean([float(((b.obs[i, 4 + k] - 0.3) ** 2).mean()) for b in data for i in range(3)])
    np.testing.assert_allclose(mse, ref, rtol=1e-6)  # float32 means
    pix = prediction_error(Blank(), data, context=4, horizon=5, metric="pixel")  # 0.3 -> all-off guess
    ref_pix = [np.mean([float(b.obs[i, 4 + k].mean()) for b in data for i in range(3)]) for k in range(5)]
    np.testing.assert_allclose(pix, ref_pix, rtol=1e-12)


def test_viz_files(tmp_path):
    true, pred = torch.rand(5, 1, 16, 16), torch.rand(5, 1, 16, 16)
    gif = rollout_gif(tmp_path / "r.gif", true, pred, context=2)
    im = Image.open(gif)
    assert im.n_frames == 5 and im.size[0] > 2 * 128
    png = plot_metric(tmp_path / "m.png", {"a": [1, 2], "b": [2, 1]})
    assert Image.open(png).format == "PNG"
    sheet = contact_sheet(tmp_path / "s.png", {"ground truth": true, "open-loop prediction": pred})
    assert Image.open(sheet).size[1] >= 2 * 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png", "r.gif", "s.png"]


def test_gap_mask_places_the_gap_in_the_window_or_after_the_first_frames():
    g = torch.Generator()
    # T = 20, 4 first frames observed, gap of 5
    window = [1] * 7 + [0] * 5 + [1] * 8  # start = max(4, (20 - 5) // 2) = 7
    after_first = [1] * 9 + [0] * 5 + [1] * 6  # start = 4 + (16 - 5) // 2 = 9
    assert gap_mask(5)(2, 20, g).int().tolist() == [window] * 2
    assert gap_mask(5, middle_of="after_first")(2, 20, g).int().tolist() == [after_first] * 2
    # the KVAE experiment's longest gap fills the frames after the first 4 but one (start 4 either way)
    assert gap_mask(15, middle_of="after_first")(1, 20, g).int().tolist() == [[1] * 4 + [0] * 15 + [1]]
    assert gap_mask(15)(1, 20, g).int().tolist() == [[1] * 4 + [0] * 15 + [1]]
    assert gap_mask(1, middle_of="after_first")(1, 20, g).int().tolist() == [[1] * 11 + [0] + [1] * 8]
    with pytest.raises(ValueError, match="expected a gap of at most T - first_observed = 16 frames, received 17"):
        gap_mask(17, middle_of="after_first")(1, 20, g)
    with pytest.raises(ValueError, match=r"expected middle_of in \('window', 'after_first'\), received 'centre'"):
        gap_mask(3, middle_of="centre")


def test_drop_mask_is_one_uniform_per_frame_of_the_generator_stream():
    g, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for p in (0.1, 0.5, 0.9):  # successive masks continue one generator, as the KVAE curves draw them
        want = torch.rand(6, 20, generator=ref) >= p
        want[:, :4] = True
        assert torch.equal(drop_mask(p)(6, 20, g), want)
    m = drop_mask(0.5, first_observed=2)(1, 6, torch.Generator().manual_seed(0))
    assert m.int().tolist() == [[1, 1, 0, 0, 0, 1]]  # uniforms 0.50 0.77 | 0.09 0.13 0.31 0.63 vs p = 0.5
