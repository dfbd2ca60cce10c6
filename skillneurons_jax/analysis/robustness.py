"""Robustness numbers: the accuracy table (Table 1) and the statistics of suppression curves (Figures 4-6, 10).

Accuracy table: mean ± std over seeds per model and task; adversarial sets are evaluated with their CLEAN task's
prompt. Accuracy, balanced accuracy (mean of the per-class recalls, from the confusion matrix when a result
records it) and F1 (class 1) are shown side by side for every task, with the number of dev examples, the seeds and
the majority-class rate (the accuracy of always answering the most frequent label), so that no accuracy is read
without its floor. The paper's Table 1 reports accuracy for every task; it gives F1 for AdvQQP only in its
footnote 2, so no metric is singled out here. One std convention everywhere (analysis.inference.STD_DDOF = 1):
the table's ± is the sample std over seeds (the original table used np.std, ddof=0, which is smaller by
sqrt((S - 1) / S)), the SEM bands of the suppression curves and the intervals use the same.

Suppression curves: for each level k, skill = mean ± SEM over seeds; random = for each seed the mean over the
random draws, then mean ± SEM over seeds (seeds are the independent units; draws within a seed share the prompt).

Skill vs random (`compare_levels`), per level k, difference = random accuracy - skill accuracy (positive: the
skill neurons hurt more):
  * interval: with per-example outcomes and at least inference.MIN_BOOTSTRAP_SEEDS seeds, a two-level bootstrap over seeds and examples of the per-(seed, example)
    difference (inference.two_level_bootstrap: every seed is scored on the same rows, so an interval over seeds
    alone leaves out the rows' sampling error); without them a t interval over seeds of the per-seed difference
    (random draws averaged per seed: seeds are the independent units); with one seed, a t interval over the draws
    (it then ignores prompt-seed variation, and says so). The null behind it: the mean difference is 0.
  * paired test over dev examples (needs the suppression JSON's per-example fields): d_i = mean over seeds (and
    draws) of random-correct(i) - skill-correct(i); statistic = mean_i d_i; null = for every example the two
    conditions are exchangeable, so the sign of d_i is a fair coin (sign-flip permutation test, every one of the
    2^n flips when n <= 16, else `n_flips` Monte Carlo flips with a seed); one-sided p for "skill hurts more":
    p = (1 + #{flipped mean >= observed}) / (1 + n_flips). A small p-value means the skill neurons' suppression
    costs more examples than the random control's on THIS dev set, beyond what example-level chance explains; it
    does not generalise over prompt seeds (the interval does that).
  The verdict "skill neurons hurt more than random" (the rule of analysis.verdicts.decide, per level):
    yes           the difference is positive, the interval's lower end is above 0 and (when per-example data
                  exist) the paired p is below alpha;
    no            the interval's upper end is at or below 0 (over seeds, skill neurons do not hurt more);
    inconclusive  anything else, e.g. a paired test that rejects on this dev set while the interval over two
                  or three seeds still spans 0: the sentence says which condition failed.
"""
from __future__ import annotations

import dataclasses
import html
import itertools
from typing import Iterable, Sequence

import numpy as np
from scipy import stats as scipy_stats

from skillneurons_jax.analysis import inference, results


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and std over seeds, ddof = inference.STD_DDOF (0 for one seed)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(inference.std(v))


def mean_sem(values: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error (ddof=1) along `axis`; SEM is 0 with a single value (no spread to estimate)."""
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[axis]
    sem = inference.std(v, axis=axis) / np.sqrt(n)
    return v.mean(axis=axis), sem


def majority_rate(label_counts) -> float | None:
    """label_counts [C] -> the share of the most frequent label (None without examples)."""
    counts = np.asarray(label_counts, np.float64)
    return float(counts.max() / counts.sum()) if counts.size and counts.sum() > 0 else None


@dataclasses.dataclass
class AccuracyEntry:
    """One row of Table 1: a model's accuracy (F1, balanced accuracy) per seed on `task` with the prompt of
    `prompt_task`, and the facts needed to read it: dev examples, label counts, truncation, exclusions."""

    model: str
    task: str
    prompt_task: str
    accuracy: np.ndarray                          # [S]
    f1: np.ndarray | None = None                  # [S]
    source: str = ""                              # where the numbers come from (a path or a description)
    balanced_accuracy: np.ndarray | None = None   # [S]
    n_examples: int | None = None
    label_counts: list[int] | None = None         # dev examples per label
    facts: "results.DataFacts | None" = None

    @property
    def majority_rate(self) -> float | None:
        return None if self.label_counts is None else majority_rate(self.label_counts)


ACCURACY_HEADER = ("model", "task", "prompt", "seeds", "n (dev)", "majority class (%)", "accuracy (%)",
                   "balanced accuracy (%)", "F1 (%)", "truncated", "excluded adv. originals", "source")


def _pct(values) -> str:
    if values is None:
        return "–"
    m, s = mean_std(values)
    return f"{100 * m:.1f} ± {100 * s:.1f}"


def _sorted_entries(entries: Iterable[AccuracyEntry]) -> list[AccuracyEntry]:
    entries = list(entries)
    order = {t: i for i, t in enumerate(results.order_tasks(e.task for e in entries))}
    return sorted(entries, key=lambda e: (e.model, order[e.task]))


def accuracy_rows(entries: Iterable[AccuracyEntry]) -> list[tuple[str, ...]]:
    """Rows under ACCURACY_HEADER, models then tasks in display order."""
    rows = []
    for e in _sorted_entries(entries):
        facts = e.facts or results.DataFacts()
        rows.append((e.model, e.task, e.prompt_task, str(len(e.accuracy)),
                     "–" if e.n_examples is None else str(e.n_examples),
                     "–" if e.majority_rate is None else f"{100 * e.majority_rate:.1f}",
                     _pct(e.accuracy), _pct(e.balanced_accuracy), _pct(e.f1), facts.truncation_text(),
                     facts.excluded_text(), e.source))
    return rows


def _metric(values) -> dict | None:
    if values is None:
        return None
    m, s = mean_std(values)
    return {"mean": m, "std": s, "per_seed": [float(v) for v in values]}


def accuracy_records(entries: Iterable[AccuracyEntry]) -> list[dict]:
    """summary.json's `accuracy` rows (same order as accuracy_rows): numbers, not formatted text. Metrics are
    {mean, std (ddof=1), per_seed}; absent ones null."""
    out = []
    for e in _sorted_entries(entries):
        facts = e.facts or results.DataFacts()
        out.append({"model": e.model, "task": e.task, "prompt": e.prompt_task, "seeds": len(e.accuracy),
                    "n_examples": e.n_examples, "label_counts": e.label_counts, "majority_rate": e.majority_rate,
                    "accuracy": _metric(e.accuracy), "balanced_accuracy": _metric(e.balanced_accuracy),
                    "f1": _metric(e.f1), "truncation": facts.truncation,
                    "excluded_adversarial_originals": facts.excluded_adversarial_originals, "source": e.source})
    return out


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
    skill_mean, skill_sem = mean_sem(skill, axis=1)
    random_mean, random_sem = mean_sem(random.mean(axis=1), axis=1)
    return CurveStats(ks=ks, skill_mean=skill_mean, skill_sem=skill_sem, random_mean=random_mean,
                      random_sem=random_sem,
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
        curve = suppression_stats(res)
        first = int(np.argmin(curve.ks))
        last = int(np.argmax(curve.ks))
        gap = 100 * (curve.random_mean[last] - curve.skill_mean[last])
        unsuppressed = f"{100 * curve.skill_mean[first]:.1f}" + ("" if curve.ks[first] == 0
                                                                   else f" (k={curve.ks[first]:g})")
        rows.append((model, f"{res.source} → {res.target}", f"{curve.n_seeds} × {curve.n_draws}",
                     f"{curve.ks[last]:g}", unsuppressed,
                     f"{100 * curve.skill_mean[last]:.1f} ± {100 * curve.skill_sem[last]:.1f}",
                     f"{100 * curve.random_mean[last]:.1f} ± {100 * curve.random_sem[last]:.1f}", f"{gap:+.1f}"))
    return rows


# Exact sign-flip enumeration up to this many examples (2^16 = 65,536 flips); Monte Carlo above.
_EXACT_FLIPS_MAX_EXAMPLES = 16


@dataclasses.dataclass
class LevelComparison:
    """Skill vs random at one level k (fractions; difference = random - skill accuracy).

    interval: (low, high) at `confidence`, over `interval_units` ("seeds" or "draws (one seed)"), None when it
    cannot be estimated; p_value: the paired sign-flip p over `n_examples` dev examples (None without per-example
    data); exact: every flip enumerated; verdict: "yes" | "no" | "inconclusive" (module docstring)."""

    k: float
    skill: float
    random: float
    difference: float
    interval: tuple[float, float] | None
    interval_units: str
    confidence: float
    p_value: float | None
    n_examples: int | None
    n_flips: int
    exact: bool
    verdict: str


def difference_interval(skill: np.ndarray, random: np.ndarray, confidence: float = 0.95
                        ) -> tuple[tuple[float, float] | None, str]:
    """skill [S], random [D, S] -> (t interval of mean(random - skill), units). Seeds are the units (draws
    averaged per seed); with one seed the draws are (a narrower question: it ignores prompt-seed variation)."""
    skill, random = np.asarray(skill, float), np.asarray(random, float)
    per_seed = random.mean(0) - skill
    if per_seed.size >= 2:
        values, units = per_seed, "seeds"
    elif random.shape[0] >= 2:
        values, units = random[:, 0] - skill[0], "draws (one seed)"
    else:
        return None, "none (one seed, one draw)"
    mean, sem = values.mean(), inference.std(values) / np.sqrt(values.size)
    if sem == 0:
        return (float(mean), float(mean)), units
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, values.size - 1) * sem)
    return (float(mean - half), float(mean + half)), units


def sign_flip_test(differences: np.ndarray, n_flips: int = 10000, seed: int = 0) -> tuple[float, bool, int]:
    """differences [n] (per example) -> (one-sided p for mean > 0, exact, flips used). Null: each difference's sign
    is a fair coin (the two conditions are exchangeable per example)."""
    d = np.asarray(differences, np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"expected a non-empty [examples] vector of differences, got shape {d.shape}")
    observed = d.mean()
    tol = 1e-12
    if d.size <= _EXACT_FLIPS_MAX_EXAMPLES:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))       # [2^n, n]
        null = signs @ d / d.size
        return float(np.sum(null >= observed - tol)) / null.size, True, int(null.size)
    if n_flips < 1:
        raise ValueError(f"n_flips must be >= 1, got {n_flips}")
    rng = np.random.default_rng(seed)
    count, done = 0, 0
    while done < n_flips:          # in chunks: [chunk, n] signs stay small whatever the dev set
        chunk = min(n_flips - done, max(1, 2 ** 22 // d.size))
        signs = rng.integers(0, 2, size=(chunk, d.size)) * 2.0 - 1.0
        count += int(np.sum(signs @ d / d.size >= observed - tol))
        done += chunk
    return (1 + count) / (1 + n_flips), False, n_flips


YES, NO, INCONCLUSIVE = "yes", "no", "inconclusive"


def level_verdict(difference: float, interval: tuple[float, float] | None, p_value: float | None,
                  alpha: float) -> str:
    """The per-level rule of the module docstring (difference = random - skill accuracy)."""
    if difference > 0 and interval is not None and interval[0] > 0 and (p_value is None or p_value < alpha):
        return YES
    if interval is not None and interval[1] <= 0:
        return NO
    return INCONCLUSIVE


def _why_inconclusive(c: "LevelComparison", alpha: float) -> str:
    reasons = []
    if c.difference <= 0:
        reasons.append("the mean difference is not positive")
    if c.interval is None:
        reasons.append(f"no interval ({c.interval_units})")
    elif c.interval[0] <= 0:
        reasons.append(f"the interval over {c.interval_units} includes 0")
    if c.p_value is not None and c.p_value >= alpha:
        reasons.append(f"the paired p is not below {alpha:g}")
    elif c.p_value is not None:
        reasons.append("the paired test rejects on these examples only")
    return "; ".join(reasons)


def compare_levels(res: results.Suppression, *, confidence: float = 0.95, alpha: float = 0.05,
                   n_flips: int = 10000, seed: int = 0) -> list[LevelComparison]:
    """One LevelComparison per k of a suppression result (module docstring for the interval and the test)."""
    out = []
    for i, k in enumerate(res.ks):
        skill, random = res.skill[i], res.random[i]
        difference = float(random.mean(0).mean() - skill.mean())
        interval, units = difference_interval(skill, random, confidence)
        p, exact, flips, n = None, False, 0, None
        if res.skill_correct is not None and res.random_correct is not None:
            per_seed_example = res.random_correct[i].mean(0) - res.skill_correct[i]              # [S, E]
            if per_seed_example.shape[0] >= inference.MIN_BOOTSTRAP_SEEDS:
                boot = inference.two_level_bootstrap(per_seed_example, confidence=confidence, seed=seed)
                interval, units = boot.interval, "seeds × examples (two-level bootstrap)"
            per_example = per_seed_example.mean(0)                                               # [E]
            n = int(per_example.size)
            p, exact, flips = sign_flip_test(per_example, n_flips, seed)
        verdict = level_verdict(difference, interval, p, alpha)
        out.append(LevelComparison(k=float(k), skill=float(skill.mean()), random=float(random.mean(0).mean()),
                                   difference=difference, interval=interval, interval_units=units,
                                   confidence=confidence, p_value=p, n_examples=n, n_flips=flips, exact=exact,
                                   verdict=verdict))
    return out


COMPARISON_HEADER = ("k (%)", "skill suppressed (%)", "random suppressed (%)", "random − skill (points)",
                     "interval (points)", "paired p (examples)", "skill hurts more")


def comparison_rows(comparisons: Sequence[LevelComparison]) -> list[tuple[str, ...]]:
    """One row per level under COMPARISON_HEADER (printed beside each curve)."""
    rows = []
    for c in comparisons:
        interval = "–" if c.interval is None else (f"[{100 * c.interval[0]:+.1f}, {100 * c.interval[1]:+.1f}] "
                                                   f"({100 * c.confidence:g}%, over {c.interval_units})")
        p = "no per-example data" if c.p_value is None else (f"{c.p_value:.4f} (n={c.n_examples}, "
                                                              f"{'exact' if c.exact else f'{c.n_flips} flips'})")
        rows.append((f"{c.k:g}", f"{100 * c.skill:.1f}", f"{100 * c.random:.1f}", f"{100 * c.difference:+.1f}",
                     interval, p, c.verdict))
    return rows


def verdict_sentence(label: str, comparison: LevelComparison, alpha: float, split: str = "dev") -> str:
    """The plain sentence for one result at one level, computed (never typed): yes/no with its numbers."""
    c = comparison
    parts = [f"difference {100 * c.difference:+.1f} points (random − skill)"]
    if c.interval is None:
        parts.append(f"no interval ({c.interval_units})")
    else:
        parts.append(f"{100 * c.confidence:g}% interval [{100 * c.interval[0]:+.1f}, {100 * c.interval[1]:+.1f}] "
                     f"over {c.interval_units}")
    parts.append("no per-example data for a paired test" if c.p_value is None
                 else f"paired sign-flip p = {c.p_value:.4f} over {c.n_examples} {split} examples")
    why = f" — {_why_inconclusive(c, alpha)}" if c.verdict == INCONCLUSIVE else ""
    return (f"{label}, k = {c.k:g}%: skill neurons hurt more than random: {c.verdict}{why} "
            f"({'; '.join(parts)}; yes needs a positive difference, an interval above 0 and p < {alpha:g}; "
            f"no needs an interval at or below 0).")


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
