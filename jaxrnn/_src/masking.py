"""Padding masks, padding-aware reversal, explicit layout transposes and host-side batching.

Sequences are right-padded: sequence ``b`` holds valid steps ``0 .. len_b - 1``
and padding after them. Packed batches (SPEC §11) hold several sequences a row,
told apart by ``segment_ids`` (0 on padding).
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


def _check_sequences(sequences: Sequence[Any]) -> tuple[list[np.ndarray], np.ndarray, tuple[int, ...], Any]:
  """Returns ``(arrays, lengths [N] int32, trailing shape, inferred dtype)`` of ragged sequences.

  Length-0 sequences (e.g. ``[]``) take the trailing shape of the others; when
  all are empty, that of those with one (``np.zeros((0, F))``), else ``()``.

  Raises:
    ValueError: ``sequences`` is empty or the non-empty ones differ in trailing shape.
  """
  arrays = [np.asarray(s) for s in sequences]
  if not arrays:
    raise ValueError('`sequences` is empty: need at least one sequence.')
  lengths = np.array([len(a) for a in arrays], np.int32)
  trailing = {a.shape[1:] for a in arrays if len(a)} or {a.shape[1:] for a in arrays if a.ndim > 1} or {()}
  if len(trailing) > 1:
    raise ValueError(f'`sequences` must share their trailing shape [len, ...], got {sorted(trailing)}.')
  (trailing,) = trailing
  arrays = [a if len(a) else a.reshape(0, *trailing) for a in arrays]
  dtype = np.result_type(*[a.dtype for a in arrays if len(a)]) if lengths.any() else np.float32
  return arrays, lengths, trailing, dtype


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
  arrays, lengths, trailing, inferred = _check_sequences(sequences)
  num_steps = int(lengths.max()) if max_length is None else max_length
  if lengths.max() > num_steps:
    raise ValueError(f'`max_length` is {num_steps} but a sequence has length {lengths.max()}.')
  dtype = inferred if dtype is None else dtype
  batch = np.full((len(arrays), num_steps, *trailing), padding_value, dtype)
  for row, a in zip(batch, arrays, strict=True):
    row[: len(a)] = a
  return batch, lengths


def pack_sequences(
  sequences: Sequence[Any],
  row_length: int,
  *,
  num_rows: int | None = None,
  max_segments: int | None = None,
  padding_value: float = 0,
  dtype: DTypeLike | None = None,
  return_positions: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Returns ``(inputs [R, T, ...], segment_ids [R, T])``: sequences packed several to a row.

  Host-side (NumPy) batching for a layer call
  ``layer(inputs, segment_ids=segment_ids, num_segments=S)`` (SPEC §11): each row
  of ``T = row_length`` steps holds one or more whole sequences, one after the
  other, so that short sequences do not waste a row of padding each.

  Placement is first-fit decreasing: sequences are taken longest first (ties in
  input order) and each goes into the first row with room for its steps (and,
  with ``max_segments``, a free id); a new row is opened when none has room.
  Within a row, sequences lie left to right in the order placed and get ids
  ``1, 2, ...`` in that order; the row's tail is padding (id 0). A length-0
  sequence is placed the same way (it fits the first row with a free id): it
  gets an id that has no steps, which the layers treat like any id that does
  not occur (its carry stays the initial one). Being shortest, length-0
  sequences get the last ids of their row.

  ``num_segments`` for the layer is the largest id used: ``max_segments`` when
  it is fixed, else ``int(positions[:, 1].max())`` (``int(segment_ids.max())``
  misses the ids of trailing length-0 sequences). Under ``jit``, fix the shapes
  of every batch with ``row_length``, ``num_rows`` and ``max_segments``
  (passed as ``num_segments``) so that no batch recompiles.

  Args:
    sequences: ``N`` arrays (or lists) ``[len_i, ...]`` with equal trailing shapes.
    row_length: ``T``, steps per row; a longer sequence raises.
    num_rows: ``R``; ``None`` is as many rows as the packing needs. More rows
      than needed are filled with padding (id 0).
    max_segments: the most sequences in one row (``S`` for the layer); ``None``
      is no limit.
    padding_value: value of the padded steps.
    dtype: of ``inputs``; ``None`` infers it from the sequences.
    return_positions: also return ``positions``.

  Returns:
    inputs: ``[R, T, ...]``, the packed sequences, padding with ``padding_value``.
    segment_ids: ``[R, T]`` int32, ``k`` on the steps of the row's ``k``-th
      sequence, 0 on padding.
    positions: ``[N, 2]`` int32, only with ``return_positions=True``: the
      ``(row, id)`` of each sequence in input order; sequence ``i`` lies where
      ``segment_ids[row] == id``, and its per-sequence result (e.g. final carry)
      is at ``[row, id - 1]`` of the layer's ``[R, S, ...]`` output.

  Raises:
    ValueError: ``sequences`` is empty or differ in trailing shape; a sequence
      is longer than ``row_length`` (naming it); ``row_length``, ``num_rows`` or
      ``max_segments`` is not positive; the sequences need more than
      ``num_rows`` rows.

  Examples:
    >>> from jaxrnn import pack_sequences, unpack_sequences
    >>> sequences = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]]  # lengths 3, 1, 2, 4
    >>> inputs, segment_ids, positions = pack_sequences(sequences, 5, return_positions=True)
    >>> inputs
    array([[ 7,  8,  9, 10,  4],
           [ 1,  2,  3,  5,  6]])
    >>> segment_ids
    array([[1, 1, 1, 1, 2],
           [1, 1, 1, 2, 2]], dtype=int32)
    >>> positions  # (row, id) of each sequence
    array([[1, 1],
           [0, 2],
           [1, 2],
           [0, 1]], dtype=int32)
    >>> unpack_sequences(inputs, segment_ids, positions)
    [array([1, 2, 3]), array([4]), array([5, 6]), array([ 7,  8,  9, 10])]
    >>> # fixed shapes for jit: 3 rows of 5 steps, at most 2 sequences a row
    >>> inputs, segment_ids = pack_sequences(sequences, 5, num_rows=3, max_segments=2, padding_value=-1)
    >>> segment_ids
    array([[1, 1, 1, 1, 2],
           [1, 1, 1, 2, 2],
           [0, 0, 0, 0, 0]], dtype=int32)
  """
  arrays, lengths, trailing, inferred = _check_sequences(sequences)
  for name, value in (('row_length', row_length), ('num_rows', num_rows), ('max_segments', max_segments)):
    if value is not None and (not isinstance(value, int | np.integer) or value < 1):
      raise ValueError(f'`{name}` must be a positive integer, got {value!r}.')
  too_long = np.flatnonzero(lengths > row_length)
  if too_long.size:
    i = int(too_long[0])
    raise ValueError(f'sequence {i} has length {lengths[i]}, longer than `row_length` {row_length}.')
  num_sequences = len(arrays)
  limit = num_sequences if max_segments is None else max_segments
  used = np.zeros(num_sequences, np.int64)  # steps taken in each row (at most N rows)
  count = np.zeros(num_sequences, np.int64)  # sequences in each row
  offsets = np.zeros(num_sequences, np.int64)
  positions = np.zeros((num_sequences, 2), np.int32)
  rows_needed = 0
  for i in np.argsort(-lengths, kind='stable'):
    room = np.flatnonzero((used[:rows_needed] + lengths[i] <= row_length) & (count[:rows_needed] < limit))
    row = int(room[0]) if room.size else rows_needed
    rows_needed = max(rows_needed, row + 1)
    offsets[i] = used[row]
    used[row] += lengths[i]
    count[row] += 1
    positions[i] = row, count[row]
  if num_rows is None:
    num_rows = rows_needed
  elif rows_needed > num_rows:
    raise ValueError(
      f'the sequences need {rows_needed} rows of `row_length` {row_length}, more than `num_rows` {num_rows}.'
    )
  inputs = np.full((num_rows, row_length, *trailing), padding_value, inferred if dtype is None else dtype)
  segment_ids = np.zeros((num_rows, row_length), np.int32)
  for a, start, (row, segment) in zip(arrays, offsets, positions, strict=True):
    inputs[row, start : start + len(a)] = a
    segment_ids[row, start : start + len(a)] = segment
  if return_positions:
    return inputs, segment_ids, positions
  return inputs, segment_ids


def unpack_sequences(outputs: Any, segment_ids: Any, positions: Any | None = None) -> list[np.ndarray]:
  """Returns the list of per-sequence arrays ``[len, ...]`` held in packed ``outputs``.

  The inverse of ``pack_sequences`` (host-side, NumPy): sequence ``(row, id)``
  is ``outputs[row]`` on the steps where ``segment_ids[row] == id``.

  Args:
    outputs: ``[R, T, ...]``, a NumPy or JAX array (e.g. a layer's outputs).
    segment_ids: integers ``[R, T]``, 0 on padding; each positive id one
      contiguous run in its row.
    positions: ``[N, 2]`` integers ``(row, id)`` from ``pack_sequences``; the
      result is then in that order, with an empty ``[0, ...]`` array for an id
      that has no steps (a length-0 sequence). ``None`` returns every id that
      occurs, ordered by row, then id.

  Returns:
    A list of NumPy arrays ``[len, ...]``, one per sequence: slices (views) of
    ``np.asarray(outputs)``.

  Raises:
    TypeError: ``segment_ids`` or ``positions`` are not integers.
    ValueError: ``segment_ids`` is not ``[R, T]`` with the leading shape of
      ``outputs`` (naming both shapes), holds a negative id, or an id that is
      not one contiguous run in its row (naming the row and id); ``positions``
      is not ``[N, 2]`` or names a row outside ``[0, R)``.

  Examples:
    >>> from jaxrnn import pack_sequences, unpack_sequences
    >>> packed = pack_sequences([[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]], 5)
    >>> unpack_sequences(*packed)  # no positions: by row, then id
    [array([ 7,  8,  9, 10]), array([4]), array([1, 2, 3]), array([5, 6])]
    >>> unpack_sequences(*pack_sequences([[1, 2], []], 3, return_positions=True))
    [array([1, 2]), array([], dtype=int64)]
  """
  outputs = np.asarray(outputs)
  ids = np.asarray(segment_ids)
  if not np.issubdtype(ids.dtype, np.integer):
    raise TypeError(f'`segment_ids` must be integers, got dtype {ids.dtype}.')
  if ids.ndim != 2 or outputs.shape[:2] != ids.shape:
    raise ValueError(f'`segment_ids` {ids.shape} must be [R, T] with `outputs` {outputs.shape} [R, T, ...].')
  if (ids < 0).any():
    raise ValueError(f'`segment_ids` must be >= 0 (0 is padding), got {int(ids.min())}.')
  spans = {}  # (row, id) -> (start, stop)
  for row, row_ids in enumerate(ids):
    starts = np.flatnonzero(np.diff(row_ids, prepend=-1))
    stops = np.append(starts[1:], len(row_ids))
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
      segment = int(row_ids[start])
      if segment and (row, segment) in spans:
        raise ValueError(
          f'`segment_ids` row {row} has id {segment} in more than one run: each sequence must be contiguous.'
        )
      spans[row, segment] = start, stop
  if positions is None:
    keys = sorted(key for key in spans if key[1])
  else:
    positions = np.asarray(positions)
    if positions.ndim != 2 or positions.shape[1] != 2:
      raise ValueError(f'`positions` must be [N, 2] (row, id), got {positions.shape}.')
    if positions.size and not np.issubdtype(positions.dtype, np.integer):
      raise TypeError(f'`positions` must be integers, got dtype {positions.dtype}.')
    bad = np.flatnonzero((positions[:, 0] < 0) | (positions[:, 0] >= len(ids)))
    if bad.size:
      raise ValueError(
        f'`positions[{int(bad[0])}]` names row {positions[bad[0], 0]}, outside [0, {len(ids)}).'
      )
    keys = [tuple(p) for p in positions.tolist()]
  result = []
  for row, segment in keys:
    start, stop = spans.get((row, segment), (0, 0)) if segment else (0, 0)
    result.append(outputs[row, start:stop])
  return result
