"""The FFN's own numerics: the erf-form exact GELU against float64, and the layer stacking of captures."""
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
import torch

from skillneurons_jax.models.ffn import ACTIVATIONS, gelu_erf, stack_layers

GRID = np.concatenate([np.linspace(-40.0, 40.0, 200_001), np.random.default_rng(0).normal(0, 3, 100_000),
                       [0.0, -0.0, 1e-30, -1e-30, 3e38, -3e38]]).astype(np.float32)


def _exact(x):
    x = np.asarray(x, np.float64)
    return 0.5 * x * scipy.special.erfc(-x / np.sqrt(2.0))


def _exact_grad(x):
    x = np.asarray(x, np.float64)
    return 0.5 * scipy.special.erfc(-x / np.sqrt(2.0)) + x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)


def test_hf_gelu_name_is_the_erf_form():
    assert ACTIVATIONS["gelu"] is gelu_erf


def test_gelu_erf_matches_float64_and_torch():
    x = GRID[np.abs(GRID) < 1e4]
    ours = np.asarray(jax.jit(gelu_erf)(jnp.asarray(x)), np.float64)
    exact = _exact(x)
    assert np.isfinite(ours).all()
    # Error: float32 rounding of 1 + erf, scaled by |x| (about an ulp of the result where x > 0).
    err = np.abs(ours - exact)
    assert err[np.abs(x) <= 4].max() <= 2e-6
    assert (err <= 4e-7 * np.abs(x) + 2e-6).all()
    torch_gelu = torch.nn.functional.gelu(torch.from_numpy(x.copy())).numpy().astype(np.float64)
    assert (np.abs(ours - torch_gelu) <= 4e-7 * np.abs(x) + 2e-6).all()


def test_gelu_erf_extremes_and_gradient():
    x = jnp.asarray([-3e38, -1e4, -40.0, -0.0, 0.0, 40.0, 1e4, 3e38], jnp.float32)
    y = np.asarray(gelu_erf(x))
    np.testing.assert_array_equal(y[:4], 0.0)          # Phi underflows to 0 far left (-0.0 == 0.0)
    np.testing.assert_array_equal(y[5:], np.asarray(x)[5:])
    g = np.asarray(jax.jit(jax.vmap(jax.grad(gelu_erf)))(jnp.asarray(GRID[np.abs(GRID) <= 40])), np.float64)
    assert np.isfinite(g).all()
    assert np.abs(g - _exact_grad(GRID[np.abs(GRID) <= 40])).max() <= 1e-5


def test_stack_layers_equals_stack():
    rng = np.random.default_rng(1)
    parts = [jnp.asarray(rng.normal(size=(2, 3, 5)), jnp.float32) for _ in range(4)]
    out = jax.jit(stack_layers)(parts)
    assert out.shape == (4, 2, 3, 5) and out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), np.asarray(jnp.stack(parts)))
