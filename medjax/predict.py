r"""Segments whole scans with a trained medjax model and writes label maps in the input geometry.

One case from its channel files, or every case of a folder (an nnU-Net / Decathlon `imagesTs/`
or `imagesTr/`, or an iSeg-2017-layout folder):

  python -m medjax.predict --workdir W --input_dir DIR/imagesTs --output_dir predictions
  python -m medjax.predict --workdir W --images case_0000.nii.gz case_0001.nii.gz \
      --output_dir predictions
  python -m medjax.predict --workdir workdirs/quickstart --t1 subject-9-T1.hdr \
      --t2 subject-9-T2.hdr --output_dir predictions
  python -m medjax.predict --workdir workdirs/quickstart --input_dir data/iseg2017-builtin \
      [--subjects 1,2] --output_dir predictions [--format hdr] [--values dataset] \
      [--save_probabilities] [--which latest]

The model, its variables, its training config and its preprocessing (`preprocessing.json`:
orientation, voxel size, crop, normalisation, fitted to the training set) are restored from the
workdir (`--which` best, latest or a step). Each scan is prepared exactly as the training scans
were, segmented by Gaussian-blended sliding windows with the config's `eval.roi_size`,
`eval.overlap`, `eval.sw_batch_size` (flags override), and its class probabilities are taken back
to the scan's own voxel grid. Outputs per case, each written atomically (temporary file + rename),
with exactly the input file's shape and affine:

  <label name>.<format>          class ids 0..K-1 (or the dataset's own label values, e.g. iSeg
                                 0/10/150/250 or BraTS 0/1/2/4, with --values dataset)
  <name>-probabilities.<format>  float32 [D, H, W, K] with --save_probabilities
  <name>.png                     median axial / coronal / sagittal slices: image, truth, prediction

For nnU-Net / Decathlon inputs `<name>` is the case id and `<label name>` is `<name>` (nnU-Net's
`{case}.nii.gz`); for iSeg folders `<name>` is `subject-N`, for `--t1` the T1 file name without
its extension and a trailing `-T1`/`_T1`, and `<label name>` is `<name>-label`.
"""

import dataclasses
import functools
import pathlib
import re
import sys
from typing import Any

from absl import app
from absl import flags
from absl import logging
import nibabel as nib
import numpy as np
import tqdm

from medjax import checkpoint
from medjax import compile_cache
from medjax import evaluate
from medjax import inference
from medjax import io
from medjax import metrics
from medjax import outputs
from medjax import viz
from medjax.data import datasets
from medjax.data import iseg
from medjax.data import layouts
from medjax.data import preprocessing as preprocessing_lib

FORMATS = ("nii.gz", "nii", "hdr")
# 'iseg' is the older name of 'dataset' for iSeg-2017 models.
VALUES = ("class_ids", "dataset", "iseg")
_T1_SUFFIX_RE = re.compile(r"[-_.]?t1w?$", re.IGNORECASE)
_AFFINE_ATOL = 1e-4


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
    label_map, label_image = evaluate.load_label_map(label, num_classes=num_classes)
    others = channels[1:] + [label_image]
  else:
    others = channels[1:]
  for other in others:
    if other.data.shape != t1_image.data.shape:
      raise ValueError(f"{other.path}: shape {other.data.shape} differs from the T1 "
                       f"{t1_image.path} {t1_image.data.shape}; expected one geometry.")
    if not np.allclose(other.affine, t1_image.affine, atol=_AFFINE_ATOL):
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
  files = layouts.CaseFiles(case_id=case_id, images=paths,
                            label=None if label is None else pathlib.Path(label).expanduser())
  return _generic_case(files, names)


def _generic_case(files: layouts.CaseFiles, names: datasets.DatasetNames) -> Case:
  case = layouts.load_case(files, num_channels=len(names.channel_names),
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
  folder = pathlib.Path(input_dir).expanduser()
  if not folder.is_dir():
    raise FileNotFoundError(f"--input_dir {folder} does not exist or is not a folder; expected "
                            "a folder of images (e.g. imagesTs/) or an iSeg-2017 folder.")
  if _is_iseg_folder(folder):
    return [functools.partial(load_iseg_case, f) for f in select_subjects(input_dir, subjects)]
  if (folder / "dataset.json").is_file():
    raise ValueError(f"--input_dir {folder} is a dataset folder; pass its images folder, e.g. "
                     f"{folder / 'imagesTs'}.")
  found = {c.case_id: c for c in layouts.find_image_cases(
      folder, num_channels=len(names.channel_names))}
  chosen = list(found)
  if subjects:
    missing = [s for s in subjects if s not in found]
    if missing:
      raise ValueError(f"--subjects: cases {missing} are not in {folder} (it holds "
                       f"{sorted(found)[:10]}{' ...' if len(found) > 10 else ''}).")
    chosen = list(subjects)
  return [functools.partial(_generic_case, found[c], names) for c in chosen]


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


def preprocessing_of(workdir: str, config: Any) -> preprocessing_lib.Preprocessing:
  """The workdir's `preprocessing.json`, or for runs made before it existed the normalisation
  their config names (iSeg-2017's names)."""
  saved = preprocessing_lib.load(workdir)
  return saved if saved is not None else _config_preprocessing(config)


def _config_preprocessing(config: Any) -> preprocessing_lib.Preprocessing:
  """The normalisation alone that a config names (runs without preprocessing.json)."""
  k, c = int(config.dataset.num_classes), int(config.dataset.num_modalities)
  if (k, c) == (len(iseg.CLASS_NAMES), len(iseg.MODALITIES)):
    names = datasets.DatasetNames(iseg.MODALITIES, iseg.CLASS_NAMES, iseg.LABEL_VALUES)
  else:
    names = datasets.DatasetNames(tuple(f"channel{i}" for i in range(c)),
                                  ("background",) + tuple(f"class{i}" for i in range(1, k)),
                                  tuple(range(k)))
  clip = config.dataset.clip_percentiles
  return preprocessing_lib.Preprocessing(
      names=names, normalization=(config.dataset.normalization,) * c,
      clip_percentiles=None if clip is None else tuple(float(v) for v in clip))


def segment(model: Any, variables: Any, config: Any, image: np.ndarray, *,
            affine: np.ndarray | None = None,
            preprocessing: preprocessing_lib.Preprocessing | None = None,
            overlap: float | None = None, mode: str | None = None,
            sw_batch_size: int | None = None, tta: bool = False,
            progress: bool = False) -> np.ndarray:
  """One scan `image [D, H, W, C]` (raw, the file's voxel order) -> probabilities `[D, H, W, K]`.

  The probabilities are the softmax over the classes, or a sigmoid per output for models trained
  with a sigmoid loss or on regions (`outputs.output_activation`; `output_classes` turns
  either into class ids).

  The scan is prepared with `preprocessing` (default: the normalisation `config` names; pass
  `preprocessing_of(workdir, config)` for models trained with resampling or reorientation, and
  the scan's `affine`), segmented, and its probabilities taken back to the scan's grid.
  """
  if preprocessing is None:
    preprocessing = _config_preprocessing(config)
  if affine is None:
    if (preprocessing.orientation, preprocessing.target_spacing,
        preprocessing.crop_nonzero) != (None, None, False):
      raise ValueError("this model reorients, resamples or crops its input: pass the scan's "
                       "affine to segment(..., affine=...).")
    affine = np.eye(4)
  prepared = preprocessing.prepare(image, affine)
  probs = inference.predict_volume(
      model, variables, prepared.image, roi_size=tuple(config.eval.roi_size),
      overlap=config.eval.overlap if overlap is None else overlap,
      mode=(mode or config.eval.mode),
      sw_batch_size=sw_batch_size or config.eval.sw_batch_size,
      flip_axes=((0,), (1,), (2,)) if tta else None, progress=progress,
      activation=outputs.output_activation(config))
  return preprocessing.restore(probs, prepared.record,
                               class0_is_background=config.dataset.regions is None)


def write_outputs(case: Case, probs: np.ndarray, output_dir: str, *, fmt: str = "nii.gz",
                  values: str = "class_ids", save_probabilities: bool = False,
                  png: bool = True, label_values: tuple[int, ...] = iseg.LABEL_VALUES,
                  classes: np.ndarray | None = None) -> dict[str, str]:
  """Writes the label map (and probabilities, PNG) of one case; returns their paths.

  `classes`: the class ids `[D, H, W]` (default: the argmax of `probs`; region models pass
  `outputs.output_classes`). `values='dataset'` (or 'iseg') writes `label_values[k]` for
  class k instead of k.
  """
  out = pathlib.Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  if classes is None:
    classes = probs.argmax(-1)
  classes = np.asarray(classes).astype(np.uint8)
  label_map = classes
  if values in ("dataset", "iseg"):
    label_map = layouts.classes_to_values(classes, label_values)
  dtype = np.uint8 if int(np.max(label_values)) < 256 else np.int16
  # Keep the input file's own shape (iSeg stores [D, H, W, 1]) so the output overlays it exactly.
  extra = case.disk_shape[3:]
  written = {}
  path = out / f"{case.label_name or case.name + '-label'}.{fmt}"
  io.save_image(path, label_map.reshape(label_map.shape + extra), case.affine, dtype=dtype)
  written["label"] = str(path)
  if save_probabilities:
    path = out / f"{case.name}-probabilities.{fmt}"
    io.save_image(path, probs.astype(np.float32), case.affine)
    written["probabilities"] = str(path)
  if png:
    path = out / f"{case.name}.png"
    viz.save_comparison_png(str(path), case.image, case.label, classes, affine=case.affine,
                            spacing=case.spacing, title=case.name)
    written["png"] = str(path)
  return written


def run(workdir: str, *, output_dir: str, t1: str | None = None, t2: str | None = None,
        label: str | None = None, input_dir: str | None = None,
        subjects: list[str] | None = None, fmt: str = "nii.gz", values: str = "class_ids",
        save_probabilities: bool = False, which: str = "best", png: bool = True,
        overlap: float | None = None, mode: str | None = None,
        sw_batch_size: int | None = None, tta: bool = False,
        images: list[str] | None = None) -> list[dict[str, Any]]:
  """Restores the model of `workdir`, segments the given scans and writes their outputs.

  Give one of: `t1` (and `t2`) for an iSeg-style pair, `images` (one file per channel, or one
  4-D file) for one case of any dataset, or `input_dir` for every case of a folder.

  Returns:
    One dict per case: `name`, the written `files`, and `dice` per class when a label is known.
  """
  if fmt not in FORMATS:
    raise ValueError(f"--format {fmt!r}: expected one of {FORMATS}.")
  if values not in VALUES:
    raise ValueError(f"--values {values!r}: expected one of {VALUES}.")
  if sum(x is not None and x != [] for x in (t1, input_dir, images)) != 1:
    raise ValueError("Give either --t1 (with --t2 for two-modality models), --images (the "
                     "channel files of one case) or --input_dir.")
  if t1 is None and t2 is not None:
    raise ValueError("--t2 goes with --t1.")
  if input_dir is not None and label is not None:
    raise ValueError("--label goes with --t1 or --images, not with --input_dir.")
  # Check single inputs before the (slow) restore; folders are loaded lazily.
  if t1 is not None:
    case = load_case(t1, t2, label)
  workdir_path = checkpoint.resolve_workdir(workdir)
  config = checkpoint.load_config(workdir_path)
  preprocessing = preprocessing_of(workdir_path, config)
  names = preprocessing.names
  if t1 is not None:
    loaders = [lambda: case]
  elif images:
    case = load_images_case(list(images), label, names=names)
    loaders = [lambda: case]
  else:
    loaders = select_cases(input_dir, subjects, names)
  model, variables, config = checkpoint.restore_model(workdir_path, which=which)
  num_classes = int(config.dataset.num_classes)
  if values == "iseg" and names.label_values != iseg.LABEL_VALUES:
    raise ValueError(f"--values iseg needs an iSeg-2017 model (label values "
                     f"{iseg.LABEL_VALUES}); the checkpoint in {workdir} has label values "
                     f"{names.label_values}: use --values dataset.")
  results = []  # output_dir is created by the first write, so a failed run leaves no folder
  bar = tqdm.tqdm(loaders, desc="cases", unit="case", disable=len(loaders) < 2)
  for load in bar:
    case = load()
    image = check_modalities(case, config, workdir)
    probs = segment(model, variables, config, image, affine=case.affine,
                    preprocessing=preprocessing, overlap=overlap, mode=mode,
                    sw_batch_size=sw_batch_size, tta=tta, progress=len(loaders) < 2)
    classes = outputs.output_classes(probs, config)
    files = write_outputs(case, probs, output_dir, fmt=fmt, values=values,
                          save_probabilities=save_probabilities, png=png,
                          label_values=names.label_values, classes=classes)
    result = {"name": case.name, "files": files}
    if case.label is not None:
      dice = metrics.dice_per_class(classes, case.label, num_classes=num_classes)
      result["dice"] = dice.tolist()
    results.append(result)
    bar.write(_summary_line(result, names.class_names))
  return results


def _summary_line(result: dict[str, Any], class_names: tuple[str, ...]) -> str:
  line = f"{result['name']}: wrote {', '.join(result['files'].values())}"
  if "dice" in result:
    line += "\n  Dice " + ", ".join(f"{n} {d:.4f}" for n, d in
                                   zip(class_names[1:], result["dice"][1:]))
  return line


def define_flags() -> None:
  """Defines the command-line flags (only when run as a script, so that importing this module
  beside other entry points defines no global flags)."""
  flags.DEFINE_string("workdir", None, "Training workdir (or its checkpoints/ folder).")
  flags.DEFINE_string("t1", None, "T1 image of one scan (.nii, .nii.gz, .hdr).")
  flags.DEFINE_string("t2", None, "T2 image of the same scan (two-modality models).")
  flags.DEFINE_string("label", None, "Optional ground truth of the --t1 / --images scan (for "
                      "the PNG and a Dice printout).")
  flags.DEFINE_list("images", None, "The channel files of one case, in channel order "
                    "(nnU-Net: case_0000.nii.gz,case_0001.nii.gz; or one 4-D Decathlon file); "
                    "comma-separated or repeated.")
  flags.DEFINE_string("input_dir", None, "A folder of cases to segment: nnU-Net / Decathlon "
                      "images (e.g. imagesTs/) or an iSeg-2017-layout folder.")
  flags.DEFINE_list("subjects", None, "Cases in --input_dir (iSeg subject numbers or case ids; "
                    "default: all).")
  flags.DEFINE_string("output_dir", None, "Folder for the outputs.")
  flags.DEFINE_enum("format", "nii.gz", list(FORMATS), "Output image format.")
  flags.DEFINE_enum("values", "class_ids", list(VALUES),
                    "Label values: class ids 0..K-1, or the dataset's own ('dataset'; e.g. iSeg "
                    "0/10/150/250, BraTS 0/1/2/4; 'iseg' is the same for iSeg models).")
  flags.DEFINE_bool("save_probabilities", False,
                    "Also write per-class probabilities [D, H, W, K].")
  flags.DEFINE_string("which", "best", "Checkpoint: best, latest or a step number.")
  flags.DEFINE_bool("png", True, "Write a PNG of the median slices per subject.")
  flags.DEFINE_float("overlap", None, "Sliding-window overlap (default: the config's).")
  flags.DEFINE_enum("mode", None, list(inference.BLEND_MODES),
                    "Blending (default: the config's eval.mode).")
  flags.DEFINE_integer("sw_batch_size", None, "Windows per model call (default: the config's).")
  flags.DEFINE_bool("tta", False, "Average over flips of each spatial axis (4x the time).")
  flags.DEFINE_string("compile_cache", None, "Persistent XLA compilation cache directory "
                      "(default: $MEDJAX_COMPILE_CACHE_DIR or ~/.cache/medjax/jax_cache); "
                      "'off' to disable.")


def main(argv: list[str]) -> None:
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # orbax logs every restore step at INFO
    logging.set_verbosity(logging.WARNING)
  compile_cache.enable_from_flag(FLAGS.compile_cache, prog="medjax.predict")
  try:
    run(FLAGS.workdir, output_dir=FLAGS.output_dir, t1=FLAGS.t1, t2=FLAGS.t2,
        label=FLAGS.label, input_dir=FLAGS.input_dir, subjects=FLAGS.subjects,
        fmt=FLAGS.format, values=FLAGS.values, save_probabilities=FLAGS.save_probabilities,
        which=FLAGS.which, png=FLAGS.png, overlap=FLAGS.overlap, mode=FLAGS.mode,
        sw_batch_size=FLAGS.sw_batch_size, tta=FLAGS.tta, images=FLAGS.images)
  except (ValueError, FileNotFoundError) as e:
    print(f"medjax.predict: error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["workdir", "output_dir"])
  app.run(main)
