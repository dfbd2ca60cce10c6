"""Learnability: the probes' results (stages.probe) as tables, the rule that calls a task "beyond this model",
and the document docs/LEARNABILITY.md (`write_document`).

The rule (`beyond_model`): a task is beyond this model when its probe reference's balanced accuracy on dev AND the
mean over seeds of its prompts' balanced accuracy on dev are both below 0.5 + NEAR_CHANCE_MARGIN. Such a task is
left out of the findings that need a learned prompt. A task whose probe is near chance but whose prompts are not
(or the reverse) stays in: a probe is a reference, not a ceiling (prompt tuning beat it on SST-2).
"""
from __future__ import annotations

import json
import pathlib
from typing import Mapping, Optional, Sequence

import numpy as np

from skillneurons_jax import io, layout

NEAR_CHANCE_MARGIN = 0.10
SPLITS = ("dev", "test")


def beyond_model(probe_balanced: Optional[float], prompt_balanced: Optional[float],
                 margin: float = NEAR_CHANCE_MARGIN) -> Optional[bool]:
    """True when both figures are below 0.5 + margin (binary tasks), False when either is not, None when either
    is unknown."""
    if probe_balanced is None or prompt_balanced is None:
        return None
    return probe_balanced < 0.5 + margin and prompt_balanced < 0.5 + margin


RULE_HEADER = ["model", "task", "split", "seeds", "n", "majority (%)", "prompt accuracy (%)",
               "prompt balanced acc (%)", "probe balanced acc [95 % CI]", "probe n", "beyond this model"]


def _pct(values) -> str:
    """Mean ± std over seeds (ddof = 1, the report's one convention; 0 for one seed) in percent."""
    v = np.atleast_1d(np.asarray(values, np.float64))
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return f"{100 * v.mean():.1f} ± {100 * sd:.1f}"


def rule_rows(entries: Sequence, probes: Mapping[tuple, Mapping], margin: float = NEAR_CHANCE_MARGIN,
              test_entries: Sequence = ()) -> tuple[list[list[str]], list[dict]]:
    """Table rows and summary records of the rule for Table 1's entries (analysis.robustness.AccuracyEntry: model,
    task, accuracy / balanced_accuracy [S], n_examples, majority_rate) whose (model, task) has a probe result in
    `probes`: one row per split, dev (the rule's) and, where `test_entries` (the held-out Table 1) has the task,
    test, each with the prompts' accuracy, balanced accuracy, majority rate and n beside the probe reference's
    balanced accuracy and interval on the same split."""
    rows, records = [], []
    tests = {(e.model, e.task): e for e in test_entries}
    for e in entries:
        result = probes.get((e.model, e.task))
        if result is None or e.task != e.prompt_task:
            continue
        prompt = None if e.balanced_accuracy is None else float(np.mean(e.balanced_accuracy))
        ref = result["probes"][result["reference"]]
        dev, test = ref.get("dev"), ref.get("test")
        verdict = beyond_model(None if dev is None else dev["balanced_accuracy"], prompt, margin)
        held = tests.get((e.model, e.task))
        for split, entry, probe_row in (("dev", e, dev), ("test", held, test)):
            if entry is None and probe_row is None:
                continue
            rows.append([e.model, e.task, split,
                         "-" if entry is None else str(len(np.atleast_1d(entry.accuracy))),
                         "-" if entry is None or entry.n_examples is None else str(entry.n_examples),
                         "-" if entry is None or entry.majority_rate is None else f"{100 * entry.majority_rate:.1f}",
                         "-" if entry is None else _pct(entry.accuracy),
                         "-" if entry is None or entry.balanced_accuracy is None else _pct(entry.balanced_accuracy),
                         _cell(probe_row)[0], _cell(probe_row)[1],
                         {True: "yes: left out of findings needing a learned prompt", False: "no",
                          None: "unknown"}[verdict] if split == "dev" else ""])
        test_prompt = None if held is None or held.balanced_accuracy is None else float(
            np.mean(held.balanced_accuracy))
        records.append({"model": e.model, "task": e.task, "prompt_balanced_accuracy": prompt,
                        "prompt_accuracy": float(np.mean(e.accuracy)), "majority_rate": e.majority_rate,
                        "n": e.n_examples, "prompt_balanced_accuracy_test": test_prompt,
                        "prompt_accuracy_test": None if held is None else float(np.mean(held.accuracy)),
                        "majority_rate_test": None if held is None else held.majority_rate,
                        "probe_reference": result["reference"], "probe_dev": dev, "probe_test": test,
                        "beyond_model": verdict, "margin": margin})
    return rows, records


def beyond_tasks(records: Sequence[Mapping]) -> dict[tuple[str, str], str]:
    """{(model, task): why} of the records (rule_rows) the rule calls beyond this model."""
    return {(r["model"], r["task"]): (f"probe dev balanced accuracy {r['probe_dev']['balanced_accuracy']:.3f} and "
                                      f"prompts' {r['prompt_balanced_accuracy']:.3f}, both below "
                                      f"{0.5 + r['margin']:.2f}")
            for r in records if r["beyond_model"]}


def load_probes(workdir, model: str) -> dict[str, dict]:
    """{task: probe result} of every WORKDIR/probe/<model>/<task>.json (sidecars left out)."""
    folder = layout.probe_path(workdir, model, "x").parent
    out = {}
    for path in sorted(folder.glob("*.json")):
        if path.name.endswith(".meta.json"):
            continue
        out[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return out


def reference_balanced(result: Mapping, split: str = "dev") -> Optional[float]:
    """The probe reference's balanced accuracy on `split` (None when the split was not scored)."""
    row = result["probes"][result["reference"]].get(split)
    return None if row is None else float(row["balanced_accuracy"])


def _cell(row: Optional[Mapping]) -> list[str]:
    if row is None:
        return ["-", "-", "-"]
    lo, hi = row["interval"]
    return [f"{row['balanced_accuracy']:.3f} [{lo:.3f}, {hi:.3f}]", str(row["n"]), f"{row['majority_rate']:.3f}"]


def reference_rows(probes: Mapping[str, Mapping]) -> list[list[str]]:
    rows = []
    for task, r in probes.items():
        ref = r["probes"][r["reference"]]
        rows.append([task, r["task_type"], r["reference"], str(r["train"]["rows_fitted"]),
                     *_cell(ref.get("dev")), *_cell(ref.get("test"))])
    return rows


def all_probe_rows(probes: Mapping[str, Mapping]) -> list[list[str]]:
    rows = []
    for task, r in probes.items():
        for name, p in r["probes"].items():
            rows.append([task, name, str(p["dim"]), f"{p['l2']:g}", f"{p['carve']:.3f}",
                         *[f"{p[s]['balanced_accuracy']:.3f}" if s in p else "-" for s in SPLITS]])
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def provenance(workdir, model: str, probes: Mapping[str, Mapping]) -> dict:
    """Commits, machines and times the probes' sidecars record."""
    commits, machines, created = set(), set(), []
    for task in probes:
        meta_path = io.sidecar_path(layout.probe_path(workdir, model, task))
        if meta_path.exists():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            commits.add(str(meta.get("git_commit")))
            m = meta.get("machine") or {}
            machines.add(f"{m.get('cpu')} ({m.get('vector_isa')}, {m.get('cores')} cores)")
            created.append(str(meta.get("created")))
    return {"commits": sorted(commits), "machines": sorted(machines),
            "created": [min(created), max(created)] if created else []}


def document(workdir, model: str, *, command: str = "", notes: Sequence[str] = ()) -> str:
    """The learnability document's markdown for every probe of `model` under `workdir`."""
    probes = load_probes(workdir, model)
    prov = provenance(workdir, model, probes)
    settings = next(iter(probes.values()))["settings"] if probes else {}
    parts = [
        "# Learnability: linear probes on the frozen model's features",
        "",
        "Generated by `skillneurons_jax.analysis.learnability.write_document` from the probe results "
        "(`WORKDIR/probe/<model>/<task>.json`, stage `probe`); do not edit by hand.",
        "",
        f"- Model: `{model}`; command: `{command}`" if command else f"- Model: `{model}`",
        f"- Commits: {', '.join(prov['commits']) or '-'}; machines: {'; '.join(prov['machines']) or '-'}; "
        f"results written {' to '.join(prov['created']) or '-'} (UTC)",
        f"- Settings: {json.dumps(settings, sort_keys=True)}",
        *[f"- {n}" for n in notes],
        "",
        "Method (stages.probe, analysis.linear_probe): L2-regularised logistic regression with class-balanced "
        "weights on standardised features, its strength chosen from "
        "1e-4..1 on a random 20 % carve of the fitted train rows (by balanced accuracy), refitted on all of them; "
        "features: `mean` = final hidden states averaged over the real tokens, `slot0` = position 0 ([CLS]); "
        "`joint` = the task's template (both texts in one sequence, as the prompt sees them, no prompt); "
        "`separate` = each text alone, [u, v, |u-v|, u*v] (pair tasks, sentence encoders). The reference is "
        "the joint feature with the better train-carve score (never chosen on dev or test). Intervals: 95 % "
        "percentile bootstrap over examples (2000 resamples; the probe held fixed). Majority: the rate of always "
        "answering the split's most frequent label.",
        "",
        "## Reference probe per task",
        "",
        _table(["task", "type", "reference", "train rows", "dev balanced acc [95 % CI]", "dev n", "dev majority",
                "test balanced acc [95 % CI]", "test n", "test majority"], reference_rows(probes)),
        "",
        "## Every probe (balanced accuracy)",
        "",
        _table(["task", "probe", "dim", "L2", "train carve", "dev", "test"], all_probe_rows(probes)),
        "",
        "## The rule",
        "",
        f"A task is *beyond this model* when its reference probe's dev balanced accuracy and its prompts' mean dev "
        f"balanced accuracy are both below {0.5 + NEAR_CHANCE_MARGIN:.2f} (chance + {NEAR_CHANCE_MARGIN:.2f}); it "
        "is then left out of the findings that need a learned prompt (`analysis.learnability.beyond_model`). "
        "Tasks whose probe is below that line on its own: "
        + (", ".join(t for t, r in probes.items() if reference_balanced(r) is not None
                     and reference_balanced(r) < 0.5 + NEAR_CHANCE_MARGIN) or "none") + ".",
        ""]
    return "\n".join(parts)


def write_document(path, workdir, model: str, *, command: str = "", notes: Sequence[str] = ()) -> pathlib.Path:
    return io.atomic_write_text(path, document(workdir, model, command=command, notes=notes))


def learning_curves(runs: Mapping[str, pathlib.Path], model: str, task: str) -> str:
    """Markdown: for each named tuning workdir, every evaluation's selection-rows balanced accuracy and accuracy
    per seed (prompts/<model>/<task>/seed_<s>/metrics.jsonl), the best step, and the final prompts' scores on the
    measurement rows and the test split when `eval_dev.json` / `eval_test.json` (launch.evaluate --output) lie in
    the workdir."""
    lines = []
    for name, workdir in runs.items():
        folder = layout.task_prompts_dir(workdir, model, task)
        seeds = sorted(folder.glob(f"{layout.SEED_DIR_PREFIX}*"), key=lambda p: int(p.name.split("_")[-1]))
        lines += [f"### {name}", "", "| seed | step | balanced acc (select rows) | acc | train loss | best step |",
                  "|---|---|---|---|---|---|"]
        for seed_dir in seeds:
            path = seed_dir / layout.METRICS_FILE
            if not path.exists():
                continue
            for line in path.read_text(encoding="utf-8").splitlines():
                r = json.loads(line)
                loss = r.get("train_loss")
                lines.append(f"| {r['seed']} | {r['step']} | {r.get('dev_balanced_accuracy', float('nan')):.3f} | "
                             f"{r['dev_accuracy']:.3f} | {'-' if loss is None else f'{loss:.3f}'} | "
                             f"{r['best_step']} |")
        for split in SPLITS:
            path = pathlib.Path(workdir) / f"eval_{split}.json"
            if path.exists():
                ev = json.loads(path.read_text(encoding="utf-8"))
                prompts = ev.get("prompts", [])
                balanced = [p["balanced_accuracy"] for p in prompts]
                lines += ["", f"Best prompts on the {'measurement rows of dev' if split == 'dev' else 'test split'}"
                          f" (n = {ev.get('examples')}, majority rate "
                          f"{prompts[0]['majority_rate'] if prompts else float('nan'):.3f}): accuracy "
                          f"{ev['accuracy']:.3f}, balanced accuracy {np.mean(balanced) if balanced else float('nan'):.3f}"
                          f" (per seed {', '.join(f'{b:.3f}' for b in balanced)})"]
        lines.append("")
    return "\n".join(lines)
