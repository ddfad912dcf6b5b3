"""Writers of synthetic brains as dataset folders: iSeg-2017 (Analyze pairs), nnU-Net v2 raw and
the Medical Segmentation Decathlon (NIfTI); each written under a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Callable, Sequence

import numpy as np

from medjax import io
from medjax.data import iseg
from medjax.data.synthetic.brain import (CHANNEL_NAMES, CLASS_NAMES, REAL_SHAPE, _check_geometry,
                                         _check_shape, generate_case, generate_subject)


def _write_folder(out_dir: str | os.PathLike, write: Callable[[pathlib.Path], None]
                  ) -> pathlib.Path:
  """Runs `write(tmp)` into a temporary sibling of `out_dir` and renames it to `out_dir`."""
  out_dir = pathlib.Path(out_dir).expanduser()
  if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
    raise FileExistsError(f"{out_dir}: exists and is not an empty folder; refusing to write.")
  out_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
  try:
    write(tmp)
    if out_dir.exists():
      out_dir.rmdir()
    tmp.rename(out_dir)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp)
  return out_dir


def _subject_ids(num_train: int, num_test: int) -> tuple[list[int], list[int]]:
  """Training subjects 1..num_train; test subjects from max(11, num_train + 1), like iSeg."""
  if num_train < 1 or num_test < 0:
    raise ValueError(f"need num_train >= 1 and num_test >= 0, got {num_train}, {num_test}.")
  first_test = max(11, num_train + 1)
  return list(range(1, num_train + 1)), [first_test + i for i in range(num_test)]


def write_iseg_layout(out_dir: str | os.PathLike, *, shape: Sequence[int] = REAL_SHAPE,
                      num_train: int = 10, num_test: int = 0, seed: int = 0,
                      flat: bool = False) -> pathlib.Path:
  """Writes a synthetic iSeg-2017 folder laid out like the download.

  Training subjects are numbered 1..num_train and written with labels to
  `out_dir/iSeg-2017-Training/`; test subjects are numbered from max(11, num_train + 1) like the
  real 11..23 and written without labels to `out_dir/iSeg-2017-Testing/`. With `flat=True` all
  files go directly into `out_dir`. The folder is written under a temporary name and renamed,
  so an interrupted call leaves no partial folder.

  Args:
    out_dir: folder to create; it must not exist or be empty.
    shape: volume shape `(D, H, W)`.
    num_train: labelled subjects (>= 1).
    num_test: unlabelled subjects.
    seed: dataset seed; the same seed gives the same files.
    flat: write all files into `out_dir` itself.

  Returns:
    `out_dir` as a Path.
  """
  train_ids, test_ids = _subject_ids(num_train, num_test)

  def write(tmp: pathlib.Path) -> None:
    for sid in train_ids + test_ids:
      labelled = sid in train_ids
      folder = tmp if flat else tmp / (iseg.TRAINING_FOLDER if labelled else iseg.TESTING_FOLDER)
      t1, t2, label = generate_subject(shape, seed=seed, subject_id=sid)
      affine = np.eye(4)  # Analyze keeps only the 1 mm voxel size; nibabel rebuilds the rest.
      arrays = [("T1", t1), ("T2", t2)] + ([("label", label)] if labelled else [])
      for kind, data in arrays:
        io.save_image(folder / f"subject-{sid}-{kind}.hdr", data[..., None], affine)

  return _write_folder(out_dir, write)


def _check_file_ending(file_ending: str) -> str:
  if file_ending not in (".nii.gz", ".nii"):
    raise ValueError(f"file_ending must be '.nii.gz' or '.nii', got {file_ending!r}.")
  return file_ending


def _description(seed: int, shape: Sequence[int], spacing: Sequence[float],
                 axcodes: str) -> str:
  return (f"Synthetic 6-month infant brains written by medjax.data.synthetic (seed {seed}, "
          f"RAS grid {' x '.join(str(int(s)) for s in shape)} voxels of "
          f"{' x '.join(f'{float(s):g}' for s in spacing)} mm, stored as {axcodes}).")


def _check_nifti_options(shape: Sequence[int], num_train: int, num_test: int,
                         spacing: Sequence[float], axcodes: str, num_channels: int,
                         file_ending: str) -> tuple[list[int], list[int]]:
  """Checks the options of the NIfTI layouts; returns the training and test subject ids."""
  train_ids, test_ids = _subject_ids(num_train, num_test)
  _check_shape(shape)
  _check_geometry(spacing, axcodes, num_channels)
  _check_file_ending(file_ending)
  return train_ids, test_ids


def _write_nifti_dataset(out_dir: str | os.PathLike, meta: dict, train_ids: list[int],
                         test_ids: list[int],
                         image_files: Callable[[int, np.ndarray], list[tuple[str, np.ndarray]]],
                         case_options: dict, file_ending: str) -> pathlib.Path:
  """Writes `dataset.json` and every case of `generate_case(**case_options)`: the images as
  `image_files(subject_id, image)` names them, in `imagesTr/` (training) or `imagesTs/` (test),
  and the training labels as `labelsTr/brain_NNN{file_ending}`."""

  def write(tmp: pathlib.Path) -> None:
    for sid in train_ids + test_ids:
      labelled = sid in train_ids
      image, label, affine = generate_case(subject_id=sid, **case_options)
      images = tmp / ("imagesTr" if labelled else "imagesTs")
      for file_name, data in image_files(sid, image):
        io.save_image(images / file_name, data, affine)
      if labelled:
        io.save_image(tmp / "labelsTr" / f"brain_{sid:03d}{file_ending}", label, affine)
    _write_json(tmp / "dataset.json", meta)

  return _write_folder(out_dir, write)


def write_nnunet_layout(out_dir: str | os.PathLike, *, shape: Sequence[int] = REAL_SHAPE,
                        num_train: int = 10, num_test: int = 0, seed: int = 0,
                        spacing: Sequence[float] = (1., 1., 1.), axcodes: str = "RAS",
                        num_channels: int = 2, dataset_name: str = "Dataset001_BuiltinBrain",
                        file_ending: str = ".nii.gz") -> pathlib.Path:
  """Writes synthetic brains as an nnU-Net v2 raw dataset folder.

  `out_dir` is the dataset folder itself (conventionally named like `dataset_name`, inside
  `nnUNet_raw/`); it gets `dataset.json` (`channel_names` {"0": "T1", "1": "T2", "2": "FLAIR"}
  up to `num_channels`, `labels` {"background": 0, "CSF": 1, "GM": 2, "WM": 3}, `numTraining`,
  `file_ending`, `name` = dataset_name, `description`), `imagesTr/{case}_{XXXX}{file_ending}`
  (one int16 3-D file per channel) with `labelsTr/{case}{file_ending}` (uint8 class ids) for
  training cases `brain_001` ... `brain_{num_train:03d}`, and `imagesTs/` for test cases
  numbered from `brain_{max(11, num_train + 1):03d}` (no labels). Case `brain_NNN` is subject
  NNN of `generate_case`; see there for `shape`, `spacing` and `axcodes`. Written under a
  temporary name and renamed, so an interrupted call leaves no partial folder.

  Args:
    out_dir: folder to create; it must not exist or be empty.
    shape: RAS voxel grid `(n_LR, n_AP, n_SI)`; the files hold it permuted by `axcodes`.
    num_train: labelled cases (>= 1).
    num_test: unlabelled cases.
    seed: dataset seed; the same arguments give the same files.
    spacing: voxel size in mm along the RAS axes.
    axcodes: stored orientation, e.g. 'RAS', 'LPS', 'PIR'.
    num_channels: 1..3 (T1, T2, FLAIR).
    dataset_name: dataset.json "name".
    file_ending: '.nii.gz' or '.nii'.

  Returns:
    `out_dir` as a Path.
  """
  train_ids, test_ids = _check_nifti_options(shape, num_train, num_test, spacing, axcodes,
                                             num_channels, file_ending)
  meta = {
      "name": dataset_name,
      "description": _description(seed, shape, spacing, axcodes),
      "channel_names": {str(c): CHANNEL_NAMES[c] for c in range(num_channels)},
      "labels": {name: k for k, name in enumerate(CLASS_NAMES)},
      "numTraining": num_train,
      "file_ending": file_ending,
  }

  def image_files(sid: int, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    # nnU-Net: one 3-D file per channel, `{case}_{XXXX}`.
    return [(f"brain_{sid:03d}_{c:04d}{file_ending}", image[..., c]) for c in range(num_channels)]

  return _write_nifti_dataset(out_dir, meta, train_ids, test_ids, image_files,
                              dict(shape=shape, spacing=spacing, axcodes=axcodes,
                                   num_channels=num_channels, seed=seed), file_ending)


def write_decathlon_layout(out_dir: str | os.PathLike, *, shape: Sequence[int] = REAL_SHAPE,
                           num_train: int = 10, num_test: int = 0, seed: int = 0,
                           spacing: Sequence[float] = (1., 1., 1.), axcodes: str = "RAS",
                           num_channels: int = 2, task_name: str = "Task01_BuiltinBrain",
                           file_ending: str = ".nii.gz") -> pathlib.Path:
  """Writes synthetic brains as a Medical Segmentation Decathlon task folder.

  `out_dir` is the task folder itself (conventionally named like `task_name`); it gets MSD's
  `dataset.json` (`name` = task_name, `description`, `reference`, `licence`, `release`,
  `tensorImageSize` "4D" (or "3D" with one channel), `modality` {"0": "T1", ...}, `labels`
  {"0": "background", "1": "CSF", "2": "GM", "3": "WM"}, `numTraining`, `numTest`, `training`
  [{"image": "./imagesTr/brain_001.nii.gz", "label": "./labelsTr/brain_001.nii.gz"}, ...],
  `test` ["./imagesTs/brain_011.nii.gz", ...]), one image per case holding all channels
  (`[X, Y, Z, C]` int16; 3-D with one channel) and 3-D uint8 labels of class ids. Cases and
  numbering as in `write_nnunet_layout`; geometry options as in `generate_case`.

  Args:
    out_dir, shape, num_train, num_test, seed, spacing, axcodes, num_channels: as in
      `write_nnunet_layout`.
    task_name: dataset.json "name".
    file_ending: '.nii.gz' (as MSD ships) or '.nii'.

  Returns:
    `out_dir` as a Path.
  """
  train_ids, test_ids = _check_nifti_options(shape, num_train, num_test, spacing, axcodes,
                                             num_channels, file_ending)

  def name(sid: int) -> str:
    return f"brain_{sid:03d}{file_ending}"

  meta = {
      "name": task_name,
      "description": _description(seed, shape, spacing, axcodes),
      "reference": "medjax (synthetic data)",
      "licence": "Apache-2.0",
      "release": "1.0",
      "tensorImageSize": "4D" if num_channels > 1 else "3D",
      "modality": {str(c): CHANNEL_NAMES[c] for c in range(num_channels)},
      "labels": {str(k): c for k, c in enumerate(CLASS_NAMES)},
      "numTraining": num_train,
      "numTest": num_test,
      "training": [{"image": f"./imagesTr/{name(sid)}", "label": f"./labelsTr/{name(sid)}"}
                   for sid in train_ids],
      "test": [f"./imagesTs/{name(sid)}" for sid in test_ids],
  }

  def image_files(sid: int, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    # MSD: one file per case holding every channel (3-D with one channel).
    return [(name(sid), image if num_channels > 1 else image[..., 0])]

  return _write_nifti_dataset(out_dir, meta, train_ids, test_ids, image_files,
                              dict(shape=shape, spacing=spacing, axcodes=axcodes,
                                   num_channels=num_channels, seed=seed), file_ending)


def _write_json(path: pathlib.Path, obj: dict) -> None:
  path.write_text(json.dumps(obj, indent=2) + "\n")
