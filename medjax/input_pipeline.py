"""Input pipeline: seeded sub-volume batches for training, prepared whole scans for evaluation.

Training batches come from the TFDS dataset `<config.dataset.name>/<config.dataset.builder_config>`,
read with random access (`tfds.data_source`) through a grain `MapDataset`:

- whole-case configs (iSeg-2017's `full`, every other dataset): crops are cut on the fly from
  whole training cases, fresh every epoch. Each case is prepared once per process by the run's
  `medjax.data.preprocessing.Preprocessing` (geometry, then normalisation) and kept in memory.
  Global sample i belongs to epoch e = i // N (N training cases), which visits the cases in the
  order `epoch_order(seed, e)`; its crop start is drawn by `crop_rng(seed, i)` uniformly among
  the starts that pass `config.dataset.threshold_rule`, or with probability
  `config.dataset.foreground_oversampling` centred on a random foreground voxel (see
  `medjax.data.sampling`). A case smaller than the crop is zero-padded at its far end (label:
  background).
- iSeg-2017's `subvolumes*`: the pre-sampled crops, in the order `epoch_order(seed, e)` over the
  N crops, normalised with the subject statistics stored beside each crop (so they equal crops
  of the normalised volume).

The training cases are the `train` split, or with `config.dataset.fold = k` the cases of that
split outside fold k (`medjax.data.datasets.kfold`); fold k is then the validation set. With
`config.dataset.validation_cases` the named cases validate and every other case of the `train`
split and the labelled `config.eval.split` trains (a fixed split, such as MedicalZoo's).

Global batch k holds global samples k*B .. k*B + B - 1 (B = config.batch_size); process p of P
takes samples k*B + p*b .. k*B + (p+1)*b - 1 with b = B / P. A batch therefore depends only on
(config.seed, k, p), and resuming at step s starts exactly at batch s.
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any, Iterator

from absl import logging
import grain
import jax
import ml_collections
import numpy as np

from medjax.data import build
from medjax.data import datasets
from medjax.data import fingerprint as fingerprint_lib
from medjax.data import naming
from medjax.data import normalize
from medjax.data import preprocessing as preprocessing_lib
from medjax.train_samples import CaseCache, SampleFn

_BUILTIN_SUBDIR = "downloads/manual/{name}_builtin"


def validates_on_training_cases(ds_config: ml_collections.ConfigDict) -> bool:
  """Whether `config.dataset` picks the validation cases among the labelled training cases (a
  fold, or named cases) instead of validating on `config.eval.split`."""
  return ds_config.fold is not None or ds_config.validation_cases is not None


def _dataset_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  ds = config.dataset
  if ds.name not in build.DATASETS:
    raise ValueError(f"config.dataset.name must be one of {build.DATASETS}, got {ds.name!r}.")
  if ds.fold is not None and ds.validation_cases is not None:
    raise ValueError("config.dataset.fold and config.dataset.validation_cases both choose the "
                     "validation cases; set one of them (the other None).")
  if ds.fold is not None and (ds.num_folds < 2 or not 0 <= ds.fold < ds.num_folds):
    raise ValueError(f"config.dataset.fold={ds.fold} with num_folds={ds.num_folds}: expected "
                     "num_folds >= 2 and a fold in 0..num_folds-1 (or fold=None for the "
                     "dataset's own validation split).")
  return ds


def _clip(ds: ml_collections.ConfigDict) -> tuple[float, float] | None:
  clip = ds.clip_percentiles
  return None if clip is None else tuple(float(c) for c in clip)


def ensure_dataset(config: ml_collections.ConfigDict):
  """Returns the builder of `<config.dataset.name>/<builder_config>`, building it if needed.

  When the config is not built in `config.dataset.data_dir`:
  - with `config.dataset.manual_dir` set, builds it from there (`medjax.data.build`); if that
    folder does not exist and `config.dataset.builtin_data.enabled`, first writes built-in data
    in the dataset's layout there (`medjax.data.synthetic`; with an empty manual_dir it goes to
    `<data_dir>/downloads/manual/<name>_builtin`);
  - otherwise raises FileNotFoundError with the command that builds it.
  """
  ds = _dataset_config(config)
  name = ds.name
  data_dir = pathlib.Path(ds.data_dir).expanduser()
  builtin = ds.builtin_data
  manual = ds.manual_dir or ""
  if not manual and builtin.enabled:
    manual = str(data_dir / _BUILTIN_SUBDIR.format(name=name))
  manual_dir = pathlib.Path(manual).expanduser() if manual else None
  wanted = ds.builder_config  # a config name, '' for the default, or a config object
  if manual_dir is not None and not manual_dir.exists() and builtin.enabled:
    logging.info("Writing built-in %s data to %s.", name, manual_dir)
    try:
      build.write_builtin(name, manual_dir, builtin)
    except FileExistsError:
      if not manual_dir.is_dir():  # Another process may have written it meanwhile.
        raise
  config_obj = build.resolve_config(
      name, wanted, manual_dir if manual_dir is not None and manual_dir.is_dir() else None)
  label = name + (f"/{config_obj.name}" if config_obj is not None else "")
  if build.is_built(data_dir, config_obj, name):
    return build.open_builder(name, data_dir, config_obj)
  if manual_dir is None:
    raise FileNotFoundError(
        f"{label} is not built in {data_dir}. Build it from your download (see README, "
        "'Data'):\n"
        f"  python -m medjax.data.build --dataset={name} --manual_dir=DIR --data_dir={data_dir}"
        + (f" --config={config_obj.name}" if config_obj is not None else "") + "\n"
        "or set --config.dataset.manual_dir=DIR to build it on first use (add "
        "--config.dataset.builtin_data.enabled=True to use built-in data instead).")
  logging.info("Building %s from %s into %s.", label, manual_dir, data_dir)
  return build.build(name, manual_dir=manual_dir, data_dir=data_dir, config=config_obj)


def resolve_dataset_config(config: ml_collections.ConfigDict,
                           names: datasets.DatasetNames) -> ml_collections.ConfigDict:
  """A copy of `config` whose `dataset.num_modalities` / `num_classes` are the dataset's.

  Raises:
    ValueError: a value set in the config that disagrees with the dataset.
  """
  config = copy.deepcopy(config)
  for key, actual, what in (("num_modalities", len(names.channel_names), names.channel_names),
                            ("num_classes", len(names.class_names), names.class_names)):
    value = config.dataset[key]
    if value is None:
      config.dataset[key] = actual
    elif int(value) != actual:
      raise ValueError(f"config.dataset.{key}={value}, but {config.dataset.name} has {actual} "
                       f"{what}; set it to {actual} or None (= from the dataset).")
  return config


def split_cases(config: ml_collections.ConfigDict, builder=None
                ) -> tuple[datasets.Cases, datasets.Cases | None]:
  """(training cases, validation cases or None): the `train` split and `config.eval.split`, or
  with `config.dataset.fold = k` fold k of the `train` split's cases and the other folds."""
  ds = _dataset_config(config)
  builder = builder or ensure_dataset(config)
  if ds.validation_cases is not None:
    # Named validation cases, drawn from the training split and the labelled eval split.
    splits = ["train"] + [s for s in (config.eval.split,)
                          if s not in ("train", "test") and s in builder.info.splits]
    return datasets.choose_cases(builder, splits, ds.validation_cases)
  if ds.fold is None:
    split = config.eval.split
    val = datasets.Cases(builder, split) if split in builder.info.splits else None
    return datasets.Cases(builder, "train"), val
  ids = datasets.case_ids(builder, "train")
  train_ids, val_ids = datasets.kfold(ids, num_folds=ds.num_folds, fold=ds.fold)
  index = {c: i for i, c in enumerate(ids)}
  return (datasets.Cases(builder, "train", [index[c] for c in train_ids]),
          datasets.Cases(builder, "train", [index[c] for c in val_ids]))


def training_fingerprint(builder, cases) -> fingerprint_lib.Selection | None:
  """The built dataset's fingerprint of `cases` (the run's training cases, `datasets.Cases` or
  `JoinedCases`), or None when the dataset has none (built before medjax wrote fingerprints, or
  a crop config) or it lacks one of the cases. Never reads a volume: a whole split is the
  fingerprint's split, a subset is matched by the case ids of its records."""
  data = fingerprint_lib.read(builder.data_dir)
  if data is None:
    return None
  parts = cases.parts if isinstance(cases, datasets.JoinedCases) else [cases]
  if not all(isinstance(p, datasets.Cases) for p in parts):
    return None
  ids, keys = {}, []
  for part in parts:
    entry = data["splits"].get(part.split)
    if entry is None:
      return None
    if len(parts) == 1 and part.is_whole_split and len(part) == entry["num_cases"]:
      # The whole split: its fingerprint, without reading the records' ids (order does not
      # matter to fit or planning: medians, percentiles and pooled statistics).
      keys.extend((part.split, c.case_id) for c in entry["cases"])
      continue
    if part.split not in ids:
      ids[part.split] = datasets.case_ids(builder, part.split)
    keys.extend((part.split, ids[part.split][r]) for r in part.records)
  return fingerprint_lib.select(data, keys)


def fit_preprocessing(config: ml_collections.ConfigDict,
                      builder=None) -> preprocessing_lib.Preprocessing:
  """The run's `Preprocessing`: `config.dataset`'s choices and the training cases' statistics
  (from the dataset's fingerprint where it has them, else by reading the cases)."""
  ds = _dataset_config(config)
  builder = builder or ensure_dataset(config)
  train, _ = split_cases(config, builder)
  return preprocessing_lib.fit(ds, datasets.names(builder), train,
                               fingerprint=training_fingerprint(builder, train))


def _is_crop_dataset(builder) -> bool:
  return getattr(builder.builder_config, "crop_size", None) is not None


def _crop_records(config: ml_collections.ConfigDict, builder, crop_size, threshold, rule,
                  preprocessing: preprocessing_lib.Preprocessing):
  """The pre-sampled crops of an iSeg-2017 `subvolumes*` config, checked against the config."""
  ds, bconf = config.dataset, builder.builder_config
  if (preprocessing.orientation, preprocessing.target_spacing,
      preprocessing.crop_nonzero) != (None, None, False):
    raise ValueError(f"{builder.name}/{bconf.name} holds crops of the volumes as stored; use "
                     "config.dataset.orientation=none, target_spacing=none and "
                     "crop_nonzero=False with it, or the 'full' config.")
  if validates_on_training_cases(ds):
    raise ValueError(f"{builder.name}/{bconf.name} holds crops with a fixed validation subject; "
                     "config.dataset.fold and validation_cases need the 'full' config.")
  modes = set(preprocessing.normalization)
  if len(modes) != 1 or not modes <= set(normalize.MODES):
    raise ValueError(f"{builder.name}/{bconf.name} normalises every crop with one per-volume "
                     f"mode of {normalize.MODES}; got {preprocessing.normalization}.")
  if tuple(bconf.crop_size) != crop_size:
    raise ValueError(
        f"config.dataset.crop_size={crop_size} does not match the crops of "
        f"{builder.name}/{bconf.name}, {tuple(bconf.crop_size)}.")
  if _clip(ds) != tuple(bconf.clip_percentiles):
    raise ValueError(
        f"config.dataset.clip_percentiles={_clip(ds)} does not match the statistics stored in "
        f"{builder.name}/{bconf.name}, computed with {tuple(bconf.clip_percentiles)}; use the "
        "'full' config for other clip percentiles.")
  if (threshold, rule) != (bconf.threshold, bconf.threshold_rule):
    logging.warning(
        "%s/%s was sampled with threshold %s (%s); config.dataset asks for %s (%s), which only "
        "applies to whole-case configs.", builder.name, bconf.name, bconf.threshold,
        bconf.threshold_rule, threshold, rule)
  return builder.as_data_source("train"), modes.pop()


def create_train_dataset(config: ml_collections.ConfigDict, *, start_step: int = 0,
                         process_index: int | None = None, process_count: int | None = None,
                         with_metadata: bool = False,
                         preprocessing: preprocessing_lib.Preprocessing | None = None
                         ) -> grain.MapDataset:
  """The training batches as a grain MapDataset: element k is host-local batch start_step + k.

  Args:
    config: experiment config (reads seed, batch_size and dataset.*).
    start_step: first batch.
    process_index, process_count: default to jax.process_index() / jax.process_count().
    with_metadata: also return 'case_id' (strings) [b] and 'crop_start' int32 [b, 3] (in the
      prepared grid).
    preprocessing: the run's `Preprocessing`; default: `fit_preprocessing(config)`.

  Returns:
    MapDataset of {'image': float32 [b, cd, ch, cw, C], 'label': int32 [b, cd, ch, cw]},
    b = config.batch_size // process_count.
  """
  ds = _dataset_config(config)
  p = jax.process_index() if process_index is None else process_index
  n_proc = jax.process_count() if process_count is None else process_count
  global_batch = int(config.batch_size)
  if global_batch < 1 or global_batch % n_proc:
    raise ValueError(
        f"config.batch_size={global_batch} must be a positive multiple of the process count "
        f"{n_proc}.")
  local_batch = global_batch // n_proc
  builder = ensure_dataset(config)
  crop_size = tuple(int(c) for c in ds.crop_size)
  if len(crop_size) != 3 or min(crop_size) < 1:
    raise ValueError(f"config.dataset.crop_size must be 3 positive ints, got {crop_size}.")
  rule, threshold = ds.threshold_rule, float(ds.threshold)
  if preprocessing is None:
    preprocessing = fit_preprocessing(config, builder)
  mode = None
  if _is_crop_dataset(builder):
    if ds.foreground_oversampling:
      raise ValueError(
          f"config.dataset.foreground_oversampling={ds.foreground_oversampling}: "
          f"{builder.name}/{builder.builder_config.name} holds crops sampled in advance; "
          "oversampling needs whole cases (the 'full' config).")
    records, mode = _crop_records(config, builder, crop_size, threshold, rule, preprocessing)
    kind = "crops"
  else:
    train, _ = split_cases(config, builder)
    records = CaseCache(train, preprocessing=preprocessing, crop_size=crop_size,
                         threshold=threshold, rule=rule,
                         foreground_oversampling=float(ds.foreground_oversampling))
    kind = "cases"
  if len(records) == 0:
    raise ValueError(f"{builder.name}/{builder.builder_config.name} has no training examples.")
  fn = SampleFn(kind=kind, records=records, seed=int(config.seed), local_batch=local_batch,
                 global_batch=global_batch, process_index=p, mode=mode,
                 with_metadata=with_metadata)
  # Index arithmetic stays below 2**63: global index <= local index * process_count.
  samples = grain.MapDataset.range(0, (2**62 // n_proc) // local_batch * local_batch).map(fn)
  batches = samples.batch(local_batch, drop_remainder=True)
  return batches[int(start_step):]


def create_train_iterator(config: ml_collections.ConfigDict, *, start_step: int = 0,
                          preprocessing: preprocessing_lib.Preprocessing | None = None
                          ) -> Iterator[dict[str, np.ndarray]]:
  """Endless iterator of host-local training batches, starting at batch `start_step`.

  Yields:
    {'image': float32 [b, cd, ch, cw, C] (prepared and normalised), 'label': int32
    [b, cd, ch, cw]} with b = config.batch_size // jax.process_count(). Batch k depends only on
    (config.seed, k, jax.process_index()).

  `config.dataset.num_workers` > 0 reads in that many grain worker processes (then the program
  needs absl flags parsed and a `__main__` guard); `config.dataset.num_threads` and
  `config.dataset.prefetch` set grain's reader threads and prefetched batches.
  """
  ds = _dataset_config(config)
  batches = create_train_dataset(config, start_step=start_step, preprocessing=preprocessing)
  it = batches.to_iter_dataset(grain.ReadOptions(
      num_threads=int(ds.num_threads), prefetch_buffer_size=int(ds.prefetch)))
  if int(ds.num_workers) > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(ds.num_workers)))
  return iter(it)


def _whole_case_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` pointed at the dataset's whole cases (iSeg-2017's `full` for its crop configs)."""
  if config.dataset.name != "iseg2017":
    return config
  eval_dict = config.to_dict()
  eval_dict["dataset"]["builder_config"] = "full"
  return ml_collections.ConfigDict(eval_dict)


def eval_cases(config: ml_collections.ConfigDict, split: str = "validation",
               builder=None) -> datasets.Cases:
  """The whole cases of `split`; 'validation' with `config.dataset.fold` set is that fold."""
  whole = _whole_case_config(config)
  builder = builder or ensure_dataset(whole)
  if split == "validation" and validates_on_training_cases(whole.dataset):
    return split_cases(whole, builder)[1]
  if split not in builder.info.splits:
    raise ValueError(
        f"split {split!r} is not in {builder.name}/{builder.builder_config.name} at "
        f"{builder.data_dir}; it has {sorted(builder.info.splits)}.")
  return datasets.Cases(builder, split)


def load_eval_subjects(config: ml_collections.ConfigDict, split: str = "validation", *,
                       preprocessing: preprocessing_lib.Preprocessing | None = None
                       ) -> list[dict[str, Any]]:
  """Whole cases of `split` (see `eval_cases`), prepared like training.

  Returns:
    One dict per case, sorted by case id: 'image' float32 [d, h, w, C] (prepared and
    normalised), 'record' (the `GeometryRecord` back to the file's grid), 'raw_image' float32
    [D, H, W, C] and 'label' int32 [D, H, W] (None when unlabelled) on the file's grid,
    'affine' float64 [4, 4], 'spacing' (3 floats, mm), 'case_id' str.
  """
  whole = _whole_case_config(config)
  builder = ensure_dataset(whole)
  if preprocessing is None:
    preprocessing = fit_preprocessing(whole, builder)
  subjects = []
  for case in eval_cases(whole, split, builder):
    prepared = preprocessing.prepare(case.image, case.affine)
    subjects.append({
        "image": prepared.image, "record": prepared.record, "raw_image": case.image,
        "label": None if case.label is None else np.asarray(case.label, np.int32),
        "affine": case.affine, "spacing": case.spacing, "case_id": case.case_id,
    })
  return sorted(subjects, key=lambda s: naming.natural_key(s["case_id"]))
