"""Command-line overrides of a config file: clear errors for unknown keys, and `=None`.

`ml_collections.config_flags` applies `--config.key=value` to the loaded config. Two cases it
handles badly are mended here:

* an unknown key (a typo) ends in a bare `AttributeError` traceback; here it is one error line
  naming the key, the nearest valid keys and the keys at that level;
* a typed key that may be None (`FieldReference(None, field_type=int)`, e.g.
  `dataset.fold`) cannot be set back to None (`--config.dataset.fold=None` fails to parse as an
  int); here `=None` sets it to None, for the keys that allow it.

`parse_flags` is the `flags_parser` of `absl.app.run` for CLIs with a config flag.
"""

import difflib
import importlib.util
import os
import sys
from typing import Any, Sequence

from absl import app
from absl import flags
import ml_collections

NONE = "None"


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every leaf key of `config`, dotted (`dataset.crop_size`), in declaration order."""
  keys = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      keys.extend(flat_keys(value, f"{prefix}{key}."))
    else:
      keys.append(f"{prefix}{key}")
  return keys


def _node(config: ml_collections.ConfigDict, parts: Sequence[str]) -> Any:
  for part in parts:
    config = config[part]
  return config


def missing_key(config: ml_collections.ConfigDict, path: str) -> str | None:
  """The first part of the dotted `path` that `config` lacks, as a dotted prefix, or None."""
  node = config
  parts = path.split(".")
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return ".".join(parts[:i + 1])
    node = node[part]
  return None


def unknown_key_message(config: ml_collections.ConfigDict, path: str, flag_name: str = "config"
                        ) -> str:
  """`--config.<path>`: no such key; the nearest keys and those at the level it names."""
  missing = missing_key(config, path) or path
  parent_parts = missing.split(".")[:-1]
  parent = _node(config, parent_parts)
  level = ".".join(parent_parts)
  nearest = difflib.get_close_matches(path, flat_keys(config), n=3, cutoff=0.6)
  siblings = sorted(parent.keys()) if isinstance(parent, ml_collections.ConfigDict) else []
  message = f"--{flag_name}.{path}: the config has no key {missing!r}."
  if nearest:
    message += " Did you mean " + " or ".join(f"{flag_name}.{k}" for k in nearest) + "?"
  where = f"{flag_name}.{level}" if level else flag_name
  if siblings:
    message += f" The keys of {where}: {', '.join(siblings)}."
  return message


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """Runs `get_config()` of a config file (`path[:argument]`, as config_flags accepts)."""
  file_path, _, argument = path.partition(":")
  spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(file_path))[0], file_path)
  if spec is None or spec.loader is None:
    raise FileNotFoundError(f"{file_path}: not a Python config file.")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(argument) if argument else module.get_config()


def _split_none_overrides(argv: Sequence[str], flag_name: str
                          ) -> tuple[list[str], list[str]]:
  """Takes `--config.key=None` out of `argv`: (the other arguments, the keys set to None)."""
  prefix = f"--{flag_name}."
  rest, none_keys = [], []
  for arg in argv:
    if arg.startswith(prefix) and arg.endswith(f"={NONE}"):
      none_keys.append(arg[len(prefix):-len(NONE) - 1])
    else:
      rest.append(arg)
  return rest, none_keys


def _allows_none(config: ml_collections.ConfigDict, path: str) -> bool:
  parts = path.split(".")
  parent = _node(config, parts[:-1])
  # A typed FieldReference is how the default config declares a key that may be None.
  field = parent._fields.get(parts[-1])  # pylint: disable=protected-access
  return isinstance(field, ml_collections.FieldReference) or parent[parts[-1]] is None


def _config_path(argv: Sequence[str], flag_name: str) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{flag_name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{flag_name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _fail(prog: str, message: str) -> None:
  print(f"{prog}: error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: Sequence[str], *, prog: str, flag_name: str = "config") -> list[str]:
  """absl's flag parsing, with clear errors for unknown config keys and `--config.key=None`."""
  argv, none_keys = _split_none_overrides(argv, flag_name)
  overrides = [a[len(flag_name) + 3:].split("=", 1)[0] for a in argv
               if a.startswith(f"--{flag_name}.")] + none_keys
  config_path = _config_path(argv, flag_name)
  if config_path is not None:
    # Load the file and check the keys before config_flags applies them: its own errors are
    # tracebacks.
    try:
      config = load_config_file(os.path.expanduser(config_path))
    except FileNotFoundError:
      config = None  # config_flags reports the missing file itself
    except ValueError as e:  # get_config's own check, e.g. an unknown recipe after ':'
      _fail(prog, f"--{flag_name}={config_path}: {e}")
    except Exception:  # pylint: disable=broad-except
      config = None  # a broken file: config_flags reports it with its traceback, as before
    if config is not None:
      for path in overrides:
        if missing_key(config, path) is not None:
          _fail(prog, unknown_key_message(config, path, flag_name))
  remaining = app.parse_flags_with_usage(argv)
  config = flags.FLAGS[flag_name].value
  for path in none_keys:
    if missing_key(config, path) is not None:
      _fail(prog, unknown_key_message(config, path, flag_name))
    if not _allows_none(config, path):
      _fail(prog, f"--{flag_name}.{path}=None: this key cannot be None (it is "
                  f"{_node(config, path.split('.'))!r} of type "
                  f"{type(_node(config, path.split('.'))).__name__}).")
    parts = path.split(".")
    _node(config, parts[:-1])[parts[-1]] = None
  return remaining
