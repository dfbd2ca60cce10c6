"""One process's working state for a plan: each model loaded once, each (model, task) setup built once, each
transfer target prepared once; each stage kind's `run(ctx, ...)` (stages/registry.py) takes what it needs from it.

    session = Session()
    setup = session.setup(model_path, "sst2", tune_settings)        # stages.setup.TaskSetup, built once
    target = session.transfer_target(model_path, "sst2", data_dir, tune_settings, max_examples)

The stage functions take loaded models, so nothing here replaces a module attribute: `Session.load` is the only
place a plan loads a model (through the `loader` it was given, models.load_pretrained by default).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax.numpy as jnp

from skillneurons_jax import models, parallel
from skillneurons_jax.prompt.readout import ReadoutSettings
from skillneurons_jax.stages import transfer as transfer_stage
from skillneurons_jax.stages.setup import DevRows, TaskSetup, make_setup


class Session:
    """Caches for one process: loaded models by path (one at a time by default: a plan runs a model's stages
    together), task setups by (model path, task, readout settings), and the transfer stage's prepared targets."""

    def __init__(self, max_models: int = 1, loader: Callable = models.load_pretrained):
        self.max_models = max(1, int(max_models))
        self.loader = loader
        self._models: dict[tuple, Any] = {}
        self._setups: dict[tuple, TaskSetup] = {}
        self.cache: dict[tuple, Any] = {}       # (kind, model path, ...) -> prepared state (transfer targets)
        self.loads = 0                          # how many times a model was really loaded (tests count it)

    # ---- models ---------------------------------------------------------------------------------------------
    def load(self, path, dtype=None):
        """The loaded model at `path`, loaded once per process (drops the least recently used model beyond
        `max_models`, with everything built from it)."""
        key = (str(path), str(dtype or "float32"))
        if key in self._models:
            self._models[key] = self._models.pop(key)         # most recently used last
            return self._models[key]
        while len(self._models) >= self.max_models:
            old = next(iter(self._models))
            del self._models[old]
            self._setups = {k: v for k, v in self._setups.items() if k[0] != old[0]}
            self.cache = {k: v for k, v in self.cache.items() if len(k) < 2 or k[1] != old[0]}
        loaded = self.loader(path, dtype if dtype is not None else jnp.float32)
        self.loads += 1
        self._models[key] = loaded
        return loaded

    def setup(self, model_path: str, task: str, tune_config) -> TaskSetup:
        """stages.setup.TaskSetup (model, task spec, label words, readout) for (model, task), built once."""
        settings = ReadoutSettings.from_config(tune_config)
        dev_rows = DevRows.from_config(tune_config)
        key = (str(model_path), task, settings, dev_rows)
        if key not in self._setups:
            self._setups[key] = make_setup(self.load(model_path), task, settings, dev_rows)
        return self._setups[key]

    # ---- prepared state shared by stages -------------------------------------------------------------------
    def transfer_target(self, model_path: str, target: str, data_dir, tune_config,
                        max_examples: Optional[int] = None, split: str = "dev") -> transfer_stage.TransferTarget:
        """The prepared target (batches of `split`, compiled step), once per (model, target, data, cap, split)."""
        key = ("transfer", str(model_path), target, str(data_dir), max_examples, split)
        if key not in self.cache:
            setup = self.setup(model_path, target, tune_config)
            mesh = parallel.make_mesh()
            params_key = ("params", str(model_path))        # one device copy of the weights for every target
            if params_key not in self.cache:
                self.cache[params_key] = parallel.replicate(setup.loaded.params, mesh)
            self.cache[key] = transfer_stage.prepare_target(
                setup, data_dir, max_text_tokens=int(tune_config["max_text_tokens"]),
                eval_batch_size=int(tune_config["eval_batch_size"]), max_examples=max_examples, mesh=mesh,
                params=self.cache[params_key], split=split)
        return self.cache[key]
