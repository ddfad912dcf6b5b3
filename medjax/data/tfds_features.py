"""The one TFDS feature schema of medjax's 3-D segmentation datasets (all but iseg2017).

Every builder stores one example per case, as on disk (no resampling, no normalisation):

    image      [D, H, W, C] float32 raw intensities (zlib-compressed bytes)
    label      [D, H, W] uint8 class ids; [0, 0, 0] when unlabelled
    has_label  bool
    affine     [4, 4] float64 voxel-to-world (mm), stored as raw bytes so float64 is exact
    spacing    [3] float64 voxel size (mm), raw bytes
    case_id    text (bytes when read from a data source: `ex["case_id"].decode()`)

and describes the dataset in `DatasetInfo.metadata` (a `tfds.core.MetadataDict`, written as
`metadata.json` beside `dataset_info.json`): `channel_names`, `class_names`, `label_values`
(the on-disk value of class k) and whatever else the builder adds. A built dataset gives it back
without TensorFlow:

    info = tfds.builder_from_directory(path).info
    info.metadata["class_names"]        # a list (JSON has no tuples)

The builders share `CaseBuilder` and `ArrayRecordDefault` (iseg2017 too), `info`, `case_splits`
and `case_records`. `CaseBuilder` runs the same `case_records` in process or, when the build
asks for it, as an Apache Beam pipeline, and writes the dataset fingerprint
(`medjax.data.fingerprint`) beside the records.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import tensorflow_datasets as tfds

from medjax.data import case_files
from medjax.data import datasets
from medjax.data import fingerprint

# The keys `metadata` always writes.
METADATA_KEYS = ("channel_names", "class_names", "label_values")


def features() -> tfds.features.FeaturesDict:
  """The feature schema of one case (see the module docstring)."""
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(
          shape=(None, None, None, None), dtype=np.float32, encoding="zlib",
          doc="Raw intensities as on disk [D, H, W, C], channels in metadata channel_names."),
      "label": tfds.features.Tensor(
          shape=(None, None, None), dtype=np.uint8, encoding="zlib",
          doc="Class ids [D, H, W] (metadata class_names); empty [0, 0, 0] when unlabelled."),
      "has_label": tfds.features.Scalar(np.bool_, doc="False for unlabelled (test) cases."),
      # Raw bytes: tf.train.Example float lists would round float64 to float32.
      "affine": tfds.features.Tensor(
          shape=(4, 4), dtype=np.float64, encoding="bytes",
          doc="Voxel-to-world matrix (mm) of the case's first image file."),
      "spacing": tfds.features.Tensor(
          shape=(3,), dtype=np.float64, encoding="bytes", doc="Voxel size (mm) along D, H, W."),
      "case_id": tfds.features.Text(doc="The case identifier in its dataset's layout."),
  })


def to_example(case: case_files.Case) -> dict[str, Any]:
  """The feature dict of one loaded case (arrays as `features()` expects them).

  Raises:
    ValueError: the image is not `[D, H, W, C]`, or the label is not on its grid.
  """
  image = np.ascontiguousarray(case.image, dtype=np.float32)
  if image.ndim != 4:
    raise ValueError(f"case {case.case_id}: image must be [D, H, W, C], got {image.shape}.")
  if case.label is None:
    label = np.zeros((0, 0, 0), np.uint8)
  else:
    label = np.ascontiguousarray(case.label, dtype=np.uint8)
    if label.shape != image.shape[:3]:
      raise ValueError(
          f"case {case.case_id}: label shape {label.shape} is not the image grid "
          f"{image.shape[:3]}.")
  return {
      "image": image,
      "label": label,
      "has_label": case.label is not None,
      "affine": np.asarray(case.affine, np.float64).reshape(4, 4),
      "spacing": np.asarray(case.spacing, np.float64).reshape(3),
      "case_id": case.case_id,
  }


def metadata(channel_names: Sequence[str], class_names: Sequence[str],
             label_values: Sequence[int], **extra: Any) -> tfds.core.MetadataDict:
  """The dataset description stored in `DatasetInfo.metadata` (JSON: lists, not tuples).

  Args:
    channel_names: the image channels in order, e.g. ('T1', 'T2').
    class_names: class id k -> name; class 0 is background.
    label_values: the on-disk label value of class k (same length as `class_names`).
    **extra: more JSON-serialisable entries (e.g. layout, name, file_ending).

  Raises:
    ValueError: empty names, or `label_values` not one distinct integer per class.
  """
  channel_names = [str(c) for c in channel_names]
  class_names = [str(c) for c in class_names]
  values = [int(v) for v in label_values]
  if not channel_names or not class_names:
    raise ValueError(f"metadata: channel_names {channel_names} and class_names {class_names} "
                     "must not be empty.")
  if len(values) != len(class_names) or len(set(values)) != len(values):
    raise ValueError(
        f"metadata: label_values {values} must be one distinct value per class {class_names}.")
  return tfds.core.MetadataDict(
      channel_names=channel_names, class_names=class_names, label_values=values, **extra)


class ArrayRecordDefault:
  """Builder mixin that makes array_record the default file format of new builds.

  medjax reads with random access (`tfds.data_source`), which needs array_record. Put it before
  the TFDS base, `class Builder(tfds_features.ArrayRecordDefault,
  tfds.core.GeneratorBasedBuilder)`; being no TFDS class it registers no dataset itself.
  """

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    # Also for `tfds build`; keep what an existing build was written in.
    if file_format is None and not (self.data_path / "dataset_info.json").exists():
      self.info.set_file_format("array_record", override=True)


def info(builder: tfds.core.DatasetBuilder, *, homepage: str,
         metadata: tfds.core.MetadataDict) -> tfds.core.DatasetInfo:
  """The `DatasetInfo` of a builder of this schema (for its `_info`)."""
  return builder.dataset_info_from_configs(
      features=features(),
      supervised_keys=None,
      homepage=homepage,
      metadata=metadata,
  )


def case_splits(generate: Callable[[Sequence[case_files.CaseFiles], str], Any],
                training: Sequence[case_files.CaseFiles],
                test: Sequence[case_files.CaseFiles] = ()) -> dict[str, Any]:
  """`{"train": generate(training, "train")}`, plus `"test"` when there are test cases."""
  splits = {"train": generate(training, "train")}
  if test:
    splits["test"] = generate(test, "test")
  return splits


Records = tuple[list[tuple[str, dict[str, Any]]], "fingerprint.CaseFingerprint | None"]


def case_records(files: case_files.CaseFiles, *, builder_name: str, num_channels: int,
                 label_values: Sequence[int]) -> Records:
  """Loads one case -> `([(case_id, example)], its fingerprint)`: the one code path from a
  case's files to what a build writes, whether it runs in process or on a Beam worker."""
  case = case_files.load_case(files, num_channels=num_channels, label_values=label_values)
  example = to_example(case)
  return [(case.case_id, example)], example_fingerprint(builder_name, example)


def example_fingerprint(builder_name: str, example: dict[str, Any]) -> fingerprint.CaseFingerprint:
  """The fingerprint of a whole-case example, of the arrays exactly as they will be read back
  (`datasets.case_from_example`), so it equals the fingerprint of the built record."""
  return fingerprint.of_case(datasets.case_from_example(builder_name, example))


def beam_requested(download_config: tfds.download.DownloadConfig) -> bool:
  """Whether a build asked for Apache Beam: a `beam_runner` or `beam_options` in its
  DownloadConfig (`tfds build --beam_pipeline_options=...`, `medjax.data.build
  --beam_pipeline_options=...`), TFDS's own test for an explicitly configured pipeline."""
  return download_config.beam_runner is not None or download_config.beam_options is not None


class CaseBuilder:
  """Builder mixin: each input item -> its records by one function, in process or on Beam.

  A builder's `_generate_examples(items, split)` returns `self.records(split, items, process)`,
  where `process(item)` (picklable: a module-level function or a `functools.partial` of one)
  loads one item and returns `([(key, example), ...], CaseFingerprint or None)`. Without Beam
  this is a generator that calls `process` in this process; when the build asked for Beam
  (`beam_requested`) it is a `beam.PTransform` (`medjax.data.beam_build.ItemRecords`) that
  TFDS runs in its pipeline, `beam.Create(items) | beam.FlatMap(process)`, so a Beam build
  writes the in-process build's records. apache_beam is imported only then.

  The fingerprints of each split are reduced by `fingerprint.SplitCombiner` (in process, or as
  a `beam.CombineGlobally` per split) and written as `fingerprint.json` in the dataset folder,
  inside TFDS's temporary folder, so it appears together with the records or not at all. A
  split whose items give no fingerprint (crops) writes none.

  Put it first: `class Builder(tfds_features.CaseBuilder, tfds_features.ArrayRecordDefault,
  tfds.core.GeneratorBasedBuilder)`.
  """

  _use_beam = False
  _fingerprints: dict[str, dict[str, Any]] | None = None

  def _download_and_prepare(self, dl_manager, download_config):  # pylint: disable=arguments-differ
    # TFDS decides Beam by what `_generate_examples` returns and gives the builder only the
    # DownloadConfig; read the request here, before `_split_generators` runs.
    self._use_beam = beam_requested(download_config)
    self._fingerprints = {}
    super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
    if self._use_beam:
      from medjax.data import beam_build  # pylint: disable=g-import-not-at-top
      self._fingerprints.update(beam_build.collect_fingerprints(self.data_path))
    if self._fingerprints:
      (self.data_path / fingerprint.FILENAME).write_text(fingerprint.to_json(self._fingerprints))

  def records(self, split: str, items: Sequence[Any],
              process: Callable[[Any], Records], *, with_fingerprint: bool = True):
    """The examples of `split`: a generator, or a `beam.PTransform` when Beam was asked for."""
    if self._use_beam:
      from medjax.data import beam_build  # pylint: disable=g-import-not-at-top
      return beam_build.ItemRecords(list(items), process, split=split,
                                    fingerprint_dir=self.data_path if with_fingerprint else None)
    return self._records_in_process(split, items, process, with_fingerprint)

  def _records_in_process(self, split, items, process, with_fingerprint):
    combiner = fingerprint.SplitCombiner()
    acc = combiner.create_accumulator()
    for item in items:
      examples, case_fingerprint = process(item)
      yield from examples
      if with_fingerprint and case_fingerprint is not None:
        acc = combiner.add_input(acc, case_fingerprint)
    # Reached only when TFDS read every example (not with max_examples_per_split).
    if with_fingerprint and acc and self._fingerprints is not None:
      self._fingerprints[split] = combiner.extract_output(acc)
