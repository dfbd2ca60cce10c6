"""Prompt tuning: `python -m launch.tune --model_path DIR --task sst2 --data_dir DATA --seeds 0,1,2 --workdir W`.

Writes W/prompts/<model>/<task>/seed_<s>/{prompt.npy (+ .json sidecar), metrics.jsonl, state/, run_config.json}
and prints one JSON line with each seed's best dev accuracy. Rerunning the same command after a crash or a
kill resumes from the last checkpoint. Hyperparameters: configs/tune.py, with per-model/per-task values from
the hyperparameter table (configs/hparams.py); `--config.FIELD=value` overrides either. The work itself is
skillneurons_jax.stages.tune (shared with the reproduce plan's tune stages).
"""
from __future__ import annotations

import json
import sys
import time

import jax
from absl import flags

from launch import common
from skillneurons_jax.data import tasks
from skillneurons_jax.prompt.train import TrainingDiverged
from skillneurons_jax.stages import tune

FLAGS = flags.FLAGS
common.define_config("tune.py")


def main(argv):
    del argv
    t_start = time.time()
    common.require("model_path", "task")
    tasks.get_task(FLAGS.task)
    common.check_flags(tasks_read=[FLAGS.task])          # every flag before the model loads; nothing written
    tune.check_tune_config(FLAGS.config)
    common.start_distributed()
    seeds = common.parse_seeds(FLAGS.seeds)
    setup = common.load_setup(FLAGS.model_path, FLAGS.task, FLAGS.config)  # an unknown task fails before loading
    try:
        summary = tune.tune(setup, seeds, FLAGS.workdir, FLAGS.data_dir, FLAGS.config, model_path=FLAGS.model_path,
                            max_examples=FLAGS.max_examples, max_steps=FLAGS.max_steps, eval_every=FLAGS.eval_every)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    summary["wall_s"] = round(time.time() - t_start, 1)   # model loading included
    if jax.process_index() == 0:
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    common.run(main)
