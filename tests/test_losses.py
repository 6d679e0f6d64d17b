"""The losses against an independent 60-digit reference (Python's `decimal`), at margins from -50 to 1e6.

Classification flows reach margins in the thousands, so `log l`, its slope and its curvature (which an implicit
solver differentiates) must stay accurate and finite far past the point where `l` underflows (margin ~745).
"""

import decimal
import functools
from decimal import Decimal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltn import losses

CONTEXT = decimal.Context(prec=60, Emin=-10**6, Emax=10**6)  # e^-1e6 ~ 1e-434295 is representable
TINY = np.finfo(np.float64).tiny  # below it (curvatures at margins > ~708) float64 has only absolute accuracy

MARGINS = np.unique(np.concatenate([
    -np.geomspace(1e-8, 50, 80), [0.0], np.geomspace(1e-8, 1e6, 300),
    np.linspace(354, 745, 60),  # where the gradient of the old formula was NaN
    [1e-8, 1e3, 1e6, 3.0, 3.0 + 1e-12, 3.0 - 1e-12, -np.log(np.e - 1)],  # a branch switch; where log l = 0
]))


def reference_log1p(x: Decimal) -> Decimal:
    if x < Decimal("1e-25"):  # 1 + x would round; the series is exact to x^4 ~ 1e-100
        return CONTEXT.plus(x - x * x / 2 + x * x * x / 3)
    return CONTEXT.ln(CONTEXT.add(1, x))


def reference_log1p_minus_x(x: Decimal) -> Decimal:
    """`log(1 + x) - x` without cancellation."""
    if x < Decimal("1e-12"):
        return CONTEXT.plus(sum((-1) ** (k + 1) * x**k / k for k in range(2, 8)))
    wider = decimal.Context(prec=90, Emin=CONTEXT.Emin, Emax=CONTEXT.Emax)  # cancellation costs <= 12 digits
    return CONTEXT.plus(wider.ln(wider.add(1, x)) - x)


def reference_log_loss(loss: str, margin: float) -> tuple[float, float, float]:
    """`log l(m)` and its first two derivatives in the margin m, from 60-digit arithmetic."""
    m = Decimal(float(margin))
    if loss == "exponential":
        return float(CONTEXT.ln(CONTEXT.exp(-m))), -1.0, 0.0
    with decimal.localcontext(CONTEXT):
        t = CONTEXT.exp(-m)
        softplus = reference_log1p(t)  # l(m) = log(1 + e^-m)
        sigmoid = t / (1 + t)  # -dl/dm
        slope = sigmoid / softplus  # -d log l / dm
        # d^2 log l / dm^2 = slope (1 - sigmoid - slope) = slope (log1p(t) - t) / ((1 + t) log1p(t))
        curvature = slope * reference_log1p_minus_x(t) / ((1 + t) * softplus)
        return float(CONTEXT.ln(softplus)), float(-slope), float(curvature)


def reference_log_risk(loss: str, margins, labels) -> tuple[float, np.ndarray]:
    """`log L` for outputs `labels * margins` and its gradient in the outputs, from 60-digit arithmetic."""
    with decimal.localcontext(CONTEXT):
        exps = [CONTEXT.exp(-Decimal(float(m))) for m in margins]
        per_sample = exps if loss == "exponential" else [reference_log1p(t) for t in exps]
        slopes = [-t if loss == "exponential" else -t / (1 + t) for t in exps]  # dl/dm
        total = sum(per_sample)
        gradient = [float(label) * float(s / total) for label, s in zip(labels, slopes)]
        return float(CONTEXT.ln(total)), np.array(gradient)


def alternating_labels(n: int) -> jnp.ndarray:
    return jnp.where(jnp.arange(n) % 2 == 0, 1.0, -1.0)


def per_sample_derivatives(loss: str, margins):
    """`log l`, `d log l / d output` and `d^2 log l / d output^2` (forward over reverse, as an implicit solver
    forms Hessian-vector products) per sample, vmapped over margins with labels of both signs."""
    labels = alternating_labels(len(margins))
    return labels, [np.asarray(a) for a in _per_sample_derivatives(loss, labels * jnp.asarray(margins), labels)]


@functools.partial(jax.jit, static_argnums=0)
def _per_sample_derivatives(loss: str, outputs, labels):

    def log_loss(output, label):
        return losses.per_sample_log_loss(output[None], label[None], loss)[0]

    def slope(output, label):
        return jax.grad(log_loss)(output, label)

    def curvature(output, label):
        return jax.jvp(lambda o: slope(o, label), (output,), (jnp.ones_like(output),))[1]

    return [jax.vmap(f)(outputs, labels) for f in (log_loss, slope, curvature)]


@pytest.mark.parametrize("loss", ["exponential", "logistic"])
def test_log_loss_value_slope_and_curvature_match_high_precision(loss):
    labels, (value, slope, curvature) = per_sample_derivatives(loss, MARGINS)
    reference = np.array([reference_log_loss(loss, m) for m in MARGINS])
    labels = np.asarray(labels)
    # Error in log l, relative to max(1, |log l|): where |log l| < 1 this is the relative error of l itself.
    value_error = np.abs(value - reference[:, 0]) / np.maximum(np.abs(reference[:, 0]), 1.0)
    assert np.max(value_error) <= 2e-15  # measured 3.3e-16 (logistic), 0 (exponential)
    slope_error = np.abs(slope - labels * reference[:, 1]) / np.abs(reference[:, 1])
    assert np.max(slope_error) <= 4e-15  # measured 4.4e-16 (logistic), 0 (exponential)
    # Relative error measured 6.6e-15 (logistic, margins near 3 where two branches meet); past margin ~708 the
    # curvature ~ -e^-m / 2 is subnormal: measured absolute error 3.5e-310, under TINY.
    curvature_error = np.abs(curvature - reference[:, 2])
    assert np.all(curvature_error <= 5e-14 * np.abs(reference[:, 2]) + TINY)


@pytest.mark.parametrize("loss", ["exponential", "logistic"])
def test_log_loss_at_extreme_margins_tends_to_its_asymptote(loss):
    """Margin -> +inf: log l -> -margin with slope -> -1 and curvature -> 0, never NaN; a margin -> -inf (a
    badly wrong output) stays finite in its derivatives too."""
    margins = np.array([1e7, 1e300, np.inf, -1e3, -1e300])
    _, (value, slope, curvature) = per_sample_derivatives(loss, margins)
    np.testing.assert_array_equal(value[:3], -margins[:3])
    np.testing.assert_array_equal(slope[:3], [-1.0, 1.0, -1.0])  # alternating labels
    np.testing.assert_array_equal(curvature[:3], 0.0)
    assert np.all(np.isfinite(slope)) and np.all(np.isfinite(curvature))


LOG_RISK_MARGINS = np.array([
    [-50.0, 0.0, 1e-8, 50.0],
    [354.0, 500.0, 745.0, 746.0],  # l underflows in float64 for the last ones
    [1e3, 1e3 + 1e-6, 2e3, 1e6],
    [1e6, 1e6, 1e6 + 1.0, 1e5],
])


@functools.partial(jax.jit, static_argnums=0)
def log_risk_derivatives(loss: str, outputs, labels):
    """`log L`, its gradient in the outputs and a Hessian-vector product, vmapped over rows of outputs."""
    def log_risk(o):
        return losses.log_risk(o, labels, loss)

    def hessian_vector(o):
        return jax.jvp(jax.grad(log_risk), (o,), (jnp.ones_like(o),))[1]

    return (*jax.vmap(jax.value_and_grad(log_risk))(outputs), jax.vmap(hessian_vector)(outputs))


@pytest.mark.parametrize("loss", ["exponential", "logistic"])
def test_log_risk_and_its_gradient_match_high_precision(loss):
    labels = alternating_labels(LOG_RISK_MARGINS.shape[1])
    value, gradient, hessian_vector = log_risk_derivatives(loss, labels * jnp.asarray(LOG_RISK_MARGINS), labels)
    for row, margins in enumerate(LOG_RISK_MARGINS):
        reference_value, reference_gradient = reference_log_risk(loss, margins, labels)
        assert float(value[row]) == pytest.approx(reference_value, rel=1e-15)  # measured 0 (bit-exact)
        np.testing.assert_allclose(gradient[row], reference_gradient, rtol=1e-14, atol=0)  # measured 8.5e-16
    assert bool(jnp.all(jnp.isfinite(hessian_vector)))


def test_squared_risk_and_gradient_match_numpy():
    rng = np.random.default_rng(0)
    outputs, y = rng.standard_normal(5), rng.standard_normal(5)
    value, gradient = jax.jit(jax.value_and_grad(losses.risk), static_argnums=2)(outputs, y, "squared")
    assert float(value) == pytest.approx(0.5 * np.sum((outputs - y) ** 2), rel=1e-15)
    np.testing.assert_allclose(gradient, outputs - y, rtol=1e-15)
    assert float(losses.log_risk(jnp.asarray(outputs), jnp.asarray(y), "squared")) == pytest.approx(
        np.log(0.5 * np.sum((outputs - y) ** 2)), rel=1e-15)


def test_per_sample_log_loss_refuses_a_regression_loss():
    with pytest.raises(ValueError, match="classification losses, not 'squared'"):
        losses.per_sample_log_loss(jnp.zeros(2), jnp.ones(2), "squared")
