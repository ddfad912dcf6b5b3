"""The device mesh of data parallelism, and the global batch each host feeds into it.

Data parallelism is `jax.jit` over a `Mesh` of all devices with the batch sharded on axis 'data'
and the state replicated. XLA averages the gradients and computes BatchNorm statistics over the
global batch, so 1 device and N devices give the same result for the same global batch (what a
`pmap` with `lax.pmean` over gradients and BatchNorm statistics would compute). The same code runs
on several hosts after `jax.distributed.initialize()`: each host feeds its slice of the batch.
"""

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def create_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named 'data' over `devices` (default: every device of every host)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), ("data",))


def local_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named 'data' over this process's own devices (default: all of them).

  For work each process does alone, such as sliding-window inference of a scan: its arrays are
  fully addressable here, so it runs the same inside a job of several processes, with no
  collective that the other processes would have to join.

  Raises:
    ValueError: no devices, or a device that belongs to another process.
  """
  devices = jax.local_devices() if devices is None else list(devices)
  if not devices:
    raise ValueError("local_mesh: expected at least one device.")
  others = [d for d in devices if d.process_index != jax.process_index()]
  if others:
    raise ValueError(f"local_mesh: devices {others} belong to other processes; expected devices "
                     f"of this process (jax.local_devices()).")
  return create_mesh(devices)


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding of the train state and the keys: a full copy on every device."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """The sharding of a batch: its first axis split over the devices of axis 'data'."""
  return NamedSharding(mesh, P("data"))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """`tree` (the same values on every host) as arrays replicated on every device of `mesh`.

  `jax.device_put` takes only devices this process can address; with several processes a
  jitted identity with a replicated output builds the global arrays instead.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, replicated(mesh))
  return jax.jit(lambda t: t, out_shardings=replicated(mesh))(tree)


def global_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles each host's slice of the batch into one global array sharded on 'data'."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
