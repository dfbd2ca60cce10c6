"""Robustness beyond the paper (issue 17): offline perturbations (perturb), skill-neuron-anchored prompt tuning
(anchor), activation patching on adversarial inputs (patching) and AdvGLUE adversarial/original pairs (advglue).
See docs/ROBUSTNESS.md."""

# The robustness study's stage kinds register for the plan here (the core never imports this package).
from skillneurons_jax.robust import (perturbed_predictivity_stage, predictivity_stage, stage,  # noqa: E402,F401
                                     tune_stage)
