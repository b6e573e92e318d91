"""linen <-> NNX: a jaxrnn layer and its parameters moved between Flax's two APIs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrnn._src import linen_layers
from jaxrnn._src import nnx_layers

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
