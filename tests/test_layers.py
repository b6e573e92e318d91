"""Linen layers against the per-sequence NumPy oracle, and the SPEC §3 invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import KINDS
from conftest import assert_trees_close
from conftest import assert_trees_equal
from conftest import make_layer
from conftest import pairwise
from conftest import random_variables
from conftest import slow
from oracles import np_layer

import jaxrnn
from jaxrnn import LSTMState

B, T, F, H = 5, 6, 3, 4
RAGGED = np.array([6, 0, 3, 1, 6])  # includes 0 and T

GRID = pairwise(list(KINDS), [1, 3], [False, True], [False, True], ['full', 'ragged'])


def random_carry(rng, layer, batch_shape):
  config = layer.config
  rows = config.num_layers * config.num_directions
  h = jnp.asarray(rng.normal(size=(rows, *batch_shape, config.output_size)), jnp.float32)
  if config.cell.name == 'lstm':
    return LSTMState(h, jnp.asarray(rng.normal(size=(rows, *batch_shape, H)), jnp.float32))
  return h


@pytest.mark.parametrize('kind,num_layers,bidirectional,time_major,padding', GRID)
def test_layer_matches_oracle_and_invariants(rng, kind, num_layers, bidirectional, time_major, padding):
  layer = make_layer(
    kind, hidden_size=H, num_layers=num_layers, bidirectional=bidirectional, time_major=time_major
  )
  x = rng.normal(size=(B, T, F)).astype(np.float32)
  lengths = RAGGED if padding == 'ragged' else None
  carry0 = random_carry(rng, layer, (B,))
  layer_x = jaxrnn.to_time_major(x) if time_major else x
  variables = random_variables(layer, F, rng)
  outputs, final = jax.jit(layer.apply)(variables, layer_x, lengths, carry0)
  if time_major:
    outputs = jaxrnn.to_batch_major(outputs)

  config = layer.config
  L, D, Hout = num_layers, config.num_directions, config.output_size
  assert outputs.shape == (B, T, D * Hout)
  h_n = final.h if config.cell.name == 'lstm' else final
  assert h_n.shape == (L * D, B, Hout)
  if config.cell.name == 'lstm':
    assert isinstance(final, LSTMState) and final.c.shape == (L * D, B, H)

  # Numbers: the per-sequence Python loop in float64.
  params = jax.tree.map(np.asarray, variables['params'])
  np_carry0 = tuple(map(np.asarray, carry0)) if config.cell.name == 'lstm' else np.asarray(carry0)
  want_out, want_final = np_layer(config, params, x, lengths, np_carry0)
  assert_trees_close((outputs, final), (want_out, want_final), atol=2e-5)

  # SPEC §3.4 invariants, exactly.
  outputs, h_n = np.asarray(outputs), np.asarray(h_n)
  lens = np.full(B, T) if lengths is None else lengths
  for b in range(B):
    if lens[b] > 0:
      np.testing.assert_array_equal(outputs[b, lens[b] - 1, :Hout], h_n[(L - 1) * D, b])
      if bidirectional:
        np.testing.assert_array_equal(outputs[b, 0, Hout:], h_n[(L - 1) * D + 1, b])
    assert np.all(outputs[b, lens[b] :] == 0)  # padding is exactly zero
    if lens[b] == 0:  # length 0: the final carry is the initial carry
      assert_trees_equal(jax.tree.map(lambda a: a[:, b], final), jax.tree.map(lambda a: a[:, b], carry0))
  if lengths is None and not bidirectional:
    np.testing.assert_array_equal(outputs[:, -1], h_n[-1])


@pytest.mark.slow  # default run: test_properties (length 0 returns the default carry, zeros)
@pytest.mark.parametrize('kind', list(KINDS))
def test_default_initial_carry_is_zeros(rng, kind):
  layer = make_layer(kind, hidden_size=H, num_layers=2, bidirectional=True)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  variables = layer.init(jax.random.key(0), x)
  zeros = jax.tree.map(jnp.zeros_like, random_carry(rng, layer, (B,)))
  a = layer.apply(variables, x, RAGGED)
  b = layer.apply(variables, x, RAGGED, zeros)
  assert_trees_equal(a, b)


@pytest.mark.parametrize('time_major', [False, slow(True)])
def test_several_batch_axes_equal_flattened_batch(rng, time_major):
  layer = make_layer('lstm_proj', hidden_size=H, num_layers=2, bidirectional=True, time_major=time_major)
  x = jnp.asarray(rng.normal(size=(2, 3, T, F)), jnp.float32)
  lengths = jnp.asarray(rng.integers(0, T + 1, size=(2, 3)))
  carry0 = random_carry(rng, layer, (2, 3))
  layer_x = jaxrnn.to_time_major(x) if time_major else x
  variables = layer.init(jax.random.key(0), layer_x)
  outputs, final = layer.apply(variables, layer_x, lengths, carry0)
  flat_x = x.reshape(6, T, F)
  flat_layer = make_layer('lstm_proj', hidden_size=H, num_layers=2, bidirectional=True)
  flat_carry = jax.tree.map(lambda a: a.reshape(a.shape[0], 6, a.shape[-1]), carry0)
  want_out, want_final = flat_layer.apply(variables, flat_x, lengths.reshape(6), flat_carry)
  if time_major:
    outputs = jaxrnn.to_batch_major(outputs)
  assert outputs.shape == (2, 3, T, 6) and final.h.shape == (4, 2, 3, 3) and final.c.shape == (4, 2, 3, H)
  final = jax.tree.map(lambda a: a.reshape(a.shape[0], 6, a.shape[-1]), final)
  assert_trees_close((outputs.reshape(6, T, 6), final), (want_out, want_final))


def test_parameter_names_shapes_and_default_init():
  layer = jaxrnn.LSTM(hidden_size=16, num_layers=2, bidirectional=True, proj_size=5)
  variables = layer.init(jax.random.key(0), jnp.zeros((1, 2, 7)))
  shapes = jax.tree.map(jnp.shape, variables['params'])
  assert set(shapes) == {'l0', 'l0_reverse', 'l1', 'l1_reverse'}
  assert shapes['l0'] == {'w_ih': (7, 64), 'w_hh': (5, 64), 'b_ih': (64,), 'b_hh': (64,), 'w_hr': (16, 5)}
  assert shapes['l1_reverse']['w_ih'] == (10, 64)
  bound = 1 / np.sqrt(16)
  leaves = np.concatenate([np.ravel(a) for a in jax.tree.leaves(variables['params'])])
  assert np.abs(leaves).max() <= bound and np.abs(leaves).max() > 0.9 * bound  # U(-1/sqrt(H), 1/sqrt(H))
  assert abs(leaves.mean()) < 0.02 and abs(leaves.std() - bound / np.sqrt(3)) < 0.01


def test_use_bias_false_and_custom_initializers():
  layer = jaxrnn.GRU(
    hidden_size=4,
    use_bias=False,
    kernel_init=jax.nn.initializers.ones,
    recurrent_kernel_init=jax.nn.initializers.zeros,
  )
  variables = layer.init(jax.random.key(0), jnp.zeros((1, 2, 3)))
  assert set(variables['params']['l0']) == {'w_ih', 'w_hh'}
  np.testing.assert_array_equal(variables['params']['l0']['w_ih'], 1.0)
  np.testing.assert_array_equal(variables['params']['l0']['w_hh'], 0.0)


@pytest.mark.parametrize('kind', ['lstm', slow('gru'), slow('rnn_tanh')])
def test_bfloat16_compute_close_to_float32(rng, kind):
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  layer32 = make_layer(kind, hidden_size=H, num_layers=2, bidirectional=True)
  layer16 = make_layer(kind, hidden_size=H, num_layers=2, bidirectional=True, dtype=jnp.bfloat16)
  variables = layer32.init(jax.random.key(0), x)
  out32, final32 = layer32.apply(variables, x, RAGGED)
  out16, final16 = layer16.apply(variables, x.astype(jnp.bfloat16), RAGGED)
  assert out16.dtype == jnp.bfloat16
  assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(final16))
  assert (
    jax.tree.map(lambda a: a.dtype, layer16.init(jax.random.key(0), x))['params']['l0']['w_ih'] == jnp.float32
  )
  np.testing.assert_allclose(np.asarray(out16, np.float32), out32, atol=3e-2)
  assert np.all(np.asarray(out16, np.float32)[1] == 0)  # the length-0 sequence stays exactly 0


def test_param_dtype_and_promotion(rng):
  x = jnp.asarray(rng.normal(size=(2, 3, F)), jnp.bfloat16)
  layer = jaxrnn.LSTM(hidden_size=H, param_dtype=jnp.bfloat16)
  variables = layer.init(jax.random.key(0), x)
  assert variables['params']['l0']['w_hh'].dtype == jnp.bfloat16
  outputs, (h, c) = layer.apply(variables, x)
  assert outputs.dtype == h.dtype == c.dtype == jnp.bfloat16  # dtype=None promotes bf16 with bf16


def test_empty_time_axis(rng):
  layer = jaxrnn.LSTM(hidden_size=H, bidirectional=True)
  x = jnp.zeros((2, 0, F))
  variables = layer.init(jax.random.key(0), x)
  outputs, (h, c) = layer.apply(variables, x, jnp.array([0, 0]))
  assert outputs.shape == (2, 0, 2 * H)
  np.testing.assert_array_equal(h, 0)


def test_gru_reset_before_layer_matches_oracle(rng):
  """GRU(reset_after=False): 2 bidirectional layers over ragged lengths against the NumPy loop."""
  layer = jaxrnn.GRU(H, num_layers=2, bidirectional=True, reset_after=False)
  assert not layer.config.use_fused_backward  # the reset-before step has no fused backward
  x = rng.normal(size=(B, T, F)).astype(np.float32)
  carry0 = random_carry(rng, layer, (B,))
  variables = random_variables(layer, F, rng)
  got = jax.jit(layer.apply)(variables, x, RAGGED, carry0)
  params = jax.tree.map(np.asarray, variables['params'])
  want = np_layer(layer.config, params, x, RAGGED, np.asarray(carry0))
  assert_trees_close(got, want, atol=2e-5)
  with pytest.raises(ValueError, match='reset_after=True'):
    jaxrnn.interop.to_state_dict(layer, variables)
