"""Flax NNX recurrent layers: same semantics and parameters as the linen ``jaxrnn.RNN`` etc."""

from jaxrnn._src.nnx_layers import GRU
from jaxrnn._src.nnx_layers import LSTM
from jaxrnn._src.nnx_layers import RNN
from jaxrnn._src.nnx_layers import Recurrent

__all__ = ['GRU', 'LSTM', 'RNN', 'Recurrent']
