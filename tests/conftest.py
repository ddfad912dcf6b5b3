"""Shared fixtures: a tiny built-in iSeg-2017 folder and its TFDS `full` build, made once.

- `iseg_raw_dir`: an iSeg-2017-layout folder (download layout: `iSeg-2017-Training/` with
  subjects 1-3 and labels, `iSeg-2017-Testing/` with subject 11) of TINY_SHAPE volumes.
- `iseg_data_dir`: a TFDS data_dir holding `iseg2017/full` built from it (train = subjects 2, 3;
  validation = subject 1; test = subject 11).
- `compile_cache_dir` (automatic): the tests, in-process and their command-line runs, share one
  persistent compilation cache in a temporary folder (`MEDJAX_COMPILE_CACHE_DIR`), not the user's.
- `iseg_config`: the seed experiment config pointed at those two folders, with 16^3 crops and a
  global batch of 2; a fresh copy per test, so tests may change it.

All are read-only for tests: copy before corrupting files.
"""

import copy
import os
import pathlib

import ml_collections
import pytest

from medjax import compile_cache
from medjax.configs import cli
from medjax.data import build
from medjax.data import synthetic

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY_SHAPE = (24, 28, 32)
TINY_CROP = (16, 16, 16)
TINY_TRAIN_SUBJECTS = (2, 3)
TINY_VALIDATION_SUBJECTS = (1,)
TINY_TEST_SUBJECTS = (11,)


def load_experiment_config(name: str = "iseg2017_unet3d") -> ml_collections.ConfigDict:
  """`experiments/<name>.py:get_config()`, loaded by path like `--config` does."""
  return cli.load_config_file(str(REPO / "experiments" / f"{name}.py"))


@pytest.fixture(scope="session", autouse=True)
def compile_cache_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("jax_cache")
  saved = os.environ.get(compile_cache.ENV_VAR)
  os.environ[compile_cache.ENV_VAR] = str(path)
  # In-process runs share it too: the end-to-end tests build the same train and eval steps many
  # times (a resumed run compiles what the straight run compiled), and XLA's CPU compiler is most
  # of their time.
  compile_cache.enable(path)
  yield path
  if saved is None:
    os.environ.pop(compile_cache.ENV_VAR, None)
  else:
    os.environ[compile_cache.ENV_VAR] = saved


@pytest.fixture(scope="session")
def iseg_raw_dir(tmp_path_factory) -> pathlib.Path:
  """A tiny iSeg-2017 download (3 labelled subjects + 1 test subject, TINY_SHAPE, seed 0)."""
  root = tmp_path_factory.mktemp("iseg_raw") / "iseg2017"
  return synthetic.write_iseg_layout(root, shape=TINY_SHAPE, num_train=3, num_test=1, seed=0)


@pytest.fixture(scope="session")
def iseg_data_dir(iseg_raw_dir, tmp_path_factory) -> pathlib.Path:
  """A TFDS data_dir with `iseg2017/full` built from `iseg_raw_dir`."""
  data_dir = tmp_path_factory.mktemp("tensorflow_datasets")
  build.build_iseg2017(manual_dir=iseg_raw_dir, data_dir=data_dir, config_name="full")
  return data_dir


@pytest.fixture(scope="session")
def _iseg_base_config(iseg_raw_dir, iseg_data_dir) -> ml_collections.ConfigDict:
  config = load_experiment_config()
  config.dataset.data_dir = os.fspath(iseg_data_dir)
  config.dataset.manual_dir = os.fspath(iseg_raw_dir)
  config.dataset.crop_size = TINY_CROP
  config.batch_size = 2
  return config


@pytest.fixture
def iseg_config(_iseg_base_config) -> ml_collections.ConfigDict:
  """The seed experiment config on the tiny built dataset (16^3 crops, batch 2); a fresh copy."""
  return copy.deepcopy(_iseg_base_config)
