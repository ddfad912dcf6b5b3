"""iSeg-2017: 6-month infant brain MRI (T1, T2) with CSF / GM / WM labels."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import tensorflow_datasets as tfds

from medjax.data import datasets
from medjax.data import iseg
from medjax.data import normalize
from medjax.data import sampling
from medjax.data import tfds_features

_HOMEPAGE = "http://iseg2017.web.unc.edu/"

_SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass
class Iseg2017Config(tfds.core.BuilderConfig):
  """Options of one iSeg-2017 config.

  Attributes:
    crop_size: `(cd, ch, cw)` of pre-sampled crops, or None for whole subjects (`full`).
    train_samples_per_subject: crops per training subject.
    validation_samples_per_subject: crops per validation subject.
    threshold: foreground threshold of a crop (see `medjax.data.sampling`).
    threshold_rule: `subject_foreground` (MedicalZoo's) or `crop_fraction`.
    validation_subjects: subject ids held out as the `validation` split.
    seed: crop sampling seed; the same seed and data give the same dataset.
    clip_percentiles: percentiles of the per-subject statistics stored with each crop.
  """
  crop_size: tuple[int, int, int] | None = None
  train_samples_per_subject: int = 0
  validation_samples_per_subject: int = 0
  threshold: float = 0.1
  threshold_rule: str = "subject_foreground"
  validation_subjects: tuple[int, ...] = (1,)
  seed: int = 0
  clip_percentiles: tuple[float, float] = normalize.DEFAULT_CLIP_PERCENTILES


def subvolumes_config(name: str, crop_size: tuple[int, int, int], *,
                      train_samples_per_subject: int, validation_samples_per_subject: int,
                      **kwargs) -> Iseg2017Config:
  """An `Iseg2017Config` of pre-sampled crops (also for custom configs in tests)."""
  size = "x".join(str(c) for c in crop_size)
  return Iseg2017Config(
      name=name,
      description=(f"{size} crops: {train_samples_per_subject} per training subject, "
                   f"{validation_samples_per_subject} per validation subject."),
      crop_size=tuple(crop_size), train_samples_per_subject=train_samples_per_subject,
      validation_samples_per_subject=validation_samples_per_subject, **kwargs)


class Builder(tfds_features.CaseBuilder, tfds_features.ArrayRecordDefault,
              tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for iSeg-2017 (reads the download as distributed; manual download)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "1.1.0": "t1_stats / t2_stats end with the voxel count (MedicalZoo's brats normalisation "
               "uses the unbiased standard deviation).",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Register at {_HOMEPAGE} and download the iSeg-2017 training and testing data. Unpack both
  archives into one folder and pass it as `--manual_dir` (the default is
  `~/tensorflow_datasets/downloads/manual/`):

    DIR/iSeg-2017-Training/subject-{{1..10}}-{{T1,T2,label}}.hdr/.img
    DIR/iSeg-2017-Testing/subject-{{11..23}}-{{T1,T2}}.hdr/.img   (optional; `test` split)

  A flat folder holding all the subject-N-*.hdr/.img files works too.
  """
  BUILDER_CONFIGS = [
      Iseg2017Config(name="full", description="One example per subject, raw volumes."),
      # MedicalZoo's seed experiment: 64^3 crops holding >= 10 % of the subject's foreground,
      # 1024 training and 128 validation crops; here 128 per subject (1152 over 9 training
      # subjects, 128 from validation subject 1).
      subvolumes_config("subvolumes", (64, 64, 64), train_samples_per_subject=128,
                        validation_samples_per_subject=128),
      # The 3D U-Net paper's input size.
      subvolumes_config("subvolumes_128x128x64", (128, 128, 64), train_samples_per_subject=32,
                        validation_samples_per_subject=32),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "full"

  def _info(self) -> tfds.core.DatasetInfo:
    crop = self.builder_config.crop_size
    shape = (None, None, None) if crop is None else tuple(crop)
    volume = lambda dtype, doc: tfds.features.Tensor(  # pylint: disable=g-long-lambda
        shape=shape, dtype=dtype, encoding="zlib", doc=doc)
    features = {
        "t1": volume(np.float32, "T1 intensities as on disk [D, H, W]."),
        "t2": volume(np.float32, "T2 intensities as on disk [D, H, W]."),
        "label": volume(np.uint8, "Class ids 0..3 = background, CSF, GM, WM [D, H, W]; "
                                  "empty [0, 0, 0] for unlabelled test subjects."),
        "has_label": tfds.features.Scalar(np.bool_, doc="False for test subjects."),
        "affine": tfds.features.Tensor(shape=(4, 4), dtype=np.float32,
                                       doc="Voxel-to-world matrix (mm) of the example."),
        "spacing": tfds.features.Tensor(shape=(3,), dtype=np.float32, doc="Voxel size, mm."),
        "subject_id": tfds.features.Scalar(np.int32, doc="N in subject-N-*."),
    }
    if crop is not None:
      features["crop_start"] = tfds.features.Tensor(
          shape=(3,), dtype=np.int32, doc="First voxel of the crop in its subject.")
      for name in ("t1_stats", "t2_stats"):
        # Raw bytes: tf.train.Example float lists would round float64 to float32.
        features[name] = tfds.features.Tensor(
            shape=(normalize.NUM_STATS,), dtype=np.float64, encoding="bytes",
            doc=f"Subject statistics {normalize.STATS_FIELDS} for normalisation.")
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features),
        supervised_keys=None,
        homepage=_HOMEPAGE,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    subjects = iseg.find_subjects(dl_manager.manual_dir)
    labelled = [f for f in subjects.values() if f.label is not None]
    test = [f for f in subjects.values() if f.label is None]
    labelled_ids = [f.subject_id for f in labelled]
    missing = sorted(set(config.validation_subjects) - set(labelled_ids))
    if missing:
      raise ValueError(
          f"validation subjects {missing} are not among the labelled subjects {labelled_ids} in "
          f"{dl_manager.manual_dir}.")
    train = [f for f in labelled if f.subject_id not in config.validation_subjects]
    validation = [f for f in labelled if f.subject_id in config.validation_subjects]
    if not train:
      raise ValueError(
          f"{dl_manager.manual_dir}: no labelled subject left for training after holding out "
          f"{list(config.validation_subjects)}.")
    splits = {"train": self._generate_examples(train, "train")}
    if validation:
      splits["validation"] = self._generate_examples(validation, "validation")
    if test and config.crop_size is None:
      splits["test"] = self._generate_examples(test, "test")
    return splits

  def _generate_examples(self, subjects: list[iseg.SubjectFiles], split: str):
    config = self.builder_config
    # Whole subjects are cases with a fingerprint; crops are not (planning refuses them).
    return self.records(split, subjects,
                        functools.partial(subject_records, config=config, split=split),
                        with_fingerprint=config.crop_size is None)


def subject_records(files: iseg.SubjectFiles, *, config: Iseg2017Config, split: str
                    ) -> tfds_features.Records:
  """Loads one subject -> `([(key, example), ...], fingerprint or None)`: its whole volumes
  (`full`) or its crops, the same in process and on a Beam worker."""
  subject = iseg.load_subject(files)
  sid = subject.subject_id
  base = {
      "has_label": subject.label is not None,
      "spacing": np.asarray(subject.spacing, np.float32),
      "subject_id": np.int32(sid),
  }
  if config.crop_size is None:
    label = subject.label if subject.label is not None else np.zeros((0, 0, 0), np.uint8)
    example = dict(base, t1=subject.image[..., 0], t2=subject.image[..., 1], label=label,
                   affine=subject.affine.astype(np.float32))
    return ([(f"subject-{sid}", example)],
            tfds_features.example_fingerprint(datasets.ISEG2017, example))
  stats = [normalize.volume_stats(subject.image[..., c], config.clip_percentiles)
           for c in range(subject.image.shape[-1])]
  sampler = sampling.CropSampler(
      subject.label, config.crop_size, threshold=config.threshold,
      rule=config.threshold_rule, subject=f"subject {sid} ({files.label})")
  num = (config.train_samples_per_subject if split == "train"
         else config.validation_samples_per_subject)
  # One stream per (seed, subject, split): a subject's crops do not depend on which other
  # subjects are present or on their order.
  rng = sampling.crop_rng(config.seed, sid * len(_SPLIT_CODES) + _SPLIT_CODES[split])
  examples = []
  for k in range(num):
    start = sampler.sample(rng)
    image = sampling.crop(subject.image, start, config.crop_size)
    examples.append((f"subject-{sid}-crop-{k:05d}", dict(
        base, t1=np.ascontiguousarray(image[..., 0]),
        t2=np.ascontiguousarray(image[..., 1]),
        label=np.ascontiguousarray(sampling.crop(subject.label, start, config.crop_size)),
        affine=sampling.crop_affine(subject.affine, start).astype(np.float32),
        crop_start=np.asarray(start, np.int32), t1_stats=stats[0], t2_stats=stats[1])))
  return examples, None
