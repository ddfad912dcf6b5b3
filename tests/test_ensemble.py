"""Averaging ensemble members and their per-voxel uncertainty, against hand-computed values."""

import numpy as np
import pytest

from medjax.prediction import ensemble


def _members():
  # Two members, one voxel each of shape [1, 1, 2] (two voxels), three classes.
  a = np.array([[[[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]]], np.float32)
  b = np.array([[[[0.6, 0.3, 0.1], [1.0, 0.0, 0.0]]]], np.float32)
  return a, b


def test_average_is_the_members_mean():
  a, b = _members()
  np.testing.assert_allclose(ensemble.average([a, b])[0, 0, 0], [0.4, 0.3, 0.3], atol=1e-7)
  np.testing.assert_allclose(ensemble.average(np.stack([a, b])), ensemble.average([a, b]))
  stats = ensemble.MemberStats()
  stats.add(a)
  stats.add(np.stack([b, b]))  # several at once count as several members
  assert stats.count == 3
  np.testing.assert_allclose(stats.mean()[0, 0, 0], [(0.2 + 1.2) / 3, 0.3, (0.5 + 0.2) / 3],
                             atol=1e-7)


def test_entropy_of_the_mean():
  a, b = _members()
  h = ensemble.uncertainty([a, b], "entropy")
  expected = -(0.4 * np.log(0.4) + 2 * 0.3 * np.log(0.3))  # mean (0.4, 0.3, 0.3)
  np.testing.assert_allclose(h[0, 0], [expected, 0.0], atol=1e-6)  # a certain voxel: 0
  uniform = np.full((1, 1, 1, 1, 4), 0.25)
  np.testing.assert_allclose(ensemble.uncertainty(uniform, "entropy"), np.log(4), atol=1e-6)
  # Sigmoid outputs: binary entropies summed; p = 0.5 gives log 2 per output.
  half = np.full((1, 1, 1, 1, 3), 0.5)
  np.testing.assert_allclose(ensemble.uncertainty(half, "entropy", activation="sigmoid"),
                             3 * np.log(2), atol=1e-6)


def test_variance_across_members():
  a, b = _members()
  v = ensemble.uncertainty([a, b], "variance")
  # class 0: 0.2 and 0.6 -> 0.04; class 1: 0; class 2: 0.5 and 0.1 -> 0.04; mean over 3 classes.
  np.testing.assert_allclose(v[0, 0], [0.08 / 3, 0.0], atol=1e-7)
  with pytest.raises(ValueError, match="at least two members"):
    ensemble.uncertainty([a], "variance")
  with pytest.raises(ValueError, match="keep_squares"):
    stats = ensemble.MemberStats()
    stats.add(a)
    stats.add(b)
    stats.uncertainty("variance")


def test_bad_members():
  a, _ = _members()
  with pytest.raises(ValueError, match="different shapes"):
    ensemble.average([a, a[:, :, :1]])
  with pytest.raises(ValueError, match="expected one of"):
    ensemble.uncertainty([a], "std")
  with pytest.raises(ValueError, match="no members"):
    ensemble.average([])
