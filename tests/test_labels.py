"""medjax.labels: the one map between label values and class ids, and the default classes."""

import numpy as np
import pytest

from medjax import labels
from medjax.data import datasets
from medjax.data import iseg
from medjax.data import naming

ISEG_VALUES = (0, 10, 150, 250)


def test_values_to_classes_and_back():
  values = np.array([[[0, 10], [250, 150]]], np.int16)
  classes = labels.values_to_classes(values, ISEG_VALUES)
  assert classes.dtype == np.uint8
  np.testing.assert_array_equal(classes, [[[0, 1], [3, 2]]])
  np.testing.assert_array_equal(labels.classes_to_values(classes, ISEG_VALUES), values)
  # Order of label_values is the class order, not sorted order.
  np.testing.assert_array_equal(labels.values_to_classes(values, (0, 250, 10, 150)),
                                [[[0, 2], [1, 3]]])
  # Integral floats (labels saved as float) are fine, fractions are not.
  np.testing.assert_array_equal(labels.values_to_classes(np.array([0.0, 2.0]), None), [0, 2])
  with pytest.raises(ValueError, match=r"lab\.nii: label values must be integers, found \[0\.5\]"):
    labels.values_to_classes(np.array([0.0, 0.5]), None, source="lab.nii")
  with pytest.raises(ValueError, match=r"label values \[256, 1000000000\] are not declared"):
    labels.values_to_classes(np.array([0, 256, 10**9]), None)
  with pytest.raises(ValueError, match=r"label values \[-1\] are not declared"):
    labels.values_to_classes(np.array([-1, 1]), (0, 1))
  with pytest.raises(ValueError, match="distinct integers"):
    labels.values_to_classes(np.array([0]), (0, 0))
  with pytest.raises(ValueError, match="class ids must be in 0..1"):
    labels.classes_to_values(np.array([2]), (0, 5))


def test_iseg2017_is_the_one_source_of_its_names():
  assert labels.ISEG2017.class_names == ("background", "CSF", "GM", "WM")
  assert labels.ISEG2017.label_values == ISEG_VALUES
  assert (iseg.CLASS_NAMES, iseg.LABEL_VALUES) == (labels.ISEG2017.class_names, ISEG_VALUES)
  assert datasets.ISEG2017_NAMES == datasets.DatasetNames(("T1", "T2"), iseg.CLASS_NAMES,
                                                          ISEG_VALUES)


def test_default_labels():
  # 4 classes without a workdir: iSeg-2017 (README's `medjax.evaluate --num_classes=4`).
  four = labels.default_labels(4)
  assert four.class_names == ("background", "CSF", "GM", "WM")
  assert four.label_values == ISEG_VALUES and four.source == "--num_classes=4"
  three = labels.default_labels(3)
  assert three.class_names == ("class0", "class1", "class2") and three.label_values == (0, 1, 2)
  assert labels.default_class_names(3) == ("background", "class1", "class2")
  with pytest.raises(ValueError, match="--num_classes=1: 1 classes"):
    labels.default_labels(1)
  assert labels.resolve_labels() == four


def test_to_class_ids_names_iseg_values():
  np.testing.assert_array_equal(
      labels.to_class_ids(np.array([0, 10, 250]), num_classes=4, source="s.nii"), [0, 1, 3])
  with pytest.raises(ValueError, match=r"s\.nii: label values \[7\] are neither class ids 0..3 "
                                       r"nor iSeg values \(0, 10, 150, 250\)"):
    labels.to_class_ids(np.array([7]), num_classes=4, source="s.nii")
  with pytest.raises(ValueError, match=r"nor the dataset's label values \(0, 1, 2, 4\)"):
    labels.to_class_ids(np.array([7]), num_classes=4, source="s.nii", label_values=(0, 1, 2, 4))


def test_natural_key():
  names = ["subject-10", "subject-9", "subject-1", "case_b", "case_a"]
  assert sorted(names, key=naming.natural_key) == [
      "case_a", "case_b", "subject-1", "subject-9", "subject-10"]
