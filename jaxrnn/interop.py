"""Conversion to and from PyTorch, Keras 3 and Flax, export to ONNX, and between linen and NNX.

``from_torch`` and ``to_torch`` import torch (``pip install 'jaxrnn[torch]'``);
``from_state_dict`` and ``to_state_dict`` need NumPy only. ``linen_to_nnx`` and
``nnx_to_linen`` move a layer and its parameters between Flax's two APIs;
``to_flax_carry`` and ``from_flax_carry`` convert a layer's carry to Flax's
per-cell carries and back. ``from_flax`` converts Flax's own ``nn.RNN`` /
``nn.Bidirectional`` (linen or NNX) over its built-in cells to a jaxrnn layer.
``from_keras`` and ``to_keras`` convert Keras 3's ``SimpleRNN`` / ``LSTM`` /
``GRU`` / ``Bidirectional`` layers and import Keras; ``to_onnx`` exports a layer
to an ONNX model and imports onnx (both ``pip install 'jaxrnn[convert]'``).
"""

from jaxrnn._src.flax_carry import from_flax_carry
from jaxrnn._src.flax_carry import to_flax_carry
from jaxrnn._src.flax_interop import from_flax
from jaxrnn._src.flax_interop import linen_to_nnx
from jaxrnn._src.flax_interop import nnx_to_linen
from jaxrnn._src.keras_interop import from_keras
from jaxrnn._src.keras_interop import to_keras
from jaxrnn._src.onnx_export import to_onnx
from jaxrnn._src.torch_interop import from_state_dict
from jaxrnn._src.torch_interop import from_torch
from jaxrnn._src.torch_interop import to_state_dict
from jaxrnn._src.torch_interop import to_torch

__all__ = [
  'from_flax',
  'from_flax_carry',
  'from_keras',
  'from_state_dict',
  'from_torch',
  'linen_to_nnx',
  'nnx_to_linen',
  'to_flax_carry',
  'to_keras',
  'to_onnx',
  'to_state_dict',
  'to_torch',
]
