"""The neuron explorer: one self-contained HTML page (report/explorer.html) over the saved results.

    page = build_explorer(workdir, out_path)          # -> ExplorerPage(path, models, problems)
    data = explorer_data(workdir)                     # the JSON the page embeds (also for tests)

Per model the page draws a layer x neuron map of Pred (eq. 5) per task on a canvas; clicking a neuron (or searching
layer / neuron) shows its Pred and rank for every task, the rows of the suppression results whose skill-neuron
selection included it, whether each pruned model kept it (ranked by the source task's Pred with the file's scope; ties to the lower index, as
neurons.suppression.ranking), and, for the neurons the explorer stage recorded (stages/explorer.py: the top
neurons of each task), the first seed's activation distribution by label on each dev split against eq. 3's
threshold (the eq. 2 TRAIN baseline) and the dev texts that activate it most and least.

Reads   WORKDIR/predictivity/<model>/<task>.npz (pred), WORKDIR/[test/]suppression/<model>/*.json,
        WORKDIR/prune/<model>/<task>.json (kept or removed, when the prune stage ran) and
        WORKDIR/explorer/<model>/<clean>.npz (+ sidecar). Nothing here runs a model; absent or unreadable files
        are listed in `problems` (and on the page), never raised.
The data sit in the page as JSON (Pred as base64 little-endian float32, exact); no network, no server: the page
opens from the file system.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import json
import pathlib
from fractions import Fraction

import numpy as np

from skillneurons_jax import io, layout
from skillneurons_jax.analysis import results
from skillneurons_jax.analysis.explorer_page import PAGE_TEMPLATE

HISTOGRAM_BINS = 20
SPLITS = ("dev", "test")
EXPLORER_FIELDS = ("act", "labels", "threshold", "acc", "top", "bottom", "rows", "texts")


@dataclasses.dataclass
class ExplorerPage:
    path: pathlib.Path
    models: list[str]
    problems: list[str]         # files present but unreadable, or inconsistent, each starting with its path


def float32_base64(array) -> str:
    """The array as little-endian float32 bytes in base64 (what the page decodes into a Float32Array)."""
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def selection_count(total: int, percent) -> int:
    """floor(total * percent / 100) exactly: the neurons a level selects (neurons.suppression.count_for)."""
    return int(total * Fraction(str(float(percent))) // 100)


def histogram(act: np.ndarray, labels: np.ndarray, threshold: float, bins: int = HISTOGRAM_BINS) -> dict:
    """One neuron on one split: counts [2][bins] per label over shared edges [bins + 1] spanning the values and
    the threshold, and the fraction of each label above the threshold."""
    low, high = float(min(act.min(), threshold)), float(max(act.max(), threshold))
    if high <= low:
        high = low + 1e-6
    edges = np.linspace(low, high, bins + 1)
    counts = [np.histogram(act[labels == y], edges)[0].astype(int).tolist() for y in (0, 1)]
    above = [float(np.mean(act[labels == y] > threshold)) if np.any(labels == y) else None for y in (0, 1)]
    return {"edges": [float(e) for e in edges], "counts": counts, "above": above}


def _record(path: pathlib.Path, problems: list[str]) -> dict | None:
    """One explorer npz -> the page's record {seed, token, neurons, sets: {task: {...}}}, or None (listed)."""
    try:
        meta = json.loads(io.sidecar_path(path).read_text(encoding="utf-8"))
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: np.asarray(z[name]) for name in z.files}
        neurons, token = arrays["neurons"], arrays["token"]
        sets = {}
        for task in meta["tasks"]:
            a = {f: arrays[f"{f}__{task}"] for f in EXPLORER_FIELDS}
            texts = dict(zip((int(r) for r in a["rows"]), (str(t) for t in a["texts"])))
            per_neuron = []
            for k in range(len(neurons)):
                act = a["act"][:, k]

                def examples(rows):
                    return [{"row": int(r), "act": float(act[r]), "label": int(a["labels"][r]), "text": texts[int(r)]}
                            for r in rows]
                per_neuron.append({"threshold": float(a["threshold"][k]), "acc": float(a["acc"][k]),
                                   "hist": histogram(act, a["labels"], float(a["threshold"][k])),
                                   "top": examples(a["top"][k]), "bottom": examples(a["bottom"][k])})
            sets[task] = {"n_dev": int(a["act"].shape[0]),
                          "label_counts": np.bincount(a["labels"], minlength=2).astype(int).tolist(),
                          "neurons": per_neuron, "acc_check": (meta.get("acc_check") or {}).get(task)}
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        problems.append(f"{path}: unreadable explorer record ({type(error).__name__}: {error})")
        return None
    return {"clean": meta.get("task", path.stem), "seed": meta.get("seed"), "prompt_task": meta.get("prompt_task"),
            "neurons": neurons.astype(int).tolist(), "token": token.astype(int).tolist(), "sets": sets,
            "source": str(path)}


def _suppression_rows(workdir: pathlib.Path, model: str, preds: dict, problems: list[str]) -> list[dict]:
    """Every suppression file of the model (dev and held-out test) whose source has a Pred map: its levels, the
    neurons each level selects (count per layer, or in all for scope "global") and the mean accuracies."""
    rows = []
    for split in SPLITS:
        root = layout.split_root(workdir, split)
        for source, target in results.discover(root).suppression.get(model, []):
            if source not in preds:
                continue
            try:
                sup = results.load_suppression(root, model, source, target)
                raw = json.loads(sup.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                problems.append(str(error) if str(error).startswith(str(root)) else f"{root}: {error}")
                continue
            scope = raw.get("scope", "layer")
            layers, neurons = preds[source].shape
            total = neurons if scope == "layer" else layers * neurons
            rows.append({"source": source, "target": target, "split": split, "scope": scope,
                         "intervention": raw.get("intervention", "zero"),
                         "ks": [float(k) for k in sup.ks],
                         "counts": [selection_count(total, k) for k in sup.ks],
                         "skill": [float(np.mean(s)) for s in sup.skill],
                         "random": [float(np.mean(r)) for r in sup.random],
                         "seeds": int(sup.skill.shape[1]), "draws": int(sup.random.shape[1]),
                         "file": str(sup.path.relative_to(workdir))})
    return rows


def _mean(values) -> float | None:
    flat = np.asarray(values, float).ravel()
    return float(flat.mean()) if flat.size else None


def _pruning_rows(workdir: pathlib.Path, model: str, preds: dict, problems: list[str]) -> list[dict]:
    """Every pruning result of the model (stage prune: prune/<model>/<task>.json) whose task has a Pred map: the
    pruned layers, the neurons kept per layer (the top ones by the task's Pred, ties to the lower index) and the
    mean accuracies of the unpruned, pruned and random-kept models."""
    rows = []
    folder = layout.prune_path(workdir, model, "x").parent
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith(".") or path.name.endswith(".meta.json") or path.stem not in preds:
            continue
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
            sizes = [int(n) for n in obj["intermediate_sizes"]]
            if len(sizes) != preds[path.stem].shape[0]:
                raise ValueError(f"intermediate_sizes has {len(sizes)} layers, the model {preds[path.stem].shape[0]}")
            rows.append({"task": path.stem, "keep_percent": float(obj["keep_percent"]),
                         "layers": [int(x) for x in obj["layers"]], "kept": sizes,
                         "unpruned": _mean(obj["unpruned"]["accuracy"]), "pruned": _mean(obj["pruned"]["accuracy"]),
                         "random": _mean([r["accuracy"] for r in obj.get("random") or []]),
                         "seeds": len(obj["pruned"]["accuracy"]), "draws": len(obj.get("random") or []),
                         "file": str(path.relative_to(workdir))})
        except (OSError, ValueError, KeyError, TypeError) as error:
            problems.append(f"{path}: unreadable pruning result ({type(error).__name__}: {error})")
    return rows


def explorer_data(workdir) -> tuple[dict, list[str]]:
    """(the page's data, problems). data = {"models": {model: {"layers", "neurons", "tasks": [{name, type,
    clean, pred (base64 float32 [L * N]), file}], "records": [explorer records], "suppression": [rows]}}}."""
    workdir = pathlib.Path(workdir)
    problems: list[str] = []
    models = {}
    inventory = results.discover(workdir)
    for model, names in sorted(inventory.predictivity.items()):
        preds, entries = {}, []
        for task in results.order_tasks(names):
            try:
                pred = results.load_predictivity(workdir, model, task, arrays=("pred",), with_sidecar=False).pred
            except (OSError, ValueError) as error:
                problems.append(str(error))
                continue
            if preds and pred.shape != next(iter(preds.values())).shape:
                problems.append(f"{results.predictivity_path(workdir, model, task)}: pred {pred.shape} differs from "
                                f"the model's other tasks")
                continue
            preds[task] = pred
            entries.append({"name": task, "type": results.task_type(task), "clean": results.clean_task(task),
                            "pred": float32_base64(pred),
                            "file": str(results.predictivity_path(workdir, model, task).relative_to(workdir))})
        if not preds:
            continue
        layers, neurons = next(iter(preds.values())).shape
        record_dir = layout.explorer_path(workdir, model, "x").parent
        records = [r for r in (_record(p, problems) for p in sorted(record_dir.glob("*.npz"))
                               if not p.name.startswith(".")) if r is not None]
        for r in records:
            r["source"] = str(pathlib.Path(r["source"]).relative_to(workdir))
        models[model] = {"layers": int(layers), "neurons": int(neurons), "tasks": entries, "records": records,
                         "suppression": _suppression_rows(workdir, model, preds, problems),
                         "pruning": _pruning_rows(workdir, model, preds, problems)}
    return {"models": models, "problems": problems}, problems


def page_html(data: dict, title: str = "Skill neurons: neuron explorer") -> str:
    """The page with `data` inline (a JSON script element; "</" escaped so no text can close it)."""
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return (PAGE_TEMPLATE.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload))


def build_explorer(workdir, out_path=None, *, title: str = "Skill neurons: neuron explorer") -> ExplorerPage:
    """Writes the explorer page (default WORKDIR/report/explorer.html) atomically; never raises on results that
    are absent or unreadable (listed on the page and returned)."""
    workdir = pathlib.Path(workdir)
    out_path = pathlib.Path(out_path) if out_path is not None else layout.explorer_page(workdir)
    data, problems = explorer_data(workdir)
    io.atomic_write_text(out_path, page_html(data, title))
    return ExplorerPage(path=out_path, models=sorted(data["models"]), problems=problems)
