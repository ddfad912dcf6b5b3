"""MRBrainS18: adult brain MRI (T1, T1-IR, FLAIR) with 10 labelled brain structures."""

from __future__ import annotations

import functools
from typing import Sequence

import tensorflow_datasets as tfds

from medjax.data import layouts
from medjax.data import medzoo_layouts
from medjax.data import tfds_features

_HOMEPAGE = "https://mrbrains18.isi.uu.nl/"


class Builder(tfds_features.CaseBuilder, tfds_features.ArrayRecordDefault,
              tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for MRBrainS18 (reads the download as distributed; manual download)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Register at {_HOMEPAGE} and download the MRBrainS18 training data. Unpack it into a folder
  and pass that folder as `--manual_dir` (the default is
  `~/tensorflow_datasets/downloads/manual/`):

    DIR/training/{{1,4,5,7,14,070,148}}/pre/reg_T1.nii.gz   T1, registered to the FLAIR grid
    DIR/training/{{1,4,5,7,14,070,148}}/pre/reg_IR.nii.gz   T1-IR, registered to the FLAIR grid
    DIR/training/{{1,4,5,7,14,070,148}}/pre/FLAIR.nii.gz
    DIR/training/{{1,4,5,7,14,070,148}}/segm.nii.gz          labels 0..10

  The other files of the download (`orig/`, `pre/T1.nii.gz`, `pre/IR.nii.gz`) are not read.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds_features.info(
        self, homepage=_HOMEPAGE,
        metadata=tfds_features.metadata(
            medzoo_layouts.MRBRAINS2018_CHANNELS, medzoo_layouts.MRBRAINS2018_CLASS_NAMES,
            medzoo_layouts.MRBRAINS2018_LABEL_VALUES,
            regions={k: list(v) for k, v in medzoo_layouts.MRBRAINS2018_REGIONS.items()},
            ignored_classes=list(medzoo_layouts.MRBRAINS2018_IGNORED_CLASSES)))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    found = medzoo_layouts.find_mrbrains2018(dl_manager.manual_dir)
    # The 23 test subjects were never released (the challenge evaluated submitted containers).
    return {"train": self._generate_examples(found.training, "train")}

  def _generate_examples(self, cases: Sequence[layouts.CaseFiles], split: str):
    return self.records(split, cases, functools.partial(
        tfds_features.case_records, builder_name=self.name,
        num_channels=len(medzoo_layouts.MRBRAINS2018_CHANNELS),
        label_values=medzoo_layouts.MRBRAINS2018_LABEL_VALUES))
