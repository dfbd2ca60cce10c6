"""One model configuration for every family, read from a Hugging Face `config.json`."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

# model_type (as Hugging Face writes it) -> our family.
FAMILY_OF_MODEL_TYPE = {
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "bert": "bert",
    "t5": "t5",
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    family: str                 # "roberta" | "bert" | "t5"
    vocab_size: int
    hidden: int
    intermediate: int           # FFN neurons per layer
    num_layers: int             # encoder layers
    num_heads: int
    activation: str             # key of ffn.ACTIVATIONS
    gated: bool = False         # T5 v1.1 gated-GELU
    has_lm_head: bool = True    # False for sentence-transformers BERT checkpoints (no MLM head)
    num_decoder_layers: int = 0  # 0 for encoders
    pad_token_id: int = 0
    max_positions: int = 512    # encoders: size of the position table (RoBERTa: 514)
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    head_dim: Optional[int] = None   # T5 d_kv
    relative_buckets: int = 32       # T5
    relative_max_distance: int = 128  # T5
    tie_word_embeddings: bool = True
    decoder_start_token_id: int = 0
    dtype: str = "float32"      # compute dtype: "float32" | "bfloat16" (params and statistics stay float32)
    # FFN width of each encoder layer when the layers differ (a pruned model, models.prune); None = `intermediate`
    # in every layer. `intermediate` stays the unpruned width (the neuron index space of masks and statistics).
    intermediate_sizes: Optional[tuple[int, ...]] = None

    def __post_init__(self):
        sizes = self.intermediate_sizes
        if sizes is None:
            return
        if self.family == "t5":
            raise ValueError("per-layer FFN widths (intermediate_sizes) are supported for the encoder families "
                             "(bert, roberta) only, not t5")
        if (not isinstance(sizes, tuple) or len(sizes) != self.num_layers
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes)):
            raise ValueError(f"intermediate_sizes must be a tuple of {self.num_layers} positive ints (one per "
                             f"layer); got {sizes!r}")

    @property
    def neurons(self) -> int:
        return self.intermediate

    def layer_intermediate(self, layer: int) -> int:
        """FFN neurons of encoder layer `layer` (its own width in a pruned model)."""
        return self.intermediate if self.intermediate_sizes is None else self.intermediate_sizes[layer]

    @property
    def uniform_width(self) -> bool:
        """Whether every layer has `intermediate` neurons (captures and [L, N] interventions need it)."""
        return self.intermediate_sizes is None or all(n == self.intermediate for n in self.intermediate_sizes)

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)


def _require(cfg: Mapping[str, Any], key: str, source: str):
    if key not in cfg:
        raise ValueError(f"{source}: config.json has no {key!r}")
    return cfg[key]


# Our key in a pruned model's config.json (Hugging Face has none): the FFN width of each encoder layer.
INTERMEDIATE_SIZES_KEY = "intermediate_sizes"


def _intermediate_sizes(cfg: Mapping[str, Any], family: str, source: str) -> Optional[tuple[int, ...]]:
    """The config's per-layer FFN widths, checked: a list of num_hidden_layers ints in 1..intermediate_size."""
    sizes = cfg.get(INTERMEDIATE_SIZES_KEY)
    if sizes is None:
        return None
    if family == "t5":
        raise ValueError(f"{source}: field {INTERMEDIATE_SIZES_KEY!r}: per-layer FFN widths are supported for the "
                         "encoder families (bert, roberta) only, not t5")
    layers, width = cfg.get("num_hidden_layers"), cfg.get("intermediate_size")
    if (not isinstance(sizes, list) or len(sizes) != layers
            or not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= width for n in sizes)):
        raise ValueError(f"{source}: field {INTERMEDIATE_SIZES_KEY!r} must be a list of {layers} ints in "
                         f"1..{width} (intermediate_size), one per layer; got {sizes!r}")
    return tuple(sizes)


def config_from_hf(cfg: Mapping[str, Any], *, has_lm_head: bool = True, source: str = "config.json") -> ModelConfig:
    """Hugging Face config dict -> ModelConfig. Raises ValueError for an unknown model_type or a malformed
    `intermediate_sizes` (our per-layer FFN widths of a pruned encoder)."""
    model_type = cfg.get("model_type")
    family = FAMILY_OF_MODEL_TYPE.get(model_type)
    if family is None:
        raise ValueError(f"{source}: unknown model_type {model_type!r}; supported: "
                         f"{sorted(FAMILY_OF_MODEL_TYPE)}")
    sizes = _intermediate_sizes(cfg, family, source)
    if family in ("roberta", "bert"):
        return ModelConfig(
            intermediate_sizes=sizes,
            family=family,
            vocab_size=_require(cfg, "vocab_size", source),
            hidden=_require(cfg, "hidden_size", source),
            intermediate=_require(cfg, "intermediate_size", source),
            num_layers=_require(cfg, "num_hidden_layers", source),
            num_heads=_require(cfg, "num_attention_heads", source),
            activation=cfg.get("hidden_act", "gelu"),
            has_lm_head=has_lm_head,
            pad_token_id=cfg.get("pad_token_id", 1 if family == "roberta" else 0),
            max_positions=cfg.get("max_position_embeddings", 512),
            type_vocab_size=cfg.get("type_vocab_size", 2),
            layer_norm_eps=cfg.get("layer_norm_eps", 1e-12),
        )
    # T5: "relu" (v1.0) or "gated-gelu" (v1.1); feed_forward_proj may also be "gated-<act>".
    proj = cfg.get("feed_forward_proj", "relu")
    gated = proj.startswith("gated-")
    act = proj.split("-", 1)[1] if gated else proj
    if gated and act == "gelu":
        act = "gelu_new"  # HF T5 v1.1 maps "gated-gelu" to the tanh approximation
    return ModelConfig(
        family="t5",
        vocab_size=_require(cfg, "vocab_size", source),
        hidden=_require(cfg, "d_model", source),
        intermediate=_require(cfg, "d_ff", source),
        num_layers=_require(cfg, "num_layers", source),
        num_heads=_require(cfg, "num_heads", source),
        activation=act,
        gated=gated,
        has_lm_head=True,
        num_decoder_layers=cfg.get("num_decoder_layers") or cfg["num_layers"],
        pad_token_id=cfg.get("pad_token_id", 0),
        layer_norm_eps=cfg.get("layer_norm_epsilon", 1e-6),
        head_dim=cfg.get("d_kv", cfg["d_model"] // cfg["num_heads"]),
        relative_buckets=cfg.get("relative_attention_num_buckets", 32),
        relative_max_distance=cfg.get("relative_attention_max_distance", 128),
        # transformers 5 writes tie_word_embeddings=true for every T5 it saves and says with
        # scale_decoder_outputs whether the d_model**-0.5 rescale (the v1.0 tied head) applies.
        tie_word_embeddings=bool(cfg.get("scale_decoder_outputs", cfg.get("tie_word_embeddings", True))),
        decoder_start_token_id=cfg.get("decoder_start_token_id", 0) or 0,
    )
