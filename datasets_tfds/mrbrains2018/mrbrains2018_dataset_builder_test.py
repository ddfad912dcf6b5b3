"""Tests for the mrbrains2018 builder on dummy_data/ (plain pytest: no TensorFlow needed)."""

import os
import pathlib
import shutil

import nibabel as nib
import numpy as np
import pytest
import tensorflow_datasets as tfds

from datasets_tfds.mrbrains2018 import mrbrains2018_dataset_builder as mrbrains2018

DUMMY = pathlib.Path(__file__).parent / "dummy_data"
# Channel order T1, T1-IR, FLAIR: the registered files of `pre/`.
CHANNEL_FILES = ("pre/reg_T1.nii.gz", "pre/reg_IR.nii.gz", "pre/FLAIR.nii.gz")


def _prepare(data_dir, manual_dir=DUMMY):
  builder = mrbrains2018.Builder(data_dir=os.fspath(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  return builder


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
  return _prepare(tmp_path_factory.mktemp("mrbrains2018"))


def test_reads_back_the_files(builder):
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 3}
  source = builder.as_data_source("train")
  seen = set()
  for i in range(len(source)):
    ex = source[i]
    subject = DUMMY / "training" / ex["case_id"].decode()
    seen.add(subject.name)
    assert ex["image"].dtype == np.float32 and ex["image"].shape == (8, 10, 12, 3)
    for c, rel in enumerate(CHANNEL_FILES):
      np.testing.assert_array_equal(ex["image"][..., c], nib.load(subject / rel).get_fdata())
    flair = nib.load(subject / "pre" / "FLAIR.nii.gz")
    np.testing.assert_array_equal(ex["affine"], flair.affine)
    np.testing.assert_allclose(ex["spacing"], [0.958, 0.958, 3.0], rtol=1e-6)
    # Labels 0..10 are the class ids as stored.
    segm = np.asanyarray(nib.load(subject / "segm.nii.gz").dataobj)
    assert ex["has_label"] and ex["label"].dtype == np.uint8
    np.testing.assert_array_equal(ex["label"], segm)
    assert sorted(np.unique(ex["label"])) == list(range(11))
  assert seen == {"1", "070", "148"}


def test_metadata(builder):
  meta = tfds.builder_from_directory(os.fspath(builder.data_path)).info.metadata
  assert meta["channel_names"] == ["T1", "T1-IR", "FLAIR"]
  assert meta["class_names"][:4] == ["background", "cortical_GM", "basal_ganglia", "WM"]
  assert len(meta["class_names"]) == 11 and meta["label_values"] == list(range(11))
  assert meta["regions"] == {"GM": [1, 2], "WM": [3, 4], "CSF": [5, 6]}
  assert meta["ignored_classes"] == [9, 10]


def test_missing_channel_file(tmp_path):
  root = tmp_path / "manual"
  shutil.copytree(DUMMY, root)
  os.remove(root / "training" / "148" / "pre" / "reg_IR.nii.gz")
  with pytest.raises(FileNotFoundError, match=r"training/148/pre/reg_IR\.nii\.gz: missing"):
    _prepare(tmp_path / "data", root)
  assert not list((tmp_path / "data").rglob("*.array_record*"))
