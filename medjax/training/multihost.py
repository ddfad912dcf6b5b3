"""Several processes as one JAX job: starting `jax.distributed`, and what the loop needs of it.

A job of N processes (one per host, or several on one machine) is started without a cluster
manager by giving every process the coordinator's address, the process count and its own id:

  python -m medjax.train ... --coordinator_address=HOST:PORT --num_processes=N --process_id=I

or the same through `MEDJAX_COORDINATOR_ADDRESS`, `MEDJAX_NUM_PROCESSES` and
`MEDJAX_PROCESS_ID` (for schedulers that set environment variables). Process 0 runs the
coordinator on HOST:PORT. On clusters JAX detects by itself (SLURM, Open MPI, TPU pods,
Kubernetes), `MEDJAX_DISTRIBUTED=1` alone is enough. `initialize` runs before anything touches
the devices; on CPU the collectives between processes go through gloo.

After that, `jax.devices()` holds every process's devices, the batch is sharded over all of
them (each process feeds its slice, `input_pipeline` by `jax.process_index()`), the state is
replicated, and orbax writes each checkpoint once for the whole job. Process 0, the chief,
writes everything else (TensorBoard, metrics.jsonl, config.json, the preprocessing and plan).
"""

from __future__ import annotations

import builtins
import dataclasses
import os
import socket
import sys
import time
from typing import Any, Callable, Mapping, TypeVar

import jax
import numpy as np

ENV_ADDRESS = "MEDJAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "MEDJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "MEDJAX_PROCESS_ID"
ENV_AUTO = "MEDJAX_DISTRIBUTED"  # any non-empty value but '0': let JAX detect the cluster
_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class Settings:
  """How this process joins the job. `auto`: JAX detects the cluster (SLURM etc.) itself."""
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  auto: bool = False

  @property
  def explicit(self) -> bool:
    return self.num_processes is not None and self.num_processes > 1


def _int(value: Any, name: str) -> int | None:
  if value is None or value == "":
    return None
  try:
    return int(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name}={value!r}: expected an integer.") from None


def settings_from(*, coordinator_address: str | None = None, num_processes: int | None = None,
                  process_id: int | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings | None:
  """The settings from the flags, else the `MEDJAX_*` environment; None: a single process.

  Raises:
    ValueError: an incomplete or impossible combination (names the flag or variable).
  """
  environ = os.environ if environ is None else environ
  address = coordinator_address or environ.get(ENV_ADDRESS) or None
  n = (num_processes if num_processes is not None
       else _int(environ.get(ENV_NUM_PROCESSES), ENV_NUM_PROCESSES))
  i = process_id if process_id is not None else _int(environ.get(ENV_PROCESS_ID), ENV_PROCESS_ID)
  auto = environ.get(ENV_AUTO, "") not in ("", "0")
  if address is None and n is None and i is None:
    return Settings(auto=True) if auto else None
  if n is None:
    raise ValueError(f"--num_processes (or {ENV_NUM_PROCESSES}) is missing: expected the number "
                     "of processes of the job, given with --coordinator_address and "
                     "--process_id.")
  if n < 1:
    raise ValueError(f"--num_processes={n}: expected at least 1 process.")
  if i is None:
    if n > 1:
      raise ValueError(f"--process_id (or {ENV_PROCESS_ID}) is missing: expected this "
                       f"process's id in 0..{n - 1}.")
    i = 0
  if not 0 <= i < n:
    raise ValueError(f"--process_id={i} is out of range for --num_processes={n}: expected "
                     f"0..{n - 1}.")
  if n > 1:
    if address is None:
      raise ValueError(f"--coordinator_address (or {ENV_ADDRESS}) is missing: expected "
                       "HOST:PORT of process 0, the same for every process.")
    parse_address(address)
  return Settings(coordinator_address=address, num_processes=n, process_id=i)


def parse_address(address: str) -> tuple[str, int]:
  """`HOST:PORT` (or `[IPv6]:PORT`) as (host, port).

  Raises:
    ValueError: not HOST:PORT with a port in 1..65535.
  """
  host, sep, port = address.rpartition(":")
  host = host.strip("[]")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f"--coordinator_address={address!r}: expected HOST:PORT, e.g. "
                     "127.0.0.1:12355 (process 0's host and a free port).")
  return host, int(port)


def wait_for_coordinator(address: str, timeout_s: float) -> None:
  """Waits until `address` accepts TCP connections (process 0 may start later than the others).

  Raises:
    ConnectionError: nothing listens there within `timeout_s` seconds.
  """
  host, port = parse_address(address)
  deadline = time.monotonic() + timeout_s
  last = None
  while True:
    try:
      with socket.create_connection((host, port), timeout=min(5.0, max(timeout_s, 0.1))):
        return
    except OSError as e:
      last = e
    if time.monotonic() >= deadline:
      break
    time.sleep(0.5)
  reason = getattr(last, "strerror", None) or str(last)
  raise ConnectionError(
      f"the coordinator {address} is unreachable ({reason}) after trying for {timeout_s:g} s: "
      "start process 0 (--process_id=0) with the same --coordinator_address, check the host "
      "and port (a firewall?), or raise --initialization_timeout.")


def initialize(settings: Settings | None, *, initialization_timeout: int = 120,
               heartbeat_timeout: int = 100) -> None:
  """Joins the job described by `settings` (None or one process: nothing to do).

  Call before anything touches the devices. Process 0 hosts the coordinator; the others first
  wait until its port answers, so an unreachable coordinator is a clear `ConnectionError`
  rather than JAX's abort. Once started, a process that stops sending heartbeats for
  `heartbeat_timeout` seconds (killed, its host lost) makes JAX stop the others.
  """
  if settings is None or (not settings.auto and not settings.explicit):
    return
  if initialization_timeout < 1 or heartbeat_timeout < 1:
    raise ValueError(f"--initialization_timeout={initialization_timeout}, --heartbeat_timeout="
                     f"{heartbeat_timeout}: expected whole seconds >= 1.")
  # Gloo carries the collectives between CPU processes (JAX 0.10 defaults to it; older
  # versions to none, where a cross-process computation fails). Other backends ignore it.
  if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  timeouts = dict(initialization_timeout=int(initialization_timeout),
                  heartbeat_timeout_seconds=int(heartbeat_timeout))
  if settings.auto and not settings.explicit:
    try:
      jax.distributed.initialize(**timeouts)  # SLURM, Open MPI, TPU, k8s: detected by JAX
    except ValueError as e:
      raise ValueError(f"{ENV_AUTO} is set, but JAX detected no cluster (SLURM, Open MPI, TPU, "
                       f"Kubernetes): {e} Outside such a cluster, give every process "
                       "--coordinator_address, --num_processes and --process_id.") from e
    return
  if settings.process_id != 0:
    wait_for_coordinator(settings.coordinator_address, initialization_timeout)
  elif settings.num_processes > 1:
    print(f"medjax: process 0 of {settings.num_processes}: coordinator on "
          f"{settings.coordinator_address}; waiting up to {initialization_timeout} s for the "
          "other processes.", file=sys.stderr, flush=True)
  jax.distributed.initialize(coordinator_address=settings.coordinator_address,
                             num_processes=settings.num_processes,
                             process_id=settings.process_id, **timeouts)


def is_chief() -> bool:
  """True on process 0, the one that writes the logs and the workdir's files."""
  return jax.process_index() == 0


def barrier(name: str, timeout_s: float = 3600.0) -> None:
  """Waits until every process reaches the barrier `name` (a no-op in a single process).

  A host-side barrier through the coordinator (no device computation), so that it can wait
  long, e.g. while process 0 builds the dataset.
  """
  if jax.process_count() == 1:
    return
  client = _client()
  if client is None:  # initialised some other way: fall back to a device barrier
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)
    return
  client.wait_at_barrier(f"medjax:{name}", int(timeout_s * 1000))


def chief_first(fn: Callable[[], _T], name: str) -> _T:
  """`fn()` on process 0, then on the others: e.g. building a dataset they all read.

  When `fn` fails on process 0, the others raise its error too (same type for Python's own
  exceptions, else RuntimeError), so that every process stops with the same message instead
  of waiting for one that has exited.
  """
  if jax.process_count() == 1:
    return fn()
  client = _client()
  key = f"medjax:{name}-error/"  # a folder of the key-value store: read with dir_get
  if is_chief():
    try:
      result = fn()
    except Exception as e:
      if client is not None:
        client.key_value_set(f"{key}0", f"{type(e).__name__}\n{e}")
      barrier(name)
      raise
    barrier(name)
    return result
  barrier(name)
  failed = client.key_value_dir_get(key) if client is not None else []
  if failed:
    kind, _, message = failed[0][1].partition("\n")
    error = getattr(builtins, kind, None)
    if not (isinstance(error, type) and issubclass(error, Exception)):
      error, message = RuntimeError, f"process 0 failed: {kind}: {message}"
    raise error(message)
  return fn()


def _client() -> Any:
  """The coordinator's client of this process, or None (not started by `jax.distributed`)."""
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.client


def local_copy(tree: Any) -> Any:
  """A replicated tree's arrays as this process's own copy on its first local device.

  Work that each process does alone (whole-volume evaluation) then runs without any
  collective with the other processes, which could not take part in it.
  """
  device = jax.local_devices()[0]

  def local(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if not x.is_fully_replicated:
        raise ValueError(f"local_copy: an array of shape {x.shape} is sharded across "
                         "processes; expected replicated arrays.")
      return jax.device_put(x.addressable_data(0), device)
    return x
  return jax.tree.map(local, tree)


def any_process(flag: bool, name: str, *, previous: str | None = None) -> bool:
  """True on every process when `flag` is True on any of them; a no-op in one process.

  Host-side, through the coordinator's key-value store: each process posts its flag under
  `name` (unique per call, e.g. per step), waits for the others, then reads them all. This
  process's key of the call `previous` is deleted, so a long run leaves no trail of keys
  (every process has read it: they all passed this call's barrier).
  """
  if jax.process_count() == 1:
    return flag
  client = _client()
  if client is None:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
  me = jax.process_index()
  client.key_value_set(f"medjax:{name}/{me}", "1" if flag else "0")
  client.wait_at_barrier(f"medjax:{name}", 600_000)
  if previous is not None:
    client.key_value_delete(f"medjax:{previous}/{me}")
  return any(v == "1" for _, v in client.key_value_dir_get(f"medjax:{name}/"))


def exit_after(seconds: float, code: int | str | None) -> None:
  """Ends this process with status `code` in `seconds`, whatever it is waiting for then.

  For an error exit of one process in a job: a normal exit waits in `jax.distributed`'s
  shutdown for every process, and those still training wait for this one. If the exit has not
  finished within `seconds` (a daemon timer), stdout and stderr are flushed and the process
  ends with `os._exit`.
  """
  import threading  # pylint: disable=g-import-not-at-top

  def end():
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)  # pylint: disable=protected-access
  timer = threading.Timer(seconds, end)
  timer.daemon = True
  timer.start()
