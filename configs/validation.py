"""The validation study (issue #15): the paper's findings F1-F6 measured with the offline MiniLM on real data.

Power (issue #29; the settings below, not yet run): 5 seeds; every clean task's FULL dev split (max_examples 4000
covers SST-2 872, MRPC 408, QNLI's grouped dev carve 1104, ETHICS deontology 3596 / justice 2704, Movie Rationales
200; the eq. 2 TRAIN baseline on 4000 train rows), carved by `tune.select_percent` into a selection part (25 %,
checkpoints) and a disjoint measurement part (the rest: Table 1's dev rows, predictivity, transfer, suppression;
stages.setup.DevRows), both without AdvGLUE originals (`select_without_originals`); the held-out test split in
full; suppression on the full measurement rows with 5 random draws per level; the recipe: warm-up 50 steps then
cosine decay to 0.1 x lr, best prompt and patience on BALANCED dev accuracy (patience 4 evaluations of 100 steps);
per-task budgets by learnability (docs/LEARNABILITY.md, the frozen-feature probes, chosen before any skill-neuron
statistic): SST-2 and Movie Rationales, whose probes are far above chance, get the most steps; the tasks whose
probes sit within about 10 points of chance get fewer (early stopping ends them sooner when nothing improves).
The cost: `--dry_run` with `cost.flops_per_second` = 2.1e11 and `cost.stage_overhead_s` = 2, calibrated on the two
runs measured on this project's 2-core AMD EPYC (AVX-512) host (the default study 310 s against 795 s of FLOP time
at 8e10, the previous validation config 1566 s against 4155 s: both about 0.38 of the FLOP estimate, compilation
time lost in the noise); see POWER_ESTIMATE below for its figure.

    python -m launch.reproduce --config=configs/validation.py --data_dir /work/shared/data --workdir W

writes the usual report under W/report/ and, because `report.validation_doc` is set, `docs/VALIDATION.md` (path
relative to the directory the command runs in; figures beside it under docs/validation/) with the command, the
commit, the machine, the run time, Table 1, the verdict table (skillneurons_jax/analysis/verdicts.py: each finding's
statistic, interval, test and the rule that turns them into supported / not supported / inconclusive) and what
differs from the paper's setting. Rerunning the command resumes (finished stages are kept) and regenerates the
document. CI never runs it; tests/test_validation.py checks that this config builds a valid plan. A smoke run of
this config on /work/shared/data with tiny caps (--config.seeds=0,1 --config.tune.max_steps=4
--config.max_examples=24 --config.suppression.max_examples=16 --config.suppression.levels=0,1,15) ran all 34
stages then planned (before the 12 held-out test stages), 0 failed, in 489 s wall on the shared 2 cores, and wrote
the document (its numbers mean nothing at that size).

Tasks: SST-2, Movie Rationales (Pang & Lee), MRPC, QNLI, ETHICS deontology and justice (clean); AdvSST-2 and
AdvQNLI with their clean task's prompts and TRAIN baselines; AdvQQP with the MRPC prompts and MRPC TRAIN baseline
(`adversarial_prompts = "advqqp:mrpc"`): there is no QQP train data here, so AdvQQP is a paraphrase TRANSFER, not
the paper's QQP -> AdvQQP setting, and the document labels it so.

What is chosen, and why. The budget: 120 min wall on this project's 2 CPU cores. The plan's cost model, calibrated
on the measured default study (`--dry_run`: 4e10 FLOP/s per core, 20 s per compilation; it over-estimated that
study by 21 %), estimates 6457 s (107.6 min) for the 42 stages and the report of this config.

Measured runs of this config (docs/VALIDATION.md is the latest one's document):
  commit f47a64f, 2026-12-02, on the 2-core host of the brief (its CPU was not recorded then; the brief says AVX2,
    no AVX-512): 42 stages + report, 0 failed, 86.9 min wall (the stages' own times 87.0 min).
  commit 7759446, 2026-12-03, on a 2-core AMD EPYC with AVX-512 (lscpu; sidecars record the CPU since fd8942a):
    0 failed, 26.1 min wall (1560 s: tune 1079 s for the 6 tasks, transfer 216, suppression 205, predictivity
    53), 1890 s user + 489 s system CPU, max RSS 2.4 GB (`/usr/bin/time -v`). The same code and config took a
    third of the time on the faster CPU, and trained different prompts: SST-2 seed 0 after 150 steps 0.515 on the
    first host, 0.718 on this one (the likely cause, not isolated here: XLA's CPU code rounds float sums otherwise
    with AVX-512, and a prompt near a learning threshold goes another way). So a rerun on another CPU is a new
    measurement, not a replay.
  Dev accuracy at each evaluation (150 / 300 / 450 steps for SST-2, 150 for the rest), seeds 0 / 1 / 2, on the
  AVX-512 host (dev rows; majority rate):
    sst2              0.718 0.797 0.789 / 0.755 0.775 0.726 / 0.550 0.586 0.678   (872; 0.509)
    movierationales   0.545 / 0.565 / 0.500   (200; 0.50)    64 of about 800 tokens seen
    mrpc              0.684 / 0.684 / 0.684   (408; 0.684)   always "equivalent"
    qnli              0.518 / 0.506 / 0.515   (1000)
    ethicsdeontology  0.518 / 0.485 / 0.536   (1000)
    ethicsjustice     0.476 / 0.496 / 0.476   (1000)
  Table 1 (112-row statistics subset, mean +- std over seeds): SST-2 81.2 +- 6.5 % against a majority of 52.7 %
  (the f47a64f run: 83.3 +- 0.4 %), held-out test 75.3 +- 6.6 % against 58.0 % (84.2 +- 1.7); the other five
  within 1 point of their majority rate or below it in both runs. So SST-2 meets the issue's learning target (10
  points over the majority rate) and the other five do not: the document marks each finding on them
  inconclusive (its premise is a learned prompt) with the rule's verdict in the note. On SST-2 (both runs): the
  top 1 % neurons sit in the upper layers (F3b supported: mean relative depth 0.892 [0.793, 0.991]; 0.885 in the
  f47a64f run); its skill neurons vs random ones under suppression, F5, inconclusive (+3.0 points [-12.9, +18.8];
  the f47a64f run +9.4 [-0.9, +19.6]); on AdvSST-2 the clean prompts score below chance (0.340 on the 48 suppression
  rows), so suppression moves them toward a trivial answer and raises accuracy: F6b inconclusive by the rule of
  analysis/verdicts.py (before that rule the f47a64f run's document said "not supported" for the same reason).
  An earlier design (every task 150 steps, k = 1, 3, ..., 15 %, adversarial self-curves; commit 4ecf975, 46
  stages, 103.7 min) left SST-2 at 62.2 +- 13.5 % (one seed of three learning): hence SST-2's 450 steps.
Measured before the run (probes, seed 0):
  * the previous settings (16 prompt tokens, 48 text tokens, 120 steps of 8 at 3e-2) were started and stopped
    after their first stage: SST-2 dev accuracy 0.516 / 0.537 / 0.531 for seeds 0 / 1 / 2 (872 rows, majority
    0.509), i.e. at chance; with 8 tokens, 300 steps of 8 at 3e-3 (the tweets recipe), SST-2 seed 0: 0.578.
  * configs/minilm_sst2.py's recipe (20 tokens, 64 text tokens, batch 16, 3e-2, label-word init): SST-2 seed 0
    0.732 / 0.781 / 0.807 after 150 / 300 / 600 steps on the full 64k training phrases (an earlier session; with
    this config's 4000-row training subset seed 0 reached 0.515 after 150: the recipe is seed- and data-sensitive
    at this budget); probes of 300 steps, seed 0, 400 dev rows: MRPC 0.685 at steps 100 / 200 / 300 with F1 0.813,
    i.e. always "equivalent" (majority 0.685); QNLI 0.535 / 0.530 / 0.517 (majority 0.510); ETHICS justice
    0.477 / 0.552 / 0.542 (majority 0.523).
What is left:
  seeds 0,1,2            the issue's minimum; intervals over seeds have 2 degrees of freedom (wide: t = 4.30)
  prompt_len 20, max_text_tokens 64, batch 16, learning_rate 3e-2, init label_words: configs/minilm_sst2.py's
                         recipe (its lr probes on SST-2: 3e-2 -> 0.71, 5e-2 -> 0.65, 1e-1 -> 0.56 after 150 steps);
                         one recipe for every task (no per-task tuning toward any answer); MRPC pairs (mean 53
                         tokens) and Movie Rationales (mean about 800: only its opening is seen) are cut, and
                         Table 1 records how many examples were
  max_steps 150          2400 training examples per seed (of up to 4000 tuning rows), one dev evaluation at 150;
                         SST-2 450 steps (7200 examples), best of 3 dev evaluations (150 / 300 / 450)
  max_examples 112       per split for transfer and predictivity (TRAIN baseline on 112 rows, DEV accuracy on 112)
  suppression            k = 0,1,5,10,15 % per layer (4 of the paper's 8 levels in its 1-15 % range), 1 random
                         draw, 48 dev rows; each clean task on itself (F5) and on its adversarial set (F6b)
  transfer               every prompt on every task (F1's relative transfer matrix)
  analysis               1000 neuron permutations; the task-type test is exact (180 assignments of 6 clean tasks
                         in 4 types; renaming the two 2-task and the two 1-task types ties 4 of them: p >= 0.022)
Whether each task's prompts reach the issue's target, 10 points over the dev majority rate, is measured by the run
(the document's Table 1 prints accuracy and majority rate side by side and lists every clean task that misses it).
"""
import ml_collections

from configs import default

CLEAN_TASKS = "sst2,movierationales,mrpc,qnli,ethicsdeontology,ethicsjustice"
VALIDATION_TASKS = CLEAN_TASKS + ",advsst2,advqnli,advqqp"
# Suppression of the clean task's skill neurons on its adversarial set (Figure 6, F6b). An adversarial set's own
# skill neurons suppressed on itself answer no finding: those three curves (290 s of the first run) are not run.
CROSS_PAIRS = "sst2:advsst2,qnli:advqnli,mrpc:advqqp"
# AdvQQP has no clean train split here (no QQP): it is evaluated with the MRPC prompts (same task type, paraphrase).
ADVERSARIAL_PROMPTS = "advqqp:mrpc"
# SST-2 trains 3x longer than the other tasks: the one task whose dev accuracy the probes saw still rising after
# 150 steps (seed 0: 0.725 / 0.760 / 0.778 at 150 / 300 / 450 steps, 400 dev rows); see the docstring.
STEPS_BY_TASK = "sst2:450"
# k (%): the paper's range 1..15 % at 4 levels (the paper plots 1, 3, ..., 15: 8 levels, which cost 17 instead of 9
# forward passes per seed and stage, about 600 s of this study's 120 min; F5 and F6b average over k > 0)
LEVELS = "0,1,5,10,15"
COMMAND = ("python -m launch.reproduce --config=configs/validation.py --data_dir /work/shared/data "
           "--workdir workdir/validation")


# Per-task budgets by learnability (docs/LEARNABILITY.md): the probe's dev balanced accuracy far above chance
# (SST-2 0.78) -> the most steps; within about 10 points of chance -> fewer (patience stops them earlier).
POWER_STEPS_BY_TASK = "sst2:600,movierationales:400,mrpc:200,qnli:200,ethicsdeontology:200"
# ETHICS justice is left out of the power study: its probe's held-out (test_hard) balanced accuracy is 0.510
# [0.489, 0.531], an interval holding chance (docs/LEARNABILITY.md), the one clean task of which that is true; the
# 120-minute budget goes to the tasks a prompt can learn.
POWER_CLEAN_TASKS = "sst2,movierationales,mrpc,qnli,ethicsdeontology"
POWER_LEVELS = "0,5,15"
POWER_SEEDS = "0,1,2,3,4"
# --dry_run of get_config() with the calibrated cost (see the docstring), measured at the commit that set it.
# 37 stages (tune 3176 s, suppression 1057 + 888 on test, transfer 830 + 148, predictivity 417, report 66).
POWER_ESTIMATE = "6578 s (109.6 min)"


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.models = "offline:all-minilm-l6-v2"
    c.tasks = VALIDATION_TASKS
    c.optional_tasks = ""
    c.adversarial_prompts = ADVERSARIAL_PROMPTS
    c.seeds = "0,1,2"
    c.max_examples = 112

    c.tune.prompt_len = 20
    c.tune.max_text_tokens = 64
    c.tune.learning_rate = 3e-2
    c.tune.batch_size = 16
    c.tune.init = "label_words"
    c.tune.train_max_examples = 4000
    c.tune.dev_max_examples = 1000                     # selection (best of 2 evaluations) on up to 1000 dev rows
    c.tune.group_by_length = True
    c.tune.max_steps = 150
    c.tune.max_steps_by_task = STEPS_BY_TASK
    c.tune.eval_every = 150
    c.tune.eval_batch_size = 64
    c.tune.progress = True

    c.suppression.tasks = CLEAN_TASKS                # each clean task's own curves (F5), dev and held-out test
    c.suppression.levels = LEVELS
    c.suppression.random_draws = 1
    c.suppression.extra_pairs = CROSS_PAIRS          # the clean task's skill neurons on its adversarial set (F6b)
    c.suppression.max_examples = 48
    c.transfer.enabled = True

    c.report.enabled = True
    c.report.validation_doc = "docs/VALIDATION.md"       # relative to the directory the command runs in
    c.report.validation_command = COMMAND                 # printed in the document (what reproduces it)
    c.analysis.n_permutations = 1000
    c.analysis.dpi = 70                                   # small PNGs: the document's figures stay under 2 MB
    c.cost.stage_overhead_s = 20.0
    return power(c)


def power(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The issue #29 settings over the earlier design (see the docstring): seeds, full splits, the recipe, budgets."""
    c.seeds = POWER_SEEDS
    c.tasks = POWER_CLEAN_TASKS + ",advsst2,advqnli,advqqp"
    c.suppression.tasks = POWER_CLEAN_TASKS
    c.suppression.levels = POWER_LEVELS               # seeds and rows before levels (issue #29)
    c.max_examples = 1200                             # full dev of every task but ETHICS deontology (1200 of 3596)
    c.tune.dev_max_examples = None
    c.tune.select_percent = 25                        # checkpoints on 25 % of dev, statistics on the other 75 %
    c.tune.select_without_originals = True            # neither part holds an AdvGLUE original
    c.tune.lr_schedule = "cosine"
    c.tune.warmup_steps = 50
    c.tune.min_lr_fraction = 0.1
    c.tune.select_metric = "balanced_accuracy"
    c.tune.patience = 4
    c.tune.eval_every = 100
    c.tune.max_steps = 200
    c.tune.max_steps_by_task = POWER_STEPS_BY_TASK
    c.suppression.max_examples = 400                  # 8x the old 48 rows; SST-2's measurement part is ~560
    c.suppression.random_draws = 5
    c.suppression.random_from = "rest"                # controls drawn from the neurons outside the skill set
    c.cost.flops_per_second = 2.1e11                  # calibrated on this host (docstring)
    c.cost.stage_overhead_s = 2.0
    return c
