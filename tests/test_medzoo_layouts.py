"""Tests for medjax.data.medzoo_layouts: finding iSeg-2019, MRBrainS18 and BraTS files by name."""

import pathlib
import re

import numpy as np
import pytest

from medjax import io
from medjax.data import iseg
from medjax.data import layouts
from medjax.data import medzoo_layouts as mz

BRATS_KINDS = ("t1", "t1ce", "t2", "flair")


def _touch(path: pathlib.Path) -> pathlib.Path:
  """An empty file: the finders read names only."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b"")
  return path


# --- iSeg-2019 -----------------------------------------------------------------------------
def _iseg_subject(folder, sid, *, label=True):
  for kind in ("T1", "T2") + (("label",) if label else ()):
    for ext in ("hdr", "img"):
      _touch(folder / f"subject-{sid}-{kind}.{ext}")


def test_iseg2019_download_layout(tmp_path):
  for sid in (1, 2):
    _iseg_subject(tmp_path / "iSeg-2019-Training", sid)
  _iseg_subject(tmp_path / "iSeg-2019-Validation", 11, label=False)
  _iseg_subject(tmp_path / "iSeg-2019-Testing", 24, label=False)
  (tmp_path / "README.txt").write_text("ignored")
  found = mz.find_iseg2019(tmp_path)
  train = tmp_path / "iSeg-2019-Training"
  assert found.training == (
      layouts.CaseFiles("subject-1", (train / "subject-1-T1.hdr", train / "subject-1-T2.hdr"),
                        train / "subject-1-label.hdr"),
      layouts.CaseFiles("subject-2", (train / "subject-2-T1.hdr", train / "subject-2-T2.hdr"),
                        train / "subject-2-label.hdr"))
  assert [c.case_id for c in found.test] == ["subject-11", "subject-24"]
  assert found.test[0].images[0] == tmp_path / "iSeg-2019-Validation" / "subject-11-T1.hdr"
  assert all(c.label is None for c in found.test) and found.grades == {}


def test_iseg2019_flat_folder(tmp_path):
  _iseg_subject(tmp_path, 3)
  _iseg_subject(tmp_path, 30, label=False)
  found = mz.find_iseg2019(tmp_path)
  assert [c.case_id for c in found.training] == ["subject-3"]
  assert [c.case_id for c in found.test] == ["subject-30"]


def test_iseg2019_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"does not exist.*iSeg-2019 download \(folders "
                     r"iSeg-2019-Training/, iSeg-2019-Validation/ and iSeg-2019-Testing/"):
    mz.find_iseg2019(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="holds no iSeg-2019 files"):
    mz.find_iseg2019(tmp_path)
  _iseg_subject(tmp_path / "iSeg-2019-Validation", 11, label=False)
  with pytest.raises(FileNotFoundError, match=r"no labelled iSeg-2019 subject.*\[11\]"):
    mz.find_iseg2019(tmp_path)
  train = tmp_path / "iSeg-2019-Training"
  _iseg_subject(train, 1, label=False)  # a training subject must have its label
  with pytest.raises(FileNotFoundError, match=r"iSeg-2019-Training/subject-1-label\.hdr: missing"):
    mz.find_iseg2019(tmp_path)
  _iseg_subject(train, 1)
  _touch(train / "subject-1-FLAIR.hdr")
  with pytest.raises(ValueError, match=r"subject-1-FLAIR\.hdr: unexpected file; iSeg-2019 files"):
    mz.find_iseg2019(tmp_path)


def test_iseg2017_messages_unchanged(tmp_path):
  """find_subjects' defaults keep iSeg-2017's folders and wording."""
  with pytest.raises(FileNotFoundError) as e:
    iseg.find_subjects(tmp_path / "missing")
  assert str(e.value) == (
      f"manual_dir {tmp_path / 'missing'} does not exist or is not a folder; expected the "
      "iSeg-2017 download (folders iSeg-2017-Training/ and iSeg-2017-Testing/, or the "
      "subject-N-*.hdr/.img files).")
  with pytest.raises(FileNotFoundError) as e:
    iseg.find_subjects(tmp_path)
  assert str(e.value) == (
      f"manual_dir {tmp_path} holds no iSeg-2017 files; expected iSeg-2017-Training/ and "
      "iSeg-2017-Testing/ from the download, or subject-N-T1.hdr/.img, subject-N-T2.hdr/.img "
      "and subject-N-label.hdr/.img directly in it.")
  # iSeg-2019's folders are not searched by default.
  _iseg_subject(tmp_path / "iSeg-2019-Training", 1)
  with pytest.raises(FileNotFoundError, match="holds no iSeg-2017 files"):
    iseg.find_subjects(tmp_path)


def test_iseg2019_loads(tmp_path):
  train = tmp_path / "iSeg-2019-Training"
  rng = np.random.default_rng(0)
  t1, t2 = (rng.integers(0, 500, (4, 5, 6)).astype(np.int16) for _ in range(2))
  lab = np.asarray([0, 10, 150, 250], np.uint8)[rng.integers(0, 4, (4, 5, 6))]
  for kind, data in (("T1", t1), ("T2", t2), ("label", lab)):
    io.save_image(train / f"subject-7-{kind}.hdr", data[..., None], np.eye(4))
  case = layouts.load_case(mz.find_iseg2019(tmp_path).training[0], num_channels=2,
                           label_values=mz.ISEG2019_LABEL_VALUES)
  np.testing.assert_array_equal(case.image, np.stack([t1, t2], -1))
  np.testing.assert_array_equal(case.label, np.searchsorted([0, 10, 150, 250], lab))


# --- MRBrainS18 ----------------------------------------------------------------------------
def _mrbrains_subject(training, name, *, skip=()):
  for rel in ("orig/FLAIR.nii.gz", "orig/IR.nii.gz", "orig/T1.nii.gz", "pre/FLAIR.nii.gz",
              "pre/IR.nii.gz", "pre/T1.nii.gz", "pre/reg_IR.nii.gz", "pre/reg_T1.nii.gz",
              "segm.nii.gz"):
    if rel not in skip:
      _touch(training / name / rel)


def test_mrbrains2018_layout(tmp_path):
  training = tmp_path / "training"
  for name in mz.MRBRAINS2018_SUBJECTS:
    _mrbrains_subject(training, name)
  (training / "notes").mkdir()  # not a subject: ignored
  (training / "__MACOSX").mkdir()
  found = mz.find_mrbrains2018(tmp_path)
  assert [c.case_id for c in found.training] == sorted(mz.MRBRAINS2018_SUBJECTS)
  s070 = training / "070"
  assert found.training[0] == layouts.CaseFiles(
      "070", (s070 / "pre/reg_T1.nii.gz", s070 / "pre/reg_IR.nii.gz", s070 / "pre/FLAIR.nii.gz"),
      s070 / "segm.nii.gz")
  assert found.test == () and found.grades == {}


def test_mrbrains2018_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    mz.find_mrbrains2018(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match=r"training: missing; expected the MRBrainS18"):
    mz.find_mrbrains2018(tmp_path)
  training = tmp_path / "training"
  training.mkdir()
  with pytest.raises(FileNotFoundError, match="holds no MRBrainS18 subject folders"):
    mz.find_mrbrains2018(tmp_path)
  _mrbrains_subject(training, "1")
  with pytest.raises(FileNotFoundError, match="pass its parent folder"):
    mz.find_mrbrains2018(training)
  _mrbrains_subject(training, "4", skip=("pre/reg_IR.nii.gz",))
  # The message names the file and shows what pre/ holds (here the unregistered IR.nii.gz).
  with pytest.raises(FileNotFoundError,
                     match=r"training/4/pre/reg_IR\.nii\.gz: missing; .*holds FLAIR\.nii\.gz, "
                           r"IR\.nii\.gz, T1\.nii\.gz, reg_T1\.nii\.gz"):
    mz.find_mrbrains2018(tmp_path)
  _mrbrains_subject(training, "4", skip=("segm.nii.gz",))
  (training / "4" / "segm.nii.gz").unlink()
  with pytest.raises(FileNotFoundError, match=r"training/4/segm\.nii\.gz: missing"):
    mz.find_mrbrains2018(tmp_path)


# --- BraTS ---------------------------------------------------------------------------------
def _brats_case(folder, case, *, seg=True, ending=".nii.gz", seg_name=None):
  for kind in BRATS_KINDS:
    _touch(folder / case / f"{case}_{kind}{ending}")
  if seg:
    _touch(folder / case / (seg_name or f"{case}_seg{ending}"))


def _expected(folder, case, *, seg=True, ending=".nii.gz", seg_name=None):
  return layouts.CaseFiles(
      case, tuple(folder / case / f"{case}_{k}{ending}" for k in BRATS_KINDS),
      (folder / case / (seg_name or f"{case}_seg{ending}")) if seg else None)


@pytest.mark.parametrize("year, prefix", [(2018, "Brats18"), (2019, "BraTS19")])
def test_brats_graded_layout(tmp_path, year, prefix):
  train = tmp_path / f"MICCAI_BraTS_{year}_Data_Training"
  val = tmp_path / f"MICCAI_BraTS_{year}_Data_Validation"
  _brats_case(train / "HGG", f"{prefix}_CBICA_AAB_1")
  _brats_case(train / "HGG", f"{prefix}_2013_2_1")
  _brats_case(train / "LGG", f"{prefix}_2013_0_1")
  _touch(train / "survival_data.csv")
  _brats_case(val, f"{prefix}_CBICA_AAM_1", seg=False)
  _touch(val / "survival_evaluation.csv")
  found = mz.find_brats(tmp_path, year)
  assert found.training == (_expected(train / "LGG", f"{prefix}_2013_0_1"),
                            _expected(train / "HGG", f"{prefix}_2013_2_1"),
                            _expected(train / "HGG", f"{prefix}_CBICA_AAB_1"))
  assert found.test == (_expected(val, f"{prefix}_CBICA_AAM_1", seg=False),)
  assert found.grades == {f"{prefix}_2013_0_1": "LGG", f"{prefix}_2013_2_1": "HGG",
                          f"{prefix}_CBICA_AAB_1": "HGG"}
  # Other years' folders are not read.
  with pytest.raises(FileNotFoundError, match="MICCAI_BraTS2020_TrainingData: missing"):
    mz.find_brats(tmp_path, 2020)


def test_brats2020_layout_and_case_355(tmp_path):
  train = tmp_path / "MICCAI_BraTS2020_TrainingData"
  _brats_case(train, "BraTS20_Training_001")
  _brats_case(train, "BraTS20_Training_355", seg_name="W39_1998.09.19_Segm.nii")
  _brats_case(train, "BraTS20_Training_369", ending=".nii")  # uncompressed copies (Kaggle)
  (train / "name_mapping.csv").write_text(
      "Grade,BraTS_2019_subject_ID,BraTS_2020_subject_ID\nHGG,BraTS19_X,BraTS20_Training_001\n"
      "LGG,NA,BraTS20_Training_355\n")
  found = mz.find_brats(tmp_path, 2020)
  assert found.training == (
      _expected(train, "BraTS20_Training_001"),
      _expected(train, "BraTS20_Training_355", seg_name="W39_1998.09.19_Segm.nii"),
      _expected(train, "BraTS20_Training_369", ending=".nii"))
  assert found.test == ()  # no validation download
  assert found.grades == {"BraTS20_Training_001": "HGG", "BraTS20_Training_355": "LGG"}
  # A user who renamed the file to the regular name: that one is used.
  _touch(train / "BraTS20_Training_355" / "BraTS20_Training_355_seg.nii.gz")
  assert mz.find_brats(tmp_path, 2020).training[1].label.name == "BraTS20_Training_355_seg.nii.gz"
  # The alias belongs to case 355 only.
  _brats_case(train, "BraTS20_Training_002", seg=False)
  _touch(train / "BraTS20_Training_002" / "W39_1998.09.19_Segm.nii")
  with pytest.raises(FileNotFoundError,
                     match=r"BraTS20_Training_002/BraTS20_Training_002_seg\.nii\.gz: missing"):
    mz.find_brats(tmp_path, 2020)


def test_brats2020_validation_and_no_name_mapping(tmp_path):
  train = tmp_path / "MICCAI_BraTS2020_TrainingData"
  val = tmp_path / "MICCAI_BraTS2020_ValidationData"
  _brats_case(train, "BraTS20_Training_001")
  _brats_case(val, "BraTS20_Validation_002", seg=False)
  _brats_case(val, "BraTS20_Validation_001", seg=False)
  _touch(val / "name_mapping_validation_data.csv")
  found = mz.find_brats(tmp_path, 2020)
  assert [c.case_id for c in found.test] == ["BraTS20_Validation_001", "BraTS20_Validation_002"]
  assert all(c.label is None for c in found.test)
  assert found.grades == {}


def test_brats_missing_and_ambiguous_files(tmp_path):
  train = tmp_path / "MICCAI_BraTS_2018_Data_Training"
  _brats_case(train / "HGG", "Brats18_A_1")
  case = train / "HGG" / "Brats18_A_1"
  (case / "Brats18_A_1_t1ce.nii.gz").rename(case / "Brats18_A_1_T1CE.nii.gz")  # mis-named
  with pytest.raises(FileNotFoundError,
                     match=r"Brats18_A_1/Brats18_A_1_t1ce\.nii\.gz: missing; BraTS 2018 case "
                           r"Brats18_A_1 needs .*holds Brats18_A_1_T1CE\.nii\.gz"):
    mz.find_brats(tmp_path, 2018)
  (case / "Brats18_A_1_T1CE.nii.gz").rename(case / "Brats18_A_1_t1ce.nii.gz")
  (case / "Brats18_A_1_seg.nii.gz").unlink()
  with pytest.raises(FileNotFoundError, match=r"Brats18_A_1_seg\.nii\.gz: missing"):
    mz.find_brats(tmp_path, 2018)
  _touch(case / "Brats18_A_1_seg.nii.gz")
  _touch(case / "Brats18_A_1_seg.nii")
  with pytest.raises(ValueError, match=r"Brats18_A_1_seg\.nii\.gz and Brats18_A_1_seg\.nii: two"):
    mz.find_brats(tmp_path, 2018)


def test_brats_folder_errors(tmp_path):
  with pytest.raises(ValueError, match=r"BraTS year 2017: expected one of \(2018, 2019, 2020\)"):
    mz.find_brats(tmp_path, 2017)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    mz.find_brats(tmp_path / "missing", 2019)
  with pytest.raises(FileNotFoundError, match="MICCAI_BraTS_2019_Data_Training: missing"):
    mz.find_brats(tmp_path, 2019)
  train = tmp_path / "MICCAI_BraTS_2019_Data_Training"
  (train / "HGG").mkdir(parents=True)
  (train / "HGG" / "not_a_case").mkdir()
  with pytest.raises(FileNotFoundError, match="holds no BraTS 2019 case folders"):
    mz.find_brats(tmp_path, 2019)
  _brats_case(train / "HGG", "BraTS19_A_1")
  with pytest.raises(FileNotFoundError, match="pass its parent folder"):
    mz.find_brats(train, 2019)
  _brats_case(train / "LGG", "BraTS19_A_1")
  with pytest.raises(ValueError, match=re.escape(
      f"{train / 'LGG' / 'BraTS19_A_1'}: case BraTS19_A_1 also appears in "
      f"{train / 'HGG' / 'BraTS19_A_1'}")):
    mz.find_brats(tmp_path, 2019)


def test_brats2020_bad_name_mapping(tmp_path):
  train = tmp_path / "MICCAI_BraTS2020_TrainingData"
  _brats_case(train, "BraTS20_Training_001")
  (train / "name_mapping.csv").write_text("Grade,BraTS_2020_subject_ID\nGBM,BraTS20_Training_001\n")
  with pytest.raises(ValueError, match=r"name_mapping\.csv: case BraTS20_Training_001 has grade "
                                       r"'GBM'"):
    mz.find_brats(tmp_path, 2020)
  (train / "name_mapping.csv").write_text("Grade,ID\nHGG,BraTS20_Training_001\n")
  with pytest.raises(ValueError, match=r"name_mapping\.csv: expected the columns"):
    mz.find_brats(tmp_path, 2020)


def test_brats_case_loads_with_class_ids(tmp_path):
  train = tmp_path / "MICCAI_BraTS2020_TrainingData"
  rng = np.random.default_rng(1)
  affine = np.diag([-1.0, -1.0, 1.0, 1.0])
  images = [rng.integers(0, 900, (4, 5, 6)).astype(np.int16) for _ in BRATS_KINDS]
  for kind, data in zip(BRATS_KINDS, images):
    io.save_image(train / "BraTS20_Training_355" / f"BraTS20_Training_355_{kind}.nii.gz", data,
                  affine)
  seg = np.asarray([0, 1, 2, 4], np.uint8)[rng.integers(0, 4, (4, 5, 6))]
  io.save_image(train / "BraTS20_Training_355" / "W39_1998.09.19_Segm.nii", seg, affine)
  case = layouts.load_case(mz.find_brats(tmp_path, 2020).training[0], num_channels=4,
                           label_values=mz.BRATS_LABEL_VALUES)
  np.testing.assert_array_equal(case.image, np.stack(images, -1))
  np.testing.assert_array_equal(case.label, np.searchsorted([0, 1, 2, 4], seg))
  # The regions as class ids: WT = every tumour class, TC = NCR_NET + ET, ET alone.
  assert mz.BRATS_REGIONS == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
  assert [mz.BRATS_CLASS_NAMES[k] for k in mz.BRATS_REGIONS["TC"]] == ["NCR_NET", "ET"]
