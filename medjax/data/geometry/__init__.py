"""One canonical voxel grid per scan for the network, and its exact inverse for predictions.

`forward` brings a scan (image `[D, H, W, C]`, optional label `[D, H, W]`, affine `[4, 4]`) to
the grid the network sees, in nnU-Net's order (nnunetv2 `preprocessing/`):

1. **Orientation** (`orientation='RAS'`): a pure permutation / flip of the voxel axes, chosen by
   `nibabel.orientations` (`io_orientation` -> `ornt_transform` -> `apply_orientation`), so the
   axis codes of the result are `orientation` (`nibabel.aff2axcodes`). Exact, no interpolation;
   the affine and spacing follow the axes. nnU-Net transposes axes by spacing instead; reorienting
   to RAS makes every case of a dataset share one axis order whatever its file's orientation.
2. **Non-zero crop** (`crop_nonzero=True`): the bounding box of the voxels that are non-zero in
   any channel (nnU-Net's `crop_to_nonzero`; filling holes, as nnU-Net does for its mask, never
   changes that box) or carry a foreground label (nnU-Net would drop such labels silently).
3. **Resampling** to `target_spacing` (skipped when None or when the shape does not change):
   new shape `round(spacing / target_spacing * shape)` per axis (nnU-Net's `compute_new_shape`).
   Images: spline interpolation of order `image_order` (3) per channel; labels: `linear_onehot`
   (linear interpolation of each class's one-hot map, then argmax; nnU-Net's segmentation
   resampling thresholds each map at 0.5 instead) or `nearest`. For strongly anisotropic data
   (`anisotropic_axis`: max / min spacing > 3 in the source, else in the target spacing, with a
   single lowest-resolution axis) the in-plane axes use that order and the low-resolution axis
   order 0, as nnU-Net's `resample_data_or_seg(do_separate_z=True, order_z=0)`.

Voxel-centre convention (scikit-image `resize`, nnU-Net, `scipy.ndimage.zoom(grid_mode=True)`):
the two grids cover the same field of view; its corners are the outer faces of the corner voxels.
Along an axis resampled from n to m voxels, the centre of new voxel j lies at old voxel
coordinate `(j + 0.5) * n / m - 0.5`, and values beyond the outer voxel centres repeat the edge
voxel (`mode='nearest'`). The preprocessed grid's affine `record.affine` is the oriented, cropped
affine composed with that map, so its voxel size is `spacing * n / m`: `target_spacing` up to the
rounding of the shape (`record.spacing_after_resampling` holds the exact one). Downsampling uses
no anti-aliasing, like nnU-Net.

A `GeometryRecord` (JSON-able with `to_dict` / `from_dict`) holds what undoes the transform:
`inverse_probabilities` resamples class probabilities back (linear, with the same anisotropic
rule), pads outside the crop box with background (class 0) probability 1 and undoes the
orientation, giving probabilities on the original file's voxel grid; `inverse_labels` does the
same for a label map.

Dataset level: `median_spacing` is the per-axis median of the cases' spacings; `target_spacing` is
nnU-Net's full-resolution rule (`ExperimentPlanner.determine_fullres_target_spacing`), which lowers
the low-resolution axis of strongly anisotropic datasets to that axis's 10th percentile. Pass them
spacings and shapes in the canonical axes (`record.spacing_before_resampling` and
`record.shape_before_resampling` of `forward(..., target_spacing=None)`).

Everything is deterministic numpy / scipy (no JAX: this runs in dataset builders and input
pipelines); images and probabilities come out float32, labels uint8.
"""

# record: GeometryRecord; transform: forward and its inverse; resampling: shapes, the anisotropic
# axis, image and label resampling; planning: median and target spacing; _checks: arguments.
from medjax.data.geometry._checks import LABEL_METHODS
from medjax.data.geometry.planning import median_spacing, target_spacing
from medjax.data.geometry.record import GeometryRecord
from medjax.data.geometry.resampling import (ANISOTROPY_THRESHOLD, SEPARATE_AXIS_ORDER,
                                             anisotropic_axis, resample, resampled_shape)
from medjax.data.geometry.transform import (forward, inverse_labels, inverse_probabilities,
                                            nonzero_mask)

__all__ = [
    "ANISOTROPY_THRESHOLD",
    "GeometryRecord",
    "LABEL_METHODS",
    "SEPARATE_AXIS_ORDER",
    "anisotropic_axis",
    "forward",
    "inverse_labels",
    "inverse_probabilities",
    "median_spacing",
    "nonzero_mask",
    "resample",
    "resampled_shape",
    "target_spacing",
]
