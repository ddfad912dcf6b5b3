"""Tests for medjax.data.geometry against independent references.

References: nibabel (apply_affine, aff2axcodes) for world coordinates, np.repeat for nearest
upsampling by integer factors, scipy.ndimage.zoom(grid_mode=True) for interpolation, values worked
out by hand (written in the comments) for linear interpolation and the spacing rules.
"""

import itertools
import json

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine, voxel_sizes
from scipy import ndimage

from medjax.data import geometry


def _affine(columns, origin=(0.0, 0.0, 0.0)):
  """A [4, 4] affine whose voxel axis i points along columns[i] (world mm)."""
  a = np.eye(4)
  a[:3, :3] = np.asarray(columns, np.float64).T
  a[:3, 3] = origin
  return a


def _rotation_z(deg):
  t = np.deg2rad(deg)
  return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


AFFINES = {
    "RAS": (_affine([(1, 0, 0), (0, 1, 0), (0, 0, 1)], (3, -4, 5)), "RAS"),
    "LPS": (_affine([(-0.8, 0, 0), (0, -0.8, 0), (0, 0, 2.5)], (10, 20, -30)), "LPS"),
    # i -> posterior (1.5 mm), j -> inferior (0.7 mm), k -> right (3 mm).
    "PIR": (_affine([(0, -1.5, 0), (0, 0, -0.7), (3.0, 0, 0)], (-7, 2, 11)), "PIR"),
    # LAS rotated 10 degrees about z: still closest to LAS.
    "oblique": (_affine((_rotation_z(10) @ np.diag([-1.2, 0.9, 2.0])).T, (1, 2, 3)), "LAS"),
}


def _unique_image(shape, channels=2):
  return (np.arange(np.prod(shape) * channels, dtype=np.float32) + 1).reshape(
      tuple(shape) + (channels,))


def _block_labels(coarse_shape, factor, num_classes, seed):
  """Random class ids on a coarse grid, each repeated into a factor^3 block."""
  coarse = np.random.default_rng(seed).integers(0, num_classes, coarse_shape)
  for axis, f in enumerate(factor):
    coarse = np.repeat(coarse, f, axis=axis)
  return coarse.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Orientation.


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_orientation_keeps_world_points_and_inverts_exactly(name):
  affine, codes = AFFINES[name]
  assert "".join(nib.aff2axcodes(affine)) == codes
  shape = (5, 6, 7)
  image = _unique_image(shape)
  label = (np.arange(np.prod(shape)) % 4).reshape(shape).astype(np.uint8)
  out, out_label, record = geometry.forward(image, affine, label=label, crop_nonzero=False)
  assert nib.aff2axcodes(np.asarray(record.affine)) == ("R", "A", "S")
  assert out.dtype == np.float32 and out_label.dtype == np.uint8
  # Every voxel's world point, seen from the reoriented grid, is an integer voxel with the same
  # values.
  inv = np.linalg.inv(np.asarray(record.affine))
  for ijk in itertools.product(*(range(n) for n in shape)):
    new = apply_affine(inv, apply_affine(affine, ijk))
    rounded = np.round(new).astype(int)
    np.testing.assert_allclose(new, rounded, atol=1e-9)
    np.testing.assert_array_equal(out[tuple(rounded)], image[ijk])
    assert out_label[tuple(rounded)] == label[ijk]
  # The inverse gives back the arrays exactly.
  np.testing.assert_array_equal(geometry.inverse_probabilities(out, record), image)
  np.testing.assert_array_equal(geometry.inverse_labels(out_label, record), label)


def test_orientation_permutes_spacing_and_shape():
  affine, _ = AFFINES["PIR"]
  image = _unique_image((5, 6, 7))
  out, _, record = geometry.forward(image, affine, crop_nonzero=False)
  # R is file axis k (3 mm, 7 voxels), A is i (1.5 mm, 5), S is j (0.7 mm, 6).
  assert record.oriented_shape == (7, 5, 6) and out.shape == (7, 5, 6, 2)
  np.testing.assert_allclose(record.spacing_before_resampling, (3.0, 1.5, 0.7))
  assert record.original_shape == (5, 6, 7)


def test_orientation_to_lps_and_none():
  affine, _ = AFFINES["PIR"]
  image = _unique_image((5, 6, 7))
  _, _, record = geometry.forward(image, affine, orientation="LPS", crop_nonzero=False)
  assert nib.aff2axcodes(np.asarray(record.affine)) == ("L", "P", "S")
  out, _, record = geometry.forward(image, affine, orientation=None, crop_nonzero=False)
  np.testing.assert_array_equal(out, image)
  np.testing.assert_array_equal(np.asarray(record.affine), affine)
  assert record.ornt == ((0, 1), (1, 1), (2, 1))


# --------------------------------------------------------------------------------------------
# Resampling.


def test_linear_resampling_hand_computed():
  x = np.arange(4, dtype=np.float32).reshape(4, 1, 1)  # 0, 1, 2, 3
  # Down to 2: centres at old 0.5 and 2.5.
  np.testing.assert_allclose(geometry.resample(x, (2, 1, 1), order=1)[:, 0, 0], [0.5, 2.5])
  # Up to 8: centres at -0.25, 0.25, ..., 3.25; beyond the outer centres the edge repeats.
  np.testing.assert_allclose(geometry.resample(x, (8, 1, 1), order=1)[:, 0, 0],
                             [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])


@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("new_shape", [(14, 5, 11), (3, 9, 4), (10, 13, 6)])
def test_resampling_matches_scipy_zoom_grid_mode(order, new_shape):
  x = np.random.default_rng(0).normal(size=(7, 9, 5)).astype(np.float32)
  expected = ndimage.zoom(x.astype(np.float64), np.divide(new_shape, x.shape), order=order,
                          mode="nearest", grid_mode=True)
  assert expected.shape == new_shape
  out = geometry.resample(x, new_shape, order=order)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_forward_image_resampling_matches_zoom():
  # Spacing (1.3, 0.8, 2.1) -> 1 mm: shape (7, 9, 4) -> round(9.1, 7.2, 8.4) = (9, 7, 8).
  # (Not (1.3, 0.7, 2.1): 2.1 / 0.7 is 3.0000000000000004 in floats, over the threshold 3.)
  x = np.random.default_rng(1).normal(size=(7, 9, 4, 2)).astype(np.float32) + 5
  affine = np.diag([1.3, 0.8, 2.1, 1.0])
  out, _, record = geometry.forward(x, affine, target_spacing=(1, 1, 1), crop_nonzero=False)
  assert out.shape == (9, 7, 8, 2)
  for c in range(2):
    expected = ndimage.zoom(x[..., c].astype(np.float64), np.divide((9, 7, 8), (7, 9, 4)),
                            order=3, mode="nearest", grid_mode=True)
    np.testing.assert_allclose(out[..., c], expected, atol=1e-4)
  np.testing.assert_allclose(record.spacing_after_resampling,
                             (7 * 1.3 / 9, 9 * 0.8 / 7, 4 * 2.1 / 8))


def test_anisotropic_image_uses_order_zero_along_low_resolution_axis():
  # Spacing (1, 1, 4) has max / min 4 > 3: in-plane cubic, nearest along axis 2.
  x = np.random.default_rng(2).normal(size=(6, 5, 4, 1)).astype(np.float32)
  affine = np.diag([1.0, 1.0, 4.0, 1.0])
  out, _, _ = geometry.forward(x, affine, target_spacing=(0.5, 0.5, 2.0), crop_nonzero=False)
  in_plane = np.stack([ndimage.zoom(x[:, :, k, 0].astype(np.float64), 2, order=3,
                                    mode="nearest", grid_mode=True) for k in range(4)], axis=-1)
  np.testing.assert_allclose(out[..., 0], np.repeat(in_plane, 2, axis=2), atol=1e-5)


def test_anisotropic_axis_rule():
  assert geometry.anisotropic_axis((1, 1, 4), (1, 1, 2)) == 2  # the source decides
  assert geometry.anisotropic_axis((1, 1, 2), (5, 1, 1)) == 0  # else the target
  assert geometry.anisotropic_axis((0.24, 1.25, 1.25), (1, 1, 1)) is None  # two coarse axes
  assert geometry.anisotropic_axis((1, 1, 3), (1, 1, 3)) is None  # ratio 3 is not > 3


def test_resampled_shape_rounds_like_nnunet():
  # 5 * 1/2 = 2.5 -> 2 and 3 * 1/2 = 1.5 -> 2 (halves to even), 0.3 -> at least 1.
  assert geometry.resampled_shape((5, 3, 1), (1, 1, 0.3), (2, 2, 1)) == (2, 2, 1)
  assert geometry.resampled_shape((10, 20, 30), (1.5, 0.8, 3), (1, 1, 1)) == (15, 16, 90)


def test_same_spacing_is_identity():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(6, 7, 5, 2)).astype(np.float32)
  label = rng.integers(0, 3, (6, 7, 5)).astype(np.uint8)
  affine = np.diag([0.9, 1.1, 2.5, 1.0])
  out, out_label, record = geometry.forward(x, affine, label=label,
                                            target_spacing=(0.9, 1.1, 2.5), crop_nonzero=False)
  np.testing.assert_array_equal(out, x)
  np.testing.assert_array_equal(out_label, label)
  np.testing.assert_allclose(np.asarray(record.affine), affine)


def test_linear_onehot_hand_computed():
  # Up 4 -> 8 of [0, 0, 1, 1]: class 1 is 0.25 at old 1.25 and 0.75 at 1.75.
  resample_labels = geometry.resampling._resample_labels
  up = resample_labels(np.array([0, 0, 1, 1], np.uint8).reshape(4, 1, 1), (8, 1, 1),
                       "linear_onehot", None)
  np.testing.assert_array_equal(up[:, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1])
  # Down 8 -> 4 of [0, 0, 2, 2, 2, 1, 1, 1]: centres at 0.5, 2.5, 4.5 (2 and 1 tie at 0.5 ->
  # the lower id, 1), 6.5.
  down = resample_labels(np.array([0, 0, 2, 2, 2, 1, 1, 1], np.uint8).reshape(8, 1, 1),
                         (4, 1, 1), "linear_onehot", None)
  np.testing.assert_array_equal(down[:, 0, 0], [0, 2, 1, 1])


@pytest.mark.parametrize("factor", [(2, 2, 2), (3, 1, 2)])
def test_nearest_label_upsampling_is_repeat_and_round_trips(factor):
  label = np.random.default_rng(4).integers(0, 4, (4, 5, 3)).astype(np.uint8)
  image = np.ones(label.shape + (1,), np.float32)
  spacing = np.array([1.2, 0.8, 1.5])
  affine = np.diag(np.append(spacing, 1.0))
  _, up, record = geometry.forward(image, affine, label=label, target_spacing=spacing / factor,
                                   label_method="nearest", crop_nonzero=False)
  expected = label
  for axis, f in enumerate(factor):
    expected = np.repeat(expected, f, axis=axis)
  np.testing.assert_array_equal(up, expected)
  np.testing.assert_array_equal(geometry.inverse_labels(up, record, method="nearest"), label)


def test_linear_onehot_label_round_trip_integer_factor():
  label = _block_labels((3, 3, 2), (2, 2, 2), 3, seed=5)  # [6, 6, 4]
  image = np.ones(label.shape + (1,), np.float32)
  affine = np.diag([1.0, 1.0, 1.0, 1.0])
  _, up, record = geometry.forward(image, affine, label=label, target_spacing=(0.5, 0.5, 0.5),
                                   crop_nonzero=False)
  assert up.shape == (12, 12, 8)
  np.testing.assert_array_equal(geometry.inverse_labels(up, record), label)


def test_full_round_trip_flip_anisotropic_crop():
  # LPS, spacing (0.8, 0.8, 3.2) (anisotropic: 4 > 3), non-zero image inside a box; upsampling
  # by 2 in every axis; predictions = one-hot of the preprocessed labels.
  shape = (12, 10, 7)
  box = (slice(2, 10), slice(1, 9), slice(1, 6))
  image = np.zeros(shape + (2,), np.float32)
  image[box] = np.random.default_rng(6).uniform(1, 2, (8, 8, 5, 2))
  label = np.zeros(shape, np.uint8)
  label[box] = _block_labels((4, 4, 5), (2, 2, 1), 3, seed=7)
  affine = _affine([(-0.8, 0, 0), (0, -0.8, 0), (0, 0, 3.2)], (40, 30, -20))
  out, out_label, record = geometry.forward(image, affine, label=label,
                                            target_spacing=(0.4, 0.4, 1.6), num_classes=3)
  assert record.shape_before_resampling == (8, 8, 5)
  assert out.shape == (16, 16, 10, 2) and out_label.shape == (16, 16, 10)
  probs = np.eye(3, dtype=np.float32)[out_label]
  back = geometry.inverse_probabilities(probs, record)
  assert back.shape == shape + (3,) and back.dtype == np.float32
  np.testing.assert_array_equal(back.argmax(-1), label)
  np.testing.assert_allclose(back.sum(-1), 1.0, atol=1e-6)
  outside = np.ones(shape, bool)
  outside[box] = False
  np.testing.assert_array_equal(back[outside], np.tile([1.0, 0.0, 0.0], (outside.sum(), 1)))
  np.testing.assert_array_equal(geometry.inverse_labels(out_label, record), label)


# --------------------------------------------------------------------------------------------
# World coordinates of the preprocessed grid.


def _corners(affine, shape):
  return sorted(tuple(np.round(apply_affine(affine, c), 9))
                for c in itertools.product(*((-0.5, n - 0.5) for n in shape)))


@pytest.mark.parametrize("name", ["LPS", "PIR", "oblique"])
@pytest.mark.parametrize("target", [(1.0, 1.0, 1.0), (0.45, 2.0, 0.7)])
def test_resampled_affine_keeps_field_of_view(name, target):
  affine, _ = AFFINES[name]
  shape = (7, 9, 5)
  image = np.ones(shape + (1,), np.float32)
  _, _, record = geometry.forward(image, affine, target_spacing=target, crop_nonzero=False)
  new = np.asarray(record.affine)
  m = record.shape_after_resampling
  assert m != record.oriented_shape
  np.testing.assert_allclose(apply_affine(new, (np.array(m) - 1) / 2),
                             apply_affine(affine, (np.array(shape) - 1) / 2), atol=1e-9)
  np.testing.assert_allclose(_corners(new, m), _corners(affine, shape), atol=1e-8)
  np.testing.assert_allclose(voxel_sizes(new), record.spacing_after_resampling, rtol=1e-12)
  assert nib.aff2axcodes(new) == ("R", "A", "S")


# --------------------------------------------------------------------------------------------
# Non-zero crop.


def test_nonzero_crop_box_values_and_inverse():
  shape = (9, 8, 7)
  image = np.zeros(shape + (2,), np.float32)
  image[2:7, 1:5, 3:6, 0] = 1.0       # channel 0
  image[4, 6, 4, 1] = 2.0             # channel 1 widens the box on axis 1 to 1:7
  image[4, 3, 4, 0] = 0.0             # a hole: inside the box, kept
  affine, _ = AFFINES["LPS"]          # axes 0 and 1 flip in RAS
  out, _, record = geometry.forward(image, affine)
  # Flipped axes: [a, b) of n becomes [n - b, n - a).
  assert record.crop_box == ((9 - 7, 9 - 2), (8 - 7, 8 - 1), (3, 6))
  assert out.shape == (5, 6, 3, 2)
  # Each preprocessed voxel shows the value of the file voxel at its world point.
  to_file = np.linalg.inv(affine) @ np.asarray(record.affine)
  for ijk in itertools.product(*(range(n) for n in out.shape[:3])):
    src = np.round(apply_affine(to_file, ijk)).astype(int)
    np.testing.assert_array_equal(out[ijk], image[tuple(src)])
  # Inverse: probabilities inside, background (class 0 = 1) outside the box.
  probs = np.random.default_rng(8).dirichlet(np.ones(3), out.shape[:3]).astype(np.float32)
  back = geometry.inverse_probabilities(probs, record)
  inside = np.zeros(shape, bool)
  inside[2:7, 1:7, 3:6] = True
  np.testing.assert_array_equal(back[~inside], np.tile([1.0, 0.0, 0.0], ((~inside).sum(), 1)))
  # Inside, the file voxel order of the box is the flipped preprocessed order.
  np.testing.assert_allclose(back[2:7, 1:7, 3:6], probs[::-1, ::-1], rtol=0, atol=0)


def test_crop_keeps_labels_outside_the_image_support_and_empty_image():
  image = np.zeros((6, 6, 6, 1), np.float32)
  image[2:4, 2:4, 2:4] = 1.0
  label = np.zeros((6, 6, 6), np.uint8)
  label[1, 2, 2] = 1
  _, out_label, record = geometry.forward(image, np.eye(4), label=label)
  assert record.crop_box == ((1, 4), (2, 4), (2, 4))
  np.testing.assert_array_equal(geometry.inverse_labels(out_label, record), label)
  _, _, record = geometry.forward(np.zeros((3, 4, 5, 1)), np.eye(4))
  assert record.crop_box == ((0, 3), (0, 4), (0, 5))
  _, _, record = geometry.forward(image, np.eye(4), crop_nonzero=False)
  assert record.crop_box == ((0, 6), (0, 6), (0, 6))


def test_nonzero_mask_fills_holes():
  image = np.zeros((5, 5, 5, 1))
  image[1:4, 1:4, 1:4] = 1
  image[2, 2, 2] = 0
  expected = image[..., 0] != 0
  expected[2, 2, 2] = True
  np.testing.assert_array_equal(geometry.nonzero_mask(image), expected)


def test_before_resampling_sees_cropped_image_and_mask():
  image = np.zeros((6, 6, 6, 1), np.float32)
  image[1:5, 1:5, 1:5] = 3.0
  image[2, 2, 2] = 0.0
  seen = {}

  def fn(x, mask):
    seen["shape"], seen["mask"] = x.shape, mask.copy()
    return 2 * x

  doubled, _, _ = geometry.forward(image, np.eye(4), target_spacing=(0.5, 0.5, 0.5),
                                   before_resampling=fn)
  plain, _, _ = geometry.forward(image, np.eye(4), target_spacing=(0.5, 0.5, 0.5))
  assert seen["shape"] == (4, 4, 4, 1) and seen["mask"].all()  # the hole is filled
  np.testing.assert_allclose(doubled, 2 * plain, rtol=1e-6)
  with pytest.raises(ValueError, match="keep the image shape"):
    geometry.forward(image, np.eye(4), before_resampling=lambda x, m: x[1:])


# --------------------------------------------------------------------------------------------
# Record.


def test_record_json_round_trip():
  image = np.random.default_rng(9).uniform(1, 2, (5, 6, 7, 1))
  _, _, record = geometry.forward(image, AFFINES["oblique"][0], target_spacing=(0.7, 1.3, 1.1))
  d = json.loads(json.dumps(record.to_dict()))
  again = geometry.GeometryRecord.from_dict(d)
  assert again == record
  assert np.asarray(again.affine).dtype == np.float64
  del d["crop_box"]
  with pytest.raises(ValueError, match="crop_box"):
    geometry.GeometryRecord.from_dict(d)


# --------------------------------------------------------------------------------------------
# Dataset spacing rules.


def test_median_spacing():
  # Per axis: median of (1, 2, 3), (1, 1, 0.5), (3, 5, 4), and of four values (1, 2, 3, 10).
  assert geometry.median_spacing([[1, 1, 3], [2, 1, 5], [3, 0.5, 4]]) == (2.0, 1.0, 4.0)
  assert geometry.median_spacing([[1, 1, 1], [2, 2, 2], [3, 3, 3], [10, 10, 10]]) == (
      2.5, 2.5, 2.5)


ACDC_LIKE = [[1.5, 1.5, 10], [1.4, 1.4, 10], [1.6, 1.6, 5], [1.5, 1.5, 6], [1.2, 1.2, 10]]


def test_target_spacing_anisotropic_takes_tenth_percentile():
  shapes = [[200, 210, 10]] * 5
  # Median (1.5, 1.5, 10); 10 > 3 * 1.5 and 10 * 3 < 200: axis 2 takes the 10th percentile of
  # (5, 6, 10, 10, 10): position 0.1 * 4 = 0.4 -> 5 + 0.4 * (6 - 5) = 5.4.
  np.testing.assert_allclose(geometry.target_spacing(ACDC_LIKE, shapes), (1.5, 1.5, 5.4))
  # Many slices (100 * 3 >= 200): not anisotropic in voxels, the median stays.
  np.testing.assert_allclose(geometry.target_spacing(ACDC_LIKE, [[200, 210, 100]] * 5),
                             (1.5, 1.5, 10))
  # Anisotropy on axis 0 works the same.
  flipped = [row[::-1] for row in ACDC_LIKE]
  np.testing.assert_allclose(geometry.target_spacing(flipped, [[10, 210, 200]] * 5),
                             (5.4, 1.5, 1.5))


def test_target_spacing_never_below_the_other_axes():
  # Axis 2: (0.2, 0.3, 4, 4, 4), median 4 > 3; 10th percentile 0.2 + 0.4 * 0.1 = 0.24 < 1
  # -> 1 + 1e-5.
  spacings = [[1, 1, 0.2], [1, 1, 0.3], [1, 1, 4], [1, 1, 4], [1, 1, 4]]
  out = geometry.target_spacing(spacings, [[100, 100, 10]] * 5)
  np.testing.assert_allclose(out, (1, 1, 1.00001), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Bad arguments.


@pytest.mark.parametrize("kwargs, match", [
    (dict(image=np.zeros((4, 4, 4))), r"\[D, H, W, C\]"),
    (dict(affine=np.diag([1.0, 0.0, 1.0, 1.0])), "singular"),
    (dict(affine=np.eye(3)), r"\[4, 4\]"),
    (dict(target_spacing=(1.0, 0.0, 1.0)), "target_spacing"),
    (dict(target_spacing=(1.0, -1.0, 1.0)), "target_spacing"),
    (dict(target_spacing=(1.0, 1.0)), "target_spacing"),
    (dict(label_method="cubic"), "label_method"),
    (dict(orientation="RAX"), "orientation"),
    (dict(orientation="RRS"), "orientation"),
    (dict(label=np.zeros((4, 4, 3), np.uint8)), "label must be"),
    (dict(label=np.full((4, 4, 4), 3, np.uint8), num_classes=3), "num_classes"),
    (dict(label=np.zeros((4, 4, 4), np.float32)), "integer"),
    (dict(image_order=7), "image_order"),
])
def test_forward_bad_arguments(kwargs, match):
  args = dict(image=np.ones((4, 4, 4, 1)), affine=np.eye(4))
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    geometry.forward(args.pop("image"), args.pop("affine"), **args)


def test_other_bad_arguments():
  _, _, record = geometry.forward(np.ones((4, 4, 4, 1)), np.eye(4),
                                  target_spacing=(0.5, 0.5, 0.5))
  with pytest.raises(ValueError, match=r"\(8, 8, 8\)"):
    geometry.inverse_probabilities(np.ones((4, 4, 4, 2)), record)
  with pytest.raises(ValueError, match="label must be"):
    geometry.inverse_labels(np.ones((4, 4, 4), np.uint8), record)
  with pytest.raises(ValueError, match="method"):
    geometry.inverse_labels(np.ones((8, 8, 8), np.uint8), record, method="cubic")
  with pytest.raises(ValueError, match="spacings"):
    geometry.median_spacing([[1.0, 0.0, 1.0]])
  with pytest.raises(ValueError, match="spacings"):
    geometry.median_spacing([1.0, 1.0, 1.0])
  with pytest.raises(ValueError, match="shapes"):
    geometry.target_spacing([[1, 1, 1]], [[1, 1]])
  with pytest.raises(ValueError, match="volume"):
    geometry.resample(np.ones((4, 4)), (2, 2, 2))
