"""Figures as PNG files: pure functions from arrays to an image on disk (written atomically).

Uses matplotlib's object API (`matplotlib.figure.Figure`, rendered by the Agg canvas) and never pyplot, so no
global backend or figure state is touched and nothing needs a display. Every function takes `out_path`, a `title`,
an optional `figsize` (inches; a size fitted to the content when None) and `dpi`, and returns the path written;
the PNG is exactly figsize * dpi pixels (constrained layout, no tight bounding box). Tasks keep one colour and one
order (results.TASK_ORDER) in every figure.
"""
from __future__ import annotations

import dataclasses
import io
import pathlib
import textwrap
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from skillneurons_jax.io import atomic_write_bytes
from skillneurons_jax.analysis import results
from skillneurons_jax.analysis.robustness import CurveStats

_MAX_FLIERS = 60        # outliers drawn per box (evenly spaced among all outliers; boxes may hold millions)
CHANCE = 0.5            # every task here is binary


def task_color(task: str):
    """One colour per task, the same in every figure (by position in the task catalogue)."""
    import matplotlib
    cmap = matplotlib.colormaps["tab20"]
    known = {t: i for i, t in enumerate(results.TASK_ORDER)}
    i = known.get(task, len(known) + sum(map(ord, task)) % 7)
    return cmap(i % cmap.N)


def _figure(figsize) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _wrap(text: str, width_in: float, fontsize: float = 12.0) -> str:
    """Wraps a title to the figure's width (constrained layout does not shrink text that is too long)."""
    return textwrap.fill(text, width=max(20, int(width_in * 72 / (0.55 * fontsize))))


def _save(fig: Figure, out_path, dpi: int) -> pathlib.Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(out_path, buf.getvalue())


def _annotate(ax, matrix: np.ndarray, fmt, norm, cmap) -> None:
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            v = matrix[i, j]
            text = fmt(i, j, v)
            if not text:
                continue
            rgba = cmap(norm(v)) if np.isfinite(v) else (1, 1, 1, 1)
            dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")


def _heatmap(matrix, rows, cols, out_path, *, title, cbar_label, fmt, vmin, vmax, cmap_name, xlabel, ylabel,
             figsize, dpi) -> pathlib.Path:
    import matplotlib
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (len(rows), len(cols)):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(rows)} rows x {len(cols)} columns")
    if figsize is None:
        figsize = (max(5.0, 0.65 * len(cols) + 3.0), max(4.0, 0.55 * len(rows) + 2.2))
    fig = _figure(figsize)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps[cmap_name].with_extremes(bad="#dddddd")     # grey: no result
    norm = matplotlib.colors.Normalize(vmin=vmin, vmax=vmax)
    im = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, norm=norm, aspect="auto")
    cbar = fig.colorbar(im, ax=ax)
    cbar.set_label(cbar_label)
    ax.set_xticks(range(len(cols)), labels=cols, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(rows)), labels=rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(_wrap(title, figsize[0]))
    _annotate(ax, matrix, fmt, norm, cmap)
    return _save(fig, out_path, dpi)


def transfer_heatmap(matrix: np.ndarray, sources: Sequence[str], targets: Sequence[str], out_path, *,
                     title: str, relative: bool = False, figsize=None, dpi: int = 100) -> pathlib.Path:
    """matrix [sources, targets] as fractions (absolute accuracy, or accuracy relative to the target's own prompt),
    shown in percent; grey cells have no result."""
    pct = 100 * np.asarray(matrix, dtype=np.float64)
    finite = pct[np.isfinite(pct)]
    vmax = max(100.0, float(finite.max())) if relative and finite.size else 100.0
    label = "% of the target's own-prompt accuracy" if relative else "accuracy (%)"
    return _heatmap(pct, list(sources), list(targets), out_path, title=title, cbar_label=label,
                    fmt=lambda i, j, v: f"{v:.0f}" if np.isfinite(v) else "–", vmin=0.0, vmax=vmax,
                    cmap_name="viridis", xlabel="target task (evaluated on)", ylabel="source task (prompt)",
                    figsize=figsize, dpi=dpi)


def spearman_heatmap(matrix: np.ndarray, tasks: Sequence[str], out_path, *, title: str, zscored: bool = False,
                     pvalues: np.ndarray | None = None, alpha: float = 0.05, figsize=None, dpi: int = 100
                     ) -> pathlib.Path:
    """Layer-averaged Spearman correlations [D, D] (or their z-scores); '*' marks permutation p < alpha.
    The z-scored figure hides the diagonal (a dataset against itself is not a pair)."""
    m = np.array(matrix, dtype=np.float64)
    if zscored:
        np.fill_diagonal(m, np.nan)
        finite = np.abs(m[np.isfinite(m)])
        lim = float(finite.max()) if finite.size else 1.0
        vmin, vmax, label, cmap = -lim, lim, "z-score among dataset pairs", "RdBu_r"
    else:
        vmin, vmax, label, cmap = -1.0, 1.0, "Spearman correlation", "RdBu_r"

    def fmt(i, j, v):
        if not np.isfinite(v):
            return ""
        star = "*" if pvalues is not None and i != j and np.isfinite(pvalues[i, j]) and pvalues[i, j] < alpha else ""
        return f"{v:.2f}{star}"
    return _heatmap(m, list(tasks), list(tasks), out_path, title=title, cbar_label=label, fmt=fmt, vmin=vmin,
                    vmax=vmax, cmap_name=cmap, xlabel="dataset", ylabel="dataset", figsize=figsize, dpi=dpi)


def box_stats(values: np.ndarray, label: str) -> dict:
    """Tukey box statistics of a (possibly huge) array without handing it to matplotlib: quartiles, whiskers at
    the furthest points within 1.5 IQR, and at most _MAX_FLIERS outliers evenly spaced among all of them."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise ValueError(f"no finite values to summarise for {label!r}")
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    inside = x[(x >= lo) & (x <= hi)]
    out = np.sort(x[(x < lo) | (x > hi)])
    if out.size > _MAX_FLIERS:
        out = out[np.linspace(0, out.size - 1, _MAX_FLIERS).round().astype(int)]
    return {"label": label, "med": med, "q1": q1, "q3": q3, "whislo": inside.min(), "whishi": inside.max(),
            "fliers": out, "mean": float(x.mean())}


def _draw_boxes(ax, stats: list[dict], colors) -> None:
    art = ax.bxp(stats, showmeans=False, patch_artist=True, widths=0.6,
                 flierprops={"markersize": 2, "alpha": 0.5}, medianprops={"color": "black"})
    for patch, color in zip(art["boxes"], colors):
        patch.set_facecolor(color)
        patch.set_alpha(0.8)


def layer_boxplot(values: np.ndarray, out_path, *, title: str, ylabel: str = "neuron predictivity",
                  figsize=None, dpi: int = 100, floor: np.ndarray | None = None,
                  null_max: np.ndarray | None = None) -> pathlib.Path:
    """values [L, ...]: one box per layer (layers numbered from 1) of all the values of that layer. floor [L]: the
    label-permutation floor per layer (the mean Pred of labels that carry nothing, at this split's n), drawn as a
    dashed segment per layer; null_max [L]: the null's best neuron per layer, dotted."""
    values = np.asarray(values)
    if values.ndim < 2:
        raise ValueError(f"expected [layers, ...] values, got shape {values.shape}")
    L = values.shape[0]
    figsize = figsize or (max(5.0, 0.45 * L + 2.5), 4.0)
    fig = _figure(figsize)
    ax = fig.add_subplot()
    _draw_boxes(ax, [box_stats(values[l], str(l + 1)) for l in range(L)], ["#7aa6c2"] * L)
    pos = np.arange(1, L + 1)
    for line, style, label in ((floor, "--", "permutation floor (null mean)"),
                               (null_max, ":", "null's best neuron (mean over permutations)")):
        if line is not None:
            ax.hlines(np.asarray(line, float), pos - 0.4, pos + 0.4, colors="#b03030", linestyles=style,
                      linewidth=1.5, zorder=4, label=label)
    if floor is not None or null_max is not None:
        ax.legend(fontsize=7, loc="best")
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(_wrap(title, figsize[0]))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out_path, dpi)


def neuron_boxes_with_model_accuracy(values: Mapping[str, np.ndarray | Mapping],
                                     model_accuracy: Mapping[str, float | None], out_path, *, title: str,
                                     ylabel: str = "neuron predictivity", figsize=None, dpi: int = 100,
                                     majority: Mapping[str, float] | None = None,
                                     floors: Mapping[str, float] | None = None) -> pathlib.Path:
    """Figures 2 and 9: per dataset, a box of all neuron values (predictivities or accuracies; an array, or its
    `box_stats`) drawn over a bar of the model's accuracy on that dataset (same 0-1 scale; no bar where the
    accuracy is unknown). majority: {task: majority-class rate of its dev split}, drawn as a short black line
    across that dataset's bar (0.5 is only chance for balanced labels). floors: {task: the label-permutation
    floor of Pred at that dataset's n}, a dashed red line across its box; the grey 0.5 line is drawn only when no
    dataset has a floor (it is not Pred's floor: the max over prompt tokens lifts it)."""
    tasks = results.order_tasks(values)
    if not tasks:
        raise ValueError("no datasets to plot")
    figsize = figsize or (max(5.5, 0.7 * len(tasks) + 3.0), 4.5)
    fig = _figure(figsize)
    ax = fig.add_subplot()
    pos = np.arange(1, len(tasks) + 1)
    acc = np.array([np.nan if model_accuracy.get(t) is None else float(model_accuracy[t]) for t in tasks])
    ax.bar(pos[np.isfinite(acc)], acc[np.isfinite(acc)], width=0.8, color="#9fd39f", edgecolor="black",
           linewidth=0.8, alpha=0.6, label="bars: model accuracy (mean over seeds)", zorder=1)
    # values may be precomputed box_stats dicts (the report streams large neuron-accuracy arrays one at a time)
    stats = [dict(values[t]) if isinstance(values[t], Mapping) else box_stats(values[t], t) for t in tasks]
    art = ax.bxp(stats, positions=pos, patch_artist=True, widths=0.5, manage_ticks=False,
                 flierprops={"markersize": 2, "alpha": 0.5}, medianprops={"color": "black"})
    for patch, t in zip(art["boxes"], tasks):
        patch.set_facecolor(task_color(t))
        patch.set_zorder(2)
    art["boxes"][0].set_label(f"boxes: {ylabel} of every neuron")
    known = [(p, float(floors[t])) for p, t in zip(pos, tasks) if floors and floors.get(t) is not None]
    if known:
        ax.hlines([f for _, f in known], [p - 0.42 for p, _ in known], [p + 0.42 for p, _ in known],
                  colors="#b03030", linestyles="--", linewidth=1.5, zorder=3, label="permutation floor at n")
    else:
        ax.axhline(CHANCE, color="grey", linestyle=":", linewidth=1, label="0.5 (no permutation floor recorded)")
    rates = [(p, float(majority[t])) for p, t in zip(pos, tasks) if majority and majority.get(t) is not None]
    if rates:
        ax.hlines([r for _, r in rates], [p - 0.42 for p, _ in rates], [p + 0.42 for p, _ in rates],
                   colors="black", linewidth=2, zorder=3, label="majority-class rate")
    ax.set_xticks(pos, labels=tasks, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_xlim(0.4, len(tasks) + 0.6)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("dataset")
    ax.set_ylabel(f"{ylabel} / model accuracy")
    ax.set_title(_wrap(title, figsize[0]))
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out_path, dpi)


@dataclasses.dataclass
class SuppressionPanel:
    label: str                          # e.g. "qqp → advqqp"
    stats: CurveStats
    majority_rate: float | None = None  # the target's majority-class rate (dashed line), when known


def _panel_grid(n_panels: int, ncols: int, figsize):
    """(figure, axes [rows, cols], figsize) for n_panels accuracy panels sharing the y axis, ncols per row."""
    ncols = max(1, min(ncols, n_panels))
    nrows = -(-n_panels // ncols)
    figsize = figsize or (max(5.0, 3.6 * ncols + 0.4), 3.0 * nrows + 0.8)
    fig = _figure(figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=False, sharey=True), figsize


def _finish_panels(fig, axes, n_panels: int, title: str, figsize, out_path, dpi: int) -> pathlib.Path:
    """Labels the first column "accuracy", hides the unused panels, titles and saves the figure."""
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    for ax in list(axes.flat)[n_panels:]:
        ax.set_visible(False)
    fig.suptitle(_wrap(title, figsize[0]))
    return _save(fig, out_path, dpi)


def suppression_curves(panels: Sequence[SuppressionPanel], out_path, *, title: str, ncols: int = 3,
                       figsize=None, dpi: int = 100) -> pathlib.Path:
    """Accuracy against the percentage of neurons suppressed per layer: skill neurons vs random neurons,
    mean ± SEM bands over seeds; one panel per (source → target) pair."""
    if not panels:
        raise ValueError("no suppression results to plot")
    fig, axes, figsize = _panel_grid(len(panels), ncols, figsize)
    for ax, panel in zip(axes.flat, panels):
        curve = panel.stats
        for mean, sem, color, name in ((curve.skill_mean, curve.skill_sem, "#c0392b", "skill neurons"),
                                       (curve.random_mean, curve.random_sem, "#2c7fb8",
                                        f"random neurons ({curve.n_draws} draw{'s' if curve.n_draws != 1 else ''})")):
            ax.plot(curve.ks, mean, marker="o", markersize=3, color=color, label=name)
            ax.fill_between(curve.ks, mean - sem, mean + sem, color=color, alpha=0.2, linewidth=0)
        ax.axhline(CHANCE, color="grey", linestyle=":", linewidth=1)
        if panel.majority_rate is not None:
            ax.axhline(panel.majority_rate, color="black", linestyle="--", linewidth=1,
                       label=f"majority class ({100 * panel.majority_rate:.1f}%)")
        ax.set_title(f"{panel.label} ({curve.n_seeds} seed{'s' if curve.n_seeds != 1 else ''})", fontsize=10)
        ax.set_xlabel("neurons suppressed per layer (%)")
        ax.grid(alpha=0.3)
    for ax in axes.flat[:len(panels)]:
        ax.legend(fontsize=7, loc="lower left")
    return _finish_panels(fig, axes, len(panels), title, figsize, out_path, dpi)


@dataclasses.dataclass
class PatchingPanel:
    """One (model, clean → adversarial, patch source) recovery curve; every array is [K], one entry per level k."""
    label: str                          # e.g. "m: sst2 → advsst2 (original)"
    ks: np.ndarray                      # % of neurons patched per layer
    skill_mean: np.ndarray              # accuracy with the top-k% skill neurons patched, mean over seeds
    skill_low: np.ndarray               # its t interval over seeds (NaN below 2 seeds)
    skill_high: np.ndarray
    random_mean: np.ndarray             # as many random neurons patched, mean over draws and seeds
    adversarial: float                  # unpatched accuracy on the adversarial set
    original: float | None = None       # accuracy on the unattacked originals (None for patch source "mean")
    n_seeds: int = 0


def patching_recovery_curves(panels: Sequence[PatchingPanel], out_path, *, title: str, ncols: int = 3,
                             figsize=None, dpi: int = 100) -> pathlib.Path:
    """Accuracy on adversarial inputs against the percentage of neurons patched per layer: skill neurons (with
    their t interval over seeds) vs random neurons, between the unpatched adversarial accuracy and the original
    accuracy (horizontal lines); one panel per (model, clean → adversarial, patch source)."""
    if not panels:
        raise ValueError("no patching results to plot")
    fig, axes, figsize = _panel_grid(len(panels), ncols, figsize)
    for ax, panel in zip(axes.flat, panels):
        ax.plot(panel.ks, panel.skill_mean, marker="o", markersize=3, color="#c0392b", label="skill neurons")
        # NaN bounds (a single seed) leave the band out instead of drawing a zero-width one
        ax.fill_between(panel.ks, panel.skill_low, panel.skill_high, color="#c0392b", alpha=0.2, linewidth=0)
        ax.plot(panel.ks, panel.random_mean, marker="o", markersize=3, color="#2c7fb8", label="random neurons")
        ax.axhline(panel.adversarial, color="black", linestyle=":", linewidth=1,
                   label=f"unpatched adversarial ({100 * panel.adversarial:.1f}%)")
        if panel.original is not None:
            ax.axhline(panel.original, color="black", linestyle="--", linewidth=1,
                       label=f"original ({100 * panel.original:.1f}%)")
        ax.set_title(f"{panel.label} ({panel.n_seeds} seed{'s' if panel.n_seeds != 1 else ''})", fontsize=10)
        ax.set_xlabel("neurons patched per layer (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return _finish_panels(fig, axes, len(panels), title, figsize, out_path, dpi)


def learning_curves(curves: Sequence, references: Mapping[str, float], out_path, *, title: str,
                    figsize=None, dpi: int = 100) -> pathlib.Path:
    """One panel: each task's selection-rows balanced accuracy over training steps, mean over the seeds evaluated
    at that step with a band of +-1 sd (ddof = 1), and its probe reference (dashed, when given) and chance (0.5).
    curves: analysis.results.TuningCurve per task; references: {task: balanced accuracy}."""
    if not curves:
        raise ValueError("no tuning curves to plot")
    figsize = figsize or (7.0, 4.2)
    fig = _figure(figsize)
    ax = fig.subplots(1, 1)
    for c in curves:
        mean, sd, _ = c.balanced_summary()
        sd = np.nan_to_num(sd)                     # one seed at a step: no band
        ax.plot(c.steps, mean, marker="o", markersize=3, color=task_color(c.task), label=c.task)
        ax.fill_between(c.steps, mean - sd, mean + sd, color=task_color(c.task), alpha=0.15, linewidth=0)
        if references.get(c.task) is not None:
            ax.axhline(float(references[c.task]), color=task_color(c.task), linestyle="--", linewidth=1)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance (balanced)")
    ax.set_xlabel("training step")
    ax.set_ylabel("balanced accuracy (selection rows)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.suptitle(_wrap(title, figsize[0]))
    return _save(fig, out_path, dpi)


def predictivity_per_layer(preds: Mapping[str, np.ndarray], out_path, *, title: str, top_fraction: float = 0.01,
                           figsize=None, dpi: int = 100,
                           floors: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> pathlib.Path:
    """Three panels over layers: mean predictivity, mean of the top `top_fraction` neurons, and the maximum;
    one line per dataset. preds: {task: Pred [L, N]}. floors: {task: {"mean": [L], "max": [L]}}, the label-
    permutation null's layer mean and layer max at that task's n (mean over permutations), drawn dashed in the
    task's colour in the first and last panels: what Pred reaches when the labels carry nothing."""
    tasks = results.order_tasks(preds)
    if not tasks:
        raise ValueError("no predictivities to plot")
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must lie in (0, 1], got {top_fraction}")
    figsize = figsize or (12.0, 4.0)
    fig = _figure(figsize)
    axes = fig.subplots(1, 3, sharey=True)
    reducers = (("mean over neurons", lambda p: p.mean(axis=1)),
                (f"mean of the top {100 * top_fraction:g}% neurons", lambda p: _top_mean(p, top_fraction)),
                ("maximum", lambda p: p.max(axis=1)))
    floors = floors or {}
    for ax, (name, reduce), null_key in zip(axes, reducers, ("mean", None, "max")):
        for t in tasks:
            p = np.asarray(preds[t], dtype=np.float64)
            ax.plot(np.arange(1, p.shape[0] + 1), reduce(p), marker="o", markersize=3, color=task_color(t), label=t)
            line = floors.get(t, {}).get(null_key) if null_key else None
            if line is not None:
                ax.plot(np.arange(1, p.shape[0] + 1), np.asarray(line, float), linestyle="--", color=task_color(t),
                        linewidth=1, label=f"{t}: permutation null")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("predictivity")
    axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(_wrap(title, figsize[0]))
    return _save(fig, out_path, dpi)


def _top_mean(p: np.ndarray, fraction: float) -> np.ndarray:
    k = max(1, int(round(fraction * p.shape[1])))
    return np.sort(p, axis=1)[:, -k:].mean(axis=1)
