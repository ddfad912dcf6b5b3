"""Tests for the predict and evaluate command lines and their library functions."""

import csv
import json
import os
import pathlib
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from medjax import evaluation
from medjax import io
from medjax import labels
import tiny

REPO = pathlib.Path(__file__).resolve().parents[1]


def _cube(shape, start, size=4):
  mask = np.zeros(shape, bool)
  mask[tuple(slice(s, s + size) for s in start)] = True
  return mask


def _affine(spacing):
  affine = np.diag([*spacing, 1.0])
  affine[:3, 3] = (-10.0, 5.0, 2.0)
  return affine


def _write_pair(tmp_path):
  """Ground truth in an iSeg-like folder (Analyze, iSeg values), predictions as NIfTI class ids.

  Subject 1: truth CSF cube at (3, 3, 3), prediction shifted by 2 along axis 0 whose voxels are
  1 mm (2 mm on the other axes): Dice 0.5, HD95 2 mm, ASSD 6/7 mm (see test_metrics). GM and WM
  are perfect (0, 0). Subject 2 has a truth but no prediction and is not scored.
  """
  shape, spacing = (12, 12, 12), (1.0, 2.0, 2.0)
  truth = np.zeros(shape, np.uint8)
  truth[_cube(shape, (3, 3, 3))] = 1
  truth[8:11, 8:11, 1:4] = 2
  truth[1:3, 8:11, 8:11] = 3
  pred = truth.copy()
  pred[truth == 1] = 0
  pred[_cube(shape, (5, 3, 3))] = 1
  label_dir, pred_dir = tmp_path / "truth", tmp_path / "pred"
  values = np.asarray([0, 10, 150, 250], np.uint8)
  for sid in (1, 2):
    io.save_image(label_dir / f"subject-{sid}-label.hdr", values[truth][..., None],
                  _affine(spacing))
    io.save_image(label_dir / f"subject-{sid}-T1.hdr", np.ones(shape, np.float32),
                  _affine(spacing))
  io.save_image(pred_dir / "subject-1-label.nii.gz", pred, _affine(spacing))
  io.save_image(pred_dir / "subject-1-probabilities.nii.gz", np.zeros((*shape, 4), np.float32),
                _affine(spacing))
  return pred_dir, label_dir


def test_evaluate_folders_by_hand(tmp_path, capsys):
  pred_dir, label_dir = _write_pair(tmp_path)
  results = evaluation.run(str(pred_dir), str(label_dir), output_dir=str(tmp_path / "out"))
  assert list(results) == ["subject-1"]
  csf = results["subject-1"][1]
  assert csf["dice"] == pytest.approx(0.5)
  assert csf["hd95"] == pytest.approx(2.0)
  assert csf["assd"] == pytest.approx(6 / 7)
  for k in (2, 3):
    assert results["subject-1"][k] == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}
  printed = capsys.readouterr().out
  assert "CSF" in printed and "0.5000" in printed and "0.857" in printed
  with open(tmp_path / "out" / "metrics.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["class"] for r in rows] == ["CSF", "GM", "WM"] * 2  # subject-1 rows, then means
  assert float(rows[0]["assd_mm"]) == pytest.approx(6 / 7)
  doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
  assert doc["subjects"]["subject-1"]["CSF"]["hd95"] == pytest.approx(2.0)
  assert doc["mean"]["CSF"]["dice"] == pytest.approx(0.5)
  assert doc["units"]["hd95"] == "mm"


def test_evaluate_normalized_surface_dice_by_hand(tmp_path, capsys):
  """CSF of `_write_pair`: 4^3 cubes shifted by 2 voxels (1 mm) along axis 0, 56 surface voxels
  each. From the prediction: 24 ring voxels of slices x = 5, 6 lie on the truth's surface (0 mm),
  4 face voxels of x = 5 are 1 mm from it, the 12 ring voxels of x = 7 are 1 mm, the 16 of the
  far face x = 8 are 2 mm (sum 48 = 56 * 6/7, the ASSD); the reverse is the mirror image.
  NSD(1 mm) = 2 * (24 + 4 + 12) / 112 = 5/7; NSD(0.5 mm) = 2 * 24 / 112 = 3/7."""
  pred_dir, label_dir = _write_pair(tmp_path)
  for tolerance, expected in ((1.0, 5 / 7), (0.5, 3 / 7), (2.0, 1.0)):
    results = evaluation.run(str(pred_dir), str(label_dir), output_dir=str(tmp_path / "out"),
                             nsd_tolerance=tolerance)
    assert results["subject-1"][1]["nsd"] == pytest.approx(expected)
    assert results["subject-1"][2]["nsd"] == 1.0
  assert "NSD" in capsys.readouterr().out
  with open(tmp_path / "out" / "metrics.csv", newline="") as f:
    assert float(next(csv.DictReader(f))["nsd"]) == pytest.approx(1.0)
  doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
  assert doc["units"]["nsd"] == "fraction" and doc["mean"]["CSF"]["nsd"] == pytest.approx(1.0)
  with pytest.raises(ValueError, match="nsd_tolerance"):
    evaluation.run(str(pred_dir), str(label_dir), nsd_tolerance=-1.0)


def test_evaluate_two_files_and_empty_class(tmp_path):
  shape = (8, 8, 8)
  truth = np.zeros(shape, np.uint8)
  truth[2:5, 2:5, 2:5] = 1
  pred = np.zeros(shape, np.uint8)  # CSF missed entirely
  io.save_image(tmp_path / "a-pred.nii", pred, np.eye(4))
  io.save_image(tmp_path / "a-label.nii", truth, np.eye(4))
  results = evaluation.run(str(tmp_path / "a-pred.nii"), str(tmp_path / "a-label.nii"))
  csf, gm = results["a"][1], results["a"][2]
  assert csf["dice"] == 0.0 and csf["hd95"] == np.inf and csf["assd"] == np.inf
  assert np.isnan(gm["dice"]) and np.isnan(gm["hd95"])
  doc = json.loads((tmp_path / "metrics.json").read_text())  # nan/inf survive as null/"inf"
  assert doc["subjects"]["a"]["CSF"]["hd95"] == "inf" and doc["subjects"]["a"]["GM"]["dice"] is None


def test_evaluate_errors(tmp_path):
  io.save_image(tmp_path / "p" / "subject-1-label.nii", np.zeros((4, 4, 4), np.uint8), np.eye(4))
  io.save_image(tmp_path / "l" / "subject-1-label.nii", np.zeros((4, 4, 5), np.uint8), np.eye(4))
  io.save_image(tmp_path / "l" / "subject-2-label.nii", np.full((4, 4, 4), 7, np.uint8), np.eye(4))
  with pytest.raises(ValueError, match=r"subject-1-label.nii: shape \(4, 4, 4\) differs"):
    evaluation.run(str(tmp_path / "p"), str(tmp_path / "l"))
  with pytest.raises(ValueError, match="neither class ids"):
    labels.load_label_map(tmp_path / "l" / "subject-2-label.nii")
  with pytest.raises(FileNotFoundError, match="--pred"):
    evaluation.match_files(tmp_path / "missing", tmp_path / "l")
  with pytest.raises(ValueError, match="two files or two folders"):
    evaluation.match_files(tmp_path / "p" / "subject-1-label.nii", tmp_path / "l")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="No subject"):
    evaluation.match_files(tmp_path / "empty", tmp_path / "l")


def test_evaluate_cli_reports_errors(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "medjax.evaluate", f"--pred={tmp_path / 'nope.nii'}",
       f"--label={tmp_path}"], capture_output=True, text=True, cwd=REPO)
  assert proc.returncode == 1
  assert "medjax.evaluate: error:" in proc.stderr and "nope.nii" in proc.stderr


# ---------------------------------------------------------------------------------------------
# predict: library pieces on a hand-made model, then the end-to-end run from a trained workdir.


def test_load_case_checks_geometry(tmp_path):
  from medjax import prediction  # pylint: disable=g-import-not-at-top
  io.save_image(tmp_path / "s-T1.nii.gz", np.ones((6, 5, 4, 1), np.float32), _affine((1, 1, 1)))
  io.save_image(tmp_path / "s-T2.nii.gz", np.ones((6, 5, 4), np.float32), _affine((1, 1, 1)))
  io.save_image(tmp_path / "other-T2.nii", np.ones((6, 5, 3), np.float32), _affine((1, 1, 1)))
  io.save_image(tmp_path / "moved-T2.nii", np.ones((6, 5, 4), np.float32), _affine((1, 1, 2)))
  case = prediction.load_case(str(tmp_path / "s-T1.nii.gz"), str(tmp_path / "s-T2.nii.gz"))
  assert case.name == "s" and case.image.shape == (6, 5, 4, 2) and case.disk_shape == (6, 5, 4, 1)
  with pytest.raises(ValueError, match=r"other-T2.nii: shape \(6, 5, 3\) differs from the T1"):
    prediction.load_case(str(tmp_path / "s-T1.nii.gz"), str(tmp_path / "other-T2.nii"))
  with pytest.raises(ValueError, match="moved-T2.nii: affine"):
    prediction.load_case(str(tmp_path / "s-T1.nii.gz"), str(tmp_path / "moved-T2.nii"))
  (tmp_path / "junk.nii").write_bytes(b"not an image")
  with pytest.raises(ValueError, match="junk.nii: not a readable"):
    prediction.load_case(str(tmp_path / "junk.nii"))


def test_write_outputs_keeps_geometry(tmp_path):
  from medjax import prediction  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(4), size=(6, 5, 4)).astype(np.float32)
  affine = _affine((1.0, 1.5, 2.0))
  case = prediction.Case(name="subject-3", image=rng.random((6, 5, 4, 2), dtype=np.float32),
                         label=None, affine=affine, spacing=(1.0, 1.5, 2.0),
                         disk_shape=(6, 5, 4, 1))
  files = prediction.write_outputs(case, probs, str(tmp_path), fmt="nii.gz", values="iseg",
                                   save_probabilities=True)
  img = nib.load(files["label"])
  assert img.shape == (6, 5, 4, 1)
  np.testing.assert_allclose(img.affine, affine)
  expected = np.asarray([0, 10, 150, 250])[probs.argmax(-1)]
  np.testing.assert_array_equal(np.asarray(img.dataobj)[..., 0], expected)
  np.testing.assert_allclose(np.asarray(nib.load(files["probabilities"]).dataobj), probs)
  assert os.path.getsize(files["png"]) > 1000
  assert sorted(os.listdir(tmp_path)) == ["subject-3-label.nii.gz",
                                          "subject-3-probabilities.nii.gz", "subject-3.png"]


def test_predict_reports_bad_workdir(tmp_path):
  from medjax import prediction  # pylint: disable=g-import-not-at-top
  io.save_image(tmp_path / "s-T1.nii", np.ones((6, 5, 4), np.float32), np.eye(4))
  with pytest.raises(FileNotFoundError, match="nowhere"):
    prediction.run(str(tmp_path / "nowhere"), output_dir=str(tmp_path / "out"),
                   t1=str(tmp_path / "s-T1.nii"))
  with pytest.raises(ValueError, match="either --t1"):
    prediction.run(str(tmp_path), output_dir=str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def _run(args, **kwargs):
  proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO,
                        **kwargs)
  return proc


@pytest.mark.slow
def test_train_then_predict_in_fresh_processes(iseg_raw_dir, iseg_data_dir, tmp_path):
  """Trains 2 steps with the train CLI, then predicts from the workdir in new processes."""
  workdir = tmp_path / "workdir"
  proc = _run(["medjax.train", "--config=experiments/quickstart.py", f"--workdir={workdir}",
               f"--config.dataset.data_dir={iseg_data_dir}",
               f"--config.dataset.manual_dir={iseg_raw_dir}",
               *tiny.cli_overrides(num_train_steps=2)], timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  t1 = next(pathlib.Path(iseg_raw_dir).rglob("subject-2-T1.hdr"))
  t2 = t1.with_name("subject-2-T2.hdr")
  out = tmp_path / "out"
  proc = _run(["medjax.predict", f"--workdir={workdir}", f"--t1={t1}", f"--t2={t2}",
               f"--output_dir={out}", "--which=latest"], timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  written, source = nib.load(str(out / "subject-2-label.nii.gz")), nib.load(str(t1))
  assert written.shape == source.shape and len(source.shape) == 4  # iSeg's [D, H, W, 1]
  np.testing.assert_allclose(written.affine, source.affine)
  assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 3}
  assert (out / "subject-2.png").exists()
  # A folder run (a labelled and an unlabelled subject) in iSeg format, then evaluate.
  proc = _run(["medjax.predict", f"--workdir={workdir}", f"--input_dir={iseg_raw_dir}",
               "--subjects=1,11", f"--output_dir={out / 'iseg'}", "--format=hdr",
               "--values=iseg", "--png=false"], timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for sid in (1, 11):
    label = nib.load(str(out / "iseg" / f"subject-{sid}-label.hdr"))
    assert label.shape == source.shape
    assert set(np.unique(np.asarray(label.dataobj))) <= {0, 10, 150, 250}
  proc = _run(["medjax.evaluate", f"--pred={out / 'iseg'}", f"--label={iseg_raw_dir}"],
              timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  doc = json.loads((out / "iseg" / "metrics.json").read_text())
  assert sorted(doc["subjects"]) == ["subject-1"]  # subject 11 has no ground truth
  # A two-modality checkpoint given one modality: a clear error and no output.
  proc = _run(["medjax.predict", f"--workdir={workdir}", f"--t1={t1}",
               f"--output_dir={tmp_path / 'one'}"], timeout=600)
  assert proc.returncode == 1 and "trained on 2" in proc.stderr
  assert not (tmp_path / "one").exists()


def test_exit_on_error_reports_one_line(capsys):
  from medjax import cli_errors  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as e:
    with cli_errors.exit_on_error("medjax.x"):
      raise FileNotFoundError("--pred p does not exist")
  assert e.value.code == 1
  assert capsys.readouterr().err == "medjax.x: error: --pred p does not exist\n"
  with pytest.raises(KeyError):  # other errors are bugs: they keep their traceback
    with cli_errors.exit_on_error("medjax.x"):
      raise KeyError("k")


def test_import_boundaries():
  from medjax import prediction  # pylint: disable=g-import-not-at-top

  def run(code):
    return subprocess.run([sys.executable, "-c", "import sys\n" + code], capture_output=True,
                          text=True, cwd=REPO, check=True).stdout.strip()
  # The evaluate CLI and its library load no JAX (fast startup)...
  assert run("import medjax.evaluate, medjax.evaluation, medjax.labels\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax')))") == "[]"
  # ... and predict no longer goes through the evaluate CLI for its class names.
  assert run("import medjax.predict\nprint('medjax.evaluate' in sys.modules)") == "False"
  # Scripts written before the split call these through `medjax.predict` (README: `prediction`).
  from medjax import predict  # pylint: disable=g-import-not-at-top
  assert (predict.load_case, predict.segment, predict.preprocessing_of, predict.run) == (
      prediction.load_case, prediction.segment, prediction.preprocessing_of, prediction.run)
