"""What every model returns."""
from typing import Optional

import flax.struct
import jax


@flax.struct.dataclass
class ModelOutput:
    """hidden [B, T, H]; neurons [L, B, len, N] float32 (None unless captured);
    decoder_hidden [B, D, H] and decoder_neurons [Ldec, B, len, N] for encoder-decoders."""

    hidden: jax.Array
    neurons: Optional[jax.Array] = None
    decoder_hidden: Optional[jax.Array] = None
    decoder_neurons: Optional[jax.Array] = None
