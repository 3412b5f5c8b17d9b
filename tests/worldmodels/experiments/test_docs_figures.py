"""The env pictures of docs/envs (worldmodels.experiments.docs_figures): real rollouts, the committed figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worldmodels.experiments import docs_figures

ROOT = Path(__file__).resolve().parents[3]


def test_the_2d_families_redraw_the_committed_figures(tmp_path: Path) -> None:
    paths = docs_figures.draw(["image_nav", "bouncing_ball", "pixel_pendulum"], tmp_path)
    assert [p.name for p in paths] == ["image_nav.png", "image_nav_obstacles_map.png", "bouncing_ball.png",
                                       "pixel_pendulum.png"]
    for p in paths:
        new, old = Image.open(p), Image.open(ROOT / "docs" / "figures" / p.name)
        assert new.size == old.size, p.name
    # the map has no text (fonts may differ between Pillow versions): the same pixels
    name = "image_nav_obstacles_map.png"
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / name)),
                                  np.asarray(Image.open(ROOT / "docs" / "figures" / name)))


def test_rollout_frames_and_unknown_families(tmp_path: Path) -> None:
    frames = docs_figures.rollout("PixelPendulum-v0", docs_figures.sample, steps=4)
    assert frames.shape == (4, 1, 16, 16) and 0 <= frames.min() and frames.max() <= 1
    with pytest.raises(ValueError, match=r"expected families in \[.*'image_nav'.*\], received \['maze'\]"):
        docs_figures.draw(["maze"], tmp_path)
    assert not any(tmp_path.iterdir())
