"""Tests for medjax.data.synthetic: layouts, geometry, determinism, anatomy and contrast."""

import hashlib
import json
import os

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medjax.data import iseg
from medjax.data import synthetic

# The real size, where one voxel is one real mm: ribbon thickness and partial volume are measurable.
@pytest.fixture(scope="module")
def real_case():
  """(t1, t2, flair, label class ids) of one full-size 1 mm subject (about 3 s)."""
  image, label, _ = synthetic.generate_case(synthetic.REAL_SHAPE, num_channels=3, seed=0,
                                            subject_id=2)
  return image[..., 0], image[..., 1], image[..., 2], label


def _interior(mask):
  """Voxels whose 6 neighbours share their tissue: free of partial volume at 1 mm."""
  return ndimage.binary_erosion(mask)


def test_layout_matches_download(iseg_raw_dir):
  train = sorted(os.listdir(iseg_raw_dir / iseg.TRAINING_FOLDER))
  assert train == sorted(f"subject-{i}-{k}.{e}" for i in (1, 2, 3)
                         for k in ("T1", "T2", "label") for e in ("hdr", "img"))
  assert sorted(os.listdir(iseg_raw_dir / iseg.TESTING_FOLDER)) == [
      "subject-11-T1.hdr", "subject-11-T1.img", "subject-11-T2.hdr", "subject-11-T2.img"]
  for kind, dtype in (("T1", np.int16), ("T2", np.int16), ("label", np.uint8)):
    img = nib.load(iseg_raw_dir / iseg.TRAINING_FOLDER / f"subject-2-{kind}.hdr")
    assert img.shape == (24, 28, 32, 1)  # trailing singleton axis, like the real files
    assert img.get_data_dtype() == dtype
    assert img.header.get_zooms()[:3] == (1.0, 1.0, 1.0)


def test_flat_layout_and_test_numbering(tmp_path):
  synthetic.write_iseg_layout(tmp_path / "d", shape=(12, 12, 12), num_train=2, num_test=2,
                              flat=True)
  subjects = iseg.find_subjects(tmp_path / "d")
  assert list(subjects) == [1, 2, 11, 12]
  assert [s.label is None for s in subjects.values()] == [False, False, True, True]
  assert all(s.t1.parent == tmp_path / "d" for s in subjects.values())


def test_deterministic_and_per_subject():
  a = synthetic.generate_subject((24, 28, 32), seed=3, subject_id=1)
  b = synthetic.generate_subject((24, 28, 32), seed=3, subject_id=1)
  c = synthetic.generate_subject((24, 28, 32), seed=3, subject_id=2)
  d = synthetic.generate_subject((24, 28, 32), seed=4, subject_id=1)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[2], c[2])  # anatomy differs between subjects
  assert not np.array_equal(a[0], d[0])


def test_skull_stripped_and_label_values(real_case):
  t1, t2, flair, label = real_case
  assert t1.dtype == t2.dtype == flair.dtype == np.int16 and label.dtype == np.uint8
  assert set(np.unique(label)) == {0, 1, 2, 3}
  brain = label > 0
  for img in (t1, t2, flair):
    assert np.all(img[~brain] == 0) and np.all(img[brain] > 0)
  t1, t2, label = synthetic.generate_subject((24, 28, 32), seed=0, subject_id=1)
  assert set(np.unique(label)) == set(iseg.LABEL_VALUES)
  assert np.all(t1[label == 0] == 0) and np.all(t2[label > 0] > 0)


def test_class_proportions(real_case):
  label = real_case[3]
  frac = np.bincount(label.ravel(), minlength=4) / label.size
  # This subject: 86.9 / 3.0 / 5.2 / 4.9 %. Real iSeg-2017: about 87 / 3 / 6 / 4 %, whose GM
  # includes the cerebellum's cortex, which the synthetic brains do not have.
  assert 0.84 < frac[0] < 0.90
  assert 0.02 < frac[1] < 0.045
  assert 0.04 < frac[2] < 0.07
  assert 0.035 < frac[3] < 0.065


def test_isointense_contrast(real_case):
  t1, t2, _, label = real_case
  # Tissue means on voxels free of partial volume (border voxels mix, see the next tests).
  mean = {(m, k): img[_interior(label == k)].mean() for m, img in (("T1", t1), ("T2", t2))
          for k in (1, 2, 3)}
  # T1: CSF dark, GM and WM within 15 % of each other.
  assert mean["T1", 1] < 0.5 * mean["T1", 2]
  assert abs(mean["T1", 3] - mean["T1", 2]) < 0.15 * mean["T1", 2]
  # T2: CSF bright, WM above GM.
  assert mean["T2", 1] > 1.5 * mean["T2", 3] > 1.5 * mean["T2", 2]
  assert mean["T2", 3] > 1.05 * mean["T2", 2]


def test_no_single_threshold_separates_gm_and_wm(real_case):
  """The bias field and noise make GM vs WM impossible with one global threshold."""
  t1, t2, _, label = real_case
  gm, wm = label == 2, label == 3
  for img in (t1, t2):
    values = np.sort(np.unique(img[gm | wm]))[::50]
    # Fraction of GM+WM voxels misclassified by the best threshold (either polarity).
    errors = [min(np.sum(img[gm] >= v) + np.sum(img[wm] < v),
                  np.sum(img[gm] < v) + np.sum(img[wm] >= v)) for v in values]
    assert min(errors) / np.sum(gm | wm) > 0.10


def _ribbon_statistic(label):
  """Median over GM voxels of (distance to the nearest WM + to the nearest CSF/background voxel)."""
  to_wm = ndimage.distance_transform_edt(label != 3)
  to_csf = ndimage.distance_transform_edt(label >= 2)
  return np.median((to_wm + to_csf)[label == 2])


def test_gm_ribbon_thickness(real_case):
  """The cortex is 2-3 mm thick, like a 6-month infant's (the old ribbon was 4.6 mm)."""
  label = real_case[3]
  box = tuple(slice(i.min() - 1, i.max() + 2) for i in np.nonzero(label))
  # Each distance ends at a voxel centre beyond the border, so the statistic exceeds the
  # thickness; calibrate that overshoot on a flat 2.5 mm ribbon at an oblique angle.
  grid = np.indices((40, 40, 40)).reshape(3, -1).T - 20.0
  across = (grid @ np.array([0.48, 0.6, 0.64]) + 0.3).reshape(40, 40, 40)
  slab = np.where(across < 0, 1, np.where(across < 2.5, 2, 3))
  overshoot = _ribbon_statistic(slab) - 2.5
  assert 0.5 < overshoot < 1.1
  thickness = _ribbon_statistic(real_case[3][box]) - overshoot
  assert 2.0 < thickness < 3.0


def test_partial_volume_at_borders(real_case):
  """A voxel straddling CSF and GM has a T2 between theirs; a voxel inside one tissue does not."""
  _, t2, _, label = real_case
  csf, gm = label == 1, label == 2
  inner_csf, inner_gm = _interior(csf), _interior(gm)
  lo, hi = np.median(t2[inner_gm]), np.median(t2[inner_csf])
  border = (csf & ndimage.binary_dilation(gm)) | (gm & ndimage.binary_dilation(csf))
  # Position between the two tissues' T2: 0 is GM's, 1 is CSF's.
  position = {name: (t2[m] - lo) / (hi - lo)
              for name, m in (("border", border), ("csf", inner_csf), ("gm", inner_gm))}
  assert 0.25 < np.median(position["border"]) < 0.75
  between = {name: np.mean((p > 0.2) & (p < 0.8)) for name, p in position.items()}
  # (Interior CSF reaches into the band only through the bias field.)
  assert between["border"] > 0.35
  assert between["gm"] < 0.05 and between["csf"] < 0.2
  assert between["border"] > 2 * max(between["gm"], between["csf"])


def test_subjects_differ_in_size_and_folding():
  labels = [synthetic.generate_case((48, 64, 80), seed=0, subject_id=i)[1] for i in (1, 2, 3)]
  volumes = [np.sum(label > 0) for label in labels]
  assert max(volumes) > 1.1 * min(volumes)
  for a, b in ((0, 1), (1, 2), (0, 2)):
    brain = 2 * np.sum((labels[a] > 0) & (labels[b] > 0)) / (volumes[a] + volumes[b])
    gm_a, gm_b = labels[a] == 2, labels[b] == 2
    gm = 2 * np.sum(gm_a & gm_b) / (gm_a.sum() + gm_b.sum())
    # The same overall shape, folded differently.
    assert brain > 0.8 and gm < 0.5


def test_no_large_flat_csf_region(real_case):
  """No slice holds a thick uniform CSF block (a sagittal quadrant once was one)."""
  label = real_case[3]
  for axis, extent in enumerate(np.nonzero(label)):
    # The central 60 % of the brain (slices near its edge graze the outer CSF layer).
    lo, hi = np.percentile(extent, [20, 80]).astype(int)
    for i in range(lo, hi, 2):
      csf = np.take(label, i, axis=axis) == 1
      # CSF 7 voxels across survives 3 erosions: the ventricles do over a few hundred voxels, the
      # old flat sagittal quadrant over thousands.
      assert ndimage.binary_erosion(csf, iterations=3).sum() < 1000, (axis, i)


def test_write_refuses_non_empty_and_cleans_up(tmp_path, monkeypatch):
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "x").write_text("x")
  with pytest.raises(FileExistsError, match="not an empty folder"):
    synthetic.write_iseg_layout(tmp_path / "full", shape=(12, 12, 12), num_train=1)

  real = synthetic.generate_subject

  def fail_on_second(shape, *, seed, subject_id):
    if subject_id == 2:
      raise RuntimeError("interrupted")
    return real(shape, seed=seed, subject_id=subject_id)

  # The iSeg writer's own reference (medjax.data.synthetic.writers) is the one it calls.
  monkeypatch.setattr(synthetic.writers, "generate_subject", fail_on_second)
  with pytest.raises(RuntimeError, match="interrupted"):
    synthetic.write_iseg_layout(tmp_path / "new", shape=(12, 12, 12), num_train=3)
  assert sorted(os.listdir(tmp_path)) == ["full"]  # no partial folder, no temporary folder


# ----------------------------------------------------------------------------------------------
# NIfTI layouts (nnU-Net v2 raw, Medical Segmentation Decathlon): geometry, channels, stability.

# RAS grid and anisotropic voxel size (mm) of the layout tests: a 24 x 24 x 40 mm field of view.
NIFTI_SHAPE = (20, 24, 16)
NIFTI_SPACING = (1.2, 1.0, 2.5)
_RAS_AXIS = {"L": 0, "R": 0, "P": 1, "A": 1, "I": 2, "S": 2}


def _tree_sha256(root):
  digest = hashlib.sha256()
  for path in sorted(root.rglob("*")):
    if path.is_file():
      digest.update(str(path.relative_to(root)).encode())
      digest.update(path.read_bytes())
  return digest.hexdigest()


def _write(layout, root, **kwargs):
  writer = {"nnunet": synthetic.write_nnunet_layout,
            "decathlon": synthetic.write_decathlon_layout}[layout]
  options = dict(shape=NIFTI_SHAPE, spacing=NIFTI_SPACING, num_channels=3, num_train=2,
                 num_test=1, seed=0)
  options.update(kwargs)
  return writer(root, **options)


@pytest.fixture(scope="module")
def nifti_layouts(tmp_path_factory):
  """{(layout, axcodes): folder} for both layouts, stored as RAS, LPS and PIR."""
  root = tmp_path_factory.mktemp("nifti_layouts")
  return {(layout, ax): _write(layout, root / f"{layout}_{ax}", axcodes=ax)
          for layout in ("nnunet", "decathlon") for ax in ("RAS", "LPS", "PIR")}


def _case_arrays(layout, root, case, folder="imagesTr"):
  """(image [X, Y, Z, C], label or None, nibabel image of the first file) as stored."""
  if layout == "nnunet":
    files = [nib.load(root / folder / f"{case}_{c:04d}.nii.gz") for c in range(3)]
    image = np.stack([np.asanyarray(f.dataobj) for f in files], axis=-1)
  else:
    files = [nib.load(root / folder / f"{case}.nii.gz")]
    image = np.asanyarray(files[0].dataobj)
  label = None
  if folder == "imagesTr":
    label = nib.load(root / "labelsTr" / f"{case}.nii.gz")
  return image, label, files[0]


def test_iseg_layout_unchanged(tmp_path):
  """Pinned bytes: the quickstart's numbers depend on them (re-pinned for issue 14's anatomy)."""
  root = synthetic.write_iseg_layout(tmp_path / "d", shape=(12, 14, 16), num_train=2, num_test=1,
                                     seed=5)
  assert _tree_sha256(root) == (
      "102087627f2086ecba82d1c1935fb768105ceaaa56b3f8638bc2baa335dc2445")
  digest = hashlib.sha256()
  for array in synthetic.generate_subject((24, 28, 32), seed=3, subject_id=2):
    digest.update(array.tobytes())
  assert digest.hexdigest() == (
      "510dc3044c26874912a2b0e9fcd0f89de1c267ecfdbef88287a59529f2978b7c")


@pytest.mark.parametrize("axcodes", ["LPS", "PIR"])
def test_nnunet_files_and_dataset_json(nifti_layouts, axcodes):
  root = nifti_layouts["nnunet", axcodes]
  assert sorted(os.listdir(root)) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr"]
  assert sorted(os.listdir(root / "imagesTr")) == [
      f"brain_{i:03d}_{c:04d}.nii.gz" for i in (1, 2) for c in range(3)]
  assert sorted(os.listdir(root / "labelsTr")) == ["brain_001.nii.gz", "brain_002.nii.gz"]
  assert sorted(os.listdir(root / "imagesTs")) == [f"brain_011_{c:04d}.nii.gz" for c in range(3)]
  meta = json.loads((root / "dataset.json").read_text())
  assert meta["channel_names"] == {"0": "T1", "1": "T2", "2": "FLAIR"}
  assert meta["labels"] == {"background": 0, "CSF": 1, "GM": 2, "WM": 3}
  assert meta["numTraining"] == 2
  assert meta["file_ending"] == ".nii.gz"
  assert meta["name"] == "Dataset001_BuiltinBrain"


@pytest.mark.parametrize("axcodes", ["LPS", "PIR"])
def test_decathlon_files_and_dataset_json(nifti_layouts, axcodes):
  root = nifti_layouts["decathlon", axcodes]
  assert sorted(os.listdir(root)) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr"]
  assert sorted(os.listdir(root / "imagesTr")) == ["brain_001.nii.gz", "brain_002.nii.gz"]
  assert sorted(os.listdir(root / "labelsTr")) == ["brain_001.nii.gz", "brain_002.nii.gz"]
  assert sorted(os.listdir(root / "imagesTs")) == ["brain_011.nii.gz"]
  meta = json.loads((root / "dataset.json").read_text())
  assert meta["name"] == "Task01_BuiltinBrain"
  assert meta["description"]
  assert meta["tensorImageSize"] == "4D"
  assert meta["modality"] == {"0": "T1", "1": "T2", "2": "FLAIR"}
  assert meta["labels"] == {"0": "background", "1": "CSF", "2": "GM", "3": "WM"}
  assert (meta["numTraining"], meta["numTest"]) == (2, 1)
  assert meta["training"] == [
      {"image": f"./imagesTr/brain_00{i}.nii.gz", "label": f"./labelsTr/brain_00{i}.nii.gz"}
      for i in (1, 2)]
  assert meta["test"] == ["./imagesTs/brain_011.nii.gz"]
  for entry in meta["training"]:
    assert (root / entry["image"]).is_file() and (root / entry["label"]).is_file()


@pytest.mark.parametrize("layout", ["nnunet", "decathlon"])
@pytest.mark.parametrize("axcodes", ["LPS", "PIR"])
def test_stored_geometry(nifti_layouts, layout, axcodes):
  """Shape and zooms are the RAS grid's permuted to the stored axes; axcodes as requested."""
  root = nifti_layouts[layout, axcodes]
  order = [_RAS_AXIS[c] for c in axcodes]
  shape = tuple(NIFTI_SHAPE[a] for a in order)
  spacing = tuple(NIFTI_SPACING[a] for a in order)
  for case, folder in (("brain_011", "imagesTs"), ("brain_001", "imagesTr")):
    image, label, first = _case_arrays(layout, root, case, folder)
    assert image.shape == shape + (3,) and image.dtype == np.int16
    assert nib.aff2axcodes(first.affine) == tuple(axcodes)
    np.testing.assert_allclose(first.header.get_zooms()[:3], spacing, rtol=1e-6)
    assert int(first.header["qform_code"]) == int(first.header["sform_code"]) == 1
    np.testing.assert_allclose(first.get_qform(), first.get_sform(), atol=1e-5)
  assert label.shape == shape and label.get_data_dtype() == np.uint8
  np.testing.assert_allclose(label.affine, first.affine, atol=1e-6)


@pytest.mark.parametrize("layout", ["nnunet", "decathlon"])
@pytest.mark.parametrize("axcodes", ["LPS", "PIR"])
def test_reoriented_to_ras_equals_ras_written(nifti_layouts, layout, axcodes):
  """nibabel's own as_closest_canonical gives back the RAS files: same voxels, same world."""
  ras_root, root = nifti_layouts[layout, "RAS"], nifti_layouts[layout, axcodes]
  ras_image, ras_label, ras_first = _case_arrays(layout, ras_root, "brain_002")
  image, label, first = _case_arrays(layout, root, "brain_002")
  canonical = nib.as_closest_canonical(label)
  np.testing.assert_array_equal(np.asanyarray(canonical.dataobj),
                                np.asanyarray(ras_label.dataobj))
  np.testing.assert_allclose(canonical.affine, ras_label.affine, atol=1e-5)
  canonical = nib.as_closest_canonical(nib.Nifti1Image(image, first.affine))
  np.testing.assert_array_equal(np.asanyarray(canonical.dataobj), ras_image)
  np.testing.assert_allclose(canonical.affine, ras_first.affine, atol=1e-5)


@pytest.mark.parametrize("layout", ["nnunet", "decathlon"])
def test_labels_complete_and_channels_distinct(nifti_layouts, layout):
  for case in ("brain_001", "brain_002"):
    image, label, _ = _case_arrays(layout, nifti_layouts[layout, "PIR"], case)
    label = np.asanyarray(label.dataobj)
    assert set(np.unique(label)) == {0, 1, 2, 3}
    brain = label > 0
    assert np.all(image[~brain] == 0) and np.all(image[brain] > 0)
    assert not np.array_equal(image[..., 2], image[..., 0])
    assert not np.array_equal(image[..., 2], image[..., 1])


def test_anisotropic_grid_samples_the_same_brain():
  """3 mm voxels sample the 1 mm brain of the same field of view at every third voxel centre."""
  iso_image, iso_label, iso_affine = synthetic.generate_case((48, 48, 48), num_channels=3,
                                                             seed=1, subject_id=4)
  image, label, affine = synthetic.generate_case((16, 48, 16), spacing=(3.0, 1.0, 3.0),
                                                 num_channels=3, seed=1, subject_id=4)
  np.testing.assert_array_equal(label, iso_label[1::3, :, 1::3])
  # Same world position for those voxels: voxel (i, j, k) is 1 mm voxel (3i + 1, j, 3k + 1).
  i, j, k = np.meshgrid(np.arange(16), np.arange(48), np.arange(16), indexing="ij")
  voxels = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
  iso_voxels = np.stack([3 * i.ravel() + 1, j.ravel(), 3 * k.ravel() + 1, np.ones(i.size)])
  np.testing.assert_allclose(affine @ voxels, iso_affine @ iso_voxels, atol=1e-9)
  # The bias fields are functions of position too: away from tissue borders, where the coarser
  # voxels mix more tissue (partial volume), only the noise differs.
  uniform = ndimage.minimum_filter(iso_label, size=3) == ndimage.maximum_filter(iso_label, size=3)
  pure = uniform[1::3, :, 1::3] & (label > 0)
  assert pure.sum() > 100
  for c, noise in enumerate((synthetic.brain._T1_NOISE, synthetic.brain._T2_NOISE,
                             synthetic.brain._FLAIR_NOISE)):
    diff = image[..., c].astype(float) - iso_image[1::3, :, 1::3, c]
    assert np.std(diff[pure]) < 2 * noise
    # Border voxels do mix differently.
    assert np.std(diff[(label > 0) & ~pure]) > 2 * noise


def test_ras_one_mm_case_is_generate_subject(tmp_path):
  root = synthetic.write_nnunet_layout(tmp_path / "d", shape=(24, 28, 32), num_train=2, seed=3)
  t1, t2, label = synthetic.generate_subject((24, 28, 32), seed=3, subject_id=2)
  img = nib.load(root / "imagesTr" / "brain_002_0000.nii.gz")
  np.testing.assert_array_equal(np.asanyarray(img.dataobj), t1)
  np.testing.assert_array_equal(
      np.asanyarray(nib.load(root / "imagesTr" / "brain_002_0001.nii.gz").dataobj), t2)
  class_ids = np.asanyarray(nib.load(root / "labelsTr" / "brain_002.nii.gz").dataobj)
  np.testing.assert_array_equal(np.asarray(iseg.LABEL_VALUES)[class_ids], label)
  assert sorted(os.listdir(root / "imagesTr")) == [
      f"brain_00{i}_000{c}.nii.gz" for i in (1, 2) for c in (0, 1)]
  assert not (root / "imagesTs").exists()
  assert json.loads((root / "dataset.json").read_text())["channel_names"] == {"0": "T1",
                                                                             "1": "T2"}


def test_reproducible_and_per_case(nifti_layouts, tmp_path):
  first = nifti_layouts["decathlon", "PIR"]
  again = _write("decathlon", tmp_path / "again", axcodes="PIR")
  assert _tree_sha256(again) == _tree_sha256(first)
  other_seed = _write("decathlon", tmp_path / "other", axcodes="PIR", seed=1)
  labels = {name: np.asanyarray(nib.load(root / "labelsTr" / "brain_001.nii.gz").dataobj)
            for name, root in (("first", first), ("other", other_seed))}
  assert not np.array_equal(labels["first"], labels["other"])
  second = np.asanyarray(nib.load(first / "labelsTr" / "brain_002.nii.gz").dataobj)
  assert not np.array_equal(labels["first"], second)


def test_flair_contrast(real_case):
  _, _, flair, label = real_case
  mean = {k: flair[_interior(label == k)].mean() for k in (1, 2, 3)}
  assert mean[1] < 0.3 * mean[3]  # CSF suppressed
  assert mean[3] < 0.9 * mean[2]  # WM darker than GM


def test_one_channel_decathlon_is_3d(tmp_path):
  root = _write("decathlon", tmp_path / "d", num_channels=1, num_test=0, file_ending=".nii")
  meta = json.loads((root / "dataset.json").read_text())
  assert meta["tensorImageSize"] == "3D" and meta["modality"] == {"0": "T1"}
  assert meta["test"] == [] and meta["training"][0]["image"] == "./imagesTr/brain_001.nii"
  assert nib.load(root / "imagesTr" / "brain_001.nii").shape == NIFTI_SHAPE


@pytest.mark.parametrize("kwargs, match", [
    (dict(axcodes="RRS"), "axcodes"), (dict(axcodes="RA"), "axcodes"),
    (dict(spacing=(1.0, 0.0, 1.0)), "spacing"), (dict(spacing=(1.0, 1.0)), "spacing"),
    (dict(num_channels=4), "num_channels"), (dict(file_ending=".mha"), "file_ending"),
    (dict(shape=(4, 24, 24)), "shape"), (dict(num_train=0), "num_train")])
def test_bad_arguments(tmp_path, kwargs, match):
  for layout in ("nnunet", "decathlon"):
    with pytest.raises(ValueError, match=match):
      _write(layout, tmp_path / layout, **kwargs)
  assert not any(tmp_path.iterdir())
