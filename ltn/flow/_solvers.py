"""The ODE methods of the flow, behind one small interface.

An explicit Runge-Kutta pair (`ExplicitPair`) is cheap per step but its step is bounded by stability,
`h |lambda_max| <~ 3`, where `lambda_max` is the largest curvature of the loss along the path: a flow whose slow
directions still move while its fast ones have settled (the rich regime, late classification) is stiff, and an
explicit pair crawls. The implicit, L-stable ESDIRK methods of Kvaerno take steps set by accuracy alone. On a
network small enough (`dense_max_parameters`; `DenseChord`) their stage equations are solved by chord iterations on
a Jacobian (a batch of Jacobian-vector products) and an inverse of `I - h gamma J` kept across stages and steps
(`ChordESDIRK`). Above (`NewtonKrylov`), by Newton's method whose linear systems go to GMRES: `J v` is a
Jacobian-vector product of the vector field through JAX (for the flow, a Hessian-vector product), so no Jacobian
is formed and the cost of a step grows like that of a gradient, at any parameter count. The variable-order BDF
(`MultistepBDF`) solves one implicit equation per step from a predictor on the path's history, with its own
step-size and order control: far out on a classification path, where Kvaerno5's stage solves fail, it takes a
seventh of the steps (docs/theory.md §9).
"""

from __future__ import annotations

from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx

from ._bdf import BDF
from ._chord import ChordESDIRK
from ._stepping import ControlledStep

_EXPLICIT = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}
_IMPLICIT = {"kvaerno5": diffrax.Kvaerno5, "kvaerno3": diffrax.Kvaerno3}
EXPLICIT_SOLVERS = tuple(_EXPLICIT)
LEG_SOLVERS = (*_EXPLICIT, *_IMPLICIT, "bdf")  # the methods one leg of a flow is solved with
FLOW_SOLVERS = ("auto", *LEG_SOLVERS)
# Newton's stage solves stop at a relative change of NEWTON_RTOL; GMRES at a relative residual of GMRES_RTOL.
# The step's error estimate, not these, controls accuracy: a loose stage solve shows up as a larger estimated
# error, and a Newton solve that fails to converge rejects the step (diffrax halves it).
NEWTON_RTOL, GMRES_RTOL, GMRES_RESTART = 1e-3, 1e-3, 20
# The dense linear algebra of the implicit methods up to this many parameters, GMRES above (docs/theory.md §9):
# Kvaerno's chord for runs solved on their own (alone or in turn) up to CHORD_MAX_PARAMETERS; in a vmapped batch,
# where every run computes the inversions any run asks for, and for BDF, whose triangular solves cost more than
# GMRES's products from there, up to DENSE_MAX_PARAMETERS.
CHORD_MAX_PARAMETERS = 500
DENSE_MAX_PARAMETERS = 128


class StageNewton(optx.Newton):
    """Newton's method for the stage equations, stopped where both the last update and the residual before it are
    small relative to the iterate: `|dz|, |g(z)| <= atol + rtol |z|` (componentwise, in the max norm).

    optimistix's own tests do not fit a far classification path, whose vector field has size ~ ||theta|| and
    round-off ~ (-log L) eps relative to it: the Cauchy test holds the residual to `atol` alone, which round-off
    exceeds from -log L ~ 5e6 on (every step then fails), and the rate test (`cauchy_termination=False`) stalls
    in the round-off from ~5e9 on. A test relative in both spaces is scaled like the stage equation itself.
    """

    def terminate(self, fn, y, args, options, state, tags):
        scale = jax.tree_util.tree_map(lambda leaf: self.atol + self.rtol * jnp.abs(leaf), y)

        def size(tree):
            return self.norm(jax.tree_util.tree_map(lambda a, s: a / s, tree, scale))

        failed = state.result != optx.RESULTS.successful
        done = (state.step >= 1) & (size(state.diff) < 1) & (size(state.f) < 1)
        return done | failed, optx.RESULTS.where(failed, state.result, optx.RESULTS.successful)


def _gmres() -> lx.GMRES:
    return lx.GMRES(rtol=GMRES_RTOL, atol=GMRES_RTOL * 1e-3, restart=GMRES_RESTART, stagnation_iters=GMRES_RESTART)


class FlowSolver(eqx.Module):
    """What the flow needs of a method: its `name` (as in `FlowOptions.solver` and `Stats.solver_name`),
    whether regression batches run in one lockstep loop (`lockstep`; explicit pairs only), the method with its
    step-size control for `stepped_solve` (`stepper`; `axis_name`: the vmap axis of a batch of runs), and for a
    diffrax method, the diffrax solver (`method`) and the gradient evaluations of one attempted step from the
    state it returned (`step_work`), and the work of a run of `steps` attempted steps whose steps counted `work` in
    all (`grad_evals`; -1: not counted)."""

    name: str = eqx.field(static=True)
    lockstep: ClassVar[bool]

    def method(self, rtol=None, atol=None, axis_name=None) -> diffrax.AbstractSolver:
        raise NotImplementedError

    def stepper(self, rtol, atol, axis_name=None):
        return ControlledStep(self.method(rtol, atol, axis_name), rtol, atol, self.step_work)

    def step_work(self, solver_state):
        return jnp.zeros((), int)

    def grad_evals(self, steps, work):
        raise NotImplementedError


class ExplicitPair(FlowSolver):
    """An FSAL explicit Runge-Kutta pair of diffrax (Tsit5, Dopri5, Dopri8)."""

    lockstep: ClassVar[bool] = True

    def method(self, rtol=None, atol=None, axis_name=None) -> diffrax.AbstractERK:
        return _EXPLICIT[self.name]()

    def evaluations_per_step(self) -> int:
        """Vector-field evaluations per step (the first stage is the last one of the previous step)."""
        return len(self.method().tableau.c)

    def grad_evals(self, steps, work=None):
        # +2 at the start: f(y0), and one more for Hairer's initial step size.
        return self.evaluations_per_step() * steps + 2


class NewtonKrylov(FlowSolver):
    """Kvaerno's ESDIRK method (order 5 or 3) with Newton stage solves by Jacobian-free GMRES."""

    lockstep: ClassVar[bool] = False

    def method(self, rtol=None, atol=None, axis_name=None) -> diffrax.AbstractImplicitSolver:
        newton = StageNewton(rtol=NEWTON_RTOL, atol=NEWTON_RTOL * 1e-3, linear_solver=_gmres())
        return _IMPLICIT[self.name](root_finder=newton)

    def grad_evals(self, steps, work=None):
        # Newton and GMRES iterations are data-dependent and diffrax does not report them.
        return jnp.full_like(steps, -1)


class DenseChord(FlowSolver):
    """Kvaerno's ESDIRK method (order 5 or 3) with chord stage solves on a dense Jacobian and the inverse of
    `I - h gamma J`, kept across stages and steps (`ChordESDIRK`)."""

    lockstep: ClassVar[bool] = False

    def method(self, rtol=None, atol=None, axis_name=None) -> ChordESDIRK:
        return ChordESDIRK(self.name, rtol=rtol, atol=atol, axis_name=axis_name)

    def step_work(self, solver_state):
        return solver_state.evaluations

    def grad_evals(self, steps, work=None):
        return work


class MultistepBDF(FlowSolver):
    """The variable-order BDF method (orders 1-5) with its own step-size and order control (`_bdf.BDF`): on a dense
    Jacobian kept across steps, or (`matrix_free`) with GMRES on Jacobian-vector products."""

    matrix_free: bool = eqx.field(static=True, default=False)
    lockstep: ClassVar[bool] = False

    def stepper(self, rtol, atol, axis_name=None) -> BDF:
        return BDF(rtol, atol, axis_name, _gmres() if self.matrix_free else None)

    def grad_evals(self, steps, work=None):
        # GMRES's Jacobian-vector products are data-dependent and lineax does not report them.
        return jnp.full_like(steps, -1) if self.matrix_free else work


def dense_max_parameters(name: str, vmapped: bool) -> int:
    """The largest network whose implicit method `name` runs on a dense Jacobian, for runs `vmapped` in a batch or
    solved on their own."""
    return CHORD_MAX_PARAMETERS if name in _IMPLICIT and not vmapped else DENSE_MAX_PARAMETERS


def make_solver(name: str, parameters: int, vmapped: bool = False) -> FlowSolver:
    """The method `name` for a network with `parameters` parameters, its runs `vmapped` or on their own."""
    if name in _EXPLICIT:
        return ExplicitPair(name)
    dense = parameters <= dense_max_parameters(name, vmapped)
    if name == "bdf":
        return MultistepBDF(name, matrix_free=not dense)
    return DenseChord(name) if dense else NewtonKrylov(name)
