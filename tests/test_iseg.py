"""Tests for medjax.data.iseg: label mapping, folder layouts, validation errors."""

import os
import shutil

import numpy as np
import pytest

from medjax import io
from medjax import labels
from medjax.data import iseg


def _write_subject(folder, sid, shape=(4, 5, 6), *, label=True, t2_shape=None, t2_zoom=1.0,
                   label_values=(0, 10, 150, 250), t1_dtype=np.int16):
  rng = np.random.default_rng(sid)
  t1 = rng.integers(0, 300, size=shape).astype(t1_dtype)
  t2 = rng.integers(0, 900, size=t2_shape or shape).astype(np.int16)
  io.save_image(folder / f"subject-{sid}-T1.hdr", t1[..., None], np.eye(4))
  io.save_image(folder / f"subject-{sid}-T2.hdr", t2[..., None], np.diag([t2_zoom] * 3 + [1]))
  lab = None
  if label:
    lab = np.asarray(label_values, np.uint8)[rng.integers(0, len(label_values), size=shape)]
    io.save_image(folder / f"subject-{sid}-label.hdr", lab[..., None], np.eye(4))
  return t1, t2, lab


def test_label_mapping():
  # iSeg's values through the one value map (`medjax.labels`), as load_subject uses it.
  values = np.array([[0, 10], [150, 250]], np.uint8)
  classes = labels.values_to_classes(values, iseg.LABEL_VALUES)
  np.testing.assert_array_equal(classes, [[0, 1], [2, 3]])
  assert classes.dtype == np.uint8
  np.testing.assert_array_equal(labels.classes_to_values(classes, iseg.LABEL_VALUES), values)
  np.testing.assert_array_equal(
      labels.values_to_classes(np.array([250.0, 10.0]), iseg.LABEL_VALUES), [3, 1])
  with pytest.raises(ValueError, match=r"seg\.img: label values \[7, 300\] are not declared; "
                                       r"expected the declared values \[0, 10, 150, 250\]"):
    labels.values_to_classes(np.array([0, 7, 300, 10]), iseg.LABEL_VALUES, source="seg.img")
  with pytest.raises(ValueError, match="label values must be integers"):
    labels.values_to_classes(np.array([10.5]), iseg.LABEL_VALUES)
  with pytest.raises(ValueError, match="class ids must be in 0..3"):
    labels.classes_to_values(np.array([0, 4]), iseg.LABEL_VALUES)


def test_find_subjects_download_layout(iseg_raw_dir):
  (iseg_raw_dir / "README.txt").write_text("ignored")
  subjects = iseg.find_subjects(iseg_raw_dir)
  assert list(subjects) == [1, 2, 3, 11]
  train = iseg_raw_dir / iseg.TRAINING_FOLDER
  assert subjects[2] == iseg.SubjectFiles(2, train / "subject-2-T1.hdr",
                                          train / "subject-2-T2.hdr", train / "subject-2-label.hdr")
  assert subjects[11].label is None
  assert subjects[11].t1.parent.name == iseg.TESTING_FOLDER
  os.remove(iseg_raw_dir / "README.txt")


def test_find_subjects_flat_layout(tmp_path):
  _write_subject(tmp_path, 1)
  _write_subject(tmp_path, 12, label=False)
  subjects = iseg.find_subjects(tmp_path)
  assert list(subjects) == [1, 12]
  assert subjects[1].label == tmp_path / "subject-1-label.hdr"
  assert subjects[12].label is None


def test_find_subjects_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    iseg.find_subjects(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="holds no iSeg-2017 files"):
    iseg.find_subjects(tmp_path)
  _write_subject(tmp_path, 1)
  (tmp_path / "subject-1-FLAIR.hdr").write_bytes(b"")
  with pytest.raises(ValueError, match=r"subject-1-FLAIR\.hdr: unexpected file"):
    iseg.find_subjects(tmp_path)
  os.remove(tmp_path / "subject-1-FLAIR.hdr")
  os.remove(tmp_path / "subject-1-T2.img")
  with pytest.raises(FileNotFoundError, match=r"subject-1-T2\.img: missing"):
    iseg.find_subjects(tmp_path)


def test_training_subject_needs_label(tmp_path):
  train = tmp_path / iseg.TRAINING_FOLDER
  train.mkdir()
  _write_subject(train, 4, label=False)
  with pytest.raises(FileNotFoundError, match=r"subject-4-label\.hdr: missing"):
    iseg.find_subjects(tmp_path)


def test_subject_in_two_folders(tmp_path):
  _write_subject(tmp_path, 1)
  (tmp_path / iseg.TRAINING_FOLDER).mkdir()
  _write_subject(tmp_path / iseg.TRAINING_FOLDER, 1)
  with pytest.raises(ValueError, match="subject 1 also appears"):
    iseg.find_subjects(tmp_path)


def test_load_subject_values(tmp_path):
  t1, t2, lab = _write_subject(tmp_path, 5)
  subject = iseg.load_subject(iseg.find_subjects(tmp_path)[5])
  assert subject.subject_id == 5
  assert subject.image.shape == (4, 5, 6, 2) and subject.image.dtype == np.float32
  np.testing.assert_array_equal(subject.image[..., 0], t1)
  np.testing.assert_array_equal(subject.image[..., 1], t2)
  np.testing.assert_array_equal(subject.label, np.searchsorted([0, 10, 150, 250], lab))
  assert subject.spacing == (1.0, 1.0, 1.0)
  assert subject.affine.shape == (4, 4)


@pytest.mark.parametrize("kwargs, file, message", [
    (dict(t2_shape=(4, 5, 7)), "subject-1-T2.hdr", r"shape \(4, 5, 7\) does not match"),
    (dict(t2_zoom=2.0), "subject-1-T2.hdr", "affine"),
    (dict(label_values=(0, 10, 99)), "subject-1-label.hdr",
     r"label values \[99\] are not declared; expected the declared values \[0, 10, 150, 250\]"),
])
def test_load_subject_rejects(tmp_path, kwargs, file, message):
  _write_subject(tmp_path, 1, **kwargs)
  with pytest.raises(ValueError, match=message) as e:
    iseg.load_subject(iseg.find_subjects(tmp_path)[1])
  assert file in str(e.value)


def test_load_subject_rejects_non_finite(tmp_path):
  _write_subject(tmp_path, 1)
  t1 = np.ones((4, 5, 6, 1), np.float32)
  t1[1, 2, 3] = np.nan
  io.save_image(tmp_path / "subject-1-T1.hdr", t1, np.eye(4))
  with pytest.raises(ValueError, match=r"subject-1-T1\.hdr: 1 non-finite voxels"):
    iseg.load_subject(iseg.find_subjects(tmp_path)[1])


def test_load_subject_unreadable(tmp_path, iseg_raw_dir):
  root = tmp_path / "copy"
  shutil.copytree(iseg_raw_dir, root)
  (root / iseg.TRAINING_FOLDER / "subject-2-label.hdr").write_bytes(b"garbage")
  with pytest.raises(ValueError, match=r"subject-2-label\.hdr: not a readable"):
    iseg.load_subject(iseg.find_subjects(root)[2])
