"""A status is a claim backed by a certificate (docs/theory.md §11), tried as a user would: saddle plateaus and small
initialisations are never `converged`, a zero initialisation `stalled`, a converged run interpolates at its exact
limit, and a run decided at the start (a classification target already met, a regression start already certified)
ends there with 0 steps, on both paths of the flow and in descent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ltn
from ltn.data import separable_classification, sparse_regression
from ltn.flow import STATUSES
from ltn.flow._certificate import CONVERGED, STALLED, UNDECIDED, gradient_small, regression_verdict
from ltn.flow._result import Status
from ltn.losses import log_risk

REG = sparse_regression(seed=0, n=6, d=12, sparsity=2)
CLS = separable_classification(seed=0, n=6, d=8, margin=0.2)
DEEP = ltn.Diagonal(d=12, depth=10)
SHALLOW = ltn.Diagonal(d=12, depth=2)


def relative_residual(beta, problem):
    return float(jnp.linalg.norm(problem.X @ beta - problem.y) / jnp.linalg.norm(problem.y))


def deep_plateau_inits():
    """Depth 10, Gaussian scale 1: products of ten Gaussians make beta tiny and the gradient tinier. Seed 2 starts
    on a plateau where the scale-free gradient test already holds; seed 0 reaches one after a few steps."""
    return jax.vmap(lambda seed: DEEP.init(jax.random.PRNGKey(seed), scale=1.0))(jnp.asarray([2, 0]))


def test_statuses_are_an_enumeration_with_stable_codes():
    assert STATUSES == ("converged", "budget_exhausted", "nonfinite", "solver_failed", "stalled")
    assert [STATUSES[status] for status in Status] == [status.name.lower() for status in Status]
    assert (CONVERGED, STALLED) == (Status.CONVERGED, Status.STALLED) and UNDECIDED < 0


def test_saddle_plateau_is_not_converged():
    batch = deep_plateau_inits()
    start = jax.tree_util.tree_map(lambda leaf: leaf[0], batch)
    gradient = jax.grad(lambda p: 0.5 * jnp.sum((DEEP.apply(p, REG.X) - REG.y) ** 2))(start)
    data_scale = jnp.linalg.norm(REG.X, 2) * jnp.linalg.norm(REG.y)
    assert bool(gradient_small(start, gradient, 1e-10, data_scale, DEEP.depth))  # the old stop fired at step 0
    flow = ltn.gradient_flow(DEEP, batch, REG.X, REG.y, solver="tsit5", max_steps=300)
    assert list(flow.status_name) == ["budget_exhausted"] * 2
    assert list(np.asarray(flow.stats.steps)) == [300, 300]
    assert min(relative_residual(beta, REG) for beta in flow.beta) > 0.1  # measured 0.67 and 0.31
    descent = ltn.gradient_descent(DEEP, batch, REG.X, REG.y, learning_rate=0.01, max_steps=300)
    assert list(descent.status_name) == ["budget_exhausted"] * 2  # was "converged" after 0 and 3 steps
    # the implicit Newton-Krylov path is judged by the same certificate
    implicit = ltn.gradient_flow(DEEP, batch, REG.X, REG.y, solver="kvaerno5", max_steps=30)
    assert list(implicit.status_name) == ["budget_exhausted"] * 2
    assert min(relative_residual(beta, REG) for beta in implicit.beta) > 0.1


def test_plateau_point_is_undecided_though_its_gradient_is_small():
    """The shared decision itself, on a plateau point: neither interpolating nor stationary."""
    start = jax.tree_util.tree_map(lambda leaf: leaf[0], deep_plateau_inits())
    gradient = jax.grad(lambda p: 0.5 * jnp.sum((DEEP.apply(p, REG.X) - REG.y) ** 2))(start)
    assert int(regression_verdict(DEEP, start, gradient, REG.X, REG.y, 1e-9, 1e-10)) == UNDECIDED
    # with the residual test off, the Gauss-Newton test alone refuses it too (a small J makes J^+ r large)
    assert int(regression_verdict(DEEP, start, gradient, REG.X, REG.y, 1e300, 1e-10)) == UNDECIDED


@pytest.mark.parametrize("gtol", [1e-10, 1e-6])
def test_small_init_depth4_is_not_converged_before_its_limit(gtol):
    """Depth 4, theorem init 0.01: a long plateau, then slow escapes. A loose gtol used to end it at step 417,
    0.66 from the limit, as `converged`; within a test-sized budget it can only be `budget_exhausted`."""
    problem = sparse_regression(seed=0, n=10, d=30, sparsity=3)
    net = ltn.Diagonal(d=30, depth=4)
    params0 = net.init(jax.random.PRNGKey(0), scale=0.01, kind="theorem")
    result = ltn.gradient_flow(net, params0, problem.X, problem.y, solver="tsit5", max_steps=1000, gtol=gtol)
    assert result.status_name == "budget_exhausted"
    assert relative_residual(result.beta, problem) > 0.1  # measured 0.38


def test_zero_init_stalls_on_every_path():
    """The zero init is a stationary point that does not interpolate: the gradient is exactly zero and nothing
    ever moves. Each path ends at once with `stalled`."""
    zero = tuple(jnp.zeros(12) for _ in range(SHALLOW.depth))
    for solver in ("tsit5", "kvaerno5", "bdf"):
        result = ltn.gradient_flow(SHALLOW, zero, REG.X, REG.y, solver=solver)
        assert (result.status_name, int(result.stats.steps)) == ("stalled", 0), solver
        assert int(np.sum(result.trajectory.reached)) == 1
    descent = ltn.gradient_descent(SHALLOW, zero, REG.X, REG.y, learning_rate=0.01)
    assert (descent.status_name, int(descent.stats.steps)) == ("stalled", 0)


def test_converged_run_interpolates_at_its_exact_limit_and_a_certified_start_ends_at_once():
    batch = jax.vmap(lambda seed: SHALLOW.init(jax.random.PRNGKey(seed), scale=0.5))(jnp.arange(2))
    flow = ltn.gradient_flow(SHALLOW, batch, REG.X, REG.y)
    assert list(flow.status_name) == ["converged"] * 2
    for i in range(2):
        init = jax.tree_util.tree_map(lambda leaf: leaf[i], batch)
        limit = ltn.predict(SHALLOW, REG.X, REG.y, "squared", init=init).beta
        assert float(jnp.linalg.norm(flow.beta[i] - limit) / jnp.linalg.norm(limit)) <= 1e-8  # measured 9.6e-11
        assert relative_residual(flow.beta[i], REG) <= 1e-9  # measured 3.9e-11 and 4.2e-11
    # A start certified with room to spare (xtol 100x tighter) ends there, on both paths.
    tight = ltn.gradient_flow(SHALLOW, batch, REG.X, REG.y, xtol=1e-12)
    end = jax.tree_util.tree_map(lambda leaf: leaf[0], tight.params)
    for solver in ("tsit5", "kvaerno5", "bdf"):
        again = ltn.gradient_flow(SHALLOW, end, REG.X, REG.y, solver=solver)
        assert (again.status_name, int(again.stats.steps)) == ("converged", 0), solver
        np.testing.assert_array_equal(again.beta, tight.beta[0])


@pytest.mark.parametrize("target", ["target_log_loss", "target_norm"])
def test_classification_target_met_at_the_start_ends_at_once(target):
    net = ltn.Diagonal(d=8, depth=2)
    params0 = net.init(jax.random.PRNGKey(4), scale=0.3)
    log_loss0 = float(log_risk(net.apply(params0, CLS.X), CLS.y, "exponential"))
    norm0 = float(jnp.sqrt(sum(jnp.sum(p**2) for p in params0)))
    met = {"target_log_loss": log_loss0 + 1.0, "target_norm": norm0 / 2}[target]
    flow = ltn.gradient_flow(net, params0, CLS.X, CLS.y, "exponential", **{target: met})
    assert (flow.status_name, int(flow.stats.steps)) == ("converged", 0)  # was: after the whole step budget
    assert float(flow.final.log_loss) == pytest.approx(log_loss0, rel=1e-12)
    assert float(flow.final.time) == 0.0 and int(np.sum(flow.trajectory.reached)) == 1
    descent = ltn.gradient_descent(net, params0, CLS.X, CLS.y, "exponential", learning_rate=0.1, **{target: met})
    assert (descent.status_name, int(descent.stats.steps)) == ("converged", 0)
    # `converged` is the target reached at the end point: short of it, the same solve says budget_exhausted.
    short = ltn.gradient_flow(net, params0, CLS.X, CLS.y, "exponential", t_max=0.1, target_log_loss=-1e4)
    assert short.status_name == "budget_exhausted" and float(short.final.log_loss) > -1e4
