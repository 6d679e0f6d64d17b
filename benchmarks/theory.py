"""Exact regression prediction: damped Newton on the n-dimensional dual (JAX) vs SciPy's SLSQP on the primal.

Diagonal depth-2 network, theorem initialisation at scale alpha, sparse regression (d = 1000, n = 100, 5-sparse).
The primal is `min Q(rho) = alpha^2 sum_j H_2(rho_j / alpha^2) s.t. X rho = y` with `H_2' = h_2^{-1}`,
`h_2(z) = sinh(2z)/2` (docs/theory.md §7). Both run in this process; the table gives each time, their ratio, the
relative gap between the two solutions and each one's interpolation residual. Run: `python benchmarks/theory.py`
(about 6 minutes on 2 CPU cores, nearly all of it SLSQP: ~1-2.5 s per iteration at d = 1000; `--maxiter` caps it).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import scipy.optimize

import ltn
import ltn.data
from ltn.theory import odeco_regression_limit


def primal_objective(alpha):
    def value(rho):
        t = rho / alpha**2
        return alpha**2 * np.sum(t * np.arcsinh(2 * t) - (np.sqrt(1 + 4 * t**2) - 1) / 2) / 2

    def gradient(rho):
        return np.arcsinh(2 * rho / alpha**2) / 2

    return value, gradient


def slsqp(X, y, alpha, maxiter):
    value, gradient = primal_objective(alpha)
    start = X.T @ np.linalg.solve(X @ X.T, y)
    return scipy.optimize.minimize(value, start, jac=gradient, method="SLSQP",
                                   constraints=[{"type": "eq", "fun": lambda b: X @ b - y, "jac": lambda b: X}],
                                   options={"ftol": 1e-14, "maxiter": maxiter})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=1000)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    parser.add_argument("--maxiter", type=int, default=100)  # ~0.8 s per SLSQP iteration at d = 1000
    args = parser.parse_args()
    problem = ltn.data.sparse_regression(0, args.n, args.d, 5)
    X, y = problem.X, problem.y
    net = ltn.Diagonal(args.d, 2)
    print(f"Diagonal depth 2, theorem init, sparse_regression(0, n={args.n}, d={args.d}, 5); "
          f"{jax.devices()[0].platform.upper()}, {jax.device_count()} device(s)\n")
    print("| alpha | Newton steps | Newton time (s) | SLSQP iters | SLSQP time (s) | SLSQP / Newton time "
          "| rel. gap | Newton residual | SLSQP residual |")
    print("|---|---|---|---|---|---|---|---|---|")
    for alpha in args.scales:
        params0 = net.init(None, alpha, kind="theorem")
        odeco_regression_limit(net, X, y, params0).beta.block_until_ready()  # compile outside the timing
        start = time.perf_counter()
        solution = odeco_regression_limit(net, X, y, params0)
        solution.beta.block_until_ready()
        newton_time = time.perf_counter() - start
        beta = np.asarray(solution.beta)
        start = time.perf_counter()
        result = slsqp(X, y, alpha, args.maxiter)
        slsqp_time = time.perf_counter() - start
        gap = np.linalg.norm(beta - result.x) / np.linalg.norm(beta)
        residual = lambda b: np.linalg.norm(X @ b - y) / np.linalg.norm(y)
        flag = "" if result.success else f" ({result.message})"
        print(f"| {alpha:g} | {int(solution.steps)} | {newton_time:.3f} | {result.nit}{flag} | {slsqp_time:.1f} "
              f"| {slsqp_time / newton_time:.0f} | {gap:.1e} | {residual(beta):.1e} | {residual(result.x):.1e} |")


if __name__ == "__main__":
    main()
