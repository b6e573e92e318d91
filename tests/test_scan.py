"""The scan driver against a Python loop over the cell, and the masking helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_close
from conftest import assert_trees_equal
from conftest import pairwise
from conftest import slow
from test_cells import CELLS
from test_cells import as_jax
from test_cells import random_params

import jaxrnn
from jaxrnn import LSTMState
from jaxrnn._src.cells import CELL_KINDS
from jaxrnn._src.cells import project_input

T, B, F, H = 7, 4, 3, 5
LENGTHS = np.array([0, 3, 7, 1])


def inputs(rng, cell):
  params = as_jax(random_params(rng, cell, F, H))
  xs = jnp.asarray(rng.normal(size=(T, B, F)), jnp.float32)
  h = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
  carry = LSTMState(h, -h) if cell == 'lstm' else h
  return params, carry, xs


def python_loop(cell, params, carry, xs, lengths, reverse):
  """Per-sequence loop over valid steps only: the oracle for masking and reversal."""
  fn = CELLS[cell][0]
  ys = np.zeros((T, B, H), np.float32)
  finals = []
  for b in range(B):
    c = jax.tree.map(lambda a: a[b], carry)
    steps = range(lengths[b])
    for t in reversed(steps) if reverse else steps:
      c, ys[t, b] = fn(params, c, xs[t, b])
    finals.append(c)
  return jax.tree.map(lambda *a: jnp.stack(a), *finals), ys


def run(cell, params, carry, xs, lengths, **kw):
  return jaxrnn.scan_layer(CELL_KINDS[cell].recurrence, params, carry, xs, lengths, **kw)


@pytest.mark.parametrize('cell,reverse,hoist', pairwise(list(CELLS), [False, True], [False, True]))
def test_scan_matches_python_loop(rng, cell, reverse, hoist):
  params, carry, xs = inputs(rng, cell)
  want_carry, want_ys = python_loop(cell, params, carry, xs, LENGTHS, reverse)
  got_carry, got_ys = run(
    cell, params, carry, xs, jnp.asarray(LENGTHS), reverse=reverse, hoist_input_projection=hoist
  )
  assert_trees_close((got_carry, got_ys), (want_carry, want_ys), atol=1e-5)
  # Padding emits exact zeros and a length-0 sequence keeps its initial carry exactly.
  assert np.all(np.asarray(got_ys)[LENGTHS[None, :] <= np.arange(T)[:, None]] == 0)
  assert_trees_equal(jax.tree.map(lambda a: a[0], got_carry), jax.tree.map(lambda a: a[0], carry))


@pytest.mark.parametrize('cell', ['lstm', slow('gru')])
def test_scan_without_lengths_is_full_length(rng, cell):
  params, carry, xs = inputs(rng, cell)
  full = jnp.full(B, T)
  for reverse in (False, True):
    a = run(cell, params, carry, xs, None, reverse=reverse)
    b = run(cell, params, carry, xs, full, reverse=reverse)
    assert_trees_close(a, b)


def test_reverse_scan_equals_flip_forward_flip(rng):
  """The masked reversed scan is the padding-aware reversal: flip prefix, run forward, flip back."""
  params, carry, xs = inputs(rng, 'gru')
  lengths = jnp.asarray(LENGTHS)
  got_carry, got_ys = run('gru', params, carry, xs, lengths, reverse=True)
  flipped = jaxrnn.reverse_padded(xs, lengths, time_axis=0)
  fwd_carry, fwd_ys = run('gru', params, carry, flipped, lengths)
  np.testing.assert_allclose(got_carry, fwd_carry, atol=1e-6)
  np.testing.assert_allclose(got_ys, jaxrnn.reverse_padded(fwd_ys, lengths, time_axis=0), atol=1e-6)


@pytest.mark.parametrize(
  'option', [slow({'unroll': 3}), {'remat': True}, slow({'hoist_input_projection': True})]
)
def test_options_change_nothing_numerically(rng, option):
  params, carry, xs = inputs(rng, 'lstm')
  lengths = jnp.asarray(LENGTHS)

  def loss(params, xs, **kw):
    final, ys = run('lstm', params, carry, xs, lengths, reverse=True, **kw)
    return jnp.sum(ys**2) + jnp.sum(final.c)

  want = jax.value_and_grad(loss, argnums=(0, 1))(params, xs)
  got = jax.value_and_grad(lambda p, x: loss(p, x, **option), argnums=(0, 1))(params, xs)
  assert_trees_close(got, want, atol=1e-5)


def test_plain_cell_without_input_projection(rng):
  """scan_layer also drives a whole cell (params, carry, x) when input_projection=None."""
  params, carry, xs = inputs(rng, 'rnn_tanh')
  a = jaxrnn.scan_layer(jaxrnn.rnn_tanh_cell, params, carry, xs, input_projection=None)
  b = run('rnn_tanh', params, carry, xs, None)
  assert_trees_close(a, b)
  assert project_input(params, xs).shape == (T, B, H)


def test_reverse_padded_properties(rng):
  x = jnp.asarray(rng.normal(size=(2, 3, 6, 4)))  # batch (2, 3), T=6, F=4
  lengths = jnp.asarray(rng.integers(0, 7, size=(2, 3)))
  out = jaxrnn.reverse_padded(x, lengths, time_axis=2)
  np.testing.assert_array_equal(jaxrnn.reverse_padded(out, lengths, time_axis=2), x)
  for i in range(2):
    for j in range(3):
      n = int(lengths[i, j])
      np.testing.assert_array_equal(out[i, j, :n], x[i, j, :n][::-1])
      np.testing.assert_array_equal(out[i, j, n:], x[i, j, n:])
  np.testing.assert_array_equal(jaxrnn.reverse_padded(x[0], None), x[0][:, ::-1])


def test_mask_and_lengths_round_trip(rng):
  lengths = jnp.asarray(rng.integers(0, 9, size=(3, 4)))
  mask = jaxrnn.lengths_to_mask(lengths, 8)
  assert mask.shape == (3, 4, 8)
  np.testing.assert_array_equal(jaxrnn.mask_to_lengths(mask), lengths)


def test_layout_transposes_round_trip(rng):
  x = jnp.asarray(rng.normal(size=(2, 3, 5, 4)))
  tm = jaxrnn.to_time_major(x)
  assert tm.shape == (5, 2, 3, 4)
  np.testing.assert_array_equal(tm[1, 0, 2], x[0, 2, 1])
  np.testing.assert_array_equal(jaxrnn.to_batch_major(tm), x)


def test_pad_sequences(rng):
  seqs = [rng.normal(size=(n, 3)).astype(np.float32) for n in (4, 0, 2)]
  batch, lengths = jaxrnn.pad_sequences(seqs, max_length=6, padding_value=-1.0)
  assert batch.shape == (3, 6, 3) and batch.dtype == np.float32
  np.testing.assert_array_equal(lengths, [4, 0, 2])
  np.testing.assert_array_equal(batch[0, :4], seqs[0])
  assert np.all(batch[0, 4:] == -1) and np.all(batch[1] == -1)
  np.testing.assert_array_equal(jaxrnn.lengths_to_mask(lengths, 6), np.arange(6)[None] < lengths[:, None])
  with pytest.raises(ValueError, match='`max_length` is 3'):
    jaxrnn.pad_sequences(seqs, max_length=3)
  with pytest.raises(ValueError, match='trailing shape'):
    jaxrnn.pad_sequences([np.zeros((2, 3)), np.zeros((2, 4))])
