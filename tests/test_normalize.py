"""Tests for medjax.data.normalize against hand-computed values."""

import numpy as np
import pytest

from medjax.data import normalize

# One channel: two background voxels and brain values 2, 4, 6.
X = np.array([0.0, 0.0, 2.0, 4.0, 6.0])


def _norm(x, mode):
  return normalize.normalize(np.asarray(x)[:, None], mode, clip_percentiles=None)[:, 0]


@pytest.mark.parametrize("mode, expected", [
    # mean 2.4, population variance 11.2 - 2.4^2 = 5.44
    ("full_volume_mean", (X - 2.4) / np.sqrt(5.44)),
    ("max_min", [0, 0, 1 / 3, 2 / 3, 1]),
    # non-zero voxels 2, 4, 6: mean 4, variance 8/3; applied to all voxels
    ("mean", (X - 4) / np.sqrt(8 / 3)),
    ("max", [0, 0, 1 / 3, 2 / 3, 1]),
    # z of 2, 4, 6 is -1.2247, 0, 1.2247 -> 10, 60, 110; zeros stay 0
    ("brats", [0, 0, 10, 60, 110]),
    ("none", X),
])
def test_modes_hand_computed(mode, expected):
  out = _norm(X, mode)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_max_with_negative_values_uses_magnitude():
  np.testing.assert_allclose(_norm([-8.0, 2.0, 4.0], "max"), [-1, 0.25, 0.5])


def test_percentile_clip():
  # np.percentile of 0..1000 (linear interpolation): 0.1 -> 1.0, 99.8 -> 998.0.
  x = np.arange(1001, dtype=np.float64)
  stats = normalize.volume_stats(x)
  assert stats[0] == pytest.approx(1.0) and stats[1] == pytest.approx(998.0)
  out = normalize.normalize(x[:, None], "none")[:, 0]
  assert out[0] == 1.0 and out[1] == 1.0 and out[999] == 998.0 and out[1000] == 998.0
  np.testing.assert_array_equal(out[1:999], x[1:999])
  # max_min after the clip: (x - 1) / 997.
  np.testing.assert_allclose(normalize.normalize(x[:, None], "max_min")[500, 0], 499 / 997)


def test_channels_are_independent():
  image = np.stack([X, 100 * X + 7], axis=-1)[None]  # [1, 5, 2]
  out = normalize.normalize(image, "max_min", clip_percentiles=None)
  np.testing.assert_allclose(out[0, :, 0], [0, 0, 1 / 3, 2 / 3, 1], atol=1e-7)
  np.testing.assert_allclose(out[0, :, 1], [0, 0, 1 / 3, 2 / 3, 1], atol=1e-7)


@pytest.mark.parametrize("mode", normalize.MODES)
def test_constant_channel_is_finite(mode):
  out = _norm(np.full(6, 5.0), mode)
  assert np.all(np.isfinite(out))
  if mode in ("full_volume_mean", "max_min", "mean"):
    np.testing.assert_array_equal(out, 0)


@pytest.mark.parametrize("mode", normalize.MODES)
def test_crop_with_volume_stats_equals_crop_of_normalised_volume(mode):
  rng = np.random.default_rng(0)
  volume = rng.gamma(2.0, 50.0, size=(10, 11, 12)) * (rng.random((10, 11, 12)) > 0.4)
  full = normalize.normalize(volume[..., None], mode)[..., 0]
  stats = normalize.volume_stats(volume)
  crop = normalize.normalize_with_stats(volume[2:7, 3:9, 1:5], stats, mode)
  np.testing.assert_allclose(crop, full[2:7, 3:9, 1:5], rtol=1e-6, atol=1e-6)


def test_bad_arguments():
  with pytest.raises(ValueError, match="normalization must be one of"):
    normalize.normalize(X[:, None], "zscore")
  with pytest.raises(ValueError, match="clip_percentiles"):
    normalize.normalize(X[:, None], "max", clip_percentiles=(99, 1))
  with pytest.raises(ValueError, match=r"stats must have shape \(10,\)"):
    normalize.normalize_with_stats(X, np.zeros(3), "max")
