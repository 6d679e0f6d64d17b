"""Linear tensor networks, one module per family."""

from ._base import INIT_KINDS as INIT_KINDS, Network as Network, Params as Params
from ._convolutional import Convolutional as Convolutional, dft_matrix as dft_matrix
from ._diagonal import Diagonal as Diagonal
from ._file import layer_names as layer_names, load_params as load_params, params_in_file as params_in_file
from ._fully_connected import FullyConnected as FullyConnected
from ._odeco import Odeco as Odeco
from ._tensor import TensorNetwork as TensorNetwork
