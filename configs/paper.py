"""The paper's whole sweep: `python -m launch.reproduce --config=configs/paper.py --workdir W --data_dir DATA
    --config.models=/path/to/roberta-base,/path/to/t5-base,offline:all-minilm-l6-v2`

Models: RoBERTa-base and T5-base as local Hugging Face folders (the folder names become the output names and
select the hyperparameter rows of configs/hparams.py: `roberta-base`, `t5-base`; other names use their family's
row), and the offline MiniLM. A model folder that does not exist is skipped with the reason; so is a task whose
files are absent under --data_dir. Tasks: the paper's nine datasets and the four AdvGLUE sets (evaluated with
their clean task's prompts; predictivity with the clean TRAIN baseline). Five seeds, 100 prompt tokens, 128 text
tokens, the original optimiser settings AND the original training budget per model and task (configs/hparams.py,
each number with the original config file it was read from: RoBERTa 72-128 epochs, e.g. SST-2 76; T5 100-200,
e.g. QNLI 100), best prompt by dev accuracy; suppression of 0..15% of the neurons per layer against 3 random draws;
every prompt transferred to every task; 1000 permutations for the task-specificity p-values.
Early stopping (`--config.tune.patience=N`: stop after N evaluations without a better dev accuracy) is available
and OFF here, as in the original; it is the knob for users who cannot afford 200 T5 epochs.
`python -m launch.reproduce --config=configs/paper.py ... --dry_run` lists the stages and their estimated cost.
"""
import ml_collections

from configs import default
from configs import tune as tune_config


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.models = "roberta-base,t5-base,offline:all-minilm-l6-v2"
    c.tasks = default.PAPER_TASKS
    c.optional_tasks = ""
    c.seeds = "0,1,2,3,4"
    c.max_examples = ml_collections.FieldReference(None, field_type=int)

    c.tune = tune_config.get_config()      # the original settings: 100 prompt tokens, 128 text tokens, eval batch 64
    # None: the epochs come from configs/hparams.py, per model and task (the original configs' budgets)
    c.tune.epochs = ml_collections.FieldReference(None, field_type=int)
    if "patience" not in c.tune:           # early stopping (prompt/train.py); defined by configs/tune.py
        c.tune.patience = ml_collections.FieldReference(None, field_type=int)
    c.tune.patience = None                 # off: the original trains the whole budget and keeps the best epoch
    c.tune.progress = True

    c.suppression.tasks = ""                         # every task's own curves
    c.suppression.levels = "0,1,3,5,7,9,11,13,15"
    c.suppression.random_draws = 3
    c.suppression.max_examples = None
    c.transfer.enabled = True
    c.report.enabled = True
    c.analysis.n_permutations = 1000
    c.analysis.dpi = 100
    c.cost.stage_overhead_s = 30.0
    return c
