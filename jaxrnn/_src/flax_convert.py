"""``from_flax``: Flax's ``nn.RNN`` / ``nn.Bidirectional`` (linen and NNX) over its built-in cells -> jaxrnn.

Flax keeps one ``Dense`` per gate (linen ``LSTMCell``: ``ii, if, ig, io`` without bias,
``hi, hf, hg, ho`` with bias) or one fused ``Linear`` per side (NNX ``OptimizedLSTMCell``,
``GRUCell``, ``SimpleCell``: ``dense_i``, ``dense_h``); jaxrnn's presets keep fused
``w_ih [F, G*H]``, ``w_hh [H, G*H]``, ``b_ih``, ``b_hh [G*H]`` in the same gate order (i, f, g,
o; r, z, n). Conversion concatenates kernels and fills the biases Flax does not have with zeros;
``nn.MGUCell``'s tree moves unchanged to ``jaxrnn.MGUCell``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrnn._src import linen_layers
from jaxrnn._src.flax_interop import linen_to_nnx
from jaxrnn._src.flax_style_cells import MGUCell

_HINT = (
  'jaxrnn.Recurrent(jaxrnn.linen.FlaxCell(cell)) runs any flax.linen cell exactly, with its own '
  'parameter tree (params["l0"] = variables["params"]["cell"]).'
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


def _check_fn(module, field: str, allowed: set, wanted: str) -> None:
  value = getattr(module, field)
  if not _is_one_of(value, allowed):
    raise ValueError(
      f'{_name(module)}.{field}={getattr(value, "__name__", value)!r} has no jaxrnn preset '
      f'(jaxrnn converts {wanted}). {_HINT}'
    )


def _check_carry_init(module) -> None:
  value = getattr(module, 'carry_init', None)
  if not _is_one_of(value, _ZEROS):
    raise ValueError(
      f'{_name(module)}.carry_init={getattr(value, "__name__", value)!r}: jaxrnn layers start from a '
      f'zero carry; convert a cell with the default (zeros) carry_init and pass the initial carry as '
      f'`initial_carry` (jaxrnn.interop.from_flax_carry converts Flax carries). {_HINT}'
    )


def _dtypes(cell) -> tuple[Any, Any]:
  """The cell's compute and parameter dtypes, normalised so that ``'float32'`` equals ``jnp.float32``."""
  dtype = getattr(cell, 'dtype', None)
  return (None if dtype is None else jnp.dtype(dtype)), jnp.dtype(getattr(cell, 'param_dtype', jnp.float32))


def _concat(trees: Sequence[Mapping], part: str) -> jax.Array:
  return jnp.concatenate([jnp.asarray(t[part]) for t in trees], axis=-1)


def _zeros_like_bias(kernel) -> jax.Array:
  return jnp.zeros(np.shape(kernel)[-1:], jnp.asarray(kernel).dtype)


def _linen_cell(cell: nn.Module, params: Mapping) -> tuple[_Spec, dict]:
  """Returns the spec and jaxrnn parameters (one group) of a linen built-in cell."""
  dtypes = _dtypes(cell)
  params = dict(params)
  if type(cell) in (nn.LSTMCell, nn.OptimizedLSTMCell):
    _check_fn(cell, 'gate_fn', _SIGMOID, 'sigmoid gates')
    _check_fn(cell, 'activation_fn', _TANH, 'tanh')
    _check_carry_init(cell)
    _require(cell, params, [f'i{g}' for g in _LSTM_GATES] + [f'h{g}' for g in _LSTM_GATES])
    hidden = [params[f'h{g}'] for g in _LSTM_GATES]
    group = {
      'w_ih': _concat([params[f'i{g}'] for g in _LSTM_GATES], 'kernel'),
      'w_hh': _concat(hidden, 'kernel'),
      'b_ih': jnp.zeros_like(_concat(hidden, 'bias')),  # Flax's LSTM has no input bias
      'b_hh': _concat(hidden, 'bias'),
    }
    return _Spec('LSTM', cell.features, (), *dtypes, _name(cell)), group
  if type(cell) is nn.GRUCell:
    _check_fn(cell, 'gate_fn', _SIGMOID, 'sigmoid gates')
    _check_fn(cell, 'activation_fn', _TANH, 'tanh')
    _check_carry_init(cell)
    _require(cell, params, [f'i{g}' for g in _GRU_GATES] + [f'h{g}' for g in _GRU_GATES])
    inputs = [params[f'i{g}'] for g in _GRU_GATES]
    hn_bias = jnp.asarray(params['hn']['bias'])
    group = {
      'w_ih': _concat(inputs, 'kernel'),
      'w_hh': _concat([params[f'h{g}'] for g in _GRU_GATES], 'kernel'),
      'b_ih': _concat(inputs, 'bias'),
      # hr, hz have no bias; hn's sits inside r * (h W_hn + b_hn), as jaxrnn's b_hh does.
      'b_hh': jnp.concatenate([jnp.zeros_like(hn_bias), jnp.zeros_like(hn_bias), hn_bias]),
    }
    return _Spec('GRU', cell.features, (), *dtypes, _name(cell)), group
  if type(cell) is nn.SimpleCell:
    nonlinearity = _simple_nonlinearity(cell)
    _check_carry_init(cell)
    _require(cell, params, ['i', 'h'])
    group = {
      'w_ih': jnp.asarray(params['i']['kernel']),
      'w_hh': jnp.asarray(params['h']['kernel']),
      'b_ih': jnp.asarray(params['i']['bias']),
      'b_hh': _zeros_like_bias(params['h']['kernel']),
    }
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
      f'{_name(cell)}.residual=True (h = act(x W_i + h W_h + h)) has no jaxrnn preset. {_HINT}'
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
      f'nnx.SimpleCell (not subclasses, whose step may differ), got a cell {_name(cell)}.'
    )
  promote = getattr(cell, 'promote_dtype', None)
  if promote is not None and promote is not nnx.nn.dtypes.promote_dtype:
    raise ValueError(
      f'{_name(cell)}.promote_dtype={promote!r} is not the default; jaxrnn promotes as Flax does.'
    )
  dtypes = _dtypes(cell)
  features = cell.hidden_features
  params = _nnx_params(cell)
  if type(cell) is nnx.SimpleCell:
    nonlinearity = _simple_nonlinearity(cell)
    _check_carry_init(cell)
    group = {
      'w_ih': jnp.asarray(params['dense_i']['kernel']),
      'w_hh': jnp.asarray(params['dense_h']['kernel']),
      'b_ih': jnp.asarray(params['dense_i']['bias']),
      'b_hh': _zeros_like_bias(params['dense_h']['kernel']),
    }
    return _Spec('RNN', features, (('nonlinearity', nonlinearity),), *dtypes, _name(cell)), group
  _check_fn(cell, 'gate_fn', _SIGMOID, 'sigmoid gates')
  _check_fn(cell, 'activation_fn', _TANH, 'tanh')
  _check_carry_init(cell)
  if type(cell) is nnx.LSTMCell:  # one Linear per gate, `if_` for the Python keyword
    kernels_i = [params['if_' if g == 'f' else f'i{g}'] for g in _LSTM_GATES]
    hidden = [params[f'h{g}'] for g in _LSTM_GATES]
    group = {
      'w_ih': _concat(kernels_i, 'kernel'),
      'w_hh': _concat(hidden, 'kernel'),
      'b_hh': _concat(hidden, 'bias'),
    }
    return _Spec('LSTM', features, (), *dtypes, _name(cell)), {**group, 'b_ih': jnp.zeros_like(group['b_hh'])}
  if type(cell) is nnx.OptimizedLSTMCell:  # fused [F, 4H] and [H, 4H], gates i, f, g, o
    group = {
      'w_ih': jnp.asarray(params['dense_i']['kernel']),
      'w_hh': jnp.asarray(params['dense_h']['kernel']),
      'b_hh': jnp.asarray(params['dense_h']['bias']),
    }
    return _Spec('LSTM', features, (), *dtypes, _name(cell)), {**group, 'b_ih': jnp.zeros_like(group['b_hh'])}
  # nnx.GRUCell: fused [F, 3H] with bias, [H, 3H] without (n = tanh(xW_in + b_in + r * h W_hn)).
  group = {
    'w_ih': jnp.asarray(params['dense_i']['kernel']),
    'w_hh': jnp.asarray(params['dense_h']['kernel']),
    'b_ih': jnp.asarray(params['dense_i']['bias']),
    'b_hh': _zeros_like_bias(params['dense_h']['kernel']),
  }
  return _Spec('GRU', features, (), *dtypes, _name(cell)), group


# One layer of the stack: its directions [(spec, group params)] and its time_major.
_Layer = tuple[list[tuple[_Spec, dict]], bool]


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


def _linen_layer(module: nn.Module, params: Mapping, where: str) -> _Layer:
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


def _nnx_layer(module, where: str) -> _Layer:
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


def _check_stack(layers: list[_Layer]) -> tuple[_Spec, int, bool]:
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


def _build(layers: list[_Layer]) -> tuple[nn.Module, dict]:
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
  params = {}
  for k, (row, _) in enumerate(layers):
    for d, (_, group) in enumerate(row):
      params[f'l{k}' + ('_reverse' if d else '')] = group
  return layer, {'params': params}


def _is_nnx(module) -> bool:
  return isinstance(module, nnx.Module)


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
      any linen cell exactly).
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
