"""Flax linen recurrent layers (also available as ``jaxrnn.RNN`` etc.)."""

from jaxrnn._src.flax_cells import FlaxCell
from jaxrnn._src.linen_layers import GRU
from jaxrnn._src.linen_layers import LSTM
from jaxrnn._src.linen_layers import RNN
from jaxrnn._src.linen_layers import Recurrent

__all__ = ['FlaxCell', 'GRU', 'LSTM', 'RNN', 'Recurrent']
