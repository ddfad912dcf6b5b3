"""Tests for the iseg2019 builder on dummy_data/ (plain pytest: no TensorFlow needed)."""

import os
import pathlib
import shutil

import nibabel as nib
import numpy as np
import pytest
import tensorflow_datasets as tfds

from datasets_tfds.iseg2019 import iseg2019_dataset_builder as iseg2019

DUMMY = pathlib.Path(__file__).parent / "dummy_data"
FOLDERS = {1: "iSeg-2019-Training", 2: "iSeg-2019-Training", 11: "iSeg-2019-Validation",
           24: "iSeg-2019-Testing"}


def _prepare(data_dir, manual_dir=DUMMY):
  builder = iseg2019.Builder(data_dir=os.fspath(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  return builder


def _read(path):
  """The voxels of an Analyze file as nibabel reads them (iSeg's trailing axis of 1 dropped)."""
  data = np.asanyarray(nib.load(os.fspath(path)).dataobj)
  return data.reshape(data.shape[:3])


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
  return _prepare(tmp_path_factory.mktemp("iseg2019"))


def test_reads_back_the_files(builder):
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  splits = {k: v.num_examples for k, v in builder.info.splits.items()}
  assert splits == {"train": 2, "test": 2}
  seen = {}
  for split in ("train", "test"):
    source = builder.as_data_source(split)
    for i in range(len(source)):
      ex = source[i]
      case_id = ex["case_id"].decode()
      sid = int(case_id.split("-")[1])
      seen[sid] = split
      folder = DUMMY / FOLDERS[sid]
      t1 = nib.load(os.fspath(folder / f"subject-{sid}-T1.hdr"))
      assert ex["image"].dtype == np.float32 and ex["image"].shape == (8, 10, 12, 2)
      np.testing.assert_array_equal(ex["image"][..., 0], _read(folder / f"subject-{sid}-T1.hdr"))
      np.testing.assert_array_equal(ex["image"][..., 1], _read(folder / f"subject-{sid}-T2.hdr"))
      np.testing.assert_array_equal(ex["affine"], t1.affine)
      np.testing.assert_array_equal(ex["spacing"], t1.header.get_zooms()[:3])
      if split == "test":
        assert not ex["has_label"] and ex["label"].shape == (0, 0, 0)
      else:
        assert ex["has_label"] and ex["label"].dtype == np.uint8
        values = _read(folder / f"subject-{sid}-label.hdr")
        np.testing.assert_array_equal(ex["label"], np.searchsorted([0, 10, 150, 250], values))
        assert sorted(np.unique(ex["label"])) == [0, 1, 2, 3]
  assert seen == {1: "train", 2: "train", 11: "test", 24: "test"}


def test_metadata(builder):
  meta = tfds.builder_from_directory(os.fspath(builder.data_path)).info.metadata
  assert dict(meta) == {"channel_names": ["T1", "T2"],
                        "class_names": ["background", "CSF", "GM", "WM"],
                        "label_values": [0, 10, 150, 250]}


def test_missing_channel_file(tmp_path):
  root = tmp_path / "manual"
  shutil.copytree(DUMMY, root)
  os.remove(root / "iSeg-2019-Training" / "subject-2-T2.img")
  with pytest.raises(FileNotFoundError, match=r"iSeg-2019-Training/subject-2-T2\.img: missing"):
    _prepare(tmp_path / "data", root)
  assert not list((tmp_path / "data").rglob("*.array_record*"))
