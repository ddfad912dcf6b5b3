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


def _two_class_label():
  """16^3: class 1 fills the slab d < 4 (1024 voxels), class 2 is the single voxel (12, 9, 5)."""
  label = np.zeros((16, 16, 16), np.uint8)
  label[:4] = 1
  label[12, 9, 5] = 2
  return label


def _draws(sampler, n, seed=0):
  return [sampler.sample_with_kind(sampling.crop_rng(seed, i)) for i in range(n)]


def test_foreground_oversampling_fraction_and_class_choice():
  sampler = sampling.CropSampler(_two_class_label(), (6, 6, 6), threshold=0.0,
                                 foreground_oversampling=0.33)
  assert sampler.foreground_classes == 2
  draws = _draws(sampler, 3000)
  forced = [voxel for _, voxel in draws if voxel is not None]
  # Binomial(3000, 0.33): mean 990, sd 25.8; +-5 sd.
  assert 861 <= len(forced) <= 1119
  # The class is uniform among those present (not weighted by size): the lone class-2 voxel is
  # the centre of about half the forced crops. Binomial(n, 0.5), +-5 sd.
  lone = sum(v == (12, 9, 5) for v in forced)
  half, sd = len(forced) / 2, (len(forced) / 4) ** 0.5
  assert abs(lone - half) <= 5 * sd
  # The other class-1 picks spread over the slab (a voxel of it drawn uniformly).
  slab = [v for v in forced if v != (12, 9, 5)]
  assert all(v[0] < 4 for v in slab) and len(set(slab)) > 100


def test_forced_crops_are_centred_on_the_voxel_or_clipped():
  label = _two_class_label()
  sampler = sampling.CropSampler(label, (6, 6, 6), threshold=0.0, foreground_oversampling=1.0)
  for start, voxel in _draws(sampler, 400):
    assert voxel is not None and label[voxel] > 0
    for s, v, n in zip(start, voxel, label.shape):
      assert 0 <= s <= n - 6 and s <= v < s + 6  # inside the volume, the voxel inside the crop
      # Centred (offset 6 // 2 = 3) unless that would leave the volume.
      assert v - s == 3 or s in (0, n - 6)
  # By hand: voxel (12, 9, 5) -> start (9, 6, 2), offset 3 on every axis; a voxel at d = 1
  # clips to d = 0 (offset 1), one at (15, 15, 15) clips to (10, 10, 10).
  starts = {voxel: start for start, voxel in _draws(sampler, 400)}
  assert starts[(12, 9, 5)] == (9, 6, 2)
  corner = np.zeros((16, 16, 16), np.uint8)
  corner[15, 15, 15] = corner[1, 8, 8] = 3
  one = sampling.CropSampler(corner, (6, 6, 6), threshold=0.0, foreground_oversampling=1.0)
  got = {voxel: start for start, voxel in _draws(one, 200)}
  assert got == {(15, 15, 15): (10, 10, 10), (1, 8, 8): (0, 5, 5)}


def test_foreground_oversampling_is_deterministic_and_off_by_default():
  label = _two_class_label()
  a = sampling.CropSampler(label, (6, 6, 6), threshold=0.1, foreground_oversampling=0.5)
  b = sampling.CropSampler(label, (6, 6, 6), threshold=0.1, foreground_oversampling=0.5)
  assert _draws(a, 200, seed=3) == _draws(b, 200, seed=3)
  assert _draws(a, 200, seed=3) != _draws(a, 200, seed=4)
  # 0 draws exactly the crops of a sampler without the option (no extra random number).
  plain = sampling.CropSampler(label, (6, 6, 6), threshold=0.1)
  off = sampling.CropSampler(label, (6, 6, 6), threshold=0.1, foreground_oversampling=0.0)
  assert [plain.sample(sampling.crop_rng(0, i)) for i in range(200)] == [
      start for start, voxel in _draws(off, 200)]
  assert all(voxel is None for _, voxel in _draws(off, 200))
  # Unforced crops keep the threshold rule: each holds >= 10 % of the subject's foreground.
  counts = sampling.crop_foreground_counts(label, (6, 6, 6))
  for start, voxel in _draws(a, 200):
    if voxel is None:
      assert counts[start] >= 0.1 * np.count_nonzero(label)


def test_foreground_oversampling_without_foreground_and_bad_values():
  empty = np.zeros((8, 8, 8), np.uint8)
  sampler = sampling.CropSampler(empty, (4, 4, 4), threshold=0.0, foreground_oversampling=1.0)
  assert sampler.foreground_classes == 0
  assert all(voxel is None for _, voxel in _draws(sampler, 20))  # the threshold rule's crops
  with pytest.raises(ValueError, match=r"foreground_oversampling=1.5: expected a probability"):
    sampling.CropSampler(empty, (4, 4, 4), threshold=0.0, foreground_oversampling=1.5)
