"""Stage kind robust_predictivity (with config.robust.predictivity, default on): each robustness arm's
predictivity on the clean task and on each adversarial set it is scored on (the arm's prompts, the clean task's
TRAIN baseline) -> robust/<arm>/predictivity/<m>/<target>.npz. Its settings are robust_tune's (config.robust).
"""
from __future__ import annotations

from typing import Sequence

from skillneurons_jax import layout
from skillneurons_jax.data import tasks as task_table
from skillneurons_jax.robust import tune_stage
from skillneurons_jax.stages import predictivity as predictivity_kind
from skillneurons_jax.stages import registry

MEASURED_KINDS = (task_table.ADVERSARIAL, task_table.ADVERSARIAL_TRANSFER)


def plan(ctx) -> None:
    robust, m, w, tp = ctx.study.kind("robust"), ctx.model.name, ctx.workdir, ctx.tasks
    if robust is None or not robust.predictivity:
        return
    measured_by: dict[str, str] = {}     # adversarial set -> the robust task whose arms measure its predictivity
    for task in tune_stage.robust_tasks(ctx):
        adversarial = tune_stage.scored_sets(ctx, task)
        for target in adversarial:
            if task_table.scored_kind(task, target) in MEASURED_KINDS:
                if measured_by.setdefault(target, task) != task:
                    # robust/<arm>/predictivity/<m>/<set>.npz is one file per set: two prompt tasks would overwrite
                    raise ValueError(f"config.robust: the arms of {measured_by[target]!r} and of {task!r} are both "
                                     f"scored on {target!r}, and robust_predictivity keeps one result per set; "
                                     "drop it from one task's robust.extra_targets or set robust.predictivity=False")
        measured = [task] + [t for t in adversarial if task_table.scored_kind(task, t) in MEASURED_KINDS]
        for arm in robust.arms:
            outs = [layout.predictivity_path(layout.robust_arm_dir(w, arm), m, t) for t in measured]
            ctx.add(f"robust_predictivity/{m}/{task}/{arm}", outs + [o.with_name(o.name + ".json") for o in outs],
                    args={"task": task, "arm": arm, "measured": measured},
                    # the plain arm copies the main study's results: after them, so that they exist to be copied
                    deps=[f"robust_tune/{m}/{task}/{arm}"] + ([f"predictivity/{m}/{t}" for t in measured
                                                               if t in tp.present] if arm == "plain" else []),
                    group_task=tune_stage.arm_group(task, arm),
                    settings=ctx.settings(task, stats=ctx.study.stats, arm=arm, measured=list(measured)),
                    after=f"robust_tune/{m}/{task}/{arm}")      # each arm's tuning, then its predictivity


def cost(ctx, task: str, arm: str, measured: Sequence[str]) -> float:
    """The predictivity of each measured set; the plain arm copies the main study's where it has them."""
    return sum(predictivity_kind.cost(ctx, t) for t in measured if arm != "plain" or t not in ctx.tasks.present)


def run(ctx, task: str, arm: str, measured: Sequence[str]) -> None:
    for target in measured:     # the clean task first: its TRAIN baseline serves the adversarial sets
        # the plain arm's prompts are the tune stage's: the main study's result is copied when it is the same
        # computation (stages.predictivity checks prompt hashes, caps and options)
        predictivity_kind.run_in(ctx, target, layout.robust_arm_dir(ctx.workdir, arm), prompt_task=task,
                                 reuse_from=ctx.workdir if arm == "plain" else None)


KIND = registry.register("robust_predictivity", None, plan=plan, cost=cost, run=run, order=120)
