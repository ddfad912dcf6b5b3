"""Which cases of a folder one of several `medjax.predict` processes segments.

N processes (one per host or per accelerator) segment one folder together when each is given
`--num_shards=N --shard_index=I`: process I takes the cases whose rank in the sorted case names
is I modulo N (nnU-Net's `part_id::num_parts`, on sorted names so that every process agrees
whatever order its file system lists the folder in). The shares are disjoint and together
hold every case, and each process writes only its own cases' files, so the N runs write what
one run writes. The processes do not talk to each other: one that fails leaves the others'
outputs in place, and rerunning that shard alone completes the folder.

Without the flags the shard comes from the job this process is in: `jax.process_count()` and
`jax.process_index()` when `jax.distributed` has been initialised (a script calling
`prediction.run` inside a training job), else the `MEDJAX_NUM_PROCESSES` and
`MEDJAX_PROCESS_ID` environment variables that `medjax.train` reads too, so one job script can
start either; else one shard, every case.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence, TypeVar

from medjax.training import multihost

_T = TypeVar("_T")

# The variables `medjax.train` reads for its job (one name for both, so one job script serves).
ENV_NUM_PROCESSES = multihost.ENV_NUM_PROCESSES
ENV_PROCESS_ID = multihost.ENV_PROCESS_ID


@dataclasses.dataclass(frozen=True)
class Shard:
  """Share `index` of `count` (0 <= index < count); `source` names where it came from."""
  count: int = 1
  index: int = 0
  source: str = "default"


def _int(value: object, name: str) -> int:
  try:
    return int(str(value).strip())
  except ValueError:
    raise ValueError(f"{name}={value!r}: expected an integer.") from None


def _checked(count: int, index: int, count_name: str, index_name: str, source: str) -> Shard:
  if count < 1:
    raise ValueError(f"{count_name}={count}: expected an integer >= 1.")
  if not 0 <= index < count:
    raise ValueError(f"{index_name}={index} with {count_name}={count}: expected "
                     f"0..{count - 1}.")
  return Shard(count, index, source)


def _distributed_shard() -> Shard | None:
  """The process count and index of a started `jax.distributed` job, else None.

  Asks whether it was started before touching JAX's backends, so that a plain run does not
  initialise them here.
  """
  try:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  if distributed.global_state.client is None:
    return None
  import jax  # pylint: disable=g-import-not-at-top
  return Shard(jax.process_count(), jax.process_index(), "jax.distributed")


def resolve(num_shards: int | None = None, shard_index: int | None = None, *,
            environ: Mapping[str, str] | None = None) -> Shard:
  """This process's shard: the flags, else `jax.distributed`, else `MEDJAX_*`, else (1, 0).

  Raises:
    ValueError: only one of the two flags (or variables), a count below 1 or an index outside
      0..count-1; the message names the flag or variable.
  """
  if num_shards is not None or shard_index is not None:
    if num_shards is None or shard_index is None:
      raise ValueError("--num_shards and --shard_index go together: give both, e.g. "
                       "--num_shards=2 --shard_index=0 and --shard_index=1 in a second process.")
    return _checked(int(num_shards), int(shard_index), "--num_shards", "--shard_index", "flags")
  shard = _distributed_shard()
  if shard is not None:
    return shard
  environ = os.environ if environ is None else environ
  count, index = environ.get(ENV_NUM_PROCESSES, ""), environ.get(ENV_PROCESS_ID, "")
  if not count and not index:
    return Shard()
  if not count or not index:
    missing = ENV_NUM_PROCESSES if not count else ENV_PROCESS_ID
    given = ENV_PROCESS_ID if not count else ENV_NUM_PROCESSES
    raise ValueError(f"{given} is set but {missing} is not: expected both (or --num_shards "
                     "and --shard_index).")
  return _checked(_int(count, ENV_NUM_PROCESSES), _int(index, ENV_PROCESS_ID),
                  ENV_NUM_PROCESSES, ENV_PROCESS_ID, "environment")


def select(names: Sequence[str], items: Sequence[_T], shard: Shard) -> list[_T]:
  """The items whose name's rank among the sorted `names` is `shard.index` modulo
  `shard.count`, in their given order.

  Raises:
    ValueError: repeated names (two processes could not tell those cases apart).
  """
  if len(set(names)) != len(names):
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    raise ValueError(f"cases {repeated} appear more than once; expected distinct case names.")
  rank = {name: r for r, name in enumerate(sorted(names))}
  return [item for name, item in zip(names, items) if rank[name] % shard.count == shard.index]
