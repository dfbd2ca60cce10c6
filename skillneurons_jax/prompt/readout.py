"""Verbalizer readouts: (frozen model, prompt, text batch) -> one score per label word, `[B, C]`.

Which readout a model gets is data (`DEFAULT_READOUT`, keyed by family and whether the checkpoint has an MLM head);
what each readout does is one row of `READOUTS`:

  mlm   RoBERTa / BERT with an MLM head (the original PromptRoberta). Prompt slot 0 holds the `<mask>` word
        embedding; the label is read from the MLM logits at position 0 (that slot), restricted to the label-word
        ids. Input layout, as robust-neurons' formatters and `modelling_roberta.py` build it:
        `[prompt_0 = <mask>] [prompt_1 .. prompt_{P-1}] <s> text </s> <pad>...`, i.e. the prompt comes BEFORE
        `<s>`; token types are zeros; the prompt is always attended. Positions: by default ("zero") the P prompt
        slots get zero position embeddings and the text continues at position P + 2 (RoBERTa numbering: the
        original gives the prompt ids 2..P+1 and then zeroes `position_embeddings[:, :100]`); "standard" gives
        the prompt consecutive positions instead. Note the original overwrote slot 0 in place after the prompt
        lookup, so prompt row 0 still received (unused) gradients there; here row 0 is never read, so it keeps
        its initial value. Outputs are the same. Label words must be single tokens (the original's are).
  tied  BERT-family checkpoints without an MLM head (sentence-transformers MiniLM): the final hidden state at
        prompt slot 0 dotted with the frozen word embeddings of the label words (a multi-token word: the mean of
        its tokens' embeddings), times a fixed scale. Nothing but the prompt trains. Slot 0 holds the [MASK]
        embedding by default (the same layout as `mlm`); `mask_slot=False` lets slot 0 be a trained prompt token.
  t5    T5: label words scored by the decoder, starting from `decoder_start_token_id`, with attention masks always
        passed (trap 4). A label word of several tokens is scored by teacher forcing: the sum of the log-probs
        of its tokens, each word in its own decoder sequence, so every score stays aligned with its example and
        its label (trap 1: the original flattened two-token targets and misaligned labels). Single-token label
        words need one decoder step (the original's "first decoder step" scores, as log-probs).

`Readout.scores(params, prompt [P, H], batch, capture=None, intervention=None) -> (scores [B, C], ModelOutput)`
is what training, evaluation, predictivity and suppression all call.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

PREFIX_POSITION_MODES = ("zero", "standard")


@dataclasses.dataclass(frozen=True)
class ReadoutKind:
    name: str
    families: tuple            # model families it applies to
    needs_lm_head: bool
    mask_slot: bool            # default: prompt slot 0 holds the mask token's embedding
    single_token_labels: bool  # label words must be one token each
    score: Callable            # (readout, params, prompt [P,H], batch, **model_kwargs) -> (scores [B,C], out)


def _rows_read(capture) -> Optional[int]:
    """How many leading positions of an encoder's last layer the readout and the capture read: position 0 (the
    <mask> slot), and the captured slice. None (every row) for a capture that runs to the end."""
    if capture is None:
        return 1
    if capture.length is None:
        return None
    return max(1, capture.start + capture.length)


def _encoder_forward(ro: "Readout", params, prompt, batch, **kw):
    # The last layer computes only the rows read (output_rows): the readout needs position 0 alone, so training
    # and evaluation skip the text rows' (and the other prompt rows') queries and FFN there.
    return ro.module.apply({"params": params}, batch["input_ids"], batch["attention_mask"], prefix=prompt[None],
                           prefix_positions=ro.prefix_positions, output_rows=_rows_read(kw.get("capture")), **kw)


def _mlm_scores(ro: "Readout", params, prompt, batch, **kw):
    out = _encoder_forward(ro, params, prompt, batch, **kw)
    scores = ro.module.apply({"params": params}, out.hidden[:, 0], vocab_ids=jnp.asarray(ro.label_ids[:, 0]),
                             method="lm_logits")                                          # [B, C]
    return scores, out


def _tied_scores(ro: "Readout", params, prompt, batch, **kw):
    out = _encoder_forward(ro, params, prompt, batch, **kw)
    words = _label_embeddings(ro, params)                                                  # [C, H]
    return ro.scale * (out.hidden[:, 0].astype(jnp.float32) @ words.T), out


def _label_embeddings(ro: "Readout", params) -> jax.Array:
    emb = ro.module.apply({"params": params}, jnp.asarray(ro.label_ids), method="embed_tokens")  # [C, Lmax, H]
    valid = jnp.asarray(ro.label_valid(), jnp.float32)
    return (emb * valid[..., None]).sum(1) / valid.sum(1, keepdims=True)


def _t5_scores(ro: "Readout", params, prompt, batch, **kw):
    ids = ro.label_ids
    B = batch["input_ids"].shape[0]
    C, L = ids.shape
    apply = lambda input_ids, mask, dec: ro.module.apply(
        {"params": params}, input_ids, mask, decoder_input_ids=dec, prefix=prompt[None],
        decoder_attention_mask=jnp.ones(dec.shape, jnp.int32), **kw)
    if L == 1:  # every label word is one token: a single decoder step scores them all
        dec = jnp.full((B, 1), ro.decoder_start_token_id, jnp.int32)
        out = apply(batch["input_ids"], batch["attention_mask"], dec)
        logp = jax.nn.log_softmax(ro.module.apply({"params": params}, out.decoder_hidden[:, 0],
                                                  method="lm_logits"), axis=-1)            # [B, V]
        return logp[:, jnp.asarray(ids[:, 0])], out
    # Teacher forcing, one decoder sequence per (label word, example): row c*B + b scores word c for example b.
    dec_in = np.concatenate([np.full((C, 1), ro.decoder_start_token_id, np.int32), ids[:, :-1]], axis=1)  # [C, L]
    dec = jnp.repeat(jnp.asarray(dec_in), B, axis=0)                                       # [C*B, L]
    tile = lambda x: jnp.tile(x, (C, 1))
    out = apply(tile(batch["input_ids"]), tile(batch["attention_mask"]), dec)
    logp = jax.nn.log_softmax(ro.module.apply({"params": params}, out.decoder_hidden, method="lm_logits"), -1)
    target = jnp.repeat(jnp.asarray(ids), B, axis=0)                                       # [C*B, L]
    tok = jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]                    # [C*B, L]
    valid = jnp.repeat(jnp.asarray(ro.label_valid()), B, axis=0)
    scores = jnp.sum(jnp.where(valid, tok, 0.0), axis=-1).reshape(C, B).T                  # [B, C]
    first = lambda x, axis: None if x is None else jax.lax.slice_in_dim(x, 0, B, axis=axis)
    out = out.replace(hidden=first(out.hidden, 0), neurons=first(out.neurons, 1),
                      decoder_hidden=first(out.decoder_hidden, 0), decoder_neurons=first(out.decoder_neurons, 1))
    return scores, out


READOUTS = {
    "mlm": ReadoutKind("mlm", ("roberta", "bert"), needs_lm_head=True, mask_slot=True, single_token_labels=True,
                       score=_mlm_scores),
    "tied": ReadoutKind("tied", ("roberta", "bert"), needs_lm_head=False, mask_slot=True,
                        single_token_labels=False, score=_tied_scores),
    "t5": ReadoutKind("t5", ("t5",), needs_lm_head=True, mask_slot=False, single_token_labels=False,
                      score=_t5_scores),
}

# (family, checkpoint has an MLM head) -> readout
DEFAULT_READOUT = {
    ("roberta", True): "mlm",
    ("bert", True): "mlm",
    ("roberta", False): "tied",
    ("bert", False): "tied",
    ("t5", True): "t5",
}


@dataclasses.dataclass(frozen=True, eq=False)
class Readout:
    """A model's verbalizer readout for one task. Static (closed over by the compiled steps)."""

    module: Any
    kind: ReadoutKind
    label_ids: np.ndarray          # int32 [C, Lmax] (padded with 0 beyond each word's length)
    label_lengths: np.ndarray      # int32 [C]
    mask_slot: bool
    mask_token_id: Optional[int] = None
    prefix_positions: str = "zero"
    decoder_start_token_id: int = 0
    scale: float = 1.0             # tied readout: fixed multiplier of the dot products

    @property
    def num_labels(self) -> int:
        return int(self.label_ids.shape[0])

    def label_valid(self) -> np.ndarray:
        return np.arange(self.label_ids.shape[1])[None, :] < self.label_lengths[:, None]

    def model_prompt(self, params, prompt: jax.Array) -> jax.Array:
        """The prompt the model sees, [P, H]: slot 0 replaced by the mask embedding where the readout uses one."""
        if not self.mask_slot:
            return prompt
        mask_emb = self.module.apply({"params": params}, jnp.asarray(self.mask_token_id), method="embed_tokens")
        return prompt.at[0].set(jax.lax.stop_gradient(mask_emb).astype(prompt.dtype))

    def scores(self, params, prompt: jax.Array, batch, capture=None, intervention=None, **model_kwargs):
        """params (the frozen tree), prompt [P, H], batch {input_ids [B, T], attention_mask [B, T], ...}
        -> (scores float32 [B, C], ModelOutput). `capture` / `intervention` go to the (encoder) FFNs; T5 also
        takes decoder_capture / decoder_intervention. Positions count over the full P+T sequence."""
        if prompt.ndim != 2:
            raise ValueError(f"prompt must be [P, H], got shape {prompt.shape}")
        kw = dict(model_kwargs)
        if capture is not None:
            kw["capture"] = capture
        if intervention is not None:
            kw["intervention"] = intervention
        scores, out = self.kind.score(self, params, self.model_prompt(params, prompt), batch, **kw)
        return scores.astype(jnp.float32), out

    def score_fn(self):
        """(params, prompt, batch) -> scores [B, C]: the form prompt.train expects."""
        return lambda params, prompt, batch: self.scores(params, prompt, batch)[0]


def make_readout(loaded, label_words, *, kind: str = "auto", mask_slot="auto", prefix_positions: str = "zero",
                 scale: float = 1.0) -> Readout:
    """The readout for a loaded model (models.LoadedModel) and a task's label words (data.tasks.LabelWords:
    `.ids` [C, Lmax], `.lengths` [C]).

    kind: "auto" (DEFAULT_READOUT) or a key of READOUTS; mask_slot: "auto" (the kind's default) or a bool.
    """
    family, config = loaded.family, loaded.config
    if kind == "auto":
        key = (family, bool(config.has_lm_head))
        if key not in DEFAULT_READOUT:
            raise ValueError(f"no readout for family {family!r} (MLM head: {config.has_lm_head}); "
                             f"known: {sorted(DEFAULT_READOUT)}")
        kind = DEFAULT_READOUT[key]
    if kind not in READOUTS:
        raise ValueError(f"unknown readout {kind!r}; known: {sorted(READOUTS)}")
    spec = READOUTS[kind]
    if family not in spec.families:
        raise ValueError(f"readout {kind!r} is for families {spec.families}, not {family!r}")
    if spec.needs_lm_head and not config.has_lm_head:
        raise ValueError(f"readout {kind!r} needs an MLM/LM head, and this {family} checkpoint has none; "
                         "use readout 'tied'")
    if prefix_positions not in PREFIX_POSITION_MODES:
        raise ValueError(f"prefix_positions must be one of {PREFIX_POSITION_MODES}, got {prefix_positions!r}")
    ids = np.asarray(label_words.ids, np.int32)
    lengths = np.asarray(label_words.lengths, np.int32)
    if ids.ndim != 2 or lengths.shape != (ids.shape[0],) or ids.shape[0] < 2:
        raise ValueError(f"label words must be ids [num_labels >= 2, max_len] with lengths [num_labels]; got "
                         f"{ids.shape} and {lengths.shape}")
    if np.any(lengths < 1) or np.any(lengths > ids.shape[1]):
        raise ValueError(f"label-word lengths {lengths.tolist()} must lie in 1..{ids.shape[1]}")
    if np.any((ids < 0) | (ids >= config.vocab_size)):
        raise ValueError(f"label-word ids {ids.tolist()} fall outside the vocabulary of {config.vocab_size}")
    if spec.single_token_labels and np.any(lengths != 1):
        raise ValueError(f"readout {kind!r} reads one vocabulary entry per label, but some label words have "
                         f"several tokens (lengths {lengths.tolist()}); choose single-token label words")
    use_mask = spec.mask_slot if mask_slot == "auto" else bool(mask_slot)
    mask_id = None
    if use_mask:
        mask_id = getattr(loaded.tokenizer, "mask_token_id", None) if loaded.tokenizer is not None else None
        if mask_id is None:
            raise ValueError(f"readout {kind!r} puts the mask token in prompt slot 0, but the tokenizer has no "
                             "mask token")
    return Readout(module=loaded.module, kind=spec, label_ids=ids, label_lengths=lengths, mask_slot=use_mask,
                   mask_token_id=None if mask_id is None else int(mask_id), prefix_positions=prefix_positions,
                   decoder_start_token_id=int(getattr(config, "decoder_start_token_id", 0) or 0),
                   scale=float(scale))


def _bool_or_auto(value):
    """mask_slot as written in a config: "auto", a bool, or a string spelling one."""
    if isinstance(value, str):
        low = value.lower()
        if low == "auto":
            return "auto"
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"mask_slot must be auto, true or false; got {value!r}")
    return bool(value)


@dataclasses.dataclass(frozen=True)
class ReadoutSettings:
    """THE readout settings of a prompt: what tuning used and every later use of the prompt must repeat
    (configs/tune.py fields `readout`, `mask_slot`, `prefix_positions`, `tied_scale`). Frozen and hashable, so
    it keys caches; `to_dict()` is what sidecars and fingerprints record."""
    readout: str = "auto"                 # auto | a key of READOUTS
    mask_slot: Any = "auto"               # "auto" | bool
    prefix_positions: str = "zero"        # PREFIX_POSITION_MODES
    tied_scale: float = 1.0

    FIELDS = ("readout", "mask_slot", "prefix_positions", "tied_scale")

    @classmethod
    def from_config(cls, config) -> "ReadoutSettings":
        """From a tuning config (ConfigDict or mapping); absent fields take the training defaults."""
        get = config.get
        return cls(readout=str(get("readout", "auto")), mask_slot=_bool_or_auto(get("mask_slot", "auto")),
                   prefix_positions=str(get("prefix_positions", "zero")),
                   tied_scale=float(get("tied_scale", 1.0)))

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.FIELDS}

    def build(self, loaded, label_words) -> Readout:
        """make_readout with these settings."""
        return make_readout(loaded, label_words, kind=self.readout, mask_slot=self.mask_slot,
                            prefix_positions=self.prefix_positions, scale=self.tied_scale)
