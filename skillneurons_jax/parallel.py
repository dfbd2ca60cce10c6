"""Device mesh, shardings and multi-host start-up (data parallel over one mesh axis, "data").

The frozen model parameters and the prompts are replicated on every device; a global batch is split along its
batch axis over the "data" axis. XLA inserts the gradient all-reduce, so one compiled step serves 1 device,
4 simulated CPU devices, a GPU box or a TPU pod slice alike.

Multi-host: call `initialize_distributed(...)` before anything else touches jax devices. Every process builds
the same global batch deterministically (same seed, same order) and `put_global` hands each process's devices
their slice, so no process ever needs another's data.

Failure handling (measured with 2 processes x 2 CPU devices on loopback, jax 0.10, tests/test_multihost.py):
- a coordinator port already in use: process 0 checks the port before starting the service and raises a
  ValueError naming it (jax itself only logs "Failed to add port to server" and raises an opaque error);
- a process started with another --num_processes than the coordinator's: jax forms the job silently with the
  coordinator's count, so `initialize_distributed` compares the two and every host raises a ValueError;
- hosts whose config or data differ: `check_hosts_agree` gathers a digest per named field from every host and
  raises on every host, naming the fields and the hosts that differ;
- a host that dies mid-run: jax's coordination service notices the missing heartbeats after
  `heartbeat_timeout_s` and terminates every other process (SIGABRT, exit status 134) with "the JAX distributed
  service detected fatal errors ... The following tasks are unhealthy (stopped sending heartbeats)". That abort
  happens in a C++ thread, so no Python handler can reword it; `initialize_distributed` prints beforehand what a
  host's death will look like and after how long. A rerun of the same command on every host resumes (training
  from its last checkpoint, the plan from its finished stages).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import socket
import sys
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def split_address(address: str) -> tuple[str, int]:
    """"host:port" (or "[v6 host]:port") -> (host, port); a ValueError for anything else."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator address {address!r} is not host:port (e.g. 10.0.0.2:8476)")
    return host.strip("[]"), int(port)


def check_port_free(port: int) -> None:
    """Raises a ValueError when something on this machine already listens on `port`.

    The coordination service binds every interface ("[::]:port"), so the probe does too. SO_REUSEADDR lets the
    probe ignore sockets of an earlier run left in TIME_WAIT (which the service would ignore as well) while a
    listening socket still makes it fail.
    """
    for family, address in ((socket.AF_INET6, ("::", port)), (socket.AF_INET, ("0.0.0.0", port))):
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 on this machine
            continue
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise ValueError(f"coordinator port {port} is already in use on this machine (another program, "
                                     f"or a run of this job that is still alive); free it or pass another port "
                                     f"in --coordinator host:PORT to every host") from None
                if e.errno != errno.EADDRNOTAVAIL:
                    raise
            else:
                return  # bound on every interface: free


def initialize_distributed(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
                           process_id: Optional[int] = None, *, cpu_collectives: str = "gloo",
                           initialization_timeout_s: int = 300, heartbeat_timeout_s: int = 100,
                           printer=None) -> None:
    """Starts jax's multi-process runtime (one process per host) and checks that every host agrees on the job.

    coordinator: "host:port" of process 0; None lets jax discover it (TPU pods, SLURM, Open MPI).
    initialization_timeout_s: how long a process waits for all the others to connect before failing.
    heartbeat_timeout_s: after this long without heartbeats from a host, every other host is terminated
        (jax's own detection: see the module docstring), so a dead host never leaves the others hanging.
    On CPU the cross-process collectives need an implementation; gloo ships with jaxlib.
    Must run before the first use of `jax.devices()`.
    """
    printer = printer or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id {process_id} is outside 0..{num_processes - 1}")
    if initialization_timeout_s < 1 or heartbeat_timeout_s < 1:
        raise ValueError(f"the distributed timeouts must be >= 1 s, got initialization {initialization_timeout_s}, "
                         f"heartbeat {heartbeat_timeout_s}")
    if coordinator is not None:
        _, port = split_address(coordinator)
        if process_id == 0:
            check_port_free(port)
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=int(initialization_timeout_s),
                                   heartbeat_timeout_seconds=int(heartbeat_timeout_s))
    except Exception as e:  # noqa: BLE001 - jax raises its runtime error type; say what it means, keep the cause
        raise RuntimeError(f"jax.distributed.initialize failed for process {process_id} of {num_processes} "
                           f"(coordinator {coordinator}): {type(e).__name__}: {e}") from e
    printer(f"[parallel] process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} local "
            f"of {jax.device_count()} devices; if a host dies, the others stop within ~{heartbeat_timeout_s} s "
            f"with 'JAX distributed service detected fatal errors' (rerun every host to resume)")
    check_hosts_agree({"num_processes": str(num_processes)})
    if num_processes is not None and jax.process_count() != num_processes:
        raise ValueError(f"this process was started with num_processes={num_processes} but the coordinator "
                         f"{coordinator} formed a job of {jax.process_count()} processes; start every host with "
                         f"the same --num_processes")


def check_hosts_agree(fields: Mapping[str, Any], what: str = "") -> str:
    """Raises the same ValueError on every host when the hosts' `fields` differ; returns the common digest.

    fields: name -> a JSON-serialisable value or an already computed digest (e.g. `digest_files(...)`); every
    host must pass the same names. A digest (sha256) per field is gathered from every process with one
    collective (jax.experimental.multihost_utils.process_allgather), so this works wherever the job's
    collectives do; on one process it only returns the digest.
    """
    names = sorted(fields)
    rows = [_sha256_bytes(json.dumps(names))] + [_sha256_bytes(json.dumps(fields[k], sort_keys=True,
                                                                          default=str)) for k in names]
    mine = np.stack([np.frombuffer(r, np.uint8) for r in rows])          # [1 + fields, 32]
    overall = hashlib.sha256(mine.tobytes()).hexdigest()
    if jax.process_count() == 1:
        return overall
    gathered = np.asarray(multihost_utils.process_allgather(mine))        # [processes, 1 + fields, 32]
    if gathered.ndim != 3 or gathered.shape[1:] != mine.shape:
        raise ValueError(f"hosts disagree{what and ' on ' + what}: they hash different numbers of fields "
                         f"({gathered.shape}); run the same code version on every host")
    differ = np.any(gathered != gathered[:1], axis=(0, 2))                # [1 + fields]
    if differ[0]:
        raise ValueError(f"hosts disagree{what and ' on ' + what}: they hash different field names; run the same "
                         f"code version on every host")
    bad = [names[i - 1] for i in np.flatnonzero(differ)]
    if bad:
        groups = {}
        for p in range(gathered.shape[0]):
            key = gathered[p][[names.index(b) + 1 for b in bad]].tobytes()
            groups.setdefault(key, []).append(p)
        raise ValueError(f"hosts disagree{what and ' on ' + what}: {', '.join(bad)} differ between hosts (groups "
                         f"of processes with equal values: {sorted(groups.values())}; this is process "
                         f"{jax.process_index()}); give every host the same config and the same data")
    return overall


def _sha256_bytes(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def digest_files(root: Optional[os.PathLike | str]) -> Optional[str]:
    """sha256 over every regular file under `root` (relative path, size and content, in sorted order); None
    when root is None. A data folder is read once at start-up (the study's folder: ~23 MB, well under a
    second); hidden files and folders (".cache", ".git") are skipped."""
    if root is None:
        return None
    root = pathlib.Path(root)
    if not root.exists():
        return f"absent:{root.name}"
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def config_digest(config: Any) -> Optional[str]:
    """sha256 of a config (ml_collections ConfigDict, dict, or None) as sorted JSON."""
    if config is None:
        return None
    as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return hashlib.sha256(json.dumps(as_dict, sort_keys=True, default=str).encode()).hexdigest()


# Flags that may differ between the hosts of one job (each host's own address, timeouts and local paths).
HOST_SPECIFIC_FLAGS = frozenset({"distributed", "coordinator", "num_processes", "process_id", "distributed_timeout_s",
                                 "heartbeat_timeout_s", "workdir", "data_dir", "model_path", "process_index"})


def run_fingerprint(flag_values: Mapping[str, Any]) -> dict[str, Any]:
    """What must be equal on every host of one job, from a launch script's flag values (name -> value).

    The config (a ConfigDict) by its digest, the data folder by its contents (`digest_files`), a local model
    folder by its file names, sizes and config.json, every other flag by its value; the flags of
    HOST_SPECIFIC_FLAGS are left out (each host's own id, address, timeouts and paths).
    """
    out: dict[str, Any] = {}
    for name, value in flag_values.items():
        if name in HOST_SPECIFIC_FLAGS:
            continue
        out[name] = config_digest(value) if hasattr(value, "to_dict") else value
    if flag_values.get("data_dir"):
        out["data"] = digest_files(flag_values["data_dir"])
    if flag_values.get("model_path"):
        out["model"] = _model_digest(flag_values["model_path"])
    return out


def _model_digest(model_path: str) -> str:
    """A local checkpoint folder: names, sizes and config.json (weights are too large to read at start-up);
    anything else (a hub name, `offline:...`): the string."""
    folder = pathlib.Path(model_path)
    if not folder.is_dir():
        return str(model_path)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
    if (folder / "config.json").exists():
        digest.update((folder / "config.json").read_bytes())
    return digest.hexdigest()


# XLA options of the compiled prompt-tuning step on the CPU backend. Without YNNPACK fusions XLA's CPU dots go to
# its Eigen kernels, which measured 11-15 % faster on MiniLM's backward (hidden 384; 2-core AMD EPYC, fp32) and
# within noise on a RoBERTa-base-shaped step; the forward passes gained nothing, so they keep XLA's default
# (docs/PERFORMANCE.md). Other backends ignore xla_cpu_* options; none are passed there.
CPU_TRAIN_STEP_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def train_step_compiler_options(mesh: Mesh) -> Optional[dict]:
    """compiler_options for jax.jit of a training step on `mesh`'s devices (None: XLA's defaults)."""
    platforms = {d.platform for d in mesh.devices.flat}
    return dict(CPU_TRAIN_STEP_OPTIONS) if platforms == {"cpu"} else None


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
