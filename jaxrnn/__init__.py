"""jaxrnn: recurrent networks (Elman RNN, LSTM, GRU and any cell) for JAX and Flax, exact to PyTorch."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from jaxrnn import interop
from jaxrnn import linen
from jaxrnn import nnx
from jaxrnn._src.cells import gru_cell
from jaxrnn._src.cells import lstm_cell
from jaxrnn._src.cells import rnn_relu_cell
from jaxrnn._src.cells import rnn_tanh_cell
from jaxrnn._src.decode import generate
from jaxrnn._src.flax_style_cells import ConvLSTMCell
from jaxrnn._src.flax_style_cells import LayerNormLSTMCell
from jaxrnn._src.flax_style_cells import MGUCell
from jaxrnn._src.init import per_gate
from jaxrnn._src.init import torch_uniform
from jaxrnn._src.linear_cells import LRUCell
from jaxrnn._src.linear_cells import MinGRUCell
from jaxrnn._src.linear_cells import MinLSTMCell
from jaxrnn._src.linear_cells import RGLRUCell
from jaxrnn._src.linen_layers import GRU
from jaxrnn._src.linen_layers import LSTM
from jaxrnn._src.linen_layers import RNN
from jaxrnn._src.linen_layers import Recurrent
from jaxrnn._src.masking import lengths_to_mask
from jaxrnn._src.masking import mask_to_lengths
from jaxrnn._src.masking import pack_sequences
from jaxrnn._src.masking import pad_sequences
from jaxrnn._src.masking import reverse_padded
from jaxrnn._src.masking import to_batch_major
from jaxrnn._src.masking import to_time_major
from jaxrnn._src.masking import unpack_sequences
from jaxrnn._src.scan import scan_layer
from jaxrnn._src.torch_cells import ElmanCell
from jaxrnn._src.torch_cells import GRUCell
from jaxrnn._src.torch_cells import LSTMCell
from jaxrnn._src.types import Cell
from jaxrnn._src.types import CellParams
from jaxrnn._src.types import LSTMState

try:
  __version__ = _version('jaxrnn')
except PackageNotFoundError:  # running from a source tree that is not installed
  __version__ = '0.0.0+unknown'

__all__ = [
  'Cell',
  'CellParams',
  'ConvLSTMCell',
  'ElmanCell',
  'GRU',
  'GRUCell',
  'LRUCell',
  'LSTM',
  'LSTMCell',
  'LSTMState',
  'LayerNormLSTMCell',
  'MGUCell',
  'MinGRUCell',
  'MinLSTMCell',
  'RGLRUCell',
  'RNN',
  'Recurrent',
  'generate',
  'gru_cell',
  'interop',
  'lengths_to_mask',
  'linen',
  'lstm_cell',
  'mask_to_lengths',
  'nnx',
  'pack_sequences',
  'pad_sequences',
  'per_gate',
  'reverse_padded',
  'rnn_relu_cell',
  'rnn_tanh_cell',
  'scan_layer',
  'to_batch_major',
  'to_time_major',
  'torch_uniform',
  'unpack_sequences',
]
