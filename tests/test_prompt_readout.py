"""Readouts against transformers (PyTorch) on tiny random checkpoints: the MLM <mask>-slot readout (zero and
standard prompt positions), the tied-embedding readout of a head-less BERT, and T5 teacher-forced label scoring with
label words of different lengths (trap 1: each score aligned with its own example and label)."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from skillneurons_jax.models import LoadedModel, load_pretrained  # noqa: E402
from skillneurons_jax.models import convert  # noqa: E402
from skillneurons_jax.models.config import config_from_hf  # noqa: E402
from skillneurons_jax.models.ffn import Capture  # noqa: E402
from skillneurons_jax.prompt import readout as ro  # noqa: E402
from tiny_encoders import make_checkpoint, padded_batch  # noqa: E402

TOL = 2e-4
P = 5
TEXTS = ["the movie was good !", "bad", "this film is not very fun , and the plot is boring ."]
Words = collections.namedtuple("Words", "ids lengths")


def _prompt(hidden, seed=0):
    return np.random.default_rng(seed).normal(0, 0.5, (P, hidden)).astype(np.float32)


@pytest.fixture(scope="module")
def roberta(tmp_path_factory):
    folder = tmp_path_factory.mktemp("roberta_mlm")
    make_checkpoint(folder, "roberta", lm_head=True)
    hf = transformers.RobertaForMaskedLM.from_pretrained(folder).eval()
    return hf, load_pretrained(folder)


@pytest.fixture(scope="module")
def bert_nohead(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert_nohead")
    make_checkpoint(folder, "bert", lm_head=False)
    hf = transformers.BertModel.from_pretrained(folder).eval()
    return hf, load_pretrained(folder)


def _batch(tokenizer):
    ids, mask = padded_batch(tokenizer, TEXTS)
    assert (mask == 0).any()
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("positions", ["zero", "standard"])
def test_mlm_readout_reads_the_mask_slot(roberta, positions):
    hf, loaded = roberta
    words = Words(ids=np.array([[40], [41], [77]], np.int32), lengths=np.array([1, 1, 1]))
    readout = ro.make_readout(loaded, words, prefix_positions=positions)
    assert readout.kind.name == "mlm" and readout.mask_slot
    batch = _batch(loaded.tokenizer)
    prompt = _prompt(loaded.config.hidden)
    scores, out = jax.jit(readout.scores)(loaded.params, jnp.asarray(prompt), batch)
    assert scores.shape == (len(TEXTS), 3)

    # Reference: the original layout [<mask>, prompt_1.., <s> text </s>] as inputs_embeds, positions explicit.
    emb = hf.roberta.embeddings.word_embeddings.weight.detach()
    ids = torch.tensor(batch["input_ids"], dtype=torch.long)
    mask = torch.tensor(batch["attention_mask"], dtype=torch.long)
    p = torch.tensor(prompt)
    p[0] = emb[loaded.tokenizer.mask_token_id]
    embeds = torch.cat([p[None].expand(len(TEXTS), -1, -1), emb[ids]], 1)
    pad = loaded.config.pad_token_id
    text_pos = torch.where(mask > 0, pad + P + torch.cumsum(mask, 1), torch.full_like(mask, pad))
    if positions == "zero":
        # a position row of zeros stands for "no position embedding" on the prompt slots
        zero_row = loaded.config.max_positions - 1
        with torch.no_grad():
            hf.roberta.embeddings.position_embeddings.weight[zero_row] = 0.0
        prompt_pos = torch.full((len(TEXTS), P), zero_row)
    else:
        prompt_pos = torch.arange(pad + 1, pad + 1 + P)[None].expand(len(TEXTS), -1)
    full_mask = torch.cat([torch.ones(len(TEXTS), P, dtype=torch.long), mask], 1)
    with torch.no_grad():
        logits = hf(inputs_embeds=embeds, attention_mask=full_mask,
                    position_ids=torch.cat([prompt_pos, text_pos], 1)).logits
    ref = logits[:, 0, words.ids[:, 0]].numpy()
    np.testing.assert_allclose(np.asarray(scores), ref, atol=TOL, rtol=0)


def test_mask_slot_row_gets_no_gradient_and_capture_passes_through(roberta):
    hf, loaded = roberta
    readout = ro.make_readout(loaded, Words(np.array([[40], [41]]), np.array([1, 1])))
    batch = _batch(loaded.tokenizer)
    prompt = jnp.asarray(_prompt(loaded.config.hidden))
    grad = jax.jit(jax.grad(lambda p: readout.scores(loaded.params, p, batch)[0][:, 1].sum()))(prompt)
    assert np.all(np.asarray(grad[0]) == 0) and np.any(np.asarray(grad[1:]) != 0)
    _, out = jax.jit(lambda p: readout.scores(loaded.params, p, batch, capture=Capture(0, P)))(prompt)
    assert out.neurons.shape == (loaded.config.num_layers, len(TEXTS), P, loaded.config.intermediate)


def test_tied_readout_matches_hidden_dot_word_embeddings(bert_nohead):
    hf, loaded = bert_nohead
    assert not loaded.config.has_lm_head
    words = Words(ids=np.array([[7, 9], [12, 0]], np.int32), lengths=np.array([2, 1]))
    readout = ro.make_readout(loaded, words, scale=0.5, prefix_positions="standard")
    assert readout.kind.name == "tied"
    batch = _batch(loaded.tokenizer)
    prompt = _prompt(loaded.config.hidden, seed=1)
    scores, _ = jax.jit(readout.scores)(loaded.params, jnp.asarray(prompt), batch)
    emb = hf.embeddings.word_embeddings.weight.detach()
    ids = torch.tensor(batch["input_ids"], dtype=torch.long)
    mask = torch.tensor(batch["attention_mask"], dtype=torch.long)
    p = torch.tensor(prompt)
    p[0] = emb[loaded.tokenizer.mask_token_id]
    embeds = torch.cat([p[None].expand(len(TEXTS), -1, -1), emb[ids]], 1)
    pos = torch.arange(embeds.shape[1])[None]
    full_mask = torch.cat([torch.ones(len(TEXTS), P, dtype=torch.long), mask], 1)
    with torch.no_grad():
        h0 = hf(inputs_embeds=embeds, attention_mask=full_mask, position_ids=pos).last_hidden_state[:, 0]
    word_vecs = torch.stack([emb[[7, 9]].mean(0), emb[12]])
    np.testing.assert_allclose(np.asarray(scores), 0.5 * (h0 @ word_vecs.T).numpy(), atol=TOL, rtol=0)
    # without the mask slot, prompt row 0 is read (and trained)
    free = ro.make_readout(loaded, words, mask_slot=False)
    g = jax.jit(jax.grad(lambda q: free.scores(loaded.params, q, batch)[0].sum()))(jnp.asarray(prompt))
    assert np.any(np.asarray(g[0]) != 0)


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=61, d_model=32, d_kv=8, d_ff=40, num_layers=2, num_decoder_layers=2,
                                num_heads=4, dropout_rate=0.0, feed_forward_proj="relu", decoder_start_token_id=0)
    hf = transformers.T5ForConditionalGeneration(cfg).eval()
    folder = tmp_path_factory.mktemp("t5")
    hf.save_pretrained(folder)
    from skillneurons_jax.models.t5 import T5Model, t5_params_from_hf
    config = config_from_hf(convert.read_config(folder))
    params = jax.tree.map(jnp.asarray, t5_params_from_hf(convert.read_state_dict(folder), config))
    loaded = LoadedModel(module=T5Model(config), params=params, tokenizer=None, family="t5", config=config,
                         name="tiny-t5")
    return hf, loaded


@pytest.mark.parametrize("ids,lengths", [([[5], [9]], [1, 1]), ([[5, 0, 0], [9, 14, 3]], [1, 3]),
                                         ([[22, 8], [9, 14]], [2, 2])])
def test_t5_teacher_forced_label_scores_stay_aligned(t5, ids, lengths):
    hf, loaded = t5
    words = Words(np.array(ids, np.int32), np.array(lengths))
    readout = ro.make_readout(loaded, words)
    rng = np.random.default_rng(3)
    input_ids = rng.integers(2, 61, (4, 7)).astype(np.int32)
    mask = np.ones_like(input_ids)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    input_ids[mask == 0] = 0
    batch = {"input_ids": input_ids, "attention_mask": mask}
    prompt = _prompt(32, seed=2)
    scores, out = jax.jit(readout.scores)(loaded.params, jnp.asarray(prompt), batch)
    assert scores.shape == (4, 2) and out.hidden.shape[0] == 4 and out.decoder_hidden.shape[0] == 4

    emb = hf.shared.weight.detach()
    embeds = torch.cat([torch.tensor(prompt)[None].expand(4, -1, -1), emb[torch.tensor(input_ids).long()]], 1)
    full_mask = torch.cat([torch.ones(4, P, dtype=torch.long), torch.tensor(mask).long()], 1)
    ref = np.zeros((4, 2))
    for c, (word, n) in enumerate(zip(ids, lengths)):
        for b in range(4):  # one example at a time: nothing can be misaligned in the reference
            dec = torch.tensor([[0] + word[:n - 1]])
            with torch.no_grad():
                logits = hf(inputs_embeds=embeds[b:b + 1], attention_mask=full_mask[b:b + 1],
                            decoder_input_ids=dec).logits[0]
            logp = torch.log_softmax(logits, -1)
            ref[b, c] = sum(float(logp[t, word[t]]) for t in range(n))
    np.testing.assert_allclose(np.asarray(scores), ref, atol=TOL, rtol=0)


def test_bad_readout_requests_are_clear_errors(roberta, bert_nohead):
    _, rob = roberta
    _, bert = bert_nohead
    one = Words(np.array([[4], [5]]), np.array([1, 1]))
    with pytest.raises(ValueError, match="needs an MLM"):
        ro.make_readout(bert, one, kind="mlm")
    with pytest.raises(ValueError, match="several tokens"):
        ro.make_readout(rob, Words(np.array([[4, 6], [5, 0]]), np.array([2, 1])))
    with pytest.raises(ValueError, match="unknown readout"):
        ro.make_readout(rob, one, kind="cls")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ro.make_readout(rob, Words(np.array([[4], [10 ** 6]]), np.array([1, 1])))
    with pytest.raises(ValueError, match="prefix_positions"):
        ro.make_readout(rob, one, prefix_positions="absolute")
