"""Neuron predictivity (Figures 2 and 9): per layer, per dataset, against the model's accuracy and the
majority-class rate."""
from __future__ import annotations

import numpy as np

from skillneurons_jax.analysis import figures, inference, results
from skillneurons_jax.analysis.report_context import LOAD_ERRORS, ReportContext, jsonable


def build(context: ReportContext, model: str) -> None:
    document, workdir, options = context.document, context.workdir, context.options
    predictivities: dict[str, np.ndarray] = {}
    context.predictivities[model] = predictivities          # shared with the task-specificity section
    for task in context.tasks(model):
        try:
            predictivities[task] = load_pred(context, model, task)
        except LOAD_ERRORS as error:
            context.problem(error)
    figure_dir = f"figures/{model}"
    document.h(3, "Neuron predictivity (Figures 2 and 9)")
    if not predictivities:
        document.p("No predictivity results.")
        return
    shapes = {t: p.shape for t, p in predictivities.items()}
    majority = context.majority_rates(model)
    nulls = {}
    for task in predictivities:
        try:
            null = results.load_extra_arrays(workdir, model, task, ("null_pred_layer_mean", "null_pred_layer_max",
                                                                      "null_pred_max"))
        except LOAD_ERRORS as error:
            context.problem(error)
            continue
        if "null_pred_layer_mean" in null:
            nulls[task] = null
    document.p(f"Predictivity Pred(l, n) = mean over seeds of the max over prompt tokens of max(acc, 1 - acc); "
               f"shape [layers, neurons] = {sorted(set(shapes.values()))}. Pred is at least 0.5 by definition, but "
               f"its floor is higher: labels that carry nothing give a max over prompt tokens well above 0.5 at a "
               f"small n. The floor drawn (dashed) is the label-permutation null's at each dataset's own n (stats "
               f"option label_permutations); each dataset's short black line is its majority-class rate (where "
               f"label counts were recorded: "
               f"{', '.join(f'{t} {100 * r:.1f}%' for t, r in majority.items()) or 'none'}).")
    if nulls:
        document.table(("dataset", "permutations", "floor: null mean Pred (all layers)",
                        "null max Pred (mean over permutations)", "null max Pred, 95th percentile"),
                       [(t, str(n["null_pred_layer_mean"].shape[0]),
                         f"{float(inference.pred_floor(n['null_pred_layer_mean']).mean()):.3f}",
                         f"{float(n['null_pred_max'].mean()):.3f}" if "null_pred_max" in n else "–",
                         f"{float(inference.null_quantile(n['null_pred_max'])):.3f}" if "null_pred_max" in n else "–")
                        for t, n in nulls.items()])
    missing_null = [t for t in predictivities if t not in nulls]
    if missing_null:
        document.p(f"No label-permutation null recorded for {', '.join(missing_null)} (computed with "
                   f"label_permutations = 0): their figures show 0.5, which is not their floor.")
    context.figure(figures.predictivity_per_layer, f"{figure_dir}/predictivity_per_layer.png",
                   f"{model}: predictivity per layer (mean, top {100 * options['top_fraction']:g}%, max); dashed: "
                   f"the label-permutation null at each dataset's n",
                   predictivities, top_fraction=options["top_fraction"],
                   title=f"{model}: neuron predictivity per layer",
                   floors={t: {"mean": inference.pred_floor(n["null_pred_layer_mean"]),
                               "max": n["null_pred_layer_max"].mean(0) if "null_pred_layer_max" in n else None}
                           for t, n in nulls.items()})
    accuracy = context.model_accuracy(model)
    context.figure(figures.neuron_boxes_with_model_accuracy, f"{figure_dir}/predictivity_boxes_model_accuracy.png",
                   f"{model}: neuron predictivities per dataset over the model's accuracy (Figure 2)",
                   predictivities, accuracy, majority=majority,
                   floors={t: float(inference.pred_floor(n["null_pred_layer_mean"]).mean()) for t, n in nulls.items()},
                   title=f"{model}: neuron predictivities and model accuracy", ylabel="neuron predictivity")
    for task, pred in predictivities.items():
        null = nulls.get(task, {})
        context.figure(figures.layer_boxplot, f"{figure_dir}/predictivity_layers_{task}.png",
                       f"{model} on {task}: predictivity of every neuron, per layer"
                       + ("; dashed: the permutation floor" if null else ""), pred,
                       floor=None if not null else inference.pred_floor(null["null_pred_layer_mean"]),
                       null_max=None if "null_pred_layer_max" not in null else null["null_pred_layer_max"].mean(0),
                       title=f"{model} on {task}: neuron predictivity per layer")
        try:      # T5: the first decoder step's neurons (the extension of the paper)
            decoder = results.load_decoder_pred(workdir, model, task)
        except LOAD_ERRORS as error:
            context.problem(error)
            decoder = None
        if decoder is not None:
            try:
                decoder_null = results.load_extra_arrays(workdir, model, task, ("decoder_null_pred_layer_mean",
                                                                                "decoder_null_pred_layer_max"))
            except LOAD_ERRORS as error:
                context.problem(error)
                decoder_null = {}
            context.figure(figures.layer_boxplot, f"{figure_dir}/decoder_predictivity_layers_{task}.png",
                           f"{model} on {task}: predictivity of decoder neurons at the first decoder step", decoder,
                           floor=(inference.pred_floor(decoder_null["decoder_null_pred_layer_mean"])
                                  if "decoder_null_pred_layer_mean" in decoder_null else None),
                           null_max=(decoder_null["decoder_null_pred_layer_max"].mean(0)
                                     if "decoder_null_pred_layer_max" in decoder_null else None),
                           title=f"{model} on {task}: decoder neuron predictivity per layer (first decoder step)")
    if options["neuron_accuracy_boxes"]:
        stats = {}
        for task in predictivities:     # one large acc array [S, L, T, N] at a time
            try:
                acc = results.load_predictivity(workdir, model, task, arrays=("acc",), with_sidecar=False).acc
                stats[task] = figures.box_stats(acc, task)
            except LOAD_ERRORS as error:
                context.problem(error)
        if stats:
            context.figure(figures.neuron_boxes_with_model_accuracy, f"{figure_dir}/neuron_accuracy_boxes.png",
                           f"{model}: neuron accuracies (all seeds, layers, prompt tokens) over the model's "
                           f"accuracy (Figure 9)", stats, accuracy, majority=majority,
                           title=f"{model}: neuron accuracies and model accuracy", ylabel="neuron accuracy")
    context.summary.setdefault("predictivity", {})[model] = {
        t: {"layer_mean": jsonable(p.mean(1)), "layer_max": jsonable(p.max(1)), "majority_rate": majority.get(t),
            "null_floor": None if t not in nulls else jsonable(inference.pred_floor(nulls[t]["null_pred_layer_mean"])),
            "null_max": (None if t not in nulls or "null_pred_max" not in nulls[t]
                         else jsonable(nulls[t]["null_pred_max"]))}
        for t, p in predictivities.items()}


def load_pred(context: ReportContext, model: str, task: str) -> np.ndarray:
    """Pred [L, N]; a corrupt sidecar is listed as a problem but does not lose the arrays."""
    try:
        return results.load_predictivity(context.workdir, model, task, arrays=("pred",)).pred
    except results.CorruptResultError as error:
        if error.path.suffix != ".json":
            raise
        context.problem(error)
        return results.load_predictivity(context.workdir, model, task, arrays=("pred",), with_sidecar=False).pred
