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
    # MedicalZoo's brats: mean 2.4 and UNBIASED variance 27.2 / 4 = 6.8 (torch std) of all five
    # voxels, raw min 0 and max 6; 100 ((x - 2.4) / sqrt(6.8) - 0) / (6 - 0) + 10 on x != 0:
    # 2 -> 10 - 40 / (6 sqrt 6.8) = 7.44345, 4 -> 10 + 160 / (6 sqrt 6.8) = 20.22620,
    # 6 -> 10 + 360 / (6 sqrt 6.8) = 33.00895; zeros stay 0.
    ("brats", [0, 0, *(10 + 100 / 6 * (np.array([2.0, 4.0, 6.0]) - 2.4) / np.sqrt(6.8))]),
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
  with pytest.raises(ValueError, match=r"stats must have shape \(11,\)"):
    normalize.normalize_with_stats(X, np.zeros(3), "max")


def test_brats_with_clipping_hand_computed():
  # [0, 1, 2, 3, 100] clipped to its (0, 75) percentiles (linear: 0 and the 4th value, 3) is
  # [0, 1, 2, 3, 3]: mean 9 / 5 = 1.8, squared deviations 3.24 + .64 + .04 + 1.44 + 1.44 = 6.8,
  # unbiased variance 6.8 / 4 = 1.7; min 0, max 3 (the clipped range, not the raw 100).
  # x != 0 -> 100 ((x - 1.8) / sqrt(1.7)) / 3 + 10: 1 -> -10.45240, 2 -> 15.11310, 3 -> 40.67860
  # (below 10: the z-score is rescaled by the raw range, not its own); the zero stays 0.
  x = np.array([0.0, 1.0, 2.0, 3.0, 100.0])
  out = normalize.normalize(x[:, None], "brats", clip_percentiles=(0, 75))[:, 0]
  expected = 10 + 100 / 3 * (np.array([1.0, 2.0, 3.0, 3.0]) - 1.8) / np.sqrt(1.7)
  np.testing.assert_allclose(expected, [-10.45240, 15.11310, 40.67860, 40.67860], atol=5e-6)
  np.testing.assert_allclose(out, [0.0, *expected], rtol=1e-6)


def test_brats_voxels_clipped_away_from_zero_are_not_background():
  # With a low percentile above 0 no voxel is 0 after the clip, so none is kept at 0
  # (MedicalZoo tests the clipped image for 0). [0, 4, 4, 8] clipped to (50, 100): [4, 4, 4, 8],
  # mean 5, unbiased variance (1 + 1 + 1 + 9) / 3 = 4, min 4, max 8:
  # 4 -> 100 (-1 / 2 - 4) / 4 + 10 = -102.5, 8 -> 100 (3 / 2 - 4) / 4 + 10 = -52.5.
  out = normalize.normalize(np.array([[0.0], [4.0], [4.0], [8.0]]), "brats",
                            clip_percentiles=(50, 100))[:, 0]
  np.testing.assert_allclose(out, [-102.5, -102.5, -102.5, -52.5], rtol=1e-6)


def test_brats_matches_medicalzoo_torch_formula():
  """MedicalZoo's load_medical_image + normalize_intensity('brats'), written out in torch."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(1)
  volume = (rng.gamma(2.0, 50.0, size=(9, 10, 11)) * (rng.random((9, 10, 11)) > 0.3))
  img = volume.astype(np.float32)
  low, high = np.percentile(img, 0.1), np.percentile(img, 99.8)  # percentile_clip
  img[img < low], img[img > high] = low, high
  t = torch.from_numpy(img)
  mean, std, vmax, vmin = t.mean(), t.std(), t.max(), t.min()
  z = torch.where(t == 0.0, t, (t - mean) / std)
  ref = torch.where(t == 0.0, t, 100.0 * ((z - vmin) / (vmax - vmin)) + 10.0).numpy()
  out = normalize.normalize(volume[..., None], "brats")[..., 0]
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)


def test_stats_without_count_still_work_except_for_brats():
  stats = normalize.volume_stats(X, clip_percentiles=None)
  legacy = stats[:-1]
  np.testing.assert_array_equal(normalize.normalize_with_stats(X, legacy, "max_min"),
                                normalize.normalize_with_stats(X, stats, "max_min"))
  with pytest.raises(ValueError, match="voxel count"):
    normalize.normalize_with_stats(X, legacy, "brats")
