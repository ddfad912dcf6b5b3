"""Tests for medjax.metrics on hand-built volumes with hand-computed answers (mm)."""

import numpy as np
import pytest
from scipy import ndimage

from medjax import metrics


def _cube(shape, start, size=4):
  mask = np.zeros(shape, bool)
  mask[tuple(slice(s, s + size) for s in start)] = True
  return mask


def test_surface_is_boundary_voxels():
  assert metrics.surface(_cube((7, 7, 7), (2, 2, 2), 3)).sum() == 26  # 27 minus the centre
  # A mask filling the volume has its surface at the volume border (outside counts as 0).
  assert metrics.surface(np.ones((3, 4, 5), bool)).sum() == 3 * 4 * 5 - 1 * 2 * 3
  assert metrics.surface(_cube((9, 9, 9), (1, 1, 1), 4)).sum() == 64 - 8


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_shifted_cubes_anisotropic_by_hand(axis):
  # Two 4^3 cubes, the second shifted by 2 voxels along `axis`, whose voxel size is 0.5 mm;
  # the other two axes have 2 and 3 mm voxels, so every nearest surface voxel lies along `axis`.
  # Per direction the 56 surface voxels are at: 0 mm (24: side rings at shared slices),
  # 0.5 mm (16: ring one slice from the other cube's face + 4 face-centre voxels), 1 mm (16: the
  # far face). HD95: position 0.95 * 55 = 52.25 in the sorted list -> 1.0 mm;
  # median: position 27.5 -> 0.5 mm; 43rd percentile: 23.65 -> 0 + 0.65 * 0.5 = 0.325 mm;
  # ASSD = 2 * (16 * 1 + 16 * 0.5) / 112 = 3/7 mm; Dice = 2 * 32 / 128 = 0.5.
  spacing = [2.0, 3.0]
  spacing.insert(axis, 0.5)
  start_b = [3, 3, 3]
  start_b[axis] += 2
  a, b = _cube((12, 12, 12), (3, 3, 3)), _cube((12, 12, 12), start_b)
  to_b, to_a = metrics.surface_distances(a, b, spacing=spacing)
  for d in (to_b, to_a):
    values, counts = np.unique(np.round(d, 6), return_counts=True)
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(counts, [24, 16, 16])
  assert metrics.hausdorff_distance(a, b, spacing=spacing) == pytest.approx(1.0)
  assert metrics.hausdorff_distance(a, b, spacing=spacing, percentile=50) == pytest.approx(0.5)
  assert metrics.hausdorff_distance(a, b, spacing=spacing, percentile=43) == pytest.approx(0.325)
  assert metrics.average_surface_distance(a, b, spacing=spacing) == pytest.approx(3 / 7)
  assert metrics.dice(a, b) == pytest.approx(0.5)


def test_outlier_voxel_hd95_vs_max_by_hand():
  # Truth = cube; prediction = cube + one voxel 5 slices beyond its top face along axis 0
  # (1.5 mm voxels -> 7.5 mm). d(pred -> truth): 56 zeros and 7.5; d(truth -> pred): 56 zeros.
  # HD (max) = 7.5; HD95: position 0.95 * 56 = 53.2 -> 0; HD99: 0.99 * 56 = 55.44 -> 0.44 * 7.5;
  # ASSD = 7.5 / 113.
  spacing = (1.5, 1.0, 1.0)
  truth = _cube((14, 8, 8), (2, 2, 2))
  pred = truth.copy()
  pred[2 + 3 + 5, 3, 4] = True
  assert metrics.hausdorff_distance(pred, truth, spacing=spacing, percentile=None) == 7.5
  assert metrics.hausdorff_distance(pred, truth, spacing=spacing) == 0.0
  assert metrics.hausdorff_distance(pred, truth, spacing=spacing,
                                    percentile=99) == pytest.approx(0.44 * 7.5)
  assert metrics.average_surface_distance(pred, truth, spacing=spacing) == pytest.approx(7.5 / 113)
  # Directed (pred -> truth only): 7.5 / 57.
  assert metrics.average_surface_distance(pred, truth, spacing=spacing,
                                          symmetric=False) == pytest.approx(7.5 / 57)


def test_sphere_offset_distance_scales_with_spacing():
  # A ball shifted by 3 voxels along axis 1: with isotropic spacing s every distance scales by s.
  grid = np.indices((24, 24, 24)) - 11.5
  ball = (grid ** 2).sum(0) <= 6.5 ** 2
  shifted = np.roll(ball, 3, axis=1)
  hd1 = metrics.hausdorff_distance(ball, shifted, spacing=1.0, percentile=None)
  assert hd1 == pytest.approx(3.0)  # the poles along axis 1 move by exactly 3 voxels
  assert metrics.hausdorff_distance(ball, shifted, spacing=2.5,
                                    percentile=None) == pytest.approx(7.5)
  assert metrics.average_surface_distance(ball, shifted, spacing=2.5) == pytest.approx(
      2.5 * metrics.average_surface_distance(ball, shifted))


def test_empty_masks():
  empty = np.zeros((5, 5, 5), bool)
  cube = _cube((5, 5, 5), (1, 1, 1), 2)
  assert np.isnan(metrics.dice(empty, empty))
  assert metrics.dice(cube, empty) == 0.0
  for fn in (metrics.hausdorff_distance, metrics.average_surface_distance):
    assert np.isnan(fn(empty, empty))
    assert fn(cube, empty) == np.inf
    assert fn(empty, cube) == np.inf
  assert metrics.hausdorff_distance(cube, cube) == 0.0


def test_dice_per_class_and_segmentation_metrics():
  label = np.zeros((10, 10, 10), np.int32)
  pred = np.zeros_like(label)
  label[_cube(label.shape, (1, 1, 1))] = 1
  pred[_cube(label.shape, (3, 1, 1))] = 1     # shifted by 2 -> Dice 0.5
  label[8:, 8:, 8:] = 3                        # class 3 only in the truth; class 2 absent
  np.testing.assert_allclose(metrics.dice_per_class(pred, label, num_classes=4)[1:],
                             [0.5, np.nan, 0.0])
  bg = metrics.dice_per_class(pred, label, num_classes=4)[0]
  n_bg_label, n_bg_pred = 1000 - 64 - 8, 1000 - 64
  n_both = 1000 - 96 - 8  # outside both cubes and the class-3 corner
  assert bg == pytest.approx(2 * n_both / (n_bg_label + n_bg_pred))
  results = metrics.segmentation_metrics(pred, label, num_classes=4, spacing=(1.0, 2.0, 2.0))
  assert sorted(results) == [1, 2, 3]
  assert results[1]["dice"] == pytest.approx(0.5)
  # Shift along axis 0 with 1 mm voxels and 2 mm side voxels: distances 0/1/2 mm,
  # HD95 = 2, ASSD = 2 * (16 * 2 + 16 * 1) / 112 = 6/7.
  assert results[1]["hd95"] == pytest.approx(2.0)
  assert results[1]["assd"] == pytest.approx(6 / 7)
  assert np.isnan(results[2]["dice"]) and np.isnan(results[2]["hd95"])
  assert results[3]["dice"] == 0.0 and results[3]["hd95"] == np.inf
  assert 0 in metrics.segmentation_metrics(pred, label, num_classes=4, include_background=True)


def test_bad_inputs():
  with pytest.raises(ValueError, match="shape"):
    metrics.dice(np.zeros((2, 2)), np.zeros((2, 3)))
  with pytest.raises(ValueError, match="spacing"):
    metrics.hausdorff_distance(np.ones((3, 3, 3)), np.ones((3, 3, 3)), spacing=(1.0, 1.0))
  with pytest.raises(ValueError, match="class ids"):
    metrics.dice_per_class(np.full((2, 2), 4), np.zeros((2, 2)), num_classes=4)
  with pytest.raises(ValueError, match="percentile"):
    metrics.hausdorff_distance(np.ones((3, 3, 3)), np.ones((3, 3, 3)), percentile=101)


def test_matches_monai_on_random_blobs():
  torch = pytest.importorskip("torch")
  monai_metrics = pytest.importorskip("monai.metrics")
  rng = np.random.default_rng(0)
  spacing = (1.0, 0.7, 2.3)
  for _ in range(3):
    a = ndimage.gaussian_filter(rng.normal(size=(20, 24, 18)), 2) > 0.05
    b = ndimage.gaussian_filter(rng.normal(size=(20, 24, 18)), 2) > 0.05
    onehot = lambda m: torch.as_tensor(np.stack([~m, m])[None])
    hd = monai_metrics.compute_hausdorff_distance(onehot(a), onehot(b), percentile=95,
                                                  spacing=spacing).item()
    asd = monai_metrics.compute_average_surface_distance(onehot(a), onehot(b), symmetric=True,
                                                         spacing=spacing).item()
    assert metrics.hausdorff_distance(a, b, spacing=spacing) == pytest.approx(hd, rel=1e-5)
    assert metrics.average_surface_distance(a, b, spacing=spacing) == pytest.approx(asd, rel=1e-5)
