"""Early stopping (TrainConfig.patience) on the tiny stand-in model: training stops when no seed's best dev
accuracy improved during the last `patience` evaluations, records the step, survives a resume, and
patience None / 0 / never reached trains bit-identically to no early stopping."""
import json

import numpy as np
import pytest

import prompt_standin as st
from skillneurons_jax.prompt import train as T

SEEDS = [0, 1]
B = 8


@pytest.fixture(scope="module")
def data():
    return st.make_data(64, 1), st.make_data(20, 2)


def _run(data, cfg, **kw):
    return st.run_training(data, cfg, SEEDS, B, **kw)


def _cfg(**kw):
    # learning rate ~0: the dev accuracy never moves after the first evaluation, so nothing improves after it
    base = dict(learning_rate=1e-12, batch_size=B, epochs=4, eval_every=1, progress=False)
    return T.TrainConfig(**{**base, **kw})


def test_patience_off_or_never_reached_changes_nothing(data):
    cfg = dict(learning_rate=0.1, batch_size=B, epochs=2, eval_every=4, progress=False)
    off = _run(data, T.TrainConfig(**cfg))
    for patience in (0, 1000):
        other = _run(data, T.TrainConfig(**cfg, patience=patience))
        assert other.steps == off.steps == 16 and other.stopped_early is None
        np.testing.assert_array_equal(other.prompts, off.prompts)
        np.testing.assert_array_equal(other.best_prompts, off.best_prompts)
        assert other.history == [{**r, "elapsed_s": o["elapsed_s"]} for r, o in zip(off.history, other.history)]


def test_stops_after_patience_evaluations_without_improvement(data, tmp_path):
    dirs = [tmp_path / f"seed_{s}" for s in SEEDS]
    result = _run(data, _cfg(patience=2), run_dirs=dirs)
    # step 1 improves on nothing-yet, steps 2 and 3 do not improve: stop at 3 of 32
    assert (result.steps, result.stopped_early) == (3, 3)
    assert list(result.best_step) == [1, 1]
    rows = [json.loads(line) for line in (dirs[0] / T.METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert "stopped_early" not in rows[0] and rows[-1]["stopped_early"] == 3
    np.testing.assert_array_equal(np.load(dirs[1] / T.PROMPT_FILE), result.best_prompts[1])
    # A rerun of the stopped run stays stopped: nothing trained, nothing rewritten.
    again = _run(data, _cfg(patience=2), run_dirs=dirs)
    assert (again.resumed_from, again.steps, again.stopped_early) == (3, 3, 3)
    np.testing.assert_array_equal(again.best_prompts, result.best_prompts)
    assert len((dirs[0] / T.METRICS_FILE).read_text().splitlines()) == 3


def test_the_count_survives_a_resume(data, tmp_path):
    dirs = [tmp_path / f"seed_{s}" for s in SEEDS]
    first = _run(data, _cfg(patience=2, max_steps=2), run_dirs=dirs)   # evaluations at 1 (best) and 2 (no gain)
    assert (first.steps, first.stopped_early) == (2, None)
    resumed = _run(data, _cfg(patience=2), run_dirs=dirs)
    whole = _run(data, _cfg(patience=2), run_dirs=[tmp_path / "whole" / f"seed_{s}" for s in SEEDS])
    assert resumed.resumed_from == 2
    assert (resumed.steps, resumed.stopped_early) == (whole.steps, whole.stopped_early) == (3, 3)
    np.testing.assert_array_equal(resumed.best_prompts, whole.best_prompts)
    np.testing.assert_array_equal(resumed.prompts, whole.prompts)


def test_negative_patience_is_an_error(data):
    with pytest.raises(ValueError, match="patience must be >= 0"):
        _run(data, _cfg(patience=-1))
