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

  Example:
    >>> import jax
    >>> from jaxrnn import torch_uniform
    >>> w = torch_uniform(16)(jax.random.key(0), (8, 64))
    >>> bool(abs(w).max() <= 0.25)
    True
  """
  bound = 1.0 / math.sqrt(hidden_size)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

  return init
