"""Each cell against the float64 NumPy oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_close
from oracles import np_cell

import jaxrnn
from jaxrnn import CellParams
from jaxrnn import LSTMState

CELLS = {
  'rnn_tanh': (jaxrnn.rnn_tanh_cell, 1),
  'rnn_relu': (jaxrnn.rnn_relu_cell, 1),
  'lstm': (jaxrnn.lstm_cell, 4),
  'gru': (jaxrnn.gru_cell, 3),
}


def random_params(rng, cell, F, H, P=0, bias=True, scale=0.5):
  G = CELLS[cell][1]
  Hout = P or H
  p = {'w_ih': rng.normal(size=(F, G * H)) * scale, 'w_hh': rng.normal(size=(Hout, G * H)) * scale}
  if bias:
    p['b_ih'] = rng.normal(size=G * H) * scale
    p['b_hh'] = rng.normal(size=G * H) * scale
  if P:
    p['w_hr'] = rng.normal(size=(H, P)) * scale
  return p


def as_jax(p, dtype=jnp.float32):
  return CellParams(**{k: jnp.asarray(v, dtype) for k, v in p.items()})


@pytest.mark.parametrize('cell', list(CELLS))
@pytest.mark.parametrize('bias', [True, False])
def test_cell_matches_numpy(rng, cell, bias):
  F, H = 5, 7
  p = random_params(rng, cell, F, H, bias=bias)
  x = rng.normal(size=F)
  if cell == 'lstm':
    carry = (rng.normal(size=H), rng.normal(size=H))
    jcarry = LSTMState(*(jnp.asarray(a, jnp.float32) for a in carry))
  else:
    carry = rng.normal(size=H)
    jcarry = jnp.asarray(carry, jnp.float32)
  want_carry, want_y = np_cell(cell, p, carry, x)
  got_carry, got_y = CELLS[cell][0](as_jax(p), jcarry, jnp.asarray(x, jnp.float32))
  assert_trees_close((got_carry, got_y), (want_carry, want_y), atol=1e-5)


def test_lstm_projection_matches_numpy(rng):
  F, H, P = 4, 6, 2
  p = random_params(rng, 'lstm', F, H, P=P)
  carry = (rng.normal(size=P), rng.normal(size=H))
  x = rng.normal(size=F)
  (want_h, want_c), _ = np_cell('lstm', p, carry, x)
  (got_h, got_c), y = jaxrnn.lstm_cell(as_jax(p), LSTMState(*map(jnp.float32, carry)), jnp.float32(x))
  assert got_h.shape == (P,) and got_c.shape == (H,)
  np.testing.assert_allclose(got_h, want_h, atol=1e-5)
  np.testing.assert_allclose(got_c, want_c, atol=1e-5)
  np.testing.assert_array_equal(y, got_h)


@pytest.mark.parametrize('cell', list(CELLS))
def test_cell_float64_is_exact(rng, cell):
  """With x64 on, the cell computes in float64 and matches NumPy to rounding."""
  H = 3
  p = random_params(rng, cell, 2, H)
  carry = (rng.normal(size=H), rng.normal(size=H)) if cell == 'lstm' else rng.normal(size=H)
  x = rng.normal(size=2)
  with jax.enable_x64(True):
    jcarry = LSTMState(*map(jnp.asarray, carry)) if cell == 'lstm' else jnp.asarray(carry)
    got_carry, got_y = CELLS[cell][0](as_jax(p, jnp.float64), jcarry, jnp.asarray(x))
    assert got_y.dtype == jnp.float64
  want_carry, want_y = np_cell(cell, p, carry, x)
  np.testing.assert_allclose(got_y, want_y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('cell', list(CELLS))
def test_cell_accepts_leading_batch_axes(rng, cell):
  """A cell written for one example also runs on [..., F], equal to vmap."""
  H, F = 4, 3
  fn = CELLS[cell][0]
  params = as_jax(random_params(rng, cell, F, H))
  x = jnp.asarray(rng.normal(size=(2, 5, F)), jnp.float32)
  h = jnp.asarray(rng.normal(size=(2, 5, H)), jnp.float32)
  carry = LSTMState(h, h * 0.5) if cell == 'lstm' else h
  got = fn(params, carry, x)
  want = jax.vmap(jax.vmap(fn, (None, 0, 0)), (None, 0, 0))(params, carry, x)
  assert_trees_close(got, want)


def test_bfloat16_lstm_keeps_cell_state_in_float32(rng):
  p = random_params(rng, 'lstm', 3, 4)
  carry = LSTMState(jnp.zeros(4, jnp.bfloat16), jnp.zeros(4, jnp.float32))
  x = jnp.asarray(rng.normal(size=3), jnp.bfloat16)
  (h, c), y = jaxrnn.lstm_cell(as_jax(p, jnp.bfloat16), carry, x)
  assert h.dtype == jnp.bfloat16 and y.dtype == jnp.bfloat16
  assert c.dtype == jnp.float32
  (want_h, want_c), _ = np_cell('lstm', p, (np.zeros(4), np.zeros(4)), np.asarray(x, np.float64))
  np.testing.assert_allclose(np.asarray(c), want_c, atol=3e-2)
  np.testing.assert_allclose(np.asarray(h, np.float32), want_h, atol=3e-2)


@pytest.mark.parametrize('bias', [True, False])
def test_gru_reset_before_matches_numpy(rng, bias):
  """GRUCell(reset_after=False), Keras 2's GRU: the reset multiplies h before the n block's matmul."""
  F, H = 5, 7
  p = random_params(rng, 'gru', F, H, bias=bias)
  h, x = rng.normal(size=(2, H)), rng.normal(size=(2, F))
  cell = jaxrnn.GRUCell(H, reset_after=False)
  got_h, got_y = cell({k: jnp.float32(v) for k, v in p.items()}, jnp.float32(h), jnp.float32(x))
  for b in range(2):
    want_h, _ = np_cell('gru_reset_before', p, h[b], x[b])
    np.testing.assert_allclose(got_h[b], want_h, atol=1e-5)
  np.testing.assert_array_equal(got_y, got_h)
  reset_after, _ = jaxrnn.GRUCell(H)(
    {k: jnp.float32(v) for k, v in p.items()}, jnp.float32(h), jnp.float32(x)
  )
  assert not np.allclose(reset_after, got_h, atol=1e-3)  # the two forms differ on these weights
