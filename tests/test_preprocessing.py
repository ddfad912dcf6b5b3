"""Tests for medjax.data.preprocessing and the nnU-Net CT scheme of medjax.data.normalize.

Expected values are hand-computed numbers, nnU-Net's published formulas written out here, or what
nibabel / numpy give for the same question; never the library's own code restated.
"""

import dataclasses
import json

import nibabel as nib
from nibabel import orientations
import numpy as np
import pytest

from medjax.data import datasets
from medjax.data import fingerprint
from medjax.data import layouts
from medjax.data import normalize
from medjax.data import preprocessing
from medjax.data import synthetic

from conftest import load_experiment_config

# Foreground intensities, unsorted: sorted -100, 0, 100, 200, 300.
# mean 100; population variance (200^2 + 100^2 + 0 + 100^2 + 200^2) / 5 = 20000;
# np.percentile (linear): rank 0.005 * 4 = 0.02 -> -100 + 0.02 * 100 = -98,
#                         rank 0.995 * 4 = 3.98 -> 200 + 0.98 * 100 = 298.
CT_SAMPLES = np.array([300.0, -100.0, 200.0, 0.0, 100.0])
CT_STATS = {"mean": 100.0, "std": np.sqrt(20000.0), "percentile_00_5": -98.0,
            "percentile_99_5": 298.0}
# Clipped to [-98, 298], minus 100, over sqrt(20000) = 141.4213562...: 198 / 141.42 = 1.4000714.
CT_INPUT = np.array([-500.0, -98.0, 0.0, 100.0, 298.0, 1000.0])
CT_EXPECTED = np.array([-1.4000714267, -1.4000714267, -0.7071067812, 0.0, 1.4000714267,
                        1.4000714267])

BRAIN_NAMES = datasets.DatasetNames(channel_names=("T1", "T2", "FLAIR"),
                                    class_names=("background", "CSF", "GM", "WM"),
                                    label_values=(0, 1, 2, 3))
ISEG_NAMES = datasets.DatasetNames(channel_names=("T1", "T2"),
                                   class_names=("background", "CSF", "GM", "WM"),
                                   label_values=(0, 10, 150, 250))
SHAPE = (12, 14, 10)
# RAS voxel sizes of the cases of the geometry round trip. Per axis the medians are 1, 1 and 2,
# each from a different mix of values; case 0 is already on that grid (no resampling).
CASE_SPACINGS = ((1.0, 1.0, 2.0), (1.5, 0.8, 2.0), (0.9, 1.25, 3.0))


def _ds_config(**overrides):
  """`config.dataset` of the Decathlon experiment (the keys `fit` reads), with overrides."""
  ds = load_experiment_config("decathlon_unet3d").dataset
  for k, v in overrides.items():
    ds[k] = v
  return ds


def _case(case_id, image, label, affine):
  return layouts.Case(case_id=case_id, image=np.asarray(image, np.float32), label=label,
                      affine=affine, spacing=tuple(nib.affines.voxel_sizes(affine)))


def _ras_spacing(affine):
  """Voxel sizes of `affine`'s axes, reordered to R-L, A-P, S-I by nibabel's orientation."""
  sizes = nib.affines.voxel_sizes(affine)
  ornt = orientations.io_orientation(affine)  # row i: file axis i -> RAS axis ornt[i, 0]
  out = np.empty(3)
  for i in range(3):
    out[int(ornt[i, 0])] = sizes[i]
  return out


# ---------------------------------------------------------------------------------------------
# nnU-Net's CT normalisation.


def test_ct_stats_hand_computed():
  stats = normalize.ct_stats(CT_SAMPLES)
  assert set(stats) == set(normalize.CT_STATS_FIELDS)
  assert stats["mean"] == pytest.approx(100.0)
  assert stats["std"] == pytest.approx(141.42135623730951)
  assert stats["percentile_00_5"] == pytest.approx(-98.0)
  assert stats["percentile_99_5"] == pytest.approx(298.0)
  assert all(isinstance(v, float) for v in stats.values())  # JSON-able


def test_ct_stats_without_samples_raises():
  with pytest.raises(ValueError, match="no foreground"):
    normalize.ct_stats(np.zeros(0))


def test_normalize_ct_clips_then_z_scores():
  out = normalize.normalize_ct(CT_INPUT, CT_STATS)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, CT_EXPECTED, rtol=1e-6, atol=1e-7)
  # Any shape; the values do not depend on the position.
  out3 = normalize.normalize_ct(CT_INPUT.reshape(1, 2, 3), CT_STATS)
  np.testing.assert_allclose(out3.ravel(), CT_EXPECTED, rtol=1e-6, atol=1e-7)


def test_normalize_ct_constant_foreground_divides_by_1e_minus_8():
  # nnU-Net: (x - mean) / max(std, 1e-8).
  stats = {"mean": 5.0, "std": 0.0, "percentile_00_5": 0.0, "percentile_99_5": 10.0}
  np.testing.assert_allclose(normalize.normalize_ct(np.array([5.0, 6.0]), stats), [0.0, 1e8])


def test_normalize_ct_missing_stats_field_raises():
  stats = dict(CT_STATS)
  del stats["percentile_99_5"]
  with pytest.raises(ValueError, match="percentile_99_5"):
    normalize.normalize_ct(CT_INPUT, stats)


def test_foreground_samples_takes_only_labelled_voxels():
  channel = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
  label = np.zeros((2, 3, 4), np.uint8)
  label[0, 1, 2] = 1  # value 6
  label[1, 0, 0] = 3  # value 12
  label[1, 2, 3] = 2  # value 23
  out = normalize.foreground_samples(channel, label, rng=np.random.default_rng(0))
  assert out.dtype == np.float64
  np.testing.assert_array_equal(np.sort(out), [6.0, 12.0, 23.0])


def test_foreground_samples_caps_and_is_reproducible():
  channel = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
  label = (channel % 3 == 0).astype(np.uint8)  # 334 foreground voxels: 0, 3, ..., 999
  foreground = set(range(0, 1000, 3))
  a = normalize.foreground_samples(channel, label, rng=np.random.default_rng(7), num_samples=50)
  b = normalize.foreground_samples(channel, label, rng=np.random.default_rng(7), num_samples=50)
  c = normalize.foreground_samples(channel, label, rng=np.random.default_rng(8), num_samples=50)
  assert a.shape == (50,)
  assert len(set(a.tolist())) == 50  # without replacement
  assert set(a.tolist()) <= foreground
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  # More samples allowed than foreground voxels: all of them, once.
  every = normalize.foreground_samples(channel, label, rng=np.random.default_rng(7),
                                       num_samples=10_000)
  assert sorted(every.tolist()) == sorted(foreground)


def test_foreground_samples_shape_mismatch_raises():
  with pytest.raises(ValueError, match="shape"):
    normalize.foreground_samples(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)),
                                 rng=np.random.default_rng(0))


def test_normalize_channels_mixed_modes_hand_computed():
  x = np.array([0.0, 0.0, 2.0, 4.0, 6.0])
  ct = np.array([-500.0, -98.0, 0.0, 100.0, 1000.0])
  image = np.stack([x, ct], axis=-1)  # [5, 2]
  out = normalize.normalize_channels(image, ("full_volume_mean", "ct"), clip_percentiles=None,
                                     dataset_stats=(None, CT_STATS))
  assert out.shape == (5, 2) and out.dtype == np.float32
  # full_volume_mean of x: mean 2.4, population variance 11.2 - 2.4^2 = 5.44.
  np.testing.assert_allclose(out[:, 0], (x - 2.4) / np.sqrt(5.44), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(out[:, 1], CT_EXPECTED[[0, 1, 2, 3, 5]], rtol=1e-6, atol=1e-7)
  # The per-volume percentile clip is not applied to a ct channel.
  clipped = normalize.normalize_channels(image, ("full_volume_mean", "ct"),
                                         dataset_stats=(None, CT_STATS))
  np.testing.assert_array_equal(clipped[:, 1], out[:, 1])


@pytest.mark.parametrize("dataset_stats", [None, (CT_STATS, None)])
def test_normalize_channels_ct_without_stats_raises(dataset_stats):
  image = np.ones((4, 2))
  with pytest.raises(ValueError, match="channel 1 .*'ct'"):
    normalize.normalize_channels(image, ("mean", "ct"), dataset_stats=dataset_stats)


def test_normalize_channels_wrong_mode_count_raises():
  with pytest.raises(ValueError, match="one normalisation per channel"):
    normalize.normalize_channels(np.ones((4, 2)), ("mean",))


# ---------------------------------------------------------------------------------------------
# config.dataset parsing.


@pytest.mark.parametrize("channels, expected", [
    (("CT",), ("ct",)),
    (("ct", "T1"), ("ct", "full_volume_mean")),
    (("Ct",), ("ct",)),
    ((" CT ",), ("ct",)),
    (("T1", "T2", "FLAIR"), ("full_volume_mean",) * 3),
    (("CTA",), ("full_volume_mean",)),
])
def test_resolve_normalization_auto(channels, expected):
  assert preprocessing.resolve_normalization("auto", channels) == expected


def test_resolve_normalization_one_mode_and_per_channel():
  assert preprocessing.resolve_normalization("mean", ("T1", "T2")) == ("mean", "mean")
  assert preprocessing.resolve_normalization("ct", ("CT",)) == ("ct",)
  assert preprocessing.resolve_normalization("ct, max_min", ("CT", "PET")) == ("ct", "max_min")
  assert preprocessing.resolve_normalization("none,brats,mean", ("a", "b", "c")) == (
      "none", "brats", "mean")


def test_resolve_normalization_wrong_count_raises():
  with pytest.raises(ValueError, match=r"3 modes for 2 channels \('T1', 'T2'\)"):
    preprocessing.resolve_normalization("mean,max,none", ("T1", "T2"))


@pytest.mark.parametrize("setting", ["zscore", "mean,zscore", "z-score"])
def test_resolve_normalization_unknown_mode_raises(setting):
  bad = setting.split(",")[-1]
  with pytest.raises(ValueError, match=f"must be one of .*got '{bad}'"):
    preprocessing.resolve_normalization(setting, ("T1", "T2"))


@pytest.mark.parametrize("setting, expected", [
    ("none", None), ("None", None), ("", None), ("RAS", "RAS"), ("lps", "LPS"),
    ("PIR", "PIR"), ("sLa", "SLA"),
])
def test_resolve_orientation(setting, expected):
  assert preprocessing.resolve_orientation(setting) == expected


@pytest.mark.parametrize("setting", ["RRS", "RA", "RASR", "XYZ", "LRS", "R A S", "RAS "])
def test_resolve_orientation_bad_codes_raise(setting):
  with pytest.raises(ValueError, match="config.dataset.orientation"):
    preprocessing.resolve_orientation(setting)


@pytest.mark.parametrize("setting, expected", [
    ("median", "median"), ("nnunet", "nnunet"), ("none", "none"), ("Median", "median"),
    ("1,1,2.5", (1.0, 1.0, 2.5)), ("(1.0, 1.0, 2.5)", (1.0, 1.0, 2.5)),
    ("[0.5,0.75,3]", (0.5, 0.75, 3.0)),
])
def test_parse_target_spacing(setting, expected):
  assert preprocessing.parse_target_spacing(setting) == expected


@pytest.mark.parametrize("setting", ["mean", "", "1,1", "1,1,1,1", "1,0,2", "-1,1,1", "1,x,2",
                                     "1 1 2.5"])
def test_parse_target_spacing_bad_raises(setting):
  with pytest.raises(ValueError, match="config.dataset.target_spacing"):
    preprocessing.parse_target_spacing(setting)


@pytest.mark.parametrize("setting", ["nan,1,1", "1,inf,1"])
def test_parse_target_spacing_non_finite_raises(setting):
  # BUG: min((nan, 1, 1)) is nan and `nan <= 0` is False, so NaN (and inf) pass the check; the
  # error surfaces only later, in geometry.forward, without naming config.dataset.
  with pytest.raises(ValueError, match="config.dataset.target_spacing"):
    preprocessing.parse_target_spacing(setting)


# ---------------------------------------------------------------------------------------------
# Saving and loading.


def _full_preprocessing():
  names = datasets.DatasetNames(channel_names=("CT", "PET"), class_names=("background", "liver",
                                                                         "tumour"),
                                label_values=(0, 1, 2), regions={"liver+tumour": (1, 2)})
  return preprocessing.Preprocessing(
      names=names, normalization=("ct", "mean"), clip_percentiles=(0.5, 99.5),
      intensity_stats=(dict(CT_STATS), None), orientation="LPS",
      target_spacing=(0.8, 0.8, 2.5), crop_nonzero=True, image_order=1, label_method="nearest")


def test_save_load_round_trip(tmp_path):
  pp = _full_preprocessing()
  path = pp.save(tmp_path)
  assert path == tmp_path / "preprocessing.json"
  assert [p.name for p in tmp_path.iterdir()] == ["preprocessing.json"]  # no temporary left
  json.loads(path.read_text())  # plain JSON
  loaded = preprocessing.load(tmp_path)
  assert loaded.to_dict() == pp.to_dict()
  assert loaded == pp


def test_save_load_round_trip_of_defaults(tmp_path):
  pp = preprocessing.Preprocessing(names=ISEG_NAMES, normalization=("full_volume_mean",) * 2)
  pp.save(tmp_path)
  loaded = preprocessing.load(tmp_path)
  assert loaded.to_dict() == pp.to_dict()
  assert loaded.intensity_stats == (None, None)
  assert loaded.orientation is None and loaded.target_spacing is None


def test_load_missing_file_is_none(tmp_path):
  assert preprocessing.load(tmp_path) is None


@pytest.mark.parametrize("text", [
    "{not json",
    "",
    "{}",
    '{"names": 3, "normalization": ["none"]}',
    '{"names": {"channel_names": ["T1"], "class_names": ["bg", "x"], "label_values": [0, 1]},'
    ' "normalization": ["zscore"]}',
])
def test_load_corrupt_file_raises_naming_it(tmp_path, text):
  path = tmp_path / "preprocessing.json"
  path.write_text(text)
  with pytest.raises(ValueError, match="not a valid medjax preprocessing file") as info:
    preprocessing.load(tmp_path)
  assert str(path) in str(info.value)


@pytest.mark.parametrize("text", [
    "[]",
    "null",
    '{"names": {"channel_names": ["CT"], "class_names": ["bg", "x"], "label_values": [0, 1]},'
    ' "normalization": ["ct"], "intensity_stats": [5]}',
])
def test_load_valid_json_of_wrong_type_raises_naming_it(tmp_path, text):
  # BUG: these are valid JSON but not a preprocessing object; `from_dict` raises AttributeError
  # (`list.get`, `NoneType.get`, `int.items`), which `load` does not turn into its ValueError.
  path = tmp_path / "preprocessing.json"
  path.write_text(text)
  with pytest.raises(ValueError, match="not a valid medjax preprocessing file") as info:
    preprocessing.load(tmp_path)
  assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# The identity contract (iSeg-2017).


def test_iseg_experiment_config_fits_the_identity():
  ds = load_experiment_config("iseg2017_unet3d").dataset
  pp = preprocessing.fit(ds, ISEG_NAMES, train_cases=())  # reads no case
  assert pp.orientation is None and pp.target_spacing is None and not pp.crop_nonzero
  assert pp.normalization == ("full_volume_mean", "full_volume_mean")
  assert pp.clip_percentiles == (0.1, 99.8)


@pytest.mark.parametrize("mode", normalize.MODES)
@pytest.mark.parametrize("clip", [(0.1, 99.8), None])
def test_identity_prepare_is_normalize(mode, clip):
  image, label, _ = synthetic.generate_case(SHAPE, num_channels=2, seed=0)
  affine = np.array([[0.0, 0.0, 1.2, -3.0], [-1.0, 0.0, 0.0, 4.0], [0.0, 0.9, 0.0, 5.0],
                     [0.0, 0.0, 0.0, 1.0]])  # not RAS: the contract keeps the file's order
  pp = preprocessing.Preprocessing(names=ISEG_NAMES, normalization=(mode, mode),
                                   clip_percentiles=clip)
  for raw in (image, image.astype(np.float32) + np.float32(0.37)):
    prepared = pp.prepare(raw, affine, label)
    np.testing.assert_array_equal(prepared.image,
                                  normalize.normalize(raw, mode, clip_percentiles=clip))
    assert prepared.image.dtype == np.float32
    np.testing.assert_array_equal(prepared.label, label)
    np.testing.assert_array_equal(np.asarray(prepared.record.affine), affine)
    assert prepared.record.shape_after_resampling == SHAPE
  assert pp.prepare(image, affine).label is None


def test_identity_restore_returns_probabilities_unchanged():
  image, _, affine = synthetic.generate_case(SHAPE, num_channels=2, seed=0)
  pp = preprocessing.Preprocessing(names=ISEG_NAMES, normalization=("full_volume_mean",) * 2)
  record = pp.prepare(image, affine).record
  probs = np.random.default_rng(0).dirichlet(np.ones(4), size=SHAPE).astype(np.float32)
  np.testing.assert_array_equal(pp.restore(probs, record), probs)


def test_prepare_wrong_channel_count_raises():
  pp = preprocessing.Preprocessing(names=ISEG_NAMES, normalization=("mean",) * 2)
  with pytest.raises(ValueError, match=r"expected \[D, H, W, 2\]"):
    pp.prepare(np.ones(SHAPE + (3,)), np.eye(4))


# ---------------------------------------------------------------------------------------------
# Real geometry: LPS files, RAS network grid, median spacing, non-zero crop.


@pytest.fixture(scope="module")
def lps_cases():
  cases = []
  for i, spacing in enumerate(CASE_SPACINGS):
    image, label, affine = synthetic.generate_case(SHAPE, spacing=spacing, axcodes="LPS",
                                                   num_channels=3, seed=0, subject_id=i + 1)
    assert nib.aff2axcodes(affine) == ("L", "P", "S")
    cases.append(_case(f"brain_{i + 1:03d}", image, label, affine))
  return cases


@pytest.fixture(scope="module")
def lps_preprocessing(lps_cases):
  ds = _ds_config(orientation="RAS", target_spacing="median", crop_nonzero=True)
  return preprocessing.fit(ds, BRAIN_NAMES, lps_cases)


def test_fit_median_spacing_from_nibabel(lps_cases, lps_preprocessing):
  pp = lps_preprocessing
  spacings = np.array([_ras_spacing(c.affine) for c in lps_cases])
  np.testing.assert_allclose(spacings, CASE_SPACINGS, rtol=1e-12)
  np.testing.assert_allclose(pp.target_spacing, np.median(spacings, axis=0), rtol=1e-12)
  np.testing.assert_allclose(pp.target_spacing, (1.0, 1.0, 2.0), rtol=1e-12)
  assert pp.orientation == "RAS" and pp.crop_nonzero
  assert pp.normalization == ("full_volume_mean",) * 3  # 'auto' without a CT channel
  assert pp.intensity_stats == (None, None, None)


def test_prepare_gives_ras_grid(lps_cases, lps_preprocessing):
  for case in lps_cases:
    prepared = lps_preprocessing.prepare(case.image, case.affine, case.label)
    affine = np.asarray(prepared.record.affine)
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    assert prepared.image.shape == prepared.label.shape + (3,)
    assert prepared.image.dtype == np.float32 and prepared.label.dtype == np.uint8
    # The prepared grid's voxel size is the target up to the rounding of the shape.
    np.testing.assert_allclose(nib.affines.voxel_sizes(affine), (1.0, 1.0, 2.0), rtol=0.15)


def test_prepare_without_resampling_is_nibabel_reorientation_and_crop(lps_cases,
                                                                      lps_preprocessing):
  case = lps_cases[0]  # spacing (1, 1, 2) = the target: nothing is resampled
  ras_image_img = nib.as_closest_canonical(nib.Nifti1Image(case.image, case.affine))
  ras_label_img = nib.as_closest_canonical(nib.Nifti1Image(case.label, case.affine))
  ras_image = np.asanyarray(ras_image_img.dataobj)
  ras_label = np.asanyarray(ras_label_img.dataobj)
  keep = np.any(ras_image != 0, axis=-1) | (ras_label > 0)
  nz = np.nonzero(keep)
  box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in nz)
  assert any(s.stop - s.start < n for s, n in zip(box, ras_label.shape))  # the crop crops

  prepared = lps_preprocessing.prepare(case.image, case.affine, case.label)
  np.testing.assert_array_equal(prepared.label, ras_label[box])
  np.testing.assert_allclose(np.asarray(prepared.record.affine), ras_label_img.slicer[box].affine,
                             atol=1e-9)
  # With normalisation 'none', the image is the reoriented, cropped raw image itself.
  raw = dataclasses.replace(lps_preprocessing, normalization=("none",) * 3, clip_percentiles=None)
  np.testing.assert_array_equal(raw.prepare(case.image, case.affine).image, ras_image[box])


def test_restore_one_hot_gives_back_the_label(lps_cases, lps_preprocessing):
  pp = lps_preprocessing
  for i, case in enumerate(lps_cases):
    prepared = pp.prepare(case.image, case.affine, case.label)
    one_hot = np.eye(pp.num_classes, dtype=np.float32)[prepared.label]
    probs = pp.restore(one_hot, prepared.record)
    assert probs.shape == SHAPE + (pp.num_classes,) and probs.dtype == np.float32
    restored = probs.argmax(axis=-1)
    if i == 0:  # no resampling: exact
      np.testing.assert_array_equal(restored, case.label)
    else:  # resampled there and back (linear): thin structures may lose a few voxels
      assert np.mean(restored == case.label) > 0.95


# ---------------------------------------------------------------------------------------------
# 'ct' statistics from the training cases' foreground.


def _ct_cases(shape, foreground, seed=0):
  rng = np.random.default_rng(seed)
  cases = []
  for i, n in enumerate(foreground):
    image = np.stack([rng.integers(-1000, 2000, size=shape),
                      rng.integers(0, 500, size=shape)], axis=-1)
    label = np.zeros(int(np.prod(shape)), np.uint8)
    label[rng.choice(label.size, n, replace=False)] = rng.integers(1, 3, size=n)
    cases.append(_case(f"ct_{i}", image, label.reshape(shape), np.diag([0.8, 0.8, 2.5, 1.0])))
  return cases


CT_NAMES = datasets.DatasetNames(channel_names=("ct", "PET"),
                                 class_names=("background", "liver", "tumour"),
                                 label_values=(0, 1, 2))


def test_fit_ct_stats_from_all_foreground_voxels():
  cases = _ct_cases((10, 12, 9), foreground=(150, 400, 37))  # all < 10,000: no sampling
  ds = _ds_config(orientation="none", target_spacing="none", crop_nonzero=False)
  pp = preprocessing.fit(ds, CT_NAMES, cases)
  assert pp.normalization == ("ct", "full_volume_mean")
  assert pp.intensity_stats[1] is None
  values = np.concatenate([c.image[..., 0][c.label > 0] for c in cases]).astype(np.float64)
  assert values.size == 150 + 400 + 37
  stats = pp.intensity_stats[0]
  assert stats["mean"] == pytest.approx(values.mean(), rel=1e-12)
  assert stats["std"] == pytest.approx(values.std(), rel=1e-12)
  assert stats["percentile_00_5"] == pytest.approx(np.percentile(values, 0.5), rel=1e-12)
  assert stats["percentile_99_5"] == pytest.approx(np.percentile(values, 99.5), rel=1e-12)
  # prepare applies nnU-Net's CTNormalization with them to the ct channel.
  x = cases[0].image[..., 0].astype(np.float64)
  lo, hi = np.percentile(values, (0.5, 99.5))
  expected = (np.clip(x, lo, hi) - values.mean()) / values.std()
  prepared = pp.prepare(cases[0].image, cases[0].affine)
  np.testing.assert_allclose(prepared.image[..., 0], expected, rtol=1e-5, atol=1e-5)


def test_fit_ct_stats_sample_large_foreground_reproducibly():
  cases = _ct_cases((25, 25, 20), foreground=(12_500, 11_000))  # more than 10,000 each
  ds = _ds_config(orientation="none", target_spacing="none", crop_nonzero=False)
  a = preprocessing.fit(ds, CT_NAMES, cases).intensity_stats[0]
  b = preprocessing.fit(ds, CT_NAMES, list(reversed(cases))).intensity_stats[0]
  assert a == b  # seeded by case id, not by position
  values = np.concatenate([c.image[..., 0][c.label > 0] for c in cases]).astype(np.float64)
  # Mean and std from the moments of all 23,500 voxels; percentiles from 2 x 10,000 samples.
  assert a["mean"] == pytest.approx(values.mean(), rel=1e-12)
  assert a["std"] == pytest.approx(values.std(), rel=1e-12)
  samples = np.concatenate([
      normalize.foreground_samples(c.image[..., 0], c.label,
                                   rng=fingerprint.case_rng(c.case_id, 0))
      for c in cases])
  assert samples.size == 20_000
  lo, hi = np.percentile(samples, (0.5, 99.5))
  assert (a["percentile_00_5"], a["percentile_99_5"]) == (lo, hi)
  assert values.min() <= a["percentile_00_5"] < a["percentile_99_5"] <= values.max()


def test_fit_ct_needs_labels():
  cases = _ct_cases((8, 8, 8), foreground=(10,))
  unlabelled = [dataclasses.replace(cases[0], label=None)]
  ds = _ds_config(orientation="none", target_spacing="none", crop_nonzero=False)
  with pytest.raises(ValueError, match="ct_0 has no label"):
    preprocessing.fit(ds, CT_NAMES, unlabelled)
  with pytest.raises(ValueError, match="no training cases"):
    preprocessing.fit(ds, CT_NAMES, [])
