"""Suppress a source task's skill neurons and measure a target task's accuracy, against random controls.

    python -m launch.suppress --model_path DIR --source_task qqp --task advqqp --data_dir DIR --seeds 0,1,2 \
        --workdir DIR [--levels 0,1,3,5,7,9,11,13,15] [--scope layer|global] [--intervention zero|mean|gaussian]

Writes WORKDIR/suppression/<model>/<source>__<target>.json (`skill` and `random` accuracies per level, seed and
draw; the format is in skillneurons_jax.stages.suppress) and prints one JSON line with the means.
`--task` defaults to the source task (its own skill neurons).
"""
from __future__ import annotations

import json

from absl import flags

from launch import common
from launch.predictivity import define_stage_flags
from skillneurons_jax.data import tasks
from skillneurons_jax.neurons import suppression
from skillneurons_jax.stages import suppress


def define_flags() -> None:
    define_stage_flags()
    flags.DEFINE_string("source_task", None, "task whose skill neurons are suppressed")
    flags.DEFINE_string("levels", ",".join(str(k) for k in suppression.DEFAULT_PERCENTS),
                        "suppression levels in percent")
    flags.DEFINE_enum("scope", "layer", list(suppression.SCOPES), "top-k% per layer (the original) or over the model")
    flags.DEFINE_enum("intervention", "zero", list(suppression.INTERVENTION_KINDS), "what replaces the activations")
    flags.DEFINE_float("noise_scale", 1.0, "gaussian intervention: standard deviation of the added noise")
    flags.DEFINE_enum("noise_relative_to", "absolute", list(suppression.NOISE_SCALES),
                      "gaussian intervention: noise_scale as is, or times each neuron's TRAIN std")
    flags.DEFINE_integer("random_draws", 3, "random control masks per level")
    flags.DEFINE_integer("random_seed", 0, "seed of the random controls (and of the Gaussian noise)")
    flags.DEFINE_enum("stream", "encoder", list(suppress.STREAMS), "T5: suppress encoder or decoder neurons")


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    common.require("model_path", "source_task", "workdir")
    seeds, levels, config = common.parse_seeds(f.seeds), suppress.parse_levels(f.levels), f.config
    source = tasks.get_task(f.source_task).name      # bad names and options fail before the model loads
    target = tasks.get_task(f.task or source).name
    common.check_flags(tasks_read=[target])
    suppress.check_options(levels=levels, stream=f.stream, intervention=f.intervention, scope=f.scope)
    common.positive("batch_size", f.batch_size)
    common.positive("random_draws", f.random_draws, allow_none=False)
    common.positive("config.eval_batch_size", config.eval_batch_size, allow_none=False)
    if f.noise_scale < 0:
        raise ValueError(f"--noise_scale must be >= 0, got {f.noise_scale}")
    common.start_distributed()
    setup = common.load_setup(f.model_path, target, config)
    summary = suppress.suppress(
        setup, source, f.workdir, f.data_dir, seeds, model_path=f.model_path,
        max_text_tokens=int(config.max_text_tokens), eval_batch_size=int(config.eval_batch_size), levels=levels,
        scope=f.scope, intervention=f.intervention, noise_scale=f.noise_scale,
        noise_relative_to=f.noise_relative_to, random_draws=f.random_draws,
        random_seed=f.random_seed, stream=f.stream, max_examples=f.max_examples, batch_size=f.batch_size,
        prompt_task=f.prompt_task)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    define_flags()
    common.run(main)
