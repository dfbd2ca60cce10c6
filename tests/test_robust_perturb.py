"""robust.perturb: offline text perturbations are deterministic per seed, differ across seeds, never change
labels, are the identity at rate 0; nearest neighbours come from the embedding matrix by cosine."""
import numpy as np
import pytest

from skillneurons_jax.data.tasks import Example
from skillneurons_jax.robust import perturb
from skillneurons_jax.robust.perturb import Perturbation, PerturbationSet

EXAMPLES = [
    Example("the movie was good and the plot was fun", None, 1),
    Example("a boring film , not very good", None, 0),
    Example("this actor is great", "the plot is terrible", 1),
    Example("it was bad", "is it not ?", 0),
] * 3
TEXT_OPS = perturb.CHAR_OPERATIONS + perturb.WORD_OPERATIONS


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    import transformers
    from tiny_encoders import write_bert_vocab
    folder = tmp_path_factory.mktemp("vocab")
    write_bert_vocab(folder)
    return transformers.BertTokenizer(str(folder / "vocab.txt"))


@pytest.fixture(scope="module")
def table(tokenizer):
    embeddings = np.random.default_rng(0).normal(size=(len(tokenizer), 8)).astype(np.float32)
    texts = [t for e in EXAMPLES for t in (e.text_a, e.text_b) if t]
    return perturb.NeighbourTable.build(tokenizer, embeddings, texts, k=3), embeddings


def _all_ops(rate, table=None):
    ops = TEXT_OPS + (("neighbour",) if table is not None else ())
    return PerturbationSet(tuple(Perturbation(name, rate) for name in ops))


@pytest.mark.parametrize("name", TEXT_OPS + ("neighbour",))
def test_each_operation_is_deterministic_per_seed_and_varies_across_seeds(name, table):
    settings = PerturbationSet((Perturbation(name, 0.5),))
    first = perturb.perturb_examples(EXAMPLES, 3, settings, neighbours=table[0])
    again = perturb.perturb_examples(EXAMPLES, 3, settings, neighbours=table[0])
    other = perturb.perturb_examples(EXAMPLES, 4, settings, neighbours=table[0])
    assert first == again
    assert first != other
    assert first != list(EXAMPLES)          # at rate 0.5 something changed
    assert [e.label for e in first] == [e.label for e in EXAMPLES]
    assert [e.text_b is None for e in first] == [e.text_b is None for e in EXAMPLES]


@pytest.mark.parametrize("mode", perturb.MODES)
def test_labels_never_change_and_texts_never_vanish(mode, table):
    settings = PerturbationSet(_all_ops(0.9, table[0]).perturbations, mode=mode)
    for seed in range(5):
        out = perturb.perturb_examples(EXAMPLES, seed, settings, neighbours=table[0])
        assert [e.label for e in out] == [e.label for e in EXAMPLES]
        assert all(e.text_a.strip() for e in out)
        assert all((e.text_b is None) == (x.text_b is None) for e, x in zip(out, EXAMPLES))


def test_rate_zero_is_the_identity(table):
    assert perturb.perturb_examples(EXAMPLES, 7, _all_ops(0.0, table[0]), neighbours=table[0]) == list(EXAMPLES)
    odd = [Example("  spaced\tout  text ", None, 1)]
    assert perturb.perturb_examples(odd, 0, _all_ops(0.0)) == odd


def test_an_example_perturbs_alike_whatever_comes_before_or_after_it():
    settings = _all_ops(0.4)
    full = perturb.perturb_examples(EXAMPLES, 11, settings)
    prefix = perturb.perturb_examples(EXAMPLES[:5], 11, settings)
    assert prefix == full[:5]


def test_character_edits_do_what_they_say():
    rng_text = "abcdefgh"
    swap = perturb.perturb_text(rng_text, Perturbation("char_swap", 1.0), np.random.default_rng(0))
    assert sorted(swap) == sorted(rng_text) and swap != rng_text
    assert sum(a != b for a, b in zip(swap, rng_text)) == 2
    drop = perturb.perturb_text(rng_text, Perturbation("char_drop", 1.0), np.random.default_rng(0))
    assert len(drop) == len(rng_text) - 1
    insert = perturb.perturb_text(rng_text, Perturbation("char_insert", 1.0), np.random.default_rng(0))
    assert len(insert) == len(rng_text) + 1
    words = "one two three four"
    dropped = perturb.perturb_text(words, Perturbation("word_drop", 1.0), np.random.default_rng(0))
    assert len(dropped.split()) == 1 and dropped in words.split()   # every word drawn, one kept
    swapped = perturb.perturb_text(words, Perturbation("word_swap", 1.0), np.random.default_rng(0))
    assert sorted(swapped.split()) == sorted(words.split()) and swapped != words


def test_nearest_neighbours_by_cosine_exclude_self_and_specials():
    emb = np.array([[1, 0], [0.9, 0.1], [10, 0.5], [0, 1], [-1, 0]], np.float32)
    # cosine, not dot product: token 2 has the largest dot product with everything, not the largest cosine
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    got = perturb.nearest_neighbours(emb, [0, 3], k=2, exclude_ids=[1])
    for row, q in zip(got, [0, 3]):
        sims = unit @ unit[q]
        sims[[q, 1]] = -np.inf
        np.testing.assert_array_equal(row, np.argsort(-sims, kind="stable")[:2])
    assert 1 not in got and 0 not in got[0] and 3 not in got[1]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        perturb.nearest_neighbours(emb, [5], k=1)


def test_neighbour_substitution_uses_the_table_and_never_special_tokens(table, tokenizer):
    neighbours, _ = table
    special = set(tokenizer.all_special_ids)
    for row in neighbours.neighbours.values():
        assert not special & set(row.tolist())
    ex = [Example("the movie was good", None, 1)]
    out = perturb.perturb_examples(ex, 0, PerturbationSet((Perturbation("neighbour", 1.0),)), neighbours=neighbours)
    old = tokenizer.encode(ex[0].text_a, add_special_tokens=False)
    new = tokenizer.encode(out[0].text_a, add_special_tokens=False)
    assert len(new) == len(old)
    for a, b in zip(old, new):
        assert b in neighbours.neighbours[a].tolist()


def test_settings_are_validated():
    with pytest.raises(ValueError, match="unknown perturbation"):
        Perturbation("typo", 0.1)
    with pytest.raises(ValueError, match="outside"):
        Perturbation("char_swap", 1.5)
    with pytest.raises(ValueError, match="repeat"):
        PerturbationSet((Perturbation("char_swap", 0.1), Perturbation("char_swap", 0.2)))
    with pytest.raises(ValueError, match="NeighbourTable"):
        perturb.perturb_examples(EXAMPLES, 0, PerturbationSet((Perturbation("neighbour", 0.1),)))
    s = PerturbationSet.from_mapping({"char_swap": 0.1, "word_drop": 0.05}, mode="one")
    assert PerturbationSet.from_mapping(s.to_dict()["perturbations"], s.to_dict()["mode"]) == s


def test_protected_tokens_are_never_replaced_nor_replacements(tokenizer):
    embeddings = np.random.default_rng(1).normal(size=(len(tokenizer), 8)).astype(np.float32)
    vocab = tokenizer.get_vocab()
    protected = [vocab["good"], vocab["bad"], vocab["great"], vocab["terrible"]]
    text = "the movie was good and the plot was bad"
    table = perturb.NeighbourTable.build(tokenizer, embeddings, [text], k=3, protected_ids=protected)
    assert not set(protected) & set(table.neighbours)
    assert all(not set(protected) & set(row.tolist()) for row in table.neighbours.values())
    ops = PerturbationSet((Perturbation("neighbour", 1.0),))
    for seed in range(4):
        out = perturb.perturb_examples([Example(text, None, 1)], seed, ops, neighbours=table)[0].text_a
        # every other token was replaced (rate 1), and a replacement may be a word piece that joins its neighbour,
        # so check by token: the protected ones are all still there, once each
        ids = tokenizer.encode(out, add_special_tokens=False)
        assert sorted(t for t in ids if t in protected) == sorted([vocab["good"], vocab["bad"]])
        assert out != text
