"""One process's working state for a plan: each model loaded once, each (model, task) readout built once, and
prompt tuning called in-process.

The stage entry points of the other rooms (launch.predictivity.run_predictivity, launch.suppress.run_suppression)
take a model PATH and load the model themselves through `launch.common.setup_model_and_task`, which calls
`skillneurons_jax.models.load_pretrained` at call time. `Session.activate()` makes that name a memoized loader for
the duration of the plan, so a model is read and converted once per process, not once per stage. (The thinnest
adapter that works without changing their signatures; passing a `LoadedModel` in would be cleaner.)

`launch/tune.py` defines its absl `--config` flag at import, so it cannot be imported next to launch/reproduce.py;
`Session.tune` is the same sequence of calls as its `main` (hyperparameter table, prompt init, `prompt.train.train`,
the same run_info / sidecar fields, so launch.predictivity's prompt checks accept the prompts).
"""
from __future__ import annotations

import contextlib
import pathlib
import sys
import time
from typing import Any, Optional, Sequence

from skillneurons_jax import io as sio

# The fields of configs/tune.py a prompt's readout depends on (they must match between tuning and use).
READOUT_FIELDS = ("readout", "mask_slot", "prefix_positions", "tied_scale")


def resolve_tune_config(tune_config, model_name: str, family: str, task: str, *, max_steps=None,
                        eval_every=None) -> dict:
    """configs/tune.py values + the per-model/per-task table (configs/hparams.py) for the fields left None;
    explicit `max_steps` / `eval_every` win (as launch.tune's flags do)."""
    from configs import hparams
    cfg = tune_config.to_dict() if hasattr(tune_config, "to_dict") else dict(tune_config)
    for key, value in hparams.lookup(model_name, family, task).items():
        if cfg.get(key) is None:
            cfg[key] = value
    if cfg.get("init") is None:
        cfg["init"] = "normal"
    if max_steps is not None:
        cfg["max_steps"] = int(max_steps)
    if eval_every is not None:
        cfg["eval_every"] = int(eval_every)
    for key in ("learning_rate", "batch_size"):
        if cfg.get(key) is None:
            raise ValueError(f"{key} is set neither in the config nor in configs/hparams.py for {model_name!r}")
    return cfg


def init_vocab_range(cfg: dict, vocab_size: int):
    """As launch.tune: the config's range, else ids 1000..6000 (clipped to small vocabularies)."""
    if cfg.get("init_vocab_range"):
        low, high = cfg["init_vocab_range"]
        return int(low), int(high)
    return min(1000, vocab_size // 10), min(6000, vocab_size)


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
        A rerun resumes from the last checkpoint (prompt.train). Returns the summary launch.tune prints."""
        import jax
        import numpy as np
        from launch import common
        from skillneurons_jax import parallel
        from skillneurons_jax.prompt import soft_prompt, train

        t_start = time.time()
        seeds = [int(s) for s in seeds]
        setup = self.setup(model_path, task, tune_config)
        loaded, readout = setup.loaded, setup.readout
        cfg = resolve_tune_config(tune_config, loaded.name, loaded.family, setup.task.name, max_steps=max_steps,
                                  eval_every=eval_every)
        soft_prompt.check_prompt_len(cfg["prompt_len"])
        mesh = parallel.make_mesh()
        parallel.check_divisible(cfg["batch_size"], mesh, what="global batch (config batch_size)")
        train_enc = common.encode_split(setup, "train", data_dir, max_examples, cfg["max_text_tokens"])
        dev_cap = cfg.get("dev_max_examples") or max_examples
        dev_enc = common.encode_split(setup, "dev", data_dir, dev_cap, cfg["max_text_tokens"])
        buckets = common.buckets_for([train_enc, dev_enc])
        eval_bs = common.round_up(cfg["eval_batch_size"], parallel.num_data_shards(mesh))
        dev_batches = list(common.model_batches(dev_enc, eval_bs, buckets=buckets, sort_by_length=True))
        bs = int(cfg["batch_size"])
        if len(train_enc) < bs:
            raise ValueError(f"task {task!r}: {len(train_enc)} training examples, fewer than one batch of {bs}")

        def train_batches(seed, epoch):
            order_seed = train.epoch_seed(seed, epoch)
            out = list(common.model_batches(train_enc, bs, seed=order_seed, drop_last=True, buckets=buckets,
                                            sort_by_length=bool(cfg["group_by_length"])))
            if cfg["group_by_length"]:
                out = [out[i] for i in np.random.default_rng(order_seed).permutation(len(out))]
            return out

        embed = jax.jit(lambda ids: loaded.module.apply({"params": loaded.params}, ids, method="embed_tokens"))
        init = soft_prompt.init_prompts(
            seeds, cfg["prompt_len"], loaded.config.hidden, cfg["init"], embed_fn=embed,
            vocab_size=loaded.config.vocab_size, label_ids=setup.label_words.ids,
            label_lengths=setup.label_words.lengths, std=cfg["init_std"],
            vocab_range=init_vocab_range(cfg, loaded.config.vocab_size))
        tcfg = train.TrainConfig(
            learning_rate=float(cfg["learning_rate"]), batch_size=bs, epochs=int(cfg["epochs"]),
            max_steps=cfg.get("max_steps"), eval_every=int(cfg["eval_every"]),
            eval_at_start=bool(cfg["eval_at_start"]), warmup_steps=int(cfg["warmup_steps"]),
            clip_norm=float(cfg["clip_norm"]), weight_decay=float(cfg["weight_decay"]),
            keep_checkpoints=int(cfg["keep_checkpoints"]), progress=bool(cfg["progress"]),
            time_limit_s=float(cfg.get("time_limit_s") or 0.0))
        # The same fields as launch.tune: what a resumed run must share, and what launch.predictivity checks.
        run_info = {"model": loaded.name, "family": loaded.family, "task": setup.task.name,
                    "readout": readout.kind.name, "mask_slot": readout.mask_slot,
                    "prefix_positions": readout.prefix_positions, "tied_scale": cfg["tied_scale"],
                    "label_words": list(setup.label_words.words), "prompt_init": cfg["init"],
                    "init_std": cfg["init_std"], "max_text_tokens": cfg["max_text_tokens"],
                    "group_by_length": bool(cfg["group_by_length"]),
                    "train_examples": len(train_enc), "dev_examples": len(dev_enc)}
        sidecar = {"config": cfg, "model_path": str(model_path), "data_dir": str(data_dir), "seeds": seeds,
                   "devices": jax.device_count(), "processes": jax.process_count(), "stage": "tune"}
        run_dirs = [common.run_dir(workdir, loaded.name, setup.task.name, s) for s in seeds]
        if jax.process_index() == 0:
            for d in run_dirs:
                d.mkdir(parents=True, exist_ok=True)
                sio.write_sidecar(d / train.METRICS_FILE, **run_info, **sidecar)
        print(f"prompt tuning {loaded.name} on {setup.task.name}: {len(train_enc)} train / {len(dev_enc)} dev "
              f"examples, seeds {seeds}", file=sys.stderr, flush=True)
        result = train.train(readout.score_fn(), loaded.params, init, seeds, train_batches, dev_batches, tcfg,
                             run_dirs=run_dirs, pad_id=train_enc.pad_id, mesh=mesh, run_info=run_info,
                             sidecar=sidecar, description=f"{loaded.name}/{setup.task.name}")
        planned = tcfg.epochs * (len(train_enc) // bs)
        planned = planned if tcfg.max_steps is None else min(planned, int(tcfg.max_steps))
        if result.steps < planned:   # config time_limit_s stopped it: not done, a rerun resumes from the checkpoint
            raise RuntimeError(f"tuning {loaded.name}/{setup.task.name} stopped at step {result.steps} of {planned} "
                               f"(time_limit_s={tcfg.time_limit_s}); rerun to continue from the checkpoint")
        return {"model": loaded.name, "task": setup.task.name, "seeds": seeds, "steps": result.steps,
                "resumed_from": result.resumed_from,
                "best_dev_accuracy": [float(a) for a in result.best_accuracy],
                "prompts": [str(pathlib.Path(d) / train.PROMPT_FILE) for d in run_dirs],
                "wall_s": round(time.time() - t_start, 1)}


def _models_module():
    import skillneurons_jax.models as models
    return models
