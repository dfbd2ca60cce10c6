"""Stage suppress: a source task's skill neurons suppressed, a target task's accuracy measured, against random
controls.

    summary = suppress(setup, "qqp", workdir, data_dir, seeds, model_path=path, max_text_tokens=128,
                       eval_batch_size=64, levels=(0, 1, 3, 5))          # setup: the TARGET task's
    split="test": the same on the target's held-out test split -> WORKDIR/test/suppression/ (layout.split_root)

Reads   WORKDIR/predictivity/<model>/<source>.npz        (pred [L, N]; baseline for intervention "mean")
        WORKDIR/prompts/<model>/<prompt task>/seed_<s>/prompt.npy   (prompt task: the target's clean task)
Writes  WORKDIR/suppression/<model>/<source>__<target>.json (atomically; + .meta.json sidecar):
          {"model", "source", "target", "prompt_task", "seeds", "ks": [levels, %],
           "skill":  {"<k>": [accuracy per seed]},
           "random": {"<k>": [[accuracy per seed] per draw]},
           "skill_f1", "random_f1" (same layout), "neurons_per_layer": {"<k>": [count per layer]},
           "scope", "intervention", "noise_scale", "noise_relative_to", "mean_positions", "stream",
           "random_seed", "random_draws", "n_dev",
           "skill_correct": {"<k>": [[0/1 per dev example] per seed]},
           "random_correct": {"<k>": [[[0/1 per dev example] per seed] per draw]}, "labels": [dev labels]}
Interventions: "zero"; "mean" (each position's own TRAIN mean, seeds averaged; positions past the captured ones —
text positions when only the prompt was captured — are left alone: there is no mean for them); "gaussian"
(noise_scale absolute, or times each neuron's TRAIN std with noise_relative_to="train_std": needs the predictivity
npz's baseline_sq).
Skill neurons: the top-k% by Pred, per layer (the original) or globally; random controls: the same number per
layer, uniformly drawn, `random_draws` fixed draws (neurons/suppression.py). Neurons are suppressed at every token
position. Every mask is an array argument of ONE compiled evaluation; identical masks (k = 0) run once.
"""
from __future__ import annotations

import functools
import json
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from skillneurons_jax import io, layout, parallel
from skillneurons_jax.data import batches as batching
from skillneurons_jax.data import tasks
from skillneurons_jax.neurons import predictivity as statistics
from skillneurons_jax.neurons import suppression
from skillneurons_jax.neurons.predictivity import to_host
from skillneurons_jax.neurons.stats_options import StatsOptions
from skillneurons_jax.prompt import files, metrics, scoring
from skillneurons_jax.stages.predictivity import STREAM_PREFIX
from skillneurons_jax.stages.setup import TaskSetup, encode_split, hold, sharded_batches

STREAMS = ("encoder", "decoder")


def parse_levels(text) -> list[float]:
    """"0,1,3" -> [0.0, 1.0, 3.0]: suppression levels in percent, each in [0, 100], none repeated."""
    levels = [float(x) for x in str(text).replace(" ", "").split(",") if x != ""]
    if not levels:
        raise ValueError(f"--levels must list suppression levels in percent, got {text!r}")
    for k in levels:
        suppression.count_for(1, k)   # raises ValueError for a level outside [0, 100]
    if len(set(levels)) != len(levels):
        raise ValueError(f"--levels has repeated values: {levels}")
    return levels


def check_options(*, levels: Sequence[float], intervention: str, stream: str = "encoder", scope: str = "layer",
                  where: str = "") -> None:
    """THE option checks of this stage (levels in [0, 100], known scope, stream and intervention), for the launch
    flags, the pipeline's config (`where` prefixes the option's name in the message) and the stage itself."""
    for k in levels:
        suppression.count_for(1, float(k))
    if scope not in suppression.SCOPES:
        raise ValueError(f"{where}scope {scope!r}; allowed: {suppression.SCOPES}")
    if stream not in STREAMS:
        raise ValueError(f"{where}stream {stream!r}; allowed: {STREAMS}")
    if intervention not in suppression.INTERVENTION_KINDS:
        raise ValueError(f"{where}intervention {intervention!r}; allowed: {suppression.INTERVENTION_KINDS}")


def level_key(k: float) -> str:
    return str(int(k)) if float(k).is_integer() else repr(float(k))


def load_source(workdir, loaded, source: str, stream: str, need_baseline: bool, need_square: bool = False,
                exclude_slots: Sequence[int] = ()):
    """(pred [L, N], baseline [S, L, T, N] or None, baseline_sq [S, L, T, N] or None) of the source task, checked
    against the model. exclude_slots: Pred recomputed from the npz's acc (eqs. 4-5, the aggregations its sidecar
    records) without those prompt slots (slot 0 holds the readout, whose neurons are partly the readout itself)."""
    path = layout.predictivity_path(workdir, loaded.name, source)
    if not path.exists():
        raise FileNotFoundError(f"no predictivity for source task {source!r} of model {loaded.name!r}: {path} does "
                                f"not exist; run `python -m launch.predictivity --task {source} ...` first")
    prefix = STREAM_PREFIX[stream]
    with np.load(path, allow_pickle=False) as z:
        if prefix + "pred" not in z.files:
            raise ValueError(f"{path} has no {prefix}pred array (stream {stream!r}); it has {sorted(z.files)}")
        pred = np.asarray(z[prefix + "pred"])
        if exclude_slots:
            acc = np.asarray(z[prefix + "acc"], np.float64)
            keep = np.setdiff1d(np.arange(acc.shape[2]), np.asarray(list(exclude_slots), int))
            if keep.size == 0:
                raise ValueError(f"{path}: no prompt slot left after excluding {list(exclude_slots)}")
            side = io.sidecar_path(path)
            recorded = (json.loads(side.read_text()).get("options") or {}) if side.exists() else {}
            options = StatsOptions(token_aggregation=recorded.get("token_aggregation", "max"),
                                   seed_aggregation=recorded.get("seed_aggregation", "mean"))
            pred = statistics.aggregate(statistics.token_predictivity(acc[:, :, keep]), options)[0]
        baseline = np.asarray(z[prefix + "baseline"]) if need_baseline else None
        baseline_sq = None
        if need_square:
            if prefix + "baseline_sq" not in z.files:
                raise ValueError(f"{path} has no {prefix}baseline_sq array (TRAIN mean of a^2), which a noise scale "
                                 f"relative to the train std needs; recompute the predictivity of {source!r}")
            baseline_sq = np.asarray(z[prefix + "baseline_sq"])
    cfg = loaded.config
    layers = cfg.num_decoder_layers if stream == "decoder" else cfg.num_layers
    if pred.shape != (layers, cfg.intermediate):
        raise ValueError(f"{path}: pred has shape {pred.shape}, but model {loaded.name!r} has {layers} {stream} "
                         f"layers of {cfg.intermediate} neurons; it was computed for another model")
    return pred, baseline, baseline_sq


def make_eval(readout, stream: str, mesh):
    """jit: (params, prompts [S, P, H], batch, intervention, batch_index) -> (confusion [S, C, C], scores
    [S, B, C]) (replicated; the scores give the per-example correctness of the paired skill-vs-random test).

    The intervention is a traced argument: every mask and level reuses the one compiled function."""
    key = "intervention" if stream == "encoder" else "decoder_intervention"

    def one(params, prompt, batch, intervention):
        scores, _ = readout.scores(params, prompt, batch, **{key: intervention})
        return scores

    @functools.partial(jax.jit, out_shardings=parallel.replicated(mesh))
    def evaluate(params, prompts, batch, intervention, batch_index):
        if intervention.rng is not None:   # fresh Gaussian noise for every batch, still reproducible
            intervention = intervention.replace(rng=jax.random.fold_in(intervention.rng, batch_index))
        scores = jax.vmap(one, in_axes=(None, 0, None, None))(params, prompts, batch, intervention)
        return scoring.seed_confusion(scores, batch["labels"], batch["example_mask"]), scores

    return evaluate


def _unique_masks(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """masks [M, L, N] -> (unique masks [U, L, N] in first-seen order, index [M] into them)."""
    seen: dict[bytes, int] = {}
    unique, index = [], []
    for m in masks:
        key = np.packbits(m).tobytes()
        if key not in seen:
            seen[key] = len(unique)
            unique.append(m)
        index.append(seen[key])
    return np.stack(unique), np.asarray(index)


def suppress(setup: TaskSetup, source_task: str, workdir, data_dir, seeds: Sequence[int], *, model_path,
             max_text_tokens: int, eval_batch_size: int, levels: Sequence[float] = suppression.DEFAULT_PERCENTS,
             scope: str = "layer", intervention: str = "zero", noise_scale: float = 1.0, random_draws: int = 3,
             random_seed: int = 0, stream: str = "encoder", max_examples: Optional[int] = None,
             random_from: str = "all",
             batch_size: Optional[int] = None, prompt_task: Optional[str] = None,
             noise_relative_to: str = "absolute", split: str = "dev", exclude_slots: Sequence[int] = ()) -> dict:
    """See the module docstring. `setup` is the TARGET task's; `max_text_tokens` and its readout must be the
    prompts' tuning settings. Returns {"output", "skill": {k: mean}, "random": {k: mean}}. exclude_slots (e.g.
    (0,)): the skill neurons are selected by Pred without those prompt slots, and the result goes to
    layout.suppression_slots_excluded_path (dev only), beside the default."""
    source = tasks.get_task(source_task).name
    exclude_slots = tuple(int(j) for j in exclude_slots)
    if exclude_slots and split != "dev":
        raise ValueError("exclude_slots is a dev-split check of F5 (slot 0 excluded); got split " + repr(split))
    output = (layout.suppression_slots_excluded_path(workdir, setup.loaded.name, source, setup.task.name)
              if exclude_slots else layout.suppression_path(workdir, setup.loaded.name, source, setup.task.name,
                                                            split))
    with hold(output, f"suppress {setup.loaded.name}/{source}__{setup.task.name}"):
        return _suppress(setup, source, workdir, data_dir, seeds, model_path=model_path,
                         max_text_tokens=max_text_tokens, eval_batch_size=eval_batch_size, levels=levels, scope=scope,
                         intervention=intervention, noise_scale=noise_scale, random_draws=random_draws,
                         random_seed=random_seed, stream=stream, max_examples=max_examples, batch_size=batch_size,
                         random_from=random_from,
                         prompt_task=prompt_task, noise_relative_to=noise_relative_to, split=split,
                         exclude_slots=exclude_slots, output=output)


def _suppress(setup: TaskSetup, source_task: str, workdir, data_dir, seeds: Sequence[int], *, model_path,
              max_text_tokens, eval_batch_size, levels, scope, intervention, noise_scale, random_draws, random_seed,
              stream, max_examples, batch_size, prompt_task, noise_relative_to, split, exclude_slots=(),
              output=None, random_from="all") -> dict:
    """The body of `suppress`, run while its output is held."""
    t0 = time.time()
    seeds = [int(s) for s in seeds]
    source = tasks.get_task(source_task).name
    target = setup.task.name
    prompt_task = prompt_task or tasks.clean_task_of(target)
    levels = [float(k) for k in levels]
    check_options(levels=levels, stream=stream, intervention=intervention, scope=scope)
    loaded, readout = setup.loaded, setup.readout
    batch_size = int(batch_size or eval_batch_size)
    if stream == "decoder" and loaded.family != "t5":
        raise ValueError(f"stream 'decoder' needs a T5 model; {loaded.name!r} is a {loaded.family} encoder")
    if noise_relative_to not in suppression.NOISE_SCALES:
        raise ValueError(f"noise_relative_to {noise_relative_to!r}; allowed: {suppression.NOISE_SCALES}")
    relative = intervention == "gaussian" and noise_relative_to == "train_std"
    pred, baseline, baseline_sq = load_source(workdir, loaded, source, stream,
                                              need_baseline=intervention == "mean" or relative,
                                              need_square=relative, exclude_slots=exclude_slots)
    prompts_np, digests = files.load_tuned_prompts(workdir, loaded, readout, prompt_task, seeds, max_text_tokens)

    skill = suppression.skill_masks(pred, levels, scope)                                   # [K, L, N]
    random_masks = suppression.random_control_masks(skill, random_seed, random_draws, random_from)  # [D, K, L, N]
    all_masks = np.concatenate([skill, random_masks.reshape((-1,) + skill.shape[1:])])     # [(1 + D) K, L, N]
    unique, index = _unique_masks(all_masks)
    kw, mean_positions = {}, None
    if intervention == "mean":
        kw["means"] = suppression.position_means(baseline)                                # [L, T_v, N]
        mean_positions = int(kw["means"].shape[1])
    if intervention == "gaussian":
        std = suppression.neuron_train_std(baseline, baseline_sq) if relative else None
        kw.update(scale=suppression.gaussian_scale(noise_scale, noise_relative_to, std=std),
                  rng=jax.random.key(random_seed))
    stacked = suppression.stacked_interventions(unique, intervention, **kw)

    mesh = parallel.make_mesh()
    evaluate = make_eval(readout, stream, mesh)
    params = parallel.replicate(loaded.params, mesh)
    prompts = parallel.replicate(jnp.asarray(prompts_np), mesh)
    dev = encode_split(setup, split, data_dir, max_examples, int(max_text_tokens))   # dev, or the held-out test
    confusion = np.zeros((len(unique), len(seeds), 2, 2), np.int64)
    interventions = [parallel.replicate(suppression.take(stacked, u), mesh) for u in range(len(unique))]
    per_batch, offset = [], 0   # (scores [U, S, B, C], labels [B], index [B], example_mask [B]) for the paired test
    for b, batch in enumerate(sharded_batches(dev, batch_size, mesh)):
        on_mesh = parallel.shard_batch(batch, mesh)
        batch_scores = []
        for u, iv in enumerate(interventions):
            batch_confusion, scores = evaluate(params, prompts, on_mesh, iv, b)
            confusion[u] += to_host(batch_confusion)
            batch_scores.append(to_host(scores))
        rows = np.asarray(batch["example_mask"], bool)       # file order (sharded_batches without sorting)
        example_index = np.where(rows, offset + np.cumsum(rows) - 1, -1)
        offset += int(rows.sum())
        per_batch.append((np.stack(batch_scores), np.asarray(batch["labels"]), example_index, rows))
    correct, example_labels = suppression.example_correctness(per_batch, offset)
    accuracy, f1 = metrics.accuracy(confusion)[index], metrics.f1(confusion)[index]     # [(1 + D) K, S]
    n_levels, draws = len(levels), random_draws
    accuracy_skill, accuracy_random = accuracy[:n_levels], accuracy[n_levels:].reshape(draws, n_levels, -1)
    f1_skill, f1_random = f1[:n_levels], f1[n_levels:].reshape(draws, n_levels, -1)
    keys = [level_key(k) for k in levels]
    result = {
        "model": loaded.name, "source": source, "target": target, "prompt_task": prompt_task, "seeds": seeds,
        "ks": levels,
        "skill": {key: accuracy_skill[i].tolist() for i, key in enumerate(keys)},
        "random": {key: accuracy_random[:, i].tolist() for i, key in enumerate(keys)},
        "skill_f1": {key: f1_skill[i].tolist() for i, key in enumerate(keys)},
        "random_f1": {key: f1_random[:, i].tolist() for i, key in enumerate(keys)},
        "neurons_per_layer": {key: suppression.counts_per_layer(skill[i]).tolist() for i, key in enumerate(keys)},
        "scope": scope, "intervention": intervention, "noise_scale": noise_scale if intervention == "gaussian"
        else None, "noise_relative_to": noise_relative_to if intervention == "gaussian" else None,
        "mean_positions": mean_positions, "stream": stream, "random_seed": random_seed, "random_from": random_from,
        "random_draws": random_draws, "n_dev": int(confusion[0, 0].sum()), "split": split, "positions": "all",
        **({"excluded_prompt_slots": list(exclude_slots)} if exclude_slots else {}),
        **suppression.suppression_example_fields(correct, index, example_labels, keys, draws),
    }
    out = output or layout.suppression_path(workdir, loaded.name, source, target, split)
    if jax.process_index() == 0:
        io.atomic_write_json(out, result)
        io.write_sidecar(out, stage="suppress", model_path=str(model_path), prompt_sha256=digests,
                         source_predictivity=str(layout.predictivity_path(workdir, loaded.name, source)),
                         max_examples=max_examples, batch_size=batch_size, unique_masks=int(len(unique)),
                         seconds=round(time.time() - t0, 3), devices=jax.device_count(),
                         **batching.data_record({split: dev}))
    return {"output": str(out), "skill": {k: float(np.mean(v)) for k, v in result["skill"].items()},
            "random": {k: float(np.mean(v)) for k, v in result["random"].items()}}
