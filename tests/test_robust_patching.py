"""robust.patching and Intervention.patch: a run patched with its own activations is bit-identical; a layer
patched at every neuron with another run's activations reproduces that run where the architecture implies it;
skill and random selections have equal sizes per layer; one compile serves every mask."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")

from skillneurons_jax.analysis import results  # noqa: E402
from skillneurons_jax.models.ffn import Capture, InterceptFFN, Intervention  # noqa: E402
from skillneurons_jax.neurons import suppression  # noqa: E402
from skillneurons_jax.robust import patching  # noqa: E402
import robust_fixtures as fx  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    loaded, readout = fx.tiny_model(tmp_path_factory.mktemp("bert_patch"))
    adv = fx.batch(loaded.tokenizer, fx.ADVERSARIAL)
    orig = fx.batch(loaded.tokenizer, fx.ORIGINAL)
    assert adv["input_ids"].shape != orig["input_ids"].shape
    run = patching.make_patch_run(readout, fx.P)
    return loaded, readout, run, adv, orig, jnp.asarray(fx.prompts(loaded.config.hidden))


def _shape(loaded, batch):
    cfg = loaded.config
    return cfg.num_layers, cfg.intermediate, (cfg.num_layers, batch["input_ids"].shape[0], fx.P, cfg.intermediate)


def test_patching_a_run_with_its_own_activations_is_bit_identical(tiny):
    loaded, _, run, adv, _, prompts = tiny
    layers, neurons, shape = _shape(loaded, adv)
    none = jnp.zeros((layers, neurons), bool)
    scores, own = run(loaded.params, prompts[0], adv, none, jnp.zeros(shape))
    pred = np.random.default_rng(0).random((layers, neurons))
    for mask in (suppression.skill_mask(pred, 15), np.ones((layers, neurons), bool)):
        got_scores, got = run(loaded.params, prompts[0], adv, jnp.asarray(mask), own)
        np.testing.assert_array_equal(np.asarray(got_scores), np.asarray(scores))
        np.testing.assert_array_equal(np.asarray(got), np.asarray(own))
    # and patching with anything else does change the answer scores (the test above can fail)
    other = run(loaded.params, prompts[0], adv, jnp.ones((layers, neurons), bool), own + 1.0)[0]
    assert not np.allclose(np.asarray(other), np.asarray(scores))


def test_ffn_patched_at_every_neuron_outputs_the_other_inputs_ffn_output():
    ffn = InterceptFFN(hidden=8, intermediate=12, activation="gelu")
    key_a, key_b, key_p = jax.random.split(jax.random.PRNGKey(0), 3)
    x_a = jax.random.normal(key_a, (3, 5, 8))
    x_b = jax.random.normal(key_b, (3, 5, 8))
    params = ffn.init(key_p, x_a, layer=0)
    apply = jax.jit(lambda x, iv: ffn.apply(params, x, layer=0, capture=Capture(), intervention=iv))
    none = jnp.zeros((1, 12), bool)
    out_b, h_b = apply(x_b, Intervention.patch(none, jnp.zeros((1, 3, 5, 12))))
    out_a, _ = apply(x_a, Intervention.patch(none, jnp.zeros((1, 3, 5, 12))))
    patched, h = apply(x_a, Intervention.patch(jnp.ones((1, 12), bool), h_b[None]))
    np.testing.assert_array_equal(np.asarray(h), np.asarray(h_b))
    np.testing.assert_array_equal(np.asarray(patched), np.asarray(out_b))
    assert not np.allclose(np.asarray(out_a), np.asarray(out_b))
    # values for the first 2 positions only: later positions keep their own activations
    part, h_part = apply(x_a, Intervention.patch(jnp.ones((1, 12), bool), h_b[None, :, :2]))
    np.testing.assert_array_equal(np.asarray(h_part[:, :2]), np.asarray(h_b[:, :2]))
    np.testing.assert_array_equal(np.asarray(part[:, 2:]), np.asarray(out_a[:, 2:]))


def test_a_layer_patched_everywhere_reproduces_the_other_runs_later_layers(tiny):
    """Run B = the same input whose layer-1 activations were changed (Gaussian noise, per example and position):
    everything upstream of layer 1's neurons is the same computation, so patching every layer-1 neuron of run A
    at every position with B's values must reproduce B's later layers and answer."""
    loaded, readout, _, adv, _, prompts = tiny
    layers, neurons, _ = _shape(loaded, adv)
    layer = 1
    only = np.zeros((layers, neurons), bool)
    only[layer] = True
    forward = jax.jit(lambda iv: readout.scores(loaded.params, prompts[0], adv, capture=Capture(), intervention=iv))
    noise = Intervention.gaussian(jnp.asarray(only), 0.5, jax.random.PRNGKey(4))
    scores_b, out_b = forward(noise)
    scores_a, out_a = forward(Intervention.zero(jnp.zeros((layers, neurons), bool)))
    assert not np.allclose(np.asarray(out_a.neurons[layer]), np.asarray(out_b.neurons[layer]))
    scores_p, out_p = forward(Intervention.patch(jnp.asarray(only), out_b.neurons))
    np.testing.assert_allclose(np.asarray(out_p.neurons[layer:]), np.asarray(out_b.neurons[layer:]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out_p.hidden), np.asarray(out_b.hidden), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(scores_p), np.asarray(scores_b), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out_p.neurons[:layer]), np.asarray(out_a.neurons[:layer]))
    # patching only the prompt positions leaves the text positions' layer-1 neurons as A computed them
    _, out_q = forward(Intervention.patch(jnp.asarray(only), out_b.neurons[:, :, :fx.P]))
    got, b_layer, a_layer = (np.asarray(o.neurons[layer]) for o in (out_q, out_b, out_a))
    np.testing.assert_array_equal(got[:, :fx.P], b_layer[:, :fx.P])
    np.testing.assert_array_equal(got[:, fx.P:], a_layer[:, fx.P:])


def test_patch_values_are_checked():
    with pytest.raises(ValueError, match="patch values have shape"):
        Intervention.patch(jnp.zeros((2, 6), bool), jnp.zeros((2, 6)))
    iv = Intervention.patch(jnp.ones((1, 6), bool), jnp.zeros((1, 3, 2, 6)))
    with pytest.raises(ValueError, match="cover 3 examples"):
        iv.apply(jnp.ones((4, 5, 6)), 0)


def test_curves_compile_once_and_select_equal_counts(tiny, tmp_path):
    loaded, readout, _, adv, orig, prompts = tiny
    run = patching.make_patch_run(readout, fx.P)
    layers, neurons, _ = _shape(loaded, adv)
    pred = np.random.default_rng(2).random((layers, neurons))
    settings = patching.PatchingSettings(percents=(5, 10, 50), random_draws=3, random_seed=7)
    result = patching.patching_curves(run, loaded.params, prompts, [(adv, orig)], pred, settings)
    # one compile per batch shape (the adversarial and the original batch differ in length): the source run,
    # the unpatched run and every skill and random mask share them
    assert run._cache_size() == 2
    patching.patching_curves(run, loaded.params, prompts, [(adv, orig)], pred,
                             patching.PatchingSettings(percents=(1, 2, 3, 4), random_draws=5))
    assert run._cache_size() == 2
    assert result.skill.shape == (3, 2) and result.random.shape == (3, 3, 2)
    masks = suppression.skill_masks(pred, settings.percents)
    controls = suppression.random_control_masks(masks, 7, 3)
    np.testing.assert_array_equal(suppression.counts_per_layer(controls),
                                  np.broadcast_to(suppression.counts_per_layer(masks), (3, 3, layers)))
    np.testing.assert_array_equal(result.neurons_per_layer, suppression.counts_per_layer(masks))
    assert [c[0] for c in result.neurons_per_layer] == [neurons * 5 // 100, neurons * 10 // 100, neurons // 2]
    # accuracies from the unpatched runs, computed directly
    for s in range(2):
        zeros = jnp.zeros(_shape(loaded, adv)[2])
        none = jnp.zeros((layers, neurons), bool)
        adv_acc = np.mean(np.argmax(np.asarray(run(loaded.params, prompts[s], adv, none, zeros)[0]), -1) == fx.LABELS)
        assert result.adversarial[s] == pytest.approx(adv_acc)
        # the per-example outcomes behind it (F2's paired McNemar test of the drop)
        assert result.adversarial_correct[s].mean() == pytest.approx(adv_acc)
        assert result.original_correct[s].mean() == pytest.approx(result.original[s])
    doc = result.to_json(model="tiny", source="sst2", target="advsst2", seeds=[0, 1])
    assert np.array_equal(doc["adversarial_correct"], result.adversarial_correct)
    assert np.array_equal(doc["original_correct"], result.original_correct)
    assert doc["ks"] == [0, 5, 10, 50] and doc["skill"]["0"] == result.adversarial.tolist()
    assert len(doc["random"]["5"]) == 3 and len(doc["random"]["5"][0]) == 2
    # per level, draw, seed and example, patched: they average to the accuracies, and the suppression reader
    # (its consistency checks included) takes the file with them
    n = result.n_examples
    assert result.skill_correct.shape == (3, 2, n) and result.random_correct.shape == (3, 3, 2, n)
    np.testing.assert_allclose(result.skill_correct.mean(-1), result.skill)
    np.testing.assert_allclose(result.random_correct.mean(-1), result.random)
    np.testing.assert_array_equal(result.labels, fx.LABELS[:n])
    assert doc["skill_correct"]["0"] == doc["adversarial_correct"] and len(doc["random_correct"]["0"]) == 3
    path = tmp_path / "sst2__advsst2.original.json"
    path.write_text(json.dumps(doc))
    loaded_doc = results.read_suppression(path, "tiny", "sst2", "advsst2")
    assert loaded_doc.skill_correct.shape == (4, 2, n) and loaded_doc.random_correct.shape == (4, 3, 2, n)
    np.testing.assert_array_equal(loaded_doc.skill_correct[1:], result.skill_correct)


def test_patching_with_the_same_input_restores_nothing_and_mean_patches_the_baseline(tiny):
    loaded, readout, run, adv, _, prompts = tiny
    layers, neurons, shape = _shape(loaded, adv)
    pred = np.random.default_rng(3).random((layers, neurons))
    settings = patching.PatchingSettings(percents=(10, 30), random_draws=2)
    same = patching.patching_curves(run, loaded.params, prompts, [(adv, adv)], pred, settings)
    np.testing.assert_array_equal(same.skill, np.broadcast_to(same.adversarial, same.skill.shape))
    np.testing.assert_array_equal(same.random, np.broadcast_to(same.adversarial, same.random.shape))
    np.testing.assert_array_equal(same.original, same.adversarial)
    baseline = np.random.default_rng(5).normal(size=(2, layers, fx.P, neurons)).astype(np.float32)
    mean = patching.patching_curves(run, loaded.params, prompts, [(adv, None)], pred,
                                    patching.PatchingSettings(percents=(10,), source="mean", random_draws=2),
                                    baseline=baseline)
    assert np.isnan(mean.original).all() and mean.skill.shape == (1, 2)
    mask = suppression.skill_mask(pred, 10)
    values = jnp.broadcast_to(jnp.asarray(baseline[0])[:, None], shape)
    _, neurons_out = run(loaded.params, prompts[0], adv, jnp.asarray(mask), values)
    got = np.asarray(neurons_out)                                   # [L, B, P, N]
    for layer in range(layers):
        chosen = np.flatnonzero(mask[layer])
        want = np.broadcast_to(baseline[0][layer][None][..., chosen], got[layer][..., chosen].shape)
        np.testing.assert_array_equal(got[layer][..., chosen], want)
    with pytest.raises(ValueError, match="needs the clean TRAIN baseline"):
        patching.patching_curves(run, loaded.params, prompts, [(adv, None)], pred,
                                 patching.PatchingSettings(source="mean"))


def test_settings_from_mapping():
    s = patching.PatchingSettings.from_mapping({"percents": "1,3,5", "source": "mean", "random_draws": 4})
    assert s.percents == (1, 3, 5) and s.to_dict()["percents"] == [1, 3, 5]
    with pytest.raises(ValueError, match="unknown patching keys"):
        patching.PatchingSettings.from_mapping({"draws": 3})
    with pytest.raises(ValueError, match="outside"):
        patching.PatchingSettings(percents=(120,))
