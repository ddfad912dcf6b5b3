"""The download layouts of MedicalZoo's datasets: iSeg-2019, MRBrainS18 and BraTS 2018-2020.

Each `find_*` function takes the folder the challenge's archives were unpacked into, checks that
every case has all its files, and returns `case_files.CaseFiles` (channel files in the
dataset's channel order, the label file or None) for `case_files.load_case`. No image is opened:
only names are checked (and BraTS 2020's `name_mapping.csv` read for the grades).

* iSeg-2019 (http://iseg2019.web.unc.edu/): iSeg-2017's Analyze naming,
  `iSeg-2019-Training/subject-{1..10}-{T1,T2,label}.hdr/.img`, unlabelled
  `iSeg-2019-Validation/subject-{11..23}-*` and `iSeg-2019-Testing/subject-{24..39}-*`.
  Labels 0 / 10 / 150 / 250 = background / CSF / GM / WM.
* MRBrainS18 (https://mrbrains18.isi.uu.nl/): `training/<subject>/pre/{reg_T1,reg_IR,FLAIR}.nii.gz`
  (bias-corrected, T1 and T1-IR registered to the FLAIR grid) and
  `training/<subject>/segm.nii.gz` (labels 0..10), subjects 1, 4, 5, 7, 14, 070, 148. The
  download's other files (`orig/`, `pre/T1.nii.gz`, `pre/IR.nii.gz`) are not read.
* BraTS 2018 / 2019: `MICCAI_BraTS_20xx_Data_Training/{HGG,LGG}/<case>/<case>_{t1,t1ce,t2,flair,
  seg}.nii.gz`; the validation download `MICCAI_BraTS_20xx_Data_Validation/<case>/` is flat and
  has no `seg`. BraTS 2020: `MICCAI_BraTS2020_TrainingData/BraTS20_Training_NNN/...` (flat; the
  grade is in `name_mapping.csv`) and `MICCAI_BraTS2020_ValidationData/BraTS20_Validation_NNN/`.
  Case 355's segmentation is shipped as `W39_1998.09.19_Segm.nii`. Labels 0 / 1 / 2 / 4 =
  background / necrotic and non-enhancing core / edema / enhancing tumour.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib

from medjax.data import case_files
from medjax.data import iseg

# --- iSeg-2019 -----------------------------------------------------------------------------
ISEG2019_CHANNELS = iseg.MODALITIES  # ("T1", "T2")
ISEG2019_CLASS_NAMES = iseg.CLASS_NAMES  # ("background", "CSF", "GM", "WM")
ISEG2019_LABEL_VALUES = iseg.LABEL_VALUES  # (0, 10, 150, 250)
ISEG2019_TRAINING_FOLDER = "iSeg-2019-Training"
# Both unlabelled downloads: validation subjects 11-23 and test subjects 24-39.
ISEG2019_UNLABELLED_FOLDERS = ("iSeg-2019-Validation", "iSeg-2019-Testing")

# --- MRBrainS18 ----------------------------------------------------------------------------
MRBRAINS2018_CHANNELS = ("T1", "T1-IR", "FLAIR")
# The files of each channel, in channel order, relative to `training/<subject>/`.
MRBRAINS2018_FILES = ("pre/reg_T1.nii.gz", "pre/reg_IR.nii.gz", "pre/FLAIR.nii.gz")
MRBRAINS2018_LABEL_FILE = "segm.nii.gz"
MRBRAINS2018_TRAINING_FOLDER = "training"
MRBRAINS2018_CLASS_NAMES = (
    "background", "cortical_GM", "basal_ganglia", "WM", "WM_lesions", "CSF", "ventricles",
    "cerebellum", "brain_stem", "infarction", "other")
MRBRAINS2018_LABEL_VALUES = tuple(range(11))
MRBRAINS2018_SUBJECTS = ("1", "4", "5", "7", "14", "070", "148")
# The challenge's 3-tissue evaluation (MRBrainS13's merge, MedicalZoo's `mrbrains4`).
MRBRAINS2018_REGIONS = {"GM": (1, 2), "WM": (3, 4), "CSF": (5, 6)}
# Labels 9 and 10 are excluded from the challenge's evaluation.
MRBRAINS2018_IGNORED_CLASSES = (9, 10)

# --- BraTS ---------------------------------------------------------------------------------
BRATS_YEARS = (2018, 2019, 2020)
BRATS_CHANNELS = ("t1", "t1ce", "t2", "flair")
BRATS_CLASS_NAMES = ("background", "NCR_NET", "ED", "ET")
BRATS_LABEL_VALUES = (0, 1, 2, 4)
# The evaluation regions as class ids: whole tumour, tumour core, enhancing tumour.
BRATS_REGIONS = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
BRATS_GRADES = ("HGG", "LGG")
_NII_ENDINGS = (".nii.gz", ".nii")


@dataclasses.dataclass(frozen=True)
class BratsLayout:
  """Where one BraTS year keeps its cases.

  Attributes:
    year: 2018, 2019 or 2020.
    training_folder: the training download's folder.
    validation_folder: the validation download's folder (no labels).
    case_prefix: how training case folders start (`Brats18_`, `BraTS19_`, `BraTS20_Training_`).
    validation_prefix: how validation case folders start.
    graded: whether training cases sit in `HGG/` and `LGG/` subfolders.
    seg_aliases: case id -> the real name of a misnamed segmentation file.
  """
  year: int
  training_folder: str
  validation_folder: str
  case_prefix: str
  validation_prefix: str
  graded: bool
  seg_aliases: dict[str, str] = dataclasses.field(default_factory=dict)


BRATS_LAYOUTS = {
    2018: BratsLayout(2018, "MICCAI_BraTS_2018_Data_Training", "MICCAI_BraTS_2018_Data_Validation",
                      "Brats18_", "Brats18_", graded=True),
    2019: BratsLayout(2019, "MICCAI_BraTS_2019_Data_Training", "MICCAI_BraTS_2019_Data_Validation",
                      "BraTS19_", "BraTS19_", graded=True),
    2020: BratsLayout(2020, "MICCAI_BraTS2020_TrainingData", "MICCAI_BraTS2020_ValidationData",
                      "BraTS20_Training_", "BraTS20_Validation_", graded=False,
                      seg_aliases={"BraTS20_Training_355": "W39_1998.09.19_Segm.nii"}),
}
# 2020's grades: `Grade` (HGG/LGG) of `BraTS_2020_subject_ID` in the training folder's CSV.
BRATS2020_NAME_MAPPING = "name_mapping.csv"


@dataclasses.dataclass(frozen=True)
class FoundCases:
  """The cases of one download.

  Attributes:
    training: labelled cases, sorted by case id (iSeg-2019: by subject number).
    test: unlabelled cases (label None), sorted the same way; may be empty.
    grades: BraTS case id -> "HGG" or "LGG" where the download says so; empty otherwise.
  """
  training: tuple[case_files.CaseFiles, ...]
  test: tuple[case_files.CaseFiles, ...]
  grades: dict[str, str] = dataclasses.field(default_factory=dict)


def _root(root: str | os.PathLike, dataset: str, expected: str) -> pathlib.Path:
  root = pathlib.Path(root).expanduser()
  if not root.is_dir():
    raise FileNotFoundError(
        f"manual_dir {root} does not exist or is not a folder; expected the {dataset} download "
        f"({expected}).")
  return root


def _entries(folder: pathlib.Path) -> list[pathlib.Path]:
  # Skip hidden files and the `__MACOSX/` folders that zip archives made on macOS carry.
  return sorted(p for p in folder.iterdir() if not p.name.startswith((".", "__")))


def _holds(folder: pathlib.Path) -> str:
  names = [p.name for p in _entries(folder)]
  shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
  return f"the folder holds {shown}" if names else "the folder is empty"


# --- iSeg-2019 -----------------------------------------------------------------------------
def find_iseg2019(root: str | os.PathLike) -> FoundCases:
  """Finds the iSeg-2019 subjects under `root` (see `iseg.find_subjects` for the checks).

  `root` holds `iSeg-2019-Training/` and optionally `iSeg-2019-Validation/` and
  `iSeg-2019-Testing/` (or is one flat folder of `subject-N-*` files). Case ids are
  `subject-N`; channels (T1, T2).

  Raises:
    FileNotFoundError, ValueError: as `iseg.find_subjects`, naming the file; also when no
      subject has a label.
  """
  subjects = iseg.find_subjects(
      root, training_folder=ISEG2019_TRAINING_FOLDER,
      testing_folders=ISEG2019_UNLABELLED_FOLDERS, dataset="iSeg-2019")
  cases = [case_files.CaseFiles(case_id=f"subject-{s.subject_id}", images=(s.t1, s.t2),
                                label=s.label) for s in subjects.values()]
  training = tuple(c for c in cases if c.label is not None)
  if not training:
    raise FileNotFoundError(
        f"manual_dir {root} holds no labelled iSeg-2019 subject; expected "
        f"{ISEG2019_TRAINING_FOLDER}/subject-N-{{T1,T2,label}}.hdr/.img from the training "
        f"download (found only unlabelled subjects {sorted(subjects)}).")
  return FoundCases(training=training, test=tuple(c for c in cases if c.label is None))


# --- MRBrainS18 ----------------------------------------------------------------------------
def find_mrbrains2018(root: str | os.PathLike) -> FoundCases:
  """Finds the MRBrainS18 training subjects under `root`.

  `root` holds `training/<subject>/` folders (subject names are digits, e.g. `1`, `070`), each
  with `pre/reg_T1.nii.gz`, `pre/reg_IR.nii.gz`, `pre/FLAIR.nii.gz` and `segm.nii.gz`. Other
  files (`orig/`, `pre/T1.nii.gz`, `pre/IR.nii.gz`) are ignored. The test subjects were never
  released, so `test` is empty. Case ids are the subject folder names; channels
  (T1, T1-IR, FLAIR).

  Raises:
    FileNotFoundError: `root` or `training/` is missing, holds no subject, or a subject lacks a
      file (the message names it and lists what the folder holds).
  """
  expected = (f"{MRBRAINS2018_TRAINING_FOLDER}/<subject>/{{{','.join(MRBRAINS2018_FILES)},"
              f"{MRBRAINS2018_LABEL_FILE}}}")
  root = _root(root, "MRBrainS18", expected)
  training = root / MRBRAINS2018_TRAINING_FOLDER
  if not training.is_dir():
    hint = ("; pass its parent folder" if root.name == MRBRAINS2018_TRAINING_FOLDER else "")
    raise FileNotFoundError(
        f"{training}: missing; expected the MRBrainS18 training download ({expected}){hint}.")
  cases = []
  for folder in _entries(training):
    if not folder.is_dir() or not folder.name.isdigit():
      continue
    files = []
    for rel in MRBRAINS2018_FILES + (MRBRAINS2018_LABEL_FILE,):
      path = folder / rel
      if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; MRBrainS18 subject {folder.name} needs "
            f"{', '.join(MRBRAINS2018_FILES + (MRBRAINS2018_LABEL_FILE,))}; "
            f"{_holds(path.parent) if path.parent.is_dir() else f'{path.parent} is missing'}.")
      files.append(path)
    cases.append(case_files.CaseFiles(case_id=folder.name, images=tuple(files[:-1]),
                                      label=files[-1]))
  if not cases:
    raise FileNotFoundError(
        f"{training} holds no MRBrainS18 subject folders (named by number, e.g. 1, 070, 148); "
        f"expected {expected}.")
  return FoundCases(training=tuple(cases), test=())


# --- BraTS ---------------------------------------------------------------------------------
def _nii(folder: pathlib.Path, stem: str) -> pathlib.Path | None:
  """`folder/stem.nii.gz` or `folder/stem.nii`, None when neither; both -> ValueError."""
  found = [folder / (stem + e) for e in _NII_ENDINGS if (folder / (stem + e)).is_file()]
  if len(found) > 1:
    raise ValueError(f"{found[0]} and {found[1].name}: two copies of one file; keep one.")
  return found[0] if found else None


def _brats_case(folder: pathlib.Path, layout: BratsLayout, *, labelled: bool
                ) -> case_files.CaseFiles:
  case = folder.name
  kinds = BRATS_CHANNELS + (("seg",) if labelled else ())
  wanted = f"{case}_{{{','.join(kinds)}}}.nii.gz"
  paths = []
  for kind in kinds:
    path = _nii(folder, f"{case}_{kind}")
    if path is None and kind == "seg" and case in layout.seg_aliases:
      alias = folder / layout.seg_aliases[case]
      path = alias if alias.is_file() else None
    if path is None:
      raise FileNotFoundError(
          f"{folder / f'{case}_{kind}.nii.gz'}: missing; BraTS {layout.year} case {case} needs "
          f"{wanted} (.nii also accepted); {_holds(folder)}.")
    paths.append(path)
  return case_files.CaseFiles(case_id=case, images=tuple(paths[:len(BRATS_CHANNELS)]),
                              label=paths[-1] if labelled else None)


def _brats_case_folders(folder: pathlib.Path, prefix: str) -> list[pathlib.Path]:
  return [p for p in _entries(folder) if p.is_dir() and p.name.startswith(prefix)]


def _brats2020_grades(training: pathlib.Path) -> dict[str, str]:
  path = training / BRATS2020_NAME_MAPPING
  if not path.is_file():
    return {}
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    columns = ("Grade", "BraTS_2020_subject_ID")
    if reader.fieldnames is None or any(c not in reader.fieldnames for c in columns):
      raise ValueError(f"{path}: expected the columns {list(columns)}, found "
                       f"{reader.fieldnames}.")
    grades = {}
    for row in reader:
      case, grade = row["BraTS_2020_subject_ID"].strip(), row["Grade"].strip()
      if grade not in BRATS_GRADES:
        raise ValueError(f"{path}: case {case} has grade {grade!r}; expected one of "
                         f"{BRATS_GRADES}.")
      grades[case] = grade
  return grades


def find_brats(root: str | os.PathLike, year: int) -> FoundCases:
  """Finds the BraTS `year` cases under `root`.

  `root` holds the training download (`MICCAI_BraTS_2018_Data_Training/`,
  `MICCAI_BraTS_2019_Data_Training/` or `MICCAI_BraTS2020_TrainingData/`) and optionally the
  validation download beside it (`MICCAI_BraTS_2018_Data_Validation/`,
  `MICCAI_BraTS_2019_Data_Validation/`, `MICCAI_BraTS2020_ValidationData/`), whose cases go to
  `test`. Case folders are recognised by their prefix (other entries, e.g. the CSV files, are
  ignored); each holds `<case>_{t1,t1ce,t2,flair}.nii.gz` (`.nii` accepted) and, for training
  cases, `<case>_seg.nii.gz` (BraTS 2020 case 355: `W39_1998.09.19_Segm.nii`). Case ids are the
  case folder names; channels (t1, t1ce, t2, flair).

  Returns:
    FoundCases whose `grades` hold HGG/LGG from the `HGG/`/`LGG/` folders (2018, 2019) or from
    `name_mapping.csv` when present (2020).

  Raises:
    ValueError: an unknown year, a case in two places, or a malformed `name_mapping.csv`.
    FileNotFoundError: a download folder is missing or empty, or a case lacks a file (the
      message names the file and lists what the case folder holds).
  """
  if year not in BRATS_LAYOUTS:
    raise ValueError(f"BraTS year {year}: expected one of {BRATS_YEARS}.")
  layout = BRATS_LAYOUTS[year]
  sub = "{HGG,LGG}/" if layout.graded else ""
  expected = (f"{layout.training_folder}/{sub}{layout.case_prefix}*/"
              f"<case>_{{t1,t1ce,t2,flair,seg}}.nii.gz, optionally "
              f"{layout.validation_folder}/{layout.validation_prefix}*/")
  root = _root(root, f"BraTS {year}", expected)
  training = root / layout.training_folder
  if not training.is_dir():
    hint = "; pass its parent folder" if root.name == layout.training_folder else ""
    raise FileNotFoundError(
        f"{training}: missing; expected the BraTS {year} training download ({expected}){hint}.")
  folders: list[tuple[pathlib.Path, str | None]] = []
  if layout.graded:
    for grade in BRATS_GRADES:
      if (training / grade).is_dir():
        folders += [(p, grade) for p in _brats_case_folders(training / grade, layout.case_prefix)]
    grades_csv = {}
  else:
    folders = [(p, None) for p in _brats_case_folders(training, layout.case_prefix)]
    grades_csv = _brats2020_grades(training)
  if not folders:
    raise FileNotFoundError(
        f"{training} holds no BraTS {year} case folders; expected {expected}.")
  grades: dict[str, str] = {}
  seen: dict[str, pathlib.Path] = {}
  training_cases = []
  for folder, grade in folders:
    if folder.name in seen:
      raise ValueError(f"{folder}: case {folder.name} also appears in {seen[folder.name]}; "
                       "keep one copy.")
    seen[folder.name] = folder
    training_cases.append(_brats_case(folder, layout, labelled=True))
    grade = grade or grades_csv.get(folder.name)
    if grade is not None:
      grades[folder.name] = grade
  test_cases = []
  validation = root / layout.validation_folder
  if validation.is_dir():
    for folder in _brats_case_folders(validation, layout.validation_prefix):
      if folder.name in seen:
        raise ValueError(f"{folder}: case {folder.name} also appears in {seen[folder.name]}; "
                         "keep one copy.")
      seen[folder.name] = folder
      test_cases.append(_brats_case(folder, layout, labelled=False))
  return FoundCases(training=tuple(sorted(training_cases, key=lambda c: c.case_id)),
                    test=tuple(sorted(test_cases, key=lambda c: c.case_id)),
                    grades=dict(sorted(grades.items())))
