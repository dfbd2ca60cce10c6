"""Real tokenizer files load and give the label-word ids the original code used (ARCHITECTURE.md)."""
import pytest

from skillneurons_jax.models import load_tokenizer

# Bare words (no leading space), as the original Prompt-Transferability code tokenized them.
ROBERTA_LABEL_WORDS = {"negative": 33407, "positive": 22173, "false": 22303, "true": 29225, "no": 2362,
                       "yes": 10932}


def test_roberta_base_label_word_ids(shared_data):
    tok = load_tokenizer(shared_data / "tokenizers" / "roberta-base")
    for word, expected in ROBERTA_LABEL_WORDS.items():
        assert tok.encode(word, add_special_tokens=False) == [expected], word
    # the space-prefixed forms are different tokens: the distinction matters for the verbalizer
    assert tok.encode(" negative", add_special_tokens=False) != [33407]
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.mask_token_id) == (0, 1, 2, 50264)
    assert tok("a b")["input_ids"][0] == 0 and tok("a b")["input_ids"][-1] == 2


def test_minilm_tokenizer(minilm_path):
    tok = load_tokenizer(minilm_path)
    assert tok("hello world")["input_ids"] == [101, 7592, 2088, 102]  # bert-base-uncased WordPiece
    assert tok.pad_token_id == 0


def test_tokenizer_folder_without_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_tokenizer(tmp_path)
