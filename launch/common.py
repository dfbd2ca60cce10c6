"""Flags and set-up shared by the launch scripts (tune, evaluate, and the later stages).

Common flags: --model_path, --task, --data_dir, --seeds, --workdir, --max_examples, --max_steps, --eval_every,
plus --distributed/--coordinator/--num_processes/--process_id (and --distributed_timeout_s, --heartbeat_timeout_s)
for multi-host runs, whose hosts must agree on config, flags and data (skillneurons_jax.parallel.run_fingerprint).
Each script defines its --config with `define_config(default_file)` (an ml_collections config file).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import traceback
from typing import Any, Callable, Optional, Sequence

from absl import app, flags, logging

FLAGS = flags.FLAGS
CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"

flags.DEFINE_string("model_path", None, "A local Hugging Face checkpoint folder, `offline:all-minilm-l6-v2`, "
                    "or a hub name (online only).")
flags.DEFINE_string("task", None, "Task name, lower case (sst2, imdb, movierationales, qqp, mrpc, qnli, mnli, "
                    "ethicsdeontology, ethicsjustice, advsst2, advqqp, advqnli, advmnli, tweets).")
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


# Errors that mean "bad input" (unknown task, missing file, wrong shape...): one clear line on stderr, exit code 2.
USER_ERRORS = (ValueError, FileNotFoundError)


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
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", str(CONFIGS_DIR / default_file), "Config file.", lock_config=False)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def require(*names: str) -> None:
    missing = [n for n in names if getattr(FLAGS, n) in (None, "")]
    if missing:
        raise ValueError("missing required flag(s): " + ", ".join(f"--{n}" for n in missing))


def start_distributed() -> None:
    if FLAGS.distributed:
        from skillneurons_jax import parallel
        parallel.initialize_distributed(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id,
                                        initialization_timeout_s=FLAGS.distributed_timeout_s,
                                        heartbeat_timeout_s=FLAGS.heartbeat_timeout_s)
        parallel.check_hosts_agree(parallel.run_fingerprint(launch_flag_values()), what="the run")


def launch_flag_values() -> dict:
    """name -> value of the flags the launch scripts define (absl's own logging flags left out)."""
    return {f.name: f.value for module, defined in FLAGS.flags_by_module_dict().items()
            if not module.startswith("absl") for f in defined}


def run_dir(workdir, model_name: str, task: str, seed: int) -> pathlib.Path:
    """WORKDIR/prompts/<model>/<task>/seed_<s>/"""
    return pathlib.Path(workdir) / "prompts" / model_name / task / f"seed_{seed}"


@dataclasses.dataclass
class Setup:
    """A model with its task readout: what tune, evaluate and the neuron stages all need."""
    loaded: Any          # models.LoadedModel
    task: Any            # data.tasks.TaskSpec
    label_words: Any     # data.tasks.LabelWords
    readout: Any         # prompt.readout.Readout


def setup_model_and_task(model_path: str, task: str, config) -> Setup:
    """Checks the task name first (cheap), then loads the model and builds the task's readout."""
    from skillneurons_jax.data import tasks
    from skillneurons_jax.models import load_pretrained
    from skillneurons_jax.prompt import readout as ro

    spec = tasks.get_task(task)
    loaded = load_pretrained(model_path)
    words = tasks.label_word_ids(spec, loaded.tokenizer, loaded.family)
    readout = ro.make_readout(loaded, words, kind=config.get("readout", "auto"),
                              mask_slot=_bool_or_auto(config.get("mask_slot", "auto")),
                              prefix_positions=config.get("prefix_positions", "zero"),
                              scale=config.get("tied_scale", 1.0))
    return Setup(loaded=loaded, task=spec, label_words=words, readout=readout)


def _bool_or_auto(value):
    if isinstance(value, str):
        low = value.lower()
        if low == "auto":
            return "auto"
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"mask_slot must be auto, true or false; got {value!r}")
    return bool(value)


def encode_split(setup: Setup, split: str, data_dir, max_examples: Optional[int], max_text_tokens: int):
    """Examples of one split, tokenized with the task's template for the model's family."""
    from skillneurons_jax.data import batches, tasks
    examples = tasks.load_split(setup.task, split, data_dir, max_examples=max_examples)
    if not examples:
        raise ValueError(f"task {setup.task.name!r}: the {split} split is empty")
    return batches.encode(examples, setup.loaded.tokenizer, setup.task, setup.loaded.family,
                          max_text_tokens=max_text_tokens)


MODEL_KEYS = ("input_ids", "attention_mask", "labels", "example_mask")


def buckets_for(encoded_splits: Sequence[Any]) -> tuple[int, ...]:
    """The data module's buckets, cut at (and ending with) the longest row of these splits."""
    from skillneurons_jax.data import batches
    longest = max(int(e.lengths.max()) for e in encoded_splits)
    return tuple(b for b in batches.DEFAULT_BUCKETS if b < longest) + (longest,)


def model_batches(encoded, batch_size: int, *, seed=None, drop_last=False, buckets, sort_by_length=False):
    """batches.iterate, keeping only what the readout and the loss read."""
    from skillneurons_jax.data import batches
    for b in batches.iterate(encoded, batch_size, seed=seed, drop_last=drop_last, buckets=buckets,
                             sort_by_length=sort_by_length):
        yield {k: b[k] for k in MODEL_KEYS}


def round_up(n: int, multiple: int) -> int:
    return -(-int(n) // multiple) * multiple
