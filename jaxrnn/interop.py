"""Conversion to and from PyTorch's ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``.

``from_torch`` and ``to_torch`` import torch (``pip install 'jaxrnn[torch]'``);
``from_state_dict`` and ``to_state_dict`` need NumPy only.
"""

from jaxrnn._src.torch_interop import from_state_dict
from jaxrnn._src.torch_interop import from_torch
from jaxrnn._src.torch_interop import to_state_dict
from jaxrnn._src.torch_interop import to_torch

__all__ = ['from_state_dict', 'from_torch', 'to_state_dict', 'to_torch']
