"""The unperturbed originals of the AdvGLUE records, so that a clean task's train split can leave them out (trap 6).

AdvGLUE perturbed GLUE dev rows. Where a clean task's train split is carved from that dev file (QNLI without
train.tsv), or where any other file holds those rows, tuning the clean prompt and computing the eq. 2 baseline on
them would let the clean side see the adversarial set's originals. `readers.read_split` therefore removes, from
the TRAIN split of every task with `TaskSpec.excludes_originals_of`, each example whose texts are the original of
an adversarial record, and records how many it removed.

Where the originals come from (`OriginalTexts.method`):
  - "original_fields": `<data_dir>/advglue/dev_ann.json` (AdvGLUE with `original_*` fields): each record's
    original = the record with its perturbed field(s) replaced by `original_<field>`. Matched exactly after
    `normalize` (the GLUE files and AdvGLUE tokenize punctuation differently: "Center?" vs "Center ?").
  - "adversarial_text": without dev_ann.json, the adversarial record's own texts. A word-level attack changes a few
    words and a sentence-level one adds or rewrites a clause, so exact matching would find nothing: an example
    matches when, field by field, its word set and the record's have Jaccard similarity >= `FALLBACK_JACCARD`.
    This is an approximation (it can miss heavy rewrites and, rarely, catch a near-duplicate that is no original);
    the log and `SplitData.adversarial_match` say which method was used.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Sequence

from skillneurons_jax.data.tasks import Example

ANNOTATED_FILE = "advglue/dev_ann.json"      # under data_dir: the same records plus original_* fields
MATCH_BY = ("pair", "text_a")              # what of an example must equal an original's (OriginalTexts.matches)
FALLBACK_JACCARD = 0.5                       # word-set similarity per field when only the attacked text is known
_WORD = re.compile(r"\w+")


def normalize(text: str | None) -> str:
    """Lower-cased words joined by single spaces ("Center?" and "center ?" agree); None -> ""."""
    return " ".join(_WORD.findall((text or "").lower()))


@dataclasses.dataclass(frozen=True)
class OriginalTexts:
    """The originals of one or more adversarial tasks, as normalized (text_a, text_b) pairs.

    `pairs`: exact keys (method "original_fields"); `records`: per adversarial record, the word sets of its fields
    (method "adversarial_text"); `sources`: the files read; `tasks`: the adversarial tasks covered.
    """
    method: str
    pairs: frozenset
    records: tuple[tuple[frozenset, frozenset], ...]
    sources: tuple[str, ...]
    tasks: tuple[str, ...]

    def matches(self, example: Example, by: str = "pair") -> bool:
        """by "pair": the example's texts are an original's (either order); by "text_a": its first text is an
        original's first text (QNLI: the question, whatever the sentence, so that no original question is in a
        clean train split)."""
        if by not in MATCH_BY:
            raise ValueError(f"match originals by one of {MATCH_BY}, not {by!r}")
        a, b = normalize(example.text_a), normalize(example.text_b)
        if self.method == "original_fields":
            if by == "text_a":
                return a in self.first_texts
            return (a, b) in self.pairs or (b, a) in self.pairs
        words_a, words_b = frozenset(a.split()), frozenset(b.split())
        if by == "text_a":
            return any(_similar(words_a, ra) for ra, _ in self.records)
        return any(_similar(words_a, ra) and _similar(words_b, rb) for ra, rb in self.records)

    @property
    def first_texts(self) -> frozenset:
        return frozenset(a for a, _ in self.pairs)


def _similar(x: frozenset, y: frozenset) -> bool:
    """Word-set Jaccard similarity >= FALLBACK_JACCARD (two empty sets: the field is absent on both sides)."""
    if not x or not y:
        return not x and not y
    small, large = sorted((len(x), len(y)))
    if small < FALLBACK_JACCARD * large:      # Jaccard <= small / large: skip the set operations
        return False
    return len(x & y) / len(x | y) >= FALLBACK_JACCARD


def from_annotated(records: Iterable[tuple[dict, tuple[str, str | None]]], sources: Sequence[str],
                   tasks: Sequence[str]) -> OriginalTexts:
    """Originals from dev_ann.json records: (record, (text_a field, text_b field)) pairs; a field with an
    `original_<field>` entry was perturbed and is replaced by it."""
    pairs = set()
    for rec, (a_field, b_field) in records:
        a = rec.get(f"original_{a_field}", rec[a_field])
        b = None if b_field is None else rec.get(f"original_{b_field}", rec[b_field])
        pairs.add((normalize(a), normalize(b)))
    return OriginalTexts("original_fields", frozenset(pairs), (), tuple(sources), tuple(tasks))


def from_adversarial(records: Iterable[tuple[dict, tuple[str, str | None]]], sources: Sequence[str],
                     tasks: Sequence[str]) -> OriginalTexts:
    """Originals approximated by the adversarial records' own texts (dev.json only; see the module docstring)."""
    out = []
    for rec, (a_field, b_field) in records:
        out.append((frozenset(normalize(rec[a_field]).split()),
                    frozenset(normalize(None if b_field is None else rec[b_field]).split())))
    return OriginalTexts("adversarial_text", frozenset(), tuple(out), tuple(sources), tuple(tasks))


def exclude_originals(examples: Iterable[Example], originals: OriginalTexts | None, by: str = "pair"
                      ) -> tuple[list[Example], int]:
    """(examples without the adversarial originals, how many were left out), order kept; `by` as in
    OriginalTexts.matches."""
    examples = list(examples)
    if originals is None:
        return examples, 0
    kept = [e for e in examples if not originals.matches(e, by)]
    return kept, len(examples) - len(kept)
