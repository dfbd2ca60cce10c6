"""Stage kind robust_perturbed_predictivity (with config.robust.predictivity and a perturbation rate > 0): the
manipulation check's held-out half. Each robustness arm's predictivity (eq. 5: the arm's prompts, the clean task's
TRAIN baseline, reused from its robust_predictivity result) on a perturbed copy of the clean task's dev measurement
rows, perturbed with the operations, rates, mode, neighbour_k and protected_words the arms were trained with
(robust.tuning.perturbed_examples) and the fixed seed PERTURBED_DEV_SEED
-> robust/<arm>/predictivity_perturbed_dev/<m>/<task>.npz (layout.perturbed_predictivity_path) + sidecar, whose
"dev_transform" records the perturbation settings and seed (so do the stage's settings). The dev rows are never
trained on, so these are held-out perturbations of the training kind: the neurons the anchor targets should keep
their Pred there in the anchored arm if the anchor did what it was meant to do.
"""
from __future__ import annotations

from skillneurons_jax import layout
from skillneurons_jax.robust import tune_stage
from skillneurons_jax.robust import tuning as robust_tuning
from skillneurons_jax.stages import predictivity as predictivity_kind
from skillneurons_jax.stages import registry

# One fixed perturbation seed for every arm and seed of prompts, so the arms are measured on the same perturbed
# rows; a value no tuning run uses as its seed (the training split's perturbations use the training seeds).
PERTURBED_DEV_SEED = 100_003


def perturbation_record(robust) -> dict:
    """What the perturbed dev copy is (the stage's settings and the sidecar's "dev_transform")."""
    return {"kind": "perturbed", "rows": "dev (measure)", "seed": PERTURBED_DEV_SEED,
            **robust.perturbations.to_dict(), "neighbour_k": int(robust.neighbour_k),
            "protected_words": list(robust.protected_words)}


def plan(ctx) -> None:
    robust, m = ctx.study.kind("robust"), ctx.model.name
    if robust is None or not robust.predictivity or not any(
            p.rate > 0 for p in robust.perturbations.perturbations):
        return
    record = perturbation_record(robust)
    for task in tune_stage.robust_tasks(ctx):
        for arm in robust.arms:
            out = layout.perturbed_predictivity_path(layout.robust_arm_dir(ctx.workdir, arm), m, task)
            after = f"robust_predictivity/{m}/{task}/{arm}"
            # after the arm's clean predictivity: its TRAIN baseline is reused
            ctx.add(f"robust_perturbed_predictivity/{m}/{task}/{arm}", [out, out.with_name(out.name + ".json")],
                    args={"task": task, "arm": arm}, deps=[after], group_task=tune_stage.arm_group(task, arm),
                    settings=ctx.settings(task, stats=ctx.study.stats, arm=arm, perturbed_dev=record), after=after)


def cost(ctx, task: str, arm: str) -> float:
    """One dev pass (the TRAIN baseline is the arm's clean result's)."""
    cm = ctx.cost
    _, dev, seq = cm.sizes(task)
    return cm.seconds(cm.forward(dev, seq) + predictivity_kind.column_flops(ctx, dev), compiles=1)


def run(ctx, task: str, arm: str) -> dict:
    s, robust = ctx.study, ctx.study.kind("robust")
    root = layout.robust_arm_dir(ctx.workdir, arm)
    setup = ctx.session.setup(ctx.model.path, task, s.tune)
    return predictivity_kind.run_in(
        ctx, task, root, prompt_task=task,
        dev_transform=robust_tuning.perturbed_examples(setup, robust, PERTURBED_DEV_SEED),
        dev_record=perturbation_record(robust),
        output=layout.perturbed_predictivity_path(root, ctx.model.name, task))


KIND = registry.register("robust_perturbed_predictivity", None, plan=plan, cost=cost, run=run, order=125)
