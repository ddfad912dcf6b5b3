"""Reading and writing medical volumes (NIfTI `.nii`/`.nii.gz` and Analyze 7.5 `.hdr`/`.img`).

Arrays keep nibabel's voxel-axis order, called `[D, H, W]` in medjax, and the image's affine maps
voxel indices to scanner millimetres. Writes are atomic: the image is written under temporary
names in the target folder and renamed into place, so a failed write leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tempfile
from typing import Any

import nibabel as nib
import numpy as np

PathLike = str | os.PathLike

# The image files of one scan (channels, label) must have affines equal to this tolerance (mm)
# to count as one voxel grid: iSeg subjects, nnU-Net / Decathlon cases, `medjax.predict` inputs.
AFFINE_ATOL = 1e-4

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_ANALYZE_SUFFIXES = (".hdr", ".img")


@dataclasses.dataclass(frozen=True)
class Image:
  """A volume read from disk.

  Attributes:
    data: `[D, H, W]` voxel values in the file's own dtype (scaled to float when the header
      holds a scale factor); trailing singleton axes such as iSeg's `[144, 192, 256, 1]` are
      dropped. With `load_image(..., allow_4d=True)` a multi-channel file (e.g. a Medical
      Segmentation Decathlon image `[X, Y, Z, C]`) comes back as `[D, H, W, C]`.
    affine: `[4, 4]` float64 voxel-to-world (mm) matrix.
    spacing: voxel size in mm along the three voxel axes.
    path: the file that was read.
  """
  data: np.ndarray
  affine: np.ndarray
  spacing: tuple[float, float, float]
  path: pathlib.Path


def _suffix(path: pathlib.Path) -> str:
  name = path.name.lower()
  for suffix in (".nii.gz",) + _ANALYZE_SUFFIXES + (".nii",):
    if name.endswith(suffix):
      return suffix
  raise ValueError(
      f"{path}: unsupported image file name; expected one of .nii, .nii.gz, .hdr, .img.")


def load_image(path: PathLike, *, allow_4d: bool = False) -> Image:
  """Reads a NIfTI or Analyze image.

  Args:
    path: `.nii`, `.nii.gz`, or either file of an Analyze `.hdr`/`.img` pair.
    allow_4d: also accept a 4-D file `[X, Y, Z, C]` (channels on the fourth axis, as in the
      Medical Segmentation Decathlon); its `spacing` is the first three voxel sizes.

  Returns:
    An `Image` whose `data` is `[D, H, W]`, or `[D, H, W, C]` for a 4-D file with `allow_4d`
    (trailing singleton axes dropped first, so `[X, Y, Z, 1]` is 3-D).

  Raises:
    FileNotFoundError: the file (or the other file of an Analyze pair) does not exist.
    ValueError: the file cannot be read as an image, or it is not 3-D (or 4-D with
      `allow_4d`) after dropping trailing singleton axes.
  """
  path = pathlib.Path(path)
  suffix = _suffix(path)
  if suffix in _ANALYZE_SUFFIXES:
    stem = path.with_name(path.name[: -len(suffix)])
    for part in (stem.with_name(stem.name + ".hdr"), stem.with_name(stem.name + ".img")):
      if not part.is_file():
        raise FileNotFoundError(f"{part}: missing; an Analyze image needs both .hdr and .img.")
  elif not path.is_file():
    raise FileNotFoundError(f"{path}: no such image file.")
  try:
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
  except Exception as e:  # nibabel raises many types for corrupt or foreign files.
    raise ValueError(
        f"{path}: not a readable {suffix} image ({type(e).__name__}: {e}).") from e
  while data.ndim > 3 and data.shape[-1] == 1:
    data = data[..., 0]
  if data.ndim != 3 and not (allow_4d and data.ndim == 4):
    expected = "a 3-D or 4-D [X, Y, Z, C] volume" if allow_4d else "a 3-D volume"
    raise ValueError(
        f"{path}: expected {expected} (trailing singleton axes allowed), got shape "
        f"{tuple(img.shape)}.")
  affine = np.asarray(img.affine, dtype=np.float64)
  spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
  return Image(data=np.ascontiguousarray(data), affine=affine, spacing=spacing, path=path)


def save_image(path: PathLike, data: np.ndarray, affine: np.ndarray, *,
               dtype: Any = None) -> None:
  """Writes `data` as NIfTI-1 (`.nii`, `.nii.gz`) or Analyze 7.5 (`.hdr` + `.img`), atomically.

  Args:
    path: target file; for Analyze give the `.hdr` (or `.img`) name, both files are written.
    data: `[D, H, W]` (or more axes, e.g. iSeg's `[D, H, W, 1]`) voxel values.
    affine: `[4, 4]` voxel-to-world matrix. Analyze 7.5 stores only the voxel size, so an Analyze
      file reads back with nibabel's default Analyze affine for that voxel size.
    dtype: on-disk dtype; defaults to `data.dtype`.

  Raises:
    ValueError: bad file name, affine shape or data.
  """
  path = pathlib.Path(path)
  suffix = _suffix(path)
  affine = np.asarray(affine, dtype=np.float64)
  if affine.shape != (4, 4):
    raise ValueError(f"{path}: affine must be [4, 4], got {affine.shape}.")
  data = np.asarray(data)
  if data.ndim < 3:
    raise ValueError(f"{path}: data must have at least 3 axes, got shape {data.shape}.")
  if dtype is not None:
    data = data.astype(dtype)
  if suffix in _ANALYZE_SUFFIXES:
    img = nib.AnalyzeImage(data, affine)
    stem = path.name[: -len(suffix)]
    # The header goes last: an interrupted rename leaves an `.img` without its `.hdr`, which
    # load_image reports as missing rather than reading a stale pair.
    exts = [".img", ".hdr"]
  else:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    stem = path.name[: -len(suffix)]
    exts = [suffix]
  img.set_data_dtype(data.dtype)
  path.parent.mkdir(parents=True, exist_ok=True)
  # A unique placeholder reserves the temporary base name in the target folder (same file
  # system, so the final rename is atomic); nibabel picks the format from the extension.
  fd, placeholder = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=path.parent)
  os.close(fd)
  temps = [pathlib.Path(placeholder + ext) for ext in exts]
  try:
    img.to_filename(str(temps[-1]))
    for tmp, ext in zip(temps, exts):
      os.replace(tmp, path.with_name(stem + ext))
  finally:
    for tmp in temps + [pathlib.Path(placeholder)]:
      tmp.unlink(missing_ok=True)


def write_text(path: PathLike, text: str) -> pathlib.Path:
  """Writes `text` to `path` atomically: into a unique temporary file in the same folder, then
  renamed into place, so a reader never sees a half-written file and a failed write leaves none.
  The file gets the usual permissions (0666 less the umask; `mkstemp` alone would give 0600).
  """
  path = pathlib.Path(path)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    with os.fdopen(fd, "w", newline="") as f:
      f.write(text)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path
