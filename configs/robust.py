"""The ROBUSTNESS study (issue 17, docs/ROBUSTNESS.md) as one resumable plan:

    python -m launch.reproduce --config=configs/robust.py --workdir work_robust --data_dir ../shared/data \
        [--config.reuse_from=WORKDIR_OF_THE_VALIDATION_STUDY]

Power (issue #29, not yet run): the validation config's power settings (5 seeds, full dev measurement rows, the
recipe, learnability budgets), arms on SST-2 only, every arm scored on the full AdvGLUE sets, patching on
every pair with 5 random draws per level drawn outside the skill neurons (`patching.random_from = "rest"`);
`--dry_run` estimate: POWER_ESTIMATE below. What follows describes the earlier design and its measured run.

configs/validation.py's settings (the recipe MiniLM is tuned with there: 20 prompt tokens, 64 text tokens, batch
16, 3e-2, label-word init, 150 steps (SST-2: 450), 3 seeds, 112-row statistics) on the paper's tasks SST-2, QNLI
and MRPC with the AdvGLUE sets of the first two: its tune, predictivity and transfer stages compute what the
validation study's do for those tasks (run it in a workdir of its own; with `--config.reuse_from` naming the
validation study's finished workdir, its tune runs and predictivity results are copied, each only where it is
the same computation). Its document, with every measured figure and the run time: docs/ROBUSTNESS_RESULTS.md
(report.robustness_doc). On top of them:
- `robust_tune/<m>/<task>/<arm>`: three arms with the tune stage's seeds and budget, plain (the plain loss: it
  copies the tune stage's prompts, the same computation), perturbed (cross-entropy on the clean and a perturbed
  copy of each training batch: the control) and anchored (plus the skill-neuron term of robust.anchor), each
  scored on the clean dev, its AdvGLUE dev sets and its scored transfers: MRPC's on AdvQQP (a paraphrase
  transfer: AdvQQP's clean task is QQP, absent here) and SST-2's on Movie Rationales (the other sentiment task:
  the proposal's "transfer this prompt to other tasks of that type"; only its dev split is read);
- `robust_predictivity/<m>/<task>/<arm>`: each arm's predictivity on its clean dev and its adversarial sets, for
  the table of the clean skill neurons' Pred on adversarial data per arm;
- `robust_perturbed_predictivity/<m>/<task>/<arm>`: the same on a copy of the clean dev rows perturbed as the arms
  were trained (robust.perturbations, a fixed recorded seed): held-out perturbations of the training kind, the
  manipulation check of the anchor (robust/<arm>/predictivity_perturbed_dev/<m>/<task>.npz);
- `patching/<m>/<clean>__<adv>.<source>`: activation patching of the AdvGLUE pairs (advglue/dev_ann.json) with the
  clean prompts, skill vs random neurons, k = 1..15 %; SST-2 -> AdvSST-2 and QNLI -> AdvQNLI (patching needs a
  clean task's own prompts: none for AdvQQP).
Suppression is the validation study's business: here only SST-2's own curves.

Fields (every one can be changed with --config.robust.FIELD / --config.patching.FIELD; delete a block to switch
its stages off: configs/default.py has neither):
  robust.tasks               clean tasks of the arms (comma-separated; empty: every clean task of the plan)
  robust.arms                plain,perturbed,anchored (a subset)
  robust.perturbations       {name: rate}, names of robust.perturb.OPERATIONS (or "name:rate,..." on the line)
  robust.perturbation_mode   "all" (every operation on every example) | "one" (one drawn per example)
  robust.neighbour_k         candidates per token of the `neighbour` operation
  robust.protected_words     words the `neighbour` operation never replaces nor inserts (polarity words: their
                             embedding neighbours are often antonyms)
  robust.extra_targets       "clean:target,...": sets the arms of a clean task are scored on besides its own
                             adversarial sets (present data only)
  robust.transfer_within_type  also score the arms on the plan's other clean tasks of the same type
  robust.predictivity        the robust_predictivity and robust_perturbed_predictivity stages (on by default)
  robust.anchor              robust.anchor.AnchorSettings: strength (the anchored arm), top_percent, scope, mode,
                             penalty, margin, tokens, epsilon, adversarial_steps (perturbed_weight is set per arm);
                             top_percent and scope also name the skill neurons of the predictivity table
  patching                   robust.patching.PatchingSettings: percents, source (original | mean), scope,
                             random_draws, random_seed
"""
import ml_collections

from configs import validation

# Label-bearing words of the sentiment and entailment tasks, kept out of the neighbour substitutions.
PROTECTED_WORDS = ("good,great,bad,awful,terrible,excellent,best,worst,love,hate,not,no,never,nothing,yes,"
                   "positive,negative,boring,funny,dull,fun")


# --dry_run of get_config() at the validation config's calibrated cost (2.1e11 FLOP/s, 2 s per compilation):
# 5782 s (96.4 min) with nothing to copy (robust_tune 3478 s, tune 1215, patching 327, the rest 762); the tune and
# clean predictivity stages that reuse_from copies from the validation workdir take seconds.
POWER_ESTIMATE = "5782 s (96.4 min)"
COMMAND = ("python -m launch.reproduce --config=configs/robust.py --data_dir /work/shared/data --workdir "
           "workdir/robust --config.reuse_from=workdir/validation")


def get_config() -> ml_collections.ConfigDict:
    c = validation.get_config()
    # Power (issue #29): the validation config's recipe, 5 seeds and full rows (validation.power); the arms are
    # SST-2's only: MRPC's and QNLI's frozen-feature probes sit within about 10 points of chance
    # (docs/LEARNABILITY.md) and their prompts never learned, and with 5 seeds their arms would take the study past
    # 120 min (148.6 min estimated with SST-2's and QNLI's); every arm is scored on the full AdvGLUE sets (148
    # AdvSST-2 records, no row cap reaches them), patching on every pair (AdvSST-2 130, AdvQNLI 133) with QNLI's
    # clean prompts.
    c.tasks = "sst2,qnli,advsst2,advqnli"
    c.optional_tasks = ""
    c.adversarial_prompts = ""                        # AdvQQP is a scored set of MRPC's arms, not a plan task
    c.seeds = validation.POWER_SEEDS                  # issue #29: >= 5 seeds
    c.suppression.tasks = "sst2"
    c.suppression.extra_pairs = ""
    c.report.validation_doc = ""                      # docs/VALIDATION.md is the validation config's
    # F6a's control pairs, F5 without slot 0 and the probes answer the validation document
    # (and pruning too: the validation document's), not planned here
    del c.control, c.suppress_slots, c.probe, c.prune
    c.report.robustness_doc = "docs/ROBUSTNESS_RESULTS.md"   # relative to the directory the command runs in
    c.report.robustness_command = COMMAND
    c.robust = ml_collections.ConfigDict(dict(
        tasks="sst2",
        arms="plain,perturbed,anchored",
        perturbations=ml_collections.ConfigDict(dict(char_swap=0.05, word_drop=0.05, neighbour=0.1)),
        perturbation_mode="one",
        neighbour_k=8,
        protected_words=PROTECTED_WORDS,
        extra_targets="sst2:movierationales",                # the other sentiment task
        transfer_within_type=True,
        predictivity=True,
        anchor=ml_collections.ConfigDict(dict(strength=1.0, top_percent=1.0, scope="layer", mode="sign",
                                              penalty="hinge", margin=0.0, tokens="all", epsilon=0.0,
                                              adversarial_steps=1))))
    # k = 1..15 % at 5 levels, 5 random draws each (issue #29: >= 5): 32 forward passes per seed and set
    c.patching = ml_collections.ConfigDict(dict(percents="1,3,5,10,15", source="original",
                                                scope="layer", random_draws=5, random_seed=0,
                                                random_from="rest"))   # controls outside the skill neurons
    return c
