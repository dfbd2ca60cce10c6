"""The attention layout of models/roberta.py and models/t5.py (heads ahead of tokens, the softmax normalised after
the weighted sum of the values) must compute textbook attention: softmax(scores) -> dropout -> @ v.

The textbook modules below are written the plain way, with the same parameter and submodule names, so that the
same PRNG key draws the same dropout mask in both (flax folds the module path into the key)."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skillneurons_jax.models import roberta, t5
from skillneurons_jax.models.config import ModelConfig

B, T, H, HEADS = 2, 7, 16, 4
D = H // HEADS
NEG = jnp.finfo(jnp.float32).min


class TextbookSelfAttention(nn.Module):
    config: ModelConfig
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, bias, *, deterministic=True):
        dense = lambda name: nn.Dense(H, name=name)
        split = lambda t: t.reshape(t.shape[:2] + (HEADS, D))
        q, k, v = split(dense("query")(x)) / math.sqrt(D), split(dense("key")(x)), split(dense("value")(x))
        probs = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) + bias, axis=-1)
        probs = nn.Dropout(self.dropout_rate)(probs, deterministic=deterministic)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        return dense("output")(ctx.reshape(ctx.shape[:2] + (H,)))


class TextbookT5Attention(nn.Module):
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, kv, bias, mask, *, deterministic=True):
        dense = lambda name: nn.Dense(H, use_bias=False, name=name)
        split = lambda t: t.reshape(t.shape[:2] + (HEADS, D))
        q, k, v = split(dense("q")(x)), split(dense("k")(kv)), split(dense("v")(kv))
        scores = jnp.where(mask, jnp.einsum("bqhd,bkhd->bhqk", q, k) + bias, NEG)
        w = nn.Dropout(self.dropout_rate)(jax.nn.softmax(scores, axis=-1), deterministic=deterministic)
        out = jnp.einsum("bhqk,bkhd->bqhd", w, v)
        return dense("o")(out.reshape(out.shape[:2] + (H,)))


def _config():
    return ModelConfig(family="roberta", vocab_size=50, hidden=H, intermediate=32, num_layers=1, num_heads=HEADS,
                       activation="gelu", gated=False, has_lm_head=False, num_decoder_layers=0, pad_token_id=1,
                       max_positions=40, layer_norm_eps=1e-5, dtype="float32")


@pytest.mark.parametrize("rate", [0.0, 0.4])
def test_encoder_attention_is_textbook_attention_with_dropout_on_the_probabilities(rate):
    x = jax.random.normal(jax.random.PRNGKey(0), (B, T, H))
    mask = jnp.array([[1] * T, [1] * 4 + [0] * 3])
    bias = jnp.where(mask[:, None, None, :] > 0, 0.0, NEG)
    ours, textbook = roberta.SelfAttention(_config(), rate), TextbookSelfAttention(_config(), rate)
    params = ours.init(jax.random.PRNGKey(1), x, bias)
    kw = dict(deterministic=rate == 0.0, rngs={"dropout": jax.random.PRNGKey(2)})
    got, want = ours.apply(params, x, bias, **kw), textbook.apply(params, x, bias, **kw)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-6, rtol=2e-5)
    if rate:  # the mask really dropped something (else this case would test nothing beyond rate 0)
        plain = ours.apply(params, x, bias)
        assert np.abs(np.asarray(got) - np.asarray(plain)).max() > 1e-2
    # Padding keys get exactly zero weight: changing them changes no real query's output.
    a = ours.apply(params, x, bias, **kw)[1, :4]
    b = ours.apply(params, x.at[1, 4:].set(123.0), bias, **kw)[1, :4]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_t5_attention_is_textbook_attention_with_bias_mask_and_dropout(rate):
    x = jax.random.normal(jax.random.PRNGKey(3), (B, T, H))
    kv = jax.random.normal(jax.random.PRNGKey(7), (B, T + 2, H))   # cross-attention: other keys than queries
    rel = jax.random.normal(jax.random.PRNGKey(4), (1, HEADS, T, T + 2))
    mask = (jnp.array([[1] * (T + 2), [1] * 5 + [0] * 4]) > 0)[:, None, None, :]
    ours, textbook = t5.T5Attention(H, HEADS, D, dropout_rate=rate), TextbookT5Attention(rate)
    params = ours.init(jax.random.PRNGKey(5), x, kv, rel, mask)
    kw = dict(deterministic=rate == 0.0, rngs={"dropout": jax.random.PRNGKey(6)})
    got, want = ours.apply(params, x, kv, rel, mask, **kw), textbook.apply(params, x, kv, rel, mask, **kw)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-6, rtol=2e-5)
    # A fully masked row stays finite (uniform weights, as Hugging Face), never NaN.
    none = jnp.zeros((B, 1, 1, T + 2), bool)
    assert np.all(np.isfinite(np.asarray(ours.apply(params, x, kv, rel, none))))
