"""Orbax checkpoints in `<workdir>/checkpoints`, the resolved config beside them, and restore.

A training workdir holds:
  config.json      the resolved ml_collections config (rebuilds the model from the workdir alone)
  checkpoints/     orbax `CheckpointManager` steps; the latest few and the best by validation Dice
  tensorboard/     TensorBoard event files

Orbax writes each step into a temporary folder and renames it when complete, so a process killed
mid-write never leaves a checkpoint that a restore would pick. Once a step is committed, medjax
adds the size and SHA-256 of its files (`checkpoint_integrity`), so that a checkpoint damaged
later (a disk error, a partial copy) is recognised as damaged: a resumed run sets it aside and
continues from the newest intact one (`resume`), and a restore for prediction says so.
"""

import dataclasses
import json
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from medjax import checkpoint_integrity as integrity
from medjax import io
from medjax import models
from medjax.configs import default
from medjax.training import multihost
from medjax.training import state as train_state_lib

CONFIG_FILENAME = "config.json"
CHECKPOINT_DIRNAME = "checkpoints"
BEST_METRIC = "val_dice_mean"  # mean foreground Dice on the validation subjects


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes `config` as JSON to `<workdir>/config.json` (atomically)."""
  io.write_text(os.path.join(os.fspath(workdir), CONFIG_FILENAME),
                config.to_json_best_effort(indent=2, sort_keys=True))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """Reads the config a training run saved in `workdir`."""
  path = epath.Path(workdir) / CONFIG_FILENAME
  if not path.exists():
    raise FileNotFoundError(
        f"{path} not found: expected a medjax training workdir (holding {CONFIG_FILENAME} and "
        f"{CHECKPOINT_DIRNAME}/), or its {CHECKPOINT_DIRNAME}/ folder.")
  try:
    data = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); expected the config a training run saved.")
  if not isinstance(data, dict):
    raise ValueError(f"{path} holds {type(data).__name__}; expected the config a training run "
                     "saved (a JSON object).")
  # On top of the default config: a run saved before a key existed gets its default, so the
  # code reads every key directly.
  return _merge(default.get_config(), data)


def _merge(base: ml_collections.ConfigDict, data: dict[str, Any]) -> ml_collections.ConfigDict:
  """`base` with the saved values of `data` (saved keys unknown to `base` are kept too)."""
  for key, value in data.items():
    if isinstance(value, dict) and isinstance(base.get(key), ml_collections.ConfigDict):
      _merge(base[key], value)
      continue
    value = _to_config(value)
    try:
      base[key] = value
    except TypeError:  # the saved run had another type here (an older layout): the saved wins
      del base[key]
      base[key] = value
  return base


def _to_config(data: Any) -> Any:
  """JSON -> ConfigDict, turning lists back into tuples (crop sizes etc. are tuples)."""
  if isinstance(data, dict):
    return ml_collections.ConfigDict({k: _to_config(v) for k, v in data.items()})
  if isinstance(data, list):
    return tuple(_to_config(v) for v in data)
  return data


def create_manager(workdir: str, *, keep: int = 3, save_interval_steps: int = 1,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """A manager keeping the `keep` latest steps and the best one by validation Dice."""
  policy = ocp.checkpoint_managers.AnyPreservationPolicy([
      ocp.checkpoint_managers.LatestN(n=keep),
      ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=False, n=1,
                                    keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=save_interval_steps, preservation_policy=policy,
      best_fn=lambda m: m[BEST_METRIC], best_mode="max", keep_checkpoints_without_metrics=True,
      create=not read_only, read_only=read_only, cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(os.fspath(workdir), CHECKPOINT_DIRNAME)), options=options)


def complete_steps(directory: str | os.PathLike) -> list[int]:
  """Steps of the complete checkpoints in `directory`, read from disk, ascending.

  Orbax writes a step into `<step>.orbax-checkpoint-tmp*` and renames it to `<step>` only when
  every item is written, so the plain numeric folders are exactly the complete checkpoints.
  """
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory)
                if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def _write_error(manager: ocp.CheckpointManager, error: OSError) -> OSError:
  """The error to raise when writing a checkpoint fails (disk full, folder removed, ...)."""
  steps = complete_steps(manager.directory)
  kept = (f"The complete checkpoints on disk (steps {steps}) are intact; the latest, step "
          f"{steps[-1]}, is where a rerun of the same command resumes."
          if steps else "No complete checkpoint is on disk yet.")
  reason = error.strerror or str(error)
  where = f" ({error.filename})" if error.filename else ""
  return OSError(error.errno, f"Writing a checkpoint in {manager.directory} failed: {reason}"
                 f"{where}. {kept} Free space (or fix the folder) and rerun to resume.")


def save(manager: ocp.CheckpointManager, step: int, state: train_state_lib.TrainState, *,
         metrics: dict[str, float] | None = None, force: bool = False) -> bool:
  """Saves `state` at `step` (asynchronously); `metrics` rank it for the best-checkpoint policy.

  The previous (asynchronous) save is waited for first, as orbax does anyway, and its
  checksums are written.

  Raises:
    OSError: writing this or the previous (asynchronous) checkpoint failed; the message names
      the folder, the reason and the complete checkpoints left on disk.
  """
  wait_until_finished(manager)
  try:
    return manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                        metrics=metrics, force=force)
  except OSError as e:  # orbax re-raises a failed asynchronous write on the next save
    raise _write_error(manager, e) from e


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
  """Waits for the asynchronous save in flight, then writes the checksums of committed steps.

  A failed write raises like `save`. Only the first process writes checksums (the folder is
  shared by all hosts, like the checkpoint).
  """
  try:
    manager.wait_until_finished()
    if multihost.is_chief():
      _write_missing_checksums(manager.directory)
  except OSError as e:
    raise _write_error(manager, e) from e


def _write_missing_checksums(directory: os.PathLike) -> None:
  for step in complete_steps(directory):
    step_dir = os.path.join(os.fspath(directory), str(step))
    if not integrity.has_checksums(step_dir):
      try:
        integrity.write_checksums(step_dir)
      except FileNotFoundError:  # removed meanwhile by the preservation policy
        pass


def _abstract(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding),
                      tree)


def restore(manager: ocp.CheckpointManager, step: int, target: Any,
            sharding: jax.sharding.Sharding, *, check: bool = True) -> Any:
  """Restores step `step` into the structure of `target` (arrays or abstract arrays).

  Raises:
    ValueError: the checkpoint is damaged (its files disagree with the checksums written after
      it was committed; `check=False` skips this check) or cannot be restored into `target`.
  """
  directory = os.path.join(os.fspath(manager.directory), str(step))
  others = [s for s in complete_steps(manager.directory) if s != step]
  if check:
    verdict = integrity.verify(directory)
    if verdict.status == "damaged":
      raise ValueError(
          f"Checkpoint {directory} is damaged: {verdict.reason}. Other complete checkpoints: "
          f"steps {others}; choose one (predict --which STEP), or rerun the training command in "
          "the workdir, which sets the damaged checkpoint aside and resumes from the newest "
          "intact one.")
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(target, sharding))))
  except Exception as e:  # orbax raises many types for unreadable or mismatched checkpoints
    # The first line is the reason; tensorstore appends its whole spec after it.
    reason = str(e).strip().split("\n")[0][:500]
    earlier = [s for s in others if s < step]
    hint = (f" If this checkpoint is damaged, earlier complete ones are steps {earlier}: "
            f"to fall back to step {earlier[-1]}, delete {directory}."
            if earlier and not integrity.has_checksums(directory) else "")
    raise ValueError(
        f"Could not restore checkpoint {directory}: {type(e).__name__}: {reason} Expected a "
        "complete medjax checkpoint written with the same model and optimiser config (a "
        f"changed --config.model.* or optimizer cannot resume an existing workdir).{hint}"
        ) from e
  # Orbax gives optax's NamedTuple states back as plain tuples: put the leaves back into the
  # target's exact structure, so jitted steps see the same pytree and need no new compile.
  return jax.tree.unflatten(jax.tree.structure(target), jax.tree.leaves(restored.state))


@dataclasses.dataclass(frozen=True)
class SetAside:
  """A damaged checkpoint that `resume` moved out of `checkpoints/`."""
  directory: str  # where it was
  reason: str  # which file disagrees with its checksums, and how
  moved_to: str  # where it is now (on the first process; the others name the same place)


def resume(workdir: str, target: Any, sharding: jax.sharding.Sharding, *, keep: int
           ) -> tuple[ocp.CheckpointManager, Any | None, list[SetAside]]:
  """Opens the workdir's checkpoints and restores the newest intact one into `target`'s form.

  Damaged checkpoints (files that disagree with their checksums) newer than it are moved to
  `<workdir>/damaged_checkpoints/` first. Returns `(manager, state, set_aside)`: `state` is
  None when no checkpoint is left to resume from.
  """
  manager = create_manager(workdir, keep=keep)
  set_aside: list[SetAside] = []
  while (step := manager.latest_step()) is not None:
    directory = os.path.join(os.fspath(manager.directory), str(step))
    verdict = integrity.verify(directory)
    if verdict.status != "damaged":
      try:
        return manager, restore(manager, step, target, sharding, check=False), set_aside
      except ValueError:
        manager.close()  # no orbax threads left running while the error unwinds
        raise
    moved_to = os.path.join(workdir, integrity.DAMAGED_DIRNAME, str(step))
    multihost.barrier(f"verified checkpoint {step}")  # no host still reading it
    if multihost.is_chief():
      moved_to = integrity.set_aside(directory, workdir)
    multihost.barrier(f"set aside checkpoint {step}")  # every host sees it gone
    set_aside.append(SetAside(directory, verdict.reason, moved_to))
    manager.close()  # its list of steps still holds the one moved away
    manager = create_manager(workdir, keep=keep)
  return manager, None, set_aside


def select_step(manager: ocp.CheckpointManager, which: str) -> int:
  """The step to restore: 'latest', 'best' (falls back to latest before any evaluation) or a number."""
  if which == "latest":
    step = manager.latest_step()
  elif which == "best":
    step = manager.best_step()
    step = manager.latest_step() if step is None else step
  elif str(which).isdigit():
    step = int(which)
    if step not in manager.all_steps():
      raise ValueError(f"No checkpoint for step {step} in {manager.directory}; "
                       f"it holds steps {sorted(manager.all_steps())}.")
  else:
    raise ValueError(f"which={which!r}: expected 'best', 'latest' or a step number.")
  if step is None:
    raise FileNotFoundError(f"No complete checkpoint in {manager.directory}.")
  return step


def resolve_workdir(path: str) -> str:
  """Accepts a workdir or its checkpoints/ folder; returns the workdir."""
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path} does not exist: expected a medjax training workdir.")
  if (os.path.basename(path) == CHECKPOINT_DIRNAME
      and os.path.exists(os.path.join(os.path.dirname(path), CONFIG_FILENAME))):
    return os.path.dirname(path)
  return path


def restore_model(path: str, *, which: str = "best"
                  ) -> tuple[nn.Module, dict[str, Any], ml_collections.ConfigDict]:
  """Rebuilds the model of a training workdir and restores its variables.

  Args:
    path: a training workdir (or its `checkpoints/` folder).
    which: 'best' (highest validation Dice; the latest before any evaluation), 'latest', or a step.

  Returns:
    `(model, variables, config)`: `model.apply(variables, x, train=False)` maps an NDHWC input
    `[B, D, H, W, C]` to logits `[B, d, h, w, num_classes]`; `config` is the training config.

  Raises:
    ValueError: the chosen checkpoint is damaged or does not fit the saved config.
  """
  model, variables, config, _ = restore_model_and_step(path, which=which)
  return model, variables, config


def restore_model_and_step(path: str, *, which: str = "best"
                           ) -> tuple[nn.Module, dict[str, Any], ml_collections.ConfigDict, str]:
  """`restore_model`, and the folder of the checkpoint it restored (`.../checkpoints/<step>`)."""
  workdir = resolve_workdir(path)
  config = load_config(workdir)
  model = models.create_model(config)
  ckpt_dir = os.path.join(workdir, CHECKPOINT_DIRNAME)
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(f"{ckpt_dir} not found: the workdir holds no checkpoints.")
  abstract_state = jax.eval_shape(
      lambda: train_state_lib.create_train_state(config, model, jax.random.key(0)))
  manager = create_manager(workdir, read_only=True)
  try:
    step = select_step(manager, which)
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    state = restore(manager, step, abstract_state, sharding)
  finally:
    manager.close()
  return (model, train_state_lib.model_variables(state), config,
          os.path.join(ckpt_dir, str(step)))
