"""Static hyper-parameters of a recurrent layer, validated once, shared by linen and NNX."""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def check_bool(name: str, value, optional: bool = False) -> None:
  """Raises unless ``value`` is a bool (or None when ``optional``): ``'False'`` is truthy."""
  if (optional and value is None) or isinstance(value, (bool, np.bool_)):
    return
  expected = 'True, False or None' if optional else 'True or False'
  raise TypeError(f'`{name}` must be {expected}, got {type(value).__name__} {value!r}.')


def check_float_dtype(name: str, value, optional: bool = False) -> None:
  """Raises unless ``value`` names a floating-point dtype (or is None when ``optional``).

  An integer compute dtype would truncate the inputs and weights and return zeros.
  """
  if optional and value is None:
    return
  try:
    dtype = jnp.dtype(value)
  except TypeError:
    raise TypeError(f'`{name}` must be a floating-point dtype such as jnp.float32, got {value!r}.') from None
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
      f'`{name}` must be a floating-point dtype such as jnp.float32 or jnp.bfloat16, got {dtype}.'
    )


def _check_int(name: str, value, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f'`{name}` must be an int, got {type(value).__name__} {value!r}.')
  if value < minimum:
    raise ValueError(f'`{name}` must be >= {minimum}, got {value}.')


def _describe_cell(cell) -> str:
  return type(cell).__name__


def check_cell(cell, arg: str = 'cell') -> None:
  """Raises unless ``cell`` follows the cell protocol (SPEC §10), naming what it lacks."""
  if hasattr(cell, 'apply') and hasattr(cell, 'init_with_output'):  # a flax.linen module
    raise TypeError(
      f'`{arg}` is a flax.linen module ({type(cell).__name__}): wrap it as '
      f'`jaxrnn.linen.FlaxCell({type(cell).__name__}(...))` to run it under jaxrnn.'
    )
  missing = [name for name in ('output_size', 'init', 'initial_carry') if not hasattr(cell, name)]
  if not callable(cell):
    missing.append('__call__')
  if missing:
    raise TypeError(
      f'`{arg}` must be a cell (SPEC §10: output_size, init, initial_carry, __call__), got '
      f'{type(cell).__name__} {cell!r}, which lacks {missing}.'
    )
  try:
    hash(cell)
  except TypeError:
    raise TypeError(
      f'`{arg}` must be hashable (a frozen dataclass holding hyper-parameters), got an unhashable '
      f'{type(cell).__name__}: the layers pass it to jax.jit as a static argument.'
    ) from None
  size = cell.output_size
  if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
    raise TypeError(f'`{arg}.output_size` must be a positive int, got {size!r}.')
  ndim = getattr(cell, 'feature_ndim', 1)
  if isinstance(ndim, bool) or not isinstance(ndim, numbers.Integral) or ndim < 1:
    raise TypeError(f'`{arg}.feature_ndim` must be a positive int, got {ndim!r}.')


@dataclasses.dataclass(frozen=True, kw_only=True)
class LayerOptions:
  """Options of a recurrent layer that do not depend on its cell.

  The one list of them: the linen layers' fields, the NNX layers' keyword
  arguments and ``LayerConfig`` are all made from it, so adding an option is
  one edit here (``tests/test_open_cells.py`` checks that they agree).
  """

  num_layers: int = 1
  bidirectional: bool = False
  time_major: bool = False
  dropout: float = 0.0
  recurrent_dropout: float = 0.0
  dtype: Any = None
  param_dtype: Any = jnp.float32
  unroll: int | None = None
  remat: bool = False
  checkpoint_every: int = 0
  hoist_input_projection: bool | None = None
  fused_backward: bool | None = None
  scan_mode: str = 'auto'
  loop: str = 'auto'

  def __post_init__(self):
    for name in ('bidirectional', 'time_major', 'remat'):
      check_bool(name, getattr(self, name))
    for name in ('hoist_input_projection', 'fused_backward'):
      check_bool(name, getattr(self, name), optional=True)
    check_float_dtype('dtype', self.dtype, optional=True)
    check_float_dtype('param_dtype', self.param_dtype)
    _check_int('num_layers', self.num_layers, 1)
    if self.unroll is not None:
      _check_int('unroll', self.unroll, 1)
    _check_int('checkpoint_every', self.checkpoint_every, 0)
    if self.scan_mode not in SCAN_MODES:
      raise ValueError(f'`scan_mode` must be one of {SCAN_MODES}, got {self.scan_mode!r}.')
    if self.loop not in LOOPS:
      raise ValueError(f'`loop` must be one of {LOOPS}, got {self.loop!r}.')
    if self.remat and self.checkpoint_every:
      raise ValueError(
        '`remat=True` and `checkpoint_every` are two ways to save memory; choose one '
        f'(got remat=True, checkpoint_every={self.checkpoint_every}).'
      )
    for name in ('dropout', 'recurrent_dropout'):
      rate = getattr(self, name)
      if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f'`{name}` must be a float in [0, 1), got {rate!r}.')
      if not 0.0 <= rate < 1.0:
        raise ValueError(f'`{name}` must be in [0, 1), got {rate}.')

  def draws_dropout(self, deterministic: bool) -> bool:
    """Whether a call with ``deterministic`` draws dropout masks (between layers or recurrent)."""
    between = self.dropout > 0 and self.num_layers > 1
    return not deterministic and (between or self.recurrent_dropout > 0)


SCAN_MODES = ('auto', 'associative', 'sequential')
LOOPS = ('auto', 'scan', 'pallas')

OPTION_NAMES = tuple(f.name for f in dataclasses.fields(LayerOptions))
OPTION_DEFAULTS = {f.name: f.default for f in dataclasses.fields(LayerOptions)}


def options_of(obj) -> dict[str, Any]:
  """Returns ``{name: obj.name}`` for every layer option."""
  return {name: getattr(obj, name) for name in OPTION_NAMES}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LayerConfig(LayerOptions):
  """A (stacked, maybe bidirectional) recurrent layer: its cell(s) and options, validated once.

  Parameters of layer ``k`` are named ``l{k}`` (forward) and ``l{k}_reverse``
  (backward), as in PyTorch's ``weight_ih_l{k}_reverse``.

  Attributes:
    cell: the cell of every layer and direction (SPEC §10).
    backward_cell: the backward direction's cell of a bidirectional layer;
      ``None`` uses ``cell``. It must have ``cell``'s output size and carry.
  """

  cell: Any
  backward_cell: Any = None

  def __post_init__(self):
    super().__post_init__()
    check_cell(self.cell)
    if self.backward_cell is not None:
      check_cell(self.backward_cell, 'backward_cell')
      if not self.bidirectional:
        raise ValueError('`backward_cell` needs `bidirectional=True`.')
      if self.backward_cell.output_size != self.cell.output_size:
        raise ValueError(
          f'`backward_cell.output_size` must equal `cell.output_size` ({self.cell.output_size}): both '
          f'directions are stacked in one carry, got {self.backward_cell.output_size}.'
        )
      if getattr(self.backward_cell, 'feature_ndim', 1) != self.feature_ndim:
        raise ValueError('`backward_cell.feature_ndim` must equal `cell.feature_ndim`.')
    if self.fused_backward:
      blocker = self._fused_blocker('it has no `fused_kind` hook')
      if blocker:
        raise ValueError(
          f'`fused_backward=True` does not support {blocker}; leave `fused_backward=None` to choose '
          'automatically.'
        )
    if self.loop == 'pallas':
      if self.fused_backward is False:
        blocker = '`fused_backward=False` (its backward pass is the fused one)'
      elif self.recurrent_dropout:
        blocker = '`recurrent_dropout`'
      else:
        blocker = self._fused_blocker('only the built-in RNN, LSTM and GRU cells have a kernel')
      if blocker:
        raise ValueError(f"`loop='pallas'` does not support {blocker}; use `loop='auto'`.")
    if self.scan_mode == 'associative':
      lacking = [c for c in self.cells if not hasattr(c, 'linear_form')]
      if lacking:
        raise ValueError(
          f"`scan_mode='associative'` needs cells linear in their carry (a `linear_form` hook, SPEC §12), "
          f"and {_describe_cell(lacking[0])} has none; leave `scan_mode='auto'`."
        )

  def _fused_blocker(self, why_not_the_cell: str) -> str | None:
    """Returns what keeps the fused loop from running this layer, or None."""
    if self.remat:
      return '`remat=True` (use `checkpoint_every`)'
    if getattr(self.cell, 'proj_size', 0):
      return '`proj_size`'
    lacking = [c for c in self.cells if getattr(c, 'fused_kind', None) is None]
    return f'{_describe_cell(lacking[0])} ({why_not_the_cell})' if lacking else None

  @property
  def cells(self) -> tuple:
    """The distinct cells of the layer: ``(cell,)`` or ``(cell, backward_cell)``."""
    return (self.cell,) if self.backward_cell is None else (self.cell, self.backward_cell)

  def row_cell(self, row: int):
    """Returns the cell of carry row ``row = layer*D + direction``."""
    if self.backward_cell is not None and row % self.num_directions == 1:
      return self.backward_cell
    return self.cell

  @property
  def use_fused_backward(self) -> bool:
    """Whether the loop runs with the hand-written backward pass (``fused_backward``)."""
    if self.fused_backward is None:
      return not self.remat and all(getattr(c, 'fused_kind', None) is not None for c in self.cells)
    return self.fused_backward

  @property
  def use_pallas(self) -> bool:
    """Whether each layer direction's loop is one Pallas kernel (``loop``; ``'auto'``: never yet)."""
    return self.loop == 'pallas'

  @property
  def feature_ndim(self) -> int:
    """Trailing feature axes of the inputs (1 for vectors)."""
    return getattr(self.cell, 'feature_ndim', 1)

  @property
  def num_directions(self) -> int:
    """``D``: 2 when bidirectional, else 1."""
    return 2 if self.bidirectional else 1

  @property
  def output_size(self) -> int:
    """``H_out``, the cell's output size (``proj_size`` if set, else ``hidden_size``, for LSTM)."""
    return self.cell.output_size

  @property
  def hidden_size(self) -> int:
    """``H`` of a built-in cell."""
    return self.cell.hidden_size

  @property
  def param_names(self) -> list[str]:
    """Names of the ``L*D`` parameter groups, in carry-row order ``layer*D + direction``."""
    suffixes = ('', '_reverse')[: self.num_directions]
    return [f'l{k}{s}' for k in range(self.num_layers) for s in suffixes]

  def layer_features(self, layer: int, in_features):
    """Returns the features layer ``layer`` reads: ``in_features`` for layer 0, else ``D * H_out``
    (on the last feature axis when ``feature_ndim > 1``)."""
    if layer == 0:
      return in_features
    width = self.num_directions * self.output_size
    return (*tuple(in_features)[:-1], width) if self.feature_ndim > 1 else width

  def weight_shapes(self, layer: int, in_features) -> dict[str, tuple[int, ...]]:
    """Returns the shape of each weight of layer ``layer`` (one direction) of a built-in cell."""
    specs = self.cell.param_specs(self.layer_features(layer, in_features))
    return {name: shape for name, (shape, _) in specs.items()}


def check_params(config: LayerConfig, params: Mapping[str, Any]) -> None:
  """Raises ValueError unless ``params`` has exactly the groups, names and shapes ``config`` uses."""
  layout = f'num_layers={config.num_layers}, bidirectional={config.bidirectional}'
  use_bias, proj_size = config.cell.use_bias, getattr(config.cell, 'proj_size', 0)
  expected = config.param_names
  missing = [group for group in expected if group not in params]
  extra = sorted(set(params) - set(expected))
  if missing or extra:
    raise ValueError(
      f'`variables` do not fit the layer ({layout}): expected parameter groups {expected}, '
      f'got {sorted(params)} (missing {missing}, extra {extra}).'
    )
  first = params[expected[0]]
  # F is read off layer 0; None (shown as 'F') makes a w_ih of the wrong rank fail below.
  in_features = np.shape(first['w_ih'])[0] if 'w_ih' in first and np.ndim(first['w_ih']) == 2 else None
  for row, group in enumerate(expected):
    shapes = config.weight_shapes(row // config.num_directions, in_features)
    missing = sorted(set(shapes) - set(params[group]))
    extra = sorted(set(params[group]) - set(shapes))
    if missing or extra:
      raise ValueError(
        f'`variables`: params[{group!r}] does not fit the layer (use_bias={use_bias}, '
        f'proj_size={proj_size}): expected {sorted(shapes)}, got {sorted(params[group])} '
        f'(missing {missing}, extra {extra}).'
      )
    for name, shape in shapes.items():
      actual = np.shape(params[group][name])
      if actual != shape:
        raise ValueError(
          f'`variables`: params[{group!r}][{name!r}] has shape {list(actual)}, expected '
          f'{["F" if n is None else n for n in shape]} for this layer ({layout}, '
          f'hidden_size={config.hidden_size}, proj_size={proj_size}).'
        )


def checked_params(config: LayerConfig, variables: Mapping[str, Any]) -> Mapping[str, Any]:
  """Returns the ``params`` of ``variables`` (``{'params': ...}`` or the ``params`` themselves),
  after ``check_params`` (for the converters, which read every weight by name)."""
  params = variables.get('params', variables) if isinstance(variables, Mapping) else variables
  check_params(config, params)
  return params


def warn_float64_without_x64(dtype, stacklevel: int = 3) -> None:
  """Warns that float64 parameters compute in float32 while ``jax_enable_x64`` is off."""
  if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
    warnings.warn(
      'float64 parameters with jax_enable_x64 off will compute in float32; '
      "enable x64 (jax.config.update('jax_enable_x64', True)) for float64.",
      stacklevel=stacklevel,
    )
