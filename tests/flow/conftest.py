"""Fixtures shared by the flow tests."""

import pytest


@pytest.fixture(params=["dense", "krylov"])
def linear_solver(request, monkeypatch):
    """Both linear algebras of the implicit methods: a dense Jacobian kept across steps (these small networks'
    default) and GMRES on Jacobian-vector products (the default on larger ones, `dense_max_parameters`)."""
    from ltn.flow import _gradient_flow, _solvers

    if request.param == "krylov":
        monkeypatch.setattr(_solvers, "DENSE_MAX_PARAMETERS", 0)
        monkeypatch.setattr(_solvers, "CHORD_MAX_PARAMETERS", 0)
    _gradient_flow._compiled_flow.cache_clear()  # the linear solver is chosen when a leg is compiled
    yield request.param
    _gradient_flow._compiled_flow.cache_clear()


@pytest.fixture(params=["in_turn", "vmapped"])
def batch_mode(request, monkeypatch):
    """Both ways a batch of stepped runs (and of gradient descent) is solved: in turn (a CPU's default) and vmapped
    (an accelerator's)."""
    from ltn.flow import _descent, _gradient_flow

    compiled = (_gradient_flow._compiled_flow, _descent._compiled_descent)
    for module in (_gradient_flow, _descent):
        monkeypatch.setattr(module, "runs_in_turn", lambda: request.param == "in_turn")
    for cache in compiled:  # the batch's mode is chosen when a program is traced
        cache.cache_clear()
    yield request.param
    for cache in compiled:
        cache.cache_clear()
