"""One process's working state for a plan: each model loaded once, each (model, task) readout built once, and
prompt tuning called in-process.

The stage entry points of the other rooms (launch.predictivity.run_predictivity, launch.suppress.run_suppression)
take a model PATH and load the model themselves through `launch.common.setup_model_and_task`, which calls
`skillneurons_jax.models.load_pretrained` at call time. `Session.activate()` makes that name a memoized loader for
the duration of the plan, so a model is read and converted once per process, not once per stage. (The thinnest
adapter that works without changing their signatures; passing a `LoadedModel` in would be cleaner.)

`launch/tune.py` defines its absl `--config` flag at import, so it cannot be imported next to launch/reproduce.py;
both call `skillneurons_jax.prompt.tune_task.tune_task` (hyperparameter table, batches, prompt init,
`prompt.train.train`, run_info / sidecar), `Session.tune` with the session's cached model and readout.
"""
from __future__ import annotations

import contextlib
from typing import Any, Optional, Sequence

# The fields of configs/tune.py a prompt's readout depends on (they must match between tuning and use).
READOUT_FIELDS = ("readout", "mask_slot", "prefix_positions", "tied_scale")


class Session:
    """Caches for one process: loaded models by path (one at a time: a plan runs a model's stages together),
    task setups by (model path, task), and whatever the transfer stage keeps per target (compiled steps)."""

    def __init__(self, max_models: int = 1):
        self.max_models = max(1, int(max_models))
        self._models: dict[str, Any] = {}
        self._setups: dict[tuple, Any] = {}
        self.cache: dict[tuple, Any] = {}       # free-form per-(kind, model path, ...) entries of other modules
        self.loads = 0                          # how many times a model was really loaded (tests count it)
        self._original_loader = None

    # ---- models ---------------------------------------------------------------------------------------------
    def load(self, path, dtype=None, **kw):
        """load_pretrained(path) once per process (drops the least recently used model beyond `max_models`)."""
        import jax.numpy as jnp
        key = (str(path), str(dtype or "float32"), tuple(sorted(kw.items())))
        if key in self._models:
            self._models[key] = self._models.pop(key)         # most recently used last
            return self._models[key]
        while len(self._models) >= self.max_models:
            old = next(iter(self._models))
            del self._models[old]
            self._setups = {k: v for k, v in self._setups.items() if k[0] != old[0]}
            self.cache = {k: v for k, v in self.cache.items() if len(k) < 2 or k[1] != old[0]}
        loader = self._original_loader or _models_module().load_pretrained
        loaded = loader(path, dtype if dtype is not None else jnp.float32, **kw)
        self.loads += 1
        self._models[key] = loaded
        return loaded

    @contextlib.contextmanager
    def activate(self):
        """Within the block, `skillneurons_jax.models.load_pretrained` is this session's memoized loader."""
        models = _models_module()
        self._original_loader = models.load_pretrained

        def cached(path, dtype=None, **kw):
            return self.load(path, dtype, **kw)

        models.load_pretrained = cached
        try:
            yield self
        finally:
            models.load_pretrained = self._original_loader
            self._original_loader = None

    def setup(self, model_path: str, task: str, tune_config):
        """launch.common.Setup (model, task spec, label words, readout) for (model, task), built once."""
        from launch import common
        readout_key = tuple(str(tune_config.get(k, None)) for k in READOUT_FIELDS)
        key = (str(model_path), task, readout_key)
        if key not in self._setups:
            with self.activate() if self._original_loader is None else contextlib.nullcontext():
                self._setups[key] = common.setup_model_and_task(model_path, task, tune_config)
        return self._setups[key]

    # ---- prompt tuning ----------------------------------------------------------------------------------------
    def tune(self, model_path: str, task: str, seeds: Sequence[int], workdir, data_dir, tune_config, *,
             max_examples: Optional[int] = None, max_steps: Optional[int] = None,
             eval_every: Optional[int] = None) -> dict:
        """Tunes one prompt per seed of `task` (all seeds in one compiled step); writes
        WORKDIR/prompts/<model>/<task>/seed_<s>/{prompt.npy, metrics.jsonl, state/, run_config.json}.
        A rerun resumes from the last checkpoint (prompt.train); a run that the config's time_limit_s stopped
        early raises RuntimeError (the stage is not done). Returns the summary launch.tune prints."""
        from skillneurons_jax.prompt import tune_task
        return tune_task.tune_task(self.setup(model_path, task, tune_config), seeds, workdir, data_dir, tune_config,
                                   model_path=model_path, max_examples=max_examples, max_steps=max_steps,
                                   eval_every=eval_every, sidecar_extra={"stage": "tune"}, require_complete=True)


def _models_module():
    import skillneurons_jax.models as models
    return models
