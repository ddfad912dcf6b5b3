"""Training's user-facing entry point: `train_and_evaluate(config, workdir)`.

The code lives in the package `medjax.training`, one job per module: `state` (TrainState),
`mesh` (data-parallel mesh, global batches), `step` (the pure jitted train step, loss and
augmentation wiring), `evaluator` (whole-volume validation), `metric_window` and `tensorboard`
(what the loop logs), `preemption` (SIGTERM/SIGINT), `checks` and `workdir` (what is refused
before training starts), and `loop` (`train_and_evaluate`). This module keeps the documented
path `medjax.train_lib.train_and_evaluate` working.
"""

from medjax.training.loop import train_and_evaluate

__all__ = ["train_and_evaluate"]
