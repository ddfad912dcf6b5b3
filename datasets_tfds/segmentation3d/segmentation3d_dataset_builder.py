"""Segmentation3d: any nnU-Net v2 raw dataset or Medical Segmentation Decathlon task."""

from __future__ import annotations

import dataclasses
import functools

import tensorflow_datasets as tfds

from medjax.data import layouts
from medjax.data import tfds_features

_HOMEPAGE = "https://github.com/MIC-DKFZ/nnUNet/blob/master/documentation/dataset_format.md"


@dataclasses.dataclass
class Segmentation3dConfig(tfds.core.BuilderConfig):
  """A config of the generic builder.

  The builder reads whatever dataset `manual_dir` holds; nothing depends on the config's name,
  so one config per dataset (e.g. `Segmentation3dConfig(name='dataset001_brain')`) keeps several
  datasets apart under one `data_dir`.
  """


class Builder(tfds_features.CaseBuilder, tfds_features.ArrayRecordDefault,
              tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for a 3-D segmentation dataset in the nnU-Net v2 or Decathlon layout."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Pass ONE dataset folder as `--manual_dir` (the folder holding dataset.json), in either layout:

  nnU-Net v2 raw dataset (nnUNet_raw/DatasetXXX_Name; see
  https://github.com/MIC-DKFZ/nnUNet/blob/master/documentation/dataset_format.md):

    DIR/dataset.json        {"channel_names": {"0": "T1", "1": "T2"},
                             "labels": {"background": 0, "CSF": 1, ...},
                             "numTraining": N, "file_ending": ".nii.gz"}
    DIR/imagesTr/{case}_{XXXX}.nii.gz   one 3-D file per channel XXXX = 0000, 0001, ...
    DIR/labelsTr/{case}.nii.gz
    DIR/imagesTs/{case}_{XXXX}.nii.gz   (optional; `test` split)

  Medical Segmentation Decathlon task (http://medicaldecathlon.com/, e.g. Task01_BrainTumour
  unpacked from Task01_BrainTumour.tar):

    DIR/dataset.json        {"modality": {"0": "FLAIR", ...},
                             "labels": {"0": "background", "1": "edema", ...},
                             "numTraining": N, "training": [{"image": ..., "label": ...}],
                             "test": [...]}
    DIR/imagesTr/{case}.nii.gz          4-D [X, Y, Z, C] (3-D for one channel)
    DIR/labelsTr/{case}.nii.gz
    DIR/imagesTs/{case}.nii.gz          (`test` split)

  Files must be NIfTI (.nii.gz or .nii). macOS `._*` files are ignored. Use one config name per
  dataset to keep several under one data_dir.
  """
  BUILDER_CONFIGS = [
      Segmentation3dConfig(name="default", description="One example per case, as on disk."),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    # metadata is filled from dataset.json in `_split_generators`; written as metadata.json.
    return tfds_features.info(self, homepage=_HOMEPAGE, metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    description = layouts.read_dataset(dl_manager.manual_dir)
    self.info.metadata.update(tfds_features.metadata(
        description.channel_names, description.class_names, description.label_values,
        layout=description.layout, name=description.name, file_ending=description.file_ending))
    splits = {"train": self._generate_examples(description, description.training, "train")}
    if description.test:
      splits["test"] = self._generate_examples(description, description.test, "test")
    return splits

  def _generate_examples(self, description: layouts.DatasetDescription,
                         cases: tuple[layouts.CaseFiles, ...], split: str):
    return self.records(split, cases, functools.partial(
        tfds_features.case_records, builder_name=self.name,
        num_channels=description.num_channels, label_values=description.label_values))
