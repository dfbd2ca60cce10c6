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
    """

    positions: str = "prompt"
    threshold: str = "mean"
    token_aggregation: str = "max"
    seed_aggregation: str = "mean"
    pre_activation: bool = False
    median_bins: int = 16
    median_max_passes: int = 8

    def __post_init__(self):
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
