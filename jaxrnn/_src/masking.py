"""Padding masks, padding-aware reversal and explicit layout transposes.

Sequences are right-padded: sequence ``b`` holds valid steps ``0 .. len_b - 1``
and padding after them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from jaxrnn._src.checks import check_seq_lengths
from jaxrnn._src.types import Array


def lengths_to_mask(seq_lengths: Array, max_length: int) -> Array:
  """Returns the validity mask ``[*batch, T]`` (True on valid steps).

  Args:
    seq_lengths: integers ``[*batch]``.
    max_length: ``T``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxrnn import lengths_to_mask
    >>> lengths_to_mask(jnp.array([0, 2, 3]), 3)
    Array([[False, False, False],
           [ True,  True, False],
           [ True,  True,  True]], dtype=bool)
  """
  seq_lengths = jnp.asarray(seq_lengths)
  return jnp.arange(max_length) < seq_lengths[..., None]


def mask_to_lengths(mask: Array) -> Array:
  """Returns ``seq_lengths: [*batch]`` (int32) from a right-padded mask ``[*batch, T]``.

  The mask must be a prefix mask (True then False on each row). A traced mask
  (under jit) cannot be checked: each length is then that of the row's leading
  run of True values, so a step the mask marks as padding is never read as data
  (a left-padded row ``[0, 1, 1]`` gives 0).

  Raises:
    ValueError: a concrete ``mask`` has a row that is not a prefix mask (left
      padding or a gap), naming the row and its values.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jaxrnn import mask_to_lengths
    >>> mask_to_lengths(jnp.array([[1, 1, 0], [1, 1, 1]], dtype=bool))
    Array([2, 3], dtype=int32)
    >>> gaps = jnp.array([[1, 0, 1], [0, 1, 1]], dtype=bool)
    >>> jax.jit(mask_to_lengths)(gaps)  # traced: each row's leading run of True
    Array([1, 0], dtype=int32)
  """
  valid = jnp.asarray(mask, bool)
  lengths = jnp.sum(jnp.cumprod(valid, axis=-1, dtype=jnp.int32), axis=-1, dtype=jnp.int32)
  if not isinstance(valid, jax.core.Tracer):
    values = np.asarray(valid)
    bad = np.argwhere(values.sum(axis=-1) != np.asarray(lengths))
    if bad.size:
      row = tuple(bad[0].tolist())
      raise ValueError(
        f'`mask` {values.shape} must be a prefix mask [*batch, T] (True then False on each row), '
        f'got row {row} = {values[row].tolist()}: its padding would be read as data.'
      )
  return lengths


def reverse_padded(x: Array, seq_lengths: Array | None, *, time_axis: int = 1) -> Array:
  """Returns ``x`` with each sequence's valid prefix reversed, padding left in place.

  Step ``t < len_b`` of sequence ``b`` moves to ``len_b - 1 - t``; padding steps
  stay where they are. Applying it twice gives ``x`` back.

  Args:
    x: ``[*batch, T, ...]`` (``time_axis=len(batch)``); the default
      ``time_axis=1`` is ``[B, T, ...]``; use ``time_axis=0`` for ``[T, B, ...]``.
    seq_lengths: integers ``[*batch]`` in ``[0, T]``, or ``None`` for full
      length (plain flip). Traced lengths (under jit) are clipped to ``[0, T]``,
      as the layers do.

  Raises:
    TypeError: ``seq_lengths`` are not integers.
    ValueError: ``seq_lengths`` do not have the batch shape of ``x``, or
      concrete ``seq_lengths`` lie outside ``[0, T]``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jaxrnn import reverse_padded
    >>> x = jnp.array([[1, 2, 3, 0], [1, 2, 3, 4]])
    >>> reverse_padded(x, jnp.array([3, 4]))
    Array([[3, 2, 1, 0],
           [4, 3, 2, 1]], dtype=int32)
    >>> # traced lengths are clipped to [0, T]: 5 -> 4 and -1 -> 0
    >>> jax.jit(reverse_padded)(x, jnp.array([5, -1]))
    Array([[0, 3, 2, 1],
           [1, 2, 3, 4]], dtype=int32)
  """
  x = jnp.asarray(x)
  time_axis = time_axis % x.ndim
  num_steps = x.shape[time_axis]
  if seq_lengths is None:
    return jnp.flip(x, axis=time_axis)
  batch_ndim = np.ndim(seq_lengths)
  moved = jnp.moveaxis(x, time_axis, batch_ndim)  # [*batch, T, ...]
  seq_lengths = check_seq_lengths(
    seq_lengths,
    moved.shape[:batch_ndim],
    num_steps,
    x.shape,
    time_major=False,
    arg='x',
    layout=f'[*batch, ...] with T on axis {time_axis}',
  )
  t = jnp.arange(num_steps)
  # index[..., t] for batch axes first: [*batch, T]
  lengths = seq_lengths[..., None]
  index = jnp.where(t < lengths, lengths - 1 - t, t)
  index = index.reshape(index.shape + (1,) * (moved.ndim - index.ndim))
  out = jnp.take_along_axis(moved, index, axis=seq_lengths.ndim)
  return jnp.moveaxis(out, seq_lengths.ndim, time_axis)


def to_time_major(x: Array) -> Array:
  """Returns ``[T, *batch, F]`` from batch-major ``x: [*batch, T, F]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxrnn import to_time_major
    >>> to_time_major(jnp.zeros((4, 2, 10, 3))).shape  # batch axes (4, 2), T=10
    (10, 4, 2, 3)
  """
  return jnp.moveaxis(x, -2, 0)


def to_batch_major(x: Array) -> Array:
  """Returns ``[*batch, T, F]`` from time-major ``x: [T, *batch, F]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxrnn import to_batch_major
    >>> to_batch_major(jnp.zeros((10, 4, 2, 3))).shape
    (4, 2, 10, 3)
  """
  return jnp.moveaxis(x, 0, -2)


def pad_sequences(
  sequences: Sequence[Any],
  max_length: int | None = None,
  *,
  padding_value: float = 0,
  dtype: DTypeLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Returns ``(batch [B, T, ...], seq_lengths [B])``: right-padded sequences and their lengths.

  Host-side (NumPy) batching of variable-length sequences for a layer call
  ``layer(batch, seq_lengths)``; like ``torch.nn.utils.rnn.pad_sequence`` but
  batch-major and with the lengths. Use ``to_time_major`` for ``[T, B, ...]``.

  Args:
    sequences: ``B`` arrays (or lists) ``[len_b, ...]`` with equal trailing shapes.
    max_length: ``T``; ``None`` is the longest length. Longer sequences raise.
    padding_value: value of the padded steps.
    dtype: of the batch; ``None`` infers it from the sequences.

  Returns:
    batch: ``[B, T, ...]``, the sequences right-padded with ``padding_value``.
    seq_lengths: ``[B]`` int32, the length of each sequence.

  Examples:
    >>> from jaxrnn import pad_sequences
    >>> batch, lengths = pad_sequences([[1, 2, 3], [4], []])
    >>> batch
    array([[1, 2, 3],
           [4, 0, 0],
           [0, 0, 0]])
    >>> lengths
    array([3, 1, 0], dtype=int32)
  """
  arrays = [np.asarray(s) for s in sequences]
  if not arrays:
    raise ValueError('`sequences` is empty: need at least one sequence.')
  lengths = np.array([len(a) for a in arrays], np.int32)
  trailing = {a.shape[1:] for a in arrays if len(a)} or {()}
  if len(trailing) > 1:
    raise ValueError(f'`sequences` must share their trailing shape [len, ...], got {sorted(trailing)}.')
  (trailing,) = trailing
  num_steps = int(lengths.max()) if max_length is None else max_length
  if lengths.max() > num_steps:
    raise ValueError(f'`max_length` is {num_steps} but a sequence has length {lengths.max()}.')
  if dtype is None:
    dtype = np.result_type(*[a.dtype for a in arrays if len(a)]) if lengths.any() else np.float32
  batch = np.full((len(arrays), num_steps, *trailing), padding_value, dtype)
  for row, a in zip(batch, arrays, strict=True):
    row[: len(a)] = a
  return batch, lengths
