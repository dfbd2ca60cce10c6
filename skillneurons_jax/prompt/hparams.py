"""THE per-model / per-task hyperparameter table of prompt tuning, with the source of every original number
(configs/hparams.py re-exports it; the library reads it here because it never imports configs/).

RoBERTa-base and T5-base rows are the original configs' (robust-neurons, forked from Prompt-Transferability 1.0:
AdamW, weight decay 0, 100 prompt tokens, 128 text tokens, best epoch by dev accuracy), read file by file
(`SOURCES`: repository, path, commit). `epochs` is the original budget per task: 72-128 for RoBERTa, 100-200
for T5; the configs/tune.py default (10) wins unless a config sets `tune.epochs = None` (configs/paper.py does), and
early stopping (`tune.patience`) can cut it short where a user cannot afford it.

The MiniLM rows are ours, tuned on 2 CPU cores: SST-2 with 20 prompt tokens (see configs/minilm_sst2.py), and the
offline tweets tasks with 8 prompt tokens (the accuracies they reach: docs/RESULTS.md); on the
paper's tasks MiniLM takes RoBERTa's epoch budget (the closest encoder; not an original number, `SOURCES` says so).
A model not in the table uses its family's row (`FAMILY_DEFAULT`). Values set explicitly in the config
(anything not None) win over the table.
"""
from __future__ import annotations

import types
from typing import Mapping, Optional

_RN = "LeonAckermann/Robust-Neurons"
_RN_COMMIT = "58c5d440383a6f562ae0ae65d0290d7c1061ba1b"
_PT = "thunlp/Prompt-Transferability"
_PT_COMMIT = "539dc647515471e4303cd7dd9ba9be8fb582440b"
# our task name -> the original config's task prefix
_CONFIG_NAME = {"sst2": "SST2", "imdb": "IMDB", "movierationales": "movierationales", "qqp": "QQP", "mrpc": "MRPC",
                "qnli": "QNLI", "mnli": "MNLI", "ethicsdeontology": "ethicsdeontology",
                "ethicsjustice": "ethicsjustice"}

# The original epochs (`[train] epoch = N` of each file in SOURCES).
ROBERTA_EPOCHS = {"sst2": 76, "imdb": 72, "movierationales": 128, "qqp": 96, "mrpc": 72, "qnli": 128, "mnli": 128,
                  "ethicsdeontology": 128, "ethicsjustice": 128}
T5_EPOCHS = {"sst2": 200, "imdb": 200, "movierationales": 200, "qqp": 200, "mrpc": 200, "qnli": 100, "mnli": 200,
             "ethicsdeontology": 200, "ethicsjustice": 200}
OFFLINE_TASKS = ("tweets", "tweetsairline", "tweetsother", "tweetstopic")
# MiniLM, 8 prompt tokens, batch 8, 2 seeds, measured on dev (balanced: accuracy = balanced accuracy):
#   tweetsairline lr 3e-3: 300 steps 0.866 / 0.842, 600 steps 0.890 / 0.859
#   tweetsother   lr 3e-3: 300 steps 0.735 / 0.739, 600 steps 0.784 / 0.758; lr 1e-2: 150 steps 0.732 / 0.700,
#                 300 steps 0.752 / 0.752
#   tweetstopic   lr 3e-3: 75 steps 0.997 / 0.998, 300 steps 1.000 / 1.000 (keyword-defined topics)
OFFLINE_BUDGETS = {"tweetsairline": dict(learning_rate=3e-3, batch_size=8, max_steps=300),
                   "tweetsother": dict(learning_rate=1e-2, batch_size=8, max_steps=300),
                   "tweetstopic": dict(learning_rate=3e-3, batch_size=8, max_steps=75)}


def _source(repo: str, commit: str, path: str) -> str:
    return f"github.com/{repo}, path {path}, commit {commit}"


# model row -> task -> where its numbers come from
SOURCES: Mapping[str, Mapping[str, str]] = types.MappingProxyType({
    "roberta-base": {
        **{t: _source(_RN, _RN_COMMIT, f"src/config/{n}PromptRoberta.config") for t, n in _CONFIG_NAME.items()
           if t != "movierationales"},
        # robust-neurons has no RoBERTa movierationales config; Prompt-Transferability's label-init variant is the
        # only one stored (same lr / batch as every RoBERTa row; its epoch line is the budget used here)
        "movierationales": _source(_PT, _PT_COMMIT,
                                   "Prompt-Transferability-1.0/config/movierationalesPromptRoberta_label.config")},
    "t5-base": {t: _source(_RN, _RN_COMMIT, f"src/config/{n}PromptT5.config") for t, n in _CONFIG_NAME.items()},
    "all-minilm-l6-v2": {
        **{t: "ours: RoBERTa-base's original epochs (the closest encoder), lr / batch measured on 2 CPU cores "
              "(configs/minilm_sst2.py)" for t in _CONFIG_NAME},
        **{t: "ours: measured on 2 CPU cores (configs/default.py)" for t in OFFLINE_TASKS}},
})

# model name (LoadedModel.name) -> task (None: every task) -> fields
HPARAMS: Mapping[str, Mapping[Optional[str], dict]] = types.MappingProxyType({
    "roberta-base": {None: dict(learning_rate=1e-3, batch_size=16),
                     **{t: dict(epochs=e) for t, e in ROBERTA_EPOCHS.items()},
                     "mrpc": dict(batch_size=8, epochs=ROBERTA_EPOCHS["mrpc"])},
    "t5-base": {None: dict(learning_rate=5e-3, batch_size=16),
                **{t: dict(epochs=e) for t, e in T5_EPOCHS.items()},
                "qnli": dict(learning_rate=1e-2, epochs=T5_EPOCHS["qnli"])},
    "all-minilm-l6-v2": {None: dict(learning_rate=3e-2, batch_size=16, init="label_words"),
                         **{t: dict(epochs=e) for t, e in ROBERTA_EPOCHS.items()},
                         **{t: dict(learning_rate=3e-3, batch_size=8) for t in OFFLINE_TASKS},
                         # the default study's budgets (configs/default.py has the measurements behind them): the
                         # fewest steps at which both seeds clearly pass 0.72 balanced accuracy on dev
                         **OFFLINE_BUDGETS},
})

# family -> the table row a model of that family uses when its name is not in HPARAMS
FAMILY_DEFAULT = types.MappingProxyType({"roberta": "roberta-base", "t5": "t5-base", "bert": "all-minilm-l6-v2"})


def lookup(model_name: str, family: str, task: str) -> dict:
    """The table's fields for (model, task): the model's (or its family's) row, then the task's overrides.

    Returns a new dict with an extra "hparams_row" naming the row used and, where the table knows it,
    "hparams_source" (the original config file read, or "ours: ...").
    """
    row = model_name if model_name in HPARAMS else FAMILY_DEFAULT.get(family)
    if row is None:
        raise ValueError(f"no hyperparameters for model {model_name!r} of family {family!r}; add a row to "
                         f"configs/hparams.py (known models: {sorted(HPARAMS)}, families: {sorted(FAMILY_DEFAULT)})")
    table = HPARAMS[row]
    out = {**table.get(None, {}), **table.get(task, {}), "hparams_row": row}
    if task in SOURCES.get(row, {}):
        out["hparams_source"] = SOURCES[row][task]
    return out
