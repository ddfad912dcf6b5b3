"""MetricWindow (the train/* scalars of each log window) and the TensorBoard hparams."""

import ml_collections
import numpy as np
import pytest

from medjax.training import metric_window
from medjax.training import tensorboard


class FakeWriter:
  def __init__(self):
    self.scalars = {}  # step -> {tag: value}

  def add_scalar(self, tag, value, step):
    self.scalars.setdefault(step, {})[tag] = value


class FakeProgress:
  def __init__(self):
    self.updates, self.postfix = 0, None

  def update(self, n):
    self.updates += n

  def set_postfix(self, **kwargs):
    self.postfix = kwargs


def _metrics(loss, dice, grad_norm, finite=1.0):
  return {"loss": np.float32(loss), "dice": np.asarray(dice, np.float32),
          "grad_norm": np.float32(grad_norm), "finite": np.float32(finite)}


def test_window_means_skips_rate_and_learning_rate():
  """log_every_steps=2, last step 5; step 2 is non-finite. Clock reads: 0 at the start, 0.5 at
  the step-2 write, 2.5 at the step-4 write, 3.0 at the step-5 write (each write also restarts
  the window at the same reading)."""
  writer, progress = FakeWriter(), FakeProgress()
  times = iter([0.0, 0.5, 0.5, 2.5, 2.5, 3.0, 3.0])
  window = metric_window.MetricWindow(
      names=("background", "wm", "gm"), scored=slice(1, None),
      learning_rate=lambda count: 0.1 * (count + 1), log_every_steps=2, last_step=5,
      writer=writer, progress=progress, clock=lambda: next(times))
  window.record(1, _metrics(1.0, [0.9, 0.2, 0.4], 2.0))
  window.record(2, _metrics(np.nan, [0.0, 0.0, 0.0], np.nan, finite=0.0))
  window.record(3, _metrics(3.0, [0.8, 0.6, 0.0], 1.0))
  window.record(4, _metrics(5.0, [0.6, 0.2, 0.5], 4.0))
  assert progress.postfix == {"loss": "4.0000", "dice": "0.325"}
  window.record(5, _metrics(0.5, [1.0, 1.0, 0.0], 3.0))
  assert window.skipped == 1 and progress.updates == 5
  assert sorted(writer.scalars) == [2, 4, 5]
  expected = {
      2: {"train/loss": 1.0, "train/dice_mean": 0.3, "train/dice_background": 0.9,
          "train/dice_wm": 0.2, "train/dice_gm": 0.4, "train/grad_norm": 2.0,
          "train/learning_rate": 0.2, "train/steps_per_second": 1 / 0.5,
          "train/skipped_steps": 1},
      4: {"train/loss": 4.0, "train/dice_mean": 0.325, "train/dice_background": 0.7,
          "train/dice_wm": 0.4, "train/dice_gm": 0.25, "train/grad_norm": 2.5,
          "train/learning_rate": 0.4, "train/steps_per_second": 2 / 2.0,
          "train/skipped_steps": 1},
      5: {"train/loss": 0.5, "train/dice_mean": 0.5, "train/dice_background": 1.0,
          "train/dice_wm": 1.0, "train/dice_gm": 0.0, "train/grad_norm": 3.0,
          "train/learning_rate": 0.5, "train/steps_per_second": 1 / 0.5,
          "train/skipped_steps": 1},
  }
  for step, tags in expected.items():
    assert sorted(writer.scalars[step]) == sorted(tags), step
    for tag, value in tags.items():
      assert writer.scalars[step][tag] == pytest.approx(value, rel=1e-6), (step, tag)


def test_all_skipped_window_writes_nothing_and_regions_score_every_entry():
  writer = FakeWriter()
  window = metric_window.MetricWindow(
      names=("wt", "tc"), scored=slice(None), learning_rate=lambda count: 1.0,
      log_every_steps=2, last_step=4, writer=writer)
  window.record(1, _metrics(np.inf, [0, 0], np.inf, finite=0.0))
  window.record(2, _metrics(np.nan, [0, 0], np.nan, finite=0.0))
  assert writer.scalars == {} and window.skipped == 2
  window.record(3, _metrics(1.0, [0.2, 0.6], 1.0))
  window.record(4, _metrics(1.0, [0.4, 0.8], 1.0))
  assert writer.scalars[4]["train/dice_mean"] == pytest.approx(0.5)
  assert writer.scalars[4]["train/skipped_steps"] == 2


def test_window_without_writer_or_progress_only_counts():
  window = metric_window.MetricWindow(names=("a",), scored=slice(None),
                                      learning_rate=lambda count: 1.0, log_every_steps=1,
                                      last_step=2)
  window.record(1, _metrics(1.0, [0.5], 1.0))
  window.record(2, _metrics(np.nan, [0.5], 1.0, finite=0.0))
  assert window.skipped == 1


def test_flat_hparams():
  config = ml_collections.ConfigDict({"lr": 0.1, "model": {"name": "UNET3D", "depth": 4},
                                      "crop": (8, 8, 8), "fold": None, "on": True})
  assert tensorboard.flat_hparams(config) == {
      "lr": 0.1, "model.name": "UNET3D", "model.depth": 4, "crop": "(8, 8, 8)", "fold": "None",
      "on": True}
