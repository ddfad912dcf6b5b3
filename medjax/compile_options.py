"""XLA compile options for medjax's jitted steps: `jax.jit(fn, compiler_options=for_backend())`.

On the CPU backend medjax compiles with `xla_cpu_use_fusion_emitters=False`: XLA's LLVM emitters
for fused elementwise kernels instead of its newer MLIR ones. A 3D network's step has a thousand
or more such kernels (`models.ops.conv` computes each convolution in pieces), and with the MLIR
emitters the compiler's memory, and what it keeps afterwards, grow with that count. Measured for
the paper U-Net's train step at 1x64^3x2 (2-core Zen 4, jaxlib 0.10.2): compile 30 s instead of
43 s, peak memory while compiling 1.0 GB instead of 2.5 GB, and 215 MB less resident afterwards
(of which ~160 MB the MLIR emitters kept even once the executable was deleted), at the same step
time (6.2-6.9 s against 7.1-7.5 s over four steps). The options go with each executable, so they
change nothing else in the process, and the persistent compilation cache keys on them.

Other backends get no options (None). JAX accepts `compiler_options` only on a top-level `jax.jit`
(not one traced inside another function, e.g. by `jax.eval_shape`), so medjax uses them for its
train step (`training.step.make_train_step`) and not for the predictors of `inference`, which
callers may nest.
"""

import jax

CPU_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def for_backend(backend: str | None = None) -> dict[str, bool] | None:
  """The compiler options for `backend` (None: JAX's default backend): `CPU_OPTIONS` on 'cpu',
  otherwise None."""
  backend = backend or jax.default_backend()
  return dict(CPU_OPTIONS) if backend == "cpu" else None
