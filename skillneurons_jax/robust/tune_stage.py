"""Stage kind robust_tune (registered for the plan where skillneurons_jax.robust is imported; config.robust).

robust_tune/<m>/<task>/<arm>: the clean task's prompts of one arm (plain | perturbed | anchored; robust.tuning)
with the tune stage's seeds and budget -> robust/<arm>/prompts/<m>/<task>/seed_<s>/, scored on the clean dev, the
task's AdvGLUE sets and its other scored sets (scored_sets: robust.extra_targets, the plan's clean tasks of its
type) -> robust/<arm>/eval/<m>/<task>.json; after predictivity/<m>/<task>. Each arm is a stage group
(arm_group), so the hosts of a pod train the arms side by side. The plain arm copies the tune stage's
prompts (the same computation, stages.tune.copy_finished_run checks it) instead of training them again.
"""
from __future__ import annotations

from typing import Sequence

from skillneurons_jax import layout
from skillneurons_jax.data import tasks as task_table
from skillneurons_jax.robust import tuning as robust_tuning
from skillneurons_jax.stages import registry
from skillneurons_jax.stages import transfer as transfer_kind
from skillneurons_jax.stages import tune as tune_kind

# A robust training step runs the clean and the perturbed input (and, with epsilon > 0, one more forward and
# backward per adversarial step), and the stage perturbs and encodes each seed's training split: measured on MiniLM
# SST-2 (40 steps, 3 seeds, 2 shared CPU cores) the perturbed and anchored arms took 2.8x and 2.5x the plain arm.
ROBUST_STEP_FACTOR = 2.5


def robust_tasks(ctx) -> list[str]:
    """The clean tasks the robustness arms are tuned on: config.robust.tasks that can run (all clean tasks of the
    plan when it names none)."""
    robust = ctx.study.kind("robust")
    if robust is None:
        return []
    wanted = robust.tasks or tuple(ctx.tasks.clean)
    return [t for t in wanted if t in ctx.tasks.clean]


def scored_sets(ctx, task: str) -> list[str]:
    """What the arms of the clean `task` are scored on besides its clean dev: its own adversarial sets in the plan,
    robust.extra_targets of `task` whose data is present, and (robust.transfer_within_type) the plan's other clean
    tasks of the same task type. Each needs only its dev split."""
    robust, tp = ctx.study.kind("robust"), ctx.tasks
    scored = [a for a in tp.adversarial if task_table.clean_task_of(a) == task]
    scored += [t for src, t in robust.extra_targets
               if src == task and t not in scored and t != task and ctx.data_problem(t) is None]
    if robust.transfer_within_type:
        scored += [t for t in tp.clean if t != task and t not in scored
                   and task_table.scored_kind(task, t) == task_table.TRANSFER_SAME_TYPE]
    return scored


def arm_group(task: str, arm: str) -> str:
    """An arm's stages are a stage group of their own (with its robust_predictivity stage): the hosts of a pod
    train the arms side by side, each waiting for the clean task's predictivity."""
    return f"{task}/{arm}"


def plan(ctx) -> None:
    robust, m, w = ctx.study.kind("robust"), ctx.model.name, ctx.workdir
    for task in robust_tasks(ctx):
        adversarial = scored_sets(ctx, task)
        for arm in robust.arms:
            outs = ([layout.robust_prompt_path(w, m, task, arm, seed) for seed in ctx.study.seeds]
                    + [layout.robust_metrics_path(w, m, task, arm, seed) for seed in ctx.study.seeds]
                    + [layout.robust_eval_path(w, m, task, arm)])
            ctx.add(f"robust_tune/{m}/{task}/{arm}", outs, args={"task": task, "arm": arm, "adversarial": adversarial},
                    deps=[f"predictivity/{m}/{task}"], group_task=arm_group(task, arm),
                    settings=ctx.settings(task, tune=ctx.tune_settings(task), arm=arm, scored=list(adversarial),
                                          robust={"perturbations": robust.perturbations,
                                                  "neighbour_k": robust.neighbour_k,
                                                  "protected_words": list(robust.protected_words),
                                                  "anchor": robust.anchor}))


def cost(ctx, task: str, arm: str, adversarial: Sequence[str]) -> float:
    """An arm's tuning plus its evaluation on the clean dev and the adversarial sets. The plain arm copies
    the tune stage's prompts (robust.tuning.tune_arm): its evaluation only."""
    evaluation = transfer_kind.cost(ctx, task, [task, *adversarial])
    if arm == "plain":
        return evaluation
    overhead = ctx.cost.overhead_s
    seconds = round(overhead + (tune_kind.cost(ctx, task) - overhead) * ROBUST_STEP_FACTOR, 1)
    return round(seconds + evaluation, 1)


def run(ctx, task: str, arm: str, adversarial: Sequence[str]) -> dict:
    """One arm (robust.tuning): tuned like the tune stage (the plain arm copies its finished prompts), then scored
    on the clean task's dev split and on `adversarial` with the session's prepared transfer targets."""
    s, path, robust = ctx.study, ctx.model.path, ctx.study.kind("robust")
    seeds = list(s.seeds)
    summary = robust_tuning.tune_arm(ctx.session.setup(path, task, s.tune), arm, robust, seeds, s.workdir,
                                     s.data_dir, s.tune, model_path=path, max_examples=s.max_examples,
                                     replace_changed=True)
    targets = [ctx.session.transfer_target(path, t, s.data_dir, s.tune, s.max_examples) for t in [task, *adversarial]]
    robust_tuning.evaluate_arm(targets, task, arm, robust, seeds, s.workdir, model_path=path, data_dir=s.data_dir,
                               max_examples=s.max_examples)
    return summary


KIND = registry.register("robust_tune", robust_tuning.RobustSettings, config_key="robust", plan=plan, cost=cost,
                         run=run, order=110)
