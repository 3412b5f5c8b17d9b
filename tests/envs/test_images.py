"""Image sources: procedural, bundled, user files; resizing against brute force."""

from __future__ import annotations

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest

import envs  # noqa: F401
from envs.images import make_image_source, procedural_texture, procedural_textures, resize, to_channels


def test_resize_halving_is_block_mean() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(64, 48, 3)).astype(np.uint8)
    out = resize(img, (32, 24))
    brute = img.astype(np.float64).reshape(32, 2, 24, 2, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(out, np.clip(brute.round(), 0, 255).astype(np.uint8))


def test_resize_centre_crops_to_aspect() -> None:
    img = np.zeros((10, 30, 1), dtype=np.uint8)
    img[:, 10:20] = 200  # the centre square
    np.testing.assert_array_equal(resize(img, (10, 10)), img[:, 10:20])


def test_grayscale_uses_luma() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    np.testing.assert_array_equal(to_channels(rgb, 1)[0, :, 0], [76, 150, 29])


def test_texture_is_deterministic_and_varied() -> None:
    a = procedural_texture(np.random.default_rng(1), (32, 32))
    b = procedural_texture(np.random.default_rng(1), (32, 32))
    c = procedural_texture(np.random.default_rng(2), (32, 32))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() == 0 and a.max() == 255
    # the 81 crops of the thesis grid are all different (the agent can localise itself)
    crops = {a[3 * r : 3 * r + 8, 3 * q : 3 * q + 8].tobytes() for r in range(9) for q in range(9)}
    assert len(crops) == 81


def test_user_file_roundtrip(tmp_path) -> None:  # noqa: ANN001
    img = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3)).astype(np.uint8)
    path = tmp_path / "room.png"
    iio.imwrite(path, img)
    env = gym.make("ImageNav-v0", image=str(path))
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, img[12:20, 12:20])


def test_array_source_and_list() -> None:
    imgs = [np.full((32, 32), v, dtype=np.uint8) for v in (10, 200)]
    src = make_image_source(imgs, (32, 32), 1)
    seen = {int(src.sample(np.random.default_rng(i))[0, 0, 0]) for i in range(20)}
    assert seen == {10, 200}


def test_skimage_sources() -> None:
    pytest.importorskip("skimage")
    faces = make_image_source("faces", (32, 32), 3)
    assert faces.sample(np.random.default_rng(0)).shape == (32, 32, 3) and not faces.fixed
    cam = gym.make("ImageNav-v0", image="camera", rgb=False)
    o1, _ = cam.reset(seed=0)
    o2, _ = cam.reset(seed=1)
    np.testing.assert_array_equal(o1, o2)  # one fixed image


def test_batched_textures_equal_single_ones() -> None:
    for size, channels in [((32, 32), 3), ((31, 20), 1)]:
        many = procedural_textures([np.random.default_rng(s) for s in range(6)], size, channels)
        assert many.shape == (6, *size, channels) and many.dtype == np.uint8
        for s in range(6):
            np.testing.assert_array_equal(many[s], procedural_texture(np.random.default_rng(s), size, channels))
