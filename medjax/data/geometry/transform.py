"""One scan to the network's grid and back: `forward` (orient, crop, resample) and its inverse
for probabilities and labels (conventions in `medjax.data.geometry`)."""

from __future__ import annotations

from typing import Callable, Sequence

import nibabel as nib
import numpy as np
from nibabel import orientations
from scipy import ndimage

from medjax.data.geometry._checks import (_check_affine, _check_image, _check_label,
                                          _check_label_method, _check_order,
                                          _check_orientation, _check_spacing)
from medjax.data.geometry.record import Box, GeometryRecord
from medjax.data.geometry.resampling import (_resample_labels, anisotropic_axis, resample,
                                             resampled_shape)


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
