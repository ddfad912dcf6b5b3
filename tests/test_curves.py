"""`metrics.jsonl` and `curves.png`: the log's round trip, its cut on resume, and the picture."""

import json
import math
import os
import struct
import time

import numpy as np
import pytest

from medjax.training import curves
from medjax.training import metric_window

NAMES = ("background", "CSF", "GM", "WM")


def _val_metrics(mean):
  metrics = {f"val_dice_{n}": mean for n in NAMES}
  metrics.update(val_dice_mean=mean, val_loss=1.0 - mean)
  return metrics


def _fill(workdir, last_step, eval_every=5):
  log = curves.MetricsLog(str(workdir), 0, NAMES)
  for step in range(1, last_step + 1):
    log.log_train(step, loss=1.0 / step, learning_rate=0.1, dice=[0.9, 0.1, 0.2, 0.3],
                  dice_mean=0.2)
    if step % eval_every == 0:
      log.log_eval(step, _val_metrics(step / last_step))
  return log


def _png_size(path):
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
  return struct.unpack(">II", head[16:24])  # width, height


def _temp_files(directory):
  return [f for f in os.listdir(directory) if f.startswith(".tmp-")]


def test_log_round_trip(tmp_path):
  log = curves.MetricsLog(str(tmp_path), 0, NAMES)
  log.log_train(1, loss=0.5, learning_rate=np.float32(0.25), dice=np.array([1.0, 0.5, 0.25, 0.0]),
                dice_mean=0.25)
  log.log_eval(1, {**_val_metrics(0.5), "val_loss": math.nan, "unrelated": 3.0})
  records = curves.read_log(str(tmp_path / curves.METRICS_FILE))
  assert records == log.records
  assert records == [
      {"step": 1, "split": "train", "loss": 0.5, "learning_rate": 0.25, "dice_background": 1.0,
       "dice_CSF": 0.5, "dice_GM": 0.25, "dice_WM": 0.0, "dice_mean": 0.25},
      {"step": 1, "split": "val", "dice_background": 0.5, "dice_CSF": 0.5, "dice_GM": 0.5,
       "dice_WM": 0.5, "dice_mean": 0.5, "loss": None}]
  # Strict JSON, one object a line (NaN written as null).
  lines = (tmp_path / curves.METRICS_FILE).read_text().splitlines()
  assert [json.loads(line, parse_constant=pytest.fail) for line in lines] == records
  assert curves.read_log(str(tmp_path / "missing.jsonl")) == []


def test_resume_keeps_exactly_the_steps_up_to_the_checkpoint(tmp_path):
  _fill(tmp_path, 12)
  path = tmp_path / curves.METRICS_FILE
  with open(path, "a") as f:
    f.write('{"step": 13, "split": "tr')  # killed mid-line
  log = curves.MetricsLog(str(tmp_path), 7, NAMES)
  lines = [json.loads(line) for line in path.read_text().splitlines()]
  assert [(r["split"], r["step"]) for r in lines] == (
      [("train", s) for s in range(1, 6)] + [("val", 5)] + [("train", 6), ("train", 7)])
  assert log.records == lines
  # The resumed run continues the file: steps 8.. once each.
  log.log_train(8, loss=0.1, learning_rate=0.1, dice=[0.0] * 4, dice_mean=0.0)
  assert [r["step"] for r in curves.read_log(str(path))] == [1, 2, 3, 4, 5, 5, 6, 7, 8]
  assert not _temp_files(tmp_path)
  assert curves.MetricsLog(str(tmp_path), 0, NAMES).records == []
  assert path.read_text() == ""


def test_repeated_evaluation_is_read_once(tmp_path):
  log = _fill(tmp_path, 5)
  log = curves.MetricsLog(str(tmp_path), 5, NAMES)  # rerun of a finished run: evaluates again
  log.log_eval(5, _val_metrics(0.75))
  val = [r for r in curves.read_log(str(tmp_path / curves.METRICS_FILE)) if r["split"] == "val"]
  assert val == [r for r in log.records if r["split"] == "val"]
  assert [(r["step"], r["dice_mean"]) for r in val] == [(5, 0.75)]


def test_curves_png_is_written_atomically_at_its_size(tmp_path):
  log = _fill(tmp_path, 200, eval_every=20)
  start = time.perf_counter()
  path = log.save_curves()
  elapsed = time.perf_counter() - start
  assert path == str(tmp_path / curves.CURVES_FILE)
  assert _png_size(path) == (int(curves.FIGSIZE[0] * curves.DPI),
                             int(curves.FIGSIZE[1] * curves.DPI))
  assert not _temp_files(tmp_path)
  assert elapsed < 2.0  # ~0.1 s alone; slack for a busy CI machine
  mtime = os.stat(path).st_mtime_ns
  log.save_curves()  # nothing new: not redrawn
  assert os.stat(path).st_mtime_ns == mtime


def test_failed_write_leaves_the_old_picture_and_no_temp_file(tmp_path, monkeypatch):
  log = _fill(tmp_path, 5)
  path = log.save_curves()
  before = open(path, "rb").read()
  monkeypatch.setattr(curves.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("full")))
  with pytest.raises(OSError, match="full"):
    curves.save_curves_png(path, log.records)
  assert open(path, "rb").read() == before and not _temp_files(tmp_path)


def test_curves_before_any_evaluation(tmp_path):
  log = curves.MetricsLog(str(tmp_path), 0, ("wt", "tc", "et"))
  for step in (10, 20, 30):
    log.log_train(step, loss=math.nan if step == 20 else 1.0, learning_rate=0.1,
                  dice=[0.1, 0.2, 0.3], dice_mean=0.2)
  assert _png_size(log.save_curves()) == (800, 320)
  assert _png_size(curves.save_curves_png(str(tmp_path / "empty.png"), [])) == (800, 320)


def test_metric_window_hands_its_log_points_to_the_log(tmp_path):
  log = curves.MetricsLog(str(tmp_path), 0, ("a", "b"))
  window = metric_window.MetricWindow(
      names=("a", "b"), scored=slice(1, None), learning_rate=lambda count: 0.1 * (count + 1),
      log_every_steps=2, last_step=3, metrics_log=log, clock=lambda: 0.0)
  for step, loss in ((1, 1.0), (2, 3.0), (3, 5.0)):
    window.record(step, {"loss": loss, "dice": np.array([1.0, 0.5]) * step, "grad_norm": 1.0,
                         "finite": 1})
  assert curves.read_log(str(tmp_path / curves.METRICS_FILE)) == [
      {"step": 2, "split": "train", "loss": 2.0, "learning_rate": pytest.approx(0.2),
       "dice_a": 1.5, "dice_b": 0.75, "dice_mean": 0.75},
      {"step": 3, "split": "train", "loss": 5.0, "learning_rate": pytest.approx(0.3),
       "dice_a": 3.0, "dice_b": 1.5, "dice_mean": 1.5}]
