"""medjax data: the iSeg-2017 layout, built-in synthetic data, normalisation, crop sampling, build.

Modules (none imports JAX, so the TFDS builder can use them in any environment):

- `iseg`: find, validate and load subjects of an iSeg-2017 folder.
- `synthetic`: write built-in iSeg-layout data (synthetic infant brains) for the quickstart.
- `normalize`: per-modality intensity normalisation (MedicalZoo's modes).
- `sampling`: seeded sub-volume crops under a foreground threshold rule.
- `build`: build the `iseg2017` TFDS dataset without TensorFlow (`python -m medjax.data.build`).
"""
