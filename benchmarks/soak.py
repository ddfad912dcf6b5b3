r"""Soak test: a long quickstart training run, watching memory and step time over time.

  python benchmarks/soak.py --steps=5000 --crop=32 --base_features=8
  python benchmarks/soak.py --steps=300 --crop=16 --base_features=2 --shape=32,40,48 \
      --window=50 --eval_every=100 --checkpoint_every=50      # a few minutes on a laptop CPU

Runs the real training loop (`medjax.train_lib.train_and_evaluate` on
`experiments/quickstart.py`, with its periodic evaluation, checkpoints and TensorBoard logging)
in a fresh workdir, and records for every step the wall time since the previous step's dispatch
and the process's resident memory (RSS). With one step in flight, that interval is the step
time in steady state; steps that also evaluate or checkpoint stand out, so windows report the
median. Per window of `--window` steps it prints the median and 90th-percentile step time, the
RSS at the window's end and the number of live JAX arrays (a leak of device buffers shows up
there first). The summary compares the first full window after the warm-up (by default: up to
the first evaluation, whose one-time compilation and data loading raise RSS once) with the
last, and fits a line to RSS over all steps after it: memory should not grow and step time
should stay flat. `--json` writes all of it to a file.

RSS is read from /proc/self/statm (Linux).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np

from medjax import train_lib
from medjax.training import step as step_lib
from medjax.configs import cli

_QUICKSTART = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "quickstart.py"

_STEPS = flags.DEFINE_integer("steps", 5000, "Training steps.")
_CROP = flags.DEFINE_integer("crop", 32, "Cubic crop size (quickstart: 32).")
_BASE = flags.DEFINE_integer("base_features", 8, "Base width of the 3D U-Net (quickstart: 8).")
_BATCH = flags.DEFINE_integer("batch_size", 2, "Global batch size (quickstart: 2).")
_SHAPE = flags.DEFINE_list("shape", ["144", "192", "256"],
                           "Volume shape of the built-in data (quickstart: the real 144,192,256).")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 10, "Built-in labelled subjects.")
_ROI = flags.DEFINE_integer("roi", 64, "Cubic sliding-window ROI for evaluation.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 300, "Evaluate every N steps (quickstart: 300).")
_CKPT_EVERY = flags.DEFINE_integer("checkpoint_every", 100,
                                   "Checkpoint every N steps (quickstart: 100).")
_WINDOW = flags.DEFINE_integer("window", 250, "Steps per reported window.")
_WARMUP = flags.DEFINE_integer(
    "warmup", -1, "Steps before the first compared window (default: up to the first "
    "evaluation, which compiles the evaluation functions once; one window if none comes).")
_DATA_ROOT = flags.DEFINE_string("data_root", "/tmp/medjax_soak",
                                 "Built-in data and its TFDS build go here (reused).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (default: a fresh temp dir).")
_JSON = flags.DEFINE_string("json", None, "Also write the per-step record and summary here.")


def rss_mb() -> float:
  """Resident memory of this process in MiB."""
  with open("/proc/self/statm") as f:
    pages = int(f.read().split()[1])
  return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclasses.dataclass
class StepRecord:
  step: int        # steps dispatched so far, counted from the run's start step
  seconds: float   # wall time since the previous dispatch
  rss_mb: float
  live_arrays: int | None = None  # counted once per window (it walks every live array)


class Probe:
  """Wraps `training.step.make_train_step` to time each dispatch and read RSS after it."""

  def __init__(self, window: int):
    self.window = window
    self.records: list[StepRecord] = []
    self._last = None

  def install(self) -> None:
    make = step_lib.make_train_step

    def make_train_step(config, mesh):
      step_fn = make(config, mesh)

      def timed(state, batch, rng):
        out = step_fn(state, batch, rng)
        now = time.perf_counter()
        n = len(self.records) + 1
        live = len(jax.live_arrays()) if n % self.window == 0 else None
        self.records.append(StepRecord(n, now - self._last if self._last else float("nan"),
                                       rss_mb(), live))
        self._last = now
        return out
      return timed

    step_lib.make_train_step = make_train_step


def soak_config() -> ml_collections.ConfigDict:
  config = cli.load_config_file(str(_QUICKSTART))
  root = pathlib.Path(_DATA_ROOT.value)
  shape = tuple(int(s) for s in _SHAPE.value)
  config.dataset.data_dir = str(root / f"tfds_{'x'.join(map(str, shape))}")
  config.dataset.manual_dir = str(root / f"builtin_{'x'.join(map(str, shape))}")
  config.dataset.builtin_data.shape = shape
  config.dataset.builtin_data.num_train = _NUM_TRAIN.value
  config.dataset.crop_size = (_CROP.value,) * 3
  config.model.base_features = _BASE.value
  config.batch_size = _BATCH.value
  config.num_train_steps = _STEPS.value
  config.eval_every_steps = _EVAL_EVERY.value
  config.checkpoint_every_steps = _CKPT_EVERY.value
  config.log_every_steps = min(config.log_every_steps, _WINDOW.value)
  config.eval.roi_size = (_ROI.value,) * 3
  return config


def window_stats(records: list[StepRecord]) -> dict[str, float]:
  times = np.asarray([r.seconds for r in records if np.isfinite(r.seconds)])
  live = [r.live_arrays for r in records if r.live_arrays is not None]
  return {
      "first_step": records[0].step, "last_step": records[-1].step,
      "median_ms": float(np.median(times) * 1e3), "p90_ms": float(np.percentile(times, 90) * 1e3),
      "rss_mb": records[-1].rss_mb, "live_arrays": live[-1] if live else None,
  }


def summarize(records: list[StepRecord], window: int, warmup: int) -> dict[str, object]:
  windows = [window_stats(records[i:i + window])
             for i in range(0, len(records) - window + 1, window)]
  compared = [w for w in windows if w["first_step"] > warmup] or windows[-1:]
  first, last = compared[0], compared[-1]
  after = [r for r in records if r.step > warmup]

  def slope(rs: list[StepRecord]) -> float:  # MiB per 1000 steps, least squares
    if len(rs) < 3:
      return float("nan")
    return float(np.polyfit([r.step for r in rs], [r.rss_mb for r in rs], 1)[0] * 1000)

  return {
      "windows": windows, "first": first, "last": last,
      "rss_growth_mb": last["rss_mb"] - first["rss_mb"],
      "rss_slope_mb_per_1000_steps": slope(after),
      # Allocators settle over a while: the second half says more about a steady leak.
      "rss_slope_second_half_mb_per_1000_steps": slope(after[len(after) // 2:]),
      "step_time_ratio_last_over_first": last["median_ms"] / first["median_ms"],
      "peak_rss_mb": max(r.rss_mb for r in records),
  }


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  config = soak_config()
  probe = Probe(_WINDOW.value)
  probe.install()
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="medjax_soak_")
  print(f"soak: {config.num_train_steps} steps, crop {_CROP.value}^3, base width "
        f"{_BASE.value}, batch {config.batch_size}, data {tuple(config.dataset.builtin_data.shape)}"
        f", {jax.device_count()} {jax.default_backend()} device(s); workdir {workdir}", flush=True)
  start_rss = rss_mb()
  t = time.perf_counter()
  train_lib.train_and_evaluate(config, workdir)
  total = time.perf_counter() - t
  warmup = _WARMUP.value
  if warmup < 0:
    warmup = config.eval_every_steps if config.eval_every_steps < config.num_train_steps else (
        _WINDOW.value)
  summary = summarize(probe.records, _WINDOW.value, warmup)

  print(f"\nRSS before training {start_rss:.0f} MiB; peak {summary['peak_rss_mb']:.0f} MiB; "
        f"wall {total:.0f} s for {len(probe.records)} steps")
  print(f"{'steps':>13} {'median ms':>10} {'p90 ms':>9} {'RSS MiB':>9} {'live arrays':>12}")
  for w in summary["windows"]:
    print(f"{w['first_step']:>6}-{w['last_step']:<6} {w['median_ms']:>10.1f} {w['p90_ms']:>9.1f} "
          f"{w['rss_mb']:>9.1f} {w['live_arrays'] if w['live_arrays'] is not None else '-':>12}")
  first, last = summary["first"], summary["last"]
  print(f"\nfirst window after warm-up (steps {first['first_step']}-{first['last_step']}) vs last "
        f"(steps {last['first_step']}-{last['last_step']}):")
  print(f"  median step time {first['median_ms']:.1f} -> {last['median_ms']:.1f} ms "
        f"(x{summary['step_time_ratio_last_over_first']:.3f})")
  print(f"  RSS {first['rss_mb']:.1f} -> {last['rss_mb']:.1f} MiB "
        f"({summary['rss_growth_mb']:+.1f} MiB); linear fit after warm-up "
        f"{summary['rss_slope_mb_per_1000_steps']:+.1f} MiB per 1000 steps, over its second "
        f"half {summary['rss_slope_second_half_mb_per_1000_steps']:+.1f}")
  print(f"  live JAX arrays {first['live_arrays']} -> {last['live_arrays']}")
  if _JSON.value:
    doc = {"summary": summary, "records": [dataclasses.asdict(r) for r in probe.records],
           "config": json.loads(config.to_json_best_effort())}
    pathlib.Path(_JSON.value).write_text(json.dumps(doc, indent=1, default=float))


if __name__ == "__main__":
  app.run(main)
