"""T5 (v1.0 ReLU tied, v1.1 gated-GELU untied) against transformers' PyTorch T5ForConditionalGeneration.

Tiny random checkpoints are built here with transformers and saved both as safetensors (save_pretrained) and as
pytorch_model.bin; our params are read back from those files. Parity covers the logits and every encoder and
decoder layer's FFN neurons (the input of each `DenseReluDense.wo`), with padding in both the encoder and the
decoder batch, and a soft-prompt prefix.
"""
import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from skillneurons_jax.models import convert  # noqa: E402
from skillneurons_jax.models.config import config_from_hf  # noqa: E402
from skillneurons_jax.models.ffn import Capture, Intervention  # noqa: E402
from skillneurons_jax.models.t5 import T5Model, relative_position_buckets, t5_params_from_hf  # noqa: E402

ATOL = 1e-4
VOCAB, HIDDEN, FFN, ENC_LAYERS, DEC_LAYERS = 97, 32, 48, 2, 3

# Small bucket settings so the short test sequences reach the logarithmic buckets and the max-distance clamp.
VARIANTS = {
    "v1_0": dict(feed_forward_proj="relu", tie_word_embeddings=True,
                 relative_attention_num_buckets=8, relative_attention_max_distance=12),
    "v1_1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                 relative_attention_num_buckets=10, relative_attention_max_distance=16),
}


def _hf_config(variant):
    return transformers.T5Config(vocab_size=VOCAB, d_model=HIDDEN, d_kv=8, d_ff=FFN, num_layers=ENC_LAYERS,
                                 num_decoder_layers=DEC_LAYERS, num_heads=4, dropout_rate=0.0,
                                 **VARIANTS[variant])


def _save(model, folder: pathlib.Path, variant: str):
    """Both weight formats, each in its own folder with config.json."""
    st, pt = folder / "safetensors", folder / "bin"
    model.save_pretrained(st)
    pt.mkdir(parents=True)
    torch.save(model.state_dict(), pt / "pytorch_model.bin")
    config = json.loads((st / "config.json").read_text())
    if variant == "v1_1":
        # transformers 5 writes `tie_word_embeddings: true, scale_decoder_outputs: false` for every T5; real v1.1
        # checkpoints (google/t5-v1_1-*) say `tie_word_embeddings: false`, which transformers 5 reads the same way.
        config["tie_word_embeddings"] = False
        config.pop("scale_decoder_outputs", None)
    for f in (st, pt):
        (f / "config.json").write_text(json.dumps(config))
    return {"safetensors": st, "bin": pt}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """variant -> {"hf": reloaded torch model, "safetensors": folder, "bin": folder}."""
    out = {}
    for i, variant in enumerate(VARIANTS):
        torch.manual_seed(i)
        model = transformers.T5ForConditionalGeneration(_hf_config(variant)).eval()
        if variant == "v1_1":  # transformers 5 always ties on construction; untie with a distinct head
            model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, HIDDEN))
        folders = _save(model, tmp_path_factory.mktemp(variant), variant)
        hf = transformers.T5ForConditionalGeneration.from_pretrained(folders["safetensors"]).eval()
        out[variant] = {"hf": hf, **folders}
    return out


def _load(folder):
    config = config_from_hf(convert.read_config(folder), source=str(folder))
    return config, t5_params_from_hf(convert.read_state_dict(folder), config, source=str(folder))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.RandomState(0)
    ids = rng.randint(3, VOCAB, (3, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0  # encoder padding
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    dec = rng.randint(3, VOCAB, (3, 4))
    dec[:, 0] = 0  # decoder start token
    dec_mask = np.ones_like(dec)
    dec_mask[0, 2:] = 0  # decoder padding
    dec[dec_mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec, "decoder_attention_mask": dec_mask}


@functools.partial(jax.jit, static_argnames=("config", "capture", "decoder_capture"))
def _run(params, batch, config, capture=Capture(), decoder_capture=Capture(), prefix=None, intervention=None,
         decoder_intervention=None):
    model = T5Model(config)
    out = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                      decoder_input_ids=batch["decoder_input_ids"],
                      decoder_attention_mask=batch["decoder_attention_mask"], prefix=prefix, capture=capture,
                      decoder_capture=decoder_capture, intervention=intervention,
                      decoder_intervention=decoder_intervention)
    return out, model.apply({"params": params}, out.decoder_hidden, method="lm_logits")


def _hf_run(hf, batch, prefix=None):
    """Logits, encoder hidden, and the FFN neurons of every layer: {("encoder"|"decoder", layer): [B, T, N]}."""
    neurons, hooks = {}, []
    for stack, ff in (("encoder", 1), ("decoder", 2)):
        for i, block in enumerate(getattr(hf, stack).block):
            def hook(module, args, key=(stack, i)):
                neurons[key] = args[0].detach().numpy()
            hooks.append(block.layer[ff].DenseReluDense.wo.register_forward_pre_hook(hook))
    t = {k: torch.tensor(v) for k, v in batch.items()}
    kwargs = dict(input_ids=t["input_ids"], attention_mask=t["attention_mask"])
    if prefix is not None:
        embeds = hf.shared(t["input_ids"])
        p = torch.tensor(np.broadcast_to(prefix, (embeds.shape[0],) + prefix.shape[1:]).copy())
        kwargs = dict(inputs_embeds=torch.cat([p, embeds], 1),
                      attention_mask=torch.cat([torch.ones(p.shape[:2], dtype=torch.long), t["attention_mask"]], 1))
    try:
        with torch.no_grad():
            out = hf(**kwargs, decoder_input_ids=t["decoder_input_ids"],
                     decoder_attention_mask=t["decoder_attention_mask"])
    finally:
        for h in hooks:
            h.remove()
    return out.logits.numpy(), out.encoder_last_hidden_state.numpy(), neurons


def _close(ours, ref, what):
    ours = np.asarray(ours)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    err = float(np.abs(ours - ref).max())
    assert err < ATOL, f"{what}: max abs difference {err:.2e} >= {ATOL}"


def test_relative_position_buckets_match_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention
    rel = torch.arange(300)[None, :] - torch.arange(300)[:, None]
    for bidirectional in (True, False):
        for num_buckets, max_distance in ((32, 128), (8, 12), (10, 16)):
            ref = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=num_buckets,
                                                         max_distance=max_distance).numpy()
            ours = relative_position_buckets(300, 300, bidirectional=bidirectional, num_buckets=num_buckets,
                                             max_distance=max_distance)
            np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parity_logits_and_every_ffn_layer(checkpoints, batch, variant, fmt):
    config, params = _load(checkpoints[variant][fmt])
    assert config.gated == (variant == "v1_1") and config.tie_word_embeddings == (variant == "v1_0")
    ref_logits, ref_hidden, ref_neurons = _hf_run(checkpoints[variant]["hf"], batch)
    out, logits = _run(params, batch, config)
    _close(logits, ref_logits, "logits")
    _close(out.hidden, ref_hidden, "encoder hidden")
    assert out.neurons.shape == (ENC_LAYERS, 3, 9, FFN) and out.neurons.dtype == jnp.float32
    assert out.decoder_neurons.shape == (DEC_LAYERS, 3, 4, FFN)
    for i in range(ENC_LAYERS):
        _close(out.neurons[i], ref_neurons["encoder", i], f"encoder layer {i} neurons")
    for i in range(DEC_LAYERS):
        _close(out.decoder_neurons[i], ref_neurons["decoder", i], f"decoder layer {i} neurons")


def test_attention_masks_are_applied(checkpoints, batch):
    """Trap 4: changing tokens under the padding must not change anything at the real positions."""
    config, params = _load(checkpoints["v1_0"]["safetensors"])
    other = dict(batch)
    other["input_ids"] = np.where(batch["attention_mask"] == 0, 5, batch["input_ids"])
    other["decoder_input_ids"] = np.where(batch["decoder_attention_mask"] == 0, 7, batch["decoder_input_ids"])
    a, la = _run(params, batch, config)
    b, lb = _run(params, other, config)
    enc, dec = batch["attention_mask"] == 1, batch["decoder_attention_mask"] == 1
    np.testing.assert_allclose(np.asarray(a.hidden)[enc], np.asarray(b.hidden)[enc], atol=1e-6)
    np.testing.assert_allclose(np.asarray(la)[dec], np.asarray(lb)[dec], atol=1e-5)
    assert not np.allclose(np.asarray(a.hidden)[~enc], np.asarray(b.hidden)[~enc])  # the change did something


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_prefix_parity(checkpoints, batch, variant):
    config, params = _load(checkpoints[variant]["safetensors"])
    prefix = np.random.RandomState(1).normal(size=(1, 5, HIDDEN)).astype(np.float32)
    ref_logits, ref_hidden, ref_neurons = _hf_run(checkpoints[variant]["hf"], batch, prefix=prefix)
    out, logits = _run(params, batch, config, capture=Capture(0, 5), prefix=jnp.asarray(prefix))
    _close(logits, ref_logits, "logits with prefix")
    _close(out.hidden, ref_hidden, "encoder hidden with prefix")
    for i in range(ENC_LAYERS):  # only the captured prefix slice comes back
        _close(out.neurons[i], ref_neurons["encoder", i][:, :5], f"encoder layer {i} prefix neurons")
    for i in range(DEC_LAYERS):
        _close(out.decoder_neurons[i], ref_neurons["decoder", i], f"decoder layer {i} neurons with prefix")
    # A per-example prefix [B, P, H] equal to the broadcast one gives the same result; prefix_positions is ignored.
    model = T5Model(config)
    per_example = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                              decoder_input_ids=batch["decoder_input_ids"],
                              decoder_attention_mask=batch["decoder_attention_mask"],
                              prefix=np.repeat(prefix, 3, 0), prefix_positions="standard")
    np.testing.assert_allclose(per_example.decoder_hidden, out.decoder_hidden, atol=1e-5)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_restricted_readout_and_embeddings(checkpoints, batch, variant):
    config, params = _load(checkpoints[variant]["safetensors"])
    model = T5Model(config)
    out, logits = _run(params, batch, config)
    ids = np.array([5, 17, 3])
    some = model.apply({"params": params}, out.decoder_hidden, vocab_ids=ids, method="lm_logits")
    np.testing.assert_allclose(some, np.asarray(logits)[..., ids], atol=1e-5)
    emb = model.apply({"params": params}, ids, method="embed_tokens")
    np.testing.assert_array_equal(emb, checkpoints[variant]["hf"].shared.weight.detach().numpy()[ids])


def _active_neuron(neurons, layer):
    """A neuron of `layer` that is non-zero somewhere, so zeroing it is visible."""
    return int(np.argmax(np.abs(np.asarray(neurons[layer])).sum(axis=(0, 1))))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_decoder_intervention_zeroes_one_neuron_in_one_layer(checkpoints, batch, variant):
    config, params = _load(checkpoints[variant]["safetensors"])
    base, base_logits = _run(params, batch, config)
    layer = 1
    n = _active_neuron(base.decoder_neurons, layer)
    mask = np.zeros((DEC_LAYERS, FFN), bool)
    mask[layer, n] = True
    out, logits = _run(params, batch, config, decoder_intervention=Intervention.zero(mask))
    dn, bn = np.asarray(out.decoder_neurons), np.asarray(base.decoder_neurons)
    assert np.all(dn[layer, ..., n] == 0) and np.any(bn[layer, ..., n] != 0)
    np.testing.assert_array_equal(np.delete(dn[layer], n, -1), np.delete(bn[layer], n, -1))  # same layer input
    np.testing.assert_array_equal(dn[:layer], bn[:layer])  # earlier decoder layers bit-identical
    np.testing.assert_array_equal(out.hidden, base.hidden)  # the encoder is untouched
    np.testing.assert_array_equal(out.neurons, base.neurons)
    assert not np.array_equal(dn[layer + 1:], bn[layer + 1:])  # the change propagates downstream
    assert not np.array_equal(logits, base_logits)


def test_encoder_intervention_and_layer_count_check(checkpoints, batch):
    config, params = _load(checkpoints["v1_0"]["safetensors"])
    base, _ = _run(params, batch, config)
    n = _active_neuron(base.neurons, 0)
    mask = np.zeros((ENC_LAYERS, FFN), bool)
    mask[0, n] = True
    out, _ = _run(params, batch, config, intervention=Intervention.zero(mask))
    assert np.all(np.asarray(out.neurons)[0, ..., n] == 0)
    assert not np.array_equal(out.neurons[1], base.neurons[1])
    assert not np.array_equal(out.decoder_neurons, base.decoder_neurons)  # the decoder reads the encoder
    with pytest.raises(ValueError, match="encoder intervention mask has 3 layers"):
        _run(params, batch, config, intervention=Intervention.zero(np.zeros((DEC_LAYERS, FFN), bool)))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_all_false_masks_are_bit_identical(checkpoints, batch, variant):
    config, params = _load(checkpoints[variant]["safetensors"])
    base, base_logits = _run(params, batch, config)
    out, logits = _run(params, batch, config,
                       intervention=Intervention.zero(np.zeros((ENC_LAYERS, FFN), bool)),
                       decoder_intervention=Intervention.zero(np.zeros((DEC_LAYERS, FFN), bool)))
    for a, b in ((out.hidden, base.hidden), (out.neurons, base.neurons), (out.decoder_hidden, base.decoder_hidden),
                 (out.decoder_neurons, base.decoder_neurons), (logits, base_logits)):
        np.testing.assert_array_equal(a, b)


def test_bfloat16_compute_stays_close(checkpoints, batch):
    config, params = _load(checkpoints["v1_1"]["safetensors"])
    base, base_logits = _run(params, batch, config)
    out, logits = _run(params, batch, config.replace(dtype="bfloat16"))
    assert out.neurons.dtype == jnp.float32 and logits.dtype == jnp.float32
    scale = float(np.abs(base_logits).max())
    assert float(np.abs(np.asarray(logits) - np.asarray(base_logits)).max()) < 0.05 * scale


# ---- checkpoint errors ------------------------------------------------------------------------------------------

@pytest.fixture()
def v11_state(checkpoints):
    folder = checkpoints["v1_1"]["bin"]  # the .bin carries every copy: shared, embed_tokens, lm_head
    return config_from_hf(convert.read_config(folder)), convert.read_state_dict(folder)


def test_missing_tensor_is_named(v11_state):
    config, state = v11_state
    del state["decoder.block.2.layer.2.DenseReluDense.wi_1.weight"]
    with pytest.raises(convert.CheckpointError, match=r"decoder\.block\.2\.layer\.2\.DenseReluDense\.wi_1\.weight"):
        t5_params_from_hf(state, config)


def test_misshaped_tensor_is_named(v11_state):
    config, state = v11_state
    state["encoder.block.1.layer.0.SelfAttention.q.weight"] = np.zeros((32, 31), np.float32)
    with pytest.raises(convert.CheckpointError, match=r"encoder\.block\.1\.layer\.0\.SelfAttention\.q\.weight"):
        t5_params_from_hf(state, config)


def test_tensor_beyond_the_config_is_named(v11_state):
    config, state = v11_state
    with pytest.raises(convert.CheckpointError, match=r"'encoder\.block\.1\.layer\.0\.SelfAttention\.k\.weight'"
                                                      r" is not part of a T5 with 1 encoder"):
        t5_params_from_hf(state, config.replace(num_layers=1))


def test_relative_bias_only_in_layer_zero(v11_state):
    config, state = v11_state
    assert "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in state
    del state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    with pytest.raises(convert.CheckpointError, match="relative_attention_bias"):
        t5_params_from_hf(state, config)


def test_head_handling(v11_state):
    config, state = v11_state
    params = t5_params_from_hf(state, config)
    np.testing.assert_array_equal(params["lm_head"]["kernel"], state["lm_head.weight"].T)
    # A tied config whose stored head differs from the shared table is refused, naming the tensor.
    with pytest.raises(convert.CheckpointError, match="'lm_head.weight' differs"):
        t5_params_from_hf(state, config.replace(tie_word_embeddings=True))
    # Untied config, no stored head (transformers 5 saves a tied head only as shared.weight): the shared table.
    del state["lm_head.weight"]
    params = t5_params_from_hf(state, config)
    np.testing.assert_array_equal(params["lm_head"]["kernel"], state["shared.weight"].T)
    # Only encoder.embed_tokens.weight stored: it serves as the shared table.
    only = {k: v for k, v in state.items() if k not in ("shared.weight", "decoder.embed_tokens.weight")}
    np.testing.assert_array_equal(t5_params_from_hf(only, config)["shared"]["embedding"],
                                  state["encoder.embed_tokens.weight"])


def test_transformers5_style_v11_config_is_untied():
    cfg = _hf_config("v1_1").to_dict()
    assert cfg["tie_word_embeddings"] is True and cfg["scale_decoder_outputs"] is False
    assert config_from_hf(cfg).tie_word_embeddings is False


def test_dropout_only_when_not_deterministic(checkpoints, batch):
    config, params = _load(checkpoints["v1_0"]["safetensors"])
    model = T5Model(config, dropout_rate=0.3)
    args = (batch["input_ids"], batch["attention_mask"])
    kw = dict(decoder_input_ids=batch["decoder_input_ids"], decoder_attention_mask=batch["decoder_attention_mask"])
    base, _ = _run(params, batch, config)
    same = model.apply({"params": params}, *args, **kw)
    np.testing.assert_allclose(same.decoder_hidden, base.decoder_hidden, atol=1e-6)
    noisy = model.apply({"params": params}, *args, **kw, deterministic=False,
                        rngs={"dropout": jax.random.PRNGKey(0)})
    assert np.all(np.isfinite(noisy.decoder_hidden))
    assert not np.allclose(noisy.decoder_hidden, base.decoder_hidden, atol=1e-3)
