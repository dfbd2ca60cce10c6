"""The per-model / per-task hyperparameter table of prompt tuning: skillneurons_jax/prompt/hparams.py (its one
home, with the source of every original number; the library reads it there and never imports configs/).
Re-exported here for configs and users."""
from skillneurons_jax.prompt.hparams import (FAMILY_DEFAULT, HPARAMS, OFFLINE_TASKS, ROBERTA_EPOCHS, SOURCES, T5_EPOCHS,
                                             lookup)

__all__ = ["FAMILY_DEFAULT", "HPARAMS", "OFFLINE_TASKS", "ROBERTA_EPOCHS", "SOURCES", "T5_EPOCHS", "lookup"]
