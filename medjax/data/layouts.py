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
voxels) to check channel counts and grids. `load_case` (`medjax.data.case_files`) loads one case
and checks its values; `find_image_cases` (`medjax.data.image_folders`) lists a folder of images
to segment. Both are importable from here too, as docs and the dataset READMEs name them here.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

from medjax.data import dataset_json
from medjax.data import image_folders
# Case, load_case and find_image_cases are re-exported (see the module docstring).
from medjax.data.case_files import Case
from medjax.data.case_files import CaseFiles
from medjax.data.case_files import check_headers
from medjax.data.case_files import load_case
from medjax.data.image_folders import FILE_ENDINGS
from medjax.data.image_folders import find_image_cases

LAYOUTS = ("nnunet", "decathlon")
__all__ = ["Case", "CaseFiles", "DatasetDescription", "FILE_ENDINGS", "LAYOUTS",
           "find_image_cases", "load_case", "read_dataset"]


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
  spec = dataset_json.load(spec_path)
  if "channel_names" in spec:
    return _read_nnunet(root, spec_path, spec)
  if "modality" in spec:
    return _read_decathlon(root, spec_path, spec)
  raise ValueError(
      f"{spec_path}: neither 'channel_names' (nnU-Net v2) nor 'modality' (Medical Segmentation "
      "Decathlon) found; cannot tell the layout.")


def _read_nnunet(root: pathlib.Path, spec_path: pathlib.Path, spec: dict) -> DatasetDescription:
  channel_names = dataset_json.channel_names(spec, "channel_names", spec_path)
  class_names = dataset_json.nnunet_labels(spec, spec_path)
  num_training = dataset_json.num_training(spec, spec_path)
  file_ending = dataset_json.field(spec, "file_ending", str, spec_path,
                                   "a string such as '.nii.gz'")
  image_folders.check_ending(file_ending, f"{spec_path} file_ending")
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
  images = dict(image_folders.channel_groups(
      folders["imagesTr"], image_folders.listing(folders["imagesTr"]), len(channel_names),
      file_ending))
  labels = {}
  for path in image_folders.listing(folders["labelsTr"]):
    if not path.name.endswith(file_ending):
      raise image_folders.wrong_file(path, file_ending, f"label files named {{case}}{file_ending}")
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
  dataset_json.check_count(spec_path, num_training, len(images), "imagesTr/ and labelsTr/ hold")
  training = tuple(CaseFiles(case_id=c, images=images[c], label=labels[c]) for c in sorted(images))
  for case in training:
    check_headers(case, channel_names)
  test: tuple[CaseFiles, ...] = ()
  test_dir = root / "imagesTs"
  if test_dir.is_dir() and image_folders.listing(test_dir):
    groups = image_folders.channel_groups(test_dir, image_folders.listing(test_dir),
                                          len(channel_names), file_ending)
    test = tuple(CaseFiles(case_id=c, images=files, label=None) for c, files in groups)
    for case in test:
      check_headers(case, channel_names)
  return DatasetDescription(
      root=root, layout="nnunet", name=dataset_json.dataset_name(spec, spec_path, root),
      channel_names=channel_names, class_names=class_names,
      label_values=tuple(range(len(class_names))), file_ending=file_ending, training=training,
      test=test)


def _read_decathlon(root: pathlib.Path, spec_path: pathlib.Path, spec: dict
                    ) -> DatasetDescription:
  channel_names = dataset_json.channel_names(spec, "modality", spec_path)
  class_names, label_values = dataset_json.decathlon_labels(spec, spec_path)
  num_training = dataset_json.num_training(spec, spec_path)
  entry_doc = 'a list of {"image": "./imagesTr/X.nii.gz", "label": "./labelsTr/X.nii.gz"}'
  training_spec = dataset_json.field(spec, "training", list, spec_path, entry_doc)
  test_spec = None
  if "test" in spec:
    test_spec = dataset_json.field(spec, "test", list, spec_path, 'a list of "./imagesTs/X.nii.gz"')

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
    ending = image_folders.ending_of(rel)
    if ending not in FILE_ENDINGS:
      raise ValueError(
          f"{spec_path}: {where} entry {i} {kind} {rel!r}: unsupported file ending; medjax reads "
          f"{image_folders.SUPPORTED}.")
    if file_ending is None:
      file_ending, first_path = ending, rel
    elif ending != file_ending:
      raise ValueError(
          f"{spec_path}: mixed file endings: {where} entry {i} {kind} {rel!r} ends in "
          f"{ending!r}, {first_path!r} in {file_ending!r}; expected one ending for all files.")
  dataset_json.check_count(spec_path, num_training, len(training_spec), "'training' lists")

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
    if test_dir.is_dir() and image_folders.listing(test_dir):
      test = image_folders.image_cases(test_dir, image_folders.listing(test_dir), channel_names,
                                       file_ending)
  # Files on disk that dataset.json does not list: a case added without updating it.
  for sub in scanned:
    folder = root / sub
    if not folder.is_dir():
      continue
    for path in image_folders.listing(folder):
      if path not in used:
        if not path.name.endswith(file_ending):
          raise image_folders.wrong_file(path, file_ending,
                                         f"only the files listed in {spec_path.name}")
        raise ValueError(
            f"{path}: not listed in {spec_path}; list it under "
            f"{'test' if sub == 'imagesTs' else 'training'!r} (and update numTraining) or "
            "remove it.")
  for case in training + (test if test_spec is not None else ()):
    check_headers(case, channel_names)
  return DatasetDescription(
      root=root, layout="decathlon", name=dataset_json.dataset_name(spec, spec_path, root),
      channel_names=channel_names, class_names=class_names, label_values=label_values,
      file_ending=file_ending, training=training, test=test)
