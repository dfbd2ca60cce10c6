"""Activation patching on adversarial inputs: does restoring the skill neurons restore the answer?

For an adversarial example x' whose unperturbed original x is known (robust.advglue), run x' with the clean task's
prompt P_s and replace the activations of the top-k % skill neurons (at the prompt positions) by
  source "original": those of the run of x with the same prompt (per example and prompt position), or
  source "mean":     their clean TRAIN mean, the eq. 2 baseline b_s(l, n, j) of the predictivity file,
then read the answer. Controls patch as many random neurons per layer (neurons.suppression.random_control_masks:
same count per layer, `draws` draws from an explicit seed). The levels are k = 1..15 % by default (k = 0 is the
unpatched adversarial run). The mask and the values are data: `make_patch_run` compiles once per batch shape and
serves the source run, the unpatched run, every level and every draw.

Result (`PatchingResult`): accuracy and F1 per level, skill [K, S] and random [K, D, S], plus the unpatched
adversarial and the original accuracy per seed. `to_json` writes the suppression JSON format
(analysis.results.load_suppression reads it) with the extra fields listed there.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Iterable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from skillneurons_jax.models.ffn import Capture, Intervention
from skillneurons_jax.neurons import suppression
from skillneurons_jax.prompt import eval_loop, metrics

SOURCES = ("original", "mean")
DEFAULT_PERCENTS = tuple(range(1, 16))


@dataclasses.dataclass(frozen=True)
class PatchingSettings:
    """Config block `patching` (frozen; `from_mapping` rejects unknown keys)."""

    percents: tuple = DEFAULT_PERCENTS
    source: str = "original"
    scope: str = "layer"
    random_draws: int = 5
    random_seed: int = 0
    random_from: str = "all"          # "rest": controls drawn from the neurons outside the level's skill set

    def __post_init__(self):
        percents = tuple(float(p) if not float(p).is_integer() else int(p) for p in self.percents)
        for p in percents:
            suppression.count_for(100, p)  # ValueError outside [0, 100]
        if not percents:
            raise ValueError("patching.percents is empty")
        object.__setattr__(self, "percents", percents)
        if self.source not in SOURCES:
            raise ValueError(f"patching.source {self.source!r}; allowed: {SOURCES}")
        if self.scope not in suppression.SCOPES:
            raise ValueError(f"patching.scope {self.scope!r}; allowed: {suppression.SCOPES}")
        if int(self.random_draws) < 1:
            raise ValueError(f"patching.random_draws must be >= 1, got {self.random_draws}")
        if self.random_from not in suppression.RANDOM_FROM:
            raise ValueError(f"patching.random_from {self.random_from!r}; allowed: {suppression.RANDOM_FROM}")

    @classmethod
    def from_mapping(cls, cfg: Optional[Mapping]) -> "PatchingSettings":
        cfg = dict(cfg or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"unknown patching keys {unknown}; known: {sorted(known)}")
        if isinstance(cfg.get("percents"), str):
            cfg["percents"] = tuple(float(p) for p in cfg["percents"].split(",") if p.strip())
        return cls(**cfg)

    @classmethod
    def from_config(cls, block, where: str = "--config.patching.") -> "PatchingSettings":
        try:
            return cls.from_mapping(block.to_dict() if hasattr(block, "to_dict") else block)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where.rstrip('.')}: {error}") from None

    def to_dict(self) -> dict:
        out = {**dataclasses.asdict(self), "percents": list(self.percents)}
        if self.random_from == "all":     # the default: settings recorded before the option existed stay equal
            out.pop("random_from")
        return out


def make_patch_run(readout, prompt_length: int):
    """jit((params, prompt [P, H], batch, mask bool [L, N], values float32 [L, B, P, N]) -> (scores [B, C],
    neurons [L, B, P, N])). The neurons are captured after the patch (at the prompt positions). With an all-False
    mask this is the unpatched run, and its neurons are the values to patch another run with: the same compiled
    function computes both, so a run patched with its own neurons is bit-identical to it."""
    capture = Capture(start=0, length=int(prompt_length))

    def run(params, prompt, batch, mask, values):
        scores, out = readout.scores(params, prompt, batch, capture=capture,
                                     intervention=Intervention.patch(mask, values))
        return scores, out.neurons

    return jax.jit(run)


@dataclasses.dataclass
class PatchingResult:
    percents: tuple            # [K]
    skill: np.ndarray          # accuracy [K, S]
    random: np.ndarray         # accuracy [K, D, S]
    skill_f1: np.ndarray       # [K, S]
    random_f1: np.ndarray      # [K, D, S]
    adversarial: np.ndarray    # unpatched adversarial accuracy [S]
    original: np.ndarray       # accuracy on the originals [S] (source "original"; NaN for "mean")
    neurons_per_layer: np.ndarray  # int [K, L]
    n_examples: int
    settings: PatchingSettings
    # 0/1 per seed and example [S, E] (file order), unpatched: the adversarial versions, and the originals (None for
    # source "mean"): the paired clean-vs-adversarial drop's exact McNemar test (analysis.verdicts.f2_drop)
    adversarial_correct: np.ndarray | None = None
    original_correct: np.ndarray | None = None
    # 0/1 per level, (draw,) seed and example, patched: skill [K, S, E], random [K, D, S, E]; labels [E] (the
    # suppression JSON's per-example fields: the per-example paired test of skill against random patches)
    skill_correct: np.ndarray | None = None
    random_correct: np.ndarray | None = None
    labels: np.ndarray | None = None

    def to_json(self, **fields) -> dict:
        """The suppression JSON format (ks with k = 0 = unpatched; skill / random per seed) plus
        `adversarial_accuracy`, `original_accuracy`, `neurons_per_layer`, `patch_source` ("original" |
        "mean"; `source` is the suppression format's source TASK), `scope`, `random_seed`, `random_draws`,
        `n_examples` and `fields` (model, source/target task, seeds, ...)."""
        draws = self.random.shape[1]
        levels = [0, *self.percents]
        skill = {"0": self.adversarial.tolist(), **{str(k): self.skill[i].tolist()
                                                    for i, k in enumerate(self.percents)}}
        random = {"0": [self.adversarial.tolist()] * draws,
                  **{str(k): self.random[i].tolist() for i, k in enumerate(self.percents)}}
        return {**fields, "ks": levels, "skill": skill, "random": random,
                "skill_f1": {str(k): self.skill_f1[i].tolist() for i, k in enumerate(self.percents)},
                "random_f1": {str(k): self.random_f1[i].tolist() for i, k in enumerate(self.percents)},
                "adversarial_accuracy": self.adversarial.tolist(),
                "original_accuracy": [None if np.isnan(a) else float(a) for a in self.original],
                "neurons_per_layer": self.neurons_per_layer.tolist(), "patch_source": self.settings.source,
                "scope": self.settings.scope, "random_seed": self.settings.random_seed,
                "random_draws": draws, "n_examples": self.n_examples, "intervention": "patch",
                **({} if self.adversarial_correct is None else
                   {"adversarial_correct": np.asarray(self.adversarial_correct, int).tolist()}),
                **({} if self.original_correct is None else
                   {"original_correct": np.asarray(self.original_correct, int).tolist()}),
                **self._per_example_fields(draws)}

    def _per_example_fields(self, draws: int) -> dict:
        """The suppression JSON's skill_correct / random_correct / labels, level "0" the unpatched run (as in
        `skill` and `random`); {} when the result holds none."""
        if self.skill_correct is None or self.adversarial_correct is None or self.labels is None:
            return {}
        adv = np.asarray(self.adversarial_correct, int).tolist()
        skill = {"0": adv, **{str(k): np.asarray(self.skill_correct[i], int).tolist()
                              for i, k in enumerate(self.percents)}}
        random = {"0": [adv] * draws, **{str(k): np.asarray(self.random_correct[i], int).tolist()
                                         for i, k in enumerate(self.percents)}}
        return {"skill_correct": skill, "random_correct": random, "labels": np.asarray(self.labels, int).tolist()}


def _correct(scores, batch) -> np.ndarray:
    """0/1 [real rows of the batch]: whether the answer (argmax, as metrics.confusion) is the label."""
    keep = np.asarray(batch["example_mask"], bool)
    return (np.asarray(jnp.argmax(scores, axis=-1)) == np.asarray(batch["labels"]))[keep].astype(np.int8)


def _confusion(scores, batch) -> np.ndarray:
    return np.asarray(metrics.confusion(scores, jnp.asarray(batch["labels"]), jnp.asarray(batch["example_mask"])))


def patching_curves(run, params, prompts, batch_pairs: Iterable[tuple], pred, settings: PatchingSettings, *,
                    baseline=None) -> PatchingResult:
    """Accuracy of the adversarial inputs with skill / random neurons patched, per level, seed and draw.

    run: make_patch_run(readout, P). prompts float [S, P, H] (the clean task's prompts, one per seed).
    batch_pairs: (adversarial batch, original batch) per batch, rows aligned (example i of one is the original
      of example i of the other; labels and example_mask from the adversarial batch), token lengths free;
      source "mean" reads only the adversarial batch (pass (adv, None)). A list (iterated once per seed).
    pred float [L, N]: the clean task's predictivity (eq. 5). baseline float [S, L, P, N]: the eq. 2 baseline
      (required for source "mean").
    """
    prompts = jnp.asarray(prompts, jnp.float32)
    pairs = list(batch_pairs)
    if not pairs:
        raise ValueError("patching needs at least one batch of adversarial examples")
    masks = suppression.skill_masks(pred, settings.percents, settings.scope)             # [K, L, N]
    controls = suppression.random_control_masks(masks, settings.random_seed, settings.random_draws,
                                                settings.random_from)                            # [D, K, L, N]
    num_levels, num_layers, num_neurons = masks.shape
    draws = controls.shape[0]
    num_seeds, prompt_len = prompts.shape[0], prompts.shape[1]
    if settings.source == "mean":
        if baseline is None:
            raise ValueError("patching source 'mean' needs the clean TRAIN baseline [S, L, P, N]")
        baseline = np.asarray(baseline, np.float32)
        if baseline.shape != (num_seeds, num_layers, prompt_len, num_neurons):
            raise ValueError(f"baseline has shape {baseline.shape}; expected [{num_seeds}, {num_layers}, "
                             f"{prompt_len}, {num_neurons}] (seeds, layers, prompt positions, neurons)")
    none = jnp.zeros((num_layers, num_neurons), bool)
    num_labels = None
    conf_skill = conf_random = conf_adv = conf_orig = None
    n_examples = 0
    adv_correct = [[] for _ in range(num_seeds)]
    orig_correct = [[] for _ in range(num_seeds)]
    skill_correct = [[[] for _ in range(num_seeds)] for _ in range(num_levels)]                 # [K][S][batches]
    random_correct = [[[[] for _ in range(num_seeds)] for _ in range(draws)] for _ in range(num_levels)]
    labels = []
    adversarial = [adv for adv, _ in pairs]

    def step(s, prompt, placed) -> dict:
        """Every run of seed s on one adversarial batch (and its original): scores [B, C] unpatched ("adv"), on
        the original ("orig", source "original"), patched per level ("skill" [K]) and per level and draw
        ("random" [K][D])."""
        adv, orig = placed.host, pairs[placed.number][1]
        batch_size = placed.size
        zeros = jnp.zeros((num_layers, batch_size, prompt_len, num_neurons), jnp.float32)
        out = {"adv": run(params, prompt, placed.device, none, zeros)[0], "orig": None}
        if settings.source == "original":
            if orig is None or np.shape(orig["input_ids"])[0] != batch_size:
                raise ValueError("patching source 'original' needs an original batch of the adversarial "
                                 "batch's size for every batch")
            if not np.array_equal(np.asarray(orig["labels"]), np.asarray(adv["labels"])):
                raise ValueError("an original batch's labels differ from its adversarial batch's: the rows "
                                 "are not aligned")
            out["orig"], values = run(params, prompt, orig, none, zeros)
        else:
            values = jnp.broadcast_to(jnp.asarray(baseline[s])[:, None], zeros.shape)
        out["skill"] = [run(params, prompt, placed.device, jnp.asarray(masks[k]), values)[0]
                        for k in range(num_levels)]
        out["random"] = [[run(params, prompt, placed.device, jnp.asarray(controls[d, k]), values)[0]
                          for d in range(draws)] for k in range(num_levels)]
        return out

    def accumulate(s, placed, out) -> None:
        """Counts seed s's runs on one batch on the host (labels and real rows: the adversarial batch's)."""
        nonlocal num_labels, conf_skill, conf_random, conf_adv, conf_orig, n_examples
        adv = placed.host
        if num_labels is None:
            num_labels = out["adv"].shape[-1]
            conf_skill = np.zeros((num_levels, num_seeds, num_labels, num_labels), np.int64)
            conf_random = np.zeros((num_levels, draws, num_seeds, num_labels, num_labels), np.int64)
            conf_adv = np.zeros((num_seeds, num_labels, num_labels), np.int64)
            conf_orig = np.zeros((num_seeds, num_labels, num_labels), np.int64)
        conf_adv[s] += _confusion(out["adv"], adv)
        adv_correct[s].append(_correct(out["adv"], adv))
        if s == 0:
            n_examples += placed.examples
            labels.append(np.asarray(adv["labels"])[np.asarray(adv["example_mask"], bool)])
        if out["orig"] is not None:
            conf_orig[s] += _confusion(out["orig"], adv)
            orig_correct[s].append(_correct(out["orig"], adv))
        for k in range(num_levels):
            conf_skill[k, s] += _confusion(out["skill"][k], adv)
            skill_correct[k][s].append(_correct(out["skill"][k], adv))
            for d in range(draws):
                conf_random[k, d, s] += _confusion(out["random"][k][d], adv)
                random_correct[k][d][s].append(_correct(out["random"][k][d], adv))

    for s in range(num_seeds):
        prompt = prompts[s]
        # mesh None and every key passed: the patch run is a plain jit on the default device reading the batches
        # exactly as given, so its arithmetic stays the measured one
        eval_loop.run(functools.partial(step, s, prompt), adversarial, None, functools.partial(accumulate, s),
                      host_only=())
    original = metrics.accuracy(conf_orig) if settings.source == "original" else np.full(num_seeds, np.nan)
    return PatchingResult(percents=settings.percents, skill=metrics.accuracy(conf_skill),
                          random=metrics.accuracy(conf_random), skill_f1=metrics.f1(conf_skill),
                          random_f1=metrics.f1(conf_random), adversarial=metrics.accuracy(conf_adv),
                          original=original, neurons_per_layer=suppression.counts_per_layer(masks),
                          n_examples=n_examples, settings=settings,
                          adversarial_correct=np.stack([np.concatenate(c) for c in adv_correct]),
                          original_correct=(np.stack([np.concatenate(c) for c in orig_correct])
                                            if settings.source == "original" else None),
                          skill_correct=np.asarray([[np.concatenate(c) for c in level] for level in skill_correct]),
                          random_correct=np.asarray([[[np.concatenate(c) for c in draw] for draw in level]
                                                     for level in random_correct]),
                          labels=np.concatenate(labels))


def pair_batches(adversarial_batches: Sequence[Mapping], original_batches: Sequence[Mapping]) -> list[tuple]:
    """Zips file-order batches of the adversarial and original examples (data.batches.iterate with seed=None and
    the same batch size over robust.advglue pairs), checking that each pair covers the same rows."""
    if len(adversarial_batches) != len(original_batches):
        raise ValueError(f"{len(adversarial_batches)} adversarial batches but {len(original_batches)} original")
    for i, (adv, orig) in enumerate(zip(adversarial_batches, original_batches)):
        if "index" in adv and "index" in orig and not np.array_equal(adv["index"], orig["index"]):
            raise ValueError(f"batch {i}: adversarial and original batches hold different rows "
                             "(shuffled or sorted by length? pair them in file order)")
    return list(zip(adversarial_batches, original_batches))
