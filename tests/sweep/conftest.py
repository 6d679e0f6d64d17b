"""A tiny two-experiment sweep shared by the runner and CLI tests (compiles dominate: reuse them)."""

import pytest

TINY = """
name = "tiny"
seeds = [0, 1]

[[experiment]]
name = "diag-regression"
task = "regression"
data = { kind = "sparse_gaussian", n = 4, d = 8, sparsity = 2 }
network = { kind = "diagonal", depth = 2 }
init = { scale = [0.5, 1.0] }
flow = { solver = "tsit5", rtol = 1e-10, atol = 1e-12, checkpoints = 16 }
check = { tolerance = 1e-5 }

[[experiment]]
name = "diag-classification"
task = "classification"
data = { kind = "separable", n = 4, d = 6, margin = 0.5 }
network = { kind = "diagonal", depth = 2 }
init = { scale = 0.5 }
flow = { solver = "tsit5", target_log_loss = -60.0, checkpoints = 16 }
check = { cosine = 0.99 }
"""


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path
