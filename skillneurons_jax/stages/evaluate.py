"""Stage evaluate: prompt files scored on a task's split with the TASK's verbalizer (the body of launch.evaluate).

    result = evaluate(setup, prompt_files, encoded, eval_batch_size, mesh)
    # {"accuracy": mean over prompts, "f1": ..., "examples": n, "prompts": [{"prompt", "accuracy", "f1", ...}]}
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from skillneurons_jax import parallel
from skillneurons_jax.data.batches import Encoded
from skillneurons_jax.prompt import files, metrics, scoring, soft_prompt
from skillneurons_jax.stages.setup import TaskSetup, buckets_for, model_batches, round_up


def evaluate(setup: TaskSetup, prompt_files: Sequence, encoded: Encoded, eval_batch_size: int, mesh, *,
             prompts: Optional[Sequence[np.ndarray]] = None) -> dict:
    """Accuracy and F1 of each prompt file on `encoded`; the mean over prompts at the top level. Prompts of one
    length are scored together (one compiled step, vmapped over them). `prompts`: the files' arrays when the
    caller read them already (files.read_prompts, before loading the model); None: read here."""
    hidden = setup.loaded.config.hidden
    arrays = files.read_prompts(prompt_files) if prompts is None else prompts
    prompts = [soft_prompt.check_prompt(a, None, hidden, source=str(f)) for a, f in zip(arrays, prompt_files)]
    batch_size = round_up(eval_batch_size, parallel.num_data_shards(mesh))
    batches = list(model_batches(encoded, batch_size, buckets=buckets_for([encoded]), sort_by_length=True))
    eval_step = scoring.make_eval_step(setup.readout.score_fn(), mesh)
    params = parallel.replicate(setup.loaded.params, mesh)
    per_prompt = []
    for length in sorted({p.shape[0] for p in prompts}):
        indices = [i for i, p in enumerate(prompts) if p.shape[0] == length]
        stacked = parallel.replicate(np.stack([prompts[i] for i in indices]), mesh)
        confusion, loss = scoring.evaluate(eval_step, stacked, params, batches, mesh)
        for j, i in enumerate(indices):
            per_prompt.append((i, {"prompt": str(prompt_files[i]), **metrics.summary(confusion[j]),
                                   "loss": float(loss[j])}))
    per_prompt = [row for _, row in sorted(per_prompt, key=lambda t: t[0])]
    return {"accuracy": float(np.mean([r["accuracy"] for r in per_prompt])),
            "f1": float(np.mean([r["f1"] for r in per_prompt])),
            "examples": per_prompt[0]["examples"], "prompts": per_prompt}
