"""The parallel driver (SPEC §12): cells linear in their carry, run with ``jax.lax.associative_scan``.

A cell with the ``linear_form`` hook has a recurrence ``h_t = a_t * h_{t-1} + b_t``
whose ``a_t, b_t`` (``[*batch, N]``, real or complex) depend on ``x_t`` alone. The
whole sequence is then one associative scan of depth ``log T`` over the pairs
``(a_t, b_t)``, composed as affine maps: ``(a1, b1)`` then ``(a2, b2)`` is
``(a2 * a1, a2 * b1 + b2)``. Every guarantee of the sequential loop holds, and
nothing is flipped:

- a padded step is the identity ``(1, 0)``: it keeps the state and outputs zero;
- the backward direction is the same scan run from the end
  (``associative_scan(..., reverse=True)``), so with right padding it starts at
  each sequence's own last element;
- packed sequences (SPEC §11) make the scan *segmented*: a step that starts a
  sequence (in the scan's order) cuts the composition there, so each state is
  ``A_t * h_start + B_t`` with ``(A_t, B_t)`` composed from that sequence's start
  and ``h_start`` its initial carry.

States are read off once after the scan (``h = A * h0 + B``), so the initial
carry enters linearly and its gradient is exact even when it is zero. The
scan composes in (at least) float32.

Cells with ``log_space`` (minGRU, minLSTM: positive states) provide
``log_linear_form -> (log a, log b)``; the scan then composes ``log A`` by sums
and ``log B`` by ``logaddexp``, which stays finite where products of many ``a``
underflow, and the states are ``exp(log A) * h0 + exp(log B)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn._src.cells import upcast
from jaxrnn._src.segments import Segments
from jaxrnn._src.segments import segment_steps
from jaxrnn._src.segments import select_steps
from jaxrnn._src.segments import slots
from jaxrnn._src.segments import to_leaf
from jaxrnn._src.types import Array
from jaxrnn._src.types import Carry


def default_scan_mode(backend: str | None = None) -> str:
  """Returns the ``scan_mode`` that ``'auto'`` resolves to for cells with ``linear_form``.

  On XLA:CPU (2-core AMD EPYC, jax 0.10.2, B=16, H=256; benchmarks/README.md,
  "Parallel-scan cells") the sequential loop trained minGRU faster at every
  length: forward+backward 0.61-0.94x as fast associative for T = 8..512, and
  809 vs 1159 ms at T=4096 (GRU: 1388 ms); the scan also compiled 3-10x longer.
  Elsewhere (GPU, TPU: unmeasured here) the associative scan, the reason these
  cells exist (depth ``log T``).
  """
  return 'sequential' if (backend or jax.default_backend()) == 'cpu' else 'associative'


def is_linear(cell) -> bool:
  """Whether ``cell`` has the ``linear_form`` hook (SPEC §12)."""
  return hasattr(cell, 'linear_form')


def associative_scan_layer(
  cell,
  params,
  carry: Carry,
  xs: Array,
  seq_lengths: Array | None = None,
  *,
  segment_ids: Array | None = None,
  num_segments: int | None = None,
  reverse: bool = False,
  carry_mask: Array | None = None,
) -> tuple[Carry, Array]:
  """Returns ``(final_carry, ys)`` of a linear-form cell over axis 0 of ``xs``, as ``scan_layer`` does.

  Args:
    cell: a cell with ``linear_form(params, x) -> (a, b)`` and optionally
      ``readout(params, h, x) -> y`` (``y = h`` without it).
    params: the cell's parameters.
    carry: ``h: [B, N]``; packed, ``[B, S, N]`` one per sequence or ``[B, N]``
      shared with ``num_segments``.
    xs: ``[T, B, F]`` time-major inputs.
    seq_lengths: ``[B]`` integers in ``[0, T]``, or None.
    segment_ids: ``[T, B]`` packed sequences instead of ``seq_lengths``.
    num_segments: ``S`` when a packed ``carry`` is shared by a row's sequences.
    reverse: run from the last step to the first (the backward direction).
    carry_mask: ``[B, N]`` multiplies the state each step reads (recurrent
      dropout: ``a * mask``), or None.

  Returns:
    final_carry: like ``scan_layer``'s (packed: ``[B, S, N]``).
    ys: ``[T, B, H_out]``, zeros at padded steps.
  """
  num_steps = xs.shape[0]
  ts = jnp.arange(num_steps)[:, None]
  segments = None if segment_ids is None else segment_steps(segment_ids, reverse)
  if segments is not None:
    valid = segments.valid
  elif seq_lengths is not None:
    valid = ts < seq_lengths[None, :]
  else:
    valid = None
  log_space = bool(getattr(cell, 'log_space', False)) and hasattr(cell, 'log_linear_form')
  if log_space:
    a, b = upcast(cell.log_linear_form(params, xs))
    if carry_mask is not None:
      a = jnp.where(carry_mask > 0, a + jnp.log(jnp.where(carry_mask > 0, carry_mask, 1)), -jnp.inf)
    identity = (0.0, -jnp.inf)
  else:
    a, b = upcast(cell.linear_form(params, xs))
    if carry_mask is not None:
      a = a * carry_mask.astype(a.dtype)
    identity = (1, 0)
  if valid is not None:
    a = jnp.where(to_leaf(valid, a), a, jnp.asarray(identity[0], a.dtype))
    b = jnp.where(to_leaf(valid, b), b, jnp.asarray(identity[1], b.dtype))

  compose = _compose_log if log_space else _compose
  if num_steps == 0:  # an empty time axis: no step, the initial carry is final
    big_a, big_b = a, b
  elif segments is None:
    big_a, big_b = jax.lax.associative_scan(compose, (a, b), reverse=reverse)
  else:  # segmented: a sequence's first step (in the scan's order) cuts the composition
    starts = to_leaf(segments.start, a)
    big_a, big_b, _ = jax.lax.associative_scan(_segmented(compose), (a, b, starts), reverse=reverse)
  if log_space:
    big_a, big_b = jnp.exp(big_a), jnp.exp(big_b)

  h0 = _initial_per_step(carry, segments, num_segments)
  hs = (big_a * upcast(h0) + big_b).astype(jax.tree.leaves(carry)[0].dtype)
  ys = cell.readout(params, hs, xs) if hasattr(cell, 'readout') else hs
  if valid is not None:
    ys = jnp.where(to_leaf(valid, ys), ys, jnp.zeros_like(ys))
  if segments is None:
    return (carry if num_steps == 0 else hs[0 if reverse else -1]), ys
  return _record_ends(slots(carry, num_segments, 1), hs, segments), ys


def _compose(first, then):
  """The affine map ``h -> a h + b`` of ``first`` followed by that of ``then``."""
  a1, b1 = first
  a2, b2 = then
  return a2 * a1, a2 * b1 + b2


def _compose_log(first, then):
  """``_compose`` on ``(log a, log b)`` of positive maps."""
  a1, b1 = first
  a2, b2 = then
  return a1 + a2, jnp.logaddexp(b1 + a2, b2)


def _segmented(compose):
  """``compose`` on ``(a, b, start)``: where ``then`` starts a segment, the composition restarts there."""

  def segmented(first, then):
    a, b = compose(first[:2], then[:2])
    a2, b2, start2 = then
    return jnp.where(start2, a2, a), jnp.where(start2, b2, b), first[2] | start2

  return segmented


def _initial_per_step(carry: Array, segments: Segments | None, num_segments: int | None) -> Array:
  """Returns the initial state each step's composition applies to: ``h0 [B, N]`` (broadcast over
  steps), or packed, each step's sequence's own initial carry ``[T, B, N]``."""
  if segments is None or num_segments is not None:
    return carry[None]
  return select_steps(segments.index, carry)


def _record_ends(store: Array, hs: Array, segments: Segments) -> Array:
  """Returns ``store [B, S, N]`` with each sequence's state after its last step (in the scan's order)."""
  num_slots = store.shape[1]
  batch = jnp.arange(store.shape[0])[None, :]
  slot = jnp.where(segments.end, segments.index, num_slots)  # out of range: dropped
  return store.at[batch, slot].set(hs.astype(store.dtype), mode='drop')
