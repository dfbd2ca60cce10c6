"""Stage kind control: F6a's control pair of each adversarial set, planned (the work is stages.predictivity's).

    control/<m>/<adv>  ->  WORKDIR/predictivity_controls/<m>/<adv>.npz (+ .npz.json)   (layout.control_predictivity_path)

F6a asks whether the clean skill neurons stay predictive on the adversarial set: the layer-averaged Spearman rho of
Pred(adversarial) with Pred(clean). Both share the clean task's prompts and TRAIN baseline, which correlate them by
themselves, so the control pair is an UNRELATED clean set, its dev rows capped at the adversarial set's size, seen
through the same prompts and baseline (stages.predictivity `control_for`); analysis.verdicts.f6_correlation then
tests rho(adversarial, clean) - rho(control, clean) over seeds.

Which set (`control_task`): the config's explicit pair ("advsst2:mrpc") if given, else the first present clean task
(in the plan's task order) of ANOTHER task type than the adversarial set whose dev rows (its measurement part, under
the caps) are at least the adversarial set's; none: a skip stage that says so. A set of the same type shares the
skill and its label meaning, so it is no control.

Settings: config.control (absent or empty: no control stages), ControlSettings.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from skillneurons_jax import fields, io, layout
from skillneurons_jax.data import tasks
from skillneurons_jax.stages import registry
from skillneurons_jax.stages import predictivity as predictivity_stage


@dataclasses.dataclass(frozen=True)
class ControlSettings:
    """config.control: on unless enabled=False; `tasks` the adversarial sets that get a control pair (None: every
    adversarial set of the plan); `pairs` explicit "adversarial:control" choices that replace the rule."""
    enabled: bool = True
    tasks: Optional[tuple[str, ...]] = None
    pairs: tuple[tuple[str, str], ...] = ()

    FIELDS = ("enabled", "tasks", "pairs")

    @classmethod
    def from_config(cls, block, where: str = "--config.control.") -> "ControlSettings":
        block = fields.block_dict(block)
        fields.refuse_unknown(block, cls.FIELDS, where)
        listed = [tasks.get_task(t) for t in fields.as_list(block.get("tasks"))]     # unknown name: ValueError
        for spec in listed:
            if spec.clean_task is None:
                raise ValueError(f"{where}tasks: {spec.name!r} is a clean task; a control pair belongs to an "
                                 f"adversarial set")
        pairs = []
        for entry in fields.as_list(block.get("pairs")):
            adv, _, control = str(entry).partition(":")
            if not control:
                raise ValueError(f"{where}pairs entry {entry!r} must be 'adversarial:control'")
            adv_spec, control_spec = tasks.get_task(adv), tasks.get_task(control)
            if adv_spec.clean_task is None:
                raise ValueError(f"{where}pairs entry {entry!r}: {adv_spec.name!r} is not an adversarial set")
            if control_spec.clean_task is not None:
                raise ValueError(f"{where}pairs entry {entry!r}: the control {control_spec.name!r} must be a clean "
                                 f"task (it needs a dev split of its own)")
            if control_spec.task_type == adv_spec.task_type:
                raise ValueError(f"{where}pairs entry {entry!r}: {control_spec.name!r} is a {control_spec.task_type} "
                                 f"task like {adv_spec.name!r}; the control must be of another task type")
            pairs.append((adv_spec.name, control_spec.name))
        if len({a for a, _ in pairs}) != len(pairs):
            raise ValueError(f"{where}pairs: an adversarial set is listed twice: {pairs}")
        return cls(enabled=bool(block.get("enabled", True)),
                   tasks=tuple(s.name for s in listed) if listed else None, pairs=tuple(pairs))


def _dev_rows(ctx, task: str) -> int:
    """The dev rows a stage reads of `task` (the plan's estimate: the public size under the caps, less the
    selection carve of a clean task's dev split)."""
    _, dev, _ = ctx.cost.sizes(task)
    if tasks.clean_task_of(task) == task:
        dev = int(dev * (100 - int(ctx.study.tune.get("select_percent") or 0)) / 100)
    return dev


def control_task(ctx, adversarial: str) -> tuple[Optional[str], str]:
    """(the control set of `adversarial`, why): the config's pair, else the rule of the module docstring; (None,
    the reason) when no present clean task qualifies."""
    settings = ctx.settings_of("control")
    explicit = dict(settings.pairs).get(adversarial)
    if explicit is not None:
        if explicit not in ctx.tasks.clean:
            return None, f"control set {explicit!r} (config.control.pairs) is not a present clean task of the plan"
        return explicit, "config.control.pairs"
    kind, need = tasks.get_task(adversarial).task_type, _dev_rows(ctx, adversarial)
    related = {ctx.study.prompt_task_of(adversarial), tasks.clean_task_of(adversarial)}
    for task in ctx.tasks.clean:
        if task not in related and tasks.get_task(task).task_type != kind and _dev_rows(ctx, task) >= need:
            return task, f"first present clean task of another type than {kind} with >= {need} dev rows"
    return None, f"no present clean task of another type than {kind} has >= {need} dev rows (the adversarial " \
                 f"set's); name one in config.control.pairs"


def plan(ctx) -> None:
    s, m, settings = ctx.study, ctx.model.name, ctx.settings_of("control")
    if settings is None or not settings.enabled:
        return
    for adv in [t for t in ctx.tasks.adversarial if settings.tasks is None or t in settings.tasks]:
        clean = s.prompt_task_of(adv)
        control, why = control_task(ctx, adv)
        out = layout.control_predictivity_path(ctx.workdir, m, adv)
        ctx.add(f"control/{m}/{adv}", [out, io.sidecar_path(out)],
                args={"adversarial": adv, "control": control, "prompt_task": clean},
                deps=[f"tune/{m}/{clean}", f"predictivity/{m}/{clean}"], group_task=clean,
                settings=ctx.settings(clean, stats=s.stats, control={"adversarial": adv, "control_task": control}),
                skip_reason=None if control else why)


def cost(ctx, adversarial: str, control: Optional[str], prompt_task: str) -> float:
    """The control set's dev rows at the adversarial set's size (its TRAIN baseline is the clean task's,
    reused), with the label-permutation columns the study's stats ask for; two compiled programs."""
    if control is None:
        return 0.0
    cm = ctx.cost
    _, _, seq = cm.sizes(control)
    dev = min(_dev_rows(ctx, adversarial), _dev_rows(ctx, control))
    return cm.seconds(cm.forward(dev, seq) + predictivity_stage.column_flops(ctx, dev), compiles=2)


def run(ctx, adversarial: str, control: Optional[str], prompt_task: str) -> dict:
    s, path = ctx.study, ctx.model.path
    return predictivity_stage.predictivity(
        ctx.session.setup(path, control, s.tune), ctx.workdir, s.data_dir, list(s.seeds), model_path=path,
        max_text_tokens=int(s.tune["max_text_tokens"]), eval_batch_size=int(s.tune["eval_batch_size"]),
        options=s.stats, max_examples=s.max_examples, prompt_task=prompt_task, baseline_task=prompt_task,
        control_for=adversarial)


KIND = registry.register("control", ControlSettings, config_key="control", plan=plan, cost=cost, run=run, order=35)
