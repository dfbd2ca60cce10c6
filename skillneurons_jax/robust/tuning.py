"""The robust tuning stage body (issue 17): one arm of the comparison (plain, perturbed, anchored) tuned with the
plain tune stage's seeds, budget and data, then scored on the clean dev split and the task's AdvGLUE sets.

    settings = RobustSettings.from_mapping(config.robust)
    summary = tune_arm(setup, "anchored", settings, seeds, workdir, data_dir, tune_config, model_path=path)
    doc = evaluate_arm([clean_target, adversarial_target], "sst2", "anchored", seeds, workdir, ...)

The tuning body is stages.tune.tune (one home): this module only supplies what differs per arm, through tune's
`step_factory` (the loss of robust.anchor.make_loss with the arm's AnchorSettings and, for the anchored arm, the
clean task's skill neurons from its predictivity npz) and `extend_batches` (each seed's perturbed copy of the
training split, robust.perturb with the TRAINING seed as the perturbation seed, joined to every batch by
robust.anchor.with_perturbed). The plain arm passes neither, so it is the plain tune stage in another folder (the
same prompts, bit for bit: tests/test_robust_plan.py trains it to check), and it copies that stage's finished
prompts instead of training them again. Outputs go under layout.robust_arm_dir(workdir, arm), a workdir-shaped
tree.

The evaluation writes layout.robust_eval_path(workdir, model, task, arm):
    {"model", "task", "arm", "seeds", "clean": {"target", "accuracy": [S], "f1": [S], "n_dev", "kind", "confusion":
     [S][C][C], "correct": [S][E] 0/1 per seed and row (the split's row order), "labels": [E]},
     "adversarial": {<adv task>: {same fields}}, "transfer": {<other clean task>: {same fields}},
     "anchor": AnchorSettings, "perturbations": PerturbationSet, "skill_neurons": {"top_percent", "scope"}}
"kind" is data.tasks.scored_kind(task, target): clean | adversarial (the task's own AdvGLUE set) | adversarial transfer
(another task's, e.g. AdvQQP for MRPC) under "adversarial"; transfer, same type | transfer, other type (another
clean task, e.g. Movie Rationales for SST-2 with robust.transfer_within_type) under "transfer".
scored by stages.transfer.transfer_pair (prompt.scoring, each target's own verbalizer), with a sidecar.
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from skillneurons_jax import io, layout
from skillneurons_jax.data import batches as batching
from skillneurons_jax.data import tasks as task_table
from skillneurons_jax.robust import anchor, perturb
from skillneurons_jax.stages import transfer as transfer_stage
from skillneurons_jax.stages import tune as tune_stage
from skillneurons_jax.stages.setup import TaskSetup, hold

# Fields of the config block `robust` (configs/robust.py documents them).
FIELDS = ("tasks", "arms", "perturbations", "perturbation_mode", "neighbour_k", "protected_words", "anchor",
          "extra_targets", "transfer_within_type", "predictivity")


def _as_tuple(value) -> tuple:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class RobustSettings:
    """Config block `robust` (frozen; `from_mapping` rejects unknown keys).

    tasks:             clean tasks the arms are tuned on (empty: every clean task of the plan)
    arms:              a subset of robust.anchor.ARMS, in that order
    perturbations:     robust.perturb.PerturbationSet ({name: rate} in the config, mode `perturbation_mode`)
    neighbour_k:       candidates per token of the `neighbour` perturbation
    protected_words:   words whose tokens the `neighbour` perturbation never replaces nor inserts (embedding
                       neighbours of polarity words are often antonyms: MiniLM good -> bad)
    anchor:            the anchored arm's AnchorSettings (strength > 0); the perturbed arm is the same with
                       strength 0, the plain arm is everything off (robust.anchor.arm_settings)
    extra_targets:     ("clean:target", ...): sets the arms of `clean` are scored on besides the clean task's own
                       adversarial sets (e.g. "mrpc:advqqp", a paraphrase transfer), each with its own verbalizer
    transfer_within_type: also score each arm on every other clean task of the plan of the same task type (the
                       proposal's "transfer this prompt to other tasks of that type")
    predictivity:      robust_predictivity stages: each arm's predictivity (eqs. 2-5, its own prompts, the clean
                       task's TRAIN baseline) on the clean dev and on every adversarial set it is scored on
    """

    tasks: tuple = ()
    arms: tuple = anchor.ARMS
    perturbations: perturb.PerturbationSet = perturb.PerturbationSet()
    neighbour_k: int = 8
    protected_words: tuple = ()
    anchor: anchor.AnchorSettings = anchor.AnchorSettings(strength=1.0)
    extra_targets: tuple = ()
    transfer_within_type: bool = True
    predictivity: bool = True

    def __post_init__(self):
        arms = _as_tuple(self.arms)
        unknown = [a for a in arms if a not in anchor.ARMS]
        if unknown or not arms or len(set(arms)) != len(arms):
            raise ValueError(f"robust.arms {list(arms)}: give distinct arms of {anchor.ARMS}")
        object.__setattr__(self, "arms", tuple(a for a in anchor.ARMS if a in arms))
        object.__setattr__(self, "tasks", _as_tuple(self.tasks))
        object.__setattr__(self, "protected_words", _as_tuple(self.protected_words))
        pairs = []
        for item in _as_tuple(self.extra_targets):
            source, sep, target = (item if isinstance(item, str) else ":".join(item)).partition(":")
            if not sep or not source.strip() or not target.strip():
                raise ValueError(f"robust.extra_targets entry {item!r} must be 'clean:target'")
            pairs.append((source.strip(), target.strip()))
        object.__setattr__(self, "extra_targets", tuple(pairs))
        for name in ("transfer_within_type", "predictivity"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"robust.{name} must be True or False, got {getattr(self, name)!r}")
        if int(self.neighbour_k) != self.neighbour_k or self.neighbour_k < 1:
            raise ValueError(f"robust.neighbour_k must be an integer >= 1, got {self.neighbour_k!r}")
        if "anchored" in self.arms and not self.anchor.uses_neurons:
            raise ValueError("robust.anchor.strength must be > 0 for the anchored arm (0 is the perturbed arm)")
        trained_on_other_text = any(p.rate > 0 for p in self.perturbations.perturbations) or self.anchor.epsilon > 0
        if {"perturbed", "anchored"} & set(self.arms) and not trained_on_other_text:
            raise ValueError("the perturbed and anchored arms need a perturbation with a rate > 0 "
                             "(robust.perturbations) or robust.anchor.epsilon > 0: otherwise their 'perturbed' "
                             "input is the clean one")

    @classmethod
    def from_mapping(cls, cfg: Optional[Mapping[str, Any]]) -> "RobustSettings":
        cfg = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else (cfg or {}))
        unknown = sorted(set(cfg) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown robust keys {unknown}; known: {sorted(FIELDS)}")
        rates = cfg.pop("perturbations", None) or {}
        if isinstance(rates, str):      # --config.robust.perturbations=char_swap:0.1,word_drop:0.05
            pairs = [item.partition(":") for item in rates.split(",") if item.strip()]
            bad = [name for name, sep, _ in pairs if not sep]
            if bad:
                raise ValueError(f"robust.perturbations entries {bad} must be name:rate")
            rates = {name.strip(): float(rate) for name, _, rate in pairs}
        mode = cfg.pop("perturbation_mode", "all")
        anchor_cfg = cfg.pop("anchor", None)
        anchor_cfg = dict(anchor_cfg.to_dict() if hasattr(anchor_cfg, "to_dict") else (anchor_cfg or {}))
        anchor_cfg.setdefault("strength", 1.0)
        return cls(perturbations=perturb.PerturbationSet.from_mapping(dict(rates), str(mode)),
                   anchor=anchor.AnchorSettings.from_mapping(anchor_cfg), **cfg)

    @classmethod
    def from_config(cls, block, where: str = "--config.robust.") -> "RobustSettings":
        """From the study config's block: task names as the task table spells them (unknown: ValueError)."""
        try:
            robust = cls.from_mapping(block)
            return dataclasses.replace(
                robust, tasks=tuple(task_table.get_task(t).name for t in robust.tasks),
                extra_targets=tuple(f"{task_table.get_task(a).name}:{task_table.get_task(b).name}"
                                    for a, b in robust.extra_targets))
        except ValueError as error:
            raise ValueError(f"{where.rstrip('.')}: {error}") from None

    def check_study(self, study) -> None:
        """Checks against the rest of the study (pipeline.settings.StudySettings): the arms' tasks are clean
        tasks of config.tasks / optional_tasks."""
        adversarial = [t for t in self.tasks if task_table.clean_task_of(t) != t]
        absent = [t for t in self.tasks if t not in (*study.tasks, *study.optional_tasks)]
        if absent:
            raise ValueError(f"config.robust.tasks {absent} are not in config.tasks / optional_tasks")
        if adversarial:
            raise ValueError(f"config.robust.tasks {adversarial}: name clean tasks (the arms are tuned on a "
                             "clean task and scored on its adversarial sets)")

    def arm(self, arm: str) -> anchor.AnchorSettings:
        """The AnchorSettings of one arm (one budget: only strength and perturbed_weight differ)."""
        common = {k: v for k, v in self.anchor.to_dict().items() if k not in ("strength", "perturbed_weight")}
        return anchor.arm_settings(arm, self.anchor.strength, **common)

    def to_dict(self) -> dict:
        return {"tasks": list(self.tasks), "arms": list(self.arms), **self.perturbations.to_dict(),
                "neighbour_k": int(self.neighbour_k), "protected_words": list(self.protected_words),
                "anchor": self.anchor.to_dict(), "extra_targets": [f"{a}:{b}" for a, b in self.extra_targets],
                "transfer_within_type": self.transfer_within_type, "predictivity": self.predictivity}


# ----------------------------------------------------------------------------------------------- inputs
def load_targets(workdir, loaded, task: str, seeds: Sequence[int], settings: anchor.AnchorSettings
                 ) -> anchor.AnchorTarget:
    """The anchor targets [S, L, P, N] of `task`'s skill neurons from WORKDIR/predictivity/<model>/<task>.npz
    (pred, acc, baseline), its seeds in the order of `seeds` (the sidecar's seeds must hold every one of them)."""
    path = layout.predictivity_path(workdir, loaded.name, task)
    if not path.exists():
        raise FileNotFoundError(f"no predictivity for task {task!r} of model {loaded.name!r}: {path} does not "
                                "exist; the anchored arm reads its skill neurons (run the predictivity stage first)")
    side = io.sidecar_path(path)
    recorded = [int(s) for s in json.loads(side.read_text()).get("seeds", [])] if side.exists() else []
    missing = [int(s) for s in seeds if int(s) not in recorded]
    if missing:
        raise ValueError(f"{path}: computed for seeds {recorded} (its sidecar {side}), not for {missing}")
    rows = [recorded.index(int(s)) for s in seeds]
    with np.load(path, allow_pickle=False) as z:
        absent = [k for k in ("pred", "acc", "baseline") if k not in z.files]
        if absent:
            raise ValueError(f"{path} has no {absent} arrays (it has {sorted(z.files)})")
        pred, acc, baseline = np.asarray(z["pred"]), np.asarray(z["acc"])[rows], np.asarray(z["baseline"])[rows]
    return anchor.anchor_targets(pred, acc, baseline, settings)


def protected_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """Token ids of `words`, alone and after a space (BPE vocabularies spell a word differently there)."""
    ids = set()
    for word in words:
        for spelling in (word, " " + word):
            ids.update(int(t) for t in tokenizer.encode(spelling, add_special_tokens=False))
    return sorted(ids)


def neighbour_table(loaded, settings: RobustSettings, examples: Sequence) -> Optional[perturb.NeighbourTable]:
    """The `neighbour` operation's table for `examples`' texts (None when the set has no neighbour rate): the
    model's input-embedding neighbours, robust.neighbour_k of them, robust.protected_words never edited."""
    if not settings.perturbations.needs_neighbours:
        return None
    vocab = jnp.arange(loaded.config.vocab_size)
    embeddings = np.asarray(loaded.module.apply({"params": loaded.params}, vocab, method="embed_tokens"))
    texts = [t for ex in examples for t in (ex.text_a, ex.text_b) if t]
    return perturb.NeighbourTable.build(loaded.tokenizer, embeddings, texts, int(settings.neighbour_k),
                                        protected_ids(loaded.tokenizer, settings.protected_words))


def perturbed_examples(setup: TaskSetup, settings: RobustSettings, seed: int):
    """[E] examples -> their perturbed copy with `seed` (robust.perturb.perturb_examples with the arms'
    perturbation set and a neighbour table of these examples' texts, as the training split's is built): e.g.
    stages.predictivity's dev_transform for held-out perturbations of the training kind."""
    def transform(examples):
        return perturb.perturb_examples(examples, int(seed), settings.perturbations,
                                        neighbours=neighbour_table(setup.loaded, settings, examples))
    return transform


def perturbed_batches(setup: TaskSetup, settings: RobustSettings, seeds: Sequence[int]):
    """stages.tune.tune's `extend_batches`: (train examples [E], train Encoded, cfg) -> extend(seed, batch), which
    joins to each batch the rows of seed's perturbed copy of the split (robust.perturb.perturb_examples with
    the training seed; encoded like the clean split). Every seed's perturbed text is padded to one width (the
    longest perturbed row of any seed), so the seeds' batches stack."""
    loaded = setup.loaded

    def extend_batches(train_examples, train_enc, cfg):
        if len(train_examples) != len(train_enc):
            raise ValueError(f"{len(train_examples)} training examples read, {len(train_enc)} encoded")
        neighbours = neighbour_table(loaded, settings, train_examples)
        encoded = {}
        for seed in seeds:
            changed = perturb.perturb_examples(train_examples, int(seed), settings.perturbations,
                                               neighbours=neighbours)
            encoded[int(seed)] = batching.encode(changed, loaded.tokenizer, setup.task, loaded.family,
                                                 max_text_tokens=int(cfg["max_text_tokens"]))
        width = max(int(e.lengths.max()) for e in encoded.values())

        def extend(seed, batch):
            out = anchor.with_perturbed(batch, encoded[int(seed)], length=width)
            out.pop("index")            # the step reads the model keys and the perturbed ones
            return out

        return extend

    return extend_batches


# ----------------------------------------------------------------------------------------------- the stage
def tune_arm(setup: TaskSetup, arm: str, settings: RobustSettings, seeds: Sequence[int], workdir, data_dir,
             tune_config, *, model_path, max_examples: Optional[int] = None, require_complete: bool = True,
             reuse_tune_stage: bool = True, replace_changed: bool = False) -> dict:
    """Tunes `arm`'s prompts of `setup.task` for `seeds` under layout.robust_arm_dir(workdir, arm) with the plain
    tune stage's body, config and seeds; returns its summary (stages.tune.tune). The anchored arm reads the clean
    task's predictivity npz under `workdir`. The plain arm is the tune stage's computation: with
    `reuse_tune_stage` it copies the tune stage's finished prompts under `workdir` when they match
    (stages.tune.copy_finished_run checks config, data, seeds and devices) instead of training them again.
    `replace_changed`: stages.tune.tune's (an arm folder of other settings is set aside, not refused)."""
    arm_settings = settings.arm(arm)
    loaded, task = setup.loaded, setup.task.name
    step_factory, extend, extra = None, None, {"robust_arm": arm}
    if arm_settings.active:
        cfg = tune_stage.resolve_tune_config(tune_config, loaded.name, loaded.family, task)
        # the perturbed control measures the anchored arm's term too (not trained on): the manipulation check
        monitor = not arm_settings.uses_neurons and settings.anchor.uses_neurons
        targets = (load_targets(workdir, loaded, task, seeds, arm_settings)
                   if arm_settings.uses_neurons or monitor else None)
        loss = anchor.make_loss(setup.readout, arm_settings, int(cfg["prompt_len"]), monitor=monitor)
        step_factory = anchor.step_factory(loss, targets)
        if any(p.rate > 0 for p in settings.perturbations.perturbations):
            extend = perturbed_batches(setup, settings, seeds)
        extra.update(robust_anchor=arm_settings.to_dict(), robust_perturbations=settings.perturbations.to_dict())
    return tune_stage.tune(setup, seeds, layout.robust_arm_dir(workdir, arm), data_dir, tune_config,
                           model_path=model_path, max_examples=max_examples, require_complete=require_complete,
                           sidecar_extra={"stage": "robust_tune"}, step_factory=step_factory,
                           extend_batches=extend, run_info_extra=extra,
                           reuse_from=workdir if reuse_tune_stage and not arm_settings.active else None,
                           replace_changed=replace_changed)


def evaluate_arm(targets: Sequence[transfer_stage.TransferTarget], task: str, arm: str, settings: RobustSettings,
                 seeds: Sequence[int], workdir, *, model_path, data_dir, max_examples: Optional[int] = None) -> dict:
    """Scores `arm`'s prompts of `task` on every prepared target (the clean task itself and its adversarial sets,
    each with its own verbalizer) and writes layout.robust_eval_path (module docstring); returns the JSON."""
    t0 = time.time()
    names = [t.setup.task.name for t in targets]
    if task not in names:
        raise ValueError(f"the targets {names} do not include the clean task {task!r}")
    model = targets[0].setup.loaded.name
    path = layout.robust_eval_path(workdir, model, task, arm)
    root = layout.robust_arm_dir(workdir, arm)
    with hold(path, f"robust evaluation {model}/{task}/{arm}"):
        rows, digests = {}, None
        for target in targets:
            row = transfer_stage.transfer_pair(target, task, seeds, root, outcomes=True)
            digests = row.pop("prompt_sha256")
            rows[target.setup.task.name] = {"target": row["target"], "accuracy": row["accuracy"], "f1": row["f1"],
                                            "n_dev": row["n_dev"], "confusion": row["confusion"],
                                            "kind": task_table.scored_kind(task, row["target"]),
                                            "correct": row["correct"], "labels": row["labels"]}
        adversarial_kinds = (task_table.ADVERSARIAL, task_table.ADVERSARIAL_TRANSFER)
        doc = {"model": model, "task": task, "arm": arm, "seeds": [int(s) for s in seeds], "clean": rows[task],
               "adversarial": {name: row for name, row in rows.items() if row["kind"] in adversarial_kinds},
               "transfer": {name: row for name, row in rows.items()
                            if row["kind"] in (task_table.TRANSFER_SAME_TYPE, task_table.TRANSFER_OTHER_TYPE)},
               "anchor": settings.arm(arm).to_dict(), "perturbations": settings.perturbations.to_dict(),
               # the study's skill neurons (the anchor's; one set for every arm): analysis.robust_tables's predictivity table
               "skill_neurons": {"top_percent": float(settings.anchor.top_percent),
                                 "scope": str(settings.anchor.scope)}}
        if jax.process_index() == 0:
            io.atomic_write_json(path, doc)
            io.write_sidecar(path, stage="robust_tune", model_path=str(model_path), data_dir=str(data_dir),
                             max_examples=max_examples, prompt_sha256=digests, seconds=round(time.time() - t0, 3))
    return doc
