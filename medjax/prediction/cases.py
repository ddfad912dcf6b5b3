"""The scans `medjax.predict` segments: one case from its files, or the cases of a folder.

A `Case` is one scan as read from disk (raw intensities in the file's voxel order, its affine and
on-disk shape, its label when given), whichever layout it came from: an iSeg-style T1/T2 pair,
nnU-Net / Decathlon channel files, or a folder of either.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import re
from typing import Any

import nibabel as nib
import numpy as np

from medjax import io
from medjax import labels
from medjax.data import case_files
from medjax.data import datasets
from medjax.data import image_folders
from medjax.data import iseg

_T1_SUFFIX_RE = re.compile(r"[-_.]?t1w?$", re.IGNORECASE)


@dataclasses.dataclass
class Case:
  """One scan to segment.

  Attributes:
    name: output file stem (`subject-N` or derived from the T1 file name).
    image: `[D, H, W, C]` float32 raw intensities (T1[, T2]).
    label: `[D, H, W]` uint8 class ids, or None.
    affine: `[4, 4]` voxel-to-world matrix of the T1 file (written into the outputs).
    spacing: voxel size in mm.
    disk_shape: the T1 file's own shape (e.g. iSeg's `[144, 192, 256, 1]`), kept in the outputs.
    label_name: file stem of the written label map; default `<name>-label`.
  """
  name: str
  image: np.ndarray
  label: np.ndarray | None
  affine: np.ndarray
  spacing: tuple[float, float, float]
  disk_shape: tuple[int, ...]
  label_name: str | None = None


def _disk_shape(path: pathlib.Path) -> tuple[int, ...]:
  return tuple(int(s) for s in nib.load(str(path)).shape)


def _stem_of(path: pathlib.Path) -> str:
  name = path.name
  for suffix in (".nii.gz", ".nii", ".hdr", ".img"):
    if name.lower().endswith(suffix):
      name = name[:-len(suffix)]
      break
  return _T1_SUFFIX_RE.sub("", name) or name


def load_case(t1: str, t2: str | None = None, label: str | None = None, *,
              num_classes: int = 4) -> Case:
  """Loads one scan from its T1 (and T2, optional label) files, checking they share a geometry.

  Raises:
    FileNotFoundError, ValueError: a missing or unreadable file, or files whose shapes or
      affines differ (the message names both files).
  """
  t1_image = io.load_image(t1)
  channels = [t1_image]
  if t2 is not None:
    channels.append(io.load_image(t2))
  label_map = None
  if label is not None:
    label_map, label_image = labels.load_label_map(label, num_classes=num_classes)
    others = channels[1:] + [label_image]
  else:
    others = channels[1:]
  for other in others:
    if other.data.shape != t1_image.data.shape:
      raise ValueError(f"{other.path}: shape {other.data.shape} differs from the T1 "
                       f"{t1_image.path} {t1_image.data.shape}; expected one geometry.")
    if not np.allclose(other.affine, t1_image.affine, atol=io.AFFINE_ATOL):
      raise ValueError(f"{other.path}: affine\n{other.affine}\ndiffers from the T1 "
                       f"{t1_image.path}\n{t1_image.affine}\nexpected images on one grid.")
  data = []
  for img in channels:
    values = img.data.astype(np.float32)
    if not np.all(np.isfinite(values)):
      raise ValueError(f"{img.path}: holds non-finite voxels; expected finite intensities.")
    data.append(values)
  return Case(name=_stem_of(t1_image.path), image=np.stack(data, -1), label=label_map,
              affine=t1_image.affine, spacing=t1_image.spacing,
              disk_shape=_disk_shape(t1_image.path))


def load_iseg_case(files: iseg.SubjectFiles) -> Case:
  """Loads one subject of an iSeg-2017 folder (validated by `iseg.load_subject`)."""
  subject = iseg.load_subject(files)
  return Case(name=f"subject-{files.subject_id}", image=subject.image, label=subject.label,
              affine=subject.affine, spacing=subject.spacing,
              disk_shape=_disk_shape(files.t1))


def select_subjects(input_dir: str, subjects: list[str] | None) -> list[iseg.SubjectFiles]:
  """The subjects of an iSeg folder to segment (all by default)."""
  found = iseg.find_subjects(input_dir)
  if not subjects:
    return list(found.values())
  chosen = []
  for s in subjects:
    try:
      sid = int(str(s).strip())
    except ValueError:
      raise ValueError(f"--subjects {s!r}: expected subject numbers such as 1,9.") from None
    if sid not in found:
      raise ValueError(f"--subjects: subject {sid} is not in {input_dir} "
                       f"(it holds {sorted(found)}).")
    chosen.append(found[sid])
  return chosen


def load_images_case(images: list[str], label: str | None = None, *,
                     names: datasets.DatasetNames) -> Case:
  """Loads one case from its channel files (nnU-Net: `{case}_0000.nii.gz`, ...; or one 4-D
  Decathlon file), checking they share one grid; `label` holds the dataset's label values."""
  paths = tuple(pathlib.Path(p).expanduser() for p in images)
  stem = _stem_of(paths[0])
  case_id = re.sub(r"_\d{4}$", "", stem) if len(paths) > 1 or re.search(r"_\d{4}$", stem) else stem
  files = case_files.CaseFiles(case_id=case_id, images=paths,
                            label=None if label is None else pathlib.Path(label).expanduser())
  return _generic_case(files, names)


def _generic_case(files: case_files.CaseFiles, names: datasets.DatasetNames) -> Case:
  case = case_files.load_case(files, num_channels=len(names.channel_names),
                           label_values=names.label_values)
  return Case(name=case.case_id, image=case.image, label=case.label, affine=case.affine,
              spacing=case.spacing, disk_shape=_disk_shape(files.images[0])[:3],
              label_name=case.case_id)


def _is_iseg_folder(folder: pathlib.Path) -> bool:
  return any(folder.glob("subject-*-T1.hdr")) or any(
      (folder / f).is_dir() for f in (iseg.TRAINING_FOLDER, iseg.TESTING_FOLDER))


def select_cases(input_dir: str, subjects: list[str] | None,
                 names: datasets.DatasetNames) -> list[Any]:
  """Loaders of the cases of a folder: iSeg-2017 layout, or nnU-Net / Decathlon images
  (`{case}_{XXXX}` channel files, or one file per case); `subjects` picks some (all by default).
  """
  return [load for _, load in select_named_cases(input_dir, subjects, names)]


def select_named_cases(input_dir: str, subjects: list[str] | None,
                       names: datasets.DatasetNames) -> list[tuple[str, Any]]:
  """`select_cases` with each loader's case name (`Case.name`), known before loading it."""
  folder = pathlib.Path(input_dir).expanduser()
  if not folder.is_dir():
    raise FileNotFoundError(f"--input_dir {folder} does not exist or is not a folder; expected "
                            "a folder of images (e.g. imagesTs/) or an iSeg-2017 folder.")
  if _is_iseg_folder(folder):
    return [(f"subject-{f.subject_id}", functools.partial(load_iseg_case, f))
            for f in select_subjects(input_dir, subjects)]
  if (folder / "dataset.json").is_file():
    raise ValueError(f"--input_dir {folder} is a dataset folder; pass its images folder, e.g. "
                     f"{folder / 'imagesTs'}.")
  found = {c.case_id: c for c in image_folders.find_image_cases(
      folder, num_channels=len(names.channel_names))}
  chosen = list(found)
  if subjects:
    missing = [s for s in subjects if s not in found]
    if missing:
      raise ValueError(f"--subjects: cases {missing} are not in {folder} (it holds "
                       f"{sorted(found)[:10]}{' ...' if len(found) > 10 else ''}).")
    chosen = list(subjects)
  return [(c, functools.partial(_generic_case, found[c], names)) for c in chosen]


def check_modalities(case: Case, config: Any, workdir: str) -> np.ndarray:
  """The image channels the checkpoint expects; raises when the scan has a different count."""
  expected = int(config.dataset.num_modalities)
  have = case.image.shape[-1]
  if have != expected:
    if config.dataset.name == "iseg2017":
      hint = "--t1 and --t2" if expected == 2 else "--t1 only" if expected == 1 else "them"
    else:
      hint = f"{expected} files to --images"
    raise ValueError(
        f"{case.name}: {have} channel{'' if have == 1 else 's'} given, but the checkpoint in "
        f"{workdir} was trained on {expected}; pass {hint}.")
  return case.image
