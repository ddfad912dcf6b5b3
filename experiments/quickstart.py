r"""Quickstart: no download needed. Trains a small 3D-UNet on built-in iSeg-layout data on a CPU.

It writes built-in iSeg-2017-layout data (10 labelled subjects, Analyze files, the real file names
and label values) to `data/iseg2017-builtin`, builds the TFDS dataset from it into
`data/tensorflow_datasets` (the same builder and code path as the real download), trains for a few
minutes, evaluates on the held-out subject 1 and prints per-tissue Dice:

  python -m medjax.train --config experiments/quickstart.py

It trains with nnU-Net's loss (Dice + cross-entropy), deep supervision, poly learning-rate decay
and foreground oversampling, with Adam and without augmentation (`recipes.NNUNET_ADAM_NOAUG`):
of the recipes `benchmarks/recipe.py` compares, the best within these 600 steps.
`experiments/quickstart.py:nnunet` (or `:nnunet_adam`) takes another recipe instead.
"""

import ml_collections

from medjax.configs import default
from medjax.configs import recipes


def get_config(recipe: str = "nnunet_adam_noaug") -> ml_collections.ConfigDict:
  config = default.get_config()  # the iSeg-2017 3D U-Net experiment
  config.dataset.num_modalities = 2  # T1, T2
  config.dataset.num_classes = 4  # background, CSF, GM, WM
  config.dataset.data_dir = "data/tensorflow_datasets"
  config.dataset.manual_dir = "data/iseg2017-builtin"
  config.dataset.builtin_data.enabled = True
  config.dataset.crop_size = (32, 32, 32)
  config.dataset.threshold_rule = "crop_fraction"
  config.dataset.threshold = 0.1

  config.model.base_features = 8

  config.batch_size = 2
  config.num_train_steps = 600
  config.log_every_steps = 20
  config.eval_every_steps = 600  # once, at the end: a full-size scan takes about a minute on a CPU
  config.checkpoint_every_steps = 100

  config.eval.roi_size = (64, 64, 64)
  config.eval.sw_batch_size = 2
  config.eval.overlap = 0.25
  return recipes.apply_named(config, recipe)
