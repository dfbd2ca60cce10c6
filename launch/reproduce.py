"""The whole study as one resumable plan: `python -m launch.reproduce --config=configs/default.py --workdir DIR`.

    [--data_dir DIR] [--dry_run] [--process_index i --process_count n] [--config.FIELD=value ...]

Builds the plan of skillneurons_jax/pipeline/build.py (tune, transfer, predictivity, suppress per model and
task; the report last), then runs every stage that is not done (skillneurons_jax/pipeline/runner.py), printing
"stage i of N ... about M min left".
Ends with DIR/report/index.html and index.md (tables, figures, the config, and what is missing and why).

- Resumable: a stage is done when its outputs exist and match the sha256 recorded when it finished (and its inputs
  are unchanged); rerunning recomputes nothing that finished, and an interrupted tuning stage resumes from its last
  checkpoint. A corrupted or deleted output is detected by its hash and recomputed, with what depends on it.
- --dry_run lists every stage with its state (done / todo / skip and the reason) and estimated seconds, and the
  total, then the whole sweep's estimated time on this machine and on --accelerator (a named chip or its peak
  FLOP/s, x --accelerator_chips, at --accelerator_mfu; skillneurons_jax/accelerators.py); it loads no model and
  writes nothing.
- Absent data: the stages of a task whose files are absent are marked skip with the reason and the rest runs
  (see pipeline/presence.py); the report lists that task as missing. An unwritable workdir, an unknown task or a
  malformed config fail before any work.
- Several hosts (independent processes sharing one workdir on a shared file system): `--process_index i
  --process_count n` runs host i's share: the stage groups (`<model>/<clean task>`; each robust arm is one of its
  own) dealt round-robin in sorted order (pipeline.plan.shard); a stage that needs another host's stage waits for
  it. Host 0 then waits (polling every --poll_s, at most --wait_s) until every other host's stages are done and
  builds the report; rerunning any host
  resumes its share. A host's devices all serve its own stages (data parallel over its local mesh). For one JAX
  program spanning all hosts instead (jax.distributed, --distributed), leave --process_count at 1: every host
  then walks the same plan and only process 0 writes.
- One study per workdir: a run holds WORKDIR/.study.lock (pid, host, start time) from its start to its end; a
  second launch.reproduce there exits 2 at once naming the holder (a lock left by a killed run is taken over); the
  hosts of one --process_count run share the workdir (host 0 holds it).
- Common flags, when given, override the config: --data_dir, --seeds, --max_examples, --max_steps, --model_path
  (one model), --task (one task).
"""
from __future__ import annotations

import sys
import time

from absl import flags, logging

from configs import tune as tune_config
from launch import common
from skillneurons_jax import layout
from skillneurons_jax import robust  # noqa: F401  (registers the robustness study's stage kinds)
from skillneurons_jax.pipeline import build, hosts, runner
from skillneurons_jax.pipeline.settings import OVERRIDES, StudySettings

FLAGS = flags.FLAGS
common.define_config("default.py")
flags.DEFINE_bool("dry_run", False, "List the plan (stages, state, estimated seconds) and exit without work.")
flags.DEFINE_integer("process_index", 0, "This host's index among --process_count hosts sharing the workdir.")
flags.DEFINE_integer("process_count", 1, "Hosts sharing the plan (each runs whole stage groups).")
flags.DEFINE_float("wait_s", 7 * 24 * 3600.0, "The longest wait for other hosts: for a stage of theirs that one of this "
                   "host's needs, and (host 0) for all of theirs before the report.")
flags.DEFINE_float("poll_s", 30.0, "Seconds between checks of the other hosts' progress.")
flags.DEFINE_string("accelerator", "h100-sxm", "--dry_run: also estimate the whole sweep on this accelerator: a name "
                    "of skillneurons_jax.accelerators.PEAKS or its peak FLOP/s per chip (e.g. 989e12).")
flags.DEFINE_integer("accelerator_chips", 1, "--dry_run: chips of --accelerator (data parallel).")
flags.DEFINE_float("accelerator_mfu", 0.4, "--dry_run: model-FLOP utilisation assumed on --accelerator.")


def log_to_workdir(workdir) -> None:
    """absl's log file goes to WORKDIR/logs/ (INFO and up: what the data readers carved, each tuning config); the
    console keeps the progress lines, real warnings and the results. --logtostderr or --stderrthreshold, when
    given, keep their meaning."""
    if FLAGS["logtostderr"].present or FLAGS["alsologtostderr"].present:
        return
    folder = layout.logs_dir(runner.check_workdir(workdir))     # an unwritable workdir: one clear error, here
    folder.mkdir(parents=True, exist_ok=True)
    logging.get_absl_handler().use_absl_log_file("reproduce", str(folder))
    if not FLAGS["verbosity"].present:        # launch.common.run set WARNING for the console; the file takes INFO
        logging.set_verbosity(logging.INFO)
    if not FLAGS["stderrthreshold"].present:
        FLAGS.stderrthreshold = "warning"


def main(argv):
    del argv
    common.check_flags(workdir=False)     # the plan checks (and creates) its workdir itself
    common.start_distributed()
    # the flags given on the command line replace their config fields, checked by the same validation
    overrides = {name: getattr(FLAGS, name) for name in OVERRIDES if FLAGS[name].present}
    settings = StudySettings.from_config(FLAGS.config, FLAGS.workdir,
                                         FLAGS.data_dir if FLAGS["data_dir"].present else None,
                                         default_tune=tune_config.get_config(), overrides=overrides)
    t0 = time.time()
    # one study per workdir: a second one is refused here (exit 2, naming the holder), before it writes its log
    with runner.hold_study(settings.workdir, process_index=FLAGS.process_index, process_count=FLAGS.process_count,
                           dry_run=FLAGS.dry_run):
        if not FLAGS.dry_run:
            log_to_workdir(settings.workdir)
        try:
            result = runner.run_plan(settings, dry_run=FLAGS.dry_run, process_index=FLAGS.process_index,
                                     process_count=FLAGS.process_count, wait_s=FLAGS.wait_s, poll_s=FLAGS.poll_s,
                                     printer=lambda msg: print(msg, flush=True),
                                     heartbeat_timeout_s=FLAGS.heartbeat_timeout_s, study_held=True)
        except hosts.HostLost as error:          # another host died: a clear line and exit 3, never a hang
            print(f"error: {error}", file=sys.stderr, flush=True)
            sys.exit(3)
    if FLAGS.dry_run:
        for line in build.format_estimate(settings, FLAGS.accelerator, FLAGS.accelerator_chips,
                                          FLAGS.accelerator_mfu):
            print(line, flush=True)
        return
    print(f"[plan] finished in {time.time() - t0:.0f} s: {result['ran']} stage(s) run, "
          f"{len(result.get('already_done', ())) + len(result['up_to_date'])} already done or up to date, "
          f"{len(result['skipped'])} skipped, {len(result['failed'])} failed", flush=True)
    for key, why in result["failed"].items():
        print(f"[plan] FAILED {key}: {why}", file=sys.stderr, flush=True)
    if result["report"] is not None:
        for line in runner.closing_lines(settings.workdir) or [f"[plan] report: {result['report']}"]:
            print(line, flush=True)
    if result["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    common.run(main)
