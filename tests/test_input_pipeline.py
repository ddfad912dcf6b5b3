"""Tests for medjax.input_pipeline on the tiny built dataset of conftest.py."""

import copy

import numpy as np
import pytest

from datasets_tfds.iseg2017 import iseg2017_dataset_builder as iseg2017
from medjax import input_pipeline
from medjax.data import build
from medjax.data import iseg
from medjax.data import normalize

from conftest import TINY_CROP, TINY_TRAIN_SUBJECTS


@pytest.fixture(scope="module")
def raw_subjects(iseg_raw_dir):
  """Subject id -> iseg.Subject read straight from the iSeg files (independent of TFDS)."""
  return {sid: iseg.load_subject(f) for sid, f in iseg.find_subjects(iseg_raw_dir).items()}


def _sid(case_id):
  """iSeg-2017 case id 'subject-N' -> N."""
  assert str(case_id).startswith("subject-"), case_id
  return int(str(case_id)[len("subject-"):])


def _batches(config, n, **kwargs):
  ds = input_pipeline.create_train_dataset(config, **kwargs)
  return [ds[k] for k in range(n)]


def test_batch_shapes_and_types(iseg_config):
  batch = next(input_pipeline.create_train_iterator(iseg_config))
  assert set(batch) == {"image", "label"}
  assert batch["image"].shape == (2, *TINY_CROP, 2) and batch["image"].dtype == np.float32
  assert batch["label"].shape == (2, *TINY_CROP) and batch["label"].dtype == np.int32
  assert set(np.unique(batch["label"])) <= {0, 1, 2, 3}


def test_crops_are_exact_windows_of_normalised_training_subjects(iseg_config, raw_subjects):
  iseg_config.dataset.normalization = "mean"
  seen = set()
  for batch in _batches(iseg_config, 6, with_metadata=True):
    for image, label, case_id, start in zip(batch["image"], batch["label"], batch["case_id"],
                                            batch["crop_start"]):
      sid = _sid(case_id)
      seen.add(int(sid))
      subject = raw_subjects[int(sid)]
      window = tuple(slice(s, s + c) for s, c in zip(start, TINY_CROP))
      expected = normalize.normalize(subject.image, "mean")[window]
      np.testing.assert_allclose(image, expected, rtol=1e-6, atol=1e-6)
      np.testing.assert_array_equal(label, subject.label[window])
      # MedicalZoo's rule: >= 10 % of the subject's foreground inside the crop.
      assert np.count_nonzero(label) >= 0.1 * np.count_nonzero(subject.label)
  assert seen == set(TINY_TRAIN_SUBJECTS)  # the validation subject never appears


def test_each_epoch_visits_every_subject_with_fresh_crops(iseg_config):
  iseg_config.batch_size = 1
  meta = [(_sid(b["case_id"][0]), tuple(b["crop_start"][0]))
          for b in _batches(iseg_config, 8, with_metadata=True)]
  for epoch in range(4):
    assert sorted(s for s, _ in meta[2 * epoch: 2 * epoch + 2]) == list(TINY_TRAIN_SUBJECTS)
  starts = {s: {c for t, c in meta if t == s} for s in TINY_TRAIN_SUBJECTS}
  assert all(len(c) > 1 for c in starts.values())


def test_deterministic_resumable_and_seeded(iseg_config):
  first = _batches(iseg_config, 4)
  again = _batches(iseg_config, 4)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  resumed = next(input_pipeline.create_train_iterator(iseg_config, start_step=3))
  np.testing.assert_array_equal(resumed["image"], first[3]["image"])
  np.testing.assert_array_equal(resumed["label"], first[3]["label"])
  assert not np.array_equal(first[0]["image"], first[1]["image"])  # steps differ
  iseg_config.seed = 1
  other = _batches(iseg_config, 1)
  assert not np.array_equal(other[0]["image"], first[0]["image"])


def test_hosts_get_disjoint_parts_of_the_global_batch(iseg_config):
  full = _batches(iseg_config, 3, with_metadata=True)
  parts = [_batches(iseg_config, 3, with_metadata=True, process_index=p, process_count=2)
           for p in (0, 1)]
  for k in range(3):
    assert parts[0][k]["image"].shape[0] == 1
    joined = np.concatenate([parts[0][k]["image"], parts[1][k]["image"]])
    np.testing.assert_array_equal(joined, full[k]["image"])
  with pytest.raises(ValueError, match="multiple of the process count 3"):
    input_pipeline.create_train_dataset(iseg_config, process_index=0, process_count=3)


def test_crop_fraction_rule(iseg_config, raw_subjects):
  iseg_config.dataset.threshold_rule = "crop_fraction"
  iseg_config.dataset.threshold = 0.3
  for batch in _batches(iseg_config, 3):
    for label in batch["label"]:
      assert np.mean(label > 0) > 0.3


def test_crop_larger_than_the_case_is_zero_padded(iseg_config):
  # nnU-Net's rule: a case smaller than the patch is padded (image 0, label background).
  iseg_config.dataset.crop_size = (40, 16, 16)  # the tiny subjects have 24 slices
  for batch in _batches(iseg_config, 2, with_metadata=True):
    assert batch["image"].shape == (2, 40, 16, 16, 2)
    for image, label, start in zip(batch["image"], batch["label"], batch["crop_start"]):
      assert start[0] == 0
      np.testing.assert_array_equal(image[24:], 0)
      np.testing.assert_array_equal(label[24:], 0)
      assert np.any(image[:24] != 0)


def test_clear_errors(iseg_config):
  bad = copy.deepcopy(iseg_config)
  bad.dataset.threshold = 0.99
  with pytest.raises(ValueError, match=r"case subject-\d: no crop of size \(16, 16, 16\).*0\.99"):
    _batches(bad, 1)
  bad = copy.deepcopy(iseg_config)
  bad.dataset.normalization = "zscore"
  with pytest.raises(ValueError, match="normalization must be one of"):
    _batches(bad, 1)


def test_load_eval_subjects(iseg_config, raw_subjects):
  subjects = input_pipeline.load_eval_subjects(iseg_config)
  assert [s["case_id"] for s in subjects] == ["subject-1"]
  s, raw = subjects[0], raw_subjects[1]
  np.testing.assert_allclose(s["image"], normalize.normalize(raw.image, "full_volume_mean"),
                             rtol=1e-6, atol=1e-6)
  assert s["label"].dtype == np.int32
  np.testing.assert_array_equal(s["label"], raw.label)
  np.testing.assert_allclose(s["affine"], raw.affine)
  assert s["spacing"] == (1.0, 1.0, 1.0)
  test = input_pipeline.load_eval_subjects(iseg_config, split="test")
  assert [t["case_id"] for t in test] == ["subject-11"] and test[0]["label"] is None


def test_subvolumes_config_matches_normalised_volume(iseg_config, raw_subjects, tmp_path):
  config = iseg2017.subvolumes_config("test_pipeline_16", TINY_CROP, train_samples_per_subject=4,
                                      validation_samples_per_subject=1)
  build.build_iseg2017(manual_dir=iseg_config.dataset.manual_dir, data_dir=tmp_path,
                       config_name=config)
  iseg_config.dataset.data_dir = str(tmp_path)
  with iseg_config.dataset.ignore_type():  # a custom config object instead of a config name
    iseg_config.dataset.builder_config = config
  iseg_config.dataset.normalization = "brats"
  batches = _batches(iseg_config, 4, with_metadata=True)  # 8 crops = one epoch of 8 records
  seen = set()
  for batch in batches:
    for image, case_id, start in zip(batch["image"], batch["case_id"], batch["crop_start"]):
      sid = _sid(case_id)
      seen.add((sid, tuple(start)))
      window = tuple(slice(s, s + c) for s, c in zip(start, TINY_CROP))
      expected = normalize.normalize(raw_subjects[int(sid)].image, "brats")[window]
      np.testing.assert_allclose(image, expected, rtol=1e-5, atol=1e-4)
  assert {s for s, _ in seen} == set(TINY_TRAIN_SUBJECTS)
  iseg_config.dataset.crop_size = (8, 8, 8)
  with pytest.raises(ValueError, match="does not match the crops"):
    _batches(iseg_config, 1)


def test_ensure_dataset_builtin_and_missing(iseg_config, tmp_path):
  iseg_config.dataset.data_dir = str(tmp_path / "tfds")
  iseg_config.dataset.manual_dir = ""
  with pytest.raises(FileNotFoundError, match="python -m medjax.data.build --dataset=iseg2017 --manual_dir=DIR"):
    input_pipeline.ensure_dataset(iseg_config)
  iseg_config.dataset.manual_dir = str(tmp_path / "builtin")
  iseg_config.dataset.builtin_data.enabled = True
  iseg_config.dataset.builtin_data.shape = (20, 20, 20)
  iseg_config.dataset.builtin_data.num_train = 2
  builder = input_pipeline.ensure_dataset(iseg_config)
  assert sorted(iseg.find_subjects(tmp_path / "builtin")) == [1, 2]
  assert builder.info.splits["train"].num_examples == 1
  batch = next(input_pipeline.create_train_iterator(iseg_config))
  assert batch["image"].shape == (2, *TINY_CROP, 2)


def test_foreground_oversampling_centres_crops_on_foreground(iseg_config, raw_subjects):
  iseg_config.dataset.foreground_oversampling = 1.0
  iseg_config.dataset.threshold = 0.0
  batches = _batches(iseg_config, 4, with_metadata=True)
  unclipped = 0
  for batch in batches:
    for label, case_id, start in zip(batch["label"], batch["case_id"], batch["crop_start"]):
      shape = raw_subjects[_sid(case_id)].label.shape
      if all(0 < s < n - c for s, n, c in zip(start, shape, TINY_CROP)):
        unclipped += 1  # centred on the drawn voxel: index crop // 2 is foreground
        assert label[tuple(c // 2 for c in TINY_CROP)] > 0
  assert unclipped > 0
  again = _batches(iseg_config, 4, with_metadata=True)
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a["crop_start"], b["crop_start"])
