"""The validation study: the paper's findings F1-F6 measured with the offline MiniLM on the paper's data.

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
time lost in the noise); see POWER_ESTIMATE below for its figure. On top (`checks`): the frozen-feature probe of
every clean task (the reference beside Table 1, dev and test, and the "beyond this model" rule), F6a's control
pair for each AdvGLUE set and F5 with prompt slot 0 left out for SST-2 and Movie Rationales.

    python -m launch.reproduce --config=configs/validation.py --data_dir /work/shared/data --workdir W

writes the report under W/report/ and, because `report.validation_doc` is set, docs/VALIDATION.md (relative to the
directory the command runs in; figures under docs/validation/): the command, commits, machines, run time, Table 1,
the verdict table (analysis/verdicts.py) and what differs from the paper. Every measured figure, the run time
included, is in that document; tests/test_validation.py checks that this config builds a valid plan.

Tasks: SST-2, Movie Rationales, MRPC, QNLI, ETHICS deontology and justice (clean); AdvSST-2 and AdvQNLI with their
clean task's prompts and TRAIN baselines; AdvQQP with MRPC's (no QQP train data here: a paraphrase transfer, and
the document says so). One recipe for every task (configs/minilm_sst2.py's: no per-task tuning toward an answer);
SST-2 alone trains 450 steps. Budget: 120 min wall on 2 CPU cores (`--dry_run` prints the plan's estimate).
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
# SST-2 trains 3x longer: the one task whose dev accuracy still rose after 150 steps in the probes (seed 0)
STEPS_BY_TASK = "sst2:450"
# k (%): the paper's range 1..15 % at 4 levels (its 8 levels cost 17 instead of 9 passes per seed and stage)
LEVELS = "0,1,5,10,15"
COMMAND = ("python -m launch.reproduce --config=configs/validation.py --data_dir /work/shared/data "
           "--workdir workdir/validation")


# Per-task budgets by learnability (docs/LEARNABILITY.md): the probe's dev balanced accuracy far above chance
# (SST-2 0.78) -> the most steps; within about 10 points of chance -> fewer (patience stops them earlier).
POWER_STEPS_BY_TASK = "sst2:600,movierationales:400,mrpc:200,qnli:200,ethicsdeontology:200"
# ETHICS justice is left out of the power study: its probe's held-out (test_hard) balanced accuracy is 0.510
# [0.489, 0.531], an interval holding chance (docs/LEARNABILITY.md); the 120-minute budget goes to the tasks a
# prompt can learn. The rule: a clean task whose reference probe's held-out test interval holds 0.5 is left out;
# of the six clean tasks' probes, justice's is the only one (the next lowest, ETHICS deontology: [0.515, 0.575]).
POWER_CLEAN_TASKS = "sst2,movierationales,mrpc,qnli,ethicsdeontology"
# Suppression (F5, F6b) only for the tasks whose prompts learned, judged on the tune stage's selection rows
# before any skill-neuron statistic of this study was computed: SST-2 (balanced 0.77 at its best evaluation, mean
# over 5 seeds) and Movie Rationales (0.60); MRPC (0.50), QNLI (0.55) and ETHICS deontology (0.51) stayed at
# chance, so their F5/F6b verdicts are inconclusive by the document's premise and their curves (about 30 min of
# this host each) answer nothing. Their Table 1, predictivity, transfer and control stages run as planned.
LEARNED_TASKS = "sst2,movierationales"
LEARNED_CROSS_PAIRS = "sst2:advsst2"
CONTROL_TASKS = "advsst2,advqnli,advqqp"
SLOT_TASKS = "sst2,movierationales"
POWER_LEVELS = "0,5,15"
POWER_SEEDS = "0,1,2,3,4"
# --dry_run of get_config() with the calibrated cost (see the docstring), measured at the commit that set it.
# 43 stages: tune 3176 s, transfer 978, predictivity 420, prune 361, suppression 296, its slot-0 check 248,
# explorer 105, report 66, F6a controls 24, and the probes 438 (learnability: the reference beside Table 1 and the
# "beyond this model" rule). The model is optimistic on a loaded host: the probes took 213 s (Movie Rationales)
# to about 53 min (MRPC) under load 6.5-22 (docs/LEARNABILITY.md); the run's real stage times are in
# docs/VALIDATION.md. Without the probes: 5671 s (94.5 min).
POWER_ESTIMATE = "6109 s (101.8 min)"


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
    c.suppression.tasks = LEARNED_TASKS               # F5 curves only where the prompts learned (LEARNED_TASKS)
    c.suppression.extra_pairs = LEARNED_CROSS_PAIRS   # F6b likewise: the learned task's skill neurons on its set
    c.suppression.held_out = False                    # no curves on TEST: the dev measurement rows are held out
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
    # section 6.1 on the learned task; each seed's prompt tuned on for 100 steps on each pruned model (the task's
    # recipe; the cost function's estimate: 361 s of the stage, 81 s without it)
    c.prune = ml_collections.ConfigDict({"keep_percent": 2.0, "tasks": "sst2", "continue_steps": 100})
    c.stats.label_permutations = 100                  # Pred's null at each split's n: floors, F3a/F3b tests
    c.stats.subsample_sizes = "78,148"                # Pred at the AdvGLUE sets' n: matched-n drops
    c.cost.flops_per_second = 2.1e11                  # calibrated on this host (docstring)
    c.cost.stage_overhead_s = 2.0
    return checks(c)


def checks(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The controls issues #29/#30 ask for, as stages of their own (no existing stage changes): F6a's control
    pairs, F5 with the readout slot left out, the learnability probe."""
    # F6a's control pair for each AdvGLUE set: an unrelated clean set of another type, at the set's size, seen
    # through the same clean prompts and TRAIN baseline (stages.control's rule picks it; the report names it)
    c.control = ml_collections.ConfigDict({"tasks": CONTROL_TASKS})
    # F5 (and its curves) with prompt slot 0, the readout slot, left out of the skill-neuron selection, for the
    # tasks whose reference probe reaches dev balanced accuracy >= 0.65 in docs/LEARNABILITY.md (SST-2 0.783,
    # Movie Rationales 0.655): a rule fixed from the probes before any skill-neuron statistic was seen
    c.suppress_slots = ml_collections.ConfigDict({"tasks": SLOT_TASKS, "slots": "0"})
    # the frozen-feature probe of every clean task with docs/LEARNABILITY.md's reference settings: the reference
    # beside Table 1 (dev and test) and the "beyond this model" rule (analysis.learnability), from this study's own
    # run; the joint (one-sequence) encoding only, the one the reference uses (each text alone: docs/LEARNABILITY.md)
    c.probe = ml_collections.ConfigDict({"train_cap": 4000, "encodings": "joint"})
    return c
