"""Classification predictions checked against second solvers and independent formulations (docs/theory.md §5-6)."""

import cvxpy as cp
import numpy as np
import pytest
import scipy.optimize

import ltn
import ltn.data
from ltn.networks import dft_matrix
from ltn.theory import kkt_residual, predict
from ltn.theory._classification import CLARABEL_OPTIONS

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
    assert angle_gap(prediction.beta, signed.T @ dual.x) < 1e-6  # measured ~1e-9


def test_l1_max_margin_lp_matches_clarabel():
    prediction = predict(ltn.Diagonal(8, 2), X, Y, loss="logistic")
    assert prediction.name == "l1 max margin" and prediction.exact
    rho = cp.Variable(8)
    cp.Problem(cp.Minimize(cp.norm1(rho)), [cp.multiply(Y, X @ rho) >= 1]).solve(solver=cp.CLARABEL)
    assert angle_gap(prediction.beta, rho.value) < 1e-6  # measured ~1e-9 (Clarabel's accuracy)
    assert prediction.diagnostics["kkt_residual"] < 1e-10 and prediction.diagnostics["dual_violation"] < 1e-9


def test_rotated_odeco_depth2_is_transformed_l1():
    rng = np.random.default_rng(0)
    S = np.linalg.qr(rng.standard_normal((8, 8)))[0]
    net = ltn.Odeco(S, [np.eye(8), np.eye(8)])
    prediction = predict(net, X, Y, loss="logistic")
    assert prediction.name == "l1 max margin, transformed"
    rho = cp.Variable(8)
    cp.Problem(cp.Minimize(cp.norm1(rho)), [cp.multiply(Y, (X @ S.T) @ rho) >= 1]).solve(solver=cp.CLARABEL)
    assert angle_gap(prediction.beta, S.T @ rho.value) < 1e-6  # measured ~1e-9


def test_full_length_convolution_depth2_is_l1_of_the_dft_of_beta():
    # Gunasekar et al. (2018), stated directly on beta: min ||F beta||_1 s.t. y_i x_i^T beta >= 1 (an SOCP).
    net = ltn.Convolutional(8, 2)
    prediction = predict(net, X, Y, loss="exponential")
    assert prediction.name == "l1 max margin, transformed" and prediction.exact
    beta = cp.Variable(8)
    problem = cp.Problem(cp.Minimize(cp.sum(cp.abs(dft_matrix(8) @ beta))), [cp.multiply(Y, X @ beta) >= 1])
    problem.solve(solver=cp.CLARABEL, **CLARABEL_OPTIONS)  # tight tolerances: the optimum here is dense
    assert problem.status == cp.OPTIMAL
    assert angle_gap(prediction.beta, beta.value) < 1e-6  # measured 1.9e-7 (1e-5 at Clarabel's defaults)


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
    assert prediction.diagnostics["kkt_residual"] < 1e-10  # measured ~1e-15
    assert kkt_residual(net, X, Y, prediction.beta).residual < 1e-10
    # A start near the stationary point (as from a flow's end point) returns to it.
    rng = np.random.default_rng(depth)
    start = prediction.beta + 1e-3 * rng.standard_normal(8) * np.abs(prediction.beta).max()
    assert kkt_residual(net, X, Y, start, support_tol=1e-9).residual > 1e-3  # the start is not stationary
    again = predict(net, X, Y, loss="exponential", start=start)
    assert angle_gap(again.beta, prediction.beta) < 1e-10  # measured 0 (the same LP vertex)


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
    with pytest.raises(ValueError, match="start"):
        predict(ltn.Diagonal(8, 2), X, Y, loss="logistic", start=np.ones(8))
    with pytest.raises(ValueError, match="regime"):
        predict(ltn.Diagonal(8, 2), X, Y, loss="logistic", regime="lazy")
    with pytest.raises(ValueError, match="start"):
        predict(ltn.Diagonal(8, 3), X, Y, loss="logistic", start=-predict(ltn.Diagonal(8, 2), X, Y, "logistic").beta)
