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


# ---------------------------------------------------------------------------------------------
# MONAI DiceMetric's empty-truth rules and do_metric_reduction.


def test_dice_per_class_ignore_empty_by_hand():
  # Classes: 0 everywhere but 3 voxels; 1 in both (Dice 2*1/(2+1)); 2 predicted only;
  # 3 absent from both; 4 in the truth only.
  label = np.zeros(12, np.int32)
  pred = np.zeros(12, np.int32)
  label[[0, 1]] = 1
  pred[0] = 1
  pred[5] = 2
  label[7] = 4
  bg = 2 * 8 / (9 + 10)  # background: 9 predicted, 9 + 1 true, 8 shared
  expected = {
      None: [bg, 2 / 3, 0.0, np.nan, 0.0],     # nnU-Net: both empty nan, one empty 0
      True: [bg, 2 / 3, np.nan, np.nan, 0.0],  # MONAI ignore_empty=True: empty truth -> nan
      False: [bg, 2 / 3, 0.0, 1.0, 0.0],       # MONAI ignore_empty=False: 1 if both empty
  }
  for ignore_empty, values in expected.items():
    np.testing.assert_allclose(
        metrics.dice_per_class(pred, label, num_classes=5, ignore_empty=ignore_empty), values,
        err_msg=str(ignore_empty))
  with pytest.raises(ValueError, match="ignore_empty"):
    metrics.dice_per_class(pred, label, num_classes=5, ignore_empty="yes")


def test_dice_per_class_ignore_empty_pooled_cases():
  # (Moved from the removed losses.hard_dice_per_class, same cases and values.)
  pred = np.array([0, 1, 1, 2, 2, 0])
  true = np.array([0, 1, 2, 2, 0, 0])
  # class 0: P = {0, 5}, T = {0, 4, 5}, overlap 2 -> 4/5; class 1: P = {1, 2}, T = {1} -> 2/3;
  # class 2: P = {3, 4}, T = {2, 3} -> 2/4; class 3 absent from both.
  np.testing.assert_allclose(metrics.dice_per_class(pred, true, num_classes=4, ignore_empty=True),
                             [0.8, 2 / 3, 0.5, np.nan])
  np.testing.assert_allclose(metrics.dice_per_class(pred, true, num_classes=4, ignore_empty=False),
                             [0.8, 2 / 3, 0.5, 1.0])
  # Class 2 predicted but absent from the labels: nan, or 0 with ignore_empty=False.
  pred, true = np.array([2, 1]), np.array([0, 1])
  np.testing.assert_allclose(metrics.dice_per_class(pred, true, num_classes=3, ignore_empty=True),
                             [0.0, 1.0, np.nan])
  np.testing.assert_allclose(metrics.dice_per_class(pred, true, num_classes=3, ignore_empty=False),
                             [0.0, 1.0, 0.0])


def _monai_compute_channel(x_pred, x, ignore_empty):
  """MONAI's DiceHelper.compute_channel written out in numpy."""
  y_o = x.sum()
  if y_o > 0:
    return 2.0 * (x & x_pred).sum() / (y_o + x_pred.sum())
  if ignore_empty:
    return np.nan
  return 1.0 if y_o + x_pred.sum() <= 0 else 0.0


@pytest.mark.parametrize("ignore_empty", [True, False])
def test_dice_per_class_matches_monai_formula_on_random_maps(ignore_empty):
  rng = np.random.default_rng(4)
  for _ in range(4):
    pred = rng.choice(5, size=(4, 5, 3), p=[0.5, 0.3, 0.2, 0.0, 0.0])
    label = rng.choice(5, size=(4, 5, 3), p=[0.6, 0.2, 0.0, 0.2, 0.0])
    expected = [_monai_compute_channel(pred == k, label == k, ignore_empty) for k in range(5)]
    np.testing.assert_allclose(
        metrics.dice_per_class(pred, label, num_classes=5, ignore_empty=ignore_empty), expected)


def test_reduce_metric_by_hand():
  nan = np.nan
  f = np.array([[0.5, nan, 1.0],
                [nan, nan, nan],
                [0.2, 0.4, nan]])
  cases = {
      # mean: per case over classes [0.75, (none), 0.3] -> over the 2 cases with values.
      "mean": ((0.75 + 0.3) / 2, 2.0),
      "sum": (2.1, 4.0),
      "mean_batch": ([0.35, 0.4, 1.0], [2.0, 1.0, 1.0]),
      "sum_batch": ([0.7, 0.4, 1.0], [2.0, 1.0, 1.0]),
      "mean_channel": ([0.75, 0.0, 0.3], [2.0, 0.0, 2.0]),  # all-nan row -> 0, as MONAI
      "sum_channel": ([1.5, 0.0, 0.6], [2.0, 0.0, 2.0]),
  }
  for reduction, (value, not_nans) in cases.items():
    got, count = metrics.reduce_metric(f, reduction)
    np.testing.assert_allclose(got, value, err_msg=reduction)
    np.testing.assert_allclose(count, not_nans, err_msg=reduction)
  got, count = metrics.reduce_metric(f, "none")
  np.testing.assert_array_equal(got, f)
  np.testing.assert_array_equal(count, ~np.isnan(f))
  assert np.isnan(f[0, 1])  # the input is not modified
  # Nothing to average at all: 0, with 0 values.
  np.testing.assert_array_equal(metrics.reduce_metric(np.full((2, 2), nan)), (0.0, 0.0))
  with pytest.raises(ValueError, match="reduction"):
    metrics.reduce_metric(f, "median")
  with pytest.raises(ValueError, match="B, C"):
    metrics.reduce_metric(np.ones(3))


# ---------------------------------------------------------------------------------------------
# Distance metrics, directed Hausdorff, normalised surface Dice.


def test_outlier_voxel_distance_metrics_and_directed_by_hand():
  # Truth = cube [2, 6)^3; prediction = cube + one voxel at offset (3, 2, 1) from the cube's
  # corner (5, 5, 5). Nearest truth surface voxel: the corner, at sqrt(9 + 4 + 1) (euclidean),
  # max(3, 2, 1) = 3 (chessboard), 3 + 2 + 1 = 6 (taxicab). Every other distance is 0.
  truth = _cube((12, 12, 12), (2, 2, 2))
  pred = truth.copy()
  pred[8, 7, 6] = True
  for metric, value in (("euclidean", np.sqrt(14)), ("chessboard", 3.0), ("taxicab", 6.0)):
    kwargs = dict(percentile=None, distance_metric=metric)
    assert metrics.hausdorff_distance(pred, truth, **kwargs) == pytest.approx(value)
    # Directed: pred -> truth sees the outlier, truth -> pred does not.
    assert metrics.hausdorff_distance(pred, truth, directed=True, **kwargs) == pytest.approx(value)
    assert metrics.hausdorff_distance(truth, pred, directed=True, **kwargs) == 0.0
    assert metrics.average_surface_distance(
        pred, truth, distance_metric=metric) == pytest.approx(value / 113)
    to_truth, to_pred = metrics.surface_distances(pred, truth, distance_metric=metric)
    assert sorted(to_truth)[-1] == pytest.approx(value) and not to_pred.any()
  # HD99 of pred -> truth (57 values, one non-zero): position 0.99 * 56 = 55.44 -> 0.44 * value.
  assert metrics.hausdorff_distance(pred, truth, percentile=99, directed=True,
                                    distance_metric="taxicab") == pytest.approx(0.44 * 6)
  # Spacing scales the euclidean distance only; the chamfer metrics ignore it (MONAI) and warn.
  assert metrics.hausdorff_distance(pred, truth, percentile=None,
                                    spacing=(2.0, 1.0, 3.0)) == pytest.approx(np.sqrt(36 + 4 + 9))
  with pytest.warns(UserWarning, match="ignored"):
    hd = metrics.hausdorff_distance(pred, truth, percentile=None, spacing=(2.0, 1.0, 3.0),
                                    distance_metric="chessboard")
  assert hd == 3.0
  with pytest.raises(ValueError, match="distance_metric"):
    metrics.hausdorff_distance(pred, truth, distance_metric="manhattan")


def test_directed_and_nsd_empty_masks():
  empty = np.zeros((5, 5, 5), bool)
  cube = _cube((5, 5, 5), (1, 1, 1), 2)
  assert np.isnan(metrics.hausdorff_distance(empty, empty, directed=True))
  assert metrics.hausdorff_distance(cube, empty, directed=True) == np.inf
  assert metrics.hausdorff_distance(empty, cube, directed=True) == np.inf
  assert np.isnan(metrics.normalized_surface_dice(empty, empty, tolerance=1.0))
  assert metrics.normalized_surface_dice(cube, empty, tolerance=1.0) == 0.0
  assert metrics.normalized_surface_dice(empty, cube, tolerance=1.0) == 0.0
  assert metrics.normalized_surface_dice(cube, cube, tolerance=0.0) == 1.0


@pytest.mark.parametrize("tolerance, expected", [
    # Per direction 24 distances of 0, 16 of 0.5 mm and 16 of 1 mm (see the anisotropic test).
    (0.0, 48 / 112), (0.49, 48 / 112), (0.5, 80 / 112), (0.99, 80 / 112), (1.0, 1.0), (5.0, 1.0)])
def test_normalized_surface_dice_shifted_cubes_by_hand(tolerance, expected):
  a, b = _cube((12, 12, 12), (3, 3, 3)), _cube((12, 12, 12), (5, 3, 3))
  nsd = metrics.normalized_surface_dice(a, b, tolerance=tolerance, spacing=(0.5, 2.0, 3.0))
  assert nsd == pytest.approx(expected)


def test_normalized_surface_dice_bad_tolerance():
  cube = _cube((5, 5, 5), (1, 1, 1), 2)
  for tolerance in (-1.0, np.inf, np.nan):
    with pytest.raises(ValueError, match="tolerance"):
      metrics.normalized_surface_dice(cube, cube, tolerance=tolerance)


def _brute_force_distances(a, b, spacing, metric):
  """d(surface(a) -> surface(b)) by all pairs of surface voxel coordinates (MONAI's edges)."""
  edges = lambda m: np.argwhere(m ^ ndimage.binary_erosion(m))
  ea, eb = edges(a), edges(b)
  diff = np.abs(ea[:, None, :] - eb[None, :, :]).astype(np.float64)
  if metric == "euclidean":
    pair = np.sqrt(((diff * np.asarray(spacing)) ** 2).sum(-1))
  elif metric == "chessboard":
    pair = diff.max(-1)
  else:
    pair = diff.sum(-1)
  return pair.min(1)


@pytest.mark.parametrize("metric", ["euclidean", "chessboard", "taxicab"])
def test_distances_hd_nsd_match_brute_force_on_random_blobs(metric):
  rng = np.random.default_rng(5)
  spacing = (1.0, 0.7, 2.3) if metric == "euclidean" else None
  for _ in range(2):
    a = ndimage.gaussian_filter(rng.normal(size=(12, 14, 10)), 1.5) > 0.1
    b = ndimage.gaussian_filter(rng.normal(size=(12, 14, 10)), 1.5) > 0.1
    d_ab = _brute_force_distances(a, b, spacing or (1, 1, 1), metric)
    d_ba = _brute_force_distances(b, a, spacing or (1, 1, 1), metric)
    got_ab, got_ba = metrics.surface_distances(a, b, spacing=spacing, distance_metric=metric)
    np.testing.assert_allclose(np.sort(got_ab), np.sort(d_ab), rtol=1e-12)
    np.testing.assert_allclose(np.sort(got_ba), np.sort(d_ba), rtol=1e-12)
    kw = dict(spacing=spacing, distance_metric=metric)
    assert metrics.hausdorff_distance(a, b, **kw) == pytest.approx(
        max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))
    assert metrics.hausdorff_distance(a, b, directed=True, percentile=None,
                                      **kw) == pytest.approx(d_ab.max())
    tau = float(np.median(d_ab))  # a tolerance that some distances equal exactly
    assert metrics.normalized_surface_dice(a, b, tolerance=tau, **kw) == pytest.approx(
        ((d_ab <= tau).sum() + (d_ba <= tau).sum()) / (d_ab.size + d_ba.size))


def test_new_options_match_live_monai():
  torch = pytest.importorskip("torch")
  monai_metrics = pytest.importorskip("monai.metrics")
  from monai.metrics.utils import do_metric_reduction  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(6)
  pred = rng.choice(4, size=(2, 8, 9, 7), p=[0.6, 0.3, 0.1, 0.0])
  label = rng.choice(4, size=(2, 8, 9, 7), p=[0.6, 0.2, 0.0, 0.2])
  label[1][label[1] == 3] = 0  # class 3 in the truth of case 0 only
  onehot = lambda ids: torch.as_tensor(np.moveaxis(np.eye(4, dtype=np.float32)[ids], -1, 1))
  for ignore_empty in (True, False):
    theirs = monai_metrics.compute_dice(onehot(pred), onehot(label), ignore_empty=ignore_empty)
    ours = np.stack([metrics.dice_per_class(p, g, num_classes=4, ignore_empty=ignore_empty)
                     for p, g in zip(pred, label)])
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5)
    for reduction in metrics.REDUCTIONS:
      value, not_nans = do_metric_reduction(theirs.clone(), reduction)
      got, count = metrics.reduce_metric(ours, reduction)
      np.testing.assert_allclose(got, value.numpy(), rtol=1e-5, err_msg=reduction)
      np.testing.assert_allclose(count, not_nans.numpy(), err_msg=reduction)
  a = ndimage.gaussian_filter(rng.normal(size=(14, 12, 10)), 1.5) > 0.1
  b = ndimage.gaussian_filter(rng.normal(size=(14, 12, 10)), 1.5) > 0.1
  two = lambda m: torch.as_tensor(np.stack([~m, m])[None].astype(np.float32))
  for metric in metrics.DISTANCE_METRICS:
    spacing = (1.0, 0.7, 2.3) if metric == "euclidean" else None
    for directed in (False, True):
      for percentile in (None, 95):
        theirs = monai_metrics.compute_hausdorff_distance(
            two(a), two(b), percentile=percentile, directed=directed, distance_metric=metric,
            spacing=spacing).item()
        ours = metrics.hausdorff_distance(a, b, percentile=percentile, directed=directed,
                                          distance_metric=metric, spacing=spacing)
        assert ours == pytest.approx(theirs, rel=1e-5), (metric, directed, percentile)
    for tau in (0.5, 1.0, 2.0):
      theirs = monai_metrics.compute_surface_dice(two(a), two(b), [tau], distance_metric=metric,
                                                  spacing=spacing).item()
      ours = metrics.normalized_surface_dice(a, b, tolerance=tau, distance_metric=metric,
                                             spacing=spacing)
      assert ours == pytest.approx(theirs, rel=1e-5), (metric, tau)
  # Empty masks: the same nan / inf / 0 as MONAI.
  empty, cube = np.zeros((6, 6, 6), bool), _cube((6, 6, 6), (1, 1, 1), 2)
  for p, g in ((cube, empty), (empty, cube), (empty, empty)):
    for directed in (False, True):
      theirs = monai_metrics.compute_hausdorff_distance(two(p), two(g), directed=directed).item()
      np.testing.assert_equal(metrics.hausdorff_distance(p, g, directed=directed), theirs)
    theirs = monai_metrics.compute_average_surface_distance(two(p), two(g), symmetric=True).item()
    np.testing.assert_equal(metrics.average_surface_distance(p, g), theirs)
    theirs = monai_metrics.compute_surface_dice(two(p), two(g), [1.0]).item()
    np.testing.assert_equal(metrics.normalized_surface_dice(p, g, tolerance=1.0), theirs)


def test_surface_metrics_equal_the_three_metrics_from_one_pass():
  """`surface_metrics` computes the distances once; its values are the separate functions'."""
  rng = np.random.default_rng(5)
  a = ndimage.binary_dilation(rng.random((12, 12, 12)) > 0.97, iterations=2)
  b = ndimage.binary_dilation(rng.random((12, 12, 12)) > 0.97, iterations=2)
  spacing = (1.0, 2.0, 0.5)
  got = metrics.surface_metrics(a, b, spacing=spacing, percentile=90.0, nsd_tolerance=1.5)
  assert got == {
      "hd95": metrics.hausdorff_distance(a, b, spacing=spacing, percentile=90.0),
      "assd": metrics.average_surface_distance(a, b, spacing=spacing),
      "nsd": metrics.normalized_surface_dice(a, b, tolerance=1.5, spacing=spacing)}
  empty = np.zeros_like(a)
  assert metrics.surface_metrics(a, empty, nsd_tolerance=1.0) == {
      "hd95": np.inf, "assd": np.inf, "nsd": 0.0}
  both = metrics.surface_metrics(empty, empty, nsd_tolerance=1.0)
  assert set(both) == {"hd95", "assd", "nsd"} and all(np.isnan(v) for v in both.values())
  assert "nsd" not in metrics.surface_metrics(a, b)
