"""Running the plan: one host's share, the wait for the others, the report; the body of launch.reproduce.

    result = run_plan(StudySettings.from_config(config, workdir), process_index=0, process_count=1)

See launch/reproduce.py for the behaviour (resumable, --dry_run, absent data skipped, several hosts).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import sys
import time
from collections import Counter
from typing import Optional

import jax

from skillneurons_jax import io, layout
from skillneurons_jax.analysis import headline
from skillneurons_jax.pipeline import build, hosts, plan, presence
from skillneurons_jax.pipeline.session import Session
from skillneurons_jax.pipeline.settings import StudySettings


def check_workdir(workdir: pathlib.Path, *, create: bool = True) -> pathlib.Path:
    """The workdir exists (or is created) and takes files; otherwise a ValueError naming it."""
    workdir = pathlib.Path(workdir).expanduser()
    if not create:
        return io.check_writable_folder(workdir, what="workdir")
    try:
        return io.make_writable_folder(workdir, what="workdir")
    except PermissionError as e:       # a user error (exit 2 in launch/): another --workdir
        raise ValueError(f"{e}; choose another --workdir") from None


def format_plan(stages, workdir, printer=print) -> dict:
    """Prints the --dry_run table; returns the counts and the total estimate of what is still to do."""
    rows = plan.describe(stages, workdir)
    counts = {k: sum(r["state"] == k for r in rows) for k in ("todo", "done", "skip")}
    todo_s = sum(r["cost_s"] for r in rows if r["state"] == "todo")
    printer(f"{'state':5}  {'est. s':>8}  stage")
    for r in rows:
        estimate = f"{r['cost_s']:8.0f}" if r["state"] != "skip" else f"{'-':>8}"
        printer(f"{r['state']:5}  {estimate}  {r['key']}" + (f"   ({r['reason']})" if r.get("reason") else ""))
    printer(f"{len(rows)} stages: {counts['todo']} todo, {counts['done']} done, {counts['skip']} skipped; "
            f"estimated time of the todo stages: {todo_s:.0f} s ({todo_s / 60:.1f} min)")
    return {**counts, "todo_s": todo_s}


def plan_summary(settings: StudySettings, task_plan, stages, workdir, mine=None) -> list[str]:
    """What the run will do, in two lines: models, tasks and seeds; stages to run by kind and the cost model's
    estimate of them (the progress lines then correct it by this run's measured stages). `stages`: the whole plan
    (what is pending is judged with every dependency present); `mine`: the keys this host runs (None: all)."""
    todo = [s for s in plan.pending([s for s in stages if not s.skip_reason], workdir)
            if mine is None or s.key in mine]
    kinds = Counter(s.kind for s in todo)
    estimate = sum(s.cost_s for s in todo)
    return [f"[plan] {', '.join(settings.models)} on {', '.join(task_plan.present) or 'no task'} "
            f"(seeds {','.join(str(s) for s in settings.seeds)}); logs (INFO and routine warnings): "
            f"{layout.logs_dir(workdir)}",
            f"[plan] {len(todo)} stage(s) to run: " + (", ".join(f"{k} {n}" for k, n in kinds.items()) or "none")
            + f"; about {estimate / 60:.1f} min by the cost model"]


def closing_lines(workdir) -> list[str]:
    """The console's last lines after a run: Table 1, every verdict sentence and the report's paths, read from
    WORKDIR/report/summary.json (analysis.headline; the report's own words). [] when there is no report."""
    report = layout.report_dir(workdir)
    try:
        summary = json.loads((report / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    lines = headline.console_lines(summary, report / "index.html")
    page = layout.explorer_page(workdir)
    return lines + ([f"Neuron explorer: {page}"] if page.exists() else [])


def host_stages(stages, index: int, count: int):
    """(this host's non-report stages, the report stage or None). Runnable groups are dealt round-robin in
    sorted order; skipped stages (nothing to run) stay with host 0, which lists them."""
    report = next((s for s in stages if s.kind == "report"), None)
    work = [s for s in stages if s.kind != "report" and not s.skip_reason]
    skipped = [s for s in stages if s.kind != "report" and s.skip_reason]
    if count == 1:
        return work + skipped, report
    return plan.shard(work, index, count) + (skipped if index == 0 else []), report


def wait_for_others(stages, workdir, wait_s: float, poll_s: float, printer=print,
                    watch: Optional[hosts.Watch] = None) -> list[str]:
    """Host 0: polls until every non-report stage is done; returns the keys still not done at the deadline.
    With `watch`, each poll also checks the other hosts' heartbeats (hosts.HostLost, hosts.HostsDisagree)."""
    work = [s for s in stages if s.kind != "report"]
    deadline = time.time() + wait_s
    while True:
        left = [s.key for s in plan.pending(work, workdir)]
        if not left or time.time() >= deadline:
            return left
        if watch is not None:
            watch.check()
        printer(f"[plan] waiting for {len(left)} stage(s) of the other hosts (e.g. {left[0]})")
        time.sleep(max(0.0, min(poll_s, deadline - time.time())))


def wait_for_stages(deps, stages, workdir, owners: dict, wait_s: float, poll_s: float, printer=print,
                    watch: Optional[hosts.Watch] = None) -> Optional[str]:
    """Waits (polling every poll_s, at most wait_s) until the stages `deps`, which other hosts run, are done;
    returns None then, else why they will not be: one failed (its failure record, plan.failure_path), their host
    (owners: {group: host}) finished its share without them, or the wait ran out. With `watch`, each poll checks
    the other hosts' heartbeats (hosts.HostLost)."""
    work = [s for s in stages if s.kind != "report"]
    deadline = time.time() + wait_s

    def not_done() -> list:
        """The awaited stages still pending in the whole plan: not done, or downstream of a stage that is (done
        on inputs that are about to be rewritten is not done)."""
        pending = {s.key for s in plan.pending(work, workdir)}
        return [d for d in deps if d.key in pending]

    while True:
        left = not_done()
        if not left:
            return None
        failed = [d for d in left if plan.failure_path(workdir, d.key).exists()]
        if failed:
            return f"dependency {failed[0].key} failed on host {owners.get(failed[0].group)}"
        finished = watch.check() if watch is not None else []
        # checked again only when an owner has finished: it may have written the stage just before its record
        gone = [d for d in left if owners.get(d.group) in finished]
        gone = [d for d in not_done() if d in gone] if gone else []
        if gone:
            return f"dependency {gone[0].key} (host {owners[gone[0].group]}) finished its share without it"
        if time.time() >= deadline:
            return f"dependency {left[0].key} of another host is not done after {wait_s:.0f} s"
        printer(f"[plan] waiting for {len(left)} stage(s) of another host (e.g. {left[0].key})")
        time.sleep(max(0.0, min(poll_s, deadline - time.time())))


@contextlib.contextmanager
def hold_study(workdir, *, process_index: int = 0, process_count: int = 1, dry_run: bool = False):
    """One study per workdir: holds WORKDIR/.study.lock (layout.study_lock_path, io.stage_lock: pid, host and start
    time; released however the block ends; a lock left by a dead process of this host is taken over) and yields
    the checked workdir; a second study is refused with io.LockHeld naming the holder before it writes anything.
    The hosts of one --process_count run (or of one jax.distributed program) share the workdir: host 0 (process
    0) holds it for all of them. A dry run holds nothing."""
    workdir = check_workdir(workdir, create=not dry_run)
    holder = not dry_run and process_index == 0 and jax.process_index() == 0
    with io.stage_lock(layout.study_lock_path(workdir), workdir,
                       f"a study of {process_count} host(s) (launch.reproduce)", enabled=holder):
        yield workdir


def run_plan(settings: StudySettings, *, dry_run: bool = False, process_index: int = 0,
             process_count: int = 1, wait_s: float = 0.0, poll_s: float = 30.0, printer=print,
             session: Optional[Session] = None, hooks=None, heartbeat_timeout_s: float = 100.0,
             study_held: bool = False) -> dict:
    """Builds and runs (or lists) the plan for `settings`. Returns plan.run's summary plus "report" (the
    index.html path or None) and "stages" (the plan). With process_count > 1 every host keeps a heartbeat record
    in the workdir (pipeline/hosts.py): hosts started with another count, config or data are an error, and host 0
    stops waiting for a host whose heartbeat is older than heartbeat_timeout_s (hosts.HostLost).
    The workdir is held (hold_study) from before the plan is built to its end; `study_held`: the caller holds it
    already (launch.reproduce, from before it writes its log there)."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"--process_index {process_index} is not in [0, --process_count {process_count})")
    workdir = check_workdir(settings.workdir, create=not dry_run)
    held = contextlib.nullcontext() if study_held else hold_study(
        workdir, process_index=process_index, process_count=process_count, dry_run=dry_run)
    with held:
        return _run_plan(settings, workdir, dry_run=dry_run, process_index=process_index,
                         process_count=process_count, wait_s=wait_s, poll_s=poll_s, printer=printer,
                         session=session, hooks=hooks, heartbeat_timeout_s=heartbeat_timeout_s)


def _run_plan(settings: StudySettings, workdir: pathlib.Path, *, dry_run: bool, process_index: int,
              process_count: int, wait_s: float, poll_s: float, printer, session: Optional[Session], hooks,
              heartbeat_timeout_s: float) -> dict:
    """The body of run_plan, run while the workdir is held (`workdir`: the checked one)."""
    settings = settings.replace(workdir=workdir)
    session = session or Session()
    stages = build.build_plan(settings, session, hooks=hooks)
    task_plan = presence.plan_tasks(settings)
    if task_plan.dropped:
        printer("[plan] optional tasks left out (no data): " + ", ".join(sorted(task_plan.dropped)))
    if dry_run:
        summary = format_plan(stages, workdir, printer)
        return {**summary, "stages": stages, "report": None}
    mine, report = host_stages(stages, process_index, process_count)
    runnable = [s for s in mine if not s.skip_reason]
    printer(f"[plan] {workdir}: {len(stages)} stages ({sum(bool(s.skip_reason) for s in stages)} skipped); this host "
            f"({process_index} of {process_count}) runs {len(runnable)} of them"
            + (" and the report" if report is not None and process_index == 0 else ""))
    # the whole plan, since a host's share alone lacks the stages of other hosts that the report depends on
    for line in plan_summary(settings, task_plan, stages, workdir,
                             {s.key for s in runnable + ([report] if report and process_index == 0 else [])}):
        printer(line)
    enable_compilation_cache(settings)
    if process_count == 1:
        result = plan.run(stages, workdir, printer=printer, continue_on_error=settings.continue_on_error)
    else:
        # the stages with their settings: hosts started with other command-line overrides (not in the config)
        # disagree here, before any work
        fingerprint = hosts.plan_fingerprint({**settings.config, "data_dir": None},
                                             [f"{s.key}#{plan.settings_sha256(s.settings)}" for s in stages])
        watch = hosts.Watch(workdir, process_index, process_count, fingerprint, heartbeat_timeout_s)
        heartbeat = hosts.Heartbeat(workdir, process_index, process_count, fingerprint,
                                    interval_s=max(0.2, min(poll_s, heartbeat_timeout_s / 4))).start()
        mine_keys = {s.key for s in mine}
        elsewhere = [s for s in stages if s.key not in mine_keys and s.kind != "report"]
        owners = plan.host_of_groups([s for s in stages if s.kind != "report" and not s.skip_reason],
                                     process_count)
        try:
            watch.check()                     # the hosts that started before this one
            result = plan.run(mine, workdir, printer=printer, continue_on_error=settings.continue_on_error,
                              elsewhere=elsewhere,
                              wait_for=lambda deps: wait_for_stages(deps, stages, workdir, owners, wait_s, poll_s,
                                                                    printer, watch=watch))
        except BaseException:
            heartbeat.stop()                  # not finished: host 0 reports this host lost after the timeout
            raise
        heartbeat.finish()
        if process_index == 0 and report is not None:
            left = wait_for_others(stages, workdir, wait_s, poll_s, printer, watch=watch)
            if left:
                printer(f"[plan] {len(left)} stage(s) of other hosts are not done after {wait_s:.0f} s: "
                        f"{', '.join(left[:5])}...; the report shows what exists (rerun to complete it)")
                report = dataclasses.replace(report, deps=[])
                report_result = plan.run([report], workdir, printer=printer, continue_on_error=True)
            else:
                report_result = plan.run(stages, workdir, printer=printer, continue_on_error=True)
            result["failed"].update(report_result["failed"])
            result["ran"] += report_result["ran"]
            result["executed"] += report_result["executed"]
    index = layout.report_dir(workdir) / "index.html"
    result["report"] = index if index.exists() else None
    result["stages"] = stages
    return result


def enable_compilation_cache(settings: StudySettings) -> None:
    """XLA programs are cached under WORKDIR/.jax_cache: a rerun (or a stage with the same program) skips
    compilation. Off with --config.jax_cache=False."""
    if not settings.jax_cache:
        return
    try:
        jax.config.update("jax_compilation_cache_dir", str(layout.jax_cache_dir(settings.workdir)))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    except Exception as e:  # noqa: BLE001 - a cache is an optimisation; never fail a run for it
        print(f"[plan] compilation cache not enabled: {e}", file=sys.stderr)
