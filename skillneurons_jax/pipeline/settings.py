"""Every field of a study config, parsed and validated once into frozen typed settings.

    study = StudySettings.from_config(config, workdir, data_dir, overrides={"max_examples": 50})

`config` is an ml_collections ConfigDict (or mapping) shaped like configs/default.py. Nothing is loaded or read
(but the task table and the reuse_from folder). A bad value is ONE ValueError naming the field as the command
spells it (`--config.suppression.max_examples=-1: ...`, or `--max_examples=-1` for a flag), its value and the
allowed range; an unknown key is refused the same way. The command-line overrides of launch.reproduce
(--seeds, --max_examples, --max_steps, --eval_every, --model_path, --task) go through the same checks
(`overrides`), so no settings are edited after validation. launch/common.check_flags checks the common flags of
every launch script with `check_field` (the same table of ranges).

Each stage kind owns the typed settings of its config block (stages/registry.py: `config_key`,
`settings_type.from_config`): tune (stages.tune.TuneSettings), stats (neurons.stats_options.StatsOptions, the
predictivity kind's), suppression (stages.suppress.SuppressionSettings), transfer (stages.transfer.
TransferSettings), report (stages.report.ReportSettings), the optional control (stages.control.ControlSettings:
F6a's control pairs), suppress_slots (stages.suppress_slots.SlotSettings) and probe (stages.probe.ProbeSettings), and, where skillneurons_jax.robust is imported, robust
and patching. `StudySettings.kind(name)` returns a kind's settings; a block of a kind that is not registered is
an unknown key.
"""
from __future__ import annotations

import dataclasses
import importlib
import pathlib
import pkgutil
from typing import Any, Mapping, Optional

from skillneurons_jax import fields
from skillneurons_jax.fields import as_list, plain, refuse_unknown
from skillneurons_jax.analysis.report_context import DEFAULT_OPTIONS as ANALYSIS_OPTIONS
from skillneurons_jax.data import tasks as task_table
from skillneurons_jax import stages as _stages_package
from skillneurons_jax.stages import registry

# Every module of skillneurons_jax/stages/ is imported here, so a core stage kind registers itself by existing:
# adding one is its own module, not an edit of a list (registry orders kinds by number, not by import).
for _module in pkgutil.iter_modules(_stages_package.__path__):
    importlib.import_module(f"{_stages_package.__name__}.{_module.name}")


# ---------------------------------------------------------------------------------------------------------------
# Numbers: one table of ranges for the config's fields and the launch scripts' flags
# ---------------------------------------------------------------------------------------------------------------
# The table of ranges (fields.RANGES) and its checks live in the light `fields` module, so that every launch
# script checks its flags with them without importing the stage kinds.
RANGES = fields.RANGES
check_field = fields.check_field
parse_seeds = fields.parse_seeds


def parse_adversarial_prompts(value) -> dict[str, str]:
    """config `adversarial_prompts` ("advqqp:mrpc,...") -> {adversarial task: clean task}. The key must be an
    adversarial set of the task table and the value a clean task of the same task type (its verbalizer and label
    meaning must be the adversarial set's); anything else is a ValueError naming the entry."""
    out = {}
    for entry in as_list(value):
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
# Settings of the study itself (the kinds' blocks are their modules')
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CostSettings:
    """config.cost: the FLOP rate of this machine (None: pipeline.cost.DEFAULT_FLOPS) and the fixed seconds of
    compilation per compiled program."""
    flops_per_second: Optional[float] = None
    stage_overhead_s: float = 20.0

    @classmethod
    def from_config(cls, block, where: str = "--config.cost.") -> "CostSettings":
        block = dict(plain(block) or {})
        refuse_unknown(block, ("flops_per_second", "stage_overhead_s"), where)
        rate = check_field("cost.flops_per_second", block.get("flops_per_second"), f"{where}flops_per_second")
        overhead = check_field("cost.stage_overhead_s", block.get("stage_overhead_s", 20.0),
                               f"{where}stage_overhead_s")
        return cls(None if rate is None else float(rate), float(overhead))


def parse_analysis(block, where: str = "--config.analysis.") -> dict:
    """config.analysis (the report's statistics and figures; analysis.report_context.DEFAULT_OPTIONS) checked:
    unknown keys and out-of-range numbers refused. Returned as given (the report reads it from the config)."""
    block = dict(plain(block) or {})
    refuse_unknown(block, ANALYSIS_OPTIONS, where)
    for key, value in block.items():
        if f"analysis.{key}" in RANGES:
            check_field(f"analysis.{key}", value, f"{where}{key}")
    return block


STUDY_KEYS = ("models", "tasks", "optional_tasks", "data_dir", "seeds", "max_examples", "held_out", "analysis",
              "allow_hub", "reuse_from", "continue_on_error", "jax_cache", "cost", "adversarial_prompts")
# launch.reproduce's flags that replace config fields, as the command spells them
OVERRIDES = ("seeds", "max_examples", "max_steps", "eval_every", "model_path", "task")


@dataclasses.dataclass(frozen=True)
class StudySettings:
    """Everything the plan needs, validated (see configs/default.py for the fields)."""
    workdir: pathlib.Path
    data_dir: Optional[str]
    models: tuple[str, ...]
    tasks: tuple[str, ...]
    optional_tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    max_examples: Optional[int]
    kinds: Mapping[str, Any]      # config key of a registered kind -> its typed settings (None: block absent)
    held_out: bool                # also score each clean task's own prompt and skill neurons on its TEST split
    analysis: dict
    allow_hub: bool
    continue_on_error: bool
    jax_cache: bool
    cost: CostSettings
    config: dict                  # the whole config, plain (recorded in the report)
    # adversarial task -> the clean task whose prompts and TRAIN baseline it uses instead of the task table's
    # (config `adversarial_prompts`, "advqqp:mrpc"); empty: the table's clean task.
    adversarial_prompts: dict = dataclasses.field(default_factory=dict)
    # config `reuse_from`: another study's workdir whose tune / predictivity results of the same computation are
    # copied (stages.tune.copy_finished_run, stages.predictivity's reuse); None: everything is computed here
    reuse_from: Optional[str] = None

    # the core kinds' settings by name (a kind of an extension: `kind(config_key)`)
    @property
    def tune(self):
        return self.kinds["tune"]

    @property
    def stats(self):
        return self.kinds["stats"]

    @property
    def suppression(self):
        return self.kinds["suppression"]

    @property
    def transfer(self):
        return self.kinds["transfer"]

    @property
    def report(self):
        return self.kinds["report"]

    def kind(self, config_key: str):
        """The typed settings of the kind whose config block is `config_key`; None when the block is absent or
        empty (an optional study part that is off)."""
        return self.kinds.get(config_key)

    def prompt_task_of(self, task: str) -> str:
        """The clean task whose prompts (and TRAIN baseline) `task` uses: itself for a clean task."""
        return self.adversarial_prompts.get(task) or task_table.clean_task_of(task)

    def replace(self, **changes) -> "StudySettings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_config(cls, config, workdir, data_dir: Optional[str] = None, *, default_tune=None,
                    overrides: Optional[Mapping[str, Any]] = None) -> "StudySettings":
        """config: a ConfigDict or mapping. `data_dir` (the flag) wins over config.data_dir; `default_tune`
        (configs/tune.py's config, passed by launch.reproduce) is the tuning block of a config that has none;
        `overrides`: launch.reproduce's flags given on the command line (OVERRIDES), checked like the config's
        fields and named as flags. Unknown keys, task names and out-of-range values raise ValueError here."""
        config = plain(config)
        config = dict(config or {})
        overrides = dict(overrides or {})
        refuse_unknown(overrides, OVERRIDES, "override ")
        blocks = {k.config_key: k for k in registry.kinds() if k.config_key}
        refuse_unknown(config, (*STUDY_KEYS, *blocks), "--config.")
        get = config.get

        models = as_list(get("models"))
        if "model_path" in overrides:
            models = [str(overrides["model_path"])]
        if not models:
            raise ValueError("--config.models names no model")
        names = {}
        for field in ("tasks", "optional_tasks"):
            listed = as_list(get(field))
            if [t.lower() for t in listed] == ["all"]:      # every task of the table
                listed = list(task_table.TASKS)
            names[field] = tuple(task_table.get_task(t).name for t in listed)   # unknown: ValueError
        if "task" in overrides:
            names = {"tasks": (task_table.get_task(overrides["task"]).name,), "optional_tasks": ()}
        if not names["tasks"] and not names["optional_tasks"]:
            raise ValueError("--config.tasks names no task")
        seeds = (parse_seeds(overrides["seeds"], "--seeds") if "seeds" in overrides
                 else parse_seeds(get("seeds"), "--config.seeds"))
        max_examples = (check_field("max_examples", overrides["max_examples"], "--max_examples")
                        if "max_examples" in overrides else check_field("max_examples", get("max_examples")))

        tune_block = get("tune")
        if tune_block is None:
            tune_block = plain(default_tune)
        if tune_block is None:
            raise ValueError("--config.tune is missing: give the tuning block (configs/tune.py's fields)")
        tune_block = dict(tune_block)
        if "max_steps" in overrides:   # one budget for every task: the config's per-task steps give way too
            tune_block["max_steps"] = check_field("max_steps", overrides["max_steps"], "--max_steps")
            if "max_steps_by_task" in tune_block:
                tune_block["max_steps_by_task"] = ""
        if "eval_every" in overrides:
            tune_block["eval_every"] = check_field("eval_every", overrides["eval_every"], "--eval_every")
        config_for_kinds = {**config, "tune": tune_block}

        parsed = {}
        for key, kind in blocks.items():
            block = config_for_kinds.get(key)
            if key in ("tune", "stats", "suppression", "transfer", "report"):   # the core study: always present
                parsed[key] = kind.settings_type.from_config(block, f"--config.{key}.")
            else:                       # an optional part of the study: off when its block is absent or empty
                parsed[key] = kind.settings_type.from_config(block, f"--config.{key}.") if block else None

        analysis = parse_analysis(get("analysis"))
        held_out = dict(plain(get("held_out")) or {})
        refuse_unknown(held_out, ("enabled",), "--config.held_out.")
        data_dir = data_dir if data_dir is not None else get("data_dir")
        reuse_from = str(get("reuse_from") or "") or None
        if reuse_from is not None:
            if not pathlib.Path(reuse_from).is_dir():
                raise ValueError(f"config.reuse_from {reuse_from!r} is not a folder (a finished study's workdir)")
            if pathlib.Path(reuse_from).resolve() == pathlib.Path(workdir).resolve():
                raise ValueError(f"config.reuse_from {reuse_from!r} is this plan's own workdir")
        study = cls(
            workdir=pathlib.Path(workdir), data_dir=None if data_dir in (None, "") else str(data_dir),
            models=tuple(models), tasks=names["tasks"], optional_tasks=names["optional_tasks"], seeds=seeds,
            max_examples=max_examples, kinds=parsed,
            held_out=bool(held_out.get("enabled", True)), analysis=analysis,
            allow_hub=bool(get("allow_hub") or False), continue_on_error=bool(get("continue_on_error", True)),
            jax_cache=bool(get("jax_cache", True)),
            cost=CostSettings.from_config(get("cost")), config=dict(config),
            adversarial_prompts=parse_adversarial_prompts(get("adversarial_prompts")), reuse_from=reuse_from)
        for key, kind in blocks.items():       # checks across blocks (e.g. robust.tasks within config.tasks)
            check = getattr(kind.settings_type, "check_study", None)
            if check is not None and parsed[key] is not None:
                check(parsed[key], study)
        return study


# The name the rest of the code and the tests know the study's settings by.
Settings = StudySettings
