"""A plan of stages with content-hashed completion records.

A stage is done when every output it names exists AND matches the sha256 recorded when the stage finished.
A missing, truncated or edited output therefore counts as not done and is recomputed; finished stages are
never rerun. Records live in `WORKDIR/.stages/<key>.json` and are written atomically after the outputs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib
import time
from typing import Callable, Optional, Sequence

from skillneurons_jax import io

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Stage:
    key: str                              # unique, file-name safe: "tune/minilm/sst2"
    kind: str                             # "tune" | "evaluate" | "predictivity" | "suppress" | "report"
    outputs: Sequence[pathlib.Path]       # files whose presence and hash mark the stage done
    run: Callable[[], None]               # does the work; writes the outputs atomically
    deps: Sequence[str] = ()              # keys of stages that must finish first
    cost_s: float = 60.0                  # estimated seconds on this machine (for --dry_run and ETA)
    group: str = ""                       # stages of one group run on the same host (model/task locality)
    skip_reason: Optional[str] = None     # set when the stage cannot run here (e.g. data absent)


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _record_path(workdir: pathlib.Path, key: str) -> pathlib.Path:
    return workdir / ".stages" / (key.replace("/", "__") + ".json")


def is_done(stage: Stage, workdir: pathlib.Path) -> bool:
    rec_path = _record_path(workdir, stage.key)
    if not rec_path.exists():
        return False
    try:
        rec = json.loads(rec_path.read_text())
        hashes = rec["sha256"]
    except (json.JSONDecodeError, KeyError, OSError):
        log.warning("stage %s: completion record %s is unreadable; recomputing", stage.key, rec_path)
        return False
    for out in stage.outputs:
        out = pathlib.Path(out)
        if not out.exists():
            log.warning("stage %s: output %s is missing; recomputing", stage.key, out)
            return False
        if hashes.get(str(out)) != _sha256(out):
            log.warning("stage %s: output %s does not match its recorded hash (corrupted or edited); "
                        "recomputing", stage.key, out)
            return False
    return True


def mark_done(stage: Stage, workdir: pathlib.Path, seconds: float) -> None:
    missing = [str(o) for o in stage.outputs if not pathlib.Path(o).exists()]
    if missing:
        raise RuntimeError(f"stage {stage.key} finished without writing {missing}")
    io.atomic_write_json(_record_path(workdir, stage.key), {
        "key": stage.key, "kind": stage.kind, "seconds": round(seconds, 3),
        "sha256": {str(o): _sha256(pathlib.Path(o)) for o in stage.outputs}})


def order(stages: Sequence[Stage]) -> list[Stage]:
    """Topological order (stable): a stage after all its dependencies. Unknown deps are an error."""
    by_key = {s.key: s for s in stages}
    if len(by_key) != len(stages):
        raise ValueError("duplicate stage keys in plan")
    out, seen, busy = [], set(), set()

    def visit(s: Stage):
        if s.key in seen:
            return
        if s.key in busy:
            raise ValueError(f"dependency cycle through {s.key}")
        busy.add(s.key)
        for d in s.deps:
            if d not in by_key:
                raise ValueError(f"stage {s.key} depends on unknown stage {d}")
            visit(by_key[d])
        busy.discard(s.key)
        seen.add(s.key)
        out.append(s)

    for s in stages:
        visit(s)
    return out


def shard(stages: Sequence[Stage], index: int, count: int) -> list[Stage]:
    """The stages this host runs: whole groups, dealt round-robin over hosts (dependencies stay in a group)."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"host index {index} is not in [0, {count})")
    groups = sorted({s.group for s in stages})
    mine = {g for i, g in enumerate(groups) if i % count == index}
    return [s for s in stages if s.group in mine]


def describe(stages: Sequence[Stage], workdir: pathlib.Path) -> list[dict]:
    rows = []
    for s in order(stages):
        state = "skip" if s.skip_reason else ("done" if is_done(s, workdir) else "todo")
        rows.append({"key": s.key, "kind": s.kind, "state": state, "cost_s": s.cost_s,
                     **({"reason": s.skip_reason} if s.skip_reason else {})})
    return rows


def run(stages: Sequence[Stage], workdir: pathlib.Path, *, printer=print,
        continue_on_error: bool = False) -> dict:
    """Runs every stage not yet done, in dependency order, printing 'stage i of N' and the time left."""
    workdir = pathlib.Path(workdir)
    todo = [s for s in order(stages) if not s.skip_reason and not is_done(s, workdir)]
    skipped = [s for s in stages if s.skip_reason]
    for s in skipped:
        printer(f"[plan] skip {s.key}: {s.skip_reason}")
    failed: dict[str, str] = {}
    remaining = sum(s.cost_s for s in todo)
    spent_est, spent_real = 0.0, 0.0
    for i, s in enumerate(todo, 1):
        blocked = [d for d in s.deps if d in failed or any(d == k.key for k in skipped)]
        if blocked:
            failed[s.key] = f"dependency {blocked[0]} did not finish"
            printer(f"[plan] {i}/{len(todo)} {s.key}: not run ({failed[s.key]})")
            continue
        # Scale the remaining estimate by how the real times compare with the estimates so far.
        scale = spent_real / spent_est if spent_est > 0 else 1.0
        printer(f"[plan] stage {i} of {len(todo)}: {s.key}  (about {remaining * scale / 60:.1f} min left)")
        t0 = time.time()
        try:
            s.run()
            mark_done(s, workdir, time.time() - t0)
        except Exception as e:  # noqa: BLE001 - a sweep goes on with the other stages when asked to
            if not continue_on_error:
                raise
            failed[s.key] = f"{type(e).__name__}: {e}"
            log.exception("stage %s failed", s.key)
            printer(f"[plan] stage {s.key} FAILED: {failed[s.key]}")
        dt = time.time() - t0
        spent_real += dt
        spent_est += s.cost_s
        remaining -= s.cost_s
    return {"ran": len(todo) - len(failed), "failed": failed, "skipped": {s.key: s.skip_reason for s in skipped}}
