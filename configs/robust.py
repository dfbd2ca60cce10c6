"""The ROBUSTNESS study (issue 17, docs/ROBUSTNESS.md) as one resumable plan:

    python -m launch.reproduce --config=configs/robust.py --workdir work_robust --data_dir ../shared/data

On top of the study's stages (configs/default.py's settings; no configs/validation.py exists to extend), on the
paper's tasks SST-2, QNLI and MRPC with MiniLM and the AdvGLUE sets of the first two:
- `robust_tune/<m>/<task>/<arm>`: three arms with the tune stage's seeds and budget, plain (the plain loss),
  perturbed (cross-entropy on the clean and a perturbed copy of each training batch: the control) and anchored
  (plus the skill-neuron term of robust.anchor), each scored on the clean dev and the AdvGLUE dev sets;
- `patching/<m>/<clean>__<adv>.<source>`: activation patching of the AdvGLUE pairs (advglue/dev_ann.json) with the
  clean prompts, skill vs random neurons, k = 1..15 %.
MRPC has no AdvGLUE set of its own (AdvQQP's clean task is QQP): its arms are scored on AdvQQP as a paraphrase
transfer (robust.extra_targets), with AdvQQP's verbalizer; patching needs a clean task's own prompts, so it runs
for SST-2 -> AdvSST-2 and QNLI -> AdvQNLI only.

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
  robust.anchor              robust.anchor.AnchorSettings: strength (the anchored arm), top_percent, scope, mode,
                             penalty, margin, tokens, epsilon, adversarial_steps (perturbed_weight is set per arm)
  patching                   robust.patching.PatchingSettings: percents, source (original | mean), scope,
                             random_draws, random_seed
"""
import ml_collections

from configs import default

# Label-bearing words of the sentiment and entailment tasks, kept out of the neighbour substitutions.
PROTECTED_WORDS = ("good,great,bad,awful,terrible,excellent,best,worst,love,hate,not,no,never,nothing,yes,"
                   "positive,negative,boring,funny,dull,fun")


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.tasks = "sst2,qnli,mrpc,advsst2,advqnli"
    c.optional_tasks = ""
    c.seeds = "0,1,2"                                 # intervals over seeds need at least 3
    c.suppression.extra_pairs = ""
    c.robust = ml_collections.ConfigDict(dict(
        tasks="sst2,qnli,mrpc",
        arms="plain,perturbed,anchored",
        perturbations=ml_collections.ConfigDict(dict(char_swap=0.05, word_drop=0.05, neighbour=0.1)),
        perturbation_mode="one",
        neighbour_k=8,
        protected_words=PROTECTED_WORDS,
        extra_targets="mrpc:advqqp",                  # paraphrase transfer: MRPC's arms on AdvQQP
        anchor=ml_collections.ConfigDict(dict(strength=1.0, top_percent=1.0, scope="layer", mode="sign",
                                              penalty="hinge", margin=0.0, tokens="all", epsilon=0.0,
                                              adversarial_steps=1))))
    c.patching = ml_collections.ConfigDict(dict(percents="1,2,3,4,5,6,7,8,9,10,11,12,13,14,15", source="original",
                                                scope="layer", random_draws=5, random_seed=0))
    return c
