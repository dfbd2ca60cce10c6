"""Device mesh, shardings and multi-host start-up (data parallel over one mesh axis, "data").

The frozen model parameters and the prompts are replicated on every device; a global batch is split along its
batch axis over the "data" axis. XLA inserts the gradient all-reduce, so one compiled step serves 1 device,
4 simulated CPU devices, a GPU box or a TPU pod slice alike.

Multi-host: call `initialize_distributed(...)` before anything else touches jax devices. Every process builds
the same global batch deterministically (same seed, same order) and `put_global` hands each process's devices
their slice, so no process ever needs another's data.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
                           process_id: Optional[int] = None, *, cpu_collectives: str = "gloo") -> None:
    """Starts jax's multi-process runtime (one process per host).

    coordinator: "host:port" of process 0; None lets jax discover it (TPU pods, SLURM, Open MPI).
    On CPU the cross-process collectives need an implementation; gloo ships with jaxlib.
    Must run before the first use of `jax.devices()`.
    """
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id {process_id} is outside 0..{num_processes - 1}")
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process), axis name "data"."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh: no devices")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def num_data_shards(mesh: Mesh) -> int:
    return int(mesh.shape[DATA_AXIS])


def data_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Splits axis `batch_axis` over the "data" axis (axes before it are replicated, e.g. seeds)."""
    return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_divisible(global_batch: int, mesh: Mesh, what: str = "global batch") -> None:
    n = num_data_shards(mesh)
    if global_batch % n:
        raise ValueError(f"{what} of {global_batch} examples is not divisible by the {n} devices of the mesh; "
                         f"choose a batch size that is a multiple of {n}")


def put_global(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host array that every process holds in full -> a global jax.Array laid out by `sharding`.

    Works on one host and on many (each process only copies the slices its own devices own).
    """
    array = np.asarray(array)
    if jax.process_count() == 1:
        return jax.device_put(array, sharding)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def shard_batch(batch: Mapping[str, Any], mesh: Mesh, batch_axis: int = 0) -> dict[str, jax.Array]:
    """Every array of `batch` split along `batch_axis` over the mesh; raises if the device count does not
    divide that axis."""
    out = {}
    sharding = data_sharding(mesh, batch_axis)
    for name, value in batch.items():
        value = np.asarray(value)
        check_divisible(value.shape[batch_axis], mesh, what=f"global batch ({name!r}, axis {batch_axis})")
        out[name] = put_global(value, sharding)
    return out


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every leaf of `tree` on every device of the mesh (frozen params, prompts, optimizer state)."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: put_global(np.asarray(x), sharding), tree)
