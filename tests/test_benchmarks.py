"""Smoke test of the reach harness (benchmarks/reach.py) on its --quick cases: every solve lands on the case's
independent reference, and a scipy solve cut off by the cap is reported unfinished, never as a result."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import reach  # noqa: E402

pytestmark = pytest.mark.slow  # two ltn compiles and six compiled scipy callbacks: about 30 s on 2 cores


@pytest.fixture(scope="module")
def quick_cases():
    regression, classification = reach.cases(quick=True)
    return regression, classification


@pytest.fixture(scope="module")
def regression_row(quick_cases):
    return reach.measure(quick_cases[0], cap_s=60.0)


def test_regression_solves_reach_the_exact_limit(regression_row):
    # Measured: ltn 9.8e-11, LSODA 1.0e-10, Radau 1.0e-10 (the stop is ltn's certificate at xtol 1e-10).
    assert regression_row.reference_name.startswith("exact limit")
    assert regression_row.ltn.finished and regression_row.ltn.label == "converged"
    for name in ("ltn", "LSODA", "Radau"):
        assert regression_row.errors[name] < 1e-8, name
    for peer in regression_row.peers.values():
        assert peer.finished and peer.label == "stopped" and peer.compile_s > 0


def test_classification_direction_matches_the_reference(quick_cases):
    row = reach.measure(quick_cases[1], cap_s=60.0, methods=("LSODA",))
    # Measured: ltn 3.2e-14, LSODA 1.0e-13 from the Radau reference at rtol 1e-12.
    assert row.reference_name.startswith("Radau")
    assert row.errors["ltn"] < 1e-8 and row.errors["LSODA"] < 1e-8
    assert row.ltn.label == "converged" and row.peers["LSODA"].finished


def test_capped_scipy_solve_is_reported_unfinished(quick_cases, regression_row):
    cut = reach.run_scipy(quick_cases[0], "Radau", cap_s=0.0)
    assert not cut.finished and cut.label == "unfinished at 0 s"
    assert np.all(np.isfinite(cut.beta))
    assert reach.error_to(quick_cases[0], np.asarray(regression_row.peers["Radau"].beta), cut.beta) > 1e-3
    assert reach._ratio(cut, regression_row.ltn).startswith(">")
    row = reach.Row(quick_cases[0], "exact", regression_row.ltn, {"Radau": cut}, {"ltn": 0.0, "Radau": 1.0})
    text = reach.table([row])
    assert "unfinished at 0 s" in text and "| - |" not in text and "Radau / ltn" in text


def test_next_process_reuses_the_persistent_caches(quick_cases, regression_row):
    """The harness also times the call in a process that finds ltn's caches filled by another (NaN would mean it
    was not run; the children must find the case by its name)."""
    flow = reach.run_ltn(quick_cases[0], next_process=True)
    assert np.isfinite(flow.next_process_s) and flow.next_process_s > 0
    assert np.isnan(regression_row.ltn.next_process_s)  # not asked for: not timed
    np.testing.assert_array_equal(flow.beta, regression_row.ltn.beta)
    assert "(next process " in reach._ratio(regression_row.peers["LSODA"], flow)
    assert "next process" in reach._ltn_cell(flow, 0.0)


def test_compile_options_harness_compiles_a_program_in_a_child(quick_cases):
    """benchmarks/compile_options.py: a child process compiles one flow program with ltn's options and reports its
    seconds; the program it compiles is the flow's own (the same end point as `gradient_flow`'s probe)."""
    import compile_options

    assert compile_options._compile_s(quick_cases[0], "tsit5", "ltn") > 0
    solve, args = compile_options._program(quick_cases[0], "tsit5")
    compiled, seconds = compile_options._compiled(solve, args, compile_options.compiler_options())
    leg = compiled(*args)
    assert seconds > 0 and int(leg.steps[0]) > 0 and all(np.all(np.isfinite(layer)) for layer in leg.params)
    # --brief: the probe of a batch, compiled as a brief program in a child
    assert compile_options._compile_s(quick_cases[0], "tsit5", "brief", batch=2) > 0
    solve, args = compile_options._program(quick_cases[0], "tsit5", batch=2)
    both = compile_options._compiled(solve, args, compile_options.TIERS["brief"]())[0](*args)
    # Run 1 of the batch is the run above: the same steps, and a point as close as rounding lets two step-size
    # sequences stay over 2000 steps (measured 1.4e-8 relative, entrywise in the parameters).
    assert int(both.steps[0]) == int(leg.steps[0])
    for layer, alone in zip(both.params, leg.params):
        np.testing.assert_allclose(np.asarray(layer[0]), np.asarray(alone[0]), rtol=1e-6)
