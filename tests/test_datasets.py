"""Tests for medjax.data.datasets: k-fold splits, names and cases of built datasets.

Cases are checked against what nibabel (NIfTI) and `medjax.io.load_image` (iSeg's Analyze files)
read from the raw files directly, not against the builders' own code.
"""

import json
import pathlib
import random

import nibabel as nib
import numpy as np
import pytest

from medjax import io
from medjax.data import build
from medjax.data import datasets
from medjax.data import layouts
from medjax.data import synthetic

from conftest import TINY_SHAPE, TINY_TEST_SUBJECTS, TINY_TRAIN_SUBJECTS
from conftest import TINY_VALIDATION_SUBJECTS

NUM_FOLDS = 5
NIFTI_SHAPE = (12, 14, 10)
# iSeg-2017 label values -> class ids, by hand.
ISEG_VALUE_TO_CLASS = {0: 0, 10: 1, 150: 2, 250: 3}


def _ids(n):
  ids = [f"case_{i:03d}" for i in range(n)]
  random.Random(n).shuffle(ids)  # unsorted input
  assert ids != sorted(ids)
  return ids


# ---------------------------------------------------------------------------------------------
# kfold.


@pytest.mark.parametrize("n", [10, 11])
def test_kfold_partitions_the_cases(n):
  ids = _ids(n)
  seen = []
  sizes = []
  for fold in range(NUM_FOLDS):
    train, val = datasets.kfold(ids, num_folds=NUM_FOLDS, fold=fold)
    assert train == sorted(train) and val == sorted(val)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(ids)
    seen += val
    sizes.append(len(val))
  assert sorted(seen) == sorted(ids)  # every id validates in exactly one fold
  assert max(sizes) - min(sizes) <= 1
  assert sum(sizes) == n
  # "the first n % num_folds parts are one larger"
  assert sizes == [n // NUM_FOLDS + (k < n % NUM_FOLDS) for k in range(NUM_FOLDS)]


@pytest.mark.parametrize("n", [10, 11])
def test_kfold_is_deterministic_and_order_free(n):
  ids = _ids(n)
  for fold in range(NUM_FOLDS):
    split = datasets.kfold(ids, fold=fold)
    assert datasets.kfold(ids, fold=fold) == split
    assert datasets.kfold(sorted(ids), fold=fold) == split
    assert datasets.kfold(list(reversed(ids)), fold=fold) == split
    assert datasets.kfold(tuple(ids), fold=fold) == split


def test_kfold_seed_changes_the_split():
  ids = _ids(11)
  default = [datasets.kfold(ids, fold=k)[1] for k in range(NUM_FOLDS)]
  other = [datasets.kfold(ids, fold=k, seed=1)[1] for k in range(NUM_FOLDS)]
  assert default != other


def _nnunet_validation_fold(ids, fold, seed=12345, n_splits=5):
  """nnU-Net v2's fold: `nnUNetTrainer.do_split` sorts the case ids and calls
  `generate_crossval_split(all_keys_sorted, seed=12345, n_splits=5)`, i.e. scikit-learn's
  `KFold(n_splits, shuffle=True, random_state=seed)`: `RandomState(seed).shuffle(arange(n))`,
  then contiguous test folds whose first `n % n_splits` are one larger."""
  keys = sorted(ids)
  order = np.arange(len(keys))
  np.random.RandomState(seed).shuffle(order)
  sizes = np.full(n_splits, len(keys) // n_splits)
  sizes[:len(keys) % n_splits] += 1
  start = int(sizes[:fold].sum())
  return sorted(keys[i] for i in order[start:start + sizes[fold]])


@pytest.mark.parametrize("n", [10, 11])
def test_kfold_matches_nnunet_splits(n):
  ids = _ids(n)
  for fold in range(NUM_FOLDS):
    assert datasets.kfold(ids, fold=fold)[1] == _nnunet_validation_fold(ids, fold)


@pytest.mark.parametrize("kwargs, match", [
    (dict(fold=5), r"config.dataset.fold=5: expected 0..4"),
    (dict(fold=-1), r"config.dataset.fold=-1"),
    (dict(num_folds=1), r"num_folds=1: expected at least 2"),
    (dict(num_folds=0), r"num_folds=0"),
    (dict(num_folds=11), r"10 training cases cannot make 11 folds"),
])
def test_kfold_bad_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    datasets.kfold(_ids(10), **kwargs)


def test_kfold_fewer_cases_than_folds_raises():
  with pytest.raises(ValueError, match="4 training cases cannot make 5 folds"):
    datasets.kfold(["a", "b", "c", "d"])


def test_kfold_duplicate_ids_raise():
  with pytest.raises(ValueError, match=r"case ids repeat: \['b'\]"):
    datasets.kfold(["a", "b", "c", "b", "d", "e"])


# ---------------------------------------------------------------------------------------------
# A built `segmentation3d` dataset (nnU-Net v2 layout, LPS files, 3 channels).


@pytest.fixture(scope="module")
def nnunet_raw(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp("nnunet_raw") / "Dataset001_BuiltinBrain"
  return synthetic.write_nnunet_layout(root, shape=NIFTI_SHAPE, num_train=3, num_test=1,
                                       spacing=(1, 1, 2), axcodes="LPS", num_channels=3)


@pytest.fixture(scope="module")
def nnunet_builder(nnunet_raw, tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds_segmentation3d")
  return build.build("segmentation3d", manual_dir=nnunet_raw, data_dir=data_dir)


def test_names_are_those_of_dataset_json(nnunet_raw, nnunet_builder):
  spec = json.loads((nnunet_raw / "dataset.json").read_text())
  channels = tuple(spec["channel_names"][k] for k in sorted(spec["channel_names"], key=int))
  labels = sorted(spec["labels"].items(), key=lambda kv: kv[1])
  names = datasets.names(nnunet_builder)
  assert isinstance(names, datasets.DatasetNames)
  assert names.channel_names == channels == ("T1", "T2", "FLAIR")
  assert names.class_names == tuple(k for k, _ in labels) == ("background", "CSF", "GM", "WM")
  assert names.label_values == tuple(v for _, v in labels) == (0, 1, 2, 3)


def test_case_ids_are_the_file_names(nnunet_raw, nnunet_builder):
  train = datasets.case_ids(nnunet_builder, "train")
  labels = sorted(p.name[:-len(".nii.gz")] for p in (nnunet_raw / "labelsTr").iterdir())
  images = sorted({p.name[:-len("_0000.nii.gz")] for p in (nnunet_raw / "imagesTr").iterdir()})
  assert len(train) == 3
  assert sorted(train) == labels == images == ["brain_001", "brain_002", "brain_003"]
  assert datasets.case_ids(nnunet_builder, "test") == ["brain_011"]


def _nifti_case(folder, case_id, num_channels=3):
  files = [nib.load(folder / f"{case_id}_{c:04d}.nii.gz") for c in range(num_channels)]
  image = np.stack([np.asanyarray(f.dataobj) for f in files], axis=-1)
  return image, files[0].affine, tuple(float(z) for z in files[0].header.get_zooms())


@pytest.mark.parametrize("split", ["train", "test"])
def test_cases_equal_the_nifti_files(nnunet_raw, nnunet_builder, split):
  cases = datasets.Cases(nnunet_builder, split)
  ids = datasets.case_ids(nnunet_builder, split)
  assert len(cases) == len(ids) == {"train": 3, "test": 1}[split]
  folder = nnunet_raw / ("imagesTr" if split == "train" else "imagesTs")
  for i, case in enumerate(cases):
    assert isinstance(case, layouts.Case)
    assert case.case_id == ids[i]
    image, affine, zooms = _nifti_case(folder, case.case_id)
    assert case.image.shape == NIFTI_SHAPE + (3,) and case.image.dtype == np.float32
    np.testing.assert_array_equal(case.image, image.astype(np.float32))
    assert case.affine.dtype == np.float64
    np.testing.assert_array_equal(case.affine, affine)
    assert nib.aff2axcodes(case.affine) == ("L", "P", "S")
    assert case.spacing == pytest.approx(zooms) and case.spacing == pytest.approx((1, 1, 2))
    if split == "train":
      label = np.asanyarray(nib.load(nnunet_raw / "labelsTr" / f"{case.case_id}.nii.gz").dataobj)
      assert case.label.dtype == np.uint8
      np.testing.assert_array_equal(case.label, label)
    else:
      assert case.label is None


def test_cases_subset_of_records(nnunet_builder):
  ids = datasets.case_ids(nnunet_builder, "train")
  subset = datasets.Cases(nnunet_builder, "train", records=[2, 0])
  assert len(subset) == 2 and subset.records == (2, 0)
  assert [c.case_id for c in subset] == [ids[2], ids[0]]


def test_cases_unknown_split_raises(nnunet_builder):
  with pytest.raises(ValueError, match="split 'validation' is not in segmentation3d"):
    datasets.Cases(nnunet_builder, "validation")


# ---------------------------------------------------------------------------------------------
# The iSeg-2017 builder (its own schema) read into the same Cases.


@pytest.fixture(scope="module")
def iseg_builder(iseg_data_dir):
  return build.open_builder("iseg2017", iseg_data_dir, "full")


def test_iseg_names(iseg_builder):
  names = datasets.names(iseg_builder)
  assert names.channel_names == ("T1", "T2")
  assert names.class_names == ("background", "CSF", "GM", "WM")
  assert names.label_values == (0, 10, 150, 250)


@pytest.mark.parametrize("split, subjects, folder", [
    ("train", TINY_TRAIN_SUBJECTS, "iSeg-2017-Training"),
    ("validation", TINY_VALIDATION_SUBJECTS, "iSeg-2017-Training"),
    ("test", TINY_TEST_SUBJECTS, "iSeg-2017-Testing"),
])
def test_iseg_cases_equal_the_analyze_files(iseg_builder, iseg_raw_dir, split, subjects, folder):
  ids = datasets.case_ids(iseg_builder, split)
  assert sorted(ids) == sorted(f"subject-{n}" for n in subjects)
  cases = datasets.Cases(iseg_builder, split)
  assert len(cases) == len(subjects)
  for i, case in enumerate(cases):
    assert isinstance(case, layouts.Case)
    assert case.case_id == ids[i]
    stem = iseg_raw_dir / folder / case.case_id
    t1 = io.load_image(f"{stem}-T1.hdr")
    t2 = io.load_image(f"{stem}-T2.hdr")
    assert case.image.shape == TINY_SHAPE + (2,) and case.image.dtype == np.float32
    np.testing.assert_array_equal(case.image[..., 0], t1.data.astype(np.float32))
    np.testing.assert_array_equal(case.image[..., 1], t2.data.astype(np.float32))
    np.testing.assert_allclose(case.affine, t1.affine, atol=1e-6)
    assert case.spacing == pytest.approx(t1.spacing)
    if split == "test":
      assert case.label is None
    else:
      values = io.load_image(f"{stem}-label.hdr").data
      expected = np.zeros(values.shape, np.uint8)
      for value, cls in ISEG_VALUE_TO_CLASS.items():
        expected[values == value] = cls
      assert set(np.unique(values).tolist()) <= set(ISEG_VALUE_TO_CLASS)
      assert case.label.dtype == np.uint8
      np.testing.assert_array_equal(case.label, expected)


def test_validation_cases_pool_train_and_validation_splits(iseg_builder, iseg_config):
  """MedicalZoo-style fixed split: named cases validate, the rest of both splits train."""
  from medjax import input_pipeline  # pylint: disable=g-import-not-at-top
  every = sorted(f"subject-{n}" for n in TINY_TRAIN_SUBJECTS + TINY_VALIDATION_SUBJECTS)
  chosen = (every[-1],)
  iseg_config.dataset.validation_cases = chosen
  train, val = input_pipeline.split_cases(iseg_config, iseg_builder)
  assert [c.case_id for c in val] == list(chosen)
  assert sorted(c.case_id for c in train) == every[:-1]
  assert [c.case_id for c in input_pipeline.eval_cases(iseg_config, "validation",
                                                        iseg_builder)] == list(chosen)
  with pytest.raises(ValueError, match=r"\['subject-99'\] are not cases of iseg2017"):
    datasets.choose_cases(iseg_builder, ["train"], ["subject-99"])
  iseg_config.dataset.fold = 0
  with pytest.raises(ValueError, match="both choose the validation cases"):
    input_pipeline.split_cases(iseg_config, iseg_builder)
