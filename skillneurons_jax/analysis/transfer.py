"""Prompt transfer matrices (Su et al. 2022; the paper's Figures 1 and 7).

Entry [source, target] is the accuracy of the source task's prompt on the target task (with the target's
verbalizer), as a fraction in [0, 1]:
  absolute[s, t] = mean over seeds of acc_seed(s -> t)
  relative[s, t] = mean over seeds of acc_seed(s -> t) / acc_seed(own(t) -> t)
where own(t) is t itself for a clean task and the clean counterpart for an adversarial set (an adversarial set has
no prompt of its own: it is evaluated with its clean task's prompt). The ratio is taken per seed and then averaged,
as in the original analysis (robust-neurons `get_transferability_matrix_new`). Seeds are paired by their listed
seed ids when both results list them, else by position.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np

from skillneurons_jax.analysis import results


@dataclasses.dataclass
class TransferMatrices:
    """absolute, relative [len(sources), len(targets)] float64 with NaN where a result (or the reference) is absent."""

    sources: list[str]
    targets: list[str]
    absolute: np.ndarray
    relative: np.ndarray
    missing: list[tuple[str, str]]              # (source, target) pairs without a result
    missing_reference: list[str]                 # targets whose own-prompt result is absent (relative is NaN)


def own_prompt_task(target: str) -> str:
    """The task whose prompt is the target's own: the clean task for adversarial sets."""
    return results.clean_task(target) or target


def paired_ratio(num: results.Transfer | np.ndarray, den: results.Transfer | np.ndarray) -> np.ndarray:
    """Per-seed ratio num / den, [S]. Seeds are matched by id when both list them, else by position."""
    n_acc, n_seeds = _acc_seeds(num)
    d_acc, d_seeds = _acc_seeds(den)
    if n_seeds is not None and d_seeds is not None:
        common = [s for s in n_seeds if s in set(d_seeds)]
        if not common:
            raise ValueError(f"no seed in common between {n_seeds} and {d_seeds}")
        n_acc = n_acc[[n_seeds.index(s) for s in common]]
        d_acc = d_acc[[d_seeds.index(s) for s in common]]
    elif n_acc.shape != d_acc.shape:
        raise ValueError(f"cannot pair seeds: {n_acc.size} accuracies against {d_acc.size} (no seed ids listed)")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d_acc > 0, n_acc / np.where(d_acc > 0, d_acc, 1.0), np.nan)


def _acc_seeds(x) -> tuple[np.ndarray, list[int] | None]:
    if isinstance(x, results.Transfer):
        return np.asarray(x.accuracy, np.float64), x.seeds
    return np.asarray(x, np.float64).reshape(-1), None


def transfer_matrices(table: Mapping[tuple[str, str], results.Transfer | np.ndarray],
                      sources: Sequence[str], targets: Sequence[str],
                      own: Callable[[str], str] = own_prompt_task) -> TransferMatrices:
    """Builds both matrices from a {(source, target): per-seed accuracies} table (pure; nothing is read)."""
    sources, targets = list(sources), list(targets)
    absolute = np.full((len(sources), len(targets)), np.nan)
    relative = np.full_like(absolute, np.nan)
    missing, missing_ref = [], []
    for j, t in enumerate(targets):
        ref = table.get((own(t), t))
        if ref is None:
            missing_ref.append(t)
        for i, s in enumerate(sources):
            entry = table.get((s, t))
            if entry is None:
                missing.append((s, t))
                continue
            absolute[i, j] = float(np.mean(_acc_seeds(entry)[0]))
            if ref is not None:
                relative[i, j] = float(np.nanmean(paired_ratio(entry, ref)))
    return TransferMatrices(sources=sources, targets=targets, absolute=absolute, relative=relative,
                            missing=missing, missing_reference=missing_ref)


def load_transfer_table(workdir, model: str, pairs: Sequence[tuple[str, str]]
                        ) -> tuple[dict[tuple[str, str], results.Transfer], list[Exception]]:
    """Reads every listed pair; unreadable ones are returned as errors (with their paths) instead of raised."""
    table, errors = {}, []
    for s, t in pairs:
        try:
            table[(s, t)] = results.load_transfer(workdir, model, s, t)
        except (FileNotFoundError, results.CorruptResultError) as e:
            errors.append(e)
    return table, errors
