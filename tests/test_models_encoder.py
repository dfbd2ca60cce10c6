"""EncoderModel (BERT / RoBERTa) against transformers PyTorch: logits and every layer's FFN neurons."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from skillneurons_jax.models import load_pretrained  # noqa: E402
from skillneurons_jax.models.ffn import Capture  # noqa: E402
from skillneurons_jax.models.roberta import EncoderModel, first_position  # noqa: E402
from tiny_encoders import hf_forward, make_checkpoint, padded_batch  # noqa: E402

TOL = 1e-4
TEXTS = ["the movie was good !", "bad", "this film is not very fun , and the plot is boring ."]

# (family, has MLM head, checkpoint format)
CASES = [("roberta", True, "safetensors"), ("roberta", True, "bin"),
         ("bert", True, "safetensors"), ("bert", True, "bin"),
         ("bert", False, "safetensors"), ("bert", False, "bin")]


@functools.lru_cache(maxsize=None)
def _forward(module):
    return jax.jit(lambda params, ids, mask, prefix=None, mode="zero", capture=Capture():
                   module.apply({"params": params}, ids, mask, prefix=prefix, prefix_positions=mode,
                                capture=capture), static_argnames=("mode", "capture"))


@functools.lru_cache(maxsize=None)
def _logits(module):
    return jax.jit(lambda params, hidden, vocab_ids=None:
                   module.apply({"params": params}, hidden, vocab_ids, method="lm_logits"))


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{'mlm' if c[1] else 'nohead'}-{c[2]}")
def tiny(request, tmp_path_factory):
    family, lm_head, fmt = request.param
    folder = tmp_path_factory.mktemp(f"{family}_{lm_head}_{fmt}")
    hf = make_checkpoint(folder, family, lm_head=lm_head, fmt=fmt, seed=len(fmt) + lm_head)
    return hf, load_pretrained(folder)


def test_checkpoint_parity_logits_and_neurons(tiny):
    hf, loaded = tiny
    ids, mask = padded_batch(loaded.tokenizer, TEXTS)
    assert (mask == 0).any(), "the batch must contain padding"
    assert loaded.config.has_lm_head == (hasattr(hf, "lm_head") or hasattr(hf, "cls"))
    out = _forward(loaded.module)(loaded.params, ids, mask)
    ref, ref_neurons = hf_forward(hf, input_ids=torch.tensor(ids, dtype=torch.long),
                                  attention_mask=torch.tensor(mask, dtype=torch.long))
    neurons = np.asarray(out.neurons)
    assert neurons.shape == (loaded.config.num_layers, len(TEXTS), ids.shape[1], loaded.config.intermediate)
    assert neurons.dtype == np.float32
    # every layer, every position (padding included: both number pad positions the same way)
    for layer in range(loaded.config.num_layers):
        np.testing.assert_allclose(neurons[layer], ref_neurons[layer], atol=TOL, rtol=0, err_msg=f"layer {layer}")
    if loaded.config.has_lm_head:
        logits = np.asarray(_logits(loaded.module)(loaded.params, out.hidden))
        np.testing.assert_allclose(logits, ref.logits.numpy(), atol=TOL, rtol=0)
        # restricted readout == the same columns of the full projection
        vocab_ids = jnp.array([5, 3, 7])
        part = np.asarray(_logits(loaded.module)(loaded.params, out.hidden[:, 0], vocab_ids))
        np.testing.assert_allclose(part, logits[:, 0][:, [5, 3, 7]], atol=1e-6, rtol=0)
    else:
        np.testing.assert_allclose(np.asarray(out.hidden), ref.last_hidden_state.numpy(), atol=TOL, rtol=0)
        with pytest.raises(ValueError, match="no MLM head"):
            loaded.module.apply({"params": loaded.params}, out.hidden, method="lm_logits")


def test_padding_does_not_change_real_positions(tiny):
    """Extra padding (right, and left for RoBERTa) leaves every real position's outputs unchanged."""
    _, loaded = tiny
    ids, mask = padded_batch(loaded.tokenizer, TEXTS)
    batch = _forward(loaded.module)(loaded.params, ids, mask)
    extra = 4
    pad = np.full((len(TEXTS), extra), loaded.config.pad_token_id, np.int32)
    zeros = np.zeros_like(pad)
    right = _forward(loaded.module)(loaded.params, np.concatenate([ids, pad], 1), np.concatenate([mask, zeros], 1))
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(right.hidden)[:, :-extra][real], np.asarray(batch.hidden)[real], atol=1e-5)
    np.testing.assert_allclose(np.asarray(right.neurons)[:, :, :-extra][:, real], np.asarray(batch.neurons)[:, real],
                               atol=1e-5)
    if loaded.family == "roberta":  # positions count real tokens only, so left padding is harmless too
        left = _forward(loaded.module)(loaded.params, np.concatenate([pad, ids], 1), np.concatenate([zeros, mask], 1))
        np.testing.assert_allclose(np.asarray(left.hidden)[:, extra:][real], np.asarray(batch.hidden)[real],
                                   atol=1e-5)


def _hf_position_ids(loaded, prefix_len, mask):
    """Position ids our model gives [prefix, text] (text positions continue after the prefix)."""
    start = first_position(loaded.config)
    batch, text_len = mask.shape
    pre = np.broadcast_to(start + np.arange(prefix_len), (batch, prefix_len))
    if loaded.family == "roberta":
        text = np.where(mask > 0, start - 1 + prefix_len + np.cumsum(mask, 1), loaded.config.pad_token_id)
    else:
        text = np.broadcast_to(start + prefix_len + np.arange(text_len), (batch, text_len))
    return np.concatenate([pre, text], 1)


@pytest.mark.parametrize("mode", ["standard", "zero"])
def test_prefix_matches_hf_inputs_embeds(tiny, mode):
    """prefix + text == HF with inputs_embeds and explicit position_ids. For "zero", the prefix's position
    embedding is cancelled on the HF side, which is what "zero position embedding" means."""
    hf, loaded = tiny
    ids, mask = padded_batch(loaded.tokenizer, TEXTS)
    P, H = 5, loaded.config.hidden
    prefix = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (1, P, H)), np.float32) * 0.5
    out = _forward(loaded.module)(loaded.params, ids, mask, prefix, mode)
    assert out.hidden.shape == (len(TEXTS), P + ids.shape[1], H)

    pos = _hf_position_ids(loaded, P, mask)
    words = np.asarray(loaded.module.apply({"params": loaded.params}, ids, method="embed_tokens"))
    hf_prefix = np.broadcast_to(prefix, (len(TEXTS), P, H))
    if mode == "zero":
        hf_prefix = hf_prefix - np.asarray(loaded.params["position_embeddings"])[pos[:, :P]]
    embeds = np.concatenate([hf_prefix, words], 1)
    full_mask = np.concatenate([np.ones((len(TEXTS), P), np.int64), mask], 1)
    backbone = getattr(hf, "roberta", getattr(hf, "bert", hf))
    ref, ref_neurons = hf_forward(backbone, inputs_embeds=torch.tensor(embeds),
                                  attention_mask=torch.tensor(full_mask, dtype=torch.long),
                                  position_ids=torch.tensor(pos, dtype=torch.long))
    np.testing.assert_allclose(np.asarray(out.hidden), ref.last_hidden_state.numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(out.neurons), ref_neurons, atol=TOL, rtol=0)

    # a [B, P, H] prefix equals the broadcast [1, P, H] one; a prompt-only capture slices the same values
    tiled_prefix = jnp.asarray(np.repeat(prefix, len(TEXTS), 0))
    head = _forward(loaded.module)(loaded.params, ids, mask, tiled_prefix, mode, Capture(0, P))
    np.testing.assert_allclose(np.asarray(head.hidden), np.asarray(out.hidden), atol=1e-6)
    assert head.neurons.shape == (loaded.config.num_layers, len(TEXTS), P, loaded.config.intermediate)
    np.testing.assert_allclose(np.asarray(head.neurons), np.asarray(out.neurons[:, :, :P]), atol=1e-6)
    with pytest.raises(ValueError, match="prefix_positions"):
        loaded.module.apply({"params": loaded.params}, ids, mask, prefix=prefix, prefix_positions="none")


def test_init_matches_converted_tree_and_embed_tokens(tiny):
    _, loaded = tiny
    ids, mask = padded_batch(loaded.tokenizer, TEXTS[:1])
    fresh = jax.eval_shape(EncoderModel(loaded.config).init, jax.random.PRNGKey(0), ids, mask)["params"]
    shapes = lambda t: jax.tree.map(lambda a: a.shape, t)
    assert shapes(fresh) == shapes(loaded.params)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(loaded.params))
    emb = loaded.module.apply({"params": loaded.params}, ids, method="embed_tokens")
    np.testing.assert_array_equal(np.asarray(emb), np.asarray(loaded.params["word_embeddings"])[ids])


def test_bfloat16_compute_stays_close_and_returns_float32(tmp_path):
    make_checkpoint(tmp_path, "roberta", seed=3)
    f32 = load_pretrained(tmp_path)
    bf16 = load_pretrained(tmp_path, dtype=jnp.bfloat16)
    assert bf16.config.dtype == "bfloat16"
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(bf16.params))
    ids, mask = padded_batch(f32.tokenizer, TEXTS)
    a = _forward(f32.module)(f32.params, ids, mask)
    b = _forward(bf16.module)(bf16.params, ids, mask)
    assert b.neurons.dtype == jnp.float32 and b.hidden.dtype == jnp.float32
    scale = float(np.abs(np.asarray(a.neurons)).max())
    assert float(np.abs(np.asarray(a.neurons) - np.asarray(b.neurons)).max()) < 0.05 * scale
    assert not np.array_equal(np.asarray(a.neurons), np.asarray(b.neurons))  # bf16 really was used
    la = _logits(f32.module)(f32.params, a.hidden)
    lb = _logits(bf16.module)(bf16.params, b.hidden)
    assert lb.dtype == jnp.float32
    assert float(np.abs(np.asarray(la) - np.asarray(lb)).max()) < 0.05 * float(np.abs(np.asarray(la)).max())


def test_minilm_parity(minilm_path):
    from transformers import BertModel
    loaded = load_pretrained(minilm_path)
    assert (loaded.family, loaded.config.num_layers, loaded.config.hidden, loaded.config.intermediate) == (
        "bert", 6, 384, 1536)
    assert not loaded.config.has_lm_head
    texts = ["A man is playing a guitar.", "Skill neurons encode the task.", "hello"]
    ids, mask = padded_batch(loaded.tokenizer, texts)
    out = _forward(loaded.module)(loaded.params, ids, mask)
    hf = BertModel.from_pretrained(str(minilm_path)).eval()
    ref, ref_neurons = hf_forward(hf, input_ids=torch.tensor(ids, dtype=torch.long),
                                  attention_mask=torch.tensor(mask, dtype=torch.long))
    np.testing.assert_allclose(np.asarray(out.hidden), ref.last_hidden_state.numpy(), atol=TOL, rtol=0)
    for layer in range(6):
        np.testing.assert_allclose(np.asarray(out.neurons[layer]), ref_neurons[layer], atol=TOL, rtol=0,
                                   err_msg=f"layer {layer}")


def test_offline_alias_resolves_to_package(minilm_path):
    loaded = load_pretrained("offline:all-minilm-l6-v2")
    assert loaded.name == "all-minilm-l6-v2"
    assert loaded.path.resolve() == minilm_path.resolve()
