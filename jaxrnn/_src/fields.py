"""Layer attributes -> ``LayerConfig``, shared by the linen and NNX layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxrnn._src.checks import check_batch_shape
from jaxrnn._src.compose import zeros_carry
from jaxrnn._src.config import LayerConfig
from jaxrnn._src.config import check_float_dtype
from jaxrnn._src.types import Carry


class LayerFields:
  """Builds a layer's ``LayerConfig`` from its attributes of the same names.

  Shared by the linen and NNX layers, which both store ``hidden_size``,
  ``num_layers``, ... as attributes. ``cell_family`` is ``'rnn'`` (with a
  ``nonlinearity`` attribute), ``'lstm'`` (with ``proj_size``) or ``'gru'``.
  """

  cell_family: ClassVar[str]

  def initial_carry(self, batch_shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Carry:
    """Returns the all-zeros start state, shaped like ``final_carry``; needs no parameters.

    Args:
      batch_shape: ``[*batch]``, e.g. ``(B,)``.
      dtype: the layer's compute dtype.

    Returns:
      initial_carry: zeros ``[L*D, *batch, H_out]``; for LSTM an
        [`LSTMState`][jaxrnn.LSTMState] with ``c: [L*D, *batch, H]``.
    """
    check_float_dtype('dtype', dtype)
    return zeros_carry(self.config, check_batch_shape(batch_shape), dtype)

  @property
  def config(self) -> LayerConfig:
    """The validated hyper-parameters shared with the functional core."""
    check_float_dtype('dtype', self.dtype, optional=True)
    check_float_dtype('param_dtype', self.param_dtype)
    cell = self.cell_family
    if cell == 'rnn':
      nonlinearity = self.nonlinearity
      if nonlinearity not in ('tanh', 'relu'):
        raise ValueError(f"`nonlinearity` must be 'tanh' or 'relu', got {nonlinearity!r}.")
      cell = f'rnn_{nonlinearity}'
    return LayerConfig(
      cell=cell,
      hidden_size=self.hidden_size,
      num_layers=self.num_layers,
      bidirectional=self.bidirectional,
      time_major=self.time_major,
      dropout=self.dropout,
      use_bias=self.use_bias,
      proj_size=getattr(self, 'proj_size', 0),
      unroll=self.unroll,
      remat=self.remat,
      checkpoint_every=self.checkpoint_every,
      hoist_input_projection=self.hoist_input_projection,
      fused_backward=self.fused_backward,
    )
