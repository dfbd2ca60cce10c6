"""RoBERTa / BERT family encoder (post-LayerNorm transformer) with an optional MLM head.

One module class, `EncoderModel`, serves both families; they differ only in where position ids start
(RoBERTa: `pad_token_id + 1`, BERT: 0) and in the MLM head's activation (RoBERTa: exact GELU, BERT: the
config's `hidden_act`). Every FFN is an `InterceptFFN`, so neuron read-out and interventions are shared
with every other architecture.

Soft prompts enter as `prefix` embeddings `[B or 1, P, H]` placed before the text:
  prefix_positions="zero":     prefix positions get a ZERO position embedding and the text positions
                               continue after the prefix (Prompt-Transferability / robust-neurons
                               `modelling_roberta.py`: the prompt ids take positions 2..P+1, then
                               `position_embeddings[:, :100] = 0`, so text token t sits at P + 2 + t).
  prefix_positions="standard": the prefix and the text get consecutive position embeddings.
Both modes give the text the same position ids; only the prefix's position embeddings differ.
BERT follows Hugging Face (text token t at P + t). The original's BERT variant instead reused RoBERTa's
numbering (P + 1 + t) and also zeroed the prompt's token-type embeddings; the paper's results use RoBERTa
and T5 only, so we do not copy that quirk.

`encoder_params_from_hf(state, config)` maps a Hugging Face state dict (with or without the `roberta.` /
`bert.` prefix) onto this module's parameter tree.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from skillneurons_jax.models import convert
from skillneurons_jax.models.config import ModelConfig
from skillneurons_jax.models.ffn import Capture, InterceptFFN, Intervention, activation_fn, stack_layers
from skillneurons_jax.models.outputs import ModelOutput

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
PREFIX_POSITION_MODES = ("zero", "standard")
# Activation of the MLM head's transform, per family (RoBERTa hard-codes exact GELU).
LM_HEAD_ACTIVATION = {"roberta": lambda cfg: "gelu", "bert": lambda cfg: cfg.activation}


def compute_dtype(config: ModelConfig):
    try:
        return COMPUTE_DTYPES[config.dtype]
    except KeyError:
        raise ValueError(f"unknown compute dtype {config.dtype!r}; known: {sorted(COMPUTE_DTYPES)}") from None


def first_position(config: ModelConfig) -> int:
    """Position id of the first token: RoBERTa numbers positions from padding_idx + 1 (fairseq), BERT from 0."""
    return config.pad_token_id + 1 if config.family == "roberta" else 0


def _layer_norm(config: ModelConfig, name: str) -> nn.LayerNorm:
    # LayerNorm in float32 even under bfloat16 compute: the residual stream stays float32.
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.float32, param_dtype=jnp.float32, name=name)


class SelfAttention(nn.Module):
    """Multi-head self-attention with an additive mask bias [B, 1, 1, T].

    Heads are moved ahead of the tokens ([B, heads, T, d]) before the two attention matmuls, so that both are
    plain batched matmuls over contiguous [T, d] / [T, T] blocks (XLA's CPU dot otherwise copies operands into
    that layout inside each matmul). The softmax is normalised AFTER the weighted sum of the values:
    ctx = (exp(s - max) @ v) / sum(exp(s - max)), dividing [B, h, T, d] instead of [B, h, T, T] (the same
    function as softmax(s) @ v; within float32 rounding). Dropout, when on, drops the unnormalised weights and
    divides by the row sum of the UNdropped weights: exactly dropout applied to the softmax probabilities.
    """

    config: ModelConfig
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, bias, *, rows: Optional[int] = None, deterministic: bool = True):
        """x [B, T, H], bias [B, 1, 1, T] -> [B, rows or T, H]: with `rows`, only the first rows' queries (keys
        and values come from all T positions)."""
        cfg = self.config
        dtype = compute_dtype(cfg)
        heads = cfg.num_heads
        if cfg.hidden % heads:
            raise ValueError(f"hidden size {cfg.hidden} is not a multiple of num_heads {heads}")
        head_dim = cfg.hidden // heads
        dense = lambda name: nn.Dense(cfg.hidden, dtype=dtype, param_dtype=jnp.float32, name=name)
        # [B, T, H] -> [B, heads, T, d]
        split = lambda t: t.reshape(t.shape[:-1] + (heads, head_dim)).transpose(0, 2, 1, 3)
        queries = x if rows is None else x[:, :rows]
        q = split(dense("query")(queries)) * jnp.asarray(1.0 / math.sqrt(head_dim), dtype)
        k = split(dense("key")(x))
        v = split(dense("value")(x))
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32) + bias
        # Shift by the row max (constant per row: no gradient needed through it), exponentiate in float32.
        weights = jnp.exp(scores - jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True)))
        total = jnp.sum(weights, axis=-1, keepdims=True)                    # [B, heads, T, 1]
        weights = nn.Dropout(self.dropout_rate)(weights, deterministic=deterministic)
        ctx = jnp.einsum("bhqk,bhkd->bhqd", weights.astype(dtype), v, preferred_element_type=jnp.float32) / total
        ctx = ctx.astype(dtype).transpose(0, 2, 1, 3)                       # [B, T, heads, d]
        ctx = ctx.reshape(ctx.shape[:2] + (cfg.hidden,))
        return dense("output")(ctx)


class EncoderLayer(nn.Module):
    """x -> LN(x + attn(x)) -> LN(h + FFN(h)) (post-LN, as BERT and RoBERTa).

    rows: compute only the first `rows` positions' outputs (x [B, T, H] -> [B, rows, H]); attention still reads
    every position. The model's last layer does this when its caller needs only those rows."""

    config: ModelConfig
    index: int
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, bias, *, capture=None, intervention=None, deterministic=True, rows=None):
        cfg = self.config
        drop = nn.Dropout(self.dropout_rate)
        a = SelfAttention(cfg, self.dropout_rate, name="attention")(x, bias, rows=rows, deterministic=deterministic)
        length = x.shape[1]
        if rows is not None:
            x = x[:, :rows]
        x = _layer_norm(cfg, "attention_norm")(x + drop(a, deterministic=deterministic).astype(jnp.float32))
        f, neurons = InterceptFFN(hidden=cfg.hidden, intermediate=cfg.layer_intermediate(self.index),
                                  activation=cfg.activation,
                                  gated=False, use_bias=True, dropout_rate=0.0, dtype=compute_dtype(cfg),
                                  name="ffn")(x, layer=self.index, capture=capture, intervention=intervention,
                                              deterministic=deterministic, sequence_length=length)
        x = _layer_norm(cfg, "ffn_norm")(x + drop(f, deterministic=deterministic).astype(jnp.float32))
        return x, neurons


class EncoderModel(nn.Module):
    """BERT / RoBERTa encoder. See the module docstring and docs/interfaces.md.

    Parameters (float32): word_embeddings [V, H], position_embeddings [max_positions, H],
    token_type_embeddings [type_vocab, H], embeddings_norm, layers_{i}/{attention, attention_norm, ffn,
    ffn_norm}; with an MLM head also lm_dense, lm_norm, lm_bias [V] (and lm_decoder [H, V] when the
    checkpoint does not tie it to the word embeddings).
    """

    config: ModelConfig
    dropout_rate: float = 0.0   # hidden/attention dropout when deterministic=False (0: dropout off)

    def setup(self):
        cfg = self.config
        init = nn.initializers.normal(0.02)
        self.word_embeddings = self.param("word_embeddings", init, (cfg.vocab_size, cfg.hidden))
        self.position_embeddings = self.param("position_embeddings", init, (cfg.max_positions, cfg.hidden))
        self.token_type_embeddings = self.param("token_type_embeddings", init, (cfg.type_vocab_size, cfg.hidden))
        self.embeddings_norm = _layer_norm(cfg, "embeddings_norm")
        self.embeddings_dropout = nn.Dropout(self.dropout_rate)
        self.layers = [EncoderLayer(cfg, i, self.dropout_rate, name=f"layers_{i}") for i in range(cfg.num_layers)]
        if cfg.has_lm_head:
            self.lm_dense = nn.Dense(cfg.hidden, dtype=compute_dtype(cfg), param_dtype=jnp.float32)
            self.lm_norm = _layer_norm(cfg, "lm_norm")
            self.lm_bias = self.param("lm_bias", nn.initializers.zeros, (cfg.vocab_size,))
            if not cfg.tie_word_embeddings:
                self.lm_decoder = self.param("lm_decoder", init, (cfg.hidden, cfg.vocab_size))

    def embed_tokens(self, ids):
        """Raw word embeddings: ids [...] -> [..., H] float32 (no position/type embeddings, no LayerNorm)."""
        return jnp.take(self.word_embeddings, ids, axis=0)

    def __call__(self, input_ids, attention_mask, *, prefix=None, prefix_positions: str = "zero",
                 capture: Optional[Capture] = None, intervention: Optional[Intervention] = None,
                 deterministic: bool = True, output_rows: Optional[int] = None,
                 text_delta: Optional[jax.Array] = None) -> ModelOutput:
        """input_ids int [B, T], attention_mask [B, T] (text only; 1 = real token), prefix float [B|1, P, H].

        Returns ModelOutput(hidden [B, P+T, H] float32, neurons [L, B, len, N] float32 or None), where the
        captured positions count over the full P+T sequence.

        output_rows: the caller reads only the first `output_rows` positions (a readout at the <mask> slot, the
        prompt's neurons): the last layer computes queries, FFN and norms for those rows only and `hidden` is
        [B, output_rows, H]. Everything returned equals the full computation's (rows of it). A capture must then
        end within those rows (Capture with a length).

        text_delta: float [B, T, H] added to the text's word embeddings (before position embeddings and the
        LayerNorm): an adversarial perturbation of the input embeddings (robust.anchor, FreeLB-style).
        """
        cfg = self.config
        input_ids, attention_mask = jnp.asarray(input_ids), jnp.asarray(attention_mask)
        prefix = None if prefix is None else jnp.asarray(prefix, jnp.float32)
        if prefix_positions not in PREFIX_POSITION_MODES:
            raise ValueError(f"prefix_positions must be one of {PREFIX_POSITION_MODES}, got {prefix_positions!r}")
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(f"input_ids {input_ids.shape} and attention_mask {attention_mask.shape} must both be "
                             "[batch, tokens]")
        if not cfg.uniform_width and (capture is not None or intervention is not None):
            raise ValueError(f"this model's layers have different FFN widths {cfg.intermediate_sizes} (a pruned "
                             "model): captures and [layers, neurons] interventions need one width")
        if intervention is not None and intervention.num_layers != cfg.num_layers:
            raise ValueError(f"intervention mask covers {intervention.num_layers} layers; the model has "
                             f"{cfg.num_layers}")
        batch, text_len = input_ids.shape
        text_mask = attention_mask.astype(jnp.int32)
        prefix_len = 0 if prefix is None else prefix.shape[1]
        start = first_position(cfg)

        # Text positions continue after the prefix. RoBERTa counts only real tokens (HF/fairseq: pad tokens
        # take the padding_idx position), so left and right padding give the same ids to the real tokens.
        if cfg.family == "roberta":
            count = jnp.cumsum(text_mask, axis=1)
            text_pos = jnp.where(text_mask > 0, start - 1 + prefix_len + count, cfg.pad_token_id)
        else:
            text_pos = jnp.broadcast_to(start + prefix_len + jnp.arange(text_len), (batch, text_len))
        last = start + prefix_len + text_len
        if last > cfg.max_positions:
            raise ValueError(f"{prefix_len} prefix + {text_len} text positions (first position id {start}) exceed "
                             f"the model's {cfg.max_positions} position embeddings")

        x = jnp.take(self.word_embeddings, input_ids, axis=0) + jnp.take(self.position_embeddings, text_pos, axis=0)
        if text_delta is not None:
            if jnp.shape(text_delta) != x.shape:
                raise ValueError(f"text_delta has shape {jnp.shape(text_delta)}; expected {x.shape} [batch, text "
                                 "tokens, hidden]")
            x = x + jnp.asarray(text_delta, x.dtype)
        if prefix is not None:
            if prefix.ndim != 3 or prefix.shape[-1] != cfg.hidden or prefix.shape[0] not in (1, batch):
                raise ValueError(f"prefix has shape {prefix.shape}; expected [{batch} or 1, P, {cfg.hidden}]")
            p = jnp.broadcast_to(prefix, (batch, prefix_len, cfg.hidden))
            if prefix_positions == "standard":
                p = p + self.position_embeddings[start:start + prefix_len][None]
            x = jnp.concatenate([p, x], axis=1)
        # token_type_ids are zeros everywhere (single-segment inputs).
        x = x + self.token_type_embeddings[0]
        x = self.embeddings_norm(x)
        x = self.embeddings_dropout(x, deterministic=deterministic)

        full_mask = text_mask if prefix is None else jnp.concatenate(
            [jnp.ones((batch, prefix_len), jnp.int32), text_mask], axis=1)
        bias = jnp.where(full_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)

        total = x.shape[1]
        if output_rows is not None:
            if not 1 <= output_rows <= total:
                raise ValueError(f"output_rows={output_rows} is outside 1..{total} (the sequence's positions)")
            if capture is not None and (capture.length is None or capture.start + capture.length > output_rows):
                raise ValueError(f"capture {capture} reaches beyond output_rows={output_rows}: the last layer "
                                 "computes only those rows")
            if output_rows == total:
                output_rows = None
        captured = []
        final = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x, neurons = layer(x, bias, capture=capture, intervention=intervention, deterministic=deterministic,
                               rows=output_rows if i == final else None)
            captured.append(neurons)
        if self.is_initializing() and cfg.has_lm_head:
            self.lm_logits(x[:, :1])  # create the MLM head's parameters at init
        return ModelOutput(hidden=x, neurons=stack_layers(captured) if capture is not None else None)

    def lm_logits(self, hidden, vocab_ids=None):
        """MLM head: hidden [..., H] -> logits [..., V], or [..., len(vocab_ids)] for vocab_ids int [K].

        With `vocab_ids` only those rows of the output projection are computed (the readout never needs
        the full vocabulary). Raises ValueError when the checkpoint has no MLM head.
        """
        cfg = self.config
        if not cfg.has_lm_head:
            raise ValueError("this checkpoint has no MLM head (e.g. a sentence-transformers BERT/MiniLM model): "
                             "lm_logits is unavailable; use hidden states or a model with lm_head/cls.predictions")
        act = activation_fn(LM_HEAD_ACTIVATION[cfg.family](cfg))
        h = self.lm_norm(act(self.lm_dense(hidden)).astype(jnp.float32))
        decoder = self.word_embeddings if cfg.tie_word_embeddings else self.lm_decoder.T   # [V, H]
        bias = self.lm_bias
        if vocab_ids is not None:
            vocab_ids = jnp.asarray(vocab_ids)
            decoder = jnp.take(decoder, vocab_ids, axis=0)
            bias = jnp.take(bias, vocab_ids, axis=0)
        dtype = compute_dtype(cfg)
        logits = jnp.einsum("...h,vh->...v", h.astype(dtype), decoder.astype(dtype),
                            preferred_element_type=jnp.float32)
        return logits + bias


# ---------------------------------------------------------------------------------------------------------
# Hugging Face state dict -> params

# Where each family keeps its MLM head, and the names inside it.
LM_HEADS = {
    "roberta": dict(prefix="lm_head.", dense="lm_head.dense", norm="lm_head.layer_norm",
                    bias=("lm_head.bias", "lm_head.decoder.bias"), decoder="lm_head.decoder.weight"),
    "bert": dict(prefix="cls.predictions.", dense="cls.predictions.transform.dense",
                 norm="cls.predictions.transform.LayerNorm",
                 bias=("cls.predictions.bias", "cls.predictions.decoder.bias"),
                 decoder="cls.predictions.decoder.weight"),
}
BACKBONE_PREFIXES = ("roberta.", "bert.")
# Old TF-converted BERT checkpoints name LayerNorm parameters gamma/beta.
_LEGACY_SUFFIXES = ((".gamma", ".weight"), (".beta", ".bias"))


def has_lm_head(state: Mapping[str, np.ndarray], family: str) -> bool:
    """Whether a raw HF state dict carries the family's MLM head (roberta `lm_head.*`, bert `cls.predictions.*`)."""
    prefix = LM_HEADS[family]["prefix"]
    return any(k.startswith(prefix) for k in state)


def normalize_state(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strips `roberta.` / `bert.` and renames legacy LayerNorm gamma/beta."""
    out = {}
    for k, v in convert.strip_prefix(state, BACKBONE_PREFIXES).items():
        for old, new in _LEGACY_SUFFIXES:
            if k.endswith(old) and "LayerNorm" in k:
                k = k[: -len(old)] + new
        out[k] = v
    return out


def encoder_params_from_hf(state: Mapping[str, np.ndarray], config: ModelConfig, *,
                           source: str = "checkpoint") -> dict:
    """HF BERT/RoBERTa state dict -> EncoderModel params (float32 numpy). Raises CheckpointError naming the
    first tensor that is missing or has the wrong shape."""
    if config.family not in LM_HEADS:
        raise ValueError(f"encoder_params_from_hf: family {config.family!r} is not an encoder family")
    s = normalize_state(state)
    H, V = config.hidden, config.vocab_size
    take = lambda name, shape: convert.take(s, name, shape, source=source)
    dense = lambda prefix, d_in, d_out: convert.dense(s, prefix, d_in, d_out, source=source)
    norm = lambda prefix: convert.layer_norm(s, prefix, H, source=source)

    params = {
        "word_embeddings": take("embeddings.word_embeddings.weight", (V, H)),
        "position_embeddings": take("embeddings.position_embeddings.weight", (config.max_positions, H)),
        "token_type_embeddings": take("embeddings.token_type_embeddings.weight", (config.type_vocab_size, H)),
        "embeddings_norm": norm("embeddings.LayerNorm"),
    }
    for i in range(config.num_layers):
        p = f"encoder.layer.{i}."
        N = config.layer_intermediate(i)
        params[f"layers_{i}"] = {
            "attention": {
                "query": dense(p + "attention.self.query", H, H),
                "key": dense(p + "attention.self.key", H, H),
                "value": dense(p + "attention.self.value", H, H),
                "output": dense(p + "attention.output.dense", H, H),
            },
            "attention_norm": norm(p + "attention.output.LayerNorm"),
            "ffn": {"wi": dense(p + "intermediate.dense", H, N), "wo": dense(p + "output.dense", N, H)},
            "ffn_norm": norm(p + "output.LayerNorm"),
        }
    if config.has_lm_head:
        names = LM_HEADS[config.family]
        bias_name = next((b for b in names["bias"] if b in s), names["bias"][0])
        params["lm_dense"] = dense(names["dense"], H, H)
        params["lm_norm"] = norm(names["norm"])
        params["lm_bias"] = take(bias_name, (V,))
        if not config.tie_word_embeddings:
            params["lm_decoder"] = convert.take(s, names["decoder"], (H, V), source=source, transpose=True)
    return params


def encoder_state_from_params(params, config: ModelConfig) -> dict[str, np.ndarray]:
    """EncoderModel params -> a Hugging Face state dict (float32 numpy, no `roberta.` / `bert.` prefix): the
    inverse of encoder_params_from_hf, so a changed model (a pruned one: per-layer FFN widths) is written as a
    checkpoint folder that load_pretrained reads like any other."""
    if config.family not in LM_HEADS:
        raise ValueError(f"encoder_state_from_params: family {config.family!r} is not an encoder family")
    state: dict[str, np.ndarray] = {}
    arr = lambda a: np.ascontiguousarray(np.asarray(a, np.float32))

    def dense(prefix, p):
        state[prefix + ".weight"] = arr(np.asarray(p["kernel"]).T)
        if "bias" in p:
            state[prefix + ".bias"] = arr(p["bias"])

    def norm(prefix, p):
        state[prefix + ".weight"] = arr(p["scale"])
        state[prefix + ".bias"] = arr(p["bias"])

    state["embeddings.word_embeddings.weight"] = arr(params["word_embeddings"])
    state["embeddings.position_embeddings.weight"] = arr(params["position_embeddings"])
    state["embeddings.token_type_embeddings.weight"] = arr(params["token_type_embeddings"])
    norm("embeddings.LayerNorm", params["embeddings_norm"])
    for i in range(config.num_layers):
        p, layer = f"encoder.layer.{i}.", params[f"layers_{i}"]
        for ours, theirs in (("query", "attention.self.query"), ("key", "attention.self.key"),
                             ("value", "attention.self.value"), ("output", "attention.output.dense")):
            dense(p + theirs, layer["attention"][ours])
        norm(p + "attention.output.LayerNorm", layer["attention_norm"])
        dense(p + "intermediate.dense", layer["ffn"]["wi"])
        dense(p + "output.dense", layer["ffn"]["wo"])
        norm(p + "output.LayerNorm", layer["ffn_norm"])
    if config.has_lm_head:
        names = LM_HEADS[config.family]
        dense(names["dense"], params["lm_dense"])
        norm(names["norm"], params["lm_norm"])
        state[names["bias"][0]] = arr(params["lm_bias"])
        if not config.tie_word_embeddings:
            state[names["decoder"]] = arr(np.asarray(params["lm_decoder"]).T)
    return state
