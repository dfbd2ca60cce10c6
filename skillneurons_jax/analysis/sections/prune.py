"""Skill-neuron pruning (Wang et al. 2022, section 6.1): the pruned model's accuracy with the same prompt against the
unpruned model and against models keeping as many random neurons per layer, one row per task (stage prune), and a
figure; where the stage continued tuning the prompts on the pruned models (continue_steps), a second table with
the accuracies after it beside those before. Intervals are t intervals over prompt seeds (the unit of
replication), of the per-seed difference (random draws averaged per seed); null: no difference; one comparison per
task and row, no multiplicity correction."""
from __future__ import annotations

import json

import numpy as np

from skillneurons_jax import layout
from skillneurons_jax.analysis import figures, robustness
from skillneurons_jax.analysis.report_context import ReportContext, format_percent

KEYS = ("model", "task", "seeds", "keep_percent", "layers", "intermediate_sizes", "unpruned", "pruned", "random",
        "n_dev", "majority_rate", "eval_seconds")


def load(workdir, model: str, task: str) -> dict:
    """The prune stage's result of (model, task); ValueError naming the file and field when malformed."""
    path = layout.prune_path(workdir, model, task)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a JSON result ({error})") from None
    missing = [k for k in KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(f"{path}: field(s) {missing} missing")
    return data


def _interval_text(a, b, confidence: float) -> str:
    """mean(b - a) over seeds with its t interval: a [S], b [D, S]."""
    interval, units = robustness.difference_interval(np.asarray(a, float), np.asarray(b, float), confidence)
    mean = float(np.mean(np.mean(b, 0) - np.asarray(a)))
    if interval is None:
        return f"{100 * mean:+.1f} (no interval: {units})"
    return f"{100 * mean:+.1f} [{100 * interval[0]:+.1f}, {100 * interval[1]:+.1f}] ({units})"


def _arms(row: dict) -> dict:
    """Accuracy per seed of each arm of a result (random draws averaged per seed); the continued arms when run."""
    arms = {"unpruned": np.asarray(row["unpruned"]["accuracy"]), "pruned": np.asarray(row["pruned"]["accuracy"])}
    if row["random"]:
        arms["random"] = np.mean([r["accuracy"] for r in row["random"]], axis=0)
    continued = row.get("continued")
    if continued:
        arms["pruned, tuned on"] = np.asarray(continued["pruned"]["accuracy"])
        if continued["random"]:
            arms["random, tuned on"] = np.mean([r["accuracy"] for r in continued["random"]], axis=0)
    return arms


def draw(rows: list[dict], out_path, dpi: int):
    """Grouped bars per task: unpruned, pruned (skill neurons kept), random neurons kept (and both after continued
    tuning, where run); a dot per seed (draws averaged) and the dev majority rate as a dashed line."""
    fig = figures._figure((1.6 + 1.4 * len(rows), 3.2))
    ax = fig.add_subplot(1, 1, 1)
    colors = {"unpruned": "0.55", "pruned": "tab:blue", "random": "tab:orange", "pruned, tuned on": "navy",
              "random, tuned on": "darkorange"}
    for i, row in enumerate(rows):
        arms = _arms(row)
        many = len(arms) > 3                     # with the continued arms: narrower bars around the task's tick
        spacing, width = (0.81 / len(arms), 0.79 / len(arms) - 0.02) if many else (0.27, 0.25)
        for j, (arm, values) in enumerate(arms.items()):
            x = i + (j - (len(arms) - 1) / 2 if many else j - 1) * spacing
            ax.bar(x, values.mean(), width, color=colors[arm], label=arm if i == 0 else None)
            ax.plot(np.full(values.shape, x), values, "k.", ms=3)
        ax.hlines(row["majority_rate"], i - 0.45, i + 0.45, colors="k", linestyles="dashed", lw=0.8,
                  label="majority rate" if i == 0 else None)
    ax.set_xticks(range(len(rows)), [r["task"] for r in rows])
    ax.set_ylabel("dev accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(figures._wrap(f"Pruned to {rows[0]['keep_percent']:g} % of the FFN neurons in layers "
                               f"{', '.join(str(layer + 1) for layer in rows[0]['layers'])}", 1.6 + 1.4 * len(rows),
                               10), fontsize=10)
    return figures._save(fig, out_path, dpi)


def build(context: ReportContext, model: str) -> None:
    rows = []
    for task in context.tasks(model):
        if not layout.prune_path(context.workdir, model, task).exists():
            continue
        try:
            rows.append(load(context.workdir, model, task))
        except (OSError, ValueError) as error:
            context.problem(error)
    if not rows:
        return
    document, confidence = context.document, float(context.options["confidence"])
    document.h(3, "Skill-neuron pruning (section 6.1)")
    document.p("Each pruned layer keeps its top neurons by Pred (eq. 5); every removed neuron is replaced by its "
               "TRAIN mean over all real positions, folded into the FFN output bias (models.prune), and the model is "
               "evaluated on dev with the same prompts. Controls keep as many uniformly random neurons per layer. "
               f"Differences in points with {confidence:.0%} t intervals over seeds (null: no difference; no "
               "multiplicity correction). Dev-pass seconds are this run's evaluation of the same batches (a forward-"
               "speed measurement in one process: benchmarks/prune.py).")
    header = ["task", "seeds", "n dev", "majority", "kept / layer", "unpruned", "pruned", "random kept",
              "pruned - random", "pruned - unpruned", "dev pass s (unpruned / pruned per seed)"]
    table, summary = [], []
    for r in rows:
        seeds = len(r["seeds"])
        un, pr = np.asarray(r["unpruned"]["accuracy"]), np.asarray(r["pruned"]["accuracy"])
        rnd = np.asarray([d["accuracy"] for d in r["random"]]) if r["random"] else None
        kept = sorted({r["intermediate_sizes"][layer] for layer in r["layers"]})
        table.append((r["task"], str(seeds), str(r["n_dev"]), format_percent(r["majority_rate"]),
                      f"{'/'.join(map(str, kept))} of {max(r['intermediate_sizes'])} in {len(r['layers'])} layers",
                      format_percent(un.mean()), format_percent(pr.mean()),
                      "-" if rnd is None else format_percent(rnd.mean()),
                      "-" if rnd is None else _interval_text(rnd.mean(0), pr[None], confidence),
                      _interval_text(un, pr[None], confidence),
                      f"{r['eval_seconds']['unpruned']:.1f} / {r['eval_seconds']['pruned'] / max(seeds, 1):.1f}"))
        summary.append({"task": r["task"], "seeds": r["seeds"], "n_dev": r["n_dev"], "majority_rate":
                        r["majority_rate"], "keep_percent": r["keep_percent"], "layers": r["layers"],
                        "unpruned": un.tolist(), "pruned": pr.tolist(),
                        "random": None if rnd is None else rnd.tolist()})
    document.table(header, table)
    _continued(context, rows, summary, confidence)
    context.summary.setdefault("prune", {})[model] = summary
    context.figure(draw, f"figures/prune_{model}.png", "Pruned vs unpruned vs random neurons kept (dev accuracy; "
                   "dots: seeds; dashed: majority rate)", rows)


def _continued(context: ReportContext, rows: list[dict], summary: list[dict], confidence: float) -> None:
    """The table after continued prompt tuning (rows whose stage ran it), beside the same prompts before it; its
    numbers join the summary rows (`continued`)."""
    tuned = [(r, row) for r, row in zip(rows, summary) if r.get("continued")]
    if not tuned:
        return
    first = tuned[0][0]["continued"]
    context.document.p(
        f"After continued prompt tuning: each seed's prompt tuned on for {first['steps']} updates on each pruned "
        "model (skill-kept and random-kept alike) with the task's own tuning recipe, the best prompt chosen by "
        f"{first['select_metric'].replace('_', ' ')} on the dev selection rows (n = {first['n_select']}; the "
        "starting prompt, step 0, a candidate), then measured on the same dev rows as above. The unpruned model "
        "keeps its prompt (no further tuning). Same intervals and null as above.")
    header = ["task", "seeds", "n dev", "majority", "unpruned", "pruned (before)", "pruned, tuned on",
              "random kept (before)", "random kept, tuned on", "tuned on: pruned - random",
              "tuned on: pruned - unpruned", "best step (pruned, per seed)"]
    table = []
    for r, row in tuned:
        c = r["continued"]
        un, before = np.asarray(r["unpruned"]["accuracy"]), np.asarray(r["pruned"]["accuracy"])
        after = np.asarray(c["pruned"]["accuracy"])
        rnd_before = np.asarray([d["accuracy"] for d in r["random"]]) if r["random"] else None
        rnd_after = np.asarray([d["accuracy"] for d in c["random"]]) if c["random"] else None
        table.append((r["task"], str(len(r["seeds"])), str(r["n_dev"]), format_percent(r["majority_rate"]),
                      format_percent(un.mean()), format_percent(before.mean()), format_percent(after.mean()),
                      "-" if rnd_before is None else format_percent(rnd_before.mean()),
                      "-" if rnd_after is None else format_percent(rnd_after.mean()),
                      "-" if rnd_after is None else _interval_text(rnd_after.mean(0), after[None], confidence),
                      _interval_text(un, after[None], confidence),
                      ", ".join(str(x) for x in c["best_step"]["pruned"])))
        row["continued"] = {"steps": c["steps"], "n_select": c["n_select"], "select_metric": c["select_metric"],
                            "pruned": after.tolist(), "random": None if rnd_after is None else rnd_after.tolist(),
                            "best_step": c["best_step"]}
    context.document.table(header, table)
