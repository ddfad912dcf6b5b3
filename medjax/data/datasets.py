"""Built TFDS datasets as medjax reads them: whole cases `[D, H, W, C]`, their names, and folds.

Every dataset builder under `datasets_tfds/` except `iseg2017` stores one schema
(`medjax.data.tfds_features`): `image` `[D, H, W, C]` raw intensities, `label` class ids,
`has_label`, `affine`, `spacing`, `case_id`, and the dataset's channel names, class names and
on-disk label values in the dataset's metadata. `iseg2017` predates it and stores `t1`, `t2` and a
numeric `subject_id`; `case_from_example` reads both into one `case_files.Case`, so nothing
downstream knows which builder wrote the data.

Validation folds are nnU-Net's (`KFold(n_splits=5, shuffle=True, random_state=12345)` over the
sorted case ids of the `train` split): the ids shuffled with a fixed seed and cut into
`num_folds` contiguous folds of (nearly) equal size; fold k validates, the rest train.
The folds depend on the case ids only, not on the order TFDS stores the records in.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import tensorflow_datasets as tfds

from medjax.data import case_files
from medjax.data import iseg

ISEG2017 = "iseg2017"
# nnU-Net's seed for its 5-fold split (`KFold(n_splits=5, shuffle=True, random_state=12345)`).
FOLD_SEED = 12345
_VOLUME_KEYS = ("image", "label", "t1", "t2")


@dataclasses.dataclass(frozen=True)
class DatasetNames:
  """What the classes and channels of a dataset are called.

  Attributes:
    channel_names: input channel c's name, e.g. ('T1', 'T2') or ('CT',).
    class_names: class id k's name; class 0 is the background.
    label_values: the on-disk label value of class k (iSeg 0/10/150/250, BraTS 0/1/2/4).
    regions: evaluation regions as class-id groups, e.g. BraTS's whole tumour (1, 2, 3); may be
      empty.
  """
  channel_names: tuple[str, ...]
  class_names: tuple[str, ...]
  label_values: tuple[int, ...]
  regions: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict[str, Any]:
    return {"channel_names": list(self.channel_names), "class_names": list(self.class_names),
            "label_values": list(self.label_values),
            "regions": {k: list(v) for k, v in self.regions.items()}}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> DatasetNames:
    return cls(channel_names=tuple(str(c) for c in d["channel_names"]),
               class_names=tuple(str(c) for c in d["class_names"]),
               label_values=tuple(int(v) for v in d["label_values"]),
               regions={str(k): tuple(int(i) for i in v)
                        for k, v in (d.get("regions") or {}).items()})


# iSeg-2017's builder stores no names in its metadata: they are `medjax.data.iseg`'s.
ISEG2017_NAMES = DatasetNames(channel_names=iseg.MODALITIES, class_names=iseg.CLASS_NAMES,
                              label_values=iseg.LABEL_VALUES)


def names(builder: tfds.core.DatasetBuilder) -> DatasetNames:
  """The channel and class names a built dataset carries (its metadata; iSeg-2017's module)."""
  if builder.name == ISEG2017:
    return ISEG2017_NAMES
  meta = dict(builder.info.metadata or {})
  missing = [k for k in ("channel_names", "class_names", "label_values") if k not in meta]
  if missing:
    raise ValueError(
        f"{builder.data_dir}: the dataset's metadata lacks {missing}; rebuild it with a medjax "
        "dataset builder (they store channel and class names with the data).")
  return DatasetNames.from_dict(meta)


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def case_id_of(builder_name: str, example: dict[str, Any]) -> str:
  """The case id of a stored example (`subject-N` for iSeg-2017)."""
  if builder_name == ISEG2017:
    return f"subject-{int(example['subject_id'])}"
  return _text(example["case_id"])


def case_from_example(builder_name: str, example: dict[str, Any]) -> case_files.Case:
  """One stored example -> `case_files.Case` (image `[D, H, W, C]` float32, label or None)."""
  if builder_name == ISEG2017:
    image = np.stack([example["t1"], example["t2"]], axis=-1)
  else:
    image = example["image"]
  label = np.asarray(example["label"], np.uint8) if bool(example["has_label"]) else None
  return case_files.Case(
      case_id=case_id_of(builder_name, example), image=np.asarray(image, np.float32),
      label=label, affine=np.asarray(example["affine"], np.float64),
      spacing=tuple(float(s) for s in example["spacing"]))


class Cases(Sequence[case_files.Case]):
  """Random access to the whole cases of one split, optionally a subset of its records.

  Attributes:
    builder_name: the TFDS dataset name.
    records: the record indices this sequence covers, in order.
  """

  def __init__(self, builder: tfds.core.DatasetBuilder, split: str,
               records: Sequence[int] | None = None):
    if split not in builder.info.splits:
      raise ValueError(f"split {split!r} is not in {builder.name} at {builder.data_dir}; it "
                       f"has {sorted(builder.info.splits)}.")
    self.builder_name = builder.name
    self.split = split
    self._source = builder.as_data_source(split)
    self.records = tuple(range(len(self._source)) if records is None else
                         (int(r) for r in records))

  def __len__(self) -> int:
    return len(self.records)

  @property
  def is_whole_split(self) -> bool:
    """Whether the sequence covers every record of its split, each once."""
    return sorted(self.records) == list(range(len(self._source)))

  def __getitem__(self, i: int) -> case_files.Case:  # type: ignore[override]
    return case_from_example(self.builder_name, self._source[self.records[i]])

  def __getstate__(self):  # grain worker processes reopen the source.
    return self.__dict__


class JoinedCases(Sequence[case_files.Case]):
  """Several `Cases` (of different splits) as one sequence, in the order given."""

  def __init__(self, parts: Sequence[Cases]):
    self.parts = [p for p in parts if len(p)]
    self._starts = np.cumsum([0] + [len(p) for p in self.parts])

  def __len__(self) -> int:
    return int(self._starts[-1])

  def __getitem__(self, i: int) -> case_files.Case:  # type: ignore[override]
    if not 0 <= i < len(self):
      raise IndexError(i)
    part = int(np.searchsorted(self._starts, i, side="right")) - 1
    return self.parts[part][i - int(self._starts[part])]


def choose_cases(builder: tfds.core.DatasetBuilder, splits: Sequence[str],
                 validation_ids: Sequence[str]) -> tuple[JoinedCases, JoinedCases]:
  """(training, validation) cases of `splits` pooled, with the named cases validating.

  A fixed split given by case ids, like nnU-Net's `splits_final.json`: every case of the pooled
  splits whose id is not in `validation_ids` trains.

  Raises:
    ValueError: an id that is in none of the splits, or a repeated id.
  """
  wanted = [str(c) for c in validation_ids]
  if len(set(wanted)) != len(wanted):
    raise ValueError(f"validation case ids {wanted} repeat a case.")
  train, val, seen = [], [], []
  for split in splits:
    ids = case_ids(builder, split)
    seen.extend(ids)
    train.append(Cases(builder, split, [i for i, c in enumerate(ids) if c not in wanted]))
    val.append(Cases(builder, split, [i for i, c in enumerate(ids) if c in wanted]))
  missing = [c for c in wanted if c not in seen]
  if missing:
    raise ValueError(f"validation case(s) {missing} are not cases of {builder.name} splits "
                     f"{list(splits)}; its cases are {sorted(seen)}.")
  return JoinedCases(train), JoinedCases(val)


def case_ids(builder: tfds.core.DatasetBuilder, split: str) -> list[str]:
  """The case id of each record of `split`, in record order, without decoding the volumes."""
  features = builder.info.features
  skip = {k: tfds.decode.SkipDecoding() for k in _VOLUME_KEYS if k in features}
  source = builder.as_data_source(split, decoders=skip)
  return [case_id_of(builder.name, source[i]) for i in range(len(source))]


def kfold(case_ids_: Sequence[str], *, num_folds: int = 5, fold: int = 0,
          seed: int = FOLD_SEED) -> tuple[list[str], list[str]]:
  """nnU-Net-style k-fold split of case ids -> (training ids, validation ids), both sorted.

  The sorted unique ids are permuted by `seed` and cut into `num_folds` contiguous parts whose
  sizes differ by at most one (the first `n % num_folds` parts are one larger); part `fold`
  validates.

  Raises:
    ValueError: fewer cases than folds, a fold out of range, or repeated case ids.
  """
  ids = sorted(str(c) for c in case_ids_)
  if len(set(ids)) != len(ids):
    raise ValueError(f"case ids repeat: {sorted({c for c in ids if ids.count(c) > 1})[:5]}.")
  if num_folds < 2:
    raise ValueError(f"config.dataset.num_folds={num_folds}: expected at least 2.")
  if not 0 <= fold < num_folds:
    raise ValueError(f"config.dataset.fold={fold}: expected 0..{num_folds - 1} "
                     f"(num_folds={num_folds}).")
  if len(ids) < num_folds:
    raise ValueError(f"{len(ids)} training cases cannot make {num_folds} folds; lower "
                     "config.dataset.num_folds or add cases.")
  # scikit-learn's KFold(shuffle=True, random_state=seed) shuffles with the legacy RandomState;
  # the same here gives nnU-Net's splits_final.json for the same case ids.
  order = np.random.RandomState(seed).permutation(len(ids))
  parts = np.array_split(order, num_folds)
  val = set(int(i) for i in parts[fold])
  return ([c for i, c in enumerate(ids) if i not in val],
          [c for i, c in enumerate(ids) if i in val])
