"""The dataset fingerprint: what planning and preprocessing need from every case, measured once.

nnU-Net's "dataset fingerprint" stage reads every training case once to get the voxel
spacings, shapes (after the non-zero crop) and foreground intensity statistics that its plans
are made of. medjax measures the same thing while a dataset is built: each case's fingerprint
(`of_case`) is taken from the example just written, and the fingerprints of a split are reduced
by mergeable accumulators (`SplitCombiner`), in one process by the in-process build and as a
`beam.CombineFn` by a Beam build (`medjax.data.beam_build`). The result is `fingerprint.json`
beside the built dataset's `dataset_info.json`:

    {"format": 1, "seed": 1234, "samples_per_case": 10000,
     "splits": {"train": {"num_cases": N,
                          "channels": [{"count", "mean", "std", "min", "max",
                                        "percentile_00_5", "median", "percentile_99_5",
                                        "num_samples"} or null, ...],
                          "cases": [{"case_id", "shape", "nonzero_box", "spacing", "axcodes",
                                     "affine", "has_label",
                                     "foreground": [{"count", "mean", "m2", "min", "max"}
                                                    or null, ...]}, ...]}}}

Per case (`CaseFingerprint`): the voxel grid as stored (shape, affine, spacing and axis codes
from the affine), the bounding box of its non-zero voxels (any channel, or a foreground label:
`geometry.forward`'s crop box), and per channel the moments of its foreground intensities
(`label > 0`) with up to `samples_per_case` of them drawn without replacement.

Per split (`SplitCombiner`), per channel: count, mean and (population) standard deviation of
ALL foreground voxels, from the per-case moments merged with Chan et al.'s pairwise update
(numerically stable, any grouping); minimum and maximum; the 0.5 / 50 / 99.5 percentiles of the
pooled per-case samples (`np.percentile`, linear). These are `normalize.ct_stats`' fields, as
nnU-Net's fingerprint computes them, except that the mean and std use every foreground voxel
rather than the samples. A channel's entry is null when some case of the split has no label
or the split has no foreground.

Reproducibility: a case's samples come from a generator seeded by `(seed, crc32(case_id),
channel)`, never by the case's position, and the accumulator keeps each case's partial result
under its case id and reduces them in case-id order. So the in-process build, a Beam build on
any number of workers and `preprocessing.fit` reading the cases give the same statistics, bit
for bit.

Memory: the accumulator of a split holds `samples_per_case` float32 values per case and channel
(40 kB each), e.g. 80 MB for 1,000 two-channel cases, as nnU-Net's fingerprint holds its
samples.

Consumers (`preprocessing.fit`, `planning.median_case_shape`) use a `Selection`: the
fingerprints of a run's training cases (`select`), and the split's intensity statistics when
those cases are exactly one whole split.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import zlib
from typing import Any, Iterable, Mapping, Sequence

import nibabel as nib
import numpy as np
from nibabel import orientations

from medjax.data import case_files
from medjax.data import normalize

FILENAME = "fingerprint.json"
FORMAT = 1
# The sampling seed behind the `ct` percentiles (medjax's `ct` statistics have always used it).
SEED = 1234
SAMPLES_PER_CASE = normalize.CT_SAMPLES_PER_CASE
CHANNEL_FIELDS = ("count", "mean", "std", "min", "max", "percentile_00_5", "median",
                  "percentile_99_5", "num_samples")
_PERCENTILES = (0.5, 50.0, 99.5)

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


# --- Moments: count, mean and sum of squared deviations, merged pairwise. ---


@dataclasses.dataclass(frozen=True)
class Moments:
  """Count, mean and sum of squared deviations (`m2`) of a set of values.

  `merge` is Chan, Golub and LeVeque's pairwise update (1979), exact in real arithmetic for any
  grouping and numerically stable (no sum of squares is ever formed).
  """
  count: int = 0
  mean: float = 0.0
  m2: float = 0.0

  @classmethod
  def of(cls, values: np.ndarray) -> Moments:
    """The moments of an array's values (float64 two-pass: mean, then squared deviations)."""
    x = np.asarray(values, np.float64).ravel()
    if x.size == 0:
      return cls()
    mean = float(x.mean())
    return cls(count=int(x.size), mean=mean, m2=float(np.sum(np.square(x - mean))))

  def merge(self, other: Moments) -> Moments:
    if other.count == 0:
      return self
    if self.count == 0:
      return other
    n = self.count + other.count
    delta = other.mean - self.mean
    mean = self.mean + delta * (other.count / n)
    m2 = self.m2 + other.m2 + delta * delta * (self.count * other.count / n)
    return Moments(count=n, mean=mean, m2=m2)

  @property
  def variance(self) -> float:
    """Population variance (`np.var`'s default, ddof 0)."""
    return self.m2 / self.count if self.count else math.nan

  @property
  def std(self) -> float:
    return math.sqrt(self.variance) if self.count else math.nan


class MomentsCombiner:
  """Mergeable `Moments` of streamed value arrays (a `beam.CombineFn`'s four methods)."""

  def create_accumulator(self) -> Moments:
    return Moments()

  def add_input(self, acc: Moments, values: np.ndarray | Moments) -> Moments:
    return acc.merge(values if isinstance(values, Moments) else Moments.of(values))

  def merge_accumulators(self, accs: Iterable[Moments]) -> Moments:
    out = Moments()
    for acc in accs:
      out = out.merge(acc)
    return out

  def extract_output(self, acc: Moments) -> Moments:
    return acc


class SamplesCombiner:
  """Pools value samples and gives their percentiles (`np.percentile`, linear interpolation).

  The accumulator is a list of arrays; percentiles do not depend on the order they were pooled.
  """

  def __init__(self, percentiles: Sequence[float] = _PERCENTILES):
    self.percentiles = tuple(float(p) for p in percentiles)

  def create_accumulator(self) -> list[np.ndarray]:
    return []

  def add_input(self, acc: list[np.ndarray], values: np.ndarray) -> list[np.ndarray]:
    acc.append(np.asarray(values).ravel())
    return acc

  def merge_accumulators(self, accs: Iterable[list[np.ndarray]]) -> list[np.ndarray]:
    return [a for acc in accs for a in acc]

  def extract_output(self, acc: list[np.ndarray]) -> tuple[int, tuple[float, ...] | None]:
    """(number of samples, their percentiles or None when there are none)."""
    # float64 before np.percentile: on float32 input it would interpolate in float32.
    pooled = np.concatenate(acc).astype(np.float64) if acc else np.zeros(0)
    if pooled.size == 0:
      return 0, None
    return int(pooled.size), tuple(float(v) for v in np.percentile(pooled, self.percentiles))


# --- One case. ---


@dataclasses.dataclass(frozen=True)
class ChannelForeground:
  """One channel's foreground intensities (`label > 0`) in one case.

  Attributes:
    moments: of all foreground voxels.
    minimum, maximum: of all foreground voxels.
    samples: up to `SAMPLES_PER_CASE` of them, float32 (the stored intensities are float32);
      empty in a fingerprint read back from JSON.
  """
  moments: Moments
  minimum: float
  maximum: float
  samples: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32),
                                          compare=False)

  def to_dict(self) -> dict[str, Any]:
    return {"count": self.moments.count, "mean": self.moments.mean, "m2": self.moments.m2,
            "min": self.minimum, "max": self.maximum}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> ChannelForeground:
    return cls(moments=Moments(int(d["count"]), float(d["mean"]), float(d["m2"])),
               minimum=float(d["min"]), maximum=float(d["max"]))


@dataclasses.dataclass(frozen=True)
class CaseFingerprint:
  """What the dataset fingerprint records of one case (see the module docstring).

  Attributes:
    case_id: the case identifier.
    shape: `(D, H, W)` voxels as stored.
    nonzero_box: `((start, stop),) * 3` in stored voxel order of the voxels non-zero in any
      channel or labelled foreground; the whole grid when there are none.
    affine: `[4, 4]` voxel-to-world (mm) as stored, row by row.
    has_label: whether the case is labelled.
    foreground: per channel, the foreground intensities, or None (no label, or no foreground).
  """
  case_id: str
  shape: tuple[int, int, int]
  nonzero_box: Box
  affine: tuple[tuple[float, ...], ...]
  has_label: bool
  foreground: tuple[ChannelForeground | None, ...]

  @property
  def spacing(self) -> tuple[float, float, float]:
    """Voxel size (mm) along the stored axes, from the affine."""
    return tuple(float(s) for s in nib.affines.voxel_sizes(np.asarray(self.affine)))

  @property
  def axcodes(self) -> str:
    return "".join(str(c) for c in nib.aff2axcodes(np.asarray(self.affine)))

  @property
  def nonzero_shape(self) -> tuple[int, int, int]:
    return tuple(b - a for a, b in self.nonzero_box)

  def grid(self, *, orientation: str | None, crop_nonzero: bool
           ) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """(shape, spacing) of the case before resampling, as `geometry.forward` makes it.

    The same orientation transform as `forward` (`nibabel.orientations`); the crop box is
    measured in stored voxel order, and reorienting permutes its sides, never changes them.
    These are `forward`'s `record.shape_before_resampling` and `spacing_before_resampling`.
    """
    affine = np.asarray(self.affine, np.float64)
    if orientation is None:
      ornt = np.array([[0, 1], [1, 1], [2, 1]], np.float64)
    else:
      ornt = orientations.ornt_transform(orientations.io_orientation(affine),
                                         orientations.axcodes2ornt(orientation.upper()))
    spacing = nib.affines.voxel_sizes(affine @ orientations.inv_ornt_aff(ornt, self.shape))
    stored = self.nonzero_shape if crop_nonzero else self.shape
    shape = [0, 0, 0]
    for axis, (to, _) in enumerate(ornt):
      shape[int(to)] = stored[axis]
    return tuple(shape), tuple(float(s) for s in spacing)

  def to_dict(self) -> dict[str, Any]:
    return {"case_id": self.case_id, "shape": list(self.shape),
            "nonzero_box": [list(b) for b in self.nonzero_box], "spacing": list(self.spacing),
            "axcodes": self.axcodes, "affine": [list(r) for r in self.affine],
            "has_label": self.has_label,
            "foreground": [None if f is None else f.to_dict() for f in self.foreground]}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> CaseFingerprint:
    return cls(case_id=str(d["case_id"]), shape=tuple(int(s) for s in d["shape"]),
               nonzero_box=tuple((int(a), int(b)) for a, b in d["nonzero_box"]),
               affine=tuple(tuple(float(v) for v in r) for r in d["affine"]),
               has_label=bool(d["has_label"]),
               foreground=tuple(None if f is None else ChannelForeground.from_dict(f)
                                for f in d["foreground"]))


def case_rng(case_id: str, channel: int, seed: int = SEED) -> np.random.Generator:
  """The sampling stream of one case and channel: from its id, not its position in a split."""
  return np.random.default_rng([seed, zlib.crc32(str(case_id).encode("utf-8")), channel])


def _bounding_box(mask: np.ndarray) -> Box:
  if not mask.any():
    return tuple((0, int(n)) for n in mask.shape)
  box = []
  for axis in range(3):
    hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
    box.append((int(hit[0]), int(hit[-1]) + 1))
  return tuple(box)


def of_case(case: case_files.Case, *, intensities: bool = True,
            samples_per_case: int = SAMPLES_PER_CASE, seed: int = SEED) -> CaseFingerprint:
  """The fingerprint of one loaded case (`image [D, H, W, C]`, `label [D, H, W]` or None).

  Args:
    case: the case as stored (`datasets.case_from_example` of its example).
    intensities: measure the foreground intensities (False: the geometry alone, which is all
      planning needs; `foreground` is then all None).
    samples_per_case: foreground samples kept per channel.
    seed: the sampling seed (see `case_rng`).
  """
  image = np.asarray(case.image)
  if image.ndim != 4:
    raise ValueError(f"case {case.case_id}: image must be [D, H, W, C], got {image.shape}.")
  label = None if case.label is None else np.asarray(case.label)
  keep = np.any(image != 0, axis=-1)
  fg = None if label is None else label > 0
  if fg is not None:
    keep |= fg
  foreground = [None] * image.shape[-1]
  if intensities and fg is not None and fg.any():
    for c in range(image.shape[-1]):
      values = image[..., c][fg]
      samples = normalize.foreground_samples(image[..., c], label, rng=case_rng(case.case_id, c,
                                                                               seed),
                                             num_samples=samples_per_case)
      foreground[c] = ChannelForeground(
          moments=Moments.of(values), minimum=float(values.min()), maximum=float(values.max()),
          samples=samples.astype(np.float32))
  affine = np.asarray(case.affine, np.float64).reshape(4, 4)
  return CaseFingerprint(
      case_id=str(case.case_id), shape=tuple(int(s) for s in image.shape[:3]),
      nonzero_box=_bounding_box(keep), affine=tuple(tuple(float(v) for v in r) for r in affine),
      has_label=label is not None, foreground=tuple(foreground))


# --- One split. ---


class SplitCombiner:
  """Reduces the `CaseFingerprint`s of one split to its JSON entry (see the module docstring).

  The accumulator maps case id -> fingerprint, so that `extract_output` merges the moments and
  pools the samples in case-id order whatever order the cases arrived in: a Beam build, which
  groups cases into bundles as its workers please, then gives the in-process build's numbers
  exactly. A case id seen twice is an error (it would be counted twice).
  """

  def create_accumulator(self) -> dict[str, CaseFingerprint]:
    return {}

  def add_input(self, acc: dict[str, CaseFingerprint], case: CaseFingerprint
                ) -> dict[str, CaseFingerprint]:
    if case.case_id in acc:
      raise ValueError(f"case {case.case_id} appears twice in one split of the fingerprint.")
    acc[case.case_id] = case
    return acc

  def merge_accumulators(self, accs: Iterable[dict[str, CaseFingerprint]]
                         ) -> dict[str, CaseFingerprint]:
    out: dict[str, CaseFingerprint] = {}
    for acc in accs:
      for case in acc.values():
        self.add_input(out, case)
    return out

  def extract_output(self, acc: dict[str, CaseFingerprint]) -> dict[str, Any]:
    cases = [acc[k] for k in sorted(acc)]
    num_channels = max((len(c.foreground) for c in cases), default=0)
    channels = []
    for ch in range(num_channels):
      parts = [c.foreground[ch] if ch < len(c.foreground) else None for c in cases]
      if not cases or any(not c.has_label for c in cases) or all(p is None for p in parts):
        channels.append(None)
        continue
      moments, samples = MomentsCombiner(), SamplesCombiner()
      m_acc, s_acc = moments.create_accumulator(), samples.create_accumulator()
      lo, hi = math.inf, -math.inf
      for p in parts:
        if p is None:  # a labelled case without foreground adds nothing
          continue
        m_acc = moments.add_input(m_acc, p.moments)
        s_acc = samples.add_input(s_acc, p.samples)
        lo, hi = min(lo, p.minimum), max(hi, p.maximum)
      m = moments.extract_output(m_acc)
      num_samples, pct = samples.extract_output(s_acc)
      if pct is None:  # read back from JSON: no samples to pool
        raise ValueError("the split's case fingerprints carry no foreground samples; reduce "
                         "fingerprints taken with `of_case`, not read back from JSON.")
      channels.append({"count": m.count, "mean": m.mean, "std": m.std, "min": lo, "max": hi,
                       "percentile_00_5": pct[0], "median": pct[1], "percentile_99_5": pct[2],
                       "num_samples": num_samples})
    return {"num_cases": len(cases), "channels": channels,
            "cases": [c.to_dict() for c in cases]}


def reduce_split(cases: Iterable[CaseFingerprint]) -> dict[str, Any]:
  """`SplitCombiner`'s result for the fingerprints of one split, in one process."""
  combiner = SplitCombiner()
  acc = combiner.create_accumulator()
  for case in cases:
    acc = combiner.add_input(acc, case)
  return combiner.extract_output(acc)


# --- The file. ---


def to_json(splits: Mapping[str, Mapping[str, Any]], *, samples_per_case: int = SAMPLES_PER_CASE,
            seed: int = SEED) -> str:
  """`fingerprint.json`'s text for `{split: SplitCombiner result}`."""
  return json.dumps({"format": FORMAT, "seed": seed, "samples_per_case": samples_per_case,
                     "splits": {k: splits[k] for k in sorted(splits)}}, indent=1) + "\n"


def read(dataset_dir: str | os.PathLike) -> dict[str, Any] | None:
  """The fingerprint of a built dataset (`<dataset_dir>/fingerprint.json`), or None without one
  (a dataset built before medjax wrote fingerprints, or a crop config).

  Raises:
    ValueError: the file exists but is not a fingerprint this version reads.
  """
  path = pathlib.Path(os.fspath(dataset_dir)) / FILENAME
  if not path.is_file():
    return None
  try:
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
      raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
    for split in data["splits"].values():
      split["cases"] = [CaseFingerprint.from_dict(c) for c in split["cases"]]
  except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path}: not a medjax dataset fingerprint ({e}); rebuild the dataset "
                     "with --overwrite to rewrite it.") from e
  return data


# --- What a training run takes from it. ---


@dataclasses.dataclass(frozen=True)
class Selection:
  """The fingerprint of a run's training cases.

  Attributes:
    cases: the training cases' fingerprints (in no particular order).
    channels: per channel, the split's statistics (`CHANNEL_FIELDS`, or None), when the
      training cases are exactly one whole split; else None (statistics of the split would not
      be the training cases').
  """
  cases: tuple[CaseFingerprint, ...]
  channels: tuple[dict[str, float] | None, ...] | None

  def ct_stats(self, channel: int) -> dict[str, float] | None:
    """`normalize.ct_stats` of one channel's training foreground, or None when not known."""
    if self.channels is None or channel >= len(self.channels) or self.channels[channel] is None:
      return None
    return {k: float(self.channels[channel][k]) for k in normalize.CT_STATS_FIELDS}


def select(data: Mapping[str, Any] | None,
           case_ids: Sequence[tuple[str, str]]) -> Selection | None:
  """The `Selection` of `(split, case_id)` training cases, or None when `data` lacks one of them.

  Args:
    data: `read`'s result (None: no fingerprint).
    case_ids: the run's training cases as (split, case id).
  """
  if data is None or not case_ids:
    return None
  splits = data["splits"]
  index = {(s, c.case_id): c for s, split in splits.items() for c in split["cases"]}
  found = [index.get((str(s), str(c))) for s, c in case_ids]
  if any(f is None for f in found):
    return None
  names = {s for s, _ in case_ids}
  channels = None
  if len(names) == 1:
    split = splits[next(iter(names))]
    wanted = sorted(c for _, c in case_ids)
    if wanted == sorted(c.case_id for c in split["cases"]):
      channels = tuple(split["channels"])
  return Selection(cases=tuple(found), channels=channels)
