"""Gradient descent the way published implicit-bias code does it: a plain Python loop over steps, one run at a
time, NumPy arrays and a hand-written gradient (no JIT, no batching).

Depth-2 diagonal network `beta = u * v` on the squared loss `1/2 ||X beta - y||^2` (docs/theory.md §3, §7),
started at the theorem initialisation `u = alpha, v = 0`. `reference_gd(X, y, alpha, step, steps)` returns the
final beta and the number of gradient evaluations; `python benchmarks/reference_gd.py` times it on the problem of
benchmarks/flow.py and compares with the exact limit.
"""

from __future__ import annotations

import time

import numpy as np


def reference_gd(X, y, alpha: float, step: float, steps: int, tol: float = 0.0):
    """Plain GD on (u, v); stops after `steps` steps or when ||grad|| <= tol. Returns (beta, gradient evals)."""
    d = X.shape[1]
    u = np.full(d, float(alpha))
    v = np.zeros(d)
    evaluations = 0
    for _ in range(steps):
        residual = X @ (u * v) - y
        g = X.T @ residual  # dL/dbeta
        gu, gv = g * v, g * u
        evaluations += 1
        if tol and np.sqrt(gu @ gu + gv @ gv) <= tol:
            break
        u, v = u - step * gu, v - step * gv
    return u * v, evaluations


def main():
    import ltn
    from ltn.data import sparse_regression
    from ltn.theory import predict

    problem = sparse_regression(seed=0, n=20, d=100, sparsity=3)
    X, y = problem.X, problem.y
    net = ltn.Diagonal(100, 2)
    alpha = 0.1
    limit = np.asarray(predict(net, X, y, init=net.init(None, alpha, kind="theorem")).beta)
    step = 0.5 / np.linalg.norm(X, 2) ** 2
    start = time.perf_counter()
    beta, evaluations = reference_gd(X, y, alpha, step, 200_000, tol=1e-12)
    wall = time.perf_counter() - start
    print(f"reference GD: {evaluations} steps in {wall:.2f} s, relative error to the flow's limit "
          f"{np.linalg.norm(beta - limit) / np.linalg.norm(limit):.2e}")


if __name__ == "__main__":
    main()
