"""This machine's float32 matmul peak, measured in the benchmark's own process (the MFU denominator).

JAX: a jitted loop of `c = c @ b` on [n, n] float32 (n = 2048), `iters` products per call; the peak is the
median over `repeats` timed calls after one warm-up (compile) call. FLOPs per call = iters * 2 * n^3.
The PyTorch figure (same loop, eager) is recorded for context: the two libraries call different GEMM kernels.
"""
from __future__ import annotations

import statistics
import time

import numpy as np


def _median_rate(run, flops: float, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return dict(gflops=flops / med / 1e9, median_s=med, times_s=times, flops=flops,
                best_gflops=flops / min(times) / 1e9)


def jax_matmul_loop(n: int = 2048, iters: int = 8):
    """(run() -> None, FLOPs per run, first-call seconds): the compiled loop, warmed up."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    # Scaled so that repeated products neither overflow nor vanish (norms stay O(1)).
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32) / np.sqrt(n)

    @jax.jit
    def loop(a, b):
        return jax.lax.fori_loop(0, iters, lambda i, c: c @ b, a)

    t = time.perf_counter()
    loop(a, b).block_until_ready()
    return (lambda: loop(a, b).block_until_ready()), iters * 2.0 * n ** 3, time.perf_counter() - t


def jax_matmul_peak(n: int = 2048, iters: int = 8, repeats: int = 5) -> dict:
    """Median GFLOP/s of a jitted float32 [n, n] @ [n, n] loop (see the module docstring)."""
    run, flops, first_s = jax_matmul_loop(n, iters)
    out = _median_rate(run, flops, repeats)
    out.update(n=n, iters=iters, repeats=repeats, warmup_s=first_s)
    return out


def torch_matmul_peak(n: int = 2048, iters: int = 8, repeats: int = 5) -> dict:
    """The same loop in eager PyTorch (context only)."""
    import torch

    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g) / np.sqrt(n)

    def loop():
        c = a
        for _ in range(iters):
            c = c @ b
        return c

    loop()
    out = _median_rate(loop, iters * 2.0 * n ** 3, repeats)
    out.update(n=n, iters=iters, repeats=repeats)
    return out
