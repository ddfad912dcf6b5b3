"""Tests for the brats builder (configs 2018, 2019, 2020) on dummy_data/ (plain pytest)."""

import os
import pathlib
import shutil

import nibabel as nib
import numpy as np
import pytest
import tensorflow_datasets as tfds

from datasets_tfds.brats import brats_dataset_builder as brats

DUMMY = pathlib.Path(__file__).parent / "dummy_data"
CHANNELS = ("t1", "t1ce", "t2", "flair")
# Where the dummy cases live, per config: case id -> folder.
CASES = {
    "2018": {"Brats18_2013_2_1": "MICCAI_BraTS_2018_Data_Training/HGG",
             "Brats18_CBICA_AAB_1": "MICCAI_BraTS_2018_Data_Training/HGG",
             "Brats18_2013_0_1": "MICCAI_BraTS_2018_Data_Training/LGG",
             "Brats18_CBICA_AAM_1": "MICCAI_BraTS_2018_Data_Validation"},
    "2019": {"BraTS19_2013_2_1": "MICCAI_BraTS_2019_Data_Training/HGG",
             "BraTS19_2013_0_1": "MICCAI_BraTS_2019_Data_Training/LGG",
             "BraTS19_TCIA09_402_1": "MICCAI_BraTS_2019_Data_Training/LGG",
             "BraTS19_CBICA_AAM_1": "MICCAI_BraTS_2019_Data_Validation"},
    "2020": {"BraTS20_Training_001": "MICCAI_BraTS2020_TrainingData",
             "BraTS20_Training_002": "MICCAI_BraTS2020_TrainingData",
             "BraTS20_Training_355": "MICCAI_BraTS2020_TrainingData",
             "BraTS20_Validation_001": "MICCAI_BraTS2020_ValidationData"},
}
GRADES = {
    "2018": {"Brats18_2013_0_1": "LGG", "Brats18_2013_2_1": "HGG", "Brats18_CBICA_AAB_1": "HGG"},
    "2019": {"BraTS19_2013_0_1": "LGG", "BraTS19_2013_2_1": "HGG",
             "BraTS19_TCIA09_402_1": "LGG"},
    "2020": {"BraTS20_Training_001": "HGG", "BraTS20_Training_002": "HGG",
             "BraTS20_Training_355": "LGG"},
}


def _prepare(config, data_dir, manual_dir=DUMMY):
  builder = brats.Builder(config=config, data_dir=os.fspath(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  return builder


@pytest.fixture(scope="module", params=["2018", "2019", "2020"])
def built(request, tmp_path_factory):
  return request.param, _prepare(request.param, tmp_path_factory.mktemp(request.param))


def test_reads_back_the_files(built):
  config, builder = built
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 3, "test": 1}
  seen = {}
  for split in ("train", "test"):
    source = builder.as_data_source(split)
    for i in range(len(source)):
      ex = source[i]
      case = ex["case_id"].decode()
      seen[case] = split
      folder = DUMMY / CASES[config][case] / case
      t1 = nib.load(folder / f"{case}_t1.nii.gz")
      assert ex["image"].dtype == np.float32 and ex["image"].shape == (8, 10, 12, 4)
      for c, mod in enumerate(CHANNELS):
        np.testing.assert_array_equal(ex["image"][..., c],
                                      nib.load(folder / f"{case}_{mod}.nii.gz").get_fdata())
      np.testing.assert_array_equal(ex["affine"], t1.affine)
      np.testing.assert_array_equal(ex["spacing"], [1, 1, 1])
      if split == "test":
        assert not ex["has_label"] and ex["label"].shape == (0, 0, 0)
        continue
      seg_name = ("W39_1998.09.19_Segm.nii" if case == "BraTS20_Training_355"
                  else f"{case}_seg.nii.gz")
      seg = np.asanyarray(nib.load(folder / seg_name).dataobj)
      assert ex["has_label"] and ex["label"].dtype == np.uint8
      # On-disk 0 / 1 / 2 / 4 -> class ids 0 / 1 / 2 / 3.
      np.testing.assert_array_equal(ex["label"], np.searchsorted([0, 1, 2, 4], seg))
      assert sorted(np.unique(ex["label"])) == [0, 1, 2, 3]
  assert set(seen) == set(CASES[config])
  assert [c for c, s in seen.items() if s == "test"] == [
      c for c, f in CASES[config].items() if "Validation" in f]


def test_metadata(built):
  config, builder = built
  meta = tfds.builder_from_directory(os.fspath(builder.data_path)).info.metadata
  assert meta["channel_names"] == list(CHANNELS)
  assert meta["class_names"] == ["background", "NCR_NET", "ED", "ET"]
  assert meta["label_values"] == [0, 1, 2, 4]
  assert meta["regions"] == {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
  assert meta["year"] == int(config)
  assert meta["grades"] == GRADES[config]


def test_configs():
  assert [c.name for c in brats.Builder.BUILDER_CONFIGS] == ["2018", "2019", "2020"]
  assert brats.Builder.default_builder_config.name == "2020"
  assert [c.year for c in brats.Builder.BUILDER_CONFIGS] == [2018, 2019, 2020]


@pytest.mark.parametrize("config, removed", [
    ("2018", "MICCAI_BraTS_2018_Data_Training/LGG/Brats18_2013_0_1/Brats18_2013_0_1_t1ce.nii.gz"),
    ("2020", "MICCAI_BraTS2020_TrainingData/BraTS20_Training_355/W39_1998.09.19_Segm.nii"),
])
def test_missing_file(tmp_path, config, removed):
  root = tmp_path / "manual"
  shutil.copytree(DUMMY, root)
  os.remove(root / removed)
  expected = removed if removed.endswith(".nii.gz") else str(
      pathlib.Path(removed).parent / "BraTS20_Training_355_seg.nii.gz")
  with pytest.raises(FileNotFoundError, match=expected.replace(".", r"\.") + ": missing"):
    _prepare(config, tmp_path / "data", root)
  assert not list((tmp_path / "data").rglob("*.array_record*"))
