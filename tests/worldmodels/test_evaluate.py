"""evaluate.py metrics against loops over a model with known outputs; viz files are written and labelled."""

from __future__ import annotations

import numpy as np
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
