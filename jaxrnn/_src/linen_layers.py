"""Flax linen layers: they declare parameters and call the functional core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxrnn._src.checks import check_features
from jaxrnn._src.checks import check_inputs
from jaxrnn._src.compose import apply_layers
from jaxrnn._src.config import LayerConfig
from jaxrnn._src.init import torch_uniform
from jaxrnn._src.types import Array
from jaxrnn._src.types import Carry
from jaxrnn._src.types import CellParams

Initializer = Callable[..., Array]


class _CellWeights(nn.Module):
  """Declares one layer-direction's weights (shapes from ``LayerConfig.weight_shapes``)."""

  shapes: dict
  param_dtype: Any
  kernel_init: Initializer
  recurrent_kernel_init: Initializer
  bias_init: Initializer

  @nn.compact
  def __call__(self) -> CellParams:
    inits = {
      'w_ih': self.kernel_init,
      'w_hh': self.recurrent_kernel_init,
      'b_ih': self.bias_init,
      'b_hh': self.bias_init,
      'w_hr': self.kernel_init,
    }
    return CellParams(
      **{name: self.param(name, inits[name], shape, self.param_dtype) for name, shape in self.shapes.items()}
    )


class _RecurrentLayer(nn.Module):
  """Shared fields and call of ``RNN``, ``LSTM`` and ``GRU``."""

  hidden_size: int
  num_layers: int = 1
  bidirectional: bool = False
  time_major: bool = False
  dropout: float = 0.0
  use_bias: bool = True
  dtype: Any | None = None
  param_dtype: Any = jnp.float32
  kernel_init: Initializer | None = None
  recurrent_kernel_init: Initializer | None = None
  bias_init: Initializer | None = None
  unroll: int = 1
  remat: bool = False
  hoist_input_projection: bool | None = None

  _cell: ClassVar[str]

  def _config_fields(self) -> dict:
    return {}

  @property
  def config(self) -> LayerConfig:
    """The validated hyper-parameters shared with the functional core."""
    return LayerConfig(
      cell=self._cell_name(),
      hidden_size=self.hidden_size,
      num_layers=self.num_layers,
      bidirectional=self.bidirectional,
      time_major=self.time_major,
      dropout=self.dropout,
      use_bias=self.use_bias,
      unroll=self.unroll,
      remat=self.remat,
      hoist_input_projection=self.hoist_input_projection,
      **self._config_fields(),
    )

  def _cell_name(self) -> str:
    return self._cell

  def __post_init__(self):
    super().__post_init__()
    self.config  # noqa: B018  (validates the hyper-parameters at construction)

  def _weights(self, in_features: int) -> list[CellParams]:
    config = self.config
    default = torch_uniform(self.hidden_size)
    params = []
    for row, name in enumerate(config.param_names):
      params.append(
        _CellWeights(
          shapes=config.weight_shapes(row // config.num_directions, in_features),
          param_dtype=self.param_dtype,
          kernel_init=self.kernel_init or default,
          recurrent_kernel_init=self.recurrent_kernel_init or default,
          bias_init=self.bias_init or default,
          name=name,
        )()
      )
    return params

  @nn.compact
  def __call__(
    self,
    inputs: Array,
    seq_lengths: Array | None = None,
    initial_carry: Carry | None = None,
    *,
    deterministic: bool = True,
  ) -> tuple[Array, Carry]:
    """Returns ``(outputs, final_carry)``.

    Args:
      inputs: ``[*batch, T, F]``, or ``[T, *batch, F]`` when ``time_major``.
      seq_lengths: integers ``[*batch]`` in ``[0, T]``; ``None`` means all ``T``.
      initial_carry: shaped like ``final_carry``; ``None`` means zeros.
      deterministic: if False, apply dropout between layers (``'dropout'`` rng).

    Returns:
      ``outputs``: the last layer's output at every step, ``[*batch, T, D*H_out]``
      (time-major ``[T, *batch, D*H_out]``), forward half first, zeros at
      ``t >= seq_lengths``. ``final_carry``: ``h_n [L*D, *batch, H_out]``, for
      LSTM ``LSTMState(h, c)`` with ``c: [L*D, *batch, H]``; row
      ``layer*D + direction``.
    """
    _, _, _, in_features = check_inputs(inputs, self.time_major)
    name = self.config.param_names[0]
    if self.has_variable('params', name):  # before Flax's own, less clear shape error
      w_ih = self.get_variable('params', name)['w_ih']
      check_features(in_features, w_ih.shape[0], f"params['{name}']['w_ih'] {list(w_ih.shape)}")
    params = self._weights(in_features)
    config = self.config
    rng = None
    if not deterministic and config.dropout > 0 and config.num_layers > 1:
      rng = self.make_rng('dropout')
    return apply_layers(
      config,
      params,
      inputs,
      seq_lengths,
      initial_carry,
      dtype=self.dtype,
      dropout_rng=rng,
      deterministic=deterministic,
    )


class RNN(_RecurrentLayer):
  """Elman RNN layer, like ``torch.nn.RNN``: ``h' = act(x w_ih + b_ih + h w_hh + b_hh)``.

  Attributes:
    hidden_size: ``H``.
    num_layers: ``L``; layer ``k > 0`` reads the ``D*H`` outputs of layer ``k-1``.
    bidirectional: run a backward direction too (``D = 2``).
    time_major: inputs and outputs are ``[T, *batch, ...]`` instead of
      ``[*batch, T, ...]``; never changes the carry layout.
    dropout: dropout rate on the outputs of every layer but the last.
    use_bias: add ``b_ih`` and ``b_hh``.
    dtype: compute dtype (``None``: promote inputs and parameters).
    param_dtype: dtype of the parameters.
    kernel_init, recurrent_kernel_init, bias_init: initializers of ``w_ih``,
      ``w_hh`` and the biases; ``None`` is PyTorch's ``U(-1/sqrt(H), 1/sqrt(H))``.
    unroll: time steps per loop iteration.
    remat: recompute each step in the backward pass instead of storing it.
    hoist_input_projection: compute ``x @ w_ih`` for all steps before the loop;
      ``None`` picks per backend (on for GPU/TPU, off for CPU).
    nonlinearity: ``'tanh'`` or ``'relu'``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxrnn
    >>> layer = jaxrnn.RNN(hidden_size=4, num_layers=2)
    >>> x = jnp.ones((3, 5, 2))  # B=3, T=5, F=2
    >>> variables = layer.init(jax.random.key(0), x)
    >>> outputs, h_n = layer.apply(variables, x)
    >>> outputs.shape, h_n.shape
    ((3, 5, 4), (2, 3, 4))
  """

  nonlinearity: str = 'tanh'

  def _cell_name(self) -> str:
    if self.nonlinearity not in ('tanh', 'relu'):
      raise ValueError(f"`nonlinearity` must be 'tanh' or 'relu', got {self.nonlinearity!r}.")
    return f'rnn_{self.nonlinearity}'


class LSTM(_RecurrentLayer):
  """LSTM layer, like ``torch.nn.LSTM`` (gates ``i, f, g, o``, optional projection).

  Attributes are those of :class:`RNN` (without ``nonlinearity``) plus
  ``proj_size``: ``P``, project ``h`` to ``P < H`` features with ``w_hr [H, P]``
  (initialized with ``kernel_init``); ``0`` means no projection.

  ``final_carry`` is ``LSTMState(h, c)``, which unpacks like PyTorch's ``(h_n, c_n)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxrnn
    >>> layer = jaxrnn.LSTM(hidden_size=8, bidirectional=True)
    >>> x = jnp.ones((2, 6, 3))  # B=2, T=6, F=3
    >>> lengths = jnp.array([6, 4])
    >>> variables = layer.init(jax.random.key(0), x, lengths)
    >>> outputs, (h_n, c_n) = layer.apply(variables, x, lengths)
    >>> outputs.shape, h_n.shape, c_n.shape
    ((2, 6, 16), (2, 2, 8), (2, 2, 8))
    >>> bool(jnp.allclose(outputs[1, 3, :8], h_n[0, 1]))  # forward: step len-1
    True
    >>> bool(jnp.allclose(outputs[1, 0, 8:], h_n[1, 1]))  # backward: step 0
    True
  """

  proj_size: int = 0
  _cell: ClassVar[str] = 'lstm'

  def _config_fields(self) -> dict:
    return {'proj_size': self.proj_size}


class GRU(_RecurrentLayer):
  """GRU layer, like ``torch.nn.GRU`` (gates ``r, z, n``, reset after the recurrent matmul).

  Attributes are those of :class:`RNN` without ``nonlinearity``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxrnn
    >>> layer = jaxrnn.GRU(hidden_size=8, time_major=True)
    >>> x = jnp.ones((6, 2, 3))  # T=6, B=2, F=3
    >>> outputs, h_n = layer.apply(layer.init(jax.random.key(0), x), x)
    >>> outputs.shape, h_n.shape
    ((6, 2, 8), (1, 2, 8))
  """

  _cell: ClassVar[str] = 'gru'
