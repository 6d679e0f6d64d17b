"""ltn: linear tensor networks, their exact gradient flow, and the theory of their implicit bias.

Importing ltn turns on float64 in JAX (`jax_enable_x64`): the theory is checked to tolerances that float32
cannot reach. Set the environment variable `LTN_FLOAT32=1` before importing to leave JAX's default alone.

Importing ltn writes nothing to disk. `ltn.enable_compilation_cache()` keeps compiled programs in a persistent
cache (`$LTN_CACHE_DIR`, else `$XDG_CACHE_HOME/ltn`, else `~/.cache/ltn`) for later processes to reuse; the
`ltn` command does this by default.
"""

import os as _os

import jax as _jax

if _os.environ.get("LTN_FLOAT32", "") not in ("1", "true", "yes"):
    _jax.config.update("jax_enable_x64", True)

from ._cache import enable_compilation_cache as enable_compilation_cache
from ._version import __version__ as __version__
from .networks import (
    Convolutional as Convolutional,
    Diagonal as Diagonal,
    FullyConnected as FullyConnected,
    Network as Network,
    Odeco as Odeco,
    TensorNetwork as TensorNetwork,
)
from .flow import FlowResult as FlowResult, gradient_descent as gradient_descent, gradient_flow as gradient_flow
from .theory import (
    Prediction as Prediction,
    kkt_residual as kkt_residual,
    predict as predict,
    singular_vector_residual as singular_vector_residual,
)
