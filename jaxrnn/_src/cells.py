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


def upcast(tree):
  """Returns ``tree`` with floating leaves in (at least) float32, their ``accumulation_dtype``."""
  return jax.tree.map(
    lambda a: a.astype(accumulation_dtype(a.dtype)) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
  )


def matmul(a: Array, b: Array) -> Array:
  """Returns ``a @ b`` accumulated in at least float32."""
  return jnp.matmul(a, b, preferred_element_type=accumulation_dtype(a.dtype))


def _add_bias(z: Array, b) -> Array:
  return z if b is None else z + b.astype(z.dtype)


def project_input(params: CellParams, x: Array) -> Array:
  """Returns ``x @ w_ih + b_ih``: ``[..., G*H]`` from ``x: [..., F]``."""
  return _add_bias(matmul(x, params.w_ih), params.b_ih)


def recurrent_sum(params: CellParams, h: Array) -> Array:
  """Returns ``h @ w_hh + b_hh``: ``[..., G*H]`` from ``h: [..., H_out]``."""
  return _add_bias(matmul(h, params.w_hh), params.b_hh)


def _gate_blocks(z, num_gates: int) -> list:
  """Returns the gate blocks ``[..., H]`` of ``z: [..., G*H]``, or ``z`` itself when it is already
  the list of blocks (the Pallas kernels, ``pallas_loop.py``: Triton cannot split an array)."""
  if isinstance(z, (list, tuple)):
    return list(z)
  return [z] if num_gates == 1 else jnp.split(z, num_gates, axis=-1)


def _joined(blocks: list, blocked: bool):
  """Returns the gate blocks as one ``[..., G*H]`` array, or as they are when ``blocked``."""
  return blocks if blocked else jnp.concatenate(blocks, -1)


def _elman_pointwise(activation: Callable[[Array], Array]):
  def pointwise(carry: Array, z: Array) -> tuple[Array, Array]:
    (z,) = _gate_blocks(z, 1)
    h = activation(z).astype(carry.dtype)
    return h, h

  return pointwise


def _elman_linearization(derivative: Callable[[Array], Array]):
  def linearize(carry: Array, z: Array, valid: Array) -> tuple[Array, Array]:
    keep = 1.0 - valid.astype(z.dtype)
    return (1.0 - keep) * derivative(z), keep

  return linearize


def _elman_pullback(coefficients, d_carry: Array, d_y: Array, blocked: bool = False):
  slope, keep = coefficients
  d_h = d_carry + d_y
  d_z = [d_h * slope] if blocked else d_h * slope
  return keep * d_h, d_z, d_z


def _elman(pointwise):
  def recurrence(params: CellParams, carry: Array, gx: Array) -> tuple[Array, Array]:
    return pointwise(carry, gx + recurrent_sum(params, carry))

  return recurrence


def _lstm_pointwise(carry: LSTMState, z: Array) -> tuple[LSTMState, Array]:
  """Returns the next ``LSTMState`` and ``h`` from the gate pre-activations ``z: [..., 4H]``."""
  c, h = _lstm_gates(carry, z)
  h = h.astype(carry.h.dtype)
  return LSTMState(h, c.astype(carry.c.dtype)), h


def _lstm_gates(carry: LSTMState, z: Array) -> tuple[Array, Array]:
  i, f, g, o = _lstm_activations(z)
  c = f * carry.c.astype(i.dtype) + i * g
  return c, o * jnp.tanh(c)


def _lstm_activations(z: Array) -> tuple[Array, Array, Array, Array]:
  """Returns the gates ``i, f, g, o`` from their pre-activations ``z: [..., 4H]`` (or its 4 blocks)."""
  zi, zf, zg, zo = _gate_blocks(z, 4)
  return jax.nn.sigmoid(zi), jax.nn.sigmoid(zf), jnp.tanh(zg), jax.nn.sigmoid(zo)


def _lstm_linearize(carry: LSTMState, z: Array, valid: Array) -> tuple[Array, ...]:
  """Returns the coefficients of the LSTM step's gradient, see ``CellKind``.

  ``(k_i, k_f, k_g, k_o, to_c, keep_c)``, each ``[..., H]``, and ``keep_h [..., 1]``:
  with ``d_h = d_h' + d_y`` and ``d_c = d_c' + d_h * to_c``, the gate
  pre-activations' gradient is ``[d_c * k_i, d_c * k_f, d_c * k_g, d_h * k_o]``,
  ``d_c_prev = d_c * keep_c`` and ``d_h_prev = keep_h * d_h`` plus the matmul
  with ``w_hh``. Padded steps (``valid`` False) pass both gradients through.
  """
  i, f, g, o = _lstm_activations(z)
  c_prev = carry.c.astype(z.dtype)
  tanh_c = jnp.tanh(f * c_prev + i * g)
  m = valid.astype(z.dtype)
  to_gates = (g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o))
  return (*(m * k for k in to_gates), m * o * (1 - tanh_c * tanh_c), m * f + (1 - m), 1 - m)


def _lstm_pullback(coefficients, d_carry: LSTMState, d_y: Array, blocked: bool = False):
  k_i, k_f, k_g, k_o, to_c, keep_c, keep_h = coefficients
  d_h = d_carry.h + d_y
  d_c = d_carry.c + d_h * to_c
  d_z = _joined([d_c * k_i, d_c * k_f, d_c * k_g, d_h * k_o], blocked)
  return LSTMState(keep_h * d_h, d_c * keep_c), d_z, d_z


def lstm_recurrence(params: CellParams, carry: LSTMState, gx: Array) -> tuple[LSTMState, Array]:
  """Returns the next ``LSTMState`` and output ``h: [..., H_out]`` of one step.

  ``gx: [..., 4H]`` is the projected input; gates are ``i, f, g, o``.
  """
  z = gx + recurrent_sum(params, carry.h)
  if params.w_hr is None:
    return _lstm_pointwise(carry, z)
  c, h = _lstm_gates(carry, z)
  h = matmul(h.astype(carry.h.dtype), params.w_hr).astype(carry.h.dtype)
  return LSTMState(h, c.astype(carry.c.dtype)), h


def _gru_pointwise(carry: Array, gx: Array, gh: Array) -> tuple[Array, Array]:
  _, z, n, _ = _gru_gates(gx, gh)
  h = ((1.0 - z) * n + z * carry.astype(z.dtype)).astype(carry.dtype)
  return h, h


def _gru_gates(gx: Array, gh: Array) -> tuple[Array, Array, Array, Array]:
  """Returns ``r, z, n`` and the recurrent ``n`` block ``hn`` from the two projections."""
  xr, xz, xn = _gate_blocks(gx, 3)
  hr, hz, hn = _gate_blocks(gh, 3)
  r = jax.nn.sigmoid(xr + hr)
  z = jax.nn.sigmoid(xz + hz)
  return r, z, jnp.tanh(xn + r * hn), hn


def _gru_linearize(carry: Array, gx: Array, gh: Array, valid: Array) -> tuple[Array, ...]:
  """Returns the coefficients of the GRU step's gradient, see ``CellKind``.

  ``(k_r, k_z, k_n, k_hn, keep_h)``, each ``[..., H]``: with ``d_h = d_h' + d_y``,
  ``d_gx = [k_r, k_z, k_n] * d_h``, ``d_gh = [k_r, k_z, k_hn] * d_h`` and
  ``d_h_prev = keep_h * d_h`` plus the matmul with ``w_hh``. Padded steps
  (``valid`` False) pass the gradient through.
  """
  r, z, n, hn = _gru_gates(gx, gh)
  m = valid.astype(z.dtype)
  k_n = m * (1 - z) * (1 - n * n)
  return k_n * hn * r * (1 - r), m * (carry.astype(z.dtype) - n) * z * (1 - z), k_n, k_n * r, m * z + (1 - m)


def _gru_pullback(coefficients, d_carry: Array, d_y: Array, blocked: bool = False):
  k_r, k_z, k_n, k_hn, keep_h = coefficients
  d_h = d_carry + d_y
  d_r, d_z = d_h * k_r, d_h * k_z
  d_gx = _joined([d_r, d_z, d_h * k_n], blocked)
  d_gh = _joined([d_r, d_z, d_h * k_hn], blocked)
  return keep_h * d_h, d_gx, d_gh


def gru_recurrence(params: CellParams, carry: Array, gx: Array) -> tuple[Array, Array]:
  """Returns the next hidden state and output ``[..., H]`` of one GRU step.

  ``gx: [..., 3H]`` is the projected input; gates are ``r, z, n`` with the reset
  applied after the recurrent matmul, as in PyTorch:
  ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``.
  """
  return _gru_pointwise(carry, gx, recurrent_sum(params, carry))


def gru_reset_before_recurrence(params: CellParams, carry: Array, gx: Array) -> tuple[Array, Array]:
  """Returns the next hidden state and output ``[..., H]`` of a GRU step with the reset *before* the matmul.

  Keras 2's and TensorFlow 1's default GRU (Keras' ``reset_after=False``,
  ONNX's ``linear_before_reset=0``): ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``;
  ``r`` and ``z`` as in ``gru_recurrence``. The ``n`` block's
  matmul waits for ``r``, so a step does two recurrent matmuls.
  """
  w_hh, b_hh = params.w_hh, params.b_hh
  hidden = w_hh.shape[-1] // 3
  b_rz, b_n = (None, None) if b_hh is None else (b_hh[: 2 * hidden], b_hh[2 * hidden :])
  hr, hz = jnp.split(_add_bias(matmul(carry, w_hh[:, : 2 * hidden]), b_rz), 2, axis=-1)
  xr, xz, xn = jnp.split(gx, 3, axis=-1)
  r = jax.nn.sigmoid(xr + hr)
  z = jax.nn.sigmoid(xz + hz)
  reset = (r * carry.astype(r.dtype)).astype(carry.dtype)
  n = jnp.tanh(xn + _add_bias(matmul(reset, w_hh[:, 2 * hidden :]), b_n))
  h = ((1.0 - z) * n + z * carry.astype(z.dtype)).astype(carry.dtype)
  return h, h


def check_step_args(params: CellParams, h: Array, x: Array, c: Array | None = None) -> None:
  """Names a mismatched argument before ``dot_general`` or broadcasting fails on it (trace time)."""
  x_shape, h_shape = tuple(jnp.shape(x)), tuple(jnp.shape(h))
  if x_shape[-1:] != params.w_ih.shape[:1]:
    raise ValueError(
      f'`x` must have shape [..., F] with F = {params.w_ih.shape[0]} (w_ih is {list(params.w_ih.shape)}), got {x_shape}.'
    )
  if h_shape[-1:] != params.w_hh.shape[:1] or h_shape[:-1] != x_shape[:-1]:
    raise ValueError(
      f'`carry` (h) must have shape {list(x_shape[:-1]) + [params.w_hh.shape[0]]} (the batch shape of `x`, '
      f'then H_out = w_hh.shape[0]), got {h_shape}.'
    )
  if c is not None:
    hidden = params.w_hh.shape[1] // 4
    if tuple(jnp.shape(c)) != x_shape[:-1] + (hidden,):
      raise ValueError(
        f'`carry.c` must have shape {list(x_shape[:-1]) + [hidden]}, got {tuple(jnp.shape(c))}.'
      )


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
  check_step_args(params, carry, x)
  return _tanh_recurrence(params, carry, project_input(params, x))


def rnn_relu_cell(params: CellParams, carry: Array, x: Array) -> tuple[Array, Array]:
  """Returns ``(h', h')`` of one Elman step with ``relu`` instead of ``tanh``.

  Shapes as in [`rnn_tanh_cell`][jaxrnn.rnn_tanh_cell].
  """
  check_step_args(params, carry, x)
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
  carry = LSTMState(*carry)
  check_step_args(params, carry.h, x, carry.c)
  return lstm_recurrence(params, carry, project_input(params, x))


def gru_cell(params: CellParams, carry: Array, x: Array) -> tuple[Array, Array]:
  """Returns ``(h', h')`` of one GRU step (PyTorch's equations, gates ``r, z, n``).

  Args:
    params: ``w_ih [F, 3H]``, ``w_hh [H, 3H]``, optional ``b_ih``, ``b_hh [3H]``.
    carry: ``h: [..., H]``.
    x: ``[..., F]``.
  """
  check_step_args(params, carry, x)
  return gru_recurrence(params, carry, project_input(params, x))


@dataclasses.dataclass(frozen=True)
class CellKind:
  """What the scan driver and the layers need to know about a cell.

  Attributes:
    name: ``'rnn_tanh'``, ``'rnn_relu'``, ``'lstm'`` or ``'gru'``.
    num_gates: ``G``, the number of ``H``-wide blocks in ``w_ih`` and ``w_hh``.
    recurrence: ``(params, carry, gx) -> (new_carry, y)`` given the projected
      input ``gx = project_input(params, x)``.
    pointwise: the recurrence after its matmuls, without parameters (for the
      fused backward pass, ``fused.py``): ``(carry, gx + gh)`` when ``additive``,
      else ``(carry, gx, gh)``, with ``gh = hidden(carry) @ w_hh + b_hh``; each
      ``[..., G*H]``, or the list of its ``G`` gate blocks (the Pallas kernels). LSTM
      with a projection (``w_hr``) has a matmul after the gates and no
      parameter-free pointwise part.
    additive: whether the pointwise part reads only ``gx + gh``.
    linearize: ``(carry, *pointwise_inputs, valid) -> coefficients``, run by
      the forward step of the fused loop and stored (``valid: [..., 1]``, False
      at padded steps). The pointwise part's gradient is linear in the carry's
      and the output's cotangents; these are its coefficients, so the
      backward loop does no transcendental functions.
    pullback: ``(coefficients, d_carry, d_y, blocked=False) -> (d_carry_prev,
      d_gx, d_gh)`` for one step, except ``d_gh @ w_hh.T``, which the driver
      adds to ``d_carry_prev``'s hidden state; ``blocked`` returns ``d_gx`` and
      ``d_gh`` as lists of gate blocks.
  """

  name: str
  num_gates: int
  recurrence: Callable[[CellParams, Carry, Array], tuple[Carry, Array]]
  pointwise: Callable[..., tuple[Carry, Array]]
  additive: bool
  linearize: Callable[..., tuple[Array, ...]]
  pullback: Callable[..., tuple[Carry, Array, Array]]

  def hidden(self, carry: Carry) -> Array:
    """Returns the part of the carry that multiplies ``w_hh``."""
    return carry.h if self.has_cell_state else carry

  @property
  def has_cell_state(self) -> bool:
    """Whether the carry is an ``LSTMState`` rather than a single array."""
    return self.name == 'lstm'


_tanh_pointwise = _elman_pointwise(jnp.tanh)
_relu_pointwise = _elman_pointwise(jax.nn.relu)
_tanh_recurrence = _elman(_tanh_pointwise)
_relu_recurrence = _elman(_relu_pointwise)
_tanh_linearize = _elman_linearization(lambda z: 1 - jnp.tanh(z) ** 2)
_relu_linearize = _elman_linearization(lambda z: (z > 0).astype(z.dtype))

CELL_KINDS = {
  k.name: k
  for k in (
    CellKind('rnn_tanh', 1, _tanh_recurrence, _tanh_pointwise, True, _tanh_linearize, _elman_pullback),
    CellKind('rnn_relu', 1, _relu_recurrence, _relu_pointwise, True, _relu_linearize, _elman_pullback),
    CellKind('lstm', 4, lstm_recurrence, _lstm_pointwise, True, _lstm_linearize, _lstm_pullback),
    CellKind('gru', 3, gru_recurrence, _gru_pointwise, False, _gru_linearize, _gru_pullback),
  )
}
