"""`predict`: where the theory says gradient flow ends, with the name of the result it comes from.

Dispatch (docs/theory.md §5-8):

classification (loss 'exponential' or 'logistic'; beta is a unit direction):
- depth 1 (a linear model in its parameters) and fully-connected nets: l2 max margin ("l2 max margin").
- odeco, depth 2: global l1 max margin of rho in z = S x ("l1 max margin[, transformed]").
- odeco, depth L > 2: a KKT point of the l_{2/L} max-margin problem, by reweighted l1 from `start`
  ("l2/L max margin stationary point[, transformed]"; `exact=False`: the theory only promises stationarity).
- anything else (partial-filter convolutions, general TensorNetwork): no closed prediction. A Prediction with
  `beta=None` and name "singular-vector certificate only" is returned (not an error, so sweeps can record it):
  the check is `singular_vector_residual` at the flow's end point.

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
from ._certificates import kkt_from_rho
from ._classification import (SolverError, conjugate_pairing, l2_max_margin, lp_stationary_point,
                              weighted_l1_max_margin)
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


def predict(net: Network, X, y, loss: str = "squared", init=None, start=None, *, regime: str = "auto"
            ) -> Prediction:
    """Where gradient flow on `loss` from `init` ends, according to docs/theory.md §5-8 (see the module docstring).

    `init`: the initial parameters (needed for regression; classification limits do not depend on it).
    `start` (odeco classification with L > 2 only): a point near the flow's limit to start the local KKT
    search from: parameters (a tuple, e.g. the flow's end point) or a beta of shape (d,); default: the l1
    solution. `regime` (regression): 'auto' (exact where available), 'lazy' (linearised flow, alpha -> inf)
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
        return _predict_classification(net, X, y, start)
    if start is not None:
        raise ValueError("start is used by classification predictions only (loss 'exponential' or 'logistic')")
    return _predict_regression(net, X, y, init, regime)


def predict_batch(net: Network, X, y, loss: str = "squared", inits=None, starts=None, *, regime: str = "auto"
                  ) -> list[Prediction | Exception]:
    """`predict` for a batch of runs on the same data: `inits` (and, for odeco classification with L > 2,
    `starts`) carry a leading batch axis. The per-run work is one compiled, vmapped call (regression's exact
    and lazy limits); a classification limit that does not depend on the run is computed once. A run whose
    prediction fails gets its exception in its place, so one run cannot cost the others; arguments that do not
    fit still raise."""
    check_network(net)
    task = task_of(loss)
    X, y = check_data(net, X, y, task)
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    if inits is None and starts is None:
        raise TypeError("predict_batch: pass inits (or starts) with a leading batch axis: they give the batch")
    if task == "regression":
        if starts is not None:
            raise ValueError("start is used by classification predictions only (loss 'exponential' or 'logistic')")
        inits = net.check_batch(inits, "inits")
        return _predict_regression_batch(net, X, y, inits, regime, len(inits[0]))
    if regime != "auto":
        raise ValueError(f"regime={regime!r} applies to regression; classification limits do not depend on it")
    if starts is None:
        size = len(net.check_batch(inits, "inits")[0])
        return [_failure_or(lambda: _predict_classification(net, X, y, None))] * size
    starts = net.check_batch(starts, "starts")
    return [_failure_or(lambda i=i: _predict_classification(net, X, y, tuple(layer[i] for layer in starts)))
            for i in range(len(starts[0]))]


def _failure_or(prediction) -> Prediction | SolverError:
    try:
        return prediction()
    except SolverError as error:
        return error


def _predict_classification(net: Network, X, y, start) -> Prediction:
    odeco = net.odeco
    if start is not None and (odeco is None or net.depth <= 2):
        raise ValueError("start is only used for odeco networks of depth > 2 (a local KKT search); "
                         f"{net!r} has a global prediction")
    if net.depth == 1 or isinstance(net, FullyConnected):
        features, to_beta = X, None
        if net.depth == 1 and not isinstance(net, (FullyConnected, Diagonal)):
            # A depth-1 network is the linear model w -> x^T T w with T = d beta / d w.
            T = np.asarray(jnp.stack([net.beta((e,)) for e in jnp.eye(net.layer_sizes[0])], axis=1))
            features, to_beta = X @ T, T
        solution = l2_max_margin(features, y)
        w = solution.rho
        beta = w if to_beta is None else to_beta @ w
        certificate = kkt_from_rho(features, y, w, 2.0, active_tol=1e-6, support_tol=0.0)
        return Prediction(unit(beta), "l2 max margin", True,
                          {**solution.diagnostics, "kkt_residual": certificate.residual})
    if odeco is None:
        return Prediction(None, "singular-vector certificate only", False,
                          {"reason": f"{net!r} is neither odeco nor fully connected: docs/theory.md §5 gives no closed "
                                     "prediction; check singular_vector_residual at the flow's end point"})
    S, _ = odeco
    Z = np.asarray(transformed_inputs(S, X))
    suffix = "" if _is_identity(S) else ", transformed"
    pairing = conjugate_pairing(S) if np.iscomplexobj(S) else None
    if net.depth == 2:
        solution = weighted_l1_max_margin(Z, y, pairing=pairing)
        certificate = kkt_from_rho(Z, y, solution.rho, 1.0, active_tol=1e-6, support_tol=1e-9)
        diagnostics = {**solution.diagnostics, "rho": solution.rho, "kkt_residual": certificate.residual,
                       "dual_violation": certificate.dual_violation}
        return Prediction(unit(np.real(S.T @ solution.rho)), "l1 max margin" + suffix, True, diagnostics)
    rho_start = None if start is None else rho_from_point(net, start, "start")
    solution = lp_stationary_point(Z, y, net.depth, rho_start, pairing)
    diagnostics = {**solution.diagnostics, "rho": solution.rho}
    return Prediction(unit(np.real(S.T @ solution.rho)), "l2/L max margin stationary point" + suffix, False,
                      diagnostics)


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
