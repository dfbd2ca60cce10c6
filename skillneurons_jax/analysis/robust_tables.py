"""The robustness study's tables (issue 17) from the plan's outputs, for a report section to render:

    tables = robust_tables(workdir)      # {"arms": [row, ...], "manipulation": [...], "predictivity": [...], "patching": [...]}

Reads (nothing else, nothing written):
  robust/<arm>/eval/<model>/<task>.json                 (robust.tuning.evaluate_arm)
  robust/<arm>/predictivity/<model>/<set>.npz (+ .json) (the robust_predictivity stages),
  robust/<arm>/predictivity_perturbed_dev/<model>/<task>.npz (+ .json) (robust_perturbed_predictivity) and the main
  study's predictivity/<model>/<task>.npz (the clean skill neurons the anchor chose)
  patching/<model>/<clean>__<adversarial>.<source>.json (robust.stage.run_patching; the suppression JSON format)

"arms": one row per (model, task, arm, scored set), the clean dev first, then each other scored set by name:
  model, task, arm, target, split (data.tasks.scored_kind: "clean" | "adversarial" | "adversarial transfer" |
  "transfer, same type" | "transfer, other type"), seeds, n_seeds, n_dev, majority_rate (from the evaluation's
  confusion; None where it was not recorded), accuracy_mean, accuracy_low,
  accuracy_high, interval (how the intervals of the row were computed: "seeds x examples (two-level bootstrap)"
  where the evaluation recorded per-example outcomes and there are at least inference.MIN_BOOTSTRAP_SEEDS seeds,
  else "seeds (t)": a Student-t interval over seeds, None below 2 seeds), and against the plain arm of the same
  model and task, paired by seed (and by example where recorded; None for the plain arm itself, or when the plain
  arm is absent or has other seeds): vs_plain_mean / vs_plain_low / vs_plain_high = arm - plain accuracy,
  vs_plain_mde (the smallest difference detectable at 80 % power: _paired), vs_plain_p (two-sided per-example
  paired sign-flip test, None without per-example outcomes) and vs_plain_p_holm
  (Holm over every vs-plain p of the table: one family); on clean rows also clean_cost_mean / _low / _high = plain
  - arm (what robustness cost on clean data; > 0 is a loss). The anchored arm's rows also carry the decisive
  contrast against its control, anchored - perturbed (the anchor term alone: both arms see the same perturbed
  batches): vs_perturbed_mean / _low / _high / _mde / _p / _p_holm (Holm over the anchored rows: one family); None on
  the other arms' rows.
"manipulation": one row per (model, task, arm, evaluation step) of the arms trained on perturbed batches: the
  loss's terms during training (manipulation_rows' docstring).
"predictivity": one row per (model, task, arm, adversarial set, and the perturbed clean dev where measured): the
  clean skill neurons' Pred per arm
  (predictivity_rows' docstring defines its fields, and the selection caveat of its clean column).
"patching": one row per (model, clean, adversarial, patch source, k > 0):
  seeds, n_seeds, n_examples, adversarial_mean (unpatched), original_mean (None for source "mean"),
  skill_mean / _low / _high (accuracy with the top-k % skill neurons patched), random_mean (over draws and seeds),
  skill_recovery_mean = skill - unpatched, random_recovery_mean = random - unpatched, skill_minus_random_mean /
  _low / _high (paired by seed and, where the file has per-example outcomes, by example; random averaged over draws
  first), skill_minus_random_mde, skill_minus_random_p (one-sided per-example paired sign-flip test of skill >
  random; None without per-example outcomes), skill_minus_random_p_holm (Holm over the levels of one clean -> adversarial pair and
  source: one family), interval (as in "arms"), fraction_recovered = skill recovery / (original - unpatched) when
  that gap is > 0 (source "original"), else None.

Intervals: with per-example outcomes and at least inference.MIN_BOOTSTRAP_SEEDS seeds, the percentile interval of a
two-level bootstrap over seeds and examples (inference.two_level_bootstrap: every seed is scored on the same rows,
so an interval over seeds alone leaves out the rows' sampling error); otherwise mean +- t(confidence, n - 1) * sd /
sqrt(n) over seeds. The null of a paired interval is "no difference between the two arms (or skill and random
patches) on average": an interval that excludes 0 rejects it at 1 - confidence. The per-example tests' null: for
every example the two conditions are exchangeable (the sign of its seed-mean difference is a fair coin); unit of
replication: the example (the seeds averaged first).
"""
from __future__ import annotations

import json
import math
import pathlib
import zipfile
from typing import Callable, Optional, Sequence

import numpy as np
from scipy import stats

from skillneurons_jax import io, layout
from skillneurons_jax.analysis import inference, results, robustness, specificity
from skillneurons_jax.data import tasks as task_table
from skillneurons_jax.neurons import suppression


def interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, Optional[float], Optional[float]]:
    """(mean, low, high) of `values` (one per seed); low/high None for fewer than 2 values."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        raise ValueError("no values")
    mean = float(x.mean())
    if x.size < 2:
        return mean, None, None
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def _read(path: pathlib.Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: byte {err.start}: not UTF-8 text ({err.reason})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: line 1: expected a JSON object")
    return doc


def _need(doc: dict, path, *fields):
    missing = [f for f in fields if f not in doc]
    if missing:
        raise ValueError(f"{path}: missing fields {missing} (found {sorted(doc)})")


def _stats(prefix: str, values, confidence) -> dict:
    mean, low, high = interval(values, confidence)
    return {f"{prefix}_mean": mean, f"{prefix}_low": low, f"{prefix}_high": high}


def _paired(prefix: str, diff: Optional[np.ndarray], by_seed: np.ndarray, confidence: float,
            alternative: str = "two-sided") -> dict:
    """prefix_mean / _low / _high / _p / _mde of a paired difference: diff [S, E] per seed and example (None where
    not recorded: a t interval over the per-seed differences by_seed [S], no p). p: the per-example sign-flip test
    (robustness.sign_flip_test) of the seed-mean differences, two-sided or "greater" (one-sided, > 0). mde: the
    smallest difference found at 80 % power at the interval's standard error (inference.mde; the bootstrap's se,
    normal quantiles, or the t se over seeds with its df; None below 2 seeds)."""
    if diff is None:
        se, df = inference.t_se(by_seed)
        return {**_stats(prefix, by_seed, confidence), f"{prefix}_p": None,
                f"{prefix}_mde": inference.mde(se, confidence, df)}
    if diff.shape[0] >= inference.MIN_BOOTSTRAP_SEEDS:
        boot = inference.two_level_bootstrap(diff, confidence=confidence)
        out = {f"{prefix}_mean": boot.estimate, f"{prefix}_low": boot.interval[0], f"{prefix}_high": boot.interval[1],
               f"{prefix}_mde": inference.mde(boot.se, confidence)}
    else:
        se, df = inference.t_se(diff.mean(axis=1))
        out = {**_stats(prefix, diff.mean(axis=1), confidence), f"{prefix}_mde": inference.mde(se, confidence, df)}
    per_example = diff.mean(axis=0)
    greater = robustness.sign_flip_test(per_example)[0]
    p = greater if alternative == "greater" else min(1.0, 2 * min(greater, robustness.sign_flip_test(-per_example)[0]))
    return {**out, f"{prefix}_p": float(p)}


def _interval_basis(per_example: Optional[np.ndarray]) -> str:
    return ("seeds x examples (two-level bootstrap)"
            if per_example is not None and per_example.shape[0] >= inference.MIN_BOOTSTRAP_SEEDS else "seeds (t)")


def _outcomes(path, name: str, row: dict, n_seeds: int) -> Optional[np.ndarray]:
    """A scored set's per-example outcomes correct [S, E] (robust.tuning.evaluate_arm), checked against its
    accuracies; None when the evaluation did not record them."""
    if row.get("correct") is None:
        return None
    try:
        correct = np.asarray(row["correct"], np.float64)
    except (TypeError, ValueError):
        correct = None
    if correct is None or correct.ndim != 2 or correct.shape != (n_seeds, int(row["n_dev"])):
        raise ValueError(f"{path} ({name}): 'correct' must be [{n_seeds} seeds, {row['n_dev']} examples] of 0/1, "
                         f"got shape {None if correct is None else correct.shape}")
    if not np.isin(correct, (0, 1)).all():
        raise ValueError(f"{path} ({name}): 'correct' must hold 0/1 per example")
    if np.abs(correct.mean(axis=1) - np.asarray(row["accuracy"], np.float64)).max() > 1e-6:
        raise ValueError(f"{path} ({name}): 'correct' does not average to 'accuracy' (a corrupt file)")
    return correct


def _same_rows(row: dict, other: dict) -> bool:
    """Whether two arms' per-example outcomes are of the same rows (same labels in the same order)."""
    return row.get("labels") is not None and row.get("labels") == other.get("labels")


def _holm(rows: list[dict], field: str, where: Callable[[dict], bool]) -> None:
    """rows[field + "_holm"]: Holm over the rows `where` holds (one family; None where p is None)."""
    family = [row for row in rows if where(row)]
    for row, p in zip(family, inference.holm([row.get(field) for row in family])):
        row[f"{field}_holm"] = p
    for row in rows:
        row.setdefault(f"{field}_holm", None)


def _arm_files(workdir: pathlib.Path) -> list[pathlib.Path]:
    root = workdir / layout.ROBUST_DIR
    return sorted(p for p in root.glob(f"*/{layout.ROBUST_EVAL_DIR}/*/*.json") if not p.name.endswith(".meta.json"))


def arm_rows(workdir, confidence: float = 0.95) -> list[dict]:
    """The "arms" table (module docstring)."""
    docs = {}
    for path in _arm_files(pathlib.Path(workdir)):
        doc = _read(path)
        _need(doc, path, "model", "task", "arm", "seeds", "clean", "adversarial")
        for name, row in [("clean", doc["clean"]), *doc["adversarial"].items(), *doc.get("transfer", {}).items()]:
            _need(row, f"{path} ({name})", "accuracy", "n_dev")
            if len(row["accuracy"]) != len(doc["seeds"]):
                raise ValueError(f"{path} ({name}): {len(row['accuracy'])} accuracies for {len(doc['seeds'])} seeds")
            if "confusion" in row:
                try:
                    shape = np.asarray(row["confusion"], np.float64).shape
                except (TypeError, ValueError):
                    shape = None
                if shape is None or len(shape) != 3 or shape[1] != shape[2] or shape[0] != len(doc["seeds"]):
                    raise ValueError(f"{path} ({name}): 'confusion' must be one [classes, classes] matrix per seed, "
                                     f"got shape {shape}")
            row["_correct"] = _outcomes(path, name, row, len(doc["seeds"]))
        docs[(doc["model"], doc["task"], doc["arm"])] = doc
    order = {"plain": 0, "perturbed": 1, "anchored": 2}
    rows = []
    def reference(doc, other_arm, split, target):
        """The row of `other_arm` (same model and task, same seeds) for one scored set; None when absent."""
        other = docs.get((doc["model"], doc["task"], other_arm))
        if other is None or other is doc or other["seeds"] != doc["seeds"]:
            return None
        return other["clean"] if split == "clean" else {**other["adversarial"], **other.get("transfer", {})}.get(target)

    def contrast(prefix, row, base):
        """arm - base on one scored set, paired by seed and (both recorded, same rows) by example."""
        by_seed = np.asarray(row["accuracy"], np.float64) - np.asarray(base["accuracy"], np.float64)
        both = row["_correct"] is not None and base["_correct"] is not None and _same_rows(row, base)
        return _paired(prefix, row["_correct"] - base["_correct"] if both else None, by_seed, confidence)

    empty = {f"{prefix}_{field}": None for prefix in ("vs_plain", "vs_perturbed")
             for field in ("mean", "low", "high", "p", "mde")}
    for (model, task, arm), doc in sorted(docs.items(), key=lambda kv: (kv[0][0], kv[0][1], order.get(kv[0][2], 9),
                                                                          kv[0][2])):
        others = {**doc["adversarial"], **doc.get("transfer", {})}
        scored = [("clean", task, doc["clean"])] + [(row.get("kind", "adversarial"), name, row)
                                                     for name, row in sorted(others.items())]
        for split, target, row in scored:
            correct = row["_correct"]
            accuracy = (_paired("accuracy", correct, np.asarray(row["accuracy"], np.float64), confidence)
                        if correct is not None else _stats("accuracy", row["accuracy"], confidence))
            accuracy.pop("accuracy_p", None)
            accuracy.pop("accuracy_mde", None)
            out = {"model": model, "task": task, "arm": arm, "target": target, "split": split,
                   "seeds": list(doc["seeds"]), "n_seeds": len(doc["seeds"]), "n_dev": int(row["n_dev"]),
                   "majority_rate": _majority_rate(row.get("confusion")), **accuracy,
                   "interval": _interval_basis(correct), **empty}
            base = reference(doc, "plain", split, target)
            if base is not None:
                out.update(contrast("vs_plain", row, base))
            control = reference(doc, "perturbed", split, target) if arm == "anchored" else None
            if control is not None:
                out.update(contrast("vs_perturbed", row, control))
            if split == "clean":
                negated = {"mean": "mean", "low": "high", "high": "low"}       # plain - arm: the bounds swap
                out.update({f"clean_cost_{field}": None if out[f"vs_plain_{source}"] is None
                            else -out[f"vs_plain_{source}"] for field, source in negated.items()})
            rows.append(out)
    _holm(rows, "vs_plain_p", lambda row: row["vs_plain_p"] is not None)
    _holm(rows, "vs_perturbed_p", lambda row: row["vs_perturbed_p"] is not None)
    return rows


MANIPULATION_TERMS = ("ce", "perturbed_ce", "anchor")


def manipulation_rows(workdir) -> list[dict]:
    """The manipulation check: what the anchor term did during training. One row per (model, task, arm, step) of
    the arms trained on perturbed batches (perturbed, anchored) whose tuning logs record the loss's terms (each
    evaluation row of robust/<arm>/prompts/<model>/<task>/seed_<s>/metrics.jsonl: train_ce, train_perturbed_ce,
    train_anchor = each term's mean over the steps since the previous evaluation; robust.anchor.make_loss: the
    perturbed control measures the anchored arm's term without training on it). Fields: model, task, arm, step,
    seeds, n_seeds, strength, ce_mean, perturbed_ce_mean, anchor_mean (the unweighted term, mean over seeds),
    weighted_anchor_mean (strength x term: its share of the anchored arm's loss), dev_balanced_accuracy_mean (the
    checkpoint-selection rows'). The check: the anchored arm's term should fall below the control's."""
    workdir = pathlib.Path(workdir)
    rows = []
    for path in _arm_files(workdir):
        doc = _read(path)
        _need(doc, path, "model", "task", "arm", "seeds")
        if doc["arm"] == "plain":
            continue
        by_step: dict[int, list[dict]] = {}
        for seed in doc["seeds"]:
            log_path = layout.robust_metrics_path(workdir, doc["model"], doc["task"], doc["arm"], int(seed))
            if not log_path.exists():
                continue
            for row in results.load_jsonl(log_path, what="tuning metrics"):
                if all(f"train_{term}" in row for term in MANIPULATION_TERMS) and "step" in row:
                    by_step.setdefault(int(row["step"]), []).append(row)
        strength = float((doc.get("anchor") or {}).get("strength") or 0.0)
        for step, group in sorted(by_step.items()):
            mean = {term: float(np.mean([float(r[f"train_{term}"]) for r in group])) for term in MANIPULATION_TERMS}
            balanced = [float(r["dev_balanced_accuracy"]) for r in group if r.get("dev_balanced_accuracy") is not None]
            rows.append({"model": doc["model"], "task": doc["task"], "arm": doc["arm"], "step": step,
                         "seeds": sorted(int(r["seed"]) for r in group if "seed" in r), "n_seeds": len(group),
                         "strength": strength, **{f"{term}_mean": value for term, value in mean.items()},
                         "weighted_anchor_mean": strength * mean["anchor"],
                         "dev_balanced_accuracy_mean": float(np.mean(balanced)) if balanced else None})
    order = {"perturbed": 0, "anchored": 1}
    return sorted(rows, key=lambda r: (r["model"], r["task"], r["step"], order.get(r["arm"], 9), r["arm"]))


def _majority_rate(confusion) -> Optional[float]:
    """The share of the most frequent label in a scored set, from its confusion [S, C, C] (rows: gold labels; the
    same rows for every seed); None when the evaluation did not record it (files of commits before fd8942a)."""
    if confusion is None:
        return None
    counts = np.asarray(confusion, np.float64)[0].sum(axis=1)
    return float(counts.max() / counts.sum()) if counts.sum() > 0 else None


def patching_rows(workdir, confidence: float = 0.95) -> list[dict]:
    """The "patching" table (module docstring)."""
    rows = []
    root = pathlib.Path(workdir) / layout.PATCHING_DIR
    for path in sorted(p for p in root.glob("*/*.json") if not p.name.endswith(".meta.json")):
        doc = _read(path)
        _need(doc, path, "model", "source", "target", "seeds", "ks", "skill", "random", "adversarial_accuracy",
              "original_accuracy", "patch_source")
        adversarial = np.asarray(doc["adversarial_accuracy"], np.float64)
        # per-example outcomes (the suppression format's optional fields, checked against the accuracies)
        per_example = (results.read_suppression(path, doc["model"], doc["source"], doc["target"])
                       if doc.get("skill_correct") is not None else None)
        level_of = {} if per_example is None else {float(k): i for i, k in enumerate(per_example.ks)}
        original = doc["original_accuracy"]
        original = None if any(a is None for a in original) else np.asarray(original, np.float64)
        for k in doc["ks"]:
            if float(k) == 0:
                continue
            key = str(k)
            if key not in doc["skill"] or key not in doc["random"]:
                raise ValueError(f"{path}: level {key} is in ks but not in skill / random")
            skill = np.asarray(doc["skill"][key], np.float64)                     # [S]
            random = np.asarray(doc["random"][key], np.float64).mean(axis=0)      # [D, S] -> [S]
            gap = None if original is None else float(original.mean() - adversarial.mean())
            recovery = float(skill.mean() - adversarial.mean())
            skill_correct = diff = None
            if per_example is not None:
                i = level_of[float(k)]
                skill_correct = per_example.skill_correct[i].astype(np.float64)                  # [S, E]
                diff = skill_correct - per_example.random_correct[i].astype(np.float64).mean(axis=0)
            skill_stats = _paired("skill", skill_correct, skill, confidence)
            skill_stats.pop("skill_p")
            skill_stats.pop("skill_mde")
            rows.append({"model": doc["model"], "clean": doc["source"], "adversarial": doc["target"],
                         "source": doc["patch_source"], "k": k, "seeds": list(doc["seeds"]),
                         "n_seeds": len(doc["seeds"]), "n_examples": doc.get("n_examples"),
                         "adversarial_mean": float(adversarial.mean()),
                         "original_mean": None if original is None else float(original.mean()),
                         **skill_stats, "random_mean": float(random.mean()),
                         "skill_recovery_mean": recovery,
                         "random_recovery_mean": float(random.mean() - adversarial.mean()),
                         **_paired("skill_minus_random", diff, skill - random, confidence, "greater"),
                         "interval": _interval_basis(skill_correct),
                         "fraction_recovered": recovery / gap if gap is not None and gap > 0 else None})
    for family in {(r["model"], r["clean"], r["adversarial"], r["source"]) for r in rows}:
        _holm(rows, "skill_minus_random_p",
              lambda r, family=family: (r["model"], r["clean"], r["adversarial"], r["source"]) == family
              and r["skill_minus_random_p"] is not None)
    return rows


def _predictivity_per_seed(path: pathlib.Path) -> tuple[np.ndarray, list[int], dict]:
    """(pred_per_seed [S, L, N], seeds, sidecar) of a predictivity npz; ValueError naming the file."""
    side = _read(io.sidecar_path(path)) if io.sidecar_path(path).exists() else {}
    try:
        with np.load(path, allow_pickle=False) as z:
            if "pred_per_seed" not in z.files:
                raise ValueError(f"{path}: no pred_per_seed array (it has {sorted(z.files)})")
            per_seed = np.asarray(z["pred_per_seed"], np.float64)
    except (OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable npz ({err})") from None
    seeds = [int(x) for x in side.get("seeds", range(per_seed.shape[0]))]
    if per_seed.ndim != 3 or per_seed.shape[0] != len(seeds):
        raise ValueError(f"{path}: pred_per_seed has shape {per_seed.shape}, expected [{len(seeds)} seeds, L, N]")
    return per_seed, seeds, side


def _optional_arrays(path: pathlib.Path, names: tuple) -> dict:
    """The arrays `names` a predictivity npz holds (the stage's label-permutation null and matched-n Pred)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {n: np.asarray(z[n], np.float64) for n in names if n in z.files}
    except (OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable npz ({err})") from None


def matched_clean(clean_path: pathlib.Path, clean: np.ndarray, clean_n, adversarial_n):
    """(clean Pred per seed [S, L, N] at the adversarial set's n, basis text): Pred is compared across sets only at
    matched n (its floor and its max rise as n falls). Equal or unrecorded n: `clean` itself. A larger clean set:
    its matched_pred_per_seed at that n when the stage computed it (stats option subsample_sizes), else None."""
    if clean_n is None or adversarial_n is None:
        return clean, "n not recorded: compared as they are"
    if int(clean_n) == int(adversarial_n):
        return clean, f"same n = {int(clean_n)}"
    extra = _optional_arrays(clean_path, ("matched_n", "matched_pred_per_seed"))
    sizes = extra.get("matched_n", np.zeros(0)).astype(int).tolist()
    if int(adversarial_n) in sizes:
        return (extra["matched_pred_per_seed"][sizes.index(int(adversarial_n))],
                f"clean subsampled from {int(clean_n)} to n = {int(adversarial_n)}")
    return None, (f"not compared: n = {int(clean_n)} clean vs {int(adversarial_n)} adversarial and no clean Pred at "
                  f"n = {int(adversarial_n)} (stats option subsample_sizes)")


def _floor(path: pathlib.Path) -> Optional[float]:
    """The label-permutation floor of Pred (mean over layers and permutations) of a predictivity npz, or None."""
    null = _optional_arrays(path, ("null_pred_layer_mean",)).get("null_pred_layer_mean")
    return None if null is None else float(null.mean())


def _clean_skill_mask(workdir: pathlib.Path, model: str, task: str, skill_neurons: dict) -> np.ndarray:
    """bool [L, N]: the clean task's skill neurons, the anchor's (robust.anchor: the top robust.anchor.top_percent
    % by the main study's predictivity of the plain prompts, per layer or global by its scope)."""
    path = layout.predictivity_path(workdir, model, task)
    try:
        with np.load(path, allow_pickle=False) as z:
            pred = np.asarray(z["pred"], np.float64)
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: the clean predictivity (its pred array) is not readable ({err})") from None
    mask = suppression.skill_mask(pred, float(skill_neurons["top_percent"]), str(skill_neurons["scope"]))
    if not mask.any():
        raise ValueError(f"{path}: the top {skill_neurons['top_percent']}% ({skill_neurons['scope']}) of "
                         f"{pred.size} neurons is no neuron")
    return mask


def _layer_mean_spearman(pred_a: np.ndarray, pred_b: np.ndarray) -> Optional[float]:
    """analysis.specificity's correlation of two predictivities [L, N]: Spearman per layer, averaged over the
    layers where it is defined; None when none is."""
    rho = specificity.layer_spearman(pred_a, pred_b)
    return None if np.all(np.isnan(rho)) else float(np.nanmean(rho))


# The "kind" of the predictivity table's row of a perturbed copy of the clean task's dev rows
# (robust_perturbed_predictivity): the manipulation check on perturbations of the training kind, held out.
PERTURBED_DEV_KIND = "perturbed dev (held-out, training kind)"


def _perturbed_dev(workdir: pathlib.Path, doc: dict, eval_path, seeds, shape):
    """(pred_per_seed [S, L, N], path, sidecar) of the arm's robust_perturbed_predictivity result, or None when
    the stage has not run; ValueError naming the file when it is not this arm's clean task's computation."""
    path = layout.perturbed_predictivity_path(layout.robust_arm_dir(workdir, doc["arm"]), doc["model"], doc["task"])
    if not path.exists():
        return None
    values, set_seeds, side = _predictivity_per_seed(path)
    if side.get("prompt_task") != doc["task"] or not isinstance(side.get("dev_transform"), dict):
        raise ValueError(f"{path}: not a perturbed dev of {doc['task']!r} under its prompts (sidecar prompt_task "
                         f"{side.get('prompt_task')!r}, dev_transform {side.get('dev_transform')!r}; {eval_path})")
    if set_seeds != seeds or values.shape != shape:
        raise ValueError(f"{path}: seeds {set_seeds} and shape {values.shape} differ from the clean task's "
                         f"({seeds}, {shape})")
    return values, path, side


def predictivity_rows(workdir, confidence: float = 0.95) -> list[dict]:
    """The "predictivity" table: the clean task's skill neurons on adversarial data, per arm (issue 17, item 3).

    One row per (model, clean task, arm, adversarial set) with a robust_predictivity output
    (robust/<arm>/predictivity/<model>/<set>.npz and the clean task's beside it: each computed with the arm's
    own prompts and the clean task's TRAIN baseline). The neurons are the clean task's skill neurons as the anchor
    chose them (top robust.anchor.top_percent % of the main study's clean predictivity, its scope; the eval file's
    "skill_neurons" records both, the same for every arm). Per seed, the mean Pred (eq. 5) of those neurons on the
    clean dev and on the adversarial set; fields: model, task, arm, adversarial, kind, seeds, n_seeds, n_neurons,
    top_percent, scope, clean_pred_mean / _low / _high, adversarial_pred_mean / _low / _high, drop_mean / _low /
    _high (clean - adversarial, paired by seed, at matched n: `matched_clean`; None when the n differ and no
    matched-n clean Pred exists), drop_basis (how n was matched), clean_n, adversarial_n, adversarial_all_mean
    (every neuron: what any neuron scores there), adversarial_floor (the label-permutation floor at the
    adversarial n, None without the stage's null),
    vs_plain_mean / _low / _high (the arm's adversarial Pred of those neurons - the plain arm's, paired by seed;
    None for the plain arm or without a plain arm of the same seeds), vs_perturbed_mean / _low / _high (the same
    against the perturbed control, for the anchored arm only: the anchor's own effect), perturbation (the
    perturbed dev's settings and seed, its sidecar's dev_transform; None for an adversarial set) and spearman
    (between the arm's seed-mean clean and adversarial Pred: Spearman per layer over its neurons, averaged over
    the layers, as analysis.specificity correlates datasets; the paper's AdvX-X correlation, per arm; None if no
    layer varies).
    Selection: the plain arm's clean Pred IS the statistic the neurons were chosen by (the same prompts and dev
    rows), so it is optimistic (regression to the mean) and its drop overstates what adversarial data cost; the
    other arms' clean Pred is less so. No arm's adversarial Pred was selected on: compare arms there (vs_plain).
    Besides the adversarial sets, a row of kind PERTURBED_DEV_KIND ("adversarial" = the clean task) where the arm's
    robust_perturbed_predictivity ran: the same neurons on a perturbed copy of the clean dev rows (the training
    kind of perturbation, held out: the neurons the anchor targets, where it should keep their Pred)."""
    workdir = pathlib.Path(workdir)
    per_arm, paths, transforms = {}, {}, {}
    for eval_path in _arm_files(workdir):
        doc = _read(eval_path)
        _need(doc, eval_path, "model", "task", "arm")
        clean_path = layout.predictivity_path(layout.robust_arm_dir(workdir, doc["arm"]), doc["model"], doc["task"])
        if not clean_path.exists():
            continue                                       # robust.predictivity off, or the stage has not run
        _need(doc, eval_path, "skill_neurons")
        clean, seeds, clean_side = _predictivity_per_seed(clean_path)
        mask = _clean_skill_mask(workdir, doc["model"], doc["task"], doc["skill_neurons"])
        if mask.shape != clean.shape[1:]:
            raise ValueError(f"{clean_path}: [L, N] = {clean.shape[1:]}, the clean predictivity's {mask.shape}")
        sets = {}
        for target in sorted(doc.get("adversarial", {})):      # the sets this arm was scored on, no stale file
            path = layout.predictivity_path(layout.robust_arm_dir(workdir, doc["arm"]), doc["model"], target)
            if not path.exists():
                raise ValueError(f"{path} is missing: {clean_path} exists, so the arm's robust_predictivity stage "
                                 f"ran for {doc['task']} but not for the adversarial set {target} ({eval_path})")
            values, set_seeds, side = _predictivity_per_seed(path)
            if side.get("prompt_task") != doc["task"]:
                raise ValueError(f"{path}: computed with the prompts of {side.get('prompt_task')!r}, not of "
                                 f"{doc['task']!r}")
            if set_seeds != seeds or values.shape != clean.shape:
                raise ValueError(f"{path}: seeds {set_seeds} and shape {values.shape} differ from the clean "
                                 f"task's {clean_path} ({seeds}, {clean.shape})")
            sets[target] = values
            paths[(doc["model"], doc["task"], doc["arm"], target)] = (clean_path, clean_side.get("n_dev"), path,
                                                                      side.get("n_dev"))
        perturbed = _perturbed_dev(workdir, doc, eval_path, seeds, clean.shape)
        if perturbed is not None:            # keyed by the clean task's name: never one of its adversarial sets
            values, path, side = perturbed
            sets[doc["task"]] = values
            key = (doc["model"], doc["task"], doc["arm"], doc["task"])
            paths[key] = (clean_path, clean_side.get("n_dev"), path, side.get("n_dev"))
            transforms[key] = side["dev_transform"]
        per_arm[(doc["model"], doc["task"], doc["arm"])] = (clean, seeds, mask, sets, doc["skill_neurons"])
    order = {"plain": 0, "perturbed": 1, "anchored": 2}
    rows = []
    for (model, task, arm), (clean, seeds, mask, sets, skill_neurons) in sorted(
            per_arm.items(), key=lambda kv: (kv[0][0], kv[0][1], order.get(kv[0][2], 9), kv[0][2])):
        plain = per_arm.get((model, task, "plain"))
        control = per_arm.get((model, task, "perturbed")) if arm == "anchored" else None
        clean_skill = clean[:, mask].mean(axis=1)                       # [S]
        # the adversarial sets by name, then the perturbed dev (keyed by the clean task)
        for target, values in sorted(sets.items(), key=lambda kv: (kv[0] == task, kv[0])):
            adversarial_skill = values[:, mask].mean(axis=1)            # [S]
            clean_path, clean_n, adversarial_path, adversarial_n = paths[(model, task, arm, target)]
            matched, basis = matched_clean(clean_path, clean, clean_n, adversarial_n)
            drop = (_stats("drop", matched[:, mask].mean(axis=1) - adversarial_skill, confidence)
                    if matched is not None else {"drop_mean": None, "drop_low": None, "drop_high": None})
            kind = PERTURBED_DEV_KIND if target == task else task_table.scored_kind(task, target)
            row = {"model": model, "task": task, "arm": arm, "adversarial": target,
                   "kind": kind, "seeds": seeds, "n_seeds": len(seeds),
                   "n_neurons": int(mask.sum()), "top_percent": float(skill_neurons["top_percent"]),
                   "scope": skill_neurons["scope"], **_stats("clean_pred", clean_skill, confidence),
                   **_stats("adversarial_pred", adversarial_skill, confidence),
                   **drop, "drop_basis": basis, "clean_n": clean_n, "adversarial_n": adversarial_n,
                   "adversarial_all_mean": float(values.mean()), "adversarial_floor": _floor(adversarial_path),
                   # per layer, then the mean over the layers where it is defined: the report's correlation
                   "spearman": _layer_mean_spearman(clean.mean(axis=0), values.mean(axis=0)),
                   "perturbation": transforms.get((model, task, arm, target))}
            for name, other in (("vs_plain", plain if arm != "plain" else None), ("vs_perturbed", control)):
                base = None
                if other is not None and other[1] == seeds and target in other[3]:
                    base = other[3][target][:, mask].mean(axis=1)
                if base is None:
                    row.update({f"{name}_mean": None, f"{name}_low": None, f"{name}_high": None})
                else:
                    row.update(_stats(name, adversarial_skill - base, confidence))
            rows.append(row)
    return rows


def robust_tables(workdir, confidence: float = 0.95) -> dict:
    """{"arms": arm_rows, "manipulation": manipulation_rows, "predictivity": predictivity_rows, "patching":
    patching_rows} of the outputs under `workdir` (empty lists when the study did not run). ValueError naming the
    file for a malformed output."""
    return {"arms": arm_rows(workdir, confidence), "manipulation": manipulation_rows(workdir),
            "predictivity": predictivity_rows(workdir, confidence), "patching": patching_rows(workdir, confidence)}
