"""Tuning recipes compared on SST-2 (issue #29): `python -m launch.tune --config=configs/recipe.py:VARIANT ...`.

VARIANT (configs/tune.py's fields plus the recipe fields prompt.train.TrainConfig reads):
  old        the validation study's earlier recipe: constant 3e-2 after no warm-up, best prompt by accuracy
  schedule   warm-up 30 steps, cosine decay to 0.1 x 3e-2, best prompt and patience on balanced accuracy
  reparam    schedule + a residual-MLP reparameterised prompt (hidden 128), folded into a plain [20, 384] prompt
Every variant: 20 prompt tokens, label-word init, 64 text tokens, batch 16, 4000 train rows, checkpoints selected on
the 25 % "select" part of dev (no AdvSST-2 original in it), so the 75 % "measure" part and the test split judge them.
"""
import ml_collections

from configs import tune

VARIANTS = ("old", "schedule", "reparam")


def get_config(variant: str = "schedule") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"configs/recipe.py: variant must be one of {VARIANTS}, got {variant!r}")
    c = tune.get_config()
    c.prompt_len = 20
    c.max_text_tokens = 64
    c.learning_rate = 3e-2
    c.batch_size = 16
    c.init = "label_words"
    c.train_max_examples = 4000
    c.group_by_length = True
    c.progress = False
    c.select_percent = 25
    c.select_without_originals = True
    c.lr_schedule = "constant"
    c.min_lr_fraction = 0.0
    c.select_metric = "accuracy"
    c.reparam_hidden = 0
    if variant in ("schedule", "reparam"):
        c.warmup_steps = 30
        c.lr_schedule = "cosine"
        c.min_lr_fraction = 0.1
        c.select_metric = "balanced_accuracy"
    if variant == "reparam":
        c.reparam_hidden = 128
    return c
