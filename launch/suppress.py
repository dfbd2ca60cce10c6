"""Suppress a source task's skill neurons and measure a target task's accuracy, against random controls.

    python -m launch.suppress --model_path DIR --source_task qqp --task advqqp --data_dir DIR --seeds 0,1,2 \
        --workdir DIR [--levels 0,1,3,5,7,9,11,13,15] [--scope layer|global] [--intervention zero|mean|gaussian]

Reads   WORKDIR/predictivity/<model>/<source>.npz        (pred [L, N]; baseline for --intervention mean)
        WORKDIR/prompts/<model>/<prompt task>/seed_<s>/prompt.npy   (prompt task: the target's clean task)
Writes  WORKDIR/suppression/<model>/<source>__<target>.json (atomically; + .meta.json sidecar):
          {"model", "source", "target", "prompt_task", "seeds", "ks": [levels, %],
           "skill":  {"<k>": [accuracy per seed]},
           "random": {"<k>": [[accuracy per seed] per draw]},
           "skill_f1", "random_f1" (same layout), "neurons_per_layer": {"<k>": [count per layer]},
           "scope", "intervention", "noise_scale", "stream", "random_seed", "random_draws", "n_dev"}
Skill neurons: the top-k% by Pred, per layer (the original) or globally; random controls: the same number per
layer, uniformly drawn, `random_draws` fixed draws (neurons/suppression.py). Neurons are suppressed at every token
position. Every mask is an array argument of ONE compiled evaluation; identical masks (k = 0) run once.
"""
from __future__ import annotations

import functools
import json
import logging
import pathlib
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from launch import common
from launch import predictivity as lp
from skillneurons_jax import io as sio
from skillneurons_jax import parallel
from skillneurons_jax.data import tasks
from skillneurons_jax.neurons import suppression as sup
from skillneurons_jax.neurons.predictivity import to_host
from skillneurons_jax.prompt import metrics as mx

log = logging.getLogger(__name__)

STREAMS = ("encoder", "decoder")


def suppression_path(workdir, model: str, source: str, target: str) -> pathlib.Path:
    return pathlib.Path(workdir) / "suppression" / model / f"{source}__{target}.json"


def parse_levels(text) -> list[float]:
    levels = [float(x) for x in str(text).replace(" ", "").split(",") if x != ""]
    if not levels:
        raise ValueError(f"--levels must list suppression levels in percent, got {text!r}")
    for k in levels:
        sup.count_for(1, k)   # raises ValueError for a level outside [0, 100]
    if len(set(levels)) != len(levels):
        raise ValueError(f"--levels has repeated values: {levels}")
    return levels


def _level_key(k: float) -> str:
    return str(int(k)) if float(k).is_integer() else repr(float(k))


def load_source(workdir, loaded, source: str, stream: str, need_baseline: bool):
    """(pred [L, N], baseline [S, L, T, N] or None) of the source task, checked against the model."""
    path = lp.predictivity_path(workdir, loaded.name, source)
    if not path.exists():
        raise FileNotFoundError(f"no predictivity for source task {source!r} of model {loaded.name!r}: {path} does "
                                f"not exist; run `python -m launch.predictivity --task {source} ...` first")
    pre = lp.STREAM_PREFIX[stream]
    with np.load(path, allow_pickle=False) as z:
        if pre + "pred" not in z.files:
            raise ValueError(f"{path} has no {pre}pred array (stream {stream!r}); it has {sorted(z.files)}")
        pred = np.asarray(z[pre + "pred"])
        baseline = np.asarray(z[pre + "baseline"]) if need_baseline else None
    cfg = loaded.config
    layers = cfg.num_decoder_layers if stream == "decoder" else cfg.num_layers
    if pred.shape != (layers, cfg.intermediate):
        raise ValueError(f"{path}: pred has shape {pred.shape}, but model {loaded.name!r} has {layers} {stream} "
                         f"layers of {cfg.intermediate} neurons; it was computed for another model")
    return pred, baseline


def make_eval(readout, stream: str, mesh):
    """jit: (params, prompts [S, P, H], batch, intervention, batch_index) -> confusion [S, C, C] (replicated).

    The intervention is a traced argument: every mask and level reuses the one compiled function."""
    key = "intervention" if stream == "encoder" else "decoder_intervention"

    def one(params, prompt, batch, iv):
        scores, _ = readout.scores(params, prompt, batch, **{key: iv})
        return scores

    @functools.partial(jax.jit, out_shardings=parallel.replicated(mesh))
    def evaluate(params, prompts, batch, iv, batch_index):
        if iv.rng is not None:   # fresh Gaussian noise for every batch, still reproducible
            iv = iv.replace(rng=jax.random.fold_in(iv.rng, batch_index))
        scores = jax.vmap(one, in_axes=(None, 0, None, None))(params, prompts, batch, iv)
        labels = jnp.broadcast_to(batch["labels"], scores.shape[:-1])
        mask = jnp.broadcast_to(batch["example_mask"], scores.shape[:-1])
        return mx.confusion(scores, labels, mask)

    return evaluate


def _unique_masks(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """masks [M, L, N] -> (unique masks [U, L, N] in first-seen order, index [M] into them)."""
    seen: dict[bytes, int] = {}
    uniq, index = [], []
    for m in masks:
        key = np.packbits(m).tobytes()
        if key not in seen:
            seen[key] = len(uniq)
            uniq.append(m)
        index.append(seen[key])
    return np.stack(uniq), np.asarray(index)


def run_suppression(model_path: str, source_task: str, target_task: Optional[str], data_dir, seeds: Sequence[int],
                    workdir, *, levels: Sequence[float] = sup.DEFAULT_PERCENTS, scope: str = "layer",
                    intervention: str = "zero", noise_scale: float = 1.0, random_draws: int = 3,
                    random_seed: int = 0, stream: str = "encoder", max_examples: Optional[int] = None,
                    batch_size: Optional[int] = None, prompt_task: Optional[str] = None, config=None
                    ) -> pathlib.Path:
    """See the module docstring. config: the readout / data settings of tuning (default configs/tune.py)."""
    t0 = time.time()
    seeds = [int(s) for s in seeds]
    source = tasks.get_task(source_task).name
    target = tasks.get_task(target_task or source_task).name
    prompt_task = prompt_task or lp.clean_task_of(target)
    levels = [float(k) for k in levels]
    for k in levels:
        sup.count_for(1, k)
    if stream not in STREAMS:
        raise ValueError(f"stream {stream!r}; allowed: {STREAMS}")
    if intervention not in sup.INTERVENTION_KINDS:
        raise ValueError(f"intervention {intervention!r}; allowed: {sup.INTERVENTION_KINDS}")
    cfg = lp.default_config() if config is None else config
    setup = common.setup_model_and_task(model_path, target, cfg)
    loaded, readout = setup.loaded, setup.readout
    batch_size = int(batch_size or cfg["eval_batch_size"])
    if stream == "decoder" and loaded.family != "t5":
        raise ValueError(f"stream 'decoder' needs a T5 model; {loaded.name!r} is a {loaded.family} encoder")
    pred, baseline = load_source(workdir, loaded, source, stream, need_baseline=intervention == "mean")
    prompts_np, digests = lp.load_prompts(workdir, setup, prompt_task, seeds, cfg)

    skill = sup.skill_masks(pred, levels, scope)                                   # [K, L, N]
    rand = sup.random_control_masks(skill, random_seed, random_draws)              # [D, K, L, N]
    all_masks = np.concatenate([skill, rand.reshape((-1,) + skill.shape[1:])])     # [(1 + D) K, L, N]
    uniq, index = _unique_masks(all_masks)
    kw = {}
    if intervention == "mean":
        kw["means"] = sup.layer_means(baseline)
    if intervention == "gaussian":
        kw.update(scale=noise_scale, rng=jax.random.key(random_seed))
    stacked = sup.stacked_interventions(uniq, intervention, **kw)

    mesh = parallel.make_mesh()
    evaluate = make_eval(readout, stream, mesh)
    params = parallel.replicate(loaded.params, mesh)
    prompts = parallel.replicate(jnp.asarray(prompts_np), mesh)
    dev = lp.encode_split(setup, target, "dev", data_dir, max_examples, int(cfg["max_text_tokens"]))
    conf = np.zeros((len(uniq), len(seeds), 2, 2), np.int64)
    ivs = [parallel.replicate(sup.take(stacked, u), mesh) for u in range(len(uniq))]
    for b, batch in enumerate(lp.batches(dev, batch_size, mesh)):
        on_mesh = parallel.shard_batch(batch, mesh)
        for u, iv in enumerate(ivs):
            conf[u] += to_host(evaluate(params, prompts, on_mesh, iv, b))
    acc, f1 = mx.accuracy(conf)[index], mx.f1(conf)[index]                        # [(1 + D) K, S]
    K, D = len(levels), random_draws
    acc_skill, acc_rand = acc[:K], acc[K:].reshape(D, K, -1)
    f1_skill, f1_rand = f1[:K], f1[K:].reshape(D, K, -1)
    keys = [_level_key(k) for k in levels]
    result = {
        "model": loaded.name, "source": source, "target": target, "prompt_task": prompt_task, "seeds": seeds,
        "ks": levels,
        "skill": {key: acc_skill[i].tolist() for i, key in enumerate(keys)},
        "random": {key: acc_rand[:, i].tolist() for i, key in enumerate(keys)},
        "skill_f1": {key: f1_skill[i].tolist() for i, key in enumerate(keys)},
        "random_f1": {key: f1_rand[:, i].tolist() for i, key in enumerate(keys)},
        "neurons_per_layer": {key: sup.counts_per_layer(skill[i]).tolist() for i, key in enumerate(keys)},
        "scope": scope, "intervention": intervention, "noise_scale": noise_scale if intervention == "gaussian"
        else None, "stream": stream, "random_seed": random_seed, "random_draws": random_draws,
        "n_dev": int(conf[0, 0].sum()), "positions": "all",
    }
    out = suppression_path(workdir, loaded.name, source, target)
    if jax.process_index() == 0:
        sio.atomic_write_json(out, result)
        sio.write_sidecar(out, stage="suppress", model_path=str(model_path), prompt_sha256=digests,
                          source_predictivity=str(lp.predictivity_path(workdir, loaded.name, source)),
                          max_examples=max_examples, batch_size=batch_size, unique_masks=int(len(uniq)),
                          seconds=round(time.time() - t0, 3), devices=jax.device_count())
    print(json.dumps({"output": str(out), "skill": {k: float(np.mean(v)) for k, v in result["skill"].items()},
                      "random": {k: float(np.mean(v)) for k, v in result["random"].items()}}))
    return out


def _define_flags() -> None:
    common.define_config("tune.py")
    lp.define_stage_flags()
    flags.DEFINE_string("source_task", None, "task whose skill neurons are suppressed")
    flags.DEFINE_string("levels", ",".join(str(k) for k in sup.DEFAULT_PERCENTS), "suppression levels in percent")
    flags.DEFINE_enum("scope", "layer", list(sup.SCOPES), "top-k% per layer (the original) or over the model")
    flags.DEFINE_enum("intervention", "zero", list(sup.INTERVENTION_KINDS), "what replaces the activations")
    flags.DEFINE_float("noise_scale", 1.0, "gaussian intervention: standard deviation of the added noise")
    flags.DEFINE_integer("random_draws", 3, "random control masks per level")
    flags.DEFINE_integer("random_seed", 0, "seed of the random controls (and of the Gaussian noise)")
    flags.DEFINE_enum("stream", "encoder", list(STREAMS), "T5: suppress encoder or decoder neurons")


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    common.require("model_path", "source_task", "data_dir", "workdir")
    common.start_distributed()
    run_suppression(f.model_path, f.source_task, f.task, f.data_dir, common.parse_seeds(f.seeds), f.workdir,
                    levels=parse_levels(f.levels), scope=f.scope, intervention=f.intervention,
                    noise_scale=f.noise_scale, random_draws=f.random_draws, random_seed=f.random_seed,
                    stream=f.stream, max_examples=f.max_examples, batch_size=f.batch_size,
                    prompt_task=f.prompt_task, config=f.config)


if __name__ == "__main__":
    _define_flags()
    common.run(main)
