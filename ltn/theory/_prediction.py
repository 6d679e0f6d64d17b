"""`predict`: where the theory says gradient flow ends, with the name of the result it comes from.

Dispatch (docs/theory.md §5-8):

classification (loss 'exponential' or 'logistic'; beta is a unit direction):
- depth 1 (a linear model in its parameters) and fully-connected nets: l2 max margin ("l2 max margin").
- odeco, depth 2: global l1 max margin of rho in z = S x ("l1 max margin[, transformed]").
- odeco, depth L > 2: the best KKT point of the l_{2/L} max-margin problem found by reweighted l1 from the
  L = 2 solution and from random starts, never from a flow's point ("l2/L max margin stationary
  point[, transformed]"); on small real problems the global optimum by vertex enumeration ("l2/L max margin
  global optimum[, transformed]", `diagnostics["global"]`). `exact=False`: the theory only promises that the
  flow ends at *a* stationary point, not this one.
- anything else (partial-filter convolutions, general TensorNetwork): no closed prediction. A Prediction with
  `beta=None` and name "singular-vector certificate only" is returned (not an error, so sweeps can record it):
  the check is `kkt_distance` at the flow's end point.
Every classification prediction carries, in its diagnostics, the max-margin point `rho`, its coordinates (`S`:
the features are `X S^T`; `space`: "rho", "beta" or "parameters") and the norm exponent `norm_exponent`, so that
`prediction_margin_ratio` can measure a point against it. `max_margin` gives named alternatives (l1, l2, l2/L).

regression (loss 'squared'; beta is the limit point; needs `init`):
- depth 1: the linear model's exact limit, the init's closest interpolant ("min l2 distance to init (exact)").
- real odeco, depth >= 2: the exact limit for this init ("argmin Q (exact)"), by the dual Newton solve.
- fully-connected, depth >= 2: the minimum-l2 interpolant ("min l2 norm (alpha->0)").
- anything else (and `regime='lazy'` for any network): the linearised flow ("lazy (alpha->inf)").
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..losses import task_of
from ..networks import Diagonal, FullyConnected, Network
from ._certificates import kkt_from_rho, margin_ratio
from ._classification import (SolverError, conjugate_pairing, global_lp_optimum, l2_max_margin,
                              stationary_points, weighted_l1_max_margin)
from ._common import check_data, check_network, rho_from_point, transformed_inputs, unit
from ._regression import (STATUS_MESSAGES, lazy_condition_error, lazy_limits, min_norm_interpolant,
                          odeco_regression_limits)

REGIMES = ("auto", "lazy", "small")


@dataclasses.dataclass(frozen=True, eq=False)
class Prediction:
    """A predicted limit of gradient flow.

    `beta`: the predicted end-to-end predictor (a unit direction for classification, a point for regression),
    or None when the theory gives no closed prediction. `name`: which result it is. `exact`: True when it is
    the limit for this very initialisation, False when it is a limit in the initial scale (or, for L > 2
    classification, one stationary point among possibly several). `diagnostics`: solver status, iterations,
    residuals.
    """

    beta: np.ndarray | None
    name: str
    exact: bool
    diagnostics: dict[str, Any] = dataclasses.field(default_factory=dict)


def _is_identity(S: np.ndarray) -> bool:
    return S.shape[0] == S.shape[1] and np.array_equal(S, np.eye(S.shape[0]))


def predict(net: Network, X, y, loss: str = "squared", init=None, *, regime: str = "auto") -> Prediction:
    """Where gradient flow on `loss` from `init` ends, according to docs/theory.md §5-8 (see the module docstring).

    `init`: the initial parameters (needed for regression; classification limits do not depend on it).
    `regime` (regression): 'auto' (exact where available), 'lazy' (linearised flow, alpha -> inf)
    or 'small' (fully-connected minimum-l2 interpolant, alpha -> 0).
    Raises `SolverError` when a solver fails, ValueError/TypeError for arguments that do not fit.
    """
    check_network(net)
    task = task_of(loss)
    X, y = check_data(net, X, y, task)
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    if task == "classification":
        if regime != "auto":
            raise ValueError(f"regime={regime!r} applies to regression; classification limits do not depend on it")
        return _predict_classification(net, X, y)
    return _predict_regression(net, X, y, init, regime)


def predict_batch(net: Network, X, y, loss: str = "squared", inits=None, *, regime: str = "auto"
                  ) -> list[Prediction | Exception]:
    """`predict` for a batch of runs on the same data: `inits` carry a leading batch axis. The per-run work is one
    compiled, vmapped call (regression's exact and lazy limits); a classification limit that does not depend on the run
    is computed once. A run whose prediction fails gets its exception in its place, so one run cannot cost the others;
    arguments that do not fit still raise."""
    check_network(net)
    task = task_of(loss)
    X, y = check_data(net, X, y, task)
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    if inits is None:
        raise TypeError("predict_batch: pass inits with a leading batch axis: they give the batch")
    inits = net.check_batch(inits, "inits")
    if task == "regression":
        return _predict_regression_batch(net, X, y, inits, regime, len(inits[0]))
    if regime != "auto":
        raise ValueError(f"regime={regime!r} applies to regression; classification limits do not depend on it")
    return [_failure_or(lambda: _predict_classification(net, X, y))] * len(inits[0])


def _failure_or(prediction) -> Prediction | SolverError:
    try:
        return prediction()
    except SolverError as error:
        return error


def _predict_classification(net: Network, X, y) -> Prediction:
    odeco = net.odeco
    if net.depth == 1 or isinstance(net, FullyConnected):
        return _l2_prediction(net, X, y)
    if odeco is None:
        return Prediction(None, "singular-vector certificate only", False,
                          {"reason": f"{net!r} is neither odeco nor fully connected: docs/theory.md §5 gives no closed "
                                     "prediction; check kkt_distance at the flow's end point"})
    S, _ = odeco
    return _lq_prediction(S, X, y, net.depth, "" if _is_identity(S) else ", transformed")


def _l2_prediction(net: Network, X, y) -> Prediction:
    """The l2 max margin of beta, or of w for a depth-1 network `w -> x^T T w` (a linear model in w)."""
    features, S, space = X, np.eye(net.d), "beta"
    if net.depth == 1 and not isinstance(net, (FullyConnected, Diagonal)):
        T = np.asarray(jnp.stack([net.beta((e,)) for e in jnp.eye(net.layer_sizes[0])], axis=1))
        features, S, space = X @ T, T.T, "parameters"
    solution = l2_max_margin(features, y)
    certificate = kkt_from_rho(features, y, solution.rho, 2.0, active_tol=1e-6)
    return Prediction(unit(S.T @ solution.rho), "l2 max margin", True,
                      {**solution.diagnostics, "kkt_residual": certificate.residual, "rho": solution.rho, "S": S,
                       "space": space, "norm_exponent": 2.0})


def _lq_prediction(S: np.ndarray, X, y, depth: int, suffix: str) -> Prediction:
    """The l_{2/L} max margin of rho in `z = S x` (L = 2: the global l1 optimum; L > 2: the best KKT point of
    several independent starts, and the global optimum where vertex enumeration is affordable)."""
    Z = np.asarray(transformed_inputs(S, X))
    pairing = conjugate_pairing(S) if np.iscomplexobj(S) else None
    shared = {"S": S, "space": "rho", "norm_exponent": 2.0 / depth}
    if depth == 2:
        solution = weighted_l1_max_margin(Z, y, pairing=pairing)
        certificate = kkt_from_rho(Z, y, solution.rho, 1.0, active_tol=1e-6)
        diagnostics = {**solution.diagnostics, **shared, "rho": solution.rho, "kkt_residual": certificate.residual,
                       "dual_violation": certificate.dual_violation, "multipliers": solution.multipliers}
        return Prediction(unit(np.real(S.T @ solution.rho)), "l1 max margin" + suffix, True, diagnostics)
    # Conic (complex) solves cost ~10x the LPs: fewer random starts there.
    solution, objectives = stationary_points(Z, y, depth, pairing, random_starts=2 if pairing is not None else 8)
    rho, name = solution.rho, "l2/L max margin stationary point" + suffix
    diagnostics = {**solution.diagnostics, **shared, "start_objectives": objectives, "global": False}
    optimum = None if pairing is not None else global_lp_optimum(Z, y, depth)
    if optimum is not None:
        global_objective = float(np.sum(np.abs(optimum) ** (2.0 / depth)))
        # The enumerated vertex is exact to a k x k solve; the multi-start point is kept where it ties with it.
        if global_objective < diagnostics["objective"] * (1 - 1e-9):
            rho = optimum
            diagnostics["kkt_residual"] = kkt_from_rho(Z, y, rho, 2.0 / depth, active_tol=1e-6).residual
        diagnostics.update({"global": True, "global_objective": global_objective,
                            "multistart_objective": diagnostics["objective"], "objective": global_objective})
        name = "l2/L max margin global optimum" + suffix
    return Prediction(unit(np.real(S.T @ rho)), name, False, {**diagnostics, "rho": rho})


def max_margin(net: Network, X, y, norm: str) -> Prediction:
    """A named alternative to the theory's classification prediction, for negative controls and competing
    hypotheses on the same flows (`check.against` in sweeps).

    Arguments:
        net: the network; its transformed coordinates `z = S x` are used where it is odeco, beta's otherwise.
        X, y: the data (labels +-1).
        norm: "l2" (l2 max margin of beta, Soudry et al.'s limit of a linear model), "l1" (l1 max margin of rho,
            or of beta for a network that is not odeco) or "l2/L" (the l_{2/L} max margin of the same
            coordinates, L = net.depth: a KKT point, or the global optimum where enumerable).
    Returns:
        A `Prediction` whose name says which alternative it is; `exact` is False (a hypothesis, not a theorem
        for this network).
    """
    check_network(net)
    X, y = check_data(net, X, y, "classification")
    if norm not in MAX_MARGIN_NORMS:
        raise ValueError(f"norm must be one of {MAX_MARGIN_NORMS}, got {norm!r}")
    if norm == "l2":
        prediction = _l2_prediction(FullyConnected(net.d, ()), X, y)
    else:
        S = net.odeco[0] if net.odeco is not None else np.eye(net.d)
        suffix = "" if _is_identity(S) else ", transformed"
        prediction = _lq_prediction(S, X, y, 2 if norm == "l1" else net.depth, suffix)
    return dataclasses.replace(prediction, name=f"{prediction.name} (against {norm})", exact=False)


MAX_MARGIN_NORMS = ("l1", "l2", "l2/L")


def point_coordinates(net: Network, params, prediction: Prediction) -> np.ndarray:
    """The coordinates in which `prediction` is a max-margin point (`prediction.diagnostics["space"]`), of the
    point `params`: rho for odeco coordinates, beta, or the single layer of a depth-1 network."""
    space = prediction.diagnostics["space"]
    if space == "rho":
        S = prediction.diagnostics["S"]
        if net.odeco is not None and np.array_equal(np.asarray(net.odeco[0]), S):
            return rho_from_point(net, params, "point_coordinates")
        return np.linalg.solve(S.T.astype(complex if np.iscomplexobj(S) else float), np.asarray(net.beta(params)))
    if space == "beta":
        return np.asarray(net.beta(params))
    return np.ravel(np.asarray(params[0]))


def prediction_margin_ratio(net: Network, X, y, params, prediction: Prediction) -> float:
    """`margin_ratio` of the point `params` to a classification prediction, in the prediction's coordinates and
    norm (l_{2/L} of rho for odeco networks, l2 of beta for the l2 max margin): -> 1 along a flow that reaches
    the predicted optimum."""
    X, y = check_data(net, X, y, "classification")
    diagnostics = prediction.diagnostics
    features = np.asarray(X) @ np.asarray(diagnostics["S"]).T
    return margin_ratio(features, y, point_coordinates(net, params, prediction), diagnostics["rho"],
                        diagnostics["norm_exponent"])


def _predict_regression(net: Network, X, y, init, regime: str) -> Prediction:
    if init is None:
        if regime == "small" or (isinstance(net, FullyConnected) and net.depth > 1 and regime == "auto"):
            return _predict_regression_batch(net, X, y, None, regime, 1)[0]
        raise ValueError("init: regression predictions depend on the initialisation; pass init=params0")
    params = net.check_params(init)
    (prediction,) = _predict_regression_batch(net, X, y, tuple(jnp.asarray(p)[None] for p in params), regime, 1)
    if isinstance(prediction, Exception):
        raise prediction
    return prediction


def _predict_regression_batch(net: Network, X, y, inits, regime: str, size: int) -> list[Prediction | Exception]:
    """The regression dispatch of the module docstring for `size` runs at once (`inits`: leading batch axis)."""
    if regime == "small":
        if not isinstance(net, FullyConnected):
            raise ValueError(f"regime='small' (min l2 norm, alpha->0) is docs/theory.md §8's fully-connected result; "
                             f"net is {net!r}")
        return [_min_norm(X, y)] * size
    if net.depth == 1 or regime == "lazy":
        exact = net.depth == 1
        return _lazy(net, X, y, inits, "min l2 distance to init (exact)" if exact else "lazy (alpha->inf)", exact)
    odeco = net.odeco
    if odeco is not None and not any(np.iscomplexobj(a) for a in (odeco[0], *odeco[1])):
        solutions = odeco_regression_limits(net, X, y, inits)
        return [_exact(jax.tree_util.tree_map(lambda leaf: leaf[i], solutions)) for i in range(size)]
    if isinstance(net, FullyConnected):
        return [_min_norm(X, y)] * size
    note = ("complex odeco decomposition: the exact reduction is implemented for real S only"
            if odeco is not None else "not odeco: no exact prediction")
    return _lazy(net, X, y, inits, "lazy (alpha->inf)", False, note=note)


def _exact(solution) -> Prediction | SolverError:
    status = int(solution.status)
    if status != 0:
        return SolverError(f"exact regression limit: the dual Newton solve {STATUS_MESSAGES[status]} "
                           f"(relative residual {float(solution.residual):.2e} after {int(solution.steps)} steps)")
    diagnostics = {"solver": "damped Newton on the dual (JAX)", "status": STATUS_MESSAGES[status],
                   "newton_steps": int(solution.steps), "residual": float(solution.residual),
                   "rho": np.asarray(solution.rho), "dual": np.asarray(solution.dual)}
    return Prediction(np.asarray(solution.beta), "argmin Q (exact)", True, diagnostics)


def _lazy(net, X, y, inits, name: str, exact: bool, **notes) -> list[Prediction | Exception]:
    betas, conditions = lazy_limits(net, X, y, inits)
    errors = [lazy_condition_error(condition) for condition in conditions]
    return [error if error is not None else
            Prediction(beta, name, exact, {"residual": _relative_residual(X, y, beta), **notes})
            for beta, error in zip(betas, errors)]


def _min_norm(X, y) -> Prediction:
    beta = np.asarray(min_norm_interpolant(X, y))
    return Prediction(beta, "min l2 norm (alpha->0)", False, {"residual": _relative_residual(X, y, beta)})


def _relative_residual(X, y, beta) -> float:
    return float(np.linalg.norm(X @ beta - y) / np.linalg.norm(y))
