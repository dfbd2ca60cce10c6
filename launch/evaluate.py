"""Evaluate prompts on a task: `python -m launch.evaluate --model_path DIR --task T --data_dir D --prompt_dir P`.

`--prompt_dir` is a seed folder (prompt.npy), a folder of seed_<s>/ folders (every seed; the line reports the mean
and each prompt), a .npy file, or a PyTorch tensor file such as the original release's `task_prompt` [100, 768].
The TARGET task's verbalizer scores the prompt, so a prompt trained on one task can be evaluated on another
(transfer). Prints one JSON line: {"accuracy", "f1", "examples", "task", "split", "model", "prompts": [...]}.
The readout settings (readout kind, mask slot, positions, tied scale) come from the config, as in training.
"""
from __future__ import annotations

import json
import pathlib

import jax
from absl import flags

from launch import common
from skillneurons_jax import io, parallel
from skillneurons_jax.data import tasks
from skillneurons_jax.prompt import files
from skillneurons_jax.stages import evaluate
from skillneurons_jax.stages.setup import encode_split

FLAGS = flags.FLAGS
common.define_config("tune.py")
flags.DEFINE_string("prompt_dir", None, "Prompt file or folder (see the module docstring).")
flags.DEFINE_string("split", "dev", "Split role to evaluate on: train | dev | test.")
flags.DEFINE_string("output", None, "Also write the JSON result here (atomically, with a sidecar).")


def main(argv):
    del argv
    common.require("model_path", "task", "prompt_dir")
    if FLAGS.split not in tasks.SPLITS:
        raise ValueError(f"--split must be one of {tasks.SPLITS}, got {FLAGS.split!r}")
    tasks.get_task(FLAGS.task)
    common.check_flags(tasks_read=[FLAGS.task], workdir=False)   # evaluate writes only --output
    common.positive("config.eval_batch_size", FLAGS.config.eval_batch_size, allow_none=False)
    common.start_distributed()
    # every prompt file found and read whole before the model loads: a missing, linked-out, pickled or PyTorch
    # file without torch installed fails in one line first
    prompt_files = files.find_prompts(FLAGS.prompt_dir)
    prompts = files.read_prompts(prompt_files)
    config = FLAGS.config
    setup = common.load_setup(FLAGS.model_path, FLAGS.task, config)
    encoded = encode_split(setup, FLAGS.split, FLAGS.data_dir, FLAGS.max_examples, config.max_text_tokens)
    result = evaluate.evaluate(setup, prompt_files, encoded, config.eval_batch_size, parallel.make_mesh(),
                               prompts=prompts)
    line = {"task": setup.task.name, "split": FLAGS.split, "model": setup.loaded.name,
            "readout": setup.readout.kind.name, **result}
    if jax.process_index() == 0:
        print(json.dumps(line), flush=True)
        if FLAGS.output:
            io.atomic_write_json(pathlib.Path(FLAGS.output), line)
            io.write_sidecar(pathlib.Path(FLAGS.output), config=config.to_dict(), model_path=FLAGS.model_path,
                             task=setup.task.name, prompt_dir=FLAGS.prompt_dir, data_dir=FLAGS.data_dir)


if __name__ == "__main__":
    common.run(main)
