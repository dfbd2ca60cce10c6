"""T5 encoder-decoder (v1.0 ReLU FFN; v1.1 gated-GELU is the `config.gated` switch), in Flax.

Matches Hugging Face `T5ForConditionalGeneration` (transformers 5) numerically: RMS layer norm without bias or
mean subtraction, unscaled dot-product attention with a relative position bias computed once per stack (by layer 0)
and shared by every layer, no bias anywhere. Every feed-forward block, encoder and decoder, is the one
`InterceptFFN`, so neuron read-out and interventions work the same as in the encoder families.

Attention masks are always applied (trap 4 of the original code ran T5 without them): encoder self-attention and
decoder cross-attention use the encoder mask (prefix positions always attended), decoder self-attention is causal
and additionally masked by `decoder_attention_mask`.

Parameter tree (float32):
  shared/embedding [V, H]
  encoder/relative_attention_bias/embedding [buckets, heads]        (HF: encoder.block.0...relative_attention_bias)
  encoder/block_<i>/{self_attn/{q,k,v,o}/kernel, self_attn_norm/weight, ffn/{wi | wi_0, wi_1, wo}/kernel,
                     ffn_norm/weight}
  encoder/final_norm/weight
  decoder/...  as the encoder, plus cross_attn/{q,k,v,o}/kernel and cross_attn_norm/weight per block
  lm_head/kernel [H, V]                                               (untied checkpoints only)
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
from skillneurons_jax.models.ffn import Capture, InterceptFFN, Intervention, stack_layers
from skillneurons_jax.models.outputs import ModelOutput

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
PREFIX_POSITION_MODES = ("zero", "standard")  # accepted for API symmetry; T5 has no absolute positions


def compute_dtype(config: ModelConfig):
    try:
        return COMPUTE_DTYPES[config.dtype]
    except KeyError:
        raise ValueError(f"ModelConfig.dtype {config.dtype!r} is not one of {sorted(COMPUTE_DTYPES)}") from None


# ----------------------------------------------------------------------------------------------------------------
# Relative positions
# ----------------------------------------------------------------------------------------------------------------

def relative_position_buckets(query_len: int, key_len: int, *, bidirectional: bool, num_buckets: int,
                              max_distance: int) -> np.ndarray:
    """Bucket index of (key position - query position), int32 [query_len, key_len].

    Computed in numpy at trace time (lengths are static) with the same float32 arithmetic as Hugging Face /
    Mesh TensorFlow, so bucket boundaries agree exactly: half the buckets are exact small distances, the other
    half logarithmic bins up to `max_distance`. Bidirectional (encoder) buckets split by sign; the causal
    decoder only sees non-positive offsets.
    """
    rel = np.arange(key_len, dtype=np.int64)[None, :] - np.arange(query_len, dtype=np.int64)[:, None]
    buckets = np.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets += (rel > 0).astype(np.int64) * num_buckets
        rel = np.abs(rel)
    else:
        rel = -np.minimum(rel, 0)
    max_exact = num_buckets // 2
    is_small = rel < max_exact
    with np.errstate(divide="ignore"):  # log(0) only on the small branch, which np.where discards
        large = (np.log(rel.astype(np.float32) / np.float32(max_exact))
                 / np.float32(math.log(max_distance / max_exact))
                 * np.float32(num_buckets - max_exact))
    large = max_exact + np.where(np.isfinite(large), large, 0).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return (buckets + np.where(is_small, rel, large)).astype(np.int32)


# ----------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------

class T5LayerNorm(nn.Module):
    """RMS norm: x / sqrt(mean(x^2) + eps) * weight; no mean subtraction, no bias; statistics in float32."""

    hidden: int
    eps: float = 1e-6

    @nn.compact
    def __call__(self, x):
        weight = self.param("weight", nn.initializers.ones, (self.hidden,), jnp.float32)
        x32 = x.astype(jnp.float32)
        variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        return weight * (x32 * jax.lax.rsqrt(variance + self.eps))


class T5Attention(nn.Module):
    """Multi-head attention without the 1/sqrt(d) scaling (T5 folds it into the initialisation).

    x [B, Tq, H], kv [B, Tk, H], bias float32 [1 | B, heads, Tq, Tk] or None, mask bool broadcastable to
    [B, heads, Tq, Tk] (True = attend). Softmax in float32.

    As the encoder's attention (roberta.SelfAttention): heads ahead of the tokens ([B, heads, T, d]) for both
    attention matmuls, and the softmax normalised after the weighted sum of the values (dropout, when on, drops
    the unnormalised weights and divides by the undropped row sum: dropout on the probabilities, exactly).
    """

    hidden: int
    num_heads: int
    head_dim: int
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, kv, bias, mask, *, deterministic: bool = True):
        inner = self.num_heads * self.head_dim
        dense = lambda n, name: nn.Dense(n, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32, name=name)
        # [B, T, inner] -> [B, heads, T, d]
        split = lambda t: t.reshape(*t.shape[:2], self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
        q = split(dense(inner, "q")(x))
        k = split(dense(inner, "k")(kv))
        v = split(dense(inner, "v")(kv))
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
        if bias is not None:
            scores = scores + bias
        # A large finite negative (not -inf) so a fully masked row stays finite, as in Hugging Face.
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
        weights = jnp.exp(scores - jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True)))
        total = jnp.sum(weights, axis=-1, keepdims=True)                    # [B, heads, Tq, 1]
        weights = nn.Dropout(self.dropout_rate)(weights, deterministic=deterministic)
        out = jnp.einsum("bhqk,bhkd->bhqd", weights.astype(self.dtype), v, preferred_element_type=jnp.float32)
        out = (out / total).astype(self.dtype).transpose(0, 2, 1, 3)        # [B, Tq, heads, d]
        return dense(self.hidden, "o")(out.reshape(*out.shape[:2], inner))


class T5Block(nn.Module):
    """Pre-norm block: self-attention, (decoder) cross-attention, FFN; each a residual branch."""

    config: ModelConfig
    is_decoder: bool
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, self_bias, self_mask, enc_hidden=None, cross_mask=None, *, layer: int,
                 capture: Optional[Capture] = None, intervention: Optional[Intervention] = None,
                 deterministic: bool = True):
        c = self.config
        dtype = compute_dtype(c)
        drop = lambda t: nn.Dropout(self.dropout_rate)(t, deterministic=deterministic)
        attn = lambda name: T5Attention(c.hidden, c.num_heads, c.head_dim or c.hidden // c.num_heads,
                                        self.dropout_rate, dtype, name=name)
        norm = lambda name: T5LayerNorm(c.hidden, c.layer_norm_eps, name=name)

        h = norm("self_attn_norm")(x)
        x = x + drop(attn("self_attn")(h, h, self_bias, self_mask, deterministic=deterministic))
        if self.is_decoder:
            h = norm("cross_attn_norm")(x)
            # No position bias in cross-attention (Hugging Face passes zeros).
            x = x + drop(attn("cross_attn")(h, enc_hidden, None, cross_mask, deterministic=deterministic))
        h = norm("ffn_norm")(x)
        out, neurons = InterceptFFN(hidden=c.hidden, intermediate=c.intermediate, activation=c.activation,
                                    gated=c.gated, use_bias=False, dropout_rate=self.dropout_rate, dtype=dtype,
                                    name="ffn")(h, layer=layer, capture=capture, intervention=intervention,
                                                deterministic=deterministic)
        return x + drop(out.astype(jnp.float32)), neurons


class T5Stack(nn.Module):
    """Encoder (bidirectional) or decoder (causal + cross-attention) stack over given input embeddings.

    embeds float32 [B, T, H]; mask bool [B, T] (keys that may be attended). Returns (hidden [B, T, H] after the
    final norm, neurons [L, B, len, N] or None).
    """

    config: ModelConfig
    is_decoder: bool
    num_layers: int
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, embeds, mask, enc_hidden=None, enc_mask=None, *, capture=None, intervention=None,
                 deterministic: bool = True):
        c = self.config
        if intervention is not None and intervention.num_layers != self.num_layers:
            stack = "decoder" if self.is_decoder else "encoder"
            raise ValueError(f"{stack} intervention mask has {intervention.num_layers} layers; the {stack} has "
                             f"{self.num_layers} (shape must be [{self.num_layers}, {c.intermediate}])")
        t = embeds.shape[1]
        buckets = relative_position_buckets(t, t, bidirectional=not self.is_decoder,
                                            num_buckets=c.relative_buckets, max_distance=c.relative_max_distance)
        rel_bias = nn.Embed(c.relative_buckets, c.num_heads, param_dtype=jnp.float32,
                            name="relative_attention_bias")
        bias = jnp.transpose(rel_bias(jnp.asarray(buckets)), (2, 0, 1))[None].astype(jnp.float32)  # [1,h,T,T]

        self_mask = mask[:, None, None, :]
        if self.is_decoder:
            self_mask = self_mask & jnp.tril(jnp.ones((t, t), bool))[None, None]
        cross_mask = None if enc_mask is None else enc_mask[:, None, None, :]

        x = nn.Dropout(self.dropout_rate)(embeds, deterministic=deterministic)
        captured = []
        for i in range(self.num_layers):
            x, neurons = T5Block(c, self.is_decoder, self.dropout_rate, name=f"block_{i}")(
                x, bias, self_mask, enc_hidden, cross_mask, layer=i, capture=capture,
                intervention=intervention, deterministic=deterministic)
            captured.append(neurons)
        x = T5LayerNorm(c.hidden, c.layer_norm_eps, name="final_norm")(x)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
        return x, (stack_layers(captured) if capture is not None else None)


class LMHead(nn.Module):
    """A separate (untied, T5 v1.1) output projection; `vocab_ids` restricts it to those columns."""

    hidden: int
    vocab_size: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h, vocab_ids=None):
        kernel = self.param("kernel", nn.initializers.normal(1.0), (self.hidden, self.vocab_size), jnp.float32)
        if vocab_ids is not None:
            kernel = jnp.take(kernel, jnp.asarray(vocab_ids), axis=1)
        return jnp.einsum("...h,hv->...v", h.astype(self.dtype), kernel.astype(self.dtype)).astype(jnp.float32)


# ----------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------

class T5Model(nn.Module):
    """T5 encoder-decoder with neuron capture and interventions in every FFN.

    `dropout_rate` applies where Hugging Face applies T5's dropout, and only when `deterministic=False`
    (it needs a 'dropout' rng); the checkpoint's rate is not part of ModelConfig, so it is set here.
    """

    config: ModelConfig
    dropout_rate: float = 0.0

    def setup(self):
        c = self.config
        if c.family != "t5":
            raise ValueError(f"T5Model needs a t5 ModelConfig, got family {c.family!r}")
        if c.num_decoder_layers < 1:
            raise ValueError("T5Model needs num_decoder_layers >= 1")
        self.shared = nn.Embed(c.vocab_size, c.hidden, param_dtype=jnp.float32,
                               embedding_init=nn.initializers.normal(1.0))
        self.encoder = T5Stack(c, False, c.num_layers, self.dropout_rate)
        self.decoder = T5Stack(c, True, c.num_decoder_layers, self.dropout_rate)
        if not c.tie_word_embeddings:
            self.lm_head = LMHead(c.hidden, c.vocab_size, compute_dtype(c))

    def embed_tokens(self, ids):
        """ids int [...] -> word embeddings float32 [..., H] (the shared table: no scaling, no positions)."""
        return self.shared(jnp.asarray(ids))

    def lm_logits(self, decoder_hidden, vocab_ids=None):
        """decoder_hidden [..., H] -> logits float32 [..., V], or [..., len(vocab_ids)] for just those words.

        Tied (T5 v1.0): hidden * d_model**-0.5 against the shared embedding. Untied (v1.1): the separate head.
        """
        c = self.config
        if not c.tie_word_embeddings:
            return self.lm_head(decoder_hidden, vocab_ids)
        dtype = compute_dtype(c)
        table = self.shared.embedding
        if vocab_ids is not None:
            table = jnp.take(table, jnp.asarray(vocab_ids), axis=0)
        h = decoder_hidden.astype(jnp.float32) * (c.hidden ** -0.5)
        return jnp.einsum("...h,vh->...v", h.astype(dtype), table.astype(dtype)).astype(jnp.float32)

    def __call__(self, input_ids, attention_mask, *, decoder_input_ids, decoder_attention_mask=None, prefix=None,
                 prefix_positions: str = "zero", capture: Optional[Capture] = None,
                 decoder_capture: Optional[Capture] = None, intervention: Optional[Intervention] = None,
                 decoder_intervention: Optional[Intervention] = None, deterministic: bool = True) -> ModelOutput:
        """input_ids, attention_mask [B, T]; decoder_input_ids [B, D]; decoder_attention_mask [B, D] or None
        (causal only); prefix float [B | 1, P, H] prepended to the encoder input embeddings and always attended.

        Returns ModelOutput(hidden [B, P+T, H] (encoder), neurons [L, B, len, N] | None, decoder_hidden [B, D, H],
        decoder_neurons [Ldec, B, len, N] | None). Capture/intervention positions count over P+T (encoder) and
        D (decoder).
        """
        if prefix_positions not in PREFIX_POSITION_MODES:
            raise ValueError(f"prefix_positions {prefix_positions!r} is not one of {PREFIX_POSITION_MODES}")
        input_ids = jnp.asarray(input_ids)
        decoder_input_ids = jnp.asarray(decoder_input_ids)
        if input_ids.ndim != 2 or jnp.shape(attention_mask) != input_ids.shape:
            raise ValueError(f"input_ids {input_ids.shape} and attention_mask {jnp.shape(attention_mask)} must "
                             "both be [batch, tokens]")
        if decoder_input_ids.ndim != 2 or decoder_input_ids.shape[0] != input_ids.shape[0]:
            raise ValueError(f"decoder_input_ids {decoder_input_ids.shape} must be [batch={input_ids.shape[0]}, "
                             "decoder tokens]")
        if decoder_attention_mask is None:
            decoder_attention_mask = jnp.ones(decoder_input_ids.shape, bool)
        elif jnp.shape(decoder_attention_mask) != decoder_input_ids.shape:
            raise ValueError(f"decoder_attention_mask {jnp.shape(decoder_attention_mask)} must match "
                             f"decoder_input_ids {decoder_input_ids.shape}")

        batch = input_ids.shape[0]
        embeds = self.embed_tokens(input_ids)
        enc_mask = jnp.asarray(attention_mask).astype(bool)
        if prefix is not None:
            prefix = jnp.asarray(prefix, jnp.float32)
            if prefix.ndim != 3 or prefix.shape[0] not in (1, batch) or prefix.shape[2] != self.config.hidden:
                raise ValueError(f"prefix has shape {prefix.shape}; expected [1 or {batch}, P, "
                                 f"{self.config.hidden}]")
            prefix = jnp.broadcast_to(prefix, (batch,) + prefix.shape[1:])
            embeds = jnp.concatenate([prefix, embeds], axis=1)
            enc_mask = jnp.concatenate([jnp.ones(prefix.shape[:2], bool), enc_mask], axis=1)

        enc_hidden, neurons = self.encoder(embeds, enc_mask, capture=capture, intervention=intervention,
                                           deterministic=deterministic)
        dec_hidden, dec_neurons = self.decoder(
            self.embed_tokens(decoder_input_ids), jnp.asarray(decoder_attention_mask).astype(bool),
            enc_hidden, enc_mask, capture=decoder_capture, intervention=decoder_intervention,
            deterministic=deterministic)
        if self.is_initializing():  # create the LM head's parameters too
            self.lm_logits(dec_hidden[:, :1])
        return ModelOutput(hidden=enc_hidden, neurons=neurons, decoder_hidden=dec_hidden,
                           decoder_neurons=dec_neurons)


# ----------------------------------------------------------------------------------------------------------------
# Hugging Face checkpoint -> params
# ----------------------------------------------------------------------------------------------------------------

# Tensors a T5 checkpoint may carry that we knowingly do not read: copies of the shared embedding (older saves
# write all three) and a cross-attention relative bias that T5 never uses (Hugging Face ignores it as well).
IGNORED_TENSORS = (
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
)
# Where the shared embedding may be stored, in order of preference.
SHARED_EMBEDDING_NAMES = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def t5_params_from_hf(state: Mapping[str, np.ndarray], config: ModelConfig, *, source: str = "checkpoint") -> dict:
    """Hugging Face T5ForConditionalGeneration state dict -> T5Model params (float32 numpy).

    Raises convert.CheckpointError naming the first missing or mis-shaped tensor, or the first tensor the config
    does not account for (e.g. a layer beyond config.num_layers).
    """
    c = config
    h, n, v = c.hidden, c.intermediate, c.vocab_size
    inner = c.num_heads * (c.head_dim or h // c.num_heads)
    used: set[str] = set()

    def take(name, shape, transpose=False):
        used.add(name)
        return convert.take(state, name, shape, source=source, transpose=transpose)

    def kernel(name, d_in, d_out):
        return {"kernel": take(f"{name}.weight", (d_in, d_out), transpose=True)}

    def attention(prefix):
        return {"q": kernel(f"{prefix}.q", h, inner), "k": kernel(f"{prefix}.k", h, inner),
                "v": kernel(f"{prefix}.v", h, inner), "o": kernel(f"{prefix}.o", inner, h)}

    def norm(prefix):
        return {"weight": take(f"{prefix}.weight", (h,))}

    def ffn(prefix):
        names = ("wi_0", "wi_1") if c.gated else ("wi",)
        p = {name: kernel(f"{prefix}.DenseReluDense.{name}", h, n) for name in names}
        p["wo"] = kernel(f"{prefix}.DenseReluDense.wo", n, h)
        return p

    def stack(kind, num_layers):
        out = {"relative_attention_bias": {"embedding": take(
            f"{kind}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            (c.relative_buckets, c.num_heads))}}
        for i in range(num_layers):
            b = f"{kind}.block.{i}.layer"
            block = {"self_attn": attention(f"{b}.0.SelfAttention"), "self_attn_norm": norm(f"{b}.0.layer_norm")}
            ff = 1
            if kind == "decoder":
                block["cross_attn"] = attention(f"{b}.1.EncDecAttention")
                block["cross_attn_norm"] = norm(f"{b}.1.layer_norm")
                ff = 2
            block["ffn"] = ffn(f"{b}.{ff}")
            block["ffn_norm"] = norm(f"{b}.{ff}.layer_norm")
            out[f"block_{i}"] = block
        out["final_norm"] = norm(f"{kind}.final_layer_norm")
        return out

    shared_name = next((k for k in SHARED_EMBEDDING_NAMES if k in state), SHARED_EMBEDDING_NAMES[0])
    params = {"shared": {"embedding": take(shared_name, (v, h))},
              "encoder": stack("encoder", c.num_layers),
              "decoder": stack("decoder", c.num_decoder_layers)}
    if not c.tie_word_embeddings:
        # transformers 5 always ties the head and saves only `shared.weight` when the two are equal, so an
        # untied (unscaled) config without `lm_head.weight` means the head is the shared table.
        head = "lm_head.weight" if "lm_head.weight" in state else shared_name
        params["lm_head"] = {"kernel": take(head, (h, v), transpose=True)}
    elif "lm_head.weight" in state:
        # Tied config: a stored head must be the shared table itself (older saves write the copy).
        head = take("lm_head.weight", (v, h))
        if not np.array_equal(head, params["shared"]["embedding"]):
            raise convert.CheckpointError(
                f"{source}: 'lm_head.weight' differs from {shared_name!r} but the config ties the word embeddings "
                "(set tie_word_embeddings false / scale_decoder_outputs false in config.json for an untied head)")

    unexpected = sorted(k for k in state if k not in used and k not in IGNORED_TENSORS)
    if unexpected:
        raise convert.CheckpointError(
            f"{source}: tensor {unexpected[0]!r} is not part of a T5 with {c.num_layers} encoder / "
            f"{c.num_decoder_layers} decoder layers ({len(unexpected)} unexpected tensor(s))")
    return params
