r"""Scores predicted label maps against ground truth: Dice, HD95 and ASSD (mm) per class and region.

  python -m medjax.evaluate --pred predictions/ --label iSeg-2017-Training/ [--output_dir O]
  python -m medjax.evaluate --pred subject-9-label.nii.gz --label subject-9-label.hdr
  python -m medjax.evaluate --pred O --label Dataset001_Brain/labelsTr --workdir W
  python -m medjax.evaluate --pred O --label Task01_BrainTumour/labelsTr \
      --dataset_json Task01_BrainTumour/dataset.json [--values class_ids|dataset|auto]

Matching. `--pred` and `--label` are two files, or two folders whose label maps are matched by
case: `subject-N` in the file name, else the file name without its ending and without
`-label`/`-seg`/`-pred` suffixes (so `{case}.nii.gz` pairs with `{case}.nii.gz`, and
`subject-1-label.hdr` with `subject-1.nii.gz`). Which image files (`.nii`, `.nii.gz`, `.hdr`) of a
folder (and of its iSeg-2017-Training/Testing subfolders, if any) are label maps:

* iSeg style: when some file names contain `label`, `seg` or `pred`, only those files (so the
  T1/T2 images beside them are skipped);
* nnU-Net / Decathlon style: in a `labelsTr/` or `labelsTs/` folder, or when no file name carries
  those words (`medjax.predict`'s `{case}.nii.gz`), every image file.

Always skipped: `-probabilities` files, hidden files (macOS `._*`) and iSeg's
`subject-N-T1`/`-T2` images.

Classes. The class names, the on-disk value of each class and the evaluation regions come from
`--workdir` (its `preprocessing.json`, written by medjax.train; an older workdir's `config.json`
gives only `dataset.num_classes`), or from `--dataset_json` (an nnU-Net v2 or Decathlon
dataset.json; nnU-Net's region-based labels such as `"whole tumor": [1, 2, 3]` become regions),
else from `--num_classes` (4 classes: iSeg's names and values 0/10/150/250).

Label values. A label map may hold class ids 0..K-1 or the dataset's label values (BraTS
0/1/2/4, iSeg 0/10/150/250), each file read on its own. `--values` says how the predictions hold
them (as `medjax.predict --values` wrote them):

* `class_ids`: every value must be a class id; `dataset`: every value must be a dataset value;
* `auto` (default): dataset values when every value is a dataset value and some value is not a
  class id (BraTS 4, iSeg 10), else class ids. A map whose values are all both, e.g. a BraTS
  prediction holding only {0, 1, 2}, is read as class ids; the two readings of it differ only
  when the dataset's values are not 0, 1, 2, ... in order (Decathlon labels such as
  {"0", "2", "5"}), and then a warning says which one was taken.

The ground truth is always read as `auto`, except that a map valid both ways is read as dataset
values (how dataset folders store labels). A map fitting neither convention is an error.

Regions. Each region (a union of classes, e.g. BraTS's whole tumour WT = (1, 2, 3), tumour core
TC = (1, 3), enhancing tumour ET = (3,) as class ids) is scored as one binary mask with the same
metrics, in rows named after the region (`NAME (region)` if a class has that name) after the class
rows.

Distances use the ground truth's voxel spacing. The table is printed and saved as `metrics.csv`
and `metrics.json` in `--output_dir` (default: the prediction folder, or the folder of the
prediction file). Metric conventions (surfaces, percentile, empty masks) are in
`medjax/metrics.py`; in the JSON file nan is written as null and inf as "inf".
"""

from __future__ import annotations

from absl import app
from absl import flags

from medjax import cli_errors
from medjax import evaluation
from medjax import labels


def define_flags() -> None:
  """Defines the command-line flags (only when run as a script, so that importing this module
  beside other entry points defines no global flags)."""
  flags.DEFINE_string("pred", None, "Predicted label map, or a folder of them.")
  flags.DEFINE_string("label", None, "Ground-truth label map, or a folder of them.")
  flags.DEFINE_string("output_dir", None,
                      "Where metrics.csv and metrics.json go (default: beside the predictions).")
  flags.DEFINE_integer("num_classes", 4, "Number of classes, background included (without "
                       "--workdir or --dataset_json).")
  flags.DEFINE_bool("include_background", False, "Also score class 0 (background).")
  flags.DEFINE_float("percentile", 95.0, "Hausdorff distance percentile.")
  flags.DEFINE_float("nsd_tolerance", None, "Also the normalised surface Dice (Nikolov et al.): "
                     "the fraction of both surfaces within this distance (mm) of the other.")
  flags.DEFINE_string("workdir", None, "Training workdir: class names, label values and regions "
                      "from its preprocessing.json (or config.json's dataset.num_classes).")
  flags.DEFINE_string("dataset_json", None, "An nnU-Net v2 or Decathlon dataset.json (or its "
                      "folder): class names, label values and regions from its labels.")
  flags.DEFINE_enum("values", "auto", list(labels.VALUES),
                    "How the predictions hold their classes: class ids, the dataset's label "
                    "values, or auto (dataset values when some value is not a class id).")


def main(argv: list[str]) -> None:
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  cli_errors.no_positional_arguments(argv)
  num_classes = FLAGS.num_classes if FLAGS["num_classes"].present else None
  with cli_errors.exit_on_error("medjax.evaluate"):
    evaluation.run(FLAGS.pred, FLAGS.label, output_dir=FLAGS.output_dir,
                   num_classes=num_classes, include_background=FLAGS.include_background,
                   percentile=FLAGS.percentile, workdir=FLAGS.workdir,
                   dataset_json=FLAGS.dataset_json, values=FLAGS.values,
                   nsd_tolerance=FLAGS.nsd_tolerance)


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["pred", "label"])
  app.run(main)
