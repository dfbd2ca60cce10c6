"""Stage prune: skill-neuron pruning (Wang et al. 2022, section 6.1) of a task's model, against random neurons kept.

    summary = prune(setup, workdir, data_dir, seeds, model_path=path, max_text_tokens=128, eval_batch_size=64,
                    settings=PruneSettings(keep_percent=2.0))

Reads   WORKDIR/predictivity/<model>/<task>.npz     pred [L, N] (eq. 5: one neuron ranking for every seed)
        WORKDIR/prompts/<model>/<task>/seed_<s>/prompt.npy
Writes  WORKDIR/prune/<model>/<task>/seed_<s>/      the pruned model of seed s (models.prune.save_checkpoint:
                                                    config.json with intermediate_sizes, model.safetensors,
                                                    tokenizer); load_pretrained reads it like any other
        WORKDIR/prune/<model>/<task>.json (+ .meta.json):
          {"model", "task", "seeds", "keep_percent", "layers" (pruned, 0-based), "intermediate_sizes",
           "unpruned": {accuracy, f1, confusion per seed}, "pruned": {...}, "random": [{...} per draw],
           "random_draws", "random_seed", "n_dev", "majority_rate", "n_train", "train_positions",
           "eval_seconds": {"unpruned", "pruned"} (the dev pass of each, same batches), "model_dirs",
           and with continue_steps > 0 "continued": {"steps", "recipe", "select_metric", "n_select", "pruned",
           "random" (accuracy, f1, confusion per seed, after continued tuning), "best_step" and "select_score"
           ({"pruned": [S], "random": [[S] per draw]}), "curves" (likewise, each run's evaluations on the select
           rows: step, accuracy, balanced accuracy, train loss), "seconds"}}

Continued prompt tuning (settings.continue_steps > 0; Wang et al. 2022 tune the prompt on the pruned model): each
seed's prompt is tuned on for continue_steps updates on each pruned model (the skill-kept one and every random-kept
control, the same steps), with the task's own tuning recipe (stages.tune: resolve_tune_config, train_config,
make_train_batches; prompt.train.train is the loop) and its checkpoint selection: the best prompt by the recipe's
select_metric on the dev rows the tune stage selects on (DevRows "select"), the starting prompt (step 0) included
as a candidate; the selected prompt is then measured on the same dev rows as everything else ("measure").

In each pruned layer (default: the upper two thirds) the top keep_percent % neurons by Pred stay (at least one);
the controls keep the same number of uniformly random neurons per layer (neurons.suppression.random_masks). A
removed neuron is replaced by ONE constant at every position, folded into the FFN output bias
(models.prune.prune_params): its mean activation over the TRAIN split and over every real position the FFN sees
(prompt and text, padding excluded), with the seed's prompt, computed here by one capturing pass. Why that mean:
the pruned model applies the constant at every position, and the mean over exactly those positions is the
constant closest to the removed activations (least squares). The eq. 2 baseline in the predictivity npz is a mean
per PROMPT position only; its average over prompt positions (what Skill-Neuron's script folds) leaves the text
positions, most of the sequence, out.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from skillneurons_jax import fields, io, layout, parallel
from skillneurons_jax.analysis.report_context import Section
from skillneurons_jax.analysis.sections import prune as prune_section
from skillneurons_jax.data import tasks
from skillneurons_jax.models.ffn import Capture
from skillneurons_jax.models.prune import prune_params, save_checkpoint
from skillneurons_jax.neurons import suppression
from skillneurons_jax.prompt import eval_loop, files, scoring, train
from skillneurons_jax.stages import registry
from skillneurons_jax.stages import tune as tune_stage
from skillneurons_jax.stages.setup import (TaskSetup, buckets_for, encode_split, hold, model_batches, round_up,
                                           sharded_batches)


@dataclasses.dataclass(frozen=True)
class PruneSettings:
    """config.prune (absent: no pruning; present: on unless enabled=False): the percentage of neurons kept per pruned
    layer, which layers (() = the upper two thirds), the random controls, the rows of the capturing pass over TRAIN
    (None: the study's cap), which clean tasks (None: every clean task of the plan), and continue_steps: updates of
    continued prompt tuning on each pruned model (0: none, the prompts as tuned on the unpruned model)."""
    enabled: bool = True
    keep_percent: float = 2.0
    layers: tuple[int, ...] = ()
    random_draws: int = 1
    random_seed: int = 0
    train_examples: Optional[int] = None
    tasks: Optional[tuple[str, ...]] = None
    continue_steps: int = 0

    FIELDS = ("enabled", "keep_percent", "layers", "random_draws", "random_seed", "train_examples", "tasks",
              "continue_steps")

    @classmethod
    def from_config(cls, block, where: str = "--config.prune.") -> "PruneSettings":
        block = fields.block_dict(block)
        fields.refuse_unknown(block, cls.FIELDS, where)
        get = block.get
        enabled = get("enabled", True)
        if not isinstance(enabled, bool):
            raise ValueError(f"{where}enabled={enabled!r}: allowed: True or False")
        try:
            layers = tuple(int(x) for x in fields.as_list(get("layers")))
        except (TypeError, ValueError):
            raise ValueError(f"{where}layers={get('layers')!r}: allowed: layer indices (0-based, comma-separated), "
                             "or empty (the upper two thirds)") from None
        for layer in layers:
            fields.check(where + "layers", layer, fields.Range(0))
        listed = fields.as_list(get("tasks"))
        return cls(enabled=enabled,
                   keep_percent=fields.check(where + "keep_percent", get("keep_percent", 2.0),
                                             fields.Range(0, 100, integer=False, open_low=True)),
                   layers=layers,
                   random_draws=fields.check(where + "random_draws", get("random_draws", 1), fields.Range(0)),
                   random_seed=fields.check(where + "random_seed", get("random_seed", 0), fields.Range(0)),
                   train_examples=fields.check(where + "train_examples", get("train_examples"), fields.CAP),
                   tasks=tuple(tasks.get_task(t).name for t in listed) if listed else None,
                   continue_steps=fields.check(where + "continue_steps", get("continue_steps", 0), fields.Range(0)))

    def pruned_layers(self, num_layers: int) -> list[int]:
        """The configured layers (checked against the model), or the upper two thirds."""
        if not self.layers:
            return list(range(num_layers - (2 * num_layers) // 3, num_layers))
        bad = [layer for layer in self.layers if not 0 <= layer < num_layers]
        if bad:
            raise ValueError(f"--config.prune.layers: layer(s) {bad} outside 0..{num_layers - 1} (the model has "
                             f"{num_layers} layers)")
        return sorted(set(self.layers))

    def fingerprint(self, max_examples: Optional[int]) -> dict:
        """What the outputs depend on. continue_steps only when set: a stage without continued tuning keeps the
        fingerprint it had before the option existed (the recipe it would use is the tune stage's, a dependency)."""
        out = {"keep_percent": self.keep_percent, "layers": list(self.layers), "random_draws": self.random_draws,
               "random_seed": self.random_seed, "train_examples": _smaller(self.train_examples, max_examples)}
        if self.continue_steps:
            out["continue_steps"] = self.continue_steps
        return out


def _smaller(a: Optional[int], b: Optional[int]) -> Optional[int]:
    return b if a is None else a if b is None else min(a, b)


def keep_masks(pred, layers: Sequence[int], keep_percent: float, random_draws: int, random_seed: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(skill bool [L, N], random bool [D, L, N]): in `layers` the top keep_percent % by pred [L, N] (at least
    one neuron), or as many uniformly random ones; every neuron of the other layers."""
    pred = np.asarray(pred)
    num_layers, num_neurons = pred.shape
    count = max(1, suppression.count_for(num_neurons, keep_percent))
    order = suppression.ranking(pred, "layer")
    counts = np.full((1, num_layers), num_neurons)
    counts[0, list(layers)] = count
    skill = np.ones(pred.shape, bool)
    for layer in layers:
        skill[layer] = False
        skill[layer, order[layer, :count]] = True
    random = suppression.random_masks(counts, num_neurons, random_seed, max(random_draws, 1))[:, 0]
    return skill, random[:random_draws]


def train_means(setup: TaskSetup, prompts, encoded, batch_size: int, mesh) -> tuple[np.ndarray, int]:
    """Each seed's mean FFN activation over every real position (prompt + text) of the encoded rows: float64
    [S, L, N], and the number of positions averaged (per seed). One seed at a time (a capture of every position
    of a batch is [L, B, T, N])."""
    readout, prompt_len = setup.readout, prompts.shape[1]

    @jax.jit
    def sums(params, prompt, batch):
        _, out = readout.scores(params, prompt, batch, capture=Capture())
        real = jnp.concatenate([jnp.ones((batch["input_ids"].shape[0], prompt_len), jnp.float32),
                                batch["attention_mask"].astype(jnp.float32)], axis=1)
        real = real * batch["example_mask"].astype(jnp.float32)[:, None]
        return jnp.einsum("lbtn,bt->ln", out.neurons, real), jnp.sum(real)

    params = parallel.replicate(setup.loaded.params, mesh)
    total = np.zeros((prompts.shape[0], setup.loaded.config.num_layers, setup.loaded.config.intermediate))
    positions = 0

    def step(prompt, placed):
        return sums(params, prompt, placed.device)

    def accumulate(s, placed, out):
        nonlocal positions
        acts, n = out
        total[s] += np.asarray(acts, np.float64)
        positions += int(round(float(n)))

    for s in range(prompts.shape[0]):
        prompt = parallel.replicate(jnp.asarray(prompts[s]), mesh)
        positions = 0
        eval_loop.run(functools.partial(step, prompt),
                      sharded_batches(encoded, batch_size, mesh, buckets=buckets_for([encoded])), mesh,
                      functools.partial(accumulate, s))
    return total / max(positions, 1), positions


def _evaluate(step, params, prompts, batches, mesh) -> tuple[dict, float]:
    """Accuracy, F1 and confusion per seed of `prompts` [S, P, H] under one params tree (step: one
    scoring.make_eval_step, compiled once for every params tree of its shapes), and the seconds taken."""
    t0 = time.perf_counter()
    confusion, _ = scoring.evaluate(step, parallel.replicate(jnp.asarray(prompts), mesh),
                                    parallel.replicate(params, mesh), batches, mesh)
    return scoring.per_seed(confusion), time.perf_counter() - t0


class ContinuedTuning:
    """Continued prompt tuning of one task's prompts on pruned models: the task's resolved tuning recipe
    (stages.tune.resolve_tune_config of `tune_config`) for `steps` updates, its TRAIN rows and batches as the tune
    stage makes them, and its checkpoint selection on the dev "select" rows, the starting prompt (step 0) a
    candidate. `run` calls prompt.train.train (no files, nothing resumed): one seed's prompt on one params tree."""

    def __init__(self, setup: TaskSetup, tune_config, steps: int, data_dir, max_examples: Optional[int], mesh):
        loaded, task = setup.loaded, setup.task.name
        cfg = tune_stage.resolve_tune_config(tune_config, loaded.name, loaded.family, task, max_steps=steps)
        self.config = dataclasses.replace(tune_stage.train_config(cfg), eval_at_start=True, progress=False,
                                          time_limit_s=0.0)
        self.train_enc = encode_split(setup, "train", data_dir, cfg.get("train_max_examples") or max_examples,
                                      cfg["max_text_tokens"])
        select = encode_split(setup, "dev", data_dir, cfg.get("dev_max_examples") or max_examples,
                              cfg["max_text_tokens"], role="select")
        buckets = buckets_for([self.train_enc, select])
        self.select_batches = list(model_batches(select, round_up(cfg["eval_batch_size"],
                                                                  parallel.num_data_shards(mesh)),
                                                 buckets=buckets, sort_by_length=True))
        self.train_batches = tune_stage.make_train_batches(self.train_enc, int(cfg["batch_size"]), buckets,
                                                           bool(cfg["group_by_length"]))
        self.n_select, self.mesh, self.steps = len(select), mesh, int(steps)

    def recipe(self) -> dict:
        """The training settings used (prompt.train.TrainConfig's fingerprint, its budget and schedule)."""
        return {**self.config.fingerprint(), "max_steps": self.config.max_steps, "epochs": self.config.epochs,
                "eval_every": self.config.eval_every, "eval_at_start": True, "train_examples": len(self.train_enc)}

    def run(self, score_fn, params, prompt, seed: int) -> tuple[np.ndarray, dict]:
        """(the selected prompt [P, H], {"best_step", "select_score" (its select_metric on the select rows),
        "curve": [{"step", "select_accuracy", "select_balanced_accuracy", "train_loss"} per evaluation]}) after
        tuning `prompt` [P, H] on `params` (seed: the data order of the tune stage's run of that seed)."""
        result = train.train(score_fn, params, np.asarray(prompt)[None], [int(seed)], self.train_batches,
                             self.select_batches, self.config, pad_id=self.train_enc.pad_id, mesh=self.mesh,
                             description=f"continued tuning, seed {seed}")
        curve = [{"step": r["step"], "select_accuracy": r["dev_accuracy"],
                  "select_balanced_accuracy": r["dev_balanced_accuracy"], "train_loss": r["train_loss"]}
                 for r in result.history]
        return result.best_prompts[0], {"best_step": int(result.best_step[0]),
                                        "select_score": float(result.best_accuracy[0]), "curve": curve}


def prune(setup: TaskSetup, workdir, data_dir, seeds: Sequence[int], *, model_path, max_text_tokens: int,
          eval_batch_size: int, settings: PruneSettings = PruneSettings(), max_examples: Optional[int] = None,
          tune_config=None) -> dict:
    """Prunes `setup.task`'s model by its skill neurons, evaluates it against random-kept controls and writes the
    files of the module docstring; returns a summary dict. `tune_config`: the study's tuning block (the recipe of
    continued tuning; needed only when settings.continue_steps > 0)."""
    if settings.continue_steps and tune_config is None:
        raise ValueError("prune: continue_steps > 0 needs the tuning settings (tune_config) for its recipe")
    output = layout.prune_path(workdir, setup.loaded.name, setup.task.name)
    with hold(output, f"prune {setup.loaded.name}/{setup.task.name}"):
        return _prune(setup, workdir, data_dir, [int(s) for s in seeds], model_path=model_path,
                      max_text_tokens=int(max_text_tokens), eval_batch_size=int(eval_batch_size), settings=settings,
                      max_examples=max_examples, output=output, tune_config=tune_config)


def _prune(setup, workdir, data_dir, seeds, *, model_path, max_text_tokens, eval_batch_size, settings, max_examples,
           output, tune_config) -> dict:
    t0 = time.time()
    loaded, task = setup.loaded, setup.task.name
    config = loaded.config
    pred_path = layout.predictivity_path(workdir, loaded.name, task)
    if not pred_path.exists():
        raise FileNotFoundError(f"{pred_path}: no predictivity for {loaded.name}/{task}; run its predictivity "
                                "stage first")
    with np.load(pred_path, allow_pickle=False) as z:
        pred = np.asarray(z["pred"])
    if pred.shape != (config.num_layers, config.intermediate):
        raise ValueError(f"{pred_path}: pred has shape {list(pred.shape)}; the model has "
                         f"[{config.num_layers}, {config.intermediate}] neurons")
    prompts, digests = files.load_tuned_prompts(workdir, loaded, setup.readout, task, seeds, max_text_tokens)
    layers = settings.pruned_layers(config.num_layers)
    skill, random = keep_masks(pred, layers, settings.keep_percent, settings.random_draws, settings.random_seed)

    mesh = parallel.make_mesh()
    batch_size = -(-eval_batch_size // parallel.num_data_shards(mesh)) * parallel.num_data_shards(mesh)
    train = encode_split(setup, "train", data_dir, _smaller(settings.train_examples, max_examples), max_text_tokens)
    dev = encode_split(setup, "dev", data_dir, max_examples, max_text_tokens)
    # the capture holds every position of a batch: a quarter of the evaluation batch keeps it in memory
    capture_batch = max(parallel.num_data_shards(mesh), batch_size // 4 // parallel.num_data_shards(mesh)
                        * parallel.num_data_shards(mesh))
    means, positions = train_means(setup, prompts, train, capture_batch, mesh)
    batches = list(sharded_batches(dev, batch_size, mesh, buckets=buckets_for([dev])))

    unpruned, unpruned_s = _evaluate(scoring.make_eval_step(setup.readout.score_fn(), mesh), loaded.params,
                                     prompts, batches, mesh)
    pruned_rows, random_rows, pruned_s, dirs = [], [[] for _ in range(len(random))], 0.0, []
    step = score_fn = None      # skill and random models have the same widths: one compiled step serves them all
    tuning = (ContinuedTuning(setup, tune_config, settings.continue_steps, data_dir, max_examples, mesh)
              if settings.continue_steps else None)
    # per arm: [(measured row, run info) per seed] for "pruned", one such list per draw for "random"
    continued = {"pruned": [], "random": [[] for _ in range(len(random))]}
    t_continued = 0.0

    def tune_on(params, s, runs):
        """Continued tuning of seed s's prompt on `params`, measured on the dev measurement rows."""
        nonlocal t_continued
        t = time.perf_counter()
        prompt, info = tuning.run(score_fn, params, prompts[s], seeds[s])
        runs.append((_evaluate(step, params, prompt[None], batches, mesh)[0], info))
        t_continued += time.perf_counter() - t

    for s, seed in enumerate(seeds):
        params, cfg = prune_params(loaded.params, config, skill, means[s])
        if step is None:
            small = dataclasses.replace(loaded, module=type(loaded.module)(cfg), params=params, config=cfg)
            score_fn = setup.readout_settings.build(small, setup.label_words).score_fn()
            step = scoring.make_eval_step(score_fn, mesh)
        row, seconds = _evaluate(step, params, prompts[s:s + 1], batches, mesh)
        pruned_rows.append(row)
        pruned_s += seconds
        if jax.process_index() == 0:
            dirs.append(str(save_checkpoint(layout.pruned_model_dir(workdir, loaded.name, task, seed), params, cfg,
                                            source_folder=loaded.path, tokenizer=loaded.tokenizer)))
        if tuning is not None:
            tune_on(params, s, continued["pruned"])
        for d, keep in enumerate(random):
            params_r, _ = prune_params(loaded.params, config, keep, means[s])
            random_rows[d].append(_evaluate(step, params_r, prompts[s:s + 1], batches, mesh)[0])
            if tuning is not None:
                tune_on(params_r, s, continued["random"][d])

    def join(rows):   # per-seed rows of single-seed evaluations -> one per-seed dict
        return {k: [r[k][0] for r in rows] for k in ("accuracy", "f1", "confusion")}

    labels = np.concatenate([b["labels"][b["example_mask"].astype(bool)] for b in batches])
    result = {"model": loaded.name, "task": task, "seeds": seeds, "keep_percent": settings.keep_percent,
              "layers": layers, "intermediate_sizes": [int(n) for n in skill.sum(axis=1)],
              "unpruned": unpruned, "pruned": join(pruned_rows), "random": [join(r) for r in random_rows],
              "random_draws": settings.random_draws, "random_seed": settings.random_seed,
              "n_dev": int(labels.size), "majority_rate": float(np.bincount(labels).max() / max(labels.size, 1)),
              "n_train": int(len(train.lengths)), "train_positions": positions,
              "means": "TRAIN mean over every real position (prompt and text), per seed",
              "eval_seconds": {"unpruned": unpruned_s, "pruned": pruned_s}, "model_dirs": dirs}
    if tuning is not None:
        def info(key):    # {"pruned": [S], "random": [[S] per draw]} of one run field
            return {"pruned": [i[key] for _, i in continued["pruned"]],
                    "random": [[i[key] for _, i in runs] for runs in continued["random"]]}

        result["continued"] = {"steps": tuning.steps, "recipe": tuning.recipe(),
                               "select_metric": tuning.config.select_metric, "n_select": tuning.n_select,
                               "pruned": join([row for row, _ in continued["pruned"]]),
                               "random": [join([row for row, _ in runs]) for runs in continued["random"]],
                               "best_step": info("best_step"), "select_score": info("select_score"),
                               "curves": info("curve"), "seconds": t_continued}
    if jax.process_index() == 0:
        io.atomic_write_json(output, result)
        io.write_sidecar(output, stage="prune", model=loaded.name, task=task, seeds=seeds,
                         model_path=str(model_path), prompt_sha256=digests,
                         settings=settings.fingerprint(max_examples), predictivity=str(pred_path))
    summary = {"output": str(output), "task": task, "seconds": time.time() - t0,
               "accuracy": {k: float(np.mean(result[k]["accuracy"])) for k in ("unpruned", "pruned")},
               "random_accuracy": float(np.mean([r["accuracy"] for r in result["random"]])) if random_rows else None}
    if tuning is not None:
        summary["continued_accuracy"] = float(np.mean(result["continued"]["pruned"]["accuracy"]))
    return summary


# ---------------------------------------------------------------------------------------------------------------
# The stage kind (stages/registry.py): prune/<m>/<task> for every clean task of the plan when config.prune is on
# -> prune/<m>/<task>.json and prune/<m>/<task>/seed_<s>/ (the pruned checkpoints)
# ---------------------------------------------------------------------------------------------------------------
def plan(ctx) -> None:
    s, m, settings = ctx.study, ctx.model.name, ctx.settings_of("prune")
    if settings is None or not settings.enabled:
        return
    for task in [t for t in ctx.tasks.clean if settings.tasks is None or t in settings.tasks]:
        ctx.add(f"prune/{m}/{task}", [layout.prune_path(ctx.workdir, m, task)], args={"task": task},
                deps=[f"predictivity/{m}/{task}", f"tune/{m}/{task}"], group_task=task,
                settings=ctx.settings(task, prune=settings.fingerprint(s.max_examples)))


def cost(ctx, task: str) -> float:
    """The capturing pass over the TRAIN rows, and 1 + draws evaluations of the dev rows per seed (the unpruned
    evaluation scores every seed at once: counted as one more pass per seed); with continue_steps, per seed and
    pruned model (1 + draws) the tune stage's training step priced at the unpruned model's FLOPs (an upper bound:
    the pruned FFNs are smaller), two evaluations of the select rows and more (one per eval_every), one more
    measurement, and a train and an eval program each (compiled once, then read from the compilation cache)."""
    cm, settings = ctx.cost, ctx.settings_of("prune")
    train_rows, dev, seq = cm.sizes(task, train_cap=_smaller(settings.train_examples, ctx.study.max_examples))
    flops = cm.forward(train_rows, seq) + (2 + settings.random_draws) * cm.forward(dev, seq)
    compiles = 3
    if settings.continue_steps:
        cfg = cm.tune_settings(task)
        steps, bs = settings.continue_steps, int(cfg.get("batch_size") or 16)
        _, select, _ = cm.sizes(task, cfg.get("train_max_examples"), cfg.get("dev_max_examples"))
        select = select * (cfg.get("select_percent") or 100) / 100
        evals = 1 + math.ceil(steps / (int(cfg.get("eval_every") or 0) or steps))
        models = 1 + settings.random_draws
        flops += models * (tune_stage.TRAIN_STEP_FACTOR * cm.forward(steps * bs, seq) + evals * cm.forward(select, seq)
                           + cm.forward(dev, seq))
        compiles += 2 * models * len(ctx.study.seeds)
    return cm.seconds(flops, compiles=compiles)


def run(ctx, task: str) -> dict:
    s, path = ctx.study, ctx.model.path
    return prune(ctx.session.setup(path, task, s.tune), s.workdir, s.data_dir, list(s.seeds), model_path=path,
                 max_text_tokens=int(s.tune["max_text_tokens"]), eval_batch_size=int(s.tune["eval_batch_size"]),
                 settings=ctx.settings_of("prune"), max_examples=s.max_examples, tune_config=s.tune)


KIND = registry.register("prune", PruneSettings, config_key="prune", plan=plan, cost=cost, run=run, order=50,
                         sections=[Section("pruning", prune_section.build)])
