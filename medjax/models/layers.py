"""Building blocks for 3D segmentation networks (channels-last, `[B, D, H, W, C]`).

* `ConvBNReLU`: 3x3x3 convolution (SAME padding) -> BatchNorm -> ReLU, PyTorch's BatchNorm
  defaults (running-average momentum 0.1, i.e. flax `momentum=0.9`; eps 1e-5).
* `UpConv`: the 2x2x2, stride-2 transposed convolution of U-Nets, computed as one matrix product
  (a Dense layer `C -> 8 * O`) followed by `depth_to_space`. It holds exactly the parameters of
  `nn.ConvTranspose(O, (2, 2, 2), strides=(2, 2, 2), padding='VALID')` (`kernel` `[2, 2, 2, C, O]`,
  `bias` `[O]`) and computes the same function, so checkpoints are interchangeable; XLA's CPU
  transposed convolution is an order of magnitude slower than the matmul form.
* `depth_to_space` / `space_to_depth`: the 3D pixel-shuffle pair.
* `max_pool_2x`: 2x2x2 max-pooling with stride 2.
* `conv3d`: a stride-1, SAME-padded 3D convolution computed through XLA's 2D convolution (the
  depth taps folded into the channels or summed), with its own backward pass; `Conv3D` is the
  layer with the parameters of `nn.Conv`. XLA's CPU 3D convolution runs at a third of the speed
  of its 2D convolution per FLOP, so this is the default in `ConvBNReLU`.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

Dtype = Any


def depth_to_space(x: jax.Array, block_size: int = 2) -> jax.Array:
  """3D pixel shuffle: `[B, D, H, W, r^3 * C]` -> `[B, r*D, r*H, r*W, C]` with r = block_size.

  `y[b, r*i + p, r*j + q, r*k + s, c] = x[b, i, j, k, ((p * r + q) * r + s) * C + c]`: the
  channel axis is read as `(p, q, s, c)` in row-major order. Inverse of `space_to_depth`.
  """
  b, d, h, w, rc = x.shape
  r = block_size
  if rc % r**3:
    raise ValueError(f"depth_to_space with block_size={r} needs the channel count of input "
                     f"shape {x.shape} to be divisible by {r**3}.")
  c = rc // r**3
  x = x.reshape(b, d, h, w, r, r, r, c)
  x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, r * d, r * h, r * w, c)


def space_to_depth(x: jax.Array, block_size: int = 2) -> jax.Array:
  """Inverse of `depth_to_space`: `[B, r*D, r*H, r*W, C]` -> `[B, D, H, W, r^3 * C]`."""
  b, rd, rh, rw, c = x.shape
  r = block_size
  if rd % r or rh % r or rw % r:
    raise ValueError(f"space_to_depth with block_size={r} needs spatial sizes divisible by {r}; "
                     f"got input shape {x.shape} ([B, D, H, W, C]).")
  x = x.reshape(b, rd // r, r, rh // r, r, rw // r, r, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, rd // r, rh // r, rw // r, r**3 * c)


def max_pool_2x(x: jax.Array) -> jax.Array:
  """2x2x2 max-pooling with stride 2: `[B, D, H, W, C]` (D, H, W even) -> `[B, D/2, H/2, W/2, C]`.

  `y[b, i, j, k, c] = max_{p,q,s in {0,1}} x[b, 2i+p, 2j+q, 2k+s, c]`, the values of
  `nn.max_pool(x, (2, 2, 2), strides=(2, 2, 2))`. Written as a reshape and a reduction because
  XLA's CPU gradient of `reduce_window` max is about 9x slower (0.05 s against 0.006 s at
  32^3 x 64). The gradient differs only at exact ties inside a window, where it is shared equally
  instead of going to one element (after a ReLU the tied zeros get no gradient either way).
  """
  if x.ndim != 5 or any(s % 2 for s in x.shape[1:4]):
    raise ValueError(f"max_pool_2x needs input [B, D, H, W, C] with even D, H, W; got input "
                     f"shape {x.shape}.")
  b, d, h, w, c = x.shape
  return x.reshape(b, d // 2, 2, h // 2, 2, w // 2, 2, c).max(axis=(2, 4, 6))


CONV_METHODS = ("auto", "fold_in", "fold_out", "sum", "xla")


def _conv2d(x: jax.Array, kernel: jax.Array, pads: tuple[int, int]) -> jax.Array:
  """Stride-1 2D convolution: `[N, H, W, C]` * `[kh, kw, C, O]` -> `[N, H', W', O]`."""
  return lax.conv_general_dilated(x, kernel, (1, 1), [(pads[0], pads[0]), (pads[1], pads[1])],
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _pad_depth(x: jax.Array, pad: int) -> jax.Array:
  return jnp.pad(x, [(0, 0), (pad, pad)] + [(0, 0)] * (x.ndim - 2))


def _depth_taps(x: jax.Array, kd: int) -> jax.Array:
  """`[B, D, H, W, C]` -> `[B * D, H, W, kd * C]` whose channel block a is `x[:, d + a - kd // 2]`
  (zero outside the volume): the kd depth taps of a SAME convolution side by side."""
  b, d, h, w, c = x.shape
  xp = _pad_depth(x, kd // 2)
  return jnp.concatenate([xp[:, a:a + d] for a in range(kd)], axis=-1).reshape(b * d, h, w, kd * c)


def _conv3d_as_2d(x: jax.Array, kernel: jax.Array, method: str) -> jax.Array:
  """SAME, stride-1 3D convolution through 2D convolutions over (H, W) (see `conv3d`)."""
  kd, kh, kw, c, o = kernel.shape
  b, d, h, w, _ = x.shape
  pd, pads = kd // 2, (kh // 2, kw // 2)
  if method == "fold_in":
    k2 = kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kd * c, o)
    return _conv2d(_depth_taps(x, kd), k2, pads).reshape(b, d, h, w, o)
  if method == "fold_out":
    k2 = kernel.transpose(1, 2, 3, 0, 4).reshape(kh, kw, c, kd * o)
    z = _conv2d(x.reshape(b * d, h, w, c), k2, pads).reshape(b, d, h, w, kd, o)
    zp = _pad_depth(z, pd)  # zp[:, d + a, ..., a, :] = z[:, d + a - pd, ..., a, :]
    return functools.reduce(jnp.add, [zp[:, a:a + d, :, :, a] for a in range(kd)])
  if method == "sum":
    xp = _pad_depth(x, pd)
    return functools.reduce(jnp.add, [
        _conv2d(xp[:, a:a + d].reshape(b * d, h, w, c), kernel[a], pads).reshape(b, d, h, w, o)
        for a in range(kd)])
  raise ValueError(f"Unknown 2D formulation {method!r}.")


def _kernel_grad(x: jax.Array, g: jax.Array, kernel_shape: Sequence[int],
                 chunks: int) -> jax.Array:
  """`dk[a, p, q, c, o] = sum_{b,d,h,w} x[b, d+a-pd, h+p-ph, w+q-pw, c] g[b, d, h, w, o]` (zero
  outside the volume), the kernel gradient of `conv3d`: one 2D kernel gradient over the
  depth-stacked input, summed over `chunks` slices of the B * D axis (XLA's CPU backward-filter
  convolution runs ~1.5x faster on 4-8 pieces than on one large one)."""
  kd, kh, kw, c, o = kernel_shape
  b, d, h, w, _ = x.shape
  xs, gs = _depth_taps(x, kd), g.reshape(b * d, h, w, o)
  pads = (kh // 2, kw // 2)
  step = (b * d) // chunks
  k_struct = jax.ShapeDtypeStruct((kh, kw, kd * c, o), g.dtype)
  parts = []
  for i in range(chunks):
    xi, gi = xs[i * step:(i + 1) * step], gs[i * step:(i + 1) * step]
    transpose = jax.linear_transpose(lambda k, xi=xi: _conv2d(xi, k, pads), k_struct)
    parts.append(transpose(gi)[0])
  dk = functools.reduce(jnp.add, parts)
  return dk.reshape(kh, kw, kd, c, o).transpose(2, 0, 1, 3, 4)


def _dk_chunks(n: int, h: int, w: int) -> int:
  """Number of B * D slices for `_kernel_grad`: about 8 slices of 64 x 64 per piece."""
  target = max(1, (8 * 64 * 64) // (h * w))
  chunks = max(1, n // target)
  while n % chunks:
    chunks -= 1
  return chunks


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv3d_fast(x: jax.Array, kernel: jax.Array, forward: str, backward: str) -> jax.Array:
  return _conv3d_as_2d(x, kernel, forward)


def _conv3d_fast_fwd(x, kernel, forward, backward):
  # Residuals are the input and the kernel only (not the depth-stacked copy, 3x as large).
  return _conv3d_as_2d(x, kernel, forward), (x, kernel)


def _conv3d_fast_bwd(forward, backward, residuals, g):
  del forward
  x, kernel = residuals
  # The transposed SAME convolution is the SAME convolution with the kernel flipped in space
  # and its in/out channels swapped.
  flipped = jnp.flip(kernel, (0, 1, 2)).swapaxes(3, 4)
  dx = _conv3d_as_2d(g, flipped.astype(g.dtype), backward)
  b, d, h, w, _ = x.shape
  dk = _kernel_grad(x.astype(g.dtype), g, kernel.shape, _dk_chunks(b * d, h, w))
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


_conv3d_fast.defvjp(_conv3d_fast_fwd, _conv3d_fast_bwd)


def _auto_method(c: int, o: int) -> str:
  """The 2D formulation for `c -> o` channels (measured on a 2-core AVX-512 CPU, see
  benchmarks/README.md): fold the depth taps into the smaller channel side."""
  return "fold_in" if c <= o else "fold_out"


def conv3d(x: jax.Array, kernel: jax.Array, *, method: str = "auto") -> jax.Array:
  """Stride-1 3D convolution with SAME padding, `[B, D, H, W, C]` * `[kd, kh, kw, C, O]`.

  `y[b, d, h, w, o] = sum_{a,p,q,c} x[b, d+a-kd//2, h+p-kh//2, w+q-kw//2, c] kernel[a, p, q, c, o]`
  (zero outside the volume; odd kernel sizes), the values of `nn.Conv(O, (kd, kh, kw),
  padding='SAME', use_bias=False)`. Methods, all the same sum:

  * 'fold_in': the kd depth-shifted copies of `x` side by side in the channels
    (`[B * D, H, W, kd * C]`), one 2D convolution with the kernel `[kh, kw, kd * C, O]`;
  * 'fold_out': one 2D convolution to `kd * O` channels (`kernel[a]` side by side), then the kd
    output blocks shifted in depth and summed;
  * 'sum': the sum of kd 2D convolutions of depth-shifted `x` with `kernel[a]`;
  * 'auto': 'fold_in' when C <= O, else 'fold_out' (the copy is made on the smaller side);
  * 'xla': XLA's 3D convolution (`lax.conv_general_dilated`), differentiated by JAX.

  The 2D methods have their own backward pass (`jax.custom_vjp`): the input gradient is the
  convolution of the output gradient with the flipped, channel-swapped kernel (by 'auto' for
  O -> C), and the kernel gradient one 2D kernel gradient of the depth-stacked input, computed
  in pieces along B * D. Only `x` and `kernel` are kept for the backward pass. Reverse-mode
  differentiation only (no `jax.jvp`).

  Args:
    x: input `[B, D, H, W, C]`.
    kernel: `[kd, kh, kw, C, O]` with odd kd, kh, kw.
    method: one of `CONV_METHODS`.

  Returns:
    `[B, D, H, W, O]` in the promoted dtype of `x` and `kernel`.
  """
  if method not in CONV_METHODS:
    raise ValueError(f"conv3d method must be one of {CONV_METHODS}; got {method!r}.")
  if x.ndim != 5 or kernel.ndim != 5 or x.shape[-1] != kernel.shape[3]:
    raise ValueError(f"conv3d needs x [B, D, H, W, C] and kernel [kd, kh, kw, C, O] with the same "
                     f"C; got x shape {x.shape} and kernel shape {kernel.shape}.")
  if any(k % 2 == 0 for k in kernel.shape[:3]):
    raise ValueError(f"conv3d (SAME padding) needs odd kernel sizes; got kernel shape "
                     f"{kernel.shape}.")
  dtype = jnp.result_type(x, kernel)
  x, kernel = x.astype(dtype), kernel.astype(dtype)
  if method == "xla":
    pads = [(k // 2, k // 2) for k in kernel.shape[:3]]
    return lax.conv_general_dilated(x, kernel, (1, 1, 1), pads,
                                    dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  c, o = kernel.shape[3:]
  forward = _auto_method(c, o) if method == "auto" else method
  backward = _auto_method(o, c) if method == "auto" else method
  return _conv3d_fast(x, kernel, forward, backward)


class Conv3D(nn.Module):
  """Stride-1, SAME 3D convolution with the parameters of `nn.Conv` (`kernel` `[kd, kh, kw, C,
  O]`, lecun-normal; `bias` `[O]`, zeros), computed by `conv3d`.

  `y = conv3d(x, kernel) + bias`; interchangeable with `nn.Conv(features, kernel_size,
  padding='SAME')` (same names, shapes, initialisers and values).

  Attributes:
    features: output channels O.
    kernel_size: (kd, kh, kw), odd.
    use_bias: whether to add a bias.
    method: `conv3d` method ('auto' is the fastest measured on CPU).
    dtype: computation dtype (None: from the inputs and parameters).
    param_dtype: parameter dtype.
  """
  features: int
  kernel_size: Sequence[int] = (3, 3, 3)
  use_bias: bool = True
  method: str = "auto"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`x` `[B, D, H, W, C]` -> `[B, D, H, W, features]`."""
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (*self.kernel_size, x.shape[-1], self.features), self.param_dtype)
    bias = (self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv3d(x, kernel, method=self.method)
    return y + bias if bias is not None else y


class ConvBNReLU(nn.Module):
  """Convolution (SAME padding, stride 1) -> BatchNorm -> ReLU.

  Attributes:
    features: output channels.
    kernel_size: convolution window, (3, 3, 3) by default.
    use_bias: convolution bias (PyTorch's `Conv3d` default; redundant before BatchNorm but kept so
      the parameter count matches the reference implementations).
    momentum: BatchNorm running-average decay (flax convention: 0.9 is PyTorch's momentum 0.1).
    epsilon: BatchNorm variance epsilon (PyTorch's 1e-5).
    dtype: computation dtype (None: from the inputs and parameters).
    param_dtype: parameter dtype.
  """
  features: int
  kernel_size: Sequence[int] = (3, 3, 3)
  use_bias: bool = True
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`x` `[B, D, H, W, C]` -> `[B, D, H, W, features]`.

    With `train=True` BatchNorm normalises with the batch statistics and updates the running ones
    (pass `mutable=['batch_stats']` to `apply`); otherwise it uses the running statistics.
    """
    x = nn.Conv(self.features, tuple(self.kernel_size), padding="SAME", use_bias=self.use_bias,
                dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum,
                     epsilon=self.epsilon, dtype=self.dtype, param_dtype=self.param_dtype,
                     name="bn")(x)
    return nn.relu(x)


class UpConv(nn.Module):
  """2x2x2 transposed convolution with stride 2, as a Dense layer and a depth-to-space.

  Formula, with `kernel` `[2, 2, 2, C, O]` and `bias` `[O]`:
  `y[b, 2i+p, 2j+q, 2k+s, o] = bias[o] + sum_c x[b, i, j, k, c] * kernel[1-p, 1-q, 1-s, c, o]`.
  This is exactly `nn.ConvTranspose(O, (2, 2, 2), strides=(2, 2, 2), padding='VALID')` with the
  same parameters (flax's transposed convolution flips the kernel; PyTorch's `ConvTranspose3d`
  weight `[C, O, 2, 2, 2]` corresponds to `kernel[p, q, s, c, o] = weight[c, o, 1-p, 1-q, 1-s]`).
  Every output voxel receives exactly one input voxel, so the layer is the matmul
  `x @ K` with `K` `[C, 8 * O]` followed by `depth_to_space`. Parameters: `8*C*O + O`.

  Attributes:
    features: output channels O.
    use_bias: whether to add the per-channel bias (O values, as PyTorch and flax).
    dtype: computation dtype (None: from the inputs and parameters).
    param_dtype: parameter dtype.
  """
  features: int
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`x` `[B, D, H, W, C]` -> `[B, 2D, 2H, 2W, features]`."""
    c = x.shape[-1]
    # Same name, shape and initialiser as nn.ConvTranspose, so the two are interchangeable.
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, 2, c, self.features),
                        self.param_dtype)
    bias = (self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    # Flip to flax's transposed-convolution convention, then lay out as [C, (p, q, s, O)].
    k = kernel[::-1, ::-1, ::-1].transpose(3, 0, 1, 2, 4).reshape(c, 8 * self.features)
    y = depth_to_space(jnp.dot(x, k), 2)
    return y + bias if bias is not None else y
