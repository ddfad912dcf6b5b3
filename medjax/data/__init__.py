"""medjax data: dataset layouts, built datasets, preprocessing, crop sampling, build.

Modules (none imports JAX, so the TFDS builders can use them in any environment):

- `layouts`: the nnU-Net v2 raw and Medical Segmentation Decathlon layouts (`read_dataset`),
  reading `dataset_json` fields and `image_folders` (`{case}_{XXXX}` channel files).
- `case_files`: the files of one case and the case loader (`load_case`); `naming`: sort order.
- `iseg`, `medzoo_layouts`: the download layouts of iSeg-2017/2019, MRBrainS18 and BraTS.
- `tfds_features`: the feature schema every builder but iSeg-2017's stores.
- `datasets`: built TFDS datasets as medjax reads them (whole cases, names, k-fold splits).
- `geometry`: orientation, non-zero crop, resampling and their inverse.
- `normalize`: per-channel intensity normalisation (MedicalZoo's modes, nnU-Net's CT).
- `preprocessing`: the one preprocessing contract of a run (saved as preprocessing.json).
- `synthetic`: built-in synthetic brains in the iSeg, nnU-Net and Decathlon layouts.
- `sampling`: seeded sub-volume crops under a foreground threshold rule.
- `build`: build any of the TFDS datasets without TensorFlow (`python -m medjax.data.build`).
"""
