"""Robustness numbers: the accuracy table (Table 1) and the statistics of suppression curves (Figures 4-6, 10).

Accuracy table: mean ± std over seeds per model and task; adversarial sets are evaluated with their CLEAN task's
prompt; F1 is the headline metric where classes are unbalanced (AdvQQP), accuracy elsewhere, and both are shown
when known. The std uses ddof=0, as the original table (robust-neurons `get_mean_std`, np.std); SEM bands of the
suppression curves use ddof=1 (`get_sem`).

Suppression curves: for each level k, skill = mean ± SEM over seeds; random = for each seed the mean over the
random draws, then mean ± SEM over seeds (seeds are the independent units; draws within a seed share the prompt).
"""
from __future__ import annotations

import dataclasses
import html
from typing import Iterable, Sequence

import numpy as np

from skillneurons_jax.analysis import results

# Tasks whose headline metric is F1 (unbalanced classes), as in the paper's Table 1.
F1_TASKS = frozenset({"advqqp"})


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std())


def mean_sem(values: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error (ddof=1) along `axis`; SEM is 0 with a single value (no spread to estimate)."""
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[axis]
    sem = v.std(axis=axis, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(np.delete(v.shape, axis))
    return v.mean(axis=axis), sem


@dataclasses.dataclass
class AccuracyEntry:
    """One row of Table 1: a model's accuracy (and F1) per seed on `task` with the prompt of `prompt_task`."""

    model: str
    task: str
    prompt_task: str
    accuracy: np.ndarray          # [S]
    f1: np.ndarray | None = None  # [S]
    source: str = ""              # where the numbers come from (a path or a description)


def headline_metric(task: str) -> str:
    return "f1" if task in F1_TASKS else "accuracy"


ACCURACY_HEADER = ("model", "task", "prompt", "seeds", "accuracy (%)", "F1 (%)", "reported metric", "source")


def _pct(values) -> str:
    if values is None:
        return "–"
    m, s = mean_std(values)
    return f"{100 * m:.1f} ± {100 * s:.1f}"


def accuracy_rows(entries: Iterable[AccuracyEntry]) -> list[tuple[str, ...]]:
    """Rows under ACCURACY_HEADER, models then tasks in display order."""
    entries = list(entries)
    order = {t: i for i, t in enumerate(results.order_tasks(e.task for e in entries))}
    rows = []
    for e in sorted(entries, key=lambda e: (e.model, order[e.task])):
        metric = headline_metric(e.task)
        if metric == "f1" and e.f1 is None:
            metric = "accuracy (F1 not recorded)"
        rows.append((e.model, e.task, e.prompt_task, str(len(e.accuracy)), _pct(e.accuracy), _pct(e.f1), metric,
                     e.source))
    return rows


@dataclasses.dataclass
class CurveStats:
    """ks [K]; skill_mean/skill_sem and random_mean/random_sem [K]; n_seeds, n_draws."""

    ks: np.ndarray
    skill_mean: np.ndarray
    skill_sem: np.ndarray
    random_mean: np.ndarray
    random_sem: np.ndarray
    n_seeds: int
    n_draws: int


def curve_stats(ks: np.ndarray, skill: np.ndarray, random: np.ndarray) -> CurveStats:
    """ks [K], skill [K, S], random [K, D, S] -> mean ± SEM over seeds (random: draws averaged per seed first)."""
    ks, skill, random = np.asarray(ks, float), np.asarray(skill, float), np.asarray(random, float)
    if skill.ndim != 2 or random.ndim != 3 or skill.shape[0] != ks.size or random.shape[0] != ks.size \
            or random.shape[2] != skill.shape[1]:
        raise ValueError(f"expected ks [K], skill [K, S], random [K, D, S]; got {ks.shape}, {skill.shape}, "
                         f"{random.shape}")
    sm, ss = mean_sem(skill, axis=1)
    rm, rs = mean_sem(random.mean(axis=1), axis=1)
    return CurveStats(ks=ks, skill_mean=sm, skill_sem=ss, random_mean=rm, random_sem=rs,
                      n_seeds=skill.shape[1], n_draws=random.shape[1])


def suppression_stats(res: results.Suppression) -> CurveStats:
    return curve_stats(res.ks, res.skill, res.random)


SUPPRESSION_HEADER = ("model", "source → target", "seeds × draws", "k (%)", "no suppression (%)",
                      "skill suppressed (%)", "random suppressed (%)", "random − skill (points)")


def suppression_rows(items: Iterable[tuple[str, results.Suppression]]) -> list[tuple[str, ...]]:
    """One row per (model, result) at the largest k: accuracy without suppression, with the skill neurons
    suppressed and with random neurons suppressed (mean ± SEM), and how much more the skill neurons hurt."""
    rows = []
    for model, res in items:
        st = suppression_stats(res)
        k0 = int(np.argmin(st.ks))
        kmax = int(np.argmax(st.ks))
        gap = 100 * (st.random_mean[kmax] - st.skill_mean[kmax])
        rows.append((model, f"{res.source} → {res.target}", f"{st.n_seeds} × {st.n_draws}", f"{st.ks[kmax]:g}",
                     f"{100 * st.skill_mean[k0]:.1f}" + ("" if st.ks[k0] == 0 else f" (k={st.ks[k0]:g})"),
                     f"{100 * st.skill_mean[kmax]:.1f} ± {100 * st.skill_sem[kmax]:.1f}",
                     f"{100 * st.random_mean[kmax]:.1f} ± {100 * st.random_sem[kmax]:.1f}", f"{gap:+.1f}"))
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Table formatting (markdown and HTML), shared by the report
# ----------------------------------------------------------------------------------------------------------------
def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(x) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"
