"""One process's working state for a plan: each model loaded once, each (model, task) setup built once, each
transfer target prepared once; the stage functions (skillneurons_jax.stages) are called with what it holds.

    session = Session()
    session.tune(model_path, "sst2", seeds, workdir, data_dir, tune_config)
    session.predictivity(model_path, "advsst2", seeds, workdir, data_dir, tune_config, options=...)

The stage functions take loaded models, so nothing here replaces a module attribute: `Session.load` is the only
place a plan loads a model (through the `loader` it was given, models.load_pretrained by default).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax.numpy as jnp

from skillneurons_jax import models, parallel
from skillneurons_jax.neurons.stats_options import StatsOptions
from skillneurons_jax.prompt.readout import ReadoutSettings
from skillneurons_jax.robust import patching as patching_settings
from skillneurons_jax.robust import stage as robust_stage
from skillneurons_jax.robust import tuning as robust_tuning
from skillneurons_jax.stages import explorer as explorer_stage
from skillneurons_jax.stages import predictivity as predictivity_stage
from skillneurons_jax.stages import suppress as suppress_stage
from skillneurons_jax.stages import transfer as transfer_stage
from skillneurons_jax.stages import tune as tune_stage
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

    # ---- stages -----------------------------------------------------------------------------------------------
    def tune(self, model_path: str, task: str, seeds: Sequence[int], workdir, data_dir, tune_config, *,
             max_examples: Optional[int] = None, max_steps: Optional[int] = None,
             eval_every: Optional[int] = None, reuse_from=None) -> dict:
        """stages.tune.tune with the cached setup; a run that the config's time_limit_s stopped before its
        planned steps raises RuntimeError (the stage is not done; a rerun resumes from the checkpoint).
        reuse_from: a root whose finished run of the same computation is copied (stages.tune.copy_finished_run)."""
        return tune_stage.tune(self.setup(model_path, task, tune_config), seeds, workdir, data_dir, tune_config,
                               model_path=model_path, max_examples=max_examples, max_steps=max_steps,
                               eval_every=eval_every, sidecar_extra={"stage": "tune"}, require_complete=True,
                               reuse_from=reuse_from, replace_changed=True)

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

    def transfer(self, model_path: str, source: str, targets: Sequence[str], seeds: Sequence[int], workdir,
                 data_dir, tune_config, *, max_examples: Optional[int] = None, split: str = "dev") -> list:
        prepared = [self.transfer_target(model_path, t, data_dir, tune_config, max_examples, split) for t in targets]
        return transfer_stage.transfer(prepared, source, seeds, workdir, model_path=model_path, data_dir=data_dir,
                                       max_examples=max_examples)

    def predictivity(self, model_path: str, task: str, seeds: Sequence[int], workdir, data_dir, tune_config, *,
                     options: StatsOptions = StatsOptions(), max_examples: Optional[int] = None,
                     prompt_task: Optional[str] = None, reuse_from=None) -> dict:
        """prompt_task: the clean task whose prompts and TRAIN baseline an adversarial set uses (None: the task
        table's clean task); reuse_from: a root whose result of the same computation is copied."""
        return predictivity_stage.predictivity(
            self.setup(model_path, task, tune_config), workdir, data_dir, seeds, model_path=model_path,
            max_text_tokens=int(tune_config["max_text_tokens"]),
            eval_batch_size=int(tune_config["eval_batch_size"]), options=options, max_examples=max_examples,
            prompt_task=prompt_task, baseline_task=prompt_task, reuse_from=reuse_from)

    def explorer(self, model_path: str, tasks, seeds, workdir, data_dir, tune_config, *,
                 max_examples=None) -> dict:
        return explorer_stage.record_neurons(
            [self.setup(model_path, t, tune_config) for t in tasks], workdir, data_dir, seeds, model_path=model_path,
            max_text_tokens=int(tune_config["max_text_tokens"]), eval_batch_size=int(tune_config["eval_batch_size"]),
            max_examples=max_examples)

    def suppress(self, model_path: str, source: str, target: str, seeds: Sequence[int], workdir, data_dir,
                 tune_config, *, max_examples: Optional[int] = None, **options) -> dict:
        return suppress_stage.suppress(
            self.setup(model_path, target, tune_config), source, workdir, data_dir, seeds, model_path=model_path,
            max_text_tokens=int(tune_config["max_text_tokens"]),
            eval_batch_size=int(tune_config["eval_batch_size"]), max_examples=max_examples, **options)

    def robust_tune(self, model_path: str, task: str, arm: str, settings: robust_tuning.RobustSettings,
                    adversarial: Sequence[str], seeds: Sequence[int], workdir, data_dir, tune_config, *,
                    max_examples: Optional[int] = None) -> dict:
        """One arm of the robustness study (robust.tuning): tuned like the tune stage (the plain arm copies its
        finished prompts), then scored on the clean task's dev split and on `adversarial` (every other scored set:
        pipeline.stages.robust_scored_sets) with the prepared transfer targets."""
        summary = robust_tuning.tune_arm(self.setup(model_path, task, tune_config), arm, settings, seeds, workdir,
                                         data_dir, tune_config, model_path=model_path, max_examples=max_examples,
                                         replace_changed=True)
        targets = [self.transfer_target(model_path, t, data_dir, tune_config, max_examples)
                   for t in [task, *adversarial]]
        robust_tuning.evaluate_arm(targets, task, arm, settings, seeds, workdir, model_path=model_path,
                                   data_dir=data_dir, max_examples=max_examples)
        return summary

    def patching(self, model_path: str, clean: str, adversarial: str, seeds: Sequence[int], workdir, data_dir,
                 tune_config, settings: patching_settings.PatchingSettings, *,
                 max_examples: Optional[int] = None) -> dict:
        return robust_stage.patching_stage(
            self.setup(model_path, adversarial, tune_config), clean, seeds, workdir, data_dir, settings,
            model_path=model_path, max_text_tokens=int(tune_config["max_text_tokens"]),
            batch_size=int(tune_config["eval_batch_size"]), max_examples=max_examples)
