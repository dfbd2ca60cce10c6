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
           "eval_seconds": {"unpruned", "pruned"} (the dev pass of each, same batches), "model_dirs"}

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
from skillneurons_jax.prompt import eval_loop, files, scoring
from skillneurons_jax.stages import registry
from skillneurons_jax.stages.setup import TaskSetup, buckets_for, encode_split, hold, sharded_batches


@dataclasses.dataclass(frozen=True)
class PruneSettings:
    """config.prune (absent: no pruning; present: on unless enabled=False): the percentage of neurons kept per pruned
    layer, which layers (() = the upper two thirds), the random controls, the rows of the capturing pass over TRAIN
    (None: the study's cap) and which clean tasks (None: every clean task of the plan)."""
    enabled: bool = True
    keep_percent: float = 2.0
    layers: tuple[int, ...] = ()
    random_draws: int = 1
    random_seed: int = 0
    train_examples: Optional[int] = None
    tasks: Optional[tuple[str, ...]] = None

    FIELDS = ("enabled", "keep_percent", "layers", "random_draws", "random_seed", "train_examples", "tasks")

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
                   tasks=tuple(tasks.get_task(t).name for t in listed) if listed else None)

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
        return {"keep_percent": self.keep_percent, "layers": list(self.layers), "random_draws": self.random_draws,
                "random_seed": self.random_seed, "train_examples": _smaller(self.train_examples, max_examples)}


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


def prune(setup: TaskSetup, workdir, data_dir, seeds: Sequence[int], *, model_path, max_text_tokens: int,
          eval_batch_size: int, settings: PruneSettings = PruneSettings(), max_examples: Optional[int] = None
          ) -> dict:
    """Prunes `setup.task`'s model by its skill neurons, evaluates it against random-kept controls and writes the
    files of the module docstring; returns a summary dict."""
    output = layout.prune_path(workdir, setup.loaded.name, setup.task.name)
    with hold(output, f"prune {setup.loaded.name}/{setup.task.name}"):
        return _prune(setup, workdir, data_dir, [int(s) for s in seeds], model_path=model_path,
                      max_text_tokens=int(max_text_tokens), eval_batch_size=int(eval_batch_size), settings=settings,
                      max_examples=max_examples, output=output)


def _prune(setup, workdir, data_dir, seeds, *, model_path, max_text_tokens, eval_batch_size, settings, max_examples,
           output) -> dict:
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
    step = None      # skill and random models have the same widths: one compiled step serves them all
    for s, seed in enumerate(seeds):
        params, cfg = prune_params(loaded.params, config, skill, means[s])
        if step is None:
            small = dataclasses.replace(loaded, module=type(loaded.module)(cfg), params=params, config=cfg)
            step = scoring.make_eval_step(setup.readout_settings.build(small, setup.label_words).score_fn(), mesh)
        row, seconds = _evaluate(step, params, prompts[s:s + 1], batches, mesh)
        pruned_rows.append(row)
        pruned_s += seconds
        if jax.process_index() == 0:
            dirs.append(str(save_checkpoint(layout.pruned_model_dir(workdir, loaded.name, task, seed), params, cfg,
                                            source_folder=loaded.path, tokenizer=loaded.tokenizer)))
        for d, keep in enumerate(random):
            params_r, _ = prune_params(loaded.params, config, keep, means[s])
            random_rows[d].append(_evaluate(step, params_r, prompts[s:s + 1], batches, mesh)[0])

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
    if jax.process_index() == 0:
        io.atomic_write_json(output, result)
        io.write_sidecar(output, stage="prune", model=loaded.name, task=task, seeds=seeds,
                         model_path=str(model_path), prompt_sha256=digests,
                         settings=settings.fingerprint(max_examples), predictivity=str(pred_path))
    return {"output": str(output), "task": task, "seconds": time.time() - t0,
            "accuracy": {k: float(np.mean(result[k]["accuracy"])) for k in ("unpruned", "pruned")},
            "random_accuracy": float(np.mean([r["accuracy"] for r in result["random"]])) if random_rows else None}


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
    evaluation scores every seed at once: counted as one more pass per seed)."""
    cm, settings = ctx.cost, ctx.settings_of("prune")
    train, dev, seq = cm.sizes(task, train_cap=_smaller(settings.train_examples, ctx.study.max_examples))
    return cm.seconds(cm.forward(train, seq) + (2 + settings.random_draws) * cm.forward(dev, seq), compiles=3)


def run(ctx, task: str) -> dict:
    s, path = ctx.study, ctx.model.path
    return prune(ctx.session.setup(path, task, s.tune), s.workdir, s.data_dir, list(s.seeds), model_path=path,
                 max_text_tokens=int(s.tune["max_text_tokens"]), eval_batch_size=int(s.tune["eval_batch_size"]),
                 settings=ctx.settings_of("prune"), max_examples=s.max_examples)


KIND = registry.register("prune", PruneSettings, config_key="prune", plan=plan, cost=cost, run=run, order=50,
                         sections=[Section("pruning", prune_section.build)])
