"""Tests for medjax.viz: figure array, median slices, class colours, atomic PNG writing."""

import os

from matplotlib import colors
import matplotlib.image
import numpy as np
import pytest

from medjax import viz


def _has_colour(rgb: np.ndarray, hex_colour: str) -> bool:
  target = np.round(np.asarray(colors.to_rgb(hex_colour)) * 255).astype(int)
  return bool(np.any(np.all(np.abs(rgb.astype(int) - target) <= 1, axis=-1)))


def _volumes(shape=(12, 14, 10)):
  rng = np.random.default_rng(0)
  image = rng.random((*shape, 2)).astype(np.float32)
  centre = tuple(s // 2 for s in shape)
  pred = np.zeros(shape, np.uint8)
  pred[tuple(slice(c - 1, c + 2) for c in centre)] = 1  # crosses every median slice
  pred[:2, :2, :2] = 3                                   # in no median slice
  label = np.zeros(shape, np.uint8)
  label[tuple(slice(c - 1, c + 2) for c in centre)] = 2
  return image, label, pred


def test_figure_array_shows_median_slices_in_class_colours():
  image, label, pred = _volumes()
  rgb = viz.comparison_figure_array(image, label, pred, legend=False)
  assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
  assert _has_colour(rgb, viz.CLASS_COLORS[1])      # CSF in the prediction
  assert _has_colour(rgb, viz.CLASS_COLORS[2])      # GM in the ground truth
  assert not _has_colour(rgb, viz.CLASS_COLORS[3])  # WM lies outside all median slices
  # Without ground truth the figure loses a column: narrower, same height; no GM colour left.
  rgb2 = viz.comparison_figure_array(image, None, pred, legend=False)
  assert rgb2.shape[0] == rgb.shape[0] and rgb2.shape[1] < rgb.shape[1]
  assert not _has_colour(rgb2, viz.CLASS_COLORS[2])
  # The legend draws every class colour.
  assert _has_colour(viz.comparison_figure_array(image, None, pred), viz.CLASS_COLORS[3])


def test_view_axes_follow_the_affine():
  assert viz.view_axes(None) == {"sagittal": 0, "coronal": 1, "axial": 2}
  # Voxel axes (i, j, k) -> world (S, R, A): axial normal is i, sagittal j, coronal k.
  affine = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
  assert viz.view_axes(affine) == {"axial": 0, "sagittal": 1, "coronal": 2}


def test_save_png_is_atomic_and_readable(tmp_path):
  image, label, pred = _volumes()
  path = tmp_path / "sub" / "subject-1.png"
  viz.save_comparison_png(str(path), image, label, pred, spacing=(1.0, 1.0, 2.0))
  png = matplotlib.image.imread(str(path))
  assert png.ndim == 3 and png.shape[0] > 100
  assert os.listdir(path.parent) == ["subject-1.png"]  # no temporary file left
  # A failure while drawing leaves nothing behind either.
  with pytest.raises(ValueError, match="prediction"):
    viz.save_comparison_png(str(tmp_path / "bad.png"), image, label, pred[:-1])
  assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("kwargs, match", [
    (dict(prediction=np.full((12, 14, 10), 4, np.uint8)), "class ids"),
    (dict(label=np.zeros((3, 3, 3), np.uint8)), "label has shape"),
    (dict(image=np.zeros((12, 14))), "image has shape"),
])
def test_bad_inputs(kwargs, match):
  image, label, pred = _volumes()
  args = dict(image=image, label=label, prediction=pred)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    viz.comparison_figure_array(**args)
