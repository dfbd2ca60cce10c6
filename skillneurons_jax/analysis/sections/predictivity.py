"""Neuron predictivity (Figures 2 and 9): per layer, per dataset, against the model's accuracy and the
majority-class rate."""
from __future__ import annotations

import numpy as np

from skillneurons_jax.analysis import figures, results
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
    document.p(f"Predictivity Pred(l, n) = mean over seeds of the max over prompt tokens of max(acc, 1 - acc); "
               f"shape [layers, neurons] = {sorted(set(shapes.values()))}. Predictivity is at least 0.5 by "
               f"definition; the dotted line is 0.5 and each dataset's short black line its majority-class rate "
               f"(where label counts were recorded: "
               f"{', '.join(f'{t} {100 * r:.1f}%' for t, r in majority.items()) or 'none'}).")
    context.figure(figures.predictivity_per_layer, f"{figure_dir}/predictivity_per_layer.png",
                   f"{model}: predictivity per layer (mean, top {100 * options['top_fraction']:g}%, max)",
                   predictivities, top_fraction=options["top_fraction"],
                   title=f"{model}: neuron predictivity per layer")
    accuracy = context.model_accuracy(model)
    context.figure(figures.neuron_boxes_with_model_accuracy, f"{figure_dir}/predictivity_boxes_model_accuracy.png",
                   f"{model}: neuron predictivities per dataset over the model's accuracy (Figure 2)",
                   predictivities, accuracy, majority=majority,
                   title=f"{model}: neuron predictivities and model accuracy", ylabel="neuron predictivity")
    for task, pred in predictivities.items():
        context.figure(figures.layer_boxplot, f"{figure_dir}/predictivity_layers_{task}.png",
                       f"{model} on {task}: predictivity of every neuron, per layer", pred,
                       title=f"{model} on {task}: neuron predictivity per layer")
        try:      # T5: the first decoder step's neurons (the extension of the paper)
            decoder = results.load_decoder_pred(workdir, model, task)
        except LOAD_ERRORS as error:
            context.problem(error)
            decoder = None
        if decoder is not None:
            context.figure(figures.layer_boxplot, f"{figure_dir}/decoder_predictivity_layers_{task}.png",
                           f"{model} on {task}: predictivity of decoder neurons at the first decoder step", decoder,
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
        t: {"layer_mean": jsonable(p.mean(1)), "layer_max": jsonable(p.max(1)), "majority_rate": majority.get(t)}
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
