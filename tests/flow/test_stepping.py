"""The per-run stepping loop (classification and implicit legs): records at levels of -log L, located where the
path crosses them; every flow program free of host callbacks, so that JAX may cache it on disk."""

import jax
import jax.numpy as jnp
import numpy as np

import ltn
from ltn.data import separable_classification, sparse_regression
from ltn.flow._gradient_flow import LOG_LOSS_LEVELS, _compiled_ends, _compiled_flow, _origin
from ltn.flow._options import FlowOptions

CLS = separable_classification(seed=0, n=6, d=8, margin=0.2)
CLS_NET = ltn.Diagonal(d=8, depth=2)


def test_classification_is_recorded_where_log_loss_crosses_each_level():
    params0 = CLS_NET.init(jax.random.PRNGKey(1), scale=0.3)
    result = ltn.gradient_flow(CLS_NET, params0, CLS.X, CLS.y, "exponential", target_log_loss=-1e3,
                               checkpoints=16)
    assert result.status_name == "converged"
    records = result.trajectory.checkpoints
    reached = result.trajectory.reached
    times, log_loss = np.asarray(records.time)[reached], np.asarray(records.log_loss)[reached]
    assert np.all(np.diff(times) > 0)  # one path, in the order it was passed
    # Every level between the start and the target has a record on it: log L is monotone along the flow, and
    # the crossing is located on the dense output (measured: 1.6e-15 relative at worst).
    start = float(log_loss[0])
    crossed = LOG_LOSS_LEVELS[(LOG_LOSS_LEVELS < start) & (LOG_LOSS_LEVELS >= -1e3)]
    assert len(crossed) == 31
    for level in crossed:
        assert np.min(np.abs(log_loss - level) / abs(level)) < 1e-9
    # the unreached entries (levels past the target, times after the stop) come last, as inf
    assert np.all(np.isinf(np.asarray(records.time)[~reached])) and np.all(np.flatnonzero(~reached) >= reached.sum())
    # and the log-loss falls monotonically along the records
    assert np.all(np.diff(log_loss) < 0)


def _lowered_texts(net, loss, solver, X, y, params0):
    """The leg's program and the summaries' program at its ends, lowered."""
    batch = jax.tree_util.tree_map(lambda leaf: leaf[None], params0)
    opts = FlowOptions(solver=solver).with_default_target("regression" if loss == "squared" else "classification")
    natural, start = _origin(net, loss, opts, batch, X, y)
    solve = _compiled_flow(net, loss, solver, opts.checkpoints, opts.reparametrize).__wrapped__  # before jit
    ends = _compiled_ends(net, loss, opts.reparametrize).__wrapped__
    return (jax.jit(solve).lower(natural, start, jnp.ones(1, bool), X, y, opts).as_text(),
            jax.jit(ends).lower(batch, jnp.zeros(1), jnp.zeros(1, int), X, y, opts).as_text())


def test_flow_programs_call_no_host_callback():
    """JAX never writes a program with a host callback to its persistent cache (diffrax's `SaveAt(ts=...)`
    checks add one): each leg of each task must be free of them. Negative control: a callback is detected."""
    reg = sparse_regression(seed=0, n=4, d=6, sparsity=2)
    net = ltn.Diagonal(d=6, depth=2)
    params = net.init(jax.random.PRNGKey(0), scale=0.5)
    for loss, solver, X, y in (("squared", "tsit5", reg.X, reg.y), ("squared", "kvaerno5", reg.X, reg.y),
                               ("exponential", "tsit5", CLS.X[:, :6], CLS.y),
                               ("exponential", "kvaerno5", CLS.X[:, :6], CLS.y)):
        for text in _lowered_texts(net, loss, solver, X, y, params):
            assert "callback" not in text, (loss, solver)
    with_callback = jax.jit(lambda x: jax.pure_callback(np.sin, jax.ShapeDtypeStruct((), x.dtype), x))
    assert "callback" in with_callback.lower(jnp.ones(())).as_text()
