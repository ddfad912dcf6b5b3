r"""K-fold cross-validation by case: trains every fold, validates it, summarises all of them.

  python -m medjax.crossval --config experiments/iseg2017_unet3d.py --workdir workdirs/cv \
      [--folds 0,1] [--tta] [--config.key=value ...]

Fold k trains in `<workdir>/fold_k` with `--config.dataset.fold=k` of `config.dataset.num_folds`
(5 by default; nnU-Net's seeded split by case id), exactly as `python -m medjax.train` would.
Rerunning the same command resumes: an interrupted fold continues from its latest checkpoint and
a validated fold is skipped. Each fold's validation cases are segmented with its best
checkpoint and scored (Dice, HD95, ASSD per class); when every fold is validated, the
largest-connected-component post-processing is chosen per class on all folds together
(`postprocessing.json`) and a summary with the mean and standard deviation over the folds is
printed and written (`crossval.json`). See `medjax.evaluation.crossval`.

Then segment new scans with the ensemble of the folds:

  python -m medjax.predict --workdir workdirs/cv/fold_0 ... --workdir workdirs/cv/fold_4 \
      --postprocessing workdirs/cv --tta --input_dir DIR --output_dir predictions
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from medjax import cli_errors
from medjax import compile_cache
from medjax.configs import cli
from medjax.evaluation import crossval

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to an experiment config file (experiments/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Cross-validation folder: fold_k/ per fold, postprocessing.json, "
    "crossval.json (default: workdirs/<config name>-crossval).")
_FOLDS = flags.DEFINE_list("folds", None, "Folds to run now, e.g. 0,1 (default: all); the "
                           "summary is written once every fold is validated.")
_WHICH = flags.DEFINE_string("which", "best", "Checkpoint each fold validates with: best, "
                             "latest or a step.")
_TTA = flags.DEFINE_bool("tta", False, "Validate with mirroring test-time augmentation.")
_COMPILE_CACHE = flags.DEFINE_string(
    "compile_cache", None, "Persistent XLA compilation cache directory (default: "
    "$MEDJAX_COMPILE_CACHE_DIR or ~/.cache/medjax/jax_cache); 'off' to disable.")


def main(argv: list[str]) -> None:
  cli_errors.no_positional_arguments(argv)
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  compile_cache.enable_from_flag(_COMPILE_CACHE.value, prog="medjax.crossval")
  config_name = os.path.splitext(os.path.basename(
      flags.FLAGS["config"].config_filename.split(":")[0]))[0]
  root = _WORKDIR.value or os.path.join("workdirs", f"{config_name}-crossval")
  try:
    with cli_errors.exit_on_error("medjax.crossval", (ValueError, OSError, FloatingPointError)):
      crossval.run(_CONFIG.value, root, folds=cli_errors.int_list(_FOLDS.value, "folds", "fold numbers, e.g. 0,1"), which=_WHICH.value,
                   tta=_TTA.value, log=lambda line: print(line, flush=True))
  except KeyboardInterrupt as e:
    print(str(e) or "Interrupted.", file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, prog="medjax.crossval"))
