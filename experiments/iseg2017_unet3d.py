r"""The iSeg-2017 experiment with the Çiçek et al. 3D U-Net, on the TFDS dataset.

The seed experiment, as MedicalZoo's README and paper text state it: 2 modalities (T1, T2),
4 classes, 64^3 sub-volumes that hold at least 10 % of the subject's foreground, subject 1 held
out for validation, SGD lr 1e-3 (momentum 0.5), weight decay 1e-8, batch size 1, soft Dice loss
(softmax, MONAI's form). MedicalZoo's *code* differs in several settings (weight decay 1e-10,
a sigmoid Dice with squared denominators pooled over the batch, its own validation split...):
`experiments/iseg2017_medicalzoo.py` follows the code, and docs/medicalzoo.md lists every
difference.

First build the dataset from your iSeg-2017 download (see README, "Real data"), then:

  python -m medjax.train --config experiments/iseg2017_unet3d.py --workdir workdirs/iseg_unet3d

Override any key of medjax/configs/default.py from the command line, e.g.
`--config.batch_size=4 --config.model.base_features=16`.

`experiments/iseg2017_unet3d.py:nnunet` trains it with nnU-Net v2's recipe instead
(medjax/configs/recipes.py: Dice + CE, deep supervision, SGD Nesterov 0.99 with poly decay,
foreground oversampling, nnU-Net's augmentation); `:nnunet_adam` the same with Adam.
"""

import ml_collections

from medjax.configs import default
from medjax.configs import recipes


def get_config(recipe: str = "") -> ml_collections.ConfigDict:
  config = default.get_config()  # the seed experiment's values, every key declared
  config.dataset.name = "iseg2017"
  config.dataset.builder_config = "full"
  config.dataset.num_modalities = 2  # T1, T2
  config.dataset.num_classes = 4  # background, CSF, GM, WM
  config.model.name = "UNET3D"
  config.loss.name = "dice"
  return recipes.apply_named(config, recipe)
