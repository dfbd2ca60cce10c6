"""Per-seed orbax checkpoints of the latest training state, for resumption after a crash or a kill.

Seeds train together, but each seed keeps its own folder (`.../seed_<s>/state/`), so a seed's outputs stay in one
place and a later run may resume any subset of seeds. Because the seeds are saved one after another, a kill can
fall between two of them; `latest_common_step` therefore picks the newest step that every seed has, and at least
two checkpoints are kept per seed so that one always exists.

A checkpoint is a flat dict of arrays (optimizer-state leaves are stored by position and put back into the
caller's tree structure), which keeps orbax away from optax's named tuples and empty states.
"""
from __future__ import annotations

import pathlib
from typing import Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from skillneurons_jax import layout

STATE_DIR = layout.STATE_DIR
MIN_KEEP = 2


def _flatten(state: dict) -> dict:
    """{"opt_state": pytree, other: array} -> flat dict of numpy arrays."""
    flat = {}
    for name, value in state.items():
        if name == "opt_state":
            for i, leaf in enumerate(jax.tree.leaves(value)):
                flat[f"opt_state_{i:04d}"] = np.asarray(leaf)
        else:
            flat[name] = np.asarray(value)
    return flat


def _unflatten(flat: dict, template: dict) -> dict:
    out = {}
    for name, value in template.items():
        if name == "opt_state":
            leaves, treedef = jax.tree.flatten(value)
            out[name] = jax.tree.unflatten(treedef, [flat[f"opt_state_{i:04d}"] for i in range(len(leaves))])
        else:
            out[name] = flat[name]
    return out


def _abstract(flat: dict) -> dict:
    return {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for k, v in flat.items()}


class SeedCheckpoints:
    """One orbax CheckpointManager per seed folder; saves are synchronous so that a kill never leaves a
    checkpoint that looks complete but is not (orbax writes to a temporary folder and renames it)."""

    def __init__(self, seed_dirs: Sequence[pathlib.Path], keep: int = MIN_KEEP):
        if keep < MIN_KEEP:
            raise ValueError(f"keep at least {MIN_KEEP} checkpoints per seed (got {keep}): seeds are saved one "
                             "after another and resumption needs a step that every seed has")
        self.dirs = [pathlib.Path(d).resolve() / STATE_DIR for d in seed_dirs]
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=True)
        self.managers = [ocp.CheckpointManager(d, options=options) for d in self.dirs]

    def steps(self) -> list[list[int]]:
        return [sorted(m.all_steps()) for m in self.managers]

    def latest_common_step(self) -> Optional[int]:
        common = None
        for steps in self.steps():
            common = set(steps) if common is None else common & set(steps)
        return max(common) if common else None

    def save(self, step: int, states: Sequence[dict]) -> None:
        """states: one dict per seed (same order as the folders).

        A seed may already hold `step`: a run killed between two seeds' saves left it there, and the rerun
        resumed from the latest step every seed has, so it reaches this step again. That stale copy is replaced
        (orbax refuses to save over an existing step)."""
        for manager, state in zip(self.managers, states):
            if int(step) in manager.all_steps():
                manager.delete(int(step))
            manager.save(int(step), args=ocp.args.StandardSave(_flatten(state)), force=True)
            manager.wait_until_finished()

    def restore(self, step: int, templates: Sequence[dict]) -> list[dict]:
        out = []
        for manager, template, folder in zip(self.managers, templates, self.dirs):
            flat_template = _flatten(template)
            try:
                flat = manager.restore(int(step), args=ocp.args.StandardRestore(_abstract(flat_template)))
            except Exception as e:  # orbax raises several types; name the folder and the step
                raise ValueError(f"{folder}: cannot restore checkpoint of step {step} ({type(e).__name__}: {e}); "
                                 "it was written by a different configuration or is damaged") from None
            out.append(_unflatten({k: np.asarray(v) for k, v in flat.items()}, template))
        return out

    def close(self) -> None:
        for m in self.managers:
            m.close()


def has_checkpoint(seed_dir: pathlib.Path) -> bool:
    d = pathlib.Path(seed_dir) / STATE_DIR
    return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())
