r"""Builds the iSeg-2017 TFDS dataset without TensorFlow (TFDS Python API, array_record files).

`tfds build` imports TensorFlow and apache_beam when it starts; this does the same build with
only the packages medjax installs:

  python -m medjax.data.build --manual_dir=~/data/iseg2017 --data_dir=~/tensorflow_datasets \
      --config=full,subvolumes

With `--builtin_data` and a `--manual_dir` that does not exist yet, built-in synthetic data in
the iSeg-2017 layout is written there first (see `medjax.data.synthetic`).

The build runs in a temporary folder inside `data_dir` and is moved into place only when it is
complete, so a failure (bad input file, interruption) leaves no partial dataset behind.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import tensorflow_datasets as tfds

from datasets_tfds.iseg2017 import iseg2017_dataset_builder as iseg2017_builder
from medjax.data import iseg
from medjax.data import synthetic

CONFIG_NAMES = tuple(c.name for c in iseg2017_builder.Builder.BUILDER_CONFIGS)


def dataset_dir(data_dir: str | os.PathLike,
                config: str | iseg2017_builder.Iseg2017Config = "full") -> pathlib.Path:
  """`data_dir/iseg2017/<config>/<version>`, where a built config lives."""
  name = config if isinstance(config, str) else config.name
  return (pathlib.Path(data_dir).expanduser() / "iseg2017" / name /
          str(iseg2017_builder.Builder.VERSION))


def is_built(data_dir: str | os.PathLike,
             config: str | iseg2017_builder.Iseg2017Config = "full") -> bool:
  """Whether `config` is fully built under `data_dir`."""
  return (dataset_dir(data_dir, config) / "dataset_info.json").is_file()


def _config(config_name: str | iseg2017_builder.Iseg2017Config):
  if isinstance(config_name, iseg2017_builder.Iseg2017Config):
    return config_name
  if config_name not in CONFIG_NAMES:
    raise ValueError(f"config_name must be one of {CONFIG_NAMES}, got {config_name!r}.")
  return config_name


def build_iseg2017(*, manual_dir: str | os.PathLike, data_dir: str | os.PathLike,
                   config_name: str | iseg2017_builder.Iseg2017Config = "full",
                   overwrite: bool = False) -> tfds.core.DatasetBuilder:
  """Builds one iSeg-2017 config from the files in `manual_dir` into `data_dir`.

  Args:
    manual_dir: the iSeg-2017 download (see `medjax.data.iseg.find_subjects`).
    data_dir: TFDS data folder; the result lands in `data_dir/iseg2017/<config>/1.0.0`.
    config_name: `full`, `subvolumes`, `subvolumes_128x128x64`, or an `Iseg2017Config`.
    overwrite: rebuild even when the config is already built.

  Returns:
    The builder, ready for `as_data_source(split)`.

  Raises:
    FileNotFoundError, ValueError: bad `manual_dir` or input files; nothing is left in
      `data_dir` for this config.
  """
  config = _config(config_name)
  data_dir = pathlib.Path(data_dir).expanduser()
  final = dataset_dir(data_dir, config)
  if is_built(data_dir, config) and not overwrite:
    logging.info("iseg2017/%s is already built at %s.", final.parent.name, final)
    return iseg2017_builder.Builder(config=config, data_dir=str(data_dir))
  # Check the folder layout before writing anything (file contents are checked while building).
  iseg.find_subjects(manual_dir)
  data_dir.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=".iseg2017-build-", dir=data_dir))
  try:
    builder = iseg2017_builder.Builder(config=config, data_dir=str(tmp))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(pathlib.Path(manual_dir).expanduser())))
    built = dataset_dir(tmp, config)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
      shutil.rmtree(final)
    try:
      built.rename(final)
    except OSError:
      if not is_built(data_dir, config):  # Another process may have finished the same build.
        raise
    meta = tmp / "iseg2017" / ".config"
    if meta.is_dir() and not (final.parent.parent / ".config").exists():
      shutil.copytree(meta, final.parent.parent / ".config", dirs_exist_ok=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return iseg2017_builder.Builder(config=config, data_dir=str(data_dir))


def _define_flags() -> None:
  """The command-line flags; defined only when run as a program, so importing this module from
  another absl program (e.g. medjax.train, which has its own --config) adds no flags."""
  flags.DEFINE_string("manual_dir", None, "The iSeg-2017 folder to build from.")
  flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "TFDS data folder.")
  flags.DEFINE_list("config", ["full"], f"Configs to build, from {CONFIG_NAMES}.")
  flags.DEFINE_bool("overwrite", False, "Rebuild configs that are already built.")
  flags.DEFINE_bool("builtin_data", False, "Write built-in synthetic iSeg-layout data to "
                    "--manual_dir first when that folder does not exist.")
  flags.DEFINE_list("builtin_shape", [str(s) for s in synthetic.REAL_SHAPE],
                    "Volume shape of the built-in data.")
  flags.DEFINE_integer("builtin_num_train", 10, "Built-in labelled subjects.")
  flags.DEFINE_integer("builtin_num_test", 0, "Built-in unlabelled subjects.")
  flags.DEFINE_integer("builtin_seed", 0, "Seed of the built-in data.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f.manual_dir:
    raise app.UsageError("--manual_dir is required.")
  manual_dir = pathlib.Path(f.manual_dir).expanduser()
  if f.builtin_data and not manual_dir.exists():
    logging.info("Writing built-in iSeg-layout data to %s.", manual_dir)
    synthetic.write_iseg_layout(
        manual_dir, shape=tuple(int(s) for s in f.builtin_shape),
        num_train=f.builtin_num_train, num_test=f.builtin_num_test, seed=f.builtin_seed)
  for name in f.config:
    builder = build_iseg2017(manual_dir=manual_dir, data_dir=f.data_dir, config_name=name,
                             overwrite=f.overwrite)
    print(f"iseg2017/{name}: {builder.data_dir} "
          f"({', '.join(f'{k}={v.num_examples}' for k, v in builder.info.splits.items())})")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
