"""Flax interop: linen <-> NNX layers with their parameters, and ``FlaxCell`` (any linen cell as a jaxrnn cell)."""

from __future__ import annotations

import dataclasses
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
