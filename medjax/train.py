r"""Trains a medjax model from an ml_collections config file.

  python -m medjax.train --config experiments/quickstart.py [--workdir DIR] [--config.key=value]

Every key is declared, with its meaning, in medjax/configs/default.py; an unknown key is an
error that names the nearest keys, and `--config.key=None` sets a key that may be None.

Without --workdir, runs go to `workdirs/<config file name>`. Rerunning the same command resumes
from the latest checkpoint in the workdir.

Several processes (hosts) as one job, without a cluster manager: the same command in each, with

  --coordinator_address=HOST:PORT --num_processes=N --process_id=I

(or MEDJAX_COORDINATOR_ADDRESS, MEDJAX_NUM_PROCESSES, MEDJAX_PROCESS_ID); on SLURM and other
clusters JAX detects, MEDJAX_DISTRIBUTED=1 instead. See docs/scale_out.md.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from medjax import cli_errors
from medjax import compile_cache
from medjax.configs import cli
from medjax.training import loop
from medjax.training import multihost

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to an experiment config file (experiments/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, TensorBoard logs and the resolved config "
    "(default: workdirs/<config name>).")
_COMPILE_CACHE = flags.DEFINE_string(
    "compile_cache", None, "Directory of the persistent XLA compilation cache, so that a rerun "
    "loads the compiled steps instead of compiling them (default: $MEDJAX_COMPILE_CACHE_DIR or "
    "~/.cache/medjax/jax_cache); 'off' to disable.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Several processes: HOST:PORT of process 0, which runs the "
    f"coordinator there; the same in every process (default: ${multihost.ENV_ADDRESS}).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Several processes: how many form the job "
    f"(default: ${multihost.ENV_NUM_PROCESSES}).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "Several processes: this one's id in 0..num_processes-1; process 0 is "
    f"the coordinator and writes the logs (default: ${multihost.ENV_PROCESS_ID}).")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "initialization_timeout", 120, "Several processes: seconds to wait for the coordinator and "
    "for every process to join.")
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout", 100, "Several processes: seconds without a heartbeat from a process "
    "(killed, host lost) before JAX stops the others.")


def default_workdir(config_path: str) -> str:
  """`workdirs/<config name>`, and `-<argument>` for `path:argument` (a recipe): another recipe
  of the same experiment must not resume this one's checkpoints."""
  path, _, argument = config_path.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join("workdirs", f"{name}-{argument}" if argument else name)


def main(argv: list[str]) -> None:
  cli_errors.no_positional_arguments(argv)
  if not flags.FLAGS["verbosity"].present:
    # Keep the console to the progress bar and results; `-v 0` brings back INFO logs.
    logging.set_verbosity(logging.WARNING)
  # Several processes: join the job before anything touches the devices.
  with cli_errors.exit_on_error("medjax.train", (ValueError, ConnectionError)):
    multihost.initialize(
        multihost.settings_from(coordinator_address=_COORDINATOR.value,
                                num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value),
        initialization_timeout=_INIT_TIMEOUT.value, heartbeat_timeout=_HEARTBEAT_TIMEOUT.value)
  compile_cache.enable_from_flag(_COMPILE_CACHE.value, prog="medjax.train")
  config = _CONFIG.value
  workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename)
  logging.info("JAX processes: %d, local devices: %s", jax.process_count(), jax.local_devices())
  processes = (f" in {jax.process_count()} processes (this is process {jax.process_index()})"
               if jax.process_count() > 1 else "")
  print(f"medjax: training {config.model.name} on {jax.device_count()} {jax.default_backend()} "
        f"device(s){processes}; workdir {os.path.abspath(workdir)}", flush=True)
  try:
    with cli_errors.exit_on_error("medjax.train", (ValueError, OSError, FloatingPointError)):
      metrics = loop.train_and_evaluate(config, workdir)
  except KeyboardInterrupt as e:
    print(str(e) or "Interrupted.", file=sys.stderr)
    sys.exit(130)
  except BaseException as e:
    if jax.process_count() > 1 and not (isinstance(e, SystemExit) and not e.code):
      # An error in this process alone leaves the others waiting for it; JAX's exit would
      # wait for them (up to its 5-minute shutdown timeout). Past the heartbeat timeout this
      # process exits at once, and the others stop within theirs.
      multihost.exit_after(_HEARTBEAT_TIMEOUT.value, e.code if isinstance(e, SystemExit) else 1)
    raise
  if metrics and multihost.is_chief():
    names = [k[len("val_dice_"):] for k in metrics
             if k.startswith("val_dice_") and k != "val_dice_mean"]
    if config.dataset.regions is None:
      names = names[1:]  # the foreground classes; regions have no background
    print("\nValidation Dice per tissue:" if config.dataset.regions is None else
          "\nValidation Dice per region:")
    for name in names:
      print(f"  {name:<10} {metrics[f'val_dice_{name}']:.4f}")
    print(f"  {'mean':<10} {metrics['val_dice_mean']:.4f}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, prog="medjax.train"))
