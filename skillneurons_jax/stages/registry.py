"""Stage kinds by name: each kind is one module that registers its settings type, plan, cost and run.

    KIND = registry.register("suppress", SuppressionSettings, config_key="suppression",
                             plan=plan, cost=cost, run=run, held_out=held_out)

The plan (pipeline/build.py) is built by iterating `kinds()` (ordered by `order`), per model:
  1. the `plan(ctx)` of every kind with order < HELD_OUT_ORDER (the core study: tune 10, transfer 20,
     predictivity 30, suppress 40);
  2. for each clean task scored on its held-out TEST split, every kind's `held_out(ctx, task)` (if it has one);
  3. the `plan(ctx)` of every kind with order >= HELD_OUT_ORDER (extensions, e.g. skillneurons_jax/robust/,
     which the core never imports: robust_tune 110, robust_predictivity 120, patching 130);
then, once for the whole study, the `scope="study"` kinds (the report) with every other stage known.
The order fixes the plan's stage list, which the report's settings record: keep a kind's number once chosen.
A kind's report sections (`sections=`: analysis.report_context.Section(title, build(context, model)), from its
analysis/sections/ module) are drawn in each model's block of the report in the same order (stages/report.py
hands `sections()` to analysis.report.build_report): registering the kind adds its section.

What a kind's functions receive (`ctx`, built by pipeline/build.py; the kind never imports pipeline/):
  ctx.study      pipeline.settings.StudySettings (frozen; `ctx.study.kind(name)` is this kind's typed settings)
  ctx.model      pipeline.presence.ModelInfo (name, path, family, config) of the model being planned
  ctx.tasks      pipeline.presence.TaskPlan (present / clean / adversarial / skipped tasks)
  ctx.cost       pipeline.cost.CostModel (sizes, forward FLOPs, seconds, the resolved tuning settings)
  ctx.session    pipeline.session.Session (loaded models and task setups, cached)
  ctx.workdir    pathlib.Path
  ctx.add(key, outputs, args=..., deps=..., group_task=..., settings=..., skip_reason=..., kind=...)
                 adds one pipeline.plan.Stage; its cost is `cost(ctx, **args)` and its work `run(ctx, **args)` of the kind
  ctx.settings(prompt_task, **fields)   the stage fingerprint every model stage shares (model, seeds, cap, the
                 evaluation's tuning fields) plus `fields`
  ctx.tune_settings(task, fields=None)  the resolved tuning settings of `task` that outputs depend on
  ctx.data_problem(task)   None when the task's data is present, else why not
  ctx.held_out_tasks(), ctx.stages (study scope: every stage planned so far)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    settings_type: Any                    # the kind's frozen settings dataclass (or None: it has none)
    plan: Callable                        # plan(ctx) -> None (adds stages through ctx.add)
    cost: Callable                        # cost(ctx, **args) -> estimated seconds of one stage
    run: Callable                         # run(ctx, **args) -> anything (writes the stage's outputs)
    config_key: Optional[str] = None      # the config block parsed into settings_type (None: no block)
    held_out: Optional[Callable] = None   # held_out(ctx, task) -> None: its stages on a task's TEST split
    order: int = 100                      # position in the plan (see the module docstring)
    scope: str = "model"                  # "model": planned per model; "study": once, last (the report)
    sections: tuple = ()                  # its report sections (analysis.report_context.Section), per model


HELD_OUT_ORDER = 100
_KINDS: dict[str, Kind] = {}


def register(name: str, settings_type=None, *, plan: Callable, cost: Callable, run: Callable,
             config_key: Optional[str] = None, held_out: Optional[Callable] = None, order: int = HELD_OUT_ORDER,
             scope: str = "model", sections: Sequence = ()) -> Kind:
    """Registers a stage kind (at import of its module) and returns it. `settings_type`, when a config block
    (`config_key`) belongs to the kind, must offer `from_config(block, where) -> instance` (ValueError naming
    `where` + field for a bad value). `sections`: its report sections (each with `title` and `build(context,
    model)`). Registering a name twice with other functions is an error."""
    if scope not in ("model", "study"):
        raise ValueError(f"stage kind {name!r}: scope {scope!r}; allowed: 'model', 'study'")
    if config_key is not None and not hasattr(settings_type, "from_config"):
        raise TypeError(f"stage kind {name!r}: its settings type {settings_type!r} has no from_config")
    sections = tuple(sections)
    bad = [s for s in sections
           if not isinstance(getattr(s, "title", None), str) or not callable(getattr(s, "build", None))]
    if bad:
        raise TypeError(f"stage kind {name!r}: sections {bad!r} are not Section(title, build)")
    kind = Kind(name, settings_type, plan, cost, run, config_key, held_out, int(order), scope, sections)
    old = _KINDS.get(name)
    if old is not None and old != kind:
        raise ValueError(f"stage kind {name!r} is registered twice")
    _KINDS[name] = kind
    return kind


def kinds() -> list[Kind]:
    """Every registered kind: model-scope kinds by `order`, then study-scope ones (by `order`)."""
    return sorted(_KINDS.values(), key=lambda k: (k.scope == "study", k.order, k.name))


def sections() -> list:
    """Every kind's report sections, in the kinds' order."""
    return [section for kind in kinds() for section in kind.sections]


def get(name: str) -> Kind:
    if name not in _KINDS:
        raise ValueError(f"unknown stage kind {name!r}; registered: {sorted(_KINDS)}")
    return _KINDS[name]


def names() -> tuple[str, ...]:
    return tuple(k.name for k in kinds())
