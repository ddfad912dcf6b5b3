"""Built-in iSeg-2017-layout data: synthetic 6-month infant brains, written like the download.

`write_iseg_layout` writes `iSeg-2017-Training/subject-N-{T1,T2,label}.hdr/.img` (and
`iSeg-2017-Testing/` for test subjects) as Analyze 7.5 pairs with the real files' conventions:
int16 T1/T2 and uint8 label values 0 / 10 / 150 / 250, a trailing singleton axis
(`[D, H, W, 1]`), 1 mm voxels and a zero (skull-stripped) background. Everything downstream
reads these files exactly like the real download.

Anatomy (sizes are fractions of the volume, so any shape works; numbers below are mm at the real
144 x 192 x 256 size): a cerebrum ellipsoid (semi-axes about 56 x 72 x 54) whose outline varies
smoothly per subject; outer CSF (2 mm over the gyral crowns); sulci, thin CSF clefts up to about
16 mm deep that run along the zero lines of a random field on the sphere; a grey-matter (GM)
ribbon 4.6 mm thick that lines the outer surface and both walls of every sulcus, so that it folds
around white-matter (WM) gyral cores; an interhemispheric fissure (CSF lined by GM) down to the
corpus callosum; two curved lateral ventricles (CSF) and two deep-GM nuclei. At full size the
classes cover about 87 % background, 3 % CSF, 5.5 % GM and 4.5 % WM (real data: 87 / 3 / 6 / 4).

Contrast (isointense phase, about 6 months): in T1, CSF is dark and GM and WM are close; in T2,
CSF is bright and WM is brighter than GM. Each subject also gets a smooth multiplicative bias
field per modality, a smooth myelination gradient in WM, and Gaussian noise, so that no single
threshold of one modality separates the tissues while local T1 + T2 contrast does.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from typing import Sequence

import numpy as np

from medjax import io
from medjax.data import iseg

REAL_SHAPE = (144, 192, 256)
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
  shape = tuple(int(s) for s in shape)
  if len(shape) != 3 or min(shape) < 8:
    raise ValueError(f"shape must be 3 axes of at least 8 voxels, got {shape}.")
  rng = np.random.default_rng([seed, subject_id, 2017])
  semi = np.array(_SEMI_AXES) * shape * rng.uniform(0.94, 1.06, size=3)
  center = (np.array(shape) - 1) / 2 + rng.uniform(-0.03, 0.03, size=3) * shape
  mm = float(np.prod(semi)) ** (1 / 3) / _REAL_RADIUS_MM  # voxels per "real mm"

  # Work on the voxels that can be brain: inside the enlarged ellipsoid's bounding box.
  outline_amp = 0.06
  lo = np.maximum(np.floor(center - semi * (1 + 2 * outline_amp)), 0).astype(int)
  hi = np.minimum(np.ceil(center + semi * (1 + 2 * outline_amp)) + 1, shape).astype(int)
  grids = np.meshgrid(*[(np.arange(a, b, dtype=np.float32) - np.float32(c)) / np.float32(s)
                        for a, b, c, s in zip(lo, hi, center, semi)], indexing="ij")
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
  depth = (outline - rho) * radius  # voxels below the outer surface (approximately)

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
  # First-order distance (voxels) from the cleft's mid-plane {fold = 0}.
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
  for img, noise in ((t1, _T1_NOISE), (t2, _T2_NOISE)):
    bias = np.exp(_BIAS_STD * _smooth_space_field(rng, u[brain], num_waves=8, freq=2.5))
    img[brain] = img[brain] * bias + rng.normal(0, noise, size=int(brain.sum()))
    # Skull-stripped data is zero outside the brain and positive inside.
    img[brain] = np.maximum(img[brain], 1)

  out = []
  for values, dtype in ((t1, np.int16), (t2, np.int16),
                        (np.asarray(iseg.LABEL_VALUES, np.uint8)[label], np.uint8)):
    full = np.zeros(shape, dtype)
    box = np.zeros(int(np.prod(hi - lo)), dtype)
    box[box_index] = np.round(values) if dtype == np.int16 else values
    full[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = box.reshape(hi - lo)
    out.append(full)
  return tuple(out)


def write_iseg_layout(out_dir: str | os.PathLike, *, shape: Sequence[int] = REAL_SHAPE,
                      num_train: int = 10, num_test: int = 0, seed: int = 0,
                      flat: bool = False) -> pathlib.Path:
  """Writes a synthetic iSeg-2017 folder laid out like the download.

  Training subjects are numbered 1..num_train and written with labels to
  `out_dir/iSeg-2017-Training/`; test subjects are numbered from max(11, num_train + 1) like the
  real 11..23 and written without labels to `out_dir/iSeg-2017-Testing/`. With `flat=True` all
  files go directly into `out_dir`. The folder is written under a temporary name and renamed,
  so an interrupted call leaves no partial folder.

  Args:
    out_dir: folder to create; it must not exist or be empty.
    shape: volume shape `(D, H, W)`.
    num_train: labelled subjects (>= 1).
    num_test: unlabelled subjects.
    seed: dataset seed; the same seed gives the same files.
    flat: write all files into `out_dir` itself.

  Returns:
    `out_dir` as a Path.
  """
  out_dir = pathlib.Path(out_dir).expanduser()
  if num_train < 1 or num_test < 0:
    raise ValueError(f"need num_train >= 1 and num_test >= 0, got {num_train}, {num_test}.")
  if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
    raise FileExistsError(f"{out_dir}: exists and is not an empty folder; refusing to write.")
  out_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
  try:
    first_test = max(11, num_train + 1)
    subjects = [(i, True) for i in range(1, num_train + 1)]
    subjects += [(first_test + i, False) for i in range(num_test)]
    for sid, labelled in subjects:
      folder = tmp if flat else tmp / (iseg.TRAINING_FOLDER if labelled else iseg.TESTING_FOLDER)
      t1, t2, label = generate_subject(shape, seed=seed, subject_id=sid)
      affine = np.eye(4)  # Analyze keeps only the 1 mm voxel size; nibabel rebuilds the rest.
      arrays = [("T1", t1), ("T2", t2)] + ([("label", label)] if labelled else [])
      for kind, data in arrays:
        io.save_image(folder / f"subject-{sid}-{kind}.hdr", data[..., None], affine)
    if out_dir.exists():
      out_dir.rmdir()
    tmp.rename(out_dir)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp)
  return out_dir
