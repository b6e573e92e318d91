"""PyTorch ``state_dict`` <-> jaxrnn parameters, with NumPy only (torch is not imported).

PyTorch stores ``weight_ih_l{k}{suffix}: [G*H, F]``, ``weight_hh_l{k}{suffix}:
[G*H, H_out]``, ``bias_ih/bias_hh_l{k}{suffix}: [G*H]`` and ``weight_hr_l{k}{suffix}:
[P, H]`` with ``suffix`` ``''`` or ``'_reverse'``. jaxrnn stores the transposes
under ``params['l{k}{suffix}']['w_ih' | 'w_hh' | 'b_ih' | 'b_hh' | 'w_hr']``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxrnn._src.config import LayerConfig

# jaxrnn name -> (PyTorch prefix, transposed)
_TORCH_NAMES = {
  'w_ih': ('weight_ih', True),
  'w_hh': ('weight_hh', True),
  'b_ih': ('bias_ih', False),
  'b_hh': ('bias_hh', False),
  'w_hr': ('weight_hr', True),
}


def torch_name(group: str, name: str) -> str:
  """Returns PyTorch's parameter name, e.g. ``('l1_reverse', 'w_ih') -> 'weight_ih_l1_reverse'``."""
  return f'{_TORCH_NAMES[name][0]}_{group}'


def params_from_state_dict(
  config: LayerConfig, state_dict: Mapping[str, Any], in_features: int
) -> dict[str, dict[str, np.ndarray]]:
  """Returns ``params`` (nested dict of NumPy arrays) from a PyTorch-named mapping.

  Raises:
    KeyError: a parameter is missing, naming it.
    ValueError: a parameter has the wrong shape, naming it and both shapes.
  """
  params = {}
  for row, group in enumerate(config.param_names):
    shapes = config.weight_shapes(row // config.num_directions, in_features)
    params[group] = {}
    for name, shape in shapes.items():
      key = torch_name(group, name)
      if key not in state_dict:
        raise KeyError(f'state_dict has no {key!r} (needed for params[{group!r}][{name!r}] {list(shape)}).')
      value = np.asarray(state_dict[key])
      if _TORCH_NAMES[name][1]:
        value = value.T
      if value.shape != shape:
        torch_shape = shape[::-1] if _TORCH_NAMES[name][1] else shape
        raise ValueError(
          f'state_dict[{key!r}] has shape {list(np.shape(state_dict[key]))}, expected '
          f'{list(torch_shape)} for this configuration.'
        )
      params[group][name] = value
  return params


def state_dict_from_params(config: LayerConfig, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Returns a PyTorch-named dict of NumPy arrays from ``params`` (any pytree of that shape)."""
  state_dict = {}
  for group in config.param_names:
    for name, value in params[group].items():
      value = np.asarray(value)
      state_dict[torch_name(group, name)] = value.T if _TORCH_NAMES[name][1] else value
  return state_dict
