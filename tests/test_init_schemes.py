"""Initialisation schemes (``init_scheme``) and ``per_gate``: each gate block gets the scheme's law.

Oracles: Flax's own ``nn.SimpleCell``/``nn.GRUCell``/``nn.LSTMCell`` initialised by Flax (the same
statistics, block by block), ``jax.nn.initializers`` called on each block with the split keys, the
values ``main`` produced before schemes existed, and Keras's documented defaults.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import slow
from flax import nnx

import jaxrnn
from jaxrnn.interop import linen_to_nnx
from jaxrnn.interop import nnx_to_linen

F, H = 48, 32  # enough numbers per block for the statistics below to be tight
CELLS = {'rnn': (jaxrnn.ElmanCell, 1), 'gru': (jaxrnn.GRUCell, 3), 'lstm': (jaxrnn.LSTMCell, 4)}
# Flax's parameter names of each gate, in PyTorch's gate order; a name of Flax's LSTM input side
# or GRU hidden side without bias is simply absent from its tree.
FLAX_GATES = {
  'rnn': (nn.SimpleCell, ['i'], ['h']),
  'gru': (nn.GRUCell, ['ir', 'iz', 'in'], ['hr', 'hz', 'hn']),
  'lstm': (nn.LSTMCell, ['ii', 'if', 'ig', 'io'], ['hi', 'hf', 'hg', 'ho']),
}


def blocks(w, num_gates):
  return np.split(np.asarray(w, np.float64), num_gates, axis=-1)


def assert_orthonormal_columns(w):
  np.testing.assert_allclose(w.T @ w, np.eye(w.shape[1]), atol=1e-5)


def assert_orthonormal_rows(w):
  np.testing.assert_allclose(w @ w.T, np.eye(w.shape[0]), atol=1e-5)


def flax_fused(name):
  """Returns Flax's own initialised cell as jaxrnn's ``(w_ih, w_hh, b_ih, b_hh)`` (absent biases 0)."""
  flax_cell, input_gates, hidden_gates = FLAX_GATES[name]
  cell = flax_cell(H)
  x = jnp.ones((1, F))
  params = cell.init(jax.random.key(7), cell.initialize_carry(jax.random.key(0), x.shape), x)['params']

  def fused(names, leaf):
    return np.concatenate([np.asarray(params[n].get(leaf, np.zeros(H))) for n in names], -1)

  return (
    fused(input_gates, 'kernel'),
    fused(hidden_gates, 'kernel'),
    fused(input_gates, 'bias'),
    fused(hidden_gates, 'bias'),
  )


def assert_flax_statistics(w_ih, w_hh, b_ih, b_hh, num_gates):
  """Flax's cells: lecun_normal (std 1/sqrt(F)) per input kernel, orthogonal per [H, H] block, zero biases."""
  for block in blocks(w_ih, num_gates):
    assert block.shape == (F, H)
    assert abs(block.std() / (1 / np.sqrt(F)) - 1) < 0.08, block.std()
    assert abs(block).max() <= 2 / np.sqrt(F) / 0.8796 + 1e-6  # truncated at 2 std of the untruncated normal
  for block in blocks(w_hh, num_gates):
    assert_orthonormal_columns(block)
  assert not np.any(b_ih) and not np.any(b_hh)


# The default tier keeps the LSTM (every gate kind of the others is in it); the rest is slow (compiles).
@pytest.mark.parametrize('name', [slow('rnn'), slow('gru'), 'lstm'])
def test_flax_scheme_has_the_statistics_of_flax_cells(name):
  cell_type, num_gates = CELLS[name]
  ours = cell_type(H, init_scheme='flax').init(jax.random.key(0), F)
  assert_flax_statistics(ours['w_ih'], ours['w_hh'], ours['b_ih'], ours['b_hh'], num_gates)
  assert_flax_statistics(*flax_fused(name), num_gates)  # the oracle meets its own description


def test_flax_scheme_is_per_gate_of_flax_initializers_with_split_keys():
  key = jax.random.key(3)
  params = jaxrnn.LSTMCell(H, init_scheme='flax').init(key, F)
  keys = jax.random.split(key, 4)  # one per weight, in the order w_ih, w_hh, b_ih, b_hh
  gate_keys = jax.random.split(keys[1], 4)
  orthogonal = jax.nn.initializers.orthogonal()
  expected = jnp.concatenate([orthogonal(k, (H, H)) for k in gate_keys], -1)
  np.testing.assert_array_equal(params['w_hh'], expected)
  lecun = jaxrnn.per_gate(jax.nn.initializers.lecun_normal(), 4)
  np.testing.assert_array_equal(params['w_ih'], lecun(keys[0], (F, 4 * H)))


def test_per_gate_blocks_are_each_orthogonal_and_independent():
  w = jaxrnn.per_gate(jax.nn.initializers.orthogonal(), 4)(jax.random.key(0), (H, 4 * H))
  assert w.shape == (H, 4 * H)
  gates = blocks(w, 4)
  for block in gates:
    assert_orthonormal_columns(block)
  # Independent keys: no two blocks are equal, and the fused matrix is not orthogonal as a whole.
  assert all(not np.allclose(gates[i], gates[j]) for i in range(4) for j in range(i))
  assert not np.allclose(np.asarray(w) @ np.asarray(w).T, np.eye(H), atol=0.1)


@pytest.mark.slow
def test_per_gate_fans_are_those_of_one_block():
  """glorot_uniform's bound is sqrt(6 / (F + H)) per gate block, not sqrt(6 / (F + 4H)) as fused."""
  w = jaxrnn.per_gate(jax.nn.initializers.glorot_uniform(), 4)(jax.random.key(1), (F, 4 * H))
  bound = np.sqrt(6 / (F + H))
  for block in blocks(w, 4):
    assert 0.95 * bound < abs(block).max() <= bound
    assert abs(block.std() / (bound / np.sqrt(3)) - 1) < 0.08


@pytest.mark.slow
def test_per_gate_draws_bias_blocks_apart():
  normal = jax.nn.initializers.normal(1.0)
  key = jax.random.key(2)
  b = jaxrnn.per_gate(normal, 3)((key), (3 * H,))
  expected = jnp.concatenate([normal(k, (H,)) for k in jax.random.split(key, 3)])
  np.testing.assert_array_equal(b, expected)


def test_per_gate_is_hashable_and_compares_by_value():
  orthogonal = jax.nn.initializers.orthogonal()
  assert jaxrnn.per_gate(orthogonal, 4) == jaxrnn.per_gate(orthogonal, 4)
  assert jaxrnn.per_gate(orthogonal, 4) != jaxrnn.per_gate(orthogonal, 3)
  cell = jaxrnn.LSTMCell(H, recurrent_kernel_init=jaxrnn.per_gate(orthogonal, 4))
  assert hash(cell) == hash(jaxrnn.LSTMCell(H, recurrent_kernel_init=jaxrnn.per_gate(orthogonal, 4)))


def test_per_gate_misuse_is_named():
  init = jaxrnn.per_gate(jax.nn.initializers.orthogonal(), 4)
  with pytest.raises(ValueError, match=r'shape \(8, 30\): its last axis must be a multiple of 4'):
    init(jax.random.key(0), (8, 30))
  with pytest.raises(ValueError, match='`num_gates` must be a positive int, got 0'):
    jaxrnn.per_gate(jax.nn.initializers.orthogonal(), 0)
  with pytest.raises(TypeError, match='`initializer` must be callable'):
    jaxrnn.per_gate('orthogonal', 4)


@pytest.mark.parametrize('name', [slow('rnn'), slow('gru'), 'lstm'])
def test_keras_scheme_is_keras_defaults(name):
  """Keras: glorot_uniform and orthogonal on the whole fused kernels, zero biases, unit forget bias."""
  cell_type, num_gates = CELLS[name]
  params = cell_type(H, init_scheme='keras').init(jax.random.key(0), F)
  w_ih, w_hh = np.asarray(params['w_ih'], np.float64), np.asarray(params['w_hh'], np.float64)
  bound = np.sqrt(6 / (F + num_gates * H))
  assert 0.95 * bound < abs(w_ih).max() <= bound
  assert_orthonormal_rows(w_hh)  # [H, G*H] as a whole, as Keras's recurrent_kernel
  assert not np.any(params['b_hh'])
  expected_b_ih = np.zeros(num_gates * H)
  if name == 'lstm':
    expected_b_ih[H : 2 * H] = 1  # the forget block of i, f, g, o
  np.testing.assert_array_equal(params['b_ih'], expected_b_ih)


@pytest.mark.slow
def test_lstm_projection_under_each_scheme():
  P = 8
  for scheme, fan in (('flax', 1 / np.sqrt(H)), ('keras', np.sqrt(2 / (H + P)))):
    params = jaxrnn.LSTMCell(H, proj_size=P, init_scheme=scheme).init(jax.random.key(0), F)
    assert params['w_hh'].shape == (P, 4 * H) and params['w_hr'].shape == (H, P)
    for block in blocks(params['w_hh'], 4) if scheme == 'flax' else [np.asarray(params['w_hh'])]:
      assert_orthonormal_rows(block)
    assert abs(np.std(params['w_hr']) / fan - 1) < 0.2, scheme


def test_default_is_pytorch_and_unchanged():
  """Values from before ``init_scheme`` existed (main at cc055ee), and the same through every spelling.

  (All 78 parameter arrays of linen and NNX RNN/LSTM/GRU layers, 2 layers, bidirectional, with
  projection, were compared with main's once, bit for bit; layers take the cell's initializers.)
  """
  uniform = jaxrnn.torch_uniform(H)
  explicit = dict(kernel_init=uniform, recurrent_kernel_init=uniform, bias_init=uniform)
  default, *others = [
    jaxrnn.LSTMCell(H, **kw).init(jax.random.key(0), F) for kw in ({}, {'init_scheme': 'pytorch'}, explicit)
  ]
  before = {
    'w_ih': [0.12102631479501724, -0.11229610443115234, -0.0964571088552475],
    'w_hh': [-0.018912849947810173, 0.06784525513648987],
    'b_hh': [-0.08238165825605392, 0.08271386474370956, 0.16041532158851624],
  }
  np.testing.assert_array_equal(default['w_ih'][0, :3], np.float32(before['w_ih']))
  np.testing.assert_array_equal(default['w_hh'][1, :2], np.float32(before['w_hh']))
  np.testing.assert_array_equal(default['b_hh'][:3], np.float32(before['b_hh']))
  for other in others:
    jax.tree.map(np.testing.assert_array_equal, default, other)


def test_explicit_initializers_take_precedence_over_the_scheme():
  ones = jax.nn.initializers.ones
  params = jaxrnn.GRUCell(H, init_scheme='flax', bias_init=ones).init(jax.random.key(0), F)
  assert np.all(np.asarray(params['b_ih']) == 1) and np.all(np.asarray(params['b_hh']) == 1)
  for block in blocks(params['w_hh'], 3):  # the scheme still fills what was not given
    assert_orthonormal_columns(block)


def test_unknown_scheme_is_named():
  match = r"`init_scheme` must be one of \['pytorch', 'flax', 'keras'\], got 'torch'"
  with pytest.raises(ValueError, match=match):
    jaxrnn.LSTMCell(H, init_scheme='torch')
  with pytest.raises(ValueError, match=match):
    jaxrnn.LSTM(H, init_scheme='torch')
  with pytest.raises(ValueError, match=match):
    jaxrnn.nnx.GRU(F, H, init_scheme='torch', rngs=nnx.Rngs(0))
  with pytest.raises(TypeError, match='`kernel_init` must be None or callable'):
    jaxrnn.GRUCell(H, kernel_init='glorot_uniform')


def test_scheme_survives_linen_nnx_conversion_and_holds_in_nnx():
  module = jaxrnn.nnx.GRU(F, H, init_scheme='flax', rngs=nnx.Rngs(0))
  assert_flax_statistics(module.l0.w_ih, module.l0.w_hh, module.l0.b_ih, module.l0.b_hh, 3)
  layer, variables = nnx_to_linen(module)
  assert layer.init_scheme == 'flax' and layer.config.cell.init_scheme == 'flax'
  back = linen_to_nnx(layer, variables)
  assert back.init_scheme == 'flax' and back.config.cell.init_scheme == 'flax'
  jax.tree.map(np.testing.assert_array_equal, nnx.state(module, nnx.Param), nnx.state(back, nnx.Param))
  keras = nnx_to_linen(jaxrnn.nnx.LSTM(F, H, init_scheme='keras', rngs=nnx.Rngs(0)))[0]
  assert keras.init_scheme == 'keras'


@pytest.mark.slow
def test_scheme_in_bfloat16_parameters():
  """orthogonal's QR runs in float32: the CPU's QR has no bfloat16."""
  params = jaxrnn.LSTMCell(H, init_scheme='flax').init(jax.random.key(0), F, jnp.bfloat16)
  assert params['w_hh'].dtype == jnp.bfloat16
  for block in blocks(params['w_hh'], 4):
    np.testing.assert_allclose(block.T @ block, np.eye(H), atol=3e-2)
