"""Built-in data: synthetic 6-month infant brains in the iSeg-2017, nnU-Net v2 and MSD layouts.

`write_iseg_layout` writes `iSeg-2017-Training/subject-N-{T1,T2,label}.hdr/.img` (and
`iSeg-2017-Testing/` for test subjects) as Analyze 7.5 pairs with the real files' conventions:
int16 T1/T2 and uint8 label values 0 / 10 / 150 / 250, a trailing singleton axis
(`[D, H, W, 1]`), 1 mm voxels and a zero (skull-stripped) background. Everything downstream
reads these files exactly like the real download.

`write_nnunet_layout` (nnU-Net v2 raw: `dataset.json`, `imagesTr/{case}_{XXXX}.nii.gz`,
`labelsTr/`, `imagesTs/`) and `write_decathlon_layout` (Medical Segmentation Decathlon: one
`[X, Y, Z, C]` image per case) write the same brains as NIfTI with class ids 0..3 (background,
CSF, GM, WM), 1-3 channels (T1, T2 and a FLAIR-like contrast), any voxel spacing (the same
physical brain sampled at that spacing) and any stored orientation (`axcodes`, reoriented with
nibabel so that every tissue keeps its world position); `generate_case` gives one such case as
arrays. They are the no-download examples of the generic dataset route.

Anatomy (sizes are fractions of the field of view, so any shape works; numbers below are mm at
the real 144 x 192 x 256 size, where a voxel is 1 mm): a cerebrum ellipsoid (semi-axes about
56 x 72 x 54, scaled by 0.93-1.07 per subject) whose outline varies smoothly per subject; outer
CSF 1.8-3.6 mm thick; an interhemispheric fissure (1 mm of CSF on a wavy midline) down to the
corpus callosum, which arches over the ventricles, and down to the base in front of and behind
it. Sulci are thin CSF clefts (1 mm) along the zero set of a smooth random field sampled on the
outer and the medial surfaces (about 10 mm apart, up to 22 mm deep, leaning and bending with
depth, some shallow); a grey-matter (GM) ribbon about 2.5 mm thick (2-3 mm, like a 6-month
infant's cortex) lines the surfaces and both walls of every sulcus with rounded gyral crowns, and
white matter (WM) fills the gyral cores beneath. Deep structures: the lateral ventricles (curved,
bending down front and back) and the third ventricle (CSF); the thalami, lentiform nuclei and
caudate heads (GM). Subjects differ in size, outline, folding, sulcal depth, cortical thickness,
deep structures, bias fields and noise. At full size the classes cover about 87 % background,
3 % CSF, 5 % GM and 5 % WM (real iSeg-2017: 87 / 3 / 6 / 4, whose GM also holds the cerebellar
cortex that these brains lack).

Partial volume: every tissue border is a signed distance, so the label is the tissue at the voxel
centre while the intensities mix the tissue means by the fraction of the voxel that each tissue
covers; a coarser voxel mixes more, and a sulcus narrower than a voxel still darkens T1.

Contrast (isointense phase, about 6 months): in T1, CSF is dark and GM and WM are close; in T2,
CSF is bright and WM is brighter than GM; in the FLAIR-like third channel, CSF is suppressed
(dark) and WM is darker than GM. Each subject also gets a smooth multiplicative bias field per
modality, a smooth myelination gradient in WM, and Gaussian noise, so that no single threshold
of one modality separates the tissues while local T1 + T2 contrast does.
"""

# brain: rendering one subject (generate_subject, generate_case); writers: the dataset folders.
from medjax.data.synthetic.brain import (CHANNEL_NAMES, CLASS_NAMES, REAL_SHAPE, generate_case,
                                         generate_subject)
from medjax.data.synthetic.writers import (write_decathlon_layout, write_iseg_layout,
                                           write_nnunet_layout)

__all__ = [
    "CHANNEL_NAMES",
    "CLASS_NAMES",
    "REAL_SHAPE",
    "generate_case",
    "generate_subject",
    "write_decathlon_layout",
    "write_iseg_layout",
    "write_nnunet_layout",
]
