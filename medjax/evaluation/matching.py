"""Pairing prediction files with ground-truth files by case (`medjax.evaluate --pred --label`).

Two files, or two folders whose label maps are matched by case: `subject-N` in the file name,
else the file name without its ending and without `-label`/`-seg`/`-pred` suffixes. Which image
files of a folder are label maps is described in `medjax.evaluate`'s docstring.
"""

from __future__ import annotations

import os
import pathlib
import re

from medjax.data import iseg
from medjax.data import naming

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".hdr")
_LABEL_WORDS = re.compile(r"label|seg|pred", re.IGNORECASE)
_SUBJECT_RE = re.compile(r"subject[-_]?(\d+)", re.IGNORECASE)
_SUFFIX_RE = re.compile(r"([-_.](label|labels|seg|segmentation|pred|prediction))+$", re.IGNORECASE)
# iSeg's image files beside its label maps: never label maps.
_ISEG_IMAGE_RE = re.compile(r"^subject-\d+-(T1|T2)$", re.IGNORECASE)
# Folders whose every image file is a label map (nnU-Net v2 and the Decathlon).
_LABEL_FOLDERS = ("labelsTr", "labelsTs")


def _is_image(path: pathlib.Path) -> bool:
  return path.is_file() and path.name.lower().endswith(_IMAGE_SUFFIXES)


def _stem(path: pathlib.Path) -> str:
  name = path.name
  for suffix in _IMAGE_SUFFIXES:
    if name.lower().endswith(suffix):
      return name[:-len(suffix)]
  return name


def subject_key(path: pathlib.Path) -> str:
  """Matching key of a label-map file: `subject-N` when present, else the stem sans suffixes."""
  m = _SUBJECT_RE.search(path.name)
  if m:
    return f"subject-{int(m.group(1))}"
  return _SUFFIX_RE.sub("", _stem(path))


def _label_maps(folder: pathlib.Path) -> dict[str, pathlib.Path]:
  # An iSeg-2017 download keeps its files in two subfolders; look into those too.
  folders = [folder] + [folder / f for f in (iseg.TRAINING_FOLDER, iseg.TESTING_FOLDER)
                        if (folder / f).is_dir()]
  images = [p for d in folders for p in sorted(d.iterdir())
            if _is_image(p) and not p.name.startswith(".")
            and "probabilit" not in p.name.lower() and not _ISEG_IMAGE_RE.match(_stem(p))]
  named = [p for p in images if _LABEL_WORDS.search(_stem(p))]
  # nnU-Net / Decathlon naming: {case}.nii.gz, with no word saying it is a label map.
  files = images if folder.name in _LABEL_FOLDERS or not named else named
  found: dict[str, pathlib.Path] = {}
  for path in files:
    key = subject_key(path)
    if key in found:
      raise ValueError(f"{path} and {found[key]} both match subject {key!r}; keep one label map "
                       "per subject in the folder.")
    found[key] = path
  return found


def match_files(pred: str | os.PathLike, label: str | os.PathLike
                ) -> list[tuple[str, pathlib.Path, pathlib.Path]]:
  """Pairs prediction and ground-truth files: `[(subject key, pred path, label path)]`.

  Raises:
    FileNotFoundError: a path is missing, or two folders share no subject.
    ValueError: a file paired with a folder.
  """
  pred, label = pathlib.Path(pred).expanduser(), pathlib.Path(label).expanduser()
  for name, path in (("--pred", pred), ("--label", label)):
    if not path.exists():
      raise FileNotFoundError(f"{name} {path} does not exist; expected a label-map file or a "
                              "folder of them.")
  if pred.is_dir() != label.is_dir():
    raise ValueError(f"--pred {pred} and --label {label}: expected two files or two folders.")
  if not pred.is_dir():
    return [(subject_key(label), pred, label)]
  preds, labels = _label_maps(pred), _label_maps(label)
  keys = sorted(set(preds) & set(labels), key=naming.natural_key)
  if not keys:
    raise FileNotFoundError(
        f"No subject has both a prediction in {pred} ({sorted(preds) or 'no label maps'}) and a "
        f"ground truth in {label} ({sorted(labels) or 'no label maps'}); label maps are image "
        "files named like subject-N-label.nii.gz, or {case}.nii.gz in both folders (nnU-Net's "
        "labelsTr/).")
  return [(k, preds[k], labels[k]) for k in keys]
