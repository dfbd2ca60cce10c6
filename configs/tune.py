"""Prompt tuning config (`python -m launch.tune --config=configs/tune.py ...`).

Fields left None come from the hyperparameter table (skillneurons_jax/prompt/hparams.py, re-exported as
configs/hparams.py; per model and task); anything set here or with
`--config.FIELD=value` wins. The common flags (--max_steps, --eval_every) override the fields of the same name.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # prompt
    c.prompt_len = 100                 # P, the original's 100 soft tokens
    c.init = ml_collections.FieldReference(None, field_type=str)  # normal | vocab | label_words; None: table/normal
    c.init_std = 0.02                  # normal init (the original's initializer_range)
    c.init_vocab_range = ml_collections.FieldReference(None, field_type=tuple)  # (low, high) ids for vocab init
    # readout
    c.readout = "auto"                 # auto | mlm | tied | t5 (skillneurons_jax/prompt/readout.py)
    c.mask_slot = "auto"               # auto | True | False: prompt slot 0 holds the mask token
    c.prefix_positions = "zero"        # zero (original) | standard
    c.tied_scale = 1.0                 # tied readout: multiplier of hidden . word embedding
    # data
    c.max_text_tokens = 128            # text tokens after truncation (template words included)
    c.train_max_examples = ml_collections.FieldReference(None, field_type=int)  # cap on train (None: --max_examples)
    c.dev_max_examples = ml_collections.FieldReference(None, field_type=int)  # cap on dev only (None: --max_examples)
    c.eval_batch_size = 64
    c.group_by_length = False          # train batches of similar-length rows (less padding: faster on CPU)
    # optimisation
    c.learning_rate = ml_collections.FieldReference(None, field_type=float)  # None: prompt/hparams.py
    c.batch_size = ml_collections.FieldReference(None, field_type=int)       # global batch per seed
    c.epochs = 10
    c.max_steps = ml_collections.FieldReference(None, field_type=int)
    c.max_steps_by_task = ""           # "task:steps,...": per-task max_steps (wins over max_steps and the table)
    c.eval_every = 0                   # 0: once per epoch
    c.eval_at_start = False
    c.warmup_steps = 0
    c.clip_norm = 0.0                  # 0: off
    c.weight_decay = 0.0
    c.keep_checkpoints = 2
    c.progress = True
    c.time_limit_s = 0.0               # > 0: evaluate, checkpoint and stop after this many seconds of training
    # early stopping: stop when no seed's best dev accuracy improved during the last `patience` evaluations
    # (seeds train jointly; each keeps its best-by-dev prompt); None or 0: off
    c.patience = ml_collections.FieldReference(None, field_type=int)
    # Optional recipe fields (read when present; a study config adds them, configs/validation.py does): they are
    # left out here so that a finished study's stage settings (which hash this config) stay the same.
    #   lr_schedule "constant" | "linear" | "cosine" (after warm-up, decay to min_lr_fraction * lr at the last step),
    #   min_lr_fraction, select_metric "accuracy" | "balanced_accuracy" (best prompt and patience),
    #   reparam_hidden (> 0: residual-MLP reparameterised prompt, folded into a plain [P, H] prompt),
    #   select_percent (> 0: select checkpoints on that share of dev, readers.Part "select"),
    #   select_without_originals (the selection rows leave out the AdvGLUE originals, as train does).
    return c
