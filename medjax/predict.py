r"""Segments whole scans with a trained medjax model and writes label maps in the input geometry.

One subject from its files, or every subject of an iSeg-2017-layout folder:

  python -m medjax.predict --workdir workdirs/quickstart --t1 subject-9-T1.hdr \
      --t2 subject-9-T2.hdr --output_dir predictions
  python -m medjax.predict --workdir workdirs/quickstart --input_dir data/iseg2017-builtin \
      [--subjects 1,2] --output_dir predictions [--format hdr] [--values iseg] \
      [--save_probabilities] [--which latest]

The model, its variables and its training config are restored from the workdir (`--which` best,
latest or a step). Each scan is normalised exactly as in training (the saved
`config.dataset.normalization` and `clip_percentiles`) and segmented by Gaussian-blended sliding
windows with the config's `eval.roi_size`, `eval.overlap`, `eval.sw_batch_size` (flags override).
Outputs per subject, each written atomically (temporary file + rename):

  <stem>-label.<format>          class ids 0..K-1 (or iSeg values 0/10/150/250 with
                                 --values iseg), same shape and affine as the input T1
  <stem>-probabilities.<format>  float32 [D, H, W, K] with --save_probabilities
  <stem>.png                     median axial / coronal / sagittal slices: T1, truth, prediction

`<stem>` is `subject-N` for iSeg folders, else the T1 file name without its extension and a
trailing `-T1`/`_T1`.
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
from medjax import viz
from medjax.data import iseg
from medjax.data import normalize as normalize_lib

FORMATS = ("nii.gz", "nii", "hdr")
VALUES = ("class_ids", "iseg")
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
  """
  name: str
  image: np.ndarray
  label: np.ndarray | None
  affine: np.ndarray
  spacing: tuple[float, float, float]
  disk_shape: tuple[int, ...]


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


def check_modalities(case: Case, config: Any, workdir: str) -> np.ndarray:
  """The image channels the checkpoint expects; raises when the scan has a different count."""
  expected = int(config.dataset.get("num_modalities", 2))
  have = case.image.shape[-1]
  if have != expected:
    names = ", ".join(iseg.MODALITIES[:expected]) if expected <= 2 else f"{expected} images"
    raise ValueError(
        f"{case.name}: {have} modalit{'y' if have == 1 else 'ies'} given, but the checkpoint in "
        f"{workdir} was trained on {expected} ({names}); pass "
        f"{'--t1 and --t2' if expected == 2 else '--t1 only' if expected == 1 else 'them'}.")
  return case.image


def segment(model: Any, variables: Any, config: Any, image: np.ndarray, *,
            overlap: float | None = None, mode: str | None = None,
            sw_batch_size: int | None = None, tta: bool = False,
            progress: bool = False) -> np.ndarray:
  """Normalises `image [D, H, W, C]` as in training -> probabilities `[D, H, W, K]`."""
  normalized = normalize_lib.normalize(
      image, config.dataset.normalization,
      clip_percentiles=tuple(config.dataset.get("clip_percentiles", (0.1, 99.8))))
  return inference.predict_volume(
      model, variables, normalized, roi_size=tuple(config.eval.roi_size),
      overlap=config.eval.overlap if overlap is None else overlap,
      mode=(mode or config.eval.get("mode", "gaussian")),
      sw_batch_size=sw_batch_size or config.eval.sw_batch_size,
      flip_axes=((0,), (1,), (2,)) if tta else None, progress=progress)


def write_outputs(case: Case, probs: np.ndarray, output_dir: str, *, fmt: str = "nii.gz",
                  values: str = "class_ids", save_probabilities: bool = False,
                  png: bool = True) -> dict[str, str]:
  """Writes the label map (and probabilities, PNG) of one case; returns their paths."""
  out = pathlib.Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  classes = probs.argmax(-1).astype(np.uint8)
  label_map = iseg.classes_to_values(classes) if values == "iseg" else classes
  # Keep the input file's own shape (iSeg stores [D, H, W, 1]) so the output overlays it exactly.
  extra = case.disk_shape[3:]
  written = {}
  path = out / f"{case.name}-label.{fmt}"
  io.save_image(path, label_map.reshape(label_map.shape + extra), case.affine, dtype=np.uint8)
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
        sw_batch_size: int | None = None, tta: bool = False) -> list[dict[str, Any]]:
  """Restores the model of `workdir`, segments the given scans and writes their outputs.

  Returns:
    One dict per case: `name`, the written `files`, and `dice` per class when a label is known.
  """
  if fmt not in FORMATS:
    raise ValueError(f"--format {fmt!r}: expected one of {FORMATS}.")
  if values not in VALUES:
    raise ValueError(f"--values {values!r}: expected one of {VALUES}.")
  if (t1 is None) == (input_dir is None):
    raise ValueError("Give either --t1 (with --t2 for two-modality models) or --input_dir.")
  if input_dir is not None and (t2 is not None or label is not None):
    raise ValueError("--t2/--label go with --t1, not with --input_dir.")
  # Check the inputs before the (slow) restore; single scans are loaded now, folders lazily.
  if t1 is not None:
    case = load_case(t1, t2, label)
    loaders = [lambda: case]
  else:
    loaders = [functools.partial(load_iseg_case, f) for f in select_subjects(input_dir, subjects)]
  model, variables, config = checkpoint.restore_model(workdir, which=which)
  num_classes = int(config.dataset.num_classes)
  if values == "iseg" and num_classes != len(iseg.LABEL_VALUES):
    raise ValueError(f"--values iseg needs a {len(iseg.LABEL_VALUES)}-class model; the "
                     f"checkpoint in {workdir} has {num_classes} classes.")
  results = []  # output_dir is created by the first write, so a failed run leaves no folder
  bar = tqdm.tqdm(loaders, desc="subjects", unit="subject", disable=len(loaders) < 2)
  for load in bar:
    case = load()
    image = check_modalities(case, config, workdir)
    probs = segment(model, variables, config, image, overlap=overlap, mode=mode,
                    sw_batch_size=sw_batch_size, tta=tta, progress=len(loaders) < 2)
    files = write_outputs(case, probs, output_dir, fmt=fmt, values=values,
                          save_probabilities=save_probabilities, png=png)
    result = {"name": case.name, "files": files}
    if case.label is not None:
      dice = metrics.dice_per_class(probs.argmax(-1), case.label, num_classes=num_classes)
      result["dice"] = dice.tolist()
    results.append(result)
    bar.write(_summary_line(result, num_classes))
  return results


def _summary_line(result: dict[str, Any], num_classes: int) -> str:
  line = f"{result['name']}: wrote {', '.join(result['files'].values())}"
  if "dice" in result:
    names = evaluate.class_names(num_classes)
    line += "\n  Dice " + ", ".join(f"{n} {d:.4f}" for n, d in
                                   zip(names[1:], result["dice"][1:]))
  return line


def define_flags() -> None:
  """Defines the command-line flags (only when run as a script, so that importing this module
  beside other entry points defines no global flags)."""
  flags.DEFINE_string("workdir", None, "Training workdir (or its checkpoints/ folder).")
  flags.DEFINE_string("t1", None, "T1 image of one scan (.nii, .nii.gz, .hdr).")
  flags.DEFINE_string("t2", None, "T2 image of the same scan (two-modality models).")
  flags.DEFINE_string("label", None,
                      "Optional ground truth of the --t1 scan (for the PNG and a Dice printout).")
  flags.DEFINE_string("input_dir", None, "An iSeg-2017-layout folder to segment.")
  flags.DEFINE_list("subjects", None, "Subject numbers in --input_dir (default: all).")
  flags.DEFINE_string("output_dir", None, "Folder for the outputs.")
  flags.DEFINE_enum("format", "nii.gz", list(FORMATS), "Output image format.")
  flags.DEFINE_enum("values", "class_ids", list(VALUES),
                    "Label values: class ids 0..K-1, or iSeg's 0/10/150/250.")
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
        sw_batch_size=FLAGS.sw_batch_size, tta=FLAGS.tta)
  except (ValueError, FileNotFoundError) as e:
    print(f"medjax.predict: error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["workdir", "output_dir"])
  app.run(main)
