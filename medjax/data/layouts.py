"""Dataset folder layouts: nnU-Net v2 raw datasets and Medical Segmentation Decathlon tasks.

Both layouts keep a `dataset.json` beside `imagesTr/`, `labelsTr/` and an optional `imagesTs/`:

*   nnU-Net v2 (https://github.com/MIC-DKFZ/nnUNet, `documentation/dataset_format.md`):

        Dataset001_Brain/dataset.json     {"channel_names": {"0": "T1", "1": "T2"},
                                           "labels": {"background": 0, "CSF": 1, ...},
                                           "numTraining": 10, "file_ending": ".nii.gz"}
        Dataset001_Brain/imagesTr/{case}_{XXXX}.nii.gz   one 3-D file per channel XXXX
        Dataset001_Brain/labelsTr/{case}.nii.gz
        Dataset001_Brain/imagesTs/{case}_{XXXX}.nii.gz   (optional)

    `labels` maps name -> id; the ids must be 0..K-1 (nnU-Net requires consecutive ids).
    Region-based labels (a list of ids as the value) are not supported.

*   Medical Segmentation Decathlon (http://medicaldecathlon.com/):

        Task01_BrainTumour/dataset.json   {"name": "BRATS", "modality": {"0": "FLAIR", ...},
                                           "labels": {"0": "background", "1": "edema", ...},
                                           "numTraining": 484,
                                           "training": [{"image": "./imagesTr/BRATS_001.nii.gz",
                                                         "label": "./labelsTr/BRATS_001.nii.gz"}],
                                           "test": ["./imagesTs/BRATS_485.nii.gz"]}
        Task01_BrainTumour/imagesTr/BRATS_001.nii.gz     4-D [X, Y, Z, C] (3-D for one channel)

    `labels` maps id -> name. nnU-Net v1 tasks (the same dataset.json, with each listed image
    stored as `{case}_{XXXX}` channel files) are read too.

Case ids are the `{case}` part (nnU-Net) or the listed image's file name without its ending
(Decathlon). Names starting with `.` (macOS `._*` and `.DS_Store` files, which the real Decathlon
download holds) are ignored; any other file that does not belong to the layout is an error.
`read_dataset` reads `dataset.json`, lists the folders and reads every file's header (not its
voxels) to check channel counts and grids; `load_case` loads one case and checks its values.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from typing import Any, Iterable, Sequence

import nibabel as nib
import numpy as np

from medjax import io

LAYOUTS = ("nnunet", "decathlon")
FILE_ENDINGS = (".nii.gz", ".nii")

# Image files of one case must agree to this tolerance (mm).
_AFFINE_ATOL = 1e-4
_CHANNEL_RE = re.compile(r"^(.+)_(\d{4})$")
# Endings of other image formats: such a file in a NIfTI dataset is a mixed-ending mistake.
_IMAGE_ENDINGS = FILE_ENDINGS + (
    ".mha", ".mhd", ".nrrd", ".nhdr", ".hdr", ".img", ".tif", ".tiff", ".png", ".bmp", ".npy",
    ".npz", ".dcm", ".gz")
_SUPPORTED = "'.nii.gz' or '.nii' (NIfTI)"


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


@dataclasses.dataclass(frozen=True)
class DatasetDescription:
  """A dataset folder as read by `read_dataset`.

  Attributes:
    root: the dataset folder (holding `dataset.json`).
    layout: 'nnunet' or 'decathlon'.
    name: dataset.json "name", else the folder name.
    channel_names: channel order, e.g. ('T1', 'T2') or ('CT',).
    class_names: class id k -> name; class 0 is background.
    label_values: the on-disk label value of class k.
    file_ending: '.nii.gz' or '.nii'.
    training: the labelled training cases, sorted by case_id.
    test: the unlabelled cases of `imagesTs/`, sorted by case_id (may be empty).
  """
  root: pathlib.Path
  layout: str
  name: str
  channel_names: tuple[str, ...]
  class_names: tuple[str, ...]
  label_values: tuple[int, ...]
  file_ending: str
  training: tuple[CaseFiles, ...]
  test: tuple[CaseFiles, ...]

  @property
  def num_channels(self) -> int:
    return len(self.channel_names)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


# ---------------------------------------------------------------------------------------------
# Label values.


def _check_label_values(label_values: Sequence[int], source: str) -> np.ndarray:
  values = list(label_values)
  if (not values or len(values) > 256 or len(set(values)) != len(values) or
      not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)):
    raise ValueError(
        f"{source}: label_values must be 1 to 256 distinct integers, got {label_values!r}.")
  return np.asarray(values, dtype=np.int64)


def values_to_classes(values: np.ndarray, label_values: Sequence[int] | None = None, *,
                      source: str = "label") -> np.ndarray:
  """Maps on-disk label values to class ids (uint8): value `label_values[k]` -> class k.

  Args:
    values: label voxels, any integer or integral float dtype.
    label_values: the on-disk value of each class; None means the values are class ids 0..255.
    source: what to name in errors (the label file).

  Raises:
    ValueError: a non-integral value, or a value not in `label_values`; the message names
      `source`, the values found and the values expected.
  """
  values = np.asarray(values)
  if not np.issubdtype(values.dtype, np.integer):
    if values.dtype == np.bool_:
      values = values.astype(np.uint8)
    else:
      integral = np.isfinite(values) & (values == np.round(values))
      if not np.all(integral):
        bad = np.unique(values[~integral])[:8]
        raise ValueError(f"{source}: label values must be integers, found {bad.tolist()}.")
      values = values.astype(np.int64)
  if label_values is None:
    expected = np.arange(256, dtype=np.int64)
    expected_text = "class ids 0..255"
  else:
    expected = _check_label_values(label_values, source)
    expected_text = f"the declared values {expected.tolist()}"
  if values.size == 0:
    return values.astype(np.uint8)
  lo, hi = min(int(values.min()), 0), int(values.max())
  if hi - lo < (1 << 22):
    lut = np.full(hi - lo + 1, -1, dtype=np.int16)
    inside = (expected >= lo) & (expected <= hi)
    lut[expected[inside] - lo] = np.nonzero(inside)[0]
    # Non-negative values (the usual uint8/int16 labels) index the table as they are.
    classes = np.take(lut, values if lo == 0 else values.astype(np.int64) - lo)
  else:  # A huge value range (e.g. one stray value): map through the sorted unique values.
    uniq, inverse = np.unique(values.ravel(), return_inverse=True)
    order = np.argsort(expected)
    pos = np.clip(np.searchsorted(expected[order], uniq), 0, len(expected) - 1)
    found = expected[order][pos] == uniq
    classes = np.where(found, order[pos], -1)[inverse.reshape(values.shape)]
  if np.any(classes < 0):
    bad = np.unique(values[classes < 0])[:8]
    raise ValueError(
        f"{source}: label values {bad.tolist()} are not declared; expected {expected_text} "
        f"(found {np.unique(values).tolist()[:16]}).")
  return classes.astype(np.uint8)


def classes_to_values(classes: np.ndarray, label_values: Sequence[int]) -> np.ndarray:
  """Maps class ids back to on-disk label values: class k -> `label_values[k]` (int64).

  Raises:
    ValueError: a class id outside 0..len(label_values) - 1.
  """
  values = _check_label_values(label_values, "classes_to_values")
  classes = np.asarray(classes)
  if classes.size and (classes.min() < 0 or classes.max() >= len(values)):
    raise ValueError(
        f"class ids must be in 0..{len(values) - 1}, got range [{classes.min()}, "
        f"{classes.max()}].")
  return values[classes.astype(np.int64)]


# ---------------------------------------------------------------------------------------------
# Loading one case.


def _check_grid(ref_path: pathlib.Path, ref_shape: tuple[int, ...], ref_affine: np.ndarray,
                path: pathlib.Path, shape: tuple[int, ...], affine: np.ndarray) -> None:
  ref = f"{ref_path.parent.name}/{ref_path.name}"
  if tuple(shape[:3]) != tuple(ref_shape[:3]):
    raise ValueError(
        f"{path}: grid {tuple(shape[:3])} does not match {ref} {tuple(ref_shape[:3])}; every "
        "file of a case must be on one voxel grid.")
  if not np.allclose(affine, ref_affine, atol=_AFFINE_ATOL):
    raise ValueError(
        f"{path}: affine\n{affine}\ndoes not match {ref}\n{ref_affine}\n(tolerance "
        f"{_AFFINE_ATOL} mm); every file of a case must be on one voxel grid.")


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
    label = values_to_classes(label_img.data, label_values, source=str(files.label))
  return Case(case_id=files.case_id, image=image, label=label, affine=ref.affine,
              spacing=ref.spacing)


# ---------------------------------------------------------------------------------------------
# Headers (cheap checks before anything is loaded).


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


def _check_headers(files: CaseFiles, channel_names: Sequence[str]) -> None:
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


# ---------------------------------------------------------------------------------------------
# Folders.


def _listing(folder: pathlib.Path) -> list[pathlib.Path]:
  """The files of `folder`, sorted; hidden names (macOS `._*`, `.DS_Store`) left out."""
  return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())


def _ending_of(name: str) -> str | None:
  for ending in _IMAGE_ENDINGS:
    if name.lower().endswith(ending):
      return ending
  return None


def _check_ending(file_ending: Any, source: str) -> str:
  if file_ending not in FILE_ENDINGS:
    raise ValueError(
        f"{source}: file ending {file_ending!r} is not supported; medjax reads {_SUPPORTED}.")
  return file_ending


def _wrong_file(path: pathlib.Path, file_ending: str, expected: str) -> ValueError:
  ending = _ending_of(path.name)
  if ending is not None and ending != file_ending:
    return ValueError(
        f"{path}: mixed file endings; this dataset's files end in {file_ending!r}, this one in "
        f"{ending!r}. Convert it (medjax reads {_SUPPORTED}) or remove it.")
  return ValueError(f"{path}: unexpected file; expected {expected}.")


def _channel_groups(folder: pathlib.Path, paths: Iterable[pathlib.Path], num_channels: int,
                    file_ending: str) -> list[tuple[str, tuple[pathlib.Path, ...]]]:
  """nnU-Net `{case}_{XXXX}{ending}` files grouped by case, sorted by case id."""
  pattern = f"{{case}}_{{XXXX}}{file_ending} files (XXXX = 4-digit channel index)"
  groups: dict[str, dict[int, pathlib.Path]] = {}
  for path in paths:
    if not path.name.endswith(file_ending):
      raise _wrong_file(path, file_ending, pattern)
    m = _CHANNEL_RE.match(path.name[: -len(file_ending)])
    if m is None:
      raise ValueError(f"{path}: unexpected file name; expected {pattern}.")
    channel = int(m.group(2))
    if channel >= num_channels:
      raise ValueError(
          f"{path}: channel {m.group(2)}, but the dataset has {num_channels} channel(s) "
          f"(0000..{num_channels - 1:04d}).")
    groups.setdefault(m.group(1), {})[channel] = path
  cases = []
  for case in sorted(groups):
    missing = [c for c in range(num_channels) if c not in groups[case]]
    if missing:
      raise FileNotFoundError(
          f"{folder / f'{case}_{missing[0]:04d}{file_ending}'}: missing; case {case} needs one "
          f"file per channel, {case}_0000{file_ending} to {case}_{num_channels - 1:04d}"
          f"{file_ending}.")
    cases.append((case, tuple(groups[case][c] for c in range(num_channels))))
  return cases


def _common_ending(folder: pathlib.Path, paths: Sequence[pathlib.Path]) -> str:
  endings = {}
  for path in paths:
    ending = _ending_of(path.name)
    if ending is None:
      raise ValueError(f"{path}: unexpected file; expected image files ending in {_SUPPORTED}.")
    endings.setdefault(ending, path)
  if len(endings) > 1:
    (e0, p0), (e1, p1) = sorted(endings.items())[:2]
    raise ValueError(
        f"{folder}: mixed file endings ({p0.name} is {e0!r}, {p1.name} is {e1!r}); expected "
        "one ending for all files.")
  return _check_ending(next(iter(endings)), str(next(iter(endings.values()))))


def _image_cases(folder: pathlib.Path, paths: Sequence[pathlib.Path],
                 channel_names: Sequence[str], file_ending: str) -> tuple[CaseFiles, ...]:
  """nnU-Net channel files when every file is named like one, else one file per case."""
  stems = [p.name[: -len(file_ending)] for p in paths if p.name.endswith(file_ending)]
  if len(stems) == len(paths) and all(_CHANNEL_RE.match(s) for s in stems):
    groups = _channel_groups(folder, paths, len(channel_names), file_ending)
  else:
    groups = []
    for path in paths:
      if not path.name.endswith(file_ending):
        raise _wrong_file(path, file_ending, f"one image file per case ending in {file_ending!r}")
      groups.append((path.name[: -len(file_ending)], (path,)))
  cases = tuple(CaseFiles(case_id=c, images=images, label=None) for c, images in groups)
  for case in cases:
    _check_headers(case, channel_names)
  return cases


def find_image_cases(folder: str | os.PathLike, *, num_channels: int,
                     file_ending: str | None = None) -> tuple[CaseFiles, ...]:
  """The cases of a folder of images to predict (e.g. `imagesTs/` of either layout).

  Files named `{case}_{XXXX}{ending}` (all of them) are nnU-Net channel files, grouped by case;
  otherwise each file is one case (a Decathlon 4-D image, or 3-D with one channel). Hidden
  files (`._*`) are ignored. Headers are checked (channel count, one grid per case); voxels are
  not read.

  Args:
    folder: the image folder.
    num_channels: channels per case.
    file_ending: '.nii.gz' or '.nii'; None: the one ending all files share.

  Returns:
    CaseFiles sorted by case id, each with `label=None`.

  Raises:
    FileNotFoundError: no folder, no image in it, or a case without all its channel files.
    ValueError: mixed or unsupported endings, unexpected files, wrong channel counts or grids.
  """
  folder = pathlib.Path(folder).expanduser()
  if not folder.is_dir():
    raise FileNotFoundError(f"{folder}: image folder does not exist.")
  if not isinstance(num_channels, int) or num_channels < 1:
    raise ValueError(f"num_channels must be a positive integer, got {num_channels!r}.")
  paths = _listing(folder)
  if not paths:
    raise FileNotFoundError(
        f"{folder}: holds no image files; expected {{case}}_{{XXXX}}.nii.gz channel files or "
        "one .nii.gz/.nii file per case.")
  if file_ending is None:
    file_ending = _common_ending(folder, paths)
  else:
    _check_ending(file_ending, "file_ending")
  names = tuple(f"channel {c}" for c in range(num_channels))
  return _image_cases(folder, paths, names, file_ending)


# ---------------------------------------------------------------------------------------------
# dataset.json.


def _get(spec: dict, key: str, types: type | tuple[type, ...], spec_path: pathlib.Path,
         expected: str) -> Any:
  if key not in spec:
    raise ValueError(f"{spec_path}: missing key {key!r}; expected {expected}.")
  value = spec[key]
  if not isinstance(value, types) or isinstance(value, bool):
    raise ValueError(f"{spec_path}: {key!r} must be {expected}, got {value!r}.")
  return value


def _index_names(spec: dict, key: str, spec_path: pathlib.Path, expected: str
                 ) -> dict[int, str]:
  """A dataset.json dict {"0": name, "1": name, ...} as {0: name, 1: name, ...}."""
  value = _get(spec, key, dict, spec_path, expected)
  out = {}
  for k, name in value.items():
    if not (isinstance(k, str) and k.isdigit()) or not isinstance(name, str) or not name:
      raise ValueError(
          f"{spec_path}: {key!r} entry {k!r}: {name!r} is not valid; expected {expected}.")
    out[int(k)] = name
  if not out:
    raise ValueError(f"{spec_path}: {key!r} is empty; expected {expected}.")
  return out


def _channel_names(spec: dict, key: str, spec_path: pathlib.Path) -> tuple[str, ...]:
  expected = 'a dict of channel index -> name, e.g. {"0": "T1", "1": "T2"}'
  names = _index_names(spec, key, spec_path, expected)
  if sorted(names) != list(range(len(names))):
    raise ValueError(
        f"{spec_path}: {key!r} indices {sorted(names)} must be 0..{len(names) - 1}.")
  return tuple(names[c] for c in range(len(names)))


def _num_training(spec: dict, spec_path: pathlib.Path) -> int:
  n = _get(spec, "numTraining", int, spec_path, "the number of training cases (an integer)")
  if n < 1:
    raise ValueError(f"{spec_path}: numTraining must be >= 1, got {n}.")
  return n


def _dataset_name(spec: dict, spec_path: pathlib.Path, root: pathlib.Path) -> str:
  if "name" not in spec:
    return root.name
  return _get(spec, "name", str, spec_path, "a string")


def _check_count(spec_path: pathlib.Path, num_training: int, found: int, where: str) -> None:
  if num_training != found:
    raise ValueError(
        f"{spec_path}: numTraining is {num_training}, but {where} {found} training case(s).")


def read_dataset(root: str | os.PathLike) -> DatasetDescription:
  """Reads an nnU-Net v2 raw dataset or a Decathlon task folder (detected from dataset.json).

  Reads `dataset.json`, lists `imagesTr/`, `labelsTr/` and `imagesTs/`, and reads every file's
  header (not its voxels) to check channel counts and voxel grids. Label values and finite
  intensities are checked by `load_case`.

  Args:
    root: the folder holding `dataset.json` (e.g. `nnUNet_raw/Dataset001_Brain` or
      `Task01_BrainTumour`).

  Returns:
    The DatasetDescription; its cases are sorted by case id.

  Raises:
    FileNotFoundError: `root`, `dataset.json`, a folder or a file is missing.
    ValueError: malformed `dataset.json` (invalid JSON, missing keys, wrong types, region
      labels, non-consecutive nnU-Net label ids, unsupported file ending), numTraining not
      matching the cases, unexpected or mixed-ending files, wrong channel counts or grids.
  """
  # Normalised (no `..`), so listed paths and listed folders compare equal.
  root = pathlib.Path(os.path.abspath(pathlib.Path(root).expanduser()))
  if not root.is_dir():
    raise FileNotFoundError(
        f"{root}: dataset folder does not exist; expected an nnU-Net v2 raw dataset "
        "(dataset.json, imagesTr/, labelsTr/) or a Medical Segmentation Decathlon task folder.")
  spec_path = root / "dataset.json"
  if not spec_path.is_file():
    raise FileNotFoundError(
        f"{spec_path}: missing; an nnU-Net v2 or Decathlon dataset folder holds dataset.json "
        "beside imagesTr/ and labelsTr/.")
  try:
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{spec_path}: not valid JSON ({e}).") from e
  if not isinstance(spec, dict):
    raise ValueError(f"{spec_path}: expected a JSON object, got {type(spec).__name__}.")
  if "channel_names" in spec:
    return _read_nnunet(root, spec_path, spec)
  if "modality" in spec:
    return _read_decathlon(root, spec_path, spec)
  raise ValueError(
      f"{spec_path}: neither 'channel_names' (nnU-Net v2) nor 'modality' (Medical Segmentation "
      "Decathlon) found; cannot tell the layout.")


def _nnunet_labels(spec: dict, spec_path: pathlib.Path) -> tuple[str, ...]:
  expected = 'a dict of class name -> integer id, e.g. {"background": 0, "tumour": 1}'
  labels = _get(spec, "labels", dict, spec_path, expected)
  ids: dict[int, str] = {}
  for name, value in labels.items():
    if isinstance(value, (list, tuple)):
      raise ValueError(
          f"{spec_path}: label {name!r} is a region {value}; region-based labels are not "
          "supported by medjax, give each class one integer id.")
    if not isinstance(value, int) or isinstance(value, bool):
      raise ValueError(f"{spec_path}: label {name!r}: {value!r} is not an integer id; expected "
                       f"{expected}.")
    if value in ids:
      raise ValueError(f"{spec_path}: labels {ids[value]!r} and {name!r} share the id {value}.")
    ids[value] = name
  if sorted(ids) != list(range(len(ids))) or len(ids) < 2:
    raise ValueError(
        f"{spec_path}: label ids {sorted(ids)} must be consecutive 0..K-1 with K >= 2 and 0 the "
        "background (nnU-Net requires this).")
  return tuple(ids[k] for k in range(len(ids)))


def _read_nnunet(root: pathlib.Path, spec_path: pathlib.Path, spec: dict) -> DatasetDescription:
  channel_names = _channel_names(spec, "channel_names", spec_path)
  class_names = _nnunet_labels(spec, spec_path)
  num_training = _num_training(spec, spec_path)
  file_ending = _get(spec, "file_ending", str, spec_path, "a string such as '.nii.gz'")
  _check_ending(file_ending, f"{spec_path} file_ending")
  if "dataset" in spec:
    raise ValueError(
        f"{spec_path}: the 'dataset' key (explicit file lists) is not supported; store the files "
        "as imagesTr/{case}_{XXXX}" + file_ending + " and labelsTr/{case}" + file_ending + ".")
  folders = {k: root / k for k in ("imagesTr", "labelsTr")}
  for folder in folders.values():
    if not folder.is_dir():
      raise FileNotFoundError(
          f"{folder}: missing; an nnU-Net raw dataset holds imagesTr/ and labelsTr/ beside "
          "dataset.json.")
  images = dict(_channel_groups(folders["imagesTr"], _listing(folders["imagesTr"]),
                                len(channel_names), file_ending))
  labels = {}
  for path in _listing(folders["labelsTr"]):
    if not path.name.endswith(file_ending):
      raise _wrong_file(path, file_ending, f"label files named {{case}}{file_ending}")
    labels[path.name[: -len(file_ending)]] = path
  no_label = sorted(set(images) - set(labels))
  if no_label:
    raise FileNotFoundError(
        f"{folders['labelsTr'] / (no_label[0] + file_ending)}: missing; case {no_label[0]} has "
        f"images in imagesTr/ but no label ({len(no_label)} such case(s): {no_label[:5]}).")
  no_images = sorted(set(labels) - set(images))
  if no_images:
    raise FileNotFoundError(
        f"{folders['imagesTr'] / (no_images[0] + '_0000' + file_ending)}: missing; "
        f"{labels[no_images[0]]} has no images in imagesTr/ ({len(no_images)} such label(s): "
        f"{no_images[:5]}).")
  _check_count(spec_path, num_training, len(images), "imagesTr/ and labelsTr/ hold")
  training = tuple(CaseFiles(case_id=c, images=images[c], label=labels[c]) for c in sorted(images))
  for case in training:
    _check_headers(case, channel_names)
  test: tuple[CaseFiles, ...] = ()
  test_dir = root / "imagesTs"
  if test_dir.is_dir() and _listing(test_dir):
    groups = _channel_groups(test_dir, _listing(test_dir), len(channel_names), file_ending)
    test = tuple(CaseFiles(case_id=c, images=files, label=None) for c, files in groups)
    for case in test:
      _check_headers(case, channel_names)
  return DatasetDescription(
      root=root, layout="nnunet", name=_dataset_name(spec, spec_path, root),
      channel_names=channel_names, class_names=class_names,
      label_values=tuple(range(len(class_names))), file_ending=file_ending, training=training,
      test=test)


def _decathlon_labels(spec: dict, spec_path: pathlib.Path) -> tuple[tuple[str, ...],
                                                                    tuple[int, ...]]:
  expected = 'a dict of label value -> class name, e.g. {"0": "background", "1": "tumour"}'
  names = _index_names(spec, "labels", spec_path, expected)
  values = tuple(sorted(names))
  if values[0] != 0 or len(values) < 2:
    raise ValueError(
        f"{spec_path}: 'labels' values {list(values)} must include 0 (background) and at least "
        "one other class.")
  if len(values) > 256:
    raise ValueError(f"{spec_path}: {len(values)} labels; at most 256 are supported.")
  return tuple(names[v] for v in values), values


def _read_decathlon(root: pathlib.Path, spec_path: pathlib.Path, spec: dict
                    ) -> DatasetDescription:
  channel_names = _channel_names(spec, "modality", spec_path)
  class_names, label_values = _decathlon_labels(spec, spec_path)
  num_training = _num_training(spec, spec_path)
  entry_doc = 'a list of {"image": "./imagesTr/X.nii.gz", "label": "./labelsTr/X.nii.gz"}'
  training_spec = _get(spec, "training", list, spec_path, entry_doc)
  test_spec = None
  if "test" in spec:
    test_spec = _get(spec, "test", list, spec_path, 'a list of "./imagesTs/X.nii.gz"')

  # Every listed path, checked for type and ending before any file is looked at.
  listed: list[tuple[str, int, str, str]] = []  # (where, index, kind, relative path)
  for i, entry in enumerate(training_spec):
    if (not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or
        not isinstance(entry.get("label"), str)):
      raise ValueError(
          f"{spec_path}: 'training' entry {i} is {entry!r}; expected "
          '{"image": "./imagesTr/X.nii.gz", "label": "./labelsTr/X.nii.gz"}.')
    listed += [("training", i, "image", entry["image"]), ("training", i, "label", entry["label"])]
  for i, entry in enumerate(test_spec or []):
    if not isinstance(entry, str):
      raise ValueError(
          f"{spec_path}: 'test' entry {i} is {entry!r}; expected a path such as "
          "\"./imagesTs/X.nii.gz\".")
    listed.append(("test", i, "image", entry))
  if not training_spec:
    raise ValueError(f"{spec_path}: 'training' is empty; expected {entry_doc}.")
  file_ending = None
  first_path = None
  for where, i, kind, rel in listed:
    ending = _ending_of(rel)
    if ending not in FILE_ENDINGS:
      raise ValueError(
          f"{spec_path}: {where} entry {i} {kind} {rel!r}: unsupported file ending; medjax reads "
          f"{_SUPPORTED}.")
    if file_ending is None:
      file_ending, first_path = ending, rel
    elif ending != file_ending:
      raise ValueError(
          f"{spec_path}: mixed file endings: {where} entry {i} {kind} {rel!r} ends in "
          f"{ending!r}, {first_path!r} in {file_ending!r}; expected one ending for all files.")
  _check_count(spec_path, num_training, len(training_spec), "'training' lists")

  num_channels = len(channel_names)
  used: set[pathlib.Path] = set()

  def image_files(where: str, i: int, rel: str) -> tuple[pathlib.Path, ...]:
    path = pathlib.Path(os.path.normpath(root / rel))
    if path.is_file():
      files = (path,)
    else:  # nnU-Net v1 tasks store the listed image as {case}_{XXXX} channel files.
      stem = path.name[: -len(file_ending)]
      files = tuple(path.with_name(f"{stem}_{c:04d}{file_ending}") for c in range(num_channels))
      if not all(f.is_file() for f in files):
        raise FileNotFoundError(
            f"{path}: listed in {spec_path} ({where} entry {i}) but absent on disk.")
    used.update(files)
    return files

  def cases_of(entries, where: str) -> tuple[CaseFiles, ...]:
    cases = {}
    for i, entry in enumerate(entries):
      rel = entry["image"] if where == "training" else entry
      images = image_files(where, i, rel)
      case_id = pathlib.Path(rel).name[: -len(file_ending)]
      label = None
      if where == "training":
        label = pathlib.Path(os.path.normpath(root / entry["label"]))
        if not label.is_file():
          raise FileNotFoundError(
              f"{label}: listed in {spec_path} (training entry {i}) but absent on disk.")
        used.add(label)
      if case_id in cases:
        raise ValueError(f"{spec_path}: case {case_id!r} is listed twice in {where!r}.")
      cases[case_id] = CaseFiles(case_id=case_id, images=images, label=label)
    return tuple(cases[c] for c in sorted(cases))

  training = cases_of(training_spec, "training")
  test_dir = root / "imagesTs"
  if test_spec is not None:
    test = cases_of(test_spec, "test")
    scanned = ("imagesTr", "labelsTr", "imagesTs")
  else:
    scanned = ("imagesTr", "labelsTr")
    test = ()
    if test_dir.is_dir() and _listing(test_dir):
      test = _image_cases(test_dir, _listing(test_dir), channel_names, file_ending)
  # Files on disk that dataset.json does not list: a case added without updating it.
  for sub in scanned:
    folder = root / sub
    if not folder.is_dir():
      continue
    for path in _listing(folder):
      if path not in used:
        if not path.name.endswith(file_ending):
          raise _wrong_file(path, file_ending, f"only the files listed in {spec_path.name}")
        raise ValueError(
            f"{path}: not listed in {spec_path}; list it under "
            f"{'test' if sub == 'imagesTs' else 'training'!r} (and update numTraining) or "
            "remove it.")
  for case in training + (test if test_spec is not None else ()):
    _check_headers(case, channel_names)
  return DatasetDescription(
      root=root, layout="decathlon", name=_dataset_name(spec, spec_path, root),
      channel_names=channel_names, class_names=class_names, label_values=label_values,
      file_ending=file_ending, training=training, test=test)
