r"""The 3D U-Net on any dataset in the nnU-Net v2 raw or Medical Segmentation Decathlon layout.

Point it at the dataset's folder (the one holding dataset.json); it is built as the TFDS dataset
`segmentation3d` on first use, and the input channels and classes come from its dataset.json:

  python -m medjax.train --config experiments/decathlon_unet3d.py \
      --config.dataset.manual_dir=~/data/Task04_Hippocampus --workdir workdirs/hippocampus

Preprocessing follows nnU-Net's defaults: voxel axes to RAS, resampling to the training set's
median voxel size, a crop to the non-zero box, z-score normalisation per channel (nnU-Net's CT
scheme for channels named CT). Validation is fold `dataset.fold` (default 0) of a seeded 5-fold
split of the training cases by case id (`--config.dataset.fold=k`). Everything else is the
default config's (medjax/configs/default.py); override any key, e.g.
`--config.dataset.crop_size='(96,96,96)' --config.optimizer=adam`.

No download: `--config.dataset.builtin_data.enabled=True` with a manual_dir that does not exist
yet writes built-in brains there first (`builtin_data.layout`, `.spacing`, `.axcodes`,
`.num_channels`).

`experiments/decathlon_unet3d.py:nnunet` trains with nnU-Net v2's recipe (medjax/configs/recipes.py:
Dice + CE, deep supervision, SGD Nesterov 0.99 with poly decay, foreground oversampling,
nnU-Net's augmentation); `:nnunet_adam` the same with Adam; add `--config.plan.enabled=True` for
nnU-Net's patch and batch planning.
"""

import ml_collections

from medjax.configs import default
from medjax.configs import recipes


def get_config(recipe: str = "") -> ml_collections.ConfigDict:
  config = default.get_config()
  config.dataset.name = "segmentation3d"
  config.dataset.builder_config = ""  # a config named after the dataset in manual_dir
  config.dataset.num_modalities = None  # from dataset.json
  config.dataset.num_classes = None
  config.dataset.fold = 0
  config.dataset.orientation = "RAS"
  config.dataset.target_spacing = "median"
  config.dataset.crop_nonzero = True
  config.dataset.normalization = "auto"
  config.dataset.threshold_rule = "crop_fraction"
  config.dataset.threshold = 0.0
  return recipes.apply_named(config, recipe)
