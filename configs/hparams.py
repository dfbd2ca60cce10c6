"""THE per-model / per-task hyperparameter table of prompt tuning.

RoBERTa-base and T5-base values are the original configs' (Prompt-Transferability 1.0 / robust-neurons: AdamW,
weight decay 0); the MiniLM rows are ours, tuned on 2 CPU cores: SST-2 with 20 prompt tokens (see
configs/minilm_sst2.py), and the offline tweets tasks with 8 prompt tokens (see configs/default.py: on tweets,
300 steps of batch 8 reached 0.82 / 0.80 dev accuracy at lr 3e-3 and 0.79 / 0.73 at lr 1e-2, against 0.72 for the
majority class; lr 3e-2 left one seed of two at the majority class after 240 steps).
A model not in the table uses its family's row (`FAMILY_DEFAULT`). Values set explicitly in the config
(anything not None) win over the table.
"""
from __future__ import annotations

import types
from typing import Mapping, Optional

# model name (LoadedModel.name) -> task (None: every task) -> fields
HPARAMS: Mapping[str, Mapping[Optional[str], dict]] = types.MappingProxyType({
    "roberta-base": {None: dict(learning_rate=1e-3, batch_size=16), "mrpc": dict(batch_size=8)},
    "t5-base": {None: dict(learning_rate=5e-3, batch_size=16), "qnli": dict(learning_rate=1e-2)},
    "all-minilm-l6-v2": {None: dict(learning_rate=3e-2, batch_size=16, init="label_words"),
                         **{t: dict(learning_rate=3e-3, batch_size=8) for t in ("tweets", "tweetsairline", "tweetsother", "tweetstopic")}},
})

# family -> the table row a model of that family uses when its name is not in HPARAMS
FAMILY_DEFAULT = types.MappingProxyType({"roberta": "roberta-base", "t5": "t5-base", "bert": "all-minilm-l6-v2"})


def lookup(model_name: str, family: str, task: str) -> dict:
    """The table's fields for (model, task): the model's (or its family's) row, then the task's overrides.

    Returns a new dict with an extra "hparams_row" naming the row used.
    """
    row = model_name if model_name in HPARAMS else FAMILY_DEFAULT.get(family)
    if row is None:
        raise ValueError(f"no hyperparameters for model {model_name!r} of family {family!r}; add a row to "
                         f"configs/hparams.py (known models: {sorted(HPARAMS)}, families: {sorted(FAMILY_DEFAULT)})")
    table = HPARAMS[row]
    return {**table.get(None, {}), **table.get(task, {}), "hparams_row": row}
