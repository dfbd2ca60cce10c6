"""The per-model / per-task hyperparameter table of prompt tuning: skillneurons_jax/prompt/hparams.py (its one
home; the library reads it there and never imports configs/). Re-exported here for configs and users."""
from skillneurons_jax.prompt.hparams import FAMILY_DEFAULT, HPARAMS, lookup

__all__ = ["FAMILY_DEFAULT", "HPARAMS", "lookup"]
