"""A layer's stacked carry <-> Flax's per-cell carries.

A jaxrnn layer keeps one carry for the whole stack, every leaf ``[L*D, *batch,
...]`` (row ``layer*D + direction``), and the built-in LSTM's is
``LSTMState(h, c)``. Flax keeps one carry per cell (``nn.RNN``), a pair
``(forward, backward)`` per ``nn.Bidirectional``, and its LSTM cells carry
``(c, h)``: the opposite order, with the same shapes, so a swap would go
unnoticed. These two functions are the one place that converts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src.checks import check_initial_carry
from jaxrnn._src.compose import zeros_carry
from jaxrnn._src.types import Carry
from jaxrnn._src.types import LSTMState


def _config(layer):
  config = getattr(layer, 'config', None)
  if config is None or not hasattr(config, 'num_directions'):
    raise TypeError(
      f'`layer` must be a jaxrnn layer (jaxrnn.LSTM, jaxrnn.Recurrent, their NNX twins), got '
      f'{type(layer).__name__}.'
    )
  return config


def _row_template(config) -> Any:
  """The carry of one row for batch shape ``()``: the trailing shape of every leaf."""
  return jax.eval_shape(lambda: zeros_carry(config, (), jnp.float32))


def _floating_dtype(tree):
  dtypes = [jnp.result_type(leaf) for leaf in jax.tree.leaves(tree)]
  floating = [d for d in dtypes if jnp.issubdtype(d, jnp.floating)]
  return floating[0] if floating else jnp.float32


def to_flax_carry(carry: Carry, layer: Any) -> list:
  """Returns a layer's carry as a list of ``L*D`` per-cell carries in Flax's layout.

  Row ``layer*D + direction`` of every leaf becomes one cell's carry; an
  ``LSTMState(h, c)`` becomes Flax's ``(c, h)`` (``nn.LSTMCell``,
  ``nn.OptimizedLSTMCell``), any other carry (an array ``h``, a ``FlaxCell``'s
  or ``ConvLSTMCell``'s ``(c, h)``) stays as it is. For ``nn.Bidirectional``
  layer ``k``'s carry is ``(rows[2k], rows[2k + 1])``.

  Args:
    carry: a layer's carry, e.g. its ``final_carry``: leaves
      ``[L*D, *batch, ...]`` (``LSTMState`` with ``h: [L*D, *batch, H_out]``,
      ``c: [L*D, *batch, H]``).
    layer: the jaxrnn layer (linen or NNX) the carry belongs to.

  Returns:
    rows: ``L*D`` carries, each ``(c, h)`` with ``[*batch, H]`` leaves for an
      LSTM, ``h: [*batch, H]`` for GRU and Elman.

  Examples:
    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxrnn
    >>> layer = jaxrnn.LSTM(8, num_layers=2)
    >>> state = layer.initial_carry((3,))  # LSTMState, [L*D, B, H] each
    >>> (c0, h0), (c1, h1) = jaxrnn.interop.to_flax_carry(state, layer)
    >>> c0.shape
    (3, 8)
  """
  config = _config(layer)
  rows = config.num_layers * config.num_directions
  template = _row_template(config)
  leaves = jax.tree.leaves(carry)
  if not leaves or not all(hasattr(leaf, 'shape') for leaf in leaves):
    raise TypeError(f'`carry` must be a layer carry (arrays [L*D, *batch, ...]), got {type(carry).__name__}.')
  first, first_template = leaves[0], jax.tree.leaves(template)[0]
  batch_shape = tuple(first.shape[1 : first.ndim - (first_template.ndim - 1)])
  carry = check_initial_carry(carry, config, batch_shape, _floating_dtype(carry), 'carry')
  per_row = [jax.tree.map(lambda leaf, row=row: leaf[row], carry) for row in range(rows)]
  if isinstance(carry, LSTMState):
    return [(state.c, state.h) for state in per_row]
  return per_row


def from_flax_carry(rows: Sequence[Any], layer: Any) -> Carry:
  """Returns the layer carry ``[L*D, *batch, ...]`` stacked from ``L*D`` Flax per-cell carries.

  The inverse of [`to_flax_carry`][jaxrnn.interop.to_flax_carry]: for an
  LSTM layer each row is Flax's ``(c, h)`` (an ``LSTMState`` row is read by
  its field names), for other layers the cell's own carry of one row.

  Args:
    rows: a list of ``L*D`` carries, row ``layer*D + direction``, leaves
      ``[*batch, ...]``; for one layer a list of one, ``[(c, h)]``; for one
      ``nn.Bidirectional`` layer its ``(forward, backward)`` pair.
    layer: the jaxrnn layer (linen or NNX) the carry is for.

  Returns:
    carry: the layer's carry, e.g. for ``initial_carry`` or ``step``:
      ``LSTMState(h, c)`` with ``[L*D, *batch, H]`` leaves for an LSTM.

  Examples:
    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxrnn
    >>> c, h = nn.LSTMCell(8).initialize_carry(jax.random.key(0), (3, 4))
    >>> state = jaxrnn.interop.from_flax_carry([(c, h)], jaxrnn.LSTM(8))
    >>> type(state).__name__, state.h.shape
    ('LSTMState', (1, 3, 8))
  """
  config = _config(layer)
  num_rows = config.num_layers * config.num_directions
  if hasattr(rows, 'shape') or not isinstance(rows, (list, tuple)) or len(rows) != num_rows:
    got = (
      f'a {type(rows).__name__} of {len(rows)} items'
      if isinstance(rows, (list, tuple))
      else f'an array of shape {rows.shape}'
      if hasattr(rows, 'shape')
      else type(rows).__name__
    )
    raise TypeError(
      f'`rows` must be a list of L*D = {num_rows} per-cell carries (num_layers={config.num_layers}, '
      f'D={config.num_directions}), got {got}. For one layer wrap its carry in a list: [carry].'
    )
  template = _row_template(config)
  if isinstance(template, LSTMState):
    states = []
    for index, row in enumerate(rows):
      if isinstance(row, LSTMState):
        states.append(row)
      elif type(row) in (tuple, list) and len(row) == 2:
        states.append(LSTMState(h=row[1], c=row[0]))
      else:
        raise TypeError(
          f"`rows[{index}]` must be Flax's LSTM carry (c, h), got {type(row).__name__} "
          f'{jax.tree.map(np.shape, row)}: `rows` is a list of L*D = {num_rows} such pairs, one per '
          "layer and direction (for one cell's carry, [(c, h)])."
        )
    rows = states
  try:
    carry = jax.tree.map(lambda *leaves: jnp.stack(leaves), *rows)
  except ValueError as error:
    raise ValueError(
      f'the {num_rows} rows of `rows` must have one structure and equal shapes: {error}'
    ) from None
  first, first_template = jax.tree.leaves(carry)[0], jax.tree.leaves(template)[0]
  batch_shape = tuple(first.shape[1 : first.ndim - (first_template.ndim - 1)])
  return check_initial_carry(carry, config, batch_shape, _floating_dtype(carry), 'rows')
