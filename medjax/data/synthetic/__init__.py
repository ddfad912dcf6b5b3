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
the real 144 x 192 x 256 size): a cerebrum ellipsoid (semi-axes about 56 x 72 x 54) whose
outline varies smoothly per subject; outer CSF (2 mm over the gyral crowns); sulci, thin CSF
clefts up to about 16 mm deep that run along the zero lines of a random field on the sphere; a
grey-matter (GM) ribbon 4.6 mm thick that lines the outer surface and both walls of every
sulcus, so that it folds around white-matter (WM) gyral cores; an interhemispheric fissure (CSF
lined by GM) down to the corpus callosum; two curved lateral ventricles (CSF) and two deep-GM
nuclei. At full size the classes cover about 87 % background, 3 % CSF, 5.5 % GM and 4.5 % WM
(real data: 87 / 3 / 6 / 4).

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
