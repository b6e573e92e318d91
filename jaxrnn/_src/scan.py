"""The one time loop: ``jax.lax.scan`` with padding masks and masked reversal.

Everything that iterates over time goes through :func:`scan_layer`.

Padding (SPEC §3): a step ``t >= seq_lengths[b]`` keeps sequence ``b``'s carry
unchanged and emits zeros. Right padding plus a *reversed* scan under the same
mask is exactly the padding-aware reversal: the padded steps come first in
reverse order and leave the initial carry untouched, so the backward direction
starts at ``x[len_b - 1]``, ends after ``x[0]``, and writes every output at its
original position. Neither inputs nor outputs need flipping, and the final carry
is the scan's carry (no per-step stack of carries, O(1) extra memory).

The input projection ``x @ w_ih + b_ih`` can run inside the step or, hoisted,
as one matmul over all steps before the loop (``hoist_input_projection``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxrnn._src.cells import project_input
from jaxrnn._src.types import Array
from jaxrnn._src.types import Carry
from jaxrnn._src.types import CellParams

Recurrence = Callable[[CellParams, Carry, Array], tuple[Carry, Array]]


def default_hoist_input_projection(backend: str | None = None) -> bool:
  """Returns whether the input projection is hoisted out of the loop by default.

  On GPU/TPU one big matmul before the loop is the standard win. On XLA:CPU
  (jax 0.10) the loop fusion that reads a slice of the precomputed projection
  is emitted without vectorisation, which made the hoisted form slower
  (benchmarks/README.md), so CPU keeps the projection inside the step.
  """
  return (backend or jax.default_backend()) != 'cpu'


def _broadcast_to_leaf(valid: Array, leaf: Array) -> Array:
  return valid.reshape(valid.shape + (1,) * (leaf.ndim - valid.ndim))


def scan_layer(
  recurrence: Recurrence,
  params: CellParams,
  carry: Carry,
  xs: Array,
  seq_lengths: Array | None = None,
  *,
  reverse: bool = False,
  input_projection: Callable[[CellParams, Array], Array] | None = project_input,
  hoist_input_projection: bool = False,
  unroll: int = 1,
  remat: bool = False,
) -> tuple[Carry, Array]:
  """Returns ``(final_carry, ys)`` of one cell run over axis 0 of ``xs``.

  Args:
    recurrence: ``(params, carry, gx) -> (new_carry, y)``, e.g.
      ``jaxrnn.lstm_cell`` with ``input_projection=None`` or a cell's
      recurrence with the default ``input_projection``.
    params: the cell's parameters (any pytree).
    carry: pytree with leaves ``[*batch, ...]``.
    xs: ``[T, *batch, F]`` time-major inputs.
    seq_lengths: integers ``[*batch]`` in ``[0, T]``, or ``None`` (all valid).
    reverse: read ``x[len-1], ..., x[0]`` (padding-aware backward direction).
    input_projection: ``(params, x) -> gx`` applied to the inputs before
      ``recurrence``; ``None`` passes ``x`` through unchanged.
    hoist_input_projection: compute ``input_projection`` for all ``T`` steps as
      one matmul before the loop instead of inside each step.
    unroll: steps per loop iteration (``jax.lax.scan``'s ``unroll``).
    remat: recompute each step's intermediates in the backward pass
      (``jax.checkpoint``), storing only the carries.

  Returns:
    ``final_carry`` (the state after each sequence's last valid step) and
    ``ys: [T, *batch, H_out]`` with zeros at padded steps.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxrnn import CellParams, scan_layer, rnn_relu_cell
    >>> params = CellParams(w_ih=jnp.ones((1, 1)), w_hh=jnp.ones((1, 1)))
    >>> xs = jnp.ones((4, 2, 1))  # T=4, B=2, F=1: a running count
    >>> h, ys = scan_layer(rnn_relu_cell, params, jnp.zeros((2, 1)), xs,
    ...                    jnp.array([2, 4]), input_projection=None)
    >>> ys[..., 0].T
    Array([[1., 2., 0., 0.],
           [1., 2., 3., 4.]], dtype=float32)
    >>> h[:, 0]
    Array([2., 4.], dtype=float32)
  """
  project = input_projection
  if project is not None and hoist_input_projection:
    xs = project(params, xs)
    project = None

  def step(carry, x):
    gx = x if project is None else project(params, x)
    return recurrence(params, carry, gx)

  if remat:
    step = jax.checkpoint(step)

  if seq_lengths is None:
    body = step
    scanned = xs
  else:
    seq_lengths = jnp.asarray(seq_lengths)

    def body(carry, inputs):
      t, x = inputs
      new_carry, y = step(carry, x)
      valid = t < seq_lengths
      carry = jax.tree.map(
        lambda new, old: jnp.where(_broadcast_to_leaf(valid, new), new, old),
        new_carry,
        carry,
      )
      return carry, jnp.where(_broadcast_to_leaf(valid, y), y, jnp.zeros_like(y))

    scanned = (jnp.arange(xs.shape[0]), xs)

  return jax.lax.scan(body, carry, scanned, reverse=reverse, unroll=unroll)
