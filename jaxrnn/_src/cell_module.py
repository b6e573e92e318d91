"""``CellModule``: a jaxrnn cell as a ``flax.linen`` recurrent cell (``nn.RNNCellBase``).

The reverse of ``FlaxCell``: Flax's own wrappers (``nn.RNN``, ``nn.Bidirectional``,
``nn.scan`` over a cell) take a module with ``__call__(carry, x) -> (carry, y)``,
``initialize_carry(rng, input_shape)`` and ``num_feature_axes``. The module only
declares the cell's parameters, under the names a ``Recurrent`` layer gives them in
``params['l0']``, so moving parameters between the two is a renaming of that one
group: ``nn.RNN`` keeps them in ``params['cell']``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrnn._src.checks import carry_mix_up_hint
from jaxrnn._src.checks import check_step_input
from jaxrnn._src.compose import compute_dtype
from jaxrnn._src.config import check_cell
from jaxrnn._src.types import Array
from jaxrnn._src.types import Cell


def _cast_floating(tree, dtype):
  return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


class CellModule(nn.RNNCellBase):
  """A jaxrnn cell as a linen ``nn.RNNCellBase``, for ``nn.RNN`` and ``nn.Bidirectional``.

  Runs any cell of the [`Cell`][jaxrnn.Cell] protocol
  ([`LSTMCell`][jaxrnn.LSTMCell], [`GRUCell`][jaxrnn.GRUCell],
  [`ConvLSTMCell`][jaxrnn.ConvLSTMCell], a cell of your own) inside Flax's
  wrappers, ``nn.scan`` and modules that step a cell by hand. One call is one
  step, ``(carry, x) -> (new_carry, y)`` with ``x: [*batch, *features]``.

  - Parameters: those of ``jaxrnn.Recurrent(cell)``'s ``params['l0']``, under
    the same names (``w_ih``, ``w_hh``, ... for the built-in cells); ``nn.RNN``
    keeps them in ``params['cell']``.
  - Carry: the cell's own, for one row: ``LSTMState(h, c)`` for
    ``LSTMCell`` (not Flax's ``(c, h)``; a carry of another structure is a
    ``TypeError``), ``h: [*batch, H]`` for ``GRUCell``.
  - On full-length sequences ``nn.RNN(CellModule(cell))`` equals
    ``jaxrnn.Recurrent(cell)``. With ``seq_lengths`` Flax's wrappers keep their
    own padding semantics (the cell runs over padding); jaxrnn's layers do not.

  Attributes:
    cell: the jaxrnn cell.
    dtype: compute dtype; ``None`` promotes the inputs' and parameters' dtypes.
      The carry keeps its dtypes (the LSTM cell state stays float32 under
      bfloat16, as in the layers).
    param_dtype: the parameters' dtype.

  Examples:
    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxrnn
    >>> rnn = nn.RNN(jaxrnn.linen.CellModule(jaxrnn.LSTMCell(8)), return_carry=True)
    >>> x = jnp.ones((2, 5, 3))  # [B, T, F]
    >>> variables = rnn.init(jax.random.key(0), x)
    >>> (h, c), y = rnn.apply(variables, x)  # LSTMState(h, c): [B, H] each
    >>> y.shape, h.shape, sorted(variables['params']['cell'])
    ((2, 5, 8), (2, 8), ['b_hh', 'b_ih', 'w_hh', 'w_ih'])
    >>> layer = jaxrnn.Recurrent(jaxrnn.LSTMCell(8))
    >>> outputs, _ = layer.apply({'params': {'l0': variables['params']['cell']}}, x)
    >>> bool(jnp.allclose(outputs, y, atol=1e-6))
    True
  """

  cell: Cell
  dtype: Any = None
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    if isinstance(self.cell, nn.Module):
      raise TypeError(
        f'`cell` must be a jaxrnn cell such as jaxrnn.LSTMCell(8), got the flax.linen module '
        f'{type(self.cell).__name__}, which nn.RNN takes as it is.'
      )
    check_cell(self.cell)
    super().__post_init__()

  @property
  def num_feature_axes(self) -> int:
    """Trailing feature axes of ``x``: the cell's ``feature_ndim`` (1 for vectors)."""
    return getattr(self.cell, 'feature_ndim', 1)

  @nn.nowrap
  def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> Any:
    """Returns the cell's zeros carry for one step's input shape ``[*batch, *features]``.

    Args:
      rng: unused (the carry is zeros); Flax's signature.
      input_shape: ``[*batch, *features]``, the shape of one step ``x``.

    Returns:
      carry: ``cell.initial_carry(batch_shape)`` in ``dtype`` (``param_dtype``
        when ``dtype`` is None), with the leaves that accumulate in float32
        (the LSTM cell state) widened.
    """
    del rng
    ndim = self.num_feature_axes
    if len(input_shape) < 1 + ndim:
      raise ValueError(
        f'`input_shape` must be [*batch, *features] with at least one batch axis and {ndim} feature '
        f'axes, got {tuple(input_shape)}.'
      )
    dtype = self.param_dtype if self.dtype is None else self.dtype
    return self._widened(self.cell.initial_carry(tuple(input_shape[: len(input_shape) - ndim]), dtype))

  def _declare_params(self, in_features) -> Any:
    cell = self.cell
    if hasattr(cell, 'param_specs'):  # one parameter per weight, as Recurrent's `_CellWeights`
      return {
        name: self.param(name, init, shape, self.param_dtype)
        for name, (shape, init) in cell.param_specs(in_features).items()
      }
    shapes = jax.eval_shape(lambda key: cell.init(key, in_features, self.param_dtype), jax.random.key(0))
    if not isinstance(shapes, Mapping):  # a NamedTuple or list: one parameter holding the tree
      return self.param('params', cell.init, in_features, self.param_dtype)
    # A dict: its entries as the module's parameters, so params['cell'] is Recurrent's params['l0'].
    # `init` draws the whole tree once, with the key of the first entry.
    drawn = {}

    def entry(name):
      def init(key):
        if not drawn:
          drawn.update(cell.init(key, in_features, self.param_dtype))
        return drawn[name]

      return init

    return {name: self.param(name, entry(name)) for name in shapes}

  @nn.compact
  def __call__(self, carry: Any, x: Array) -> tuple[Any, Array]:
    """Returns ``(new_carry, y)`` of one step.

    Args:
      carry: the cell's carry, e.g. from ``initialize_carry``:
        ``LSTMState(h: [*batch, H_out], c: [*batch, H])`` for ``LSTMCell``,
        ``h: [*batch, H]`` for ``GRUCell``.
      x: ``[*batch, F]`` (``[*batch, *features]`` for ``feature_ndim > 1``).

    Returns:
      new_carry: like ``carry``, in its dtypes.
      y: ``[*batch, H_out]`` in the compute dtype.
    """
    in_features = check_step_input(x, self.num_feature_axes, 'x')
    expected = jax.eval_shape(lambda: self.initialize_carry(None, x.shape))
    if jax.tree.structure(carry) != jax.tree.structure(expected):
      raise TypeError(
        f'`carry` of {type(self.cell).__name__} must have the structure of `initialize_carry`, '
        f'{jax.tree.structure(expected)}, got {jax.tree.structure(carry)}.'
        f'{carry_mix_up_hint(expected, carry)}'
      )
    for (path, leaf), want in zip(
      jax.tree_util.tree_leaves_with_path(carry), jax.tree.leaves(expected), strict=True
    ):
      if tuple(jnp.shape(leaf)) != want.shape:
        raise ValueError(
          f'`carry{jax.tree_util.keystr(path)}` must have shape {want.shape} for `x` of shape '
          f'{tuple(x.shape)}, got {tuple(jnp.shape(leaf))}.'
        )
    params = self._declare_params(in_features)
    dtype = compute_dtype(x, [params], self.dtype)
    # The step sees the carry as the layers do: the compute dtype, float32 where the cell widens.
    cell = self.cell
    batch_shape = x.shape[: x.ndim - self.num_feature_axes]
    step_dtypes = jax.eval_shape(lambda: self._widened(cell.initial_carry(batch_shape, dtype)))
    step_carry = jax.tree.map(lambda leaf, want: jnp.asarray(leaf).astype(want.dtype), carry, step_dtypes)
    new_carry, y = cell(_cast_floating(params, dtype), step_carry, x.astype(dtype))
    return jax.tree.map(lambda new, old: new.astype(jnp.result_type(old)), new_carry, carry), y

  @nn.nowrap
  def _widened(self, carry):
    return self.cell.widen_carry(carry) if hasattr(self.cell, 'widen_carry') else carry
