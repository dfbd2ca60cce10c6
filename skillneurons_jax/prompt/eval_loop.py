"""THE evaluation loop: every pass of a model over evaluation batches runs here (training's dev evaluation,
transfer, launch.evaluate and pruning through `scoring.evaluate`; predictivity's statistics passes, suppression,
patching, the explorer's record, pruning's TRAIN means, the probe's features and launch.activations' dump
directly).

    for placed, (counts, losses) in eval_loop.outputs(lambda b: step(prompts, params, b.device), batches, mesh):
        total.add(counts)                                    # a host accumulator (eval_loop.Sum), or
    eval_loop.run(step_fn, batches, mesh, accumulate)        # the same, handing each output to `accumulate`

`batches`: dicts of numpy arrays [B, ...] (data.batches.iterate, through stages.setup.model_batches /
sharded_batches), every batch of ONE global batch size B: the last one is padded with filler rows whose
`example_mask` is False, so the compiled per-batch function sees one shape per bucket length and compiles once
for every batch and every intervention mask passed as a traced argument. The loop checks that B never changes
(a changed B would silently compile again), places each batch on the mesh (split along its batch axis over
"data"), calls the caller's per-batch function and hands its output on; what the output means (counts, scores,
activation blocks for the device-side statistics) is the caller's business, and so is masking the filler rows:
the compiled function reads `example_mask` from the placed batch, host code reads `Placed.keep`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from skillneurons_jax import parallel

# Keys a batch may carry for the host only: "index" (row of the encoded split, -1 on filler rows) lets a caller
# put per-row results back in file order; the model never reads it, so it is not placed on the devices.
HOST_ONLY = ("index",)


@dataclasses.dataclass(frozen=True)
class Placed:
    """One batch in the loop.

    number: 0, 1, ... in iteration order (e.g. a reproducible per-batch noise key).
    host: the batch as given: numpy arrays [B, ...], every key (filler rows flagged by example_mask).
    device: the keys the model reads, split along axis 0 over the mesh's "data" axis (jax.Arrays); with
      mesh None, the host dict itself (the compiled function puts it on its default device).
    """
    number: int
    host: Mapping[str, np.ndarray]
    device: Mapping[str, Any]

    @property
    def keep(self) -> np.ndarray:
        """bool [B]: the real rows (False on the filler rows that pad the last batch to B)."""
        return np.asarray(self.host["example_mask"], bool)

    @property
    def size(self) -> int:
        """B, the global batch size."""
        return int(np.shape(self.host["example_mask"])[0])

    @property
    def examples(self) -> int:
        """The number of real rows."""
        return int(np.sum(self.host["example_mask"]))

    def real(self, values, axis: int = 0) -> np.ndarray:
        """values [..., B, ...] (B on `axis`) -> numpy with only the real rows kept on that axis."""
        return np.compress(self.keep, np.asarray(values), axis=axis)


def place(batches: Iterable[Mapping[str, np.ndarray]], mesh, *, host_only: Sequence[str] = HOST_ONLY
          ) -> Iterator[Placed]:
    """Each batch with its device copy (lazily: one batch on the devices at a time beyond what the caller keeps).

    mesh: parallel.make_mesh(), or None for a caller whose compiled function places its inputs itself.
    host_only: keys left off the device copy. Raises ValueError when a batch's size differs from the first's."""
    size = None
    for number, batch in enumerate(batches):
        b = int(np.shape(batch["example_mask"])[0])
        if size is None:
            size = b
        elif b != size:
            raise ValueError(f"evaluation batch {number} has {b} rows, the first had {size}: every batch must be "
                             "padded to one size (filler rows masked), or each new size compiles again")
        if mesh is None:
            device = batch
        else:
            device = parallel.shard_batch({k: v for k, v in batch.items() if k not in host_only}, mesh,
                                          batch_axis=0)
        yield Placed(number, batch, device)


def outputs(step: Callable[[Placed], Any], batches: Iterable[Mapping[str, np.ndarray]], mesh, *,
            host_only: Sequence[str] = HOST_ONLY) -> Iterator[tuple[Placed, Any]]:
    """(placed batch, step(placed)) per batch, in order; `step` calls the caller's compiled function(s) on
    `placed.device` (several calls per batch are fine: suppression scores every mask of one placed batch)."""
    for placed in place(batches, mesh, host_only=host_only):
        yield placed, step(placed)


def run(step: Callable[[Placed], Any], batches: Iterable[Mapping[str, np.ndarray]], mesh,
        accumulate: Callable[[Placed, Any], None], *, host_only: Sequence[str] = HOST_ONLY,
        empty: Optional[str] = None) -> int:
    """Calls accumulate(placed, step(placed)) for every batch; returns the number of batches.
    empty: the ValueError's message when there is no batch (None: zero batches are allowed)."""
    count = 0
    for placed, out in outputs(step, batches, mesh, host_only=host_only):
        accumulate(placed, out)
        count += 1
    if not count and empty is not None:
        raise ValueError(empty)
    return count


class Sum:
    """A host accumulator: the running sum, in batch order, of outputs converted with np.asarray(x, dtype)
    (dtype None: the output's own, e.g. int32 counts; np.float64 for float sums that must not lose bits)."""

    def __init__(self, dtype=None):
        self.dtype = dtype
        self.total: Optional[np.ndarray] = None

    def add(self, value) -> None:
        value = np.asarray(value, self.dtype)
        self.total = value if self.total is None else self.total + value


def gathered(values) -> np.ndarray:
    """A per-batch output that is split over the hosts of a multi-host program (rows on the "data" axis) ->
    numpy of the whole global batch (one process: just numpy)."""
    if jax.process_count() > 1:
        values = multihost_utils.process_allgather(values, tiled=True)
    return np.asarray(values)
