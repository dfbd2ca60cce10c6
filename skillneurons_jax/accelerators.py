"""Accelerators by name: datasheet peak FLOP/s per chip, and the sweep's estimated time on one of them.

PEAKS holds the vendors' dense (no sparsity) peak matmul rates per chip, in FLOP/s, for bfloat16 and float32
(float32 here is the plain IEEE rate, not TF32; TPUs publish no float32 matmul rate: None). They are the
denominators of a model-FLOP utilisation (MFU) when the device is known (benchmarks/device.py); a measured
large-matmul rate is reported beside them. Sources: NVIDIA's H100/H200/A100/L4/V100/T4 datasheets, Google Cloud's
TPU system-architecture pages (v4, v5e, v5p, v6e).
"""
from __future__ import annotations

from typing import Optional


# name -> (substrings of jax's device_kind that identify it, bfloat16 FLOP/s, float32 FLOP/s) per chip.
PEAKS: dict[str, tuple[tuple[str, ...], float, Optional[float]]] = {
    "h200": (("h200",), 989e12, 67e12),
    "h100-sxm": (("h100 80gb hbm3", "h100 sxm", "h100-sxm"), 989e12, 67e12),
    "h100-pcie": (("h100 pcie", "h100-pcie"), 756e12, 51e12),
    "a100": (("a100",), 312e12, 19.5e12),
    "l4": (("nvidia l4",), 121e12, 30.3e12),
    "v100": (("v100",), 125e12, 15.7e12),   # float16 tensor cores (V100 has no bfloat16)
    "t4": (("tesla t4",), 65e12, 8.1e12),     # float16 tensor cores
    "tpu-v4": (("tpu v4",), 275e12, None),
    "tpu-v5e": (("tpu v5 lite", "tpu v5e"), 197e12, None),
    "tpu-v5p": (("tpu v5p", "tpu v5"), 459e12, None),
    "tpu-v6e": (("tpu v6 lite", "tpu v6e", "tpu v6"), 918e12, None),
}


def known(device_kind: str) -> Optional[str]:
    """The PEAKS name of a jax `device.device_kind` (e.g. "NVIDIA H100 80GB HBM3", "TPU v4"), or None."""
    kind = str(device_kind).lower()
    for name, (patterns, _, _) in PEAKS.items():
        if any(p in kind for p in patterns):
            return name
    return None


def datasheet_peak(name: str, dtype: str) -> Optional[float]:
    """Peak FLOP/s per chip of a PEAKS name for "bfloat16" or "float32" (None where none is published)."""
    if name not in PEAKS:
        raise ValueError(f"unknown accelerator {name!r}; known: {', '.join(PEAKS)} (or give the peak FLOP/s)")
    _, bf16, fp32 = PEAKS[name]
    if dtype not in ("bfloat16", "float32"):
        raise ValueError(f"dtype must be bfloat16 or float32, got {dtype!r}")
    return bf16 if dtype == "bfloat16" else fp32


def accelerator_rate(spec: str, chips: int = 1, utilisation: float = 0.4) -> tuple[str, float]:
    """("<description>", sustained FLOP/s) for `spec`: a PEAKS name (its bfloat16 peak) or a number (peak FLOP/s
    per chip, e.g. "989e12"), times `chips`, times the model-FLOP utilisation assumed for the whole sweep."""
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation must be in (0, 1], got {utilisation}")
    if chips < 1:
        raise ValueError(f"chips must be >= 1, got {chips}")
    try:
        peak, label = float(spec), f"{float(spec):.3g} FLOP/s peak"
    except ValueError:
        name = str(spec).lower()
        peak, label = datasheet_peak(name, "bfloat16"), f"{name} ({datasheet_peak(name, 'bfloat16'):.3g} "\
                                                         f"bfloat16 FLOP/s peak)"
    if not peak > 0:
        raise ValueError(f"peak FLOP/s must be positive, got {spec!r}")
    return f"{chips} x {label} at {utilisation:.0%} utilisation", peak * chips * utilisation
