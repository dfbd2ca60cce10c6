"""The options of the skill-neuron statistics, one frozen dataclass (a config block), validated on creation."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

# One table: option name -> allowed values (the first is the default, as in the paper and the original code).
CHOICES = {
    # Which token positions the caller captures (Capture(start, length)); the statistics only see T.
    "positions": ("prompt", "all"),
    # Per-neuron threshold b in eq. 3: the mean (eq. 2) or the median of the TRAIN activations.
    "threshold": ("mean", "median"),
    # How pred_s(l, n, j) is reduced over tokens j (eq. 5 uses max).
    "token_aggregation": ("max", "mean"),
    # How the per-seed predictivities are reduced over seeds s (eq. 5 uses mean).
    "seed_aggregation": ("mean", "min"),
}


@dataclasses.dataclass(frozen=True)
class StatsOptions:
    """How neuron predictivity is computed.

    positions:          "prompt" (the paper) | "all" — recorded; the caller picks the captured slice.
    threshold:          "mean" (eq. 2) | "median" (exact, by bisection passes over TRAIN; see median_*).
    token_aggregation:  "max" (eq. 5) | "mean" over prompt tokens.
    seed_aggregation:   "mean" (eq. 5) | "min" over seeds.
    pre_activation:     False = post-activation (the paper); True = the FFN's pre-activation
                        (models.ffn.Capture(pre_activation=True)) — recorded; the caller captures it.
    median_bins:        candidate thresholds per median pass are median_bins - 1 (memory: that many int32
                        counts per [seed, layer, token, neuron]); each pass narrows the bracket by this factor.
    median_max_passes:  stop after this many passes over TRAIN even if not exact (32 bits / log2(bins) passes
                        always suffice for exactness; the result records the remaining bracket width).
    label_permutations: R label permutations of the DEV labels counted in the same DEV pass (neurons.predictivity
                        ColumnState): Pred's null at this split's n (its floor per layer, and the max Pred of pure
                        noise, F3a's null). 0 = none (the result is then exactly what it was without the option).
                        Memory: R x S x L x T x N int32 counts during the pass.
    subsample_sizes:    Pred also on m of the DEV rows (true labels), for each m here below the split's n, so that
                        Pred can be compared with a smaller set at matched n (e.g. a clean task against its
                        adversarial set); () = none.
    subsample_draws:    draws of m rows per size (their Pred is averaged: the expected Pred at n = m).
    permutation_seed:   seed of the permutations and subsamples.
    """

    positions: str = "prompt"
    threshold: str = "mean"
    token_aggregation: str = "max"
    seed_aggregation: str = "mean"
    pre_activation: bool = False
    median_bins: int = 16
    median_max_passes: int = 8
    label_permutations: int = 0
    subsample_sizes: tuple[int, ...] = ()
    subsample_draws: int = 1
    permutation_seed: int = 0

    def __post_init__(self):
        if isinstance(self.subsample_sizes, str):          # a config's "78,112"
            object.__setattr__(self, "subsample_sizes", tuple(int(v) for v in self.subsample_sizes.split(",")
                                                              if v.strip()))
        elif isinstance(self.subsample_sizes, int) and not isinstance(self.subsample_sizes, bool):
            object.__setattr__(self, "subsample_sizes", (self.subsample_sizes,))
        else:
            object.__setattr__(self, "subsample_sizes", tuple(self.subsample_sizes))
        if not all(isinstance(m, int) and not isinstance(m, bool) and m >= 2 for m in self.subsample_sizes):
            raise ValueError(f"StatsOptions.subsample_sizes must be integers >= 2, got {self.subsample_sizes!r}")
        for name in ("label_permutations", "permutation_seed"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise ValueError(f"StatsOptions.{name} must be an int >= 0, got {value!r}")
        if not (isinstance(self.subsample_draws, int) and self.subsample_draws >= 1):
            raise ValueError(f"StatsOptions.subsample_draws must be an int >= 1, got {self.subsample_draws!r}")
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"StatsOptions.{name} = {value!r}; allowed: {', '.join(map(repr, allowed))}")
        if not isinstance(self.pre_activation, bool):
            raise ValueError(f"StatsOptions.pre_activation must be a bool, got {self.pre_activation!r}")
        if not (isinstance(self.median_bins, int) and self.median_bins >= 2):
            raise ValueError(f"StatsOptions.median_bins must be an int >= 2, got {self.median_bins!r}")
        if not (isinstance(self.median_max_passes, int) and self.median_max_passes >= 1):
            raise ValueError(f"StatsOptions.median_max_passes must be an int >= 1, got {self.median_max_passes!r}")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> "StatsOptions":
        """From a dict or ml_collections ConfigDict; unknown keys are an error (typos must not pass silently)."""
        if cfg is None:
            return cls()
        items = dict(cfg.items())
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(items) - known)
        if unknown:
            raise ValueError(f"unknown statistics option(s) {unknown}; known: {sorted(known)}")
        return cls(**items)

    @classmethod
    def from_config(cls, block, where: str = "--config.stats.") -> "StatsOptions":
        """From a config block, with every error named as the command spells the field (`where` + name)."""
        items = dict(block.to_dict() if hasattr(block, "to_dict") else (block or {}))
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(items) - set(known))
        if unknown:
            raise ValueError(f"{where}{unknown[0]}: unknown key (known: {', '.join(known)})")
        try:
            return cls(**items)
        except ValueError as error:
            raise ValueError(str(error).replace("StatsOptions.", where)) from None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["subsample_sizes"] = list(self.subsample_sizes)
        return out
