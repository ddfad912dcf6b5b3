"""Tests for the iseg2017 builder on dummy_data/ (plain pytest: no TensorFlow needed).

`tfds.testing.DatasetBuilderTestCase` needs TensorFlow (it reads through `as_dataset`/tf.data),
which the medjax install does not have, so these tests use the TFDS Python API and
`as_data_source` instead.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from datasets_tfds.iseg2017 import iseg2017_dataset_builder as iseg2017
from medjax import io
from medjax.data import build
from medjax.data import iseg
from medjax.data import normalize

DUMMY = pathlib.Path(__file__).parent / "dummy_data"
SUBVOLUMES_16 = iseg2017.subvolumes_config(
    "test_subvolumes_16", (16, 16, 16), train_samples_per_subject=3,
    validation_samples_per_subject=2, threshold=0.1, seed=7)


def _prepare(config, data_dir, manual_dir=DUMMY, **kwargs):
  builder = iseg2017.Builder(config=config, data_dir=os.fspath(data_dir), **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  return builder


def _records(builder, split):
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


def _disk(sid):
  """What the dummy files hold for one subject, read directly with medjax.io."""
  folder = DUMMY / (iseg.TRAINING_FOLDER if sid <= 3 else iseg.TESTING_FOLDER)
  t1 = io.load_image(folder / f"subject-{sid}-T1.hdr")
  t2 = io.load_image(folder / f"subject-{sid}-T2.hdr")
  label = None
  if sid <= 3:
    label = io.load_image(folder / f"subject-{sid}-label.hdr").data
    label = np.searchsorted(iseg.LABEL_VALUES, label).astype(np.uint8)
  return t1, t2, label


@pytest.fixture(scope="module")
def full_builder(tmp_path_factory):
  return _prepare("full", tmp_path_factory.mktemp("full"))


@pytest.fixture(scope="module")
def subvolume_builder(tmp_path_factory):
  return _prepare(SUBVOLUMES_16, tmp_path_factory.mktemp("sub"))


def test_full_config_reads_back_exact_arrays(full_builder):
  assert full_builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  splits = {k: v.num_examples for k, v in full_builder.info.splits.items()}
  assert splits == {"train": 2, "validation": 1, "test": 1}
  seen = {}
  for split in ("train", "validation", "test"):
    for ex in _records(full_builder, split):
      sid = int(ex["subject_id"])
      seen[sid] = split
      t1, t2, label = _disk(sid)
      assert ex["t1"].dtype == np.float32 and ex["label"].dtype == np.uint8
      np.testing.assert_array_equal(ex["t1"], t1.data.astype(np.float32))
      np.testing.assert_array_equal(ex["t2"], t2.data.astype(np.float32))
      np.testing.assert_array_equal(ex["affine"], t1.affine.astype(np.float32))
      np.testing.assert_array_equal(ex["spacing"], [1, 1, 1])
      if label is None:
        assert not ex["has_label"] and ex["label"].shape == (0, 0, 0)
      else:
        assert ex["has_label"]
        np.testing.assert_array_equal(ex["label"], label)
  assert seen == {1: "validation", 2: "train", 3: "train", 11: "test"}


def test_subvolumes_config(subvolume_builder):
  splits = {k: v.num_examples for k, v in subvolume_builder.info.splits.items()}
  assert splits == {"train": 6, "validation": 2}  # no test split: it has no labels to crop by
  for split, subjects in (("train", {2, 3}), ("validation", {1})):
    records = _records(subvolume_builder, split)
    assert {int(r["subject_id"]) for r in records} == subjects  # subject 1 never in train
    for ex in records:
      sid, (d, h, w) = int(ex["subject_id"]), ex["crop_start"]
      t1, t2, label = _disk(sid)
      window = (slice(d, d + 16), slice(h, h + 16), slice(w, w + 16))
      np.testing.assert_array_equal(ex["t1"], t1.data[window])
      np.testing.assert_array_equal(ex["t2"], t2.data[window])
      np.testing.assert_array_equal(ex["label"], label[window])
      # The crop's affine maps its voxel 0 to the subject's voxel (d, h, w).
      np.testing.assert_allclose(ex["affine"][:, 3], t1.affine @ [d, h, w, 1], atol=1e-5)
      np.testing.assert_allclose(ex["t1_stats"], normalize.volume_stats(t1.data), rtol=1e-12)
      np.testing.assert_allclose(ex["t2_stats"], normalize.volume_stats(t2.data), rtol=1e-12)
      # MedicalZoo's rule: the crop holds >= 10 % of the subject's foreground.
      assert np.count_nonzero(ex["label"]) >= 0.1 * np.count_nonzero(label)


def test_subvolumes_reproducible(subvolume_builder, tmp_path):
  again = _prepare(SUBVOLUMES_16, tmp_path)
  key = lambda ex: (int(ex["subject_id"]), tuple(ex["crop_start"]), ex["t1"].tobytes())
  for split in ("train", "validation"):
    assert (sorted(map(key, _records(subvolume_builder, split))) ==
            sorted(map(key, _records(again, split))))
  other_seed = iseg2017.subvolumes_config(
      "test_subvolumes_16_seed8", (16, 16, 16), train_samples_per_subject=3,
      validation_samples_per_subject=2, threshold=0.1, seed=8)
  other = _prepare(other_seed, tmp_path / "other")
  starts = lambda b: sorted((int(e["subject_id"]), tuple(e["crop_start"]))
                            for e in _records(b, "train"))
  assert starts(other) != starts(subvolume_builder)


def test_registered_configs():
  configs = {c.name: c for c in iseg2017.Builder.BUILDER_CONFIGS}
  assert configs["full"].crop_size is None
  assert configs["subvolumes"].crop_size == (64, 64, 64)
  assert configs["subvolumes_128x128x64"].crop_size == (128, 128, 64)
  assert all(c.validation_subjects == (1,) for c in configs.values())


def test_explicit_file_format_is_kept(tmp_path):
  builder = iseg2017.Builder(config="full", data_dir=os.fspath(tmp_path), file_format="tfrecord")
  assert builder.info.file_format == tfds.core.FileFormat.TFRECORD


def _corrupt(root, case):
  train = root / iseg.TRAINING_FOLDER
  if case == "missing_img":
    os.remove(train / "subject-2-T2.img")
    return "subject-2-T2.img"
  if case == "extra_file":
    shutil.copy(train / "subject-2-T2.hdr", train / "subject-2-T2 (1).hdr")
    return "subject-2-T2 (1).hdr"
  if case == "label_values":
    label = io.load_image(train / "subject-3-label.hdr")
    data = label.data.copy()
    data[0, 0, 0] = 7
    io.save_image(train / "subject-3-label.hdr", data[..., None], label.affine)
    return "subject-3-label.hdr"
  if case == "shape":
    t2 = io.load_image(train / "subject-3-T2.hdr")
    io.save_image(train / "subject-3-T2.hdr", t2.data[:-1, ..., None], t2.affine)
    return "subject-3-T2.hdr"
  if case == "affine":
    t2 = io.load_image(train / "subject-3-T2.hdr")
    io.save_image(train / "subject-3-T2.hdr", t2.data[..., None], np.diag([2.0, 2, 2, 1]))
    return "subject-3-T2.hdr"
  if case == "non_finite":
    t1 = io.load_image(train / "subject-3-T1.hdr")
    data = t1.data.astype(np.float32)
    data[3, 3, 3] = np.inf
    io.save_image(train / "subject-3-T1.hdr", data[..., None], t1.affine)
    return "subject-3-T1.hdr"
  if case == "unreadable":
    (train / "subject-3-label.hdr").write_bytes(b"not an image")
    return "subject-3-label.hdr"
  if case == "empty_dir":
    shutil.rmtree(root)
    root.mkdir()
    return "holds no iSeg-2017 files"
  if case == "wrong_dir":
    shutil.rmtree(root)
    return "does not exist"
  raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing_img", "extra_file", "label_values", "shape", "affine",
                                  "non_finite", "unreadable", "empty_dir", "wrong_dir"])
def test_bad_input_clear_error_and_nothing_left(tmp_path, case):
  root = tmp_path / "manual"
  shutil.copytree(DUMMY, root)
  expected = _corrupt(root, case)
  data_dir = tmp_path / "data"
  with pytest.raises((ValueError, FileNotFoundError)) as e:
    build.build_iseg2017(manual_dir=root, data_dir=data_dir, config_name="full")
  assert expected in str(e.value)
  assert not build.is_built(data_dir, "full")
  leftovers = [p for p in data_dir.rglob("*")] if data_dir.exists() else []
  assert leftovers == []


def test_tfds_api_failure_leaves_no_incomplete_dir(tmp_path):
  """The path `tfds build` takes: TFDS itself removes its incomplete folder on failure."""
  root = tmp_path / "manual"
  shutil.copytree(DUMMY, root)
  _corrupt(root, "label_values")
  with pytest.raises(ValueError, match="subject-3-label.hdr"):
    _prepare("full", tmp_path / "data", manual_dir=root)
  assert not list((tmp_path / "data").rglob("*.array_record*"))
  assert not list((tmp_path / "data").rglob("incomplete*"))


def test_build_cli_with_builtin_data(tmp_path):
  """`python -m medjax.data.build` writes built-in data when asked, then builds both configs."""
  cmd = [sys.executable, "-m", "medjax.data.build", f"--manual_dir={tmp_path / 'raw'}",
         f"--data_dir={tmp_path / 'data'}", "--config=full", "--builtin_data",
         "--builtin_shape=16,16,16", "--builtin_num_train=2"]
  out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "iseg2017/full" in out.stdout and "train=1" in out.stdout
  assert sorted(iseg.find_subjects(tmp_path / "raw")) == [1, 2]
  assert build.is_built(tmp_path / "data", "full")
