"""T5 tokenizer: a SentencePiece unigram model trained here (the real t5-base spiece.model is not shipped), loaded
through load_pretrained together with tiny T5 weights; plus the real t5-base file when it is present."""
import hashlib
import io
import random

import numpy as np
import pytest

spm = pytest.importorskip("sentencepiece")
transformers = pytest.importorskip("transformers")

LABEL_WORDS = ("negative", "positive", "false", "true", "acceptable")
FILLER = ("the movie was a film great bad sentence question answer is it not good story plot actor quick brown "
          "fox jumps over lazy dog river mountain city house garden window table chair music paper science "
          "history ocean forest summer winter unacceptable").split()
PAD, EOS, UNK = 0, 1, 2  # T5's special ids

REAL_T5_SHA256 = "d60acb128cf7b7f2536e8f38a5b18a05535c9e14c7a355904270e15b0945ea86"
REAL_T5_IDS = {"negative": 2841, "positive": 1465, "false": 6136, "true": 1176, "acceptable": 9961}


def _sentences(n=400, seed=0):
    rng = random.Random(seed)
    words = FILLER + list(LABEL_WORDS) * 3  # label words frequent enough to become whole pieces
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    """A T5 checkpoint folder: trained spiece.model, tokenizer files, config.json and model.safetensors."""
    folder = tmp_path_factory.mktemp("t5-tiny")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(_sentences()), model_writer=model, vocab_size=70,
                                   model_type="unigram", pad_id=PAD, eos_id=EOS, unk_id=UNK, bos_id=-1,
                                   character_coverage=1.0, minloglevel=2)
    (folder / "spiece.model").write_bytes(model.getvalue())
    tok = transformers.T5Tokenizer.from_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=len(tok), d_model=16, d_kv=4, d_ff=24, num_layers=1,
                                   num_heads=4, dropout_rate=0.0, feed_forward_proj="relu")
    transformers.T5ForConditionalGeneration(config).eval().save_pretrained(str(folder))
    return folder


def test_trained_model_uses_t5_special_ids(t5_folder):
    sp = spm.SentencePieceProcessor(model_file=str(t5_folder / "spiece.model"))
    assert [sp.id_to_piece(i) for i in (PAD, EOS, UNK)] == ["<pad>", "</s>", "<unk>"]


def test_encoding_appends_eos_and_matches_sentencepiece(t5_folder):
    tok = transformers.T5Tokenizer.from_pretrained(str(t5_folder))
    sp = spm.SentencePieceProcessor(model_file=str(t5_folder / "spiece.model"))
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (PAD, EOS, UNK)
    for text in ("the movie was great", "is it true or false", "a lazy dog"):
        ids = tok(text).input_ids
        assert ids[-1] == EOS and ids.count(EOS) == 1
        assert ids[:-1] == sp.encode(text)


def test_label_words_are_known_pieces(t5_folder):
    tok = transformers.T5Tokenizer.from_pretrained(str(t5_folder))
    sp = spm.SentencePieceProcessor(model_file=str(t5_folder / "spiece.model"))
    for word in LABEL_WORDS:
        ids = tok(word, add_special_tokens=False).input_ids
        assert UNK not in ids, word
        assert tok.convert_ids_to_tokens(ids) == ["\u2581" + word], word
        assert ids == [sp.piece_to_id("\u2581" + word)]


def test_loads_through_load_pretrained(t5_folder):
    try:
        from skillneurons_jax.models import load_pretrained
    except ImportError as e:
        pytest.skip(f"skillneurons_jax.models.load_pretrained is not importable yet ({e})")
    import torch
    from skillneurons_jax.models.t5 import T5Model

    loaded = load_pretrained(t5_folder)
    assert loaded.family == "t5" and isinstance(loaded.module, T5Model)
    assert loaded.name == t5_folder.name.lower()
    enc = loaded.tokenizer(["a great movie", "is it true"], padding=True, return_tensors="np")
    assert all(row[mask.astype(bool)][-1] == EOS for row, mask in zip(enc["input_ids"], enc["attention_mask"]))
    # Label-word readout at the first decoder step agrees with transformers on the same folder.
    words = [loaded.tokenizer(w, add_special_tokens=False).input_ids[0] for w in LABEL_WORDS]
    start = np.full((2, 1), loaded.config.decoder_start_token_id)
    out = loaded.module.apply({"params": loaded.params}, enc["input_ids"], enc["attention_mask"],
                              decoder_input_ids=start)
    scores = loaded.module.apply({"params": loaded.params}, out.decoder_hidden[:, 0], vocab_ids=np.array(words),
                                 method="lm_logits")
    hf = transformers.T5ForConditionalGeneration.from_pretrained(str(t5_folder)).eval()
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(enc["input_ids"]), attention_mask=torch.tensor(enc["attention_mask"]),
                 decoder_input_ids=torch.tensor(start)).logits[:, 0, words].numpy()
    np.testing.assert_allclose(scores, ref, atol=1e-4)


def test_real_t5_base_spiece(shared_data):
    path = shared_data / "tokenizers" / "t5-base" / "spiece.model"
    if not path.exists():
        pytest.skip(f"the real t5-base tokenizer is absent ({path})")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == REAL_T5_SHA256
    tok = transformers.T5Tokenizer.from_pretrained(str(path.parent))
    for word, expected in REAL_T5_IDS.items():
        ids = tok(word, add_special_tokens=False).input_ids
        assert ids[0] == expected, (word, ids)
        assert tok.convert_ids_to_tokens(ids)[0].startswith("\u2581"), word
    assert tok("positive").input_ids[-1] == EOS
