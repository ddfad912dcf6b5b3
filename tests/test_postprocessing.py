"""The largest-connected-component filter and nnU-Net's rule for choosing it, on hand-built
label maps."""

import json

import numpy as np
import pytest

from medjax import postprocessing


def _volume():
  v = np.zeros((6, 6, 6), np.uint8)
  v[0:2, 0:2, 0:2] = 1   # class 1: a 2x2x2 block (8 voxels) ...
  v[5, 5, 5] = 1         # ... and a lone voxel far from it
  v[3, 0, 0] = 2         # class 2: one voxel ...
  v[3:5, 3:5, 0] = 2     # ... and a 2x2 square (4 voxels)
  return v


def test_keeps_the_largest_component_of_the_chosen_classes_only():
  v = _volume()
  out = postprocessing.keep_largest_component(v, [1])
  expected = v.copy()
  expected[5, 5, 5] = 0
  np.testing.assert_array_equal(out, expected)
  both = postprocessing.keep_largest_component(v, [1, 2])
  expected[3, 0, 0] = 0
  np.testing.assert_array_equal(both, expected)
  assert both.dtype == v.dtype
  np.testing.assert_array_equal(v, _volume())  # the input is left alone


def test_connectivity_decides_whether_corner_neighbours_join():
  v = np.zeros((4, 4, 4), np.int32)
  v[0, 0, 0] = v[1, 1, 1] = 1  # touch at a corner only
  v[3, 3, 3] = v[3, 3, 2] = v[3, 2, 3] = 1  # 3 face-connected voxels
  full = postprocessing.keep_largest_component(v, [1])  # 26-neighbourhood: 2 and 3 voxels
  assert full.sum() == 3 and full[3, 3, 3] == 1 and full[0, 0, 0] == 0
  v[3, 3, 3] = v[3, 3, 2] = v[3, 2, 3] = 0
  v[2, 2, 2] = 1  # now one diagonal chain of 3 voxels
  assert postprocessing.keep_largest_component(v, [1]).sum() == 3
  faces = postprocessing.keep_largest_component(v, [1], connectivity=1)
  assert faces.sum() == 1 and faces[0, 0, 0] == 1  # three singletons: the first is kept


def test_absent_class_and_bad_arguments():
  v = _volume()
  np.testing.assert_array_equal(postprocessing.keep_largest_component(v, [3]), v)
  with pytest.raises(ValueError, match="class 0 is the background"):
    postprocessing.keep_largest_component(v, [0])
  with pytest.raises(ValueError, match="connectivity"):
    postprocessing.keep_largest_component(v, [1], connectivity=4)
  with pytest.raises(ValueError, match=r"\[D, H, W\]"):
    postprocessing.keep_largest_component(v[0], [1])


def test_choose_classes_keeps_only_strict_improvements():
  without = {1: [0.8, 0.6], 2: [0.9, 0.9], 3: [0.5, np.nan], 4: [np.nan, np.nan]}
  with_ = {1: [0.85, 0.6], 2: [0.9, 0.9], 3: [0.4, np.nan], 4: [np.nan, np.nan]}
  # class 1: 0.725 > 0.70; class 2 equal; class 3 worse; class 4 never present.
  assert postprocessing.choose_classes(without, with_) == [1]
  with pytest.raises(ValueError, match="class 1"):
    postprocessing.choose_classes({1: [0.5]}, {1: [0.5, 0.6]})


def test_save_and_load(tmp_path):
  path = postprocessing.save(tmp_path, [2, 1], details={"note": "x"})
  assert json.loads(open(path).read())["keep_largest_component"] == [2, 1]
  assert postprocessing.load(tmp_path) == [2, 1]
  assert postprocessing.load(path) == [2, 1]
  assert not list(tmp_path.glob("*.tmp"))
  with pytest.raises(FileNotFoundError, match="medjax.crossval"):
    postprocessing.load(tmp_path / "nowhere")
  (tmp_path / "bad.json").write_text("{}")
  with pytest.raises(ValueError, match="keep_largest_component"):
    postprocessing.load(tmp_path / "bad.json")
