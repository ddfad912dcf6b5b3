"""The iSeg-2017 folder layout: finding, validating and loading subjects.

The challenge distributes Analyze 7.5 pairs named `subject-N-T1.hdr/.img`, `subject-N-T2.hdr/.img`
and, for the training subjects 1-10, `subject-N-label.hdr/.img` (144 x 192 x 256 voxels, 1 mm,
label values 0 / 10 / 150 / 250 for background / CSF / GM / WM). The download unpacks to
`iSeg-2017-Training/` and `iSeg-2017-Testing/`; `find_subjects` accepts those subfolders or one
flat folder holding all files. iSeg-2019 names its files the same way and reuses `find_subjects`
with its own folder names (`medjax.data.medzoo_layouts`).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re

import numpy as np

from medjax import io
from medjax import labels

MODALITIES = ("T1", "T2")
LABEL_VALUES = labels.ISEG2017.label_values  # (0, 10, 150, 250)
CLASS_NAMES = labels.ISEG2017.class_names  # ("background", "CSF", "GM", "WM")
TRAINING_FOLDER = "iSeg-2017-Training"
TESTING_FOLDER = "iSeg-2017-Testing"

_KINDS = MODALITIES + ("label",)
_FILE_RE = re.compile(r"^subject-(\d+)-(T1|T2|label)\.(hdr|img)$")


@dataclasses.dataclass(frozen=True)
class SubjectFiles:
  """The `.hdr` files of one subject (each has its `.img` beside it).

  Attributes:
    subject_id: N in `subject-N-*`.
    t1: `subject-N-T1.hdr`.
    t2: `subject-N-T2.hdr`.
    label: `subject-N-label.hdr`, or None for a test subject.
  """
  subject_id: int
  t1: pathlib.Path
  t2: pathlib.Path
  label: pathlib.Path | None


@dataclasses.dataclass(frozen=True)
class Subject:
  """One loaded subject.

  Attributes:
    subject_id: N in `subject-N-*`.
    image: `[D, H, W, 2]` float32 raw intensities, channels (T1, T2).
    label: `[D, H, W]` uint8 class ids 0..3 (background, CSF, GM, WM), or None.
    affine: `[4, 4]` float64 voxel-to-world matrix of the T1 file.
    spacing: voxel size in mm.
  """
  subject_id: int
  image: np.ndarray
  label: np.ndarray | None
  affine: np.ndarray
  spacing: tuple[float, float, float]


def _folder_list(folders: tuple[str, ...]) -> str:
  names = [f"{f}/" for f in folders]
  return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def find_subjects(root: str | os.PathLike, *, training_folder: str = TRAINING_FOLDER,
                  testing_folders: tuple[str, ...] = (TESTING_FOLDER,),
                  dataset: str = "iSeg-2017") -> dict[int, SubjectFiles]:
  """Finds and checks the iSeg files under `root` (iSeg-2017 by default).

  `root` is either the folder holding `iSeg-2017-Training/` and/or `iSeg-2017-Testing/`, or a
  flat folder with all `subject-N-*` files. Subjects in `iSeg-2017-Training/` must have a label;
  elsewhere a subject without a label file is a test subject. Files not named `subject-*` are
  ignored.

  Args:
    root: the download folder.
    training_folder: the subfolder whose subjects must have labels.
    testing_folders: further subfolders searched (subjects there may lack labels). iSeg-2019
      uses `iSeg-2019-Training` and (`iSeg-2019-Validation`, `iSeg-2019-Testing`).
    dataset: the challenge name used in error messages.

  Returns:
    subject id -> SubjectFiles, sorted by id.

  Raises:
    FileNotFoundError: `root` is missing, holds no iSeg files, or a subject lacks a file.
    ValueError: a `subject-*` file whose name is not `subject-N-{T1,T2,label}.{hdr,img}`, or a
      subject present in two folders.
  """
  root = pathlib.Path(root).expanduser()
  subfolders = (training_folder,) + tuple(testing_folders)
  if not root.is_dir():
    raise FileNotFoundError(
        f"manual_dir {root} does not exist or is not a folder; expected the {dataset} download "
        f"(folders {_folder_list(subfolders)}, or the subject-N-*.hdr/.img files).")
  folders = [root] + [root / f for f in subfolders if (root / f).is_dir()]
  found: dict[int, dict[str, dict[str, pathlib.Path]]] = {}
  folder_of: dict[int, pathlib.Path] = {}
  for folder in folders:
    for path in sorted(folder.iterdir()):
      if not path.name.startswith("subject-") or path.is_dir():
        continue
      m = _FILE_RE.match(path.name)
      if m is None:
        raise ValueError(
            f"{path}: unexpected file; {dataset} files are named "
            "subject-N-T1.hdr/.img, subject-N-T2.hdr/.img and subject-N-label.hdr/.img.")
      sid, kind, ext = int(m.group(1)), m.group(2), m.group(3)
      if folder_of.setdefault(sid, folder) != folder:
        raise ValueError(
            f"{path}: subject {sid} also appears in {folder_of[sid]}; keep one copy.")
      found.setdefault(sid, {}).setdefault(kind, {})[ext] = path
  if not found:
    raise FileNotFoundError(
        f"manual_dir {root} holds no {dataset} files; expected {_folder_list(subfolders)} "
        "from the download, or subject-N-T1.hdr/.img, subject-N-T2.hdr/.img "
        "and subject-N-label.hdr/.img directly in it.")
  subjects = {}
  for sid in sorted(found):
    kinds = found[sid]
    folder = folder_of[sid]
    need = list(MODALITIES)
    if "label" in kinds or folder.name == training_folder:
      need.append("label")
    for kind in need:
      for ext in ("hdr", "img"):
        if ext not in kinds.get(kind, {}):
          raise FileNotFoundError(
              f"{folder / f'subject-{sid}-{kind}.{ext}'}: missing; subject {sid} needs "
              f"{', '.join(f'subject-{sid}-{k}.hdr/.img' for k in need)}.")
    subjects[sid] = SubjectFiles(
        subject_id=sid, t1=kinds["T1"]["hdr"], t2=kinds["T2"]["hdr"],
        label=kinds["label"]["hdr"] if "label" in need else None)
  return subjects


def load_subject(files: SubjectFiles) -> Subject:
  """Loads and validates one subject.

  Checks that T1, T2 and label are 3-D with one shape, one affine and one voxel size, that the
  images are finite, and that label values are in LABEL_VALUES.

  Returns:
    Subject with `image [D, H, W, 2]` float32 (T1, T2) and `label [D, H, W]` uint8 class ids.

  Raises:
    FileNotFoundError, ValueError: naming the offending file and what was expected.
  """
  t1 = io.load_image(files.t1)
  t2 = io.load_image(files.t2)
  images = [t1, t2]
  label_img = io.load_image(files.label) if files.label is not None else None
  for other in images[1:] + ([label_img] if label_img is not None else []):
    if other.data.shape != t1.data.shape:
      raise ValueError(
          f"{other.path}: shape {other.data.shape} does not match {t1.path.name} "
          f"{t1.data.shape}.")
    if not np.allclose(other.affine, t1.affine, atol=io.AFFINE_ATOL):
      raise ValueError(
          f"{other.path}: affine\n{other.affine}\ndoes not match {t1.path.name}\n{t1.affine}.")
  channels = []
  for img in images:
    data = img.data.astype(np.float32)
    if not np.all(np.isfinite(data)):
      raise ValueError(
          f"{img.path}: {int(np.sum(~np.isfinite(data)))} non-finite voxels; expected finite "
          "intensities.")
    channels.append(data)
  label = None
  if label_img is not None:
    label = labels.values_to_classes(label_img.data, LABEL_VALUES, source=str(label_img.path))
  return Subject(subject_id=files.subject_id, image=np.stack(channels, axis=-1), label=label,
                 affine=t1.affine, spacing=t1.spacing)
