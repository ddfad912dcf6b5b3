r"""The default config: every key medjax's training, evaluation and prediction read, typed.

Experiments (`experiments/*.py`) start from `get_config()` and override what differs; the code
reads `config.<key>` and never a default of its own, so every key here can be set from the
command line (`--config.key=value`; `--config.key=None` for the keys whose comment allows None).
The values are those of the seed experiment, the Çiçek et al. 3D U-Net on iSeg-2017
(`experiments/iseg2017_unet3d.py`).

A key that may be None is a typed `FieldReference`, so that the command line parses its value
(`--config.model.base_features=16`) instead of refusing a None-typed field.
"""

import ml_collections

from medjax import augment


def _optional(field_type: type, value=None) -> ml_collections.FieldReference:
  """A key that may be None, typed so the command line can set it."""
  return ml_collections.FieldReference(value, field_type=field_type)


def dataset_config() -> ml_collections.ConfigDict:
  """`config.dataset`: which dataset, its preprocessing and the training crops."""
  d = ml_collections.ConfigDict()
  # The TFDS dataset: iseg2017, segmentation3d (any nnU-Net / Decathlon folder), iseg2019,
  # mrbrains2018 or brats.
  d.name = "iseg2017"
  # TFDS builder config: 'full' = one example per subject, crops sampled on the fly each epoch.
  # '' = the dataset's default (segmentation3d: a config named after the dataset).
  d.builder_config = "full"
  d.data_dir = "~/tensorflow_datasets"  # where `tfds build` wrote the dataset
  # Optional: the dataset's download folder to build from when it is not built yet.
  d.manual_dir = ""
  # Optional: write built-in data to `manual_dir` first when it is missing (quickstart, tests).
  d.builtin_data = ml_collections.ConfigDict()
  d.builtin_data.enabled = False
  d.builtin_data.shape = (144, 192, 256)  # voxels per scan
  d.builtin_data.num_train = 10  # labelled cases
  d.builtin_data.num_test = 0  # unlabelled cases
  d.builtin_data.seed = 0
  # segmentation3d only: 'nnunet' or 'decathlon' layout, voxel size (mm), voxel axis codes and
  # channels (T1, T2[, FLAIR]) of the built-in data.
  d.builtin_data.layout = "nnunet"
  d.builtin_data.spacing = (1.0, 1.0, 1.0)
  d.builtin_data.axcodes = "RAS"
  d.builtin_data.num_channels = 2
  # Input channels and classes; None = as the dataset declares them (a value that disagrees
  # with the dataset is an error).
  d.num_modalities = _optional(int)
  d.num_classes = _optional(int)
  # Region-based training (nnU-Net's, for BraTS): one sigmoid output per region of class ids,
  # nested from the largest to the smallest, e.g. "((1,2,3),(1,3),(3,))" for the whole tumour,
  # tumour core and enhancing tumour; needs a sigmoid loss (loss.sigmoid=True with
  # loss.softmax=False, or binary_cross_entropy). None = one softmax output per class.
  d.regions = _optional(tuple)
  # Validation: None = the dataset's own `eval.split`; k = fold k of a seeded `num_folds`-fold
  # split of the training cases by case id (nnU-Net's).
  d.fold = _optional(int)
  d.num_folds = 5
  # Or a fixed split: these case ids validate (e.g. "('subject-8','subject-9')"), drawn from the
  # train split and a labelled `eval.split`; every other case of those splits trains.
  d.validation_cases = _optional(tuple)
  # Geometry: voxel axes reordered to these codes ('none' = the file's order), voxel size
  # ('none' = each scan's own; 'median' = the training set's median, as nnU-Net; 'nnunet' = the
  # median with nnU-Net's anisotropy rule; or 'x,y,z' in mm), crop to the non-zero box.
  d.orientation = "none"
  d.target_spacing = "none"
  d.crop_nonzero = False
  d.resample_image_order = 3  # spline order of image resampling
  d.resample_label = "linear_onehot"  # or 'nearest'
  d.crop_size = (64, 64, 64)  # training sub-volume (D, H, W), voxels
  d.threshold = 0.1
  # 'subject_foreground': crop foreground / the subject's whole foreground >= threshold
  # (MedicalZoo's rule); 'crop_fraction': non-background fraction of the crop > threshold.
  d.threshold_rule = "subject_foreground"
  # Fraction of training crops centred on a random voxel of a random foreground class present in
  # the case (nnU-Net's oversample_foreground_percent, 0.33; drawn per crop); the other crops
  # follow the threshold rule. Whole-case configs only.
  d.foreground_oversampling = 0.0
  # Per-channel normalisation: full_volume_mean, max_min, mean, max, brats, none (MedicalZoo
  # names), ct (nnU-Net's CT scheme, training-set statistics), 'auto' (ct for channels named CT,
  # else full_volume_mean), or one mode per channel separated by commas.
  d.normalization = "full_volume_mean"
  d.clip_percentiles = (0.1, 99.8)  # per-channel intensity clip before normalising
  d.num_workers = 0  # grain worker processes for the train iterator
  d.num_threads = 2  # grain reader threads
  d.prefetch = 2  # batches prefetched by grain
  return d


def model_config() -> ml_collections.ConfigDict:
  """`config.model`: the network (`medjax.models.MODELS`) and its fields.

  None = the model's own default. A key the chosen model has no field for is an error when set,
  except `base_features` and `dtype`/`param_dtype`, which are ignored with a warning so that
  `--config.model.name=DENSENET1` works on any experiment.
  """
  m = ml_collections.ConfigDict()
  m.name = "UNET3D"  # UNET3D, VNET, VNET2, DENSENET1, DENSENET2, DENSENET3, HYPERDENSENET
  # Width of the first level (UNET3D 32 as in the paper, VNET/VNET2 16).
  m.base_features = _optional(int)
  m.dtype = "float32"  # compute dtype: float32 or bfloat16 (the logits stay float32)
  m.param_dtype = _optional(str)  # parameter dtype (default float32)
  # Every model: how its convolutions run (same parameters and values whichever): 'auto' (the
  # fastest measured per layer on CPU, XLA's own elsewhere), 'winograd', 'fold_in', 'fold_out',
  # 'sum', 'im2col' or 'xla' (models.ops.conv.METHODS).
  m.conv_method = _optional(str)
  m.num_levels = _optional(int)  # UNET3D: resolution levels (4)
  m.remat = _optional(bool)  # UNET3D: recompute activations in the backward pass
  # UNET3D: nnU-Net's deep supervision, a 1x1x1 classifier on every lower decoder level and the
  # loss summed over the resolutions (weights 1/2^i, the lowest 0, normalised); default False.
  m.deep_supervision = _optional(bool)
  m.depth = _optional(int)  # VNET (4), VNET2 (3): down-sampling stages
  m.activation = _optional(str)  # VNET, VNET2: 'prelu' or 'elu'
  m.paper_output_block = _optional(bool)  # VNET, VNET2: the paper's single 1x1x1 output conv
  m.dropout_rate = _optional(float)  # VNET, DENSENET*, HYPERDENSENET
  m.growth = _optional(tuple)  # DENSENET*, HYPERDENSENET: features added per dense layer
  m.early_growth = _optional(int)  # DENSENET3: each modality's first layer
  m.head_features = _optional(tuple)  # DENSENET*: widths of the 1x1x1 head
  m.head_dropout_rate = _optional(float)  # DENSENET*
  m.fusion = _optional(str)  # DENSENET2: how the two paths meet ('concat')
  m.fc_features = _optional(tuple)  # HYPERDENSENET: widths of the 1x1x1 head
  return m


def loss_config() -> ml_collections.ConfigDict:
  """`config.loss`: `medjax.losses.get_loss(name, **options)` with the options that are set.

  None = the loss's own default (see `medjax.losses`); an option set for a loss that does not
  take it is an error naming the options it takes.
  """
  l = ml_collections.ConfigDict()
  # dice, generalized_dice, tversky, cross_entropy, binary_cross_entropy, dice_ce, focal,
  # dice_focal.
  l.name = "dice"
  l.include_background = _optional(bool)  # Dice family, focal: keep class 0
  l.softmax = _optional(bool)  # softmax over classes (the default of every loss)
  l.sigmoid = _optional(bool)  # per-channel sigmoid instead (multi-label / region outputs)
  l.squared_pred = _optional(bool)  # Dice: squared terms in the denominator (V-Net)
  l.jaccard = _optional(bool)  # Dice: the Jaccard (IoU) form
  l.smooth_nr = _optional(float)  # Dice family: numerator smoothing (1e-5)
  l.smooth_dr = _optional(float)  # Dice family: denominator smoothing (1e-5)
  l.batch = _optional(bool)  # Dice family: pool the sums over the batch
  l.class_weights = _optional(tuple)  # one weight per class id (Dice family, CE, BCE, focal)
  l.reduction = _optional(str)  # 'mean' (default) or 'sum' over samples and classes
  l.alpha = _optional(float)  # tversky: false-positive weight; focal, dice_focal: class balance
  l.beta = _optional(float)  # tversky: false-negative weight
  l.w_type = _optional(str)  # generalized_dice: 'square', 'simple' or 'uniform'
  l.gamma = _optional(float)  # focal, dice_focal: focusing exponent (2)
  l.lambda_dice = _optional(float)  # dice_ce, dice_focal: weight of the Dice term
  l.lambda_ce = _optional(float)  # dice_ce: weight of the cross-entropy term
  l.lambda_focal = _optional(float)  # dice_focal: weight of the focal term
  l.label_smoothing = _optional(float)  # cross_entropy, dice_ce (torch's)
  l.ignore_index = _optional(int)  # cross_entropy, dice_ce: label id left out of the loss
  l.pos_weight = _optional(tuple)  # binary_cross_entropy: weight of positives, one per channel
  l.focal_softmax = _optional(bool)  # dice_focal: a softmax focal term (MONAI's is sigmoid)
  return l


def augmentation_config() -> ml_collections.ConfigDict:
  """`config.augmentation`: on-device augmentation, off by default.

  `enabled` switches it on; `preset` ('none' or 'nnunet') picks the values of the keys left
  None. The other keys are `medjax.augment.default_augmentation_config()`'s (its docstring gives
  each one's meaning and plain default), all None here: None = the preset's value, so any key
  the experiment or the command line sets wins over the preset (`augment.resolve_config`).
  """
  a = ml_collections.ConfigDict()
  a.enabled = False
  a.preset = "none"  # 'none' (medjax's defaults) or 'nnunet' (nnU-Net v2's augmentation)
  for key, value in augment.default_augmentation_config().items():
    if key != "preset":
      a[key] = _optional(type(value))
  return a


def plan_config() -> ml_collections.ConfigDict:
  """`config.plan`: nnU-Net-style planning of the crop and batch size (`medjax.planning`).

  When enabled, training replaces `dataset.crop_size`, `eval.roi_size` and `model.num_levels`
  (`choose_crop`) and `batch_size` (`choose_batch`) by the plan of the training cases' median
  shape after the preprocessing and the memory budget (UNET3D only); config.json records the
  planned values and plan.json the plan. `python -m medjax.plan` prints it without training.
  """
  p = ml_collections.ConfigDict()
  p.enabled = False  # plan the keys below at the start of training
  # Plan the crop, the validation window and the levels from the median case shape (False:
  # keep dataset.crop_size, eval.roi_size and model.num_levels).
  p.choose_crop = True
  p.choose_batch = True  # plan batch_size from the budget (False: keep batch_size)
  # The memory one training step may use on one device, MB (10^6 bytes; nnU-Net plans for 8 GB).
  p.memory_budget_mb = 8000.0
  p.max_num_levels = 5  # the deepest UNET3D planned (levels including the bottom one)
  p.min_batch_size = 2  # the smallest planned batch (nnU-Net's 2), even below the 5% cap
  # A planned batch covers at most this fraction of the training set's voxels (nnU-Net's 5%).
  p.max_dataset_fraction = 0.05
  return p


def eval_config() -> ml_collections.ConfigDict:
  """`config.eval`: sliding-window validation on whole cases."""
  e = ml_collections.ConfigDict()
  e.split = "validation"  # the dataset split validated on when dataset.fold is None
  e.roi_size = (64, 64, 64)  # window (D, H, W), voxels
  e.sw_batch_size = 1  # windows per predictor call
  e.overlap = 0.25  # fraction of the window shared with its neighbour
  e.mode = "gaussian"  # blending: 'gaussian' or 'constant'
  return e


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # parameter initialisation, crops, augmentation and dropout

  config.dataset = dataset_config()
  config.model = model_config()
  config.loss = loss_config()
  config.augmentation = augmentation_config()

  config.optimizer = "sgd"  # sgd | adam | rmsprop (PyTorch's update rules)
  config.learning_rate = 1e-3
  config.momentum = 0.5  # sgd, rmsprop
  config.nesterov = False  # sgd: Nesterov momentum (PyTorch's; nnU-Net: momentum 0.99, True)
  config.weight_decay = 1e-8  # L2 added to the gradient, as PyTorch's weight_decay
  config.weight_decay_mask = "all"  # 'all' parameters (PyTorch) or 'kernels' only
  # constant | cosine | warmup_cosine | step (multiply by lr_decay_factor every lr_decay_steps
  # steps, torch's StepLR) | poly (lr * (1 - step / num_train_steps) ** poly_exponent,
  # nnU-Net's PolyLRScheduler).
  config.lr_schedule = "constant"
  config.warmup_steps = 0  # warmup_cosine: linear warmup from 0
  config.lr_decay_steps = 10_000  # step
  config.lr_decay_factor = 0.1  # step
  config.poly_exponent = 0.9  # poly (nnU-Net's 0.9)

  config.batch_size = 1  # global, split across devices
  config.num_train_steps = 20_000
  # A non-finite loss, gradient or updated parameter: 'stop' training (the last checkpoint stays good) or 'skip'
  # the step (parameters and optimiser state unchanged; counted in train/skipped_steps).
  config.nonfinite = "stop"

  config.log_every_steps = 50
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 3  # latest checkpoints kept (the best by validation Dice also)

  config.eval = eval_config()
  config.plan = plan_config()
  return config
