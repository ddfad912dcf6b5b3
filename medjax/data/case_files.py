"""The files of one case and loading them: one voxel grid, finite intensities, declared labels.

A case is one scan: one image file per channel (nnU-Net `{case}_{XXXX}`, iSeg-2019's T1/T2) or
one multi-channel file (a Decathlon 4-D image), and its label file when it has one. `load_case`
reads the voxels and checks them; `check_headers` checks channel counts and grids from the file
headers alone, before anything is loaded (`medjax.data.layouts.read_dataset`).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import nibabel as nib
import numpy as np

from medjax import io
from medjax import labels


@dataclasses.dataclass(frozen=True)
class CaseFiles:
  """The files of one case.

  Attributes:
    case_id: the case identifier (see the module docstring).
    images: one 3-D file per channel in channel order, or ONE file holding all channels
      (a Decathlon 4-D `[X, Y, Z, C]` image, or a 3-D image when there is one channel).
    label: the label file, or None for an unlabelled (test) case.
  """
  case_id: str
  images: tuple[pathlib.Path, ...]
  label: pathlib.Path | None


@dataclasses.dataclass(frozen=True)
class Case:
  """One loaded case.

  Attributes:
    case_id: the case identifier.
    image: `[D, H, W, C]` float32 raw intensities as on disk.
    label: `[D, H, W]` uint8 class ids, or None.
    affine: `[4, 4]` float64 voxel-to-world (mm) matrix of the first image file.
    spacing: voxel size in mm of the first image file.
  """
  case_id: str
  image: np.ndarray
  label: np.ndarray | None
  affine: np.ndarray
  spacing: tuple[float, float, float]



def _check_grid(ref_path: pathlib.Path, ref_shape: tuple[int, ...], ref_affine: np.ndarray,
                path: pathlib.Path, shape: tuple[int, ...], affine: np.ndarray) -> None:
  ref = f"{ref_path.parent.name}/{ref_path.name}"
  if tuple(shape[:3]) != tuple(ref_shape[:3]):
    raise ValueError(
        f"{path}: grid {tuple(shape[:3])} does not match {ref} {tuple(ref_shape[:3])}; every "
        "file of a case must be on one voxel grid.")
  if not np.allclose(affine, ref_affine, atol=io.AFFINE_ATOL):
    raise ValueError(
        f"{path}: affine\n{affine}\ndoes not match {ref}\n{ref_affine}\n(tolerance "
        f"{io.AFFINE_ATOL} mm); every file of a case must be on one voxel grid.")


def _finite(data: np.ndarray, path: pathlib.Path) -> None:
  if not np.all(np.isfinite(data)):
    raise ValueError(
        f"{path}: {int(np.sum(~np.isfinite(data)))} non-finite voxels; expected finite "
        "intensities.")


def load_case(files: CaseFiles, *, num_channels: int | None = None,
              label_values: Sequence[int] | None = None) -> Case:
  """Loads and checks one case.

  Checks that every channel file is on one grid (shape, affine within 1e-4 mm), that the
  intensities are finite, that a single multi-channel file holds `num_channels` channels, that
  the label is on the image grid, and that its values are declared.

  Args:
    files: the case's files.
    num_channels: the expected channel count (None: whatever the files hold).
    label_values: the on-disk label value of each class (class k is stored as
      `label_values[k]`); None means the values are the class ids already.

  Returns:
    Case with `image [D, H, W, C]` float32 (channels in the order of `files.images`, or of the
    4-D file's last axis) and `label [D, H, W]` uint8 class ids (None without a label file).

  Raises:
    FileNotFoundError, ValueError: naming the offending file and what was expected.
  """
  if not files.images:
    raise ValueError(f"case {files.case_id}: no image files.")
  first = files.images[0]
  if len(files.images) == 1:
    img = io.load_image(first, allow_4d=True)
    data = img.data if img.data.ndim == 4 else img.data[..., None]
    if num_channels is not None and data.shape[-1] != num_channels:
      raise ValueError(
          f"{first}: {data.shape[-1]} channel(s) (shape {img.data.shape}), expected "
          f"{num_channels}.")
    image = np.asarray(data, dtype=np.float32)
    _finite(image, first)
    ref = img
  else:
    if num_channels is not None and len(files.images) != num_channels:
      raise ValueError(
          f"case {files.case_id}: {len(files.images)} channel files ({first.name}, ...), "
          f"expected {num_channels}.")
    ref = io.load_image(first)
    image = np.empty(ref.data.shape + (len(files.images),), dtype=np.float32)
    for c, path in enumerate(files.images):
      img = ref if c == 0 else io.load_image(path)
      _check_grid(first, ref.data.shape, ref.affine, path, img.data.shape, img.affine)
      image[..., c] = img.data
      _finite(image[..., c], path)
  label = None
  if files.label is not None:
    label_img = io.load_image(files.label)
    _check_grid(first, image.shape, ref.affine, files.label, label_img.data.shape,
                label_img.affine)
    label = labels.values_to_classes(label_img.data, label_values, source=str(files.label))
  return Case(case_id=files.case_id, image=image, label=label, affine=ref.affine,
              spacing=ref.spacing)


def _header(path: pathlib.Path) -> tuple[tuple[int, ...], np.ndarray]:
  """(shape with trailing singleton axes dropped, affine) from the file's header only."""
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such image file.")
  try:
    img = nib.load(str(path))
    shape, affine = tuple(int(s) for s in img.shape), np.asarray(img.affine, np.float64)
  except Exception as e:  # nibabel raises many types for corrupt or foreign files.
    raise ValueError(f"{path}: not a readable NIfTI image ({type(e).__name__}: {e}).") from e
  while len(shape) > 3 and shape[-1] == 1:
    shape = shape[:-1]
  return shape, affine


def check_headers(files: CaseFiles, channel_names: Sequence[str]) -> None:
  num_channels = len(channel_names)
  first = files.images[0]
  ref_shape, ref_affine = _header(first)
  if len(files.images) == 1:
    channels = 1 if len(ref_shape) == 3 else ref_shape[3] if len(ref_shape) == 4 else None
    if channels is None:
      raise ValueError(f"{first}: expected a 3-D or 4-D [X, Y, Z, C] image, got shape "
                       f"{ref_shape}.")
    if channels != num_channels:
      raise ValueError(
          f"{first}: {channels} channel(s) (shape {ref_shape}), expected {num_channels} "
          f"{tuple(channel_names)}: a 4-D [X, Y, Z, {num_channels}] image or one "
          "{case}_{XXXX} file per channel.")
  for path in files.images:
    shape, affine = (ref_shape, ref_affine) if path == first else _header(path)
    if len(files.images) > 1 and len(shape) != 3:
      raise ValueError(f"{path}: expected a 3-D image (one file per channel), got shape {shape}.")
    _check_grid(first, ref_shape, ref_affine, path, shape, affine)
  if files.label is not None:
    shape, affine = _header(files.label)
    if len(shape) != 3:
      raise ValueError(f"{files.label}: expected a 3-D label image, got shape {shape}.")
    _check_grid(first, ref_shape, ref_affine, files.label, shape, affine)
