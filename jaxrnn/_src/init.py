"""Parameter initializers (``(key, shape, dtype) -> Array``, as in ``jax.nn.initializers``)."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]


def torch_uniform(hidden_size: int) -> Initializer:
  """Returns PyTorch's default RNN initializer ``U(-1/sqrt(H), 1/sqrt(H))``.

  PyTorch uses it for every weight and bias of ``nn.RNN``, ``nn.LSTM`` and
  ``nn.GRU``, projection included.

  Examples:
    >>> import jax
    >>> from jaxrnn import torch_uniform
    >>> w = torch_uniform(16)(jax.random.key(0), (8, 64))
    >>> bool(abs(w).max() <= 0.25)
    True
  """
  if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
    raise ValueError(f'`hidden_size` must be a positive int (the bound is 1/sqrt(H)), got {hidden_size!r}.')
  bound = 1.0 / math.sqrt(hidden_size)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

  return init


def weight_initializers(
  hidden_size: int, kernel_init=None, recurrent_kernel_init=None, bias_init=None
) -> dict:
  """Returns the initializer of each weight name; ``None`` means PyTorch's default.

  ``kernel_init`` initializes ``w_ih`` and the LSTM projection ``w_hr``,
  ``recurrent_kernel_init`` ``w_hh``, ``bias_init`` ``b_ih`` and ``b_hh``.
  """
  default = torch_uniform(hidden_size)
  kernel_init = kernel_init or default
  bias_init = bias_init or default
  return {
    'w_ih': kernel_init,
    'w_hh': recurrent_kernel_init or default,
    'b_ih': bias_init,
    'b_hh': bias_init,
    'w_hr': kernel_init,
  }
