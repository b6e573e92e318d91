"""One-step cell math, PyTorch's equations (SPEC §4).

A cell is a pure function ``cell(params, carry, x) -> (new_carry, y)``. It is
written for one example (``x: [F]``) but, being made of matmuls over the last
axis, also accepts any leading batch axes (``x: [..., F]``), so the scan driver
needs no ``vmap``.

Each cell is split in two so that the scan driver may choose where the input
projection runs (see ``scan.py``):

- ``project_input(params, x) -> gx``: ``x @ w_ih + b_ih``, ``[..., G*H]``;
- ``recurrence(params, carry, gx) -> (new_carry, y)``: everything else.

Matmuls accumulate in at least float32 and the gate sums stay in that precision;
the hidden state and output come back in the input's dtype, the LSTM cell state
``c`` stays in the accumulation dtype (float32 for bfloat16 compute).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxrnn._src.types import Array
from jaxrnn._src.types import Carry
from jaxrnn._src.types import CellParams
from jaxrnn._src.types import LSTMState


def accumulation_dtype(dtype) -> jnp.dtype:
  """Returns the dtype gate sums and the LSTM cell state are kept in."""
  return jnp.promote_types(dtype, jnp.float32)


def _matmul(a: Array, b: Array) -> Array:
  return jnp.matmul(a, b, preferred_element_type=accumulation_dtype(a.dtype))


def _add_bias(z: Array, b) -> Array:
  return z if b is None else z + b.astype(z.dtype)


def project_input(params: CellParams, x: Array) -> Array:
  """Returns ``x @ w_ih + b_ih``: ``[..., G*H]`` from ``x: [..., F]``."""
  return _add_bias(_matmul(x, params.w_ih), params.b_ih)


def _recurrent_sum(params: CellParams, h: Array) -> Array:
  return _add_bias(_matmul(h, params.w_hh), params.b_hh)


def _elman(activation: Callable[[Array], Array]):
  def recurrence(params: CellParams, carry: Array, gx: Array) -> tuple[Array, Array]:
    h = activation(gx + _recurrent_sum(params, carry)).astype(carry.dtype)
    return h, h

  return recurrence


def lstm_recurrence(params: CellParams, carry: LSTMState, gx: Array) -> tuple[LSTMState, Array]:
  """Returns the next ``LSTMState`` and output ``h: [..., H_out]`` of one step.

  ``gx: [..., 4H]`` is the projected input; gates are ``i, f, g, o``.
  """
  z = gx + _recurrent_sum(params, carry.h)
  i, f, g, o = jnp.split(z, 4, axis=-1)
  c = jax.nn.sigmoid(f) * carry.c.astype(z.dtype) + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  if params.w_hr is not None:
    h = _matmul(h.astype(carry.h.dtype), params.w_hr)
  h = h.astype(carry.h.dtype)
  return LSTMState(h, c.astype(carry.c.dtype)), h


def gru_recurrence(params: CellParams, carry: Array, gx: Array) -> tuple[Array, Array]:
  """Returns the next hidden state and output ``[..., H]`` of one GRU step.

  ``gx: [..., 3H]`` is the projected input; gates are ``r, z, n`` with the reset
  applied after the recurrent matmul, as in PyTorch:
  ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``.
  """
  gh = _recurrent_sum(params, carry)
  xr, xz, xn = jnp.split(gx, 3, axis=-1)
  hr, hz, hn = jnp.split(gh, 3, axis=-1)
  r = jax.nn.sigmoid(xr + hr)
  z = jax.nn.sigmoid(xz + hz)
  n = jnp.tanh(xn + r * hn)
  h = ((1.0 - z) * n + z * carry.astype(z.dtype)).astype(carry.dtype)
  return h, h


def rnn_tanh_cell(params: CellParams, carry: Array, x: Array) -> tuple[Array, Array]:
  """Returns ``(h', h')`` of one Elman step, ``h' = tanh(x w_ih + b_ih + h w_hh + b_hh)``.

  Args:
    params: ``w_ih [F, H]``, ``w_hh [H, H]``, optional ``b_ih``, ``b_hh [H]``.
    carry: ``h: [..., H]``.
    x: ``[..., F]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxrnn import CellParams, rnn_tanh_cell
    >>> params = CellParams(w_ih=jnp.ones((3, 2)), w_hh=jnp.zeros((2, 2)))
    >>> h, y = rnn_tanh_cell(params, jnp.zeros(2), jnp.full(3, 0.1))
    >>> h.round(4)
    Array([0.2913, 0.2913], dtype=float32)
  """
  return _tanh_recurrence(params, carry, project_input(params, x))


def rnn_relu_cell(params: CellParams, carry: Array, x: Array) -> tuple[Array, Array]:
  """Returns ``(h', h')`` of one Elman step with ``relu`` instead of ``tanh``.

  Shapes as in :func:`rnn_tanh_cell`.
  """
  return _relu_recurrence(params, carry, project_input(params, x))


def lstm_cell(params: CellParams, carry: LSTMState, x: Array) -> tuple[LSTMState, Array]:
  """Returns ``(LSTMState(h', c'), h')`` of one LSTM step (PyTorch's equations).

  Args:
    params: ``w_ih [F, 4H]``, ``w_hh [H_out, 4H]``, optional ``b_ih``, ``b_hh
      [4H]``, optional projection ``w_hr [H, P]``; gates ``i, f, g, o``.
    carry: ``LSTMState(h: [..., H_out], c: [..., H])``.
    x: ``[..., F]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxrnn import CellParams, LSTMState, lstm_cell
    >>> params = CellParams(w_ih=jnp.zeros((3, 8)), w_hh=jnp.zeros((2, 8)))
    >>> state = LSTMState(h=jnp.zeros(2), c=jnp.ones(2))
    >>> new_state, y = lstm_cell(params, state, jnp.ones(3))
    >>> new_state.c  # all gates at sigmoid(0) = 0.5, g = tanh(0) = 0
    Array([0.5, 0.5], dtype=float32)
  """
  return lstm_recurrence(params, carry, project_input(params, x))


def gru_cell(params: CellParams, carry: Array, x: Array) -> tuple[Array, Array]:
  """Returns ``(h', h')`` of one GRU step (PyTorch's equations, gates ``r, z, n``).

  Args:
    params: ``w_ih [F, 3H]``, ``w_hh [H, 3H]``, optional ``b_ih``, ``b_hh [3H]``.
    carry: ``h: [..., H]``.
    x: ``[..., F]``.
  """
  return gru_recurrence(params, carry, project_input(params, x))


@dataclasses.dataclass(frozen=True)
class CellKind:
  """What the scan driver and the layers need to know about a cell.

  Attributes:
    name: ``'rnn_tanh'``, ``'rnn_relu'``, ``'lstm'`` or ``'gru'``.
    num_gates: ``G``, the number of ``H``-wide blocks in ``w_ih`` and ``w_hh``.
    recurrence: ``(params, carry, gx) -> (new_carry, y)`` given the projected
      input ``gx = project_input(params, x)``.
  """

  name: str
  num_gates: int
  recurrence: Callable[[CellParams, Carry, Array], tuple[Carry, Array]]

  @property
  def has_cell_state(self) -> bool:
    """Whether the carry is an ``LSTMState`` rather than a single array."""
    return self.name == 'lstm'


_tanh_recurrence = _elman(jnp.tanh)
_relu_recurrence = _elman(jax.nn.relu)

CELL_KINDS = {
  k.name: k
  for k in (
    CellKind('rnn_tanh', 1, _tanh_recurrence),
    CellKind('rnn_relu', 1, _relu_recurrence),
    CellKind('lstm', 4, lstm_recurrence),
    CellKind('gru', 3, gru_recurrence),
  )
}
