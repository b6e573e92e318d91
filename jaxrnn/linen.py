"""Flax linen recurrent layers (also available as ``jaxrnn.RNN`` etc.) and cell adapters both ways."""

from jaxrnn._src.flax_interop import FlaxCell
from jaxrnn._src.linen_layers import GRU
from jaxrnn._src.linen_layers import LSTM
from jaxrnn._src.linen_layers import RNN
from jaxrnn._src.linen_layers import CellModule
from jaxrnn._src.linen_layers import Recurrent

__all__ = ['CellModule', 'FlaxCell', 'GRU', 'LSTM', 'RNN', 'Recurrent']
