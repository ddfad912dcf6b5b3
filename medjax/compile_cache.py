"""Persistent XLA compilation cache: compile a train or eval step once, reuse it in later runs.

XLA's CPU compiler takes tens of seconds for a 3D U-Net train step. With the cache on, the first
process writes each compiled executable to disk (keyed by the computation, its shapes, the
compile options, the JAX/jaxlib version and the device), and later processes with the same
model, shapes and flags load it instead of compiling:

  from medjax import compile_cache
  compile_cache.enable()            # before the first jit call that should be cached
  ...

The directory is, in order: the `cache_dir` argument, the environment variable
`MEDJAX_COMPILE_CACHE_DIR`, then `~/.cache/medjax/jax_cache`. Entries are plain files; delete
the directory to clear it. It is safe to share between processes (JAX writes atomically).
"""

import ctypes
import ctypes.util
import os
import sys

import jax
from jax.experimental.compilation_cache import compilation_cache as _jax_cache

ENV_VAR = "MEDJAX_COMPILE_CACHE_DIR"
DEFAULT_DIR = os.path.join("~", ".cache", "medjax", "jax_cache")


def default_cache_dir() -> str:
  """`$MEDJAX_COMPILE_CACHE_DIR` if set and non-empty, else `~/.cache/medjax/jax_cache`."""
  return os.path.abspath(os.path.expanduser(os.environ.get(ENV_VAR) or DEFAULT_DIR))


def enable(cache_dir: str | os.PathLike | None = None, *,
           min_compile_time_secs: float = 0.5) -> str:
  """Turns on JAX's persistent compilation cache in `cache_dir` and returns its absolute path.

  Computations whose compilation took at least `min_compile_time_secs` are written (JAX's default
  is 1 s; 0.5 s keeps the small eval and init functions too, while tiny helper computations,
  faster to compile than to read back, stay out). Any entry size is kept. Calling `enable` again,
  even after compilations, switches to the new directory for later compilations.

  Args:
    cache_dir: directory for the cache (created if missing); None for `default_cache_dir()`.
    min_compile_time_secs: compile-time threshold in seconds for writing an entry, >= 0.

  Returns:
    The absolute cache directory.

  Raises:
    ValueError: `min_compile_time_secs` < 0, or `cache_dir` exists and is not a writable
      directory.
  """
  if min_compile_time_secs < 0:
    raise ValueError(f"compile_cache.enable: min_compile_time_secs must be >= 0; got "
                     f"{min_compile_time_secs}.")
  path = (os.path.abspath(os.path.expanduser(os.fspath(cache_dir))) if cache_dir is not None
          else default_cache_dir())
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"compile_cache.enable: cache_dir {path!r} exists and is not a directory.")
  os.makedirs(path, exist_ok=True)
  if not os.access(path, os.W_OK | os.X_OK):
    raise ValueError(f"compile_cache.enable: cache_dir {path!r} is not writable.")
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
  # -1: no minimum entry size (JAX otherwise picks one for the filesystem).
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  # JAX decides once per process whether the cache is in use (at the first compilation); start
  # that decision again so the settings above apply even after earlier compilations.
  _jax_cache.reset_cache()
  return path


def enable_from_flag(value: str | None, prog: str) -> str | None:
  """`enable(value)` for a command-line flag: None or '' for the default directory, 'off' for no
  cache. A cache directory that cannot be used only prints a warning (the run compiles as if
  there were no cache). Returns the cache directory, or None."""
  if value == "off":
    return None
  try:
    return enable(value or None)
  except (ValueError, OSError) as e:
    print(f"{prog}: warning: compilation cache off: {e}", file=sys.stderr)
    return None


def cache_dir() -> str | None:
  """The directory JAX's persistent cache is set to use, or None when it is not set."""
  if not jax.config.jax_enable_compilation_cache:
    return None
  return jax.config.jax_compilation_cache_dir or None


def release_compiler_memory() -> bool:
  """Returns the memory XLA's compiler freed to the operating system (glibc `malloc_trim(0)`).

  XLA's CPU compiler leaves ~1 MB of freed heap per compiled kernel that glibc keeps mapped, so a
  process that has just compiled a 3D U-Net train step holds 1-2 GB it does not use (measured
  with jaxlib 0.10.2); call this once the step is compiled (e.g. after the first step). It does
  not touch live buffers or compiled executables. Returns False where glibc's `malloc_trim` is
  not available (non-glibc platforms), True otherwise.
  """
  name = ctypes.util.find_library("c")
  try:
    libc = ctypes.CDLL(name)
    trim = libc.malloc_trim
  except (OSError, AttributeError, TypeError):
    return False
  trim.argtypes = [ctypes.c_size_t]
  trim(0)
  return True
