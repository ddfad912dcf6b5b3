"""iSeg-2019: multi-site 6-month infant brain MRI (T1, T2) with CSF / GM / WM labels."""

from __future__ import annotations

import functools
from typing import Sequence

import tensorflow_datasets as tfds

from medjax.data import layouts
from medjax.data import medzoo_layouts
from medjax.data import tfds_features

_HOMEPAGE = "http://iseg2019.web.unc.edu/"


class Builder(tfds_features.CaseBuilder, tfds_features.ArrayRecordDefault,
              tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for iSeg-2019 (reads the download as distributed; manual download)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Register at {_HOMEPAGE} and download the iSeg-2019 training, validation and (optionally)
  testing data. Unpack the archives into one folder and pass it as `--manual_dir` (the default
  is `~/tensorflow_datasets/downloads/manual/`):

    DIR/iSeg-2019-Training/subject-{{1..10}}-{{T1,T2,label}}.hdr/.img
    DIR/iSeg-2019-Validation/subject-{{11..23}}-{{T1,T2}}.hdr/.img   (optional; `test` split)
    DIR/iSeg-2019-Testing/subject-{{24..39}}-{{T1,T2}}.hdr/.img      (optional; `test` split)

  A flat folder holding all the subject-N-*.hdr/.img files works too.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds_features.info(
        self, homepage=_HOMEPAGE,
        metadata=tfds_features.metadata(
            medzoo_layouts.ISEG2019_CHANNELS, medzoo_layouts.ISEG2019_CLASS_NAMES,
            medzoo_layouts.ISEG2019_LABEL_VALUES))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    found = medzoo_layouts.find_iseg2019(dl_manager.manual_dir)
    return tfds_features.case_splits(self._generate_examples, found.training, found.test)

  def _generate_examples(self, cases: Sequence[layouts.CaseFiles], split: str):
    return self.records(split, cases, functools.partial(
        tfds_features.case_records, builder_name=self.name,
        num_channels=len(medzoo_layouts.ISEG2019_CHANNELS),
        label_values=medzoo_layouts.ISEG2019_LABEL_VALUES))
