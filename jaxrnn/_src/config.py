"""Static hyper-parameters of a recurrent layer, validated once, shared by linen and NNX."""

from __future__ import annotations

import dataclasses
import numbers

import jax.numpy as jnp
import numpy as np

from jaxrnn._src.cells import CELL_KINDS
from jaxrnn._src.cells import CellKind


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


@dataclasses.dataclass(frozen=True)
class LayerConfig:
  """Hyper-parameters of a (stacked, maybe bidirectional) recurrent layer.

  Parameters of layer ``k`` are named ``l{k}`` (forward) and ``l{k}_reverse``
  (backward), as in PyTorch's ``weight_ih_l{k}_reverse``.
  """

  cell: str
  hidden_size: int
  num_layers: int = 1
  bidirectional: bool = False
  time_major: bool = False
  dropout: float = 0.0
  use_bias: bool = True
  proj_size: int = 0
  unroll: int | None = None
  remat: bool = False
  checkpoint_every: int = 0
  hoist_input_projection: bool | None = None
  fused_backward: bool | None = None

  def __post_init__(self):
    if self.cell not in CELL_KINDS:
      raise ValueError(f'unknown cell {self.cell!r}; expected one of {sorted(CELL_KINDS)}.')
    for name in ('bidirectional', 'time_major', 'use_bias', 'remat'):
      check_bool(name, getattr(self, name))
    for name in ('hoist_input_projection', 'fused_backward'):
      check_bool(name, getattr(self, name), optional=True)
    _check_int('hidden_size', self.hidden_size, 1)
    _check_int('num_layers', self.num_layers, 1)
    _check_int('proj_size', self.proj_size, 0)
    if self.unroll is not None:
      _check_int('unroll', self.unroll, 1)
    _check_int('checkpoint_every', self.checkpoint_every, 0)
    if self.remat and self.checkpoint_every:
      raise ValueError(
        '`remat=True` and `checkpoint_every` are two ways to save memory; choose one '
        f'(got remat=True, checkpoint_every={self.checkpoint_every}).'
      )
    if self.fused_backward and (self.proj_size or self.remat):
      raise ValueError(
        '`fused_backward=True` does not support '
        + ('`proj_size`' if self.proj_size else '`remat=True` (use `checkpoint_every`)')
        + '; leave `fused_backward=None` to choose automatically.'
      )
    if self.proj_size and self.cell != 'lstm':
      raise ValueError(
        f'`proj_size` is only supported by LSTM, got proj_size={self.proj_size} for {self.cell}.'
      )
    if self.proj_size >= self.hidden_size:
      raise ValueError(
        f'`proj_size` must be smaller than `hidden_size` ({self.hidden_size}), got {self.proj_size}.'
      )
    if isinstance(self.dropout, bool) or not isinstance(self.dropout, numbers.Real):
      raise TypeError(f'`dropout` must be a float in [0, 1), got {self.dropout!r}.')
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f'`dropout` must be in [0, 1), got {self.dropout}.')

  @property
  def use_fused_backward(self) -> bool:
    """Whether the loop runs with the hand-written backward pass (``fused_backward``)."""
    if self.fused_backward is None:
      return not (self.proj_size or self.remat)
    return self.fused_backward

  @property
  def kind(self) -> CellKind:
    return CELL_KINDS[self.cell]

  @property
  def num_directions(self) -> int:
    """``D``: 2 when bidirectional, else 1."""
    return 2 if self.bidirectional else 1

  @property
  def output_size(self) -> int:
    """``H_out``: ``proj_size`` if set, else ``hidden_size``."""
    return self.proj_size or self.hidden_size

  @property
  def param_names(self) -> list[str]:
    """Names of the ``L*D`` parameter groups, in carry-row order ``layer*D + direction``."""
    suffixes = ('', '_reverse')[: self.num_directions]
    return [f'l{k}{s}' for k in range(self.num_layers) for s in suffixes]

  def weight_shapes(self, layer: int, in_features: int) -> dict[str, tuple[int, ...]]:
    """Returns the shape of each weight of layer ``layer`` (one direction).

    Layer 0 reads ``F = in_features``; layer ``k > 0`` reads ``D * H_out``.
    """
    features = in_features if layer == 0 else self.num_directions * self.output_size
    gates = self.kind.num_gates * self.hidden_size
    shapes = {'w_ih': (features, gates), 'w_hh': (self.output_size, gates)}
    if self.use_bias:
      shapes.update(b_ih=(gates,), b_hh=(gates,))
    if self.proj_size:
      shapes['w_hr'] = (self.hidden_size, self.proj_size)
    return shapes
