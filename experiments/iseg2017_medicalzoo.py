r"""iSeg-2017 as MedicalZoo's *code* trains it, in medjax's config keys.

`experiments/iseg2017_unet3d.py` is the seed experiment as MedicalZoo's README and paper text
describe it; this file follows what MedicalZoo-pytorch's code does instead: the defaults of
`examples/train_iseg2017_new.py` and what they reach (lib/medzoo/__init__.py, lib/losses3D,
lib/medloaders, lib/train/trainer.py), read at commit 8f40dab. docs/medicalzoo.md compares the
three setting by setting, with file:line references, and lists what medjax cannot express yet:
chiefly its per-epoch validation on 128 random crops, where medjax validates on whole scans with
a sliding window, and its crops drawn once for the whole run. Validation is MedicalZoo's:
subjects 8 and 9 (`dataset.validation_cases`).

Build the `full` config of the TFDS dataset from your iSeg-2017 download (see README, "Real
data"), then:

  python -m medjax.train --config experiments/iseg2017_medicalzoo.py --workdir workdirs/iseg_mz
"""

import ml_collections

from medjax.configs import default

# MedicalZoo's iSeg-2017 run: 1024 crops, batch 4 -> 256 steps per epoch, epochs 1..199
# (`range(1, nEpochs)` with nEpochs = 200).
_STEPS_PER_EPOCH = 1024 // 4
_EPOCHS = 200 - 1


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.seed = 1777777  # train_iseg2017_new.py:13 (torch and numpy seeds there)

  # Data. MedicalZoo sorts the 10 labelled subjects as text (1, 10, 2, ..., 9) and validates
  # on the last 20 %: subjects 8 and 9; the other eight train. 64^3 crops holding >= 10 % of
  # their subject's foreground; each channel clipped to its (0.1, 99.8) percentiles, then
  # z-scored with the whole volume's mean and std. MedicalZoo draws its 1024 crops once and
  # reuses them every epoch; medjax's `full` config draws fresh crops every epoch (its
  # `subvolumes` configs, drawn once, keep iSeg-2017's validation subject 1).
  config.dataset.name = "iseg2017"
  config.dataset.builder_config = "full"
  config.dataset.num_modalities = 2  # T1, T2 (inChannels = inModalities = 2)
  config.dataset.num_classes = 4  # background, CSF, GM, WM
  config.dataset.crop_size = (64, 64, 64)
  config.dataset.threshold = 0.1
  config.dataset.threshold_rule = "subject_foreground"
  config.dataset.normalization = "full_volume_mean"
  config.dataset.clip_percentiles = (0.1, 99.8)
  config.dataset.validation_cases = ("subject-8", "subject-9")

  # Model: MedicalZoo's default `VNET` = VNet(elu=False): PReLU, 16 base channels, 4 stages,
  # channel dropout 0.5, its 5x5x5 + 1x1x1 output block.
  config.model.name = "VNET"
  config.model.base_features = 16
  config.model.depth = 4
  config.model.activation = "prelu"
  config.model.dropout_rate = 0.5
  config.model.paper_output_block = False

  # Loss: DiceLoss(classes=4) -- sigmoid per channel, squared denominator, sums pooled over the
  # batch, background kept, no numerator smoothing; the denominator is clamped to >= 1e-6 there
  # (here 1e-6 is added, a relative difference below 1e-6 for 64^3 crops).
  config.loss.name = "dice"
  config.loss.softmax = False
  config.loss.sigmoid = True
  config.loss.squared_pred = True
  config.loss.batch = True
  config.loss.include_background = True
  config.loss.smooth_nr = 0.0
  config.loss.smooth_dr = 1e-6

  # No augmentation (`--augmentation` defaults to False).
  config.augmentation.enabled = False

  # Optimiser: SGD lr 1e-2, momentum 0.5, weight decay 1e-10 on every parameter, no schedule.
  config.optimizer = "sgd"
  config.learning_rate = 1e-2
  config.momentum = 0.5
  config.weight_decay = 1e-10
  config.weight_decay_mask = "all"
  config.lr_schedule = "constant"
  config.warmup_steps = 0

  config.batch_size = 4
  config.num_train_steps = _EPOCHS * _STEPS_PER_EPOCH  # 50,944
  config.log_every_steps = 50  # terminal_show_freq
  config.eval_every_steps = _STEPS_PER_EPOCH  # MedicalZoo validates after every epoch
  config.checkpoint_every_steps = _STEPS_PER_EPOCH

  config.eval.split = "validation"
  config.eval.roi_size = (64, 64, 64)
  return config
