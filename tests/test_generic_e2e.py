"""Any dataset, end to end: both layouts with anisotropic voxels, flipped / permuted axes and 3
channels are built, trained for a few steps, predicted and evaluated; every written label map
has exactly its input file's shape and affine."""

import json
import pathlib
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

import tiny
from conftest import REPO, load_experiment_config
from medjax import prediction
from medjax import train_lib
from medjax.data import datasets
from medjax.data import preprocessing as preprocessing_lib
from medjax.data import synthetic

SHAPE = (24, 28, 16)  # RAS voxels; 16 slices of 2 mm
SPACING = (1.0, 1.0, 2.0)


def _config(tmp, layout: str, axcodes: str):
  config = load_experiment_config("decathlon_unet3d")
  config.dataset.data_dir = str(tmp / "tfds")
  config.dataset.manual_dir = str(tmp / "raw")
  builtin = config.dataset.builtin_data
  builtin.enabled = True
  builtin.layout = layout
  builtin.shape = SHAPE
  builtin.spacing = SPACING
  builtin.axcodes = axcodes
  builtin.num_channels = 3
  builtin.num_train = 5
  builtin.num_test = 1
  return tiny.shrink(config)


@pytest.fixture(scope="module", params=[("nnunet", "LPS"), ("decathlon", "PIR")],
                ids=["nnunet-LPS", "decathlon-PIR"])
def trained(request, tmp_path_factory):
  layout, axcodes = request.param
  tmp = tmp_path_factory.mktemp(layout)
  config = _config(tmp, layout, axcodes)
  metrics = train_lib.train_and_evaluate(config, str(tmp / "work"))
  return layout, axcodes, tmp, metrics


@pytest.mark.slow
def test_train_resolves_channels_classes_and_geometry(trained):
  layout, axcodes, tmp, metrics = trained
  work = tmp / "work"
  saved = json.loads((work / "config.json").read_text())
  assert saved["dataset"]["num_modalities"] == 3 and saved["dataset"]["num_classes"] == 4
  prep = preprocessing_lib.load(work)
  assert prep.names.channel_names == ("T1", "T2", "FLAIR")
  assert prep.names.class_names == ("background", "CSF", "GM", "WM")
  assert prep.orientation == "RAS" and prep.crop_nonzero
  # The median voxel size of the cases in RAS axes: the generator's spacing, whatever the file's
  # axis order.
  np.testing.assert_allclose(prep.target_spacing, SPACING)
  assert set(metrics) >= {"val_dice_CSF", "val_dice_GM", "val_dice_WM", "val_dice_mean"}
  # Fold 0 of 5 over 5 training cases validates one case.
  assert len(list((work / "eval").glob("*.png"))) == 1


def _check_same_geometry(written: str, source: pathlib.Path) -> None:
  out, src = nib.load(written), nib.load(str(source))
  assert out.shape == src.shape[:3], (written, out.shape, src.shape)
  np.testing.assert_allclose(out.affine, src.affine, atol=1e-6)
  np.testing.assert_array_equal(nib.aff2axcodes(out.affine), nib.aff2axcodes(src.affine))


@pytest.mark.slow
def test_predict_folder_and_single_case_keep_each_file_geometry(trained):
  layout, axcodes, tmp, _ = trained
  raw, work = tmp / "raw", tmp / "work"
  test_images = sorted((raw / "imagesTs").iterdir())
  out = tmp / "pred"
  # The command line, on the test folder.
  proc = subprocess.run(
      [sys.executable, "-m", "medjax.predict", "--workdir", str(work), "--input_dir",
       str(raw / "imagesTs"), "--output_dir", str(out), "--png=false"],
      capture_output=True, text=True, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  written = sorted(p.name for p in out.iterdir())
  assert written == ["brain_011.nii.gz"], written
  _check_same_geometry(str(out / "brain_011.nii.gz"), test_images[0])
  assert nib.aff2axcodes(nib.load(str(out / "brain_011.nii.gz")).affine) == tuple(axcodes)
  # One training case by its files, with its label: the dataset's values, its Dice printed.
  if layout == "nnunet":
    images = [str(raw / "imagesTr" / f"brain_002_{c:04d}.nii.gz") for c in range(3)]
  else:
    images = [str(raw / "imagesTr" / "brain_002.nii.gz")]
  results = prediction.run(str(work), output_dir=str(tmp / "single"), images=images,
                           label=str(raw / "labelsTr" / "brain_002.nii.gz"), values="dataset",
                           png=False)
  assert results[0]["name"] == "brain_002" and len(results[0]["dice"]) == 4
  _check_same_geometry(results[0]["files"]["label"], pathlib.Path(images[0]))
  label = np.asarray(nib.load(results[0]["files"]["label"]).dataobj)
  assert set(np.unique(label)) <= {0, 1, 2, 3}


@pytest.mark.slow
def test_prepare_and_restore_returns_the_labels_where_the_grid_allows(trained):
  _, axcodes, tmp, _ = trained
  case = synthetic.generate_case(SHAPE, spacing=SPACING, axcodes=axcodes, num_channels=3, seed=0,
                                 subject_id=1)
  image, label, affine = case
  prep = preprocessing_lib.load(tmp / "work")
  for spacing, method in ((prep.target_spacing, "linear_onehot"), ((1.0, 1.0, 1.0), "nearest")):
    # The run's own grid (no resampling: exact), and twice as many slices and back.
    p = preprocessing_lib.Preprocessing(
        names=prep.names, normalization=prep.normalization, intensity_stats=prep.intensity_stats,
        orientation="RAS", target_spacing=tuple(spacing), crop_nonzero=True, label_method=method)
    prepared = p.prepare(image, affine, label)
    assert nib.aff2axcodes(np.asarray(prepared.record.affine)) == ("R", "A", "S")
    onehot = np.eye(4, dtype=np.float32)[prepared.label]
    restored = p.restore(onehot, prepared.record)
    assert restored.shape == label.shape + (4,)
    np.testing.assert_array_equal(restored.argmax(-1), label)


def test_decathlon_config_declares_what_the_code_reads():
  config = load_experiment_config("decathlon_unet3d")
  assert config.dataset.name == "segmentation3d" and config.dataset.fold == 0
  assert config.dataset.num_modalities is None and config.dataset.num_classes is None
  names = datasets.DatasetNames(("CT",), ("background", "liver"), (0, 1))
  assert preprocessing_lib.resolve_normalization(config.dataset.normalization,
                                                 names.channel_names) == ("ct",)
