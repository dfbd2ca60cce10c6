"""A tiny world for the plan tests: a tiny random head-less BERT (the tied readout, like MiniLM) and a data folder
with SST-2, MRPC (GLUE TSV) and AdvGLUE-style SST-2 files, written here; a reproduce config sized for seconds."""
from __future__ import annotations

import json
import pathlib

import numpy as np

import prompt_fixtures

MODEL = "tiny-bert"


def write_data(data_dir) -> pathlib.Path:
    data_dir = pathlib.Path(data_dir)
    prompt_fixtures.write_sst2(data_dir, n_train=32, n_dev=16, seed=0)
    mrpc = data_dir / "glue" / "MRPC"
    mrpc.mkdir(parents=True, exist_ok=True)
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    # train and dev, and the labelled test file (the held-out split, as the MSR release ships it)
    for name, n, seed in (("train.tsv", 32, 5), ("dev.tsv", 16, 6), ("msr_paraphrase_test.txt", 16, 7)):
        rows = [header]
        for i, (text, label) in enumerate(prompt_fixtures.sentences(n, seed)):
            other = text if label else " ".join(reversed(text.split()))
            rows.append(f"{label}\t{2 * i}\t{2 * i + 1}\t{text}\t{other}")
        (mrpc / name).write_text("\n".join(rows) + "\n")
    adv = [{"idx": i, "sentence": t, "label": int(y)} for i, (t, y) in enumerate(prompt_fixtures.sentences(12, 9))]
    (data_dir / "advglue").mkdir(parents=True, exist_ok=True)
    (data_dir / "advglue" / "dev.json").write_text(json.dumps({"sst2": adv}))
    return data_dir


def make_model(folder) -> pathlib.Path:
    return prompt_fixtures.make_bert(pathlib.Path(folder) / MODEL, lm_head=False, hidden=16, layers=2)


def config(model_path, data_dir, tasks: str = "sst2,mrpc,advsst2,qnli"):
    """configs/default.py shrunk: 2 seeds, 4 prompt tokens, 2 training steps, 3 suppression levels."""
    from configs import default
    c = default.get_config()
    c.models = str(model_path)
    c.tasks = tasks
    c.optional_tasks = ""
    c.data_dir = str(data_dir)
    c.seeds = "0,1"
    c.max_examples = None
    c.tune.prompt_len = 4
    c.tune.max_text_tokens = 12       # every text fits one length bucket: one compilation per step kind
    c.tune.batch_size = 8
    c.tune.eval_batch_size = 16
    c.tune.max_steps = 2
    c.tune.eval_every = 2
    c.tune.progress = False
    c.suppression.levels = "0,10,50"
    c.suppression.random_draws = 2
    c.analysis.n_permutations = 20
    c.analysis.dpi = 30
    c.jax_cache = False
    c.cost.stage_overhead_s = 1.0
    return c


FIGURES = ("transfer_absolute.png", "transfer_relative.png", "predictivity_per_layer.png",
           "predictivity_boxes_model_accuracy.png", "predictivity_layers_sst2.png", "neuron_accuracy_boxes.png",
           "spearman.png", "spearman_zscored.png", "suppression_same_task.png", "suppression_cross_task.png")


def rng_bytes(n: int) -> bytes:
    return np.random.default_rng(0).bytes(n)
