"""Prompt transfer: a source task's tuned prompts (every seed) evaluated on target tasks, each with the TARGET's
verbalizer, on the target's dev split.

Writes, atomically with a sidecar (io.write_sidecar), one file per pair in the analysis format
(docs/interfaces.md, "analysis"):

    WORKDIR/transfer/<model>/<source>__<target>.json
      {"model", "source", "target", "prompt_task": source, "seeds": [...], "accuracy": [per seed],
       "f1": [per seed], "n_dev": examples, "split": "dev"}

`<task>__<task>` is the task's own prompt; `<clean>__<adv>` an adversarial set with its clean prompt (Table 1).
Everything heavy is kept per (model, target) in the session: the target's readout, its encoded dev batches and
the compiled evaluation step (prompts of all seeds are one vmapped argument), so evaluating S sources on a target
compiles once per batch length, not once per source.
"""
from __future__ import annotations

import pathlib
import time
from typing import Optional, Sequence

import numpy as np

from skillneurons_jax import io as sio


def transfer_path(workdir, model: str, source: str, target: str) -> pathlib.Path:
    return pathlib.Path(workdir) / "transfer" / model / f"{source}__{target}.json"


def _target_state(session, model_path: str, target: str, data_dir, tune_config, max_examples: Optional[int]):
    """(setup, dev batches, compiled eval step, replicated params, mesh, n_dev) for one (model, target)."""
    from launch import common
    from skillneurons_jax import parallel
    from skillneurons_jax.prompt import train

    key = ("transfer", str(model_path), target, str(data_dir), max_examples)
    if key not in session.cache:
        setup = session.setup(model_path, target, tune_config)
        mesh = parallel.make_mesh()
        encoded = common.encode_split(setup, "dev", data_dir, max_examples, int(tune_config["max_text_tokens"]))
        bs = common.round_up(int(tune_config["eval_batch_size"]), parallel.num_data_shards(mesh))
        batches = list(common.model_batches(encoded, bs, buckets=common.buckets_for([encoded]),
                                            sort_by_length=True))
        step = train.make_eval_step(setup.readout.score_fn(), mesh)
        params_key = ("params", str(model_path))        # one device copy of the weights for every target
        if params_key not in session.cache:
            session.cache[params_key] = parallel.replicate(setup.loaded.params, mesh)
        params = session.cache[params_key]
        session.cache[key] = (setup, batches, step, params, mesh, len(encoded))
    return session.cache[key]


def evaluate_pair(session, model_path: str, source: str, target: str, seeds: Sequence[int], workdir, data_dir,
                  tune_config, *, max_examples: Optional[int] = None) -> dict:
    """Accuracy and F1 per seed of `source`'s prompts on `target`'s dev split (target verbalizer)."""
    import jax.numpy as jnp
    from launch import predictivity as lp
    from skillneurons_jax import parallel
    from skillneurons_jax.prompt import metrics as mx
    from skillneurons_jax.prompt import train

    setup, batches, step, params, mesh, n_dev = _target_state(session, model_path, target, data_dir, tune_config,
                                                               max_examples)
    # load_prompts checks each file against the model and the readout settings it was tuned with
    prompts_np, digests = lp.load_prompts(workdir, setup, source, [int(s) for s in seeds], tune_config)
    prompts = parallel.replicate(jnp.asarray(prompts_np), mesh)
    conf, _ = train.evaluate(step, prompts, params, batches, mesh)          # [S, C, C]
    return {"model": setup.loaded.name, "source": source, "target": setup.task.name, "prompt_task": source,
            "seeds": [int(s) for s in seeds], "accuracy": mx.accuracy(conf).tolist(), "f1": mx.f1(conf).tolist(),
            "n_dev": int(n_dev), "split": "dev", "prompt_sha256": digests}


def run_transfer(session, model_path: str, source: str, targets: Sequence[str], seeds: Sequence[int], workdir,
                 data_dir, tune_config, *, max_examples: Optional[int] = None) -> list[pathlib.Path]:
    """Evaluates `source`'s prompts on every target and writes one file per pair; returns the paths."""
    import jax
    out = []
    for target in targets:
        t0 = time.time()
        res = evaluate_pair(session, model_path, source, target, seeds, workdir, data_dir, tune_config,
                            max_examples=max_examples)
        digests = res.pop("prompt_sha256")
        path = transfer_path(workdir, res["model"], source, res["target"])
        if jax.process_index() == 0:
            sio.atomic_write_json(path, res)
            sio.write_sidecar(path, stage="transfer", model_path=str(model_path), data_dir=str(data_dir),
                              max_examples=max_examples, prompt_sha256=digests,
                              readout={k: tune_config.get(k) for k in ("readout", "mask_slot", "prefix_positions",
                                                                        "tied_scale", "max_text_tokens")},
                              seconds=round(time.time() - t0, 3))
        print(f"transfer {res['model']}: {source} -> {res['target']}: accuracy "
              f"{np.mean(res['accuracy']):.4f} (seeds {res['seeds']})", flush=True)
        out.append(path)
    return out
