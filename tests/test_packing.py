"""pack_sequences / unpack_sequences (SPEC §11): host-side packing checked against a list-based oracle."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import jaxrnn


def ffd_oracle(lengths, row_length, max_segments=None):
  """Returns the (row, id) of each sequence: first-fit decreasing written with plain lists."""
  rows = []  # rows[r] = lengths placed in row r, in order
  positions = [None] * len(lengths)
  for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
    room = [sum(row) + lengths[i] <= row_length and len(row) < (max_segments or len(lengths)) for row in rows]
    r = room.index(True) if True in room else len(rows)
    if r == len(rows):
      rows.append([])
    rows[r].append(lengths[i])
    positions[i] = (r, len(rows[r]))
  return positions


def optimal_rows(lengths, row_length):
  """Returns the fewest rows that hold `lengths` (exact, by dynamic programming over subsets)."""
  n = len(lengths)
  fits = [sum(lengths[j] for j in range(n) if mask >> j & 1) <= row_length for mask in range(1 << n)]
  best = [0] + [n] * ((1 << n) - 1)
  for mask in range(1, 1 << n):
    low = mask & -mask
    rest = mask ^ low
    sub = rest
    while True:  # every subset of `mask` holding its lowest item, as one row
      if fits[sub | low]:
        best[mask] = min(best[mask], best[rest ^ sub] + 1)
      if not sub:
        break
      sub = (sub - 1) & rest
  return best[-1]


@st.composite
def packings(draw, max_count=12):
  row_length = draw(st.integers(1, 9))
  lengths = draw(st.lists(st.integers(0, row_length), min_size=1, max_size=max_count))
  trailing = draw(st.sampled_from([(), (2,), (2, 3)]))
  max_segments = draw(st.one_of(st.none(), st.integers(1, 4)))
  rng = np.random.default_rng(draw(st.integers(0, 2**16)))
  sequences = [rng.normal(size=(n, *trailing)).astype(np.float32) for n in lengths]
  return sequences, row_length, max_segments


@settings(max_examples=50, deadline=None)
@given(packings())
def test_pack_layout_and_round_trip(case):
  sequences, row_length, max_segments = case
  lengths = [len(s) for s in sequences]
  inputs, ids, positions = jaxrnn.pack_sequences(
    sequences, row_length, max_segments=max_segments, padding_value=-7.0, return_positions=True
  )
  num_rows = len(inputs)
  assert inputs.shape == (num_rows, row_length, *sequences[0].shape[1:]) and inputs.dtype == np.float32
  assert ids.dtype == np.int32 and positions.dtype == np.int32 and positions.shape == (len(sequences), 2)
  assert [tuple(p) for p in positions.tolist()] == ffd_oracle(lengths, row_length, max_segments)
  assert num_rows == 1 + positions[:, 0].max()
  for row in range(num_rows):
    used = ids[row] > 0
    assert used.sum() <= row_length
    np.testing.assert_array_equal(used, np.arange(row_length) < used.sum())  # padding only at the tail
    assert np.all(inputs[row][~used] == -7.0)
    present = ids[row][used]
    assert np.all(np.diff(present) >= 0)  # ids laid out left to right in order 1, 2, ...
    assert set(present.tolist()) == set(range(1, len(set(present.tolist())) + 1))
    assigned = positions[positions[:, 0] == row, 1]
    assert sorted(assigned.tolist()) == list(range(1, len(assigned) + 1))  # ids 1..k, each once
    if max_segments is not None:
      assert len(assigned) <= max_segments
  for seq, (row, segment) in zip(sequences, positions, strict=True):
    np.testing.assert_array_equal(inputs[row][ids[row] == segment], seq)
  # round trip, in input order and in (row, id) order
  back = jaxrnn.unpack_sequences(inputs, ids, positions)
  assert len(back) == len(sequences)
  for got, seq in zip(back, sequences, strict=True):
    assert got.shape == seq.shape
    np.testing.assert_array_equal(got, seq)
  by_row = sorted((tuple(p), i) for i, p in enumerate(positions.tolist()) if lengths[i])
  back = jaxrnn.unpack_sequences(inputs, ids)
  assert len(back) == len(by_row)
  for got, (_, i) in zip(back, by_row, strict=True):
    np.testing.assert_array_equal(got, sequences[i])


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 12), st.lists(st.integers(0, 12), min_size=1, max_size=60))
def test_ffd_rows_within_first_fit_bound(row_length, lengths):
  """First fit leaves at most one row at most half full, so R < 2 * total / T + 1."""
  lengths = [min(n, row_length) for n in lengths]
  _, ids = jaxrnn.pack_sequences([np.zeros(n) for n in lengths], row_length)
  total = sum(lengths)
  assert len(ids) >= max(1, math.ceil(total / row_length))
  assert len(ids) < 2 * total / row_length + 1 or len(ids) == 1
  assert (ids > 0).sum() == total


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 12), st.lists(st.integers(1, 12), min_size=1, max_size=8))
def test_ffd_rows_within_ffd_bound_of_optimum(row_length, lengths):
  """FFD uses at most 11/9 OPT + 6/9 rows (Dosa 2007); OPT found exactly for 8 sequences or fewer.

  The bound holds against the optimum, not against ceil(total / T): lengths T/2 + 1 need one row each.
  """
  lengths = [min(n, row_length) for n in lengths]
  _, ids = jaxrnn.pack_sequences([np.zeros(n) for n in lengths], row_length)
  best = optimal_rows(lengths, row_length)
  assert best <= len(ids) <= 11 / 9 * best + 6 / 9


def test_example_layout():
  seqs = [np.array([1, 2, 3]), [4], [5, 6], [7, 8, 9, 10], []]
  inputs, ids, positions = jaxrnn.pack_sequences(seqs, 5, return_positions=True)
  np.testing.assert_array_equal(inputs, [[7, 8, 9, 10, 4], [1, 2, 3, 5, 6]])
  np.testing.assert_array_equal(ids, [[1, 1, 1, 1, 2], [1, 1, 1, 2, 2]])
  # the empty sequence fits row 0 and takes its next id, which has no steps
  np.testing.assert_array_equal(positions, [[1, 1], [0, 2], [1, 2], [0, 1], [0, 3]])
  back = jaxrnn.unpack_sequences(jnp.asarray(inputs), ids, positions)  # JAX outputs too
  assert [b.tolist() for b in back] == [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10], []]
  # all sequences empty: one row of padding
  inputs, ids, positions = jaxrnn.pack_sequences([[], []], 3, return_positions=True)
  assert inputs.shape == (1, 3) and not ids.any()
  np.testing.assert_array_equal(positions, [[0, 1], [0, 2]])


def test_num_rows_and_max_segments():
  seqs = [np.ones((n, 2)) for n in (1, 1, 1, 1)]
  inputs, ids = jaxrnn.pack_sequences(seqs, 4, num_rows=3, max_segments=2, dtype=np.float16)
  assert inputs.shape == (3, 4, 2) and inputs.dtype == np.float16
  np.testing.assert_array_equal(ids, [[1, 2, 0, 0], [1, 2, 0, 0], [0, 0, 0, 0]])
  with pytest.raises(ValueError, match='need 2 rows .* more than `num_rows` 1'):
    jaxrnn.pack_sequences(seqs, 4, num_rows=1, max_segments=2)
  for name in ('num_rows', 'max_segments'):
    with pytest.raises(ValueError, match=f'`{name}` must be a positive integer, got 0'):
      jaxrnn.pack_sequences(seqs, 4, **{name: 0})
  with pytest.raises(ValueError, match='`row_length` must be a positive integer'):
    jaxrnn.pack_sequences(seqs, 0)


def test_pack_errors():
  with pytest.raises(ValueError, match='sequence 2 has length 6, longer than `row_length` 5'):
    jaxrnn.pack_sequences([np.zeros(1), np.zeros(5), np.zeros(6)], 5)
  with pytest.raises(ValueError, match='trailing shape'):
    jaxrnn.pack_sequences([np.zeros((2, 3)), np.zeros((2, 4))], 5)
  with pytest.raises(ValueError, match='`sequences` is empty'):
    jaxrnn.pack_sequences([], 5)


def test_unpack_errors():
  outputs = np.zeros((2, 4, 3))
  with pytest.raises(ValueError, match=r'`segment_ids` \(2, 5\) must be .* `outputs` \(2, 4, 3\)'):
    jaxrnn.unpack_sequences(outputs, np.zeros((2, 5), np.int32))
  with pytest.raises(ValueError, match=r'`segment_ids` \(8,\)'):
    jaxrnn.unpack_sequences(outputs, np.zeros(8, np.int32))
  with pytest.raises(ValueError, match='row 1 has id 2 in more than one run'):
    jaxrnn.unpack_sequences(outputs, np.array([[1, 1, 0, 0], [2, 1, 1, 2]]))
  with pytest.raises(ValueError, match='must be >= 0'):
    jaxrnn.unpack_sequences(outputs, np.array([[1, 1, 0, 0], [-1, 0, 0, 0]]))
  with pytest.raises(TypeError, match='`segment_ids` must be integers'):
    jaxrnn.unpack_sequences(outputs, np.zeros((2, 4)))
  ids = np.array([[1, 1, 2, 0], [1, 0, 0, 0]])
  with pytest.raises(ValueError, match=r'`positions` must be \[N, 2\]'):
    jaxrnn.unpack_sequences(outputs, ids, np.array([0, 1]))
  with pytest.raises(ValueError, match=r'`positions\[1\]` names row 2, outside \[0, 2\)'):
    jaxrnn.unpack_sequences(outputs, ids, np.array([[0, 1], [2, 1]]))


def test_pad_sequences_shares_validation():
  for bad, match in (([], 'is empty'), ([np.zeros((1, 2)), np.zeros((1, 3))], 'trailing shape')):
    for pack in (lambda s: jaxrnn.pad_sequences(s), lambda s: jaxrnn.pack_sequences(s, 4)):
      with pytest.raises(ValueError, match=match):
        pack(bad)
  # empty sequences take the others' trailing shape (`[]` beside [len, 3]; all [0, 2])
  for pack in (jaxrnn.pad_sequences, lambda s: jaxrnn.pack_sequences(s, 4)):
    assert pack([np.ones((2, 3)), []])[0].shape[-1] == 3
    assert pack([np.zeros((0, 2)), []])[0].shape[-1] == 2
  back = jaxrnn.unpack_sequences(*jaxrnn.pack_sequences([[1.5], [2, 3]], 2))
  assert [b.tolist() for b in back] == [[2.0, 3.0], [1.5]]  # dtype inferred as for pad_sequences
