"""Packed sequences (SPEC §11): the reset mask beside the padding mask.

Several sequences share a row, marked by ``segment_ids``: ``0`` is padding, a
positive id one sequence's contiguous run of steps. The loops (``scan.py``,
``fused.py``) read four facts per step and row, precomputed once per direction
as a ``Segments`` of ``[T, *batch]`` arrays:

- ``valid``: the step belongs to a sequence (otherwise padding: carry kept,
  output zero, as for ``seq_lengths``);
- ``start``: it is the first step of its sequence *in the loop's order*, so the
  loop resets the carry to that sequence's initial carry before it;
- ``end``: it is the last, so the loop records the carry after it as that
  sequence's final carry, in a store ``[*batch, S, ...]`` carried through the
  loop (memory ``O(B*S*H)``, no per-step history of carries);
- ``index``: ``id - 1``, the sequence's slot in the store and in the initial
  carries.

For the backward direction the loop runs reversed and ``start`` and ``end``
swap: it resets at each sequence's last element and records after its first.
As with padding, nothing is flipped.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._src.types import Array
from jaxrnn._src.types import Carry


class Segments(NamedTuple):
  """Per-step facts of packed sequences for one loop direction, each ``[T, *batch]``."""

  index: Array  # int32: segment id - 1, the sequence's slot (0 at padding)
  valid: Array  # bool: the step belongs to a sequence (id > 0)
  start: Array  # bool: the sequence's first step in the loop's order (reset before it)
  end: Array  # bool: its last step in the loop's order (record the carry after it)


def segment_steps(segment_ids: Array, reverse: bool) -> Segments:
  """Returns the ``Segments`` of time-major ``segment_ids: [T, *batch]`` for one direction.

  A step starts a sequence when the step before it (in the loop's order) has a
  different id, and ends it when the step after it does; the first and last
  steps of the row are bounded by the row's edges.
  """
  ids = segment_ids
  edge = jnp.full_like(ids[:1], -1)
  differs_before = ids != jnp.concatenate([edge, ids[:-1]])  # t == 0 or ids[t-1] != ids[t]
  differs_after = ids != jnp.concatenate([ids[1:], edge])
  valid = ids > 0
  first, last = (differs_after, differs_before) if reverse else (differs_before, differs_after)
  return Segments(
    index=jnp.maximum(ids - 1, 0).astype(jnp.int32),
    valid=valid,
    start=valid & first,
    end=valid & last,
  )


def _one_hot(slot_index: Array, where: Array, num_slots: int) -> Array:
  """Returns a bool ``[*batch, S]``: True at ``slot_index[b]`` where ``where[b]``."""
  return where[..., None] & (slot_index[..., None] == jnp.arange(num_slots))


def select_slots(slot_index: Array, tree: Carry) -> Carry:
  """Returns ``tree``'s slot ``slot_index[b]`` of every batch element: leaves ``[*batch, S, ...]`` -> ``[*batch, ...]``."""
  axis = slot_index.ndim
  num_slots = jax.tree.leaves(tree)[0].shape[axis]
  hot = _one_hot(slot_index, jnp.ones_like(slot_index, bool), num_slots)
  return jax.tree.map(lambda leaf: jnp.where(to_leaf(hot, leaf), leaf, 0).sum(axis), tree)


def reset(carry: Carry, initial: Carry, step: Segments) -> Carry:
  """Returns the carry a step starts from: its sequence's initial carry where it starts one.

  ``carry``: leaves ``[*batch, ...]``; ``initial``: leaves ``[*batch, S, ...]``
  (one per sequence) or ``[*batch, ...]`` (shared by a row's sequences: no
  per-step select over ``S``); ``step``: one step's ``Segments`` (each ``[*batch]``).
  """

  def one(i, c):
    fresh = i if i.ndim == c.ndim else select_slots(step.index, i)
    return jnp.where(to_leaf(step.start, c), fresh, c)

  return jax.tree.map(one, initial, carry)


def record(store: Carry, carry: Carry, step: Segments) -> Carry:
  """Returns ``store`` (leaves ``[*batch, S, ...]``) with ``carry`` written to the slot of every
  sequence that ends at this step; other slots unchanged."""
  axis = step.index.ndim
  hot = _one_hot(step.index, step.end, jax.tree.leaves(store)[0].shape[axis])
  return jax.tree.map(
    lambda s, c: jnp.where(to_leaf(hot, s), jnp.expand_dims(c, axis).astype(s.dtype), s), store, carry
  )


def add_at_starts(total: Carry, d_carry: Carry, step: Segments) -> Carry:
  """Returns ``total`` plus ``d_carry`` where a sequence starts at this step, in its slot when
  ``total`` has one per sequence (``[*batch, S, ...]``): the gradient of the initial carries (the
  transpose of ``reset``)."""
  axis = step.index.ndim

  def one(t, d):
    if t.ndim == d.ndim:  # shared
      return t + jnp.where(to_leaf(step.start, d), d, 0).astype(t.dtype)
    hot = _one_hot(step.index, step.start, t.shape[axis])
    return t + jnp.where(to_leaf(hot, t), jnp.expand_dims(d, axis).astype(t.dtype), 0)

  return jax.tree.map(one, total, d_carry)


def slots(initial: Carry, num_slots: int | None, batch_ndim: int) -> Carry:
  """Returns ``initial`` with one slot per sequence, leaves ``[*batch, S, ...]``, from a shared
  one (``[*batch, ...]``) or as it is when it has the slots already."""
  if num_slots is None:
    return initial
  return jax.tree.map(
    lambda leaf: jnp.broadcast_to(
      jnp.expand_dims(leaf, batch_ndim), (*leaf.shape[:batch_ndim], num_slots, *leaf.shape[batch_ndim:])
    ),
    initial,
  )


def select_steps(slot_index: Array, tree: Carry) -> Carry:
  """Returns every step's slot of ``tree``: ``slot_index: [T, *batch]``, leaves ``[*batch, S, ...]``
  -> ``[T, *batch, ...]``."""
  return jax.vmap(lambda index: select_slots(index, tree))(slot_index)


def recorded_slots(segments: Segments, num_slots: int) -> Array:
  """Returns a bool ``[*batch, S]``: the slots that ``record`` writes in a loop over ``segments``."""
  batch = jnp.indices(segments.index.shape[1:], sparse=True)
  slot = jnp.where(segments.end, segments.index, num_slots)
  written = jnp.zeros((*segments.index.shape[1:], num_slots), bool)
  return written.at[(*(b[None] for b in batch), slot)].set(True, mode='drop')


def to_leaf(mask: Array, leaf: Array) -> Array:
  """Returns ``mask`` (``[*batch]``) with trailing axes to broadcast against ``leaf`` (``[*batch, ...]``)."""
  return mask.reshape(mask.shape + (1,) * (leaf.ndim - mask.ndim))
