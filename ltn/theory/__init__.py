"""The theory's predictions and certificates (docs/theory.md §5-8); independent of the gradient-flow solver."""

from ._certificates import (Certificate as Certificate, kkt_residual as kkt_residual,
                            singular_vector_residual as singular_vector_residual)
from ._classification import SolverError as SolverError
from ._prediction import Prediction as Prediction, predict as predict, predict_batch as predict_batch
from ._regression import (RegressionSolution as RegressionSolution, lazy_limit as lazy_limit,
                          lazy_limits as lazy_limits, odeco_regression_limits as odeco_regression_limits,
                          min_norm_interpolant as min_norm_interpolant,
                          odeco_regression_limit as odeco_regression_limit)
