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

The loop (`train`) is a sequence of named steps over an explicit `TrainState` (host arrays):
`EpochBatches` (each seed's batches of an epoch, stacked per step), `Schedule` (steps per epoch, total steps,
when to evaluate), `resume` (run folders checked, the latest common checkpoint restored, metrics truncated),
`record_evaluation` (best prompt per seed and the early-stopping count, a pure update), `RunFiles` (metrics
rows, best prompts, checkpoints). Early stopping (`TrainConfig.patience`) counts evaluations in which no seed's
best dev accuracy improved; the count is part of the checkpoint, so a resumed run stops where the uninterrupted
one would have.
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
from tqdm import auto as tqdm

from skillneurons_jax import io, layout, parallel
from skillneurons_jax.prompt import checkpoint, files, metrics, scoring

ScoreFn = scoring.ScoreFn
BatchFn = Callable[[int, int], Sequence[Mapping[str, np.ndarray]]]

PROMPT_FILE = layout.PROMPT_FILE
METRICS_FILE = layout.METRICS_FILE
RUN_CONFIG_FILE = layout.RUN_CONFIG_FILE
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
    warmup_steps: int = 0            # linear warm-up from 0 to learning_rate, then `lr_schedule`
    clip_norm: float = 0.0           # global-norm gradient clipping per seed; 0 = off
    weight_decay: float = 0.0        # the original uses 0
    keep_checkpoints: int = 2
    progress: bool = True
    time_limit_s: float = 0.0        # > 0: after this many seconds, evaluate, checkpoint and stop (rerun resumes)
    patience: Optional[int] = None   # early stopping: stop when no seed's best dev accuracy improved during the
                                     # last `patience` evaluations; None or 0 = off
    lr_schedule: str = "constant"    # after warm-up: constant | linear | cosine decay to min_lr_fraction * lr at the
    min_lr_fraction: float = 0.0     # run's last step (its planned total: epochs, capped by max_steps)
    select_metric: str = "accuracy"  # accuracy | balanced_accuracy: what picks the best prompt and drives patience
    reparam_hidden: int = 0          # > 0: train P + MLP(P) (a residual two-layer MLP of this width over the prompt,
                                     # Razdaibiedina et al. 2023), folded into a plain [P, H] prompt; 0 = off

    # Fields a resumed run must share with the run it continues (max_steps / epochs may grow).
    RESUME_KEYS = ("learning_rate", "batch_size", "eval_every", "warmup_steps", "clip_norm", "weight_decay")
    # Recipe fields, in the fingerprint only when set off their default (runs made before they existed resume).
    RECIPE_DEFAULTS = {"lr_schedule": "constant", "min_lr_fraction": 0.0, "select_metric": "accuracy",
                       "reparam_hidden": 0}

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
        if self.patience is not None and int(self.patience) < 0:
            raise ValueError(f"patience must be >= 0 (0 or None: off), got {self.patience}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not 0.0 <= self.min_lr_fraction <= 1.0:
            raise ValueError(f"min_lr_fraction must be in [0, 1], got {self.min_lr_fraction!r}")
        if self.select_metric not in SELECT_METRICS:
            raise ValueError(f"select_metric must be one of {SELECT_METRICS}, got {self.select_metric!r}")
        if int(self.reparam_hidden) < 0:
            raise ValueError(f"reparam_hidden must be >= 0 (0: off), got {self.reparam_hidden}")
        return self

    def fingerprint(self) -> dict:
        out = {k: getattr(self, k) for k in self.RESUME_KEYS}
        out.update({k: getattr(self, k) for k, default in self.RECIPE_DEFAULTS.items() if getattr(self, k) != default})
        if self.lr_schedule != "constant":   # the decay's horizon: a larger budget is another schedule, not more steps
            out.update(epochs=self.epochs, max_steps=self.max_steps)
        return out


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
    stopped_early: Optional[int] = None   # the step at which `patience` stopped training, None otherwise


LR_SCHEDULES = ("constant", "linear", "cosine")
SELECT_METRICS = ("accuracy", "balanced_accuracy")


# ----------------------------------------------------------------------------------------------- pieces
def learning_rate_schedule(cfg: TrainConfig, total_steps: Optional[int] = None):
    """The learning rate of update u: linear warm-up from 0 over `warmup_steps`, then constant, or a linear /
    cosine decay from learning_rate to min_lr_fraction * learning_rate at `total_steps` (needed then)."""
    lr, warmup = float(cfg.learning_rate), int(cfg.warmup_steps)
    if cfg.lr_schedule == "constant":
        return optax.linear_schedule(0.0, lr, warmup) if warmup else lr
    if total_steps is None or total_steps < 1:
        raise ValueError(f"lr_schedule {cfg.lr_schedule!r} needs the run's total steps")
    end = lr * float(cfg.min_lr_fraction)
    decay = max(int(total_steps) - warmup, 1)
    tail = (optax.linear_schedule(lr, end, decay) if cfg.lr_schedule == "linear"
            else optax.cosine_decay_schedule(lr, decay, alpha=float(cfg.min_lr_fraction)))
    if not warmup:
        return tail
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), tail], [warmup])


def make_optimizer(cfg: TrainConfig, total_steps: Optional[int] = None) -> optax.GradientTransformation:
    """AdamW (weight decay 0 by default) with the learning-rate schedule and optional global-norm clipping."""
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm else []
    parts.append(optax.adamw(learning_rate_schedule(cfg, total_steps), weight_decay=cfg.weight_decay))
    return optax.chain(*parts)


# ----------------------------------------------------------------------------------------------- reparameterisation
def init_reparam(prompts0: np.ndarray, hidden: int, seeds: Sequence[int]) -> dict:
    """The trained tree of a reparameterised run: {"prompt" [S, P, H], "w1" [S, H, h], "b1" [S, h], "w2" [S, h, H],
    "b2" [S, H]}. w2 and b2 start at zero, so the folded prompt starts as the initial prompt; w1 is drawn per seed
    (He-normal) from SeedSequence([seed, 0x9E9A])."""
    S, _, H = prompts0.shape
    w1 = np.stack([np.random.default_rng(np.random.SeedSequence([int(s), 0x9E9A])).normal(
        0.0, math.sqrt(2.0 / H), (H, hidden)) for s in seeds]).astype(np.float32)
    return {"prompt": np.asarray(prompts0, np.float32), "w1": w1, "b1": np.zeros((S, hidden), np.float32),
            "w2": np.zeros((S, hidden, H), np.float32), "b2": np.zeros((S, H), np.float32)}


def fold_one(tree) -> jax.Array:
    """One seed's trained tree -> its plain prompt [P, H] = P + relu(P w1 + b1) w2 + b2; a plain [P, H] array is
    returned as it is."""
    if not isinstance(tree, Mapping):
        return tree
    hidden = jax.nn.relu(tree["prompt"] @ tree["w1"] + tree["b1"])
    return tree["prompt"] + hidden @ tree["w2"] + tree["b2"]


def fold(trees) -> jax.Array:
    """[S]-stacked trained trees (or prompts [S, P, H]) -> prompts [S, P, H]."""
    return trees if not isinstance(trees, Mapping) else jax.vmap(fold_one)(trees)


def cross_entropy(scores: jax.Array, labels: jax.Array, example_mask: jax.Array) -> jax.Array:
    """Mean over real examples of -log softmax(scores)[label]. scores [B, C], labels [B], example_mask [B]."""
    logp = jax.nn.log_softmax(scores.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    m = example_mask.astype(jnp.float32)
    return jnp.sum(nll * m) / jnp.maximum(jnp.sum(m), 1.0)


def make_train_step(score_fn: ScoreFn, tx: optax.GradientTransformation, mesh):
    """(prompts [S,P,H], opt_state, params, batch [S,B,...]) -> (prompts, opt_state, loss [S]); one jit."""

    def one_seed(prompt, opt_state, params, batch):
        def loss_of(p):   # p: the prompt [P, H], or a reparameterised tree folded into one
            return cross_entropy(score_fn(params, fold_one(p), batch), batch["labels"], batch["example_mask"])

        loss, grad = jax.value_and_grad(loss_of)(prompt)  # w.r.t. the prompt only: params stay constants
        updates, opt_state = tx.update(grad, opt_state, prompt)
        return optax.apply_updates(prompt, updates), opt_state, loss

    repl = parallel.replicated(mesh)
    return jax.jit(jax.vmap(one_seed, in_axes=(0, 0, None, 0)), donate_argnums=(0, 1),
                   out_shardings=(repl, repl, repl), compiler_options=parallel.train_step_compiler_options(mesh))


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




# ----------------------------------------------------------------------------------------------- batches
class EpochBatches:
    """Each seed's batches of an epoch (`train_batches(seed, epoch)`), one epoch held at a time, and the stacked
    `[S, B, ...]` batch of a step."""

    def __init__(self, train_batches: BatchFn, seeds: Sequence[int], pad_id: int):
        self.train_batches, self.seeds, self.pad_id = train_batches, list(seeds), int(pad_id)
        self._epoch, self._per_seed = None, None

    def of_epoch(self, epoch: int) -> list[list]:
        if self._epoch != epoch:
            per_seed = [list(self.train_batches(s, epoch)) for s in self.seeds]
            lengths = {len(b) for b in per_seed}
            if len(lengths) != 1:
                raise ValueError(f"seeds got different numbers of batches in epoch {epoch}: {sorted(lengths)}")
            self._epoch, self._per_seed = epoch, per_seed
        return self._per_seed

    def for_step(self, step: int, steps_per_epoch: int) -> dict[str, np.ndarray]:
        """The batch of update `step` (0-based): batch step % steps_per_epoch of epoch step // steps_per_epoch."""
        epoch, index = divmod(step, steps_per_epoch)
        return stack_seed_batches([b[index] for b in self.of_epoch(epoch)], self.pad_id)


@dataclasses.dataclass(frozen=True)
class Schedule:
    steps_per_epoch: int
    total_steps: int
    eval_every: int

    def evaluates_at(self, step: int) -> bool:
        return step % self.eval_every == 0 or step == self.total_steps


def make_schedule(cfg: TrainConfig, batches: EpochBatches) -> Schedule:
    """Steps per epoch from epoch 0's batches (checked against batch_size), total steps, evaluation interval."""
    first_epoch = batches.of_epoch(0)
    steps_per_epoch = len(first_epoch[0])
    if steps_per_epoch == 0:
        raise ValueError(f"the training split has fewer examples than one batch of {cfg.batch_size}")
    rows = np.shape(first_epoch[0][0]["labels"])[0]
    if rows != cfg.batch_size:
        raise ValueError(f"train_batches gave batches of {rows} examples but batch_size is {cfg.batch_size}")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    return Schedule(steps_per_epoch, total_steps, cfg.eval_every or steps_per_epoch)


# ----------------------------------------------------------------------------------------------- state
@dataclasses.dataclass
class TrainState:
    """Everything a resumed run needs, as host arrays (S seeds)."""
    prompts: np.ndarray              # [S, P, H] after `step` updates
    opt_state: Any                   # optax state, leaves [S, ...]
    step: int
    best_prompts: np.ndarray         # [S, P, H] best by dev accuracy (first best wins ties)
    best_accuracy: np.ndarray        # [S] float64, -1 before the first evaluation
    best_f1: np.ndarray              # [S]
    best_step: np.ndarray            # [S] int64, -1 before the first evaluation
    evals_since_improvement: int = 0  # evaluations in a row in which no seed's best improved (early stopping)


def initial_state(prompts0, tx: optax.GradientTransformation) -> TrainState:
    """prompts0: [S, P, H], or a reparameterised run's trained tree (init_reparam)."""
    folded = np.asarray(fold(jax.tree.map(jnp.asarray, prompts0)))
    seeds = folded.shape[0]
    opt_state0 = jax.vmap(tx.init)(jax.tree.map(jnp.asarray, prompts0))
    return TrainState(prompts=prompts0, opt_state=jax.tree.map(np.asarray, opt_state0), step=0,
                      best_prompts=folded.copy(), best_accuracy=np.full(seeds, -1.0), best_f1=np.zeros(seeds),
                      best_step=np.full(seeds, -1, np.int64))


def record_evaluation(state: TrainState, at_step: int, prompts: np.ndarray, confusion: np.ndarray,
                      select_metric: str = "accuracy") -> tuple[TrainState, np.ndarray]:
    """The state after an evaluation at `at_step` of `prompts` [S, P, H] with dev confusion [S, C, C]:
    each seed's best prompt / score / F1 / step where its `select_metric` (accuracy or balanced accuracy; the
    state's best_accuracy holds that score) improved, and the early-stopping count.
    Returns (new state, improved [S] bool). Pure: `state` is not modified."""
    accuracy, f1 = metrics.accuracy(confusion), metrics.f1(confusion)
    if select_metric == "balanced_accuracy":
        accuracy = metrics.balanced_accuracy(confusion)
    improved = metrics.improves(accuracy, state.best_accuracy)
    new = dataclasses.replace(
        state,
        best_prompts=np.where(improved[:, None, None], prompts, state.best_prompts),
        best_accuracy=np.where(improved, accuracy, state.best_accuracy),
        best_f1=np.where(improved, f1, state.best_f1),
        best_step=np.where(improved, at_step, state.best_step),
        evals_since_improvement=0 if bool(np.any(improved)) else state.evals_since_improvement + 1)
    return new, improved


def patience_reached(state: TrainState, cfg: TrainConfig) -> bool:
    return bool(cfg.patience) and state.evals_since_improvement >= int(cfg.patience)


# Checkpoint entries of a reparameterised run's MLP ("reparam_w1", ...), beside its base prompt "prompt".
REPARAM_PREFIX = "reparam_"


def _per_seed(state: TrainState) -> list[dict]:
    """The checkpoint of each seed (one orbax tree per seed folder)."""
    out = []
    for i in range(state.best_prompts.shape[0]):
        trained = state.prompts
        parts = ({"prompt": trained["prompt"], **{REPARAM_PREFIX + k: v for k, v in trained.items() if k != "prompt"}}
                 if isinstance(trained, Mapping) else {"prompt": trained})
        out.append({
            **{k: np.asarray(v)[i] for k, v in parts.items()},
            "opt_state": jax.tree.map(lambda x: np.asarray(x)[i], state.opt_state),
            "best_prompt": state.best_prompts[i],
            "best_accuracy": np.float64(state.best_accuracy[i]),
            "best_f1": np.float64(state.best_f1[i]),
            "best_step": np.int64(state.best_step[i]),
            "step": np.int64(state.step),
            "evals_since_improvement": np.int64(state.evals_since_improvement),
        })
    return out


def _from_per_seed(restored: Sequence[dict]) -> TrainState:
    def stack(key):
        return np.stack([np.asarray(r[key]) for r in restored])
    prompts = stack("prompt")
    extra = {k[len(REPARAM_PREFIX):]: stack(k) for k in restored[0] if k.startswith(REPARAM_PREFIX)}
    return TrainState(
        prompts={"prompt": prompts, **extra} if extra else prompts,
        opt_state=jax.tree.map(lambda *xs: np.stack(xs), *[r["opt_state"] for r in restored]),
        step=int(restored[0]["step"]),
        best_prompts=stack("best_prompt"),
        best_accuracy=stack("best_accuracy").astype(np.float64),
        best_f1=stack("best_f1").astype(np.float64),
        best_step=stack("best_step").astype(np.int64),
        evals_since_improvement=int(restored[0]["evals_since_improvement"]))


# ----------------------------------------------------------------------------------------------- files
# What every metrics.jsonl row holds (evaluation_rows writes it; resuming and copying read it).
METRICS_REQUIRED = ("step",)


def read_metrics(path) -> list[dict]:
    """The rows of a metrics.jsonl ([] without one): io.read_jsonl, so a cut last line (a run killed while
    appending) is skipped and any other bad line is an error naming the file and the line."""
    return io.read_jsonl(path, METRICS_REQUIRED)


def parse_metrics(text: str, path) -> list[dict]:
    """read_metrics of a metrics.jsonl's text (as read once, e.g. the verified bytes of a copy)."""
    return io.parse_jsonl(text, path, METRICS_REQUIRED)


def _truncate_metrics(path: pathlib.Path, upto_step: Optional[int]) -> None:
    """Drops evaluations after `upto_step` (None: all): a resumed run evaluates those steps again."""
    rows = [] if upto_step is None else [r for r in read_metrics(path) if r["step"] <= upto_step]
    io.atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def run_fingerprint(cfg: TrainConfig, run_info: Optional[dict], prompt_shape: Sequence[int]) -> dict:
    """What a rerun must share with the run whose checkpoint it resumes (run_config.json)."""
    return {**cfg.fingerprint(), **dict(run_info or {}), "prompt_shape": [int(n) for n in prompt_shape]}


def check_run_config(run_dir: pathlib.Path, fingerprint: dict) -> None:
    """A rerun in a folder that holds a checkpoint must have the same configuration, or it would silently
    mix two runs. Reads only: a refused rerun leaves every file as it was."""
    path = pathlib.Path(run_dir) / RUN_CONFIG_FILE
    if path.exists() and checkpoint.has_checkpoint(run_dir):
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in fingerprint.items() if old.get(k) != v}
        if diff:
            details = ", ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in sorted(diff.items()))
            raise ValueError(f"{run_dir} holds a checkpoint of a run with a different configuration ({details}); "
                             "use another --workdir or delete that folder to start over")


def _check_run_config(run_dir: pathlib.Path, fingerprint: dict) -> None:
    check_run_config(run_dir, fingerprint)
    io.atomic_write_json(pathlib.Path(run_dir) / RUN_CONFIG_FILE, fingerprint)


class RunFiles:
    """The per-seed folders of a run: metrics rows, best prompts and checkpoints. Only process 0 writes files;
    every process saves and restores its checkpoint shards."""

    def __init__(self, run_dirs: Sequence[pathlib.Path], seeds: Sequence[int], meta: dict, keep: int):
        self.dirs = [pathlib.Path(d) for d in run_dirs]
        self.seeds, self.meta = list(seeds), meta
        self.writer = jax.process_index() == 0
        self.checkpoints: Optional[checkpoint.SeedCheckpoints] = None
        self.keep = keep

    def prompt_meta(self, state: TrainState, i: int) -> dict:
        return {**self.meta, "seed": self.seeds[i], "best_step": int(state.best_step[i]),
                "dev_accuracy": float(state.best_accuracy[i]), "dev_f1": float(state.best_f1[i])}

    def write_evaluation(self, rows: Sequence[dict], state: TrainState, improved: np.ndarray) -> None:
        if not self.writer:
            return
        for i, row in enumerate(rows):
            io.append_jsonl(self.dirs[i] / METRICS_FILE, row)
            if improved[i]:
                files.write_prompt(self.dirs[i], state.best_prompts[i], self.prompt_meta(state, i))

    def save(self, state: TrainState) -> None:
        self.checkpoints.save(state.step, _per_seed(state))

    def last_saved_step(self) -> Optional[int]:
        return None if self.checkpoints is None else self.checkpoints.latest_common_step()

    def close(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.close()


def resume(run_files: RunFiles, fingerprint: dict, state: TrainState) -> tuple[TrainState, Optional[int], list]:
    """Checks (or writes) each folder's run_config.json, restores the latest step every seed has, truncates the
    metrics to it and rewrites the best prompts (a fresh start removes an older run's prompt).
    Returns (state, the step resumed from or None, the metrics rows kept)."""
    for d in run_files.dirs:                     # every folder checked before any is written
        check_run_config(d, fingerprint)
    for d in run_files.dirs:
        d.mkdir(parents=True, exist_ok=True)
        _check_run_config(d, fingerprint)
    run_files.checkpoints = checkpoint.SeedCheckpoints(run_files.dirs, keep=run_files.keep)
    resumed_from = run_files.checkpoints.latest_common_step()
    if resumed_from is not None:
        restored = run_files.checkpoints.restore(resumed_from, _per_seed(state))
        state = _from_per_seed(restored)
    history: list[dict] = []
    if run_files.writer:
        for i, d in enumerate(run_files.dirs):
            _truncate_metrics(d / METRICS_FILE, resumed_from)
            history.extend(read_metrics(d / METRICS_FILE))
            if resumed_from is not None and state.best_step[i] >= 0:
                files.write_prompt(d, state.best_prompts[i], run_files.prompt_meta(state, i))
            elif resumed_from is None and (d / PROMPT_FILE).exists():
                (d / PROMPT_FILE).unlink()  # a fresh start must not leave an older run's prompt behind
    return state, resumed_from, history


def evaluation_rows(state: TrainState, seeds: Sequence[int], at_step: int, schedule: Schedule,
                    confusion: np.ndarray, dev_loss: np.ndarray, train_loss: Optional[np.ndarray],
                    elapsed_s: float, stopped_early: Optional[int],
                    train_terms: Optional[Mapping[str, np.ndarray]] = None) -> list[dict]:
    """One metrics.jsonl row per seed for an evaluation (state: after `record_evaluation`); train_terms
    {name: [S]}, the mean of each term of another loss since the last evaluation, as train_<name>."""
    accuracy, f1 = metrics.accuracy(confusion), metrics.f1(confusion)
    rows = []
    for i, seed in enumerate(seeds):
        row = {"seed": seed, "step": int(at_step), "epoch": at_step / schedule.steps_per_epoch,
               "dev_accuracy": float(accuracy[i]), "dev_f1": float(f1[i]), "dev_loss": float(dev_loss[i]),
               "dev_balanced_accuracy": float(metrics.balanced_accuracy(confusion[i])),
               "dev_examples": int(confusion[i].sum()),
               "train_loss": None if train_loss is None else float(train_loss[i]),
               "best_dev_accuracy": float(state.best_accuracy[i]), "best_step": int(state.best_step[i]),
               "elapsed_s": round(elapsed_s, 3),
               **{f"train_{name}": float(value[i]) for name, value in (train_terms or {}).items()}}
        if stopped_early is not None:
            row["stopped_early"] = int(stopped_early)
        rows.append(row)
    return rows


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
    None = make_train_step(score_fn, ...). Its loss may be {"loss": [S], <term>: [S], ...}: each term's mean
    since the last evaluation is logged as train_<term> beside train_loss. Evaluation always uses score_fn.
    Raises TrainingDiverged on a NaN/inf loss (nothing is saved for that step).
    """
    cfg = cfg.validate()
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"seeds must be distinct and non-empty, got {seeds}")
    prompts0 = np.asarray(init_prompts, np.float32)
    if prompts0.ndim != 3 or prompts0.shape[0] != len(seeds):
        raise ValueError(f"init_prompts must be [seeds={len(seeds)}, P, H], got shape {prompts0.shape}")
    if cfg.reparam_hidden and step_factory is not None:
        raise ValueError("reparam_hidden (a reparameterised prompt) and another loss (step_factory) cannot be "
                         "combined: that loss's step trains a plain [P, H] prompt")
    trained0 = init_reparam(prompts0, int(cfg.reparam_hidden), seeds) if cfg.reparam_hidden else prompts0
    mesh = parallel.make_mesh() if mesh is None else mesh
    parallel.check_divisible(cfg.batch_size, mesh, what="global batch (batch_size)")
    run_info = dict(run_info or {})

    # ---- batches and schedule
    batches = EpochBatches(train_batches, seeds, pad_id)
    schedule = make_schedule(cfg, batches)
    dev_batches = list(dev_batches)
    for b in dev_batches:
        parallel.check_divisible(np.shape(b["labels"])[0], mesh, what="dev batch")

    # ---- compiled steps, initial state, resume
    tx = make_optimizer(cfg, schedule.total_steps)
    train_step = make_train_step(score_fn, tx, mesh) if step_factory is None else step_factory(tx, mesh)
    eval_step = scoring.make_eval_step(score_fn, mesh)
    params = parallel.replicate(params, mesh)
    state = initial_state(trained0, tx)
    run_files, resumed_from, history = None, None, []
    if run_dirs is not None:
        if len(run_dirs) != len(seeds):
            raise ValueError(f"need one run folder per seed ({len(seeds)}), got {len(run_dirs)}")
        recipe = {k: getattr(cfg, k) for k in TrainConfig.RECIPE_DEFAULTS}
        run_files = RunFiles(run_dirs, seeds, {**run_info, **(sidecar or {}), "recipe": recipe},
                             cfg.keep_checkpoints)
        fingerprint = run_fingerprint(cfg, run_info, prompts0.shape[1:])
        state, resumed_from, history = resume(run_files, fingerprint, state)

    prompts = parallel.replicate(jax.tree.map(jnp.asarray, state.prompts), mesh)
    fold_fn = jax.jit(fold)
    opt_state = parallel.replicate(jax.tree.map(jnp.asarray, state.opt_state), mesh)
    step = state.step
    t0 = time.time()
    last_accuracy = float(np.max(state.best_accuracy)) if resumed_from is not None else float("nan")
    # a run resumed after patience stopped it stays stopped
    stopped_early = step if resumed_from is not None and patience_reached(state, cfg) else None

    def evaluation(at_step, prompts_now, train_loss, train_terms=None) -> bool:
        """Evaluates, updates the state, writes the rows and prompts; True when patience says stop."""
        nonlocal state, last_accuracy, stopped_early
        prompts_now = fold_fn(prompts_now)                # the plain [S, P, H] prompts (reparameterised: folded)
        confusion, dev_loss = scoring.evaluate(eval_step, prompts_now, params, dev_batches, mesh)
        state, improved = record_evaluation(state, at_step, np.asarray(prompts_now), confusion, cfg.select_metric)
        last_accuracy = float(np.mean(metrics.accuracy(confusion)))
        stop = patience_reached(state, cfg) and at_step < schedule.total_steps
        if stop:
            stopped_early = int(at_step)
        rows = evaluation_rows(state, seeds, at_step, schedule, confusion, dev_loss, train_loss,
                               time.time() - t0, stopped_early if stop else None, train_terms)
        if run_files is not None:
            run_files.write_evaluation(rows, state, improved)
        history.extend(rows)
        return stop

    if cfg.eval_at_start and step == 0:
        evaluation(0, prompts, None)

    bar = _progress(cfg.progress and jax.process_index() == 0, schedule.total_steps, step, description)
    loss_sum, loss_count, term_sums = np.zeros(len(seeds)), 0, {}
    # The loss of a step is read on the host one step later, while the next step computes: reading it right
    # away would make the host wait for every step before it stacks and transfers the next batch. `pending` is
    # (step index, loss [S] on the device) of the step dispatched last and not yet read; a non-finite loss
    # still stops training before anything is evaluated or saved for that step.
    pending = None

    def settle():
        """Reads the pending step's loss: the divergence check, the running mean, the progress bar."""
        nonlocal pending, loss_sum, loss_count
        if pending is None:
            return
        at, device_loss = pending
        pending = None
        terms = {}
        if isinstance(device_loss, Mapping):           # another loss's terms beside it (step_factory)
            terms = {name: np.asarray(value) for name, value in device_loss.items() if name != "loss"}
            device_loss = device_loss["loss"]
        loss = np.asarray(device_loss)
        if not np.all(np.isfinite(loss)):
            _diverged(loss, seeds, at, run_files)
        loss_sum += loss
        loss_count += 1
        for name, value in terms.items():
            term_sums[name] = term_sums.get(name, 0.0) + value
        bar.set_postfix(loss=f"{float(np.mean(loss)):.4f}", dev_acc=f"{last_accuracy:.4f}")

    try:
        while step < schedule.total_steps and stopped_early is None:
            batch = batches.for_step(step, schedule.steps_per_epoch)
            prompts, opt_state, loss = train_step(prompts, opt_state, params,
                                                  parallel.shard_batch(batch, mesh, batch_axis=1))
            settle()                     # the previous step's loss
            pending = (step, loss)
            step += 1
            bar.update(1)
            out_of_time = bool(cfg.time_limit_s) and time.time() - t0 > cfg.time_limit_s
            if schedule.evaluates_at(step) or out_of_time:
                settle()
                stop = evaluation(step, prompts, loss_sum / loss_count,
                                  {name: total / loss_count for name, total in term_sums.items()})
                loss_sum, loss_count, term_sums = np.zeros(len(seeds)), 0, {}
                bar.set_postfix(loss=f"{float(np.mean(np.asarray(_loss_of(loss)))):.4f}",
                                dev_acc=f"{last_accuracy:.4f}")
                if run_files is not None:
                    state = dataclasses.replace(state, prompts=jax.tree.map(np.asarray, prompts),
                                                opt_state=jax.tree.map(np.asarray, opt_state), step=step)
                    run_files.save(state)
                if out_of_time or stop:
                    break
        settle()
    finally:
        bar.close()
        if run_files is not None:
            run_files.close()

    return TrainResult(prompts=np.asarray(fold_fn(prompts)), best_prompts=state.best_prompts,
                       best_accuracy=state.best_accuracy, best_f1=state.best_f1, best_step=state.best_step,
                       steps=step, resumed_from=resumed_from, history=history, stopped_early=stopped_early)


def _loss_of(loss):
    """The loss [S] of a train step's output: the array, or the "loss" of {"loss": ..., <term>: ...}."""
    return loss["loss"] if isinstance(loss, Mapping) else loss


def _diverged(loss: np.ndarray, seeds: Sequence[int], step: int, run_files: Optional[RunFiles]) -> None:
    bad = [seeds[i] for i in np.flatnonzero(~np.isfinite(loss))]
    saved = None if run_files is None else run_files.last_saved_step()
    kept = ("no checkpoint was written yet" if saved is None else
            f"the last good checkpoint (step {saved}) is kept")
    raise TrainingDiverged(f"loss is {loss.tolist()} (not finite) at step {step + 1} for seed(s) {bad}; "
                           f"training stopped, {kept}. Lower the learning rate or enable clipping.")


class _NoBar:
    def update(self, n): pass
    def set_postfix(self, **kw): pass
    def close(self): pass


def _progress(enabled: bool, total: int, initial: int, description: str):
    if not enabled:
        return _NoBar()
    # disable=None: a bar on a terminal, nothing in a redirected log (where each redraw would be a line)
    return tqdm.tqdm(total=total, initial=initial, desc=description, dynamic_ncols=True, disable=None,
                     leave=False)
