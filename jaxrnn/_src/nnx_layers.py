"""Flax NNX layers: the same parameters and semantics as the linen layers, same core."""

from __future__ import annotations

import inspect
from typing import Any
from typing import ClassVar

import jax
from flax import nnx

from jaxrnn._src.compose import apply_layers
from jaxrnn._src.compose import step_layers
from jaxrnn._src.config import OPTION_DEFAULTS
from jaxrnn._src.config import OPTION_NAMES
from jaxrnn._src.config import check_bool
from jaxrnn._src.config import check_cell
from jaxrnn._src.fields import LayerFields
from jaxrnn._src.fields import cell_field_defaults
from jaxrnn._src.fields import cell_field_names
from jaxrnn._src.fields import split_preset_kwargs
from jaxrnn._src.torch_cells import ElmanCell
from jaxrnn._src.torch_cells import GRUCell
from jaxrnn._src.torch_cells import LSTMCell
from jaxrnn._src.types import Array
from jaxrnn._src.types import Carry


class _CellWeights(nnx.Module):
  """One layer-direction's weights as ``nnx.Param`` attributes ``w_ih``, ``w_hh``, ... (``param_specs``)."""

  def __init__(self, specs: dict, param_dtype, rngs: nnx.Rngs):
    self.names = tuple(specs)
    for name, (shape, init) in specs.items():
      setattr(self, name, nnx.Param(init(rngs.params(), shape, param_dtype)))

  def __call__(self) -> dict:
    return {name: getattr(self, name)[...] for name in self.names}


class _CellTree(nnx.Module):
  """One layer-direction's parameters as the cell's own pytree of ``nnx.Param`` (``module.l0.tree``)."""

  def __init__(self, tree):
    self.tree = nnx.data(jax.tree.map(nnx.Param, tree))

  def __call__(self):
    return jax.tree.map(lambda v: v[...], self.tree, is_leaf=lambda v: isinstance(v, nnx.Variable))


_NO_DROPOUT_STREAM = (
  'dropout at rate {dropout} needs a dropout stream: build the layer with '
  '`rngs=nnx.Rngs(0)` or `nnx.Rngs(params=0, dropout=1)`, or call it with '
  '`deterministic=True` (or `module.eval()`).'
)


def _check_in_features(in_features, feature_ndim: int) -> None:
  if feature_ndim > 1:
    ok = isinstance(in_features, tuple) and len(in_features) == feature_ndim
    ok = ok and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in in_features)
    if not ok:
      raise ValueError(
        f'`in_features` must be a tuple of {feature_ndim} positive ints (the cell reads {feature_ndim} '
        f'feature axes), got {in_features!r}.'
      )
    return
  if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
    raise ValueError(
      f'`in_features` (F, the last axis of the inputs) must be a positive int, got {in_features!r}.'
    )


class _Layer(LayerFields, nnx.Module):
  """Shared constructor, call and ``step`` of ``Recurrent`` and the presets."""

  def _build(self, in_features, options: dict, deterministic: bool, rngs: nnx.Rngs) -> None:
    """Stores the options, checks everything and draws the weights (``self.cell`` or the cell
    fields are already set)."""
    if not isinstance(rngs, nnx.Rngs):
      raise TypeError(
        f'`rngs` must be an nnx.Rngs (e.g. nnx.Rngs(0)) to draw the initial weights, got {type(rngs).__name__}.'
      )
    for name, value in {**OPTION_DEFAULTS, **options}.items():
      setattr(self, name, value)
    check_bool('deterministic', deterministic)
    self.deterministic = deterministic
    config = self.config  # validates the hyper-parameters
    _check_in_features(in_features, config.feature_ndim)
    self.in_features = in_features
    for row, name in enumerate(config.param_names):
      cell = config.row_cell(row)
      features = config.layer_features(row // config.num_directions, in_features)
      if hasattr(cell, 'param_specs'):
        setattr(self, name, _CellWeights(cell.param_specs(features), self.param_dtype, rngs))
      else:
        setattr(self, name, _CellTree(cell.init(rngs.params(), features, self.param_dtype)))
    # A dropout stream whenever there is dropout between layers to draw, also at rate 0:
    # `module.dropout = p` later works as for nnx.Dropout and PyTorch's `rnn.dropout = p`.
    try:
      draws = config.num_layers > 1 or config.recurrent_dropout > 0
      self.rngs = rngs['dropout'].fork() if draws else nnx.data(None)
    except KeyError:  # nnx.Rngs(params=...) alone: fine as long as no dropout is drawn
      if config.draws_dropout(deterministic=False):
        rate = max(config.dropout, config.recurrent_dropout)
        raise ValueError(_NO_DROPOUT_STREAM.format(dropout=rate)) from None
      self.rngs = nnx.data(None)

  def _params(self) -> list:
    return [getattr(self, name)() for name in self.config.param_names]

  def __call__(
    self,
    inputs: Array,
    seq_lengths: Array | None = None,
    initial_carry: Carry | None = None,
    *,
    segment_ids: Array | None = None,
    num_segments: int | None = None,
    deterministic: bool | None = None,
  ) -> tuple[Array, Carry]:
    """Returns ``(outputs, final_carry)``, exactly as the linen layer does.

    Args:
      inputs: ``[*batch, T, F]``, or ``[T, *batch, F]`` when ``time_major``.
      seq_lengths: integers ``[*batch]`` in ``[0, T]``; ``None`` means all ``T``.
      initial_carry: shaped like ``final_carry``; ``None`` means zeros. With
        ``segment_ids``, ``[L*D, *batch, S, ...]`` (one per sequence) or
        ``[L*D, *batch, ...]`` (shared by a row's sequences).
      segment_ids: integers ``[*batch, T]`` (time-major ``[T, *batch]``) instead
        of ``seq_lengths``: several sequences packed in each row, ``0`` for
        padding and ``1..S`` for the sequences, each a contiguous run (SPEC §11).
        Every sequence runs as if alone, in both directions.
      num_segments: ``S``, a Python int (static under jit); ``None`` is the
        largest id, which needs concrete ids.
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
        which unpacks like PyTorch's ``(h_n, c_n)``. With ``segment_ids``, every leaf
        ``[L*D, *batch, S, ...]``: index ``s - 1`` holds sequence ``s``'s final
        state (the initial carry for ids that do not occur).
    """
    config = self.config
    if deterministic is None:
      deterministic = self.deterministic
    rng = None
    if config.draws_dropout(deterministic):
      if self.rngs is None:
        raise ValueError(_NO_DROPOUT_STREAM.format(dropout=max(self.dropout, self.recurrent_dropout)))
      rng = self.rngs()
    return apply_layers(
      config,
      self._params(),
      inputs,
      seq_lengths,
      initial_carry,
      segment_ids=segment_ids,
      num_segments=num_segments,
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
    return step_layers(self.config, self._params(), x_t, carry, dtype=self.dtype)


def _keyword(name: str, default=inspect.Parameter.empty) -> inspect.Parameter:
  return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)


_OPTION_PARAMETERS = [_keyword(name, default) for name, default in OPTION_DEFAULTS.items()]
_TAIL_PARAMETERS = [_keyword('deterministic', False), _keyword('rngs')]


class Recurrent(_Layer):
  """Any cell as a recurrent layer (NNX), like [`jaxrnn.Recurrent`][jaxrnn.Recurrent].

  Constructor arguments: ``cell``, ``in_features`` (``F``, or a tuple of the
  feature axes when the cell's ``feature_ndim > 1``), then the options of the
  linen layer as keywords (``num_layers``, ``bidirectional``, ``dropout``,
  ...), ``backward_cell``, ``deterministic`` and ``rngs`` (``params`` for the
  weights, ``dropout`` for dropout between layers). Parameters are
  ``module.l0``, ``module.l0_reverse``, ...: for built-in cells with the
  weights as attributes (``module.l0.w_ih``), for other cells the cell's own
  pytree in ``module.l0.tree``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import jaxrnn
    >>> layer = jaxrnn.nnx.Recurrent(
    ...     jaxrnn.LSTMCell(8), 3, bidirectional=True, rngs=nnx.Rngs(0))
    >>> outputs, (h_n, c_n) = layer(jnp.ones((2, 6, 3)), jnp.array([6, 4]))
    >>> outputs.shape, h_n.shape
    ((2, 6, 16), (2, 2, 8))
  """

  def __init__(
    self,
    cell,
    in_features,
    *,
    backward_cell=None,
    deterministic: bool = False,
    rngs: nnx.Rngs,
    **options: Any,
  ):
    check_cell(cell)
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
      raise TypeError(f'unexpected keyword arguments {unknown}; the options are {list(OPTION_NAMES)}.')
    self.cell = cell
    self.backward_cell = backward_cell
    self._build(in_features, options, deterministic, rngs)

  __init__.__signature__ = inspect.Signature(
    [
      inspect.Parameter('self', inspect.Parameter.POSITIONAL_OR_KEYWORD),
      inspect.Parameter('cell', inspect.Parameter.POSITIONAL_OR_KEYWORD),
      inspect.Parameter('in_features', inspect.Parameter.POSITIONAL_OR_KEYWORD),
      *_OPTION_PARAMETERS,
      _keyword('backward_cell', None),
      *_TAIL_PARAMETERS,
    ]
  )


class _Preset(_Layer):
  """``RNN``, ``LSTM`` and ``GRU``: ``Recurrent`` over a PyTorch cell, with the cell's fields as
  constructor arguments."""

  cell_type: ClassVar[type]

  def __init__(self, in_features, hidden_size, *, deterministic: bool = False, rngs: nnx.Rngs, **kwargs: Any):
    cell_kwargs, options = split_preset_kwargs(self.cell_type, {'hidden_size': hidden_size, **kwargs})
    for name, value in {**cell_field_defaults(self.cell_type), **cell_kwargs}.items():
      setattr(self, name, value)
    self._build(in_features, options, deterministic, rngs)

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    names, defaults = cell_field_names(cls.cell_type), cell_field_defaults(cls.cell_type)

    def __init__(self, *args, **kwargs):  # its own function: each preset has its own signature
      _Preset.__init__(self, *args, **kwargs)

    __init__.__doc__ = _Preset.__init__.__doc__
    cls.__init__ = __init__
    cls.__init__.__signature__ = inspect.Signature(
      [
        inspect.Parameter('self', inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter('in_features', inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter('hidden_size', inspect.Parameter.POSITIONAL_OR_KEYWORD),
        *[_keyword(n, defaults[n]) for n in names[1:]],
        *_OPTION_PARAMETERS,
        *_TAIL_PARAMETERS,
      ]
    )


class RNN(_Preset):
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

  cell_type: ClassVar[type] = ElmanCell


class LSTM(_Preset):
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

  cell_type: ClassVar[type] = LSTMCell


class GRU(_Preset):
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

  cell_type: ClassVar[type] = GRUCell
