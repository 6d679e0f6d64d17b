"""The theory's predictions and certificates (docs/theory.md §5-8, §12); independent of the gradient-flow solver."""

from ._certificates import (Certificate as Certificate, KKTDistance as KKTDistance,
                            detect_support as detect_support, kkt_distance as kkt_distance,
                            kkt_residual as kkt_residual, margin_ratio as margin_ratio,
                            singular_vector_residual as singular_vector_residual)
from ._classification import SolverError as SolverError
from ._prediction import (MAX_MARGIN_NORMS as MAX_MARGIN_NORMS, Prediction as Prediction, max_margin as max_margin,
                          predict as predict, predict_batch as predict_batch,
                          prediction_margin_ratio as prediction_margin_ratio)
from ._rates import (RATE_TOLERANCE as RATE_TOLERANCE, RateFit as RateFit, fit_rate as fit_rate,
                     theory_rate_exponent as theory_rate_exponent)
from ._regression import (RegressionSolution as RegressionSolution, lazy_limit as lazy_limit,
                          lazy_limits as lazy_limits, odeco_regression_limits as odeco_regression_limits,
                          min_norm_interpolant as min_norm_interpolant,
                          odeco_regression_limit as odeco_regression_limit)
