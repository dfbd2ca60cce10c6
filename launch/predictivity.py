"""Skill-neuron predictivity of a task's tuned prompts (eqs. 2-5), streamed over the data.

    python -m launch.predictivity --model_path DIR --task sst2 --data_dir DIR --seeds 0,1,2 --workdir DIR

Writes WORKDIR/predictivity/<model>/<task>.npz (pred [L, N], pred_per_seed [S, L, N], acc [S, L, T, N],
baseline [S, L, T, N], ...) and its sidecar; prints one JSON line. The work and the file format:
skillneurons_jax.stages.predictivity. Adversarial tasks use their clean task's prompts and TRAIN baseline.
Statistics options: config block `stats` (configs/tune.py has none), then the flags below.
"""
from __future__ import annotations

import json

from absl import flags

from launch import common
from skillneurons_jax.data import tasks
from skillneurons_jax.neurons.stats_options import StatsOptions
from skillneurons_jax.stages import predictivity

STATS_FIELDS = ("positions", "threshold", "token_aggregation", "seed_aggregation", "pre_activation",
                "median_bins", "median_max_passes")


def stats_options(config=None) -> StatsOptions:
    """config.stats (when the config has that block), then the statistics flags that were given."""
    block = config.get("stats") if config is not None else None
    base = dict(block.items()) if block is not None else {}
    for field in STATS_FIELDS:
        value = getattr(flags.FLAGS, field, None)
        if value is not None:
            base[field] = value
    return StatsOptions.from_mapping(base)


def define_stage_flags() -> None:
    """Flags of the neuron stages beyond launch/common.py's (which defines --model_path ... --max_examples)."""
    common.define_config("tune.py")
    flags.DEFINE_string("prompt_task", None, "task whose tuned prompts to use (default: the clean task)")
    flags.DEFINE_integer("batch_size", None, "evaluation batch (default: config eval_batch_size)")


def define_flags() -> None:
    define_stage_flags()
    flags.DEFINE_string("baseline_task", None, "task whose TRAIN split gives the baseline (default: the clean task)")
    flags.DEFINE_enum("positions", None, ["prompt", "all"], "token positions of the statistics")
    flags.DEFINE_enum("threshold", None, ["mean", "median"], "per-neuron threshold of eq. 3")
    flags.DEFINE_enum("token_aggregation", None, ["max", "mean"], "aggregation over tokens (eq. 5: max)")
    flags.DEFINE_enum("seed_aggregation", None, ["mean", "min"], "aggregation over seeds (eq. 5: mean)")
    flags.DEFINE_bool("pre_activation", None, "capture the FFN pre-activation instead of the post-activation")
    flags.DEFINE_integer("median_bins", None, "median search: bins per pass")
    flags.DEFINE_integer("median_max_passes", None, "median search: most passes over TRAIN")
    flags.DEFINE_bool("decoder", True, "T5: also the first decoder step")
    flags.DEFINE_bool("reuse_baseline", True, "reuse the clean task's TRAIN baseline when it matches")


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    common.require("model_path", "task", "workdir")
    task = tasks.get_task(f.task)
    common.check_flags(tasks_read=[task.name, tasks.clean_task_of(task)])   # before the model loads
    common.positive("batch_size", f.batch_size)
    common.positive("config.eval_batch_size", f.config.eval_batch_size, allow_none=False)
    seeds, options, config = common.parse_seeds(f.seeds), stats_options(f.config), f.config
    common.start_distributed()
    setup = common.load_setup(f.model_path, f.task, config)
    summary = predictivity.predictivity(
        setup, f.workdir, f.data_dir, seeds, model_path=f.model_path, max_text_tokens=int(config.max_text_tokens),
        eval_batch_size=int(config.eval_batch_size), options=options, max_examples=f.max_examples,
        batch_size=f.batch_size, baseline_task=f.baseline_task, prompt_task=f.prompt_task, decoder=f.decoder,
        reuse_baseline=f.reuse_baseline)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    define_flags()
    common.run(main)
