"""Certificates vanish at optima, not at perturbed points, and do not depend on scale (docs/theory.md §5-6)."""

import jax.numpy as jnp
import numpy as np
import pytest

import ltn
import ltn.data
from ltn.theory import kkt_residual, predict, singular_vector_residual

DATA = ltn.data.separable_classification(2, 12, 8)
X, Y = DATA.X, DATA.y
RNG = np.random.default_rng(0)


def balanced_diagonal_params(rho, depth):
    """|v_l| = |rho|^(1/L) on every layer, the sign on the first: the balanced point with product rho."""
    magnitude = np.abs(rho) ** (1 / depth)
    return (jnp.asarray(np.sign(rho) * magnitude),) + tuple(jnp.asarray(magnitude) for _ in range(depth - 1))


def perturbed(params, size=1e-2):
    return tuple(v + size * jnp.asarray(RNG.standard_normal(v.shape)) * jnp.abs(v).max() for v in params)


@pytest.mark.parametrize("depth", [2, 3])
def test_kkt_and_singular_vector_residuals_vanish_at_diagonal_optima(depth):
    net = ltn.Diagonal(8, depth)
    prediction = predict(net, X, Y, loss="logistic")
    params = balanced_diagonal_params(prediction.diagnostics["rho"], depth)
    kkt = kkt_residual(net, X, Y, params)
    assert kkt.residual < 1e-10  # measured ~1e-15
    if depth == 2:
        assert kkt.dual_violation < 1e-9
    assert singular_vector_residual(net, params, X, Y).residual < 1e-10  # measured ~1e-15
    moved = perturbed(params)
    assert kkt_residual(net, X, Y, moved).residual > 1e-3  # measured ~0.1
    assert singular_vector_residual(net, moved, X, Y).residual > 1e-3


def test_singular_vector_residual_at_fully_connected_max_margin():
    net = ltn.FullyConnected(8, (3,))
    direction = predict(net, X, Y, loss="logistic").beta
    a = RNG.standard_normal(3)
    a /= np.linalg.norm(a)
    # Rank-one aligned layers with equal norms: W_1 = beta a^T, W_2 = a, so W_1 W_2 = beta.
    params = (jnp.asarray(np.outer(direction, a)), jnp.asarray(a[:, None]))
    assert singular_vector_residual(net, params, X, Y).residual < 1e-8  # measured ~1e-10 (QP accuracy)
    assert singular_vector_residual(net, perturbed(params), X, Y).residual > 1e-3


def test_certificates_are_scale_free():
    net = ltn.Diagonal(8, 2)
    prediction = predict(net, X, Y, loss="logistic")
    params = perturbed(balanced_diagonal_params(prediction.diagnostics["rho"], 2), 1e-3)
    for certificate in (kkt_residual, lambda n, x, y, p: singular_vector_residual(n, p, x, y)):
        base = certificate(net, X, Y, params).residual
        scaled_params = certificate(net, X, Y, tuple(7.5 * v for v in params)).residual
        scaled_data = certificate(net, 0.02 * X, Y, params).residual
        assert base > 1e-4
        np.testing.assert_allclose([scaled_params, scaled_data], base, rtol=1e-8)  # measured ~1e-14


def test_points_that_do_not_separate_get_an_infinite_residual():
    net = ltn.Diagonal(8, 2)
    params = (jnp.ones(8), -jnp.asarray(Y @ X))
    assert kkt_residual(net, X, Y, params).residual == np.inf
    assert singular_vector_residual(net, params, X, Y).residual == np.inf
