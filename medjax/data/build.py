r"""Builds medjax's TFDS datasets without TensorFlow (TFDS Python API, array_record files).

`tfds build` imports TensorFlow and apache_beam when it starts; this does the same build with
only the packages medjax installs, for every dataset under `datasets_tfds/`:

  python -m medjax.data.build --dataset=iseg2017 --manual_dir=~/data/iseg2017 \
      --data_dir=~/tensorflow_datasets --config=full,subvolumes
  python -m medjax.data.build --dataset=segmentation3d --manual_dir=~/data/Dataset001_Brain

The builders are found by name (`datasets_tfds.<name>.<name>_dataset_builder`, TFDS's own
layout), so this module does not import any of them until asked to build or open one.

`segmentation3d` (any dataset in the nnU-Net v2 raw or Medical Segmentation Decathlon layout)
is built under a config named after the dataset (`dataset_config_name`: its dataset.json name,
e.g. `dataset001_brain`), so several datasets share one data_dir; `tfds build segmentation3d`
writes its `default` config instead.

With `--builtin_data` and a `--manual_dir` that does not exist yet, built-in synthetic data in
the dataset's layout is written there first (see `medjax.data.synthetic`).

The build runs in a temporary folder inside `data_dir` and is moved into place only when it is
complete, so a failure (bad input file, interruption) leaves no partial dataset behind.

Datasets of thousands of scans build on Apache Beam (`pip install 'medjax[beam]'`) with
`--beam_pipeline_options`, parsed as `tfds build` parses its flag of that name:

  python -m medjax.data.build --dataset=segmentation3d --manual_dir=~/data/Dataset001_Brain \
      --beam_pipeline_options=runner=DirectRunner,direct_num_workers=8,\
direct_running_mode=multi_processing

(or a Dataflow / Spark / Flink runner's options). The records are the in-process build's, record
for record; an input file that fails on a worker gives the in-process build's one-line error.
Both builds write the dataset fingerprint (`medjax.data.fingerprint`) beside the records.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import tensorflow_datasets as tfds

from medjax.data import iseg
from medjax.data import layouts
from medjax.data import synthetic

DATASETS = ("iseg2017", "segmentation3d", "iseg2019", "mrbrains2018", "brats")
GENERIC = "segmentation3d"
ISEG2017_CONFIG_NAMES = ("full", "subvolumes", "subvolumes_128x128x64")
# Kept for callers of the iSeg-only version of this module.
CONFIG_NAMES = ISEG2017_CONFIG_NAMES


def builder_class(name: str) -> type[tfds.core.GeneratorBasedBuilder]:
  """The `Builder` class of dataset `name` (imported on first use)."""
  if name not in DATASETS:
    raise ValueError(f"config.dataset.name={name!r}: expected one of {DATASETS}.")
  module = importlib.import_module(f"datasets_tfds.{name}.{name}_dataset_builder")
  return module.Builder


def dataset_config_name(manual_dir: str | os.PathLike) -> str:
  """The `segmentation3d` config name of the dataset in `manual_dir`: its name, snake_case."""
  description = layouts.read_dataset(manual_dir)
  slug = re.sub(r"[^0-9a-z]+", "_", description.name.lower()).strip("_")
  return slug or "dataset"


def resolve_config(name: str, config: Any, manual_dir: str | os.PathLike | None = None):
  """The builder config to build or open: a config object or name; '' = the dataset's default.

  For `segmentation3d`, '' names the config after the dataset in `manual_dir`.
  """
  cls = builder_class(name)
  if isinstance(config, tfds.core.BuilderConfig):
    return config
  if not config:
    if name == GENERIC and manual_dir:
      config = dataset_config_name(manual_dir)
    elif not cls.BUILDER_CONFIGS:
      return None
    else:
      config = getattr(cls, "DEFAULT_BUILDER_CONFIG_NAME", None) or cls.BUILDER_CONFIGS[0].name
  known = {c.name: c for c in cls.BUILDER_CONFIGS}
  if config in known:
    return known[config]
  if name == GENERIC:  # one config per dataset, all alike but for the name
    return dataclasses.replace(cls.BUILDER_CONFIGS[0], name=str(config),
                               description=f"The dataset {config}.")
  raise ValueError(f"config.dataset.builder_config={config!r} is not a config of {name}; it has "
                   f"{sorted(known)}.")


def dataset_dir(data_dir: str | os.PathLike, config: Any = "full",
                name: str = "iseg2017") -> pathlib.Path:
  """`data_dir/<name>/<config>/<version>`, where a built config lives."""
  config = resolve_config(name, config)
  parts = [name] + ([config.name] if config is not None else [])
  return pathlib.Path(data_dir).expanduser().joinpath(*parts, str(builder_class(name).VERSION))


def is_built(data_dir: str | os.PathLike, config: Any = "full", name: str = "iseg2017") -> bool:
  """Whether `config` of dataset `name` is fully built under `data_dir`."""
  return (dataset_dir(data_dir, config, name) / "dataset_info.json").is_file()


def open_builder(name: str, data_dir: str | os.PathLike, config: Any = None):
  """The builder of a built dataset, ready for `as_data_source(split)`."""
  config = resolve_config(name, config)
  kwargs = {} if config is None else {"config": config}
  return builder_class(name)(data_dir=os.fspath(pathlib.Path(data_dir).expanduser()), **kwargs)


def pipeline_options(options: Any):
  """`--beam_pipeline_options` text (`runner=DirectRunner,direct_num_workers=2`) -> Beam's
  `PipelineOptions`, parsed as `tfds build` parses it; a `PipelineOptions` passes through.

  Imports apache_beam (`pip install medjax[beam]`).
  """
  if not isinstance(options, str):
    return options
  try:
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError(f"beam_pipeline_options={options!r} needs Apache Beam: pip install "
                     "'medjax[beam]' (or apache-beam).") from e
  return beam.options.pipeline_options.PipelineOptions(
      flags=[f"--{o.strip()}" for o in options.split(",") if o.strip()])


# How a Beam worker's exception comes back: in process (DirectRunner in_memory) as the same
# type with " [while running 'train/Load']" appended; from worker processes
# (multi_processing, portable runners) as a RuntimeError whose text is the worker's traceback,
# holding "ValueError: <message>" lines.
_WORKER_ERROR = re.compile(
    r"^(ValueError|FileNotFoundError): (.+?)(?: \[while running '[^']*'\])?$", re.MULTILINE)
_BEAM_SUFFIX = re.compile(r" \[while running '[^']*'\]$")


def worker_error(e: BaseException) -> ValueError | FileNotFoundError | None:
  """The input-file error a Beam worker raised, as the one-line error the in-process build
  gives (`ValueError` / `FileNotFoundError` naming the file), or None for any other error."""
  if isinstance(e, (ValueError, FileNotFoundError)):
    return type(e)(_BEAM_SUFFIX.sub("", str(e).strip()))
  found = _WORKER_ERROR.search(str(e))
  if found is None:
    return None
  kind = ValueError if found.group(1) == "ValueError" else FileNotFoundError
  return kind(found.group(2))


def build(name: str, *, manual_dir: str | os.PathLike, data_dir: str | os.PathLike,
          config: Any = None, overwrite: bool = False,
          beam_options: Any = None) -> tfds.core.DatasetBuilder:
  """Builds one config of dataset `name` from the files in `manual_dir` into `data_dir`.

  Args:
    name: one of DATASETS.
    manual_dir: the dataset's download, in its own layout.
    data_dir: TFDS data folder; the result lands in `data_dir/<name>/<config>/<version>`.
    config: a config name or object; None or '' = the dataset's default (for `segmentation3d`
      a config named after the dataset in `manual_dir`).
    overwrite: rebuild even when the config is already built.
    beam_options: build with Apache Beam: `PipelineOptions`, or their text as for
      `--beam_pipeline_options` (e.g. "runner=DirectRunner,direct_num_workers=2,
      direct_running_mode=multi_processing"). None builds in this process, without Beam.

  Returns:
    The builder, ready for `as_data_source(split)`.

  Raises:
    FileNotFoundError, ValueError: bad `manual_dir` or input files; nothing is left in
      `data_dir` for this config.
  """
  manual_dir = pathlib.Path(manual_dir).expanduser()
  if not manual_dir.is_dir():
    raise FileNotFoundError(f"manual_dir {manual_dir} does not exist or is not a folder; "
                            f"expected the {name} download.")
  config = resolve_config(name, config, manual_dir)
  data_dir = pathlib.Path(data_dir).expanduser()
  final = dataset_dir(data_dir, config, name)
  label = f"{name}/{config.name}" if config is not None else name
  if is_built(data_dir, config, name) and not overwrite:
    logging.info("%s is already built at %s.", label, final)
    return open_builder(name, data_dir, config)
  # TFDS refuses an empty manual_dir with an AssertionError and a page of instructions before
  # the builder can say what is missing; iSeg-2017's reader names the missing files itself.
  if name == "iseg2017":
    iseg.find_subjects(manual_dir)
  elif not any(manual_dir.iterdir()):
    raise FileNotFoundError(f"manual_dir {manual_dir} is empty; expected the {name} download "
                            "(see the dataset's manual download instructions).")
  data_dir.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}-build-", dir=data_dir))
  try:
    kwargs = {} if config is None else {"config": config}
    builder = builder_class(name)(data_dir=str(tmp), **kwargs)
    download_config = tfds.download.DownloadConfig(
        manual_dir=str(manual_dir),
        beam_options=None if beam_options is None else pipeline_options(beam_options))
    try:
      builder.download_and_prepare(download_config=download_config)
    except Exception as e:  # pylint: disable=broad-except
      if beam_options is None:
        raise
      worker = worker_error(e)
      if worker is None:
        raise
      raise worker from e
    built = dataset_dir(tmp, config, name)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
      shutil.rmtree(final)
    try:
      built.rename(final)
    except OSError:
      if not is_built(data_dir, config, name):  # Another process may have finished it.
        raise
    meta = tmp / name / ".config"
    if meta.is_dir() and not (data_dir / name / ".config").exists():
      shutil.copytree(meta, data_dir / name / ".config", dirs_exist_ok=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return open_builder(name, data_dir, config)


def build_iseg2017(*, manual_dir: str | os.PathLike, data_dir: str | os.PathLike,
                   config_name: Any = "full",
                   overwrite: bool = False) -> tfds.core.DatasetBuilder:
  """Builds one iSeg-2017 config (`full`, `subvolumes`, `subvolumes_128x128x64` or an
  `Iseg2017Config`); see `build`."""
  return build("iseg2017", manual_dir=manual_dir, data_dir=data_dir, config=config_name,
               overwrite=overwrite)


def write_builtin(name: str, manual_dir: str | os.PathLike, options: Any) -> pathlib.Path:
  """Writes built-in synthetic data for dataset `name` to `manual_dir` (see `synthetic`).

  Args:
    options: a mapping with `shape`, `num_train`, `num_test`, `seed` and, for `segmentation3d`,
      `layout` ('nnunet' or 'decathlon'), `spacing`, `axcodes`, `num_channels`.
  """
  common = dict(shape=tuple(int(s) for s in options["shape"]),
                num_train=int(options["num_train"]), num_test=int(options["num_test"]),
                seed=int(options["seed"]))
  if name == "iseg2017":
    return synthetic.write_iseg_layout(manual_dir, **common)
  if name != GENERIC:
    raise ValueError(f"built-in data exists for iseg2017 and {GENERIC}, not {name!r}.")
  layout = options["layout"]
  writers = {"nnunet": synthetic.write_nnunet_layout,
             "decathlon": synthetic.write_decathlon_layout}
  if layout not in writers:
    raise ValueError(f"config.dataset.builtin_data.layout={layout!r}: expected one of "
                     f"{sorted(writers)}.")
  return writers[layout](manual_dir, spacing=tuple(float(s) for s in options["spacing"]),
                         axcodes=str(options["axcodes"]),
                         num_channels=int(options["num_channels"]), **common)


def _define_flags() -> None:
  """The command-line flags; defined only when run as a program, so importing this module from
  another absl program (e.g. medjax.train, which has its own --config) adds no flags."""
  flags.DEFINE_enum("dataset", "iseg2017", list(DATASETS), "The dataset to build.")
  flags.DEFINE_string("manual_dir", None, "The dataset's download folder to build from.")
  flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "TFDS data folder.")
  flags.DEFINE_list("config", [], "Configs to build (default: the dataset's default; "
                    f"iseg2017 has {ISEG2017_CONFIG_NAMES}).")
  flags.DEFINE_bool("overwrite", False, "Rebuild configs that are already built.")
  flags.DEFINE_string(
      "beam_pipeline_options", None,
      "Build with Apache Beam (pip install 'medjax[beam]'): comma-separated pipeline options, "
      "as for `tfds build`, e.g. runner=DirectRunner,direct_num_workers=2,"
      "direct_running_mode=multi_processing. Unset: build in this process, without Beam.")
  flags.DEFINE_bool("builtin_data", False, "Write built-in synthetic data to --manual_dir first "
                    "when that folder does not exist (iseg2017, segmentation3d).")
  flags.DEFINE_enum("builtin_layout", "nnunet", ["nnunet", "decathlon"],
                    "Layout of the built-in segmentation3d data.")
  flags.DEFINE_list("builtin_shape", [str(s) for s in synthetic.REAL_SHAPE],
                    "Volume shape of the built-in data.")
  flags.DEFINE_list("builtin_spacing", ["1", "1", "1"],
                    "Voxel size (mm) of the built-in segmentation3d data.")
  flags.DEFINE_string("builtin_axcodes", "RAS", "Voxel axis codes of the built-in "
                      "segmentation3d data, e.g. LPS.")
  flags.DEFINE_integer("builtin_num_channels", 2, "Channels of the built-in segmentation3d "
                       "data (T1, T2[, FLAIR]).")
  flags.DEFINE_integer("builtin_num_train", 10, "Built-in labelled cases.")
  flags.DEFINE_integer("builtin_num_test", 0, "Built-in unlabelled cases.")
  flags.DEFINE_integer("builtin_seed", 0, "Seed of the built-in data.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f.manual_dir:
    raise app.UsageError("--manual_dir is required.")
  manual_dir = pathlib.Path(f.manual_dir).expanduser()
  if f.builtin_data and not manual_dir.exists():
    logging.info("Writing built-in %s data to %s.", f.dataset, manual_dir)
    write_builtin(f.dataset, manual_dir, {
        "shape": f.builtin_shape, "num_train": f.builtin_num_train,
        "num_test": f.builtin_num_test, "seed": f.builtin_seed, "layout": f.builtin_layout,
        "spacing": f.builtin_spacing, "axcodes": f.builtin_axcodes,
        "num_channels": f.builtin_num_channels})
  try:
    for config in f.config or [None]:
      builder = build(f.dataset, manual_dir=manual_dir, data_dir=f.data_dir, config=config,
                      overwrite=f.overwrite, beam_options=f.beam_pipeline_options or None)
      print(f"{builder.name}/{builder.builder_config.name if builder.builder_config else ''}: "
            f"{builder.data_dir} "
            f"({', '.join(f'{k}={v.num_examples}' for k, v in builder.info.splits.items())})")
  except (ValueError, FileNotFoundError) as e:
    print(f"medjax.data.build: error: {e}")
    raise SystemExit(1) from None


if __name__ == "__main__":
  _define_flags()
  app.run(main)
