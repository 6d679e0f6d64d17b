"""The certificate plot: one line per (experiment, depth, filters), only when flows stopped at two or more
log-loss targets."""

import os

from ltn.plots import plot_certificates


def _row(log_loss, residual, filters):
    return {"task": "classification", "certificate_name": "singular_vector", "certificate": residual,
            "final_log_loss": log_loss, "experiment": "partial", "network.depth": 2, "network.filter_sizes": filters}


def test_certificate_plot_needs_two_targets(tmp_path):
    path = str(tmp_path / "certificates.png")
    assert plot_certificates([_row(-10.0, 0.5, [3]), _row(-10.0, 0.4, [2])], path, "one target") is None
    rows = [_row(-10.0, 0.5, [3]), _row(-100.0, 0.1, [3]), _row(-10.0, 0.4, [2]), _row(-100.0, 0.2, [2])]
    assert plot_certificates(rows, path, "two targets") == path and os.path.getsize(path) > 0
