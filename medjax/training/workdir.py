"""The run's working directory: created and probed for writing first, then read for a resume."""

import os
import socket
from typing import Any

import ml_collections

from medjax import input_pipeline
from medjax.data import datasets
from medjax.data import preprocessing as preprocessing_lib
from medjax.training import checks


def prepare_workdir(workdir: str) -> str:
  """Creates `workdir` and checks that it is writable (before any expensive work)."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(workdir, exist_ok=True)
    # Host and pid: the processes of a multi-host job probe one shared folder at once.
    probe = os.path.join(workdir, f".write_test_{socket.gethostname()}_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise PermissionError(f"Workdir {workdir} is not writable ({e.strerror}); pass a writable "
                          "--workdir.") from e
  return workdir


def run_preprocessing(config: ml_collections.ConfigDict, builder: Any,
                      workdir: str) -> preprocessing_lib.Preprocessing:
  """The workdir's saved `Preprocessing` (a resumed run), else one fitted to the training set."""
  saved = preprocessing_lib.load(workdir)
  if saved is None:
    return input_pipeline.fit_preprocessing(config, builder)
  checks.check_saved_preprocessing(
      saved, preprocessing_lib.config_choices(config.dataset, datasets.names(builder)), workdir)
  return saved
