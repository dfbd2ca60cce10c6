"""Suppressing skill neurons (Figures 4, 5, 6 and 10): curves of skill vs random suppression, and beside each
curve a table per level with the difference, its interval over seeds and the paired test over dev examples, and
one computed sentence per result."""
from __future__ import annotations

import dataclasses

from skillneurons_jax import layout
from skillneurons_jax.analysis import figures, headline, results, robustness, transfer
from skillneurons_jax.analysis.report_context import LOAD_ERRORS, ReportContext, jsonable, task_names


def build(context: ReportContext, model: str) -> None:
    document, workdir = context.document, context.workdir
    document.h(3, "Suppressing skill neurons (Figures 4, 5, 6 and 10)")
    loaded = []
    for source, target in context.inventory.suppression.get(model, []):
        try:
            loaded.append(results.load_suppression(workdir, model, source, target))
        except LOAD_ERRORS as error:
            context.problem(error)
    present = set(context.inventory.suppression.get(model, []))      # corrupt ones are listed as problems
    chosen = configured_tasks(context.config)
    skipped = []
    for task in context.tasks(model):
        source = transfer.own_prompt_task(task)
        if (source, task) in present:
            continue
        if chosen is not None and task not in chosen:
            skipped.append(task)          # not asked for: said once below, not listed as missing
            continue
        context.missing.append(f"suppression: {results.suppression_path(workdir, model, source, task)} absent")
    if skipped:
        document.p(f"Not computed, by the configuration (`suppression.tasks` = {', '.join(sorted(chosen))}): the "
                   f"own-task curves of {', '.join(skipped)}.")
    if not loaded:
        document.p("No suppression results.")
        return
    names = results.order_tasks({r.target for r in loaded} | {r.source for r in loaded})
    order = {t: i for i, t in enumerate(names)}
    loaded.sort(key=lambda r: (order[r.target], order[r.source]))
    majority = context.majority_rates(model)
    document.p("Accuracy when the top-k% neurons by predictivity (per layer) are suppressed, against the same "
               "number of random neurons per layer; mean ± SEM over seeds (random draws averaged per seed); the "
               "dotted line is 0.5, the dashed one the target's majority-class rate where known. Beside each "
               "curve: the difference random − skill per level with a t interval over seeds (its null: the mean "
               "difference over prompt seeds is 0) and, when the suppression JSON has per-example correctness, a "
               "paired sign-flip test over dev examples (null: per example, skill- and random-suppressed "
               "correctness are exchangeable; a small one-sided p means the skill neurons cost more examples "
               "than the random ones on this dev set).")
    figure_dir = f"figures/{model}"
    same = [r for r in loaded if r.source == r.target]
    cross = [r for r in loaded if r.source != r.target]
    for group, name, what in ((same, "same_task", "skill neurons of the evaluated task"),
                              (cross, "cross_task", "skill neurons of another task (source → target)")):
        if group:
            panels = [figures.SuppressionPanel(f"{r.source} → {r.target}", robustness.suppression_stats(r),
                                               majority_rate=_majority(r, majority)) for r in group]
            context.figure(figures.suppression_curves, f"{figure_dir}/suppression_{name}.png",
                           f"{model}: suppressing {what} vs random neurons", panels,
                           title=f"{model}: suppressing {what}")
    document.table(robustness.SUPPRESSION_HEADER, robustness.suppression_rows((model, r) for r in loaded))
    summary = {f"{result.source}__{result.target}": _comparison(context, result, majority, "dev")
               for result in loaded}
    context.summary.setdefault("suppression", {})[model] = summary
    _held_out(context, model, majority)


def configured_tasks(config: dict) -> set[str] | None:
    """The tasks whose own suppression curves the configuration asked for (config `suppression.tasks`, a list or
    a comma-separated string); None when it names none (every task's curves are expected)."""
    return set(task_names((config.get("suppression") or {}).get("tasks")) or []) or None


def _held_out(context: ReportContext, model: str, majority: dict) -> None:
    """The own-task curves again on each task's HELD-OUT test split (WORKDIR/test/suppression/): the skill neurons
    were selected on dev (eq. 3), so this asks whether their effect holds on examples nothing was chosen on."""
    test_root = layout.split_root(context.workdir, "test")
    loaded = []
    for task in context.tasks(model):
        if not results.suppression_path(test_root, model, task, task).exists():
            continue
        try:
            loaded.append(results.load_suppression(test_root, model, task, task))
        except LOAD_ERRORS as error:
            context.problem(error)
    if not loaded:
        return
    context.document.h(4, "Held-out test split: the same own-task suppression")
    context.document.p("Skill neurons, prompts and eq. 3 come from train and dev only; these curves are measured on "
                       "each task's test split, which no selection saw. Majority-class rates are the test split's.")
    context.document.table(robustness.SUPPRESSION_HEADER, robustness.suppression_rows((model, r) for r in loaded))
    context.summary.setdefault("suppression_test", {})[model] = {
        f"{result.source}__{result.target}": _comparison(context, result, {}, "test") for result in loaded}


def _comparison(context: ReportContext, result: results.Suppression, majority: dict, split: str) -> dict:
    """Skill vs random per level for one result: a table, the computed sentence, and its summary.json entry."""
    document, options, alpha = context.document, context.options, context.options["alpha"]
    label = f"{result.source} → {result.target}" + ("" if split == "dev" else f" ({split})")
    comparisons = robustness.compare_levels(result, confidence=float(options["confidence"]), alpha=alpha,
                                            n_flips=int(options["sign_flips"]), seed=int(options["permutation_seed"]))
    target_id = headline.anchor("suppression", result.model, result.source, result.target, split)
    document.h(4, f"{label}: skill vs random per level", anchor=target_id)
    rate = _majority(result, majority)
    document.p(f"{result.skill.shape[1]} seed(s) × {result.random.shape[1]} random draw(s); "
               + ("no per-example data (the suppression JSON has no 'skill_correct' / 'random_correct'), so no "
                  "paired test; " if result.skill_correct is None
                  else f"{result.skill_correct.shape[-1]} {split} examples; ")
               + ("majority-class rate unknown." if rate is None else f"majority-class rate {100 * rate:.1f}%."))
    document.table(robustness.COMPARISON_HEADER, robustness.comparison_rows(comparisons))
    document.p(robustness.verdict_sentence(label, comparisons[-1], alpha, split))
    stats = robustness.suppression_stats(result)
    return {**{k: jsonable(v) for k, v in dataclasses.asdict(stats).items()},
            "majority_rate": rate, "per_example": result.skill_correct is not None, "split": split,
            "comparison": [{"k": c.k, "skill": c.skill, "random": c.random, "difference": c.difference,
                            "interval": None if c.interval is None else list(c.interval),
                            "interval_units": c.interval_units, "confidence": c.confidence, "p_value": c.p_value,
                            "n_examples": c.n_examples, "exact": c.exact, "n_flips": c.n_flips,
                            "verdict": c.verdict} for c in comparisons],
            "verdict": robustness.verdict_sentence(label, comparisons[-1], alpha, split), "anchor": target_id}


def _majority(result: results.Suppression, majority: dict) -> float | None:
    """The target's majority-class rate: from the file's own labels when present, else Table 1's."""
    if result.label_counts is not None:
        return robustness.majority_rate(result.label_counts)
    return majority.get(result.target)
