"""The variable-order BDF method: its history rescaling against the polynomial it stands for, its steps and end
point against scipy's `BDF` (the same algorithm) with the exact Jacobian, and a batch against single runs; with a
dense Jacobian and matrix-free (GMRES). Regression against Radau: tests/flow/test_implicit.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
from jax.flatten_util import ravel_pytree

import ltn
from ltn.flow._bdf import MAX_ORDER, _rescaled
from ltn.flow._objective import Objective

from .test_implicit import CLS, CLS_NET


def backward_differences(coefficients, t, h, order):
    """Rows `nabla^k p(t)`, k = 0..MAX_ORDER + 2, of the polynomial `p` (numpy `polyval` coefficients, one column
    per component) on the grid `t, t - h, ...`; rows past `order` zero, as the method keeps them."""
    values = np.stack([np.polyval(coefficients, t - k * h) for k in range(MAX_ORDER + 1)])
    rows = [values[0]]
    for _ in range(order):
        values = values[:-1] - values[1:]
        rows.append(values[0])
    return np.concatenate([np.stack(rows), np.zeros((MAX_ORDER + 3 - len(rows), values.shape[1]))])


@pytest.mark.parametrize("order", range(1, MAX_ORDER + 1))
def test_rescaled_differences_are_those_of_the_same_polynomial_on_the_new_grid(order):
    """A polynomial of degree `order` has exact differences up to `order` on any grid: rescaling its differences
    for the step `factor h` must give its differences on that grid (rows past `order` untouched)."""
    coefficients = np.random.default_rng(order).normal(size=(order + 1, 3))
    h = 0.37
    D = backward_differences(coefficients, 2.0, h, order)
    for factor in (0.2, 0.5, 1.7, 10.0):
        expected = backward_differences(coefficients, 2.0, factor * h, order)
        rescaled = np.asarray(_rescaled(jnp.asarray(D), jnp.asarray(order), factor))
        np.testing.assert_allclose(rescaled, expected, rtol=1e-9, atol=1e-9)  # largest difference measured 3.9e-9
        # negative control: the differences of the old grid are not those of the new one
        assert np.max(np.abs(D[1 : order + 1] - expected[1 : order + 1])) > 1e-3


@pytest.mark.parametrize("key, target", [(0, -1e4), (4, -1e6)])
def test_bdf_takes_the_steps_of_scipys_bdf_and_ends_where_it_does(key, target, linear_solver):
    """ltn's BDF and scipy's `BDF` (exact Jacobian, the same tolerances, stopped by its own event at the same
    level) are one algorithm: the same number of steps within a few (matrix-free, a few percent fewer: its `J` is
    taken at every step's predictor, not kept), the same path time and end direction."""
    params0 = CLS_NET.init(jax.random.PRNGKey(key), scale=0.5)
    result = ltn.gradient_flow(CLS_NET, params0, CLS.X, CLS.y, "exponential", solver="bdf", target_log_loss=target)
    assert result.status_name == "converged" and result.stats.solver_name == "bdf"
    assert float(result.final.log_loss) == pytest.approx(target, rel=1e-12)

    objective = Objective(CLS_NET, "exponential")
    flat0, unravel = ravel_pytree(params0)
    field = jax.jit(lambda v: ravel_pytree(objective.velocity(unravel(v), CLS.X, CLS.y, True))[0])
    jacobian = jax.jit(jax.jacfwd(field))
    level = jax.jit(lambda v: objective.log_loss(unravel(v), CLS.X, CLS.y) - target)

    def reached(t, v):
        return float(level(jnp.asarray(v)))

    reached.terminal = True
    sol = scipy.integrate.solve_ivp(lambda t, v: np.asarray(field(jnp.asarray(v))), (0, 1e9), np.asarray(flat0),
                                    method="BDF", jac=lambda t, v: np.asarray(jacobian(jnp.asarray(v))),
                                    rtol=1e-11, atol=1e-13, events=reached)
    assert sol.status == 1
    # measured 677 against 676 and 1033 kept (1035 in all) against 1030; matrix-free 646 and 979; an order or
    # step-size rule that differed from scipy's would part the counts by far more
    slack = 0.01 if linear_solver == "dense" else 0.1
    assert abs(int(result.stats.accepted_steps) - (len(sol.t) - 1)) <= slack * len(sol.t)
    assert float(result.final.time) == pytest.approx(sol.t[-1], rel=1e-9)  # measured 2e-11 at most
    unit = lambda b: b / jnp.linalg.norm(b)  # noqa: E731
    reference = CLS_NET.beta(unravel(jnp.asarray(sol.y[:, -1])))
    # measured 5e-14 and 3e-12; matrix-free 1e-12 and 1.6e-11
    assert float(jnp.linalg.norm(unit(result.beta) - unit(reference))) <= 1e-10


def test_bdf_batch_matches_single_runs(linear_solver, batch_mode):
    """Three starts in one program, in turn or vmapped (where a Jacobian or a factorisation is formed for the whole
    batch when any run needs it): each run takes its own steps and ends where it ends alone (in a program of its
    own)."""
    keys = (0, 4, 7)
    inits = [CLS_NET.init(jax.random.PRNGKey(k), scale=0.5) for k in keys]
    batch = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *inits)
    both = ltn.gradient_flow(CLS_NET, batch, CLS.X, CLS.y, "exponential", solver="bdf", target_log_loss=-1e4)
    for i, params0 in enumerate(inits):
        alone = ltn.gradient_flow(CLS_NET, params0, CLS.X, CLS.y, "exponential", solver="bdf", target_log_loss=-1e4)
        assert both.status_name[i] == alone.status_name == "converged"
        # batched matrix products round differently, and an iteration's test can tip: measured 676 against 677
        # alone, and equal counts on the other two; matrix-free equal counts
        assert abs(int(both.stats.steps[i]) - int(alone.stats.steps)) <= 0.01 * int(alone.stats.steps)
        difference = jnp.linalg.norm(both.beta[i] - alone.beta) / jnp.linalg.norm(alone.beta)
        assert float(difference) <= 1e-10  # vmapped: measured 5.7e-14 at most (matrix-free 1.2e-15)
        if batch_mode == "in_turn":  # the run's own program, one after the other: the same arithmetic
            assert int(both.stats.steps[i]) == int(alone.stats.steps) and float(difference) == 0.0
        # the same records (grid times and levels of -log L, saved by one loop that a batch runs in lockstep):
        # measured 1.8e-12 relative in time and 8.6e-12 in log L at most
        reached = np.asarray(alone.trajectory.reached)
        assert np.array_equal(np.asarray(both.trajectory.reached[i]), reached) and reached.sum() >= 100
        for name in ("time", "log_loss"):
            batched = np.asarray(getattr(both.trajectory.checkpoints, name)[i])[reached]
            single = np.asarray(getattr(alone.trajectory.checkpoints, name))[reached]
            np.testing.assert_allclose(batched, single, rtol=1e-10)
