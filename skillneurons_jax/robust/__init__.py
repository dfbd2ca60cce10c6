"""Robustness beyond the paper (issue 17): offline perturbations (perturb), skill-neuron-anchored prompt tuning
(anchor), activation patching on adversarial inputs (patching) and AdvGLUE adversarial/original pairs (advglue).
See docs/ROBUSTNESS.md."""
