"""Tests for medjax.data.sampling: crop counts, threshold rules, seeded determinism."""

import collections
import itertools

import numpy as np
import pytest

from medjax.data import sampling


def _cube_label():
  """8^3 volume whose only foreground is the 2^3 cube at [0:2, 0:2, 0:2] (8 voxels)."""
  label = np.zeros((8, 8, 8), np.uint8)
  label[:2, :2, :2] = np.array([1, 2, 3, 1, 2, 3, 1, 2]).reshape(2, 2, 2)
  return label


def test_counts_match_brute_force():
  rng = np.random.default_rng(0)
  label = rng.integers(0, 4, size=(7, 6, 9)) * (rng.random((7, 6, 9)) > 0.6)
  counts = sampling.crop_foreground_counts(label, (3, 4, 2))
  assert counts.shape == (5, 3, 8)
  for d, h, w in itertools.product(range(5), range(3), range(8)):
    assert counts[d, h, w] == np.count_nonzero(label[d:d + 3, h:h + 4, w:w + 2])


def test_subject_foreground_rule():
  # A 4^3 crop starting at d holds 2, 1, 0 cube rows for d = 0, 1, >= 2 (same per axis), so its
  # count is the product; >= 50 % of the 8 voxels needs at most one axis at 1.
  valid = sampling.valid_crop_starts(_cube_label(), (4, 4, 4), threshold=0.5,
                                     rule="subject_foreground")
  assert valid.shape == (5, 5, 5)
  assert sorted(zip(*np.nonzero(valid))) == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0)]


def test_crop_fraction_rule_is_strict():
  label = _cube_label()
  # 4 / 64 = 0.0625: "> 0.0625" needs more than 4 voxels -> only the start with all 8.
  valid = sampling.valid_crop_starts(label, (4, 4, 4), threshold=0.0625, rule="crop_fraction")
  assert list(zip(*np.nonzero(valid))) == [(0, 0, 0)]
  valid = sampling.valid_crop_starts(label, (4, 4, 4), threshold=0.05, rule="crop_fraction")
  assert np.count_nonzero(valid) == 4


def test_sampler_uniform_over_valid_starts():
  sampler = sampling.CropSampler(_cube_label(), (4, 4, 4), threshold=0.5)
  assert sampler.num_valid == 4
  rng = np.random.default_rng(1)
  hits = collections.Counter(sampler.sample(rng) for _ in range(4000))
  assert set(hits) == {(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0)}
  assert all(900 < n < 1100 for n in hits.values())  # 1000 expected each, sd about 27


def test_sampler_errors():
  with pytest.raises(ValueError, match=r"subject 7: no crop of size \(4, 4, 4\).*>= 1\.5"):
    sampling.CropSampler(_cube_label(), (4, 4, 4), threshold=1.5, subject="subject 7")
  with pytest.raises(ValueError, match=r"crop_size \(9, 4, 4\) is larger than the subject 7"):
    sampling.CropSampler(_cube_label(), (9, 4, 4), threshold=0.1, subject="subject 7")
  with pytest.raises(ValueError, match="threshold_rule must be one of"):
    sampling.valid_crop_starts(_cube_label(), (4, 4, 4), threshold=0.1, rule="fraction")
  # An empty subject: only a non-positive threshold accepts crops.
  empty = np.zeros((5, 5, 5), np.uint8)
  assert sampling.CropSampler(empty, (2, 2, 2), threshold=0.0).num_valid == 64
  with pytest.raises(ValueError, match="no crop"):
    sampling.CropSampler(empty, (2, 2, 2), threshold=0.1)


def test_crop_rng_depends_only_on_seed_and_index():
  draw = lambda s, i: sampling.crop_rng(s, i).integers(1 << 30, size=4).tolist()
  assert draw(0, 5) == draw(0, 5)
  assert draw(0, 5) != draw(0, 6)
  assert draw(0, 5) != draw(1, 5)


def test_epoch_order():
  a = sampling.epoch_order(0, 0, 10)
  assert sorted(a) == list(range(10))
  np.testing.assert_array_equal(a, sampling.epoch_order(0, 0, 10))
  assert not np.array_equal(a, sampling.epoch_order(0, 1, 10))


def test_crop_and_affine():
  volume = np.arange(5 * 6 * 7).reshape(5, 6, 7)
  np.testing.assert_array_equal(sampling.crop(volume, (1, 2, 3), (2, 2, 2)),
                                volume[1:3, 2:4, 3:5])
  affine = np.array([[-1, 0, 0, 10], [0, 2, 0, -5], [0, 0, 1, 3], [0, 0, 0, 1.0]])
  shifted = sampling.crop_affine(affine, (1, 2, 3))
  # Voxel 0 of the crop is voxel (1, 2, 3) of the volume: world (9, -1, 6).
  np.testing.assert_allclose(shifted[:, 3], [9, -1, 6, 1])
  np.testing.assert_allclose(shifted[:3, :3], affine[:3, :3])
