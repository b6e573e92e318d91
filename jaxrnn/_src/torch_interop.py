"""PyTorch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` <-> jaxrnn layers and parameters.

PyTorch stores ``weight_ih_l{k}{suffix}: [G*H, F]``, ``weight_hh_l{k}{suffix}:
[G*H, H_out]``, ``bias_ih/bias_hh_l{k}{suffix}: [G*H]`` and ``weight_hr_l{k}{suffix}:
[P, H]`` with ``suffix`` ``''`` or ``'_reverse'``. jaxrnn stores the transposes
under ``params['l{k}{suffix}']['w_ih' | 'w_hh' | 'b_ih' | 'b_hh' | 'w_hr']``:
the gate order and both biases are the same, so conversion is a transpose.

The ``state_dict`` functions need NumPy only; ``from_torch``/``to_torch`` import
torch when called (it is the optional ``torch`` extra).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from jaxrnn._src.config import LayerConfig
from jaxrnn._src.config import checked_params
from jaxrnn._src.config import warn_float64_without_x64
from jaxrnn._src.linen_layers import GRU
from jaxrnn._src.linen_layers import LSTM
from jaxrnn._src.linen_layers import RNN
from jaxrnn._src.torch_cells import builtin_cell_of

# jaxrnn name -> (PyTorch prefix, transposed)
_TORCH_NAMES = {
  'w_ih': ('weight_ih', True),
  'w_hh': ('weight_hh', True),
  'b_ih': ('bias_ih', False),
  'b_hh': ('bias_hh', False),
  'w_hr': ('weight_hr', True),
}
# PyTorch's RNNBase.mode -> (jaxrnn layer class, its extra fields, number of gates)
_MODES = {
  'RNN_TANH': (RNN, {'nonlinearity': 'tanh'}, 1),
  'RNN_RELU': (RNN, {'nonlinearity': 'relu'}, 1),
  'LSTM': (LSTM, {}, 4),
  'GRU': (GRU, {}, 3),
}
_DTYPES = {'float32': jnp.float32, 'float64': jnp.float64, 'bfloat16': jnp.bfloat16}


def _import_torch():
  try:
    return importlib.import_module('torch')
  except ImportError as error:
    raise ImportError(
      "jaxrnn's PyTorch converters need PyTorch: pip install 'jaxrnn[torch]'. "
      '(from_state_dict / to_state_dict work with NumPy arrays and need no torch.)'
    ) from error


def torch_name(group: str, name: str) -> str:
  """Returns PyTorch's parameter name, e.g. ``('l1_reverse', 'w_ih') -> 'weight_ih_l1_reverse'``."""
  return f'{_TORCH_NAMES[name][0]}_{group}'


def _mode(layer) -> str:
  """Returns PyTorch's ``mode`` of a layer over one PyTorch cell, or raises naming the cell."""
  cell = builtin_cell_of(layer, 'PyTorch conversion')
  if not getattr(cell, 'reset_after', True):
    raise ValueError(
      'PyTorch conversion needs reset_after=True: torch.nn.GRU applies the reset gate after the '
      'recurrent matmul, this GRUCell(reset_after=False) before it.'
    )
  return {'rnn_tanh': 'RNN_TANH', 'rnn_relu': 'RNN_RELU', 'lstm': 'LSTM', 'gru': 'GRU'}[cell.name]


def params_from_state_dict(
  config: LayerConfig, state_dict: Mapping[str, Any], in_features: int
) -> dict[str, dict[str, np.ndarray]]:
  """Returns ``params`` (nested dict of NumPy arrays) from a PyTorch-named mapping.

  Raises:
    ValueError: a parameter is missing, naming it.
    ValueError: a parameter has the wrong shape (naming it and both shapes), or
      the mapping holds a key this configuration does not use.
  """
  params, used = {}, set()
  for row, group in enumerate(config.param_names):
    shapes = config.weight_shapes(row // config.num_directions, in_features)
    params[group] = {}
    for name, shape in shapes.items():
      key = torch_name(group, name)
      if key not in state_dict:
        raise ValueError(
          f'state_dict has no {key!r} (needed for params[{group!r}][{name!r}] {list(shape)}); '
          f'it has {sorted(state_dict)}.'
        )
      used.add(key)
      # A copy: jnp.asarray may alias a NumPy buffer (zero-copy on CPU), and the arrays may be
      # views of a torch module's parameters (`.numpy()`), which training updates in place.
      value = np.array(state_dict[key], copy=True)
      transposed = _TORCH_NAMES[name][1]
      torch_shape = shape[::-1] if transposed else shape
      if value.shape != torch_shape:
        raise ValueError(
          f'state_dict[{key!r}] has shape {list(value.shape)}, expected {list(torch_shape)} '
          f'for this configuration.'
        )
      params[group][name] = value.T if transposed else value
  unused = sorted(set(state_dict) - used)
  if unused:
    raise ValueError(f'state_dict has keys this configuration does not use: {unused}.')
  return params


def to_state_dict(layer: nn.Module, variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Returns PyTorch's ``state_dict`` of ``layer`` as NumPy arrays (no torch needed).

  Args:
    layer: a ``jaxrnn.RNN``/``LSTM``/``GRU``.
    variables: ``{'params': ...}`` or the ``params`` dict itself, or any pytree
      shaped like them (e.g. gradients).

  Raises:
    ValueError: ``variables`` do not fit ``layer``: a parameter group is missing
      or extra (variables of a deeper or shallower stack, or of the other number
      of directions), a group lacks or has an extra weight (``use_bias``,
      ``proj_size``), or a weight has the wrong shape; the message names them and
      the expected and actual shapes.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> layer = jaxrnn.GRU(hidden_size=4, bidirectional=True)
    >>> variables = layer.init(jax.random.key(0), jnp.ones((1, 2, 3)))
    >>> state_dict = jaxrnn.interop.to_state_dict(layer, variables)
    >>> {name: value.shape for name, value in state_dict.items()}
    {'weight_ih_l0': (12, 3), 'weight_hh_l0': (12, 4),
     'bias_ih_l0': (12,), 'bias_hh_l0': (12,),
     'weight_ih_l0_reverse': (12, 3), 'weight_hh_l0_reverse': (12, 4),
     'bias_ih_l0_reverse': (12,), 'bias_hh_l0_reverse': (12,)}
  """
  _mode(layer)
  config = layer.config
  params = checked_params(config, variables)
  state_dict = {}
  for group in config.param_names:
    for name in _TORCH_NAMES:
      if name in params[group]:
        value = np.asarray(params[group][name])
        state_dict[torch_name(group, name)] = value.T if _TORCH_NAMES[name][1] else value
  return state_dict


def _as_numpy(value) -> np.ndarray:
  """A state_dict value as NumPy, PyTorch tensors included (bfloat16 ones through float32, exactly)."""
  if hasattr(value, 'detach'):
    value = value.detach().cpu()
    if str(value.dtype) == 'torch.bfloat16':  # NumPy has no bfloat16: widen, then narrow back exactly
      return value.float().numpy().astype(jnp.bfloat16)
  return np.asarray(value)


def _infer_hyperparameters(state_dict: Mapping[str, Any], mode: str) -> dict:
  if 'weight_ih_l0' not in state_dict:
    raise ValueError(
      f"state_dict has no 'weight_ih_l0': is it the state_dict of an nn.RNN/LSTM/GRU? It has {sorted(state_dict)}."
    )
  for key, value in state_dict.items():
    rank = 2 if key.startswith('weight_') else 1
    if np.ndim(value) != rank:
      raise ValueError(
        f'state_dict[{key!r}] must have rank {rank} ({"[rows, columns]" if rank == 2 else "[G*H]"}), '
        f'got shape {list(np.shape(value))}.'
      )
  layers = {int(m.group(1)) for k in state_dict if (m := re.fullmatch(r'weight_ih_l(\d+)(_reverse)?', k))}
  gates = _MODES[mode][2]
  return {
    'input_size': np.shape(state_dict['weight_ih_l0'])[1],
    'hidden_size': np.shape(state_dict['weight_ih_l0'])[0] // gates,
    'num_layers': max(layers) + 1,
    'bidirectional': 'weight_ih_l0_reverse' in state_dict,
    'bias': 'bias_ih_l0' in state_dict,
    'proj_size': np.shape(state_dict['weight_hr_l0'])[0] if 'weight_hr_l0' in state_dict else 0,
  }


def from_state_dict(
  state_dict: Mapping[str, Any],
  mode: str,
  *,
  batch_first: bool = False,
  dropout: float = 0.0,
  input_size: int | None = None,
  hidden_size: int | None = None,
  num_layers: int | None = None,
  bidirectional: bool | None = None,
  bias: bool | None = None,
  proj_size: int | None = None,
  dtype: DTypeLike | None = None,
) -> tuple[nn.Module, dict]:
  """Returns ``(layer, variables)`` from a PyTorch ``state_dict`` of NumPy arrays (no torch needed).

  Args:
    state_dict: PyTorch parameter names -> arrays (``weight_ih_l0`` etc.):
      NumPy arrays or PyTorch tensors, bfloat16 ones included.
    mode: PyTorch's ``module.mode``: ``'LSTM'``, ``'GRU'``, ``'RNN_TANH'`` or ``'RNN_RELU'``.
    batch_first: PyTorch's flag; the layer gets ``time_major = not batch_first``
      (PyTorch's default is time-major).
    dropout: PyTorch's dropout between layers.
    input_size: ``F``; ``None`` infers it from ``weight_ih_l0``.
    hidden_size: ``H``; ``None`` infers it.
    num_layers: ``L``; ``None`` infers it from the parameter names.
    bidirectional: ``None`` infers it from the ``_reverse`` names.
    bias: ``None`` infers it from the presence of ``bias_ih_l0``.
    proj_size: ``P``; ``None`` infers it from ``weight_hr_l0``. Every given
      hyper-parameter is checked against the ``state_dict``.
    dtype: parameter dtype (``float32``, ``float64`` or ``bfloat16``); ``None``
      keeps the arrays' dtype.

  Returns:
    layer: a [`jaxrnn.RNN`][jaxrnn.RNN], [`LSTM`][jaxrnn.LSTM] or
      [`GRU`][jaxrnn.GRU] (linen) with the checkpoint's hyper-parameters.
    variables: ``{'params': ...}`` for ``layer.apply``. They hold copies:
      updating ``state_dict``'s arrays in place later does not change them.

  Examples:
    >>> import numpy as np, jaxrnn
    >>> rng = np.random.default_rng(0)
    >>> state_dict = {  # H=2, F=3: weights [4H, F] and [4H, H], as in PyTorch
    ...     'weight_ih_l0': rng.normal(size=(8, 3)),
    ...     'weight_hh_l0': rng.normal(size=(8, 2)),
    ...     'bias_ih_l0': np.zeros(8), 'bias_hh_l0': np.zeros(8)}
    >>> layer, variables = jaxrnn.interop.from_state_dict(
    ...     state_dict, 'LSTM', dtype='float32')
    >>> w_ih = variables['params']['l0']['w_ih']
    >>> layer.hidden_size, layer.time_major, w_ih.shape
    (2, True, (3, 8))
  """
  if mode not in _MODES:
    raise ValueError(f'`mode` must be one of {sorted(_MODES)} (PyTorch RNNBase.mode), got {mode!r}.')
  state_dict = {key: _as_numpy(value) for key, value in state_dict.items()}
  inferred = _infer_hyperparameters(state_dict, mode)
  given = {
    'input_size': input_size,
    'hidden_size': hidden_size,
    'num_layers': num_layers,
    'bidirectional': bidirectional,
    'bias': bias,
    'proj_size': proj_size,
  }
  hyper = {k: inferred[k] if v is None else v for k, v in given.items()}
  cls, extra, _ = _MODES[mode]
  if hyper['proj_size']:
    extra = {**extra, 'proj_size': hyper['proj_size']}
  if dtype is None:
    dtype = str(np.asarray(state_dict['weight_ih_l0']).dtype)
  dtype_name = jnp.dtype(dtype).name
  if dtype_name not in _DTYPES:
    raise TypeError(f'parameter dtype must be float32, float64 or bfloat16, got {dtype_name}.')
  warn_float64_without_x64(dtype_name)
  layer = cls(
    hidden_size=hyper['hidden_size'],
    num_layers=hyper['num_layers'],
    bidirectional=hyper['bidirectional'],
    time_major=not batch_first,
    dropout=float(dropout),
    use_bias=hyper['bias'],
    param_dtype=_DTYPES[dtype_name],
    **extra,
  )
  params = params_from_state_dict(layer.config, state_dict, hyper['input_size'])
  return layer, {'params': jax.tree.map(lambda a: jnp.asarray(a, _DTYPES[dtype_name]), params)}


def from_torch(module: Any) -> tuple[nn.Module, dict]:
  """Returns ``(layer, variables)`` equivalent to a ``torch.nn.RNN``, ``LSTM`` or ``GRU``.

  Every hyper-parameter carries over: ``num_layers``, ``bidirectional``,
  ``batch_first`` (as ``time_major = not batch_first``), ``bias``,
  ``nonlinearity``, ``proj_size``, ``dropout``; parameters keep their dtype
  (float32, float64 or bfloat16).

  Returns:
    layer: a [`jaxrnn.RNN`][jaxrnn.RNN], [`LSTM`][jaxrnn.LSTM] or
      [`GRU`][jaxrnn.GRU] (linen) with the module's hyper-parameters.
    variables: ``{'params': ...}`` for ``layer.apply``. They hold copies:
      training or otherwise updating the module in place later does not
      change them.

  Examples:
    >>> import torch, jaxrnn
    >>> module = torch.nn.LSTM(
    ...     3, 8, num_layers=2, batch_first=True, bidirectional=True)
    >>> layer, variables = jaxrnn.interop.from_torch(module)
    >>> layer.num_layers, layer.bidirectional, layer.time_major
    (2, True, False)
  """
  torch = _import_torch()
  if type(module) not in (torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU):
    raise TypeError(
      f'from_torch takes a torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU, got {type(module).__name__}.'
    )
  dtypes = {p.dtype for p in module.parameters()}
  if len(dtypes) != 1 or str(next(iter(dtypes))).removeprefix('torch.') not in _DTYPES:
    raise TypeError(f'parameters must all be float32, float64 or bfloat16, got {sorted(map(str, dtypes))}.')
  dtype = str(next(iter(dtypes))).removeprefix('torch.')
  state_dict = {
    # NumPy has no bfloat16: go through float32, which holds every bfloat16 exactly.
    k: v.detach().cpu().to(torch.float32 if dtype == 'bfloat16' else v.dtype).numpy()
    for k, v in module.state_dict().items()
  }
  return from_state_dict(
    state_dict,
    module.mode,
    batch_first=module.batch_first,
    dropout=module.dropout,
    input_size=module.input_size,
    hidden_size=module.hidden_size,
    num_layers=module.num_layers,
    bidirectional=module.bidirectional,
    bias=module.bias,
    proj_size=getattr(module, 'proj_size', 0),
    dtype=dtype,
  )


def to_torch(layer: nn.Module, variables: Mapping[str, Any]) -> Any:
  """Returns a ``torch.nn.RNN``/``LSTM``/``GRU`` with ``layer``'s hyper-parameters and ``variables``.

  ``variables`` may be any pytree shaped like the parameters, e.g. gradients:
  ``to_torch(layer, grads).weight_ih_l0`` is then the gradient by PyTorch's name.
  The module's dtype is that of the arrays.

  Raises:
    ValueError: ``variables`` do not fit ``layer`` (see
      [`to_state_dict`][jaxrnn.interop.to_state_dict]).
    TypeError: the parameters are not float32, float64 or bfloat16.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> layer = jaxrnn.GRU(hidden_size=4)
    >>> variables = layer.init(jax.random.key(0), jnp.ones((1, 2, 3)))
    >>> module = jaxrnn.interop.to_torch(layer, variables)
    >>> type(module).__name__, module.batch_first
    ('GRU', True)
    >>> tuple(module.weight_ih_l0.shape)  # PyTorch's [G*H, F]
    (12, 3)
  """
  torch = _import_torch()
  state_dict = to_state_dict(layer, variables)
  config = layer.config
  dtype = jnp.dtype(state_dict['weight_ih_l0'].dtype).name
  if dtype not in _DTYPES:
    raise TypeError(f'parameter dtype must be float32, float64 or bfloat16, got {dtype}.')
  mode = _mode(layer)
  cell = config.cell
  kwargs = {}
  if mode.startswith('RNN'):
    kwargs['nonlinearity'] = cell.nonlinearity
  if getattr(cell, 'proj_size', 0):
    kwargs['proj_size'] = cell.proj_size
  torch_dtype = getattr(torch, dtype)
  # jaxrnn's layer classes carry PyTorch's names: RNN, LSTM, GRU.
  module = getattr(torch.nn, _MODES[mode][0].__name__)(
    input_size=state_dict['weight_ih_l0'].shape[1],
    hidden_size=config.hidden_size,
    num_layers=config.num_layers,
    bias=cell.use_bias,
    batch_first=not config.time_major,
    dropout=config.dropout,
    bidirectional=config.bidirectional,
    dtype=torch_dtype,
    **kwargs,
  )
  numpy_dtype = np.float32 if dtype == 'bfloat16' else dtype  # exact: NumPy has no bfloat16
  tensors = {k: torch.from_numpy(np.array(v, numpy_dtype)).to(torch_dtype) for k, v in state_dict.items()}
  module.load_state_dict(tensors, strict=True)
  return module
