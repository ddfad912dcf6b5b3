"""nnU-Net-style planning: the crop, batch size and UNET3D depth from the median case shape and a
memory budget.

`plan(median_shape, ...)` is nnU-Net v2's `get_plans_for_configuration`
(`nnunetv2/experiment_planning/experiment_planners/default_experiment_planner.py`) for medjax's
UNET3D:

1. the initial crop has the aspect ratio of the voxel spacing (isotropic in mm) and the volume of
   256^3 voxels, clipped to the median shape;
2. the network pools while every axis of the crop stays at least `min_edge` (4) voxels at the
   bottom, up to `max_num_levels`; the crop is rounded up to a multiple of 2^(levels - 1). Unlike
   nnU-Net, whose pooling stops per axis, UNET3D pools the three axes together, so the shortest
   axis sets the depth (a 20 x 256 x 256 median gets 3 levels);
3. while one step at `min_batch_size` would need more than the budget (`estimate_memory_mb`), the
   axis largest relative to the median shape shrinks by one pooling multiple;
4. the batch is as many samples as the budget holds, at most the batch whose crops cover
   `max_dataset_fraction` (5%) of the training set's voxels, and at least `min_batch_size` (2).

The memory estimate is calibrated against XLA (see `ACTIVATION_FACTOR`). The rest of the module
applies a plan to a training config (`config.plan`, `plan_run` in `training.loop`), and
`python -m medjax.plan` prints one without training.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import pathlib
from typing import Any, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np

from medjax import input_pipeline
from medjax import io
from medjax.data import fingerprint as fingerprint_lib
from medjax.data import geometry
from medjax.models import unet3d
from medjax.training import checks

FILENAME = "plan.json"

# Bytes of one step per byte of UNET3D's feature maps (`feature_map_elements` x batch x dtype
# bytes): what XLA keeps for the backward pass (each ConvBNReLU's convolution output for the
# BatchNorm gradient and its ReLU output for the next convolution's kernel gradient) plus the
# gradients flowing back. Measured with `compile().memory_analysis()` of the jitted train step
# on XLA:CPU (jaxlib 0.10.2, conv_method 'xla', 2 channels, 4 classes, SGD with momentum): the
# temporaries less one parameter-sized buffer (the gradients), per byte of feature maps, are
# 1.94-2.01 for base_features 2 (16^3 at 2 levels, batch 1; 16^3 and 24^3 at 3 levels, batch 2
# and 4; 32^3 at 2 levels), 1.79 for base 4 (16^3 at 3 levels; 32^3 at 4 levels), 1.93 for base
# 8 (16^3 at 3 levels) and 1.80 for base 8 at 32^3, 4 levels, batch 2. With 2.0,
# `estimate_memory_mb` is 1.00-1.09x XLA's temp + argument bytes for these nine (1.1 to 74 MB).
# The paper network (64^3, base 32, 4 levels, batch 1) with conv_method 'auto' needs 752 MB of
# temporaries where the estimate has 1083 MB (1239 MB with the arguments): its custom backward
# passes keep less, so the estimate errs on the safe side. bfloat16 activations measured
# 0.88-0.93x of float32 (BatchNorm and the gradients work in float32): plan them as float32.
ACTIVATION_FACTOR = 2.0
# The crop nnU-Net starts from before fitting it to the budget: 256^3 voxels.
INITIAL_VOXELS = 256**3
# Optimiser state per parameter (optax: SGD's momentum trace; Adam's two moments; RMSprop's
# second moment and momentum).
OPTIMIZER_SLOTS = {"sgd": 1, "adam": 2, "rmsprop": 2}


@dataclasses.dataclass(frozen=True)
class Plan:
  """The planned training shapes of one dataset.

  Attributes:
    crop_size: training crop and validation window `(D, H, W)`, voxels, divisible by
      2^(num_levels - 1).
    batch_size: global batch.
    num_levels: UNET3D resolution levels (the bottom one included).
    estimated_memory_mb: `estimate_memory_mb` of one train step on one device, MB (10^6 bytes).
    median_shape: the median case shape `(D, H, W)` planned from, voxels.
    memory_budget_mb: the budget planned for, MB per device.
    plans_crop: whether the crop and the levels were planned (else kept as given).
    plans_batch: whether the batch size was planned (else kept as given).
    num_cases: the training cases planned for.
    spacing: the voxel size (mm) of the initial aspect ratio, or None (isotropic voxels).
  """
  crop_size: tuple[int, int, int]
  batch_size: int
  num_levels: int
  estimated_memory_mb: float
  median_shape: tuple[int, int, int]
  memory_budget_mb: float
  plans_crop: bool = True
  plans_batch: bool = True
  num_cases: int = 0
  spacing: tuple[float, float, float] | None = None

  def as_overrides(self) -> dict[str, Any]:
    """The config keys the plan sets, flattened (`config.update_from_flattened_dict`): the crop,
    the validation window and the levels when `plans_crop`, the batch when `plans_batch`."""
    keys = {}
    if self.plans_crop:
      keys.update({"dataset.crop_size": self.crop_size, "eval.roi_size": self.crop_size,
                   "model.num_levels": self.num_levels})
    if self.plans_batch:
      keys["batch_size"] = self.batch_size
    return keys

  def command_line(self) -> str:
    """`as_overrides()` as `--config.key=value` flags (no spaces, so the shell keeps them)."""
    return " ".join(f"--config.{k}={_flag_value(v)}" for k, v in self.as_overrides().items())

  def to_dict(self) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> Plan:
    return cls(crop_size=tuple(int(s) for s in d["crop_size"]), batch_size=int(d["batch_size"]),
               num_levels=int(d["num_levels"]),
               estimated_memory_mb=float(d["estimated_memory_mb"]),
               median_shape=tuple(int(s) for s in d["median_shape"]),
               memory_budget_mb=float(d["memory_budget_mb"]),
               plans_crop=bool(d.get("plans_crop", True)),
               plans_batch=bool(d.get("plans_batch", True)),
               num_cases=int(d.get("num_cases", 0)),
               spacing=None if d.get("spacing") is None else
               tuple(float(s) for s in d["spacing"]))


def _flag_value(value: Any) -> str:
  if isinstance(value, tuple):
    return "(" + ",".join(str(v) for v in value) + ")"
  return str(value)


def feature_map_elements(crop_size: Sequence[int], *, num_channels: int, num_classes: int,
                         base_features: int, num_levels: int) -> int:
  """Elements of every feature map of one UNET3D sample's forward pass (`models.unet3d`).

  Per encoder level l (at 1/2^l of the crop, F = base_features): the two convolution outputs
  F*2^l and 2F*2^l and the max-pooled skip 2F*2^l at level l + 1; at the bottom the same two
  convolutions; per decoder level: the up-convolution (its input's channels) and two
  convolutions of 2F*2^l; the input and the logits at full resolution.
  """
  voxels = [math.prod(crop_size) // 8**level for level in range(num_levels)]
  f = base_features
  total = (num_channels + num_classes) * voxels[0]
  for level in range(num_levels):
    total += 3 * f * 2**level * voxels[level]  # conv1 (F 2^l) + conv2 (2F 2^l)
    if level < num_levels - 1:
      total += 2 * f * 2**level * voxels[level + 1]  # the pooled output
  channels = 2 * f * 2**(num_levels - 1)
  for level in reversed(range(num_levels - 1)):
    total += (channels + 4 * f * 2**level) * voxels[level]  # up-conv + conv1 + conv2
    channels = 2 * f * 2**level
  return total


def num_parameters(*, num_channels: int, num_classes: int, base_features: int,
                   num_levels: int) -> int:
  """UNET3D's parameter count (kernels, biases, BatchNorm scales and offsets)."""
  f, total, channels = base_features, 0, num_channels
  conv = lambda c_in, c_out: 27 * c_in * c_out + 3 * c_out  # kernel, bias, BN scale and offset
  for level in range(num_levels):
    width = f * 2**level
    total += conv(channels, width) + conv(width, 2 * width)
    channels = 2 * width
  for level in reversed(range(num_levels - 1)):
    width = 2 * f * 2**level
    total += 8 * channels * channels + channels  # 2x2x2 up-convolution, channels kept
    total += conv(width + channels, width) + conv(width, width)  # [skip, up] -> width
    channels = width
  return total + channels * num_classes + num_classes


def estimate_memory_mb(crop_size: Sequence[int], batch_size: int, *, num_channels: int,
                       num_classes: int, base_features: int, num_levels: int,
                       dtype_bytes: int = 4, optimizer_slots: int = 1) -> float:
  """Device memory of one UNET3D train step, MB (10^6 bytes).

  `ACTIVATION_FACTOR x batch x feature_map_elements x dtype_bytes` for the activations and their
  gradients, plus the float32 parameters, their gradients and `optimizer_slots` optimiser
  states, plus the batch (float32 image, int32 label). XLA's own figure for a compiled step is
  `compile().memory_analysis()`'s temp + argument bytes (the new state reuses the donated one).
  """
  kw = dict(num_channels=num_channels, num_classes=num_classes, base_features=base_features,
            num_levels=num_levels)
  activations = ACTIVATION_FACTOR * batch_size * feature_map_elements(crop_size, **kw)
  params = num_parameters(**kw) * 4 * (2 + optimizer_slots)
  batch = batch_size * math.prod(crop_size) * (num_channels + 1) * 4
  return (activations * dtype_bytes + params + batch) / 1e6


def _num_pools(crop: Sequence[int], max_num_levels: int, min_edge: int) -> int:
  """Poolings while every axis keeps at least `min_edge` voxels at the bottom (nnU-Net's rule
  per axis, here for the three axes together), at most `max_num_levels - 1`."""
  pools = 0
  while pools + 1 < max_num_levels and all(s / 2**(pools + 1) >= min_edge for s in crop):
    pools += 1
  return pools


def _topology(crop: Sequence[int], max_num_levels: int, min_edge: int
              ) -> tuple[list[int], int]:
  """(the crop rounded up to a multiple of 2^pools, levels = pools + 1)."""
  pools = _num_pools(crop, max_num_levels, min_edge)
  step = 2**pools
  return [-(-int(s) // step) * step for s in crop], pools + 1


def plan(median_shape: Sequence[int], *, num_channels: int, num_classes: int,
         base_features: int = 32, max_num_levels: int = 5, memory_budget_mb: float = 8000.0,
         num_cases: int, spacing: Sequence[float] | None = None, min_batch_size: int = 2,
         max_dataset_fraction: float = 0.05, dtype_bytes: int = 4, optimizer_slots: int = 1,
         num_devices: int = 1, min_edge: int = 4, crop_size: Sequence[int] | None = None,
         num_levels: int | None = None, batch_size: int | None = None) -> Plan:
  """nnU-Net's crop and batch size for UNET3D (the module docstring gives the steps).

  Args:
    median_shape: the training cases' median shape `(D, H, W)` on the network's grid, voxels.
    num_channels: input channels.
    num_classes: output channels.
    base_features: UNET3D's first width.
    max_num_levels: the deepest UNET3D to plan (levels including the bottom one).
    memory_budget_mb: the memory one train step may use on one device, MB.
    num_cases: training cases (for the `max_dataset_fraction` cap).
    spacing: voxel size (mm) of the network's grid, for the initial aspect ratio; None = isotropic.
    min_batch_size: the smallest global batch (nnU-Net: 2).
    max_dataset_fraction: a batch covers at most this fraction of the training set's voxels
      (`num_cases x prod(median_shape)`), unless `min_batch_size` needs more.
    dtype_bytes: bytes of one activation (4 for float32; see `ACTIVATION_FACTOR` on bfloat16).
    optimizer_slots: optimiser states per parameter (`OPTIMIZER_SLOTS`).
    num_devices: devices the global batch is split over; the batch is a multiple of it and the
      budget is per device.
    min_edge: the smallest bottom-level edge, voxels (nnU-Net's 4).
    crop_size, num_levels: kept instead of planned when given (both or neither).
    batch_size: kept instead of planned when given; the crop is then fitted to it.

  Returns:
    The `Plan`.

  Raises:
    ValueError: a bad argument, or a budget that not even the smallest crop fits.
  """
  median = tuple(int(s) for s in median_shape)
  if len(median) != 3 or min(median) < 1:
    raise ValueError(f"median_shape={median_shape}: expected 3 positive voxel counts (D, H, W).")
  if memory_budget_mb <= 0 or num_cases < 1 or max_num_levels < 1 or num_devices < 1:
    raise ValueError(f"plan needs a positive memory_budget_mb ({memory_budget_mb}), num_cases "
                     f"({num_cases}), max_num_levels ({max_num_levels}) and num_devices "
                     f"({num_devices}).")
  if (crop_size is None) != (num_levels is None):
    raise ValueError("plan: give crop_size and num_levels together (a kept crop keeps its "
                     "network), or neither.")
  kw = dict(num_channels=num_channels, num_classes=num_classes, base_features=base_features,
            dtype_bytes=dtype_bytes, optimizer_slots=optimizer_slots)
  round_up = lambda b: -(-int(b) // num_devices) * num_devices
  smallest = round_up(batch_size if batch_size is not None else min_batch_size)
  estimate = lambda c, b, l: estimate_memory_mb(c, b // num_devices, num_levels=l, **kw)

  if crop_size is not None:
    crop, levels = [int(s) for s in crop_size], int(num_levels)
  else:
    inverse = 1.0 / np.asarray(spacing if spacing is not None else (1.0, 1.0, 1.0), np.float64)
    initial = inverse * (INITIAL_VOXELS / np.prod(inverse))**(1 / 3)
    crop, levels = _topology([min(int(round(s)), m) for s, m in zip(initial, median)],
                             max_num_levels, min_edge)
    fixed: set[int] = set()  # axes that cannot shrink any further
    while estimate(crop, smallest, levels) > memory_budget_mb:
      # Shrink the axis that is largest relative to the median shape (keeps the aspect ratio).
      axes = [a for a in np.argsort([c / m for c, m in zip(crop, median)])[::-1]
              if a not in fixed]
      if not axes:
        raise ValueError(
            f"memory_budget_mb={memory_budget_mb} does not fit one train step at batch "
            f"{smallest} even with crop {tuple(crop)} ({estimate(crop, smallest, levels):.0f} "
            "MB); raise the budget or lower the batch or model.base_features.")
      axis = int(axes[0])
      # Subtract the pooling multiple of the smaller crop: with the current one (64 for 256 at
      # 7 levels) valid sizes in between would be skipped (nnU-Net's two-step reduction).
      trial = list(crop)
      trial[axis] -= 2**(levels - 1)
      step = 2**(_topology([max(s, 1) for s in trial], max_num_levels, min_edge)[1] - 1)
      trial = list(crop)
      trial[axis] -= step
      if trial[axis] < 1:
        fixed.add(axis)
        continue
      new_crop, new_levels = _topology(trial, max_num_levels, min_edge)
      if new_crop[axis] >= crop[axis]:
        fixed.add(axis)
        continue
      crop, levels = new_crop, new_levels

  if batch_size is not None:
    batch = smallest
  else:
    per_sample = estimate(crop, 2 * num_devices, levels) - estimate(crop, num_devices, levels)
    fits = num_devices * int((memory_budget_mb - estimate(crop, 0, levels)) // per_sample)
    covered = max_dataset_fraction * num_cases * math.prod(median) / math.prod(crop)
    cap = int(round(covered)) // num_devices * num_devices
    batch = max(min(fits, cap), smallest)
  return Plan(crop_size=tuple(crop), batch_size=int(batch), num_levels=int(levels),
              estimated_memory_mb=round(estimate(crop, batch, levels), 1), median_shape=median,
              memory_budget_mb=float(memory_budget_mb), plans_crop=crop_size is None,
              plans_batch=batch_size is None, num_cases=int(num_cases),
              spacing=None if spacing is None else tuple(float(s) for s in spacing))


def describe(p: Plan) -> str:
  """One line: the plan and the shape it came from."""
  shape = lambda s: "x".join(str(v) for v in s)
  return (f"crop {shape(p.crop_size)}, batch {p.batch_size}, {p.num_levels} levels, "
          f"~{p.estimated_memory_mb:,.0f} MB per step (budget {p.memory_budget_mb:,.0f} MB; "
          f"median case {shape(p.median_shape)} voxels)")


# --- The plan of a training config (config.plan). ---


def median_case_shape(cases: Sequence[Any], preprocessing: Any, *,
                      fingerprint: Any = None
                      ) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
  """(median shape, voxel spacing) of `cases` on the network's grid, as `preprocessing` makes it.

  Each case is reoriented and cropped to its non-zero box as `preprocessing` says, without
  resampling (`fingerprint.CaseFingerprint.grid`, the shape and spacing `geometry.forward`
  gives before resampling, as `preprocessing.fit` measures spacings); its shape after
  resampling is then `geometry.resampled_shape` of that shape, its spacing and the target
  spacing, the shape `Preprocessing.prepare` gives. The median is nnU-Net's
  `median_image_size_in_voxels` (per axis, rounded). The spacing is the target spacing, or the
  cases' median spacing when each case keeps its own.

  Args:
    cases: `layouts.Case`s (e.g. `datasets.Cases`), read once each unless `fingerprint` is
      given.
    preprocessing: the run's `preprocessing.Preprocessing`.
    fingerprint: the dataset fingerprint of `cases` (`fingerprint.Selection`, see
      `input_pipeline.training_fingerprint`); then no case is read.
  """
  if fingerprint is not None:
    measured = list(fingerprint.cases)
  else:
    measured = [fingerprint_lib.of_case(case, intensities=False) for case in cases]
  if not measured:
    raise ValueError("no training cases to plan the crop from.")
  target = preprocessing.target_spacing
  shapes, spacings = [], []
  for case in measured:
    shape, spacing = case.grid(orientation=preprocessing.orientation,
                               crop_nonzero=preprocessing.crop_nonzero)
    shapes.append(shape if target is None else geometry.resampled_shape(shape, spacing, target))
    spacings.append(spacing)
  median = tuple(max(1, int(round(s))) for s in np.median(np.asarray(shapes), axis=0))
  spacing = tuple(float(s) for s in (target if target is not None else
                                     geometry.median_spacing(spacings)))
  return median, spacing


def plan_from_config(config: ml_collections.ConfigDict, *, median_shape: Sequence[int],
                     num_cases: int, spacing: Sequence[float] | None = None,
                     num_devices: int = 1) -> Plan:
  """`plan` with `config.plan`'s settings for `config`'s UNET3D, data and optimiser.

  A choice switched off (`config.plan.choose_crop` / `choose_batch`) keeps the config's values
  (`dataset.crop_size` with `model.num_levels`; `batch_size`).
  """
  checks.check_plan_settings(config)
  settings, ds = config.plan, config.dataset
  if ds.num_modalities is None or ds.num_classes is None:
    raise ValueError("planning needs config.dataset.num_modalities and num_classes (resolve "
                     "them from the dataset first).")
  base = config.model.base_features or unet3d.UNet3D.base_features
  levels = config.model.num_levels or unet3d.UNet3D.num_levels
  return plan(
      median_shape, num_channels=int(ds.num_modalities),
      num_classes=len(ds.regions) if ds.regions is not None else int(ds.num_classes),
      base_features=int(base), max_num_levels=int(settings.max_num_levels),
      memory_budget_mb=float(settings.memory_budget_mb), num_cases=int(num_cases),
      spacing=spacing, min_batch_size=int(settings.min_batch_size),
      max_dataset_fraction=float(settings.max_dataset_fraction),
      optimizer_slots=OPTIMIZER_SLOTS.get(config.optimizer, 2), num_devices=num_devices,
      # bfloat16 planned as float32: see ACTIVATION_FACTOR.
      dtype_bytes=4,
      crop_size=None if settings.choose_crop else tuple(ds.crop_size),
      num_levels=None if settings.choose_crop else int(levels),
      batch_size=None if settings.choose_batch else int(config.batch_size))


def apply_plan(config: ml_collections.ConfigDict, p: Plan) -> ml_collections.ConfigDict:
  """A copy of `config` with the keys `p` plans (`Plan.as_overrides`) replaced."""
  config = copy.deepcopy(config)
  config.update_from_flattened_dict(p.as_overrides())
  return config


def plan_dataset(config: ml_collections.ConfigDict, builder: Any, preprocessing: Any,
                 num_devices: int = 1) -> Plan:
  """The plan of `config`'s training cases in `builder`, prepared by `preprocessing`."""
  if getattr(builder.builder_config, "crop_size", None) is not None:
    raise ValueError(f"config.plan.enabled plans crops of whole cases, but "
                     f"{builder.name}/{builder.builder_config.name} holds crops sampled in "
                     "advance; use the 'full' config.")
  train, _ = input_pipeline.split_cases(config, builder)
  median, spacing = median_case_shape(
      train, preprocessing, fingerprint=input_pipeline.training_fingerprint(builder, train))
  return plan_from_config(config, median_shape=median, num_cases=len(train), spacing=spacing,
                          num_devices=num_devices)


def plan_run(config: ml_collections.ConfigDict, builder: Any, preprocessing: Any,
             workdir: str | os.PathLike) -> tuple[ml_collections.ConfigDict, Plan | None]:
  """`config` with its planned keys when `config.plan.enabled`, and the plan (else None).

  A resumed run takes the plan of `<workdir>/plan.json`, so its shapes match its checkpoints and
  the cases are not read again; a changed `config.plan` is then an error. The planned config is
  checked like a configured one (`training.checks`).
  """
  if not config.plan.enabled:
    return config, None
  saved = load(workdir)
  if saved is not None:
    p, settings = saved
    if settings != config.plan.to_dict():
      raise ValueError(f"{pathlib.Path(workdir) / FILENAME} was planned with config.plan "
                       f"{settings}, but the config asks for {config.plan.to_dict()}; use the "
                       "run's own settings or a new --workdir.")
  else:
    p = plan_dataset(config, builder, preprocessing, num_devices=jax.device_count())
  config = apply_plan(config, p)
  checks.check_config(config)
  checks.check_model(config)
  logging.info("Plan: %s; %s", describe(p), p.command_line())
  if jax.process_index() == 0:
    print(f"medjax: planned {describe(p)}.", flush=True)
  return config, p


def save(workdir: str | os.PathLike, p: Plan, config: ml_collections.ConfigDict
         ) -> pathlib.Path:
  """Writes `<workdir>/plan.json` (the plan, its overrides and `config.plan`) atomically."""
  data = {"plan": p.to_dict(), "overrides": {k: list(v) if isinstance(v, tuple) else v
                                             for k, v in p.as_overrides().items()},
          "settings": config.plan.to_dict()}
  return io.write_text(pathlib.Path(workdir) / FILENAME, json.dumps(data, indent=2) + "\n")


def load(workdir: str | os.PathLike) -> tuple[Plan, dict[str, Any]] | None:
  """(plan, `config.plan` settings) of `<workdir>/plan.json`, or None when there is none."""
  path = pathlib.Path(workdir) / FILENAME
  if not path.is_file():
    return None
  try:
    data = json.loads(path.read_text())
    return Plan.from_dict(data["plan"]), dict(data["settings"])
  except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path}: not a valid medjax plan ({e}); medjax.train writes it when "
                     "config.plan.enabled.") from e
