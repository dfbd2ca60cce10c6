"""Flags and set-up shared by the launch scripts: flags -> config -> load -> a stage of skillneurons_jax.stages.

Common flags (--model_path, --task, --data_dir, --seeds, --workdir, --max_examples, --max_steps, --eval_every), the
multi-host ones (--distributed ...: the hosts must agree on config, flags and data) and `define_config(file)`.
"""
from __future__ import annotations

import os
import pathlib
import sys
import traceback
from typing import Callable

# transformers says "PyTorch was not found" at import when torch is absent: the study needs no torch (it reads
# checkpoints with its own code), so that advice is noise on this tool's console. Set before anything imports it.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from skillneurons_jax import io, models, parallel  # noqa: E402
from skillneurons_jax.data import readers, tasks  # noqa: E402
from skillneurons_jax import fields  # noqa: E402
from skillneurons_jax.prompt import files  # noqa: E402
from skillneurons_jax.prompt.readout import ReadoutSettings  # noqa: E402
from skillneurons_jax.stages.setup import DevRows, TaskSetup, make_setup  # noqa: E402

FLAGS = flags.FLAGS
CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"

flags.DEFINE_string("model_path", None, "A local Hugging Face checkpoint folder, `offline:all-minilm-l6-v2`, "
                    "or a hub name (online only).")
flags.DEFINE_string("task", None, tasks.task_names_help())
flags.DEFINE_string("data_dir", None, "Folder with the task files (e.g. ../shared/data).")
flags.DEFINE_string("seeds", "0,1,2", "Comma-separated seeds, trained together.")
flags.DEFINE_string("workdir", "workdir", "Root of all outputs.")
flags.DEFINE_integer("max_examples", None, "Cap on the examples read per split (quick runs).")
flags.DEFINE_integer("max_steps", None, "Stop training after this many updates.")
flags.DEFINE_integer("eval_every", None, "Evaluate on dev every N updates (default: the config's; 0 = per epoch).")
flags.DEFINE_bool("distributed", False, "Multi-host: call jax.distributed.initialize before anything else.")
flags.DEFINE_string("coordinator", None, "Multi-host: host:port of process 0 (None: auto-detect).")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes (None: auto-detect).")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index (None: auto-detect).")
flags.DEFINE_integer("distributed_timeout_s", 300, "Multi-host: seconds to wait for every host to connect.")
flags.DEFINE_integer("heartbeat_timeout_s", 100, "Multi-host: a host silent this long stops every other host.")


# Errors that mean "bad input" (unknown task, missing file, wrong shape, a PyTorch prompt file without torch...):
# one clear line on stderr, exit code 2.
USER_ERRORS = (ValueError, FileNotFoundError, files.TorchMissing)


def run(main: Callable) -> None:
    """app.run(main), printing user errors as `error: ...` without a traceback (SKILLNEURONS_TRACEBACK=1 shows it)."""
    def wrapped(argv):
        if not FLAGS["verbosity"].present:  # orbax and jax log every checkpoint at INFO
            logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except USER_ERRORS as e:
            if os.environ.get("SKILLNEURONS_TRACEBACK"):
                traceback.print_exc()
            print(f"error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            sys.exit(2)
    app.run(wrapped)


def define_config(default_file: str) -> None:
    """Defines --config (an ml_collections config file; override fields with --config.FIELD=value)."""
    config_flags.DEFINE_config_file("config", str(CONFIGS_DIR / default_file), "Config file.", lock_config=False)


def parse_seeds(text: str) -> list[int]:
    """--seeds "0,1,2" -> [0, 1, 2] (fields.parse_seeds: distinct integers >= 0)."""
    return list(fields.parse_seeds(text, "--seeds"))


def require(*names: str) -> None:
    missing = [n for n in names if getattr(FLAGS, n) in (None, "")]
    if missing:
        raise ValueError("missing required flag(s): " + ", ".join(f"--{n}" for n in missing))


def start_distributed() -> None:
    if FLAGS.distributed:
        parallel.initialize_distributed(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id,
                                        initialization_timeout_s=FLAGS.distributed_timeout_s,
                                        heartbeat_timeout_s=FLAGS.heartbeat_timeout_s)
        # every host hashes the flags the launch scripts define (absl's own logging flags left out)
        flag_values = {f.name: f.value for module, defined in FLAGS.flags_by_module_dict().items()
                       if not module.startswith("absl") for f in defined}
        parallel.check_hosts_agree(parallel.run_fingerprint(flag_values), what="the run")


def load_setup(model_path: str, task: str, config) -> TaskSetup:
    """Checks the task name first (cheap), then loads the model and builds the task's readout from the config's
    readout settings."""
    tasks.get_task(task)
    settings = ReadoutSettings.from_config(config)
    return make_setup(models.load_pretrained(model_path), task, settings, DevRows.from_config(config))


def check_flags(*, tasks_read=(), workdir: bool = True) -> None:
    """Every common flag checked before any model load or data read, nothing written (ValueError, exit 2):
    seeds, positive caps and steps, a workdir that is a writable folder (or can be made one), and --data_dir for
    the tasks in `tasks_read` whose files are not shipped with a package (the offline tweets tasks need none)."""
    parse_seeds(FLAGS.seeds)
    for name in ("max_examples", "max_steps", "eval_every"):      # the config's table of ranges
        fields.check_field(name, getattr(FLAGS, name), f"--{name}")
    if workdir:
        io.check_writable_folder(FLAGS.workdir, what="--workdir")
    if FLAGS.data_dir in (None, ""):
        needing = [t for t in tasks_read if readers.resolve(tasks.get_task(t), "dev", None).kind == "missing"]
        if needing:
            raise ValueError(f"missing required flag(s): --data_dir (task {needing[0]!r} reads its files there)")


def positive(name: str, value, *, allow_none: bool = True) -> None:
    if (value is None and not allow_none) or (value is not None and value < 1):
        raise ValueError(f"--{name} must be a positive integer, got {value}")
