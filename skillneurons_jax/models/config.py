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

    @property
    def neurons(self) -> int:
        return self.intermediate

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)


def _require(cfg: Mapping[str, Any], key: str, source: str):
    if key not in cfg:
        raise ValueError(f"{source}: config.json has no {key!r}")
    return cfg[key]


def config_from_hf(cfg: Mapping[str, Any], *, has_lm_head: bool = True, source: str = "config.json") -> ModelConfig:
    """Hugging Face config dict -> ModelConfig. Raises ValueError for an unknown model_type."""
    model_type = cfg.get("model_type")
    family = FAMILY_OF_MODEL_TYPE.get(model_type)
    if family is None:
        raise ValueError(f"{source}: unknown model_type {model_type!r}; supported: "
                         f"{sorted(FAMILY_OF_MODEL_TYPE)}")
    if family in ("roberta", "bert"):
        return ModelConfig(
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
