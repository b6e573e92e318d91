"""Layer attributes -> ``LayerConfig``, shared by the linen and NNX layers.

The options list is written once, in ``config.LayerOptions``; the cells'
hyper-parameters once, in each cell's dataclass. The linen layers take their
fields from both (``option_fields``, ``preset_fields``) and the NNX layers
their keyword arguments (``split_preset_kwargs``), so adding an option or a
cell hyper-parameter is one edit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxrnn._src.checks import check_batch_shape
from jaxrnn._src.compose import zeros_carry
from jaxrnn._src.config import OPTION_NAMES
from jaxrnn._src.config import LayerConfig
from jaxrnn._src.config import LayerOptions
from jaxrnn._src.config import check_float_dtype
from jaxrnn._src.config import options_of
from jaxrnn._src.types import Carry


def _as_field(f: dataclasses.Field, kw_only: bool) -> tuple:
  default = {} if f.default is dataclasses.MISSING else {'default': f.default}
  return (f.name, f.type, dataclasses.field(kw_only=kw_only, **default))


# The options as keyword-only fields of a (non-frozen) dataclass the linen layers inherit.
option_fields = dataclasses.make_dataclass(
  'LayerOptionFields', [_as_field(f, True) for f in dataclasses.fields(LayerOptions)]
)


def preset_fields(cell_type: type):
  """Returns a dataclass of ``cell_type``'s fields for a linen preset: the first (``hidden_size``)
  positional, the rest keyword-only, as ``jaxrnn.LSTM(8, proj_size=2)``."""
  fields = dataclasses.fields(cell_type)
  return dataclasses.make_dataclass(
    f'{cell_type.__name__}Fields', [_as_field(f, i > 0) for i, f in enumerate(fields)]
  )


def cell_field_names(cell_type: type) -> tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(cell_type))


def cell_field_defaults(cell_type: type) -> dict:
  """Returns ``{name: default}`` of the cell type's fields that have a default."""
  return {f.name: f.default for f in dataclasses.fields(cell_type) if f.default is not dataclasses.MISSING}


def split_preset_kwargs(cell_type: type, kwargs: dict) -> tuple[dict, dict]:
  """Returns ``(cell_kwargs, option_kwargs)`` from an NNX preset's keyword arguments."""
  names = cell_field_names(cell_type)
  unknown = sorted(set(kwargs) - set(names) - set(OPTION_NAMES))
  if unknown:
    raise TypeError(
      f'unexpected keyword arguments {unknown}; a {cell_type.__name__} layer takes '
      f'{sorted(names + OPTION_NAMES)}.'
    )
  return {k: v for k, v in kwargs.items() if k in names}, {
    k: v for k, v in kwargs.items() if k in OPTION_NAMES
  }


class LayerFields:
  """Builds a layer's ``LayerConfig`` from its attributes.

  A layer has an attribute per option (``num_layers``, ...) and either a
  ``cell`` attribute (``Recurrent``) or the fields of its ``cell_type``
  (the presets ``RNN``, ``LSTM``, ``GRU``).
  """

  cell_type: type | None = None

  def make_cell(self):
    """Returns the cell of every layer and direction."""
    if self.cell_type is None:
      return self.cell
    return self.cell_type(**{name: getattr(self, name) for name in cell_field_names(self.cell_type)})

  @property
  def config(self) -> LayerConfig:
    """The validated hyper-parameters shared with the functional core."""
    check_float_dtype('dtype', self.dtype, optional=True)
    check_float_dtype('param_dtype', self.param_dtype)
    return LayerConfig(
      cell=self.make_cell(), backward_cell=getattr(self, 'backward_cell', None), **options_of(self)
    )

  def initial_carry(self, batch_shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Carry:
    """Returns the all-zeros start state, shaped like ``final_carry``; needs no parameters.

    Args:
      batch_shape: ``[*batch]``, e.g. ``(B,)``.
      dtype: the layer's compute dtype.

    Returns:
      initial_carry: zeros ``[L*D, *batch, H_out]``; for LSTM an
        [`LSTMState`][jaxrnn.LSTMState] with ``c: [L*D, *batch, H]``; for
        any cell its carry with every leaf stacked ``[L*D, *batch, ...]``.
    """
    check_float_dtype('dtype', dtype)
    return zeros_carry(self.config, check_batch_shape(batch_shape), dtype)
