"""One canonical voxel grid per scan for the network, and its exact inverse for predictions.

`forward` brings a scan (image `[D, H, W, C]`, optional label `[D, H, W]`, affine `[4, 4]`) to
the grid the network sees, in nnU-Net's order (nnunetv2 `preprocessing/`):

1. **Orientation** (`orientation='RAS'`): a pure permutation / flip of the voxel axes, chosen by
   `nibabel.orientations` (`io_orientation` -> `ornt_transform` -> `apply_orientation`), so the
   axis codes of the result are `orientation` (`nibabel.aff2axcodes`). Exact, no interpolation;
   the affine and spacing follow the axes. nnU-Net transposes axes by spacing instead; reorienting
   to RAS makes every case of a dataset share one axis order whatever its file's orientation.
2. **Non-zero crop** (`crop_nonzero=True`): the bounding box of the voxels that are non-zero in
   any channel (nnU-Net's `crop_to_nonzero`; filling holes, as nnU-Net does for its mask, never
   changes that box) or carry a foreground label (nnU-Net would drop such labels silently).
3. **Resampling** to `target_spacing` (skipped when None or when the shape does not change):
   new shape `round(spacing / target_spacing * shape)` per axis (nnU-Net's `compute_new_shape`).
   Images: spline interpolation of order `image_order` (3) per channel; labels: `linear_onehot`
   (linear interpolation of each class's one-hot map, then argmax; nnU-Net's segmentation
   resampling thresholds each map at 0.5 instead) or `nearest`. For strongly anisotropic data
   (`anisotropic_axis`: max / min spacing > 3 in the source, else in the target spacing, with a
   single lowest-resolution axis) the in-plane axes use that order and the low-resolution axis
   order 0, as nnU-Net's `resample_data_or_seg(do_separate_z=True, order_z=0)`.

Voxel-centre convention (scikit-image `resize`, nnU-Net, `scipy.ndimage.zoom(grid_mode=True)`):
the two grids cover the same field of view; its corners are the outer faces of the corner voxels.
Along an axis resampled from n to m voxels, the centre of new voxel j lies at old voxel
coordinate `(j + 0.5) * n / m - 0.5`, and values beyond the outer voxel centres repeat the edge
voxel (`mode='nearest'`). The preprocessed grid's affine `record.affine` is the oriented, cropped
affine composed with that map, so its voxel size is `spacing * n / m`: `target_spacing` up to the
rounding of the shape (`record.spacing_after_resampling` holds the exact one). Downsampling uses
no anti-aliasing, like nnU-Net.

A `GeometryRecord` (JSON-able with `to_dict` / `from_dict`) holds what undoes the transform:
`inverse_probabilities` resamples class probabilities back (linear, with the same anisotropic
rule), pads outside the crop box with background (class 0) probability 1 and undoes the
orientation, giving probabilities on the original file's voxel grid; `inverse_labels` does the
same for a label map.

Dataset level: `median_spacing` is the per-axis median of the cases' spacings; `target_spacing` is
nnU-Net's full-resolution rule (`ExperimentPlanner.determine_fullres_target_spacing`), which lowers
the low-resolution axis of strongly anisotropic datasets to that axis's 10th percentile. Pass them
spacings and shapes in the canonical axes (`record.spacing_before_resampling` and
`record.shape_before_resampling` of `forward(..., target_spacing=None)`).

Everything is deterministic numpy / scipy (no JAX: this runs in dataset builders and input
pipelines); images and probabilities come out float32, labels uint8.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import nibabel as nib
import numpy as np
from nibabel import orientations
from scipy import ndimage

LABEL_METHODS = ("linear_onehot", "nearest")
# nnU-Net's ANISO_THRESHOLD (nnunetv2/configuration.py).
ANISOTROPY_THRESHOLD = 3.0
# Spline order along the low-resolution axis of anisotropic data (nnU-Net's order_z).
SEPARATE_AXIS_ORDER = 0
_AXIS_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


# ---------------------------------------------------------------------------------------------
# The record.


def _int3(values: Sequence[Any], name: str) -> tuple[int, int, int]:
  out = tuple(int(v) for v in values)
  if len(out) != 3:
    raise ValueError(f"GeometryRecord.{name} must have 3 entries, got {tuple(values)}.")
  return out


def _float3(values: Sequence[Any], name: str) -> tuple[float, float, float]:
  out = tuple(float(v) for v in values)
  if len(out) != 3:
    raise ValueError(f"GeometryRecord.{name} must have 3 entries, got {tuple(values)}.")
  return out


def _matrix(values: Any, name: str) -> tuple[tuple[float, ...], ...]:
  m = np.asarray(values, dtype=np.float64)
  if m.shape != (4, 4):
    raise ValueError(f"GeometryRecord.{name} must be 4x4, got shape {m.shape}.")
  return tuple(tuple(float(v) for v in row) for row in m)


@dataclasses.dataclass(frozen=True)
class GeometryRecord:
  """Everything that undoes `forward` for one scan. Immutable, comparable, JSON-able.

  Sequences are stored as tuples (affines as 4 rows of 4 floats; `np.asarray` gives the matrix),
  so records compare with `==` and `to_dict()` is exact through `json`.

  Attributes:
    original_shape: `(D0, H0, W0)` of the file's voxel grid.
    original_affine: `[4, 4]` voxel-to-world (mm) affine of the file.
    ornt: the nibabel orientation transform applied, file axes -> canonical axes: row i is
      `(j, flip)`: file axis i became canonical axis j, reversed when flip is -1.
    oriented_shape: `(D1, H1, W1)`, the shape in canonical axes (a permutation of
      original_shape).
    crop_box: `((start, stop),) * 3`, the kept voxels of the canonical grid.
    shape_before_resampling: the cropped shape, `stop - start` per axis.
    shape_after_resampling: `(d, h, w)`, the shape the network sees.
    spacing_before_resampling: voxel size (mm) in canonical axes.
    spacing_after_resampling: voxel size (mm) of the preprocessed grid
      (`spacing_before * shape_before / shape_after`).
    affine: `[4, 4]` affine of the preprocessed grid (write a preprocessed volume with it).
  """
  original_shape: tuple[int, int, int]
  original_affine: tuple[tuple[float, ...], ...]
  ornt: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
  oriented_shape: tuple[int, int, int]
  crop_box: Box
  shape_before_resampling: tuple[int, int, int]
  shape_after_resampling: tuple[int, int, int]
  spacing_before_resampling: tuple[float, float, float]
  spacing_after_resampling: tuple[float, float, float]
  affine: tuple[tuple[float, ...], ...]

  def __post_init__(self):
    def put(name, value):
      object.__setattr__(self, name, value)

    for name in ("original_shape", "oriented_shape", "shape_before_resampling",
                 "shape_after_resampling"):
      put(name, _int3(getattr(self, name), name))
    for name in ("spacing_before_resampling", "spacing_after_resampling"):
      put(name, _float3(getattr(self, name), name))
    for name in ("original_affine", "affine"):
      put(name, _matrix(getattr(self, name), name))
    ornt = np.asarray(self.ornt)
    if ornt.shape != (3, 2) or sorted(ornt[:, 0].tolist()) != [0, 1, 2] or not set(
        ornt[:, 1].tolist()) <= {-1, 1}:
      raise ValueError(
          f"GeometryRecord.ornt must be 3 rows (axis, flip) with axes a permutation of 0, 1, 2 "
          f"and flips +-1, got {self.ornt}.")
    put("ornt", tuple((int(a), int(f)) for a, f in ornt))
    box = np.asarray(self.crop_box)
    if box.shape != (3, 2):
      raise ValueError(f"GeometryRecord.crop_box must be 3 (start, stop) pairs, got "
                       f"{self.crop_box}.")
    put("crop_box", tuple((int(a), int(b)) for a, b in box))
    if self.oriented_shape != tuple(self.original_shape[i] for i in np.argsort(ornt[:, 0])):
      raise ValueError(f"GeometryRecord: oriented_shape {self.oriented_shape} is not "
                       f"original_shape {self.original_shape} permuted by ornt {self.ornt}.")
    for (start, stop), n, size in zip(self.crop_box, self.oriented_shape,
                                      self.shape_before_resampling):
      if not 0 <= start < stop <= n or stop - start != size:
        raise ValueError(
            f"GeometryRecord: crop_box {self.crop_box} does not fit oriented_shape "
            f"{self.oriented_shape} or give shape_before_resampling "
            f"{self.shape_before_resampling}.")

  def to_dict(self) -> dict[str, Any]:
    """A JSON-able dict (lists of ints and floats) that `from_dict` turns back into `self`."""
    return {f.name: _to_lists(getattr(self, f.name)) for f in dataclasses.fields(self)}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> GeometryRecord:
    """The record of `to_dict()`; ValueError names the missing or unexpected keys."""
    names = {f.name for f in dataclasses.fields(cls)}
    if set(d) != names:
      raise ValueError(
          f"GeometryRecord.from_dict: missing keys {sorted(names - set(d))}, unexpected keys "
          f"{sorted(set(d) - names)}.")
    return cls(**d)


def _to_lists(value: Any) -> Any:
  if isinstance(value, tuple):
    return [_to_lists(v) for v in value]
  return value


# ---------------------------------------------------------------------------------------------
# Checks.


def _check_image(image: Any) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 4 or min(image.shape) < 1:
    raise ValueError(
        f"image must be [D, H, W, C] (channels last; add a channel axis with image[..., None]), "
        f"got shape {image.shape}.")
  if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
    raise ValueError(f"image must hold real numbers, got dtype {image.dtype}.")
  return image


def _check_affine(affine: Any) -> np.ndarray:
  affine = np.asarray(affine, dtype=np.float64)
  if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
    raise ValueError(f"affine must be a finite [4, 4] matrix, got shape {affine.shape}.")
  if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
    raise ValueError(
        f"affine has a singular 3x3 part (voxel sizes {nib.affines.voxel_sizes(affine)}); every "
        "voxel axis needs a positive spacing.")
  return affine


def _check_spacing(spacing: Any, name: str) -> tuple[float, float, float]:
  values = np.asarray(spacing, dtype=np.float64).ravel()
  if values.shape != (3,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
    raise ValueError(f"{name} must be 3 positive finite voxel sizes (mm), got {spacing}.")
  return tuple(float(v) for v in values)


def _check_orientation(orientation: str | None) -> None:
  if orientation is None:
    return
  ok = isinstance(orientation, str) and len(orientation) == 3 and all(
      sum(c in pair for c in orientation.upper()) == 1 for pair in _AXIS_LETTERS)
  if not ok:
    raise ValueError(
        f"orientation must be 3 axis codes with one of L/R, one of P/A and one of I/S (e.g. "
        f"'RAS', 'LPS'), or None to keep the file's voxel order; got {orientation!r}.")


def _check_label(label: Any, shape: tuple[int, ...], num_classes: int | None,
                 what: str = "label") -> np.ndarray:
  label = np.asarray(label)
  if label.shape != tuple(shape):
    raise ValueError(f"{what} must be [D, H, W] = {tuple(shape)}, got shape {label.shape}.")
  if not (np.issubdtype(label.dtype, np.integer) or label.dtype == bool):
    raise ValueError(f"{what} must hold integer class ids, got dtype {label.dtype}.")
  if label.size and (label.min() < 0 or label.max() > 255):
    raise ValueError(f"{what} class ids must be in 0..255, got {label.min()}..{label.max()}.")
  if num_classes is not None:
    if int(num_classes) < 1 or int(num_classes) > 256:
      raise ValueError(f"num_classes must be in 1..256, got {num_classes}.")
    if label.size and label.max() >= num_classes:
      raise ValueError(f"{what} holds class id {label.max()}, but num_classes is {num_classes} "
                       f"(ids 0..{int(num_classes) - 1}).")
  return label.astype(np.uint8, copy=False)


def _check_order(order: int, name: str) -> int:
  if not isinstance(order, (int, np.integer)) or not 0 <= order <= 5:
    raise ValueError(f"{name} must be a spline order in 0..5, got {order!r}.")
  return int(order)


def _check_label_method(method: str) -> None:
  if method not in LABEL_METHODS:
    raise ValueError(f"label_method must be one of {LABEL_METHODS}, got {method!r}.")


# ---------------------------------------------------------------------------------------------
# Building blocks.


def resampled_shape(shape: Sequence[int], spacing: Sequence[float],
                    target_spacing: Sequence[float]) -> tuple[int, int, int]:
  """nnU-Net's `compute_new_shape`: `round(spacing / target_spacing * shape)` per axis, >= 1.

  Python's `round` (halves to even), as nnU-Net, so shapes match nnU-Net's.
  """
  spacing = _check_spacing(spacing, "spacing")
  target_spacing = _check_spacing(target_spacing, "target_spacing")
  return tuple(max(1, int(round(s / t * n))) for s, t, n in zip(spacing, target_spacing, shape))


def anisotropic_axis(spacing_from: Sequence[float], spacing_to: Sequence[float], *,
                     threshold: float = ANISOTROPY_THRESHOLD) -> int | None:
  """The axis to resample separately (order 0) when going from `spacing_from` to `spacing_to`.

  nnU-Net's rule (`resample_data_or_seg_to_shape(force_separate_z=None)`): the first of
  (`spacing_from`, `spacing_to`) whose max / min spacing exceeds `threshold` decides; its axis of
  largest spacing is returned if it is the only one, else None (e.g. (0.24, 1.25, 1.25)).
  """
  for spacing in (_check_spacing(spacing_from, "spacing_from"),
                  _check_spacing(spacing_to, "spacing_to")):
    s = np.asarray(spacing)
    if s.max() / s.min() > threshold:
      axes = np.flatnonzero(s == s.max())
      return int(axes[0]) if axes.size == 1 else None
  return None


def _resize(x: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
  """`x` [D, H, W] resampled to `shape`, voxel centres (j + 0.5) * n / m - 0.5; float32."""
  scale = np.asarray(x.shape, np.float64) / np.asarray(shape, np.float64)
  # A diagonal matrix makes affine_transform a separable zoom (no coordinate arrays).
  return ndimage.affine_transform(x, scale, offset=0.5 * scale - 0.5, output_shape=tuple(shape),
                                  order=order, mode="nearest", output=np.float32,
                                  prefilter=order > 1)


def _resample3(x: np.ndarray, shape: tuple[int, ...], order: int,
               separate_axis: int | None, separate_order: int) -> np.ndarray:
  """One [D, H, W] volume to `shape` (float32); axes whose size is unchanged are left exact."""
  x = np.asarray(x, np.float32)
  if separate_axis is None:
    steps = [((0, 1, 2), order)]
  else:
    steps = [(tuple(a for a in range(3) if a != separate_axis), order),
             ((separate_axis,), separate_order)]
  for axes, step_order in steps:
    step_shape = list(x.shape)
    for a in axes:
      step_shape[a] = shape[a]
    if tuple(step_shape) != x.shape:
      x = _resize(x, step_shape, step_order)
  return x


def resample(volume: np.ndarray, shape: Sequence[int], *, order: int = 3,
             separate_axis: int | None = None,
             separate_order: int = SEPARATE_AXIS_ORDER) -> np.ndarray:
  """Resamples a volume to `shape` over the same field of view (see the module docstring).

  Args:
    volume: `[D, H, W]` or `[D, H, W, C]` (channels resampled one by one).
    shape: the new `(d, h, w)`.
    order: spline order (0 nearest, 1 linear, 3 cubic), `mode='nearest'` at the borders.
    separate_axis: an axis resampled after the others, with `separate_order` (nnU-Net's
      anisotropic scheme; see `anisotropic_axis`), or None.
    separate_order: spline order along `separate_axis`.

  Returns:
    float32 `[d, h, w]` or `[d, h, w, C]`; a copy of `volume` when the shape is unchanged.
  """
  volume = np.asarray(volume)
  if volume.ndim not in (3, 4):
    raise ValueError(f"volume must be [D, H, W] or [D, H, W, C], got shape {volume.shape}.")
  shape = tuple(int(s) for s in shape)
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(f"shape must be 3 positive ints, got {shape}.")
  order = _check_order(order, "order")
  separate_order = _check_order(separate_order, "separate_order")
  if separate_axis is not None and separate_axis not in (0, 1, 2):
    raise ValueError(f"separate_axis must be 0, 1, 2 or None, got {separate_axis!r}.")
  if volume.ndim == 3:
    return _resample3(volume, shape, order, separate_axis, separate_order)
  out = np.empty(shape + volume.shape[3:], np.float32)
  for c in range(volume.shape[3]):
    out[..., c] = _resample3(volume[..., c], shape, order, separate_axis, separate_order)
  return out


def _resample_labels(label: np.ndarray, shape: tuple[int, ...], method: str,
                     separate_axis: int | None) -> np.ndarray:
  """`[D, H, W]` class ids -> `[d, h, w]` uint8 by `method` (one of LABEL_METHODS)."""
  if label.shape == shape:
    return label.astype(np.uint8, copy=True)
  if method == "nearest":
    return _resample3(label, shape, 0, separate_axis, 0).astype(np.uint8)
  # Running argmax over the classes present; a class absent everywhere has probability 0 and
  # never wins, and `>` keeps the lowest class id on ties, like np.argmax.
  best = np.full(shape, -1.0, np.float32)
  out = np.zeros(shape, np.uint8)
  for k in np.unique(label):
    p = _resample3((label == k).astype(np.float32), shape, 1, separate_axis,
                   SEPARATE_AXIS_ORDER)
    win = p > best
    out[win] = k
    best[win] = p[win]
  return out


def nonzero_mask(image: np.ndarray) -> np.ndarray:
  """nnU-Net's `create_nonzero_mask`: voxels non-zero in any channel, holes filled.

  Args:
    image: `[D, H, W, C]`.

  Returns:
    `[D, H, W]` bool.
  """
  image = _check_image(image)
  return ndimage.binary_fill_holes(np.any(image != 0, axis=-1))


def _bounding_box(mask: np.ndarray) -> Box:
  """`((start, stop),) * 3` of the True voxels; the whole grid when there are none."""
  if not mask.any():
    return tuple((0, n) for n in mask.shape)
  box = []
  for axis in range(3):
    hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
    box.append((int(hit[0]), int(hit[-1]) + 1))
  return tuple(box)


def _translation(offset: Sequence[float]) -> np.ndarray:
  m = np.eye(4)
  m[:3, 3] = offset
  return m


def _invert_ornt(ornt: np.ndarray) -> np.ndarray:
  """The nibabel orientation transform that undoes `ornt` (canonical axes -> file axes)."""
  inv = np.empty_like(ornt)
  for i, (j, flip) in enumerate(ornt):
    inv[int(j)] = (i, flip)
  return inv


def _apply_ornt(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(orientations.apply_orientation(array, ornt))


# ---------------------------------------------------------------------------------------------
# Forward and inverse.


def forward(image: np.ndarray, affine: np.ndarray, *, label: np.ndarray | None = None,
            orientation: str | None = "RAS",
            target_spacing: Sequence[float] | None = None,
            crop_nonzero: bool = True,
            num_classes: int | None = None,
            image_order: int = 3,
            label_method: str = "linear_onehot",
            before_resampling: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
            ) -> tuple[np.ndarray, np.ndarray | None, GeometryRecord]:
  """Orients, crops and resamples one scan to the network's grid (see the module docstring).

  Args:
    image: `[D, H, W, C]` intensities in the file's voxel order.
    affine: `[4, 4]` voxel-to-world (mm) affine of the file; the spacing is its voxel sizes
      (`nibabel.affines.voxel_sizes`).
    label: optional `[D, H, W]` class ids on the image grid.
    orientation: axis codes of the canonical grid (`'RAS'`), or None to keep the voxel order.
    target_spacing: voxel size (mm) to resample to, in canonical axes; None keeps the spacing.
    crop_nonzero: crop to the bounding box of the non-zero image voxels and labelled voxels.
    num_classes: when given, label ids must be below it (ValueError otherwise).
    image_order: spline order for the images (nnU-Net: 3).
    label_method: 'linear_onehot' (nnU-Net's default) or 'nearest'.
    before_resampling: optional `fn(image [d1, h1, w1, C] float32, mask [d1, h1, w1] bool) ->
      image` applied to the oriented, cropped image before resampling, with its `nonzero_mask`
      (where nnU-Net normalises intensities); it must keep the shape.

  Returns:
    `(image [d, h, w, C] float32, label [d, h, w] uint8 or None, record)`.
  """
  image = _check_image(image)
  affine = _check_affine(affine)
  if label is not None:
    label = _check_label(label, image.shape[:3], num_classes)
  _check_orientation(orientation)
  if target_spacing is not None:
    target_spacing = _check_spacing(target_spacing, "target_spacing")
  image_order = _check_order(image_order, "image_order")
  _check_label_method(label_method)

  # 1. Orientation: an exact permutation / flip of the axes.
  if orientation is None:
    ornt = np.array([[0, 1], [1, 1], [2, 1]], np.float64)
  else:
    ornt = orientations.ornt_transform(orientations.io_orientation(affine),
                                       orientations.axcodes2ornt(orientation.upper()))
  original_shape = image.shape[:3]
  oriented_affine = affine @ orientations.inv_ornt_aff(ornt, original_shape)
  image = _apply_ornt(image, ornt)
  oriented_shape = image.shape[:3]
  if label is not None:
    label = _apply_ornt(label, ornt)
  spacing = tuple(float(s) for s in nib.affines.voxel_sizes(oriented_affine))

  # 2. Non-zero crop.
  if crop_nonzero:
    keep = np.any(image != 0, axis=-1)
    if label is not None:
      keep |= label > 0
    box = _bounding_box(keep)
  else:
    box = tuple((0, n) for n in image.shape[:3])
  slices = tuple(slice(a, b) for a, b in box)
  image = image[slices].astype(np.float32)
  if label is not None:
    label = label[slices]
  cropped_affine = oriented_affine @ _translation([a for a, _ in box])
  cropped_shape = image.shape[:3]
  if before_resampling is not None:
    changed = np.asarray(before_resampling(image, nonzero_mask(image)))
    if changed.shape != image.shape:
      raise ValueError(f"before_resampling must keep the image shape {image.shape}, returned "
                       f"{changed.shape}.")
    image = changed.astype(np.float32, copy=False)

  # 3. Resampling.
  if target_spacing is None:
    new_shape = cropped_shape
    separate = None
  else:
    new_shape = resampled_shape(cropped_shape, spacing, target_spacing)
    separate = anisotropic_axis(spacing, target_spacing)
  image = resample(image, new_shape, order=image_order, separate_axis=separate)
  if label is not None:
    label = _resample_labels(label, new_shape, label_method, separate)
  scale = np.asarray(cropped_shape, np.float64) / np.asarray(new_shape, np.float64)
  # New voxel j sits at old voxel (j + 0.5) * scale - 0.5.
  resampled_affine = cropped_affine @ _translation(0.5 * scale - 0.5) @ np.diag(
      np.append(scale, 1.0))

  record = GeometryRecord(
      original_shape=original_shape, original_affine=affine, ornt=ornt,
      oriented_shape=oriented_shape, crop_box=box, shape_before_resampling=cropped_shape,
      shape_after_resampling=new_shape, spacing_before_resampling=spacing,
      spacing_after_resampling=tuple(np.asarray(spacing) * scale), affine=resampled_affine)
  return image, label, record


def _check_record(record: GeometryRecord) -> None:
  if not isinstance(record, GeometryRecord):
    raise ValueError(f"record must be a GeometryRecord, got {type(record).__name__}.")


def _uncrop_and_unorient(cropped: np.ndarray, record: GeometryRecord,
                         fill: np.ndarray) -> np.ndarray:
  """Puts `cropped` [d1, h1, w1, ...] into the canonical grid filled with `fill` [...], then
  back into the file's voxel order."""
  full = np.empty(record.oriented_shape + cropped.shape[3:], cropped.dtype)
  full[...] = fill
  full[tuple(slice(a, b) for a, b in record.crop_box)] = cropped
  return _apply_ornt(full, _invert_ornt(np.asarray(record.ornt)))


def _inverse_separate_axis(record: GeometryRecord) -> int | None:
  # nnU-Net's export decides from (current = preprocessed spacing, new = original spacing).
  if record.shape_after_resampling == record.shape_before_resampling:
    return None
  return anisotropic_axis(record.spacing_after_resampling, record.spacing_before_resampling)


def inverse_probabilities(probs: np.ndarray, record: GeometryRecord, *,
                          order: int = 1, class0_is_background: bool = True) -> np.ndarray:
  """Class probabilities on the preprocessed grid -> on the original file's voxel grid.

  Resamples each class map back to the cropped shape (spline `order`, linear by default; order 0
  along the low-resolution axis of anisotropic data, like nnU-Net's export), pads outside the
  crop box with background (probability 1 for class 0, 0 for the others; 0 everywhere with
  `class0_is_background=False`, for region outputs) and undoes the orientation. Probabilities
  are not renormalised (linear interpolation keeps their sum).

  Args:
    probs: `[d, h, w, K]` on `record.shape_after_resampling`, class 0 = background.
    record: the `GeometryRecord` of `forward`.
    order: spline order for the in-plane (or all) axes.

  Returns:
    `[D0, H0, W0, K]` float32 on `record.original_shape`.
  """
  _check_record(record)
  probs = np.asarray(probs)
  if probs.ndim != 4 or probs.shape[:3] != record.shape_after_resampling or probs.shape[3] < 1:
    raise ValueError(f"probs must be [d, h, w, K] with (d, h, w) = "
                     f"{record.shape_after_resampling} (record.shape_after_resampling), got "
                     f"shape {probs.shape}.")
  order = _check_order(order, "order")
  cropped = resample(probs, record.shape_before_resampling, order=order,
                     separate_axis=_inverse_separate_axis(record))
  fill = np.zeros(probs.shape[3], np.float32)
  if class0_is_background:
    fill[0] = 1.0
  return _uncrop_and_unorient(cropped, record, fill)


def inverse_labels(label: np.ndarray, record: GeometryRecord, *,
                   method: str = "linear_onehot") -> np.ndarray:
  """Class ids on the preprocessed grid -> on the original file's voxel grid.

  Args:
    label: `[d, h, w]` class ids on `record.shape_after_resampling`.
    record: the `GeometryRecord` of `forward`.
    method: 'linear_onehot' (linear one-hot maps, then argmax: `inverse_probabilities` of the
      one-hot labels, argmax) or 'nearest'.

  Returns:
    `[D0, H0, W0]` uint8 on `record.original_shape`; 0 (background) outside the crop box.
  """
  _check_record(record)
  label = _check_label(label, record.shape_after_resampling, None)
  _check_label_method(method)
  cropped = _resample_labels(label, record.shape_before_resampling, method,
                             _inverse_separate_axis(record))
  return _uncrop_and_unorient(cropped, record, np.uint8(0))


# ---------------------------------------------------------------------------------------------
# Dataset level.


def _check_spacings(spacings: Any, name: str = "spacings") -> np.ndarray:
  s = np.asarray(spacings, dtype=np.float64)
  if s.ndim != 2 or s.shape[1] != 3 or s.shape[0] < 1:
    raise ValueError(f"{name} must be [N, 3] (one row per case), got shape {s.shape}.")
  if not np.all(np.isfinite(s)) or np.any(s <= 0):
    raise ValueError(f"{name} must be positive and finite, got {s.tolist()}.")
  return s


def median_spacing(spacings: Sequence[Sequence[float]]) -> tuple[float, float, float]:
  """The per-axis median of the cases' spacings (`np.percentile(..., 50)`), `[N, 3]` -> 3."""
  return tuple(float(v) for v in np.percentile(_check_spacings(spacings), 50, axis=0))


def target_spacing(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]], *,
                   anisotropy_threshold: float = ANISOTROPY_THRESHOLD
                   ) -> tuple[float, float, float]:
  """nnU-Net's full-resolution target spacing (`determine_fullres_target_spacing`).

  Start from `median_spacing`. With `worst` its axis of largest spacing and `others` the two
  others, the dataset is anisotropic when both
  - median spacing[worst] > threshold * max(median spacing[others]), and
  - median shape[worst] * threshold < min(median shape[others]);
  then axis `worst` takes the 10th percentile of its spacings instead (never below
  max(median spacing[others]); if it would be, it becomes that + 1e-5, as in nnU-Net).

  Args:
    spacings: `[N, 3]` voxel sizes (mm) of the cases, in canonical axes.
    shapes: `[N, 3]` their shapes (nnU-Net uses the shapes after the non-zero crop).
    anisotropy_threshold: nnU-Net's 3.

  Returns:
    `(s0, s1, s2)` in mm.
  """
  s = _check_spacings(spacings)
  n = np.asarray(shapes, dtype=np.float64)
  if n.shape != s.shape or np.any(n < 1):
    raise ValueError(f"shapes must be [N, 3] positive like spacings {s.shape}, got "
                     f"{n.tolist()}.")
  target = np.percentile(s, 50, axis=0)
  median_shape = np.percentile(n, 50, axis=0)
  worst = int(np.argmax(target))
  others = [a for a in range(3) if a != worst]
  max_other = float(target[others].max())
  aniso_spacing = target[worst] > anisotropy_threshold * max_other
  aniso_voxels = median_shape[worst] * anisotropy_threshold < median_shape[others].min()
  if aniso_spacing and aniso_voxels:
    low = float(np.percentile(s[:, worst], 10))
    target[worst] = low if low >= max_other else max_other + 1e-5
  return tuple(float(v) for v in target)
