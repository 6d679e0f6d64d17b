"""Gradient flow and descent: conservation laws, an independent ODE reference, GD -> flow as the step shrinks,
the reparametrised classification path, budgets and batching.

Compiles dominate the cost here (~10 s each), so tests share a few (network, loss, static options) triples.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate

import ltn
from ltn.data import separable_classification, sparse_regression
from ltn.flow import _gradient_flow
from ltn.flow._batching import BATCH_AXIS, any_run, over_runs

REG = sparse_regression(seed=0, n=4, d=8, sparsity=2)
DIAG2 = ltn.Diagonal(d=8, depth=2)
CLS = separable_classification(seed=0, n=6, d=8, margin=0.2)


def orthonormal(rng, k, m):
    return np.linalg.qr(rng.standard_normal((k, m)))[0]


def conserved_odeco(net, params):
    """eta_{l,j}^2 - eta_{l+1,j}^2 for every layer pair, with eta_l = U_l^T v_l (docs/theory.md §4)."""
    _, Us = net.odeco
    etas = [U.T @ np.asarray(v).reshape(-1) for U, v in zip(Us, params)]
    return np.stack([etas[l] ** 2 - etas[l + 1] ** 2 for l in range(net.depth - 1)])


def conserved_fully_connected(params):
    """W_l^T W_l - W_{l+1} W_{l+1}^T for consecutive layers."""
    Ws = [np.asarray(W) for W in params]
    return [Ws[l].T @ Ws[l] - Ws[l + 1] @ Ws[l + 1].T for l in range(len(Ws) - 1)]


def relative_drift(before, after, params):
    scale = sum(float(np.sum(np.asarray(p) ** 2)) for p in params)
    return max(float(np.max(np.abs(a - b))) for a, b in zip(before, after)) / scale


@pytest.mark.parametrize("net_factory", [
    lambda: ltn.Diagonal(d=8, depth=3),
    lambda: ltn.Odeco(np.random.default_rng(1).standard_normal((6, 8)),
                      [orthonormal(np.random.default_rng(l), k, 6) for l, k in enumerate((6, 7, 9))]),
], ids=["diagonal-3", "odeco-3"])
def test_odeco_conserved_quantities(net_factory):
    net = net_factory()
    params0 = net.init(jax.random.PRNGKey(0), scale=0.7)
    result = ltn.gradient_flow(net, params0, REG.X, REG.y, "squared")
    assert result.status_name == "converged"
    drift = relative_drift(conserved_odeco(net, params0), conserved_odeco(net, result.params), result.params)
    assert drift <= 1e-8  # measured ~1e-12


def test_fully_connected_conserved_quantities():
    net = ltn.FullyConnected(d=8, widths=(3, 2))
    params0 = net.init(jax.random.PRNGKey(1), scale=0.5)
    result = ltn.gradient_flow(net, params0, REG.X, REG.y, "squared")
    assert result.status_name == "converged"
    drift = relative_drift(conserved_fully_connected(params0), conserved_fully_connected(result.params),
                           result.params)
    assert drift <= 1e-8  # measured ~1e-12


def lsoda_reference(net, params0, X, y, times):
    """The same flow integrated by scipy's LSODA at tight tolerances, on flat parameters."""
    shapes = [p.shape for p in params0]
    sizes = [int(np.prod(s)) for s in shapes]

    def unflatten(theta):
        return tuple(jnp.asarray(c).reshape(s) for c, s in zip(np.split(theta, np.cumsum(sizes)[:-1]), shapes))

    grad = jax.jit(jax.grad(lambda p: 0.5 * jnp.sum((net.apply(p, X) - y) ** 2)))

    def rhs(t, theta):
        return -np.concatenate([np.asarray(g).reshape(-1) for g in grad(unflatten(theta))])

    theta0 = np.concatenate([np.asarray(p).reshape(-1) for p in params0])
    sol = scipy.integrate.solve_ivp(rhs, (0, times[-1]), theta0, method="LSODA", t_eval=times,
                                    rtol=1e-13, atol=1e-15)
    assert sol.success
    return [net.beta(unflatten(theta)) for theta in sol.y.T]


def test_regression_flow_matches_lsoda_reference():
    params0 = DIAG2.init(jax.random.PRNGKey(2), scale=0.3, kind="theorem")
    horizon = 3.0
    # xtol tiny: no certificate can stop the run early, so the end point is the flow at exactly t = horizon.
    result = ltn.gradient_flow(DIAG2, params0, REG.X, REG.y, "squared", t_max=horizon, xtol=1e-300)
    assert result.status_name == "budget_exhausted"
    assert float(result.final.time) == pytest.approx(horizon)
    (reference,) = lsoda_reference(DIAG2, params0, REG.X, REG.y, [horizon])
    error = float(jnp.linalg.norm(result.beta - reference) / jnp.linalg.norm(reference))
    assert error <= 1e-8  # measured 2e-11


def test_regression_limit_matches_long_lsoda_run():
    params0 = DIAG2.init(jax.random.PRNGKey(2), scale=0.3, kind="theorem")
    result = ltn.gradient_flow(DIAG2, params0, REG.X, REG.y, "squared")
    assert result.status_name == "converged"
    (reference,) = lsoda_reference(DIAG2, params0, REG.X, REG.y, [float(result.final.time) * 3])
    error = float(jnp.linalg.norm(result.beta - reference) / jnp.linalg.norm(reference))
    assert error <= 1e-8  # measured ~1e-10
    # the recorded path: times increase, loss decreases to the end
    checkpoints = result.trajectory.checkpoints
    reached = result.trajectory.reached
    assert np.all(np.diff(np.asarray(checkpoints.time)[reached]) > 0)
    assert float(checkpoints.log_loss[reached][-1]) < float(checkpoints.log_loss[0]) - 20


def test_gradient_descent_approaches_flow_linearly_in_step():
    params0 = DIAG2.init(jax.random.PRNGKey(3), scale=0.5, kind="theorem")
    flow = ltn.gradient_flow(DIAG2, params0, REG.X, REG.y, "squared")
    curvature = float(np.linalg.norm(REG.X, 2) ** 2)
    gaps = []
    for step in (0.4 / curvature, 0.04 / curvature):
        gd = ltn.gradient_descent(DIAG2, params0, REG.X, REG.y, "squared", learning_rate=step, max_steps=50_000)
        assert gd.status_name == "converged"
        gaps.append(float(jnp.linalg.norm(gd.beta - flow.beta)))
    ratio = gaps[0] / gaps[1]
    assert 8 < ratio < 12  # linear in the step: measured 10.0 (gaps ~1e-2 and ~1e-3)


def test_reparametrised_classification_path_is_the_plain_time_path():
    net = ltn.Diagonal(d=8, depth=2)
    params0 = net.init(jax.random.PRNGKey(4), scale=0.3)
    target = -4.0  # a level plain time reaches in a modest time
    plain = ltn.gradient_flow(net, params0, CLS.X, CLS.y, "exponential", target_log_loss=target,
                              reparametrize=False)
    rescaled = ltn.gradient_flow(net, params0, CLS.X, CLS.y, "exponential", target_log_loss=target)
    assert plain.status_name == rescaled.status_name == "converged"
    assert float(rescaled.final.log_loss) == pytest.approx(target, abs=1e-8)
    for a, b in zip(plain.params, rescaled.params):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)  # measured ~1e-10
    # Original time is reconstructed from the rescaled path by quadrature between checkpoints: the error
    # shrinks like (spacing)^3-4; measured 6e-5 in log t with 128 checkpoints, 7e-7 with 512.
    assert float(rescaled.final_log_time) == pytest.approx(float(np.log(plain.final.time)), abs=5e-4)


def test_classification_reaches_very_low_log_loss():
    net = ltn.Diagonal(d=8, depth=2)
    params0 = net.init(jax.random.PRNGKey(4), scale=0.3)
    result = ltn.gradient_flow(net, params0, CLS.X, CLS.y, "exponential", target_log_loss=-1e4)
    assert result.status_name == "converged"
    assert float(result.final.log_loss) == pytest.approx(-1e4, rel=1e-9)
    reached = result.trajectory.reached
    log_loss = np.asarray(result.trajectory.checkpoints.log_loss)[reached]
    assert np.all(np.diff(log_loss) < 0)
    margins = np.asarray(result.trajectory.checkpoints.margin)[reached]
    assert margins[-1] > 0 and margins[-1] >= margins[len(margins) // 2] - 1e-12  # margin improves


@pytest.mark.parametrize("budget", [{"max_steps": 5}, {"t_max": 0.5}])
def test_budget_exhausted_returns_partial_result(budget):
    params0 = DIAG2.init(jax.random.PRNGKey(5), scale=0.1, kind="theorem")
    result = ltn.gradient_flow(DIAG2, params0, REG.X, REG.y, "squared", solver="tsit5", **budget)
    assert result.status_name == "budget_exhausted"
    if "max_steps" in budget:
        assert int(result.stats.steps) == 5
    else:
        assert float(result.final.time) == pytest.approx(0.5)
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in result.params)
    assert float(result.final.log_loss) < float(result.trajectory.checkpoints.log_loss[0])


def test_stiff_regression_stops_on_remaining_distance():
    """A large Gaussian init at depth 3 is stiff near its limit: Tsit5 sits at its stability bound and its step
    noise keeps ||grad L|| large. The Gauss-Newton distance test (xtol) is immune to that noise and certifies the
    limit. (Runs that the bound holds back for longer: `solver="auto"` in test_implicit.py.)"""
    problem = sparse_regression(seed=0, n=6, d=12, sparsity=2)
    net = ltn.Diagonal(d=12, depth=3)
    params0 = net.init(jax.random.PRNGKey(0), scale=10.0)
    predicted = ltn.predict(net, problem.X, problem.y, "squared", init=params0).beta
    settled = ltn.gradient_flow(net, params0, problem.X, problem.y, solver="tsit5", max_steps=10_000)
    assert settled.status_name == "converged" and int(settled.stats.steps) < 2000  # measured 1057 steps
    assert float(jnp.linalg.norm(settled.beta - predicted) / jnp.linalg.norm(predicted)) <= 1e-8  # measured 6.6e-11


@pytest.mark.parametrize("solver", ["auto", "bdf"])
def test_nonfinite_is_a_status(solver):
    """An overflowing run ends `nonfinite`, not after its step budget: on the explicit lockstep path (`auto`'s
    start; measured 0 steps) and on the per-run stepping loop, where the frozen field lets BDF run out its time
    budget in a few growing steps (measured 37)."""
    net = ltn.Diagonal(d=8, depth=3)
    params0 = net.init(jax.random.PRNGKey(6), scale=1e110)  # outputs overflow float64
    result = ltn.gradient_flow(net, params0, REG.X, REG.y, "squared", solver=solver)
    assert result.status_name == "nonfinite"
    assert int(result.stats.steps) < 200  # stopped at once, not after max_steps rejected steps


def test_batch_runs_under_one_compile_and_matches_single_runs():
    keys = jax.random.split(jax.random.PRNGKey(7), 3)
    batch = jax.vmap(lambda k: DIAG2.init(k, scale=0.4))(keys)
    before = _gradient_flow.TRACE_COUNT["flow"]
    batched = ltn.gradient_flow(DIAG2, batch, REG.X, REG.y, "squared", solver="tsit5")  # the lockstep batch
    # tolerances and budgets (steps, time) are run-time values of the options: new ones reuse the program
    batched_again = ltn.gradient_flow(DIAG2, jax.tree_util.tree_map(lambda p: 2 * p, batch), REG.X, REG.y,
                                      rtol=1e-10, xtol=1e-9, t_max=1e6, max_steps=54321, solver="tsit5")
    assert _gradient_flow.TRACE_COUNT["flow"] - before <= 1  # one trace for both calls (0 if cached earlier)
    assert list(batched.status_name) == ["converged"] * 3
    assert batched_again.beta.shape == (3, 8)
    for i, key in enumerate(keys):
        single = ltn.gradient_flow(DIAG2, DIAG2.init(key, scale=0.4), REG.X, REG.y, "squared", solver="tsit5")
        # Every run keeps its own step sizes in a batch; batched matmuls round differently, which can flip an
        # accept/reject decision (measured: step counts equal within 2, beta within 1.1e-10 relative).
        assert abs(int(batched.stats.steps[i]) - int(single.stats.steps)) <= 5
        np.testing.assert_allclose(batched.beta[i], single.beta, rtol=1e-8, atol=1e-12)


def test_a_batch_of_one_runs_unbatched_and_a_larger_batch_vmapped():
    """`over_runs` calls the per-run function on the one run itself (no batch axis name, so a batch-wide predicate
    is the run's own) and gives its results the batch axis back; a larger batch is vmapped under BATCH_AXIS, or
    taken in turn."""
    seen = []

    def per_run(x, shared, axis_name):
        seen.append(axis_name)
        return {"scaled": x * shared, "any_positive": any_run(x > 0, axis_name)}

    solve = over_runs(per_run, (0, None))
    one, two = solve(jnp.array([-2.0]), 3.0), solve(jnp.array([-2.0, 1.0]), 3.0)
    assert seen == [None, BATCH_AXIS]
    assert one["scaled"].shape == (1,) and float(one["scaled"][0]) == float(two["scaled"][0]) == -6.0
    assert not bool(one["any_positive"][0])  # the run alone: no other run's flag counts
    assert list(np.asarray(two["any_positive"])) == [True, True]
    # in turn: each run of the batch on its own, one after the other, no batch-wide predicate
    in_turn = over_runs(per_run, (0, None), in_turn=True)(jnp.array([-2.0, 1.0]), 3.0)
    assert seen[2:] == [None]  # the one run's function, traced once
    assert list(np.asarray(in_turn["scaled"])) == [-6.0, 3.0]
    assert list(np.asarray(in_turn["any_positive"])) == [False, True]


def test_descent_batch_and_loss_scaled_step(batch_mode):
    net = ltn.Diagonal(d=8, depth=2)
    keys = jax.random.split(jax.random.PRNGKey(8), 2)
    batch = jax.vmap(lambda k: net.init(k, scale=0.3))(keys)
    options = dict(learning_rate=0.1, step_scaling="loss", target_log_loss=-30.0, max_steps=20_000)
    result = ltn.gradient_descent(net, batch, CLS.X, CLS.y, "exponential", **options)
    assert list(result.status_name) == ["converged"] * 2
    assert np.all(np.asarray(result.final.log_loss) <= -30.0)
    assert np.all(np.asarray(result.stats.grad_evals) == np.asarray(result.stats.steps) + 2)
    for i, key in enumerate(keys):
        alone = ltn.gradient_descent(net, net.init(key, scale=0.3), CLS.X, CLS.y, "exponential", **options)
        assert int(result.stats.steps[i]) == int(alone.stats.steps)
        if batch_mode == "in_turn":  # the run's own program, one after the other: the same arithmetic
            np.testing.assert_array_equal(result.beta[i], alone.beta)
        else:  # batched products round differently: measured 9.7e-15 at most
            np.testing.assert_allclose(result.beta[i], alone.beta, rtol=1e-10)


BAD_CALLS = [
    (lambda: ltn.gradient_flow(DIAG2, DIAG2.init(jax.random.PRNGKey(0)), REG.X, REG.y, "hinge"), "unknown loss"),
    (lambda: ltn.gradient_flow(DIAG2, DIAG2.init(jax.random.PRNGKey(0)), REG.X, REG.y, "logistic"), r"\{-1, \+1\}"),
    (lambda: ltn.gradient_flow(DIAG2, DIAG2.init(jax.random.PRNGKey(0)), REG.X[:, :5], REG.y), r"X must have shape"),
    (lambda: ltn.gradient_flow(DIAG2, DIAG2.init(jax.random.PRNGKey(0)), REG.X, REG.y[:3]), r"y must have shape"),
    (lambda: ltn.gradient_flow(DIAG2, (jnp.ones(8), jnp.ones(7)), REG.X, REG.y), "params0 must have layer shapes"),
    (lambda: ltn.gradient_flow(DIAG2, DIAG2.init(jax.random.PRNGKey(0)), REG.X, REG.y, solver="euler"), "solver"),
    (lambda: ltn.gradient_flow(DIAG2, DIAG2.init(jax.random.PRNGKey(0)), REG.X, REG.y, rtol=0), "rtol"),
    (lambda: ltn.gradient_flow(DIAG2, DIAG2.init(jax.random.PRNGKey(0)), REG.X, REG.y, max_steps=0), "max_steps"),
    (lambda: ltn.gradient_flow(DIAG2, DIAG2.init(jax.random.PRNGKey(0)), REG.X, REG.y, residual_tol=0), "residual_tol"),
    (lambda: ltn.gradient_descent(DIAG2, DIAG2.init(jax.random.PRNGKey(0)), REG.X, REG.y, learning_rate=0.1,
                                  xtol=-1.0), "xtol"),
    (lambda: ltn.gradient_descent(DIAG2, DIAG2.init(jax.random.PRNGKey(0)), REG.X, REG.y), "learning_rate"),
    (lambda: ltn.gradient_flow(DIAG2, DIAG2.init(jax.random.PRNGKey(0)), REG.X, REG.y, learning_rate=0.1),
     "gradient_descent"),
    (lambda: ltn.gradient_descent(DIAG2, DIAG2.init(jax.random.PRNGKey(0)), REG.X, REG.y, learning_rate=0.1,
                                  rtol=1e-6), "gradient_flow"),
    (lambda: ltn.gradient_flow(DIAG2, DIAG2.init(jax.random.PRNGKey(0)), REG.X, REG.y, t_max=-1.0), "t_max"),
    (lambda: ltn.gradient_descent(DIAG2, DIAG2.init(jax.random.PRNGKey(0)), REG.X, REG.y, learning_rate=0.1,
                                  step_scaling="loss"), "classification"),
]


@pytest.mark.parametrize("call, match", BAD_CALLS)
def test_bad_inputs_raise(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
