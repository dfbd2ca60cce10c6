"""What is present here, read without loading anything: model folders (config.json) and task data.

    info = model_info("offline:all-minilm-l6-v2")        # name, family, sizes; skip_reason when absent
    tasks = plan_tasks(study)                              # which configured tasks can run, why the others not

Absent inputs do not stop the sweep (a choice): a configured task whose data is absent, an adversarial task
whose clean task is absent or not configured, or a model folder that does not exist becomes `skip` stages that
carry the reason; `optional_tasks` are used where their data is found and otherwise left out of the plan.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Optional

from skillneurons_jax import models
from skillneurons_jax.data import readers
from skillneurons_jax.data import tasks as task_table
from skillneurons_jax.models import config as model_config
from skillneurons_jax.models import convert


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


def held_out_tasks(settings, tp: "TaskPlan") -> list[str]:
    """The clean tasks whose held-out TEST split is read here (Table 1 and the suppression curves on test)."""
    if not settings.held_out:
        return []
    return [t for t in tp.clean if has_split(t, "test", settings.data_dir, settings.allow_hub)]


@dataclasses.dataclass
class TaskPlan:
    present: list[str]                  # tasks with data, clean ones before adversarial ones
    skipped: dict[str, str]             # task -> reason
    dropped: dict[str, str]             # optional tasks left out (their data is absent) -> reason
    adversarial_prompts: dict = dataclasses.field(default_factory=dict)    # StudySettings.adversarial_prompts

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


def plan_tasks(settings) -> TaskPlan:
    """Which configured tasks of `settings` (pipeline.settings.StudySettings) can run here, and why the others
    cannot."""
    present, skipped, dropped = [], {}, {}
    wanted = list(dict.fromkeys([*settings.tasks, *settings.optional_tasks]))
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
