"""The whole study as one resumable plan: `python -m launch.reproduce --config=configs/default.py --workdir DIR`.

    [--data_dir DIR] [--dry_run] [--process_index i --process_count n] [--config.FIELD=value ...]

Builds the plan of skillneurons_jax/pipeline/stages.py (tune, transfer, predictivity, suppress per model and
task; the report last), then runs every stage that is not done, printing "stage i of N ... about M min left".
Ends with DIR/report/index.html and index.md (tables, figures, the config, and what is missing and why).

- Resumable: a stage is done when its outputs exist and match the sha256 recorded when it finished (and its inputs
  are unchanged); rerunning recomputes nothing that finished, and an interrupted tuning stage resumes from its last
  checkpoint. A corrupted or deleted output is detected by its hash and recomputed, with what depends on it.
- --dry_run lists every stage with its state (done / todo / skip and the reason) and estimated seconds, and the
  total, then the whole sweep's estimated time on this machine and on --accelerator (a named chip or its peak
  FLOP/s, x --accelerator_chips, at --accelerator_mfu; skillneurons_jax/accelerators.py); it loads no model and
  writes nothing.
- Absent data: the stages of a task whose files are absent are marked skip with the reason and the rest runs
  (see pipeline/stages.py); the report lists that task as missing. An unwritable workdir, an unknown task or a
  malformed config fail before any work.
- Several hosts (independent processes sharing one workdir on a shared file system): `--process_index i
  --process_count n` runs host i's share: the stage groups (`<model>/<clean task>`, which hold every dependency
  of their stages) dealt round-robin in sorted order (pipeline.plan.shard). Host 0 then waits (polling every
  --poll_s, at most --wait_s) until every other host's stages are done and builds the report; rerunning any host
  resumes its share. A host's devices all serve its own stages (data parallel over its local mesh). For one JAX
  program spanning all hosts instead (jax.distributed, --distributed), leave --process_count at 1: every host
  then walks the same plan and only process 0 writes.
- Common flags, when given, override the config: --data_dir, --seeds, --max_examples, --max_steps, --model_path
  (one model), --task (one task).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import time

from absl import flags

from launch import common

FLAGS = flags.FLAGS
common.define_config("default.py")
flags.DEFINE_bool("dry_run", False, "List the plan (stages, state, estimated seconds) and exit without work.")
flags.DEFINE_integer("process_index", 0, "This host's index among --process_count hosts sharing the workdir.")
flags.DEFINE_integer("process_count", 1, "Hosts sharing the plan (each runs whole stage groups).")
flags.DEFINE_float("wait_s", 7 * 24 * 3600.0, "Host 0: the longest wait for the other hosts before the report.")
flags.DEFINE_float("poll_s", 30.0, "Host 0: seconds between checks of the other hosts' progress.")
flags.DEFINE_string("accelerator", "h100-sxm", "--dry_run: also estimate the whole sweep on this accelerator: a name "
                    "of skillneurons_jax.accelerators.PEAKS or its peak FLOP/s per chip (e.g. 989e12).")
flags.DEFINE_integer("accelerator_chips", 1, "--dry_run: chips of --accelerator (data parallel).")
flags.DEFINE_float("accelerator_mfu", 0.4, "--dry_run: model-FLOP utilisation assumed on --accelerator.")


def check_workdir(workdir: pathlib.Path, *, create: bool = True) -> pathlib.Path:
    """The workdir exists (or is created) and takes files; otherwise a ValueError naming it."""
    workdir = pathlib.Path(workdir).expanduser()
    try:
        if not create:
            target = workdir if workdir.exists() else next(p for p in workdir.parents if p.exists())
            if not os.access(target, os.W_OK | os.X_OK):
                raise PermissionError(f"no write permission on {target}")
            return workdir
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / ".write_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"workdir {workdir} is not writable ({type(e).__name__}: {e}); choose another --workdir")
    return workdir


def apply_flag_overrides(settings) -> None:
    """Common flags given on the command line win over the config."""
    from skillneurons_jax.data import tasks
    if FLAGS["seeds"].present:
        settings.seeds = common.parse_seeds(FLAGS.seeds)
    if FLAGS["max_examples"].present:
        settings.max_examples = FLAGS.max_examples
    if FLAGS["max_steps"].present:
        settings.tune.max_steps = FLAGS.max_steps
    if FLAGS["eval_every"].present:
        settings.tune.eval_every = FLAGS.eval_every
    if FLAGS["model_path"].present:
        settings.models = [FLAGS.model_path]
    if FLAGS["task"].present:
        settings.tasks, settings.optional_tasks = [tasks.get_task(FLAGS.task).name], []


def format_plan(stages, workdir, printer=print) -> dict:
    """Prints the --dry_run table; returns the counts and the total estimate of what is still to do."""
    from skillneurons_jax.pipeline import plan
    rows = plan.describe(stages, workdir)
    counts = {k: sum(r["state"] == k for r in rows) for k in ("todo", "done", "skip")}
    todo_s = sum(r["cost_s"] for r in rows if r["state"] == "todo")
    printer(f"{'state':5}  {'est. s':>8}  stage")
    for r in rows:
        est = f"{r['cost_s']:8.0f}" if r["state"] != "skip" else f"{'-':>8}"
        printer(f"{r['state']:5}  {est}  {r['key']}" + (f"   ({r['reason']})" if r.get("reason") else ""))
    printer(f"{len(rows)} stages: {counts['todo']} todo, {counts['done']} done, {counts['skip']} skipped; "
            f"estimated time of the todo stages: {todo_s:.0f} s ({todo_s / 60:.1f} min)")
    return {**counts, "todo_s": todo_s}


def host_stages(stages, index: int, count: int):
    """(this host's non-report stages, the report stage or None). Runnable groups are dealt round-robin in
    sorted order; skipped stages (nothing to run) stay with host 0, which lists them."""
    from skillneurons_jax.pipeline import plan
    report = next((s for s in stages if s.kind == "report"), None)
    work = [s for s in stages if s.kind != "report" and not s.skip_reason]
    skipped = [s for s in stages if s.kind != "report" and s.skip_reason]
    if count == 1:
        return work + skipped, report
    return plan.shard(work, index, count) + (skipped if index == 0 else []), report


def wait_for_others(stages, workdir, wait_s: float, poll_s: float, printer=print) -> list[str]:
    """Host 0: polls until every non-report stage is done; returns the keys still not done at the deadline."""
    from skillneurons_jax.pipeline import plan
    work = [s for s in stages if s.kind != "report"]
    deadline = time.time() + wait_s
    while True:
        left = [s.key for s in plan.pending(work, workdir)]
        if not left or time.time() >= deadline:
            return left
        printer(f"[plan] waiting for {len(left)} stage(s) of the other hosts (e.g. {left[0]})")
        time.sleep(max(0.0, min(poll_s, deadline - time.time())))


def run_plan(settings, *, dry_run: bool = False, process_index: int = 0, process_count: int = 1,
             wait_s: float = 0.0, poll_s: float = 30.0, printer=print, session=None, hooks=None) -> dict:
    """Builds and runs (or lists) the plan for `settings` (pipeline.stages.Settings). Returns plan.run's summary
    plus "report" (the index.html path or None) and "stages" (the plan). Used by main and by the tests."""
    from skillneurons_jax.pipeline import plan, stages as st
    from skillneurons_jax.pipeline.session import Session

    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"--process_index {process_index} is not in [0, --process_count {process_count})")
    workdir = check_workdir(settings.workdir, create=not dry_run)
    settings.workdir = workdir
    session = session or Session()
    stages = st.build_plan(settings, session, hooks=hooks)
    tp = st.plan_tasks(settings)
    if tp.dropped:
        printer("[plan] optional tasks left out (no data): " + ", ".join(sorted(tp.dropped)))
    if dry_run:
        summary = format_plan(stages, workdir, printer)
        return {**summary, "stages": stages, "report": None}
    mine, report = host_stages(stages, process_index, process_count)
    runnable = [s for s in mine if not s.skip_reason]
    printer(f"[plan] {workdir}: {len(stages)} stages ({sum(bool(s.skip_reason) for s in stages)} skipped); this host "
            f"({process_index} of {process_count}) runs {len(runnable)} of them"
            + (" and the report" if report is not None and process_index == 0 else ""))
    _enable_compilation_cache(settings)
    with session.activate():
        if process_count == 1:
            res = plan.run(stages, workdir, printer=printer, continue_on_error=settings.continue_on_error)
        else:
            res = plan.run(mine, workdir, printer=printer, continue_on_error=settings.continue_on_error)
            if process_index == 0 and report is not None:
                left = wait_for_others(stages, workdir, wait_s, poll_s, printer)
                if left:
                    printer(f"[plan] {len(left)} stage(s) of other hosts are not done after {wait_s:.0f} s: "
                            f"{', '.join(left[:5])}...; the report shows what exists (rerun to complete it)")
                    report = dataclasses.replace(report, deps=[])
                    rep = plan.run([report], workdir, printer=printer, continue_on_error=True)
                else:
                    rep = plan.run(stages, workdir, printer=printer, continue_on_error=True)
                res["failed"].update(rep["failed"])
                res["ran"] += rep["ran"]
                res["executed"] += rep["executed"]
    index = workdir / "report" / "index.html"
    res["report"] = index if index.exists() else None
    res["stages"] = stages
    return res


def _enable_compilation_cache(settings) -> None:
    """XLA programs are cached under WORKDIR/.jax_cache: a rerun (or a stage with the same program) skips
    compilation. Off with --config.jax_cache=False."""
    if not settings.config.get("jax_cache", True):
        return
    import jax
    try:
        jax.config.update("jax_compilation_cache_dir", str(settings.workdir / ".jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    except Exception as e:  # noqa: BLE001 - a cache is an optimisation; never fail a run for it
        print(f"[plan] compilation cache not enabled: {e}", file=sys.stderr)


def main(argv):
    del argv
    from skillneurons_jax.pipeline import stages as st
    common.start_distributed()
    settings = st.Settings.from_config(FLAGS.config, FLAGS.workdir,
                                       FLAGS.data_dir if FLAGS["data_dir"].present else None)
    apply_flag_overrides(settings)
    t0 = time.time()
    res = run_plan(settings, dry_run=FLAGS.dry_run, process_index=FLAGS.process_index,
                   process_count=FLAGS.process_count, wait_s=FLAGS.wait_s, poll_s=FLAGS.poll_s,
                   printer=lambda msg: print(msg, flush=True))
    if FLAGS.dry_run:
        from skillneurons_jax import accelerators
        for line in accelerators.format_estimate(settings, FLAGS.accelerator, FLAGS.accelerator_chips,
                                                 FLAGS.accelerator_mfu):
            print(line, flush=True)
        return
    print(f"[plan] finished in {time.time() - t0:.0f} s: {res['ran']} stage(s) run, "
          f"{len(res.get('already_done', ())) + len(res['up_to_date'])} already done or up to date, "
          f"{len(res['skipped'])} skipped, {len(res['failed'])} failed", flush=True)
    for key, why in res["failed"].items():
        print(f"[plan] FAILED {key}: {why}", file=sys.stderr, flush=True)
    if res["report"] is not None:
        print(f"[plan] report: {res['report']}", flush=True)
    if res["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    common.run(main)
