"""Stage explorer: what the neuron explorer page shows about the top neurons of a task, recorded with the model.

    summary = record_neurons(setups, workdir, data_dir, seeds, model_path=path, max_text_tokens=128,
                             eval_batch_size=64, top_k=16)

`setups[0]` is a clean task, the others its adversarial sets (their TaskSetups: own dev split and verbalizer).
Reads   WORKDIR/prompts/<model>/<clean>/seed_<s>/prompt.npy (the FIRST seed of `seeds` only) and
        WORKDIR/predictivity/<model>/<task>.npz for every task of `setups` (pred, acc, baseline, threshold).
Writes  WORKDIR/explorer/<model>/<clean>.npz (atomically) with
          neurons  int32 [K, 2]   (layer, neuron): the union of each task's top_k neurons by Pred (eq. 5)
          token    int32 [K]      the prompt position j* = argmax_j pred_s(l, j, n) of the clean task, seed s
          and per task t of `setups`:
          act__<t>        float32 [E_t, K]  a_s(l, j*, n | x) on t's dev split (file order)
          labels__<t>     int32 [E_t]
          threshold__<t>  float32 [K]       eq. 3's threshold at (s, l, j*, n) from t's predictivity npz (the eq. 2
                                            TRAIN baseline; the median when the study used it)
          acc__<t>        float32 [K]       eq. 3's accuracy at (s, l, j*, n) from the npz
          top__<t>, bottom__<t>  int32 [K, M]  the dev rows of the M highest / lowest activations, highest first /
                                            lowest first
          rows__<t>       int32 [R], texts__<t> unicode [R]: the texts of every row named in top/bottom
        and the sidecar <clean>.npz.json: model, tasks, seed, top_k, examples, n_dev per task, and `acc_check`
        (per task, the largest |recomputed eq. 3 accuracy - the npz's| over the neurons: this pass and the
        statistics pass see the same activations, so it is 0 up to ties of a == threshold).

Only the first seed's prompt runs (one forward per dev row): the distributions are those of one prompt, the one
whose j* the page names; Pred itself (the mean over seeds) comes from the predictivity npz. Encoder neurons only
(T5's first decoder step is not recorded).
"""
from __future__ import annotations

import json
import logging
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from skillneurons_jax import io, layout, parallel
from skillneurons_jax.data import batches as batching
from skillneurons_jax.models.ffn import Capture
from skillneurons_jax.prompt import eval_loop, files
from skillneurons_jax.stages import predictivity as predictivity_kind
from skillneurons_jax.stages import registry
from skillneurons_jax.stages.predictivity import make_forward
from skillneurons_jax.stages.setup import MODEL_KEYS, TaskSetup, buckets_for, hold, model_batches, read_split

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 16          # neurons per task: the page's distributions and examples cover these
DEFAULT_EXAMPLES = 5        # texts per neuron and direction (highest, lowest)
SEP = "__"                  # array name = <field>__<task>


def top_neurons(pred: np.ndarray, k: int) -> np.ndarray:
    """The k neurons of highest Pred [L, N] -> int32 [k, 2] (layer, neuron), highest first; ties to the lower
    flat index (layer-major), so the choice is deterministic."""
    flat = np.asarray(pred, np.float64).ravel()
    order = np.lexsort((np.arange(flat.size), -flat))[: int(k)]
    layers, neurons = np.unravel_index(order, pred.shape)
    return np.stack([layers, neurons], axis=1).astype(np.int32)


def best_tokens(acc_seed: np.ndarray, neurons: np.ndarray, prompt_len: int) -> np.ndarray:
    """j* per neuron: the prompt position where eq. 4's pred = max(acc, 1 - acc) of one seed is highest.
    acc_seed [L, T, N] (T >= prompt_len when every position was captured: only prompt positions count)."""
    pred = np.maximum(acc_seed, 1.0 - acc_seed)[:, :prompt_len, :]
    return np.asarray([int(np.argmax(pred[l, :, n])) for l, n in neurons], np.int32)


def extremes(act: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """act [E, K] -> (top [K, m], bottom [K, m]) row indices: highest first / lowest first (ties: lower row)."""
    m = min(int(m), act.shape[0])
    rows = np.arange(act.shape[0])
    top = np.stack([np.lexsort((rows, -act[:, k]))[:m] for k in range(act.shape[1])]).astype(np.int32)
    bottom = np.stack([np.lexsort((rows, act[:, k]))[:m] for k in range(act.shape[1])]).astype(np.int32)
    return top.reshape(act.shape[1], m), bottom.reshape(act.shape[1], m)


def recomputed_accuracy(act: np.ndarray, labels: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Eq. 3 from the recorded activations: mean over rows of 1[1[a > threshold] == y] -> [K]."""
    fires = act > threshold[None, :]
    return (fires == (labels[:, None] == 1)).mean(axis=0)


def example_text(example) -> str:
    return example.text_a if not example.text_b else f"{example.text_a} || {example.text_b}"


def _gathering_forward(readout, prompt_len: int, neurons: np.ndarray, token: np.ndarray):
    """jit: (params, prompts [1, P, H], batch) -> activations [B, K] at (layer, j*, neuron) of each neuron."""
    forward = make_forward(readout, Capture(start=0, length=prompt_len), None)
    layer_idx = jnp.asarray(neurons[:, 0])
    neuron_idx = jnp.asarray(neurons[:, 1])
    token_idx = jnp.asarray(token)

    @jax.jit
    def run(params, prompts, batch):
        _, streams = forward(params, prompts, batch)
        acts = streams["encoder"][0]                              # [L, B, P, N]
        return acts[layer_idx, :, token_idx, neuron_idx].T        # [B, K]

    return run


def record_neurons(setups: Sequence[TaskSetup], workdir, data_dir, seeds: Sequence[int], *, model_path,
                   max_text_tokens: int, eval_batch_size: int, top_k: int = DEFAULT_TOP_K,
                   examples: int = DEFAULT_EXAMPLES, max_examples: Optional[int] = None,
                   prompt_task: Optional[str] = None) -> dict:
    """Records the explorer's per-neuron data of setups[0]'s task and its adversarial sets (module docstring);
    returns {"output", "tasks", "neurons", "acc_check", "seconds"}. `prompt_task`: the clean task whose prompts
    run (default setups[0]'s task). The predictivity npz of every task must exist (its stage ran)."""
    clean = setups[0]
    output = layout.explorer_path(workdir, clean.loaded.name, clean.task.name)
    with hold(output, f"explorer {clean.loaded.name}/{clean.task.name}"):
        return _record(setups, workdir, data_dir, [int(s) for s in seeds], output, model_path=model_path,
                       max_text_tokens=int(max_text_tokens), eval_batch_size=int(eval_batch_size), top_k=int(top_k),
                       examples=int(examples), max_examples=max_examples,
                       prompt_task=prompt_task or clean.task.name)


def _load_stats(workdir, model: str, task: str) -> dict:
    path = layout.predictivity_path(workdir, model, task)
    if not path.exists():
        raise FileNotFoundError(f"{path}: the explorer stage needs the predictivity of {task!r} (run its stage)")
    with np.load(path, allow_pickle=False) as z:
        out = {name: np.asarray(z[name]) for name in ("pred", "acc", "baseline")}
        out["threshold"] = np.asarray(z["threshold"]) if "threshold" in z.files else out["baseline"]
    side = io.sidecar_path(path)
    meta = json.loads(side.read_text(encoding="utf-8")) if side.exists() else {}
    out["seeds"] = [int(s) for s in meta.get("seeds", [])]
    return out


def _record(setups, workdir, data_dir, seeds, output, *, model_path, max_text_tokens, eval_batch_size, top_k,
            examples, max_examples, prompt_task) -> dict:
    t0 = time.time()
    clean = setups[0]
    loaded = clean.loaded
    seed = seeds[0]
    stats = {s.task.name: _load_stats(workdir, loaded.name, s.task.name) for s in setups}
    for name, st in stats.items():       # the npz's seed axis must be in this order for index 0 to be `seed`
        if st["seeds"] and st["seeds"][0] != seed:
            raise ValueError(f"{layout.predictivity_path(workdir, loaded.name, name)}: its first seed is "
                             f"{st['seeds'][0]}, the plan's is {seed}")
    prompts_np, digests = files.load_tuned_prompts(workdir, loaded, clean.readout, prompt_task, [seed],
                                                   max_text_tokens)
    prompt_len = int(prompts_np.shape[1])
    chosen = np.concatenate([top_neurons(st["pred"], top_k) for st in stats.values()])
    _, first = np.unique(chosen[:, 0] * 10**9 + chosen[:, 1], return_index=True)
    neurons = chosen[np.sort(first)]                              # union, in order of first appearance
    token = best_tokens(stats[clean.task.name]["acc"][0], neurons, prompt_len)

    mesh = parallel.make_mesh()
    params = parallel.replicate(loaded.params, mesh)
    prompts = parallel.replicate(jnp.asarray(prompts_np), mesh)
    run = _gathering_forward(clean.readout, prompt_len, neurons, token)
    arrays = {"neurons": neurons, "token": token}
    check, n_dev = {}, {}
    for setup in setups:
        name = setup.task.name
        # the rows the predictivity was measured on (the measurement part of dev: stages.setup.read_split), as
        # read, so that row r of the activations is data.examples[r] (the texts shown)
        data = read_split(setup, "dev", data_dir, max_examples)
        encoded = batching.encode(data.examples, loaded.tokenizer, setup.task, loaded.family,
                                  max_text_tokens=max_text_tokens)
        act = np.zeros((len(encoded), len(neurons)), np.float32)
        batches = model_batches(encoded, eval_batch_size, buckets=buckets_for([encoded]), sort_by_length=True,
                                keys=MODEL_KEYS + ("index",))
        for placed, values in eval_loop.outputs(lambda b: run(params, prompts, b.device), batches, mesh):
            index = placed.host["index"]
            values = eval_loop.gathered(values)       # rows split over the hosts of a multi-host program
            keep = index >= 0
            act[index[keep]] = values[keep]
        labels = np.asarray(encoded.labels, np.int32)
        st = stats[name]
        threshold = st["threshold"][0][neurons[:, 0], token, neurons[:, 1]].astype(np.float32)
        acc = st["acc"][0][neurons[:, 0], token, neurons[:, 1]].astype(np.float32)
        check[name] = float(np.max(np.abs(recomputed_accuracy(act, labels, threshold) - acc)))
        top, bottom = extremes(act, examples)
        rows = np.unique(np.concatenate([top.ravel(), bottom.ravel()])).astype(np.int32)
        arrays.update({f"act{SEP}{name}": act, f"labels{SEP}{name}": labels, f"threshold{SEP}{name}": threshold,
                       f"acc{SEP}{name}": acc, f"top{SEP}{name}": top, f"bottom{SEP}{name}": bottom,
                       f"rows{SEP}{name}": rows,
                       f"texts{SEP}{name}": np.asarray([example_text(data.examples[r]) for r in rows], dtype=str)})
        n_dev[name] = len(encoded)
        if check[name] > 0.5 / max(len(encoded), 1):
            log.warning("explorer %s/%s: recorded activations give eq. 3 accuracies up to %.4f away from the "
                        "predictivity npz's", loaded.name, name, check[name])
    meta = {"stage": "explorer", "model": loaded.name, "model_path": str(model_path), "task": clean.task.name,
            "tasks": [s.task.name for s in setups], "prompt_task": prompt_task, "seed": seed, "seeds": seeds,
            "prompt_sha256": digests[0], "top_k": top_k, "examples": examples, "max_examples": max_examples,
            "max_text_tokens": max_text_tokens, "n_dev": n_dev, "acc_check": check,
            "seconds": round(time.time() - t0, 3)}
    if jax.process_index() == 0:
        io.atomic_save_npz(output, **arrays)
        io.write_sidecar(output, **meta)
    return {"output": str(output), "tasks": meta["tasks"], "neurons": int(len(neurons)), "acc_check": check,
            "seconds": meta["seconds"]}


# ---------------------------------------------------------------------------------------------------------------
# The stage kind (stages/registry.py): explorer/<m>/<clean> for every clean task: its top neurons' dev activations
# and those of the adversarial sets scored with its prompts, after their predictivity; one seed's dev pass each
# (a quarter of a 2-seed predictivity stage's work) -> explorer/<m>/<clean>.npz (report/explorer.html reads it).
# Planned after the held-out pass and before the robustness study (order 105).
# ---------------------------------------------------------------------------------------------------------------
def sets_of(ctx, clean: str) -> list[str]:
    return [clean] + [a for a in ctx.tasks.present if a != clean and ctx.study.prompt_task_of(a) == clean]


def plan(ctx) -> None:
    m = ctx.model.name
    for clean in ctx.tasks.clean:
        sets = sets_of(ctx, clean)
        out = layout.explorer_path(ctx.workdir, m, clean)
        ctx.add(f"explorer/{m}/{clean}", [out, out.with_name(out.name + ".json")], args={"sets": tuple(sets)},
                deps=[f"tune/{m}/{clean}"] + [f"predictivity/{m}/{t}" for t in sets], group_task=clean,
                settings=ctx.settings(clean, explorer={"top_k": DEFAULT_TOP_K, "examples": DEFAULT_EXAMPLES}))


def cost(ctx, sets) -> float:
    return sum(predictivity_kind.cost(ctx, t) for t in sets) / 4


def run(ctx, sets) -> dict:
    s, path = ctx.study, ctx.model.path
    return record_neurons([ctx.session.setup(path, t, s.tune) for t in sets], s.workdir, s.data_dir, list(s.seeds),
                          model_path=path, max_text_tokens=int(s.tune["max_text_tokens"]),
                          eval_batch_size=int(s.tune["eval_batch_size"]), max_examples=s.max_examples)


KIND = registry.register("explorer", None, plan=plan, cost=cost, run=run, order=105)
