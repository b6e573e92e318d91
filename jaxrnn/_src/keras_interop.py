"""Keras 3 ``SimpleRNN`` / ``LSTM`` / ``GRU`` / ``Bidirectional`` <-> jaxrnn layers and parameters.

Keras stores one direction as ``kernel [F, G*H]``, ``recurrent_kernel [H, G*H]``
and ``bias`` (``[G*H]``; ``[2, 3H]`` for ``GRU(reset_after=True)``: input and
recurrent bias). jaxrnn stores ``w_ih``, ``w_hh``, ``b_ih``, ``b_hh`` under
``params['l{k}{suffix}']``. The kernels are already in JAX's ``[in, out]``
layout; the gate blocks agree for LSTM (``i, f, c, o`` = ``i, f, g, o``) and
are swapped for GRU (Keras ``z, r, h``, jaxrnn ``r, z, n``); Keras' single bias
is jaxrnn's ``b_ih`` with ``b_hh = 0``, and going back the two biases fold into
one.

Keras is imported when a converter is called (the optional ``convert`` extra),
with ``KERAS_BACKEND=jax`` unless the environment names another backend.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxrnn._src.config import checked_params
from jaxrnn._src.config import warn_float64_without_x64
from jaxrnn._src.torch_cells import ElmanCell
from jaxrnn._src.torch_cells import GRUCell
from jaxrnn._src.torch_cells import LSTMCell
from jaxrnn._src.torch_cells import builtin_cell_of

# Keras class name -> (jaxrnn layer class name, number of gates)
_KINDS = {'SimpleRNN': ('RNN', 1), 'LSTM': ('LSTM', 4), 'GRU': ('GRU', 3)}
_DTYPES = ('float32', 'float64', 'bfloat16')


def _import_keras():
  """Returns the ``keras`` module (Keras 3), on the JAX backend unless ``KERAS_BACKEND`` says otherwise."""
  os.environ.setdefault('KERAS_BACKEND', 'jax')
  try:
    keras = importlib.import_module('keras')
  except ImportError as error:
    raise ImportError("jaxrnn's Keras converters need Keras 3: pip install 'jaxrnn[convert]'.") from error
  if not keras.__version__.startswith('3'):
    raise ImportError(f"jaxrnn's Keras converters need Keras 3, got keras {keras.__version__}.")
  return keras


def _swap_gru_gates(array: np.ndarray) -> np.ndarray:
  """Swaps the first two of three gate blocks on the last axis: Keras ``z, r, h`` <-> jaxrnn ``r, z, n``."""
  z, r, n = np.split(array, 3, axis=-1)
  return np.concatenate([r, z, n], axis=-1)


def _numpy(keras, variable) -> np.ndarray:
  """A Keras variable as a NumPy copy."""
  return np.array(keras.ops.convert_to_numpy(variable.value), copy=True)


def _describe_recurrent(keras, layer, *, backward: bool = False) -> dict:
  """Returns the hyper-parameters and jaxrnn parameters of one Keras recurrent layer (one direction).

  Raises:
    TypeError: ``layer`` is not a Keras ``SimpleRNN``, ``LSTM`` or ``GRU``.
    ValueError: a hyper-parameter jaxrnn does not have (naming it and its value),
      or ``layer`` is not built.
  """
  kinds = {getattr(keras.layers, name): name for name in _KINDS}
  if type(layer) not in kinds:
    raise TypeError(
      'from_keras takes a Keras SimpleRNN, LSTM, GRU, a Bidirectional over one of them or a '
      f'keras.Sequential of them, got {type(layer).__name__}.'
    )
  kind = kinds[type(layer)]
  name = f'{kind} {layer.name!r}'
  if not layer.built:
    raise ValueError(
      f'{name} is not built, so it has no weights yet: call it on an input or '
      '`layer.build((None, None, F))` first.'
    )
  config = layer.get_config()
  activations = ('tanh', 'relu') if kind == 'SimpleRNN' else ('tanh',)
  if config['activation'] not in activations:
    raise ValueError(
      f'{name}: `activation` must be {" or ".join(map(repr, activations))} for jaxrnn, '
      f'got {config["activation"]!r}.'
    )
  if kind != 'SimpleRNN' and config['recurrent_activation'] != 'sigmoid':
    raise ValueError(
      f"{name}: `recurrent_activation` must be 'sigmoid' for jaxrnn (Keras 3's default), "
      f'got {config["recurrent_activation"]!r}.'
    )
  if config['stateful']:
    raise ValueError(
      f'{name}: `stateful=True` is not supported: jaxrnn layers are stateless; carry the state '
      'yourself (pass `final_carry` back as `initial_carry`).'
    )
  if config['go_backwards'] != backward:
    raise ValueError(
      f'{name}: `go_backwards=True` is supported only as the backward layer of a Bidirectional: '
      'jaxrnn has no layer that runs backwards alone and returns its outputs reversed.'
      if config['go_backwards']
      else f'{name}: the backward layer of a Bidirectional must have `go_backwards=True`.'
    )
  cell = layer.cell
  kernel, recurrent = _numpy(keras, cell.kernel), _numpy(keras, cell.recurrent_kernel)
  units = config['units']
  params = {'w_ih': kernel, 'w_hh': recurrent}
  extra = {}
  reset_after = kind == 'GRU' and config['reset_after']
  if config['use_bias']:
    bias = _numpy(keras, cell.bias)
    if reset_after:  # [2, 3H]: input bias, recurrent bias
      params['b_ih'], params['b_hh'] = bias[0], bias[1]
    else:
      params['b_ih'], params['b_hh'] = bias, np.zeros_like(bias)
  if kind == 'GRU':
    params = {k: _swap_gru_gates(v) for k, v in params.items()}
    extra['reset_after'] = bool(config['reset_after'])
  if kind == 'SimpleRNN':
    extra['nonlinearity'] = config['activation']
  dtype = jnp.dtype(kernel.dtype).name
  if dtype not in _DTYPES:
    raise TypeError(f'{name}: weights must be float32, float64 or bfloat16, got {dtype}.')
  compute_dtype = jnp.dtype(layer.compute_dtype).name  # differs under a mixed-precision policy
  return {
    'kind': kind,
    'units': units,
    'use_bias': bool(config['use_bias']),
    'extra': extra,
    'dtype': dtype,
    'compute_dtype': None if compute_dtype == dtype else compute_dtype,
    'recurrent_dropout': float(config['recurrent_dropout']),
    'input_dropout': f'`dropout={config["dropout"]}`' if config['dropout'] else '',  # not carried over
    'return_sequences': bool(config['return_sequences']),
    'in_features': kernel.shape[0],
    'params': [params],
    'name': name,
  }


# Hyper-parameters that must agree between the directions of a Bidirectional and the layers of a stack.
_SHARED = ('kind', 'units', 'use_bias', 'extra', 'dtype', 'compute_dtype', 'recurrent_dropout')


def _differences(first: dict, other: dict) -> list[str]:
  return [f'{key} {first[key]!r} vs {other[key]!r}' for key in _SHARED if first[key] != other[key]]


def _describe(keras, layer) -> dict:
  """``_describe_recurrent`` of a recurrent layer or a Bidirectional over one (``params`` per direction)."""
  if not isinstance(layer, keras.layers.Bidirectional):
    return {**_describe_recurrent(keras, layer), 'bidirectional': False}
  if layer.merge_mode != 'concat':
    raise ValueError(
      f"Bidirectional {layer.name!r}: `merge_mode` must be 'concat' (jaxrnn concatenates the forward "
      f'and backward outputs, forward first), got {layer.merge_mode!r}.'
    )
  forward = _describe_recurrent(keras, layer.forward_layer)
  backward = _describe_recurrent(keras, layer.backward_layer, backward=True)
  differ = _differences(forward, backward)
  if differ:
    raise ValueError(
      f'Bidirectional {layer.name!r}: jaxrnn needs the same hyper-parameters in both directions, '
      f'got {", ".join(differ)} (forward vs backward).'
    )
  input_dropout = forward['input_dropout']
  if backward['input_dropout'] != input_dropout:
    input_dropout = (
      f'{input_dropout or "`dropout=0`"} (forward), {backward["input_dropout"] or "`dropout=0`"} (backward)'
    )
  return {
    **forward,
    'input_dropout': input_dropout,
    'bidirectional': True,
    'return_sequences': bool(layer.return_sequences),
    'params': forward['params'] + backward['params'],
    'name': f'Bidirectional {layer.name!r}',
  }


def _recurrent_layers(keras, layer) -> list:
  """The recurrent layers of ``layer``: itself, or a Sequential's layers less its ``InputLayer``."""
  if not isinstance(layer, keras.Sequential):
    return [layer]
  layers = [sub for sub in layer.layers if not isinstance(sub, keras.layers.InputLayer)]
  for sub in layers:
    if isinstance(sub, keras.layers.Masking):
      raise ValueError(
        f'Sequential {layer.name!r}: a Masking layer is not converted: jaxrnn takes the number of '
        'valid (unmasked, leading) steps as `seq_lengths` instead. Convert the recurrent layers '
        'alone, e.g. from_keras(keras.Sequential(model.layers[1:])), and pass seq_lengths.'
      )
  if not layers:
    raise ValueError(f'Sequential {layer.name!r} has no recurrent layers to convert.')
  return layers


def from_keras(layer: Any) -> tuple[Any, dict]:
  """Returns ``(layer, variables)`` equivalent to a built Keras 3 recurrent layer or stack of them.

  Takes a ``keras.layers.SimpleRNN`` (``activation`` ``'tanh'`` or ``'relu'``),
  ``LSTM`` or ``GRU`` (``reset_after`` True or False), a ``Bidirectional`` over
  one of them (``merge_mode='concat'``), or a ``keras.Sequential`` of such layers
  (an ``InputLayer`` is skipped), which becomes one jaxrnn stack with
  ``num_layers`` layers when they share their kind, ``units``, direction and
  options and every layer but the last has ``return_sequences=True``.

  The jaxrnn layer is batch-major (``time_major=False``) like Keras, returns
  ``(outputs [B, T, D*H], final_carry [L*D, B, H])`` whatever Keras'
  ``return_sequences``/``return_state``, and keeps the weights' dtype as
  ``param_dtype``; a mixed-precision policy's compute dtype (``'mixed_bfloat16'``)
  becomes its ``dtype``.
  ``recurrent_dropout`` carries over (the same per-sequence mask on ``h``);
  ``dropout`` (on the inputs) has no jaxrnn counterpart and is dropped with a
  warning. A Keras mask that marks the first ``len_b`` steps of each sequence
  corresponds to ``seq_lengths``.

  Args:
    layer: the Keras layer or ``keras.Sequential``, built (called once, or
      ``build``). Only the weights are read, so any Keras backend should do;
      the tests run Keras on JAX.

  Returns:
    layer: a [`jaxrnn.RNN`][jaxrnn.RNN], [`LSTM`][jaxrnn.LSTM] or
      [`GRU`][jaxrnn.GRU] (linen).
    variables: ``{'params': ...}`` for ``layer.apply``, copies of the Keras weights.

  Raises:
    TypeError: a layer is not one of the above (naming its type).
    ValueError: a hyper-parameter jaxrnn does not have, naming it and its value:
      an ``activation`` other than tanh (or relu for SimpleRNN), a
      ``recurrent_activation`` other than sigmoid, ``stateful=True``,
      ``go_backwards=True`` outside a Bidirectional, a ``merge_mode`` other than
      ``'concat'``, a ``Masking`` layer in the Sequential, an unbuilt layer, or
      Sequential layers that differ or do not all return sequences.

  Examples:
    >>> import os, numpy as np, jaxrnn
    >>> os.environ.setdefault('KERAS_BACKEND', 'jax')  # before importing keras
    'jax'
    >>> import keras
    >>> keras_layer = keras.layers.Bidirectional(
    ...     keras.layers.GRU(4, return_sequences=True))
    >>> x = np.ones((2, 5, 3), np.float32)  # [B, T, F]
    >>> keras_outputs = keras_layer(x)
    >>> layer, variables = jaxrnn.interop.from_keras(keras_layer)
    >>> type(layer).__name__, layer.hidden_size, layer.bidirectional, layer.time_major
    ('GRU', 4, True, False)
    >>> outputs, final_carry = layer.apply(variables, x)
    >>> bool(np.allclose(outputs, keras_outputs, atol=1e-5))
    True
  """
  keras = _import_keras()
  from jaxrnn._src import linen_layers  # noqa: PLC0415  (flax, only when converting)

  layers = [_describe(keras, sub) for sub in _recurrent_layers(keras, layer)]
  for sub in layers:  # once per converted layer: a Bidirectional's two directions warned twice
    if sub['input_dropout']:
      warnings.warn(
        f'{sub["name"]}: {sub["input_dropout"]} (dropout on the inputs) is not carried over: jaxrnn '
        'layers have no input dropout. Inference is unaffected; add dropout before the layer to '
        'train with it.',
        stacklevel=2,
      )
  first = layers[0]
  for k, sub in enumerate(layers[1:], start=1):
    differ = _differences(first, sub)
    if sub['bidirectional'] != first['bidirectional']:
      differ.append(f'bidirectional {first["bidirectional"]} vs {sub["bidirectional"]}')
    if differ:
      raise ValueError(
        f'Sequential {layer.name!r} becomes one jaxrnn stack, whose layers share their hyper-parameters: '
        f'layer {k} ({sub["name"]}) differs from layer 0 ({first["name"]}): {", ".join(differ)}.'
      )
    if not layers[k - 1]['return_sequences']:
      raise ValueError(
        f'Sequential {layer.name!r}: layer {k - 1} ({layers[k - 1]["name"]}) must have '
        '`return_sequences=True`: in a jaxrnn stack every layer reads all outputs of the one below.'
      )
  dtype = first['dtype']
  warn_float64_without_x64(dtype)
  cls = getattr(linen_layers, _KINDS[first['kind']][0])
  jax_layer = cls(
    hidden_size=first['units'],
    num_layers=len(layers),
    bidirectional=first['bidirectional'],
    time_major=False,
    use_bias=first['use_bias'],
    recurrent_dropout=first['recurrent_dropout'],
    param_dtype=jnp.dtype(dtype),
    dtype=None if first['compute_dtype'] is None else jnp.dtype(first['compute_dtype']),
    **first['extra'],
  )
  groups = jax_layer.config.param_names
  arrays = [params for sub in layers for params in sub['params']]
  params = {
    group: {k: jnp.asarray(v, dtype) for k, v in p.items()} for group, p in zip(groups, arrays, strict=True)
  }
  return jax_layer, {'params': params}


def _keras_cell_kind(layer) -> str:
  """Returns the Keras class name for ``layer``'s cell, or raises naming what has no Keras counterpart."""
  cell = builtin_cell_of(layer, 'Keras conversion')
  config = layer.config
  if getattr(cell, 'proj_size', 0):
    raise ValueError(f'Keras conversion: Keras LSTM has no projection, got proj_size={cell.proj_size}.')
  if config.dropout and config.num_layers > 1:
    raise ValueError(
      f'Keras conversion: dropout between layers (dropout={config.dropout}) has no Keras counterpart '
      "in a Sequential of recurrent layers (Keras' `dropout` drops each layer's inputs with one mask "
      'per sequence); convert a copy of the layer with dropout=0.0.'
    )
  return {ElmanCell: 'SimpleRNN', LSTMCell: 'LSTM', GRUCell: 'GRU'}[type(cell)]


def _keras_weights(kind: str, params: Mapping[str, Any], reset_after: bool) -> list[np.ndarray]:
  """Returns ``[kernel, recurrent_kernel, (bias)]`` of one Keras cell from jaxrnn's ``params['l{k}...']``."""
  params = {k: np.asarray(v) for k, v in params.items()}
  if kind == 'GRU':
    params = {k: _swap_gru_gates(v) for k, v in params.items()}
  weights = [params['w_ih'], params['w_hh']]
  if 'b_ih' in params:
    if reset_after:
      weights.append(np.stack([params['b_ih'], params['b_hh']]))
    else:
      # Both biases only add before a nonlinearity; for GRU(reset_after=False) b_hn too:
      # n = tanh(x W_in + b_in + (r * h) W_hn + b_hn).
      weights.append(params['b_ih'] + params['b_hh'])
  return weights


def to_keras(layer: Any, variables: Mapping[str, Any]) -> Any:
  """Returns a built Keras 3 layer with ``layer``'s hyper-parameters and ``variables``.

  One layer becomes ``keras.layers.SimpleRNN``/``LSTM``/``GRU(units,
  return_sequences=True, return_state=True)`` (a ``Bidirectional(...,
  merge_mode='concat')`` when bidirectional): called on ``x [B, T, F]`` it
  returns ``[outputs, *states]``, the states of the forward direction then of
  the backward one (``h``, then ``c`` for LSTM). ``num_layers > 1`` becomes a
  ``keras.Sequential`` of such layers with ``return_state=False``: it returns
  the outputs only. The Keras layers are batch-major whatever ``time_major``,
  their dtype is that of the parameters (a float16 or bfloat16 compute ``dtype``
  over float32 parameters becomes Keras' ``'mixed_float16'``/``'mixed_bfloat16'``
  policy), and ``recurrent_dropout`` carries over.
  The two biases fold into Keras' one (``b_ih + b_hh``) except for
  ``GRU(reset_after=True)``, which keeps both.

  Args:
    layer: a ``jaxrnn.RNN``/``LSTM``/``GRU`` (or ``Recurrent`` over an
      ``ElmanCell``, ``LSTMCell`` or ``GRUCell``).
    variables: ``{'params': ...}`` or the ``params`` dict itself.

  Returns:
    The Keras layer or ``keras.Sequential``, built, with the weights loaded.

  Raises:
    TypeError: the cell has no Keras counterpart (naming it), or the
      parameters are not float32, float64 or bfloat16.
    ValueError: ``proj_size`` (Keras' LSTM has no projection), ``dropout``
      between layers, a compute ``dtype`` no Keras policy has, or ``variables``
      that do not fit ``layer`` (see
      [`to_state_dict`][jaxrnn.interop.to_state_dict]).

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, jaxrnn
    >>> layer = jaxrnn.LSTM(hidden_size=4)
    >>> x = jnp.ones((2, 5, 3))  # [B, T, F]
    >>> variables = layer.init(jax.random.key(0), x)
    >>> keras_layer = jaxrnn.interop.to_keras(layer, variables)
    >>> type(keras_layer).__name__, tuple(keras_layer.cell.kernel.shape)
    ('LSTM', (3, 16))
    >>> keras_outputs, keras_h, keras_c = keras_layer(np.asarray(x))
    >>> outputs, (h_n, c_n) = layer.apply(variables, x)
    >>> bool(np.allclose(outputs, keras_outputs, atol=1e-5))
    True
  """
  keras = _import_keras()

  kind = _keras_cell_kind(layer)
  config = layer.config
  params = checked_params(config, variables)
  cell = config.cell
  dtype = jnp.dtype(params['l0']['w_ih'].dtype).name
  if dtype not in _DTYPES:
    raise TypeError(f'parameter dtype must be float32, float64 or bfloat16, got {dtype}.')
  reset_after = kind == 'GRU' and cell.reset_after
  compute_dtype = None if config.dtype is None else jnp.dtype(config.dtype).name
  if compute_dtype not in (None, dtype):
    if dtype != 'float32' or compute_dtype not in ('float16', 'bfloat16'):
      raise ValueError(
        f'Keras conversion: compute dtype {compute_dtype} with {dtype} parameters has no Keras dtype '
        "policy (Keras' mixed precision keeps float32 variables and computes in float16 or bfloat16)."
      )
  policy = dtype if compute_dtype in (None, dtype) else f'mixed_{compute_dtype}'
  options = {
    'units': config.hidden_size,
    'use_bias': cell.use_bias,
    'recurrent_dropout': config.recurrent_dropout,
    'return_sequences': True,
    'return_state': config.num_layers == 1,
    'dtype': policy,
  }
  if kind == 'SimpleRNN':
    options['activation'] = cell.nonlinearity
  if kind == 'GRU':
    options['reset_after'] = reset_after
  in_features = params['l0']['w_ih'].shape[0]
  keras_layers = []
  for k in range(config.num_layers):
    recurrent = getattr(keras.layers, kind)(**options)
    groups = config.param_names[k * config.num_directions : (k + 1) * config.num_directions]
    if config.bidirectional:
      keras_layer = keras.layers.Bidirectional(recurrent, merge_mode='concat')
      directions = [keras_layer.forward_layer, keras_layer.backward_layer]
    else:
      keras_layer, directions = recurrent, [recurrent]
    keras_layer.build((None, None, in_features if k == 0 else config.num_directions * config.hidden_size))
    for group, direction in zip(groups, directions, strict=True):
      direction.set_weights(_keras_weights(kind, params[group], reset_after))
    keras_layers.append(keras_layer)
  if config.num_layers == 1:
    return keras_layers[0]
  return keras.Sequential([keras.Input((None, in_features), dtype=dtype), *keras_layers])
