"""The research as a plan of stages, built by iterating the registered stage kinds (stages/registry.py).

    study = StudySettings.from_config(config, workdir, data_dir)      # pipeline/settings.py
    stages = build_plan(study, session)        # list[plan.Stage]; nothing is loaded or run here

Keys (`<m>` = the model's short name, LoadedModel.name) and outputs are each kind's (its module's docstring):
tune/<m>/<task>, transfer/<m>/<source>[.test], predictivity/<m>/<task>, suppress/<m>/<src>__<tgt>[.test], and,
where skillneurons_jax.robust is imported and config.robust / config.patching are set, robust_tune/<m>/<task>/<arm>,
robust_predictivity/<m>/<task>/<arm> and patching/<m>/<clean>__<adv>.<source>; the report last.

Dependencies carry data: a stage is redone when one of its inputs (its dependencies' outputs) changed since it
ran (plan.py), so a corrupted or deleted output is recomputed together with what was derived from it.

Groups (for pods): `<m>/<clean task>`: a clean task, its adversarial sets and every stage that reads only their
prompts and statistics, so no stage depends on a stage of another group; the report is group "report" and runs
on host 0 after every other stage is done (launch/reproduce.py).

Absent inputs do not stop the sweep (pipeline/presence.py): their stages become `skip` stages carrying the
reason (shown by --dry_run, printed by the run, passed to the report); every other stage still runs.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Optional, Sequence

from skillneurons_jax import accelerators
from skillneurons_jax.pipeline import cost as cost_model
from skillneurons_jax.pipeline import plan, presence
from skillneurons_jax.pipeline.session import Session
from skillneurons_jax.pipeline.settings import StudySettings
from skillneurons_jax.stages import registry
from skillneurons_jax.stages import tune as tune_stage

# Tuning fields that change nothing a finished tune stage wrote (display, checkpoint count, a time limit: a plan
# stage that stops early is not done and resumes, where the table's values came from): one list with resuming
# and copying a run.
TUNE_FIELDS_NOT_IN_OUTPUTS = tune_stage.CONFIG_NOT_COMPUTED


@dataclasses.dataclass
class PlanContext:
    """What a kind's plan, cost and run functions receive (stages/registry.py lists it)."""
    study: StudySettings
    session: Any
    tasks: presence.TaskPlan
    model: Optional[presence.ModelInfo] = None       # None for a study-scope kind
    cost: Optional[cost_model.CostModel] = None
    models: Sequence[presence.ModelInfo] = ()
    stages: list = dataclasses.field(default_factory=list)   # the plan so far (every kind appends here)
    hooks: dict = dataclasses.field(default_factory=dict)
    kind: Optional[registry.Kind] = None
    _placed: set = dataclasses.field(default_factory=set)     # keys placed with `after`

    @property
    def workdir(self) -> pathlib.Path:
        return self.study.workdir

    def settings_of(self, kind_name: str):
        """A registered kind's typed settings (StudySettings.kind by its config key)."""
        return self.study.kind(registry.get(kind_name).config_key)

    def add(self, key: str, outputs, *, args: Optional[dict] = None, deps=(), group_task: Optional[str] = None,
            group: Optional[str] = None, settings=None, skip_reason: Optional[str] = None,
            soft_deps: bool = False, after: Optional[str] = None) -> plan.Stage:
        """One stage of the current kind: its cost is `kind.cost(ctx, **args)`, its work `kind.run(ctx, **args)`
        (after the test hook of its kind, if any); group `<model>/<group_task>` unless `group` is given; a model
        that is absent makes it a skip stage. `after`: the key of a stage already planned that this one follows
        directly in the plan's list (a stage that belongs beside another kind's, e.g. an arm's predictivity
        beside its tuning); otherwise it goes last."""
        kind, args = self.kind, dict(args or {})

        def run():
            if kind.name in self.hooks:
                self.hooks[kind.name](key)
            kind.run(self, **args)

        stage = plan.Stage(key, kind.name, list(outputs), run, deps=list(deps), cost_s=kind.cost(self, **args),
                           group=group or f"{self.model.name}/{group_task}",
                           skip_reason=(self.model.skip_reason if self.model else None) or skip_reason,
                           settings=settings, soft_deps=soft_deps)
        if after is None:
            self.stages.append(stage)
        else:
            index = next(i for i, st in enumerate(self.stages) if st.key == after)
            # behind `after` and the stages already placed behind it
            while index + 1 < len(self.stages) and self.stages[index + 1].key in self._placed:
                index += 1
            self.stages.insert(index + 1, stage)
            self._placed.add(key)
        return stage

    def tune_settings(self, task: str, fields: Optional[Sequence[str]] = None) -> dict:
        """The resolved tuning settings of `task` (CostModel.tune_settings) that a stage's outputs depend on:
        every field but TUNE_FIELDS_NOT_IN_OUTPUTS, or only `fields`."""
        resolved = self.cost.tune_settings(task)
        if fields is not None:
            return {k: resolved.get(k) for k in fields}
        return {k: v for k, v in resolved.items() if k not in TUNE_FIELDS_NOT_IN_OUTPUTS}

    def settings(self, prompt_task: str, **fields) -> dict:
        """What a stage computes with besides its input files: the model, seeds and row cap, the tuning settings
        of the task whose prompts it uses that evaluation reads (the rest reaches it through the prompt files, its
        inputs), and its own fields (plan.Stage.settings); the tune stage gives its whole tuning settings."""
        return {"model": self.model.name, "seeds": list(self.study.seeds), "max_examples": self.study.max_examples,
                "tune": self.tune_settings(prompt_task, fields=tune_stage.EVALUATION_TUNE_FIELDS), **fields}

    def data_problem(self, task: str) -> Optional[str]:
        return presence.data_problem(task, self.study.data_dir, self.study.allow_hub)

    def held_out_tasks(self) -> list[str]:
        return presence.held_out_tasks(self.study, self.tasks)


def _never():
    raise RuntimeError("a skipped stage was asked to run")


def build_plan(settings: StudySettings, session=None, *, hooks: Optional[dict] = None) -> list[plan.Stage]:
    """Every stage of the sweep, in a good run order (model by model, kind by kind: registry.kinds(); the report
    last). Nothing is loaded or run. `hooks` (tests): kind name -> callable(stage key) called before the work."""
    session = session if session is not None else Session()
    s = settings
    tp = presence.plan_tasks(s)
    infos = [presence.model_info(m, s.allow_hub) for m in s.models]
    names = [i.name for i in infos]
    if len(set(names)) != len(names):
        raise ValueError(f"two models share an output name: {names} (outputs go under <workdir>/*/<name>/)")
    rate = cost_model.flops_per_second(s)
    stages: list[plan.Stage] = []
    kinds = registry.kinds()
    model_kinds = [k for k in kinds if k.scope == "model"]
    for info in infos:
        ctx = PlanContext(s, session, tp, info, cost_model.CostModel(s, info, rate), infos, stages, hooks or {})
        for kind in [k for k in model_kinds if k.order < registry.HELD_OUT_ORDER]:
            kind.plan(dataclasses.replace(ctx, kind=kind))
        # The held-out TEST split: never used for prompt selection or eq. 3, only scored (own prompt, own neurons).
        for task in ctx.held_out_tasks():
            for kind in [k for k in model_kinds if k.held_out is not None]:
                kind.held_out(dataclasses.replace(ctx, kind=kind), task)
        for kind in [k for k in model_kinds if k.order >= registry.HELD_OUT_ORDER]:
            kind.plan(dataclasses.replace(ctx, kind=kind))
    # The skipped tasks of every model: one skip stage each, so the plan and the report say why.
    for info in infos:
        for task, reason in tp.skipped.items():
            clean = presence.clean_of(task) == task
            stages.append(plan.Stage(f"tune/{info.name}/{task}" if clean else f"predictivity/{info.name}/{task}",
                                     "tune" if clean else "predictivity", [], _never,
                                     group=f"{info.name}/{s.prompt_task_of(task)}", cost_s=0.0, skip_reason=reason))
    for kind in [k for k in kinds if k.scope == "study"]:
        kind.plan(PlanContext(s, session, tp, None, None, infos, stages, hooks or {}, kind))
    return plan.order(stages)


# ---------------------------------------------------------------------------------------------------------------
# The whole sweep's estimate (launch.reproduce --dry_run)
# ---------------------------------------------------------------------------------------------------------------
def sweep_seconds(settings: StudySettings, flops_per_second: Optional[float] = None) -> tuple[float, int, int]:
    """(estimated seconds of every runnable stage, number of runnable stages, number of skipped stages) of the
    plan for `settings` at `flops_per_second` (None: the settings' own rate): the plan's cost model (forward-pass
    FLOPs of each stage, plus its fixed compile overhead). Builds the plan only: nothing is loaded or run."""
    if flops_per_second is not None:
        settings = settings.replace(cost=dataclasses.replace(settings.cost, flops_per_second=float(flops_per_second)))
    stages = build_plan(settings)
    runnable = [s for s in stages if not s.skip_reason]
    return float(sum(s.cost_s for s in runnable)), len(runnable), len(stages) - len(runnable)


def format_estimate(settings: StudySettings, accelerator: str, chips: int = 1, utilisation: float = 0.4) -> list[str]:
    """Lines comparing the whole sweep's estimated time here and on `accelerator` (accelerators.accelerator_rate)."""
    label, rate = accelerators.accelerator_rate(accelerator, chips, utilisation)
    here_rate = cost_model.flops_per_second(settings)
    here_s, n, skipped = sweep_seconds(settings)
    there_s, _, _ = sweep_seconds(settings, rate)
    return [f"[estimate] the whole plan ({n} runnable stages, done or not; {skipped} skipped stages, whose data "
            f"or model is absent here, are not counted), from its FLOPs plus {settings.cost.stage_overhead_s:.0f} s "
            f"of compilation per compiled program:",
            f"[estimate]   this machine ({here_rate:.3g} FLOP/s): {here_s:.0f} s ({here_s / 3600:.1f} h)",
            f"[estimate]   {label} = {rate:.3g} FLOP/s: {there_s:.0f} s ({there_s / 3600:.1f} h)"]

