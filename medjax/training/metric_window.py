"""The train metrics between two log points: their means, the skipped steps, the step rate.

The loop hands each step's metrics (on the host) to `MetricWindow.record`; every
`log_every_steps` steps, and at the last step, the window writes the means of its finite
steps as the `train/*` scalars and starts a new window.
"""

import time
from typing import Any, Callable, Sequence

import numpy as np
from absl import logging


class MetricWindow:
  """Accumulates the metrics of the steps since the last log point and writes their means.

  Args:
    names: the names of the Dice entries `[K]` (classes) or `[R]` (regions).
    scored: the Dice entries the mean averages (the foreground classes, or every region).
    learning_rate: the schedule, count -> rate.
    log_every_steps: the means are written at the steps divisible by this, and at `last_step`
      (`config.num_train_steps`).
    last_step: see `log_every_steps`.
    writer: a TensorBoard `SummaryWriter`; None on the hosts that do not log.
    progress: a `tqdm` bar: advanced each step, shown the window's loss and mean Dice.
    metrics_log: a `curves.MetricsLog`, given each log point's loss, rate and Dice; None on the
      hosts that do not log.
    clock: seconds, for the step rate.

  Attributes:
    skipped: the non-finite steps skipped so far in this run (`config.nonfinite='skip'`).

  Each log point writes, at step `step`: `train/loss`, `train/dice_mean` (over `scored`),
  `train/dice_<name>` per class or region, `train/grad_norm` (means over the window's finite
  steps), `train/learning_rate` (the rate step `step`'s update used), `train/steps_per_second`
  (finite steps per second of wall time since the window began) and `train/skipped_steps`.
  """

  def __init__(self, *, names: Sequence[str], scored: slice,
               learning_rate: Callable[[int], Any], log_every_steps: int, last_step: int,
               writer: Any | None = None, progress: Any | None = None,
               metrics_log: Any | None = None,
               clock: Callable[[], float] = time.perf_counter):
    self.names = tuple(names)
    self.scored = scored
    self.learning_rate = learning_rate
    self.log_every_steps = log_every_steps
    self.last_step = last_step
    self.writer = writer
    self.progress = progress
    self.metrics_log = metrics_log
    self.clock = clock
    self.skipped = 0
    self._window: list[dict[str, Any]] = []
    self._start = clock()

  def record(self, step: int, metrics: dict[str, Any]) -> None:
    """Adds step `step` (the count of completed steps) with its host `metrics`.

    `metrics` are `train_step`'s: `loss`, `dice` `[K]`, `grad_norm`, `finite`; a step with
    `finite` 0 is counted as skipped and left out of the means.
    """
    if not metrics["finite"]:
      self.skipped += 1
      logging.warning("Skipped step %d: non-finite loss, gradient or updated parameters "
                      "(%d skipped).", step, self.skipped)
    else:
      self._window.append(metrics)
    if self.progress is not None:
      self.progress.update(1)
    if self._window and (step % self.log_every_steps == 0 or step == self.last_step):
      self._write(step)
      self._window.clear()
      self._start = self.clock()

  def _write(self, step: int) -> None:
    elapsed = self.clock() - self._start
    window = self._window
    loss = float(np.mean([m["loss"] for m in window]))
    dice = np.mean([m["dice"] for m in window], axis=0)
    dice_mean = float(np.mean(dice[self.scored]))
    if self.progress is not None:
      self.progress.set_postfix(loss=f"{loss:.4f}", dice=f"{dice_mean:.3f}")
    # The rate step `step` used: its update ran with the schedule's count at step - 1.
    learning_rate = float(self.learning_rate(step - 1))
    if self.metrics_log is not None:
      self.metrics_log.log_train(step, loss=loss, learning_rate=learning_rate, dice=dice,
                                 dice_mean=dice_mean)
    writer = self.writer
    if writer is None:
      return
    writer.add_scalar("train/loss", loss, step)
    writer.add_scalar("train/dice_mean", dice_mean, step)
    for n, d in zip(self.names, dice):
      writer.add_scalar(f"train/dice_{n}", float(d), step)
    writer.add_scalar("train/grad_norm", float(np.mean([m["grad_norm"] for m in window])), step)
    writer.add_scalar("train/learning_rate", learning_rate, step)
    writer.add_scalar("train/steps_per_second", len(window) / max(elapsed, 1e-9), step)
    writer.add_scalar("train/skipped_steps", self.skipped, step)
