"""Folders of image files in the nnU-Net / Decathlon naming: listing, file endings, channel files.

`find_image_cases(folder)` gives the cases of a folder of images to segment (an `imagesTs/`);
the helpers below it are shared with `medjax.data.layouts.read_dataset`. Hidden names (macOS
`._*`, `.DS_Store`) are ignored; any other file that does not fit the naming is an error.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any, Iterable, Sequence

from medjax.data import case_files

FILE_ENDINGS = (".nii.gz", ".nii")
_CHANNEL_RE = re.compile(r"^(.+)_(\d{4})$")
# Endings of other image formats: such a file in a NIfTI dataset is a mixed-ending mistake.
_IMAGE_ENDINGS = FILE_ENDINGS + (
    ".mha", ".mhd", ".nrrd", ".nhdr", ".hdr", ".img", ".tif", ".tiff", ".png", ".bmp", ".npy",
    ".npz", ".dcm", ".gz")
SUPPORTED = "'.nii.gz' or '.nii' (NIfTI)"


def listing(folder: pathlib.Path) -> list[pathlib.Path]:
  """The files of `folder`, sorted; hidden names (macOS `._*`, `.DS_Store`) left out."""
  return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())


def ending_of(name: str) -> str | None:
  for ending in _IMAGE_ENDINGS:
    if name.lower().endswith(ending):
      return ending
  return None


def check_ending(file_ending: Any, source: str) -> str:
  if file_ending not in FILE_ENDINGS:
    raise ValueError(
        f"{source}: file ending {file_ending!r} is not supported; medjax reads {SUPPORTED}.")
  return file_ending


def wrong_file(path: pathlib.Path, file_ending: str, expected: str) -> ValueError:
  ending = ending_of(path.name)
  if ending is not None and ending != file_ending:
    return ValueError(
        f"{path}: mixed file endings; this dataset's files end in {file_ending!r}, this one in "
        f"{ending!r}. Convert it (medjax reads {SUPPORTED}) or remove it.")
  return ValueError(f"{path}: unexpected file; expected {expected}.")


def channel_groups(folder: pathlib.Path, paths: Iterable[pathlib.Path], num_channels: int,
                   file_ending: str) -> list[tuple[str, tuple[pathlib.Path, ...]]]:
  """nnU-Net `{case}_{XXXX}{ending}` files grouped by case, sorted by case id."""
  pattern = f"{{case}}_{{XXXX}}{file_ending} files (XXXX = 4-digit channel index)"
  groups: dict[str, dict[int, pathlib.Path]] = {}
  for path in paths:
    if not path.name.endswith(file_ending):
      raise wrong_file(path, file_ending, pattern)
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


def common_ending(folder: pathlib.Path, paths: Sequence[pathlib.Path]) -> str:
  endings = {}
  for path in paths:
    ending = ending_of(path.name)
    if ending is None:
      raise ValueError(f"{path}: unexpected file; expected image files ending in {SUPPORTED}.")
    endings.setdefault(ending, path)
  if len(endings) > 1:
    (e0, p0), (e1, p1) = sorted(endings.items())[:2]
    raise ValueError(
        f"{folder}: mixed file endings ({p0.name} is {e0!r}, {p1.name} is {e1!r}); expected "
        "one ending for all files.")
  return check_ending(next(iter(endings)), str(next(iter(endings.values()))))


def image_cases(folder: pathlib.Path, paths: Sequence[pathlib.Path], channel_names: Sequence[str],
                file_ending: str) -> tuple[case_files.CaseFiles, ...]:
  """nnU-Net channel files when every file is named like one, else one file per case."""
  stems = [p.name[: -len(file_ending)] for p in paths if p.name.endswith(file_ending)]
  if len(stems) == len(paths) and all(_CHANNEL_RE.match(s) for s in stems):
    groups = channel_groups(folder, paths, len(channel_names), file_ending)
  else:
    groups = []
    for path in paths:
      if not path.name.endswith(file_ending):
        raise wrong_file(path, file_ending, f"one image file per case ending in {file_ending!r}")
      groups.append((path.name[: -len(file_ending)], (path,)))
  cases = tuple(case_files.CaseFiles(case_id=c, images=images, label=None) for c, images in groups)
  for case in cases:
    case_files.check_headers(case, channel_names)
  return cases


def find_image_cases(folder: str | os.PathLike, *, num_channels: int,
                     file_ending: str | None = None) -> tuple[case_files.CaseFiles, ...]:
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
    case_files.CaseFiles sorted by case id, each with `label=None`.

  Raises:
    FileNotFoundError: no folder, no image in it, or a case without all its channel files.
    ValueError: mixed or unsupported endings, unexpected files, wrong channel counts or grids.
  """
  folder = pathlib.Path(folder).expanduser()
  if not folder.is_dir():
    raise FileNotFoundError(f"{folder}: image folder does not exist.")
  if not isinstance(num_channels, int) or num_channels < 1:
    raise ValueError(f"num_channels must be a positive integer, got {num_channels!r}.")
  paths = listing(folder)
  if not paths:
    raise FileNotFoundError(
        f"{folder}: holds no image files; expected {{case}}_{{XXXX}}.nii.gz channel files or "
        "one .nii.gz/.nii file per case.")
  if file_ending is None:
    file_ending = common_ending(folder, paths)
  else:
    check_ending(file_ending, "file_ending")
  names = tuple(f"channel {c}" for c in range(num_channels))
  return image_cases(folder, paths, names, file_ending)
