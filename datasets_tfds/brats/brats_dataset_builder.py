"""BraTS 2018, 2019 and 2020: glioma MRI (t1, t1ce, t2, flair) with tumour sub-region labels."""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import tensorflow_datasets as tfds

from medjax.data import layouts
from medjax.data import medzoo_layouts
from medjax.data import tfds_features

_HOMEPAGES = {
    2018: "https://www.med.upenn.edu/sbia/brats2018/data.html",
    2019: "https://www.med.upenn.edu/cbica/brats2019/data.html",
    2020: "https://www.med.upenn.edu/cbica/brats2020/data.html",
}


@dataclasses.dataclass
class BratsConfig(tfds.core.BuilderConfig):
  """One BraTS year.

  Attributes:
    year: 2018, 2019 or 2020.
  """
  year: int = 2020


def _layout_lines(year: int) -> str:
  layout = medzoo_layouts.BRATS_LAYOUTS[year]
  grade = "{HGG,LGG}/" if layout.graded else ""
  return (f"    DIR/{layout.training_folder}/{grade}<case>/<case>_"
          "{t1,t1ce,t2,flair,seg}.nii.gz\n"
          f"    DIR/{layout.validation_folder}/<case>/<case>_{{t1,t1ce,t2,flair}}.nii.gz\n"
          "        (optional; the `test` split)")


class Builder(tfds_features.CaseBuilder, tfds_features.ArrayRecordDefault,
              tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for BraTS 2018-2020 (reads the downloads as distributed; manual download)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Request the BraTS training (and optionally validation) data of the year you build from the
  challenge's site (registration and data request pages linked from):

    {_HOMEPAGES[2018]}
    {_HOMEPAGES[2019]}
    {_HOMEPAGES[2020]}

  Unpack the archives into one folder (several years may share it) and pass it as
  `--manual_dir` (the default is `~/tensorflow_datasets/downloads/manual/`):

  config 2018:
{_layout_lines(2018)}
  config 2019:
{_layout_lines(2019)}
  config 2020 (the grades come from name_mapping.csv when present):
{_layout_lines(2020)}
    DIR/MICCAI_BraTS2020_TrainingData/BraTS20_Training_355/W39_1998.09.19_Segm.nii is read as
    that case's segmentation. Uncompressed .nii files are accepted in place of .nii.gz.
  """
  BUILDER_CONFIGS = [
      BratsConfig(name=str(year), year=year,
                  description=f"BraTS {year} training (and validation, as `test`) cases.")
      for year in medzoo_layouts.BRATS_YEARS
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "2020"

  def _info(self) -> tfds.core.DatasetInfo:
    year = self.builder_config.year
    return tfds_features.info(
        self, homepage=_HOMEPAGES[year],
        metadata=tfds_features.metadata(
            medzoo_layouts.BRATS_CHANNELS, medzoo_layouts.BRATS_CLASS_NAMES,
            medzoo_layouts.BRATS_LABEL_VALUES, year=year,
            regions={k: list(v) for k, v in medzoo_layouts.BRATS_REGIONS.items()},
            grades={}))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    found = medzoo_layouts.find_brats(dl_manager.manual_dir, self.builder_config.year)
    # Training case id -> HGG / LGG, where the download records it (metadata.json).
    self.info.metadata["grades"] = dict(found.grades)
    return tfds_features.case_splits(self._generate_examples, found.training, found.test)

  def _generate_examples(self, cases: Sequence[layouts.CaseFiles], split: str):
    return self.records(split, cases, functools.partial(
        tfds_features.case_records, builder_name=self.name,
        num_channels=len(medzoo_layouts.BRATS_CHANNELS),
        label_values=medzoo_layouts.BRATS_LABEL_VALUES))
