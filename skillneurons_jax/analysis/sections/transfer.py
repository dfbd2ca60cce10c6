"""Prompt transfer (Figures 1 and 7): absolute and relative accuracy of every prompt on every task."""
from __future__ import annotations

from skillneurons_jax.analysis import figures, results, transfer
from skillneurons_jax.analysis.report_context import ReportContext, format_percent, jsonable


def build(context: ReportContext, model: str) -> None:
    document, workdir = context.document, context.workdir
    pairs = context.inventory.transfer.get(model, [])
    document.h(3, "Prompt transfer (Figures 1 and 7)")
    if not pairs:
        context.missing.append(f"transfer: no results for model {model} (expected "
                               f"{workdir / 'transfer' / model}/<source>__<target>.json)")
        document.p("No transfer results.")
        return
    table, errors = transfer.load_transfer_table(workdir, model, pairs)
    for error in errors:
        context.problem(error)
    # Every prompt present (or used as a source) on every task with any result: the matrix shows the gaps.
    present = context.inventory.tasks(model)
    sources = results.order_tasks({s for s, _ in pairs} | set(context.inventory.prompts.get(model, {})))
    sources = [s for s in sources if results.clean_task(s) is None]
    targets = results.order_tasks({t for _, t in pairs} | set(present))
    matrices = transfer.transfer_matrices(table, sources, targets)
    absent = [f"{s}__{t}" for s, t in matrices.missing if (s, t) not in set(pairs)]   # unreadable: see problems
    if absent:
        context.missing.append(f"transfer: {len(absent)} of {len(sources) * len(targets)} pairs absent for {model} "
                               f"under {workdir / 'transfer' / model}: {', '.join(absent)}")
    for task in matrices.missing_reference:
        context.missing.append(f"transfer: no own-prompt result {transfer.own_prompt_task(task)} -> {task} for "
                               f"{model}; its relative column is empty")
    document.p("Rows: the task whose prompt is used; columns: the task it is evaluated on (with that task's "
               "verbalizer). Relative = per-seed ratio to the target's own prompt (the clean task's prompt for "
               "an adversarial set), then averaged over seeds.")
    figure_dir = f"figures/{model}"
    context.figure(figures.transfer_heatmap, f"{figure_dir}/transfer_absolute.png",
                   f"{model}: accuracy of each source prompt on each target task (%)", matrices.absolute, sources,
                   targets, title=f"{model}: prompt transfer, absolute accuracy (mean over seeds)")
    context.figure(figures.transfer_heatmap, f"{figure_dir}/transfer_relative.png",
                   f"{model}: transfer accuracy relative to the target's own prompt (%)", matrices.relative, sources,
                   targets, relative=True, title=f"{model}: prompt transfer, relative to the target's own prompt")
    header = ("source \\ target",) + tuple(targets)
    document.table(header, [(s,) + tuple(format_percent(v) for v in row)
                            for s, row in zip(sources, matrices.absolute)])
    context.summary.setdefault("transfer", {})[model] = {
        "sources": sources, "targets": targets, "absolute": jsonable(matrices.absolute),
        "relative": jsonable(matrices.relative)}
