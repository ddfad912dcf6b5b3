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
  python -m medjax.predict --workdir W/fold_0 --workdir W/fold_1 ... --tta \
      --uncertainty entropy --postprocessing W --input_dir DIR/imagesTs --output_dir ensemble
  python -m medjax.predict --workdir W --input_dir DIR/imagesTs --output_dir predictions \
      --num_shards=2 --shard_index=0   # and --shard_index=1 on another host or GPU

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
  <name>-uncertainty.<format>    float32 [D, H, W] with --uncertainty (entropy or variance)
  <name>.png                     median axial / coronal / sagittal slices: image, truth, prediction

Several --workdir make an ensemble: each model prepares the scan with its own preprocessing,
and the probabilities of all models (and, with --tta, of their flips) are averaged on the scan's
grid. --postprocessing applies the largest-connected-component filter that `medjax.crossval`
chose on the validation folds.

Each batch of sliding windows is spread over all of this process's devices. --num_shards=N
--shard_index=I (or, without them, `MEDJAX_NUM_PROCESSES` and `MEDJAX_PROCESS_ID`) makes this
process segment its share of a folder: the cases whose rank in the sorted case names is I
modulo N. N such processes, with I = 0..N-1 on one or several hosts, write together exactly
what one process writes; they do not communicate, and a failed shard is rerun on its own
(`medjax.prediction.shards`).

For nnU-Net / Decathlon inputs `<name>` is the case id and `<label name>` is `<name>` (nnU-Net's
`{case}.nii.gz`); for iSeg folders `<name>` is `subject-N`, for `--t1` the T1 file name without
its extension and a trailing `-T1`/`_T1`, and `<label name>` is `<name>-label`.
"""

from __future__ import annotations

from absl import app
from absl import flags
from absl import logging

from medjax import cli_errors
from medjax import compile_cache
from medjax import inference
from medjax import prediction
# Scripts written before the library moved to `medjax.prediction` call these as
# `predict.load_case`, `predict.segment`, `predict.preprocessing_of` and `predict.run`.
from medjax.prediction import load_case
from medjax.prediction import preprocessing_of
from medjax.prediction import run
from medjax.prediction import segment

__all__ = ["define_flags", "load_case", "main", "preprocessing_of", "run", "segment"]


def define_flags() -> None:
  """Defines the command-line flags (only when run as a script, so that importing this module
  beside other entry points defines no global flags)."""
  flags.DEFINE_multi_string("workdir", None, "Training workdir (or its checkpoints/ folder); "
                            "repeat it for an ensemble (e.g. the cross-validation folds) whose "
                            "probabilities are averaged.")
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
  flags.DEFINE_enum("format", "nii.gz", list(prediction.FORMATS), "Output image format.")
  flags.DEFINE_enum("values", "class_ids", list(prediction.VALUES),
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
  flags.DEFINE_enum("uncertainty", None, list(prediction.UNCERTAINTIES),
                    "Also write <name>-uncertainty.<format>: the predictive 'entropy' of the "
                    "averaged probabilities, or the 'variance' across the members (flips with "
                    "--tta, models with several --workdir).")
  flags.DEFINE_string("postprocessing", None, "postprocessing.json written by "
                      "`python -m medjax.crossval` (or its folder): keep only the largest "
                      "connected component of the classes it lists.")
  flags.DEFINE_list("keep_largest_component", None, "Class ids whose largest connected "
                    "component alone is kept (the rest of the class becomes background).")
  flags.DEFINE_integer("num_shards", None, "Split the cases among this many processes (hosts or "
                       "GPUs), each segmenting its own share; default: $MEDJAX_NUM_PROCESSES, "
                       "else 1.")
  flags.DEFINE_integer("shard_index", None, "This process's share, 0..num_shards-1 (the cases "
                       "whose rank in the sorted case names is shard_index modulo num_shards); "
                       "default: $MEDJAX_PROCESS_ID, else 0.")
  flags.DEFINE_string("compile_cache", None, "Persistent XLA compilation cache directory "
                      "(default: $MEDJAX_COMPILE_CACHE_DIR or ~/.cache/medjax/jax_cache); "
                      "'off' to disable.")


def main(argv: list[str]) -> None:
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  cli_errors.no_positional_arguments(argv)
  if not FLAGS["verbosity"].present:  # orbax logs every restore step at INFO
    logging.set_verbosity(logging.WARNING)
  compile_cache.enable_from_flag(FLAGS.compile_cache, prog="medjax.predict")
  with cli_errors.exit_on_error("medjax.predict"):
    prediction.run(FLAGS.workdir, output_dir=FLAGS.output_dir, t1=FLAGS.t1, t2=FLAGS.t2,
                   label=FLAGS.label, input_dir=FLAGS.input_dir, subjects=FLAGS.subjects,
                   fmt=FLAGS.format, values=FLAGS.values,
                   save_probabilities=FLAGS.save_probabilities, which=FLAGS.which,
                   png=FLAGS.png, overlap=FLAGS.overlap, mode=FLAGS.mode,
                   sw_batch_size=FLAGS.sw_batch_size, tta=FLAGS.tta, images=FLAGS.images,
                   uncertainty=FLAGS.uncertainty, postprocessing=FLAGS.postprocessing,
                   keep_largest_component=cli_errors.int_list(
                       FLAGS.keep_largest_component, "keep_largest_component",
                       "class ids, e.g. 1,2"),
                   num_shards=FLAGS.num_shards, shard_index=FLAGS.shard_index)


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["workdir", "output_dir"])
  app.run(main)
