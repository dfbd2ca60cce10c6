"""Kill `launch.tune` with SIGKILL mid-run, rerun the same command: it resumes from the last checkpoint and ends with
the same best prompts and the same evaluation history as an uninterrupted run (tiny BERT with an MLM head)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import prompt_fixtures as fx
from test_tune_launch import REPO, last_json, run_cli

STEPS, EVERY, KILL_AFTER = 30, 2, 6


def _command(model, data, work):
    return ["--model_path", model, "--task", "sst2", "--data_dir", data, "--seeds", "0,1", "--workdir", work,
            "--max_steps", STEPS, "--eval_every", EVERY, "--config.prompt_len=4", "--config.batch_size=8",
            "--config.eval_batch_size=8", "--config.epochs=100", "--config.progress=False"]


def _history(work, seed):
    path = work / "prompts" / "bert_mlm" / "sst2" / f"seed_{seed}" / "metrics.jsonl"
    return [(r["step"], r["dev_accuracy"], r["train_loss"]) for r in map(json.loads, path.read_text().splitlines())]


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_to_the_same_result(tmp_path):
    model = fx.make_bert(tmp_path / "bert_mlm")
    data = fx.write_sst2(tmp_path / "data", n_train=40)
    cache = tmp_path / "jax_cache"

    full = tmp_path / "full"
    proc = run_cli("launch.tune", *_command(model, data, full), cache=cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert last_json(proc.stdout)["resumed_from"] is None

    # the same command, killed once a checkpoint past step KILL_AFTER is committed for every seed
    work = tmp_path / "killed"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO), "JAX_COMPILATION_CACHE_DIR": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    child = subprocess.Popen([sys.executable, "-m", "launch.tune", *map(str, _command(model, data, work))], env=env,
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    states = [work / "prompts" / "bert_mlm" / "sst2" / f"seed_{s}" / "state" for s in (0, 1)]

    def committed(d):
        return {int(p.name) for p in d.iterdir() if p.name.isdigit()} if d.is_dir() else set()

    deadline = time.time() + 300
    try:
        while time.time() < deadline and child.poll() is None:
            if all(max(committed(d), default=0) >= KILL_AFTER for d in states):
                break
            time.sleep(0.02)
        assert child.poll() is None, "the run ended before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    at_kill = [max(committed(d)) for d in states]
    assert max(at_kill) < STEPS, "killed after the last step: nothing left to resume"

    proc = run_cli("launch.tune", *_command(model, data, work), cache=cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = last_json(proc.stdout)
    assert summary["resumed_from"] is not None and KILL_AFTER <= summary["resumed_from"] <= max(at_kill)
    assert summary["steps"] == STEPS
    for s in (0, 1):
        a = np.load(full / "prompts" / "bert_mlm" / "sst2" / f"seed_{s}" / "prompt.npy")
        b = np.load(work / "prompts" / "bert_mlm" / "sst2" / f"seed_{s}" / "prompt.npy")
        np.testing.assert_allclose(b, a, atol=1e-6, rtol=0)
        ha, hb = _history(full, s), _history(work, s)
        assert [h[0] for h in hb] == list(range(EVERY, STEPS + 1, EVERY))     # each evaluation exactly once
        assert [h[1] for h in hb] == [h[1] for h in ha]
        np.testing.assert_allclose([h[2] for h in hb], [h[2] for h in ha], atol=1e-6)
