r"""Throughput of the on-the-fly training input pipeline on full-size built-in iSeg data.

  python benchmarks/input_pipeline.py --data_root=/tmp/medjax_bench

Writes 10 built-in subjects at the real 144 x 192 x 256 size under `--data_root` (once; later
runs reuse them), builds `iseg2017/full` (timed, with its size on disk), then for each crop size
reports how long the first epoch takes (every training subject is read, normalised and indexed
once) and the steady-state rate in sub-volumes per second, read through
`create_train_iterator` exactly as training reads it. Beside it, the rate at which the jitted
train step of the UNet3D (`--base_features`) consumes sub-volumes on this machine, and the ratio
pipeline / step (the pipeline must be at least 10x faster than the step needs).
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

from absl import app
from absl import flags
import ml_collections

from medjax import input_pipeline
from medjax.configs import cli
from medjax.data import build
from medjax.data import synthetic

_EXPERIMENT = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "iseg2017_unet3d.py"
_DATA_ROOT = flags.DEFINE_string("data_root", "/tmp/medjax_bench", "Where data is written.")
_CROPS = flags.DEFINE_list("crop_sizes", ["64x64x64", "128x128x64"], "Crop sizes to measure.")
_BATCH = flags.DEFINE_integer("batch_size", 2, "Global batch size.")
_BATCHES = flags.DEFINE_integer("num_batches", 50, "Batches timed after the first epoch.")
_THREADS = flags.DEFINE_integer("num_threads", 2, "grain reader threads.")
_SHAPE = flags.DEFINE_list("shape", [str(s) for s in synthetic.REAL_SHAPE], "Volume shape.")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 10, "Built-in labelled subjects.")
_BASE = flags.DEFINE_integer("base_features", 32, "UNet3D width for the train-step rate "
                             "(32 = the paper; 0 skips the step).")
_STEP_REPEATS = flags.DEFINE_integer("step_repeats", 3, "Timed train steps after one warm-up.")


@dataclasses.dataclass
class PipelineRate:
  crop_size: tuple[int, int, int]
  batch_size: int
  first_epoch_s: float      # first ceil(N / B) batches: loads, normalises and indexes N subjects
  subvolumes_per_s: float   # afterwards, subjects cached
  batches_timed: int


def bench_config(data_root: str | pathlib.Path, crop_size=(64, 64, 64), batch_size: int = 2,
                 shape=synthetic.REAL_SHAPE, num_train: int = 10,
                 num_threads: int = 2) -> ml_collections.ConfigDict:
  """The seed experiment's data config on built-in data under `data_root`."""
  config = cli.load_config_file(str(_EXPERIMENT))
  root = pathlib.Path(data_root)
  config.dataset.data_dir = str(root / "tensorflow_datasets")
  config.dataset.manual_dir = str(root / "iseg2017-builtin")
  config.dataset.builtin_data.enabled = True
  config.dataset.builtin_data.shape = tuple(shape)
  config.dataset.builtin_data.num_train = num_train
  config.dataset.crop_size = tuple(crop_size)
  config.dataset.num_threads = num_threads
  config.batch_size = batch_size
  return config


def prepare_data(config: ml_collections.ConfigDict) -> dict[str, float]:
  """Writes the built-in data and builds `iseg2017/full` if needed; returns what it cost."""
  costs = {}
  manual = pathlib.Path(config.dataset.manual_dir)
  if not manual.exists():
    t = time.perf_counter()
    synthetic.write_iseg_layout(manual, shape=tuple(config.dataset.builtin_data.shape),
                                num_train=config.dataset.builtin_data.num_train)
    costs["write_builtin_s"] = time.perf_counter() - t
  if not build.is_built(config.dataset.data_dir, "full"):
    t = time.perf_counter()
    input_pipeline.ensure_dataset(config)
    costs["build_full_s"] = time.perf_counter() - t
  folder = build.dataset_dir(config.dataset.data_dir, "full")
  costs["full_on_disk_mb"] = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
  costs["raw_on_disk_mb"] = sum(p.stat().st_size for p in manual.rglob("*")
                                if p.is_file()) / 2**20
  return costs


def measure_pipeline(config: ml_collections.ConfigDict, *, num_batches: int = 50) -> PipelineRate:
  """Times `create_train_iterator(config)`: the first epoch, then `num_batches` more batches."""
  builder = input_pipeline.ensure_dataset(config)
  num_subjects = builder.info.splits["train"].num_examples
  first = -(-num_subjects // config.batch_size)
  it = input_pipeline.create_train_iterator(config)
  t = time.perf_counter()
  for _ in range(first):
    next(it)
  first_epoch = time.perf_counter() - t
  t = time.perf_counter()
  for _ in range(num_batches):
    next(it)
  steady = time.perf_counter() - t
  return PipelineRate(crop_size=tuple(config.dataset.crop_size), batch_size=config.batch_size,
                      first_epoch_s=first_epoch,
                      subvolumes_per_s=num_batches * config.batch_size / steady,
                      batches_timed=num_batches)


def measure_step(config: ml_collections.ConfigDict, *, base_features: int,
                 repeats: int = 3) -> float:
  """Median seconds of one jitted train step (after a compile/warm-up step) on a real batch."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from medjax.training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from medjax.training import step as step_lib  # pylint: disable=g-import-not-at-top
  from medjax import models  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.base_features = base_features
  mesh = mesh_lib.create_mesh()
  init_key, step_key = step_lib.init_and_train_keys(config.seed)
  state = step_lib.init_state(config, models.create_model(config), init_key, mesh)
  step = step_lib.make_train_step(config, mesh)
  batch = next(input_pipeline.create_train_iterator(config))
  times = []
  for _ in range(repeats + 1):
    t = time.perf_counter()
    state, metrics = step(state, batch, step_key)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  return float(np.median(times[1:]))


def main(argv):
  del argv
  shape = tuple(int(s) for s in _SHAPE.value)
  results = []
  for i, crop in enumerate(_CROPS.value):
    crop_size = tuple(int(c) for c in crop.split("x"))
    config = bench_config(_DATA_ROOT.value, crop_size, _BATCH.value, shape, _NUM_TRAIN.value,
                          _THREADS.value)
    if i == 0:
      for k, v in prepare_data(config).items():
        print(f"{k}: {v:.1f}")
    rate = measure_pipeline(config, num_batches=_BATCHES.value)
    step_s = (measure_step(config, base_features=_BASE.value, repeats=_STEP_REPEATS.value)
              if _BASE.value else float("nan"))
    results.append((rate, step_s))
  print(f"\n{'crop':>12} {'batch':>5} {'first epoch s':>13} {'sub-volumes/s':>13} "
        f"{'step s (base ' + str(_BASE.value) + ')':>18} {'step needs /s':>13} {'ratio':>7}")
  for r, step_s in results:
    needs = r.batch_size / step_s
    print(f"{'x'.join(map(str, r.crop_size)):>12} {r.batch_size:>5} {r.first_epoch_s:>13.1f} "
          f"{r.subvolumes_per_s:>13.1f} {step_s:>18.2f} {needs:>13.2f} "
          f"{r.subvolumes_per_s / needs:>6.0f}x")


if __name__ == "__main__":
  app.run(main)
