"""GIF writers: what is read back from the file is what was asked for."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from worldmodels.viz import columns_gif


def test_columns_gif_places_each_sequence_in_its_column(tmp_path) -> None:
    a = torch.arange(6.0).reshape(6, 1, 1, 1).expand(6, 3, 4, 4) / 50  # dark, a different grey per step
    b = torch.ones(6, 3, 4, 4)
    b[:, 0] = 0  # cyan
    path = columns_gif(tmp_path / "p.gif", [a, b], scale=2, sep=1, duration=0.1, every=2)
    frames = iio.imread(path, index=None)  # [3 frames, 8, 17, 3]
    assert frames.shape[:3] == (3, 8, 17)
    assert [int(f[0, 0, 0]) for f in frames] == [0, 10, 20]  # steps 0, 2, 4 of the first column
    assert (frames[:, :, 8] > 245).all()  # white separator
    assert (frames[:, :, 9:, 0] < 10).all() and (frames[:, :, 9:, 1:] > 245).all()
    with pytest.raises(ValueError, match=r"columns_gif: expected sequences \[T, 3, H, W\] of one length"):
        columns_gif(tmp_path / "q.gif", [a, b[:3]], scale=1, sep=1, duration=0.1)
    assert np.asarray(frames).dtype == np.uint8
