"""Stage probe: how far a frozen model's features separate a task's labels (the learnability reference).

    result = probe(loaded, "sst2", data_dir, workdir, ProbeSettings())   # -> dict, also WORKDIR/probe/<m>/<t>.json

For each encoding and feature a linear probe (analysis.linear_probe: L2 logistic regression, strength chosen on a
carve of the train rows) is fitted on at most `train_cap` train rows (a seeded random subset) and scored on the
dev and test splits (balanced accuracy with a bootstrap interval, majority rate, n):

  encodings  "joint": the task's template for the model family, no prompt (one sequence, as the prompt sees it);
             "separate" (pair tasks): each text alone in the single-text template, features [u, v, |u - v|, u * v]
             (how a bi-encoder such as a sentence-transformers checkpoint is meant to be read).
  features   "mean": the final hidden states averaged over the real tokens (special tokens included, as
             sentence-transformers pool); "slot0": the final hidden state at position 0 ([CLS] / <s>; with a
             prompt, slot 0 is the readout's slot).
The reference ("reference" in the result) is the joint encoding's feature with the higher balanced accuracy on the
train carve (never chosen on dev or test): the one-sequence figure a prompt's accuracy is compared with.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from skillneurons_jax import fields, io, layout
from skillneurons_jax.analysis import linear_probe
from skillneurons_jax.data import batches as batching
from skillneurons_jax.data import readers, tasks
from skillneurons_jax.prompt import eval_loop
from skillneurons_jax.stages import registry

ENCODINGS = ("joint", "separate")
FEATURES = ("mean", "slot0")
ENCODING_CHOICES = ("auto", "joint", "both")
SINGLE_TEMPLATES = {"roberta": "encoder_single", "bert": "encoder_single", "t5": "t5_single"}


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """train_cap: train rows fitted on (a random subset of that size, by `seed`); eval_cap: rows per dev / test
    split (None: all); encodings: "joint", "both" (joint and, for pair tasks, separate) or "auto" (both for a
    checkpoint without an LM head, i.e. a sentence encoder, joint otherwise). As the plan's kind (config.probe;
    absent or empty: no probe stages): `enabled` and `tasks` (the clean tasks probed; None: every clean task of the
    plan), which the result does not depend on (`to_dict` leaves them out)."""
    train_cap: int = 4000
    eval_cap: int | None = None
    seed: int = 0
    encodings: str = "auto"
    batch_size: int = 64
    max_text_tokens: int = 128
    splits: tuple[str, ...] = ("dev", "test")
    enabled: bool = True
    tasks: tuple[str, ...] | None = None

    FIELDS = ("train_cap", "eval_cap", "seed", "encodings", "batch_size", "max_text_tokens", "splits", "enabled",
              "tasks")
    PLAN_ONLY = ("enabled", "tasks")

    @classmethod
    def from_config(cls, block, where: str = "--config.probe.", spelled=None) -> "ProbeSettings":
        """THE parsing of the probe's settings, for config.probe and launch.probe's flags (`where` "--" and
        `spelled` {field: flag name} where a flag is named otherwise): unknown keys refused, every number checked,
        one ValueError naming the field as the command spells it."""
        block = {k: v for k, v in fields.block_dict(block).items()}
        fields.refuse_unknown(block, cls.FIELDS, where)
        name = lambda field: where + (spelled or {}).get(field, field)      # noqa: E731
        get = block.get
        out = {}
        for field, rule in (("train_cap", fields.Range(1)), ("batch_size", fields.Range(1)),
                            ("max_text_tokens", fields.Range(1)), ("seed", fields.Range(0)),
                            ("eval_cap", fields.CAP)):
            if field in block:
                out[field] = fields.check(name(field), get(field), rule)
        if "encodings" in block:
            if get("encodings") not in ENCODING_CHOICES:
                raise ValueError(f"{name('encodings')}={get('encodings')!r}: allowed: {', '.join(ENCODING_CHOICES)}")
            out["encodings"] = str(get("encodings"))
        if "splits" in block:
            splits = tuple(fields.as_list(get("splits")))
            if not splits or not set(splits) <= {"dev", "test"}:
                raise ValueError(f"{name('splits')}={get('splits')!r}: allowed: dev, test (comma-separated)")
            out["splits"] = splits
        listed = [tasks.get_task(t) for t in fields.as_list(get("tasks"))]        # unknown name: ValueError
        for spec in listed:
            if spec.clean_task is not None:
                raise ValueError(f"{name('tasks')}: {spec.name!r} is an adversarial set without a train split; "
                                 f"probe its clean task {spec.clean_task!r}")
        return cls(**out, enabled=bool(get("enabled", True)),
                   tasks=tuple(s.name for s in listed) if listed else None)

    def __post_init__(self):
        if self.encodings not in ENCODING_CHOICES:
            raise ValueError(f"probe encodings must be one of {ENCODING_CHOICES}, got {self.encodings!r}")
        for name in ("train_cap", "batch_size", "max_text_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"probe {name} must be a positive integer, got {getattr(self, name)}")
        if self.eval_cap is not None and int(self.eval_cap) < 1:
            raise ValueError(f"probe eval_cap must be a positive integer or None, got {self.eval_cap}")
        if not set(self.splits) <= {"dev", "test"}:
            raise ValueError(f"probe splits must be among dev, test; got {self.splits}")

    def to_dict(self) -> dict:
        """What a probe result depends on (recorded in it; the plan's fingerprint)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.PLAN_ONLY}


def encodings_for(loaded, spec: tasks.TaskSpec, settings: ProbeSettings) -> tuple[str, ...]:
    if not spec.is_pair or settings.encodings == "joint":
        return ("joint",)
    if settings.encodings == "both" or not loaded.config.has_lm_head:
        return ENCODINGS
    return ("joint",)


def make_pool(loaded):
    """A jitted (params, ids [B, T], mask [B, T]) -> (mean [B, H], slot0 [B, H]) of the final hidden states."""
    module = loaded.module
    start = int(getattr(loaded.config, "decoder_start_token_id", 0))

    def pool(params, ids, mask):
        kwargs = {}
        if loaded.family == "t5":   # only the encoder's states are read; one decoder step keeps the call valid
            kwargs["decoder_input_ids"] = jnp.full((ids.shape[0], 1), start, jnp.int32)
        hidden = module.apply({"params": params}, ids, mask, **kwargs).hidden          # [B, T, H]
        m = mask.astype(hidden.dtype)[..., None]
        mean = (hidden * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)
        return mean, hidden[:, 0]
    return jax.jit(pool)


def features(loaded, encoded: batching.Encoded, batch_size: int, pool=None) -> dict[str, np.ndarray]:
    """{"mean": [E, H], "slot0": [E, H]} float32 for the rows of `encoded`, in its order."""
    pool = pool or make_pool(loaded)
    hidden = loaded.config.hidden
    out = {name: np.zeros((len(encoded), hidden), np.float32) for name in FEATURES}
    batches = batching.iterate(encoded, batch_size, seed=None, sort_by_length=True)
    # mesh None: the pool is a plain jit on the default device (one compile per bucket length)
    for placed, (mean, slot0) in eval_loop.outputs(
            lambda b: pool(loaded.params, b.host["input_ids"], b.host["attention_mask"]), batches, None):
        keep = placed.host["example_mask"]
        rows = placed.host["index"][keep]
        out["mean"][rows] = np.asarray(mean)[keep]
        out["slot0"][rows] = np.asarray(slot0)[keep]
    return out


def _single_text_spec(spec: tasks.TaskSpec) -> tasks.TaskSpec:
    return dataclasses.replace(spec, template=dict(SINGLE_TEMPLATES))


def encoded_features(loaded, spec, examples: Sequence[tasks.Example], encoding: str, settings: ProbeSettings,
                     pool) -> dict[str, np.ndarray]:
    """The probe's inputs for one split and encoding: {"mean", "slot0"} -> [E, D] (D = H joint, 4H separate)."""
    family = loaded.family
    if encoding == "joint":
        enc = batching.encode(examples, loaded.tokenizer, spec, family, settings.max_text_tokens)
        return features(loaded, enc, settings.batch_size, pool)
    single = _single_text_spec(spec)
    halves = []
    for field in ("text_a", "text_b"):
        rows = [tasks.Example(getattr(e, field), None, e.label) for e in examples]
        halves.append(features(loaded, batching.encode(rows, loaded.tokenizer, single, family,
                                                       settings.max_text_tokens), settings.batch_size, pool))
    out = {}
    for name in FEATURES:
        u, v = halves[0][name], halves[1][name]
        out[name] = np.concatenate([u, v, np.abs(u - v), u * v], axis=1)
    return out


def _train_subset(examples: list, cap: int, seed: int) -> tuple[list, np.ndarray]:
    if len(examples) <= cap:
        return list(examples), np.arange(len(examples))
    rows = np.sort(np.random.default_rng(seed).choice(len(examples), size=cap, replace=False))
    return [examples[i] for i in rows], rows


def probe(loaded, task, data_dir, workdir, settings: ProbeSettings = ProbeSettings(), *, config=None) -> dict:
    """Fits and scores the probes of one task (module docstring); writes layout.probe_path atomically with a
    sidecar and returns the result. Every split is read (and a missing one named) before any forward pass."""
    spec = tasks.get_task(task)
    if spec.clean_task is not None:
        raise ValueError(f"task {spec.name!r} is an adversarial set without a train split; probe its clean task "
                         f"{spec.clean_task!r}")
    train = readers.read_split(spec, "train", data_dir)
    splits = {s: readers.read_split(spec, s, data_dir, max_examples=settings.eval_cap) for s in settings.splits
              if s in spec.split_roles() and readers.resolve(spec, s, data_dir).kind != "missing"}
    for name, data in [("train", train), *splits.items()]:
        if not data.examples:
            raise ValueError(f"task {spec.name!r}: the {name} split is empty ({data.source})")
    train_examples, _ = _train_subset(train.examples, settings.train_cap, settings.seed)
    pool = make_pool(loaded)
    y_train = np.array([e.label for e in train_examples])
    results = {}
    for encoding in encodings_for(loaded, spec, settings):
        x_train = encoded_features(loaded, spec, train_examples, encoding, settings, pool)
        x_eval = {s: encoded_features(loaded, spec, d.examples, encoding, settings, pool) for s, d in splits.items()}
        for feature in FEATURES:
            fit = linear_probe.fit_probe(x_train[feature], y_train, num_classes=spec.num_labels, seed=settings.seed)
            row = {"l2": fit.l2, "carve_balanced_accuracy": fit.carve_scores, "dim": int(x_train[feature].shape[1]),
                   "carve": max(fit.carve_scores.values())}
            for s, d in splits.items():
                row[s] = linear_probe.score(fit, x_eval[s][feature], [e.label for e in d.examples],
                                            seed=settings.seed)
            results[f"{encoding}/{feature}"] = row
    joint = [k for k in results if k.startswith("joint/")]
    reference = max(joint, key=lambda k: (results[k]["carve"], k == "joint/slot0"))
    out = {"model": loaded.name, "task": spec.name, "task_type": spec.task_type, "pair": spec.is_pair,
           "settings": settings.to_dict(), "reference": reference, "probes": results,
           "train": {"rows_fitted": len(train_examples), "rows_available": len(train.examples),
                     "label_counts": {str(c): int(n) for c, n in
                                      enumerate(np.bincount(y_train, minlength=spec.num_labels))},
                     "source": train.source, "excluded_adversarial_originals": train.excluded_adversarial_originals},
           "sources": {s: d.source for s, d in splits.items()}}
    path = layout.probe_path(workdir, loaded.name, spec.name)
    io.atomic_write_json(path, out)
    io.write_sidecar(path, stage="probe", model=loaded.name, task=spec.name, settings=settings.to_dict(),
                     data_dir=str(data_dir), config=config)
    return out


# ---------------------------------------------------------------------------------------------------------------
# The stage kind (stages/registry.py): probe/<m>/<task> for every clean task of the plan (config.probe.tasks: a
# subset) -> WORKDIR/probe/<m>/<task>.json (+ .meta.json). No dependency: learnability is measured first, from the
# frozen model alone; the report puts the reference beside Table 1 and applies analysis.learnability's rule.
# ---------------------------------------------------------------------------------------------------------------
def plan(ctx) -> None:
    m, settings = ctx.model.name, ctx.settings_of("probe")
    if settings is None or not settings.enabled:
        return
    for task in [t for t in ctx.tasks.clean if settings.tasks is None or t in settings.tasks]:
        out = layout.probe_path(ctx.workdir, m, task)
        ctx.add(f"probe/{m}/{task}", [out, io.sidecar_path(out)], args={"task": task}, group_task=task,
                settings={"model": m, "probe": settings.to_dict()})


def cost(ctx, task: str) -> float:
    """One forward pass of the frozen model (no prompt, one "seed") over the fitted train rows and the scored
    splits (the test split counted at the dev split's size), twice for a pair task whose texts may also be encoded
    alone; the fits (L-BFGS, at most 500 iterations of two [n, d] products for each strength of the grid and the
    refit) are counted at their iteration limit."""
    cm, settings = ctx.cost, ctx.settings_of("probe")
    train, dev, mean_tokens = tasks.size_hint(task)
    train = min(train, settings.train_cap)
    dev = dev if settings.eval_cap is None else min(dev, settings.eval_cap)
    rows = train + dev * len(settings.splits)
    encodings = 2 if tasks.get_task(task).is_pair and settings.encodings != "joint" else 1
    flops = encodings * cm.frozen_forward(rows, mean_tokens, settings.max_text_tokens)
    dims = cm.H * (1 if encodings == 1 else 5)          # joint: H; separate: [u, v, |u-v|, u*v] = 4H
    fits = len(FEATURES) * (len(linear_probe.L2_GRID) + 1) * 500 * 4 * train * dims
    return cm.seconds(flops + fits, compiles=2 * encodings)


def run(ctx, task: str) -> dict:
    s, path = ctx.study, ctx.model.path
    return probe(ctx.session.load(path), task, s.data_dir, ctx.workdir, ctx.settings_of("probe"),
                 config={"model_path": str(path)})


KIND = registry.register("probe", ProbeSettings, config_key="probe", plan=plan, cost=cost, run=run, order=5)
