"""Offline, label-preserving text perturbations, deterministic per seed.

Each perturbation is a named operation with a rate (the probability that one unit — a word, a pair of
neighbouring words, a token — is edited):

  char_swap      a word of >= 2 letters gets two neighbouring letters swapped
  char_drop      a word of >= 2 letters loses one letter
  char_insert    a word of >= 1 letter gets one random lower-case letter inserted
  word_drop      a word is removed (at least one word always stays)
  word_swap      a word swaps places with the next one (each position, left to right)
  neighbour      a token (from the model's tokenizer, special tokens never) is replaced by one of its nearest
                 neighbours by cosine similarity in the model's own input-embedding matrix (never itself, never a
                 special token); the text is decoded back from the edited ids

Only `text_a` / `text_b` change; the label is copied unchanged (the perturbations are small enough that the
gold label is assumed to hold, as in TextBugger / AdvGLUE-style word-level attacks; the study measures that
assumption's cost as the perturbed-control arm). Whitespace between words is kept exactly (word_drop joins the
words it keeps with single spaces); a rate of 0, or a draw that edits nothing, returns the text unchanged
character for character.

Determinism: example i, text field f, operation o of a set applied with `seed` draws from
numpy Generator(SeedSequence([seed, i, f, o])), so the result depends on (seed, position in the list), never on
which other examples or operations are present, and a capped split (`max_examples`) perturbs its prefix exactly as
the full split does.
"""
from __future__ import annotations

import dataclasses
import re
import string
from typing import Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from skillneurons_jax.data.tasks import Example

CHAR_OPERATIONS = ("char_swap", "char_drop", "char_insert")
WORD_OPERATIONS = ("word_drop", "word_swap")
TOKEN_OPERATIONS = ("neighbour",)
OPERATIONS = CHAR_OPERATIONS + WORD_OPERATIONS + TOKEN_OPERATIONS
# How a set's operations meet an example: "all" applies every one in order; "one" draws one per example.
MODES = ("all", "one")
_WORD_OR_SPACE = re.compile(r"\s+|\S+")
_LETTERS = string.ascii_lowercase


@dataclasses.dataclass(frozen=True)
class Perturbation:
    """One operation (a name in OPERATIONS) and its rate in [0, 1]."""

    name: str
    rate: float

    def __post_init__(self):
        if self.name not in OPERATIONS:
            raise ValueError(f"unknown perturbation {self.name!r}; known: {OPERATIONS}")
        rate = float(self.rate)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"perturbation {self.name!r}: rate {self.rate!r} is outside [0, 1]")
        object.__setattr__(self, "rate", rate)


@dataclasses.dataclass(frozen=True)
class PerturbationSet:
    """The perturbations a study applies (config `robust.perturbations`): names with strengths, and a mode.

    mode "all": every operation is applied to every example, in the listed order; "one": each example gets one
    operation drawn uniformly (from the example's own generator) from the list."""

    perturbations: tuple = ()
    mode: str = "all"

    def __post_init__(self):
        items = tuple(self.perturbations)
        if not all(isinstance(p, Perturbation) for p in items):
            raise ValueError("PerturbationSet.perturbations must be Perturbation objects")
        names = [p.name for p in items]
        if len(set(names)) != len(names):
            raise ValueError(f"perturbation names repeat: {names}")
        if self.mode not in MODES:
            raise ValueError(f"perturbation mode {self.mode!r}; allowed: {MODES}")
        object.__setattr__(self, "perturbations", items)

    @classmethod
    def from_mapping(cls, rates: Mapping[str, float], mode: str = "all") -> "PerturbationSet":
        """{"char_swap": 0.1, "word_drop": 0.05, ...} -> a set (in the mapping's order)."""
        return cls(tuple(Perturbation(str(name), rate) for name, rate in rates.items()), mode)

    def to_dict(self) -> dict:
        return {"perturbations": {p.name: p.rate for p in self.perturbations}, "mode": self.mode}

    @property
    def needs_neighbours(self) -> bool:
        return any(p.name in TOKEN_OPERATIONS and p.rate > 0 for p in self.perturbations)


# ----------------------------------------------------------------------------------------------- neighbours
def nearest_neighbours(embeddings, query_ids, k: int, exclude_ids: Sequence[int] = (), *,
                       chunk: int = 1024) -> np.ndarray:
    """int32 [Q, k]: for each query token, the k tokens of highest cosine similarity of their input embeddings,
    best first, never the token itself and never one of `exclude_ids` (the special tokens).

    embeddings: float [V, H] (the params' word-embedding matrix); query_ids: int [Q]. Pure: computed from the
    matrix, in chunks of `chunk` queries ([chunk, V] similarities at a time, e.g. 1024 x 30,522 floats for MiniLM).
    Ties go to the lower token id (lax.top_k's order)."""
    emb = jnp.asarray(embeddings, jnp.float32)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be [vocab, hidden]; got shape {emb.shape}")
    vocab = emb.shape[0]
    query = np.asarray(query_ids, np.int64).reshape(-1)
    if query.size and (query.min() < 0 or query.max() >= vocab):
        raise ValueError(f"query ids {query.min()}..{query.max()} fall outside the vocabulary of {vocab}")
    excluded = np.zeros(vocab, bool)
    excluded[np.asarray(list(exclude_ids), np.int64)] = True
    if not 1 <= k <= vocab - 1 - int(excluded.sum()):
        raise ValueError(f"k={k} neighbours requested from a vocabulary of {vocab} with {int(excluded.sum())} "
                         "excluded tokens")
    unit = emb / jnp.maximum(jnp.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    blocked = jnp.asarray(excluded)
    out = []
    for start in range(0, query.size, chunk):
        ids = jnp.asarray(query[start:start + chunk], jnp.int32)
        out.append(np.asarray(_top_neighbours(unit, ids, blocked, k)))
    return np.concatenate(out).astype(np.int32) if out else np.zeros((0, k), np.int32)


@jax.jit
def _similarities(unit, ids, blocked):
    sims = unit[ids] @ unit.T                                                    # [Q, V]
    sims = jnp.where(blocked[None, :], -jnp.inf, sims)
    return sims.at[jnp.arange(ids.shape[0]), ids].set(-jnp.inf)                   # never the token itself


def _top_neighbours(unit, ids, blocked, k):
    return jax.lax.top_k(_similarities(unit, ids, blocked), k)[1]


@dataclasses.dataclass(frozen=True, eq=False)
class NeighbourTable:
    """What the `neighbour` operation needs: the tokenizer (encode / decode), the token ids it may edit and
    their neighbours. `neighbours` maps a token id to int32 [k] candidate ids (drawn uniformly)."""

    tokenizer: object
    neighbours: Mapping[int, np.ndarray]
    special_ids: frozenset     # never edited: the special tokens and any protected ids

    @classmethod
    def build(cls, tokenizer, embeddings, texts: Sequence[str], k: int = 8,
              protected_ids: Sequence[int] = ()) -> "NeighbourTable":
        """Neighbours of every non-special token occurring in `texts` (encoded without special tokens).

        protected_ids: tokens never replaced and never used as replacements, besides the special tokens. Why:
        input-embedding neighbours are often antonyms (MiniLM: good -> bad, boring -> exciting, entertaining),
        so for a sentiment task the label-bearing words belong here (e.g. a polarity lexicon's token ids)."""
        special = frozenset(int(i) for i in tokenizer.all_special_ids)
        fixed = special | frozenset(int(i) for i in protected_ids)
        used = sorted({int(t) for text in texts for t in tokenizer.encode(text, add_special_tokens=False)}
                      - fixed)
        table = nearest_neighbours(embeddings, np.asarray(used, np.int64), k, sorted(fixed))
        return cls(tokenizer, {tok: table[i] for i, tok in enumerate(used)}, fixed)


# ----------------------------------------------------------------------------------------------- operations
def _pieces(text: str) -> list[str]:
    """Words and the whitespace between them, so that "".join(pieces) == text."""
    return _WORD_OR_SPACE.findall(text)


def _is_word(piece: str) -> bool:
    return not piece.isspace()


def _letter_positions(word: str) -> list[int]:
    return [i for i, ch in enumerate(word) if ch.isalpha()]


def _char_edit(name: str):
    def edit(text: str, rate: float, rng: np.random.Generator, _table) -> str:
        pieces = _pieces(text)
        changed = False
        for i, piece in enumerate(pieces):
            if not _is_word(piece):
                continue
            letters = _letter_positions(piece)
            if len(letters) < (1 if name == "char_insert" else 2) or rng.random() >= rate:
                continue
            if name == "char_swap":
                # two neighbouring letters of the word (by letter index): a typo that keeps every character
                j = int(rng.integers(len(letters) - 1))
                a, b = letters[j], letters[j + 1]
                chars = list(piece)
                chars[a], chars[b] = chars[b], chars[a]
                new = "".join(chars)
            elif name == "char_drop":
                a = letters[int(rng.integers(len(letters)))]
                new = piece[:a] + piece[a + 1:]
            else:
                a = int(rng.integers(len(piece) + 1))
                new = piece[:a] + _LETTERS[int(rng.integers(len(_LETTERS)))] + piece[a:]
            changed |= new != piece
            pieces[i] = new
        return "".join(pieces) if changed else text
    return edit


def _word_drop(text: str, rate: float, rng: np.random.Generator, _table) -> str:
    pieces = _pieces(text)
    words = [i for i, p in enumerate(pieces) if _is_word(p)]
    if len(words) < 2:
        return text
    drop = [i for i in words if rng.random() < rate]
    if len(drop) == len(words):  # keep one word: an empty text is no longer the example
        drop.pop(int(rng.integers(len(drop))))
    if not drop:
        return text
    gone = set(drop)
    kept = [pieces[i] for i in words if i not in gone]
    return " ".join(kept)


def _word_swap(text: str, rate: float, rng: np.random.Generator, _table) -> str:
    pieces = _pieces(text)
    words = [i for i, p in enumerate(pieces) if _is_word(p)]
    values = [pieces[i] for i in words]
    changed = False
    for j in range(len(values) - 1):
        if rng.random() < rate:
            values[j], values[j + 1] = values[j + 1], values[j]
            changed = True
    if not changed:
        return text
    for i, v in zip(words, values):
        pieces[i] = v
    return "".join(pieces)


def _neighbour(text: str, rate: float, rng: np.random.Generator, table: Optional[NeighbourTable]) -> str:
    if table is None:
        raise ValueError("the 'neighbour' perturbation needs a NeighbourTable (NeighbourTable.build with the "
                         "model's tokenizer and its input-embedding matrix)")
    ids = list(table.tokenizer.encode(text, add_special_tokens=False))
    changed = False
    for j, tok in enumerate(ids):
        if tok in table.special_ids or rng.random() >= rate:
            continue
        candidates = table.neighbours.get(int(tok))
        if candidates is None:
            raise ValueError(f"token {tok} of {text!r} has no neighbours in the table: build it from these texts")
        ids[j] = int(candidates[int(rng.integers(len(candidates)))])
        changed = True
    if not changed:
        return text
    return table.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False).strip()


EDITS: dict[str, Callable] = {
    **{name: _char_edit(name) for name in CHAR_OPERATIONS},
    "word_drop": _word_drop,
    "word_swap": _word_swap,
    "neighbour": _neighbour,
}


def perturb_text(text: str, perturbation: Perturbation, rng: np.random.Generator,
                 table: Optional[NeighbourTable] = None) -> str:
    """One operation on one text (identity at rate 0)."""
    if perturbation.rate == 0.0:
        return text
    return EDITS[perturbation.name](text, perturbation.rate, rng, table)


def example_rng(seed: int, index: int, field: int, operation: int) -> np.random.Generator:
    """The generator of (seed, example index, text field 0 = a / 1 = b, operation index)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(field), int(operation)]))


def perturb_examples(examples: Sequence[Example], seed: int, settings: PerturbationSet, *,
                     neighbours: Optional[NeighbourTable] = None) -> list[Example]:
    """[E] examples -> [E] perturbed examples, same order, same labels (the label is copied, never computed).

    seed: the perturbation seed (e.g. the training seed). neighbours: needed when `settings` holds a nonzero
    `neighbour` rate (NeighbourTable.build(tokenizer, params["word_embeddings"], texts))."""
    if settings.needs_neighbours and neighbours is None:
        raise ValueError("the perturbation set has a 'neighbour' rate > 0: pass neighbours=NeighbourTable.build("
                         "tokenizer, word_embeddings, texts)")
    ops = settings.perturbations
    out = []
    for i, ex in enumerate(examples):
        chosen = range(len(ops))
        if settings.mode == "one" and ops:
            chosen = [int(example_rng(seed, i, 2, 0).integers(len(ops)))]
        texts = [ex.text_a, ex.text_b]
        for field, text in enumerate(texts):
            if text is None:
                continue
            for o in chosen:
                text = perturb_text(text, ops[o], example_rng(seed, i, field, o), neighbours)
            texts[field] = text
        out.append(Example(texts[0], texts[1], ex.label))
    return out
