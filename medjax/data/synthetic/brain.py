"""Synthetic 6-month infant brains as arrays: the anatomy, the contrasts and the geometry of one
subject (`generate_subject` in iSeg's label values, `generate_case` as a NIfTI case with class
ids, any spacing and voxel order). The description of the anatomy and contrast is in
`medjax.data.synthetic`; the folder writers are in `medjax.data.synthetic.writers`.
"""

from __future__ import annotations

from typing import Sequence

from nibabel import orientations
import numpy as np

from medjax.data import iseg

REAL_SHAPE = (144, 192, 256)
# Channel c of the NIfTI layouts, and class id k -> name.
CHANNEL_NAMES = ("T1", "T2", "FLAIR")
CLASS_NAMES = iseg.CLASS_NAMES  # ("background", "CSF", "GM", "WM"): iSeg-2017's tissues
# Brain semi-axes as fractions of each axis length (LR, AP, SI at the real shape).
_SEMI_AXES = (0.39, 0.375, 0.212)
# Lengths below are in mm at the real shape and scale with the brain radius at other shapes.
_REAL_RADIUS_MM = 60.0
_CSF_MIN_MM = 2.0         # outer CSF over gyral crowns
_SULCUS_DEPTH_MM = 16.0   # typical depth of a sulcus below the outer CSF
_CLEFT_HALF_MM = 1.0      # half-width of the CSF in a sulcus
_GM_MM = 4.6              # cortical thickness
_FISSURE_HALF_MM = 1.0    # interhemispheric fissure CSF half-width
_FOLD_FREQS = (18.0, 26.0)  # angular frequencies of the folding field on the unit sphere
_NUM_FOLD_WAVES = 24
# Mean intensities (background, CSF, GM, WM), int16 units.
_T1_MEANS = (0.0, 60.0, 228.0, 250.0)
_T2_MEANS = (0.0, 1100.0, 560.0, 640.0)
_T1_NOISE = 8.0
_T2_NOISE = 20.0
_BIAS_STD = 0.14          # std of the log bias field
_MYELIN_AMPLITUDE = 0.04  # WM T1 up / T2 down by this fraction where myelination is ahead
# FLAIR-like third channel: CSF suppressed, WM darker than GM.
_FLAIR_MEANS = (0.0, 45.0, 320.0, 250.0)
_FLAIR_NOISE = 10.0


def _smooth_direction_field(rng: np.random.Generator, dirs: np.ndarray, *, num_waves: int,
                            freqs: tuple[float, float],
                            with_gradient: bool = False) -> np.ndarray | tuple[np.ndarray, ...]:
  """A smooth zero-mean, unit-variance random function of unit directions `dirs` [N, 3].

  f(v) = sqrt(2 / K) * sum_k cos(w_k <n_k, v> + phi_k), with random unit n_k, w_k uniform in
  `freqs` and phi_k uniform in [0, 2 pi): a random Fourier series restricted to the sphere.
  With `with_gradient`, also returns its gradient in v, `[N, 3]`.
  """
  normals = rng.normal(size=(num_waves, 3))
  normals /= np.linalg.norm(normals, axis=1, keepdims=True)
  w = rng.uniform(*freqs, size=num_waves)
  phase = rng.uniform(0, 2 * np.pi, size=num_waves)
  waves = (normals * w[:, None]).astype(np.float32)  # [K, 3]
  dirs = dirs.astype(np.float32)
  # Three broadcast products beat a [N, 3] x [3, K] matmul, which BLAS handles poorly.
  arg = (dirs[:, :1] * waves[:, 0] + dirs[:, 1:2] * waves[:, 1] + dirs[:, 2:] * waves[:, 2]
         + phase.astype(np.float32))
  scale = np.sqrt(2.0 / num_waves, dtype=np.float32)
  f = scale * np.cos(arg).sum(axis=1)
  if not with_gradient:
    return f
  return f, -scale * (np.sin(arg) @ waves)


def _smooth_space_field(rng: np.random.Generator, pos: np.ndarray, *, num_waves: int,
                        freq: float) -> np.ndarray:
  """A smooth zero-mean, unit-variance random function of normalised positions `pos` [N, 3]."""
  return _smooth_direction_field(rng, pos, num_waves=num_waves, freqs=(0.5 * freq, freq))


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
  shape = tuple(int(s) for s in shape)
  if len(shape) != 3 or min(shape) < 8:
    raise ValueError(f"shape must be 3 axes of at least 8 voxels, got {shape}.")
  return shape


def _render(shape: tuple[int, int, int], spacing: np.ndarray, *, seed: int, subject_id: int,
            flair: bool) -> tuple[list[np.ndarray], np.ndarray]:
  """Samples one subject's brain on a RAS voxel grid.

  The brain is defined in a continuous reference frame of 1-unit cells whose field of view is
  `shape * spacing` units; voxel `i` of an axis with spacing `s` samples the point
  `(i + 0.5) * s - 0.5` (the centre of its `s`-unit cell), so `spacing = 1` samples the cell
  centres `0, 1, ..., n - 1` exactly like `generate_subject` always has.

  Args:
    shape: RAS voxel grid `(D, H, W)` (axes towards R, A, S).
    spacing: `[3]` float64 cell size of each axis, in reference units (mm).
    seed: dataset seed.
    subject_id: subject number.
    flair: also render the FLAIR-like channel (from its own random stream, so T1, T2 and the
      label do not depend on it).

  Returns:
    ([t1, t2] or [t1, t2, flair] `[D, H, W]` int16, label `[D, H, W]` uint8 class ids 0..3).
  """
  rng = np.random.default_rng([seed, subject_id, 2017])
  fov = spacing * shape  # reference units
  # Reference coordinate of voxel 0 (exactly 0.0 for spacing 1).
  first = 0.5 * spacing - 0.5
  semi = np.array(_SEMI_AXES) * fov * rng.uniform(0.94, 1.06, size=3)
  center = (fov - 1) / 2 + rng.uniform(-0.03, 0.03, size=3) * fov
  mm = float(np.prod(semi)) ** (1 / 3) / _REAL_RADIUS_MM  # reference units per "real mm"

  # Work on the voxels that can be brain: inside the enlarged ellipsoid's bounding box.
  outline_amp = 0.06
  reach = semi * (1 + 2 * outline_amp)
  lo = np.maximum(np.floor((center - reach - first) / spacing), 0).astype(int)
  hi = np.minimum(np.ceil((center + reach - first) / spacing) + 1, shape).astype(int)
  grids = np.meshgrid(*[((f + s * np.arange(a, b)).astype(np.float32) - np.float32(c))
                        / np.float32(r)
                        for a, b, f, s, c, r in zip(lo, hi, first, spacing, center, semi)],
                      indexing="ij")
  u = np.stack([g.ravel() for g in grids], axis=1)  # [N, 3] normalised coordinates
  rho = np.linalg.norm(u, axis=1)
  cand = rho < 1 + 2 * outline_amp
  box_index = np.flatnonzero(cand)
  u, rho = u[cand], rho[cand]
  dirs = u / np.maximum(rho, 1e-6)[:, None]

  # Outer surface: the ellipsoid with a smooth per-subject outline.
  outline = 1 + outline_amp * np.tanh(
      _smooth_direction_field(rng, dirs, num_waves=8, freqs=(1.0, 3.0)))
  radius = float(np.prod(semi)) ** (1 / 3)
  depth = (outline - rho) * radius  # reference units below the outer surface (approximately)

  # Interhemispheric fissure above the corpus callosum: a medial surface lined with CSF and GM.
  mid_lr = 0.03 * np.sin(2.5 * u[:, 1] + rng.uniform(0, 2 * np.pi))
  callosum_si = 0.18 + 0.15 * u[:, 1] ** 2
  medial = np.where(u[:, 2] > callosum_si, np.abs(u[:, 0] - mid_lr) * semi[0], np.inf)
  below_medial = medial - _FISSURE_HALF_MM * mm  # distance from the fissure's CSF

  # Folding: sulci are thin CSF clefts that run along the zero lines of a random field on the
  # sphere and reach `sulcus_depth` below the outer CSF; GM lines the outer surface and both
  # walls of each cleft, and what lies deeper than `_GM_MM` from any CSF is WM (gyral cores).
  fold, grad = _smooth_direction_field(rng, dirs, num_waves=_NUM_FOLD_WAVES, freqs=_FOLD_FREQS,
                                       with_gradient=True)
  grad_t = grad - np.sum(grad * dirs, axis=1, keepdims=True) * dirs  # along the surface
  # First-order distance from the cleft's mid-plane {fold = 0}.
  lateral = np.abs(fold) / np.maximum(np.linalg.norm(grad_t, axis=1), 1e-3) * (rho * radius)
  sulcus_depth = _SULCUS_DEPTH_MM * mm * (0.75 + 0.25 * np.tanh(
      _smooth_direction_field(rng, dirs, num_waves=8, freqs=(2.0, 5.0))))
  below = depth - _CSF_MIN_MM * mm  # distance below the outer CSF layer
  to_cleft = np.hypot(np.maximum(lateral - _CLEFT_HALF_MM * mm, 0),
                      np.maximum(below - sulcus_depth, 0))
  in_cleft = (lateral < _CLEFT_HALF_MM * mm) & (below < sulcus_depth)
  to_csf = np.where(in_cleft, -1.0, np.minimum(np.minimum(below, to_cleft), below_medial))
  label = np.zeros(rho.shape, np.uint8)  # class ids
  label[depth >= 0] = 1
  label[(depth >= 0) & (to_csf >= 0)] = 2
  label[(depth >= 0) & (to_csf >= _GM_MM * mm)] = 3

  # Deep structures, in mm-like coordinates relative to the brain centre.
  p = u * semi / mm  # [N, 3] in real mm
  jitter = rng.uniform(-1, 1, size=8)
  for side in (-1, 1):
    # Deep GM nuclei (thalamus and basal ganglia), lateral to and below the ventricles.
    c = np.array([side * (17 + 2 * jitter[0]), 2 + 3 * jitter[1], -6 + 2 * jitter[2]])
    r = np.array([12.0, 19.0, 11.0]) * (1 + 0.08 * jitter[3])
    label[np.sum(((p - c) / r) ** 2, axis=1) < 1] = 2
    # Lateral ventricles: banana-shaped, bending down at the front and back.
    y = p[:, 1]
    c_si = 8 + 1.5 * jitter[4] - 0.012 * y ** 2
    r = np.array([5.5 + jitter[5], 32.0 + 3 * jitter[6], 6.5 + jitter[7]])
    q = ((p[:, 0] - side * 9.0) / r[0]) ** 2 + (y / r[1]) ** 2 + ((p[:, 2] - c_si) / r[2]) ** 2
    label[q < 1] = 1

  # Intensities: tissue means, a WM myelination gradient, bias fields, noise.
  t1 = np.asarray(_T1_MEANS, np.float32)[label]
  t2 = np.asarray(_T2_MEANS, np.float32)[label]
  wm = label == 3
  myelin = np.tanh(_smooth_space_field(rng, u[wm], num_waves=6, freq=2.0))
  t1[wm] *= 1 + _MYELIN_AMPLITUDE * myelin
  t2[wm] *= 1 - _MYELIN_AMPLITUDE * myelin
  brain = label > 0
  # (T2's bias field is drawn after T1's noise, so unlike the anatomy it changes with the grid;
  # kept so that generate_subject's output never changes.)
  for img, noise in ((t1, _T1_NOISE), (t2, _T2_NOISE)):
    bias = np.exp(_BIAS_STD * _smooth_space_field(rng, u[brain], num_waves=8, freq=2.5))
    img[brain] = img[brain] * bias + rng.normal(0, noise, size=int(brain.sum()))
    # Skull-stripped data is zero outside the brain and positive inside.
    img[brain] = np.maximum(img[brain], 1)
  images = [t1, t2]
  if flair:
    # FLAIR-like: CSF suppressed, WM darker than GM (more so where myelination is ahead), with
    # its own bias field and noise from a separate stream: the bias field is the same function
    # of position on every grid.
    flair_rng = np.random.default_rng([seed, subject_id, 2017, 3])
    fl = np.asarray(_FLAIR_MEANS, np.float32)[label]
    fl[wm] *= 1 - _MYELIN_AMPLITUDE * myelin
    bias = np.exp(_BIAS_STD * _smooth_space_field(flair_rng, u[brain], num_waves=8, freq=2.5))
    fl[brain] = fl[brain] * bias + flair_rng.normal(0, _FLAIR_NOISE, size=int(brain.sum()))
    fl[brain] = np.maximum(fl[brain], 1)
    images.append(fl)

  def full(values: np.ndarray, dtype: type) -> np.ndarray:
    out = np.zeros(shape, dtype)
    box = np.zeros(int(np.prod(hi - lo)), dtype)
    box[box_index] = np.round(values) if dtype == np.int16 else values
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = box.reshape(hi - lo)
    return out

  return [full(img, np.int16) for img in images], full(label, np.uint8)


def generate_subject(shape: Sequence[int] = REAL_SHAPE, *, seed: int = 0,
                     subject_id: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Generates one synthetic subject.

  Deterministic in (seed, subject_id); subjects differ in size, outline, folding, ventricles,
  bias fields and noise. About 1.5 s at the real size on one core (vectorised numpy on the
  voxels that can be brain).

  Args:
    shape: volume shape `(D, H, W)`; each axis at least 8.
    seed: dataset seed.
    subject_id: subject number.

  Returns:
    (t1, t2, label): `[D, H, W]` int16, int16 and uint8 iSeg label values (0/10/150/250);
    background voxels are 0 in all three.
  """
  shape = _check_shape(shape)
  (t1, t2), label = _render(shape, np.ones(3), seed=seed, subject_id=subject_id, flair=False)
  return t1, t2, np.asarray(iseg.LABEL_VALUES, np.uint8)[label]


def _check_geometry(spacing: Sequence[float], axcodes: str | Sequence[str],
                    num_channels: int) -> tuple[np.ndarray, tuple[str, str, str]]:
  spacing = np.asarray(spacing, dtype=np.float64)
  if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
    raise ValueError(f"spacing must be 3 positive voxel sizes in mm, got {tuple(spacing)}.")
  codes = tuple(str(c).upper() for c in axcodes)
  if (len(codes) != 3 or any(c not in "LRPAIS" for c in codes)
      or sorted("LRPAIS".index(c) // 2 for c in codes) != [0, 1, 2]):
    raise ValueError(f"axcodes must name one of L/R, P/A and I/S each, such as 'RAS', 'LPS' or "
                     f"'PIR'; got {axcodes!r}.")
  if not 1 <= num_channels <= len(CHANNEL_NAMES):
    raise ValueError(
        f"num_channels must be 1..{len(CHANNEL_NAMES)} {CHANNEL_NAMES}, got {num_channels}.")
  return spacing, codes


def generate_case(shape: Sequence[int] = REAL_SHAPE, *, spacing: Sequence[float] = (1., 1., 1.),
                  axcodes: str = "RAS", num_channels: int = 2, seed: int = 0,
                  subject_id: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One synthetic subject as a NIfTI case: channels-last image, class ids and affine.

  The brain is one physical object per (seed, subject_id, shape * spacing): it is generated in
  millimetres over a field of view of `shape * spacing` mm (the RAS extent) and sampled at the
  centre of every voxel, so a coarser spacing samples the same tissue more sparsely (no
  resampling, no partial-volume mixing). With `spacing = (1, 1, 1)` and `axcodes = 'RAS'` the
  T1, T2 and label maps are exactly `generate_subject(shape, ...)`'s. The field of view is
  centred on world (0, 0, 0) mm; `axcodes` changes only how the voxels are stored: the RAS
  arrays are reoriented with `nibabel.orientations` and the affine follows, so every tissue
  keeps its world position (`nibabel.as_closest_canonical` of the written file gives back the
  RAS arrays exactly).

  Two grids with the same field of view (`shape * spacing`) hold the same anatomy: their labels
  agree at every shared voxel centre, e.g. `(8, 8, 24)` voxels of 3 x 3 x 1 mm equal
  `(24, 24, 24)` 1 mm voxels `[1::3, 1::3, :]`. The noise, and T2's bias field, are drawn per
  grid; T1's and FLAIR's bias fields are functions of position.

  Args:
    shape: voxel counts of the RAS grid `(n_LR, n_AP, n_SI)` (axes towards R, A and S), before
      reorientation; each at least 8.
    spacing: voxel size in mm along those RAS axes, e.g. `(1.0, 1.0, 2.5)` for thick axial
      slices.
    axcodes: orientation of the stored voxel axes, nibabel's convention (`'RAS'`: axis 0 runs
      towards Right, ...; `'LPS'` is DICOM's; `'PIR'` a sagittal acquisition).
    num_channels: 1 (T1), 2 (T1, T2) or 3 (T1, T2, FLAIR); see CHANNEL_NAMES.
    seed: dataset seed.
    subject_id: subject number.

  Returns:
    (image, label, affine): image `[D, H, W, C]` int16 (zero background, positive brain) and
    label `[D, H, W]` uint8 class ids 0..3 (CLASS_NAMES), both in the stored voxel order (the
    RAS shape permuted by `axcodes`), and the `[4, 4]` float64 voxel-to-world (mm) affine.
  """
  shape = _check_shape(shape)
  spacing, codes = _check_geometry(spacing, axcodes, num_channels)
  images, label = _render(shape, spacing, seed=seed, subject_id=subject_id,
                          flair=num_channels > 2)
  image = np.stack(images[:num_channels], axis=-1)
  ras_affine = np.diag(np.append(spacing, 1.0))
  ras_affine[:3, 3] = -0.5 * (np.array(shape) - 1) * spacing  # grid centre at world 0
  ornt = orientations.ornt_transform(orientations.axcodes2ornt(("R", "A", "S")),
                                     orientations.axcodes2ornt(codes))
  affine = ras_affine @ orientations.inv_ornt_aff(ornt, shape)
  image = np.ascontiguousarray(orientations.apply_orientation(image, ornt))
  label = np.ascontiguousarray(orientations.apply_orientation(label, ornt))
  return image, label, affine
