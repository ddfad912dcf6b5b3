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
# Lengths below are in "real mm": at the real shape one real mm is about one voxel (1 mm), and at
# other fields of view it scales with the nominal brain radius, so any shape holds the same
# anatomy, scaled. A subject's own size does not scale them: a bigger brain has more cortex, not
# a thicker one.
_REAL_RADIUS_MM = 60.0
_SIZE_RANGE = (0.93, 1.07)  # overall size factor between subjects (about +-20 % in volume)
_OUTLINE_AMPLITUDE = 0.06   # smooth per-subject deformation of the ellipsoid
_CSF_OUTER_MM = (1.8, 3.6)  # extra-axial CSF over the gyral crowns (range over the surface)
_FISSURE_HALF_MM = 0.5      # interhemispheric fissure CSF half-width
_GM_MM = 2.7                # nominal cortical thickness; about 2.5 mm measured (2-3 mm at 6 months)
_GM_VARIATION = 0.12        # +- relative variation of the thickness over the cortex
# Folding: sulci run along the zero set of a random field whose wave numbers (rad per real mm)
# put neighbouring sulci about 10 mm apart.
_FOLD_K = (0.38, 0.52)
_NUM_FOLD_WAVES = 24
_SULCUS_DEPTH_MM = 20.0     # deepest sulci, below the pial envelope; many are shallower
_CLEFT_HALF_MM = 0.5        # half-width of the CSF in a sulcus
_LIP_MM = 2.0               # radius of the rounded gyral shoulders
_MARGIN_MM = 3.0            # radius of the hemispheres' rounded superior margin
_BLEND_MM = 3.0             # where the outer and the medial surface hand over the folding
_LEAN = 0.25                # how much sulci lean and bend with depth (0: straight, normal)
_HEMISPHERE_SHIFT_MM = 40.0
# Deep structures, in real mm from the brain centre (x towards R, y towards A, z towards S).
_VENTRICLE_TOP_MM = 14.5    # roof of the lateral ventricles at y = 0
_CALLOSUM_MM = 3.5          # corpus callosum thickness, between ventricle roof and fissure
_CALLOSUM_HALF_LENGTH_MM = 27.0
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

_Waves = tuple[np.ndarray, np.ndarray]


def _random_waves(rng: np.random.Generator, num_waves: int,
                  wave_numbers: tuple[float, float]) -> _Waves:
  """Parameters of a random Fourier series: wave vectors `[K, 3]` and phases `[K]`.

  Random unit directions, lengths uniform in `wave_numbers` and phases uniform in [0, 2 pi).
  """
  normals = rng.normal(size=(num_waves, 3))
  normals /= np.linalg.norm(normals, axis=1, keepdims=True)
  k = rng.uniform(*wave_numbers, size=num_waves)
  phase = rng.uniform(0, 2 * np.pi, size=num_waves)
  return (normals * k[:, None]).astype(np.float32), phase.astype(np.float32)


def _field(waves: _Waves, points: np.ndarray, *,
           with_gradient: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
  """A smooth zero-mean, unit-variance random function of `points` [N, 3].

  f(x) = sqrt(2 / K) * sum_k cos(<k_k, x> + phi_k) with the wave vectors and phases of `waves`.
  With `with_gradient`, also returns its gradient in x, `[N, 3]`.
  """
  vectors, phase = waves
  points = points.astype(np.float32, copy=False)
  x, y, z = points[:, 0].copy(), points[:, 1].copy(), points[:, 2].copy()
  # One wave at a time on contiguous [N] arrays: several times faster than [N, K] arrays.
  f = np.zeros(len(points), np.float32)
  grad = np.zeros((3, len(points)), np.float32) if with_gradient else None
  for (kx, ky, kz), ph in zip(vectors, phase):
    arg = x * kx
    arg += y * ky
    arg += z * kz
    arg += ph
    f += np.cos(arg)
    if with_gradient:
      np.sin(arg, out=arg)
      grad[0] -= kx * arg
      grad[1] -= ky * arg
      grad[2] -= kz * arg
  scale = np.sqrt(2.0 / len(phase), dtype=np.float32)
  f *= scale
  if not with_gradient:
    return f
  return f, (scale * grad).T


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
  shape = tuple(int(s) for s in shape)
  if len(shape) != 3 or min(shape) < 8:
    raise ValueError(f"shape must be 3 axes of at least 8 voxels, got {shape}.")
  return shape


def _box_distance(*excess: np.ndarray) -> np.ndarray:
  """Signed distance to a box from each axis' `|x - c| - half_width` (negative inside)."""
  outside = np.sqrt(sum(np.maximum(e, 0) ** 2 for e in excess))
  return outside + np.minimum(np.maximum.reduce(excess), 0)


def _round_intersection(a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
  """Distance inside {a > 0} and {b > 0} (distances, positive inside), convex edge rounded."""
  return (np.maximum(np.minimum(a, b), radius)
          - np.hypot(np.maximum(radius - a, 0), np.maximum(radius - b, 0)))


def _ramp(d: np.ndarray, width: np.ndarray) -> np.ndarray:
  """Fraction of a voxel on the positive side of a border at signed distance `d` from its centre.

  A linear ramp of `width`: the voxel's extent along the border normal, matched in variance to
  the box (so it is the voxel size for cubes at any orientation).
  """
  return np.clip(0.5 + d / width, 0, 1)


def _render(shape: tuple[int, int, int], spacing: np.ndarray, *, seed: int, subject_id: int,
            flair: bool) -> tuple[list[np.ndarray], np.ndarray]:
  """Samples one subject's brain on a RAS voxel grid.

  The brain is defined in a continuous reference frame of 1-unit cells whose field of view is
  `shape * spacing` units; voxel `i` of an axis with spacing `s` samples the point
  `(i + 0.5) * s - 0.5` (the centre of its `s`-unit cell), so `spacing = 1` samples the cell
  centres `0, 1, ..., n - 1` exactly like `generate_subject`.

  Each tissue is bounded by a signed distance, a function of position: the label is the tissue
  at the voxel centre, and the intensities mix the tissue means by the fraction of the voxel each
  tissue covers (`_ramp` of the distance, with the voxel's extent along the distance's gradient
  from finite differences on the grid), so that coarser voxels mix more.

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
  nominal = np.array(_SEMI_AXES) * fov
  mm = float(np.prod(nominal)) ** (1 / 3) / _REAL_RADIUS_MM  # reference units per real mm
  semi = nominal * rng.uniform(*_SIZE_RANGE) * rng.uniform(0.96, 1.04, size=3)
  center = (fov - 1) / 2 + rng.uniform(-0.03, 0.03, size=3) * fov
  semi_mm = (semi / mm).astype(np.float32)
  # Every random function is drawn before the grid is known, and before the noise: the anatomy,
  # the myelination and the bias fields are then the same functions of position on every grid.
  outline_waves = _random_waves(rng, 8, (1.0, 3.0))  # of the unit direction
  csf_waves = _random_waves(rng, 6, (1.0, 3.0))      # of the unit direction
  fold_waves = _random_waves(rng, _NUM_FOLD_WAVES, _FOLD_K)  # of real mm, below the same
  depth_waves = _random_waves(rng, 8, (0.06, 0.14))
  thickness_waves = _random_waves(rng, 6, (0.03, 0.08))
  midline_phase = rng.uniform(0, 2 * np.pi, size=2)
  jitter = rng.uniform(-1, 1, size=8)
  myelin_waves = _random_waves(rng, 6, (1.0, 2.0))  # of the normalised position
  bias_waves = [_random_waves(rng, 8, (1.25, 2.5)) for _ in range(2)]

  # Work on the voxels within two voxels of the largest outline, in its bounding box: the
  # partial-volume widths take differences with the neighbours.
  margin = 2 * spacing.max()
  reach = semi * (1 + _OUTLINE_AMPLITUDE) + margin
  lo = np.maximum(np.floor((center - reach - first) / spacing), 0).astype(int)
  hi = np.minimum(np.ceil((center + reach - first) / spacing) + 1, shape).astype(int)
  box_shape = tuple(hi - lo)
  axes = [((f + s * np.arange(a, b) - c) / mm).astype(np.float32)
          for a, b, f, s, c in zip(lo, hi, first, spacing, center)]  # real mm from the centre
  rho2 = ((axes[0] / semi_mm[0])[:, None, None] ** 2 + (axes[1] / semi_mm[1])[None, :, None] ** 2
          + (axes[2] / semi_mm[2])[None, None, :] ** 2)
  box_index = np.flatnonzero(rho2 < (1 + _OUTLINE_AMPLITUDE + margin / semi.min()) ** 2)
  pos = np.stack([a[i] for a, i in zip(axes, np.unravel_index(box_index, box_shape))], axis=1)
  u = pos / semi_mm  # [N, 3] normalised: the mean ellipsoid is |u| = 1
  rho = np.sqrt(rho2.reshape(-1)[box_index])
  x, y, z = pos.T
  dirs = u / np.maximum(rho, 1e-6)[:, None]

  # Outer surface: the ellipsoid with a smooth per-subject outline; distances to first order.
  outline = 1 + _OUTLINE_AMPLITUDE * np.tanh(_field(outline_waves, dirs))
  normal = dirs / semi_mm  # gradient of rho in 1 / real mm
  normal_len = np.linalg.norm(normal, axis=1)
  normal /= normal_len[:, None]
  to_outside = (outline - rho) / normal_len  # real mm below the outer surface
  csf_lo, csf_hi = _CSF_OUTER_MM
  csf_outer = csf_lo + (csf_hi - csf_lo) * 0.5 * (1 + np.tanh(_field(csf_waves, dirs)))
  below_outer = to_outside - csf_outer  # real mm below the outer CSF

  # Interhemispheric fissure: a wavy CSF sheet down to the corpus callosum, which arches over
  # the lateral ventricles; in front of and behind the callosum it reaches the base.
  mid = (2.0 * np.sin(0.09 * y + midline_phase[0])
         + 1.2 * np.sin(0.11 * z + midline_phase[1]))
  ventricle_top = _VENTRICLE_TOP_MM + 1.5 * jitter[4] + jitter[7] - 0.012 * y ** 2
  floor = (ventricle_top + _CALLOSUM_MM
           - 0.05 * np.maximum(np.abs(y) - _CALLOSUM_HALF_LENGTH_MM, 0) ** 2)
  medial = x - mid
  to_fissure = _box_distance(np.abs(medial) - _FISSURE_HALF_MM, floor - z)
  # The pial envelope (gyral crowns): the outer CSF and the fissure, with rounded margins.
  envelope = _round_intersection(below_outer, to_fissure, _MARGIN_MM)

  # Folding: sulci are thin CSF clefts along the zero set of a random field evaluated on the
  # envelope (the point above, on the outer or the medial surface), so they run perpendicular
  # to it, curve and branch along it, and reach a depth that varies smoothly (some vanish).
  # GM lines the envelope and both walls of every cleft; WM fills the gyral cores beneath.
  fold_depth = _SULCUS_DEPTH_MM + _LIP_MM
  shell = np.flatnonzero(envelope < fold_depth + 8.0)
  to_csf = envelope.copy()
  thickness = np.full(rho.shape, _GM_MM, np.float32)
  s_pos, s_rho, s_out, s_med = pos[shell], rho[shell], outline[shell], medial[shell]
  w = np.clip(0.5 + (below_outer[shell] - to_fissure[shell]) / (2 * _BLEND_MM), 0, 1)[:, None]
  on_medial = np.stack([mid[shell], s_pos[:, 1], s_pos[:, 2]], axis=1)
  on_envelope = (1 - w) * s_pos * (s_out / s_rho)[:, None] + w * on_medial
  # Each hemisphere samples the fields elsewhere, so the two medial walls are no mirror images;
  # and the fold field is sampled partly below the envelope, so sulci lean and bend with depth.
  on_envelope[:, 0] += np.where(s_med < 0, -_HEMISPHERE_SHIFT_MM, _HEMISPHERE_SHIFT_MM)
  fold, grad = _field(fold_waves, on_envelope + _LEAN * (s_pos - on_envelope),
                      with_gradient=True)
  n = (1 - w) * normal[shell] + w * np.stack(
      [np.sign(s_med), np.zeros_like(s_med), np.zeros_like(s_med)], axis=1)
  n /= np.maximum(np.linalg.norm(n, axis=1), 1e-6)[:, None]
  grad_n = np.sum(grad * n, axis=1)
  grad_t = np.linalg.norm(grad - grad_n[:, None] * n, axis=1)  # along the envelope
  # Chain rule: the radial projection stretches tangential lengths by outline / rho below the
  # outer surface, and the lean adds its share of the identity.
  stretch = (1 - _LEAN) * ((1 - w[:, 0]) * s_out / s_rho + w[:, 0]) + _LEAN
  slope = np.hypot(stretch * grad_t, _LEAN * grad_n)
  lateral = np.abs(fold) / np.maximum(slope, 0.25 * _FOLD_K[0])  # to {fold = 0}, first order
  depth = fold_depth * np.clip(0.65 + 0.25 * _field(depth_waves, on_envelope), 0.2, 1)
  # No sulci hang from the fissure floor into the callosum.
  depth *= 1 - w[:, 0] * np.clip((floor[shell] - s_pos[:, 2]) / 4.0, 0, 1)
  cleft = _box_distance(lateral - _CLEFT_HALF_MM, envelope[shell] - depth)
  to_csf[shell] = _round_intersection(envelope[shell], cleft, _LIP_MM)
  thickness[shell] = _GM_MM * (1 + _GM_VARIATION * np.tanh(
      _field(thickness_waves, on_envelope)))

  # Deep structures, each a signed distance (negative inside), later ones painted over earlier:
  # the corpus callosum (WM); deep GM nuclei (thalamus beside the third ventricle, lentiform
  # nucleus lateral to it across the internal capsule, caudate head beside the frontal horn);
  # the third ventricle and the banana-shaped lateral ventricles, bending down front and back.
  callosum = _box_distance(np.abs(medial) - 10.0, np.abs(y) - _CALLOSUM_HALF_LENGTH_MM,
                           np.abs(z - (floor - 0.5 * _CALLOSUM_MM - 0.5)) - 0.5 * _CALLOSUM_MM
                           - 0.5)
  # The nuclei and ventricles lie within this box; far outside it, a large distance will do.
  deep = np.flatnonzero((np.abs(x) < 40) & (np.abs(y) < 45) & (np.abs(z) < 30))
  d_pos = pos[deep]
  deep_gm = np.full(deep.shape, np.inf, np.float32)
  ventricles = _ellipsoid_distance(d_pos - np.array([0, -4, -3], np.float32),  # third ventricle
                                   np.array([1.5, 13.0, 9.0], np.float32))
  scale = 1 + 0.08 * jitter[3]
  for side in (-1, 1):
    for c, r in (((7.0, -6.0, -2.0), (6.5, 12.0, 8.0)),   # thalamus
                 ((20.0, 3.0, -3.0), (5.0, 13.0, 8.0)),   # lentiform nucleus
                 ((13.0, 14.0, 6.0), (4.0, 8.0, 6.0))):   # caudate head
      c = np.array([side * (c[0] + jitter[0]), c[1] + 2 * jitter[1], c[2] + 2 * jitter[2]],
                   np.float32)
      deep_gm = np.minimum(deep_gm, _ellipsoid_distance(d_pos - c,
                                                        np.float32(scale) * np.array(r)))
    r = np.array([5.5 + jitter[5], 32.0 + 3 * jitter[6], 6.5 + jitter[7]], np.float32)
    offset = d_pos - np.stack([np.full(deep.shape, side * 9.0), np.zeros(deep.shape),
                               ventricle_top[deep] - r[2]], axis=1).astype(np.float32)
    ventricles = np.minimum(ventricles, _ellipsoid_distance(offset, r))
  far = np.float32(1e3)
  overrides = [(callosum, 3)]
  for values, tissue in ((deep_gm, 2), (ventricles, 1)):
    distance = np.full(rho.shape, far, np.float32)
    distance[deep] = np.minimum(values, far)
    overrides.append((distance, tissue))

  label = np.zeros(rho.shape, np.uint8)  # class ids: the tissue at the voxel centre
  label[to_outside >= 0] = 1
  label[(to_outside >= 0) & (to_csf >= 0)] = 2
  label[(to_outside >= 0) & (to_csf >= thickness)] = 3
  for distance, tissue in overrides:
    label[(to_outside >= 0) & (distance < 0)] = tissue

  # Partial volume: the fraction of each voxel that each tissue covers, on the brain's voxels.
  brain = np.flatnonzero(label > 0)
  voxel = (spacing / mm).astype(np.float32)  # in real mm
  max_width = np.float32(np.linalg.norm(voxel))
  # The brain voxels' 6 neighbours as indices into the candidate arrays (all candidates: the
  # candidates reach two voxels beyond the brain), or the voxel itself at the box's edge.
  inverse = np.full(int(np.prod(box_shape)), -1, np.int64)
  inverse[box_index] = np.arange(box_index.size)
  coords = np.unravel_index(box_index[brain], box_shape)
  strides = np.array([box_shape[1] * box_shape[2], box_shape[2], 1])

  def widths(distance: np.ndarray) -> np.ndarray:
    # The voxel's extent along the gradient, in real mm: per axis, the larger one-sided change
    # of the distance to a neighbour (the larger, so that a sheet thinner than a voxel, where
    # the distance folds back, still mixes). Only where the ramp is not already saturated.
    d = distance[brain]
    width = np.full(brain.shape, max_width, np.float32)
    near = np.flatnonzero(np.abs(d) < 0.5 * max_width)
    total = np.zeros(near.shape, np.float32)
    flat = box_index[brain[near]]
    for axis in range(3):
      step = np.zeros(near.shape, np.float32)
      for sign in (-1, 1):
        inside = (coords[axis][near] + sign >= 0) & (coords[axis][near] + sign < box_shape[axis])
        neighbour = inverse[np.where(inside, flat + sign * strides[axis], flat)]
        neighbour = np.where(neighbour >= 0, neighbour, brain[near])
        step = np.maximum(step, np.abs(distance[neighbour] - d[near]))
      total += step ** 2
    width[near] = np.clip(np.sqrt(total), 0.05 * voxel.min(), max_width)
    return width

  t = to_csf[brain]
  in_brain = _ramp(to_outside[brain], widths(to_outside))
  width_t = widths(to_csf)
  tissue = _ramp(t, width_t)
  wm = np.minimum(_ramp(t - thickness[brain], width_t), tissue)
  fractions = [in_brain * (1 - tissue), in_brain * (tissue - wm), in_brain * wm]  # CSF, GM, WM
  for distance, k in overrides:
    inside = in_brain * _ramp(-np.minimum(distance[brain], far), widths(distance))
    fractions = [f * (1 - inside) + (inside if k == i + 1 else 0) for i, f in enumerate(fractions)]
  csf_f, gm_f, wm_f = fractions

  # Intensities: tissue means mixed by the fractions, a WM myelination gradient, bias, noise.
  myelin = _MYELIN_AMPLITUDE * np.tanh(_field(myelin_waves, u[brain]))

  def mix(means: tuple[float, ...], wm_factor: np.ndarray) -> np.ndarray:
    return csf_f * means[1] + gm_f * means[2] + wm_f * (means[3] * wm_factor)

  images = []
  for means, noise, waves, sign in ((_T1_MEANS, _T1_NOISE, bias_waves[0], 1),
                                    (_T2_MEANS, _T2_NOISE, bias_waves[1], -1)):
    bias = np.exp(_BIAS_STD * _field(waves, u[brain]))
    images.append(mix(means, 1 + sign * myelin) * bias + rng.normal(0, noise, size=brain.size))
  if flair:
    # FLAIR-like: CSF suppressed, WM darker than GM (more so where myelination is ahead), with
    # its own bias field and noise from a separate stream.
    flair_rng = np.random.default_rng([seed, subject_id, 2017, 3])
    flair_bias = _random_waves(flair_rng, 8, (1.25, 2.5))
    bias = np.exp(_BIAS_STD * _field(flair_bias, u[brain]))
    images.append(mix(_FLAIR_MEANS, 1 - myelin) * bias
                  + flair_rng.normal(0, _FLAIR_NOISE, size=brain.size))

  def full(values: np.ndarray, index: np.ndarray, dtype: type) -> np.ndarray:
    box = np.zeros(int(np.prod(box_shape)), dtype)
    box[box_index[index]] = values
    out = np.zeros(shape, dtype)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = box.reshape(box_shape)
    return out

  # Skull-stripped data is zero outside the brain and positive inside.
  images = [full(np.maximum(np.round(img), 1).astype(np.int16), brain, np.int16)
            for img in images]
  return images, full(label[brain], brain, np.uint8)


def _ellipsoid_distance(offset: np.ndarray, radii: np.ndarray) -> np.ndarray:
  """First-order signed distance (real mm, negative inside) to an axis-aligned ellipsoid."""
  scaled = offset / radii
  q = np.sqrt(np.sum(scaled ** 2, axis=1))
  grad = np.linalg.norm(scaled / radii, axis=1)  # |grad q| * q
  return (q - 1) * q / np.maximum(grad, 1e-6)


def generate_subject(shape: Sequence[int] = REAL_SHAPE, *, seed: int = 0,
                     subject_id: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Generates one synthetic subject.

  Deterministic in (seed, subject_id); subjects differ in size, outline, folding, cortical
  thickness, deep structures, bias fields and noise. About 2.5-3 s at the real size on one core
  (vectorised numpy on the voxels that can be brain).

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
  centre of every voxel: the label is the tissue at the voxel centre, and the intensities mix
  the tissues by the fraction of the voxel each covers, so a coarser spacing samples the same
  tissue more sparsely and mixes more at its borders (partial volume). With
  `spacing = (1, 1, 1)` and `axcodes = 'RAS'` the T1, T2 and label maps are exactly
  `generate_subject(shape, ...)`'s. The field of view is
  centred on world (0, 0, 0) mm; `axcodes` changes only how the voxels are stored: the RAS
  arrays are reoriented with `nibabel.orientations` and the affine follows, so every tissue
  keeps its world position (`nibabel.as_closest_canonical` of the written file gives back the
  RAS arrays exactly).

  Two grids with the same field of view (`shape * spacing`) hold the same anatomy: their labels
  agree at every shared voxel centre, e.g. `(8, 8, 24)` voxels of 3 x 3 x 1 mm equal
  `(24, 24, 24)` 1 mm voxels `[1::3, 1::3, :]`. The noise is drawn per grid; the bias fields
  are functions of position.

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
