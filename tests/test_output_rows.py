"""output_rows: the encoder's last layer computes only the rows its caller reads, and nothing read changes.

The readouts read position 0 (the <mask> slot) and the captured prompt slice; everything they get from a pruned
last layer must equal the rows of the full computation: hidden states, captured neurons, interventions (prompt
positions, Gaussian noise drawn for the full sequence), scores and the prompt's gradient.
"""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skillneurons_jax.models.config import ModelConfig
from skillneurons_jax.models.ffn import Capture, Intervention
from skillneurons_jax.models.roberta import EncoderModel
from skillneurons_jax.prompt import readout as readout_mod

CFG = ModelConfig(family="roberta", vocab_size=50, hidden=16, intermediate=24, num_layers=3, num_heads=2,
                  activation="gelu", has_lm_head=True, pad_token_id=1, max_positions=40, type_vocab_size=1)
B, T, P = 3, 7, 4
TOL = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def setup():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    ids = jax.random.randint(k1, (B, T), 3, CFG.vocab_size)
    mask = jnp.array([[1] * T, [1] * (T - 2) + [0] * 2, [1] * 3 + [0] * (T - 3)], jnp.int32)
    prefix = 0.5 * jax.random.normal(k2, (1, P, CFG.hidden))
    params = jax.jit(EncoderModel(CFG).init)(k3, ids, mask, prefix=prefix)["params"]
    return params, ids, mask, prefix


def _apply(params, ids, mask, prefix, **kw):
    return EncoderModel(CFG).apply({"params": params}, ids, mask, prefix=prefix, **kw)


@pytest.mark.parametrize("rows", [1, P, P + 2])
def test_pruned_last_layer_equals_the_full_rows(setup, rows):
    params, ids, mask, prefix = setup
    cap = Capture(0, min(rows, P))
    full = _apply(params, ids, mask, prefix, capture=cap)
    part = _apply(params, ids, mask, prefix, capture=cap, output_rows=rows)
    assert part.hidden.shape == (B, rows, CFG.hidden)
    np.testing.assert_allclose(np.asarray(part.hidden), np.asarray(full.hidden[:, :rows]), **TOL)
    np.testing.assert_allclose(np.asarray(part.neurons), np.asarray(full.neurons), **TOL)
    # every row present: no pruning at all (the same array as without output_rows)
    whole = _apply(params, ids, mask, prefix, output_rows=P + T)
    np.testing.assert_array_equal(np.asarray(whole.hidden), np.asarray(_apply(params, ids, mask, prefix).hidden))


@pytest.mark.parametrize("kind", ["zero", "gaussian"])
def test_interventions_are_those_of_the_full_sequence(setup, kind):
    """Positions and Gaussian noise are drawn for the full sequence and cut: the pruned rows see the same."""
    params, ids, mask, prefix = setup
    neuron_mask = np.zeros((CFG.num_layers, CFG.intermediate), bool)
    neuron_mask[:, ::3] = True                       # the last layer included
    positions = jnp.arange(P + T) < P                # the prompt only
    iv = (Intervention.zero(neuron_mask, positions) if kind == "zero"
          else Intervention.gaussian(neuron_mask, 0.7, jax.random.PRNGKey(3), positions))
    cap = Capture(0, P)
    full = _apply(params, ids, mask, prefix, capture=cap, intervention=iv)
    part = _apply(params, ids, mask, prefix, capture=cap, intervention=iv, output_rows=P)
    clean = _apply(params, ids, mask, prefix, capture=cap, output_rows=P)
    np.testing.assert_allclose(np.asarray(part.neurons), np.asarray(full.neurons), **TOL)
    np.testing.assert_allclose(np.asarray(part.hidden), np.asarray(full.hidden[:, :P]), **TOL)
    assert not np.allclose(np.asarray(part.neurons[-1]), np.asarray(clean.neurons[-1]))  # it did intervene


def _readout(params):
    module = EncoderModel(CFG)
    loaded = types.SimpleNamespace(module=module, config=CFG, params=params, family="roberta",
                                   tokenizer=types.SimpleNamespace(mask_token_id=4))
    words = types.SimpleNamespace(ids=np.array([[10], [11]], np.int32), lengths=np.ones(2, np.int32))
    return readout_mod.make_readout(loaded, words)


def test_readout_scores_and_prompt_gradient_unchanged(setup):
    """The readout prunes (position 0 only): its scores and the prompt's gradient equal the full model's."""
    params, ids, mask, _ = setup
    ro = _readout(params)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": jnp.array([0, 1, 1])}
    prompt = 0.5 * jax.random.normal(jax.random.PRNGKey(5), (P, CFG.hidden))

    def full_scores(p):
        out = EncoderModel(CFG).apply({"params": params}, ids, mask, prefix=ro.model_prompt(params, p)[None])
        return EncoderModel(CFG).apply({"params": params}, out.hidden[:, 0], vocab_ids=jnp.array([10, 11]),
                                       method="lm_logits")

    loss = lambda f: lambda p: jnp.sum(jax.nn.log_softmax(f(p))[jnp.arange(B), batch["labels"]])
    pruned_scores = lambda p: ro.scores(params, p, batch)[0]
    np.testing.assert_allclose(np.asarray(pruned_scores(prompt)), np.asarray(full_scores(prompt)), **TOL)
    assert ro.scores(params, prompt, batch)[1].hidden.shape == (B, 1, CFG.hidden)
    g_pruned = jax.grad(loss(pruned_scores))(prompt)
    g_full = jax.grad(loss(full_scores))(prompt)
    assert float(jnp.abs(g_full).max()) > 0
    np.testing.assert_allclose(np.asarray(g_pruned), np.asarray(g_full), rtol=1e-4, atol=1e-6)
    # with a capture, the rows kept reach the end of the captured slice
    _, out = ro.scores(params, prompt, batch, capture=Capture(0, P))
    assert out.hidden.shape == (B, P, CFG.hidden)


def test_bad_output_rows_are_named(setup):
    params, ids, mask, prefix = setup
    for rows in (0, P + T + 1):
        with pytest.raises(ValueError, match="output_rows"):
            _apply(params, ids, mask, prefix, output_rows=rows)
    with pytest.raises(ValueError, match="beyond output_rows"):
        _apply(params, ids, mask, prefix, capture=Capture(0, P), output_rows=2)
    with pytest.raises(ValueError, match="beyond output_rows"):
        _apply(params, ids, mask, prefix, capture=Capture(), output_rows=2)
