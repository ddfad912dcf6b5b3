"""medjax.evaluate on nnU-Net / Decathlon folders: matching, class names, label values, regions.

The BraTS-like case (`_brats_case`, 1 mm voxels, label values 0 / 1 / 2 / 4 = background / NCR /
ED / ET, class ids 0..3), worked out by hand:

  truth: ED = x 2..5, NCR = x 6..7, ET = x 8..9          (all with y, z in 2..5)
  pred:  ED = x 1..5, ET = x 6..9, no NCR

  ED   Dice 2*64 / (80 + 64) = 8/9
  NCR  Dice 0 (missed), HD95 and ASSD inf
  ET   Dice 2*32 / (64 + 32) = 2/3. The truth's 2-thick slab is all surface (32 voxels); the
       predicted 4^3 cube has 56 surface voxels. pred -> truth: 28 at 0 mm, 12 at 1 mm (x = 7),
       16 at 2 mm (x = 6); truth -> pred: 28 at 0 mm, 4 at 1 mm (x = 8 behind the cube's
       face). HD95 = max(P95 = 2, P95 = 1) = 2 mm; ASSD = (12 + 32 + 4) / (56 + 32) = 6/11 mm.
  WT = NCR + ED + ET: x 1..9 against x 2..9: Dice 2*128 / (144 + 128) = 16/17. Surfaces 116 and
       104 voxels; only the predicted x = 1 face (16 voxels) and the truth's x = 2 face inside
       the prediction (4) are 1 mm off, the rest 0: HD95 = max(1, 0) = 1 mm,
       ASSD = 20 / 220 = 1/11 mm.
  TC = NCR + ET: x 6..9 both: Dice 1, HD95 0, ASSD 0
  ET region: as the ET class.
"""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from medjax import evaluation
from medjax import io
from medjax import labels
from medjax.data import datasets
from medjax.data import layouts
from medjax.data import preprocessing
from medjax.data import synthetic

REPO = pathlib.Path(__file__).resolve().parents[1]
SHAPE = (12, 12, 12)
BRATS_NAMES = datasets.DatasetNames(
    channel_names=("t1", "t1ce", "t2", "flair"), class_names=("background", "NCR_NET", "ED", "ET"),
    label_values=(0, 1, 2, 4), regions={"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)})
# nnU-Net v2's region-based labels, in BraTS's on-disk values.
BRATS_DATASET_JSON = {
    "channel_names": {"0": "t1"}, "labels": {"background": 0, "WT": [1, 2, 4], "TC": [1, 4],
                                             "ET": 4},
    "regions_class_order": [2, 1, 4], "numTraining": 1, "file_ending": ".nii.gz"}


def _brats_case() -> tuple[np.ndarray, np.ndarray]:
  """(truth, prediction) as class ids 0..3 (see the module docstring)."""
  truth = np.zeros(SHAPE, np.uint8)
  truth[2:6, 2:6, 2:6] = 2
  truth[6:8, 2:6, 2:6] = 1
  truth[8:10, 2:6, 2:6] = 3
  pred = np.zeros(SHAPE, np.uint8)
  pred[1:6, 2:6, 2:6] = 2
  pred[6:10, 2:6, 2:6] = 3
  return truth, pred


def _write_brats(tmp_path: pathlib.Path, *, pred_values: bool = False
                 ) -> tuple[pathlib.Path, pathlib.Path]:
  """labelsTr/BraTS_001.nii.gz in BraTS values; pred/BraTS_001.nii.gz in class ids (or values)."""
  truth, pred = _brats_case()
  values = np.asarray((0, 1, 2, 4), np.uint8)
  label_dir, pred_dir = tmp_path / "data" / "labelsTr", tmp_path / "pred"
  io.save_image(label_dir / "BraTS_001.nii.gz", values[truth], np.eye(4))
  io.save_image(pred_dir / "BraTS_001.nii.gz", values[pred] if pred_values else pred, np.eye(4))
  return pred_dir, label_dir


def _check_brats(result: dict) -> None:
  assert result[2]["dice"] == pytest.approx(8 / 9)
  assert result[1] == {"dice": 0.0, "hd95": np.inf, "assd": np.inf}
  assert result[3]["dice"] == pytest.approx(2 / 3)
  assert result[3]["hd95"] == pytest.approx(2.0)
  assert result[3]["assd"] == pytest.approx(6 / 11)
  assert result["WT"]["dice"] == pytest.approx(16 / 17)
  assert result["WT"]["hd95"] == pytest.approx(1.0)
  assert result["WT"]["assd"] == pytest.approx(1 / 11)
  assert result["TC"] == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}
  assert result["ET"] == pytest.approx(result[3])


def _brats_workdir(tmp_path: pathlib.Path) -> pathlib.Path:
  workdir = tmp_path / "workdir"
  workdir.mkdir()
  preprocessing.Preprocessing(names=BRATS_NAMES, normalization=("full_volume_mean",) * 4).save(
      workdir)
  return workdir


# ---------------------------------------------------------------------------------------------
# Matching.


def test_nnunet_named_folders_pair_up(tmp_path):
  pred_dir, label_dir = tmp_path / "pred", tmp_path / "labelsTr"
  for case in ("case_001", "case_002", "case_003"):
    io.save_image(label_dir / f"{case}.nii.gz", np.zeros((4, 4, 4), np.uint8), np.eye(4))
  for case in ("case_001", "case_002"):
    io.save_image(pred_dir / f"{case}.nii.gz", np.zeros((4, 4, 4), np.uint8), np.eye(4))
  io.save_image(pred_dir / "case_001-probabilities.nii.gz", np.zeros((4, 4, 4, 2), np.float32),
                np.eye(4))
  (pred_dir / "._case_001.nii.gz").write_bytes(b"macOS resource fork")
  pairs = evaluation.match_files(pred_dir, label_dir)
  assert [(k, p.name, l.name) for k, p, l in pairs] == [
      ("case_001", "case_001.nii.gz", "case_001.nii.gz"),
      ("case_002", "case_002.nii.gz", "case_002.nii.gz")]


def test_labels_folder_takes_every_image_file(tmp_path):
  # A file name with "seg" in it: elsewhere only such files are label maps, in labelsTr/ all are.
  for folder in ("labelsTr", "other"):
    for case in ("seg_001", "case_002"):
      io.save_image(tmp_path / folder / f"{case}.nii", np.zeros((4, 4, 4), np.uint8), np.eye(4))
  assert sorted(evaluation.matching._label_maps(tmp_path / "labelsTr")) == ["case_002", "seg_001"]
  assert sorted(evaluation.matching._label_maps(tmp_path / "other")) == ["seg_001"]


# ---------------------------------------------------------------------------------------------
# Class names and label values.


def test_class_names_from_workdir(tmp_path):
  spec = labels.labels_from_workdir(_brats_workdir(tmp_path))
  assert spec.class_names == ("background", "NCR_NET", "ED", "ET")
  assert spec.label_values == (0, 1, 2, 4)
  assert spec.regions == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
  # An older workdir: config.json's dataset.num_classes only.
  old = tmp_path / "old"
  old.mkdir()
  (old / "config.json").write_text(json.dumps({"dataset": {"num_classes": 3}}))
  (old / "checkpoints").mkdir()
  spec = labels.labels_from_workdir(old / "checkpoints")  # its checkpoints/ folder works too
  assert spec.class_names == ("class0", "class1", "class2") and spec.label_values == (0, 1, 2)


def test_class_names_from_dataset_json(tmp_path, capsys):
  root = synthetic.write_nnunet_layout(tmp_path / "Dataset001", shape=(12, 14, 10), num_train=2)
  spec = labels.labels_from_dataset_json(root / "dataset.json")
  described = layouts.read_dataset(root)
  assert spec.class_names == described.class_names == ("background", "CSF", "GM", "WM")
  assert spec.label_values == described.label_values and not spec.regions
  # The labels scored against themselves: every class perfect, under the dataset's names.
  results = evaluation.run(str(root / "labelsTr"), str(root / "labelsTr"),
                           output_dir=str(tmp_path / "out"),
                           dataset_json=str(root / "dataset.json"))
  assert list(results) == ["brain_001", "brain_002"]
  for per_class in results.values():
    assert per_class == {k: {"dice": 1.0, "hd95": 0.0, "assd": 0.0} for k in (1, 2, 3)}
  assert "brain_002" in capsys.readouterr().out
  doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
  assert sorted(doc["mean"]) == ["CSF", "GM", "WM"] and "regions" not in doc


def test_decathlon_and_region_labels(tmp_path):
  path = tmp_path / "dataset.json"
  path.write_text(json.dumps({"modality": {"0": "FLAIR"}, "labels": {
      "0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}}))
  spec = labels.labels_from_dataset_json(tmp_path)  # the folder works as well
  assert spec.class_names == ("background", "edema", "non-enhancing tumor", "enhancing tumour")
  assert spec.label_values == (0, 1, 2, 3) and not spec.regions
  path.write_text(json.dumps(BRATS_DATASET_JSON))
  spec = labels.labels_from_dataset_json(path)
  assert spec.class_names == ("background", "label_1", "label_2", "label_4")
  assert spec.label_values == (0, 1, 2, 4)
  assert spec.regions == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}


@pytest.mark.parametrize("pred_values", [False, True])
def test_brats_values_and_regions_by_hand(tmp_path, capsys, pred_values):
  pred_dir, label_dir = _write_brats(tmp_path, pred_values=pred_values)
  results = evaluation.run(str(pred_dir), str(label_dir), workdir=str(_brats_workdir(tmp_path)))
  assert list(results) == ["BraTS_001"]
  assert list(results["BraTS_001"]) == [1, 2, 3, "WT", "TC", "ET"]
  _check_brats(results["BraTS_001"])
  printed = capsys.readouterr().out
  assert "0.9412" in printed and "0.6667" in printed  # WT 16/17, ET 2/3
  # The region ET shares its name with the class ET: its rows say so.
  doc = json.loads((pred_dir / "metrics.json").read_text())
  subject = doc["subjects"]["BraTS_001"]
  assert subject["WT"]["dice"] == pytest.approx(16 / 17)
  assert subject["ET (region)"]["assd"] == pytest.approx(6 / 11)
  assert subject["NCR_NET"]["hd95"] == "inf"
  assert doc["mean"]["TC"] == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}
  assert doc["regions"]["TC"] == ["NCR_NET", "ET"]
  rows = (pred_dir / "metrics.csv").read_text().splitlines()
  assert [r.split(",")[1] for r in rows[1:7]] == ["NCR_NET", "ED", "ET", "WT", "TC",
                                                   "ET (region)"]
  assert rows[-3].startswith("mean,WT,")


def test_values_flag(tmp_path):
  workdir = str(_brats_workdir(tmp_path))
  pred_dir, label_dir = _write_brats(tmp_path)  # predictions in class ids: ET is 3
  with pytest.raises(ValueError, match=r"BraTS_001.nii.gz: label values \[0, 2, 3\] are not the "
                     r"dataset's label values \(0, 1, 2, 4\) \(--values dataset\)"):
    evaluation.run(str(pred_dir), str(label_dir), workdir=workdir, values="dataset")
  _check_brats(evaluation.run(str(pred_dir), str(label_dir), workdir=workdir,
                              values="class_ids")["BraTS_001"])
  with pytest.raises(ValueError, match="--values 'ids'"):
    evaluation.run(str(pred_dir), str(label_dir), workdir=workdir, values="ids")


def test_ambiguous_maps(tmp_path):
  # Decathlon values 0 / 2 / 5 for background / a / b: a map holding {0, 2} reads either as
  # class ids (2 = b) or as dataset values (2 = a).
  (tmp_path / "dataset.json").write_text(json.dumps(
      {"modality": {"0": "CT"}, "labels": {"0": "background", "2": "a", "5": "b"}}))
  mask = np.zeros((8, 8, 8), np.uint8)
  mask[2:5, 2:5, 2:5] = 1
  io.save_image(tmp_path / "labelsTr" / "c.nii.gz", mask * 2, np.eye(4))  # truth: a
  io.save_image(tmp_path / "pred" / "c.nii.gz", mask * 2, np.eye(4))
  run = lambda values: evaluation.run(str(tmp_path / "pred"), str(tmp_path / "labelsTr"),
                                      dataset_json=str(tmp_path), values=values)["c"]
  # Ground truth: dataset values, class 1. Prediction, auto: class ids, class 2.
  auto = run("auto")
  assert auto[1]["dice"] == 0.0 and auto[2]["dice"] == 0.0
  assert run("dataset")[1] == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}
  # A value that is no dataset value (1) decides: class ids, the same as the truth.
  io.save_image(tmp_path / "pred" / "c.nii.gz", mask, np.eye(4))
  assert run("auto")[1]["dice"] == 1.0


def test_cli_prints_and_saves_regions(tmp_path):
  pred_dir, label_dir = _write_brats(tmp_path)
  (label_dir.parent / "dataset.json").write_text(json.dumps(BRATS_DATASET_JSON))
  proc = subprocess.run(
      [sys.executable, "-m", "medjax.evaluate", f"--pred={pred_dir}", f"--label={label_dir}",
       f"--dataset_json={label_dir.parent / 'dataset.json'}",
       f"--output_dir={tmp_path / 'out'}"], capture_output=True, text=True, cwd=REPO, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  region_rows = {line.split()[1]: line.split()[2:] for line in proc.stdout.splitlines()
                 if line.startswith("BraTS_001") and line.split()[1] in ("WT", "TC", "ET")}
  assert region_rows == {"WT": ["0.9412", "1.000", "0.091"], "TC": ["1.0000", "0.000", "0.000"],
                         "ET": ["0.6667", "2.000", "0.545"]}
  doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
  assert doc["subjects"]["BraTS_001"]["label_4"]["dice"] == pytest.approx(2 / 3)
  assert doc["mean"]["ET"]["assd"] == pytest.approx(6 / 11)
  assert doc["regions"] == {"WT": ["label_1", "label_2", "label_4"], "TC": ["label_1", "label_4"],
                            "ET": ["label_4"]}


# ---------------------------------------------------------------------------------------------
# Errors.


def test_errors_name_the_file(tmp_path):
  pred_dir, label_dir = _write_brats(tmp_path)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match=r"empty: holds neither preprocessing.json nor "
                     "config.json"):
    evaluation.run(str(pred_dir), str(label_dir), workdir=str(empty))
  with pytest.raises(FileNotFoundError, match="--workdir .*nowhere does not exist"):
    evaluation.run(str(pred_dir), str(label_dir), workdir=str(tmp_path / "nowhere"))
  (empty / "config.json").write_text("{not json")
  with pytest.raises(ValueError, match=r"empty/config.json: cannot read dataset.num_classes"):
    evaluation.run(str(pred_dir), str(label_dir), workdir=str(empty))
  bad = tmp_path / "bad.json"
  bad.write_text("{")
  with pytest.raises(ValueError, match=r"bad.json: not valid JSON"):
    evaluation.run(str(pred_dir), str(label_dir), dataset_json=str(bad))
  bad.write_text(json.dumps({"channel_names": {"0": "CT"}}))
  with pytest.raises(ValueError, match=r"bad.json: no 'labels' object"):
    labels.labels_from_dataset_json(bad)
  bad.write_text(json.dumps({"labels": {"background": 0, "tumour": "one"}}))
  with pytest.raises(ValueError, match=r"bad.json: label 'tumour'"):
    labels.labels_from_dataset_json(bad)
  with pytest.raises(FileNotFoundError, match="--dataset_json .*missing.json does not exist"):
    labels.labels_from_dataset_json(tmp_path / "missing.json")
  workdir = str(_brats_workdir(tmp_path))
  with pytest.raises(ValueError, match="give one of them"):
    evaluation.run(str(pred_dir), str(label_dir), workdir=workdir, dataset_json=str(bad))
  with pytest.raises(ValueError, match=r"--num_classes=3, but .*preprocessing.json has 4"):
    evaluation.run(str(pred_dir), str(label_dir), workdir=workdir, num_classes=3)
  # Label values that fit neither convention: 7 is no class id and no BraTS value.
  truth, _ = _brats_case()
  truth[0, 0, 0] = 7
  io.save_image(pred_dir / "BraTS_001.nii.gz", truth, np.eye(4))
  with pytest.raises(ValueError, match=r"pred/BraTS_001.nii.gz: label values \[0, 1, 2, 3, 7\] "
                     r"are neither class ids 0..3 nor the dataset's label values \(0, 1, 2, 4\)"):
    evaluation.run(str(pred_dir), str(label_dir), workdir=workdir)


def test_cli_reports_a_bad_workdir(tmp_path):
  pred_dir, label_dir = _write_brats(tmp_path)
  proc = subprocess.run(
      [sys.executable, "-m", "medjax.evaluate", f"--pred={pred_dir}", f"--label={label_dir}",
       f"--workdir={tmp_path}"], capture_output=True, text=True, cwd=REPO, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith(
      f"medjax.evaluate: error: --workdir {tmp_path}: holds neither preprocessing.json")
