"""A plan of stages with content-hashed completion records.

A stage is done when every output it names exists AND matches the sha256 recorded when the stage finished,
AND its inputs (the outputs of the stages it depends on, plus any files in `Stage.inputs`) still hash to what
they were when it ran, AND its settings (`Stage.settings`: what it computes with besides its inputs, e.g. the
resolved tuning config, the seeds, the suppression levels) are the ones it ran with. A missing, truncated or edited
output, or a changed setting (a config edited between two runs in one workdir), therefore counts as not done and is
recomputed, and so, as needed, is everything downstream whose inputs then change; finished stages whose inputs and
settings are unchanged are never rerun. Records live in `WORKDIR/.stages/<key>.json` and are written atomically after the outputs, so an
interrupted stage leaves no record and simply runs again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib
import time
from typing import Callable, Optional, Sequence

from skillneurons_jax import io, layout

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
    inputs: Sequence[pathlib.Path] = ()   # files read besides the outputs of `deps` (hashed like those)
    soft_deps: bool = False               # run even when a dependency failed or was skipped (e.g. the report)
    settings: Optional[dict] = None       # what the outputs depend on besides the inputs (JSON-able); None: none


_sha256 = io.sha256_of


def settings_sha256(settings) -> Optional[str]:
    """sha256 of a stage's settings in canonical JSON (sorted keys; dataclasses as dicts); None for None."""
    if settings is None:
        return None
    text = json.dumps(io.as_written(_plain_settings(settings)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain_settings(value):
    """Dataclasses (options objects) as dicts, recursively, so that a fingerprint reads their fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain_settings(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain_settings(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_settings(v) for v in value]
    return value


def _changed_settings(recorded, now) -> list[str]:
    """Top-level keys whose values differ between a record's settings and the stage's (for the warning)."""
    if not isinstance(recorded, dict) or not isinstance(now, dict):
        return ["(all)"]
    return sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))


def _record_path(workdir: pathlib.Path, key: str) -> pathlib.Path:
    return layout.stage_record_path(workdir, key)


def failure_path(workdir: pathlib.Path, key: str) -> pathlib.Path:
    return layout.stage_failure_path(workdir, key)


def _record_failure(workdir: pathlib.Path, key: str, reason: str) -> None:
    """The failure record another host's wait for this stage reads (runner.wait_for_stages)."""
    io.atomic_write_text(failure_path(workdir, key), reason + "\n")


def _name(path, workdir: pathlib.Path) -> str:
    """How a file is named in a record: relative to the workdir when inside it, so a copied or moved workdir
    keeps its records."""
    path = pathlib.Path(path)
    try:
        return str(path.absolute().relative_to(pathlib.Path(workdir).absolute()))
    except ValueError:
        return str(path)


def _input_hashes(inputs: Sequence[pathlib.Path], workdir: pathlib.Path) -> dict[str, Optional[str]]:
    """sha256 of each input file; None for one that does not exist (a failed or skipped dependency)."""
    return {_name(p, workdir): (_sha256(pathlib.Path(p)) if pathlib.Path(p).exists() else None) for p in inputs}


def stage_inputs(stage: Stage, by_key: dict[str, Stage]) -> list[pathlib.Path]:
    """The files a stage reads: its own `inputs` plus every output of the stages it depends on."""
    out = [pathlib.Path(p) for p in stage.inputs]
    for d in stage.deps:
        if d in by_key:
            out += [pathlib.Path(p) for p in by_key[d].outputs]
    return list(dict.fromkeys(out))


def is_done(stage: Stage, workdir: pathlib.Path, inputs: Optional[Sequence[pathlib.Path]] = None) -> bool:
    """Outputs present and unchanged since the stage finished; with `inputs`, those unchanged as well."""
    rec_path = _record_path(workdir, stage.key)
    if not rec_path.exists():
        return False
    try:
        rec = json.loads(rec_path.read_text())
        hashes = rec["sha256"]
    except (json.JSONDecodeError, KeyError, OSError):
        log.warning("stage %s: completion record %s is unreadable; recomputing", stage.key, rec_path)
        return False
    if stage.settings is not None and rec.get("settings_sha256") != settings_sha256(stage.settings):
        if "settings_sha256" not in rec:
            log.warning("stage %s: its record predates settings fingerprints, so what it ran with is unknown; "
                        "recomputing", stage.key)
        else:
            changed = _changed_settings(rec.get("settings"), io.as_written(_plain_settings(stage.settings)))
            log.warning("stage %s: settings changed since it ran (%s); recomputing", stage.key, ", ".join(changed))
        return False
    if inputs:
        recorded = rec.get("inputs_sha256") or {}
        now = _input_hashes(inputs, workdir)
        changed = [p for p, h in now.items() if recorded.get(p) != h]
        if changed:
            log.warning("stage %s: input %s changed since the stage ran; recomputing", stage.key, changed[0])
            return False
    for out in stage.outputs:
        out = pathlib.Path(out)
        if not out.exists():
            log.warning("stage %s: output %s is missing; recomputing", stage.key, out)
            return False
        if hashes.get(_name(out, workdir)) != _sha256(out):
            log.warning("stage %s: output %s does not match its recorded hash (corrupted or edited); "
                        "recomputing", stage.key, out)
            return False
    return True


def _previous_record(workdir: pathlib.Path, key: str) -> Optional[dict]:
    """The stage's completion record as it stands, None when absent or unreadable."""
    try:
        return json.loads(_record_path(workdir, key).read_text())
    except (OSError, ValueError):
        return None


def mark_done(stage: Stage, workdir: pathlib.Path, seconds: float,
              inputs: Optional[Sequence[pathlib.Path]] = None) -> None:
    """Writes the stage's completion record. `seconds`: this run's wall time. When the outputs are byte for byte
    those of the previous record (a rerun that found its work done, e.g. after a settings record changed), the
    record keeps the seconds that computed them and adds this run's as `rerun_seconds`, so that a document's sum
    of stage times stays the study's cost."""
    missing = [str(o) for o in stage.outputs if not pathlib.Path(o).exists()]
    if missing:
        raise RuntimeError(f"stage {stage.key} finished without writing {missing}")
    hashes = {_name(o, workdir): _sha256(pathlib.Path(o)) for o in stage.outputs}
    timing = {"seconds": round(seconds, 3)}
    earlier = _previous_record(workdir, stage.key)
    if earlier and earlier.get("sha256") == hashes and isinstance(earlier.get("seconds"), (int, float)):
        timing = {"seconds": earlier["seconds"], "rerun_seconds": round(seconds, 3)}
    io.atomic_write_json(_record_path(workdir, stage.key), {
        "key": stage.key, "kind": stage.kind, **timing,
        "sha256": hashes,
        "inputs_sha256": _input_hashes(inputs or (), workdir),
        **({} if stage.settings is None else {"settings_sha256": settings_sha256(stage.settings),
                                              "settings": io.as_written(_plain_settings(stage.settings))})})


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


def host_of_groups(stages: Sequence[Stage], count: int) -> dict[str, int]:
    """{group: the host that runs it}: groups dealt round-robin over `count` hosts in sorted order."""
    if count < 1:
        raise ValueError(f"host count {count} is not >= 1")
    return {g: i % count for i, g in enumerate(sorted({s.group for s in stages}))}


def shard(stages: Sequence[Stage], index: int, count: int) -> list[Stage]:
    """The stages this host runs: whole groups, dealt round-robin over hosts (host_of_groups). A group holds its
    task's stages; a stage may depend on another group's (plan.run's `elsewhere`: it waits for them)."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"host index {index} is not in [0, {count})")
    hosts = host_of_groups(stages, count)
    return [s for s in stages if hosts[s.group] == index]


def describe(stages: Sequence[Stage], workdir: pathlib.Path) -> list[dict]:
    """One row per stage in run order: key, kind, state ("done" | "todo" | "skip"), cost_s (and the skip reason).
    A stage downstream of one that is todo is todo as well (its inputs are about to change)."""
    rows = []
    by_key = {s.key: s for s in stages}
    todo: set[str] = set()
    for s in order(stages):
        if s.skip_reason:
            state = "skip"
        elif any(d in todo for d in s.deps) or not is_done(s, workdir, stage_inputs(s, by_key)):
            state = "todo"
            todo.add(s.key)
        else:
            state = "done"
        rows.append({"key": s.key, "kind": s.kind, "state": state, "cost_s": s.cost_s,
                     **({"reason": s.skip_reason} if s.skip_reason else {})})
    return rows


def order_within(stages: Sequence[Stage], elsewhere: Sequence[Stage] = ()) -> list[Stage]:
    """`stages` in the topological order of the whole plan (`stages` plus `elsewhere`, the stages other hosts
    run): a host that waits for a dependency of another host's therefore never holds back a stage of its own
    that the other host's stage needs (the earliest unfinished stage of the plan can always run)."""
    mine = {s.key for s in stages}
    return [s for s in order([*stages, *elsewhere]) if s.key in mine]


def pending(stages: Sequence[Stage], workdir: pathlib.Path, elsewhere: Sequence[Stage] = ()) -> list[Stage]:
    """The stages a run would execute, in order: those not done, and everything downstream of them. The stages of
    `elsewhere` (other hosts') count like this host's: one downstream of another host's pending stage is pending
    too (that host is about to rewrite its inputs), though only `stages` are returned."""
    mine = {s.key for s in stages}
    by_key = {s.key: s for s in [*elsewhere, *stages]}
    out, keys = [], set()
    for s in order([*stages, *(e for e in elsewhere if e.key not in mine)]):
        if s.skip_reason:
            continue
        if any(d in keys for d in s.deps) or not is_done(s, workdir, stage_inputs(s, by_key)):
            keys.add(s.key)
            if s.key in mine:
                out.append(s)
    return out


class EtaClock:
    """The time left, from this run's own measurements once it has any: each stage kind's measured seconds over
    its estimated ones scales that kind's remaining estimates (a kind not measured yet takes the ratio of all
    measured stages; before any, the cost model alone). Kinds differ (training vs evaluation passes), so one ratio
    for all, set by the first stage, made the estimate jump."""

    def __init__(self):
        self.real: dict[str, float] = {}
        self.estimated: dict[str, float] = {}

    def measured(self, stage: "Stage", seconds: float) -> None:
        # A stage done in a twentieth of its estimate copied its results or found its work done (reuse_from, a
        # finished run): it says nothing about this host's speed, and counted it would shrink every later estimate.
        if stage.cost_s > 0 and seconds >= 0.05 * stage.cost_s:
            self.real[stage.kind] = self.real.get(stage.kind, 0.0) + seconds
            self.estimated[stage.kind] = self.estimated.get(stage.kind, 0.0) + stage.cost_s

    def ratio(self, kind: str) -> float | None:
        if self.estimated.get(kind):
            return self.real[kind] / self.estimated[kind]
        total = sum(self.estimated.values())
        return sum(self.real.values()) / total if total else None

    def seconds_left(self, stages: Sequence["Stage"]) -> float:
        return sum(s.cost_s * (self.ratio(s.kind) or 1.0) for s in stages)

    def describe(self, stages: Sequence["Stage"]) -> str:
        basis = "measured in this run" if self.estimated else "cost model"
        return f"about {self.seconds_left(stages) / 60:.1f} min left, {basis}"


def run(stages: Sequence[Stage], workdir: pathlib.Path, *, printer=print,
        continue_on_error: bool = False, elsewhere: Sequence[Stage] = (),
        wait_for: Optional[Callable[[Sequence[Stage]], Optional[str]]] = None) -> dict:
    """Runs every stage not yet done, in dependency order, printing 'stage i of N' and the time left.

    A stage that was only pending because something upstream had to run is checked again when its turn comes:
    if its inputs came back byte-identical it is up to date and is not run. `elsewhere`: the plan's stages that
    other hosts run; a stage depending on some of them first calls `wait_for(those stages)`, which returns when
    they are done (None) or says why they will not be (the stage then fails like one whose dependency failed).
    Returns {"ran": count run, "executed": [keys run], "failed": {key: reason}, "skipped": {key: reason},
    "up_to_date": [keys], "already_done": [keys found done before the run started]}."""
    workdir = pathlib.Path(workdir)
    by_key = {s.key: s for s in [*elsewhere, *stages]}
    other_keys = {s.key for s in elsewhere} - {s.key for s in stages}
    todo = pending(stages, workdir, elsewhere)
    todo_keys = {s.key for s in todo}
    already_done = [s.key for s in order_within(stages, elsewhere)
                    if not s.skip_reason and s.key not in todo_keys]
    skipped = {s.key: s.skip_reason for s in stages if s.skip_reason}
    for key, reason in skipped.items():
        printer(f"[plan] skip {key}: {reason}")
    failed: dict[str, str] = {}
    ran: list[str] = []
    fresh: list[str] = []
    clock = EtaClock()
    t_start = time.time()
    for i, s in enumerate(todo, 1):
        inputs = stage_inputs(s, by_key)
        left = todo[i - 1:]
        # a dependency skipped on another host (every skipped stage sits with host 0) blocks as it does here
        blocked = [] if s.soft_deps else [d for d in s.deps if d in failed or d in skipped
                                          or (d in by_key and by_key[d].skip_reason)]
        external = [by_key[d] for d in s.deps if d in other_keys]
        if not blocked and external:
            if wait_for is None:
                raise ValueError(f"stage {s.key} depends on {external[0].key}, which another host runs, and this "
                                 "run has no way to wait for it")
            reason = wait_for(external)
            if reason is not None and not s.soft_deps:
                failed[s.key] = reason
                _record_failure(workdir, s.key, reason)
                printer(f"[plan] {i}/{len(todo)} {s.key}: not run ({reason})")
                continue
        if blocked:
            failed[s.key] = f"dependency {blocked[0]} did not finish"
            _record_failure(workdir, s.key, failed[s.key])
            printer(f"[plan] {i}/{len(todo)} {s.key}: not run ({failed[s.key]})")
            continue
        if is_done(s, workdir, inputs):
            fresh.append(s.key)
            printer(f"[plan] stage {i} of {len(todo)}: {s.key} is up to date (its inputs did not change)")
            continue
        printer(f"[plan] stage {i} of {len(todo)}: {s.key}  ({clock.describe(left)}; "
                f"{(time.time() - t_start) / 60:.1f} min so far)")
        t0 = time.time()
        failure_path(workdir, s.key).unlink(missing_ok=True)      # a retry: the hosts waiting for it wait again
        try:
            s.run()
            mark_done(s, workdir, time.time() - t0, inputs)
            ran.append(s.key)
        except Exception as e:  # noqa: BLE001 - a sweep goes on with the other stages when asked to
            _record_failure(workdir, s.key, f"{type(e).__name__}: {e}")
            if not continue_on_error:
                raise
            failed[s.key] = f"{type(e).__name__}: {e}"
            log.exception("stage %s failed", s.key)
            printer(f"[plan] stage {s.key} FAILED: {failed[s.key]}")
        clock.measured(s, time.time() - t0)
    return {"ran": len(ran), "executed": ran, "failed": failed, "skipped": skipped, "up_to_date": fresh,
            "already_done": already_done}
