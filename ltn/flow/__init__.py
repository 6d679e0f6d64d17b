"""Gradient flow (diffrax) and discrete descent (optax), with the same summaries and result type."""

from ._descent import gradient_descent as gradient_descent
from ._gradient_flow import FlowOptions as FlowOptions, gradient_flow as gradient_flow
from ._objective import Checkpoint as Checkpoint
from ._result import STATUSES as STATUSES, FlowResult as FlowResult, Stats as Stats, Trajectory as Trajectory
