"""The data checks of `gradient_flow` / `gradient_descent`, made before anything is traced."""

import numpy as np
import pytest

import ltn
from ltn.flow._batching import check_problem_arrays

NET = ltn.Diagonal(3, depth=2)
X = np.arange(6.0).reshape(2, 3)


@pytest.mark.parametrize("where", ["X", "y"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_data_is_refused(where, bad):
    X_bad, y_bad = X.copy(), np.ones(2)
    (X_bad if where == "X" else y_bad)[1] = bad
    with pytest.raises(ValueError, match=r"X and y must be finite \(found NaN or inf\)"):
        ltn.gradient_flow(NET, (np.ones(3), np.ones(3)), X_bad, y_bad)


def test_classification_labels_must_be_signs():
    with pytest.raises(ValueError, match=r"labels y in \{-1, \+1\}"):
        check_problem_arrays(NET, X, np.array([1.0, 0.5]), "classification")
    X_checked, y_checked = check_problem_arrays(NET, X, np.array([1.0, -1.0]), "classification")
    assert np.array_equal(np.asarray(y_checked), [1.0, -1.0]) and np.array_equal(np.asarray(X_checked), X)
    check_problem_arrays(NET, X, np.array([1.0, 0.5]), "regression")  # any real label for regression
