r"""Dataset build speed: the in-process build against the Apache Beam build, in cases per second.

  python benchmarks/build.py --data_root=/tmp/medjax_bench_build --num_cases=20

Writes `--num_cases` built-in cases (nnU-Net v2 layout, `--shape`, two channels) under
`--data_root` once (later runs reuse them), then builds `segmentation3d` from them into a fresh
data folder, in process and with `--beam_pipeline_options` (default: DirectRunner with one
worker process per core), alternating `--repeats` times. Prints the median wall time of each
build, cases per second (load, fingerprint, encode and write, as `medjax.data.build` does it),
and the ratio Beam / in process (above 1: Beam is faster). Checks that both builds wrote the
same fingerprint, so the two timed the same work.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import statistics
import time

from absl import app
from absl import flags

from medjax.data import build
from medjax.data import fingerprint
from medjax.data import synthetic

_DATA_ROOT = flags.DEFINE_string("data_root", "/tmp/medjax_bench_build", "Where data is written.")
_NUM_CASES = flags.DEFINE_integer("num_cases", 20, "Built-in labelled cases.")
_SHAPE = flags.DEFINE_list("shape", [str(s) for s in synthetic.REAL_SHAPE], "Volume shape.")
_BEAM = flags.DEFINE_string(
    "beam_pipeline_options",
    f"runner=DirectRunner,direct_num_workers={os.cpu_count() or 1},"
    "direct_running_mode=multi_processing",
    "Options of the Beam build, as for medjax.data.build.")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Builds of each kind, alternating.")
_JSON = flags.DEFINE_string("json", None, "Also write the numbers to this file.")


def time_build(manual: pathlib.Path, data_dir: pathlib.Path, beam_options: str | None
               ) -> tuple[float, str]:
  """(seconds, fingerprint.json text) of one fresh build of `manual` into `data_dir`."""
  shutil.rmtree(data_dir, ignore_errors=True)
  t = time.perf_counter()
  builder = build.build("segmentation3d", manual_dir=manual, data_dir=data_dir,
                        beam_options=beam_options)
  seconds = time.perf_counter() - t
  return seconds, (pathlib.Path(builder.data_dir) / fingerprint.FILENAME).read_text()


def main(argv):
  del argv
  root = pathlib.Path(_DATA_ROOT.value)
  shape = tuple(int(s) for s in _SHAPE.value)
  manual = root / f"raw-{_NUM_CASES.value}-{'x'.join(map(str, shape))}"
  if not manual.exists():
    t = time.perf_counter()
    synthetic.write_nnunet_layout(manual, shape=shape, num_train=_NUM_CASES.value)
    print(f"wrote {_NUM_CASES.value} built-in cases of {shape} in {time.perf_counter() - t:.1f} s")
  times = {"in_process": [], "beam": []}
  prints = {}
  for _ in range(_REPEATS.value):
    for kind, options in (("in_process", None), ("beam", _BEAM.value)):
      seconds, prints[kind] = time_build(manual, root / f"tfds-{kind}", options)
      times[kind].append(seconds)
  if prints["in_process"] != prints["beam"]:
    raise SystemExit("the two builds wrote different fingerprints; not the same work.")
  n = _NUM_CASES.value
  rows = {k: {"median_s": statistics.median(v), "cases_per_s": n / statistics.median(v),
              "runs_s": v} for k, v in times.items()}
  ratio = rows["beam"]["cases_per_s"] / rows["in_process"]["cases_per_s"]
  print(f"{n} cases of {'x'.join(map(str, shape))} x 2 channels, {os.cpu_count()} CPUs; "
        f"Beam: {_BEAM.value}")
  print(f"{'build':<12}{'median s':>10}{'cases/s':>10}")
  for kind, row in rows.items():
    print(f"{kind:<12}{row['median_s']:>10.2f}{row['cases_per_s']:>10.3f}")
  print(f"{'beam / in_process':<22}{ratio:>10.2f}")
  if _JSON.value:
    pathlib.Path(_JSON.value).write_text(json.dumps(
        {"num_cases": n, "shape": shape, "beam_pipeline_options": _BEAM.value,
         "cpus": os.cpu_count(), "builds": rows, "ratio": ratio}, indent=2) + "\n")


if __name__ == "__main__":
  app.run(main)
