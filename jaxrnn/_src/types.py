"""Shape legend, parameter and state containers shared by the whole library.

Letters used in every docstring (SPEC.md):

- ``B`` batch, ``T`` time steps, ``F`` input features, ``H`` hidden size,
- ``P`` projection size (LSTM ``proj_size``); ``H_out = P if P else H``,
- ``L`` layers, ``D`` directions (1 or 2), ``G`` gates (RNN 1, GRU 3, LSTM 4).

``[*batch]`` stands for any number of batch axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from typing import NamedTuple
from typing import Protocol
from typing import runtime_checkable

import jax

Array = jax.Array


class CellParams(NamedTuple):
  """Parameters of one layer in one direction, fused and in JAX layout.

  Importing PyTorch weights is a transpose: ``w_ih = weight_ih_l{k}.T`` and so on.

  Attributes:
    w_ih: ``[F, G*H]`` input-to-hidden weights, gates side by side in PyTorch's
      order (LSTM ``i, f, g, o``; GRU ``r, z, n``).
    w_hh: ``[H_out, G*H]`` hidden-to-hidden weights.
    b_ih: ``[G*H]`` input bias, or ``None`` when ``use_bias=False``.
    b_hh: ``[G*H]`` hidden bias, or ``None`` when ``use_bias=False``.
    w_hr: ``[H, P]`` LSTM projection, or ``None`` without projection.
  """

  w_ih: Array
  w_hh: Array
  b_ih: Array | None = None
  b_hh: Array | None = None
  w_hr: Array | None = None


class LSTMState(NamedTuple):
  """State of an LSTM; unpacks like PyTorch's ``(h_n, c_n)``.

  For a layer's ``final_carry`` the shapes are ``h: [L*D, *batch, H_out]`` and
  ``c: [L*D, *batch, H]``, row ``layer*D + direction``. Inside one cell step they
  are ``h: [..., H_out]`` and ``c: [..., H]``.
  """

  h: Array
  c: Array


@runtime_checkable
class Cell(Protocol):
  """What a layer needs from a cell (SPEC §10): any object with these members runs under
  [`Recurrent`][jaxrnn.Recurrent] with every guarantee of the layers.

  A cell is a small frozen (hashable) dataclass holding hyper-parameters only;
  its parameters are a pytree made by ``init`` and passed to every step.

  Attributes:
    output_size: ``H_out``, the width of ``y``. Layer ``k > 0`` of a stack
      reads ``D * H_out`` features.
    feature_ndim: trailing feature axes of ``x`` (optional, default 1; 3 for a
      2-D convolutional cell reading ``[H, W, C]``).

  Optional hooks, used when present and never needed for correctness:
  ``project_input(params, x) -> gx`` with ``recurrence(params, carry, gx)``
  (the input projection, which the driver may hoist out of the loop as one
  matmul), ``fused_kind`` (the fused backward's coefficients, built-in cells),
  ``param_specs(in_features)`` (one named Flax parameter per weight) and
  ``widen_carry(carry)`` (carry leaves that accumulate in float32).
  """

  @property
  def output_size(self) -> int: ...

  def init(self, key: Array, in_features: Any, dtype: Any = ...) -> Any:
    """Returns the parameters (a pytree of arrays) for inputs with ``in_features`` (an int, or a
    tuple when ``feature_ndim > 1``)."""

  def initial_carry(self, batch_shape: Sequence[int], dtype: Any = ...) -> Any:
    """Returns the all-zeros carry, a pytree whose leaves start with ``batch_shape``."""

  def __call__(self, params: Any, carry: Any, x: Array) -> tuple[Any, Array]:
    """Returns ``(new_carry, y)`` of one step: ``x: [*batch, *features]``, ``y: [*batch, ..., H_out]``."""


# An RNN or GRU carry is its hidden state array; an LSTM carry is an LSTMState.
Carry = Array | LSTMState


# Lets `jax.export` serialize functions that take or return an LSTMState (e.g. a decoding step).
jax.export.register_namedtuple_serialization(LSTMState, serialized_name='jaxrnn.LSTMState')
