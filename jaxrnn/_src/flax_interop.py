"""Flax interop: linen <-> NNX layers with their parameters, ``FlaxCell`` (any linen cell as a jaxrnn cell),
and ``from_flax`` (Flax's own ``nn.RNN`` / ``nn.Bidirectional`` over its built-in cells -> jaxrnn layers)."""

from __future__ import annotations

import dataclasses
import inspect
import numbers
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrnn._src import linen_layers
from jaxrnn._src import nnx_layers
from jaxrnn._src.compose import cast_floating
from jaxrnn._src.flax_style_cells import MGUCell
from jaxrnn._src.types import Array

_TWINS = {
  linen_layers.RNN: nnx_layers.RNN,
  linen_layers.LSTM: nnx_layers.LSTM,
  linen_layers.GRU: nnx_layers.GRU,
  linen_layers.Recurrent: nnx_layers.Recurrent,
}


def _shapes(tree) -> Any:
  return jax.tree.map(lambda a: tuple(np.shape(a)), tree)


def linen_to_nnx(
  layer: linen_layers.nn.Module,
  variables: Mapping[str, Any],
  *,
  in_features: Any = None,
  rngs: nnx.Rngs | None = None,
  deterministic: bool = False,
) -> nnx_layers._Layer:
  """Returns the NNX twin of a linen ``layer`` holding ``variables``' parameters.

  Args:
    layer: ``jaxrnn.RNN``, ``LSTM``, ``GRU`` or ``Recurrent`` (linen).
    variables: ``{'params': ...}`` of that layer.
    in_features: ``F`` of the inputs; ``None`` reads it from ``w_ih`` (built-in
      cells). Needed for other cells, whose parameters do not name it.
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
    raise TypeError(
      f'linen_to_nnx takes a jaxrnn.RNN, LSTM, GRU or Recurrent (linen), got {type(layer).__name__}.'
    )
  params = variables['params']
  fields = {
    f.name: getattr(layer, f.name) for f in dataclasses.fields(layer) if f.name not in ('parent', 'name')
  }
  config = layer.config
  first = params.get(config.param_names[0], {})
  if in_features is None:
    if not (hasattr(config.cell, 'param_specs') and 'w_ih' in first):
      raise ValueError(
        f'`in_features` is needed to move a layer of {type(config.cell).__name__} to NNX: its '
        'parameters do not name the input features.'
      )
    in_features = np.shape(first['w_ih'])[0]
  # Built abstractly: its initial weights are replaced below, so no params stream is needed.
  if twin is nnx_layers.Recurrent:
    cell = fields.pop('cell')
    build = lambda: twin(cell, in_features, **fields, deterministic=deterministic, rngs=nnx.Rngs(0))  # noqa: E731
  else:
    hidden_size = fields.pop('hidden_size')
    build = lambda: twin(in_features, hidden_size, **fields, deterministic=deterministic, rngs=nnx.Rngs(0))  # noqa: E731
  module = nnx.eval_shape(build)
  for row, group in enumerate(config.param_names):
    weights = getattr(module, group)
    if isinstance(weights, nnx_layers._CellTree):
      expected = jax.tree.map(
        lambda v: tuple(v.shape), weights.tree, is_leaf=lambda v: isinstance(v, nnx.Variable)
      )
      if group not in params or _shapes(params[group]) != expected:
        raise ValueError(
          f"variables['params'][{group!r}] has shapes {_shapes(params.get(group))}, but "
          f'{type(config.cell).__name__} reading {in_features} expects {expected}.'
        )
      weights.tree = nnx.data(jax.tree.map(lambda a: nnx.Param(jnp.asarray(a)), params[group]))
      continue
    if group not in params or set(params[group]) != set(weights.names):
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


def nnx_to_linen(module: nnx_layers._Layer) -> tuple[linen_layers.nn.Module, dict]:
  """Returns ``(layer, variables)``: the linen twin of an NNX layer, with its parameters.

  Returns:
    layer: the [`jaxrnn.RNN`][jaxrnn.RNN], [`LSTM`][jaxrnn.LSTM],
      [`GRU`][jaxrnn.GRU] or [`Recurrent`][jaxrnn.Recurrent] (linen) with the
      module's hyper-parameters.
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
    raise TypeError(
      f'nnx_to_linen takes a jaxrnn.nnx.RNN, LSTM, GRU or Recurrent, got {type(module).__name__}.'
    )
  names = [f.name for f in dataclasses.fields(linen_cls) if f.name not in ('parent', 'name')]
  layer = linen_cls(**{n: getattr(module, n) for n in names})
  return layer, {'params': {group: getattr(module, group)() for group in layer.config.param_names}}


# FlaxCell: a flax.linen cell under the jaxrnn layers
#
# ``FlaxCell``: any ``flax.linen`` recurrent cell as a cell of the open protocol (SPEC §10).
#
# A linen cell (``nn.LSTMCell``, ``nn.GRUCell``, ``nn.ConvLSTMCell``, a user's
# ``nn.RNNCellBase`` subclass, ...) already has the scan-shaped step
# ``(carry, x) -> (carry, y)``; what the layers also need is a hashable object
# (they pass the cell to ``jax.jit`` as a static argument) and a carry made
# without knowing the input features. Both are decided here:
#
# - Equality and hash come from the module's fields (its ``parent`` and ``name``
#   left out, lists read as tuples), so two equal cells share one compilation.
#   A field that still cannot be hashed (an array, say) makes the cell compare
#   by identity instead: always correct, at worst one compilation per object.
# - The carry is ``module.initialize_carry`` on a placeholder input. Flax's own
#   cells size it from the batch axes and ``features`` alone, except
#   ``nn.ConvLSTMCell``, whose carry also has the input's spatial shape: that
#   one needs ``feature_shape``. Whether a cell's carry depends on the
#   placeholder is checked once, at construction, by sizing it for two; ``init``
#   checks ``feature_shape`` against the features it is given.


_IDENTITY = object()  # the key of a module whose fields cannot be hashed
# Flax's LSTM cells carry (c, h): recurrent dropout masks h, the input of the recurrent matmul.
_CELL_STATE_FIRST = (nn.LSTMCell, nn.OptimizedLSTMCell, nn.ConvLSTMCell)


def _frozen(value):
  """Returns ``value`` as a hashable key (lists and dicts as tuples), or ``_IDENTITY``."""
  if isinstance(value, (list, tuple)):
    items = tuple(_frozen(v) for v in value)
    return _IDENTITY if any(v is _IDENTITY for v in items) else (type(value).__name__, items)
  if isinstance(value, Mapping):
    items = tuple((k, _frozen(v)) for k, v in sorted(value.items(), key=lambda kv: repr(kv[0])))
    return _IDENTITY if any(v is _IDENTITY for _, v in items) else ('mapping', items)
  if isinstance(value, nn.Module):
    return _module_key(value)
  if not isinstance(value, (type, np.generic)) and (
    isinstance(value, jax.core.Tracer) or hasattr(value, '__array__')
  ):
    return _IDENTITY  # `==` on arrays is elementwise: no safe equality (dtypes and scalars are fine)
  try:
    hash(value)
  except TypeError:
    return _IDENTITY
  return value


def _module_key(module: nn.Module):
  """Returns a hashable key of a linen module's fields (without ``parent`` and ``name``)."""
  fields = tuple(
    (f.name, _frozen(getattr(module, f.name)))
    for f in dataclasses.fields(module)
    if f.name not in ('parent', 'name')
  )
  if any(value is _IDENTITY for _, value in fields):
    return _IDENTITY
  return (type(module), fields)


def _placeholder_shape(batch_shape, feature_shape, feature_ndim: int, size: int) -> tuple[int, ...]:
  features = (size,) * feature_ndim if feature_shape is None else tuple(feature_shape)
  return (*batch_shape, *features)


@dataclasses.dataclass(frozen=True, eq=False)
class FlaxCell:
  """A ``flax.linen`` recurrent cell as a jaxrnn cell (SPEC §10), for [`Recurrent`][jaxrnn.Recurrent].

  Adapts any ``nn.RNNCellBase`` (``nn.LSTMCell``, ``nn.OptimizedLSTMCell``,
  ``nn.GRUCell``, ``nn.MGUCell``, ``nn.SimpleCell``, ``nn.ConvLSTMCell``, a
  subclass of your own) so that jaxrnn's layers run it stacked,
  bidirectional and padded, with jaxrnn's padding semantics (exact zeros at
  padding, the carry of each sequence's last valid step, the initial carry for
  length 0). One step is ``module.apply({'params': params}, carry, x)``.

  - Parameters: the module's ``params`` collection, unchanged; a layer stores
    it as ``params['l0']`` (linen) or ``module.l0.tree`` (NNX), where Flax's
    ``nn.RNN`` stores the same tree as ``params['cell']``.
  - Carry: Flax's layout, e.g. ``(c, h)`` for ``nn.LSTMCell`` (not
    jaxrnn's ``LSTMState(h, c)``); a layer's final carry stacks every leaf
    ``[L*D, *batch, ...]``. It starts from ``module.initialize_carry`` (zeros
    with Flax's default ``carry_init``), cast to the compute dtype.
  - Output ``y``: ``[*batch, module.features]`` (``[*batch, *spatial,
    features]`` for ``nn.ConvLSTMCell``).

  The cell must need no rng and no collection but ``params`` (no dropout or
  batch statistics inside the step).

  Attributes:
    module: the linen cell. A copy without parent is kept, so a cell made
      inside another module's ``@nn.compact`` method works too.
    feature_shape: the shape of one step's features, ``x.shape[-feature_ndim:]``
      (e.g. ``(H, W, C)`` for a 2-D ``nn.ConvLSTMCell``), used only to size the
      carry. Needed when the carry depends on it, as ``nn.ConvLSTMCell``'s
      spatial shape does; ``None`` otherwise.
    output_size: ``H_out``; ``None`` reads ``module.features``.

  Examples:
    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxrnn
    >>> cell = jaxrnn.linen.FlaxCell(nn.LSTMCell(features=8))
    >>> layer = jaxrnn.Recurrent(cell, bidirectional=True)
    >>> x, lengths = jnp.ones((2, 5, 3)), jnp.array([5, 3])
    >>> variables = layer.init(jax.random.key(0), x, lengths)
    >>> outputs, (c, h) = layer.apply(variables, x, lengths)  # Flax's (c, h)
    >>> outputs.shape, c.shape, h.shape
    ((2, 5, 16), (2, 2, 8), (2, 2, 8))
    >>> sorted(variables['params']['l0'])  # nn.LSTMCell's own parameters
    ['hf', 'hg', 'hi', 'ho', 'if', 'ig', 'ii', 'io']
  """

  module: nn.Module
  feature_shape: tuple[int, ...] | None = None
  output_size: int | None = None

  def __post_init__(self):
    module = self.module
    if not isinstance(module, nn.Module):
      raise TypeError(
        f'`module` must be a flax.linen recurrent cell such as nn.LSTMCell(features=8), got '
        f'{type(module).__name__}.'
      )
    if not hasattr(module, 'initialize_carry'):
      raise TypeError(
        f'`module` must be a flax.linen recurrent cell with `initialize_carry(rng, input_shape)` '
        f'(an nn.RNNCellBase), got {type(module).__name__}.'
      )
    # An unbound copy: a cell made inside an @nn.compact method is bound to that module's
    # scope, and bound modules can be neither hashed nor applied on their own.
    object.__setattr__(self, 'module', module.copy(parent=None))
    features = getattr(module, 'features', None)
    has_features = isinstance(features, numbers.Integral) and not isinstance(features, bool)
    if self.output_size is None:
      if not has_features:
        raise TypeError(
          f'FlaxCell reads the output size from `module.features`, which {type(module).__name__} '
          f'does not have as an int (got {features!r}): pass `output_size=H_out`.'
        )
      object.__setattr__(self, 'output_size', int(features))
    elif has_features and self.output_size != features:
      raise ValueError(
        f'`output_size` ({self.output_size}) must equal `module.features` ({features}), the width '
        f'of the outputs of {type(module).__name__}.'
      )
    if self.feature_shape is not None:
      shape = tuple(self.feature_shape)
      if len(shape) != self.feature_ndim or not all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1 for n in shape
      ):
        raise ValueError(
          f'`feature_shape` must be {self.feature_ndim} positive ints, the last {self.feature_ndim} '
          f'axes of one step of input (module.num_feature_axes), got {self.feature_shape!r}.'
        )
      object.__setattr__(self, 'feature_shape', tuple(int(n) for n in shape))
    else:
      self._check_carry_needs_no_features()
    # The jit cache hashes the cell at every call: the key of the (immutable) module, once.
    object.__setattr__(self, '_cached_key', (_module_key(self.module), self.feature_shape, self.output_size))

  @property
  def feature_ndim(self) -> int:
    """Trailing feature axes of ``x``: ``module.num_feature_axes`` (1 when the module does not say)."""
    try:
      return int(self.module.num_feature_axes)
    except (AttributeError, NotImplementedError):
      return 1

  def _carry_shapes(self, batch_shape, size: int):
    shape = _placeholder_shape(batch_shape, self.feature_shape, self.feature_ndim, size)
    try:
      return jax.eval_shape(lambda key: self.module.initialize_carry(key, shape), jax.random.key(0))
    except NotImplementedError:
      raise TypeError(
        f'{type(self.module).__name__} must implement `initialize_carry(rng, input_shape)`, which '
        'FlaxCell uses to make the initial carry.'
      ) from None

  def _check_carry_needs_no_features(self) -> None:
    one, two = self._carry_shapes((1,), 1), self._carry_shapes((1,), 2)
    if jax.tree.map(jnp.shape, one) != jax.tree.map(jnp.shape, two):
      ndim = self.feature_ndim
      example = '(H, W, C)' if ndim == 3 else f'a tuple of {ndim} ints'
      raise ValueError(
        f'the carry of {type(self.module).__name__} depends on the shape of the input features '
        f'(its initialize_carry reads them), which a layer does not know when it makes the '
        f'initial carry: pass `FlaxCell(module, feature_shape=...)`, the last {ndim} axes of one '
        f'step of input, {example}.'
      )

  def _key(self):
    return self._cached_key

  def __eq__(self, other) -> bool:
    if not isinstance(other, FlaxCell):
      return NotImplemented
    mine, theirs = self._key(), other._key()
    if _IDENTITY in (mine[0], theirs[0]):
      return self.module is other.module and mine[1:] == theirs[1:]
    return mine == theirs

  def __hash__(self) -> int:
    key = self._key()
    return hash((id(self.module), *key[1:]) if key[0] is _IDENTITY else key)

  def init(self, key: Array, in_features: int | tuple[int, ...], dtype: Any = jnp.float32) -> Any:
    """Returns the module's ``params`` collection for inputs ``x: [*batch, *in_features]``.

    Args:
      key: a PRNG key.
      in_features: ``F`` (an int), or the tuple of the last ``feature_ndim``
        axes of ``x``.
      dtype: the parameters' dtype (floating leaves are cast to it).
    """
    features = (in_features,) if isinstance(in_features, numbers.Integral) else tuple(in_features)
    carry = self.initial_carry((1,), dtype)
    actual = jax.eval_shape(lambda k: self.module.initialize_carry(k, (1, *features)), jax.random.key(0))
    if jax.tree.map(jnp.shape, actual) != jax.tree.map(jnp.shape, carry):
      raise ValueError(
        f'{type(self.module).__name__} makes a carry of shapes {jax.tree.map(jnp.shape, actual)} for '
        f'inputs with features {features}, but FlaxCell(feature_shape={self.feature_shape}) makes '
        f'{jax.tree.map(jnp.shape, carry)}: set `feature_shape` to the features of the inputs.'
      )
    variables = self.module.init(key, carry, jnp.zeros((1, *features), dtype))
    others = sorted(set(variables) - {'params'})
    if others:
      raise ValueError(
        f'FlaxCell runs cells whose only variables are `params`; {type(self.module).__name__} also '
        f'makes {others}, which a recurrent layer would have to carry through time.'
      )
    params = variables.get('params', {})
    return cast_floating(params, dtype)

  def initial_carry(self, batch_shape: Sequence[int], dtype: Any = jnp.float32) -> Any:
    """Returns ``module.initialize_carry`` for ``batch_shape``, floating leaves cast to ``dtype``.

    Leaves are ``[*batch, ...]`` in Flax's layout (``(c, h)``, each
    ``[*batch, H]``, for ``nn.LSTMCell``).
    """
    shape = _placeholder_shape(tuple(batch_shape), self.feature_shape, self.feature_ndim, 1)
    carry = self.module.initialize_carry(jax.random.key(0), shape)
    return cast_floating(carry, dtype)

  def hidden_leaves(self, carry) -> Any:
    """Hook: the carry leaves ``recurrent_dropout`` masks: ``h`` of the ``(c, h)`` of Flax's LSTM
    cells (``nn.LSTMCell``, ``nn.OptimizedLSTMCell``, ``nn.ConvLSTMCell``), else every floating leaf."""
    if isinstance(self.module, _CELL_STATE_FIRST):
      return (False, True)
    return jax.tree.map(lambda leaf: bool(jnp.issubdtype(leaf.dtype, jnp.floating)), carry)

  def __call__(self, params, carry, x: Array) -> tuple[Any, Array]:
    """Returns ``(new_carry, y)`` of one step, ``module.apply({'params': params}, carry, x)``.

    ``x: [*batch, *features]``; ``new_carry`` keeps the dtypes of ``carry``.
    """
    new_carry, y = self.module.apply({'params': params}, carry, x)
    new_carry = jax.tree.map(lambda n, c: n.astype(c.dtype), new_carry, carry)
    return new_carry, y


# from_flax: Flax's nn.RNN / nn.Bidirectional (linen and NNX) over its built-in cells -> jaxrnn
#
# Flax keeps one Dense per gate (linen LSTMCell: ii, if, ig, io without bias, hi, hf, hg, ho with
# bias) or one fused Linear per side (NNX OptimizedLSTMCell, GRUCell, SimpleCell: dense_i,
# dense_h); jaxrnn's presets keep fused w_ih [F, G*H], w_hh [H, G*H], b_ih, b_hh [G*H] in the
# same gate order (i, f, g, o; r, z, n). Conversion concatenates kernels and fills the biases Flax
# does not have with zeros; nn.MGUCell's tree moves unchanged to jaxrnn.MGUCell.

_HINT = (
  'jaxrnn.Recurrent(jaxrnn.linen.FlaxCell(cell)) runs any flax.linen cell exactly, with its own '
  'parameter tree (params["l0"] = variables["params"]["cell"]).'
)
# There is no NNX FlaxCell: an NNX user builds the layer by hand.
_NNX_HINT = (
  'FlaxCell adapts linen cells only; for an NNX cell, build the layer by hand: '
  'jaxrnn.nnx.Recurrent(jaxrnn.linen.FlaxCell(<the linen version of the cell>), in_features, rngs=...) '
  'or jaxrnn.nnx.Recurrent over a cell of your own (the open protocol of docs/guide/cells.md), then copy '
  'the parameters into module.l0.tree.'
)
_SIGMOID = {jax.nn.sigmoid}
_TANH = {jnp.tanh, getattr(jax.nn, 'tanh', jnp.tanh)}  # flax's nn.tanh is jnp.tanh
_RELU = {jax.nn.relu}
_ZEROS = {None, jax.nn.initializers.zeros}
# nn.Bidirectional's default merge_fn (concatenate [forward, backward] on the last axis), linen and NNX,
# read off the public signatures rather than imported by its private name.
_CONCATENATE = {
  nn.Bidirectional.__dataclass_fields__['merge_fn'].default,
  inspect.signature(nnx.Bidirectional.__init__).parameters['merge_fn'].default,
}
_LSTM_GATES = ('i', 'f', 'g', 'o')
_GRU_GATES = ('r', 'z', 'n')
# linen nn.RNN's lifting options and their defaults: anything else changes what the scan does.
_RNN_DEFAULTS = {'variable_axes': {}, 'variable_broadcast': 'params', 'variable_carry': False}


@dataclasses.dataclass(frozen=True)
class _Spec:
  """What one Flax cell is in jaxrnn's terms: all directions and layers of a stack must agree."""

  kind: str  # 'LSTM', 'GRU', 'RNN' (presets) or 'MGU' (Recurrent over jaxrnn.MGUCell)
  features: int
  extra: tuple  # sorted (name, value) pairs: nonlinearity, or MGUCell's fields
  dtype: Any
  param_dtype: Any
  source: str = dataclasses.field(compare=False)  # the Flax class, for messages


def _is_one_of(value, functions) -> bool:
  """Identity, not ``==``: a callable object's ``__eq__`` (or an unhashable one) cannot pass for Flax's function."""
  return any(value is f for f in functions)


def _name(module) -> str:
  return type(module).__name__


def _hint(cell) -> str:
  """What to do instead, for a cell ``from_flax`` cannot convert: linen and NNX users differ."""
  return _NNX_HINT if _is_nnx(cell) else _HINT


def _check_fn(module, field: str, allowed: set, wanted: str) -> None:
  value = getattr(module, field)
  if not _is_one_of(value, allowed):
    raise ValueError(
      f'{_name(module)}.{field}={getattr(value, "__name__", value)!r} has no jaxrnn preset '
      f'(jaxrnn converts {wanted}). {_hint(module)}'
    )


def _check_carry_init(module) -> None:
  value = getattr(module, 'carry_init', None)
  if not _is_one_of(value, _ZEROS):
    raise ValueError(
      f'{_name(module)}.carry_init={getattr(value, "__name__", value)!r}: jaxrnn layers start from a '
      f'zero carry; convert a cell with the default (zeros) carry_init and pass the initial carry as '
      f'`initial_carry` (jaxrnn.interop.from_flax_carry converts Flax carries). {_hint(module)}'
    )


def _dtypes(cell) -> tuple[Any, Any]:
  """The cell's compute and parameter dtypes, normalised so that ``'float32'`` equals ``jnp.float32``."""
  dtype = getattr(cell, 'dtype', None)
  return (None if dtype is None else jnp.dtype(dtype)), jnp.dtype(getattr(cell, 'param_dtype', jnp.float32))


def _weights(inputs: Sequence[Mapping], hidden: Sequence[Mapping]) -> dict:
  """Returns one jaxrnn group ``w_ih [F, G*H]``, ``w_hh [H, G*H]``, ``b_ih``, ``b_hh [G*H]`` from Flax's
  Dense trees of the input and the hidden side, one per gate or one fused, in jaxrnn's gate order; a
  Dense without bias (Flax's LSTM input side, GRU's ``hr``, ``hz``) contributes zeros."""

  def side(denses):
    kernels = [jnp.asarray(d['kernel']) for d in denses]
    biases = [
      jnp.asarray(d['bias']) if 'bias' in d else jnp.zeros(k.shape[-1:], k.dtype)
      for d, k in zip(denses, kernels, strict=True)
    ]
    return jnp.concatenate(kernels, axis=-1), jnp.concatenate(biases, axis=-1)

  (w_ih, b_ih), (w_hh, b_hh) = side(inputs), side(hidden)
  return {'w_ih': w_ih, 'w_hh': w_hh, 'b_ih': b_ih, 'b_hh': b_hh}


def _linen_cell(cell: nn.Module, params: Mapping) -> tuple[_Spec, dict]:
  """Returns the spec and jaxrnn parameters (one group) of a linen built-in cell."""
  dtypes = _dtypes(cell)
  params = dict(params)
  if type(cell) in (nn.LSTMCell, nn.OptimizedLSTMCell, nn.GRUCell):
    _check_fn(cell, 'gate_fn', _SIGMOID, 'sigmoid gates')
    _check_fn(cell, 'activation_fn', _TANH, 'tanh')
    _check_carry_init(cell)
    kind, gates = ('GRU', _GRU_GATES) if type(cell) is nn.GRUCell else ('LSTM', _LSTM_GATES)
    _require(cell, params, [f'i{g}' for g in gates] + [f'h{g}' for g in gates])
    # Biases Flax lacks are zeros: the LSTM's input side (b_ih = 0), the GRU's hr and hz
    # (b_hh = [0, 0, b_hn], b_hn inside r * (h W_hn + b_hn) as jaxrnn's is).
    group = _weights([params[f'i{g}'] for g in gates], [params[f'h{g}'] for g in gates])
    return _Spec(kind, cell.features, (), *dtypes, _name(cell)), group
  if type(cell) is nn.SimpleCell:
    nonlinearity = _simple_nonlinearity(cell)
    _check_carry_init(cell)
    _require(cell, params, ['i', 'h'])
    group = _weights([params['i']], [params['h']])
    return _Spec('RNN', cell.features, (('nonlinearity', nonlinearity),), *dtypes, _name(cell)), group
  if type(cell) is nn.MGUCell:
    _check_carry_init(cell)
    _require(cell, params, ['if', 'hf', 'hn', 'in'])
    extra = (
      ('activation_fn', cell.activation_fn),
      ('gate_fn', cell.gate_fn),
      ('reset_gate', cell.reset_gate),
    )
    return _Spec('MGU', cell.features, extra, *dtypes, _name(cell)), jax.tree.map(jnp.asarray, params)
  raise TypeError(
    f'from_flax converts nn.RNN over nn.LSTMCell, nn.OptimizedLSTMCell, nn.GRUCell, nn.SimpleCell or '
    f'nn.MGUCell (not subclasses, whose step may differ), got a cell {_name(cell)}. {_HINT}'
  )


def _simple_nonlinearity(cell) -> str:
  if getattr(cell, 'residual', False):
    raise ValueError(
      f'{_name(cell)}.residual=True (h = act(x W_i + h W_h + h)) has no jaxrnn preset. {_hint(cell)}'
    )
  if _is_one_of(cell.activation_fn, _RELU):
    return 'relu'
  _check_fn(cell, 'activation_fn', _TANH, 'tanh or relu')
  return 'tanh'


def _require(cell, params: Mapping, names: Sequence[str]) -> None:
  missing = [n for n in names if n not in params]
  if missing:
    raise ValueError(
      f'the parameters of {_name(cell)} must have {sorted(names)}, got {sorted(params)} (missing {missing}): '
      "pass the variables of the module itself (module.init(...)), {'params': {'cell': ...}} for nn.RNN."
    )


def _nnx_params(module) -> dict:
  return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def _nnx_cell(cell) -> tuple[_Spec, dict]:
  """Returns the spec and jaxrnn parameters (one group) of an NNX built-in cell."""
  if type(cell) not in (nnx.LSTMCell, nnx.OptimizedLSTMCell, nnx.GRUCell, nnx.SimpleCell):
    raise TypeError(
      'from_flax converts nnx.RNN over nnx.LSTMCell, nnx.OptimizedLSTMCell, nnx.GRUCell or '
      f'nnx.SimpleCell (not subclasses, whose step may differ), got a cell {_name(cell)}. {_NNX_HINT}'
    )
  promote = getattr(cell, 'promote_dtype', None)
  if promote is not None and promote is not nnx.nn.dtypes.promote_dtype:
    raise ValueError(
      f'{_name(cell)}.promote_dtype={promote!r} is not the default; jaxrnn promotes as Flax does.'
    )
  dtypes = _dtypes(cell)
  features = cell.hidden_features
  params = _nnx_params(cell)
  if type(cell) is nnx.LSTMCell:  # one Linear per gate, `if_` for the Python keyword
    group = _weights(
      [params['if_' if g == 'f' else f'i{g}'] for g in _LSTM_GATES], [params[f'h{g}'] for g in _LSTM_GATES]
    )
  else:  # fused dense_i [F, G*H], dense_h [H, G*H]; biases where Flax has them
    group = _weights([params['dense_i']], [params['dense_h']])
  if type(cell) is nnx.SimpleCell:
    nonlinearity = _simple_nonlinearity(cell)
    _check_carry_init(cell)
    return _Spec('RNN', features, (('nonlinearity', nonlinearity),), *dtypes, _name(cell)), group
  _check_fn(cell, 'gate_fn', _SIGMOID, 'sigmoid gates')
  _check_fn(cell, 'activation_fn', _TANH, 'tanh')
  _check_carry_init(cell)
  kind = 'GRU' if type(cell) is nnx.GRUCell else 'LSTM'
  return _Spec(kind, features, (), *dtypes, _name(cell)), group


# One layer of the stack: its directions [(spec, group params)] and its time_major.
_FlaxLayer = tuple[list[tuple[_Spec, dict]], bool]


def _check_forward_rnn(rnn, where: str) -> None:
  if rnn.reverse:
    raise ValueError(
      f'{where}: {_name(rnn)}(reverse=True, keep_order={rnn.keep_order}) alone has no jaxrnn '
      'equivalent (a jaxrnn layer runs forward, or both directions with bidirectional=True): '
      'convert it as the backward half of nn.Bidirectional.'
    )


def _check_linen_rnn(rnn, where: str) -> None:
  if not isinstance(rnn, nn.RNN):
    raise TypeError(f'{where} must be an nn.RNN, got {_name(rnn)}.')
  for field, default in _RNN_DEFAULTS.items():
    if getattr(rnn, field) != default:
      raise ValueError(
        f'{where}: nn.RNN({field}={getattr(rnn, field)!r}) is not the default {default!r}: jaxrnn '
        'shares one set of parameters over time and carries no other collections.'
      )


def _cell_params(params: Mapping, where: str) -> Mapping:
  if not isinstance(params, Mapping) or 'cell' not in params:
    got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
    raise ValueError(f"{where}: expected the nn.RNN's parameters {{'cell': ...}}, got {got}.")
  return params['cell']


def _linen_layer(module: nn.Module, params: Mapping, where: str) -> _FlaxLayer:
  if isinstance(module, nn.Bidirectional):
    _check_merge(module, where)
    _check_linen_rnn(module.forward_rnn, f'{where}.forward_rnn')
    _check_linen_rnn(module.backward_rnn, f'{where}.backward_rnn')
    forward = _linen_cell(
      module.forward_rnn.cell, _cell_params(params.get('forward_rnn'), f'{where}.forward_rnn')
    )
    # The same cell (or nn.RNN) object in both directions shares one parameter tree, which Flax
    # stores once under forward_rnn: each jaxrnn direction gets a copy.
    shared = module.forward_rnn.cell is module.backward_rnn.cell and 'backward_rnn' not in params
    backward_params = params['forward_rnn'] if shared else params.get('backward_rnn')
    backward = _linen_cell(module.backward_rnn.cell, _cell_params(backward_params, f'{where}.backward_rnn'))
    return [forward, backward], module.time_major
  if isinstance(module, nn.RNN):
    _check_linen_rnn(module, where)
    _check_forward_rnn(module, where)
    return [_linen_cell(module.cell, _cell_params(params, where))], module.time_major
  raise TypeError(
    f'{where}: from_flax converts nn.RNN, nn.Bidirectional, or a list or nn.Sequential of them, '
    f'got {_name(module)}.'
  )


def _nnx_layer(module, where: str) -> _FlaxLayer:
  if isinstance(module, nnx.Bidirectional):
    _check_merge(module, where)
    for side in ('forward_rnn', 'backward_rnn'):
      if not isinstance(getattr(module, side), nnx.RNN):
        raise TypeError(f'{where}.{side} must be an nnx.RNN, got {_name(getattr(module, side))}.')
    return [_nnx_cell(module.forward_rnn.cell), _nnx_cell(module.backward_rnn.cell)], module.time_major
  if isinstance(module, nnx.RNN):
    _check_forward_rnn(module, where)
    return [_nnx_cell(module.cell)], module.time_major
  raise TypeError(
    f'{where}: from_flax converts nnx.RNN, nnx.Bidirectional, or a list or nnx.Sequential of them, '
    f'got {_name(module)}.'
  )


def _check_merge(module, where: str) -> None:
  merge = module.merge_fn
  if not _is_one_of(merge, _CONCATENATE):
    raise ValueError(
      f'{where}: {_name(module)}(merge_fn={getattr(merge, "__name__", merge)!r}) is not supported: '
      "jaxrnn concatenates [forward, backward] outputs (Flax's default merge_fn); merge the two "
      'halves of its outputs yourself.'
    )


def _check_stack(layers: list[_FlaxLayer]) -> tuple[_Spec, int, bool]:
  """Returns the one spec, the number of directions and time_major of a stack, or raises naming the mismatch."""
  first, time_major = layers[0][0][0][0], layers[0][1]
  directions = len(layers[0][0])
  for k, (row, layer_time_major) in enumerate(layers):
    if len(row) != directions:
      raise ValueError(
        f'layer {k} has {len(row)} direction(s), layer 0 {directions}: a jaxrnn stack is all '
        'unidirectional or all bidirectional.'
      )
    if layer_time_major != time_major:
      raise ValueError(f'layer {k} has time_major={layer_time_major}, layer 0 {time_major}.')
    for d, (spec, _) in enumerate(row):
      if spec != first:
        raise ValueError(
          f'layer {k} direction {d} is {spec.source}(features={spec.features}, {dict(spec.extra)}, '
          f'dtype={spec.dtype}, param_dtype={spec.param_dtype}), but layer 0 is {first.source}('
          f'features={first.features}, {dict(first.extra)}, dtype={first.dtype}, '
          f'param_dtype={first.param_dtype}): one jaxrnn layer has one cell type and size.'
        )
  return first, directions, time_major


def _build(layers: list[_FlaxLayer]) -> tuple[nn.Module, dict]:
  spec, directions, time_major = _check_stack(layers)
  options = dict(
    num_layers=len(layers),
    bidirectional=directions == 2,
    time_major=bool(time_major),
    dtype=spec.dtype,
    param_dtype=spec.param_dtype,
  )
  if spec.kind == 'MGU':
    layer = linen_layers.Recurrent(MGUCell(spec.features, **dict(spec.extra)), **options)
  else:
    cls = {'LSTM': linen_layers.LSTM, 'GRU': linen_layers.GRU, 'RNN': linen_layers.RNN}[spec.kind]
    layer = cls(hidden_size=spec.features, init_scheme='flax', **dict(spec.extra), **options)
  groups = [group for row, _ in layers for _, group in row]
  return layer, {'params': dict(zip(layer.config.param_names, groups, strict=True))}


def _is_nnx(module) -> bool:
  return isinstance(module, nnx.Module)


def _check_one_api(module) -> None:
  """Raises naming the layers if a list, tuple or Sequential mixes linen and NNX modules."""
  if isinstance(module, (nn.Sequential, nnx.Sequential)):
    modules = list(module.layers)
  elif isinstance(module, (list, tuple)):
    modules = list(module)
  else:
    return
  linen = [f'{k} ({_name(m)})' for k, m in enumerate(modules) if isinstance(m, nn.Module)]
  nnx_modules = [f'{k} ({_name(m)})' for k, m in enumerate(modules) if _is_nnx(m)]
  if linen and nnx_modules:
    raise TypeError(
      f'from_flax: one stack mixes linen modules (layer {", ".join(linen)}) and NNX modules (layer '
      f'{", ".join(nnx_modules)}); a stack is converted from one API: make all its layers linen (with '
      'their variables) or all NNX, or convert each module on its own (jaxrnn.interop.linen_to_nnx and '
      'nnx_to_linen move the jaxrnn layers between the two).'
    )


def from_flax(module: Any, variables: Mapping[str, Any] | None = None) -> Any:
  """Returns the jaxrnn layer equivalent to Flax's ``nn.RNN`` / ``nn.Bidirectional`` (linen or NNX).

  Converts Flax's built-in cells to jaxrnn's presets, exactly on full-length
  sequences: ``LSTMCell`` and ``OptimizedLSTMCell`` -> [`jaxrnn.LSTM`][jaxrnn.LSTM]
  (``b_ih = 0``: Flax's LSTM has no input bias), ``GRUCell`` ->
  [`jaxrnn.GRU`][jaxrnn.GRU] (``b_hh = [0, 0, b_hn]``), ``SimpleCell`` (tanh
  or relu) -> [`jaxrnn.RNN`][jaxrnn.RNN], linen ``MGUCell`` ->
  ``jaxrnn.Recurrent(jaxrnn.MGUCell(...))`` with Flax's tree unchanged. The
  presets get ``init_scheme='flax'``, so re-initialising draws Flax's
  initializers. Carried over: ``features`` (as ``hidden_size``), ``time_major``,
  the cell's ``dtype`` and ``param_dtype``; ``nn.Bidirectional`` with the
  default ``merge_fn`` becomes ``bidirectional=True`` (forward half first, as
  Flax concatenates); one cell object shared by both directions, whose
  parameters Flax stores once, gives each direction a copy. A stack (a list or tuple of such modules, or
  ``nn.Sequential`` / ``nnx.Sequential`` of them) of one cell type and size,
  all unidirectional or all bidirectional, becomes one layer with
  ``num_layers=k``. Not carried over: ``unroll`` (jaxrnn chooses its own) and
  ``return_carry`` (a jaxrnn layer always returns ``(outputs, final_carry)``).

  Differences to know: the final carry is jaxrnn's, every leaf with a leading
  ``[L*D]`` axis and the LSTM's as ``LSTMState(h, c)`` where Flax has ``(c,
  h)`` per cell (``jaxrnn.interop.to_flax_carry`` / ``from_flax_carry``
  convert); with ``seq_lengths``, outputs agree at valid steps, but jaxrnn
  returns exact zeros at padding and the initial carry for length 0 (see
  [Padding](../flax.md#padding-seq_lengths)).

  Args:
    module: ``nn.RNN(cell)`` or ``nn.Bidirectional(nn.RNN(cell),
      nn.RNN(cell))`` (linen), or their NNX versions ``nnx.RNN`` /
      ``nnx.Bidirectional`` over ``nnx.LSTMCell``, ``nnx.OptimizedLSTMCell``,
      ``nnx.GRUCell`` or ``nnx.SimpleCell``; or a list, tuple or
      ``Sequential`` of them (one stack).
    variables: linen: ``module.init(...)``, ``{'params': ...}`` (for a list or
      tuple, a sequence of one such dict per module). NNX: ``None``, the module
      holds its parameters.

  Returns:
    linen: ``(layer, variables)``, a jaxrnn linen layer and its ``{'params':
      ...}`` (``params['l{k}']``, ``params['l{k}_reverse']``, each ``w_ih [F,
      G*H]``, ``w_hh [H, G*H]``, ``b_ih``, ``b_hh [G*H]``; ``MGUCell``: Flax's
      tree). NNX: the jaxrnn NNX layer (``jaxrnn.nnx.LSTM`` etc.) holding the
      parameters, as NNX modules do.

  Raises:
    TypeError: a module or cell that is not one of the above (the message
      points to ``jaxrnn.Recurrent(jaxrnn.linen.FlaxCell(cell))``, which runs
      any linen cell exactly; for NNX, to building ``jaxrnn.nnx.Recurrent`` by
      hand); a stack that mixes linen and NNX modules.
    ValueError: a configuration jaxrnn has no preset for, named with its
      value: ``gate_fn`` other than sigmoid, ``activation_fn`` other than tanh
      (or relu for ``SimpleCell``), ``residual=True``, a non-zero
      ``carry_init``, ``nn.RNN(reverse=True)`` outside ``nn.Bidirectional``,
      another ``merge_fn``, directions or layers of different cells, sizes or
      dtypes, or ``variables`` that lack a parameter.

  Examples:
    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxrnn
    >>> rnn = nn.Bidirectional(nn.RNN(nn.LSTMCell(8)), nn.RNN(nn.LSTMCell(8)))
    >>> x = jax.random.normal(jax.random.key(0), (2, 5, 3))  # [B, T, F]
    >>> flax_variables = rnn.init(jax.random.key(1), x)
    >>> layer, variables = jaxrnn.interop.from_flax(rnn, flax_variables)
    >>> type(layer).__name__, layer.bidirectional, variables['params']['l0']['w_ih'].shape
    ('LSTM', True, (3, 32))
    >>> outputs, state = layer.apply(variables, x)
    >>> bool(jnp.allclose(outputs, rnn.apply(flax_variables, x), atol=1e-5))
    True
  """
  _check_one_api(module)
  if _is_nnx(module) or (isinstance(module, (list, tuple)) and module and all(_is_nnx(m) for m in module)):
    if variables is not None:
      raise ValueError(
        f'from_flax of an NNX module ({_name(module)}) takes no `variables`: the module holds its parameters.'
      )
    modules = _modules(module, nnx.Sequential)
    layers = [_nnx_layer(m, f'layer {k} ({_name(m)})') for k, m in enumerate(modules)]
    layer, linen_variables = _build(layers)
    return linen_to_nnx(layer, linen_variables, deterministic=True)
  if variables is None:
    raise ValueError(
      f'from_flax of a linen module ({_name(module)}) needs its `variables` (module.init(...)).'
    )
  modules = _modules(module, nn.Sequential)
  if isinstance(module, (list, tuple)):
    if not isinstance(variables, (list, tuple)) or len(variables) != len(module):
      raise ValueError(
        f'from_flax of a list of {len(module)} modules takes a list of their {len(module)} variables, got '
        f'{type(variables).__name__}.'
      )
    per_module = [_params(v) for v in variables]
  elif isinstance(module, nn.Sequential):
    params = _params(variables)
    per_module = [params.get(f'layers_{k}') for k in range(len(modules))]
  else:
    per_module = [_params(variables)]
  layers = [
    _linen_layer(m, p if p is not None else {}, f'layer {k} ({_name(m)})')
    for k, (m, p) in enumerate(zip(modules, per_module, strict=True))
  ]
  return _build(layers)


def _params(variables) -> Mapping:
  if not isinstance(variables, Mapping) or 'params' not in variables:
    got = sorted(variables) if isinstance(variables, Mapping) else type(variables).__name__
    raise ValueError(f"`variables` must be the module's {{'params': ...}} (module.init(...)), got {got}.")
  return variables['params']


def _modules(module, sequential) -> list:
  if isinstance(module, sequential):
    modules = list(module.layers)
  elif isinstance(module, (list, tuple)):
    modules = list(module)
  else:
    return [module]
  if not modules:
    raise ValueError('from_flax: an empty stack of modules.')
  return modules
