"""Checks of the geometry functions' arguments, with errors that name the argument."""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np

LABEL_METHODS = ("linear_onehot", "nearest")
_AXIS_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))


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
