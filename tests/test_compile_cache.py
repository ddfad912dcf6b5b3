"""Tests for medjax.compile_cache (JAX's persistent compilation cache)."""

import os
import subprocess
import sys
import textwrap

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache
import jax.numpy as jnp
import pytest

from medjax import compile_cache

_OPTIONS = ("jax_enable_compilation_cache", "jax_compilation_cache_dir",
            "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture(autouse=True)
def restore_jax_config():
  """The cache settings are process-wide: put them back for the other tests."""
  saved = {name: getattr(jax.config, name) for name in _OPTIONS}
  yield
  for name, value in saved.items():
    jax.config.update(name, value)
  jax_cache.reset_cache()


def test_default_dir_and_environment_override(monkeypatch, tmp_path):
  monkeypatch.delenv(compile_cache.ENV_VAR, raising=False)
  assert compile_cache.default_cache_dir() == os.path.expanduser("~/.cache/medjax/jax_cache")
  monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "from_env"))
  assert compile_cache.default_cache_dir() == str(tmp_path / "from_env")
  assert compile_cache.enable() == str(tmp_path / "from_env")
  assert os.path.isdir(tmp_path / "from_env")


def test_enable_writes_compiled_executables(tmp_path):
  path = compile_cache.enable(tmp_path / "cache", min_compile_time_secs=0)
  assert path == str(tmp_path / "cache") and compile_cache.cache_dir() == path
  assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
  # A computation this process has not compiled before (the constant is unique to this test).
  jax.jit(lambda x: jnp.tanh(x) * 1.2345678 + 0.5)(jnp.arange(7.0)).block_until_ready()
  assert os.listdir(path), "no cache entry written"


def test_enable_rejects_bad_arguments(tmp_path):
  not_a_dir = tmp_path / "file"
  not_a_dir.write_text("x")
  with pytest.raises(ValueError, match=r"not a directory"):
    compile_cache.enable(not_a_dir)
  with pytest.raises(ValueError, match="min_compile_time_secs"):
    compile_cache.enable(tmp_path, min_compile_time_secs=-1)


_CHILD = textwrap.dedent("""
    import jax, jax.numpy as jnp
    from medjax import compile_cache
    events = []
    jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
    compile_cache.enable(min_compile_time_secs=0)
    jax.jit(lambda x: jnp.cos(x) @ x.T + 2.5)(jnp.ones((8, 8))).block_until_ready()
    print("HIT" if "/jax/compilation_cache/cache_hits" in events else "MISS")
""")


def test_second_process_reuses_the_cache(tmp_path):
  env = dict(os.environ, **{compile_cache.ENV_VAR: str(tmp_path / "shared"),
                            "JAX_PLATFORMS": "cpu"})
  run = lambda: subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                               text=True, check=True).stdout.split()[-1]
  assert run() == "MISS"
  assert run() == "HIT"


def test_enable_from_flag_off_default_and_unusable(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "default"))
  assert compile_cache.enable_from_flag(None, prog="medjax.train") == str(tmp_path / "default")
  assert compile_cache.enable_from_flag(str(tmp_path / "given"), prog="medjax.train") == str(
      tmp_path / "given")
  jax.config.update("jax_enable_compilation_cache", False)
  assert compile_cache.enable_from_flag("off", prog="medjax.train") is None
  assert compile_cache.cache_dir() is None
  not_a_dir = tmp_path / "file"
  not_a_dir.write_text("x")
  # An unusable directory is a warning, not a failed run.
  assert compile_cache.enable_from_flag(str(not_a_dir), prog="medjax.train") is None
  assert "medjax.train: warning: compilation cache off" in capsys.readouterr().err
