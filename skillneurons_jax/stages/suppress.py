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

import dataclasses
import functools
import json
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from skillneurons_jax import fields, io, layout, parallel
from skillneurons_jax.analysis.report_context import Section
from skillneurons_jax.analysis.sections import suppression as suppression_section
from skillneurons_jax.data import batches as batching
from skillneurons_jax.data import tasks
from skillneurons_jax.models.ffn import Intervention
from skillneurons_jax.neurons import predictivity as statistics
from skillneurons_jax.neurons import suppression
from skillneurons_jax.neurons.predictivity import to_host
from skillneurons_jax.neurons.stats_options import StatsOptions
from skillneurons_jax.prompt import eval_loop, files, metrics, scoring
from skillneurons_jax.stages import registry
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


# The model's interventions built from the statistics' masks (neurons/ never imports models/).
def stacked_interventions(masks, kind: str = "zero", *, means=None, scale=None,
                          rng: Optional[jax.Array] = None, positions=None) -> Intervention:
    """One Intervention for masks bool [..., L, N]; every leaf gets the leading [...] axes.

    kind "zero": a -> 0;  "mean": a -> means [L, N] (every position) or [L, T, N] (position j gets its own mean,
    positions from T on untouched: `position_means`);  "gaussian": a -> a + scale * N(0, 1), scale a float or
    [L, N] (`gaussian_scale`), with keys split from `rng` (one per mask). positions: bool [T_full] (which
    positions of the full sequence) or None = all.
    """
    masks = jnp.asarray(masks, bool)
    if masks.ndim < 2:
        raise ValueError(f"masks must be [..., layers, neurons]; got shape {masks.shape}")
    lead = masks.shape[:-2]
    builders = {
        "zero": lambda: Intervention.zero(masks),
        "mean": lambda: (Intervention.position_mean(masks, means) if jnp.ndim(means) == 3
                         else Intervention.mean(masks, _required(means, "means", kind))),
        "gaussian": lambda: Intervention.gaussian(
            masks, _required(scale, "scale", kind),
            jax.random.split(_required(rng, "rng", kind), int(np.prod(lead, dtype=int))).reshape(
                lead + jax.random.split(rng, 1).shape[1:])),
    }
    if kind not in builders:
        raise ValueError(f"intervention kind {kind!r}; allowed: {suppression.INTERVENTION_KINDS}")
    if kind == "mean" and means is not None:
        shape, (layers, neurons) = tuple(jnp.shape(means)), tuple(masks.shape[-2:])
        if shape != (layers, neurons) and not (len(shape) == 3 and shape[0] == layers and shape[2] == neurons):
            raise ValueError(f"mean intervention: means have shape {shape}; expected [layers, neurons] = "
                             f"{(layers, neurons)} or [layers, positions, neurons]")
    iv = builders[kind]()
    if positions is not None:
        positions = jnp.asarray(positions, bool)
        iv = iv.replace(positions=jnp.broadcast_to(positions, lead + positions.shape))
    return iv


def _required(value, name: str, kind: str):
    if value is None:
        raise ValueError(f"the {kind!r} intervention needs {name}")
    return value


def take(stacked: Intervention, index) -> Intervention:
    """The Intervention for one level (index into the leading axes)."""
    return jax.tree.map(lambda x: x[index], stacked)


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
    stacked = stacked_interventions(unique, intervention, **kw)

    mesh = parallel.make_mesh()
    evaluate = make_eval(readout, stream, mesh)
    params = parallel.replicate(loaded.params, mesh)
    prompts = parallel.replicate(jnp.asarray(prompts_np), mesh)
    dev = encode_split(setup, split, data_dir, max_examples, int(max_text_tokens))   # dev, or the held-out test
    confusion = np.zeros((len(unique), len(seeds), 2, 2), np.int64)
    interventions = [parallel.replicate(take(stacked, u), mesh) for u in range(len(unique))]
    per_batch, offset = [], 0   # (scores [U, S, B, C], labels [B], index [B], example_mask [B]) for the paired test

    def step(placed):   # every mask on the one placed batch; the batch number keys its Gaussian noise
        return [evaluate(params, prompts, placed.device, iv, placed.number) for iv in interventions]

    def accumulate(placed, outs):
        nonlocal offset
        batch_scores = []
        for u, (batch_confusion, scores) in enumerate(outs):
            confusion[u] += to_host(batch_confusion)
            batch_scores.append(to_host(scores))
        rows = placed.keep                                    # file order (sharded_batches without sorting)
        example_index = np.where(rows, offset + np.cumsum(rows) - 1, -1)
        offset += int(rows.sum())
        per_batch.append((np.stack(batch_scores), np.asarray(placed.host["labels"]), example_index, rows))

    eval_loop.run(step, sharded_batches(dev, batch_size, mesh), mesh, accumulate)
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


# ---------------------------------------------------------------------------------------------------------------
# The stage kind (stages/registry.py): suppress/<m>/<src>__<tgt> for every task's own skill neurons (src == tgt),
# clean -> adversarial pairs and config suppression.extra_pairs -> suppression/<m>/<src>__<tgt>.json; held out:
# suppress/<m>/<task>__<task>.test on the task's TEST split -> test/suppression/<m>/<task>__<task>.json
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SuppressionSettings:
    """config.suppression, checked: levels (k, % of neurons), how the neurons are chosen and silenced, the random
    controls, which targets get their own curves (None: every task of the plan) and the dev row cap (None: the
    study's max_examples; the tighter of the two applies)."""
    levels: tuple[float, ...] = tuple(suppression.DEFAULT_PERCENTS)
    scope: str = "layer"
    intervention: str = "zero"
    noise_scale: float = 1.0
    noise_relative_to: str = "absolute"     # "absolute" | "train_std" (sigma times each neuron's TRAIN std)
    random_draws: int = 3
    random_seed: int = 0
    random_from: str = "all"                # "all" | "rest": random controls among every neuron or the non-skill
    extra_pairs: tuple[tuple[str, str], ...] = ()
    tasks: Optional[tuple[str, ...]] = None
    max_examples: Optional[int] = None
    held_out: bool = True                   # also the curves on each task's held-out TEST split (config.held_out on)

    FIELDS = ("levels", "scope", "intervention", "noise_scale", "noise_relative_to", "random_draws", "random_seed",
              "random_from", "extra_pairs", "tasks", "max_examples", "held_out")

    @classmethod
    def from_config(cls, block, where: str = "--config.suppression.") -> "SuppressionSettings":
        block = fields.block_dict(block)
        fields.refuse_unknown(block, cls.FIELDS, where)
        get = block.get
        try:
            levels = tuple(float(k) for k in fields.as_list(get("levels", suppression.DEFAULT_PERCENTS)))
        except (TypeError, ValueError):
            raise ValueError(f"{where}levels={get('levels')!r}: allowed: numbers >= 0 and <= 100, "
                             "comma-separated") from None
        for k in levels:
            fields.check(where + "levels", k, fields.Range(0, 100, integer=False))
        scope, intervention = str(get("scope", "layer")), str(get("intervention", "zero"))
        check_options(levels=levels, scope=scope, intervention=intervention, where=where)
        noise_relative_to = get("noise_relative_to", "absolute")
        if noise_relative_to not in suppression.NOISE_SCALES:
            raise ValueError(f"{where}noise_relative_to {noise_relative_to!r}; allowed: {suppression.NOISE_SCALES}")
        random_from = get("random_from", "all")
        if random_from not in suppression.RANDOM_FROM:
            raise ValueError(f"{where}random_from must be one of {suppression.RANDOM_FROM}, got {random_from!r}")
        pairs = []
        for p in fields.as_list(get("extra_pairs")):
            src, _, tgt = str(p).partition(":")
            if not tgt:
                raise ValueError(f"{where}extra_pairs entry {p!r} must be 'source:target'")
            pairs.append((tasks.get_task(src).name, tasks.get_task(tgt).name))
        listed = fields.as_list(get("tasks"))
        cap = get("max_examples")
        return cls(levels=levels, scope=scope, intervention=intervention,
                   noise_scale=fields.check(where + "noise_scale", get("noise_scale", 1.0),
                                            fields.Range(0, integer=False)),
                   noise_relative_to=str(noise_relative_to),
                   random_draws=fields.check(where + "random_draws", get("random_draws", 3), fields.Range(0)),
                   random_seed=fields.check(where + "random_seed", get("random_seed", 0), fields.Range(0)),
                   random_from=str(random_from),
                   extra_pairs=tuple(pairs),
                   tasks=tuple(tasks.get_task(t).name for t in listed) if listed else None,   # unknown: error
                   max_examples=fields.check(where + "max_examples", cap, fields.CAP),
                   held_out=_flag(get("held_out", True), where + "held_out"))

    def fingerprint(self, max_examples: Optional[int]) -> dict:
        """What a suppression stage's outputs depend on among these settings (its plan.Stage settings), with the
        dev cap in force (the tighter of this block's and the study's `max_examples`)."""
        out = {"levels": list(self.levels), "scope": self.scope, "intervention": self.intervention,
               "noise_scale": self.noise_scale, "noise_relative_to": self.noise_relative_to,
               "random_draws": self.random_draws, "random_seed": self.random_seed,
               "max_examples": smaller(self.max_examples, max_examples)}
        if self.random_from != "all":    # the default stays out: stages recorded before the option existed stay done
            out["random_from"] = self.random_from
        return out

    def curves_for(self, target: str) -> bool:
        """Whether `target`'s own suppression curves are computed (config.suppression.tasks; None: every task)."""
        return self.tasks is None or target in self.tasks


def _flag(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}={value!r}: allowed: True or False")
    return value


def smaller(a: Optional[int], b: Optional[int]) -> Optional[int]:
    """The tighter of two caps (None = no cap)."""
    return b if a is None else a if b is None else min(a, b)


def pairs_of(ctx) -> list[tuple[str, str]]:
    """Each task's own skill neurons, clean -> adversarial, then the configured extra pairs (present ones)."""
    tp, sp = ctx.tasks, ctx.study.suppression
    pairs = [(t, t) for t in tp.present] + [(tp.prompt_task_of(a), a) for a in tp.adversarial]
    pairs = [(src, tgt) for src, tgt in pairs if sp.curves_for(tgt)]
    pairs += [(s, t) for s, t in sp.extra_pairs if s in tp.present and t in tp.present]
    return list(dict.fromkeys(pairs))


def plan(ctx) -> None:
    s, m = ctx.study, ctx.model.name
    fingerprint = s.suppression.fingerprint(s.max_examples)
    for source, target in pairs_of(ctx):
        deps = list(dict.fromkeys([f"predictivity/{m}/{source}", f"tune/{m}/{s.prompt_task_of(target)}"]))
        ctx.add(f"suppress/{m}/{source}__{target}", [layout.suppression_path(ctx.workdir, m, source, target)],
                args={"source": source, "target": target, "prompt_task": s.adversarial_prompts.get(target)},
                deps=deps, group_task=s.prompt_task_of(target),
                settings=ctx.settings(s.prompt_task_of(target), suppression=fingerprint))


def held_out(ctx, task: str) -> None:
    s, m = ctx.study, ctx.model.name
    if not s.suppression.held_out or not s.suppression.curves_for(task):
        return
    ctx.add(f"suppress/{m}/{task}__{task}.test", [layout.suppression_path(ctx.workdir, m, task, task, "test")],
            args={"source": task, "target": task, "split": "test"},
            deps=[f"predictivity/{m}/{task}", f"tune/{m}/{task}"], group_task=task,
            settings=ctx.settings(task, suppression=s.suppression.fingerprint(s.max_examples), split="test"))


def cost(ctx, source: str, target: str, prompt_task: Optional[str] = None, split: str = "dev") -> float:
    """One pass over the target's rows per distinct mask (the skill mask and the random draws at each k > 0,
    one unsuppressed pass for k = 0)."""
    cm, sp = ctx.cost, ctx.study.suppression
    _, dev, seq = cm.sizes(target)
    if sp.max_examples is not None:
        dev = min(dev, sp.max_examples)
    levels = [k for k in sp.levels if k > 0]
    masks = len(levels) * (1 + sp.random_draws) + (len(sp.levels) > len(levels))
    return cm.seconds(masks * cm.forward(dev, seq))


def run(ctx, source: str, target: str, prompt_task: Optional[str] = None, split: str = "dev") -> dict:
    s, sp, path = ctx.study, ctx.study.suppression, ctx.model.path
    return suppress(ctx.session.setup(path, target, s.tune), source, s.workdir, s.data_dir, list(s.seeds),
                    model_path=path, max_text_tokens=int(s.tune["max_text_tokens"]),
                    eval_batch_size=int(s.tune["eval_batch_size"]), max_examples=smaller(sp.max_examples,
                                                                                         s.max_examples),
                    levels=list(sp.levels), prompt_task=prompt_task, scope=sp.scope, intervention=sp.intervention,
                    noise_scale=sp.noise_scale, noise_relative_to=sp.noise_relative_to,
                    random_draws=sp.random_draws, random_seed=sp.random_seed, random_from=sp.random_from, split=split)


KIND = registry.register("suppress", SuppressionSettings, config_key="suppression", plan=plan, cost=cost, run=run,
                         held_out=held_out, order=40, sections=[Section("suppression", suppression_section.build)])
