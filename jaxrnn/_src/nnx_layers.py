"""Flax NNX layers: the same parameters and semantics as the linen layers, same core."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import ClassVar

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrnn._src import linen_layers
from jaxrnn._src.compose import apply_layers
from jaxrnn._src.compose import step_layers
from jaxrnn._src.config import check_bool
from jaxrnn._src.fields import LayerFields
from jaxrnn._src.init import weight_initializers
from jaxrnn._src.types import Array
from jaxrnn._src.types import Carry
from jaxrnn._src.types import CellParams

Initializer = Callable[..., Array]


class _CellWeights(nnx.Module):
  """One layer-direction's weights as ``nnx.Param`` attributes ``w_ih``, ``w_hh``, ..."""

  def __init__(self, shapes: dict, initializers: dict, param_dtype, rngs: nnx.Rngs):
    for name, shape in shapes.items():
      setattr(self, name, nnx.Param(initializers[name](rngs.params(), shape, param_dtype)))

  def __call__(self) -> CellParams:
    return CellParams(
      **{name: getattr(self, name)[...] for name in CellParams._fields if hasattr(self, name)}
    )


_NO_DROPOUT_STREAM = (
  '`dropout={dropout}` between layers needs a dropout stream: build the layer with '
  '`rngs=nnx.Rngs(0)` or `nnx.Rngs(params=0, dropout=1)`, or call it with '
  '`deterministic=True` (or `module.eval()`).'
)


class _RecurrentLayer(LayerFields, nnx.Module):
  """Shared constructor and call of the NNX ``RNN``, ``LSTM`` and ``GRU``."""

  def __init__(
    self,
    in_features: int,
    hidden_size: int,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    time_major: bool = False,
    dropout: float = 0.0,
    use_bias: bool = True,
    dtype: Any | None = None,
    param_dtype: Any = jnp.float32,
    kernel_init: Initializer | None = None,
    recurrent_kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
    unroll: int | None = None,
    remat: bool = False,
    checkpoint_every: int = 0,
    hoist_input_projection: bool | None = None,
    fused_backward: bool | None = None,
    deterministic: bool = False,
    rngs: nnx.Rngs,
  ):
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
      raise ValueError(
        f'`in_features` (F, the last axis of the inputs) must be a positive int, got {in_features!r}.'
      )
    if not isinstance(rngs, nnx.Rngs):
      raise TypeError(
        f'`rngs` must be an nnx.Rngs (e.g. nnx.Rngs(0)) to draw the initial weights, got {type(rngs).__name__}.'
      )
    self.in_features = in_features
    self.hidden_size = hidden_size
    self.num_layers = num_layers
    self.bidirectional = bidirectional
    self.time_major = time_major
    self.dropout = dropout
    self.use_bias = use_bias
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.kernel_init = kernel_init
    self.recurrent_kernel_init = recurrent_kernel_init
    self.bias_init = bias_init
    self.unroll = unroll
    self.remat = remat
    self.checkpoint_every = checkpoint_every
    self.hoist_input_projection = hoist_input_projection
    self.fused_backward = fused_backward
    check_bool('deterministic', deterministic)
    self.deterministic = deterministic
    config = self.config  # validates the hyper-parameters
    initializers = weight_initializers(hidden_size, kernel_init, recurrent_kernel_init, bias_init)
    for row, name in enumerate(config.param_names):
      shapes = config.weight_shapes(row // config.num_directions, in_features)
      setattr(self, name, _CellWeights(shapes, initializers, param_dtype, rngs))
    # A dropout stream whenever there is dropout between layers to draw, also at rate 0:
    # `module.dropout = p` later works as for nnx.Dropout and PyTorch's `rnn.dropout = p`.
    try:
      self.rngs = rngs['dropout'].fork() if num_layers > 1 else nnx.data(None)
    except KeyError:  # nnx.Rngs(params=...) alone: fine as long as no dropout is drawn
      if dropout > 0:
        raise ValueError(_NO_DROPOUT_STREAM.format(dropout=dropout)) from None
      self.rngs = nnx.data(None)

  def __call__(
    self,
    inputs: Array,
    seq_lengths: Array | None = None,
    initial_carry: Carry | None = None,
    *,
    deterministic: bool | None = None,
  ) -> tuple[Array, Carry]:
    """Returns ``(outputs, final_carry)``, exactly as the linen layer does.

    Args:
      inputs: ``[*batch, T, F]``, or ``[T, *batch, F]`` when ``time_major``.
      seq_lengths: integers ``[*batch]`` in ``[0, T]``; ``None`` means all ``T``.
      initial_carry: shaped like ``final_carry``; ``None`` means zeros.
      deterministic: disables dropout between layers; ``None`` uses the
        attribute set by the constructor, ``module.train()`` (False) or
        ``module.eval()`` (True).

    Returns:
      outputs: the last layer's output at every step, ``[*batch, T, D*H_out]``
        (time-major ``[T, *batch, D*H_out]``), forward half first; exact zeros
        at ``t >= seq_lengths``.
      final_carry: the state of every layer and direction after its last valid
        step, ``[L*D, *batch, H_out]``, row ``layer*D + direction``. For LSTM an
        [`LSTMState`][jaxrnn.LSTMState] ``(h, c)`` with ``c: [L*D, *batch, H]``,
        which unpacks like PyTorch's ``(h_n, c_n)``.
    """
    config = self.config
    if deterministic is None:
      deterministic = self.deterministic
    rng = None
    if not deterministic and self.dropout > 0 and config.num_layers > 1:
      if self.rngs is None:
        raise ValueError(_NO_DROPOUT_STREAM.format(dropout=self.dropout))
      rng = self.rngs()
    params = [getattr(self, name)() for name in config.param_names]
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

  def step(self, x_t: Array, carry: Carry | None = None) -> tuple[Array, Carry]:
    """Returns ``(y_t, new_carry)`` of one time step, with the sequence call's parameters.

    Args:
      x_t: ``[*batch, F]``, one step of input.
      carry: ``[L, *batch, H_out]`` (``LSTMState`` for LSTM), e.g. a sequence
        call's ``final_carry`` or ``module.initial_carry(batch_shape)``;
        ``None`` means zeros.

    Returns:
      y_t: ``[*batch, H_out]``, the last layer's output at this step.
      new_carry: the state after this step, shaped like ``carry``.
    """
    params = [getattr(self, name)() for name in self.config.param_names]
    return step_layers(self.config, params, x_t, carry, dtype=self.dtype)


class RNN(_RecurrentLayer):
  """Elman RNN layer (NNX), like ``torch.nn.RNN`` and [`jaxrnn.RNN`][jaxrnn.RNN].

  Constructor arguments are the linen layer's fields, plus ``in_features``
  (``F``) first and ``rngs`` (``params`` for the weights, ``dropout`` for
  dropout between layers). As for ``nnx.Dropout``, dropout is active until
  ``module.eval()`` (or ``deterministic=True``); it only matters when
  ``dropout > 0`` and ``num_layers > 1``. Parameters are ``module.l0.w_ih``,
  ``module.l0_reverse.w_hh``, ...: the same names, shapes and initializers as
  the linen ``params['l0']['w_ih']``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import jaxrnn
    >>> layer = jaxrnn.nnx.RNN(
    ...     2, 4, num_layers=2, nonlinearity='relu', rngs=nnx.Rngs(0))
    >>> outputs, final_carry = layer(jnp.ones((3, 5, 2)))
    >>> outputs.shape, final_carry.shape
    ((3, 5, 4), (2, 3, 4))
  """

  cell_family: ClassVar[str] = 'rnn'

  def __init__(self, in_features: int, hidden_size: int, *, nonlinearity: str = 'tanh', **kwargs):
    self.nonlinearity = nonlinearity
    super().__init__(in_features, hidden_size, **kwargs)


class LSTM(_RecurrentLayer):
  """LSTM layer (NNX), like ``torch.nn.LSTM`` and [`jaxrnn.LSTM`][jaxrnn.LSTM], with optional ``proj_size``.

  Constructor arguments are the linen layer's fields, plus ``in_features``
  (``F``) first and ``rngs`` (``params`` for the weights, ``dropout`` for
  dropout between layers). As for ``nnx.Dropout``, dropout is active until
  ``module.eval()`` (or ``deterministic=True``); it only matters when
  ``dropout > 0`` and ``num_layers > 1``. Parameters are ``module.l0.w_ih``,
  ``module.l0_reverse.w_hh``, ...: the same names, shapes and initializers as
  the linen ``params['l0']['w_ih']``.

  ``final_carry`` is an [`LSTMState`][jaxrnn.LSTMState] ``(h, c)``, which unpacks like
  PyTorch's ``(h_n, c_n)``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import jaxrnn
    >>> layer = jaxrnn.nnx.LSTM(3, 8, bidirectional=True, rngs=nnx.Rngs(0))
    >>> x, lengths = jnp.ones((2, 6, 3)), jnp.array([6, 4])
    >>> outputs, (h_n, c_n) = layer(x, lengths)
    >>> outputs.shape, h_n.shape, c_n.shape
    ((2, 6, 16), (2, 2, 8), (2, 2, 8))
  """

  cell_family: ClassVar[str] = 'lstm'

  def __init__(self, in_features: int, hidden_size: int, *, proj_size: int = 0, **kwargs):
    self.proj_size = proj_size
    super().__init__(in_features, hidden_size, **kwargs)


class GRU(_RecurrentLayer):
  """GRU layer (NNX), like ``torch.nn.GRU`` and [`jaxrnn.GRU`][jaxrnn.GRU].

  Constructor arguments are the linen layer's fields, plus ``in_features``
  (``F``) first and ``rngs`` (``params`` for the weights, ``dropout`` for
  dropout between layers). As for ``nnx.Dropout``, dropout is active until
  ``module.eval()`` (or ``deterministic=True``); it only matters when
  ``dropout > 0`` and ``num_layers > 1``. Parameters are ``module.l0.w_ih``,
  ``module.l0_reverse.w_hh``, ...: the same names, shapes and initializers as
  the linen ``params['l0']['w_ih']``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import jaxrnn
    >>> layer = jaxrnn.nnx.GRU(3, 8, time_major=True, rngs=nnx.Rngs(0))
    >>> outputs, final_carry = layer(jnp.ones((6, 2, 3)))
    >>> outputs.shape, final_carry.shape
    ((6, 2, 8), (1, 2, 8))
  """

  cell_family: ClassVar[str] = 'gru'


_TWINS = {
  linen_layers.RNN: RNN,
  linen_layers.LSTM: LSTM,
  linen_layers.GRU: GRU,
}


def linen_to_nnx(
  layer: linen_layers.nn.Module,
  variables: Mapping[str, Any],
  *,
  rngs: nnx.Rngs | None = None,
  deterministic: bool = False,
) -> _RecurrentLayer:
  """Returns the NNX twin of a linen ``layer`` holding ``variables``' parameters.

  Args:
    layer: ``jaxrnn.RNN``, ``LSTM`` or ``GRU`` (linen).
    variables: ``{'params': ...}`` of that layer.
    rngs: its ``dropout`` stream (or ``default``) drives dropout between
      layers; default ``nnx.Rngs(0)``.
    deterministic: the NNX module's dropout mode (see ``module.eval()``).

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> layer = jaxrnn.GRU(hidden_size=4)
    >>> x = jnp.ones((2, 3, 5))
    >>> variables = layer.init(jax.random.key(0), x)
    >>> module = jaxrnn.interop.linen_to_nnx(layer, variables)
    >>> bool(jnp.array_equal(module(x)[0], layer.apply(variables, x)[0]))
    True
  """
  twin = _TWINS.get(type(layer))
  if twin is None:
    raise TypeError(f'linen_to_nnx takes a jaxrnn.RNN, LSTM or GRU (linen), got {type(layer).__name__}.')
  params = variables['params']
  fields = {
    f.name: getattr(layer, f.name) for f in dataclasses.fields(layer) if f.name not in ('parent', 'name')
  }
  in_features = params[layer.config.param_names[0]]['w_ih'].shape[0]
  hidden_size = fields.pop('hidden_size')
  # Built abstractly: its initial weights are replaced below, so no params stream is needed.
  module = nnx.eval_shape(
    lambda: twin(in_features, hidden_size, **fields, deterministic=deterministic, rngs=nnx.Rngs(0))
  )
  config = layer.config
  for row, group in enumerate(config.param_names):
    weights = getattr(module, group)
    if group not in params or set(params[group]) != {n for n in CellParams._fields if hasattr(weights, n)}:
      raise ValueError(
        f"variables['params'][{group!r}] has {sorted(params.get(group, {}))}, not this layer's weights."
      )
    expected = config.weight_shapes(row // config.num_directions, in_features)
    for name, value in params[group].items():
      if tuple(np.shape(value)) != expected[name]:
        raise ValueError(
          f"variables['params'][{group!r}][{name!r}] has shape {tuple(np.shape(value))}, but "
          f'{type(layer).__name__}(hidden_size={config.hidden_size}) reading F={in_features} expects '
          f'{expected[name]}.'
        )
    for name, value in params[group].items():
      setattr(weights, name, nnx.Param(jnp.asarray(value)))
  if module.rngs is not None:  # eval_shape left an abstract stream: make a real one
    module.rngs = (rngs or nnx.Rngs(0))['dropout'].fork()
  return module


def nnx_to_linen(module: _RecurrentLayer) -> tuple[linen_layers.nn.Module, dict]:
  """Returns ``(layer, variables)``: the linen twin of an NNX layer, with its parameters.

  Returns:
    layer: the [`jaxrnn.RNN`][jaxrnn.RNN], [`LSTM`][jaxrnn.LSTM] or
      [`GRU`][jaxrnn.GRU] (linen) with the module's hyper-parameters.
    variables: ``{'params': ...}``, the module's parameters for
      ``layer.apply``.

  Examples:
    >>> import jax.numpy as jnp, jaxrnn
    >>> from flax import nnx
    >>> module = jaxrnn.nnx.LSTM(3, 4, proj_size=2, rngs=nnx.Rngs(0))
    >>> layer, variables = jaxrnn.interop.nnx_to_linen(module)
    >>> layer.proj_size, variables['params']['l0']['w_hr'].shape
    (2, (4, 2))
  """
  linen_cls = {v: k for k, v in _TWINS.items()}.get(type(module))
  if linen_cls is None:
    raise TypeError(f'nnx_to_linen takes a jaxrnn.nnx.RNN, LSTM or GRU, got {type(module).__name__}.')
  names = [f.name for f in dataclasses.fields(linen_cls) if f.name not in ('parent', 'name')]
  layer = linen_cls(**{n: getattr(module, n) for n in names})
  params = {group: getattr(module, group)()._asdict() for group in layer.config.param_names}
  params = {group: {k: v for k, v in p.items() if v is not None} for group, p in params.items()}
  return layer, {'params': params}
