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
  variables = jax.jit(decoder.init)(jax.random.key(0), xs)
  lstm = jaxrnn.LSTM(H)
  sequence_variables = jax.eval_shape(lstm.init, jax.random.key(0), xs)
  assert jax.tree.map(jnp.shape, variables['params']['lstm']) == jax.tree.map(
    jnp.shape, sequence_variables['params']
  )

  optimizer = optax.adam(3e-2)

  @jax.jit
  def train_step(params, state):
    def loss_fn(params):
      ys = decoder.apply({'params': params}, xs)
      return jnp.mean((ys - targets) ** 2), ys

    (loss, ys), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, new_state = optimizer.update(grads, state)
    return optax.apply_updates(params, updates), new_state, loss, ys

  params, state = variables['params'], optimizer.init(variables['params'])
  losses = []
  for _ in range(5):
    trained, state, loss, ys = train_step(params, state)
    losses.append(float(loss))
    if len(losses) < 5:
      params = trained
  assert losses[-1] < losses[0]
  # The last step's outputs, at the trained parameters it started from, by the sequence call.
  outputs, _ = lstm.apply({'params': params['lstm']}, xs)
  np.testing.assert_allclose(ys, nn.Dense(1).apply({'params': params['head']}, outputs), atol=1e-6)


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
  ['lstm', *(slow(n) for n in ('conv_lstm_1d', 'gru', 'lstm_proj', 'elman_relu', 'mgu', 'layer_norm_lstm'))],
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


# ---- carries: jaxrnn's stacked carry <-> Flax's per-cell carries ------------------------------


def _flax_lstm_params_as_jaxrnn(p):
  """nn.LSTMCell's parameters as a built-in LSTM layer's (the same equations, gates i, f, g, o)."""

  def fused(prefix, part):
    return jnp.concatenate([p[prefix + gate][part] for gate in 'ifgo'], axis=-1)

  return {
    'w_ih': fused('i', 'kernel'),
    'w_hh': fused('h', 'kernel'),
    'b_ih': jnp.zeros(4 * H),
    'b_hh': fused('h', 'bias'),
  }


def test_to_flax_carry_continues_a_sequence_in_flaxs_lstm(rng):
  """jaxrnn.LSTM on the first half, its carry through to_flax_carry, nn.LSTMCell on the rest."""
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  rnn = nn.RNN(nn.LSTMCell(H), return_carry=True)
  flax_variables = rnn.init(jax.random.key(0), x)
  layer = jaxrnn.LSTM(H)
  params = {'l0': _flax_lstm_params_as_jaxrnn(flax_variables['params']['cell'])}

  @jax.jit
  def both():
    outputs, final_carry = layer.apply({'params': params}, x)
    _, half_carry = layer.apply({'params': params}, x[:, : T // 2])
    (row,) = jaxrnn.interop.to_flax_carry(half_carry, layer)
    carry, y = rnn.apply(flax_variables, x[:, T // 2 :], initial_carry=row)
    back = jaxrnn.interop.from_flax_carry([carry], layer)
    return (outputs[:, T // 2 :], final_carry), (y, back)

  want, got = both()
  assert isinstance(got[1], jaxrnn.LSTMState)
  assert_trees_close(got, want, atol=1e-5)


def test_flax_carry_round_trip_of_a_stacked_bidirectional_layer(rng):
  layer = jaxrnn.LSTM(H, num_layers=2, bidirectional=True, proj_size=2)
  carry = jaxrnn.LSTMState(
    jnp.asarray(rng.normal(size=(4, B, 2)), jnp.float32), jnp.asarray(rng.normal(size=(4, B, H)), jnp.float32)
  )
  rows = jaxrnn.interop.to_flax_carry(carry, layer)
  assert [tuple(np.shape(leaf) for leaf in row) for row in rows] == [((B, H), (B, 2))] * 4
  np.testing.assert_array_equal(rows[3][0], carry.c[3])  # row layer*D + direction, (c, h)
  assert_trees_close(jaxrnn.interop.from_flax_carry(rows, layer), carry, atol=0)
  gru = jaxrnn.GRU(H, num_layers=2)
  h = jnp.asarray(rng.normal(size=(2, B, H)), jnp.float32)
  assert_trees_close(jaxrnn.interop.from_flax_carry(jaxrnn.interop.to_flax_carry(h, gru), gru), h, atol=0)


def test_carries_of_the_wrong_convention_are_named_errors():
  x = jnp.ones((B, T, F))
  c, h = nn.LSTMCell(H).initialize_carry(jax.random.key(0), (B, F))
  lstm = jaxrnn.LSTM(H)
  variables = jax.eval_shape(lstm.init, jax.random.key(0), x)
  # Flax's per-cell (c, h): one axis short of the layer's [L*D, *batch, H].
  with pytest.raises(ValueError, match=r'lacks the leading \[L\*D\] axis.*from_flax_carry'):
    jax.eval_shape(lambda v: lstm.apply(v, x, None, (c, h)), variables)
  # With a projection the shapes tell (c, h) from (h, c).
  proj = jaxrnn.LSTM(H, proj_size=2)
  state = proj.initial_carry((B,))
  proj_variables = jax.eval_shape(proj.init, jax.random.key(0), x)
  with pytest.raises(ValueError, match=r"looks like \(c, h\), Flax's order"):
    jax.eval_shape(lambda v: proj.apply(v, x, None, (state.c, state.h)), proj_variables)
  # A list of per-row carries.
  with pytest.raises(TypeError, match='from_flax_carry'):
    jax.eval_shape(lambda v: lstm.apply(v, x, None, [(c[None], h[None])]), variables)
  # jaxrnn's LSTMState where a Flax cell carries (c, h).
  flax_layer = jaxrnn.Recurrent(jaxrnn.linen.FlaxCell(nn.LSTMCell(H)))
  flax_variables = jax.eval_shape(flax_layer.init, jax.random.key(0), x)
  with pytest.raises(TypeError, match=r"Flax's order \(c, h\).*\(state\.c, state\.h\)"):
    jax.eval_shape(lambda v: flax_layer.apply(v, x, None, lstm.initial_carry((B,))), flax_variables)
  # from_flax_carry counts rows.
  with pytest.raises(TypeError, match=r'L\*D = 1 per-cell carries.*got a tuple of 2 items.*\[carry\]'):
    jaxrnn.interop.from_flax_carry((c, h), lstm)
  with pytest.raises(TypeError, match=r"`rows\[0\]` must be Flax's LSTM carry \(c, h\).*L\*D = 2 such pairs"):
    jaxrnn.interop.from_flax_carry((c, h), jaxrnn.LSTM(H, bidirectional=True))
