"""The paper's whole sweep: `python -m launch.reproduce --config=configs/paper.py --workdir W --data_dir DATA
    --config.models=/path/to/roberta-base,/path/to/t5-base,offline:all-minilm-l6-v2`

Models: RoBERTa-base and T5-base as local Hugging Face folders (the folder names become the output names and
select the hyperparameter rows of configs/hparams.py: `roberta-base`, `t5-base`; other names use their family's
row), and the offline MiniLM. A model folder that does not exist is skipped with the reason; so is a task whose
files are absent under --data_dir. Tasks: the paper's nine datasets and the four AdvGLUE sets (evaluated with
their clean task's prompts; predictivity with the clean TRAIN baseline). Five seeds, 100 prompt tokens, 128 text
tokens, the original optimiser settings (configs/hparams.py: AdamW, weight decay 0, lr/batch per model and task),
best prompt by dev accuracy; suppression of 0..15% of the neurons per layer against 3 random draws; every prompt
transferred to every task; 1000 permutations for the task-specificity p-values.
`python -m launch.reproduce --config=configs/paper.py ... --dry_run` lists the stages and their estimated cost.
"""
import ml_collections

from configs import default

ORIGINAL_EPOCHS = 10   # configs/tune.py: best of 10 epochs by dev accuracy


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.models = "roberta-base,t5-base,offline:all-minilm-l6-v2"
    c.tasks = default.PAPER_TASKS
    c.optional_tasks = ""
    c.seeds = "0,1,2,3,4"
    c.max_examples = ml_collections.FieldReference(None, field_type=int)

    from configs import tune as tune_config
    c.tune = tune_config.get_config()      # the original settings: 100 prompt tokens, 128 text tokens, eval batch 64
    c.tune.epochs = ORIGINAL_EPOCHS
    c.tune.progress = True

    c.suppression.levels = "0,1,3,5,7,9,11,13,15"
    c.suppression.random_draws = 3
    c.suppression.max_examples = None
    c.transfer.enabled = True
    c.report.enabled = True
    c.analysis.n_permutations = 1000
    c.analysis.dpi = 100
    c.cost.stage_overhead_s = 30.0
    return c
