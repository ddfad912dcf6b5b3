"""The Apache Beam side of medjax's dataset builds (imported only when a build asks for Beam).

`tfds_features.CaseBuilder.records` returns an `ItemRecords` transform when the build's
DownloadConfig carries Beam options or a runner. TFDS applies it to its pipeline and writes
the records it yields, as it does for its own Beam datasets:

    beam.Create(items) | beam.Reshuffle() | beam.Map(process)
        -> (key, example) records              (TFDS shuffles and writes them)
        -> CaseFingerprints | beam.CombineGlobally(SplitCombineFn())
                            | write `.fingerprint-<split>.json` in the dataset folder

`process` is the builder's own per-item function, the one the in-process build calls, so the
two builds cannot drift. After the pipeline has run, `collect_fingerprints` reads the per-split
files back (and removes them) for `fingerprint.json`.

Runners: any; on a distributed one (Dataflow, Spark, Flink) the workers need medjax and
`datasets_tfds` installed (e.g. `--setup_file` or a container image), and the manual and data
folders must be paths every worker can read and write.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import apache_beam as beam
from etils import epath

from medjax.data import fingerprint

_PREFIX = ".fingerprint-"


class SplitCombineFn(beam.CombineFn):
  """`fingerprint.SplitCombiner` as a `beam.CombineFn` (same accumulator, same result)."""

  def __init__(self):
    super().__init__()
    self._combiner = fingerprint.SplitCombiner()

  def create_accumulator(self, *args, **kwargs):
    del args, kwargs
    return self._combiner.create_accumulator()

  def add_input(self, mutable_accumulator, element, *args, **kwargs):
    del args, kwargs
    return self._combiner.add_input(mutable_accumulator, element)

  def merge_accumulators(self, accumulators, *args, **kwargs):
    del args, kwargs
    return self._combiner.merge_accumulators(accumulators)

  def extract_output(self, accumulator, *args, **kwargs):
    del args, kwargs
    return self._combiner.extract_output(accumulator)


def _fingerprint_path(folder: Any, split: str) -> epath.Path:
  return epath.Path(folder) / f"{_PREFIX}{split}.json"


def _write_split(result: dict[str, Any], path: str) -> None:
  # An empty split gives CombineGlobally's default (an empty accumulator): nothing to write.
  if result.get("num_cases"):
    epath.Path(path).write_text(json.dumps(result))


def _fingerprints(records: tuple[list[Any], Any]) -> list[Any]:
  return [] if records[1] is None else [records[1]]


def _examples(records: tuple[list[Any], Any]) -> list[Any]:
  return records[0]


class ItemRecords(beam.PTransform):
  """The records of one split: `process` applied to each item on the Beam workers.

  Attributes:
    items: the split's input items (e.g. `case_files.CaseFiles`), picklable.
    process: `item -> ([(key, example), ...], CaseFingerprint or None)`, picklable.
    split: the split's name (names the fingerprint file).
    fingerprint_dir: where to write the split's fingerprint, or None for none.
  """

  def __init__(self, items: Sequence[Any], process: Callable[[Any], Any], *, split: str,
               fingerprint_dir: Any = None):
    super().__init__()
    self.items = list(items)
    self.process = process
    self.split = split
    self.fingerprint_dir = None if fingerprint_dir is None else str(fingerprint_dir)

  def expand(self, pbegin):
    loaded = (
        pbegin
        | "Items" >> beam.Create(self.items)
        # Spread the items over the workers: Create would keep them in its few bundles.
        | "Spread" >> beam.Reshuffle()
        | "Load" >> beam.Map(self.process))
    if self.fingerprint_dir is not None:
      _ = (
          loaded
          | "CaseFingerprints" >> beam.FlatMap(_fingerprints)
          | "Fingerprint" >> beam.CombineGlobally(SplitCombineFn())
          | "WriteFingerprint" >> beam.Map(
              _write_split, path=str(_fingerprint_path(self.fingerprint_dir, self.split))))
    return loaded | "Examples" >> beam.FlatMap(_examples)


def collect_fingerprints(folder: Any) -> dict[str, dict[str, Any]]:
  """`{split: SplitCombiner result}` written by the pipeline's `ItemRecords` in `folder`; the
  per-split files are removed."""
  out = {}
  for path in sorted(epath.Path(folder).glob(f"{_PREFIX}*.json")):
    out[path.name[len(_PREFIX):-len(".json")]] = json.loads(path.read_text())
    path.unlink()
  return out
