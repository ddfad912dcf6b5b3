"""Tests for medjax.data.synthetic: layout, determinism, anatomy proportions and contrast."""

import os

import nibabel as nib
import numpy as np
import pytest

from medjax.data import iseg
from medjax.data import synthetic

# Large enough for stable class proportions, small enough to generate in a fraction of a second.
MEDIUM = (72, 96, 128)


@pytest.fixture(scope="module")
def medium_subject():
  return synthetic.generate_subject(MEDIUM, seed=0, subject_id=2)


def test_layout_matches_download(iseg_raw_dir):
  train = sorted(os.listdir(iseg_raw_dir / iseg.TRAINING_FOLDER))
  assert train == sorted(f"subject-{i}-{k}.{e}" for i in (1, 2, 3)
                         for k in ("T1", "T2", "label") for e in ("hdr", "img"))
  assert sorted(os.listdir(iseg_raw_dir / iseg.TESTING_FOLDER)) == [
      "subject-11-T1.hdr", "subject-11-T1.img", "subject-11-T2.hdr", "subject-11-T2.img"]
  for kind, dtype in (("T1", np.int16), ("T2", np.int16), ("label", np.uint8)):
    img = nib.load(iseg_raw_dir / iseg.TRAINING_FOLDER / f"subject-2-{kind}.hdr")
    assert img.shape == (24, 28, 32, 1)  # trailing singleton axis, like the real files
    assert img.get_data_dtype() == dtype
    assert img.header.get_zooms()[:3] == (1.0, 1.0, 1.0)


def test_flat_layout_and_test_numbering(tmp_path):
  synthetic.write_iseg_layout(tmp_path / "d", shape=(12, 12, 12), num_train=2, num_test=2,
                              flat=True)
  subjects = iseg.find_subjects(tmp_path / "d")
  assert list(subjects) == [1, 2, 11, 12]
  assert [s.label is None for s in subjects.values()] == [False, False, True, True]
  assert all(s.t1.parent == tmp_path / "d" for s in subjects.values())


def test_deterministic_and_per_subject():
  a = synthetic.generate_subject((24, 28, 32), seed=3, subject_id=1)
  b = synthetic.generate_subject((24, 28, 32), seed=3, subject_id=1)
  c = synthetic.generate_subject((24, 28, 32), seed=3, subject_id=2)
  d = synthetic.generate_subject((24, 28, 32), seed=4, subject_id=1)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[2], c[2])  # anatomy differs between subjects
  assert not np.array_equal(a[0], d[0])


def test_skull_stripped_and_label_values(medium_subject):
  t1, t2, label = medium_subject
  assert t1.dtype == t2.dtype == np.int16 and label.dtype == np.uint8
  assert set(np.unique(label)) == set(iseg.LABEL_VALUES)
  brain = label > 0
  assert np.all(t1[~brain] == 0) and np.all(t2[~brain] == 0)
  assert np.all(t1[brain] > 0) and np.all(t2[brain] > 0)


def test_class_proportions(medium_subject):
  label = medium_subject[2]
  frac = {v: np.mean(label == v) for v in iseg.LABEL_VALUES}
  # Real iSeg-2017: about 87 % background, 3 % CSF, 6 % GM, 4 % WM.
  assert 0.84 < frac[0] < 0.90
  assert 0.02 < frac[10] < 0.045
  assert 0.045 < frac[150] < 0.075
  assert 0.03 < frac[250] < 0.06


def test_isointense_contrast(medium_subject):
  t1, t2, label = medium_subject
  mean = {(m, v): img[label == v].mean() for m, img in (("T1", t1), ("T2", t2))
          for v in (10, 150, 250)}
  # T1: CSF dark, GM and WM within 15 % of each other.
  assert mean["T1", 10] < 0.5 * mean["T1", 150]
  assert abs(mean["T1", 250] - mean["T1", 150]) < 0.15 * mean["T1", 150]
  # T2: CSF bright, WM above GM.
  assert mean["T2", 10] > 1.5 * mean["T2", 250] > 1.5 * mean["T2", 150]
  assert mean["T2", 250] > 1.05 * mean["T2", 150]


def test_no_single_threshold_separates_gm_and_wm(medium_subject):
  """The bias field and noise make GM vs WM impossible with one global threshold."""
  t1, t2, label = medium_subject
  gm, wm = label == 150, label == 250
  for img in (t1, t2):
    values = np.sort(np.unique(img[gm | wm]))[::50]
    # Fraction of GM+WM voxels misclassified by the best threshold (either polarity).
    errors = [min(np.sum(img[gm] >= v) + np.sum(img[wm] < v),
                  np.sum(img[gm] < v) + np.sum(img[wm] >= v)) for v in values]
    assert min(errors) / np.sum(gm | wm) > 0.10


def test_write_refuses_non_empty_and_cleans_up(tmp_path, monkeypatch):
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "x").write_text("x")
  with pytest.raises(FileExistsError, match="not an empty folder"):
    synthetic.write_iseg_layout(tmp_path / "full", shape=(12, 12, 12), num_train=1)

  real = synthetic.generate_subject

  def fail_on_second(shape, *, seed, subject_id):
    if subject_id == 2:
      raise RuntimeError("interrupted")
    return real(shape, seed=seed, subject_id=subject_id)

  monkeypatch.setattr(synthetic, "generate_subject", fail_on_second)
  with pytest.raises(RuntimeError, match="interrupted"):
    synthetic.write_iseg_layout(tmp_path / "new", shape=(12, 12, 12), num_train=3)
  assert sorted(os.listdir(tmp_path)) == ["full"]  # no partial folder, no temporary folder
