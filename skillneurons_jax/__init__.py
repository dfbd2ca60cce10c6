"""skillneurons_jax: skill neurons and robustness in Prompt Tuning, in JAX/Flax."""

__version__ = "0.1.0"
