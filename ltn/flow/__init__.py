"""Gradient flow (diffrax) and discrete descent (optax), with the same options, summaries and result type."""

from ._descent import gradient_descent as gradient_descent
from ._gradient_flow import SOLVERS as SOLVERS, gradient_flow as gradient_flow
from ._objective import Checkpoint as Checkpoint
from ._options import (DESCENT_ONLY as DESCENT_ONLY, FLOW_ONLY as FLOW_ONLY, STEP_SCALINGS as STEP_SCALINGS,
                       FlowOptions as FlowOptions)
from ._solvers import EXPLICIT_SOLVERS as EXPLICIT_SOLVERS
from ._result import STATUSES as STATUSES, FlowResult as FlowResult, Stats as Stats, Trajectory as Trajectory
