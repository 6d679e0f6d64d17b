"""Regression predictions against answers known independently (docs/theory.md §7-8)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.optimize

import ltn
import ltn.data
from ltn.theory import odeco_regression_limit, predict
from ltn.theory._curves import build_curve

PROBLEM = ltn.data.sparse_regression(0, 3, 6, 2)  # tiny: for the ODE and primal cross-checks
X, Y = PROBLEM.X, PROBLEM.y
MEDIUM = ltn.data.sparse_regression(1, 10, 30, 3)


def rotated_odeco(d, m, depth, seed):
    """A real odeco network that is not diagonal: random S (m x d) and orthonormal U_l (k_l x m)."""
    rng = np.random.default_rng(seed)
    S = rng.standard_normal((m, d)) / np.sqrt(d)
    Us = [np.linalg.qr(rng.standard_normal((m + l, m)))[0] for l in range(depth)]
    return ltn.Odeco(S, Us)


def flow_limit(net, params0, X, y, t_end=1e4):
    """Gradient flow on 1/2 ||f(X) - y||^2 by scipy's LSODA at rtol 1e-12: the independent reference."""
    shapes = [p.shape for p in params0]
    sizes = [int(np.prod(s)) for s in shapes]

    def unflatten(theta):
        return tuple(jnp.reshape(piece, s) for piece, s in zip(jnp.split(theta, np.cumsum(sizes)[:-1]), shapes))

    loss = lambda theta: 0.5 * jnp.sum((net.apply(unflatten(theta), X) - y) ** 2)
    field, hessian = jax.jit(jax.grad(loss)), jax.jit(jax.hessian(loss))
    theta0 = np.concatenate([np.ravel(p) for p in params0])
    # LSODA switches to BDF once the flow settles (the approach to the limit is stiff): 0.7 s instead of the
    # 24 s DOP853 needs for the same t_end.
    solution = scipy.integrate.solve_ivp(lambda t, th: -np.asarray(field(th)), (0, t_end), theta0,
                                         method="LSODA", rtol=1e-12, atol=1e-14,
                                         jac=lambda t, th: -np.asarray(hessian(th)))
    assert solution.success, solution.message
    final = unflatten(solution.y[:, -1])
    assert float(loss(solution.y[:, -1])) < 1e-24  # converged to an interpolant
    return np.asarray(net.beta(final))


@pytest.mark.parametrize("depth, kind", [(2, "diagonal"), (3, "diagonal"), (2, "rotated"),
                                         pytest.param(3, "rotated", marks=pytest.mark.slow)])
def test_exact_limit_matches_ode_integration_for_gaussian_init(depth, kind):
    net = ltn.Diagonal(6, depth) if kind == "diagonal" else rotated_odeco(6, 6, depth, seed=depth)  # m = 6: shares compiled solves
    params0 = net.init(jax.random.PRNGKey(depth), scale=0.6)
    reference = flow_limit(net, params0, X, Y)
    prediction = predict(net, X, Y, loss="squared", init=params0)
    assert prediction.exact and prediction.name == "argmin Q (exact)"
    gap = np.linalg.norm(prediction.beta - reference) / np.linalg.norm(reference)
    assert gap < 1e-8  # measured 1e-11 .. 1e-10 (the ODE's own error)


def woodworth_q(z):
    return 2 - np.sqrt(4 + z**2) + z * np.arcsinh(z / 2)


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_depth2_matches_woodworth_closed_form(alpha):
    # Woodworth et al.: beta = w+^2 - w-^2 from w+(0) = w-(0) = alpha ends at argmin sum alpha^2 q(beta/alpha^2)
    # s.t. X beta = y. With v1 = (w+ + w-)/sqrt2, v2 = (w+ - w-)/sqrt2 (orthogonal, so the flow is the same):
    # beta = 2 v1 v2, i.e. our Diagonal(d, 2) on inputs 2X with the theorem init scale sqrt(2) alpha.
    d = X.shape[1]
    objective = lambda b: alpha**2 * np.sum(woodworth_q(b / alpha**2))
    gradient = lambda b: np.arcsinh(b / alpha**2 / 2)
    result = scipy.optimize.minimize(objective, np.linalg.lstsq(X, Y, rcond=None)[0], jac=gradient,
                                     method="SLSQP", constraints=[{"type": "eq", "fun": lambda b: X @ b - Y,
                                                                   "jac": lambda b: X}],
                                     options={"ftol": 1e-15, "maxiter": 1000})
    assert result.success, result.message
    net = ltn.Diagonal(d, 2)
    params0 = net.init(None, scale=np.sqrt(2) * alpha, kind="theorem")
    prediction = predict(net, 2 * X, Y, loss="squared", init=params0)
    gap = np.linalg.norm(2 * prediction.beta - result.x) / np.linalg.norm(result.x)
    assert gap < 1e-6  # measured ~1e-9 (SLSQP's accuracy)


ETA_BAR = np.random.default_rng(3).uniform(0.5, 2.0, MEDIUM.d)


@pytest.mark.parametrize("depth", [3, 4])
def test_small_scale_tends_to_weighted_l1(depth):
    X, y = MEDIUM.X, MEDIUM.y
    weights = 1 / ETA_BAR ** (depth - 2)
    lp = scipy.optimize.linprog(np.concatenate([weights, weights]), A_eq=np.hstack([X, -X]), b_eq=y,
                                bounds=(0, None), method="highs")
    assert lp.status == 0
    l1 = lp.x[: X.shape[1]] - lp.x[X.shape[1]:]
    net = ltn.Diagonal(X.shape[1], depth)
    gaps = []
    for alpha in (1e-2, 1e-3):
        prediction = predict(net, X, y, init=net.init(None, alpha, kind="theorem", eta_bar=ETA_BAR))
        gaps.append(np.linalg.norm(prediction.beta - l1) / np.linalg.norm(l1))
    assert gaps[1] < 1e-4  # measured 3.3e-6 (L=3), 5.6e-9 (L=4) at alpha = 1e-3
    assert gaps[1] < gaps[0] / 5  # and shrinking with alpha


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_large_scale_tends_to_weighted_l2(depth):
    X, y = MEDIUM.X, MEDIUM.y
    W = ETA_BAR ** (2 * depth - 2)
    l2 = W * (X.T @ np.linalg.solve((X * W) @ X.T, y))
    net = ltn.Diagonal(X.shape[1], depth)
    prediction = predict(net, X, y, init=net.init(None, 1e3, kind="theorem", eta_bar=ETA_BAR))
    assert np.linalg.norm(prediction.beta - l2) / np.linalg.norm(l2) < 1e-8  # measured < 1e-11


@pytest.mark.parametrize("net", [ltn.Diagonal(6, 1), ltn.FullyConnected(6, ())], ids=repr)
def test_depth1_is_min_norm_plus_init_complement(net):
    params0 = net.init(jax.random.PRNGKey(0), scale=0.5)
    prediction = predict(net, X, Y, init=params0)
    beta0 = np.ravel(params0[0])
    projector = X.T @ np.linalg.solve(X @ X.T, X)
    expected = X.T @ np.linalg.solve(X @ X.T, Y) + beta0 - projector @ beta0
    assert prediction.exact
    np.testing.assert_allclose(prediction.beta, expected, rtol=0, atol=1e-12)  # measured 4e-16


@pytest.mark.parametrize("depth", [3, pytest.param(4, marks=pytest.mark.slow)])
def test_quadrature_curve_agrees_with_closed_form(depth):
    net = ltn.Diagonal(MEDIUM.d, depth)
    params0 = net.init(None, 0.05, kind="theorem", eta_bar=ETA_BAR)
    closed = odeco_regression_limit(net, MEDIUM.X, MEDIUM.y, params0, curve="theorem")
    quadrature = odeco_regression_limit(net, MEDIUM.X, MEDIUM.y, params0, curve="quadrature")
    assert bool(closed.converged) and bool(quadrature.converged)
    assert np.linalg.norm(closed.beta - quadrature.beta) / np.linalg.norm(closed.beta) < 1e-10  # measured 2e-13


@pytest.mark.parametrize("depth", [3, pytest.param(4, marks=pytest.mark.slow), pytest.param(5, marks=pytest.mark.slow)])
def test_quadrature_curve_follows_its_ode(depth):
    rng = np.random.default_rng(depth)
    etas0 = rng.standard_normal((depth, 4)) * 0.7
    etas0[1, 0] = -etas0[0, 0]  # an exact tie |eta_1| = |eta_0| in one coordinate
    tau_end = 0.4 * rng.choice([-1, 1], size=4)
    values = jax.jit(lambda e, t: build_curve(e, "quadrature").values(t))(jnp.asarray(etas0), jnp.asarray(tau_end))
    field = lambda t, e: np.array([np.prod(np.delete(e, l)) for l in range(depth)])
    for j in range(4):
        path = scipy.integrate.solve_ivp(field, (0, tau_end[j]), etas0[:, j], method="DOP853", rtol=1e-13,
                                         atol=1e-15)
        rho = np.prod(path.y[:, -1])
        assert abs(values.rho[j] - rho) <= 1e-11 * abs(rho)  # measured <= 3e-14


def test_vmap_over_scales_and_seeds_equals_single_solves():
    net = ltn.Diagonal(MEDIUM.d, 3)
    X, y = jnp.asarray(MEDIUM.X), jnp.asarray(MEDIUM.y)
    scales = jnp.array([0.05, 0.3, 2.0])
    batched_init = jax.vmap(lambda s: net.init(None, s, kind="theorem", eta_bar=ETA_BAR))(scales)
    solve = lambda p: odeco_regression_limit(net, X, y, p, curve="theorem")
    batch = jax.vmap(solve)(batched_init)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    net2 = ltn.Diagonal(MEDIUM.d, 2)  # seeds: Gaussian inits, the depth-2 closed form (valid for any init)
    seeds = jax.vmap(lambda k: net2.init(k, 0.3))(keys)
    seed_batch = jax.vmap(lambda p: odeco_regression_limit(net2, X, y, p))(seeds)
    assert bool(jnp.all(batch.status == 0)) and bool(jnp.all(seed_batch.status == 0))
    for i, scale in enumerate(scales):
        single = solve(net.init(None, scale, kind="theorem", eta_bar=ETA_BAR))
        np.testing.assert_allclose(batch.beta[i], single.beta, rtol=0, atol=1e-12)
    for i, key in enumerate(keys):
        single = odeco_regression_limit(net2, X, y, net2.init(key, 0.3))
        np.testing.assert_allclose(seed_batch.beta[i], single.beta, rtol=0, atol=1e-12)


def test_predict_batch_equals_single_predictions_and_keeps_failures_per_run():
    """A batch mixing curve kinds (theorem-type and Gaussian inits at depth 3) gives each run the prediction it
    gets alone; a run whose lazy limit does not exist (zero init: J = 0) gets its error, the others are unharmed."""
    net = ltn.Diagonal(MEDIUM.d, 3)
    inits = [net.init(None, 0.3, kind="theorem", eta_bar=ETA_BAR), net.init(jax.random.PRNGKey(0), 0.3),
             net.init(None, 2.0, kind="theorem", eta_bar=ETA_BAR)]
    batch = ltn.theory.predict_batch(net, MEDIUM.X, MEDIUM.y, inits=tuple(jnp.stack(p) for p in zip(*inits)))
    for init, batched in zip(inits, batch):
        single = predict(net, MEDIUM.X, MEDIUM.y, init=init)
        assert batched.name == single.name == "argmin Q (exact)"
        np.testing.assert_allclose(batched.beta, single.beta, rtol=0, atol=1e-12)  # measured <= 3.3e-16
    conv = ltn.Convolutional(6, 3, (2, 3))
    inits = [conv.init(jax.random.PRNGKey(1), 0.5), tuple(jnp.zeros(s) for s in conv.layer_shapes)]
    lazy, broken = ltn.theory.predict_batch(conv, X, Y, inits=tuple(jnp.stack(p) for p in zip(*inits)))
    np.testing.assert_allclose(lazy.beta, predict(conv, X, Y, init=inits[0]).beta, rtol=0, atol=1e-12)  # 2.8e-16
    assert isinstance(broken, ValueError) and "condition number" in str(broken)
    with pytest.raises(ValueError, match="condition number"):
        predict(conv, X, Y, init=inits[1])


def test_lazy_prediction_matches_exact_limit_at_large_scale():
    net = ltn.Diagonal(6, 2)
    params0 = net.init(None, 30.0, kind="theorem")
    lazy = predict(net, X, Y, init=params0, regime="lazy")
    exact = predict(net, X, Y, init=params0)
    assert lazy.name == "lazy (alpha->inf)" and not lazy.exact
    assert np.linalg.norm(lazy.beta - exact.beta) / np.linalg.norm(exact.beta) < 1e-5  # measured 2e-7
    np.testing.assert_allclose(X @ lazy.beta, Y, atol=1e-12)


def test_fully_connected_and_other_networks():
    fc = ltn.FullyConnected(6, (4,))
    prediction = predict(fc, X, Y, init=fc.init(jax.random.PRNGKey(0), 0.1))
    assert prediction.name == "min l2 norm (alpha->0)" and not prediction.exact
    np.testing.assert_allclose(prediction.beta, np.linalg.pinv(X) @ Y, atol=1e-12)
    conv = ltn.Convolutional(6, 3, (2, 3))
    params0 = conv.init(jax.random.PRNGKey(1), 0.5)
    lazy = predict(conv, X, Y, init=params0)
    assert lazy.name == "lazy (alpha->inf)"
    np.testing.assert_allclose(X @ lazy.beta, Y, atol=1e-10)


def test_regression_time_at_d1000():
    import time

    problem = ltn.data.sparse_regression(0, 100, 1000, 5)
    net = ltn.Diagonal(1000, 2)
    params0 = net.init(None, 0.1, kind="theorem")
    odeco_regression_limit(net, problem.X, problem.y, params0).beta.block_until_ready()  # compile
    start = time.perf_counter()
    solution = odeco_regression_limit(net, problem.X, problem.y, params0)
    solution.beta.block_until_ready()
    assert bool(solution.converged)
    assert time.perf_counter() - start < 1.0  # measured ~0.05 s on 2 CPU cores


def test_errors_name_the_argument():
    net = ltn.Diagonal(6, 2)
    params0 = net.init(None, 0.1, kind="theorem")
    with pytest.raises(ValueError, match="loss"):
        predict(net, X, Y, loss="hinge", init=params0)
    with pytest.raises(ValueError, match="init"):
        predict(net, X, Y, loss="squared")
    with pytest.raises(ValueError, match="X must have shape"):
        predict(net, X[:, :5], Y, init=params0)
    with pytest.raises(ValueError, match="not"):
        odeco_regression_limit(ltn.FullyConnected(6, (3,)), X, Y, ltn.FullyConnected(6, (3,)).init(
            jax.random.PRNGKey(0)))
    conv = ltn.Convolutional(6, 2)
    with pytest.raises(ValueError, match="complex"):
        odeco_regression_limit(conv, X, Y, conv.init(jax.random.PRNGKey(0)))


def test_predict_refuses_problems_without_interpolants():
    """With n > d (or X of rank < n) the regression limits, which are interpolants, do not exist: the dual solve
    used to return "argmin Q (exact)" 22% away from where the flow ends. Now a named error, before any solve."""
    rng = np.random.default_rng(0)
    net = ltn.Diagonal(4, 2)
    params0 = net.init(None, 0.1, kind="theorem")
    tall = rng.standard_normal((6, 4))
    with pytest.raises(ValueError, match=r"full row rank.*n = 6, d = 4, rank 4"):
        predict(net, tall, rng.standard_normal(6), init=params0)
    repeated = np.vstack([tall[:2], tall[:1]])  # n = 3 < d = 4, but two equal rows: rank 2
    with pytest.raises(ValueError, match="rank 2"):
        predict(net, repeated, rng.standard_normal(3), init=params0)
    # Positive control: the same network on an underdetermined problem predicts.
    assert predict(net, tall[:3], rng.standard_normal(3), init=params0).exact
