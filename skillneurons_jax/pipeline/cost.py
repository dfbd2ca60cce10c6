"""Estimated seconds of a stage, for --dry_run and the progress line.

FLOPs of the forward passes a stage does (2 x the non-embedding parameters per token plus attention, x3 for a
training step), at `cost.flops_per_second`, plus a fixed `cost.stage_overhead_s` for compilation; split sizes
are the caps, or the public sizes of the full sets (data.tasks.size_hint). Each stage kind's own formula is its
module's `cost(ctx, ...)` (stages/registry.py), written with the helpers of `CostModel`.
"""
from __future__ import annotations

import os
from typing import Optional

import jax

from skillneurons_jax.data import tasks as task_table
from skillneurons_jax.stages import tune as tune_stage

PADDING_FACTOR = 1.3          # length buckets pad the mean text by about this much
# Backend -> FLOP/s assumed when the config gives none. CPU, calibrated on one measured plan: configs/default.py
# (commit d89246b) took 935 s on 2 idle cores where 1.5e10 per core estimated 2529 s (tune 2.9x, transfer and
# predictivity 2.6x, suppression 1.8x too slow), so 4e10 per core (about 1000 s for that plan).
DEFAULT_FLOPS = {"cpu_per_core": 4e10, "accelerator": 3e13}


def flops_per_second(settings) -> float:
    """The rate of `settings` (pipeline.settings.StudySettings): config.cost.flops_per_second, else the
    backend's default."""
    if settings.cost.flops_per_second:
        return float(settings.cost.flops_per_second)
    if jax.default_backend() == "cpu":
        return DEFAULT_FLOPS["cpu_per_core"] * (os.cpu_count() or 1)
    return DEFAULT_FLOPS["accelerator"] * jax.device_count()


class CostModel:
    """FLOPs and seconds of the work of one model's stages (the formulas: each kind's `cost`)."""

    def __init__(self, settings, info, rate: float):
        self.s, self.rate, self.info = settings, rate, info
        cfg = info.config
        # Unknown model (hub, not fetched yet): assume base size.
        self.H = getattr(cfg, "hidden", 768)
        self.F = getattr(cfg, "intermediate", 3072)
        self.L = getattr(cfg, "num_layers", 12)
        self.P = int(settings.tune.get("prompt_len", 100))
        self.max_text = int(settings.tune.get("max_text_tokens", 128))
        self.S = len(settings.seeds)
        self.overhead_s = settings.cost.stage_overhead_s

    def sizes(self, task: str, train_cap: Optional[int] = None, dev_cap: Optional[int] = None
              ) -> tuple[int, int, float]:
        """(train rows, dev rows, padded positions per row) under the plan's max_examples, or under the given
        caps (the tune stage's train_max_examples / dev_max_examples replace it for their split)."""
        train, dev, mean_tokens = task_table.size_hint(task)
        train_cap = self.s.max_examples if train_cap is None else train_cap
        dev_cap = self.s.max_examples if dev_cap is None else dev_cap
        train = train if train_cap is None else min(train, train_cap)
        dev = dev if dev_cap is None else min(dev, dev_cap)
        seq = self.P + PADDING_FACTOR * min(mean_tokens, self.max_text)
        return train, dev, seq

    def forward(self, examples: float, seq: float) -> float:
        """FLOPs of one forward pass over `examples` of `seq` positions, for every seed."""
        per_token = 2 * self.L * (4 * self.H * self.H + 2 * self.H * self.F + 2 * seq * self.H)
        return examples * seq * per_token * self.S

    def frozen_forward(self, examples: float, mean_tokens: float, max_text: int) -> float:
        """FLOPs of one pass of the model alone (no prompt, one copy: e.g. the probe's features) over `examples`
        texts of `mean_tokens` tokens, cut at `max_text`."""
        seq = PADDING_FACTOR * min(mean_tokens, max_text)
        return examples * seq * 2 * self.L * (4 * self.H * self.H + 2 * self.H * self.F + 2 * seq * self.H)

    def seconds(self, flops: float, compiles: int = 1) -> float:
        return round(self.overhead_s * compiles + flops / self.rate, 1)

    def tune_settings(self, task: str) -> dict:
        """The tuning settings the tune stage will use (stages.tune.resolve_tune_config: the config's values,
        the hyperparameter table's for the rest, e.g. the original epochs); the config alone for a model the table
        does not know (the tune stage will say so)."""
        try:
            return tune_stage.resolve_tune_config(self.s.tune, self.info.name, self.info.family, task)
        except ValueError:
            return self.s.tune.to_dict()
