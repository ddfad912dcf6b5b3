"""Beam builds and the dataset fingerprint (`medjax.data.beam_build`, `medjax.data.fingerprint`).

A Beam build (DirectRunner) must write the in-process build's records, splits, metadata and
fingerprint exactly; the fingerprint's combiners must agree with numpy; `preprocessing.fit` and
planning must give from the fingerprint what they give by reading the cases.
"""

import itertools
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import load_experiment_config
from datasets_tfds.iseg2017 import iseg2017_dataset_builder as iseg2017
from medjax import input_pipeline
from medjax import planning
from medjax.data import build
from medjax.data import datasets
from medjax.data import fingerprint
from medjax.data import geometry
from medjax.data import layouts
from medjax.data import preprocessing
from medjax.data import synthetic
from medjax.data import tfds_features

beam = pytest.importorskip("apache_beam")

REPO = pathlib.Path(__file__).resolve().parent.parent
SHAPE = (16, 20, 24)
IN_MEMORY = "runner=DirectRunner,direct_num_workers=1"
MULTI_PROCESSING = ("runner=DirectRunner,direct_num_workers=2,"
                    "direct_running_mode=multi_processing")


def _records(builder, split):
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


def _assert_same_build(a, b):
  """Same splits, records (in order, every feature), metadata and fingerprint."""
  assert sorted(a.info.splits) == sorted(b.info.splits)
  for split in a.info.splits:
    sa, sb = a.info.splits[split], b.info.splits[split]
    assert (sa.num_examples, sa.shard_lengths) == (sb.num_examples, sb.shard_lengths)
    ra, rb = _records(a, split), _records(b, split)
    assert len(ra) == len(rb) == sa.num_examples
    for x, y in zip(ra, rb):
      assert sorted(x) == sorted(y)
      for key in x:
        np.testing.assert_array_equal(x[key], y[key], err_msg=f"{split} {key}")
  assert dict(a.info.metadata or {}) == dict(b.info.metadata or {})
  assert (sorted(p.name for p in pathlib.Path(a.data_dir).iterdir())
          == sorted(p.name for p in pathlib.Path(b.data_dir).iterdir()))
  fa, fb = (pathlib.Path(d) / fingerprint.FILENAME for d in (a.data_dir, b.data_dir))
  assert fa.is_file() == fb.is_file()
  if fa.is_file():
    assert fa.read_text() == fb.read_text()


@pytest.fixture(scope="module")
def nnunet(tmp_path_factory):
  """(manual_dir, in-process build, Beam build) of 4 + 1 LPS cases with anisotropic voxels."""
  tmp = tmp_path_factory.mktemp("nnunet")
  manual = synthetic.write_nnunet_layout(tmp / "raw", shape=SHAPE, num_train=4, num_test=1,
                                         spacing=(1.0, 1.25, 2.0), axcodes="LPS", seed=3)
  local = build.build("segmentation3d", manual_dir=manual, data_dir=tmp / "local")
  on_beam = build.build("segmentation3d", manual_dir=manual, data_dir=tmp / "beam",
                        beam_options=IN_MEMORY)
  return manual, local, on_beam


@pytest.fixture(scope="module")
def iseg_raw(tmp_path_factory):
  return synthetic.write_iseg_layout(tmp_path_factory.mktemp("iseg") / "raw", shape=SHAPE,
                                     num_train=3, num_test=1)


def test_beam_build_equals_in_process_build_nnunet(nnunet):
  _, local, on_beam = nnunet
  _assert_same_build(local, on_beam)
  assert local.info.splits["train"].num_examples == 4
  assert local.info.splits["test"].num_examples == 1


def test_beam_build_equals_in_process_build_iseg2017(iseg_raw, tmp_path):
  local = build.build("iseg2017", manual_dir=iseg_raw, data_dir=tmp_path / "local")
  on_beam = build.build("iseg2017", manual_dir=iseg_raw, data_dir=tmp_path / "beam",
                        beam_options=IN_MEMORY)
  _assert_same_build(local, on_beam)
  data = fingerprint.read(on_beam.data_dir)
  assert sorted(data["splits"]) == ["test", "train", "validation"]
  assert [c.case_id for c in data["splits"]["train"]["cases"]] == ["subject-2", "subject-3"]
  assert data["splits"]["test"]["channels"] == [None, None]  # unlabelled


def test_beam_build_of_crops_equals_in_process_build(iseg_raw, tmp_path):
  config = iseg2017.subvolumes_config("test_crops_8", (8, 8, 8), train_samples_per_subject=3,
                                      validation_samples_per_subject=2, seed=5)
  local = build.build("iseg2017", manual_dir=iseg_raw, data_dir=tmp_path / "local",
                      config=config)
  on_beam = build.build("iseg2017", manual_dir=iseg_raw, data_dir=tmp_path / "beam",
                        config=config, beam_options=IN_MEMORY)
  _assert_same_build(local, on_beam)
  assert local.info.splits["train"].num_examples == 6
  # Crops are no cases: no fingerprint, and fit / planning read the records as before.
  assert fingerprint.read(local.data_dir) is None


def test_in_process_build_does_not_import_beam(tmp_path):
  manual = synthetic.write_nnunet_layout(tmp_path / "raw", shape=(8, 8, 8), num_train=1)
  code = ("import sys\nfrom medjax.data import build\n"
          f"build.build('segmentation3d', manual_dir={str(manual)!r}, "
          f"data_dir={str(tmp_path / 'out')!r})\n"
          "assert 'apache_beam' not in sys.modules, 'apache_beam was imported'\n")
  run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120, check=False)
  assert run.returncode == 0, run.stderr[-2000:]


def test_pipeline_options_parse_like_tfds_build():
  options = build.pipeline_options(MULTI_PROCESSING).get_all_options()
  assert options["runner"] == "DirectRunner"
  assert options["direct_num_workers"] == 2
  assert options["direct_running_mode"] == "multi_processing"
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  assert not tfds_features.beam_requested(tfds.download.DownloadConfig())
  assert tfds_features.beam_requested(tfds.download.DownloadConfig(
      beam_options=build.pipeline_options(IN_MEMORY)))


def _corrupt_label(manual, case_id):
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  path = manual / "labelsTr" / f"{case_id}.nii.gz"
  img = nib.load(str(path))
  data = np.asarray(img.dataobj).copy()
  data[0, 0, 0] = 7  # not a declared label value
  nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))
  return path


def test_bad_file_on_a_beam_worker_gives_the_in_process_error(tmp_path):
  manual = synthetic.write_nnunet_layout(tmp_path / "raw", shape=(8, 8, 8), num_train=3)
  bad = _corrupt_label(manual, "brain_002")
  errors = {}
  for name, options in (("local", None), ("in_memory", IN_MEMORY),
                        ("multi_processing", MULTI_PROCESSING)):
    data_dir = tmp_path / name
    with pytest.raises(ValueError) as e:
      build.build("segmentation3d", manual_dir=manual, data_dir=data_dir, beam_options=options)
    errors[name] = str(e.value)
    assert list(data_dir.iterdir()) == [], name  # no partial dataset, no temporary folder
  assert str(bad) in errors["local"] and "[7]" in errors["local"]
  assert errors["in_memory"] == errors["local"]
  assert errors["multi_processing"] == errors["local"]
  assert "\n" not in errors["multi_processing"]


def _tfds_build(manual, data_dir, *options):
  """`tfds build segmentation3d ...` through TFDS's own command's code (without TensorFlow)."""
  # Imported here: the CLI's modules are not needed by the other tests.
  from tensorflow_datasets.scripts.cli import build as cli  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.scripts.cli import cli_utils  # pylint: disable=g-import-not-at-top
  parse = cli_utils.make_flags_parser(cli.Args, "tfds build")
  parse(["tfds", "segmentation3d", "--manual_dir", str(manual), "--data_dir", str(data_dir),
         "--imports", "datasets_tfds.segmentation3d.segmentation3d_dataset_builder",
         *options]).execute()
  return data_dir / "segmentation3d" / "default" / "1.0.0"


def test_tfds_build_command_uses_beam_only_when_given_pipeline_options(tmp_path):
  manual = synthetic.write_nnunet_layout(tmp_path / "raw", shape=(8, 8, 8), num_train=2)
  built = _tfds_build(manual, tmp_path / "beam", "--beam_pipeline_options", IN_MEMORY)
  assert (built / fingerprint.FILENAME).is_file()
  assert (built / "dataset_info.json").is_file()
  # A failing case shows who ran it: Beam names its transform, the in-process build does not.
  _corrupt_label(manual, "brain_001")
  with pytest.raises(ValueError, match=r"\[while running 'train/Load'\]"):
    _tfds_build(manual, tmp_path / "beam2", "--beam_pipeline_options", IN_MEMORY)
  with pytest.raises(ValueError, match="brain_001") as e:
    _tfds_build(manual, tmp_path / "local")
  assert "while running" not in str(e.value)


def test_worker_error_unwraps_a_worker_traceback():
  text = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
          "ValueError: /data/a.nii.gz: label values [7] are not declared.\n\n"
          "During handling of the above exception, another exception occurred:\n"
          "ValueError: /data/a.nii.gz: label values [7] are not declared. "
          "[while running 'train/Load']\n")
  e = build.worker_error(RuntimeError(text))
  assert type(e) is ValueError
  assert str(e) == "/data/a.nii.gz: label values [7] are not declared."
  missing = build.worker_error(RuntimeError("FileNotFoundError: /data/b.nii.gz: no such file"))
  assert type(missing) is FileNotFoundError
  assert build.worker_error(RuntimeError("pipeline cancelled")) is None


# --- The combiners against numpy. ---


def _chunks(rng, sizes):
  return [rng.normal(1000.0, 7.0, size=n) for n in sizes]


def test_moments_merge_in_any_order_equals_numpy():
  rng = np.random.default_rng(0)
  chunks = _chunks(rng, (1, 37, 500, 2, 1000))
  combiner = fingerprint.MomentsCombiner()
  everything = np.concatenate(chunks)
  for order in itertools.permutations(range(len(chunks))):
    acc = combiner.create_accumulator()
    for i in order:
      acc = combiner.add_input(acc, chunks[i])
    m = combiner.extract_output(acc)
    assert m.count == everything.size
    assert m.mean == pytest.approx(np.mean(everything), rel=1e-13)
    assert m.std == pytest.approx(np.std(everything), rel=1e-10)
  # Merging partial accumulators (as Beam does across workers) gives the same.
  parts = [combiner.add_input(combiner.add_input(combiner.create_accumulator(), chunks[0]),
                              chunks[3]),
           combiner.add_input(combiner.create_accumulator(), chunks[4]),
           combiner.add_input(combiner.add_input(combiner.create_accumulator(), chunks[2]),
                              chunks[1])]
  merged = combiner.merge_accumulators(parts)
  assert merged.mean == pytest.approx(np.mean(everything), rel=1e-13)
  assert merged.std == pytest.approx(np.std(everything), rel=1e-10)
  assert fingerprint.Moments.of(np.zeros(0)).count == 0


def test_percentiles_of_pooled_samples_equal_numpy():
  rng = np.random.default_rng(1)
  chunks = [c.astype(np.float32) for c in _chunks(rng, (10, 300, 77))]
  combiner = fingerprint.SamplesCombiner()
  a = combiner.merge_accumulators([combiner.add_input(combiner.create_accumulator(), c)
                                   for c in reversed(chunks)])
  count, pct = combiner.extract_output(a)
  pooled = np.concatenate(chunks).astype(np.float64)
  assert count == pooled.size
  assert pct == tuple(np.percentile(pooled, (0.5, 50.0, 99.5)))


def _hand_case(case_id, seed, *, labelled=True):
  rng = np.random.default_rng(seed)
  image = np.zeros((6, 7, 8, 2), np.float32)
  image[1:5, 2:6, 1:7] = rng.normal(100.0, 20.0, size=(4, 4, 6, 2)).round(2)
  label = np.zeros((6, 7, 8), np.uint8)
  label[2:4, 3:5, 2:6] = rng.integers(1, 3, size=(2, 2, 4))
  affine = np.diag([-0.8, -0.8, 2.5, 1.0])
  return layouts.Case(case_id=case_id, image=image, label=label if labelled else None,
                      affine=affine, spacing=(0.8, 0.8, 2.5))


def test_split_fingerprint_against_numpy_and_any_grouping():
  cases = [_hand_case(f"case_{i}", i) for i in range(4)]
  fps = [fingerprint.of_case(c, samples_per_case=5) for c in cases]
  result = fingerprint.reduce_split(fps)
  for ch in range(2):
    values = np.concatenate([c.image[..., ch][c.label > 0] for c in cases]).astype(np.float64)
    stats = result["channels"][ch]
    assert stats["count"] == values.size == 4 * 16
    assert stats["mean"] == pytest.approx(values.mean(), rel=1e-13)
    assert stats["std"] == pytest.approx(values.std(), rel=1e-12)
    assert (stats["min"], stats["max"]) == (values.min(), values.max())
    # 5 samples per case, drawn from the case's own stream.
    samples = np.concatenate([
        np.asarray(fingerprint.of_case(c, samples_per_case=5).foreground[ch].samples,
                   np.float64) for c in cases])
    assert stats["num_samples"] == samples.size == 20
    assert set(samples) <= set(values)
    lo, med, hi = np.percentile(samples, (0.5, 50.0, 99.5))
    assert (stats["percentile_00_5"], stats["median"], stats["percentile_99_5"]) == (lo, med, hi)
  # Any arrival order and grouping: the same result, exactly.
  combiner = fingerprint.SplitCombiner()
  accs = [combiner.add_input(combiner.create_accumulator(), fp) for fp in reversed(fps)]
  regrouped = combiner.merge_accumulators([combiner.merge_accumulators(accs[:3]), accs[3]])
  assert combiner.extract_output(regrouped) == result
  # The case's geometry.
  entry = result["cases"][0]
  assert entry["shape"] == [6, 7, 8] and entry["nonzero_box"] == [[1, 5], [2, 6], [1, 7]]
  assert entry["spacing"] == [0.8, 0.8, 2.5] and entry["axcodes"] == "LPS"
  with pytest.raises(ValueError, match="case_0 appears twice"):
    combiner.add_input(regrouped, fps[0])
  # An unlabelled case makes the split's intensity statistics unknown.
  unlabelled = fingerprint.of_case(_hand_case("case_9", 9, labelled=False))
  assert fingerprint.reduce_split(fps + [unlabelled])["channels"] == [None, None]


def test_case_sampling_depends_on_the_case_id_not_the_position():
  a = fingerprint.of_case(_hand_case("brain_001", 0), samples_per_case=3)
  b = fingerprint.of_case(_hand_case("brain_001", 0), samples_per_case=3)
  c = fingerprint.of_case(_hand_case("brain_002", 0), samples_per_case=3)
  np.testing.assert_array_equal(a.foreground[0].samples, b.foreground[0].samples)
  assert not np.array_equal(a.foreground[0].samples, c.foreground[0].samples)


@pytest.mark.parametrize("orientation", [None, "RAS", "LPS", "PIR"])
@pytest.mark.parametrize("crop_nonzero", [False, True])
def test_grid_is_forwards_shape_and_spacing_before_resampling(orientation, crop_nonzero):
  image, label, affine = synthetic.generate_case((10, 12, 14), spacing=(0.9, 1.1, 2.3),
                                                 axcodes="LPI", num_channels=1, seed=0)
  case = layouts.Case(case_id="c", image=image, label=label, affine=affine, spacing=(1, 1, 1))
  _, _, record = geometry.forward(image, affine, label=label, orientation=orientation,
                                  target_spacing=None, crop_nonzero=crop_nonzero)
  shape, spacing = fingerprint.of_case(case, intensities=False).grid(
      orientation=orientation, crop_nonzero=crop_nonzero)
  assert shape == tuple(record.shape_before_resampling)
  assert spacing == tuple(record.spacing_before_resampling)


# --- fit and planning from the fingerprint. ---


class _Unreadable(datasets.Cases):
  """`Cases` whose volumes must not be read."""

  def __getitem__(self, i):
    raise AssertionError("a case was read although the fingerprint covers it")


def _ds_config(**overrides):
  ds = load_experiment_config("decathlon_unet3d").dataset
  for k, v in overrides.items():
    ds[k] = v
  return ds


@pytest.mark.parametrize("spacing_rule", ["median", "nnunet"])
def test_fit_from_the_fingerprint_equals_fit_by_reading(nnunet, spacing_rule):
  _, local, on_beam = nnunet
  overrides = dict(orientation="RAS", target_spacing=spacing_rule, crop_nonzero=True,
                   normalization="ct,full_volume_mean")
  ds = _ds_config(**overrides)
  names = datasets.names(local)
  for builder in (local, on_beam):
    train = datasets.Cases(builder, "train")
    selection = input_pipeline.training_fingerprint(builder, train)
    assert selection is not None and selection.channels is not None
    by_reading = preprocessing.fit(ds, names, train)
    from_fingerprint = preprocessing.fit(ds, names, _Unreadable(builder, "train"),
                                         fingerprint=selection)
    assert from_fingerprint == by_reading
    assert by_reading.intensity_stats[0] is not None and by_reading.target_spacing is not None
  # And through the input pipeline (which finds the fingerprint itself).
  config = load_experiment_config("decathlon_unet3d")
  for k, v in dict(overrides, fold=None).items():  # fold None: the whole train split trains
    config.dataset[k] = v
  assert input_pipeline.fit_preprocessing(config, local) == by_reading


def test_fit_of_a_subset_reads_only_what_the_fingerprint_cannot_give(nnunet):
  _, local, _ = nnunet
  names = datasets.names(local)
  subset = datasets.Cases(local, "train", [0, 2, 3])
  selection = input_pipeline.training_fingerprint(local, subset)
  assert len(selection.cases) == 3 and selection.channels is None  # not the whole split
  # Spacing alone: from the fingerprint's per-case entries, no case read.
  ds = _ds_config(orientation="RAS", target_spacing="median", crop_nonzero=True)
  assert (preprocessing.fit(ds, names, _Unreadable(local, "train", [0, 2, 3]),
                            fingerprint=selection)
          == preprocessing.fit(ds, names, subset))
  # 'ct' statistics of a subset: the cases are read, the same as without a fingerprint.
  ds = _ds_config(orientation="RAS", target_spacing="median", crop_nonzero=True,
                  normalization="ct,ct")
  assert (preprocessing.fit(ds, names, subset, fingerprint=selection)
          == preprocessing.fit(ds, names, subset))


def test_no_fingerprint_falls_back_to_reading(nnunet, tmp_path):
  manual, _, _ = nnunet
  builder = build.build("segmentation3d", manual_dir=manual, data_dir=tmp_path)
  (pathlib.Path(builder.data_dir) / fingerprint.FILENAME).unlink()  # as built by older medjax
  train = datasets.Cases(builder, "train")
  assert input_pipeline.training_fingerprint(builder, train) is None
  bad = pathlib.Path(builder.data_dir) / fingerprint.FILENAME
  bad.write_text(json.dumps({"format": 99}))
  with pytest.raises(ValueError, match="not a medjax dataset fingerprint"):
    input_pipeline.training_fingerprint(builder, train)


def test_median_case_shape_from_the_fingerprint_equals_reading(nnunet):
  _, local, _ = nnunet
  train = datasets.Cases(local, "train")
  ds = _ds_config(orientation="RAS", target_spacing="1.0,1.0,1.0", crop_nonzero=True)
  prep = preprocessing.fit(ds, datasets.names(local), train)
  selection = input_pipeline.training_fingerprint(local, train)
  assert (planning.median_case_shape(_Unreadable(local, "train"), prep, fingerprint=selection)
          == planning.median_case_shape(train, prep))


def test_fingerprint_file_describes_every_case(nnunet):
  manual, local, _ = nnunet
  text = (pathlib.Path(local.data_dir) / fingerprint.FILENAME).read_text()
  raw = json.loads(text)
  assert raw["format"] == fingerprint.FORMAT and raw["seed"] == fingerprint.SEED
  train = raw["splits"]["train"]
  assert train["num_cases"] == 4 and len(train["channels"]) == 2
  assert set(train["channels"][0]) == set(fingerprint.CHANNEL_FIELDS)
  described = layouts.read_dataset(manual)
  assert [c["case_id"] for c in train["cases"]] == sorted(c.case_id for c in described.training)
  for entry in train["cases"]:
    assert entry["axcodes"] == "LPS" and entry["shape"] == list(SHAPE)
    assert entry["spacing"] == pytest.approx([1.0, 1.25, 2.0])
  assert os.path.basename(os.path.dirname(local.data_dir)) == local.builder_config.name
