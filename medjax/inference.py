"""Sliding-window inference on whole scans, with MONAI's tiling and blending semantics.

A scan `[B, D, H, W, C]` is covered by regions of interest (ROIs) whose start positions follow
MONAI's `sliding_window_inference`: along each axis the scan interval is
`max(int(roi * (1 - overlap)), 1)` (the ROI itself when it equals the image size), starts are
`0, interval, 2 * interval, ...` up to the first window that reaches the far edge, and a window
that would overrun the image is shifted back to end exactly at the edge. Every voxel is therefore
covered. The predictions of the windows are blended with an importance map `w` (all ones, or a
separable Gaussian with `sigma = sigma_scale * roi`, clamped below at `max(min w, 1e-3)`):

  out[v] = sum_windows w[v - s] * p_s[v - s] / sum_windows w[v - s].

Memory is bounded by the window batch: the host loops over batches of `sw_batch_size` windows
(the last one shorter when the windows do not fill it, as MONAI; `pad_last_batch=True` fills it
with repeats instead); for each batch a jitted gather cuts the windows out, the (jitted)
predictor runs on them, and a jitted accumulate adds the weighted predictions into one output
buffer `[B, D, H, W, K]` per predictor output and one weight buffer `[B, D, H, W, 1]` (all
donated, so updated in place). Only the buffers and one window batch are alive at a time; the
full set of tiles is never materialised.

Models with valid convolutions (e.g. HyperDenseNet, 64^3 in -> 46^3 out) predict only the centre
of their input. The output size of the predictor is found by `jax.eval_shape`; the tiling then
runs in *output* space (windows of the output ROI size, MONAI's rule applied to it) and the input
is padded by the margin `(roi - out_roi) // 2` before and the rest after, with `padding_mode`, so
that each input ROI is centred on its output ROI and every voxel of the scan gets a prediction.
For models whose output equals their input size this is exactly MONAI's scheme.
"""

from collections.abc import Callable, Sequence
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P
import numpy as np
import tqdm

# Where the windows go and how they are weighted is inference_windows' job; its public names are
# re-exported so that `medjax.inference.X` keeps working.
from medjax.inference_windows import (BLEND_MODES, _as_triple, get_scan_interval, importance_map,
                                      window_starts, window_starts_1d)
from medjax.training import mesh as mesh_lib

__all__ = ["ACTIVATIONS", "BLEND_MODES", "PADDING_MODES", "get_scan_interval", "importance_map",
           "make_predictor", "make_softmax_predictor", "predict_volume", "sliding_window_inference",
           "window_starts", "window_starts_1d"]

Array = jax.Array
Predictor = Callable[[Array], Array]

# MONAI/PyTorch padding names -> jnp.pad modes.
PADDING_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
                 "circular": "wrap"}


def _normalize_flip_axes(flip_axes: Sequence[Sequence[int] | int] | None
                         ) -> tuple[tuple[int, ...], ...]:
  """Flip variants as tuples of spatial axes (0, 1, 2 = D, H, W), the identity first."""
  variants: list[tuple[int, ...]] = [()]
  for entry in flip_axes or ():
    axes = (entry,) if isinstance(entry, (int, np.integer)) else tuple(entry)
    if not axes or any(int(a) not in (0, 1, 2) for a in axes):
      raise ValueError(f"flip_axes entry {entry!r}: expected spatial axes among 0, 1, 2 (D, H, W).")
    axes = tuple(sorted({int(a) for a in axes}))
    if axes not in variants:
      variants.append(axes)
  return tuple(variants)


def _cut_windows(padded: Array, starts: Array, roi_size: tuple[int, int, int]) -> Array:
  """Cuts windows `[n, *roi, C]` at `starts [n, 4]` = (batch index, d, h, w) out of `padded`."""
  size = (1, *roi_size, padded.shape[-1])

  def one(start):
    return jax.lax.dynamic_slice(padded, (*start, 0), size)[0]

  return jax.vmap(one)(starts)


@functools.lru_cache(maxsize=32)
def _gather_on(mesh: Mesh, roi_size: tuple[int, int, int]) -> Callable[[Array, Array], Array]:
  """`_cut_windows` with each device cutting its own share of the windows from its replica."""
  return jax.jit(jax.shard_map(functools.partial(_cut_windows, roi_size=roi_size), mesh=mesh,
                               in_specs=(P(), P("data")), out_specs=P("data")))


def _gather(padded: Array, starts: Array, roi_size: tuple[int, int, int], mesh: Mesh) -> Array:
  """Windows `[n, *roi, C]` at `starts [n, 4]` (sharded on 'data') of `padded` (replicated)."""
  return _gather_on(mesh, roi_size)(padded, starts)


@functools.partial(jax.jit, static_argnames=("axes",))
def _flip(x: Array, axes: tuple[int, ...]) -> Array:
  """Flips the spatial `axes` of `[n, D, H, W, C]` (its own inverse)."""
  return jnp.flip(x, axis=tuple(a + 1 for a in axes))


def _accumulate_local(outs: tuple[Array, ...], count: Array, preds: tuple[Array, ...],
                      starts: Array, valid: Array, weights: Array
                      ) -> tuple[tuple[Array, ...], Array]:
  """Adds `valid_j * weights * preds_j` into each of `outs` and `valid_j * weights` into `count`.

  One device's share: its windows go into its own partial sums, which `_finish` adds up.
  Windows of one batch may overlap, so they are added one after the other (a `fori_loop`).

  Args:
    outs: one `[1, B, D, H, W, K_i]` running weighted sum per predictor output.
    count: `[1, B, D, H, W, 1]` running sum of weights (shared: the outputs have one spatial
      size).
    preds: one `[n, d, h, w, K_i]` window prediction per output.
    starts: `[n, 4]` (batch index, d, h, w) of each window in `outs`.
    valid: `[n]` 1 for real windows, 0 for the repeats that fill a batch up (`pad_last_batch`,
      or a multiple of the device count).
    weights: `[d, h, w]` importance map.
  """
  weights = weights[..., None].astype(jnp.float32)
  size_count = (1, *preds[0].shape[1:-1], 1)

  def body(j, carry):
    outs, count = carry
    start = (*starts[j], 0)
    w = weights * valid[j]
    new_outs = []
    for out, pred in zip(outs, preds):
      size_out = (1, *pred.shape[1:])
      region = jax.lax.dynamic_slice(out, start, size_out)
      new_outs.append(jax.lax.dynamic_update_slice(
          out, region + (w * pred[j].astype(out.dtype))[None], start))
    region = jax.lax.dynamic_slice(count, start, size_count)
    count = jax.lax.dynamic_update_slice(count, region + w[None], start)
    return tuple(new_outs), count

  outs, count = jax.lax.fori_loop(0, preds[0].shape[0], body,
                                  (tuple(o[0] for o in outs), count[0]))
  return tuple(o[None] for o in outs), count[None]


@functools.lru_cache(maxsize=32)
def _accumulate_on(mesh: Mesh) -> Callable[..., tuple[tuple[Array, ...], Array]]:
  """`_accumulate_local` on every device of `mesh` at once, the buffers donated (in place)."""
  data = P("data")
  return jax.jit(jax.shard_map(_accumulate_local, mesh=mesh,
                               in_specs=(data, data, data, data, data, P()),
                               out_specs=(data, data)),
                 donate_argnums=(0, 1))


@functools.lru_cache(maxsize=32)
def _finish_on(mesh: Mesh, crop: tuple[tuple[int, int], ...]
               ) -> Callable[[tuple[Array, ...], Array], list[Array]]:
  """Sums the devices' partial sums and weights, divides, crops to the scan; replicated."""

  def finish(outs, count):
    count = count.sum(0)
    index = (slice(None),) + tuple(slice(lo, lo + size) for lo, size in crop)
    return [(out.sum(0) / count)[index] for out in outs]

  return jax.jit(finish, out_shardings=mesh_lib.replicated(mesh))


def _per_device(predictor: Predictor, mesh: Mesh) -> Predictor:
  """The predictor run by every device of `mesh` on its own share of the windows.

  `jax.shard_map` runs the predictor's one-device program on each device's windows: no
  collective, whatever the model's operations (left to XLA's sharding propagation, a
  convolution that slices its batch made it exchange windows between devices). The arrays a
  `functools.partial(fn, variables)` binds are passed in replicated (put on every device once);
  its other bound values stay fixed in the compiled program. Cached per (function, mesh, bound
  values), so that repeated calls with new variables reuse one compilation.
  """
  if isinstance(predictor, functools.partial):
    func, bound = predictor.func, (predictor.args, predictor.keywords)
  else:
    func, bound = predictor, ((), {})
  leaves, treedef = jax.tree_util.tree_flatten(bound)
  is_array = tuple(isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves)
  sharding = mesh_lib.replicated(mesh)
  arrays = [jax.device_put(leaf, sharding) for leaf, a in zip(leaves, is_array) if a]
  fixed = tuple(None if a else leaf for leaf, a in zip(leaves, is_array))
  # With their types: 1, 1.0 and True are equal keys, not equal programs.
  key = (func, mesh, treedef, is_array, fixed, tuple(type(v) for v in fixed))
  try:
    call = _per_device_call(*key)
  except TypeError:  # an unhashable bound value: compiled for this call alone
    call = _per_device_call.__wrapped__(*key)
  return functools.partial(call, arrays)


@functools.lru_cache(maxsize=32)
def _per_device_call(func: Callable[..., Any], mesh: Mesh, treedef: Any,
                     is_array: tuple[bool, ...], fixed: tuple[Any, ...], types: tuple[type, ...]
                     ) -> Callable[[list[Array], Array], Any]:
  """Jitted `(bound arrays, windows) -> func(*args, windows, **kwargs)` under `shard_map`."""
  del types  # part of the cache key only

  def local(arrays, x):
    given = iter(arrays)
    leaves = [next(given) if a else v for a, v in zip(is_array, fixed)]
    args, kwargs = jax.tree_util.tree_unflatten(treedef, leaves)
    return func(*args, x, **kwargs)

  return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data")),
                               out_specs=P("data"), check_vma=False))


def _predict_with_flips(predictor: Predictor, windows: Array,
                        variants: tuple[tuple[int, ...], ...]) -> list[Array]:
  """Mean over flip variants of `flip^-1(predictor(flip(windows)))` per output, in float32.

  Returns the outputs' leaves (`jax.tree_util` order) as a list.
  """
  total = None
  for axes in variants:
    leaves = jax.tree_util.tree_leaves(predictor(_flip(windows, axes) if axes else windows))
    leaves = [(_flip(p, axes) if axes else p).astype(jnp.float32) for p in leaves]
    total = leaves if total is None else [t + p for t, p in zip(total, leaves)]
  return total if len(variants) == 1 else [t / len(variants) for t in total]


def _output_spec(predictor: Predictor, sw_batch_size: int, roi: tuple[int, ...], channels: int,
                 dtype: Any, sharding: Any = None
                 ) -> tuple[Any, tuple[int, int, int], list[int]]:
  """Structure, common output ROI and channel counts of the predictor's output(s).

  `sharding`: that of the windows, so that the predictor's trace here is the one its calls reuse.
  """
  in_shape = (sw_batch_size, *roi, channels)
  out_struct = jax.eval_shape(predictor, jax.ShapeDtypeStruct(in_shape, dtype, sharding=sharding))
  leaves, treedef = jax.tree_util.tree_flatten(out_struct)
  if not leaves or any(len(leaf.shape) != 5 or leaf.shape[0] != sw_batch_size
                       for leaf in leaves):
    shapes = jax.tree_util.tree_map(lambda leaf: tuple(leaf.shape), out_struct)
    raise ValueError(f"predictor maps {list(in_shape)} to {shapes}; expected [{sw_batch_size}, d, "
                     "h, w, K] (or a tuple, list or dict of such arrays).")
  out_rois = {tuple(leaf.shape[1:4]) for leaf in leaves}
  if len(out_rois) > 1:
    shapes = jax.tree_util.tree_map(lambda leaf: tuple(leaf.shape), out_struct)
    raise ValueError(f"predictor outputs {shapes} have different spatial sizes; every output "
                     "must have the same [n, d, h, w] (MONAI's per-output zoom is not supported).")
  return treedef, out_rois.pop(), [leaf.shape[4] for leaf in leaves]


def sliding_window_inference(
    inputs: Array | np.ndarray,
    roi_size: int | Sequence[int | None],
    sw_batch_size: int,
    predictor: Predictor,
    overlap: float | Sequence[float] = 0.25,
    mode: str = "constant",
    sigma_scale: float | Sequence[float] = 0.125,
    padding_mode: str = "constant",
    cval: float = 0.0,
    *,
    roi_weight_map: np.ndarray | Array | None = None,
    flip_axes: Sequence[Sequence[int] | int] | None = None,
    pad_last_batch: bool = False,
    progress: bool = False,
    devices: Sequence[jax.Device] | None = None,
) -> Any:
  """Blended sliding-window prediction over whole scans (MONAI semantics, channels-last).

  Windows are placed by MONAI's rule (see the module docstring); a dimension where the image is
  smaller than the ROI is padded (`padding_mode`, half before and the rest after, as MONAI) and
  cropped back. When the (padded) scan fits in one ROI, the predictor runs once on the whole scan
  and no blending happens. Predictions are blended as
  `out = sum_s w * p_s / sum_s w` over the windows `s` covering a voxel, with `w` the importance
  map of `mode` (or `roi_weight_map`).

  Window batches: the windows of all scans (scan-major, then MONAI's window order) are cut into
  batches of `sw_batch_size`. By default (`pad_last_batch=False`, MONAI's behaviour) the last
  batch holds only the windows left over, so the predictor never sees a window twice; a short
  last batch has another shape, so a jitted predictor compiles once more for it. With
  `pad_last_batch=True` the last batch is filled up to `sw_batch_size` with repeats of its last
  window, whose predictions are then given weight 0: one compilation for every batch, but the
  predictor sees repeated windows. Use it only with predictors that treat windows independently
  (no batch statistics, nothing summed over the batch), or the repeats change the real windows'
  predictions.

  Devices: each batch of windows is spread over `devices` (default: all of this process's
  devices, `jax.local_devices()`), on a 1-D mesh with the windows sharded on its axis and the
  scan and the predictor's bound arrays replicated, so K devices run K shares of a batch at
  once, each the one-device program on its share (no communication between devices until the
  end). The window batch is `sw_batch_size` rounded up to a multiple of K (MONAI's
  `sw_batch_size` counts windows per call, as here; each device gets `sw_batch_size / K`), and a
  last batch with fewer windows is filled up to a multiple of K with repeats of its last window,
  weighted 0 (the `pad_last_batch` caveat below applies with K > 1). Each device adds its
  windows into partial sums of its own; they are summed once at the end, so K devices give the
  one-device result up to float rounding. With one device this is exactly the one-device
  computation.

  Args:
    inputs: scans `[B, D, H, W, C]`.
    roi_size: window size `(d, h, w)` or one int; `None` or a value <= 0 takes the image size.
    sw_batch_size: windows per predictor call (bounds memory).
    predictor: a JAX-traceable function `[n, d, h, w, C] -> [n, d', h', w', K]` with
      `d' <= d` etc., or returning several such arrays as a tuple, list or dict (any pytree; each
      `[n, d', h', w', K_i]` with the same `d', h', w'`), which are each blended and returned in
      the same structure. An output smaller than the input is taken to be the centre of the
      input ROI (valid convolutions), see the module docstring. It is compiled here, once per
      function and devices: pass a function of `(variables, x)` as
      `functools.partial(fn, variables)` to reuse its compilation across calls with other
      variables (the arrays a partial binds are put on every one of `devices`; arrays a
      predictor closes over are compiled into it). Each device runs it on its own windows
      (`jax.shard_map`), so a predictor that mixes the windows of a batch mixes only those.
    overlap: fraction of overlap between neighbouring windows, in [0, 1); one per axis allowed.
    mode: `constant` (equal weights) or `gaussian` (weights fall off towards window edges).
    sigma_scale: Gaussian sigma as a fraction of the (output) ROI size; one per axis allowed.
    padding_mode: `constant`, `reflect`, `replicate` or `circular` (PyTorch names).
    cval: fill value for `constant` padding.
    roi_weight_map: optional importance map `[d', h', w']` (non-negative) replacing `mode`.
    flip_axes: optional test-time augmentation: a list of spatial axis sets (0, 1, 2 = D, H, W),
      e.g. `((0,), (1,), (2,))`; the prediction is averaged over the unflipped windows and each
      flipped variant (flipped back), before blending.
    pad_last_batch: fill a short last batch with repeated windows (see above); default False.
    progress: show a tqdm bar over window batches.
    devices: the devices of this process that share each window batch (default: all local
      devices).

  Returns:
    float32 `[B, D, H, W, K]` blended predictions (same spatial size as `inputs`), or the
    predictor's structure (tuple, list, dict) of such arrays `[B, D, H, W, K_i]`, replicated
    on `devices`.

  Raises:
    ValueError: bad shapes or hyper-parameters, a predictor whose output is larger than its
      input or not centred on it with an integer margin, or whose outputs differ in spatial size.
  """
  inputs = jnp.asarray(inputs)
  if inputs.ndim != 5:
    raise ValueError(f"inputs has shape {inputs.shape}: expected [B, D, H, W, C] (5 axes).")
  if int(sw_batch_size) < 1:
    raise ValueError(f"sw_batch_size={sw_batch_size}: expected an integer >= 1.")
  sw_batch_size = int(sw_batch_size)
  overlaps = _as_triple(overlap, "overlap", float)
  if any(o is None or not 0.0 <= o < 1.0 for o in overlaps):
    raise ValueError(f"overlap={overlap!r}: expected values in [0, 1).")
  if mode not in BLEND_MODES:
    raise ValueError(f"mode={mode!r}: expected one of {BLEND_MODES}.")
  if padding_mode not in PADDING_MODES:
    raise ValueError(f"padding_mode={padding_mode!r}: expected one of {tuple(PADDING_MODES)}.")
  batch, *image_size_, channels = inputs.shape
  roi = tuple(image_size_[i] if r is None or r <= 0 else int(r)
              for i, r in enumerate(_as_triple(roi_size, "roi_size", lambda v: v)))
  variants = _normalize_flip_axes(flip_axes)
  mesh = mesh_lib.local_mesh(devices)
  num_devices = mesh.devices.size
  # Every device gets the same number of windows per call.
  sw_batch_size = -(-sw_batch_size // num_devices) * num_devices
  windows_sharding = mesh_lib.batch_sharded(mesh)
  predictor = _per_device(predictor, mesh)

  # Output ROI of the predictor (smaller than `roi` for valid convolutions).
  treedef, out_roi, num_out = _output_spec(predictor, sw_batch_size, roi, channels, inputs.dtype,
                                             windows_sharding)
  if any(o > r or o < 1 for o, r in zip(out_roi, roi)):
    raise ValueError(f"predictor output ROI {out_roi} is larger than its input ROI {roi}; only "
                     "outputs of the same size or a centred smaller size are supported.")
  margin_lo = tuple((r - o) // 2 for r, o in zip(roi, out_roi))
  margin_hi = tuple(r - o - m for r, o, m in zip(roi, out_roi, margin_lo))

  # Pad the image up to the output ROI (MONAI: half before, rest after), plus the margins.
  image_pad = [max(o - s, 0) for o, s in zip(out_roi, image_size_)]
  pad_lo = [p // 2 for p in image_pad]
  image_size = tuple(s + p for s, p in zip(image_size_, image_pad))
  pad_width = [(0, 0)] + [(lo + m_lo, p - lo + m_hi) for lo, p, m_lo, m_hi in
                          zip(pad_lo, image_pad, margin_lo, margin_hi)] + [(0, 0)]
  padded = inputs
  if any(a or b for a, b in pad_width):
    kwargs = {"constant_values": cval} if padding_mode == "constant" else {}
    padded = jnp.pad(inputs, pad_width, mode=PADDING_MODES[padding_mode], **kwargs)
  # A copy of the scan on every device: each cuts its own windows out of it.
  padded = jax.device_put(padded, mesh_lib.replicated(mesh))
  crop = tuple((lo, s) for lo, s in zip(pad_lo, image_size_))

  if image_size == out_roi:
    # The scan fits in one ROI: one pass per image, nothing to blend.
    index = (slice(None),) + tuple(slice(lo, lo + s) for lo, s in crop)
    outs = []
    for b0 in range(0, batch, sw_batch_size):
      chunk = padded[b0:b0 + sw_batch_size]
      n = chunk.shape[0]
      size = sw_batch_size if pad_last_batch else -(-n // num_devices) * num_devices
      if n < size:  # keep the compiled batch size, or give every device a share
        chunk = jnp.concatenate([chunk, jnp.repeat(chunk[-1:], size - n, axis=0)])
      chunk = jax.device_put(chunk, windows_sharding)
      outs.append([p[:n] for p in _predict_with_flips(predictor, chunk, variants)])
    leaves = [jax.device_put(jnp.concatenate(parts)[index], mesh_lib.replicated(mesh))
              for parts in zip(*outs)]
    return jax.tree_util.tree_unflatten(treedef, leaves)

  if roi_weight_map is not None:
    weights = jnp.asarray(roi_weight_map, jnp.float32)
    if weights.shape != out_roi:
      raise ValueError(f"roi_weight_map has shape {weights.shape}; expected the predictor's "
                       f"output ROI {out_roi}.")
  else:
    weights = jnp.asarray(importance_map(out_roi, mode, sigma_scale))

  positions = window_starts(image_size, out_roi, overlaps)  # [N, 3]
  starts = np.concatenate([
      np.repeat(np.arange(batch, dtype=np.int32), len(positions))[:, None],
      np.tile(positions, (batch, 1))], axis=1)  # [B * N, 4]
  total = len(starts)
  num_batches = -(-total // sw_batch_size)
  last = total - (num_batches - 1) * sw_batch_size
  # Repeats of the last window (weight 0) fill the last batch up to `sw_batch_size`, or to a
  # multiple of the device count.
  fill = sw_batch_size - last if pad_last_batch else -(-last // num_devices) * num_devices - last
  valid = np.concatenate([np.ones(total, np.float32), np.zeros(fill, np.float32)])
  starts = np.concatenate([starts, np.repeat(starts[-1:], fill, axis=0)])

  # One partial sum per device ([K, B, D, H, W, .], sharded on K), added up by `_finish_on`.
  outs = tuple(jnp.zeros((num_devices, batch, *image_size, k), jnp.float32,
                         device=windows_sharding) for k in num_out)
  count = jnp.zeros((num_devices, batch, *image_size, 1), jnp.float32, device=windows_sharding)
  weights = jax.device_put(weights, mesh_lib.replicated(mesh))
  accumulate = _accumulate_on(mesh)
  chunks = range(num_batches)
  if progress:
    chunks = tqdm.tqdm(chunks, desc="sliding window", unit="batch", leave=False)
  for i in chunks:
    sl = slice(i * sw_batch_size, (i + 1) * sw_batch_size)
    chunk_starts = jax.device_put(starts[sl], windows_sharding)
    windows = _gather(padded, chunk_starts, roi, mesh)
    preds = tuple(_predict_with_flips(predictor, windows, variants))
    outs, count = accumulate(outs, count, preds, chunk_starts,
                             jax.device_put(valid[sl], windows_sharding), weights)
  leaves = _finish_on(mesh, crop)(outs, count)
  return jax.tree_util.tree_unflatten(treedef, leaves)


ACTIVATIONS = {"softmax": functools.partial(jax.nn.softmax, axis=-1),
               "sigmoid": jax.nn.sigmoid}


@functools.lru_cache(maxsize=16)
def make_predictor(model: Any, activation: str = "softmax") -> Callable[[Any, Array], Array]:
  """Jitted `(variables, x [n, d, h, w, C]) -> activation(model.apply(...)) [n, d', h', w', K]`.

  `activation`: 'softmax' over the classes, or 'sigmoid' per channel (a model trained with a
  sigmoid loss: multi-label outputs, or MedicalZoo's sigmoid Dice). The argmax over the classes
  is the same for both; the blended probabilities are those the loss saw. Cached per
  (hashable) model and activation, so that repeated calls reuse one compilation.
  """
  if activation not in ACTIVATIONS:
    raise ValueError(f"activation={activation!r}: expected one of {tuple(ACTIVATIONS)}.")
  fn = ACTIVATIONS[activation]

  @jax.jit
  def predict(variables: Any, x: Array) -> Array:
    logits = model.apply(variables, x, train=False)
    return fn(logits.astype(jnp.float32))

  return predict


def make_softmax_predictor(model: Any) -> Callable[[Any, Array], Array]:
  """`make_predictor(model, 'softmax')`."""
  return make_predictor(model, "softmax")


def predict_volume(model: Any, variables: Any, image: np.ndarray | Array, *,
                   roi_size: int | Sequence[int], overlap: float = 0.25,
                   mode: str = "gaussian", sw_batch_size: int = 1, sigma_scale: float = 0.125,
                   padding_mode: str = "constant",
                   flip_axes: Sequence[Sequence[int] | int] | None = None,
                   pad_last_batch: bool = False, progress: bool = False,
                   activation: str = "softmax", members: bool = False,
                   devices: Sequence[jax.Device] | None = None) -> np.ndarray:
  """Class probabilities of one scan: softmax (or sigmoid) of the model, blended over windows.

  Args:
    model: a Flax module with `apply(variables, x [B, D, H, W, C], train=False) -> logits`.
    variables: its variables (`{'params': ..., 'batch_stats': ...}`).
    image: one normalised scan `[D, H, W, C]`.
    roi_size, overlap, mode, sw_batch_size, sigma_scale, padding_mode, flip_axes,
      pad_last_batch, progress, devices: as in `sliding_window_inference` (the model must treat
      windows independently, e.g. batch norm in inference mode, for `pad_last_batch=True` or
      several devices).
    activation: 'softmax' or 'sigmoid' (`make_predictor`).
    members: return each flip variant's blended probabilities (the unflipped one first) instead
      of their mean, for the spread between them (`prediction.ensemble.uncertainty`). The same
      windows and weights serve every variant, so their mean is the `members=False` result.

  Returns:
    float32 probabilities `[D, H, W, K]` (summing to 1 over K for the softmax), or with
    `members` `[M, D, H, W, K]`, M = 1 + the number of distinct flips.
  """
  image = jnp.asarray(image)
  if image.ndim != 4:
    raise ValueError(f"image has shape {image.shape}: expected one scan [D, H, W, C].")
  predict = make_predictor(model, activation)
  predictor = functools.partial(predict, variables)
  if members:
    probs = sliding_window_inference(
        image[None], roi_size, sw_batch_size,
        functools.partial(_flip_members(predict, _normalize_flip_axes(flip_axes)), variables),
        overlap=overlap, mode=mode,
        sigma_scale=sigma_scale, padding_mode=padding_mode, pad_last_batch=pad_last_batch,
        progress=progress, devices=devices)
    return np.stack([np.asarray(p[0]) for p in probs])
  probs = sliding_window_inference(
      image[None], roi_size, sw_batch_size, predictor, overlap=overlap, mode=mode,
      sigma_scale=sigma_scale, padding_mode=padding_mode, flip_axes=flip_axes,
      pad_last_batch=pad_last_batch, progress=progress, devices=devices)
  return np.asarray(probs[0])


@functools.lru_cache(maxsize=16)
def _flip_members(predict: Callable[[Any, Array], Array],
                  variants: tuple[tuple[int, ...], ...]
                  ) -> Callable[[Any, Array], tuple[Array, ...]]:
  """`(variables, x) -> one output per flip variant, flip^-1(predict(variables, flip(x)))`,
  which `sliding_window_inference` blends each on its own (a tuple output). Cached, so that
  every scan reuses one compilation."""

  @jax.jit
  def members(variables: Any, x: Array) -> tuple[Array, ...]:
    return tuple(_flip(predict(variables, _flip(x, axes)), axes) if axes else
                 predict(variables, x) for axes in variants)

  return members
