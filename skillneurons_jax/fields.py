"""Config fields and flags, checked one way: numbers against their allowed range, lists, unknown keys.

Every error is one ValueError naming the field as the command spells it, its value and what is allowed:
    --config.suppression.max_examples=-1: allowed: an integer >= 1, or None (no cap)
pipeline/settings.py holds the study's table of ranges; each stage kind checks its own block with the same
helpers (its settings type's from_config).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional


@dataclasses.dataclass(frozen=True)
class Range:
    low: float                      # smallest allowed value
    high: float = math.inf          # largest allowed value
    integer: bool = True
    none: Optional[str] = None      # what None means where it is allowed (None: not allowed)
    open_low: bool = False          # low itself excluded

    def problem(self, value) -> Optional[str]:
        """None when `value` is allowed, else the allowed range in words."""
        if value is None:
            return None if self.none is not None else self.describe()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return self.describe()
        if self.integer and not (isinstance(value, int) or float(value).is_integer()):
            return self.describe()
        if math.isnan(float(value)) or (not math.isfinite(float(value)) and self.high != math.inf):
            return self.describe()
        if value < self.low or value > self.high or (self.open_low and value == self.low):
            return self.describe()
        return None

    def describe(self) -> str:
        what = "an integer" if self.integer else "a number"
        low = f"> {self.low:g}" if self.open_low else f">= {self.low:g}"
        text = f"{what} {low}" + (f" and <= {self.high:g}" if self.high != math.inf else "")
        return text + (f", or None ({self.none})" if self.none is not None else "")


CAP = Range(1, none="no cap")


def check(spelled: str, value, rule: Range):
    """`value` if `rule` allows it (an int for an integer rule), else ValueError `<spelled>=<value>: allowed:
    <range>`."""
    problem = rule.problem(value)
    if problem is not None:
        raise ValueError(f"{spelled}={value!r}: allowed: {problem}")
    if value is None:
        return None
    return int(value) if rule.integer else float(value)


def as_list(value) -> list:
    """A comma-separated string or a sequence as a list (None: empty)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def plain(value):
    """A ConfigDict (or mapping with to_dict) as a plain dict; anything else unchanged."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


def block_dict(block) -> dict:
    """A config block (ConfigDict, mapping or None) as a plain dict."""
    return dict(plain(block) or {})


def refuse_unknown(block: Mapping, known, where: str) -> None:
    """ValueError naming the first key of `block` that is not in `known` (`where`: the block's spelling)."""
    unknown = sorted(set(block) - set(known))
    if unknown:
        raise ValueError(f"{where}{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")


# The study config's own fields (pipeline/settings.py) and the launch scripts' flags that share them.
# field (as the config spells it below the study config) -> allowed range. The tuning block's own fields are
# checked by stages.tune.check_tune_config (its launch script reads that block alone).
RANGES: dict[str, Range] = {
    "max_examples": CAP,
    "max_steps": Range(1, none="the config's budget"),
    "eval_every": Range(0, none="the config's; 0 = once per epoch"),
    "seeds": Range(0),
    "analysis.n_permutations": Range(1),
    "analysis.permutation_seed": Range(0),
    "analysis.alpha": Range(0, 1, integer=False, open_low=True),
    "analysis.confidence": Range(0, 1, integer=False, open_low=True),
    "analysis.dpi": Range(1),
    "analysis.top_fraction": Range(0, 1, integer=False, open_low=True),
    "analysis.type_permutations": Range(1),
    "analysis.type_exact_max": Range(1),
    "analysis.sign_flips": Range(1),
    "cost.flops_per_second": Range(0, integer=False, open_low=True, none="the backend's default rate"),
    "cost.stage_overhead_s": Range(0, integer=False),
}


def check_field(field: str, value, spelled: Optional[str] = None):
    """`value` if RANGES[field] allows it, else ValueError `<spelled>=<value>: allowed: <range>` (check).
    `spelled`: the name as the command spells it (default `--config.<field>`). Integers come back as int."""
    return check(spelled or f"--config.{field}", value, RANGES[field])


def parse_seeds(value, spelled: str) -> tuple[int, ...]:
    """Distinct non-negative integers from "0,1,2" or a sequence; ValueError naming `spelled`."""
    try:
        seeds = [int(s) for s in as_list(value)]
    except (TypeError, ValueError):
        raise ValueError(f"{spelled}={value!r}: allowed: distinct integers >= 0, comma-separated") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"{spelled}={value!r}: allowed: distinct integers >= 0, comma-separated")
    return tuple(seeds)
