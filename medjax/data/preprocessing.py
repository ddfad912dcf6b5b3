"""The preprocessing contract: one object that training, validation and prediction all apply.

A `Preprocessing` is built once per training run from `config.dataset` and the training cases'
statistics (`fit`), saved in the workdir as `preprocessing.json`, and read back by
`medjax.predict` (`load`), so that a scan is prepared for the network exactly as the training
scans were, with nothing but the workdir (nnU-Net's "plans" play this role there).

`prepare(image, affine, label=None)` of one scan (`[D, H, W, C]` raw intensities in the file's
voxel order):

1. reorient the voxel axes to `orientation` (e.g. RAS; 'none' keeps the file's order) and crop
   to the box of non-zero voxels (`crop_nonzero`);
2. normalise channel c with `normalization[c]` (`medjax.data.normalize`; `ct` channels with the
   training set's foreground statistics);
3. resample to `target_spacing` (spline order `image_order` for images; labels by
   `label_method`).

This is nnU-Net's order (normalisation before resampling, so the per-volume statistics see the
voxels as stored). Steps 1 and 3 are `medjax.data.geometry.forward`, recorded in a
`GeometryRecord`; `restore(probabilities, record)` undoes them for the network's class probabilities, so a
predicted label map has exactly the input file's shape and affine.

With orientation 'none', no target spacing and no crop (the iSeg-2017 experiment), `prepare`
is the normalisation alone, as medjax did before this contract existed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Sequence

import numpy as np

from medjax import io
from medjax.data import datasets
from medjax.data import fingerprint as fingerprint_lib
from medjax.data import geometry
from medjax.data import normalize

FILENAME = "preprocessing.json"
TARGET_SPACING_RULES = ("median", "nnunet", "none")
LABEL_METHODS = geometry.LABEL_METHODS


@dataclasses.dataclass(frozen=True)
class Prepared:
  """One scan on the network's grid.

  Attributes:
    image: `[d, h, w, C]` float32, normalised.
    label: `[d, h, w]` uint8 class ids on the same grid, or None.
    record: what `Preprocessing.restore` needs to return to the file's grid.
  """
  image: np.ndarray
  label: np.ndarray | None
  record: geometry.GeometryRecord


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How scans are prepared for one trained model (see the module docstring).

  Attributes:
    names: the dataset's channel names, class names and label values.
    normalization: one `normalize.ALL_MODES` mode per channel.
    clip_percentiles: the per-volume percentile clip of the per-volume modes, or None.
    intensity_stats: per channel, the training set's `normalize.ct_stats` for `ct` channels,
      else None.
    orientation: voxel axis codes of the prepared grid (e.g. 'RAS'), or None for the file's.
    target_spacing: voxel size (mm) of the prepared grid along its axes, or None to keep each
      scan's own.
    crop_nonzero: crop each scan to the box of its non-zero voxels.
    image_order: spline order of image resampling.
    label_method: `linear_onehot` (interpolate each class's one-hot map, take the argmax) or
      `nearest`.
  """
  names: datasets.DatasetNames
  normalization: tuple[str, ...]
  clip_percentiles: tuple[float, float] | None = normalize.DEFAULT_CLIP_PERCENTILES
  intensity_stats: tuple[dict[str, float] | None, ...] = ()
  orientation: str | None = None
  target_spacing: tuple[float, float, float] | None = None
  crop_nonzero: bool = False
  image_order: int = 3
  label_method: str = "linear_onehot"

  def __post_init__(self):
    if len(self.normalization) != self.num_channels:
      raise ValueError(f"normalization {self.normalization} must give one mode per channel "
                       f"{self.names.channel_names}.")
    for mode in self.normalization:
      if mode not in normalize.ALL_MODES:
        raise ValueError(f"normalization must be one of {normalize.ALL_MODES}, got {mode!r}.")
    if self.label_method not in LABEL_METHODS:
      raise ValueError(f"label_method must be one of {LABEL_METHODS}, got "
                       f"{self.label_method!r}.")
    if not self.intensity_stats:
      object.__setattr__(self, "intensity_stats", (None,) * self.num_channels)

  @property
  def num_channels(self) -> int:
    return len(self.names.channel_names)

  @property
  def num_classes(self) -> int:
    return len(self.names.class_names)

  def prepare(self, image: np.ndarray, affine: np.ndarray,
              label: np.ndarray | None = None) -> Prepared:
    """One scan `[D, H, W, C]` (raw, file voxel order) -> the network's grid, normalised."""
    image = np.asarray(image)
    if image.ndim != 4 or image.shape[-1] != self.num_channels:
      raise ValueError(
          f"image of shape {image.shape}: expected [D, H, W, {self.num_channels}] with the "
          f"channels {self.names.channel_names} the model was trained on.")
    def normalize_fn(oriented: np.ndarray, mask: np.ndarray) -> np.ndarray:
      del mask  # the per-volume modes find their own non-zero voxels
      return normalize.normalize_channels(
          oriented, self.normalization, clip_percentiles=self.clip_percentiles,
          dataset_stats=self.intensity_stats)

    normalized, moved_label, record = geometry.forward(
        image, affine, label=label, orientation=self.orientation,
        target_spacing=self.target_spacing, crop_nonzero=self.crop_nonzero,
        num_classes=self.num_classes, image_order=self.image_order,
        label_method=self.label_method, before_resampling=normalize_fn)
    return Prepared(image=normalized, label=moved_label, record=record)

  def restore(self, probabilities: np.ndarray, record: geometry.GeometryRecord, *,
              class0_is_background: bool = True) -> np.ndarray:
    """Class probabilities `[d, h, w, K]` on the prepared grid -> the file's grid `[D, H, W, K]`.

    Outside a non-zero crop the probabilities are background's (class 0); with
    `class0_is_background=False` (region outputs) they are 0 for every channel.
    """
    return geometry.inverse_probabilities(probabilities, record,
                                          class0_is_background=class0_is_background)

  def to_dict(self) -> dict[str, Any]:
    return {
        "names": self.names.to_dict(),
        "normalization": list(self.normalization),
        "clip_percentiles": None if self.clip_percentiles is None else list(self.clip_percentiles),
        "intensity_stats": list(self.intensity_stats),
        "orientation": self.orientation,
        "target_spacing": None if self.target_spacing is None else list(self.target_spacing),
        "crop_nonzero": self.crop_nonzero,
        "image_order": self.image_order,
        "label_method": self.label_method,
    }

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
    clip, spacing = d.get("clip_percentiles"), d.get("target_spacing")
    return cls(
        names=datasets.DatasetNames.from_dict(d["names"]),
        normalization=tuple(d["normalization"]),
        clip_percentiles=None if clip is None else tuple(float(c) for c in clip),
        intensity_stats=tuple(None if s is None else {k: float(v) for k, v in s.items()}
                              for s in d.get("intensity_stats") or ()),
        orientation=d.get("orientation"),
        target_spacing=None if spacing is None else tuple(float(s) for s in spacing),
        crop_nonzero=bool(d.get("crop_nonzero", False)),
        image_order=int(d.get("image_order", 3)),
        label_method=str(d.get("label_method", "linear_onehot")))

  def save(self, workdir: str | os.PathLike) -> pathlib.Path:
    """Writes `<workdir>/preprocessing.json` atomically."""
    return io.write_text(pathlib.Path(workdir) / FILENAME,
                         json.dumps(self.to_dict(), indent=2) + "\n")


def load(workdir: str | os.PathLike) -> Preprocessing | None:
  """The `Preprocessing` saved in a training workdir, or None when it has none (older runs)."""
  path = pathlib.Path(workdir) / FILENAME
  if not path.is_file():
    return None
  try:
    return Preprocessing.from_dict(json.loads(path.read_text()))
  except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path}: not a valid medjax preprocessing file ({e}); it is written by "
                     "medjax.train beside the checkpoints.") from e


def resolve_normalization(setting: str, channel_names: Sequence[str]) -> tuple[str, ...]:
  """`config.dataset.normalization` -> one mode per channel.

  `setting` is one mode for every channel, a comma-separated list with one mode per channel,
  or `auto`: nnU-Net's choice by channel name, `ct` for channels named CT and
  `full_volume_mean` (z-score over the volume) for every other channel.
  """
  names = tuple(channel_names)
  if setting == "auto":
    return tuple("ct" if n.strip().upper() == "CT" else "full_volume_mean" for n in names)
  modes = tuple(m.strip() for m in str(setting).split(","))
  if len(modes) == 1:
    modes = modes * len(names)
  if len(modes) != len(names):
    raise ValueError(f"config.dataset.normalization={setting!r} gives {len(modes)} modes for "
                     f"{len(names)} channels {names}; give one mode, one per channel, or 'auto'.")
  for mode in modes:
    if mode not in normalize.ALL_MODES:
      raise ValueError(f"config.dataset.normalization must be one of {normalize.ALL_MODES} "
                       f"(or 'auto', or one per channel), got {mode!r}.")
  return modes


def resolve_orientation(setting: str) -> str | None:
  """`config.dataset.orientation` ('none' or three axis codes such as RAS, LPS) -> codes."""
  if str(setting).lower() in ("none", ""):
    return None
  codes = str(setting).upper()
  pairs = ("LR", "PA", "IS")
  axes = sorted(next((i for i, p in enumerate(pairs) if c in p), -1) for c in codes)
  if axes != [0, 1, 2]:
    raise ValueError(f"config.dataset.orientation={setting!r}: expected 'none' or three axis "
                     "codes, one of L/R, one of P/A and one of I/S, e.g. 'RAS' or 'LPS'.")
  return codes


def parse_target_spacing(setting: str) -> str | tuple[float, float, float]:
  """`config.dataset.target_spacing` -> a rule of TARGET_SPACING_RULES or three sizes in mm."""
  text = str(setting).strip().lower()
  if text in TARGET_SPACING_RULES:
    return text
  try:
    values = tuple(float(v) for v in text.strip("()[] ").split(","))
  except ValueError:
    values = ()
  if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
    raise ValueError(f"config.dataset.target_spacing={setting!r}: expected one of "
                     f"{TARGET_SPACING_RULES} or three positive voxel sizes in mm such as "
                     "'1.0,1.0,2.5'.")
  return values


def config_choices(ds_config: Any, names: datasets.DatasetNames) -> dict[str, Any]:
  """The `Preprocessing` fields that `config.dataset` decides without looking at the data."""
  clip = ds_config.clip_percentiles
  return dict(
      normalization=resolve_normalization(ds_config.normalization, names.channel_names),
      clip_percentiles=None if clip is None else tuple(float(c) for c in clip),
      orientation=resolve_orientation(ds_config.orientation),
      crop_nonzero=bool(ds_config.crop_nonzero),
      image_order=int(ds_config.resample_image_order),
      label_method=str(ds_config.resample_label))


def fit(ds_config: Any, names: datasets.DatasetNames, train_cases: Sequence[Any], *,
        fingerprint: fingerprint_lib.Selection | None = None) -> Preprocessing:
  """The `Preprocessing` of a training run from `config.dataset` and its training cases.

  Measures the cases only when a choice needs them: a target spacing from the training set
  ('median': the median voxel size per axis of the reoriented, cropped cases, as nnU-Net's
  default; 'nnunet': the same with nnU-Net's rule for anisotropic data,
  `geometry.target_spacing`) or `ct` statistics (`fingerprint.SplitCombiner`'s: mean and std
  of every foreground voxel, 0.5 / 99.5 percentiles of up to 10,000 sampled per case).

  With the built dataset's fingerprint of these cases (`fingerprint`, see
  `input_pipeline.training_fingerprint`) no case is read: spacings and shapes come from its
  per-case entries, `ct` statistics from its split statistics when the training cases are
  exactly one whole split (`Selection.channels`). Otherwise the cases (`layouts.Case`, e.g.
  `datasets.Cases`) are read and fingerprinted the way the build does, so both give the same
  `Preprocessing`.
  """
  choices = config_choices(ds_config, names)
  modes = choices["normalization"]
  spacing_rule = parse_target_spacing(ds_config.target_spacing)
  ct_channels = [c for c, mode in enumerate(modes) if mode == "ct"]
  need_spacing = isinstance(spacing_rule, str) and spacing_rule != "none"
  stats: list[dict[str, float] | None] = [None] * len(modes)
  geometries = None
  if fingerprint is not None:
    geometries = fingerprint.cases if need_spacing else None
    stats = [fingerprint.ct_stats(c) if c in ct_channels else None for c in range(len(modes))]
  load_spacing = need_spacing and geometries is None
  load_ct = any(stats[c] is None for c in ct_channels)
  if load_spacing or load_ct:
    if not len(train_cases):
      raise ValueError("no training cases to compute the preprocessing statistics from.")
    measured = []
    for case in train_cases:
      if load_ct and case.label is None:
        raise ValueError(f"training case {case.case_id} has no label; the 'ct' "
                         "normalisation needs labelled foreground.")
      measured.append(fingerprint_lib.of_case(case, intensities=load_ct))
    if load_spacing:
      geometries = measured
    if load_ct:
      channels = fingerprint_lib.reduce_split(measured)["channels"]
      for c in ct_channels:
        if channels[c] is None:
          raise ValueError("no foreground voxels in the training cases: the 'ct' normalisation "
                           "needs labelled foreground to compute its intensity statistics.")
        stats[c] = {k: float(channels[c][k]) for k in normalize.CT_STATS_FIELDS}
  if need_spacing:
    grids = [g.grid(orientation=choices["orientation"], crop_nonzero=choices["crop_nonzero"])
             for g in geometries]
    shapes, spacings = [g[0] for g in grids], [g[1] for g in grids]
  if spacing_rule == "none":
    target = None
  elif spacing_rule == "median":
    target = geometry.median_spacing(spacings)
  elif spacing_rule == "nnunet":
    target = geometry.target_spacing(spacings, shapes)
  else:
    target = spacing_rule
  return Preprocessing(
      names=names, intensity_stats=tuple(stats),
      target_spacing=None if target is None else tuple(float(s) for s in target), **choices)
