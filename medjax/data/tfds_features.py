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

The builders share `ArrayRecordDefault` (iseg2017 too), `info`, `case_splits` and `case_examples`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from medjax.data import case_files

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


def case_splits(generate: Callable[[Sequence[case_files.CaseFiles]], Iterator[Any]],
                training: Sequence[case_files.CaseFiles],
                test: Sequence[case_files.CaseFiles] = ()) -> dict[str, Iterator[Any]]:
  """`{"train": generate(training)}`, plus `"test"` when there are test cases."""
  splits = {"train": generate(training)}
  if test:
    splits["test"] = generate(test)
  return splits


def case_examples(cases: Iterable[case_files.CaseFiles], *, num_channels: int,
                  label_values: Sequence[int]) -> Iterator[tuple[str, dict[str, Any]]]:
  """Loads each case and yields `(case_id, example)` (for a builder's `_generate_examples`)."""
  for files in cases:
    case = case_files.load_case(files, num_channels=num_channels, label_values=label_values)
    yield case.case_id, to_example(case)
