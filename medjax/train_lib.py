"""Training and evaluation: a pure, jitted, data-parallel train step and the loop around it.

Data parallelism is `jax.jit` over a `Mesh` of all devices with the batch sharded on axis 'data'
and the state replicated. XLA averages the gradients and computes BatchNorm statistics over the
global batch, so 1 device and N devices give the same result for the same global batch (what a
`pmap` with `lax.pmean` over gradients and BatchNorm statistics would compute). The same code runs
on several hosts after `jax.distributed.initialize()`: each host feeds its slice of the batch.
"""

import functools
import itertools
import os
import signal
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from medjax import checkpoint
from medjax import compile_cache
from medjax import compile_options
from medjax import inference
from medjax import labels
from medjax import input_pipeline
from medjax import losses
from medjax import metrics as metrics_lib
from medjax import models
from medjax import optim
from medjax import outputs
from medjax import regions as regions_lib
from medjax.data import datasets
from medjax.training import state as train_state_lib
from medjax.data import preprocessing as preprocessing_lib

TrainState = train_state_lib.TrainState
NONFINITE_MODES = ("stop", "skip")


# ---------------------------------------------------------------------------------------------
# Pure pieces.


def create_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named 'data' over `devices` (default: every device of every host)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), ("data",))


def center_crop(x: jax.Array, spatial_shape: tuple[int, ...]) -> jax.Array:
  """Crops the spatial axes (1..3) of `x` `[B, D, H, W, ...]` to `spatial_shape`, centred.

  Models with valid convolutions (HyperDenseNet) predict only the centre of their input; the
  label is cropped the same way.
  """
  if tuple(x.shape[1:4]) == tuple(spatial_shape):
    return x
  starts = [(n - m) // 2 for n, m in zip(x.shape[1:4], spatial_shape)]
  slices = tuple(slice(s, s + m) for s, m in zip(starts, spatial_shape))
  return x[(slice(None), *slices)]


def loss_fn_from_config(config: ml_collections.ConfigDict) -> Callable[..., jax.Array]:
  """`config.loss.name` with the `config.loss` options that are set (None = the loss's default)."""
  options = {k: v for k, v in config.loss.items() if k != "name" and v is not None}
  if options.get("reduction", "mean") not in ("mean", "sum"):
    raise ValueError(f"config.loss.reduction={options['reduction']!r}: training and validation "
                     "need one number; use 'mean' or 'sum'.")
  return losses.get_loss(config.loss.name, **options)


def _augment_fn(config: ml_collections.ConfigDict) -> Callable[..., Any] | None:
  """`augment.augment_batch` with `config.augmentation`'s settings, or None when disabled."""
  settings = config.augmentation
  if isinstance(settings, bool):  # an experiment written before `augmentation.enabled`
    settings = ml_collections.ConfigDict({"enabled": settings})
  if not settings.enabled:
    return None
  from medjax import augment  # pylint: disable=g-import-not-at-top
  aug_config = augment.resolve_config({k: v for k, v in settings.items() if k != "enabled"})
  return functools.partial(augment.augment_batch, config=aug_config)


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               loss_fn: Callable[..., jax.Array], num_classes: int,
               augment_fn: Callable[..., Any] | None = None,
               regions: regions_lib.Regions | None = None,
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step on a global batch. Pure: same inputs, same outputs.

  Args:
    state: the replicated `TrainState`.
    batch: `{'image': float32 [B, D, H, W, C], 'label': int32 [B, D, H, W]}` (NDHWC).
    rng: the run's base key; the step's key is `fold_in(rng, state.step)`.

    regions: with region-based training, the class-id groups of the outputs: the loss and
      the Dice compare sigmoid outputs with `losses.region_targets(label, regions)`.

  Returns:
    The new state and metrics: `loss`, `dice` (soft, per class `[K]` or per region `[R]`),
    `grad_norm`, `finite` (1.0 when loss and gradients were finite). A non-finite step leaves
    the state unchanged apart from its step counter.
  """
  step_rng = jax.random.fold_in(rng, state.step)
  image, label = batch["image"], batch["label"]
  if augment_fn is not None:
    image, label = augment_fn(step_rng, image, label)

  def compute_loss(params):
    logits, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, image, train=True,
        mutable=["batch_stats"], rngs={"dropout": jax.random.fold_in(step_rng, 1)})
    target = center_crop(label, logits.shape[1:4])
    if regions is not None:
      target = losses.region_targets(target, regions)
    return loss_fn(logits, target), (logits, target, updates)

  (loss, (logits, target, updates)), grads = jax.value_and_grad(
      compute_loss, has_aux=True)(state.params)
  grad_norm = optax_global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updated = state.apply_gradients(grads=grads, batch_stats=updates["batch_stats"])
  # A non-finite loss must not poison the parameters: keep the old ones (the host stops or
  # skips, as configured). The step counter and the learning-rate schedule's count still
  # advance, so that the schedule stays a function of `state.step`.
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated,
                           state.replace(step=updated.step))
  new_state = new_state.replace(
      opt_state=optim.with_schedule_count(new_state.opt_state, updated.opt_state))
  metrics = {
      "loss": loss,
      "dice": (losses.per_class_dice(logits, target, num_classes=num_classes)
               if regions is None else
               losses.per_class_dice(jax.nn.sigmoid(logits.astype(jnp.float32)), target,
                                     num_classes=len(regions), softmax=False)),
      "grad_norm": grad_norm,
      "finite": finite.astype(jnp.float32),
  }
  return new_state, metrics


def optax_global_norm(tree: Any) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def make_train_step(config: ml_collections.ConfigDict, mesh: Mesh
                    ) -> Callable[[TrainState, dict[str, jax.Array], jax.Array],
                                  tuple[TrainState, dict[str, jax.Array]]]:
  """`train_step` jitted over `mesh`: batch sharded on 'data', state replicated and donated."""
  replicated = NamedSharding(mesh, P())
  data = NamedSharding(mesh, P("data"))
  step = functools.partial(train_step, loss_fn=loss_fn_from_config(config),
                           num_classes=config.dataset.num_classes,
                           augment_fn=_augment_fn(config), regions=config.dataset.regions)
  return jax.jit(step, in_shardings=(replicated, data, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=0,
                 compiler_options=compile_options.for_backend())


def init_state(config: ml_collections.ConfigDict, model: Any, rng: jax.Array,
               mesh: Mesh) -> TrainState:
  """Initialises the train state directly as replicated arrays on `mesh`."""
  init = jax.jit(functools.partial(train_state_lib.create_train_state, config, model),
                 out_shardings=NamedSharding(mesh, P()))
  return init(rng)


def init_and_train_keys(seed: int) -> tuple[jax.Array, jax.Array]:
  """The run's two root keys: parameter initialisation and the per-step key of `train_step`.

  Initialisation uses the 'rbg' generator: XLA compiles the default threefry sampler separately
  for every parameter shape, which costs tens of seconds on a CPU; rbg compiles in a fraction.
  """
  return jax.random.key(seed, impl="rbg"), jax.random.key(seed)


# ---------------------------------------------------------------------------------------------
# Evaluation on whole validation volumes.


def evaluate(model: Any, variables: dict[str, Any], subjects: list[dict[str, Any]],
             config: ml_collections.ConfigDict,
             predictor: Callable[..., jax.Array] | None = None, *,
             preprocessing: preprocessing_lib.Preprocessing | None = None,
             names: Sequence[str] | None = None) -> tuple[dict[str, float], list]:
  """Sliding-window segmentation of each case; Dice per class and the training loss.

  Each case (`input_pipeline.load_eval_subjects`) is segmented on the prepared grid; with
  `preprocessing`, its class probabilities are taken back to the file's grid
  (`Preprocessing.restore`) and scored there against the stored label, as a user would score
  the written prediction.

  `val_loss` is `config.loss` (the loss training minimises, with its options) of the blended
  probabilities against the label, so train and validation losses are the same quantity.

  With `config.dataset.regions` the outputs are region probabilities: each region is its
  probability > 0.5, scored with its own Dice (`val_dice_<region>`, `names` naming the
  regions), and the predicted class ids are painted from the regions (`regions.masks_to_classes`).

  Returns:
    `(metrics, predictions)`: metrics averaged over cases (`val_loss`, `val_dice_<class>`,
    `val_dice_mean` over the foreground classes or the regions), and the predicted class ids
    `[D, H, W]` per case, on the file's grid.
  """
  predictor = predictor or inference.make_predictor(
      model, outputs.output_activation(config))
  loss_fn = loss_fn_from_config(config)
  num_classes = config.dataset.num_classes
  regions = config.dataset.regions
  if names is None:
    names = (labels.default_class_names(num_classes) if regions is None else
             regions_lib.region_names(regions, {}))
  names = tuple(names)
  per_subject, predictions = [], []
  for subject in subjects:
    probs = inference.sliding_window_inference(
        jnp.asarray(subject["image"])[None], roi_size=tuple(config.eval.roi_size),
        sw_batch_size=config.eval.sw_batch_size,
        predictor=functools.partial(predictor, variables), overlap=config.eval.overlap,
        mode=config.eval.mode)
    probs = np.asarray(probs[0])
    if preprocessing is not None and "record" in subject:
      probs = preprocessing.restore(probs, subject["record"],
                                    class0_is_background=regions is None)
    label = np.asarray(subject["label"])
    pred = outputs.output_classes(probs, config).astype(np.int32)
    if regions is None:
      dice = metrics_lib.dice_per_class(pred, label, num_classes=num_classes)
      foreground = dice[1:]
      target = jnp.asarray(label)[None]
    else:
      masks = probs > regions_lib.THRESHOLD
      truth = regions_lib.region_masks(label, regions)
      dice = np.array([metrics_lib.dice(masks[..., r], truth[..., r])
                       for r in range(len(regions))])
      foreground = dice
      target = jnp.asarray(truth, jnp.float32)[None]
    row = {f"val_dice_{n}": float(d) for n, d in zip(names, dice)}
    row["val_dice_mean"] = float(np.nanmean(foreground))
    row["val_loss"] = float(loss_fn(outputs.probabilities_as_logits(probs, config)[None], target))
    per_subject.append(row)
    predictions.append(pred)
  metrics = {k: float(np.nanmean([r[k] for r in per_subject])) for k in per_subject[0]}
  return metrics, predictions


# ---------------------------------------------------------------------------------------------
# The loop.


def _check_config(config: ml_collections.ConfigDict) -> None:
  num_devices = jax.device_count()
  if config.batch_size % num_devices:
    raise ValueError(f"config.batch_size={config.batch_size} is not divisible by the "
                     f"{num_devices} devices; use a multiple of {num_devices}.")
  if config.nonfinite not in NONFINITE_MODES:
    raise ValueError(f"config.nonfinite={config.nonfinite!r}; expected one of {NONFINITE_MODES}.")
  for key in ("num_train_steps", "log_every_steps", "eval_every_steps",
              "checkpoint_every_steps"):
    if config[key] <= 0:
      raise ValueError(f"config.{key}={config[key]}: expected a positive integer.")
  # Unknown names and input shapes the network cannot take fail here, before anything is
  # written to the workdir or the dataset is built. Each check is cheap: no compilation. When
  # the channels or classes come from the dataset, the model checks wait for it
  # (`_check_model`).
  models.create_model(config)  # the name and keys (num_classes may still be None)
  loss_fn_from_config(config)
  optim.create_optimizer(config)
  if config.dataset.num_classes is not None and config.dataset.num_modalities is not None:
    _check_model(config)


def _check_model(config: ml_collections.ConfigDict) -> None:
  """The model's fields, the regions, and the crop and ROI sizes it can take (shapes only)."""
  if config.dataset.regions is not None:
    regions_lib.check_regions(config.dataset.regions, config.dataset.num_classes)
    if outputs.output_activation(config) != "sigmoid":
      raise ValueError(
          "config.dataset.regions trains one sigmoid output per region, but config.loss "
          f"{config.loss.name!r} uses a softmax: set --config.loss.sigmoid=True "
          "--config.loss.softmax=False (or --config.loss.name=binary_cross_entropy).")
  model = models.create_model(config)
  _check_input_shape(config, model, "dataset.crop_size", config.dataset.crop_size)
  _check_input_shape(config, model, "eval.roi_size", config.eval.roi_size)


def _check_eval_split(config: ml_collections.ConfigDict, builder: Any) -> None:
  """Validation needs labelled cases: refuse an unlabelled or missing split before training."""
  if input_pipeline.validates_on_training_cases(config.dataset):
    return  # validation cases chosen from the labelled training cases
  split = config.eval.split
  if split not in builder.info.splits:
    raise ValueError(f"config.eval.split={split!r} is not a split of {builder.name} at "
                     f"{builder.data_dir} (it has {sorted(builder.info.splits)}); or set "
                     "config.dataset.fold to validate on a fold of the training cases.")
  if split == "test":
    raise ValueError("config.eval.split='test': the test split has no labels to validate "
                     "against; use 'validation' or config.dataset.fold.")


def _run_preprocessing(config: ml_collections.ConfigDict, builder: Any,
                       workdir: str) -> preprocessing_lib.Preprocessing:
  """The workdir's saved `Preprocessing` (a resumed run), else one fitted to the training set."""
  saved = preprocessing_lib.load(workdir)
  if saved is None:
    return input_pipeline.fit_preprocessing(config, builder)
  # What the config decides without looking at the data must agree with the saved run.
  wanted = preprocessing_lib.config_choices(config.dataset, datasets.names(builder))
  for field, value in wanted.items():
    if getattr(saved, field) != value:
      raise ValueError(
          f"{workdir}/{preprocessing_lib.FILENAME} was written with {field}="
          f"{getattr(saved, field)!r}, but the config asks for {value!r}; use the run's own "
          "config or a new --workdir.")
  return saved


def _check_input_shape(config: ml_collections.ConfigDict, model: Any, key: str,
                       spatial: Any) -> None:
  """Traces `model.init` on `[1, *spatial, num_modalities]` (shapes only) to catch sizes the
  network cannot take, e.g. not divisible by its down-sampling factor."""
  spatial = tuple(spatial)
  if len(spatial) != 3 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in spatial):
    raise ValueError(f"config.{key}={spatial}: expected 3 positive integers (D, H, W).")
  x = jax.ShapeDtypeStruct((1, *spatial, config.dataset.num_modalities), jnp.float32)
  try:
    jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  except ValueError as e:
    raise ValueError(f"config.{key}={spatial} does not fit model {config.model.name!r}: "
                     f"{e}") from e


def prepare_workdir(workdir: str) -> str:
  """Creates `workdir` and checks that it is writable (before any expensive work)."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise PermissionError(f"Workdir {workdir} is not writable ({e.strerror}); pass a writable "
                          "--workdir.") from e
  return workdir


class _StopRequest:
  """Turns SIGTERM/SIGINT into a flag so the loop can checkpoint before exiting."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:  # a second Ctrl-C stops at once
      raise KeyboardInterrupt
    self.signum = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _global_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles each host's slice of the batch into one global array sharded on 'data'."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def _log_eval_images(writer, workdir: str, step: int, subjects, predictions) -> None:
  from medjax import viz  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
  for subject, pred in zip(subjects, predictions):
    case_id = subject["case_id"]
    image = viz.comparison_figure_array(subject["raw_image"], subject["label"], pred)
    writer.add_image(f"val/{case_id}", image, step, dataformats="HWC")
    viz.save_comparison_png(os.path.join(workdir, "eval", f"{case_id}_step-{step}.png"),
                            subject["raw_image"], subject["label"], pred)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns final metrics.

  Rerunning the same command resumes where the last run stopped: the step, parameters,
  optimiser state and BatchNorm statistics come from the checkpoint; the data position and the
  random keys are functions of (seed, step), so the resumed run continues exactly.
  """
  import tensorboardX  # pylint: disable=g-import-not-at-top
  import tqdm  # pylint: disable=g-import-not-at-top

  _check_config(config)
  workdir = prepare_workdir(workdir)
  is_chief = jax.process_index() == 0
  builder = input_pipeline.ensure_dataset(config)
  dataset_names = datasets.names(builder)
  # The channels and classes the config leaves to the dataset are filled in here, and the
  # resolved config is what config.json records.
  config = input_pipeline.resolve_dataset_config(config, dataset_names)
  _check_model(config)
  _check_eval_split(config, builder)
  preprocessing = _run_preprocessing(config, builder, workdir)

  mesh = create_mesh()
  model = models.create_model(config)
  init_rng, train_rng = init_and_train_keys(config.seed)
  state = init_state(config, model, init_rng, mesh)
  replicated = NamedSharding(mesh, P())
  manager = checkpoint.create_manager(workdir, keep=config.keep_checkpoints)
  if manager.latest_step() is not None:
    state = checkpoint.restore(manager, manager.latest_step(), state, replicated)
    logging.info("Resumed from %s at step %d.", manager.directory, int(state.step))
    if is_chief:
      print(f"Resumed from {manager.directory} at step {int(state.step)}.", flush=True)
  start_step = int(state.step)
  train_iter: Iterator[dict[str, np.ndarray]] = input_pipeline.create_train_iterator(
      config, start_step=start_step, preprocessing=preprocessing)
  # Data errors (e.g. a crop larger than a subject) surface with the first batch. Only now,
  # with the checkpoint restored and the data read, is anything written to the workdir: a
  # failed start leaves no config.json, and never one that disagrees with the checkpoints.
  train_iter = itertools.chain([next(train_iter)], train_iter)
  if is_chief:
    checkpoint.save_config(workdir, config)
    preprocessing.save(workdir)

  step_fn = make_train_step(config, mesh)
  data_sharding = NamedSharding(mesh, P("data"))
  train_rng = jax.device_put(train_rng, replicated)
  # After a resume, TensorBoard hides what a killed run logged past the checkpoint (purge_step),
  # so the curves show each step once.
  writer = tensorboardX.SummaryWriter(
      os.path.join(workdir, "tensorboard"),
      purge_step=start_step + 1 if start_step else None) if is_chief else None
  if writer is not None and start_step == 0:
    writer.add_text("config", "```\n" + config.to_json_best_effort(indent=2) + "\n```", 0)
  regions = config.dataset.regions
  names = (dataset_names.class_names if regions is None else
           regions_lib.region_names(regions, dataset_names.regions))
  # The classes the mean Dice averages: the foreground classes, or every region.
  scored = slice(1, None) if regions is None else slice(None)
  eval_subjects = None
  predictor = inference.make_predictor(model, outputs.output_activation(config))
  eval_metrics: dict[str, float] = {}
  skipped = 0

  def run_eval(step: int) -> dict[str, float]:
    nonlocal eval_subjects
    if eval_subjects is None:
      eval_subjects = input_pipeline.load_eval_subjects(config, split=config.eval.split,
                                                        preprocessing=preprocessing)
    metrics, predictions = evaluate(
        model, train_state_lib.model_variables(state), eval_subjects, config, predictor,
        preprocessing=preprocessing, names=names)
    if writer is not None:
      for k, v in metrics.items():
        writer.add_scalar(k.replace("val_", "val/"), v, step)
      _log_eval_images(writer, workdir, step, eval_subjects, predictions)
    return metrics

  progress = tqdm.tqdm(total=config.num_train_steps, initial=start_step, disable=not is_chief,
                       unit="step", dynamic_ncols=True)
  pending = None  # (step, metrics) of the last dispatched step, read one step behind
  window: list[dict[str, Any]] = []
  window_start = time.perf_counter()

  def record(step: int, metrics: dict[str, jax.Array]) -> None:
    """Host side of step `step` (count of completed steps): non-finite check and logging."""
    nonlocal skipped, window_start
    metrics = jax.device_get(metrics)
    if not metrics["finite"]:
      if config.nonfinite == "stop":
        raise FloatingPointError(
            f"Non-finite loss or gradient at step {step} (loss={metrics['loss']}). Training "
            f"stopped; the last good checkpoint is step {manager.latest_step()} in "
            f"{manager.directory}. Set --config.nonfinite=skip to skip such steps instead.")
      skipped += 1
      logging.warning("Skipped step %d: non-finite loss or gradient (%d skipped).", step, skipped)
    else:
      window.append(metrics)
    if step == start_step + 1:
      # The step is compiled and has run: hand the compiler's freed heap back to the OS
      # (hundreds of MB for a 3D U-Net on CPU).
      compile_cache.release_compiler_memory()
    progress.update(1)
    if window and (step % config.log_every_steps == 0 or step == config.num_train_steps):
      elapsed = time.perf_counter() - window_start
      loss = float(np.mean([m["loss"] for m in window]))
      dice = np.mean([m["dice"] for m in window], axis=0)
      progress.set_postfix(loss=f"{loss:.4f}", dice=f"{np.mean(dice[scored]):.3f}")
      if writer is not None:
        writer.add_scalar("train/loss", loss, step)
        writer.add_scalar("train/dice_mean", float(np.mean(dice[scored])), step)
        for n, d in zip(names, dice):
          writer.add_scalar(f"train/dice_{n}", float(d), step)
        writer.add_scalar("train/grad_norm", float(np.mean([m["grad_norm"] for m in window])),
                          step)
        # The rate step `step` used: its update ran with the schedule's count at step - 1.
        writer.add_scalar("train/learning_rate", float(lr_schedule(step - 1)), step)
        writer.add_scalar("train/steps_per_second", len(window) / max(elapsed, 1e-9), step)
        writer.add_scalar("train/skipped_steps", skipped, step)
      window.clear()
      window_start = time.perf_counter()

  lr_schedule = optim.create_learning_rate_schedule(config)
  step = start_step
  with _StopRequest() as stop:
    try:
      while step < config.num_train_steps:
        batch = _global_batch(next(train_iter), data_sharding)
        state, metrics = step_fn(state, batch, train_rng)
        step += 1
        # Read the previous step's metrics while this one runs: at most one step in flight.
        if pending is not None:
          record(*pending)
        pending = (step, metrics)
        is_eval = step % config.eval_every_steps == 0 or step == config.num_train_steps
        is_save = step % config.checkpoint_every_steps == 0
        if is_eval or is_save or stop.signum is not None:
          record(*pending)
          pending = None
        if is_eval:
          eval_metrics = run_eval(step)
          progress.write(f"step {step}: " + " ".join(
              f"{k}={v:.4f}" for k, v in eval_metrics.items()))
          checkpoint.save(manager, step, state, metrics=eval_metrics, force=True)
        elif is_save or stop.signum is not None:
          checkpoint.save(manager, step, state, force=True)
        if (is_eval or is_save or stop.signum is not None) and writer is not None:
          writer.flush()  # the logs up to a checkpoint survive a kill, like the checkpoint
        if stop.signum is not None:
          progress.write(f"Stopped by signal {stop.signum} at step {step}; checkpoint saved. "
                         "Rerun the same command to resume.")
          break
    finally:
      checkpoint.wait_until_finished(manager)
      progress.close()
      if writer is not None:
        writer.flush()

  if stop.signum is None and not eval_metrics:
    # Resumed at or past the last step: evaluate the final state once.
    eval_metrics = run_eval(step)
  if writer is not None and eval_metrics:
    writer.add_hparams(_flat_hparams(config), {f"hparam/{k}": v for k, v in eval_metrics.items()},
                       name="hparams", global_step=step)
    writer.close()
  manager.close()
  if stop.signum is not None:
    raise KeyboardInterrupt(f"Training stopped by signal {stop.signum} at step {step}.")
  return eval_metrics


def _flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  flat = {}

  def walk(prefix, node):
    for k, v in node.items():
      key = f"{prefix}{k}"
      if isinstance(v, (dict, ml_collections.ConfigDict)):
        walk(key + ".", v)
      elif isinstance(v, (int, float, str, bool)):
        flat[key] = v
      else:
        flat[key] = str(v)
  walk("", config.to_dict())
  return flat
