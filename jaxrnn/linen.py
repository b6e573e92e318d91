"""Flax linen recurrent layers (also available as ``jaxrnn.RNN`` etc.)."""

from jaxrnn._src.linen_layers import GRU, LSTM, RNN

__all__ = ['GRU', 'LSTM', 'RNN']
