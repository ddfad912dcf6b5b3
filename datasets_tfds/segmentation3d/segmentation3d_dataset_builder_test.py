"""Tests for the segmentation3d builder on dummy_data/ (plain pytest: no TensorFlow needed).

`tfds.testing.DatasetBuilderTestCase` needs TensorFlow (it reads through `as_dataset`/tf.data),
which the medjax install does not have, so these tests use the TFDS Python API and
`as_data_source` instead. Expected values come from nibabel reading the dummy files directly.
"""

import json
import os
import pathlib
import shutil

import nibabel as nib
import numpy as np
import pytest
import tensorflow_datasets as tfds

from datasets_tfds.segmentation3d import segmentation3d_dataset_builder as segmentation3d
from medjax.data import layouts

DUMMY = pathlib.Path(__file__).parent / "dummy_data"
NNUNET = DUMMY / "nnunet" / "Dataset001_Dummy"
DECATHLON = DUMMY / "decathlon" / "Task01_Dummy"

EXPECTED_METADATA = {
    "nnunet": {"channel_names": ["T1", "T2"], "class_names": ["background", "CSF", "GM", "WM"],
               "label_values": [0, 1, 2, 3], "layout": "nnunet", "name": "Dummy",
               "file_ending": ".nii.gz"},
    "decathlon": {"channel_names": ["FLAIR", "T1w", "T2w"],
                  "class_names": ["background", "edema", "tumour"], "label_values": [0, 1, 2],
                  "layout": "decathlon", "name": "DUMMY", "file_ending": ".nii.gz"},
}
CASES = {
    "nnunet": {"train": ["dummy_001", "dummy_002", "dummy_003"], "test": ["dummy_101"]},
    "decathlon": {"train": ["DUMMY_001", "DUMMY_002", "DUMMY_003"], "test": ["DUMMY_101"]},
}


def _prepare(config, data_dir, manual_dir, **kwargs):
  builder = segmentation3d.Builder(config=config, data_dir=os.fspath(data_dir), **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  return builder


def _records(builder, split):
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


def _nib(path):
  img = nib.load(str(path))
  return np.asanyarray(img.dataobj), img.affine, [float(z) for z in img.header.get_zooms()[:3]]


def _disk(layout, case_id, split):
  """(image [D, H, W, C], label or None, affine, spacing) read directly with nibabel."""
  if layout == "nnunet":
    folder = NNUNET / ("imagesTr" if split == "train" else "imagesTs")
    channels = [_nib(folder / f"{case_id}_{c:04d}.nii.gz") for c in range(2)]
    image = np.stack([c[0] for c in channels], axis=-1)
    _, affine, spacing = channels[0]
    label_path = NNUNET / "labelsTr" / f"{case_id}.nii.gz"
  else:
    folder = DECATHLON / ("imagesTr" if split == "train" else "imagesTs")
    image, affine, spacing = _nib(folder / f"{case_id}.nii.gz")
    label_path = DECATHLON / "labelsTr" / f"{case_id}.nii.gz"
  label = _nib(label_path)[0] if split == "train" else None
  return image, label, affine, spacing


@pytest.fixture(scope="module")
def builders(tmp_path_factory):
  # The decathlon build uses a config named after its dataset, as medjax does.
  return {
      "nnunet": _prepare("default", tmp_path_factory.mktemp("nnunet"), NNUNET),
      "decathlon": _prepare(segmentation3d.Segmentation3dConfig(name="task01_dummy"),
                            tmp_path_factory.mktemp("decathlon"), DECATHLON),
  }


@pytest.mark.parametrize("layout", ["nnunet", "decathlon"])
def test_reads_back_exact_arrays(builders, layout):
  builder = builders[layout]
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  splits = {k: v.num_examples for k, v in builder.info.splits.items()}
  assert splits == {"train": 3, "test": 1}
  for split in ("train", "test"):
    seen = []
    for ex in _records(builder, split):
      case_id = ex["case_id"].decode()
      seen.append(case_id)
      image, label, affine, spacing = _disk(layout, case_id, split)
      assert ex["image"].dtype == np.float32 and ex["image"].shape == image.shape
      assert image.shape[-1] == len(EXPECTED_METADATA[layout]["channel_names"])
      np.testing.assert_array_equal(ex["image"], image.astype(np.float32))
      assert ex["affine"].dtype == np.float64
      np.testing.assert_array_equal(ex["affine"], affine)  # float64, exact
      np.testing.assert_array_equal(ex["spacing"], spacing)
      if label is None:
        assert not ex["has_label"] and ex["label"].shape == (0, 0, 0)
      else:
        assert ex["has_label"] and ex["label"].dtype == np.uint8
        np.testing.assert_array_equal(ex["label"], label)  # dummy values are the class ids
    assert sorted(seen) == CASES[layout][split]


@pytest.mark.parametrize("layout", ["nnunet", "decathlon"])
def test_metadata_round_trip(builders, layout):
  builder = builders[layout]
  assert dict(builder.info.metadata) == EXPECTED_METADATA[layout]
  path = pathlib.Path(builder.data_dir)
  assert json.loads((path / "metadata.json").read_text()) == EXPECTED_METADATA[layout]
  # Without the builder class: what a reader (training, prediction) does.
  reread = tfds.builder_from_directory(os.fspath(path))
  assert dict(reread.info.metadata) == EXPECTED_METADATA[layout]
  assert sorted(r["case_id"].decode() for r in _records(reread, "test")) == (
      CASES[layout]["test"])
  # The builder class reopening an existing build.
  again = segmentation3d.Builder(config=builder.builder_config,
                                 data_dir=os.fspath(path.parent.parent.parent))
  assert again.data_dir == builder.data_dir
  assert dict(again.info.metadata) == EXPECTED_METADATA[layout]


def test_example_keys_are_case_ids():
  builder = segmentation3d.Builder(config="default", data_dir="/nonexistent")
  description = layouts.read_dataset(NNUNET)
  keys = [k for k, _ in builder._generate_examples(description, description.training, "train")]
  assert keys == ["dummy_001", "dummy_002", "dummy_003"]


def test_registered(tmp_path):
  builder = tfds.builder("segmentation3d", data_dir=os.fspath(tmp_path))
  assert isinstance(builder, segmentation3d.Builder)
  assert builder.builder_config.name == "default"
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  assert "nnU-Net" in builder.MANUAL_DOWNLOAD_INSTRUCTIONS
  assert "Decathlon" in builder.MANUAL_DOWNLOAD_INSTRUCTIONS
  assert "Antonelli" in builder.info.citation and "Isensee" in builder.info.citation


def test_explicit_file_format_is_kept(tmp_path):
  builder = segmentation3d.Builder(config="default", data_dir=os.fspath(tmp_path),
                                   file_format="tfrecord")
  assert builder.info.file_format == tfds.core.FileFormat.TFRECORD


def _leftovers(data_dir):
  """What a failed build left of the dataset (TFDS's own `.config/` of the builder class aside)."""
  return sorted(p.name for p in pathlib.Path(data_dir).rglob("*")
                if p.name.startswith("incomplete") or p.name == "1.0.0" or
                p.name.endswith(".json") and ".config" not in p.parts or "array_record" in p.name)


def test_missing_channel_file_clear_error_and_nothing_left(tmp_path):
  manual = tmp_path / "Dataset001_Dummy"
  shutil.copytree(NNUNET, manual)
  os.remove(manual / "imagesTr" / "dummy_002_0001.nii.gz")
  with pytest.raises(FileNotFoundError, match=r"imagesTr/dummy_002_0001\.nii\.gz: missing"):
    _prepare("default", tmp_path / "data", manual)
  assert _leftovers(tmp_path / "data") == []


def test_bad_label_value_while_writing_leaves_nothing(tmp_path):
  """A value error found while writing (after the folder checks passed)."""
  manual = tmp_path / "Task01_Dummy"
  shutil.copytree(DECATHLON, manual)
  path = manual / "labelsTr" / "DUMMY_003.nii.gz"
  img = nib.load(str(path))
  data = np.asanyarray(img.dataobj).copy()
  data[1, 2, 3] = 9
  nib.save(nib.Nifti1Image(data, img.affine), str(path))
  with pytest.raises(ValueError, match=r"DUMMY_003\.nii\.gz: label values \[9\] are not declared"):
    _prepare("default", tmp_path / "data", manual)
  assert _leftovers(tmp_path / "data") == []


def test_tfds_features_to_example_and_metadata_checks():
  from medjax.data import tfds_features  # pylint: disable=g-import-not-at-top
  case = layouts.load_case(layouts.read_dataset(NNUNET).test[0], num_channels=2)
  ex = tfds_features.to_example(case)
  assert ex["label"].shape == (0, 0, 0) and not ex["has_label"]
  assert ex["case_id"] == "dummy_101" and ex["affine"].dtype == np.float64
  assert set(tfds_features.features().encode_example(ex)) == set(tfds_features.features())
  with pytest.raises(ValueError, match="one distinct value per class"):
    tfds_features.metadata(["CT"], ["background", "liver"], [0])
  assert tfds_features.metadata(["CT"], ["background", "liver"], (0, 1), layout="nnunet") == {
      "channel_names": ["CT"], "class_names": ["background", "liver"], "label_values": [0, 1],
      "layout": "nnunet"}
  bad = layouts.Case("x", case.image, np.zeros((1, 1, 1), np.uint8), case.affine, case.spacing)
  with pytest.raises(ValueError, match="case x: label shape"):
    tfds_features.to_example(bad)


def test_medjax_build_of_an_empty_folder_is_one_clear_error(tmp_path):
  # TFDS alone would fail with an AssertionError and its manual download instructions.
  from medjax.data import build  # pylint: disable=g-import-not-at-top
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match=r"manual_dir .*empty is empty; expected the "
                                              r"segmentation3d download"):
    build.build("segmentation3d", manual_dir=tmp_path / "empty", data_dir=tmp_path / "data",
                config="default")
  assert not list((tmp_path / "data").rglob("*"))
