"""The theory check of one finished run: prediction (the theory's, or a named alternative: `check.against`),
distance to it, margin ratio, certificates, verdict.

Anything the theory raises for one run is recorded in that run's row (`check_error`), never allowed to end the
sweep.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.optimize

from ..networks import FullyConnected, Network, Odeco
from ..theory import (MAX_MARGIN_NORMS, RATE_TOLERANCE, Prediction, RateFit, fit_rate, kkt_distance, kkt_residual,
                      max_margin, min_norm_interpolant, predict, predict_batch, prediction_margin_ratio,
                      singular_vector_residual, theory_rate_exponent)
from ._config import RunSpec

# check_kind values: what the verdict rests on.
EXACT = "exact"  # regression: the flow's limit itself is predicted; passes on relative error
LIMIT = "limit"  # regression: only a limit in the initial scale is predicted; reported, not judged
DIRECTION = "direction"  # classification: predicted direction plus certificate
CERTIFICATE = "certificate"  # classification without a closed prediction: the certificate alone decides
# classification, odeco depth > 2: the end point is certified a KKT point, another than the predicted one
STATIONARY = "stationary point (certificate)"
UNAVAILABLE = "unavailable"  # no prediction could be made (see check_error)
DISABLED = "disabled"

# A run's verdict (the `verdict` column): "passed" / "failed" against a theory that applies to it, or "not judged"
# where none does (a limit in the initial scale only, a certificate with no tolerance, a disabled check).
# "consistent" (classification): not yet within the cosine tolerance, but along the recorded path the distance to
# the prediction falls at the theory's rate and extrapolates below the tolerance (docs/theory.md §12). A run that
# is not judged, or consistent, is never counted as passed; only "failed" makes `ltn run` exit 1.
PASSED, CONSISTENT, FAILED, NOT_JUDGED = VERDICTS = ("passed", "consistent", "failed", "not judged")


# `check.against` per task: the theory, or the named alternatives that apply (the config lists their union).
AGAINST = {"classification": ("theory", *MAX_MARGIN_NORMS), "regression": ("theory", "lazy", "min_norm")}


def _complex_odeco(net: Network) -> bool:
    decomposition = net.odeco
    return decomposition is not None and (np.iscomplexobj(decomposition[0])
                                          or any(np.iscomplexobj(U) for U in decomposition[1]))


def real_odeco(net: Network) -> Network | None:
    """`net` as a real `Odeco` when its decomposition is stored complex but has no imaginary part (the DFT of
    length d <= 2, e.g. a full-length convolution on R^2: docs/theory.md §4); the same data tensor, so the
    same parameters. None otherwise."""
    decomposition = net.odeco
    if decomposition is None or not _complex_odeco(net):
        return None
    S, Us = decomposition
    if any(np.max(np.abs(np.imag(np.asarray(a)))) > 1e-12 * max(np.max(np.abs(np.asarray(a))), 1.0)
           for a in (S, *Us)):
        return None
    return Odeco(np.real(np.asarray(S)), tuple(np.real(np.asarray(U)) for U in Us))


def check_supported(net: Network, run: RunSpec) -> str | None:
    """Why the theory check cannot take this run (None when it can): decided before any compute."""
    if run.check.against not in AGAINST[run.task]:
        return (f"check.against = {run.check.against!r} does not apply to {run.task}; choose one of "
                f"{AGAINST[run.task]}")
    if run.task == "regression" and _complex_odeco(net) and run.init.kind == "theorem" and real_odeco(net) is None:
        return ("the regression prediction for the theorem initialisation (docs/theory.md §7) needs a real odeco "
                f"decomposition, and {net!r} is odeco over C only (full-length convolution or a DFT basis); "
                "use partial filters (network.filter_size < d), a real basis, or check = { enabled = false }")
    return None


@dataclasses.dataclass(frozen=True)
class CheckOutcome:
    prediction: str = ""
    check_kind: str = UNAVAILABLE
    exact: bool | None = None
    cosine: float = float("nan")
    relative_error: float = float("nan")
    certificate: float = float("nan")
    certificate_name: str = ""
    verdict: str = FAILED
    reason: str = ""
    check_error: str = ""
    predicted_beta: np.ndarray | None = None
    limits: dict = dataclasses.field(default_factory=dict)  # regression: the alpha -> 0 / inf limit columns
    certificates: "Certificates" = dataclasses.field(default_factory=lambda: Certificates())
    rate: "Rate" = dataclasses.field(default_factory=lambda: Rate())

    @property
    def passed(self) -> bool:
        return self.verdict == PASSED

    def columns(self) -> dict:
        return {"prediction": self.prediction, "check_kind": self.check_kind, "prediction_exact": self.exact,
                "cosine": self.cosine, "relative_error": self.relative_error, "certificate": self.certificate,
                "certificate_name": self.certificate_name, "passed": self.passed, "verdict": self.verdict,
                "reason": self.reason,
                "check_error": self.check_error, **self.certificates.columns(), **self.rate.columns(),
                **{c: self.limits.get(c, LIMIT_DEFAULTS[c]) for c in LIMIT_COLUMNS}}


@dataclasses.dataclass(frozen=True)
class Rate:
    """The rate test of a classification run not yet within its cosine tolerance (docs/theory.md §12): the
    exponent fitted to its path (`rate_exponent`), the theory's (`rate_exponent_theory`), the number of late
    checkpoints fitted (`rate_points`) and the log-loss at which the fit reaches the tolerance
    (`pass_at_log_loss`); NaN where no fit was made."""

    exponent: float = float("nan")
    exponent_theory: float = float("nan")
    points: int = 0
    pass_at_log_loss: float = float("nan")

    def columns(self) -> dict:
        return {"rate_exponent": self.exponent, "rate_exponent_theory": self.exponent_theory,
                "rate_points": self.points, "pass_at_log_loss": self.pass_at_log_loss}


@dataclasses.dataclass(frozen=True)
class Path:
    """The recorded path of one classification run: `log_loss` (K,) and `betas` (K, d) at its checkpoints and
    end point, in order (entries a run never reached are non-finite)."""

    log_loss: np.ndarray
    betas: np.ndarray

    def late(self, decades: float = 2.0) -> np.ndarray | None:
        """The betas with -log L > 1 in the last `decades` decades of -log L, oldest first, for the support
        detection of the KKT residual (None when there are fewer than two)."""
        gamma = -np.asarray(self.log_loss, dtype=float)
        reached = np.isfinite(gamma) & (gamma > 1) & np.all(np.isfinite(self.betas), axis=1)
        if not reached.any():
            return None
        late = reached & (gamma >= gamma[reached].max() / 10**decades)
        return self.betas[late] if late.sum() >= 2 else None


@dataclasses.dataclass(frozen=True)
class Certificates:
    """The classification certificates of one end point (docs/theory.md §12); NaN where one does not apply.

    `value` / `name`: the certificate the check judges ("kkt": the KKT residual of the l_{2/L} problem on the
    detected support, with the dual violation off it for L = 2, odeco nets; "kkt_distance" otherwise).
    `kkt_distance`: distance of beta's direction to the Theorem-1 KKT point Newton finds from the point.
    `alignment`: 1 - cos(theta, -grad log L). `fit_residual`: the singular-vector fit residual (a diagnostic,
    not a distance). `margin_ratio`: the normalised margin relative to the predicted optimum (-> 1).
    """

    value: float = float("nan")
    name: str = ""
    kkt_distance: float = float("nan")
    alignment: float = float("nan")
    fit_residual: float = float("nan")
    margin_ratio: float = float("nan")
    note: str = ""  # why the judged certificate is inf, where it is

    def failure(self, tolerance: float) -> str:
        """The reason a certificate above `tolerance` gives, with the certificate's own note."""
        return f"{self.name} {self.value:.2e} > {tolerance:.0e}" + (f" ({self.note})" if self.note else "")

    def columns(self) -> dict:
        return {"margin_ratio": self.margin_ratio, "kkt_distance": self.kkt_distance, "alignment": self.alignment,
                "fit_residual": self.fit_residual}


# Regression only (docs/theory.md §7-8): where the end point sits between the two limits in the initial scale.
# `limit_small` / `limit_large` name them; `distance_limit_*` is ||beta - limit|| / ||limit||. (The errors of
# every run, `test_error` and `teacher_error`, are `ltn.data.error_columns`.)
LIMIT_COLUMNS = ("limit_small", "distance_limit_small", "limit_large", "distance_limit_large")
LIMIT_DEFAULTS = {"limit_small": "", "distance_limit_small": float("nan"), "limit_large": "",
                  "distance_limit_large": float("nan")}


def l1_interpolant(Z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """argmin ||rho||_1 s.t. Z rho = y, an LP in (rho+, rho-) solved by HiGHS."""
    m = Z.shape[1]
    result = scipy.optimize.linprog(np.ones(2 * m), A_eq=np.hstack([Z, -Z]), b_eq=y, bounds=[(0, None)] * (2 * m),
                                    method="highs")
    if result.status != 0:
        raise RuntimeError(f"l1 interpolant LP: {result.message}")
    return result.x[:m] - result.x[m:]


def scale_limits(net: Network, run: RunSpec, params0, X, y) -> dict[str, tuple[str, np.ndarray]]:
    """The alpha -> 0 and alpha -> inf limits of one regression run, as `{"small"|"large": (name, beta)}`."""
    (limits,) = group_scale_limits(net, run, tuple(np.asarray(p)[None] for p in params0), X, y)
    if isinstance(limits, Exception):
        raise limits
    return limits


def group_scale_limits(net: Network, run: RunSpec, params0, X, y) -> list[dict | Exception]:
    """`scale_limits` of every run of a group (`params0` with a leading batch axis; the run-dependent limit in one
    compiled call). A run whose limit cannot be computed gets the exception in its place.

    Real odeco networks with the theorem initialisation (eta_bar = 1, so the weights are 1): the l1 (alpha -> 0)
    and l2 (alpha -> inf) interpolants of rho in z = S x, mapped to beta = S^T rho (docs/theory.md §7), the same
    for every run. Fully connected: the minimum-l2 interpolant (alpha -> 0) and the linearised flow at this init
    (alpha -> inf, §8). Other networks: the linearised flow only."""
    size = len(np.asarray(params0[0]))
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    odeco = real_odeco(net) or (net if net.odeco is not None and not _complex_odeco(net) else None)
    if odeco is not None and run.init.kind == "theorem":
        S = np.asarray(odeco.odeco[0], dtype=float)
        Z = X @ S.T
        suffix = "" if S.shape[0] == S.shape[1] and np.array_equal(S, np.eye(S.shape[0])) else " of S x"
        return [{"small": (f"min l1{suffix} (alpha->0)", S.T @ l1_interpolant(Z, y)),
                 "large": (f"min l2{suffix} (alpha->inf)", S.T @ np.linalg.lstsq(Z, y, rcond=None)[0])}] * size
    shared: dict[str, tuple[str, np.ndarray]] = {}
    if isinstance(net, FullyConnected) and net.depth > 1:
        shared["small"] = ("min l2 (alpha->0)", np.asarray(min_norm_interpolant(X, y)))
    if net.depth == 1:
        return [dict(shared) for _ in range(size)]
    lazy = predict_batch(net, X, y, "squared", inits=tuple(params0), regime="lazy")
    return [p if isinstance(p, Exception) else {**shared, "large": ("lazy (alpha->inf)", np.asarray(p.beta))}
            for p in lazy]


def limit_columns(net: Network, run: RunSpec, params0, beta, X, y, limits=None) -> dict:
    """The LIMIT_COLUMNS of one regression run (NaN where a limit does not apply). `limits`: its entry of
    `group_scale_limits`, if computed already."""
    limits = scale_limits(net, run, params0, X, y) if limits is None else limits
    if isinstance(limits, Exception):
        raise limits
    columns: dict = {}
    beta = np.asarray(beta, dtype=float)
    for which, (name, limit) in limits.items():
        columns[f"limit_{which}"] = name
        columns[f"distance_limit_{which}"] = float(np.linalg.norm(beta - limit) / max(np.linalg.norm(limit), 1e-300))
    return columns


def certificates(net: Network, run: RunSpec, params, X, y, prediction: Prediction | None,
                 path: np.ndarray | None = None) -> Certificates:
    """The certificates of a classification end point `params` (see `Certificates`). `prediction`: the margin
    ratio's reference (None: no ratio). `path`: earlier betas of the flow, shape (K, d), oldest first, for the
    support detection of the KKT residual (odeco nets with a square S)."""
    distance = kkt_distance(net, params, X, y, run.loss)
    value, name, note = distance.distance, "kkt_distance", distance.note
    if net.odeco is not None:
        S = net.odeco[0]
        square = S.shape[0] == S.shape[1]
        kkt = kkt_residual(net, X, y, params, path=path if square else None)
        value, name, note = max(kkt.residual, kkt.dual_violation or 0.0), "kkt", kkt.note
    ratio = float("nan")
    if prediction is not None and prediction.beta is not None:
        ratio = prediction_margin_ratio(net, X, y, params, prediction)
    return Certificates(value, name, distance.distance, distance.alignment,
                        singular_vector_residual(net, params, X, y).residual, ratio, note)


def check_group(net: Network, runs: list[RunSpec], params0, params, betas, statuses, X, y, paths=None
                ) -> list[CheckOutcome]:
    """`check_run` for every run of a solved group (params with a leading batch axis). The run-dependent theory
    (regression: exact and lazy limits) is asked for the whole group at once, so regression predictions take one
    compiled call per group instead of one per run. `paths`: each run's recorded `Path` (classification: for the
    certificates' support detection and the rate test), or None."""
    member = lambda tree, i: tuple(np.asarray(leaf)[i] for leaf in tree)  # noqa: E731
    precomputed = [None] * len(runs)
    if any(run.check.enabled for run in runs):
        precomputed = list(zip(*_group_theory(net, runs[0], params0, X, y)))
    return [check_run(net, run, member(params0, i), member(params, i), betas[i], statuses[i], X, y,
                      precomputed=precomputed[i], path=None if paths is None else paths[i])
            for i, run in enumerate(runs)]


def _prediction(net: Network, run: RunSpec, X, y, params0) -> Prediction:
    """The prediction a run is judged against: the theory's (`check.against = "theory"`) or the named
    alternative."""
    against = run.check.against
    if against == "theory":
        return predict(net, X, y, loss=run.loss, init=params0)
    if against in MAX_MARGIN_NORMS:
        return max_margin(net, X, y, against)
    if against == "lazy":
        return predict(net, X, y, loss=run.loss, init=params0, regime="lazy")
    beta = np.asarray(min_norm_interpolant(X, y))
    return Prediction(beta, "min l2 norm (against min_norm)", False, {})


def _group_theory(net: Network, run: RunSpec, params0, X, y):
    """(predictions, scale limits, theory rates) of every run of a group: each a list with an entry (or exception)
    per run. The rate (classification only; None for regression) is `theory_rate_exponent`'s `(exponent, note)`
    for the network, whatever the run is judged against: it is the flow's rate."""
    size = len(np.asarray(params0[0]))
    if run.task == "classification":  # the limit does not depend on the run
        (prediction,) = _guard(lambda: [_prediction(net, run, X, y, None)], 1)
        theory = prediction if run.check.against == "theory" else _guard(lambda: [predict(net, X, y, run.loss)], 1)[0]
        (rate,) = _guard(lambda: [theory_rate_exponent(net, X, y, theory)] if isinstance(theory, Prediction)
                         else [(np.nan, f"no theory prediction ({type(theory).__name__}: {theory})")], 1)
        return [prediction] * size, [None] * size, [rate] * size
    limits = _guard(lambda: group_scale_limits(net, run, params0, X, y), size)
    if run.check.against == "theory":
        predictions = _guard(lambda: predict_batch(real_odeco(net) or net, X, y, loss=run.loss,
                                                   inits=tuple(params0)), size)
    elif run.check.against == "lazy":
        predictions = _guard(lambda: predict_batch(net, X, y, loss=run.loss, inits=tuple(params0), regime="lazy"),
                             size)
    else:
        predictions = _guard(lambda: [_prediction(net, run, X, y, None)], 1) * size
    return predictions, limits, [None] * size


def _guard(compute, size: int) -> list:
    """The per-run results of `compute()`, or its exception for every run (recorded per row, never raised)."""
    try:
        return compute()
    except Exception as error:  # noqa: BLE001
        return [error] * size


def check_run(net: Network, run: RunSpec, params0, params, beta, status: str, X, y, precomputed=None, path=None
              ) -> CheckOutcome:
    """Compare one run's final `beta` with the prediction it is judged against (`run.check.against`) and decide
    its verdict with the config's tolerances. A run that did not converge fails, whatever its distance to the
    prediction. `precomputed`: `(prediction, scale limits, theory rate)` of this run from `check_group` (each
    possibly an exception). `path`: the run's recorded `Path` (classification), for the certificates' support
    detection and, where only the cosine falls short, the rate test that can earn "consistent" (`rate_test`)."""
    if not run.check.enabled:
        return CheckOutcome(check_kind=DISABLED, verdict=NOT_JUDGED, reason="check disabled")
    beta = np.asarray(beta)
    classification = run.task == "classification"
    against = run.check.against
    prediction, scale, theory_rate = precomputed if precomputed is not None else (None, None, None)
    limits: dict = {}
    if not classification:
        try:
            limits = limit_columns(net, run, params0, beta, X, y, limits=scale)
        except Exception as error:  # noqa: BLE001 - a measurement, never the verdict
            limits = {"limit_small": f"error: {type(error).__name__}: {error}"}
        if against == "theory":
            net = real_odeco(net) or net  # a complex-stored but real decomposition gets the exact prediction
    try:
        if isinstance(prediction, Exception):
            raise prediction
        if prediction is None:
            prediction = _prediction(net, run, X, y, params0)
    except Exception as error:  # noqa: BLE001 - recorded in the row; the sweep goes on
        return CheckOutcome(reason="no prediction", check_error=f"{type(error).__name__}: {error}", limits=limits)
    name, exact = str(prediction.name), bool(prediction.exact)
    measured, certificate_error = Certificates(), ""
    if classification:
        try:
            measured = certificates(net, run, params, X, y, prediction, None if path is None else path.late())
        except Exception as error:  # noqa: BLE001
            certificate_error = f"certificate: {type(error).__name__}: {error}"
    if prediction.beta is None:  # no closed prediction (e.g. partial convolutions): the certificate decides
        return _certificate_only(run, status, name, measured, certificate_error)
    predicted = np.real(np.asarray(prediction.beta, dtype=complex)).astype(float)
    beta_norm, predicted_norm = np.linalg.norm(beta), np.linalg.norm(predicted)
    cosine = float(beta @ predicted / (beta_norm * predicted_norm)) if beta_norm > 0 and predicted_norm > 0 \
        else float("nan")
    reasons = [] if status == "converged" else [f"status {status}"]
    notes = []  # said in `reason`, but not against the verdict
    judged = True
    hypothesis = against != "theory"
    if run.task == "regression":
        relative_error = float(np.linalg.norm(beta - predicted) / max(predicted_norm, 1e-300))
        if exact or hypothesis:
            kind = EXACT if exact else f"against {against}"
            if not relative_error <= run.check.tolerance:
                reasons.append(f"relative error {relative_error:.2e} > tolerance {run.check.tolerance:.0e}")
        else:
            # A limit in the initial scale: at a finite scale no theorem says where this run ends, so the
            # distance is a measurement, not a verdict.
            kind, judged = LIMIT, False
            reasons.append(f"no exact theory at a finite scale: {name} is a limit in the initial scale")
    else:
        kind = DIRECTION if not hypothesis else f"against {against}"
        direction = predicted / predicted_norm if predicted_norm > 0 else predicted
        relative_error = float(np.linalg.norm(beta / max(beta_norm, 1e-300) - direction))
        short = not cosine >= run.check.cosine
        certified = None
        # The certificates belong to the theory: an alternative is judged on direction and margin only.
        if run.check.certificate is not None and not hypothesis:
            certified = bool(measured.name) and measured.value <= run.check.certificate
            if not measured.name:
                reasons.append("no certificate")
            elif not certified:
                reasons.append(measured.failure(run.check.certificate))
        if certified and short and _stationarity_only(net, exact):
            # Depth > 2 odeco: the theorem is that the limit is *a* KKT point of the l_{2/L} problem, and the
            # certificate says the end point is one; the prediction is the best KKT point found, so a flow
            # elsewhere is at another stationary point, which the theory allows (the margin ratio says how good).
            kind, short = STATIONARY, False
            notes.append(f"another KKT point than the prediction (cosine {cosine:.6f}, margin ratio "
                         f"{measured.margin_ratio:.4f}): the theory asserts a stationary point only")
        if short:
            reasons.append(f"cosine {cosine:.6f} < {run.check.cosine}")
        if kind != STATIONARY and run.check.margin is not None and \
                not abs(measured.margin_ratio - 1) <= run.check.margin:
            reasons.append(f"margin ratio {measured.margin_ratio:.6f} not within {run.check.margin:.0e} of 1")
    if kind == DIRECTION and not exact:
        # Against a global optimum, margin_ratio < 1 says the flow's point is another (worse) KKT point.
        kind += " (global optimum)" if prediction.diagnostics["global"] else " (stationary point)"
    verdict, rate = _verdict(judged, reasons), Rate()
    if classification and short:
        if theory_rate is None:
            theory_rate = _guard(lambda: [theory_rate_exponent(net, X, y, predict(net, X, y, run.loss))], 1)[0]
        if isinstance(theory_rate, Exception):
            theory_rate = (np.nan, f"no theory prediction ({type(theory_rate).__name__}: {theory_rate})")
        rate, earned, message = rate_test(path, direction, run.check.cosine, *theory_rate)
        reasons.append(message)
        # Only a run whose sole shortfall is the cosine is slow rather than wrong; the rate covers the direction.
        if earned and len(reasons) == 2:
            verdict = CONSISTENT
    return CheckOutcome(prediction=name, check_kind=kind, exact=exact, cosine=cosine,
                        relative_error=relative_error, certificate=measured.value, certificate_name=measured.name,
                        verdict=verdict, reason="; ".join(reasons + notes), check_error=certificate_error,
                        predicted_beta=predicted, limits=limits, certificates=measured, rate=rate)


def _stationarity_only(net: Network, exact: bool) -> bool:
    """Whether the classification theory for `net` names a KKT point, not a unique direction: odeco networks of
    depth > 2, whose l_{2/L} max-margin problem is not convex (docs/theory.md §6)."""
    return not exact and net.depth > 2 and net.odeco is not None


def rate_test(path: Path | None, direction: np.ndarray, cosine: float, exponent_theory: float, theory_note: str
              ) -> tuple[Rate, bool, str]:
    """Whether a classification run not yet within `cosine` of the predicted unit `direction` earns
    "consistent": along its `path` the distance `||u - direction||` (u: the unit beta) falls like
    `gamma^(-e)` with the fitted e within RATE_TOLERANCE (relative) of the theory's `exponent_theory`, and the fit
    reaches the tolerance `sqrt(2 (1 - cosine))` at a finite -log L (docs/theory.md §12). Returns the `Rate`
    columns, whether it is earned, and a reason that says why or why not."""
    tolerance = float(np.sqrt(2.0 * (1.0 - cosine)))
    if path is None:
        return Rate(exponent_theory=exponent_theory), False, "no recorded path: no rate test"
    betas = np.asarray(path.betas, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        units = betas / np.linalg.norm(betas, axis=1, keepdims=True)
    fit: RateFit = fit_rate(path.log_loss, np.linalg.norm(units - direction, axis=1), tolerance)
    # The extrapolated pass point means something only where the fit is at the theory's rate (set at the end).
    rate = Rate(fit.exponent, exponent_theory, fit.points)
    if fit.note:
        return rate, False, f"no rate fit: {fit.note}"
    fitted = (f"distance ~ (-log L)^({-fit.exponent:.3g}) fitted over -log L in [{fit.gamma_range[0]:.3g}, "
              f"{fit.gamma_range[1]:.3g}] ({fit.points} checkpoints)")
    if not np.isfinite(exponent_theory):
        return rate, False, f"{fitted}; no theory rate to compare: {theory_note}"
    if not abs(fit.exponent - exponent_theory) <= RATE_TOLERANCE * exponent_theory:
        return rate, False, (f"{fitted}, not at the theory's rate {exponent_theory:.3g} ({theory_note}; tolerance "
                             f"{RATE_TOLERANCE:.0%})")
    if not np.isfinite(fit.pass_at_log_loss):
        return rate, False, f"{fitted}, the theory's rate, but would not reach cosine {cosine} at a finite log L"
    rate = dataclasses.replace(rate, pass_at_log_loss=fit.pass_at_log_loss)
    return rate, True, (f"consistent: {fitted}, the theory's rate {exponent_theory:.3g} ({theory_note}); would "
                        f"reach cosine {cosine} at log L = {fit.pass_at_log_loss:.3g}")


def _certificate_only(run: RunSpec, status: str, name: str, measured: Certificates, certificate_error: str
                      ) -> CheckOutcome:
    reasons = [] if status == "converged" else [f"status {status}"]
    if certificate_error:
        return CheckOutcome(prediction=name, check_kind=CERTIFICATE, reason="no certificate",
                            check_error=certificate_error)
    outcome = CheckOutcome(prediction=name, check_kind=CERTIFICATE, exact=False, certificate=measured.value,
                           certificate_name=measured.name, certificates=measured)
    if run.check.certificate is None:
        return dataclasses.replace(outcome, verdict=NOT_JUDGED,
                                   reason="no closed prediction: set check.certificate to judge the certificate")
    if not measured.value <= run.check.certificate:
        reasons.append(measured.failure(run.check.certificate))
    return dataclasses.replace(outcome, verdict=_verdict(True, reasons), reason="; ".join(reasons))


def _verdict(judged: bool, reasons: list[str]) -> str:
    if not judged:
        return NOT_JUDGED
    return FAILED if reasons else PASSED
