"""The research as a plan of stages: models x tasks x seeds -> tune, transfer, predictivity, suppress, report.

    settings = Settings.from_config(config, workdir, data_dir)
    stages = build_plan(settings, session)          # list[plan.Stage]; nothing is loaded or run here

Stages (keys; `<m>` = the model's short name, LoadedModel.name):
  tune/<m>/<task>            clean tasks: every seed in one compiled loop  -> prompts/<m>/<task>/seed_<s>/prompt.npy
  transfer/<m>/<source>      the source's prompts on every target present, TARGET verbalizer
                             -> transfer/<m>/<source>__<target>.json (with transfer off: only the source itself and
                             its adversarial sets, which Table 1 needs)
  predictivity/<m>/<task>    -> predictivity/<m>/<task>.npz (+ sidecar). An adversarial task uses its clean task's
                             prompts and the clean TRAIN split for the baseline, stored under its own name (trap 3);
                             it depends on the clean task's predictivity so that baseline is computed once and reused.
                             config `adversarial_prompts` ("advqqp:mrpc") gives an adversarial set another clean
                             task of its type instead (a transfer: e.g. no QQP train data here); every stage of that
                             set then uses that task's prompts and TRAIN baseline (Settings.prompt_task_of).
  suppress/<m>/<src>__<tgt>  every task's own skill neurons (src == tgt), and clean -> adversarial pairs
                             (plus config `suppression.extra_pairs`) -> suppression/<m>/<src>__<tgt>.json
  robust_tune/<m>/<task>/<arm>   only with config.robust (issue 17; robust.tuning): the clean task's prompts
                             of one arm (plain | perturbed | anchored) with the tune stage's seeds and budget
                             -> robust/<arm>/prompts/<m>/<task>/seed_<s>/, scored on the clean dev, the task's
                             AdvGLUE sets and its other scored sets (robust_scored_sets: robust.extra_targets, the
                             plan's clean tasks of its type) -> robust/<arm>/eval/<m>/<task>.json; after
                             predictivity/<m>/<task>. The plain arm copies the tune stage's prompts (the same
                             computation, stages.tune.copy_finished_run checks it) instead of training them again.
  robust_predictivity/<m>/<task>/<arm>   with config.robust.predictivity (default on): the arm's predictivity on
                             the clean task and on each adversarial set it is scored on (the arm's prompts, the
                             clean task's TRAIN baseline) -> robust/<arm>/predictivity/<m>/<target>.npz
  patching/<m>/<clean>__<adv>.<source>   only with config.patching (robust.stage): activation patching of each
                             adversarial task present with its clean task's prompts and skill neurons
                             -> patching/<m>/<clean>__<adv>.<source>.json; skip when advglue/dev_ann.json is absent
  explorer/<m>/<clean>       the top neurons' dev activations of a clean task and its adversarial sets (one seed),
                             after their predictivity -> explorer/<m>/<clean>.npz (report/explorer.html reads it)
  report                     analysis.report.build_report -> report/index.html, index.md, summary.json, figures/

Dependencies carry data: a stage is redone when one of its inputs (its dependencies' outputs) changed since it
ran (plan.py), so a corrupted or deleted output is recomputed together with what was derived from it.

Groups (for pods): `<m>/<clean task>`: a clean task, its adversarial sets and every stage that reads only their
prompts and statistics, so no stage depends on a stage of another group; the report is group "report" and runs
on host 0 after every other stage is done (launch/reproduce.py).

Absent inputs do not stop the sweep (a choice): a configured task whose data is absent, an adversarial task
whose clean task is absent or not configured, or a model folder that does not exist becomes `skip` stages
that carry the reason (shown by --dry_run, printed by the run, passed to the report, which lists the task as
missing); every other stage still runs. Names that cannot be right (an unknown task, a malformed config) are
errors before any work. `optional_tasks` are used where their data is found and otherwise left out of the plan.

Costs are estimates for --dry_run and the progress line: FLOPs of the forward passes each stage does (2 x the
non-embedding parameters per token plus attention, x3 for a training step), at `cost.flops_per_second`, plus a
fixed `cost.stage_overhead_s` for compilation; split sizes are the caps, or the public sizes of the full sets.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Any, Optional, Sequence

import jax

from skillneurons_jax import layout, models
from skillneurons_jax.analysis import report as report_builder
from skillneurons_jax.data import readers
from skillneurons_jax.data import tasks as task_table
from skillneurons_jax.models import config as model_config
from skillneurons_jax.models import convert
from skillneurons_jax.neurons import suppression as suppression_masks
from skillneurons_jax.neurons.stats_options import StatsOptions
from skillneurons_jax.pipeline import plan
from skillneurons_jax.pipeline.session import Session
from skillneurons_jax.robust import advglue, patching as patching_settings
from skillneurons_jax.robust.tuning import RobustSettings
from skillneurons_jax.stages import explorer as explorer_stage
from skillneurons_jax.stages import suppress as suppress_stage
from skillneurons_jax.stages import tune as tune_stage

# ---------------------------------------------------------------------------------------------------------------
# Cost constants (the task sizes are in the task table: data.tasks.size_hint)
# ---------------------------------------------------------------------------------------------------------------
PADDING_FACTOR = 1.3          # length buckets pad the mean text by about this much
TRAIN_STEP_FACTOR = 3.0       # a training step ~ forward + backward ~ 3 forwards
# Backend -> FLOP/s assumed when the config gives none. CPU, calibrated on one measured plan: configs/default.py
# (commit d89246b) took 935 s on 2 idle cores where 1.5e10 per core estimated 2529 s (tune 2.9x, transfer and
# predictivity 2.6x, suppression 1.8x too slow), so 4e10 per core (about 1000 s for that plan).
DEFAULT_FLOPS = {"cpu_per_core": 4e10, "accelerator": 3e13}

STAGE_KINDS = ("tune", "transfer", "predictivity", "suppress", "robust_tune", "robust_predictivity", "patching",
               "explorer", "report")
# A robust training step runs the clean and the perturbed input (and, with epsilon > 0, one more forward and
# backward per adversarial step), and the stage perturbs and encodes each seed's training split: measured on MiniLM
# SST-2 (40 steps, 3 seeds, 2 shared CPU cores) the perturbed and anchored arms took 2.8x and 2.5x the plain arm.
ROBUST_STEP_FACTOR = 2.5


# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------
def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def _plain(value):
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


@dataclasses.dataclass
class Settings:
    """Everything the plan needs, resolved from the config (see configs/default.py for the fields)."""
    workdir: pathlib.Path
    data_dir: Optional[str]
    models: list[str]
    tasks: list[str]
    optional_tasks: list[str]
    seeds: list[int]
    max_examples: Optional[int]
    suppression_max_examples: Optional[int]   # dev cap of the suppression stages (None: max_examples)
    tune: Any                     # ConfigDict with the configs/tune.py fields
    stats: Any                    # neurons.stats_options.StatsOptions
    levels: list[float]
    random_draws: int
    random_seed: int
    random_from: str              # "all" | "rest": random controls among every neuron or the non-skill ones
    scope: str
    intervention: str
    noise_scale: float
    noise_relative_to: str        # "absolute" | "train_std" (the Gaussian sigma times each neuron's TRAIN std)
    extra_pairs: list[tuple[str, str]]
    # the targets whose OWN suppression curves (and their adversarial sets' clean -> adversarial curves) are
    # computed, on dev and on the held-out test split; None: every task of the plan (extra_pairs always run)
    suppression_tasks: Optional[list[str]]
    transfer_all: bool
    held_out: bool                # also score each clean task's own prompt and skill neurons on its TEST split
    report: bool
    analysis: dict
    allow_hub: bool
    continue_on_error: bool
    flops_per_second: Optional[float]
    stage_overhead_s: float
    config: dict                  # the whole config, plain (recorded in the report)
    robust: Optional[RobustSettings] = None                        # config.robust; None: no robust_tune stages
    patching: Optional[patching_settings.PatchingSettings] = None  # config.patching; None: no patching stages
    # adversarial task -> the clean task whose prompts and TRAIN baseline it uses instead of the task table's
    # (config `adversarial_prompts`, "advqqp:mrpc"); empty: the table's clean task.
    adversarial_prompts: dict = dataclasses.field(default_factory=dict)
    # config `reuse_from`: another study's workdir whose tune / predictivity results of the same computation are
    # copied (stages.tune.copy_finished_run, stages.predictivity's reuse); None: everything is computed here
    reuse_from: Optional[str] = None

    def prompt_task_of(self, task: str) -> str:
        """The clean task whose prompts (and TRAIN baseline) `task` uses: itself for a clean task."""
        return self.adversarial_prompts.get(task) or clean_of(task)

    @classmethod
    def from_config(cls, config, workdir, data_dir: Optional[str] = None, *, default_tune=None) -> "Settings":
        """config: an ml_collections ConfigDict (or mapping) shaped like configs/default.py. `data_dir` (the flag)
        wins over config.data_dir; `default_tune` (configs/tune.py's config, passed by launch.reproduce) is the
        tuning block of a config that has none. Unknown task names and malformed fields raise ValueError here."""
        get = config.get
        models = _as_list(get("models"))
        if not models:
            raise ValueError("config.models names no model")
        names = {}
        for field in ("tasks", "optional_tasks"):
            listed = _as_list(get(field))
            if [t.lower() for t in listed] == ["all"]:      # every task of the table
                listed = list(task_table.TASKS)
            names[field] = [task_table.get_task(t).name for t in listed]   # unknown: ValueError
        if not names["tasks"] and not names["optional_tasks"]:
            raise ValueError("config.tasks names no task")
        seeds = [int(s) for s in _as_list(get("seeds"))]
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(f"config.seeds must be distinct non-negative integers, got {get('seeds')!r}")
        sp = get("suppression") or {}
        levels = [float(k) for k in _as_list(sp.get("levels", suppression_masks.DEFAULT_PERCENTS))]
        suppress_stage.check_options(levels=levels, scope=sp.get("scope", "layer"),
                                     intervention=sp.get("intervention", "zero"), where="config.suppression.")
        if sp.get("noise_relative_to", "absolute") not in suppression_masks.NOISE_SCALES:
            raise ValueError(f"config.suppression.noise_relative_to {sp.get('noise_relative_to')!r}; allowed: "
                             f"{suppression_masks.NOISE_SCALES}")
        pairs = []
        for p in _as_list(sp.get("extra_pairs", [])):
            src, _, tgt = str(p).partition(":")
            if not tgt:
                raise ValueError(f"config.suppression.extra_pairs entry {p!r} must be 'source:target'")
            pairs.append((task_table.get_task(src).name, task_table.get_task(tgt).name))
        listed = _as_list(sp.get("tasks"))
        suppression_tasks = [task_table.get_task(t).name for t in listed] if listed else None   # unknown: error
        adversarial_prompts = parse_adversarial_prompts(get("adversarial_prompts"))
        tune = get("tune")
        if tune is None:
            tune = default_tune
        if tune is None:
            raise ValueError("config.tune is missing: give the tuning block (configs/tune.py's fields)")
        # before anything runs (e.g. a malformed max_steps_by_task), named as this command spells the flags
        tune_stage.check_tune_config(tune, "--config.tune.")
        stats = StatsOptions.from_mapping(_plain(get("stats")) or None)
        max_examples = get("max_examples")
        cost = get("cost") or {}
        data_dir = data_dir if data_dir is not None else get("data_dir")
        robust = RobustSettings.from_mapping(_plain(get("robust"))) if get("robust") else None
        if robust is not None:
            robust = dataclasses.replace(
                robust, tasks=tuple(task_table.get_task(t).name for t in robust.tasks),
                extra_targets=tuple(f"{task_table.get_task(a).name}:{task_table.get_task(b).name}"
                                    for a, b in robust.extra_targets))
            adversarial = [t for t in robust.tasks if task_table.clean_task_of(t) != t]
            absent = [t for t in robust.tasks if t not in names["tasks"] + names["optional_tasks"]]
            if absent:
                raise ValueError(f"config.robust.tasks {absent} are not in config.tasks / optional_tasks")
            if adversarial:
                raise ValueError(f"config.robust.tasks {adversarial}: name clean tasks (the arms are tuned on a "
                                 "clean task and scored on its adversarial sets)")
        patching = (patching_settings.PatchingSettings.from_mapping(_plain(get("patching")))
                    if get("patching") else None)
        reuse_from = str(get("reuse_from") or "") or None
        if reuse_from is not None:
            if not pathlib.Path(reuse_from).is_dir():
                raise ValueError(f"config.reuse_from {reuse_from!r} is not a folder (a finished study's workdir)")
            if pathlib.Path(reuse_from).resolve() == pathlib.Path(workdir).resolve():
                raise ValueError(f"config.reuse_from {reuse_from!r} is this plan's own workdir")
        return cls(
            workdir=pathlib.Path(workdir), data_dir=None if data_dir in (None, "") else str(data_dir),
            models=models, tasks=names["tasks"], optional_tasks=names["optional_tasks"], seeds=seeds,
            max_examples=None if max_examples is None else int(max_examples), tune=tune, stats=stats,
            suppression_max_examples=None if sp.get("max_examples") is None else int(sp.get("max_examples")),
            levels=levels, random_draws=int(sp.get("random_draws", 3)), random_seed=int(sp.get("random_seed", 0)),
            random_from=_random_from(sp.get("random_from", "all")),
            scope=str(sp.get("scope", "layer")), intervention=str(sp.get("intervention", "zero")),
            noise_scale=float(sp.get("noise_scale", 1.0)),
            noise_relative_to=str(sp.get("noise_relative_to", "absolute")), extra_pairs=pairs,
            suppression_tasks=suppression_tasks,
            transfer_all=bool((get("transfer") or {}).get("enabled", True)),
            held_out=bool((get("held_out") or {}).get("enabled", True)),
            report=bool((get("report") or {}).get("enabled", True)), analysis=dict(_plain(get("analysis")) or {}),
            allow_hub=bool(get("allow_hub") or False), continue_on_error=bool(get("continue_on_error", True)),
            flops_per_second=cost.get("flops_per_second"), stage_overhead_s=float(cost.get("stage_overhead_s", 20.0)),
            config=dict(_plain(config)), robust=robust, patching=patching, adversarial_prompts=adversarial_prompts,
            reuse_from=reuse_from)


def parse_adversarial_prompts(value) -> dict[str, str]:
    """config `adversarial_prompts` ("advqqp:mrpc,...") -> {adversarial task: clean task}. The key must be an
    adversarial set of the task table and the value a clean task of the same task type (its verbalizer and label
    meaning must be the adversarial set's); anything else is a ValueError naming the entry."""
    out = {}
    for entry in _as_list(value):
        adversarial, _, clean = str(entry).partition(":")
        if not clean:
            raise ValueError(f"config.adversarial_prompts entry {entry!r} must be 'adversarial:clean'")
        adv_spec, clean_spec = task_table.get_task(adversarial), task_table.get_task(clean)
        if not adv_spec.clean_task:
            raise ValueError(f"config.adversarial_prompts entry {entry!r}: {adv_spec.name!r} is not an adversarial "
                             f"set (it has no clean task in the task table)")
        if clean_spec.clean_task:
            raise ValueError(f"config.adversarial_prompts entry {entry!r}: {clean_spec.name!r} is itself adversarial")
        if adv_spec.task_type != clean_spec.task_type:
            raise ValueError(f"config.adversarial_prompts entry {entry!r}: {adv_spec.name!r} is a "
                             f"{adv_spec.task_type} task but {clean_spec.name!r} is {clean_spec.task_type}; the "
                             f"prompt must come from a task of the same type")
        out[adv_spec.name] = clean_spec.name
    return out


# ---------------------------------------------------------------------------------------------------------------
# What is present: models and task data
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelInfo:
    path: str
    name: str
    family: Optional[str] = None
    config: Any = None            # models.ModelConfig read from config.json (no weights loaded)
    skip_reason: Optional[str] = None


def model_info(path: str, allow_hub: bool = False) -> ModelInfo:
    """Name, family and sizes of a model from its config.json alone; a folder that does not exist is a skip."""
    text = str(path)
    local = pathlib.Path(text).expanduser()
    if text.startswith("offline:") or local.exists():
        try:
            folder, name = models.resolve_path(text)
        except FileNotFoundError as e:        # e.g. the offline weights package is not installed
            return ModelInfo(text, text.removeprefix("offline:").lower(), skip_reason=f"model absent: {e}")
        raw = convert.read_config(folder)
        cfg = model_config.config_from_hf(raw, source=str(folder / "config.json"))
        return ModelInfo(text, name, cfg.family, cfg)
    name = text.rstrip("/").rsplit("/", 1)[-1].lower()
    if allow_hub and not local.is_absolute() and not text.startswith((".", "~")):
        return ModelInfo(text, name)          # a hub name, fetched when its first stage runs
    return ModelInfo(text, name, skip_reason=f"model absent: checkpoint folder {local} does not exist (pass a "
                                             f"local Hugging Face folder; hub names need allow_hub=True online)")


def data_problem(task: str, data_dir, allow_hub: bool = False) -> Optional[str]:
    """None when the splits a task needs can be read (nothing is read), else the reason: what was looked for."""
    spec = task_table.get_task(task)
    for split in (("dev",) if spec.clean_task else ("train", "dev")):
        res = readers.resolve(spec, split, data_dir, allow_hub=allow_hub)
        if res.kind == "missing":
            return f"data absent: {spec.name} {split} split (looked for {', '.join(res.looked_for)})"
    return None


def has_split(task: str, split: str, data_dir, allow_hub: bool = False) -> bool:
    """Whether `task` has a `split` whose data can be read here (nothing is read)."""
    spec = task_table.get_task(task)
    if split not in spec.split_roles() and not (spec.hf and split in spec.hf.splits):
        return False
    return readers.resolve(spec, split, data_dir, allow_hub=allow_hub).kind != "missing"


def held_out_tasks(settings: Settings, tp: "TaskPlan") -> list[str]:
    """The clean tasks whose held-out TEST split is read here (Table 1 and the suppression curves on test)."""
    if not settings.held_out:
        return []
    return [t for t in tp.clean if has_split(t, "test", settings.data_dir, settings.allow_hub)]


@dataclasses.dataclass
class TaskPlan:
    present: list[str]                  # tasks with data, clean ones before adversarial ones
    skipped: dict[str, str]             # task -> reason
    dropped: dict[str, str]             # optional tasks left out (their data is absent) -> reason
    adversarial_prompts: dict = dataclasses.field(default_factory=dict)    # Settings.adversarial_prompts

    def prompt_task_of(self, task: str) -> str:
        return self.adversarial_prompts.get(task) or clean_of(task)

    @property
    def clean(self) -> list[str]:
        return [t for t in self.present if clean_of(t) == t]

    @property
    def adversarial(self) -> list[str]:
        return [t for t in self.present if clean_of(t) != t]


def clean_of(task: str) -> str:
    """data.tasks.clean_task_of: the task itself for clean tasks."""
    return task_table.clean_task_of(task)


def plan_tasks(settings: Settings) -> TaskPlan:
    """Which configured tasks can run here, and why the others cannot."""
    present, skipped, dropped = [], {}, {}
    wanted = list(dict.fromkeys(settings.tasks + settings.optional_tasks))
    problems = {t: data_problem(t, settings.data_dir, settings.allow_hub) for t in wanted}
    for t in wanted:
        optional = t not in settings.tasks
        if problems[t] is not None:
            (dropped if optional else skipped)[t] = problems[t]
            continue
        clean = settings.prompt_task_of(t)
        if clean != t:
            if clean not in wanted:
                skipped[t] = f"its clean task {clean!r} is not in the config's tasks (its prompts and TRAIN " \
                             f"baseline come from {clean!r})"
                continue
            if problems[clean] is not None:
                skipped[t] = f"its clean task {clean!r} cannot run ({problems[clean]})"
                continue
        present.append(t)
    present = [t for t in present if clean_of(t) == t] + [t for t in present if clean_of(t) != t]
    return TaskPlan(present, skipped, dropped, dict(settings.adversarial_prompts))


# ---------------------------------------------------------------------------------------------------------------
# Costs
# ---------------------------------------------------------------------------------------------------------------
def flops_per_second(settings: Settings) -> float:
    if settings.flops_per_second:
        return float(settings.flops_per_second)
    if jax.default_backend() == "cpu":
        return DEFAULT_FLOPS["cpu_per_core"] * (os.cpu_count() or 1)
    return DEFAULT_FLOPS["accelerator"] * jax.device_count()


class CostModel:
    """Seconds per stage from the forward-pass FLOPs it does (see the module docstring)."""

    def __init__(self, settings: Settings, info: ModelInfo, rate: float):
        self.s, self.rate, self.info = settings, rate, info
        cfg = info.config
        # Unknown model (hub, not fetched yet): assume base size.
        self.H = getattr(cfg, "hidden", 768)
        self.F = getattr(cfg, "intermediate", 3072)
        self.L = getattr(cfg, "num_layers", 12)
        self.P = int(settings.tune.get("prompt_len", 100))
        self.max_text = int(settings.tune.get("max_text_tokens", 128))
        self.S = len(settings.seeds)

    def sizes(self, task: str, train_cap: Optional[int] = None, dev_cap: Optional[int] = None
              ) -> tuple[int, int, float]:
        """(train rows, dev rows, padded positions per row) under the plan's max_examples, or under the given
        caps (the tune stage's train_max_examples / dev_max_examples replace it for their split)."""
        train, dev, mean_tokens = task_table.size_hint(task)
        train_cap = self.s.max_examples if train_cap is None else train_cap
        dev_cap = self.s.max_examples if dev_cap is None else dev_cap
        train = train if train_cap is None else min(train, train_cap)
        dev = dev if dev_cap is None else min(dev, dev_cap)
        seq = self.P + PADDING_FACTOR * min(mean_tokens, self.max_text)
        return train, dev, seq

    def forward(self, examples: float, seq: float) -> float:
        """FLOPs of one forward pass over `examples` of `seq` positions, for every seed."""
        per_token = 2 * self.L * (4 * self.H * self.H + 2 * self.H * self.F + 2 * seq * self.H)
        return examples * seq * per_token * self.S

    def seconds(self, flops: float, compiles: int = 1) -> float:
        return round(self.s.stage_overhead_s * compiles + flops / self.rate, 1)

    def tune_settings(self, task: str) -> dict:
        """The tuning settings the tune stage will use (stages.tune.resolve_tune_config: the config's values,
        the hyperparameter table's for the rest, e.g. the original epochs); the config alone for a model the table
        does not know (the tune stage will say so)."""
        try:
            return tune_stage.resolve_tune_config(self.s.tune, self.info.name, self.info.family, task)
        except ValueError:
            t = self.s.tune
            return t.to_dict() if hasattr(t, "to_dict") else dict(t)

    def tune(self, task: str) -> float:
        cfg = self.tune_settings(task)
        train, dev, seq = self.sizes(task, cfg.get("train_max_examples"), cfg.get("dev_max_examples"))
        bs = int(cfg.get("batch_size") or 16)
        per_epoch = max(train // bs, 1)
        steps = int(cfg.get("epochs") or 1) * per_epoch
        if cfg.get("max_steps"):
            steps = min(steps, int(cfg["max_steps"]))
        every = int(cfg.get("eval_every") or 0) or per_epoch
        evals = math.ceil(steps / every) + int(bool(cfg.get("eval_at_start")))
        flops = TRAIN_STEP_FACTOR * self.forward(steps * bs, seq) + evals * self.forward(dev, seq)
        return self.seconds(flops, compiles=3)

    def transfer(self, targets: Sequence[str]) -> float:
        flops = sum(self.forward(self.sizes(t)[1], self.sizes(t)[2]) for t in targets)
        return self.seconds(flops, compiles=len(targets))

    def predictivity(self, task: str) -> float:
        train, dev, seq = self.sizes(task)
        if clean_of(task) != task:
            train = 0         # the clean task's TRAIN baseline is reused
        passes = 1 if self.s.stats.threshold == "mean" else self.s.stats.median_max_passes
        return self.seconds(self.forward(train * passes + dev, seq), compiles=2)

    def robust_tune(self, task: str, arm: str, adversarial: Sequence[str]) -> float:
        """An arm's tuning plus its evaluation on the clean dev and the adversarial sets. The plain arm copies
        the tune stage's prompts (robust.tuning.tune_arm): its evaluation only."""
        if arm == "plain":
            return self.transfer([task, *adversarial])
        seconds = self.tune(task)
        seconds = round(self.s.stage_overhead_s + (seconds - self.s.stage_overhead_s) * ROBUST_STEP_FACTOR, 1)
        return round(seconds + self.transfer([task, *adversarial]), 1)

    def patching(self, adversarial: str, settings) -> float:
        """Per level: the skill patch and `random_draws` random ones; plus the unpatched and the source runs."""
        _, dev, seq = self.sizes(adversarial)
        runs = len(settings.percents) * (1 + int(settings.random_draws)) + 2
        return self.seconds(runs * self.forward(dev, seq))

    def suppress(self, target: str) -> float:
        _, dev, seq = self.sizes(target)
        if self.s.suppression_max_examples is not None:
            dev = min(dev, self.s.suppression_max_examples)
        levels = [k for k in self.s.levels if k > 0]
        masks = len(levels) * (1 + self.s.random_draws) + (len(self.s.levels) > len(levels))
        return self.seconds(masks * self.forward(dev, seq))


# ---------------------------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------------------------
def _random_from(value) -> str:
    if value not in suppression_masks.RANDOM_FROM:
        raise ValueError(f"--config.suppression.random_from must be one of {suppression_masks.RANDOM_FROM}, "
                         f"got {value!r}")
    return str(value)


def suppression_pairs(settings: Settings, tp: TaskPlan) -> list[tuple[str, str]]:
    """Each task's own skill neurons, clean -> adversarial, then the configured extra pairs (present ones)."""
    pairs = [(t, t) for t in tp.present] + [(tp.prompt_task_of(a), a) for a in tp.adversarial]
    pairs = [(src, tgt) for src, tgt in pairs if curves_for(settings, tgt)]
    pairs += [(s, t) for s, t in settings.extra_pairs if s in tp.present and t in tp.present]
    return list(dict.fromkeys(pairs))


def curves_for(settings: Settings, target: str) -> bool:
    """Whether `target`'s own suppression curves are computed (config.suppression.tasks; None: every task)."""
    return settings.suppression_tasks is None or target in settings.suppression_tasks


def transfer_targets(settings: Settings, tp: TaskPlan, source: str) -> list[str]:
    if settings.transfer_all:
        return list(tp.present)
    return [source] + [a for a in tp.adversarial if tp.prompt_task_of(a) == source]


def build_plan(settings: Settings, session=None, *, hooks: Optional[dict] = None) -> list[plan.Stage]:
    """Every stage of the sweep, in a good run order (model by model; tune, transfer, predictivity, suppress;
    report last). Nothing is loaded or run. `hooks` (tests): kind -> callable(stage key) called before the work.
    """
    session = session if session is not None else Session()
    hooks = hooks or {}
    s = settings
    tp = plan_tasks(s)
    infos = [model_info(m, s.allow_hub) for m in s.models]
    names = [i.name for i in infos]
    if len(set(names)) != len(names):
        raise ValueError(f"two models share an output name: {names} (outputs go under <workdir>/*/<name>/)")
    rate = flops_per_second(s)
    stages: list[plan.Stage] = []
    for info in infos:
        stages += _model_stages(s, session, info, tp, CostModel(s, info, rate), hooks)
    # The skipped tasks of every model: one skip stage each, so the plan and the report say why.
    for info in infos:
        for task, reason in tp.skipped.items():
            stages.append(plan.Stage(f"tune/{info.name}/{task}" if clean_of(task) == task else
                                     f"predictivity/{info.name}/{task}", "tune" if clean_of(task) == task else
                                     "predictivity", [], _never, group=f"{info.name}/{s.prompt_task_of(task)}",
                                     cost_s=0.0, skip_reason=reason))
    runnable = [st for st in stages if not st.skip_reason]
    if s.report:
        cfg = report_config(s, tp, infos)
        cfg["plan"]["stages"] = [st.key for st in runnable]    # what this plan ran (the validation document's time)

        def make_report(key="report"):
            _hook(hooks, "report", key)
            report_builder.build_report(s.workdir, layout.report_dir(s.workdir), cfg,
                                        label_overlap=measure_label_overlap(tp.clean, s.data_dir))

        n_tasks = max(len(tp.present), 1)
        perms = int(s.analysis.get("n_permutations", 1000))
        stages.append(plan.Stage("report", "report", layout.report_outputs(s.workdir), make_report,
                                 deps=[st.key for st in runnable], group="report", soft_deps=True,
                                 # the config and the plan's stages; no folder path (hosts may mount the data
                                 # elsewhere; skip reasons quote paths)
                                 settings={"config": {k: v for k, v in s.config.items() if k != "data_dir"},
                                           "stages": cfg["plan"]["stages"]},
                                 cost_s=round(10 + 2e-3 * perms * n_tasks * (n_tasks - 1) / 2 * len(infos), 1)))
    return plan.order(stages)


def measure_label_overlap(clean_tasks: Sequence[str], data_dir) -> dict:
    """The report's label dependence of every pair of the plan's clean tasks (data.readers.label_overlaps over
    every split), or the reason it could not be read: a dataset the stages read but this cannot is reported, not
    raised, so that the report is still written."""
    try:
        return {"pairs": readers.label_overlaps(clean_tasks, data_dir), "splits": list(task_table.SPLITS)}
    except (OSError, ValueError) as error:
        return {"error": f"{type(error).__name__}: {error}"}


def _smaller(a: Optional[int], b: Optional[int]) -> Optional[int]:
    """The tighter of two caps (None = no cap)."""
    return b if a is None else a if b is None else min(a, b)


def _never():
    raise RuntimeError("a skipped stage was asked to run")


def _hook(hooks, kind, key):
    if kind in hooks:
        hooks[kind](key)


def _model_stages(s: Settings, session, info: ModelInfo, tp: TaskPlan, cost: CostModel, hooks) -> list:
    m, path, w = info.name, info.path, s.workdir
    stages = []

    def add(key, kind, outputs, fn, deps=(), cost_s=0.0, group_task=None, skip_reason=None, settings=None):
        stages.append(plan.Stage(key, kind, outputs, fn, deps=list(deps), cost_s=cost_s,
                                 group=f"{m}/{group_task}", skip_reason=info.skip_reason or skip_reason,
                                 settings=settings))

    def settings(prompt_task, **fields):
        """What a stage computes with besides its input files: the model, seeds and row cap, the tuning settings
        of the task whose prompts it uses that evaluation reads (the rest reaches it through the prompt files, its
        inputs), and its own fields (plan.Stage.settings); the tune stage gives its whole tuning settings."""
        return {"model": m, "seeds": list(s.seeds), "max_examples": s.max_examples,
                "tune": stage_tune_settings(cost, prompt_task, fields=EVALUATION_TUNE_FIELDS), **fields}

    suppression = {"levels": list(s.levels), "scope": s.scope, "intervention": s.intervention,
                   "noise_scale": s.noise_scale, "noise_relative_to": s.noise_relative_to,
                   "random_draws": s.random_draws, "random_seed": s.random_seed,
                   "max_examples": _smaller(s.suppression_max_examples, s.max_examples)}
    if s.random_from != "all":    # the default stays out: stages recorded before the option existed stay done
        suppression["random_from"] = s.random_from

    for task in tp.clean:
        def tune(task=task, key=f"tune/{m}/{task}"):
            _hook(hooks, "tune", key)
            session.tune(path, task, s.seeds, s.workdir, s.data_dir, s.tune, max_examples=s.max_examples,
                         reuse_from=s.reuse_from)
        outs = ([layout.prompt_path(w, m, task, seed) for seed in s.seeds]
                + [layout.metrics_path(w, m, task, seed) for seed in s.seeds])
        add(f"tune/{m}/{task}", "tune", outs, tune, cost_s=cost.tune(task), group_task=task,
            settings=settings(task, tune=stage_tune_settings(cost, task)))

    for source in tp.clean:
        targets = transfer_targets(s, tp, source)

        def transfer(source=source, targets=targets, key=f"transfer/{m}/{source}"):
            _hook(hooks, "transfer", key)
            session.transfer(path, source, targets, s.seeds, s.workdir, s.data_dir, s.tune,
                             max_examples=s.max_examples)
        add(f"transfer/{m}/{source}", "transfer", [layout.transfer_path(w, m, source, t) for t in targets], transfer,
            deps=[f"tune/{m}/{source}"], cost_s=cost.transfer(targets), group_task=source,
            settings=settings(source, targets=list(targets)))

    for task in tp.present:
        clean = s.prompt_task_of(task)
        # Only an override is passed on: otherwise the stage's default (the table's clean task) applies.
        prompt_task = s.adversarial_prompts.get(task)

        def predictivity(task=task, key=f"predictivity/{m}/{task}", prompt_task=prompt_task):
            _hook(hooks, "predictivity", key)
            session.predictivity(path, task, s.seeds, str(s.workdir), s.data_dir, s.tune, options=s.stats,
                                 max_examples=s.max_examples, prompt_task=prompt_task, reuse_from=s.reuse_from)
        out = layout.predictivity_path(w, m, task)
        deps = [f"tune/{m}/{clean}"] + ([f"predictivity/{m}/{clean}"] if clean != task else [])
        add(f"predictivity/{m}/{task}", "predictivity", [out, out.with_name(out.name + ".json")], predictivity,
            deps=deps, cost_s=cost.predictivity(task), group_task=clean,
            settings=settings(clean, stats=s.stats))

    for source, target in suppression_pairs(s, tp):
        def suppress(source=source, target=target, key=f"suppress/{m}/{source}__{target}",
                     prompt_task=s.adversarial_prompts.get(target)):
            _hook(hooks, "suppress", key)
            session.suppress(path, source, target, s.seeds, str(s.workdir), s.data_dir, s.tune, levels=s.levels,
                             prompt_task=prompt_task,
                             scope=s.scope, intervention=s.intervention, noise_scale=s.noise_scale,
                             noise_relative_to=s.noise_relative_to, random_draws=s.random_draws,
                             random_seed=s.random_seed, random_from=s.random_from,
                             max_examples=_smaller(s.suppression_max_examples, s.max_examples))
        deps = list(dict.fromkeys([f"predictivity/{m}/{source}", f"tune/{m}/{s.prompt_task_of(target)}"]))
        add(f"suppress/{m}/{source}__{target}", "suppress", [layout.suppression_path(w, m, source, target)], suppress,
            deps=deps, cost_s=cost.suppress(target), group_task=s.prompt_task_of(target),
            settings=settings(s.prompt_task_of(target), suppression=suppression))

    # The held-out TEST split: never used for prompt selection or eq. 3, only scored (own prompt, own neurons).
    for task in held_out_tasks(s, tp):
        def transfer_test(task=task, key=f"transfer/{m}/{task}.test"):
            _hook(hooks, "transfer", key)
            session.transfer(path, task, [task], s.seeds, s.workdir, s.data_dir, s.tune, max_examples=s.max_examples,
                             split="test")
        add(f"transfer/{m}/{task}.test", "transfer", [layout.transfer_path(w, m, task, task, "test")], transfer_test,
            deps=[f"tune/{m}/{task}"], cost_s=cost.transfer([task]), group_task=task,
            settings=settings(task, targets=[task], split="test"))

        if not curves_for(s, task):
            continue

        def suppress_test(task=task, key=f"suppress/{m}/{task}__{task}.test"):
            _hook(hooks, "suppress", key)
            session.suppress(path, task, task, s.seeds, str(s.workdir), s.data_dir, s.tune, levels=s.levels,
                             scope=s.scope, intervention=s.intervention, noise_scale=s.noise_scale,
                             noise_relative_to=s.noise_relative_to, random_draws=s.random_draws,
                             random_seed=s.random_seed, random_from=s.random_from, split="test",
                             max_examples=_smaller(s.suppression_max_examples, s.max_examples))
        add(f"suppress/{m}/{task}__{task}.test", "suppress", [layout.suppression_path(w, m, task, task, "test")],
            suppress_test, deps=[f"predictivity/{m}/{task}", f"tune/{m}/{task}"], cost_s=cost.suppress(task),
            group_task=task, settings=settings(task, suppression=suppression, split="test"))

    # The neuron explorer's record (stages/explorer.py): a clean task and the adversarial sets scored with its
    # prompts, after their predictivity; one seed's dev pass each (a quarter of a 2-seed predictivity stage's work).
    for clean in tp.clean:
        sets = [clean] + [a for a in tp.present if a != clean and s.prompt_task_of(a) == clean]

        def explorer(clean=clean, sets=tuple(sets), key=f"explorer/{m}/{clean}"):
            _hook(hooks, "explorer", key)
            session.explorer(path, list(sets), s.seeds, str(s.workdir), s.data_dir, s.tune,
                             max_examples=s.max_examples)
        out = layout.explorer_path(w, m, clean)
        add(f"explorer/{m}/{clean}", "explorer", [out, out.with_name(out.name + ".json")], explorer,
            deps=[f"tune/{m}/{clean}"] + [f"predictivity/{m}/{t}" for t in sets],
            cost_s=sum(cost.predictivity(t) for t in sets) / 4, group_task=clean,
            settings=settings(clean, explorer={"top_k": explorer_stage.DEFAULT_TOP_K,
                                               "examples": explorer_stage.DEFAULT_EXAMPLES}))
    _robust_stages(s, session, info, tp, cost, hooks, add, settings)
    return stages


# Tuning fields that change nothing a finished tune stage wrote (display, checkpoint count, a time limit: a plan
# stage that stops early is not done and resumes, where the table's values came from): one list with resuming
# and copying a run.
TUNE_FIELDS_NOT_IN_OUTPUTS = tune_stage.CONFIG_NOT_COMPUTED
# The tuning fields that the stages after tuning read (encoding and scoring); their prompts are their inputs.
EVALUATION_TUNE_FIELDS = ("max_text_tokens", "eval_batch_size", "readout", "mask_slot", "prefix_positions",
                          "tied_scale")


def stage_tune_settings(cost: CostModel, task: str, fields: Optional[Sequence[str]] = None) -> dict:
    """The resolved tuning settings of `task` (CostModel.tune_settings) that a stage's outputs depend on: every
    field but TUNE_FIELDS_NOT_IN_OUTPUTS, or only `fields`."""
    resolved = cost.tune_settings(task)
    if fields is not None:
        return {k: resolved.get(k) for k in fields}
    return {k: v for k, v in resolved.items() if k not in TUNE_FIELDS_NOT_IN_OUTPUTS}


def robust_tasks(settings: Settings, tp: TaskPlan) -> list[str]:
    """The clean tasks the robustness arms are tuned on: config.robust.tasks that can run (all clean tasks of the
    plan when it names none)."""
    if settings.robust is None:
        return []
    wanted = settings.robust.tasks or tuple(tp.clean)
    return [t for t in wanted if t in tp.clean]


def robust_scored_sets(settings: Settings, tp: TaskPlan, task: str) -> list[str]:
    """What the arms of the clean `task` are scored on besides its clean dev: its own adversarial sets in the plan,
    robust.extra_targets of `task` whose data is present, and (robust.transfer_within_type) the plan's other clean
    tasks of the same task type. Each needs only its dev split."""
    scored = [a for a in tp.adversarial if clean_of(a) == task]
    scored += [t for src, t in settings.robust.extra_targets
               if src == task and t not in scored and t != task
               and data_problem(t, settings.data_dir, settings.allow_hub) is None]
    if settings.robust.transfer_within_type:
        scored += [t for t in tp.clean if t != task and t not in scored
                   and task_table.scored_kind(task, t) == task_table.TRANSFER_SAME_TYPE]
    return scored


def _robust_stages(s: Settings, session, info: ModelInfo, tp: TaskPlan, cost: CostModel, hooks, add,
                   settings) -> None:
    """Adds, through _model_stages's `add` and `settings` (same groups, same model skip, same settings
    fingerprint), the robust_tune and patching stages (issue 17), each only when its config block is present."""
    m, path, w = info.name, info.path, s.workdir
    measured_by: dict[str, str] = {}     # adversarial set -> the robust task whose arms measure its predictivity
    for task in robust_tasks(s, tp):
        adversarial = robust_scored_sets(s, tp, task)
        for target in adversarial:
            if s.robust.predictivity and task_table.scored_kind(task, target) in (
                    task_table.ADVERSARIAL, task_table.ADVERSARIAL_TRANSFER):
                if measured_by.setdefault(target, task) != task:
                    # robust/<arm>/predictivity/<m>/<set>.npz is one file per set: two prompt tasks would overwrite
                    raise ValueError(f"config.robust: the arms of {measured_by[target]!r} and of {task!r} are both "
                                     f"scored on {target!r}, and robust_predictivity keeps one result per set; "
                                     "drop it from one task's robust.extra_targets or set robust.predictivity=False")
        for arm in s.robust.arms:
            def robust_tune(task=task, arm=arm, adversarial=adversarial, key=f"robust_tune/{m}/{task}/{arm}"):
                _hook(hooks, "robust_tune", key)
                session.robust_tune(path, task, arm, s.robust, adversarial, s.seeds, s.workdir, s.data_dir, s.tune,
                                    max_examples=s.max_examples)
            outs = ([layout.robust_prompt_path(w, m, task, arm, seed) for seed in s.seeds]
                    + [layout.robust_metrics_path(w, m, task, arm, seed) for seed in s.seeds]
                    + [layout.robust_eval_path(w, m, task, arm)])
            add(f"robust_tune/{m}/{task}/{arm}", "robust_tune", outs, robust_tune, deps=[f"predictivity/{m}/{task}"],
                cost_s=cost.robust_tune(task, arm, adversarial), group_task=task,
                settings=settings(task, tune=stage_tune_settings(cost, task), arm=arm, scored=list(adversarial),
                                  robust={"perturbations": s.robust.perturbations, "neighbour_k": s.robust.neighbour_k,
                                          "protected_words": list(s.robust.protected_words),
                                          "anchor": s.robust.anchor}))
            if not s.robust.predictivity:
                continue
            measured = [task] + [t for t in adversarial if task_table.scored_kind(task, t) in (
                task_table.ADVERSARIAL, task_table.ADVERSARIAL_TRANSFER)]

            def robust_predictivity(task=task, arm=arm, measured=measured,
                                    key=f"robust_predictivity/{m}/{task}/{arm}"):
                _hook(hooks, "robust_predictivity", key)
                for target in measured:     # the clean task first: its TRAIN baseline serves the adversarial sets
                    # the plain arm's prompts are the tune stage's: the main study's result is copied when it
                    # is the same computation (stages.predictivity checks prompt hashes, caps and options)
                    session.predictivity(path, target, s.seeds, str(layout.robust_arm_dir(w, arm)), s.data_dir,
                                         s.tune, options=s.stats, max_examples=s.max_examples, prompt_task=task,
                                         reuse_from=str(w) if arm == "plain" else None)
            outs = [layout.predictivity_path(layout.robust_arm_dir(w, arm), m, t) for t in measured]
            add(f"robust_predictivity/{m}/{task}/{arm}", "robust_predictivity",
                outs + [o.with_name(o.name + ".json") for o in outs], robust_predictivity,
                # the plain arm copies the main study's results: after them, so that they exist to be copied
                deps=[f"robust_tune/{m}/{task}/{arm}"] + ([f"predictivity/{m}/{t}" for t in measured
                                                           if t in tp.present] if arm == "plain" else []),
                cost_s=sum(cost.predictivity(t) for t in measured if arm != "plain" or t not in tp.present),
                group_task=task, settings=settings(task, stats=s.stats, arm=arm, measured=list(measured)))
    if s.patching is not None:
        source = s.patching.source
        # patching reads the clean task's own prompts and skill neurons: an adversarial set evaluated with another
        # task's prompts (config adversarial_prompts, e.g. AdvQQP with MRPC's) has none to patch with
        for adversarial in [a for a in tp.adversarial if s.prompt_task_of(a) == clean_of(a)]:
            clean = clean_of(adversarial)

            def patch(clean=clean, adversarial=adversarial, key=f"patching/{m}/{clean}__{adversarial}.{source}"):
                _hook(hooks, "patching", key)
                session.patching(path, clean, adversarial, s.seeds, s.workdir, s.data_dir, s.tune, s.patching,
                                 max_examples=s.max_examples)
            add(f"patching/{m}/{clean}__{adversarial}.{source}", "patching",
                [layout.patching_path(w, m, clean, adversarial, source)], patch,
                deps=[f"tune/{m}/{clean}", f"predictivity/{m}/{clean}"],
                cost_s=cost.patching(adversarial, s.patching), group_task=clean,
                settings=settings(clean, patching=s.patching),
                skip_reason=advglue.skip_reason(adversarial, s.data_dir) if s.data_dir else
                "no data_dir: the AdvGLUE dev set with original_* texts is read from <data_dir>/advglue/dev_ann.json")


def report_config(s: Settings, tp: TaskPlan, infos: Sequence[ModelInfo]) -> dict:
    """What the report records: the config, the tasks expected (skipped ones listed as missing), why stages were
    skipped, and the analysis options."""
    cfg = dict(s.config)
    cfg["tasks"] = [t for t in s.tasks] + [t for t in s.optional_tasks if t in tp.present]
    cfg["data_dir"] = s.data_dir
    cfg["analysis"] = dict(s.analysis)
    cfg["plan"] = {"tasks_run": list(tp.present), "tasks_skipped": dict(tp.skipped),
                   "optional_tasks_absent": dict(tp.dropped),
                   "models": {i.name: {"path": i.path, "family": i.family, "skipped": i.skip_reason} for i in infos}}
    return cfg
