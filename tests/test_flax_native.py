"""jaxrnn inside Flax code: `step` at init, cells in nn.RNN / nn.Bidirectional, Flax carries."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_close
from conftest import slow

import jaxrnn

B, T, F, H = 3, 6, 4, 5


class StepDecoder(nn.Module):
  """Teacher-forced decoder that reaches the LSTM only through `step`, under nn.scan."""

  num_layers: int = 1

  @nn.compact
  def __call__(self, xs):  # [B, T, F] -> [B, T, 1]
    lstm = jaxrnn.LSTM(H, num_layers=self.num_layers, name='lstm')
    scan = nn.scan(
      lambda module, carry, x_t: module.step(x_t, carry)[::-1],
      variable_broadcast='params',
      split_rngs={'params': False},
      in_axes=1,
      out_axes=1,
    )
    _, ys = scan(lstm, lstm.initial_carry(xs.shape[:1]), xs)
    return nn.Dense(1, name='head')(ys)


def test_a_decoder_that_only_steps_initialises_trains_and_matches_the_sequence_call(rng):
  xs = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  targets = jnp.cumsum(xs[..., :1], axis=1) / T
  decoder = StepDecoder()
  variables = decoder.init(jax.random.key(0), xs)
  lstm = jaxrnn.LSTM(H)
  sequence_variables = jax.eval_shape(lstm.init, jax.random.key(0), xs)
  assert jax.tree.map(jnp.shape, variables['params']['lstm']) == jax.tree.map(
    jnp.shape, sequence_variables['params']
  )

  optimizer = optax.adam(3e-2)

  @jax.jit
  def train_step(params, state):
    loss, grads = jax.value_and_grad(lambda p: jnp.mean((decoder.apply({'params': p}, xs) - targets) ** 2))(
      params
    )
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(params, updates), state, loss

  params, state = variables['params'], optimizer.init(variables['params'])
  losses = []
  for _ in range(5):
    params, state, loss = train_step(params, state)
    losses.append(float(loss))
  assert losses[-1] < losses[0]

  @jax.jit
  def by_step_and_by_sequence(params):
    outputs, _ = lstm.apply({'params': params['lstm']}, xs)
    return decoder.apply({'params': params}, xs), nn.Dense(1).apply({'params': params['head']}, outputs)

  np.testing.assert_allclose(*by_step_and_by_sequence(params), atol=1e-6)


def test_step_alone_initialises_the_sequence_calls_parameters():
  layer = jaxrnn.GRU(H)
  by_step = layer.init(jax.random.key(0), jnp.ones((B, F)), method='step')
  by_call = layer.init(jax.random.key(0), jnp.ones((B, T, F)))
  assert_trees_close(by_step, by_call, atol=0)


# ---- jaxrnn cells inside Flax's wrappers: CellModule -------------------------------------------

CELLS = {
  'lstm': (jaxrnn.LSTMCell(H), (F,)),
  'gru': (jaxrnn.GRUCell(H), (F,)),
  'conv_lstm_1d': (jaxrnn.ConvLSTMCell(H, (3,), spatial_shape=(7,)), (7, 2)),
  'lstm_proj': (jaxrnn.LSTMCell(H, proj_size=2), (F,)),
  'elman_relu': (jaxrnn.ElmanCell(H, nonlinearity='relu'), (F,)),
  'mgu': (jaxrnn.MGUCell(H), (F,)),
  'layer_norm_lstm': (jaxrnn.LayerNormLSTMCell(H), (F,)),
}


@pytest.mark.parametrize(
  'name',
  ['lstm', 'gru', 'conv_lstm_1d', *(slow(n) for n in ('lstm_proj', 'elman_relu', 'mgu', 'layer_norm_lstm'))],
)
def test_nn_rnn_over_cell_module_equals_recurrent(rng, name):
  cell, features = CELLS[name]
  x = jnp.asarray(rng.normal(size=(B, T, *features)), jnp.float32)
  rnn = nn.RNN(jaxrnn.linen.CellModule(cell), return_carry=True)
  variables = rnn.init(jax.random.key(0), x)
  layer = jaxrnn.Recurrent(cell)

  @jax.jit
  def both(variables):
    flax_carry, y = rnn.apply(variables, x)
    return (y, flax_carry), layer.apply({'params': {'l0': variables['params']['cell']}}, x)

  (y, flax_carry), (outputs, final_carry) = both(variables)
  assert jax.tree.structure(flax_carry) == jax.tree.structure(cell.initial_carry((B,)))
  assert_trees_close((y, flax_carry), (outputs, jax.tree.map(lambda leaf: leaf[0], final_carry)), atol=1e-5)


def test_nn_bidirectional_over_cell_modules_equals_a_bidirectional_recurrent(rng):
  cell = jaxrnn.GRUCell(H)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  birnn = nn.Bidirectional(
    nn.RNN(jaxrnn.linen.CellModule(cell)), nn.RNN(jaxrnn.linen.CellModule(cell)), return_carry=True
  )
  variables = birnn.init(jax.random.key(0), x)
  layer = jaxrnn.Recurrent(cell, bidirectional=True)
  flax_params = variables['params']
  params = {'l0': flax_params['forward_rnn']['cell'], 'l0_reverse': flax_params['backward_rnn']['cell']}

  @jax.jit
  def both(variables, params):
    return birnn.apply(variables, x), layer.apply({'params': params}, x)

  (flax_carry, y), (outputs, final_carry) = both(variables, params)
  assert_trees_close(
    (y, flax_carry), (outputs, tuple(jaxrnn.interop.to_flax_carry(final_carry, layer))), atol=1e-5
  )


def test_cell_module_names_a_carry_in_flaxs_order():
  module = jaxrnn.linen.CellModule(jaxrnn.LSTMCell(H))
  x = jnp.ones((B, F))
  state = module.initialize_carry(jax.random.key(0), x.shape)
  assert isinstance(state, jaxrnn.LSTMState)
  variables = module.init(jax.random.key(0), state, x)
  with pytest.raises(TypeError, match=r"Flax's \(c, h\).*LSTMState\(h, c\)"):
    module.apply(variables, (state.c, state.h), x)
  with pytest.raises(ValueError, match=r'`carry\.c` must have shape \(3, 5\)'):
    module.apply(variables, jaxrnn.LSTMState(state.h, state.c[:, :2]), x)
  with pytest.raises(TypeError, match='nn.RNN takes as it is'):
    jaxrnn.linen.CellModule(nn.LSTMCell(H))


def test_cell_module_keeps_the_lstm_cell_state_in_float32_under_bfloat16(rng):
  module = jaxrnn.linen.CellModule(jaxrnn.LSTMCell(H), dtype=jnp.bfloat16)
  x = jnp.asarray(rng.normal(size=(B, F)), jnp.float32)
  state = module.initialize_carry(jax.random.key(0), x.shape)
  assert (state.h.dtype, state.c.dtype) == (jnp.bfloat16, jnp.float32)
  variables = module.init(jax.random.key(0), state, x)
  (h, c), y = module.apply(variables, state, x)
  assert (h.dtype, c.dtype, y.dtype) == (jnp.bfloat16, jnp.float32, jnp.bfloat16)
