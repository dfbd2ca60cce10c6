"""Interventions through a whole EncoderModel: zero / mean / gaussian on chosen neurons, one compiled function."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skillneurons_jax.models.config import ModelConfig
from skillneurons_jax.models.ffn import Capture, Intervention
from skillneurons_jax.models.roberta import EncoderModel

CFG = ModelConfig(family="roberta", vocab_size=50, hidden=16, intermediate=24, num_layers=3, num_heads=2,
                  activation="gelu", has_lm_head=True, pad_token_id=1, max_positions=40, type_vocab_size=1)
B, T, P = 2, 6, 3
LAYER, NEURON = 1, 5

TRACES = {"count": 0}


def _run(params, ids, mask, prefix, intervention):
    TRACES["count"] += 1  # runs only while tracing
    out = EncoderModel(CFG).apply({"params": params}, ids, mask, prefix=prefix, capture=Capture(),
                                  intervention=intervention)
    logits = EncoderModel(CFG).apply({"params": params}, out.hidden[:, 0], method="lm_logits")
    return out.hidden, out.neurons, logits


run = jax.jit(_run)


@pytest.fixture(scope="module")
def setup():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    ids = jax.random.randint(k1, (B, T), 3, CFG.vocab_size)
    mask = jnp.array([[1] * T, [1] * (T - 2) + [0] * 2], jnp.int32)
    prefix = 0.1 * jax.random.normal(k2, (1, P, CFG.hidden))
    params = jax.jit(EncoderModel(CFG).init)(k3, ids, mask, prefix=prefix)["params"]
    clean = run(params, ids, mask, prefix, None)
    return params, ids, mask, prefix, clean


def _mask(*layer_neurons):
    m = np.zeros((CFG.num_layers, CFG.intermediate), bool)
    for layer, neuron in layer_neurons:
        m[layer, neuron] = True
    return jnp.asarray(m)


def test_zeroing_one_neuron_changes_exactly_what_it_should(setup):
    params, ids, mask, prefix, (hidden, neurons, logits) = setup
    assert float(jnp.abs(neurons[LAYER, :, :, NEURON]).min()) > 0  # gelu of random inputs: nonzero
    h2, n2, l2 = run(params, ids, mask, prefix, Intervention.zero(_mask((LAYER, NEURON))))
    np.testing.assert_array_equal(np.asarray(n2[LAYER, :, :, NEURON]), 0.0)
    # upstream layers bit-identical; the same layer's other neurons untouched (the FFN output comes after)
    np.testing.assert_array_equal(np.asarray(n2[:LAYER]), np.asarray(neurons[:LAYER]))
    others = np.delete(np.arange(CFG.intermediate), NEURON)
    np.testing.assert_array_equal(np.asarray(n2[LAYER][..., others]), np.asarray(neurons[LAYER][..., others]))
    # downstream: the next layer's neurons, the final hidden states and the MLM logits all move
    assert not np.allclose(np.asarray(n2[LAYER + 1]), np.asarray(neurons[LAYER + 1]))
    assert not np.allclose(np.asarray(h2), np.asarray(hidden))
    assert not np.allclose(np.asarray(l2), np.asarray(logits))


def test_all_false_mask_is_bit_identical(setup):
    params, ids, mask, prefix, clean = setup
    none = Intervention.zero(jnp.zeros((CFG.num_layers, CFG.intermediate), bool))
    for got, want in zip(run(params, ids, mask, prefix, none), clean):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_mean_replacement(setup):
    params, ids, mask, prefix, (_, neurons, _) = setup
    means = jnp.full((CFG.num_layers, CFG.intermediate), 0.75)
    _, n2, _ = run(params, ids, mask, prefix, Intervention.mean(_mask((0, 2), (2, 7)), means))
    np.testing.assert_array_equal(np.asarray(n2[0, :, :, 2]), 0.75)
    np.testing.assert_array_equal(np.asarray(n2[2, :, :, 7]), 0.75)
    np.testing.assert_array_equal(np.asarray(n2[0, :, :, 3]), np.asarray(neurons[0, :, :, 3]))


def test_gaussian_noise_has_the_given_scale_and_only_on_masked_neurons(setup):
    params, ids, mask, prefix, (_, neurons, _) = setup
    scale = 0.5
    m = np.zeros((CFG.num_layers, CFG.intermediate), bool)
    m[0] = True  # layer 0: noise on every neuron; its input is untouched, so the difference is the noise
    iv = Intervention.gaussian(jnp.asarray(m), scale, jax.random.PRNGKey(7))
    _, n2, _ = run(params, ids, mask, prefix, iv)
    noise = np.asarray(n2[0] - neurons[0])
    assert abs(noise.std() - scale) < 0.05 and abs(noise.mean()) < 0.05
    _, n3, _ = run(params, ids, mask, prefix, iv)
    np.testing.assert_array_equal(np.asarray(n3), np.asarray(n2))  # same key, same noise
    _, n4, _ = run(params, ids, mask, prefix, Intervention.gaussian(jnp.asarray(m), scale, jax.random.PRNGKey(8)))
    assert not np.allclose(np.asarray(n4[0]), np.asarray(n2[0]))


def test_positions_restrict_the_intervention(setup):
    params, ids, mask, prefix, (_, neurons, _) = setup
    positions = jnp.arange(P + T) < P  # the prompt only
    iv = Intervention.zero(_mask((0, NEURON)), positions=positions)
    _, n2, _ = run(params, ids, mask, prefix, iv)
    np.testing.assert_array_equal(np.asarray(n2[0, :, :P, NEURON]), 0.0)
    np.testing.assert_array_equal(np.asarray(n2[0, :, P:]), np.asarray(neurons[0, :, P:]))


def test_one_compiled_function_serves_every_mask(setup):
    params, ids, mask, prefix, _ = setup
    run(params, ids, mask, prefix, Intervention.zero(_mask((0, 1))))
    before = TRACES["count"]
    a = run(params, ids, mask, prefix, Intervention.zero(_mask((2, 3), (1, 4))))
    b = run(params, ids, mask, prefix, Intervention.mean(_mask((0, 0)), jnp.ones((CFG.num_layers, CFG.intermediate))))
    assert TRACES["count"] == before, "a new mask or kind must not retrace"
    assert not np.array_equal(np.asarray(a[1]), np.asarray(b[1]))


def test_intervention_with_wrong_layer_count_is_rejected(setup):
    params, ids, mask, prefix, _ = setup
    with pytest.raises(ValueError, match="layers"):
        EncoderModel(CFG).apply({"params": params}, ids, mask,
                                intervention=Intervention.zero(jnp.zeros((2, CFG.intermediate), bool)))


def test_position_mean_replaces_each_position_by_its_own_mean_and_only_where_one_exists(setup):
    """Issue 14 item 7: prompt-position means must not be written into text positions. Means measured at the P
    prompt positions replace those positions (each its own value); the text positions keep their activations."""
    params, ids, mask, prefix, (_, neurons, _) = setup
    per_position = np.zeros((CFG.num_layers, P, CFG.intermediate), np.float32)
    per_position[0, :, 2] = [0.25, 0.5, 0.75]                     # a different mean at each prompt position
    _, n2, _ = run(params, ids, mask, prefix, Intervention.position_mean(_mask((0, 2)), per_position))
    np.testing.assert_array_equal(np.asarray(n2[0, :, :P, 2]), np.broadcast_to([0.25, 0.5, 0.75], (B, P)))
    np.testing.assert_array_equal(np.asarray(n2[0, :, P:, 2]), np.asarray(neurons[0, :, P:, 2]))
    np.testing.assert_array_equal(np.asarray(n2[0, :, :, 3]), np.asarray(neurons[0, :, :, 3]))
    # means for more positions than the sequence has: every position replaced, each by its own mean
    longer = np.tile(np.arange(P + T + 4, dtype=np.float32)[None, :, None], (CFG.num_layers, 1, CFG.intermediate))
    _, n3, _ = run(params, ids, mask, prefix, Intervention.position_mean(_mask((1, 4)), longer))
    np.testing.assert_array_equal(np.asarray(n3[1, :, :, 4]), np.broadcast_to(np.arange(P + T), (B, P + T)))
    with pytest.raises(ValueError, match="per-position means"):
        Intervention.position_mean(_mask((0, 2)), np.zeros((CFG.num_layers, CFG.intermediate)))
