"""The training loop: `train_and_evaluate(config, workdir)`, resumable and crash-safe.

The loop dispatches one step ahead of the host: step n's metrics are read while step n + 1
runs (`MetricWindow`), except at the steps that evaluate, save, or stop on a signal, where the
host catches up first. Evaluation steps save a checkpoint with the validation metrics, saving
steps and a signal save one without; each is forced, and the TensorBoard log is flushed with it,
so what a checkpoint holds and what TensorBoard shows agree after a kill.

In a job of several processes (`multihost`) every process runs this loop on its slice of each
global batch; process 0 alone writes TensorBoard, metrics.jsonl, curves.png and the workdir's
files, orbax writes each checkpoint once for the job, and a signal seen by any process stops
all of them at the same step. Each process evaluates the whole validation set on its own
(replicated, not sharded), with its own copy of the parameters.
"""

import dataclasses
import itertools
import sys
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
from absl import logging

from medjax import checkpoint
from medjax import compile_cache
from medjax import input_pipeline
from medjax import models
from medjax import optim
from medjax import planning
from medjax import regions as regions_lib
from medjax.data import datasets
from medjax.data import preprocessing as preprocessing_lib
from medjax.training import checks
from medjax.training import curves
from medjax.training import evaluator as evaluator_lib
from medjax.training import mesh as mesh_lib
from medjax.training import metric_window
from medjax.training import multihost
from medjax.training import preemption
from medjax.training import state as state_lib
from medjax.training import step as step_lib
from medjax.training import tensorboard
from medjax.training import workdir as workdir_lib


@dataclasses.dataclass
class _Run:
  """What a run starts from: the resolved config, the restored state and the data."""
  config: ml_collections.ConfigDict
  workdir: str
  names: tuple[str, ...]  # of the Dice entries: the classes, or the regions
  preprocessing: preprocessing_lib.Preprocessing
  mesh: Any
  model: Any
  state: state_lib.TrainState
  train_rng: jax.Array
  manager: Any
  train_iter: Iterator[dict[str, np.ndarray]]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns final metrics.

  Rerunning the same command resumes where the last run stopped: the step, parameters,
  optimiser state and BatchNorm statistics come from the checkpoint; the data position and the
  random keys are functions of (seed, step), so the resumed run continues exactly.
  """
  import tqdm  # pylint: disable=g-import-not-at-top

  run = _start(config, workdir)
  config, state, manager = run.config, run.state, run.manager
  start_step = step = int(state.step)
  is_chief = jax.process_index() == 0
  step_fn = step_lib.make_train_step(config, run.mesh)  # looked up now: tests wrap it
  data_sharding = mesh_lib.batch_sharded(run.mesh)
  train_rng = mesh_lib.replicate(run.train_rng, run.mesh)
  writer = tensorboard.open_writer(run.workdir, config, start_step) if is_chief else None
  # metrics.jsonl and curves.png, for users without TensorBoard; cut back to start_step.
  metrics_log = curves.MetricsLog(run.workdir, start_step, run.names) if is_chief else None
  evaluator = evaluator_lib.Evaluator(config, run.model, preprocessing=run.preprocessing,
                                      names=run.names, writer=writer, workdir=run.workdir)
  progress = tqdm.tqdm(total=config.num_train_steps, initial=start_step, disable=not is_chief,
                       unit="step", dynamic_ncols=True)
  window = metric_window.MetricWindow(
      names=run.names, scored=slice(1, None) if config.dataset.regions is None else slice(None),
      learning_rate=optim.create_learning_rate_schedule(config),
      log_every_steps=config.log_every_steps, last_step=config.num_train_steps, writer=writer,
      progress=progress, metrics_log=metrics_log)
  eval_metrics: dict[str, float] = {}
  pending = None  # (step, metrics) of the last dispatched step, read one step behind
  stopping = False  # a signal, seen here or (several processes) by any process
  with preemption.StopRequest() as stop:
    try:
      while step < config.num_train_steps:
        batch = mesh_lib.global_batch(next(run.train_iter), data_sharding)
        state, metrics = step_fn(state, batch, train_rng)
        step += 1
        stopping = stop.signum is not None
        if jax.process_count() > 1:  # every process stops at the same step, or none does
          stopping = multihost.any_process(stopping, f"stop-{step}",
                                           previous=f"stop-{step - 1}")
        # Read the previous step's metrics while this one runs: at most one step in flight.
        if pending is not None:
          window.record(*_host_metrics(*pending, config, manager, start_step))
        pending = (step, metrics)
        is_eval = step % config.eval_every_steps == 0 or step == config.num_train_steps
        is_save = step % config.checkpoint_every_steps == 0
        if is_eval or is_save or stopping:
          window.record(*_host_metrics(*pending, config, manager, start_step))
          pending = None
        if is_eval:
          eval_metrics = evaluator(state, step)
          _log_eval(metrics_log, step, eval_metrics)
          if is_chief:
            progress.write(f"step {step}: " + " ".join(
                f"{k}={v:.4f}" for k, v in eval_metrics.items()))
          checkpoint.save(manager, step, state, metrics=eval_metrics, force=True)
        elif is_save or stopping:
          checkpoint.save(manager, step, state, force=True)
        if (is_eval or is_save or stopping) and writer is not None:
          writer.flush()  # the logs up to a checkpoint survive a kill, like the checkpoint
        if stopping:
          progress.write(f"Stopped by {_signal_name(stop.signum)} at step {step}; checkpoint "
                         "saved. Rerun the same command to resume.")
          break
    finally:
      checkpoint.wait_until_finished(manager)
      progress.close()
      if writer is not None:
        writer.flush()

  if not stopping and not eval_metrics:
    eval_metrics = evaluator(state, step)  # resumed at or past the last step: evaluate once
    _log_eval(metrics_log, step, eval_metrics)
  if metrics_log is not None:
    metrics_log.save_curves()  # also after a signal, with the train points since the last eval
  if writer is not None and eval_metrics:
    tensorboard.write_hparams(writer, config, eval_metrics, step)
    writer.close()
  manager.close()
  if stopping:
    raise KeyboardInterrupt(f"Training stopped by {_signal_name(stop.signum)} at step {step}.")
  return eval_metrics


def _signal_name(signum: int | None) -> str:
  """'signal 15', or (several processes) what stopped a process that saw no signal itself."""
  return f"signal {signum}" if signum is not None else "a signal to another process"


def _start(config: ml_collections.ConfigDict, workdir: str) -> _Run:
  """Checks, dataset, preprocessing, the initial or restored state, and the first batch.

  Only when all of these succeeded is anything written to the workdir (`config.json`, the
  preprocessing and the plan): a failed start leaves none, and never a config.json that
  disagrees with the checkpoints.
  """
  checks.check_config(config)
  workdir = workdir_lib.prepare_workdir(workdir)
  is_chief = jax.process_index() == 0
  # Several processes: the chief builds a missing dataset, the others then open it.
  builder = multihost.chief_first(lambda: input_pipeline.ensure_dataset(config), "dataset")
  dataset_names = datasets.names(builder)
  # The channels and classes the config leaves to the dataset are filled in here, and the
  # resolved config is what config.json records.
  config = input_pipeline.resolve_dataset_config(config, dataset_names)
  checks.check_model(config)
  checks.check_eval_split(config, builder)
  preprocessing = workdir_lib.run_preprocessing(config, builder, workdir)
  # config.plan: the crop, batch and levels planned from the prepared cases' median shape (or
  # the workdir's plan.json), before anything is built from them.
  config, plan = planning.plan_run(config, builder, preprocessing, workdir)

  mesh = mesh_lib.create_mesh()
  model = models.create_model(config)
  init_rng, train_rng = step_lib.init_and_train_keys(config.seed)
  state = step_lib.init_state(config, model, init_rng, mesh)
  manager, restored, set_aside = checkpoint.resume(
      workdir, state, mesh_lib.replicated(mesh), keep=config.keep_checkpoints)
  for damaged in set_aside:
    if is_chief:  # on stderr like absl's warnings, without their prefix
      print(f"Warning: checkpoint {damaged.directory} is damaged ({damaged.reason}); moved it "
            f"to {damaged.moved_to}.", file=sys.stderr, flush=True)
  if restored is not None:
    state = restored
    logging.info("Resumed from %s at step %d.", manager.directory, int(state.step))
    if is_chief:
      print(f"Resumed from {manager.directory} at step {int(state.step)}"
            + (" (the newest intact checkpoint)." if set_aside else "."), flush=True)
  elif set_aside and is_chief:
    print("Warning: no intact checkpoint is left; training starts again from step 0.",
          file=sys.stderr, flush=True)
  train_iter = input_pipeline.create_train_iterator(
      config, start_step=int(state.step), preprocessing=preprocessing)
  # Data errors (e.g. a crop larger than a subject) surface with the first batch.
  train_iter = itertools.chain([next(train_iter)], train_iter)
  # Every process has read what a resumed run saved before the chief writes (or rewrites) it.
  multihost.barrier("workdir-read")
  if is_chief:
    checkpoint.save_config(workdir, config)
    preprocessing.save(workdir)
    if plan is not None:
      planning.save(workdir, plan, config)
  regions = config.dataset.regions
  names = (dataset_names.class_names if regions is None else
           regions_lib.region_names(regions, dataset_names.regions))
  return _Run(config=config, workdir=workdir, names=tuple(names), preprocessing=preprocessing,
              mesh=mesh, model=model, state=state, train_rng=train_rng, manager=manager,
              train_iter=train_iter)


def _log_eval(metrics_log: curves.MetricsLog | None, step: int,
              metrics: dict[str, float]) -> None:
  """Appends an evaluation to `metrics.jsonl` and redraws `curves.png` (on the chief only)."""
  if metrics_log is not None:
    metrics_log.log_eval(step, metrics)
    metrics_log.save_curves()


def _host_metrics(step: int, metrics: dict[str, jax.Array], config: ml_collections.ConfigDict,
                  manager: Any, start_step: int) -> tuple[int, dict[str, Any]]:
  """Step `step`'s metrics on the host; a non-finite step stops the run unless `nonfinite` is
  'skip' (then `MetricWindow.record` counts it)."""
  metrics = jax.device_get(metrics)
  if not metrics["finite"] and config.nonfinite == "stop":
    raise FloatingPointError(
        f"Non-finite loss, gradient or updated parameters at step {step} (loss={metrics['loss']}). Training "
        f"stopped; the last good checkpoint is step {manager.latest_step()} in "
        f"{manager.directory}. Set --config.nonfinite=skip to skip such steps instead.")
  if step == start_step + 1:
    # The step is compiled and has run: hand the compiler's freed heap back to the OS
    # (hundreds of MB for a 3D U-Net on CPU).
    compile_cache.release_compiler_memory()
  return step, metrics
