"""Prompt Tuning: several seeds trained in one compiled step, data parallel over a device mesh, resumable.

Only the prompts `[S, P, H]` (S seeds) are trained; the frozen model parameters are an input of the compiled
step, replicated on every device and never differentiated (the gradient is taken w.r.t. the prompt only).
A global batch `[S, B, T]` (each seed its own examples, its own order) is split along B over the mesh's
"data" axis; XLA adds the all-reduce. One step = `vmap` over seeds of (loss, grad, AdamW update).

The model enters only through a score function (`Readout.scores` for real models):
    score_fn(params, prompt [P, H], batch {input_ids [B, T], attention_mask [B, T], ...}) -> scores [B, C]
and the data only through `train_batches(seed, epoch) -> that epoch's batches` and a fixed list of dev batches,
so the loop itself knows nothing about models or tasks.

Per seed, under `run_dir` (`WORKDIR/prompts/<model>/<task>/seed_<s>/`):
    prompt.npy (+ prompt.npy.json)  best prompt by dev accuracy [P, H] (first best wins ties), written atomically
    metrics.jsonl                   one JSON object per evaluation (step, epoch, dev_accuracy, dev_f1, ...)
    state/                          orbax checkpoints of the latest state (prompt, optimizer, best so far, step)
    run_config.json                 what must match for a rerun to resume instead of starting over
The data position is the step count: update u uses batch u % steps_per_epoch of epoch u // steps_per_epoch,
and each (seed, epoch) order is a pure function of the two, so a resumed run sees exactly the batches that an
uninterrupted run would have seen.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from skillneurons_jax import io as sio
from skillneurons_jax import parallel
from skillneurons_jax.prompt import checkpoint as ckpt
from skillneurons_jax.prompt import metrics as mx

ScoreFn = Callable[[Any, jax.Array, Mapping[str, jax.Array]], jax.Array]
BatchFn = Callable[[int, int], Sequence[Mapping[str, np.ndarray]]]

PROMPT_FILE = "prompt.npy"
METRICS_FILE = "metrics.jsonl"
RUN_CONFIG_FILE = "run_config.json"
# Batch entries with a token axis, and what pads them when seeds' batches are brought to one length.
TOKEN_AXIS_PAD = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0}  # None: the tokenizer's pad id


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    learning_rate: float
    batch_size: int                  # global batch per seed (split over the devices)
    epochs: int = 1
    max_steps: Optional[int] = None  # stop after this many updates even within an epoch
    eval_every: int = 0              # evaluate every N updates; 0 = once per epoch
    eval_at_start: bool = False      # also evaluate the initial prompts (step 0)
    warmup_steps: int = 0            # linear warm-up from 0 to learning_rate, then constant
    clip_norm: float = 0.0           # global-norm gradient clipping per seed; 0 = off
    weight_decay: float = 0.0        # the original uses 0
    keep_checkpoints: int = 2
    progress: bool = True
    time_limit_s: float = 0.0        # > 0: after this many seconds, evaluate, checkpoint and stop (rerun resumes)

    # Fields a resumed run must share with the run it continues (max_steps / epochs may grow).
    RESUME_KEYS = ("learning_rate", "batch_size", "eval_every", "warmup_steps", "clip_norm", "weight_decay")

    def validate(self) -> "TrainConfig":
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
                and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive finite number, got {self.learning_rate!r}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (or None), got {self.max_steps}")
        for name in ("eval_every", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.clip_norm < 0 or self.weight_decay < 0 or self.time_limit_s < 0:
            raise ValueError("clip_norm, weight_decay and time_limit_s must be >= 0")
        return self

    def fingerprint(self) -> dict:
        return {k: getattr(self, k) for k in self.RESUME_KEYS}


@dataclasses.dataclass
class TrainResult:
    prompts: np.ndarray          # [S, P, H] after the last step
    best_prompts: np.ndarray     # [S, P, H] best by dev accuracy
    best_accuracy: np.ndarray    # [S]
    best_f1: np.ndarray          # [S]
    best_step: np.ndarray        # [S]
    steps: int                   # updates done in total (including those before a resume)
    resumed_from: Optional[int]  # step restored from a checkpoint, None for a fresh start
    history: list                # one dict per evaluation and seed (what metrics.jsonl holds)


# ----------------------------------------------------------------------------------------------- pieces
def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """AdamW (weight decay 0 by default) with optional linear warm-up and global-norm clipping."""
    lr = (optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps) if cfg.warmup_steps
          else cfg.learning_rate)
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm else []
    parts.append(optax.adamw(lr, weight_decay=cfg.weight_decay))
    return optax.chain(*parts)


def cross_entropy(scores: jax.Array, labels: jax.Array, example_mask: jax.Array) -> jax.Array:
    """Mean over real examples of -log softmax(scores)[label]. scores [B, C], labels [B], example_mask [B]."""
    logp = jax.nn.log_softmax(scores.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    m = example_mask.astype(jnp.float32)
    return jnp.sum(nll * m) / jnp.maximum(jnp.sum(m), 1.0)


def make_train_step(score_fn: ScoreFn, tx: optax.GradientTransformation, mesh):
    """(prompts [S,P,H], opt_state, params, batch [S,B,...]) -> (prompts, opt_state, loss [S]); one jit."""

    def one_seed(prompt, opt_state, params, batch):
        def loss_of(p):
            return cross_entropy(score_fn(params, p, batch), batch["labels"], batch["example_mask"])

        loss, grad = jax.value_and_grad(loss_of)(prompt)  # w.r.t. the prompt only: params stay constants
        updates, opt_state = tx.update(grad, opt_state, prompt)
        return optax.apply_updates(prompt, updates), opt_state, loss

    repl = parallel.replicated(mesh)
    return jax.jit(jax.vmap(one_seed, in_axes=(0, 0, None, 0)), donate_argnums=(0, 1),
                   out_shardings=(repl, repl, repl))


def make_eval_step(score_fn: ScoreFn, mesh):
    """(prompts [S,P,H], params, batch [B,...]) -> (confusion [S,C,C] int32, loss sum [S]); one jit."""

    def ev(prompts, params, batch):
        scores = jax.vmap(lambda p: score_fn(params, p, batch))(prompts)          # [S, B, C]
        labels = jnp.broadcast_to(batch["labels"], scores.shape[:-1])
        mask = jnp.broadcast_to(batch["example_mask"], scores.shape[:-1])
        logp = jax.nn.log_softmax(scores.astype(jnp.float32), -1)
        nll = -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), -1)[..., 0]
        return mx.confusion(scores, labels, mask), jnp.sum(nll * mask, -1)

    repl = parallel.replicated(mesh)
    return jax.jit(ev, out_shardings=(repl, repl))


def evaluate(eval_step, prompts, params, dev_batches, mesh) -> tuple[np.ndarray, np.ndarray]:
    """Confusion counts [S, C, C] and mean dev loss [S] of every seed's prompt over all dev batches."""
    conf, loss_sum, n = None, None, 0
    for batch in dev_batches:
        c, l = eval_step(prompts, params, parallel.shard_batch(batch, mesh, batch_axis=0))
        conf = np.asarray(c) if conf is None else conf + np.asarray(c)
        loss_sum = np.asarray(l, np.float64) if loss_sum is None else loss_sum + np.asarray(l)
        n += int(np.sum(batch["example_mask"]))
    if conf is None:
        raise ValueError("no dev batches: the dev split is empty")
    return conf, loss_sum / max(n, 1)


def stack_seed_batches(batches: Sequence[Mapping[str, np.ndarray]], pad_id: int) -> dict[str, np.ndarray]:
    """One batch per seed -> one `[S, B, ...]` batch; token axes padded to the longest (masked positions)."""
    T = max(np.shape(b["input_ids"])[1] for b in batches)
    out = {}
    for key in batches[0]:
        arrays = [np.asarray(b[key]) for b in batches]
        if key in TOKEN_AXIS_PAD:
            value = pad_id if TOKEN_AXIS_PAD[key] is None else TOKEN_AXIS_PAD[key]
            arrays = [np.pad(a, ((0, 0), (0, T - a.shape[1])), constant_values=value) for a in arrays]
        out[key] = np.stack(arrays)
    return out


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of (seed, epoch): independent of which other seeds train at the same time."""
    return int(np.random.SeedSequence([int(seed), int(epoch), 0xDA7A]).generate_state(1)[0])


# ----------------------------------------------------------------------------------------------- files
def _write_prompt(run_dir: pathlib.Path, prompt: np.ndarray, meta: dict) -> None:
    path = run_dir / PROMPT_FILE
    sio.atomic_save_npy(path, np.asarray(prompt, np.float32))
    sio.write_sidecar(path, **meta)


def _read_metrics(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_metrics(path: pathlib.Path, upto_step: Optional[int]) -> None:
    """Drops evaluations after `upto_step` (None: all): a resumed run evaluates those steps again."""
    rows = [] if upto_step is None else [r for r in _read_metrics(path) if r["step"] <= upto_step]
    sio.atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _check_run_config(run_dir: pathlib.Path, fingerprint: dict) -> None:
    """A rerun in a folder that holds a checkpoint must have the same configuration, or it would silently
    mix two runs."""
    path = run_dir / RUN_CONFIG_FILE
    if path.exists() and ckpt.has_checkpoint(run_dir):
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in fingerprint.items() if old.get(k) != v}
        if diff:
            details = ", ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in sorted(diff.items()))
            raise ValueError(f"{run_dir} holds a checkpoint of a run with a different configuration ({details}); "
                             "use another --workdir or delete that folder to start over")
    sio.atomic_write_json(path, fingerprint)


# ----------------------------------------------------------------------------------------------- loop
def train(score_fn: ScoreFn, params: Any, init_prompts, seeds: Sequence[int], train_batches: BatchFn,
          dev_batches: Sequence[Mapping[str, np.ndarray]], cfg: TrainConfig, *,
          run_dirs: Optional[Sequence[pathlib.Path]] = None, pad_id: int = 0, mesh=None,
          run_info: Optional[dict] = None, sidecar: Optional[dict] = None,
          description: str = "prompt tuning", step_factory: Optional[Callable] = None) -> TrainResult:
    """Trains one prompt per seed together; see the module docstring.

    init_prompts: [S, P, H] (seed s's initial prompt at index s); seeds: S seed ids (they name the folders and,
    through `train_batches`, the data order); run_dirs: one folder per seed, or None for no files and no
    resumption; run_info: fields compared on resume and recorded in the prompt sidecars (model, task, prompt
    init...); sidecar: further fields for the sidecars only (the full config, paths, device count).
    step_factory: (tx, mesh) -> a train step with make_train_step's signature, for another loss (robust.anchor);
    None = make_train_step(score_fn, ...). Evaluation always uses score_fn.
    Raises TrainingDiverged on a NaN/inf loss (nothing is saved for that step).
    """
    cfg = cfg.validate()
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"seeds must be distinct and non-empty, got {seeds}")
    prompts0 = np.asarray(init_prompts, np.float32)
    if prompts0.ndim != 3 or prompts0.shape[0] != len(seeds):
        raise ValueError(f"init_prompts must be [seeds={len(seeds)}, P, H], got shape {prompts0.shape}")
    mesh = parallel.make_mesh() if mesh is None else mesh
    parallel.check_divisible(cfg.batch_size, mesh, what="global batch (batch_size)")
    run_info = dict(run_info or {})
    meta = {**run_info, **(sidecar or {})}
    writer = jax.process_index() == 0

    # ---- data geometry
    epoch_cache: dict[int, list] = {}

    def seed_batches(epoch):
        if epoch not in epoch_cache:
            epoch_cache.clear()
            per_seed = [list(train_batches(s, epoch)) for s in seeds]
            lengths = {len(b) for b in per_seed}
            if len(lengths) != 1:
                raise ValueError(f"seeds got different numbers of batches in epoch {epoch}: {sorted(lengths)}")
            epoch_cache[epoch] = per_seed
        return epoch_cache[epoch]

    steps_per_epoch = len(seed_batches(0)[0])
    if steps_per_epoch == 0:
        raise ValueError(f"the training split has fewer examples than one batch of {cfg.batch_size}")
    first = seed_batches(0)[0][0]
    if np.shape(first["labels"])[0] != cfg.batch_size:
        raise ValueError(f"train_batches gave batches of {np.shape(first['labels'])[0]} examples but "
                         f"batch_size is {cfg.batch_size}")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    eval_every = cfg.eval_every or steps_per_epoch
    dev_batches = list(dev_batches)
    for b in dev_batches:
        parallel.check_divisible(np.shape(b["labels"])[0], mesh, what="dev batch")

    # ---- compiled steps, initial state
    tx = make_optimizer(cfg)
    train_step = make_train_step(score_fn, tx, mesh) if step_factory is None else step_factory(tx, mesh)
    eval_step = make_eval_step(score_fn, mesh)
    params = parallel.replicate(params, mesh)
    opt_state0 = jax.vmap(tx.init)(jnp.asarray(prompts0))
    S = len(seeds)
    state = {
        "prompts": prompts0, "opt_state": jax.tree.map(np.asarray, opt_state0), "step": 0,
        "best_prompts": prompts0.copy(), "best_accuracy": np.full(S, -1.0), "best_f1": np.zeros(S),
        "best_step": np.full(S, -1, np.int64),
    }
    history: list[dict] = []

    # ---- resume
    checkpoints, resumed_from = None, None
    if run_dirs is not None:
        run_dirs = [pathlib.Path(d) for d in run_dirs]
        if len(run_dirs) != S:
            raise ValueError(f"need one run folder per seed ({S}), got {len(run_dirs)}")
        fingerprint = {**cfg.fingerprint(), **run_info, "prompt_shape": list(prompts0.shape[1:])}
        for d in run_dirs:
            d.mkdir(parents=True, exist_ok=True)
            _check_run_config(d, fingerprint)
        checkpoints = ckpt.SeedCheckpoints(run_dirs, keep=cfg.keep_checkpoints)
        resumed_from = checkpoints.latest_common_step()
        if resumed_from is not None:
            state = _restore(checkpoints, resumed_from, state, seeds)
        if writer:
            for i, d in enumerate(run_dirs):
                _truncate_metrics(d / METRICS_FILE, resumed_from)
                history.extend(_read_metrics(d / METRICS_FILE))
                if resumed_from is not None and state["best_step"][i] >= 0:
                    _write_prompt(d, state["best_prompts"][i], _prompt_meta(meta, seeds[i], state, i))
                elif resumed_from is None and (d / PROMPT_FILE).exists():
                    (d / PROMPT_FILE).unlink()  # a fresh start must not leave an older run's prompt behind

    prompts = parallel.replicate(jnp.asarray(state["prompts"]), mesh)
    opt_state = parallel.replicate(jax.tree.map(jnp.asarray, state["opt_state"]), mesh)
    step = int(state["step"])
    t0 = time.time()
    last_acc = float(np.max(state["best_accuracy"])) if resumed_from is not None else float("nan")

    def run_eval(at_step, prompts_now, train_loss):
        nonlocal last_acc
        conf, dev_loss = evaluate(eval_step, prompts_now, params, dev_batches, mesh)
        acc, f1 = mx.accuracy(conf), mx.f1(conf)
        host_prompts = np.asarray(prompts_now)
        improved = acc > state["best_accuracy"]
        state["best_prompts"] = np.where(improved[:, None, None], host_prompts, state["best_prompts"])
        state["best_accuracy"] = np.where(improved, acc, state["best_accuracy"])
        state["best_f1"] = np.where(improved, f1, state["best_f1"])
        state["best_step"] = np.where(improved, at_step, state["best_step"])
        last_acc = float(np.mean(acc))
        rows = []
        for i, s in enumerate(seeds):
            row = {"seed": s, "step": int(at_step), "epoch": at_step / steps_per_epoch,
                   "dev_accuracy": float(acc[i]), "dev_f1": float(f1[i]), "dev_loss": float(dev_loss[i]),
                   "dev_examples": int(conf[i].sum()),
                   "train_loss": None if train_loss is None else float(train_loss[i]),
                   "best_dev_accuracy": float(state["best_accuracy"][i]), "best_step": int(state["best_step"][i]),
                   "elapsed_s": round(time.time() - t0, 3)}
            rows.append(row)
            if run_dirs is not None and writer:
                sio.append_jsonl(run_dirs[i] / METRICS_FILE, row)
                if improved[i]:
                    _write_prompt(run_dirs[i], state["best_prompts"][i], _prompt_meta(meta, s, state, i))
        history.extend(rows)
        return rows

    if cfg.eval_at_start and step == 0:
        run_eval(0, prompts, None)

    bar = _progress(cfg.progress and writer, total_steps, step, description)
    loss_sum, loss_n = np.zeros(S), 0
    try:
        while step < total_steps:
            epoch, index = divmod(step, steps_per_epoch)
            batch = stack_seed_batches([b[index] for b in seed_batches(epoch)], pad_id)
            prompts, opt_state, loss = train_step(prompts, opt_state, params,
                                                  parallel.shard_batch(batch, mesh, batch_axis=1))
            loss = np.asarray(loss)
            if not np.all(np.isfinite(loss)):
                bad = [seeds[i] for i in np.flatnonzero(~np.isfinite(loss))]
                kept = "no checkpoint was written yet" if checkpoints is None or \
                    checkpoints.latest_common_step() is None else \
                    f"the last good checkpoint (step {checkpoints.latest_common_step()}) is kept"
                raise TrainingDiverged(f"loss is {loss.tolist()} (not finite) at step {step + 1} for seed(s) {bad}; "
                                       f"training stopped, {kept}. Lower the learning rate or enable clipping.")
            step += 1
            loss_sum += loss
            loss_n += 1
            bar.update(1)
            bar.set_postfix(loss=f"{float(np.mean(loss)):.4f}", dev_acc=f"{last_acc:.4f}")
            out_of_time = bool(cfg.time_limit_s) and time.time() - t0 > cfg.time_limit_s
            if step % eval_every == 0 or step == total_steps or out_of_time:
                run_eval(step, prompts, loss_sum / loss_n)
                loss_sum, loss_n = np.zeros(S), 0
                bar.set_postfix(loss=f"{float(np.mean(loss)):.4f}", dev_acc=f"{last_acc:.4f}")
                if checkpoints is not None:
                    state["prompts"] = np.asarray(prompts)
                    state["opt_state"] = jax.tree.map(np.asarray, opt_state)
                    state["step"] = step
                    checkpoints.save(step, _per_seed(state, S))
                if out_of_time:
                    break
    finally:
        bar.close()
        if checkpoints is not None:
            checkpoints.close()

    return TrainResult(prompts=np.asarray(prompts), best_prompts=state["best_prompts"],
                       best_accuracy=state["best_accuracy"], best_f1=state["best_f1"],
                       best_step=state["best_step"], steps=step, resumed_from=resumed_from, history=history)


def _prompt_meta(meta: dict, seed: int, state: dict, i: int) -> dict:
    return {**meta, "seed": seed, "best_step": int(state["best_step"][i]),
            "dev_accuracy": float(state["best_accuracy"][i]), "dev_f1": float(state["best_f1"][i])}


def _per_seed(state: dict, S: int) -> list[dict]:
    out = []
    for i in range(S):
        out.append({
            "prompt": state["prompts"][i],
            "opt_state": jax.tree.map(lambda x: np.asarray(x)[i], state["opt_state"]),
            "best_prompt": state["best_prompts"][i],
            "best_accuracy": np.float64(state["best_accuracy"][i]),
            "best_f1": np.float64(state["best_f1"][i]),
            "best_step": np.int64(state["best_step"][i]),
            "step": np.int64(state["step"]),
        })
    return out


def _restore(checkpoints: ckpt.SeedCheckpoints, step: int, state: dict, seeds) -> dict:
    templates = _per_seed(state, len(seeds))
    restored = checkpoints.restore(step, templates)
    stack = lambda key: np.stack([np.asarray(r[key]) for r in restored])
    return {
        "prompts": stack("prompt"),
        "opt_state": jax.tree.map(lambda *xs: np.stack(xs), *[r["opt_state"] for r in restored]),
        "step": int(restored[0]["step"]),
        "best_prompts": stack("best_prompt"),
        "best_accuracy": stack("best_accuracy").astype(np.float64),
        "best_f1": stack("best_f1").astype(np.float64),
        "best_step": stack("best_step").astype(np.int64),
    }


class _NoBar:
    def update(self, n): pass
    def set_postfix(self, **kw): pass
    def close(self): pass


def _progress(enabled: bool, total: int, initial: int, description: str):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=description, dynamic_ncols=True)
