"""Tests for medjax.data.layouts: nnU-Net v2 and Decathlon folders written here with nibabel.

Expected values come from nibabel reading the files directly.
"""

import gzip
import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from medjax.data import layouts

SHAPE = (4, 5, 6)
# Anisotropic, first axis flipped.
AFFINE = np.array([[-1.5, 0, 0, 3.0], [0, 0.8, 0, -1.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1]])


def _save(path, data, affine=AFFINE):
  path.parent.mkdir(parents=True, exist_ok=True)
  nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))


def _nib(path):
  """(data, affine, spacing) as nibabel reads them."""
  img = nib.load(str(path))
  return np.asanyarray(img.dataobj), img.affine, tuple(float(z) for z in img.header.get_zooms()[:3])


def _label(seed, values, shape=SHAPE):
  rng = np.random.default_rng(seed)
  lab = rng.choice(np.asarray(values), size=shape).astype(np.uint8)
  lab.flat[: len(values)] = values  # every value present
  return lab


def _channel(seed, c, shape=SHAPE):
  """Channel 0 int16, others float32, so the float32 conversion is exercised."""
  rng = np.random.default_rng(1000 * seed + c)
  if c == 0:
    return rng.integers(-50, 500, size=shape).astype(np.int16)
  return (rng.normal(size=shape) * 10 + 100 * c).astype(np.float32)


def _write_json(root, spec):
  root.mkdir(parents=True, exist_ok=True)
  (root / "dataset.json").write_text(json.dumps(spec, indent=1))


def _read_json(root):
  return json.loads((root / "dataset.json").read_text())


def write_nnunet(root, *, cases=("case_b", "case_a"), test=("case_t",), ending=".nii.gz"):
  # Keys out of order on purpose: the order comes from the ids, not from the JSON.
  spec = {"channel_names": {"1": "T2", "0": "T1"}, "labels": {"WM": 2, "background": 0, "CSF": 1},
          "numTraining": len(cases), "file_ending": ending}
  _write_json(root, spec)
  for i, case in enumerate(cases):
    for c in range(2):
      _save(root / "imagesTr" / f"{case}_{c:04d}{ending}", _channel(i, c))
    _save(root / "labelsTr" / f"{case}{ending}", _label(i, [0, 1, 2]))
  for i, case in enumerate(test):
    for c in range(2):
      _save(root / "imagesTs" / f"{case}_{c:04d}{ending}", _channel(50 + i, c))
  return root


DECATHLON_LABELS = {"0": "background", "1": "edema", "4": "tumour"}  # on-disk 4 -> class 2


def write_decathlon(root, *, cases=("BRATS_002", "BRATS_001"), test=("BRATS_485",), channels=3):
  spec = {"name": "BRATS", "tensorImageSize": "4D",
          "modality": {str(c): f"M{c}" for c in range(channels)}, "labels": DECATHLON_LABELS,
          "numTraining": len(cases),
          "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                       for c in cases],
          "test": [f"./imagesTs/{c}.nii.gz" for c in test]}
  _write_json(root, spec)

  def image(seed):
    chans = [_channel(seed, c) for c in range(channels)]
    return chans[0] if channels == 1 else np.stack([x.astype(np.float32) for x in chans], -1)

  for i, case in enumerate(cases):
    _save(root / "imagesTr" / f"{case}.nii.gz", image(i))
    _save(root / "labelsTr" / f"{case}.nii.gz", _label(i, [0, 1, 4]))
  for i, case in enumerate(test):
    _save(root / "imagesTs" / f"{case}.nii.gz", image(50 + i))
  # The real download's macOS junk.
  (root / "imagesTr" / f"._{cases[0]}.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
  (root / "labelsTr" / ".DS_Store").write_bytes(b"junk")
  return root


@pytest.fixture
def nnunet_root(tmp_path):
  return write_nnunet(tmp_path / "Dataset007_Test")


@pytest.fixture
def decathlon_root(tmp_path):
  return write_decathlon(tmp_path / "Task01_BrainTumour")


# ---------------------------------------------------------------------------------------------
# Reading valid datasets.


def test_nnunet_description(nnunet_root):
  d = layouts.read_dataset(nnunet_root)
  assert d.layout == "nnunet" and d.root == nnunet_root and d.name == "Dataset007_Test"
  assert d.channel_names == ("T1", "T2")
  assert d.class_names == ("background", "CSF", "WM")
  assert d.label_values == (0, 1, 2)
  assert d.file_ending == ".nii.gz"
  assert [c.case_id for c in d.training] == ["case_a", "case_b"]
  a = d.training[0]
  assert a.images == (nnunet_root / "imagesTr" / "case_a_0000.nii.gz",
                      nnunet_root / "imagesTr" / "case_a_0001.nii.gz")
  assert a.label == nnunet_root / "labelsTr" / "case_a.nii.gz"
  assert [(c.case_id, c.label) for c in d.test] == [("case_t", None)]
  assert d.test[0].images[1].name == "case_t_0001.nii.gz"


def test_nnunet_load_case_matches_nibabel(nnunet_root):
  d = layouts.read_dataset(nnunet_root)
  for files in d.training + d.test:
    case = layouts.load_case(files, num_channels=2, label_values=d.label_values)
    assert case.case_id == files.case_id
    assert case.image.dtype == np.float32 and case.image.shape == SHAPE + (2,)
    for c, name in enumerate(("_0000", "_0001")):
      folder = "imagesTr" if files.label else "imagesTs"
      data, affine, spacing = _nib(nnunet_root / folder / f"{files.case_id}{name}.nii.gz")
      np.testing.assert_array_equal(case.image[..., c], data.astype(np.float32))
      if c == 0:
        np.testing.assert_array_equal(case.affine, affine)
        assert case.affine.dtype == np.float64
        assert case.spacing == spacing
    if files.label is None:
      assert case.label is None
    else:
      label, _, _ = _nib(files.label)
      assert case.label.dtype == np.uint8
      np.testing.assert_array_equal(case.label, label)  # ids 0..K-1 are the on-disk values


def test_nnunet_name_and_plain_nii(tmp_path):
  root = write_nnunet(tmp_path / "Dataset002_Nii", cases=("x",), test=(), ending=".nii")
  spec = _read_json(root)
  spec["name"] = "Nii"
  _write_json(root, spec)
  d = layouts.read_dataset(root)
  assert d.name == "Nii" and d.file_ending == ".nii" and d.test == ()
  assert d.training[0].images[0].name == "x_0000.nii"


def test_decathlon_description(decathlon_root):
  d = layouts.read_dataset(decathlon_root)
  assert d.layout == "decathlon" and d.name == "BRATS"
  assert d.channel_names == ("M0", "M1", "M2")
  assert d.class_names == ("background", "edema", "tumour")
  assert d.label_values == (0, 1, 4)
  assert d.file_ending == ".nii.gz"
  assert [c.case_id for c in d.training] == ["BRATS_001", "BRATS_002"]  # sorted
  assert d.training[0].images == (decathlon_root / "imagesTr" / "BRATS_001.nii.gz",)
  assert d.training[0].label == decathlon_root / "labelsTr" / "BRATS_001.nii.gz"
  assert [(c.case_id, c.images, c.label) for c in d.test] == [
      ("BRATS_485", (decathlon_root / "imagesTs" / "BRATS_485.nii.gz",), None)]


def test_decathlon_load_case_matches_nibabel(decathlon_root):
  d = layouts.read_dataset(decathlon_root)
  for files in d.training + d.test:
    case = layouts.load_case(files, num_channels=3, label_values=d.label_values)
    data, affine, spacing = _nib(files.images[0])
    assert data.ndim == 4 and case.image.shape == data.shape
    np.testing.assert_array_equal(case.image, data.astype(np.float32))  # channel order kept
    np.testing.assert_array_equal(case.affine, affine)
    assert case.spacing == spacing == (1.5, 0.800000011920929, 2.0)
    if files.label is not None:
      label, _, _ = _nib(files.label)
      expected = np.select([label == 0, label == 1, label == 4], [0, 1, 2], -1)
      np.testing.assert_array_equal(case.label, expected)
      assert set(np.unique(case.label)) == {0, 1, 2}


def test_decathlon_single_channel_3d(tmp_path):
  root = write_decathlon(tmp_path / "Task09_Spleen", channels=1, test=())
  d = layouts.read_dataset(root)
  assert d.channel_names == ("M0",) and d.test == ()
  case = layouts.load_case(d.training[0], num_channels=1, label_values=d.label_values)
  data, _, _ = _nib(d.training[0].images[0])
  assert data.ndim == 3 and case.image.shape == SHAPE + (1,)
  np.testing.assert_array_equal(case.image[..., 0], data.astype(np.float32))


def test_decathlon_json_with_channel_files(tmp_path):
  """nnU-Net v1 tasks: Decathlon dataset.json, each listed image stored as channel files."""
  root = write_decathlon(tmp_path / "Task005_Prostate", channels=2, test=())
  for case in ("BRATS_001", "BRATS_002"):
    data, affine, _ = _nib(root / "imagesTr" / f"{case}.nii.gz")
    os.remove(root / "imagesTr" / f"{case}.nii.gz")
    for c in range(2):
      _save(root / "imagesTr" / f"{case}_{c:04d}.nii.gz", data[..., c], affine)
  d = layouts.read_dataset(root)
  assert [f.name for f in d.training[1].images] == ["BRATS_002_0000.nii.gz",
                                                   "BRATS_002_0001.nii.gz"]
  case = layouts.load_case(d.training[1], num_channels=2)
  np.testing.assert_array_equal(case.image[..., 1],
                                _nib(d.training[1].images[1])[0].astype(np.float32))


def test_decathlon_imagests_without_test_list(decathlon_root):
  spec = _read_json(decathlon_root)
  del spec["test"]
  _write_json(decathlon_root, spec)
  d = layouts.read_dataset(decathlon_root)
  assert [c.case_id for c in d.test] == ["BRATS_485"]


def test_find_image_cases_both_layouts(nnunet_root, decathlon_root):
  ts = nnunet_root / "imagesTs"
  for c in range(2):
    _save(ts / f"case_s_{c:04d}.nii.gz", _channel(9, c))
  (ts / "._case_s_0000.nii.gz").write_bytes(b"junk")
  cases = layouts.find_image_cases(ts, num_channels=2)
  assert [(c.case_id, [p.name for p in c.images], c.label) for c in cases] == [
      ("case_s", ["case_s_0000.nii.gz", "case_s_0001.nii.gz"], None),
      ("case_t", ["case_t_0000.nii.gz", "case_t_0001.nii.gz"], None)]
  assert layouts.find_image_cases(ts, num_channels=2, file_ending=".nii.gz") == cases
  tr = decathlon_root / "imagesTr"  # holds a `._` file too
  cases = layouts.find_image_cases(tr, num_channels=3)
  assert [(c.case_id, c.images) for c in cases] == [
      ("BRATS_001", (tr / "BRATS_001.nii.gz",)), ("BRATS_002", (tr / "BRATS_002.nii.gz",))]
  case = layouts.load_case(cases[0], num_channels=3)
  np.testing.assert_array_equal(case.image, _nib(tr / "BRATS_001.nii.gz")[0])
  assert case.label is None


def test_find_image_cases_errors(nnunet_root, decathlon_root, tmp_path):
  ts = nnunet_root / "imagesTs"
  with pytest.raises(FileNotFoundError, match=r"case_t_0002\.nii\.gz: missing"):
    layouts.find_image_cases(ts, num_channels=3)
  with pytest.raises(ValueError, match=r"BRATS_001\.nii\.gz: 3 channel\(s\).*expected 2"):
    layouts.find_image_cases(decathlon_root / "imagesTr", num_channels=2)
  os.remove(ts / "case_t_0001.nii.gz")
  _save(ts / "case_u_0000.nii.gz", _channel(3, 0))
  _save(ts / "case_u_0001.nii.gz", _channel(3, 1))
  with pytest.raises(FileNotFoundError, match=r"case_t_0001\.nii\.gz: missing"):
    layouts.find_image_cases(ts, num_channels=2)
  _save(ts / "case_t_0001.nii", _channel(3, 1))
  with pytest.raises(ValueError, match=r"mixed file endings"):
    layouts.find_image_cases(ts, num_channels=2)
  with pytest.raises(ValueError, match=r"case_t_0001\.nii: mixed file endings"):
    layouts.find_image_cases(ts, num_channels=2, file_ending=".nii.gz")
  with pytest.raises(ValueError, match=r"'\.mha' is not supported"):
    layouts.find_image_cases(ts, num_channels=2, file_ending=".mha")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="holds no image files"):
    layouts.find_image_cases(tmp_path / "empty", num_channels=1)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    layouts.find_image_cases(tmp_path / "nope", num_channels=1)


# ---------------------------------------------------------------------------------------------
# Bad input: read_dataset.


def _spec_edit(edit):
  def apply(root):
    spec = _read_json(root)
    edit(spec)
    _write_json(root, spec)
  return apply


def _move_grid(path, *, shape=None, affine=None):
  data, aff, _ = _nib(path)
  if shape is not None:
    data = np.zeros(shape, data.dtype)
  _save(path, data, aff if affine is None else affine)


NNUNET_BAD = {
    "root_missing": (lambda r: shutil.rmtree(r), FileNotFoundError,
                     ["Dataset007_Test", "does not exist"]),
    "json_missing": (lambda r: os.remove(r / "dataset.json"), FileNotFoundError,
                     ["dataset.json: missing"]),
    "json_invalid": (lambda r: (r / "dataset.json").write_text('{"channel_names": '),
                     ValueError, ["dataset.json: not valid JSON"]),
    "json_not_object": (lambda r: (r / "dataset.json").write_text("[1, 2]"), ValueError,
                        ["dataset.json: expected a JSON object"]),
    "no_layout_keys": (_spec_edit(lambda s: s.pop("channel_names")), ValueError,
                       ["neither 'channel_names'", "'modality'"]),
    "no_num_training": (_spec_edit(lambda s: s.pop("numTraining")), ValueError,
                        ["dataset.json: missing key 'numTraining'"]),
    "no_file_ending": (_spec_edit(lambda s: s.pop("file_ending")), ValueError,
                       ["missing key 'file_ending'"]),
    "no_labels": (_spec_edit(lambda s: s.pop("labels")), ValueError, ["missing key 'labels'"]),
    "num_training_str": (_spec_edit(lambda s: s.update(numTraining="2")), ValueError,
                         ["'numTraining' must be", "'2'"]),
    "channel_names_list": (_spec_edit(lambda s: s.update(channel_names=["T1", "T2"])),
                           ValueError, ["'channel_names' must be a dict"]),
    "channel_gap": (_spec_edit(lambda s: s.update(channel_names={"0": "T1", "2": "T2"})),
                    ValueError, ["'channel_names' indices [0, 2] must be 0..1"]),
    "label_str": (_spec_edit(lambda s: s["labels"].update(CSF="1")), ValueError,
                  ["label 'CSF': '1' is not an integer id"]),
    "region_labels": (_spec_edit(lambda s: s["labels"].update(WM=[1, 2])), ValueError,
                      ["label 'WM' is a region", "region-based labels are not supported"]),
    "label_gap": (_spec_edit(lambda s: s["labels"].update(WM=3)), ValueError,
                  ["label ids [0, 1, 3] must be consecutive"]),
    "ending_mha": (_spec_edit(lambda s: s.update(file_ending=".mha")), ValueError,
                   ["'.mha' is not supported", "'.nii.gz' or '.nii'"]),
    "ending_nrrd": (_spec_edit(lambda s: s.update(file_ending=".nrrd")), ValueError,
                    ["'.nrrd' is not supported"]),
    "explicit_dataset_key": (_spec_edit(lambda s: s.update(dataset={})), ValueError,
                             ["'dataset' key", "not supported"]),
    "num_training_wrong": (_spec_edit(lambda s: s.update(numTraining=3)), ValueError,
                           ["numTraining is 3", "hold 2 training case(s)"]),
    "no_images_tr": (lambda r: shutil.rmtree(r / "imagesTr"), FileNotFoundError,
                     ["imagesTr: missing"]),
    "no_labels_tr": (lambda r: shutil.rmtree(r / "labelsTr"), FileNotFoundError,
                     ["labelsTr: missing"]),
    "channel_file_missing": (lambda r: os.remove(r / "imagesTr" / "case_a_0001.nii.gz"),
                             FileNotFoundError, ["case_a_0001.nii.gz: missing", "case case_a"]),
    "test_channel_missing": (lambda r: os.remove(r / "imagesTs" / "case_t_0000.nii.gz"),
                             FileNotFoundError, ["case_t_0000.nii.gz: missing"]),
    "extra_channel": (lambda r: _save(r / "imagesTr" / "case_a_0002.nii.gz", _channel(0, 0)),
                      ValueError, ["case_a_0002.nii.gz: channel 0002", "2 channel(s)"]),
    "label_without_images": (lambda r: _save(r / "labelsTr" / "case_z.nii.gz", _label(0, [0])),
                             FileNotFoundError, ["case_z_0000.nii.gz: missing",
                                                 "case_z.nii.gz has no images"]),
    "images_without_label": (lambda r: os.remove(r / "labelsTr" / "case_b.nii.gz"),
                             FileNotFoundError, ["labelsTr/case_b.nii.gz: missing",
                                                 "no label"]),
    "mixed_ending": (lambda r: _save(r / "imagesTr" / "case_c_0000.nii", _channel(0, 0)),
                     ValueError, ["case_c_0000.nii: mixed file endings", "'.nii.gz'"]),
    "mixed_ending_label": (lambda r: os.rename(r / "labelsTr" / "case_b.nii.gz",
                                               r / "labelsTr" / "case_b.nii"),
                           ValueError, ["case_b.nii: mixed file endings"]),
    "bad_name": (lambda r: _save(r / "imagesTr" / "case_c.nii.gz", _channel(0, 0)), ValueError,
                 ["case_c.nii.gz: unexpected file name", "{case}_{XXXX}.nii.gz"]),
    "stray_file": (lambda r: (r / "imagesTr" / "notes.txt").write_text("x"), ValueError,
                   ["notes.txt: unexpected file"]),
    "grid_shape": (lambda r: _move_grid(r / "imagesTr" / "case_b_0001.nii.gz", shape=(4, 5, 7)),
                   ValueError, ["case_b_0001.nii.gz: grid (4, 5, 7) does not match "
                                "imagesTr/case_b_0000.nii.gz (4, 5, 6)"]),
    "grid_affine": (lambda r: _move_grid(r / "imagesTr" / "case_b_0001.nii.gz",
                                         affine=np.diag([1.5, 0.8, 2.0, 1])),
                    ValueError, ["case_b_0001.nii.gz: affine",
                                 "does not match imagesTr/case_b_0000"]),
    "label_grid": (lambda r: _move_grid(r / "labelsTr" / "case_a.nii.gz", shape=(5, 5, 6)),
                   ValueError, ["case_a.nii.gz: grid (5, 5, 6) does not match"]),
    "label_4d": (lambda r: _move_grid(r / "labelsTr" / "case_a.nii.gz", shape=(4, 5, 6, 2)),
                 ValueError, ["case_a.nii.gz: expected a 3-D label image"]),
    "channel_file_4d": (lambda r: _move_grid(r / "imagesTr" / "case_a_0001.nii.gz",
                                             shape=(4, 5, 6, 2)),
                        ValueError, ["case_a_0001.nii.gz: expected a 3-D image"]),
    "unreadable": (lambda r: (r / "imagesTr" / "case_a_0001.nii.gz").write_bytes(b"nope"),
                   ValueError, ["case_a_0001.nii.gz: not a readable NIfTI image"]),
}


@pytest.mark.parametrize("name", sorted(NNUNET_BAD))
def test_nnunet_bad_input(nnunet_root, name):
  mutate, exc, messages = NNUNET_BAD[name]
  mutate(nnunet_root)
  with pytest.raises(exc) as e:
    layouts.read_dataset(nnunet_root)
  for m in messages:
    assert m in str(e.value)
  if name not in ("root_missing",):
    assert str(nnunet_root) in str(e.value)  # names the file


DECATHLON_BAD = {
    "no_training": (_spec_edit(lambda s: s.pop("training")), ValueError,
                    ["missing key 'training'"]),
    "training_entry": (_spec_edit(lambda s: s["training"].append({"image": "./x.nii.gz"})),
                       ValueError, ["'training' entry 2"]),
    "test_entry": (_spec_edit(lambda s: s.update(test=[{"image": "x"}])), ValueError,
                   ["'test' entry 0"]),
    "labels_by_name": (_spec_edit(lambda s: s.update(labels={"background": 0, "edema": 1})),
                       ValueError, ["'labels' entry 'background'"]),
    "labels_no_background": (_spec_edit(lambda s: s["labels"].pop("0")), ValueError,
                             ["must include 0"]),
    "modality_missing_index": (_spec_edit(lambda s: s["modality"].pop("1")), ValueError,
                               ["'modality' indices [0, 2] must be 0..1"]),
    "num_training_wrong": (_spec_edit(lambda s: s.update(numTraining=484)), ValueError,
                           ["numTraining is 484", "'training' lists 2"]),
    "listed_image_absent": (lambda r: os.remove(r / "imagesTr" / "BRATS_002.nii.gz"),
                            FileNotFoundError, ["imagesTr/BRATS_002.nii.gz: listed in",
                                                "absent on disk"]),
    "listed_label_absent": (lambda r: os.remove(r / "labelsTr" / "BRATS_001.nii.gz"),
                            FileNotFoundError, ["labelsTr/BRATS_001.nii.gz: listed in",
                                                "absent on disk"]),
    "listed_test_absent": (lambda r: shutil.rmtree(r / "imagesTs"), FileNotFoundError,
                           ["imagesTs/BRATS_485.nii.gz: listed in"]),
    "unlisted_case": (lambda r: shutil.copy(r / "imagesTr" / "BRATS_001.nii.gz",
                                            r / "imagesTr" / "BRATS_003.nii.gz"),
                      ValueError, ["BRATS_003.nii.gz: not listed in"]),
    "unlisted_mixed_ending": (lambda r: _save(r / "labelsTr" / "BRATS_009.nii", _label(0, [0])),
                              ValueError, ["BRATS_009.nii: mixed file endings"]),
    "listed_mixed_ending": (
        _spec_edit(lambda s: s["training"][1].update(label="./labelsTr/BRATS_001.nii")),
        ValueError, ["mixed file endings", "'./labelsTr/BRATS_001.nii'"]),
    "listed_nrrd": (_spec_edit(lambda s: s.update(test=["./imagesTs/BRATS_485.nrrd"])),
                    ValueError, ["'./imagesTs/BRATS_485.nrrd': unsupported file ending"]),
    "duplicate_case": (_spec_edit(lambda s: s.update(
        training=s["training"] + s["training"][:1], numTraining=3)), ValueError,
                       ["listed twice"]),
    "channels_4d": (lambda r: _move_grid(r / "imagesTr" / "BRATS_002.nii.gz", shape=SHAPE + (2,)),
                    ValueError, ["BRATS_002.nii.gz: 2 channel(s)", "expected 3",
                                 "('M0', 'M1', 'M2')"]),
    "test_3d": (lambda r: _move_grid(r / "imagesTs" / "BRATS_485.nii.gz", shape=SHAPE),
                ValueError, ["BRATS_485.nii.gz: 1 channel(s)"]),
    "label_grid": (lambda r: _move_grid(r / "labelsTr" / "BRATS_002.nii.gz",
                                        affine=np.diag([1.0, 1, 1, 1])),
                   ValueError, ["labelsTr/BRATS_002.nii.gz: affine",
                                "does not match imagesTr/BRATS_002.nii.gz"]),
}


@pytest.mark.parametrize("name", sorted(DECATHLON_BAD))
def test_decathlon_bad_input(decathlon_root, name):
  mutate, exc, messages = DECATHLON_BAD[name]
  mutate(decathlon_root)
  with pytest.raises(exc) as e:
    layouts.read_dataset(decathlon_root)
  for m in messages:
    assert m in str(e.value)
  assert str(decathlon_root) in str(e.value)


def test_read_dataset_reads_headers_only(nnunet_root):
  """A truncated data block passes read_dataset (headers only) and fails load_case."""
  path = nnunet_root / "imagesTr" / "case_a_0001.nii.gz"
  raw = nib.load(str(path)).to_bytes()
  with gzip.open(path, "wb") as f:
    f.write(raw[: len(raw) - 40])
  d = layouts.read_dataset(nnunet_root)
  with pytest.raises(ValueError, match=r"case_a_0001\.nii\.gz: not a readable"):
    layouts.load_case(d.training[0])


# ---------------------------------------------------------------------------------------------
# Bad input: load_case.


def test_load_case_undeclared_label_value(nnunet_root):
  lab = _label(0, [0, 1, 2])
  lab[1, 2, 3] = 7
  _save(nnunet_root / "labelsTr" / "case_b.nii.gz", lab)
  d = layouts.read_dataset(nnunet_root)  # values are checked when loading
  with pytest.raises(ValueError) as e:
    layouts.load_case(d.training[1], label_values=d.label_values)
  assert "case_b.nii.gz: label values [7] are not declared" in str(e.value)
  assert "[0, 1, 2]" in str(e.value)


def test_load_case_decathlon_value_not_in_labels(decathlon_root):
  _save(decathlon_root / "labelsTr" / "BRATS_001.nii.gz", _label(0, [0, 1, 2]))  # 2 undeclared
  d = layouts.read_dataset(decathlon_root)
  with pytest.raises(ValueError, match=r"BRATS_001\.nii\.gz: label values \[2\].*\[0, 1, 4\]"):
    layouts.load_case(d.training[0], label_values=d.label_values)


def test_load_case_non_finite(nnunet_root):
  data = _channel(0, 1)
  data[0, 1, 2] = np.nan
  _save(nnunet_root / "imagesTr" / "case_b_0001.nii.gz", data)
  d = layouts.read_dataset(nnunet_root)
  with pytest.raises(ValueError, match=r"case_b_0001\.nii\.gz: 1 non-finite voxels"):
    layouts.load_case(d.training[1])


def test_load_case_channel_count(decathlon_root, nnunet_root):
  d = layouts.read_dataset(decathlon_root)
  with pytest.raises(ValueError, match=r"BRATS_001\.nii\.gz: 3 channel\(s\).*expected 4"):
    layouts.load_case(d.training[0], num_channels=4)
  d = layouts.read_dataset(nnunet_root)
  with pytest.raises(ValueError, match=r"case case_a: 2 channel files.*expected 3"):
    layouts.load_case(d.training[0], num_channels=3)


def test_load_case_grids_checked_without_read_dataset(nnunet_root):
  files = layouts.CaseFiles(
      "case_a", (nnunet_root / "imagesTr" / "case_a_0000.nii.gz",
                 nnunet_root / "imagesTr" / "case_a_0001.nii.gz"),
      nnunet_root / "labelsTr" / "case_a.nii.gz")
  _move_grid(files.images[1], affine=AFFINE + np.diag([0, 0, 1e-3, 0]))
  with pytest.raises(ValueError, match=r"case_a_0001\.nii\.gz: affine"):
    layouts.load_case(files)
  _move_grid(files.images[1], affine=AFFINE + np.diag([0, 0, 1e-5, 0]))  # within 1e-4 mm
  _move_grid(files.label, shape=(4, 5, 5))
  with pytest.raises(ValueError, match=r"case_a\.nii\.gz: grid \(4, 5, 5\)"):
    layouts.load_case(files)
