"""One rule picks the best checkpoint: the prompt training keeps (prompt.train.record_evaluation) is the evaluation
the analysis reads back from metrics.jsonl (analysis.results.load_tuning_runs), ties included (the first best)."""
import json

import numpy as np
import optax

from skillneurons_jax import layout
from skillneurons_jax.analysis import results
from skillneurons_jax.prompt import metrics, train


def _confusion(accuracy: float, n: int = 100) -> np.ndarray:
    """[1, 2, 2] with `accuracy` of n balanced rows correct."""
    right = int(round(accuracy * n))
    return np.array([[[right // 2, n // 2 - right // 2], [n // 2 - (right - right // 2), right - right // 2]]],
                    np.int64)


def test_training_and_analysis_keep_the_same_evaluation(tmp_path):
    accuracies = [0.5, 0.7, 0.7, 0.6, 0.7]          # ties: the first 0.7 (step 2) is kept
    state = train.initial_state(np.zeros((1, 2, 3), np.float32), optax.sgd(0.1))
    rows = []
    for step, acc in enumerate(accuracies, 1):
        prompts = np.full((1, 2, 3), step, np.float32)
        state, _ = train.record_evaluation(state, step, prompts, _confusion(acc))
        rows.append({"step": step, "dev_accuracy": float(metrics.accuracy(_confusion(acc))[0])})
    assert int(state.best_step[0]) == 2 and float(state.best_prompts[0, 0, 0]) == 2.0
    assert metrics.best_evaluation(rows)["step"] == 2
    path = layout.metrics_path(tmp_path, "m", "sst2", 0)
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run,) = results.load_tuning_runs(tmp_path, "m", "sst2", [0])
    assert run.best_dev_accuracy == rows[1]["dev_accuracy"]
    assert not bool(metrics.improves(0.7, 0.7)) and bool(metrics.improves(0.71, 0.7))
