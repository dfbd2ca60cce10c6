"""Skill-neuron-anchored prompt tuning: a term that keeps a task's skill neurons predictive on perturbed inputs.

The paper's proposal (Ackermann & Ohmer 2023, section 6): search for a prompt that activates skill neurons on
both clean and adversarial data. Here the prompt-tuning loss of one seed s becomes

    loss = CE(clean) + perturbed_weight * CE(perturbed) + strength * anchor(perturbed)

where "perturbed" is the batch's `perturbed_input_ids` / `perturbed_attention_mask` (offline text perturbations,
robust.perturb) or, without them, the clean text; with `epsilon > 0` a gradient-sign step on the text's input
embeddings is added on top (FreeLB / FGSM-style: delta = clip(delta + epsilon / steps * sign(dCE/d delta),
-epsilon, epsilon), from delta = 0, `adversarial_steps` times; the step is a constant for the prompt's gradient).

anchor, over the selected neurons (top-k % by Pred, per layer or globally, as neurons.suppression selects them)
at the prompt positions j (all, or each neuron's most predictive token), with a(l, n, j) the perturbed run's
activations, b_s the eq. 2 baseline and acc_s the eq. 3 accuracy of the predictivity file:
  mode "sign":  the side of the baseline that predicts the gold label y: direction d = +1 when acc_s >= 0.5
                (above the baseline predicts label 1), else -1; target sign t = d * (2y - 1); the penalty is
                hinge  max(0, margin - t * (a - b_s))   or   softplus(margin - t * (a - b_s)).
  mode "clean": (a - a_clean)^2, a_clean = the same neurons on the clean input with the same prompt (held
                constant, so the term pulls the perturbed run toward the clean one rather than both together).
averaged over selected (layer, token, neuron) entries (weighted) and real examples.

Three arms with one budget (`ARMS`): plain (everything off: the loss is EXACTLY prompt.train's cross-entropy, the
same operations), perturbed (perturbed_weight 1, strength 0: the control isolating the anchor), anchored
(perturbed_weight 1, strength > 0). Only the prompt is differentiated; the model's parameters are constants.
Encoder readouts only when epsilon > 0 (the text-embedding step needs EncoderModel's `text_delta`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from skillneurons_jax import parallel
from skillneurons_jax.models.ffn import Capture
from skillneurons_jax.neurons import suppression
from skillneurons_jax.prompt.train import cross_entropy

MODES = ("sign", "clean")
PENALTIES = ("hinge", "softplus")
TOKEN_SELECTIONS = ("all", "best")
PERTURBED_KEYS = {"input_ids": "perturbed_input_ids", "attention_mask": "perturbed_attention_mask"}


@dataclasses.dataclass(frozen=True)
class AnchorSettings:
    """Config block `robust.anchor` (frozen; `from_mapping` rejects unknown keys).

    strength:          weight of the neuron term; 0 = off
    top_percent:       k, the % of neurons selected (per layer with scope "layer")
    scope:             "layer" | "global" (neurons.suppression.skill_masks)
    mode:              "sign" | "clean" (module docstring)
    penalty:           "hinge" | "softplus" (mode "sign")
    margin:            activation margin beyond the baseline (mode "sign"), in activation units
    tokens:            "all" prompt positions | "best" (each neuron's most predictive position of its seed)
    perturbed_weight:  weight of the cross-entropy on the perturbed input (the control arm: > 0 with strength 0)
    epsilon:           L-inf radius of the gradient-sign step on the text's input embeddings; 0 = no step
    adversarial_steps: gradient-sign steps of size epsilon / steps (1 = FGSM)
    """

    strength: float = 0.0
    top_percent: float = 1.0
    scope: str = "layer"
    mode: str = "sign"
    penalty: str = "hinge"
    margin: float = 0.0
    tokens: str = "all"
    perturbed_weight: float = 0.0
    epsilon: float = 0.0
    adversarial_steps: int = 1

    def __post_init__(self):
        for name in ("strength", "margin", "perturbed_weight", "epsilon"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"robust.anchor.{name} must be a finite number, got {value!r}")
        for name in ("strength", "perturbed_weight", "epsilon", "margin"):
            if getattr(self, name) < 0:
                raise ValueError(f"robust.anchor.{name} must be >= 0, got {getattr(self, name)}")
        suppression.count_for(100, self.top_percent)  # ValueError outside [0, 100]
        if self.scope not in suppression.SCOPES:
            raise ValueError(f"robust.anchor.scope {self.scope!r}; allowed: {suppression.SCOPES}")
        if self.mode not in MODES:
            raise ValueError(f"robust.anchor.mode {self.mode!r}; allowed: {MODES}")
        if self.penalty not in PENALTIES:
            raise ValueError(f"robust.anchor.penalty {self.penalty!r}; allowed: {PENALTIES}")
        if self.tokens not in TOKEN_SELECTIONS:
            raise ValueError(f"robust.anchor.tokens {self.tokens!r}; allowed: {TOKEN_SELECTIONS}")
        if int(self.adversarial_steps) != self.adversarial_steps or self.adversarial_steps < 1:
            raise ValueError(f"robust.anchor.adversarial_steps must be an integer >= 1, got "
                             f"{self.adversarial_steps!r}")
        if self.epsilon > 0 and self.strength == 0 and self.perturbed_weight == 0:
            raise ValueError("robust.anchor.epsilon > 0 has no effect with strength 0 and perturbed_weight 0: the "
                             "adversarial input enters only those two terms")

    @property
    def active(self) -> bool:
        """False: the loss is exactly the plain cross-entropy."""
        return self.strength > 0 or self.perturbed_weight > 0

    @property
    def uses_neurons(self) -> bool:
        return self.strength > 0

    @classmethod
    def from_mapping(cls, cfg: Optional[Mapping[str, Any]]) -> "AnchorSettings":
        cfg = dict(cfg or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"unknown robust.anchor keys {unknown}; known: {sorted(known)}")
        return cls(**cfg)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def arm_settings(arm: str, strength: float, **common) -> AnchorSettings:
    """The three arms of the comparison with one budget: "plain", "perturbed" (control), "anchored"."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; known: {ARMS}")
    if arm == "plain":
        return AnchorSettings()
    return AnchorSettings(strength=strength if arm == "anchored" else 0.0, perturbed_weight=1.0, **common)


ARMS = ("plain", "perturbed", "anchored")


# ----------------------------------------------------------------------------------------------- targets
@flax.struct.dataclass
class AnchorTarget:
    """What the neuron term compares against, per seed (a leading [S] axis when stacked for training).

    weight:    float32 [L, T, N]  1 on selected (layer, prompt position, neuron) entries, else 0
    baseline:  float32 [L, T, N]  eq. 2 baseline b_s (clean TRAIN mean)
    direction: float32 [L, T, N]  +1 where acc_s >= 0.5 (above the baseline predicts label 1), else -1
    """

    weight: jax.Array
    baseline: jax.Array
    direction: jax.Array


def anchor_targets(pred, acc, baseline, settings: AnchorSettings) -> AnchorTarget:
    """From a predictivity result (neurons.predictivity / the predictivity npz): pred [L, N] (eq. 5),
    acc [S, L, T, N] (eq. 3), baseline [S, L, T, N] (eq. 2) -> AnchorTarget with leaves [S, L, T, N].

    Neurons: suppression.skill_mask(pred, top_percent, scope). Tokens "best": per seed and neuron the prompt
    position of highest max(acc, 1 - acc) (eq. 4; ties to the lower position), else every position."""
    pred = np.asarray(pred, np.float64)
    acc = np.asarray(acc, np.float64)
    baseline = np.asarray(baseline, np.float64)
    if acc.ndim != 4 or baseline.shape != acc.shape:
        raise ValueError(f"acc {acc.shape} and baseline {baseline.shape} must both be [seeds, layers, tokens, "
                         "neurons]")
    if pred.shape != (acc.shape[1], acc.shape[3]):
        raise ValueError(f"pred has shape {pred.shape}; acc {acc.shape} implies [{acc.shape[1]}, {acc.shape[3]}]")
    if np.isnan(acc).any() or np.isnan(baseline).any():
        raise ValueError("acc or baseline contains NaN (a predictivity run without dev or train examples?)")
    mask = suppression.skill_mask(pred, settings.top_percent, settings.scope)             # [L, N]
    weight = np.broadcast_to(mask[None, :, None, :], acc.shape).astype(np.float32)
    if settings.tokens == "best":
        token_pred = np.maximum(acc, 1.0 - acc)
        best = np.argmax(token_pred, axis=2)                                                 # [S, L, N]
        onehot = np.arange(acc.shape[2])[None, None, :, None] == best[:, :, None, :]
        weight = weight * onehot
    direction = np.where(acc >= 0.5, 1.0, -1.0).astype(np.float32)
    return AnchorTarget(weight=jnp.asarray(weight), baseline=jnp.asarray(baseline, jnp.float32),
                        direction=jnp.asarray(direction))


def _weighted_mean(penalty, weight, example_mask):
    """penalty [L, B, T, N], weight [L, T, N], example_mask [B] -> the mean over weighted entries and examples."""
    m = example_mask.astype(jnp.float32)
    w = weight[:, None] * m[None, :, None, None]
    return jnp.sum(penalty * w) / jnp.maximum(jnp.sum(w), 1.0)


def sign_term(acts, labels, example_mask, target: AnchorTarget, *, penalty: str = "hinge",
              margin: float = 0.0) -> jax.Array:
    """acts float [L, B, T, N] (prompt positions), labels int [B], example_mask [B] -> scalar: the mean penalty of
    selected neurons on the wrong side of their baseline for the gold label (module docstring)."""
    sign = (2.0 * labels.astype(jnp.float32) - 1.0)[None, :, None, None]                   # [1, B, 1, 1]
    side = target.direction[:, None] * sign * (acts - target.baseline[:, None])             # [L, B, T, N]
    gap = margin - side
    value = jax.nn.relu(gap) if penalty == "hinge" else jax.nn.softplus(gap)
    return _weighted_mean(value, target.weight, example_mask)


def clean_term(acts, clean_acts, example_mask, target: AnchorTarget) -> jax.Array:
    """Mean squared distance of selected neurons to their clean-input activations (held constant)."""
    value = jnp.square(acts - jax.lax.stop_gradient(clean_acts))
    return _weighted_mean(value, target.weight, example_mask)


# ----------------------------------------------------------------------------------------------- the loss
def perturbed_view(batch: Mapping[str, jax.Array]) -> dict:
    """The batch's perturbed text (perturbed_input_ids / perturbed_attention_mask) with its labels, or the clean
    text when the batch carries no perturbed copy."""
    view = dict(batch)
    if PERTURBED_KEYS["input_ids"] in batch:
        for plain, perturbed in PERTURBED_KEYS.items():
            view[plain] = batch[perturbed]
    return view


def with_perturbed(batch: Mapping[str, np.ndarray], perturbed, length: Optional[int] = None) -> dict:
    """A data.batches batch plus `perturbed_input_ids` / `perturbed_attention_mask` int32 [B, T']: the rows
    `batch["index"]` of `perturbed` (data.batches.Encoded of robust.perturb.perturb_examples over the same
    examples, same order); filler rows (index -1) repeat row 0 and stay masked by example_mask. T' is `length`
    (e.g. the bucket of max_text_tokens, so every seed's batch has one shape) or the longest row.

    Raises when the perturbed labels differ from the batch's (the two encodings are of different examples)."""
    index = np.asarray(batch["index"])
    rows = np.where(index >= 0, index, 0)
    ids = [perturbed.input_ids[int(r)] for r in rows]
    if not np.array_equal(perturbed.labels[rows][index >= 0], np.asarray(batch["labels"])[index >= 0]):
        raise ValueError("perturbed examples carry other labels than the batch: encode the perturbed copy of the "
                         "same examples in the same order")
    width = max(len(r) for r in ids) if length is None else int(length)
    if max(len(r) for r in ids) > width:
        raise ValueError(f"a perturbed row has {max(len(r) for r in ids)} tokens; length is {width}")
    out_ids = np.full((len(ids), width), perturbed.pad_id, np.int32)
    out_mask = np.zeros((len(ids), width), np.int32)
    for i, r in enumerate(ids):
        out_ids[i, :len(r)] = r
        out_mask[i, :len(r)] = 1
    return {**batch, PERTURBED_KEYS["input_ids"]: out_ids, PERTURBED_KEYS["attention_mask"]: out_mask}


def adversarial_delta(readout, params, prompt, batch, epsilon: float, steps: int = 1) -> jax.Array:
    """float32 [B, T, H]: the gradient-sign perturbation of the text's input embeddings within the L-inf ball
    of radius epsilon that raises the cross-entropy; zero on padding; a constant (no gradient flows through it)."""
    if readout.kind.name == "t5":
        raise ValueError("the adversarial embedding step needs an encoder readout (EncoderModel.text_delta); "
                         "T5 has none")
    ids = batch["input_ids"]
    hidden = readout.module.config.hidden
    real = batch["attention_mask"].astype(jnp.float32)[..., None]
    frozen_prompt = jax.lax.stop_gradient(prompt)

    def ce_of(delta):
        scores = readout.scores(params, frozen_prompt, batch, text_delta=delta)[0]
        return cross_entropy(scores, batch["labels"], batch["example_mask"])

    delta = jnp.zeros(ids.shape + (hidden,), jnp.float32)
    step = epsilon / steps
    for _ in range(steps):
        grad = jax.grad(ce_of)(delta)
        delta = jnp.clip(delta + step * jnp.sign(grad) * real, -epsilon, epsilon)
    return jax.lax.stop_gradient(delta)


def make_loss(readout, settings: AnchorSettings, prompt_length: int, *, monitor: bool = False) -> Callable:
    """(params, prompt [P, H], batch, target AnchorTarget [L, P, N] | None) -> (loss, aux {ce, perturbed_ce,
    anchor}). `readout` is prompt.readout.Readout; its `scores` with `capture=Capture(0, P)` reads the prompt's
    neurons. Off (`settings.active` False): exactly cross_entropy(readout.scores(params, prompt, batch)[0], ...),
    prompt.train's plain loss, the same operations. `monitor` (an active arm with strength 0, the perturbed
    control): the anchor term is measured with the target all the same, without a gradient and outside the loss,
    so that the arms' logs show what the anchor changed (the manipulation check)."""
    capture = Capture(start=0, length=int(prompt_length))
    measure = settings.uses_neurons or monitor

    def plain(params, prompt, batch, target=None):
        loss = cross_entropy(readout.scores(params, prompt, batch)[0], batch["labels"], batch["example_mask"])
        return loss, {"ce": loss, "perturbed_ce": jnp.zeros_like(loss), "anchor": jnp.zeros_like(loss)}

    if not settings.active:
        return plain

    def combined(params, prompt, batch, target=None):
        if measure and target is None:
            raise ValueError("the anchor term (strength > 0, or monitored) needs an AnchorTarget "
                             "(robust.anchor.anchor_targets)")
        labels, example_mask = batch["labels"], batch["example_mask"]
        need_clean_neurons = measure and settings.mode == "clean"
        clean_scores, clean_out = readout.scores(params, prompt, batch,
                                                 capture=capture if need_clean_neurons else None)
        ce = cross_entropy(clean_scores, labels, example_mask)
        view = perturbed_view(batch)
        extra = {}
        if settings.epsilon > 0:
            extra["text_delta"] = adversarial_delta(readout, params, prompt, view, settings.epsilon,
                                                    int(settings.adversarial_steps))
        scores, out = readout.scores(params, prompt, view, capture=capture if measure else None, **extra)
        perturbed_ce = cross_entropy(scores, labels, example_mask)
        anchor = jnp.zeros_like(ce)
        if measure:
            if out.neurons.shape[2] != target.weight.shape[1]:
                raise ValueError(f"the anchor target covers {target.weight.shape[1]} prompt positions; the prompt "
                                 f"has {out.neurons.shape[2]} (a predictivity file of another prompt length or "
                                 "positions='all')")
            if settings.mode == "sign":
                anchor = sign_term(out.neurons, labels, example_mask, target, penalty=settings.penalty,
                                   margin=settings.margin)
            else:
                anchor = clean_term(out.neurons, clean_out.neurons, example_mask, target)
        if not settings.uses_neurons:
            anchor = jax.lax.stop_gradient(anchor)            # monitored only: not part of the loss
            loss = ce + settings.perturbed_weight * perturbed_ce
        else:
            loss = ce + settings.perturbed_weight * perturbed_ce + settings.strength * anchor
        return loss, {"ce": ce, "perturbed_ce": perturbed_ce, "anchor": anchor}

    return combined


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation, mesh):
    """prompt.train.make_train_step with the robust loss: (prompts [S, P, H], opt_state, params, batch [S, B, ...],
    targets AnchorTarget [S, L, P, N] | None) -> (prompts, opt_state, loss [S], aux {name: [S]}); one jit.
    The gradient is taken w.r.t. the prompt only: the model parameters are constants of the step."""

    def one_seed(prompt, opt_state, params, batch, target):
        (loss, aux), grad = jax.value_and_grad(lambda p: loss_fn(params, p, batch, target), has_aux=True)(prompt)
        updates, opt_state = tx.update(grad, opt_state, prompt)
        return optax.apply_updates(prompt, updates), opt_state, loss, aux

    repl = parallel.replicated(mesh)
    # the plain training step's compiler options: with the anchor off, the two steps stay bitwise equal
    return jax.jit(jax.vmap(one_seed, in_axes=(0, 0, None, 0, 0)), donate_argnums=(0, 1),
                   out_shardings=(repl, repl, repl, repl), compiler_options=parallel.train_step_compiler_options(mesh))


def step_factory(loss_fn: Callable, targets: Optional[AnchorTarget]) -> Callable:
    """For prompt.train.train(step_factory=...): (tx, mesh) -> (prompts, opt_state, params, batch) ->
    (prompts, opt_state, {"loss": [S], "ce": [S], "perturbed_ce": [S], "anchor": [S]}), the robust step with the
    seeds' targets [S, L, P, N] (replicated) bound; the training loop logs each term's mean since the last
    evaluation beside the loss (train_ce, train_perturbed_ce, train_anchor). Batches with perturbed text must have
    one width across seeds (with_perturbed(length=...))."""

    def factory(tx, mesh):
        step = make_train_step(loss_fn, tx, mesh)
        bound = None if targets is None else parallel.replicate(targets, mesh)

        def run(prompts, opt_state, params, batch):
            prompts, opt_state, loss, aux = step(prompts, opt_state, params, batch, bound)
            return prompts, opt_state, {"loss": loss, **aux}

        return run

    return factory
