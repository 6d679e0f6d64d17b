"""The implicit Newton-Krylov path against scipy's stiff solvers with the exact Jacobian, batch against single
runs, and the stiffness switch of `solver="auto"`: it switches on a stiff run, from where the run is, and not on a
slow run that is not stiff (a saddle plateau), which stays honest (never `converged`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
from jax.flatten_util import ravel_pytree

import ltn
from ltn.data import separable_classification, sparse_regression
from ltn.flow._gradient_flow import _leg, _origin
from ltn.flow._objective import Objective
from ltn.flow._options import FlowOptions
from ltn.flow._stiffness import EXPLICIT_PROBE_STEPS, SPARING_STEPS, STIFF_PRODUCT, step_times_curvature

REG = sparse_regression(seed=0, n=6, d=12, sparsity=2)
NET = ltn.Diagonal(d=12, depth=3)
CLS = separable_classification(seed=0, n=6, d=8, margin=0.2)
CLS_NET = ltn.Diagonal(d=8, depth=2)


def stiff_init():
    """7 of 12 coordinates at 3e-2 of the others: cond(J J^T) > 1e4 at the start, rates over four decades."""
    return tuple(layer * jnp.where(jnp.arange(12) < 5, 1.0, 3e-2) for layer in NET.init(jax.random.PRNGKey(2)))


def scipy_reference(net, loss, params0, X, y, t_end, method, events=None):
    """The same vector field (the path `ltn` integrates) by scipy's `method` with the exact Jacobian
    (`jax.jacfwd`), at tight tolerances, on flat parameters."""
    flat0, unravel = ravel_pytree(params0)
    objective = Objective(net, loss)
    field = jax.jit(lambda v: ravel_pytree(objective.velocity(unravel(v), X, y, True))[0])
    jacobian = jax.jit(jax.jacfwd(field))
    sol = scipy.integrate.solve_ivp(lambda t, v: np.asarray(field(jnp.asarray(v))), (0, t_end), np.asarray(flat0),
                                    method=method, jac=lambda t, v: np.asarray(jacobian(jnp.asarray(v))),
                                    rtol=1e-12, atol=1e-14, events=events)
    assert sol.success
    return unravel(jnp.asarray(sol.y[:, -1])), sol


@pytest.mark.parametrize("solver", ["kvaerno5", "bdf"])
def test_implicit_regression_matches_radau_on_a_stiff_run(solver, linear_solver):
    """A stiff run cut at a time budget (BDF: its proposed step clipped to it, its history rescaled)."""
    params0 = stiff_init()
    horizon = 50.0
    # xtol tiny: no certificate stops the run early; the end point is the flow at exactly t = horizon.
    result = ltn.gradient_flow(NET, params0, REG.X, REG.y, solver=solver, t_max=horizon, xtol=1e-300)
    assert result.status_name == "budget_exhausted" and float(result.final.time) == pytest.approx(horizon)
    reference, _ = scipy_reference(NET, "squared", params0, REG.X, REG.y, horizon, "Radau")
    error = float(jnp.linalg.norm(result.beta - NET.beta(reference)) / jnp.linalg.norm(NET.beta(reference)))
    # measured: kvaerno5 1.2e-15 dense, 1.0e-15 GMRES (724 steps each); bdf 9.1e-15 (1319 steps), 9.2e-15 (1271)
    assert error <= 1e-8
    # a dense Jacobian's work is counted (field evaluations and Jacobian columns); GMRES's products are not
    evaluations = int(result.stats.grad_evals)
    assert evaluations > int(result.stats.steps) if linear_solver == "dense" else evaluations == -1


def test_implicit_classification_matches_lsoda_to_a_log_loss_target(linear_solver):
    """Kvaerno5 on the rescaled path to log L = -50, against LSODA (exact Jacobian) stopped by its own event at
    the same level: same end point, same path time s."""
    params0 = CLS_NET.init(jax.random.PRNGKey(4), scale=0.3)
    target = -50.0
    result = ltn.gradient_flow(CLS_NET, params0, CLS.X, CLS.y, "exponential", solver="kvaerno5",
                               target_log_loss=target)
    assert result.status_name == "converged" and float(result.final.log_loss) == pytest.approx(target, abs=1e-8)
    objective = Objective(CLS_NET, "exponential")
    _, unravel = ravel_pytree(params0)
    level = jax.jit(lambda v: objective.log_loss(unravel(v), CLS.X, CLS.y) - target)

    def reached(t, v):
        return float(level(jnp.asarray(v)))

    reached.terminal = True
    reference, sol = scipy_reference(CLS_NET, "exponential", params0, CLS.X, CLS.y, 1e6, "LSODA", events=reached)
    assert sol.status == 1  # stopped by the event
    for a, b in zip(result.params, reference):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)  # measured 6.6e-10 at most, |theta| ~ 1
    assert float(result.final.time) == pytest.approx(float(sol.t_events[0][0]), rel=1e-7)  # measured 4e-13


def test_implicit_batch_matches_single_runs(batch_mode):
    batch = tuple(jnp.stack(pair) for pair in zip(stiff_init(), NET.init(jax.random.PRNGKey(1), scale=1.0)))
    both = ltn.gradient_flow(NET, batch, REG.X, REG.y, solver="kvaerno5")
    assert list(both.status_name) == ["converged"] * 2
    steps = [int(s) for s in both.stats.steps]
    assert abs(steps[0] - steps[1]) > 0.2 * max(steps)  # each run its own steps, not the batch's (835, 349)
    for i in range(2):
        alone = ltn.gradient_flow(NET, jax.tree_util.tree_map(lambda leaf: leaf[i], batch), REG.X, REG.y,
                                  solver="kvaerno5")
        # The batch's matrix products round differently, and a chord iteration or a step's acceptance can tip:
        # measured 835 batched against 833 alone, and 349 both ways
        assert abs(steps[i] - int(alone.stats.steps)) <= 0.01 * steps[i]
        # batched matmuls round differently: measured 7e-12 relative
        difference = float(jnp.linalg.norm(both.beta[i] - alone.beta) / jnp.linalg.norm(alone.beta))
        assert difference <= 1e-10
        if batch_mode == "in_turn":  # the run's own program, one after the other: the same arithmetic
            assert steps[i] == int(alone.stats.steps) and difference == 0.0


def probe_product(net, params0, X, y, loss="squared", max_steps=EXPLICIT_PROBE_STEPS, **options):
    """`h |lambda_max|` where `auto`'s explicit probe ends (h: the step its controller holds there)."""
    opts = FlowOptions(solver="tsit5", max_steps=max_steps, **options)
    batch = jax.tree_util.tree_map(lambda leaf: leaf[None], params0)
    leg = _leg(net, loss, opts, *_origin(net, loss, opts, batch, X, y), X, y)
    assert bool(leg.out_of_steps[0])  # still going after the probe
    product = step_times_curvature(net, loss, opts.reparametrize)(leg.params, leg.recent_step, X, y)
    return float(product[0])


def test_auto_switches_where_stiffness_holds_the_explicit_step(linear_solver, monkeypatch):
    """Theorem init at scale 30, depth 3: Tsit5 sits at its stability bound short of the certificate for 20000
    steps and more. `auto` probes with Tsit5 (a brief program on a problem this small), measures h |lambda_max| at
    the end of the probe and continues the same run implicitly from there (compiled for speed): it reaches the
    exact limit."""
    from ltn.flow import _gradient_flow

    legs = []
    compiled_flow = _gradient_flow._compiled_flow

    def recording(*static):  # (network, loss, method, checkpoints, reparametrize, brief)
        legs.append((static[2], static[-1]))
        return compiled_flow(*static)

    recording.cache_clear = compiled_flow.cache_clear  # for the fixture's teardown
    monkeypatch.setattr(_gradient_flow, "_compiled_flow", recording)
    held = NET.init(jax.random.PRNGKey(0), scale=30.0, kind="theorem")
    assert probe_product(NET, held, REG.X, REG.y) >= STIFF_PRODUCT  # measured 3.7
    limit = ltn.predict(NET, REG.X, REG.y, "squared", init=held).beta
    legs.clear()
    _gradient_flow._compiled_ends.cache_clear()
    ends_traced = _gradient_flow.TRACE_COUNT["ends"]
    result = ltn.gradient_flow(NET, held, REG.X, REG.y)
    assert legs == [("tsit5", True), ("kvaerno5", False)]  # (method, brief) of each leg
    # one program of summaries serves the start and both legs' ends, whatever their method
    assert _gradient_flow.TRACE_COUNT["ends"] - ends_traced == 1
    assert result.status_name == "converged" and result.stats.solver_name == "kvaerno5"
    # measured 2001 steps: the first implicit step leaves the explicit step noise behind and is certified
    assert EXPLICIT_PROBE_STEPS < int(result.stats.steps) < 2 * EXPLICIT_PROBE_STEPS
    assert float(jnp.linalg.norm(result.beta - limit) / jnp.linalg.norm(limit)) <= 1e-8  # measured 1.1e-14
    # the chord legs count their work (field evaluations and Jacobian columns); Newton-GMRES legs cannot
    explicit = 6 * EXPLICIT_PROBE_STEPS + 2
    if linear_solver == "dense":
        assert int(result.stats.grad_evals) > explicit + 36  # at least one Jacobian (36 columns) and the stages
    else:
        assert int(result.stats.grad_evals) == -1
    # one path: the probe's checkpoints, then the implicit leg's, times increasing
    times = np.asarray(result.trajectory.checkpoints.time)[result.trajectory.reached]
    assert np.all(np.diff(times) > 0) and times[-1] <= float(result.final.time)


def test_a_brief_first_round_is_kept_to_small_work():
    """`auto` compiles its first round as a brief program (fast to compile, slow to run) for small problems only;
    not for a batch whose round would run long: many regression runs in lockstep, or vmapped classification runs
    (whose O0 code is slower still)."""
    from ltn.flow._gradient_flow import _brief_first_round

    assert _brief_first_round(NET, REG.X, 1, "regression") and _brief_first_round(CLS_NET, CLS.X, 8, "classification")
    assert not _brief_first_round(NET, REG.X, 512, "regression")
    assert not _brief_first_round(CLS_NET, CLS.X, 64, "classification")
    assert _brief_first_round(CLS_NET, CLS.X, 64, "regression")  # the lockstep loop runs O0 code faster


def test_auto_tests_for_stiffness_along_the_path(linear_solver, monkeypatch):
    """Rounds of 50 explicit steps on the same run: after one and two rounds its step is not yet held by stability
    (h |lambda_max| measured 0.17, 0.99), so a single test at the start would keep Tsit5 for the whole budget;
    the test after each round finds it held later and continues implicitly to the exact limit."""
    from ltn.flow import _gradient_flow

    monkeypatch.setattr(_gradient_flow, "EXPLICIT_PROBE_STEPS", 50)
    held = NET.init(jax.random.PRNGKey(0), scale=30.0, kind="theorem")
    assert probe_product(NET, held, REG.X, REG.y, max_steps=50) < STIFF_PRODUCT
    assert probe_product(NET, held, REG.X, REG.y, max_steps=100) < STIFF_PRODUCT
    result = ltn.gradient_flow(NET, held, REG.X, REG.y, max_steps=3000)
    assert result.status_name == "converged" and result.stats.solver_name == "kvaerno5"
    assert 100 < int(result.stats.steps) < 1000  # measured 166; Tsit5 alone runs out of its 3000 steps
    limit = ltn.predict(NET, REG.X, REG.y, "squared", init=held).beta
    assert float(jnp.linalg.norm(result.beta - limit) / jnp.linalg.norm(limit)) <= 1e-8


def test_the_linear_algebra_follows_the_size_and_the_batch(batch_mode):
    """Kvaerno's chord on a dense Jacobian for runs on their own (alone or in turn) up to CHORD_MAX_PARAMETERS,
    GMRES above and for a vmapped batch above DENSE_MAX_PARAMETERS (where every run would compute the inversions
    any run asks for); BDF's dense path up to DENSE_MAX_PARAMETERS. End to end, the chord counts its work and GMRES
    cannot (-1)."""
    from ltn.flow._solvers import (CHORD_MAX_PARAMETERS, DENSE_MAX_PARAMETERS, DenseChord, NewtonKrylov,
                                   make_solver)

    assert DENSE_MAX_PARAMETERS < 200 <= CHORD_MAX_PARAMETERS
    assert isinstance(make_solver("kvaerno5", CHORD_MAX_PARAMETERS), DenseChord)
    assert isinstance(make_solver("kvaerno5", CHORD_MAX_PARAMETERS + 1), NewtonKrylov)
    assert isinstance(make_solver("kvaerno3", DENSE_MAX_PARAMETERS, vmapped=True), DenseChord)
    assert isinstance(make_solver("kvaerno5", DENSE_MAX_PARAMETERS + 1, vmapped=True), NewtonKrylov)
    assert not make_solver("bdf", DENSE_MAX_PARAMETERS).matrix_free
    assert make_solver("bdf", DENSE_MAX_PARAMETERS + 1).matrix_free

    net = ltn.Diagonal(d=100, depth=2)  # 200 parameters
    X = np.random.default_rng(0).standard_normal((3, 100))
    params0 = net.init(None, 0.1, kind="theorem")
    alone = ltn.gradient_flow(net, params0, X, X[:, 0], solver="kvaerno5", max_steps=3, checkpoints=4)
    batch = jax.tree_util.tree_map(lambda leaf: jnp.stack([leaf, 2 * leaf]), params0)
    both = ltn.gradient_flow(net, batch, X, X[:, 0], solver="kvaerno5", max_steps=3, checkpoints=4)
    assert int(alone.stats.steps) == 3 and int(alone.stats.grad_evals) > 200  # a Jacobian's 200 columns at least
    assert np.all(np.asarray(both.stats.steps) == 3)
    if batch_mode == "vmapped":
        assert np.all(np.asarray(both.stats.grad_evals) == -1)
    else:
        np.testing.assert_array_equal(both.stats.grad_evals[0], alone.stats.grad_evals)


def test_auto_does_not_switch_on_a_slow_run_that_is_not_stiff():
    """Negative control: classification in plain time far out is slow (the loss falls like 1/t, so the steps grow
    only geometrically and the probe ends undecided) but not stiff (the step is set by accuracy, h |lambda_max|
    far below the stability bound): `auto` goes on with Tsit5, and the run, short of its target, says so."""
    params0 = CLS_NET.init(jax.random.PRNGKey(4), scale=0.3)
    options = dict(target_log_loss=-1e6, reparametrize=False, t_max=1e200)
    assert probe_product(CLS_NET, params0, CLS.X, CLS.y, "exponential", **options) < STIFF_PRODUCT / 10
    result = ltn.gradient_flow(CLS_NET, params0, CLS.X, CLS.y, "exponential", max_steps=EXPLICIT_PROBE_STEPS + 300,
                               **options)
    assert result.stats.solver_name == "tsit5"
    assert result.status_name == "budget_exhausted" and int(result.stats.steps) == EXPLICIT_PROBE_STEPS + 300
    assert float(result.final.log_loss) > -1e6


def test_auto_spares_a_held_run_near_its_target():
    """A classification run held by stability after the probe but a few thousand explicit steps from its target
    finishes with Tsit5 (cheaper than compiling the implicit program); negative control: the same run with a far
    target is switched right after the probe."""
    params0 = CLS_NET.init(jax.random.PRNGKey(0), scale=0.5)
    assert probe_product(CLS_NET, params0, CLS.X, CLS.y, "exponential", target_log_loss=-1e4) >= STIFF_PRODUCT
    near = ltn.gradient_flow(CLS_NET, params0, CLS.X, CLS.y, "exponential", target_log_loss=-1e4)
    assert near.status_name == "converged" and near.stats.solver_name == "tsit5"
    assert EXPLICIT_PROBE_STEPS < int(near.stats.steps) < EXPLICIT_PROBE_STEPS + SPARING_STEPS  # measured 4464
    far = ltn.gradient_flow(CLS_NET, params0, CLS.X, CLS.y, "exponential", target_log_loss=-1e6)
    assert far.status_name == "converged" and far.stats.solver_name == "bdf"
    assert int(far.stats.steps) < 2 * EXPLICIT_PROBE_STEPS  # measured 2215: switched to BDF after the probe
