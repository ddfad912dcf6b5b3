r"""The MedicalZoo iSeg-2017 experiment with the Çiçek et al. 3D U-Net, on the TFDS dataset.

Seed experiment: 2 modalities (T1, T2), 4 classes, 64^3 sub-volumes that hold at least 10 % of
the subject's foreground, subject 1 held out for validation, SGD lr 1e-3 (momentum 0.5),
weight decay 1e-8, batch size 1, soft Dice loss.

First build the dataset from your iSeg-2017 download (see README, "Real data"), then:

  python -m medjax.train --config experiments/iseg2017_unet3d.py --workdir workdirs/iseg_unet3d

Override any key from the command line, e.g. `--config.batch_size=4 --config.model.base_features=16`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "iseg2017"
  # TFDS builder config: 'full' = one example per subject, crops sampled on the fly each epoch.
  config.dataset.builder_config = "full"
  config.dataset.data_dir = "~/tensorflow_datasets"  # where `tfds build` wrote the dataset
  # Optional: an iSeg-2017 folder to build from when the dataset is not built yet.
  config.dataset.manual_dir = ""
  # Optional: write built-in iSeg-layout data to `manual_dir` first when it is missing (quickstart).
  config.dataset.builtin_data = ml_collections.ConfigDict()
  config.dataset.builtin_data.enabled = False
  config.dataset.builtin_data.shape = (144, 192, 256)
  config.dataset.builtin_data.num_train = 10
  config.dataset.builtin_data.seed = 0
  config.dataset.num_modalities = 2  # T1, T2
  config.dataset.num_classes = 4  # background, CSF, GM, WM
  config.dataset.crop_size = (64, 64, 64)
  config.dataset.threshold = 0.1
  # 'subject_foreground': crop foreground / the subject's whole foreground >= threshold
  # (MedicalZoo's rule); 'crop_fraction': non-background fraction of the crop > threshold.
  config.dataset.threshold_rule = "subject_foreground"
  # Per-modality normalisation (MedicalZoo names): full_volume_mean, max_min, mean, max, brats, none.
  config.dataset.normalization = "full_volume_mean"
  config.dataset.clip_percentiles = (0.1, 99.8)
  config.dataset.num_workers = 0  # grain worker processes for the train iterator

  config.model = ml_collections.ConfigDict()
  config.model.name = "UNET3D"
  # Width of the first level; None = the model's own default (UNET3D 32 as in the paper, VNET 16).
  config.model.base_features = ml_collections.FieldReference(None, field_type=int)
  config.model.dtype = "float32"

  config.loss = ml_collections.ConfigDict()
  config.loss.name = "dice"
  config.loss.include_background = True

  config.augmentation = False

  config.optimizer = "sgd"  # sgd | adam | rmsprop
  config.learning_rate = 1e-3
  config.momentum = 0.5
  config.weight_decay = 1e-8
  config.lr_schedule = "constant"  # constant | cosine | warmup_cosine
  config.warmup_steps = 0

  config.batch_size = 1  # global, split across devices
  config.num_train_steps = 20_000

  config.log_every_steps = 50
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 3

  config.eval = ml_collections.ConfigDict()
  config.eval.split = "validation"
  config.eval.roi_size = (64, 64, 64)
  config.eval.sw_batch_size = 1
  config.eval.overlap = 0.25
  config.eval.mode = "gaussian"
  return config
