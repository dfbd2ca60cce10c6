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

from absl import flags

from launch import common

FLAGS = flags.FLAGS
common.define_config("tune.py")
flags.DEFINE_string("prompt_dir", None, "Prompt file or folder (see the module docstring).")
flags.DEFINE_string("split", "dev", "Split role to evaluate on: train | dev | test.")
flags.DEFINE_string("output", None, "Also write the JSON result here (atomically, with a sidecar).")


def evaluate_prompts(setup, prompt_files, encoded, eval_batch_size: int, mesh) -> dict:
    """Accuracy and F1 of each prompt file on `encoded`; the mean over prompts at the top level."""
    import numpy as np
    from skillneurons_jax import parallel
    from skillneurons_jax.prompt import metrics as mx
    from skillneurons_jax.prompt import soft_prompt, train

    hidden = setup.loaded.config.hidden
    prompts = [soft_prompt.check_prompt(soft_prompt.read_prompt(f), None, hidden, source=str(f))
               for f in prompt_files]
    bs = common.round_up(eval_batch_size, parallel.num_data_shards(mesh))
    batches = list(common.model_batches(encoded, bs, buckets=common.buckets_for([encoded]), sort_by_length=True))
    eval_step = train.make_eval_step(setup.readout.score_fn(), mesh)
    params = parallel.replicate(setup.loaded.params, mesh)
    per_prompt = []
    # prompts of one length evaluate together (one compiled step, vmapped over them)
    for length in sorted({p.shape[0] for p in prompts}):
        idx = [i for i, p in enumerate(prompts) if p.shape[0] == length]
        stacked = parallel.replicate(np.stack([prompts[i] for i in idx]), mesh)
        conf, loss = train.evaluate(eval_step, stacked, params, batches, mesh)
        for j, i in enumerate(idx):
            per_prompt.append((i, {"prompt": str(prompt_files[i]), **mx.summary(conf[j]), "loss": float(loss[j])}))
    per_prompt = [r for _, r in sorted(per_prompt, key=lambda t: t[0])]
    return {"accuracy": float(np.mean([r["accuracy"] for r in per_prompt])),
            "f1": float(np.mean([r["f1"] for r in per_prompt])),
            "examples": per_prompt[0]["examples"], "prompts": per_prompt}


def main(argv):
    del argv
    common.require("model_path", "task", "data_dir", "prompt_dir")
    common.start_distributed()
    import jax
    from skillneurons_jax import io as sio
    from skillneurons_jax import parallel
    from skillneurons_jax.data import tasks
    from skillneurons_jax.prompt import soft_prompt

    if FLAGS.split not in tasks.SPLITS:
        raise ValueError(f"--split must be one of {tasks.SPLITS}, got {FLAGS.split!r}")
    tasks.get_task(FLAGS.task)
    files = soft_prompt.find_prompts(FLAGS.prompt_dir)   # a missing prompt fails before the model loads
    config = FLAGS.config
    setup = common.setup_model_and_task(FLAGS.model_path, FLAGS.task, config)
    encoded = common.encode_split(setup, FLAGS.split, FLAGS.data_dir, FLAGS.max_examples, config.max_text_tokens)
    result = evaluate_prompts(setup, files, encoded, config.eval_batch_size, parallel.make_mesh())
    line = {"task": setup.task.name, "split": FLAGS.split, "model": setup.loaded.name,
            "readout": setup.readout.kind.name, **result}
    if jax.process_index() == 0:
        print(json.dumps(line), flush=True)
        if FLAGS.output:
            sio.atomic_write_json(pathlib.Path(FLAGS.output), line)
            sio.write_sidecar(pathlib.Path(FLAGS.output), config=config.to_dict(), model_path=FLAGS.model_path,
                              task=setup.task.name, prompt_dir=FLAGS.prompt_dir, data_dir=FLAGS.data_dir)


if __name__ == "__main__":
    common.run(main)
