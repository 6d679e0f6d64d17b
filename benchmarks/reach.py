"""Reach: ltn's flow against the peer a user would pick instead, on the stiff cases of issue 13
(run: `python benchmarks/reach.py [--out FILE] [--quick] [--case NAME ...] [--scipy-cap SECONDS]`).

The peer is scipy's `solve_ivp` with an implicit method and the exact Jacobian: the vector field and its
Jacobian (`jax.jacfwd`) written in JAX, jit-compiled, and called from scipy, in this process. Per case:
- ltn: `ltn.gradient_flow` with default options (classification: plus its log-loss target), timed on its first
  call, compilation included (and on a second call when the first took under a minute); its status, solver,
  steps and gradient evaluations from `flow.stats`. The first call is a library call with ltn's persistent caches
  off (their default in Python). And ("next process") the same call in a process with the caches on, after
  another process filled them (a fresh folder per case): what every later run of the same problem costs
  (`ltn run` keeps these caches by default).
- scipy LSODA and Radau at ltn's default tolerances, each with a stop that matches ltn's: regression ends where
  the point interpolates and the Gauss-Newton estimate of the change of beta still to come is small (ltn's
  certificate, docs/theory.md §11), classification at the log-loss target (a terminal event: scipy locates the
  crossing). Wall time of the solve, and separately the JAX compilation of the callbacks; steps, field and
  Jacobian evaluations (nfev, njev), LU factorisations. A solve still running at the cap is reported unfinished,
  with the error of the point it had reached.
- error: regression, `||beta - limit|| / ||limit||` to the exact limit (`ltn.predict`, a Newton solve on the
  dual, independent of any flow); classification, `||beta/|beta| - ref/|ref|||` to the direction of a reference
  solve of the same reparametrised path ltn integrates, `d theta/ds = -||theta||^(2-L) grad log L(theta)`: scipy
  Radau with the exact Jacobian at rtol 1e-12 (LSODA at the same tolerances where Radau does not finish within
  the cap), stopped at the same log-loss.
Ratios are scipy / ltn wall time, both including compilation.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.integrate
from jax.flatten_util import ravel_pytree

import ltn
from ltn.data import separable_classification, sparse_regression
from ltn.losses import log_risk, risk

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import first_call, machine, markdown_table  # noqa: E402

# ltn's default step-size tolerances and regression certificate: the peer runs like for like.
PEER_RTOL, PEER_ATOL = 1e-11, 1e-13
RESIDUAL_TOL, XTOL = 1e-9, 1e-10
# The classification reference: tighter than the peers by 10x in rtol.
REFERENCE_RTOL, REFERENCE_ATOL = 1e-12, 1e-15
# A regression peer integrates to this time at most (its stop ends it long before).
REGRESSION_T_END = 1e16
CLASSIFICATION_S_END = 1e8
# A second ltn call (warm) is timed only when the first took less than this.
WARM_REPEAT_BELOW_S = 60.0


@dataclasses.dataclass(frozen=True, eq=False)
class Case:
    """One benchmark problem: a network, an initialisation, data and a loss; `target_log_loss` for
    classification; `ltn_options` beyond the defaults; `peers`: whether scipy runs on it."""

    name: str
    net: ltn.networks.Network
    params0: tuple
    X: np.ndarray
    y: np.ndarray
    loss: str = "squared"
    target_log_loss: float | None = None
    ltn_options: dict = dataclasses.field(default_factory=dict)
    peers: bool = True

    @property
    def regression(self) -> bool:
        return self.loss == "squared"

    def options(self) -> dict:
        """The case's `ltn.gradient_flow` options beyond the defaults: its own, and its target."""
        options = dict(self.ltn_options)
        if self.target_log_loss is not None:
            options["target_log_loss"] = self.target_log_loss
        return options


def regression_case(name: str, depth: int, d: int, n: int, alpha: float, sparsity: int = 3, **fields) -> Case:
    """Sparse regression (seed 0) on a diagonal network with the theorem initialisation at scale `alpha`."""
    problem = sparse_regression(seed=0, n=n, d=d, sparsity=sparsity)
    net = ltn.Diagonal(d, depth)
    return Case(name, net, net.init(None, alpha, kind="theorem"), problem.X, problem.y, **fields)


def classification_case(name: str, net: ltn.networks.Network, n: int, target_log_loss: float) -> Case:
    """Separable data (seed 0, margin 1, dense teacher), exponential loss, Gaussian init at scale 0.5 (key 0),
    as in configs/paper/classification.toml."""
    problem = separable_classification(seed=0, n=n, d=net.d, margin=1.0)
    return Case(name, net, net.init(jax.random.PRNGKey(0), 0.5), problem.X, problem.y, "exponential",
                target_log_loss)


def cases(quick: bool) -> list[Case]:
    if quick:
        return [regression_case("regression, diagonal L = 3, alpha = 0.1, d = 8, n = 4", 3, 8, 4, 0.1, sparsity=2),
                classification_case("classification, diagonal L = 2, d = 6, n = 4, to log L = -100",
                                    ltn.Diagonal(6, 2), 4, -100.0)]
    fully_connected = ltn.FullyConnected(30, (30, 30))
    return [
        regression_case("regression, diagonal L = 4, alpha = 0.01, d = 30, n = 10", 4, 30, 10, 0.01),
        regression_case("regression, diagonal L = 3, alpha = 0.01, d = 200, n = 40", 3, 200, 40, 0.01),
        regression_case("Woodworth, diagonal L = 2, alpha = 1e-4, d = 1000, n = 100", 2, 1000, 100, 1e-4,
                        sparsity=5),
        regression_case("Woodworth with woodworth.toml's flow options (tsit5, max_steps 1e6)", 2, 1000, 100, 1e-4,
                        sparsity=5, ltn_options={"solver": "tsit5", "max_steps": 1_000_000}, peers=False),
        classification_case("classification, diagonal L = 2, d = 30, n = 10, to log L = -1e8",
                            ltn.Diagonal(30, 2), 10, -1e8),
        classification_case("classification, fully connected (30, 30), d = 30, n = 10, to log L = -1e8",
                            fully_connected, 10, -1e8),
        classification_case("classification, diagonal L = 2, to log L = -1e10", ltn.Diagonal(30, 2), 10, -1e10),
        classification_case("classification, fully connected (30, 30), to log L = -1e10", fully_connected, 10,
                            -1e10),
    ]


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One solve of one case: how it ended, its work and wall time, and its end point."""

    label: str  # status or how the scipy solve ended
    wall_s: float  # the solve (ltn: first call, compilation included)
    compile_s: float  # scipy: JAX compilation of the callbacks (ltn: NaN)
    warm_s: float  # ltn: a second call (NaN when not timed)
    next_process_s: float  # ltn: the call in a new process with the persistent caches filled (NaN: not timed)
    work: str  # steps and evaluations, in words
    beta: np.ndarray
    finished: bool

    @property
    def total_s(self) -> float:
        return self.wall_s + (0.0 if np.isnan(self.compile_s) else self.compile_s)


def _ltn_solve(case: Case):
    """The case's `ltn.gradient_flow` call, with default options plus the case's target and options."""
    return lambda: ltn.gradient_flow(case.net, case.params0, case.X, case.y, case.loss, **case.options())


def run_ltn(case: Case, next_process: bool = False) -> Measurement:
    """`ltn.gradient_flow` with default options (plus the case's target and options), first call timed, then a
    second call, and (`next_process`) the call in a new process that finds ltn's persistent caches filled."""
    solve = _ltn_solve(case)
    flow, cold = first_call(solve)
    warm = first_call(solve)[1] if cold < WARM_REPEAT_BELOW_S else float("nan")
    stats = flow.stats
    work = f"{stats.solver_name}, {int(stats.steps)} steps, {int(stats.grad_evals)} grad evals"
    later = _next_process_s(case) if next_process else float("nan")
    return Measurement(flow.status_name, cold, float("nan"), warm, later, work, np.asarray(flow.beta),
                       flow.status_name == "converged")


def _next_process_s(case: Case) -> float:
    """Wall seconds of the case's ltn call in a process with ltn's caches on, after another process filled them."""
    with tempfile.TemporaryDirectory(prefix="ltn-reach-") as cache:
        for _ in range(2):
            child = subprocess.run([sys.executable, os.path.abspath(__file__), "--time-ltn", case.name],
                                   env={**os.environ, "LTN_CACHE_DIR": cache}, capture_output=True, text=True,
                                   check=True)
    return float(child.stdout.split()[-1])


def _time_ltn(name: str) -> float:
    """In the child of `_next_process_s`: the named case's ltn call, timed, with the persistent caches on."""
    ltn.enable_compilation_cache()
    case = next(case for quick in (False, True) for case in cases(quick) if case.name == name)
    return first_call(_ltn_solve(case))[1]


class _Field:
    """The case's vector field on flat parameters, its Jacobian and the stop, jit-compiled, as scipy callbacks
    (NumPy in, NumPy out), counting calls."""

    def __init__(self, case: Case):
        flat0, unravel = ravel_pytree(case.params0)
        net, X, y, loss = case.net, jnp.asarray(case.X), jnp.asarray(case.y), case.loss
        self.flat0, self.unravel = np.asarray(flat0), unravel
        if case.regression:
            def field(v):
                return -jax.grad(lambda w: risk(net.apply(unravel(w), X), y, loss))(v)

            def stop(v):
                return _regression_stop(net, unravel, X, y, v)
        else:
            def field(v):  # the reparametrised path ltn integrates (docs/theory.md §9)
                return -jnp.linalg.norm(v) ** (2 - net.depth) * jax.grad(
                    lambda w: log_risk(net.apply(unravel(w), X), y, loss))(v)

            def stop(v):
                return log_risk(net.apply(unravel(v), X), y, loss) - case.target_log_loss
        self._field, self._jacobian, self._stop = jax.jit(field), jax.jit(jax.jacfwd(field)), jax.jit(stop)
        self.nfev = self.njev = 0

    def compile(self) -> float:
        """Compile the three callbacks (their first calls); returns the seconds it took."""
        start = time.perf_counter()
        jax.block_until_ready((self._field(self.flat0), self._jacobian(self.flat0), self._stop(self.flat0)))
        return time.perf_counter() - start

    def field(self, t, v):
        self.nfev += 1
        return np.asarray(self._field(v))

    def jacobian(self, t, v):
        self.njev += 1
        return np.asarray(self._jacobian(v))

    def stop(self, t, v):
        return float(self._stop(v))

    def beta(self, net, v) -> np.ndarray:
        return np.asarray(net.beta(self.unravel(jnp.asarray(v))))


def _regression_stop(net, unravel, X, y, v):
    """Positive until ltn's certificate holds: the point interpolates, `||X beta - y|| <= RESIDUAL_TOL
    || |X| |beta| + |y| ||`, and the Gauss-Newton estimate of the change of beta still to come,
    `||dbeta[J^+ r]||`, is at most `XTOL ||beta||` (computed only where the first test holds)."""
    beta = net.beta(unravel(v))
    residual = X @ beta - y
    log_residual = jnp.log(jnp.linalg.norm(residual) / (RESIDUAL_TOL * jnp.linalg.norm(jnp.abs(X) @ jnp.abs(beta)
                                                                                        + jnp.abs(y))))

    def log_change(v):
        J = jax.jacrev(lambda w: net.apply(unravel(w), X))(v)
        step = J.T @ jnp.linalg.solve(J @ J.T, residual)
        change = jax.jvp(lambda w: net.beta(unravel(w)), (v,), (step,))[1]
        value = jnp.log(jnp.linalg.norm(change) / (XTOL * jnp.linalg.norm(beta)))
        return jnp.where(jnp.isfinite(value), value, 1.0)

    return jax.lax.cond(log_residual > 0, lambda v: log_residual, log_change, v)


def run_scipy(case: Case, method: str, cap_s: float, rtol: float = PEER_RTOL, atol: float = PEER_ATOL
              ) -> Measurement:
    """`scipy.integrate.solve_ivp` with `method` ("LSODA" or "Radau") and the exact Jacobian, stopped like ltn
    (see the module docstring) or, unfinished, at `cap_s` seconds of solving."""
    callbacks = _Field(case)
    compile_s = callbacks.compile()
    base = getattr(scipy.integrate, method)
    deadline = time.perf_counter() + cap_s
    solvers = []

    class Capped(base):
        """The method, counting its accepted steps and failing its next step once the cap has passed."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.accepted = 0
            solvers.append(self)

        def _step_impl(self):
            if time.perf_counter() > deadline:
                return False, f"unfinished at {cap_s:g} s"
            success, message = super()._step_impl()
            self.accepted += success
            return success, message

    def stop(t, v):
        return callbacks.stop(t, v)

    stop.terminal, stop.direction = True, -1.0
    t_end = REGRESSION_T_END if case.regression else CLASSIFICATION_S_END
    start = time.perf_counter()
    sol = scipy.integrate.solve_ivp(callbacks.field, (0.0, t_end), callbacks.flat0, method=Capped,
                                    t_eval=[t_end], events=stop, jac=callbacks.jacobian, rtol=rtol, atol=atol)
    wall = time.perf_counter() - start
    solver = solvers[0]
    stopped = sol.status == 1
    end = sol.y_events[0][-1] if stopped else solver.y
    label = ("stopped" if stopped else "reached t_end" if sol.status == 0 else sol.message)
    work = (f"{solver.accepted} steps, nfev {callbacks.nfev}, njev {callbacks.njev}, "
            f"LU {sol.nlu}")
    return Measurement(label, wall, compile_s, float("nan"), float("nan"), work, callbacks.beta(case.net, end),
                       stopped)


def error_to(case: Case, reference: np.ndarray, beta: np.ndarray) -> float:
    """Regression: relative distance to the limit; classification: distance between directions."""
    if case.regression:
        return float(np.linalg.norm(beta - reference) / np.linalg.norm(reference))
    unit = lambda b: b / np.linalg.norm(b)  # noqa: E731
    return float(np.linalg.norm(unit(beta) - unit(reference)))


def reference_of(case: Case, cap_s: float) -> tuple[np.ndarray, str]:
    """The independent reference of a case and its name."""
    if case.regression:
        return np.asarray(ltn.predict(case.net, case.X, case.y, init=case.params0).beta), "exact limit (ltn.predict)"
    tried = []
    for method in ("Radau", "LSODA"):  # LSODA where Radau does not finish within the cap
        solve = run_scipy(case, method, cap_s, REFERENCE_RTOL, REFERENCE_ATOL)
        name = f"{method}, rtol {REFERENCE_RTOL:g}, atol {REFERENCE_ATOL:g}, {solve.total_s:.1f} s"
        if solve.finished:
            return solve.beta, "; ".join([*tried, name])
        tried.append(f"{name}: {solve.label}")
    # no reference: every error of the case is NaN, and the table says why
    return np.full_like(solve.beta, np.nan), "; ".join(tried) + ", no reference"


@dataclasses.dataclass(frozen=True)
class Row:
    case: Case
    reference_name: str
    ltn: Measurement
    peers: dict  # method -> Measurement
    errors: dict  # "ltn" / method -> error to the reference


def measure(case: Case, cap_s: float, methods=("LSODA", "Radau"), next_process: bool = False) -> Row:
    """Every solve of one case: the reference, ltn, then the scipy peers, in this process (and `next_process`: ltn
    in two more, see `run_ltn`)."""
    reference, reference_name = reference_of(case, cap_s)
    flow = run_ltn(case, next_process)
    peers = {method: run_scipy(case, method, cap_s) for method in (methods if case.peers else ())}
    errors = {name: error_to(case, reference, m.beta) for name, m in [("ltn", flow), *peers.items()]}
    return Row(case, reference_name, flow, peers, errors)


def _ltn_cell(m: Measurement, error: float) -> str:
    later = [f"warm {m.warm_s:.2f} s"] if not np.isnan(m.warm_s) else []
    later += [f"next process {m.next_process_s:.2f} s"] if not np.isnan(m.next_process_s) else []
    later = f" ({', '.join(later)})" if later else ""
    return f"{m.wall_s:.2f} s{later}, {m.label}, {m.work}, error {error:.1e}"


def _peer_cell(m: Measurement, error: float) -> str:
    return f"{m.wall_s:.2f} s + {m.compile_s:.2f} s compile, {m.label}, {m.work}, error {error:.1e}"


def _ratio(peer: Measurement, flow: Measurement) -> str:
    """scipy / ltn on the first call, and on the call in a new process where it was timed."""
    more = "" if peer.finished else ">"
    text = f"{more}{peer.total_s / flow.wall_s:.3g}x"
    if not np.isnan(flow.next_process_s):
        text += f" (next process {more}{peer.total_s / flow.next_process_s:.3g}x)"
    return text


def table(rows: list[Row]) -> str:
    """Markdown: one line per case, ltn and each peer, and the scipy / ltn ratios."""
    methods = sorted({method for row in rows for method in row.peers})
    header = ["case", "ltn", *[f"scipy {m}" for m in methods], *[f"{m} / ltn" for m in methods], "reference"]
    lines = []
    for row in rows:
        peers = [_peer_cell(row.peers[m], row.errors[m]) if m in row.peers else "-" for m in methods]
        ratios = [_ratio(row.peers[m], row.ltn) if m in row.peers else "-" for m in methods]
        lines.append([row.case.name, _ltn_cell(row.ltn, row.errors["ltn"]), *peers, *ratios, row.reference_name])
    return markdown_table(header, lines)


def reach(quick: bool = False, cap_s: float = 300.0, names: tuple[str, ...] = ()) -> str:
    """The section for benchmarks/RESULTS.md: every case (or those whose name contains one of `names`)."""
    chosen = [case for case in cases(quick) if not names or any(name in case.name for name in names)]
    rows = []
    for case in chosen:
        started = time.perf_counter()
        rows.append(measure(case, cap_s, next_process=True))
        print(f"[{case.name}: {time.perf_counter() - started:.0f} s]\n{table(rows[-1:])}", file=sys.stderr)
    return ("### Reach: ltn's flow vs scipy's implicit solvers with the exact Jacobian (issue 13)\n\n"
            "ltn at default options, first call (compilation included, ltn's caches off); scipy `solve_ivp` at "
            f"rtol {PEER_RTOL:g}, atol {PEER_ATOL:g} (ltn's defaults), JAX-compiled field and `jax.jacfwd` "
            f"Jacobian, solve time + callback compile time, capped at {cap_s:g} s. Error: regression, relative "
            "distance to the exact limit; classification, distance between unit directions to the reference. "
            "Ratio: scipy (solve + compile) / ltn (first call, then in a new process with ltn's persistent caches "
            "filled by another); "
            "'>' where scipy did not finish.\n\n" + table(rows) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--quick", action="store_true", help="tiny cases: a smoke test, not the reported numbers")
    parser.add_argument("--case", action="append", default=[], help="only cases whose name contains this")
    parser.add_argument("--scipy-cap", type=float, default=300.0, help="seconds of solving per scipy run")
    parser.add_argument("--time-ltn", metavar="CASE", help=argparse.SUPPRESS)  # the child of _next_process_s
    args = parser.parse_args(argv)
    if args.time_ltn:
        print(_time_ltn(args.time_ltn))
        return
    text = f"Machine: {machine()}.\n\n" + reach(args.quick, args.scipy_cap, tuple(args.case))
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
