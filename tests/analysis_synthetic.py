"""Writers of small synthetic result files in the formats the analysis reads (for tests/test_analysis_*.py)."""
from __future__ import annotations

import json
import pathlib

import numpy as np

from skillneurons_jax import io as project_io
from skillneurons_jax.analysis import report, results
from skillneurons_jax.pipeline import settings as _core_kinds  # noqa: F401  (importing it registers the core kinds)
from skillneurons_jax.stages import registry


def build_report(workdir, out_dir, config=None, **kwargs):
    """analysis.report.build_report with every registered stage kind's sections, as the report stage builds it."""
    return report.build_report(workdir, out_dir, config, sections=registry.sections(), **kwargs)


def write_predictivity(workdir, model: str, task: str, pred: np.ndarray, *, seeds: int = 2, tokens: int = 3,
                       rng: np.random.Generator | None = None, model_accuracy=None) -> pathlib.Path:
    """pred [L, N] in [0.5, 1]; acc/baseline [S, L, T, N] random but consistent in shape."""
    rng = rng or np.random.default_rng(0)
    L, N = pred.shape
    acc = rng.uniform(0.2, 0.8, size=(seeds, L, tokens, N)).astype(np.float32)
    path = results.predictivity_path(workdir, model, task)
    project_io.atomic_save_npz(path, pred=pred.astype(np.float32),
                        pred_per_seed=np.broadcast_to(pred, (seeds, L, N)).astype(np.float32),
                        acc=acc, baseline=rng.normal(size=(seeds, L, tokens, N)).astype(np.float32))
    if model_accuracy is not None:
        project_io.atomic_write_json(path.with_name(path.name + ".json"), {"task": task, "model_accuracy": model_accuracy})
    return path


def write_transfer(workdir, model: str, source: str, target: str, accuracy, f1=None, seeds=None) -> pathlib.Path:
    obj = {"accuracy": list(accuracy)}
    if f1 is not None:
        obj["f1"] = list(f1)
    if seeds is not None:
        obj["seeds"] = list(seeds)
    path = results.transfer_path(workdir, model, source, target)
    project_io.atomic_write_json(path, obj)
    return path


def write_suppression(workdir, model: str, source: str, target: str, ks, skill, random) -> pathlib.Path:
    """skill [K, S], random [K, D, S] arrays -> the JSON schema of docs/interfaces.md (analysis)."""
    obj = {"source": source, "target": target, "model": model, "ks": list(ks),
           "skill": {str(k): np.asarray(skill[i]).tolist() for i, k in enumerate(ks)},
           "random": {str(k): np.asarray(random[i]).tolist() for i, k in enumerate(ks)}}
    path = results.suppression_path(workdir, model, source, target)
    project_io.atomic_write_json(path, obj)
    return path


def write_prompt(workdir, model: str, task: str, seed: int, dev_accuracies, hidden: int = 8) -> pathlib.Path:
    d = results.prompt_dir(workdir, model, task, seed)
    project_io.atomic_save_npy(d / "prompt.npy", np.zeros((4, hidden), np.float32))
    for step, acc in enumerate(dev_accuracies):
        project_io.append_jsonl(d / "metrics.jsonl", {"step": step, "dev_accuracy": acc})
    return d


def suppression_arrays(ks, seeds: int, draws: int, rng: np.random.Generator, drop: float = 0.3):
    """Skill curves that fall with k faster than random ones: skill [K, S], random [K, D, S]."""
    ks = np.asarray(ks, float)
    frac = ks / max(ks.max(), 1)
    skill = np.clip(0.85 - drop * frac[:, None] + rng.normal(0, 0.01, (ks.size, seeds)), 0, 1)
    random = np.clip(0.85 - 0.05 * frac[:, None, None] + rng.normal(0, 0.01, (ks.size, draws, seeds)), 0, 1)
    return skill, random


def corrupt_truncate(path) -> None:
    data = pathlib.Path(path).read_bytes()
    pathlib.Path(path).write_bytes(data[: len(data) // 2])


def write_text(path, text: str) -> None:
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(path).write_text(text)


def dumps(obj) -> str:
    return json.dumps(obj)
