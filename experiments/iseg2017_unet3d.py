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
  # The TFDS dataset: iseg2017, segmentation3d (any nnU-Net / Decathlon folder), iseg2019,
  # mrbrains2018 or brats.
  config.dataset.name = "iseg2017"
  # TFDS builder config: 'full' = one example per subject, crops sampled on the fly each epoch.
  # '' = the dataset's default (segmentation3d: a config named after the dataset).
  config.dataset.builder_config = "full"
  config.dataset.data_dir = "~/tensorflow_datasets"  # where `tfds build` wrote the dataset
  # Optional: the dataset's download folder to build from when it is not built yet.
  config.dataset.manual_dir = ""
  # Optional: write built-in data to `manual_dir` first when it is missing (quickstart, tests).
  config.dataset.builtin_data = ml_collections.ConfigDict()
  config.dataset.builtin_data.enabled = False
  config.dataset.builtin_data.shape = (144, 192, 256)
  config.dataset.builtin_data.num_train = 10
  config.dataset.builtin_data.num_test = 0
  config.dataset.builtin_data.seed = 0
  # segmentation3d only: 'nnunet' or 'decathlon' layout, voxel size (mm), voxel axis codes and
  # channels (T1, T2[, FLAIR]) of the built-in data.
  config.dataset.builtin_data.layout = "nnunet"
  config.dataset.builtin_data.spacing = (1.0, 1.0, 1.0)
  config.dataset.builtin_data.axcodes = "RAS"
  config.dataset.builtin_data.num_channels = 2
  # Input channels and classes; None = as the dataset declares them (a value that disagrees
  # with the dataset is an error).
  config.dataset.num_modalities = ml_collections.FieldReference(2, field_type=int)  # T1, T2
  config.dataset.num_classes = ml_collections.FieldReference(4, field_type=int)  # bg, CSF, GM, WM
  # Validation: None = the dataset's own `eval.split` (iSeg-2017: subject 1); k = fold k of a
  # seeded `num_folds`-fold split of the training cases by case id (nnU-Net's).
  config.dataset.fold = ml_collections.FieldReference(None, field_type=int)
  config.dataset.num_folds = 5
  # Geometry: voxel axes reordered to these codes ('none' = the file's order), voxel size
  # ('none' = each scan's own; 'median' = the training set's median, as nnU-Net; 'nnunet' = the
  # median with nnU-Net's anisotropy rule; or 'x,y,z' in mm), crop to the non-zero box.
  config.dataset.orientation = "none"
  config.dataset.target_spacing = "none"
  config.dataset.crop_nonzero = False
  config.dataset.resample_image_order = 3  # spline order of image resampling
  config.dataset.resample_label = "linear_onehot"  # or 'nearest'
  config.dataset.crop_size = (64, 64, 64)
  config.dataset.threshold = 0.1
  # 'subject_foreground': crop foreground / the subject's whole foreground >= threshold
  # (MedicalZoo's rule); 'crop_fraction': non-background fraction of the crop > threshold.
  config.dataset.threshold_rule = "subject_foreground"
  # Per-channel normalisation: full_volume_mean, max_min, mean, max, brats, none (MedicalZoo
  # names), ct (nnU-Net's CT scheme, training-set statistics), 'auto' (ct for channels named CT,
  # else full_volume_mean), or one mode per channel separated by commas.
  config.dataset.normalization = "full_volume_mean"
  config.dataset.clip_percentiles = (0.1, 99.8)
  config.dataset.num_workers = 0  # grain worker processes for the train iterator
  config.dataset.num_threads = 2  # grain reader threads
  config.dataset.prefetch = 2  # batches prefetched by grain

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
