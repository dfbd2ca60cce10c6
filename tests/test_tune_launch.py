"""launch.tune and launch.evaluate end to end on a tiny head-less BERT (the MiniLM path: tied-embedding readout)
and tiny GLUE-format SST-2 files, plus the bad-input errors of the command line."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import prompt_fixtures as fx

REPO = pathlib.Path(__file__).resolve().parents[1]
P = 4


def run_cli(module, *args, cache=None, timeout=600):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([str(REPO),
                                                                               os.environ.get("PYTHONPATH", "")])}
    if cache is not None:  # reruns in one test reuse compiled steps
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def last_json(stdout):
    return json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    return {"model": fx.make_bert(root / "minilm_like", lm_head=False), "data": fx.write_sst2(root / "data"),
            "root": root, "cache": root / "jax_cache"}


@pytest.fixture(scope="module")
def tuned(tiny):
    work = tiny["root"] / "work"
    proc = run_cli("launch.tune", "--model_path", tiny["model"], "--task", "sst2", "--data_dir", tiny["data"],
                   "--seeds", "0,1", "--workdir", work, "--max_steps", 6, "--eval_every", 3,
                   f"--config.prompt_len={P}", "--config.batch_size=8", "--config.eval_batch_size=8",
                   "--config.eval_at_start=True", cache=tiny["cache"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, last_json(proc.stdout)


@pytest.mark.slow
def test_tune_writes_the_contracted_outputs(tuned):
    work, summary = tuned
    assert summary["model"] == "minilm_like" and summary["task"] == "sst2" and summary["steps"] == 6
    for i, seed in enumerate((0, 1)):
        d = work / "prompts" / "minilm_like" / "sst2" / f"seed_{seed}"
        prompt = np.load(d / "prompt.npy")
        assert prompt.shape == (P, 16) and prompt.dtype == np.float32
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [0, 3, 6]
        assert all(0.0 <= r["dev_accuracy"] <= 1.0 and "dev_f1" in r for r in rows)
        assert summary["best_dev_accuracy"][i] == max(r["dev_accuracy"] for r in rows)
        meta = json.loads((d / "prompt.npy.json").read_text())
        assert meta["readout"] == "tied" and meta["seed"] == seed and meta["config"]["prompt_len"] == P
        assert {"versions", "git_commit", "task", "model"} <= set(meta)
        assert any(p.name.isdigit() for p in (d / "state").iterdir())


@pytest.mark.slow
def test_evaluate_reproduces_dev_accuracy_and_reads_torch_prompts(tiny, tuned):
    torch = pytest.importorskip("torch")
    work, summary = tuned
    seeds_dir = work / "prompts" / "minilm_like" / "sst2"
    common = ("--model_path", tiny["model"], "--task", "sst2", "--data_dir", tiny["data"])
    proc = run_cli("launch.evaluate", *common, "--prompt_dir", seeds_dir, cache=tiny["cache"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = last_json(proc.stdout)
    assert [r["accuracy"] for r in line["prompts"]] == pytest.approx(summary["best_dev_accuracy"])
    assert line["accuracy"] == pytest.approx(np.mean(summary["best_dev_accuracy"]))
    assert 0.0 <= line["f1"] <= 1.0 and line["examples"] == 16

    # a released-style PyTorch file: {"task_prompt": tensor}; one of the wrong shape is a clear error
    torch.save({"task_prompt": torch.from_numpy(np.load(seeds_dir / "seed_1" / "prompt.npy"))},
               tiny["root"] / "task_prompt")
    torch.save({"task_prompt": torch.zeros(100, 768)}, tiny["root"] / "wrong_prompt")
    proc = run_cli("launch.evaluate", *common, "--prompt_dir", tiny["root"] / "task_prompt", cache=tiny["cache"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert last_json(proc.stdout)["accuracy"] == pytest.approx(summary["best_dev_accuracy"][1])
    proc = run_cli("launch.evaluate", *common, "--prompt_dir", tiny["root"] / "wrong_prompt", cache=tiny["cache"])
    assert proc.returncode == 2
    assert "hidden size 768" in proc.stderr and "model's hidden size is 16" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (("--task", "sst3"), "unknown task 'sst3'"),
    (("--model_path", "/nonexistent/model"), "does not exist"),
    (("--config.prompt_len=0",), "prompt length must be a positive integer, got 0"),
    (("--seeds", "0,x"), "--seeds='0,x': allowed: distinct integers >= 0, comma-separated"),
])
def test_bad_input_is_a_clear_error(tiny, args, message):
    base = {"--model_path": tiny["model"], "--task": "sst2", "--data_dir": tiny["data"],
            "--workdir": tiny["root"] / "bad", "--max_steps": 1}
    flags = [a for a in args if a.startswith("--") and "=" not in a]
    argv = [x for k, v in base.items() if k not in flags for x in (k, v)] + list(args)
    proc = run_cli("launch.tune", *argv, cache=tiny["cache"])
    assert proc.returncode == 2, (proc.stdout[-1000:], proc.stderr[-2000:])
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_hparams_table():
    from configs import hparams
    sst2 = hparams.lookup("roberta-base", "roberta", "sst2")
    assert sst2 == dict(learning_rate=1e-3, batch_size=16, epochs=76, hparams_row="roberta-base",
                        hparams_source=hparams.SOURCES["roberta-base"]["sst2"])
    assert hparams.lookup("roberta-base", "roberta", "mrpc")["batch_size"] == 8
    assert hparams.lookup("t5-base", "t5", "qnli")["learning_rate"] == 1e-2
    assert hparams.lookup("t5-base", "t5", "mrpc")["learning_rate"] == 5e-3
    assert hparams.lookup("my-roberta", "roberta", "qnli")["hparams_row"] == "roberta-base"
    with pytest.raises(ValueError, match="no hyperparameters"):
        hparams.lookup("gpt", "gpt2", "sst2")
