"""Classification predictions checked against second solvers and independent formulations (docs/theory.md §5-6)."""

import cvxpy as cp
import numpy as np
import pytest
import scipy.optimize

import ltn
import ltn.data
from ltn.networks import dft_matrix
from ltn.theory import SolverError, kkt_residual, max_margin, predict
from ltn.theory import _classification
from ltn.theory._certificates import kkt_from_rho
from ltn.theory._classification import (CLARABEL_OPTIONS, MAX_VERTEX_SYSTEMS, global_lp_optimum,
                                        lp_stationary_point, stationary_points, vertex_count)

DATA = ltn.data.separable_classification(0, 12, 8)
X, Y = DATA.X, DATA.y


def angle_gap(a, b):
    return np.linalg.norm(a / np.linalg.norm(a) - b / np.linalg.norm(b))


@pytest.mark.parametrize("net", [ltn.Diagonal(8, 1), ltn.FullyConnected(8, (5, 3))], ids=repr)
def test_l2_max_margin_matches_slsqp_on_the_dual(net):
    prediction = predict(net, X, Y, loss="exponential")
    assert prediction.name == "l2 max margin" and prediction.exact
    signed = Y[:, None] * X
    gram = signed @ signed.T
    dual = scipy.optimize.minimize(lambda a: 0.5 * a @ gram @ a - a.sum(), np.zeros(len(Y)),
                                   jac=lambda a: gram @ a - 1, bounds=[(0, None)] * len(Y), method="SLSQP",
                                   options={"ftol": 1e-15, "maxiter": 1000})
    assert dual.success, dual.message
    assert angle_gap(prediction.beta, signed.T @ dual.x) < 1e-6  # measured 8e-12
    w = cp.Variable(8)
    cp.Problem(cp.Minimize(cp.sum_squares(w)), [cp.multiply(Y, X @ w) >= 1]).solve(solver=cp.CLARABEL)
    assert angle_gap(prediction.beta, w.value) < 1e-7  # measured 1.2e-8 (Clarabel's accuracy)


def test_l2_max_margin_multipliers_and_a_non_separable_negative_control():
    solution = _classification.l2_max_margin(X, Y)
    margins = Y * (X @ solution.rho)
    assert margins.min() == pytest.approx(1.0, abs=1e-12) and np.all(solution.multipliers >= 0)
    # KKT: w = sum_i nu_i y_i x_i, complementary slackness on the margins
    assert np.linalg.norm(solution.rho - (Y * solution.multipliers) @ X) <= 1e-10 * np.linalg.norm(solution.rho)
    assert np.max(solution.multipliers * (margins - 1)) <= 1e-10
    with pytest.raises(SolverError, match="no w separates"):
        _classification.l2_max_margin(np.vstack([X[:1], X[:1]]), np.array([1.0, -1.0]))


def test_l1_max_margin_lp_matches_clarabel():
    prediction = predict(ltn.Diagonal(8, 2), X, Y, loss="logistic")
    assert prediction.name == "l1 max margin" and prediction.exact
    rho = cp.Variable(8)
    cp.Problem(cp.Minimize(cp.norm1(rho)), [cp.multiply(Y, X @ rho) >= 1]).solve(solver=cp.CLARABEL)
    assert angle_gap(prediction.beta, rho.value) < 1e-6  # measured 2.3e-9 (Clarabel's accuracy)
    assert prediction.diagnostics["kkt_residual"] < 1e-10 and prediction.diagnostics["dual_violation"] < 1e-9


def test_rotated_odeco_depth2_is_transformed_l1():
    rng = np.random.default_rng(0)
    S = np.linalg.qr(rng.standard_normal((8, 8)))[0]
    net = ltn.Odeco(S, [np.eye(8), np.eye(8)])
    prediction = predict(net, X, Y, loss="logistic")
    assert prediction.name == "l1 max margin, transformed"
    rho = cp.Variable(8)
    cp.Problem(cp.Minimize(cp.norm1(rho)), [cp.multiply(Y, (X @ S.T) @ rho) >= 1]).solve(solver=cp.CLARABEL)
    assert angle_gap(prediction.beta, S.T @ rho.value) < 1e-6  # measured 1.1e-9


def test_full_length_convolution_depth2_is_l1_of_the_dft_of_beta():
    # Gunasekar et al. (2018), stated directly on beta: min ||F beta||_1 s.t. y_i x_i^T beta >= 1 (an SOCP).
    net = ltn.Convolutional(8, 2)
    prediction = predict(net, X, Y, loss="exponential")
    assert prediction.name == "l1 max margin, transformed" and prediction.exact
    beta = cp.Variable(8)
    problem = cp.Problem(cp.Minimize(cp.sum(cp.abs(dft_matrix(8) @ beta))), [cp.multiply(Y, X @ beta) >= 1])
    problem.solve(solver=cp.CLARABEL, **CLARABEL_OPTIONS)  # tight tolerances: the optimum here is dense
    assert problem.status == cp.OPTIMAL
    assert angle_gap(prediction.beta, beta.value) < 1e-6  # measured 1.9e-7 (9.8e-6 at Clarabel's defaults)


def test_full_length_convolution_depth3_is_a_kkt_point_of_the_dft_problem():
    net = ltn.Convolutional(8, 3)
    prediction = predict(net, X, Y, loss="exponential")
    assert prediction.name == "l2/L max margin stationary point, transformed" and not prediction.exact
    # rho = S^{-T} beta is the DFT of beta up to a constant, so this is stationarity of min ||F beta||_{2/3}.
    certificate = kkt_residual(net, X, Y, prediction.beta)
    assert certificate.residual < 1e-5  # measured 2.3e-7 (interior-point accuracy)


@pytest.mark.parametrize("depth", [3, 4])
def test_deep_diagonal_stationary_point_and_local_search(depth):
    net = ltn.Diagonal(8, depth)
    prediction = predict(net, X, Y, loss="exponential")
    assert prediction.diagnostics["kkt_residual"] < 1e-10  # measured 5e-16 (L = 3), 4e-16 (L = 4)
    assert kkt_residual(net, X, Y, prediction.beta).residual < 1e-10
    assert prediction.diagnostics["global"]  # d = 8, n = 12: vertex enumeration is affordable
    # A start near the stationary point returns to it (the local search the multi-start is made of).
    rho = prediction.diagnostics["rho"]
    rng = np.random.default_rng(depth)
    start = rho + 1e-3 * rng.standard_normal(8) * np.abs(rho).max()
    assert kkt_residual(net, X, Y, start, support=np.arange(8)).residual > 1e-3  # the start is not stationary
    again = lp_stationary_point(X, Y, depth, start)
    assert angle_gap(again.rho, rho) < 1e-10  # measured 0 (the same LP vertex)


# Found by search over separable_classification(seed, n, 5): reweighted l1 started from the L = 2 solution
# ends at a KKT point whose objective is 1.8590; vertex enumeration finds 1.6905.
NOT_GLOBAL = ltn.data.separable_classification(2, 4, 5)


def test_vertex_enumeration_finds_the_global_optimum_that_the_l2_start_misses():
    Xs, Ys = NOT_GLOBAL.X, NOT_GLOBAL.y
    from_l1 = lp_stationary_point(Xs, Ys, 3)
    optimum = global_lp_optimum(Xs, Ys, 3)
    objective = np.sum(np.abs(optimum) ** (2 / 3))
    assert from_l1.diagnostics["objective"] == pytest.approx(1.8590190, rel=1e-6)
    assert objective == pytest.approx(1.6905152, rel=1e-6)
    # Independently: the vertex is a KKT point (residual measured 0), feasible, and no local search from random
    # separating starts (weighted l1 vertices) beats it.
    assert kkt_from_rho(Xs, Ys, optimum, 2 / 3, active_tol=1e-9).residual < 1e-10
    assert np.min(Ys * (Xs @ optimum)) == pytest.approx(1.0, abs=1e-12)
    _, objectives = stationary_points(Xs, Ys, 3, random_starts=12, seed=1)
    assert min(objectives) >= objective * (1 - 1e-9)
    prediction = predict(ltn.Diagonal(5, 3), Xs, Ys, loss="exponential")
    assert prediction.name == "l2/L max margin global optimum" and prediction.diagnostics["global"]
    assert prediction.diagnostics["objective"] == pytest.approx(objective, rel=1e-9)
    assert angle_gap(prediction.beta, optimum) < 1e-12
    # Too many vertex systems: not attempted (the prediction is then the multi-start's best, flagged not global).
    assert vertex_count(30, 20) > MAX_VERTEX_SYSTEMS
    assert global_lp_optimum(np.ones((20, 30)), np.ones(20), 3) is None


def test_conic_solves_retry_before_giving_up(monkeypatch):
    net = ltn.Convolutional(8, 2)  # complex S: the SOCP path
    reference = predict(net, X, Y, loss="exponential")
    starved = ("Clarabel (2 iterations)", cp.CLARABEL, {**CLARABEL_OPTIONS, "max_iter": 2})
    monkeypatch.setattr(_classification, "SOLVER_ATTEMPTS", (starved, _classification.SOLVER_ATTEMPTS[0]))
    retried = predict(net, X, Y, loss="exponential")
    assert retried.diagnostics["solver"] == "cvxpy/Clarabel SOCP"  # the second attempt
    assert angle_gap(retried.beta, reference.beta) < 1e-9  # measured 1.3e-11 (interior-point accuracy)
    monkeypatch.setattr(_classification, "SOLVER_ATTEMPTS", (starved,))
    with pytest.raises(SolverError, match=r"no solver reported 'optimal' \(Clarabel \(2 iterations\): status"):
        predict(net, X, Y, loss="exponential")


def test_named_alternatives():
    diagonal, dense = ltn.Diagonal(8, 2), ltn.FullyConnected(8, (3,))
    assert angle_gap(max_margin(diagonal, X, Y, "l1").beta, predict(diagonal, X, Y, "logistic").beta) < 1e-12
    assert angle_gap(max_margin(diagonal, X, Y, "l2").beta, predict(dense, X, Y, "logistic").beta) < 1e-12
    l1 = max_margin(dense, X, Y, "l1")
    assert l1.name == "l1 max margin (against l1)" and not l1.exact
    with pytest.raises(ValueError, match="norm must be one of"):
        max_margin(dense, X, Y, "l3")


def test_tensor_network_depth1_and_non_odeco_networks():
    rng = np.random.default_rng(1)
    T = rng.standard_normal((8, 5))
    prediction = predict(ltn.TensorNetwork(T), X, Y, loss="logistic")
    assert prediction.name == "l2 max margin"
    assert np.all(Y * (X @ prediction.beta) > 0)
    assert prediction.diagnostics["kkt_residual"] < 1e-8
    partial = predict(ltn.Convolutional(8, 3, (3, 3)), X, Y, loss="logistic")
    assert partial.beta is None and partial.name == "singular-vector certificate only"


def test_classification_errors_name_the_argument():
    with pytest.raises(ValueError, match="labels"):
        predict(ltn.Diagonal(8, 2), X, np.where(Y > 0, 1.0, 0.0), loss="logistic")
    with pytest.raises(ValueError, match="regime"):
        predict(ltn.Diagonal(8, 2), X, Y, loss="logistic", regime="lazy")
    with pytest.raises(TypeError, match="start"):  # predictions never start from a flow's point
        predict(ltn.Diagonal(8, 3), X, Y, loss="logistic", start=np.ones(8))
