"""MGUCell and ConvLSTMCell against Flax's own cells, LayerNormLSTMCell against float64 NumPy.

Oracles: Flax's ``nn.MGUCell`` / ``nn.ConvLSTMCell`` (one step, and ``nn.RNN`` over
each sequence alone, trimmed to its length, for padded and bidirectional layers);
a float64 NumPy LayerNormLSTM written from the equations of its docstring; and a
per-sequence Python loop over the cell itself (no jaxrnn masking or reversal).
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_close
from conftest import slow
from flax import nnx

import jaxrnn

B, T, F, H = 3, 5, 4, 3
C = 2  # ConvLSTM input channels

# Spatial rank -> (spatial shape S, kernel size); the 2-D kernel is even on one axis, where
# 'SAME' pads unevenly.
CONV_SHAPES = {1: ((6,), (3,)), 2: ((4, 5), (3, 2)), 3: ((3, 4, 3), (3, 1, 2))}


def normal(rng, shape, scale=0.5):
  return jnp.asarray(rng.normal(size=shape) * scale, jnp.float32)


def random_params(init, rng, *args, scale=0.5):
  """Normal(0, scale) values shaped like ``init(key, *args)`` (biases and scales away from their
  initial values), without running the initializers: on XLA:CPU each new shape of a random
  draw compiles for seconds."""
  shapes = jax.eval_shape(lambda key: init(key, *args), jax.random.key(0))
  return jax.tree.map(lambda a: normal(rng, a.shape, scale), shapes)


def flax_shapes(flax_cell, carry, x):
  return jax.tree.map(jnp.shape, jax.eval_shape(flax_cell.init, jax.random.key(0), carry, x)['params'])


def conv_cell(ndim, **fields):
  spatial, kernel = CONV_SHAPES[ndim]
  return jaxrnn.ConvLSTMCell(H, kernel, spatial_shape=spatial, **fields)


def flax_conv_cell(ndim, **fields):
  return nn.ConvLSTMCell(H, CONV_SHAPES[ndim][1], **fields)


def conv_features(ndim, channels=C):
  return (*CONV_SHAPES[ndim][0], channels)


def run_flax(flax_cell, params, x, carry=None, reverse=False):
  """Returns ``(final_carry, outputs)`` of ``nn.RNN(flax_cell)`` over ``x: [B, T, ...]``."""
  rnn = nn.RNN(flax_cell, reverse=reverse, keep_order=True)
  return rnn.apply({'params': {'cell': params}}, x, initial_carry=carry, return_carry=True)


def stack_rows(rows):
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *rows)


# ---------------------------------------------------------------------------------------------
# MGUCell vs flax.linen.MGUCell


@pytest.mark.parametrize('reset_gate', [True, False])
def test_mgu_step_equals_flax(rng, reset_gate):
  flax_cell = nn.MGUCell(H, reset_gate=reset_gate)
  x, h = normal(rng, (B, F)), normal(rng, (B, H))
  cell = jaxrnn.MGUCell(H, reset_gate=reset_gate)
  params = random_params(cell.init, rng, F)
  assert jax.tree.map(jnp.shape, params) == flax_shapes(flax_cell, h, x)  # Flax's tree, unchanged
  assert_trees_close(cell(params, h, x), flax_cell.apply({'params': params}, h, x), atol=1e-6)


def test_mgu_defaults_are_flax_defaults():
  cell, flax_cell = jaxrnn.MGUCell(H), nn.MGUCell(H)
  key, shape = jax.random.key(3), (F, H)
  for ours, theirs in [
    (cell.kernel_init, flax_cell.kernel_init),
    (cell.recurrent_kernel_init, flax_cell.recurrent_kernel_init),
    (cell.forget_bias_init, flax_cell.forget_bias_init),
    (cell.activation_bias_init, flax_cell.activation_bias_init),
  ]:
    np.testing.assert_array_equal(ours(key, shape), theirs(key, shape))
  assert cell.gate_fn is flax_cell.gate_fn and cell.activation_fn is flax_cell.activation_fn
  assert cell.reset_gate == flax_cell.reset_gate
  np.testing.assert_array_equal(cell.forget_bias_init(key, (H,)), np.ones(H))  # less forgetting at first
  assert cell == jaxrnn.MGUCell(H) and hash(cell) == hash(jaxrnn.MGUCell(H))


def test_mgu_layer_equals_flax_rnn(rng):
  cell, flax_cell = jaxrnn.MGUCell(H), nn.MGUCell(H)
  x = normal(rng, (B, T, F), 1.0)
  params = random_params(cell.init, rng, F)
  outputs, final = jaxrnn.Recurrent(cell).apply({'params': {'l0': params}}, x)
  want_final, want_outputs = run_flax(flax_cell, params, x)
  assert_trees_close((outputs, final[0]), (want_outputs, want_final), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# ConvLSTMCell vs flax.linen.ConvLSTMCell


@pytest.mark.parametrize('ndim', [slow(1), 2, slow(3)])
def test_conv_lstm_step_equals_flax(rng, ndim):
  cell, flax_cell = conv_cell(ndim), flax_conv_cell(ndim)
  x = normal(rng, (B, *conv_features(ndim)), 1.0)
  carry = (normal(rng, (B, *CONV_SHAPES[ndim][0], H)), normal(rng, (B, *CONV_SHAPES[ndim][0], H)))
  params = random_params(cell.init, rng, conv_features(ndim))
  assert jax.tree.map(jnp.shape, params) == flax_shapes(flax_cell, carry, x)
  assert_trees_close(cell(params, carry, x), flax_cell.apply({'params': params}, carry, x), atol=1e-6)


@pytest.mark.parametrize(
  'padding',
  [
    'SAME',
    'CIRCULAR',
    slow('REFLECT'),
    ((1, 1), (0, 1)),
    slow((1, (1, 0))),
    slow('same'),
    slow('SAME_LOWER'),
  ],
)
def test_conv_lstm_paddings_equal_flax(rng, padding):
  ndim = 2
  cell, flax_cell = conv_cell(ndim, padding=padding), flax_conv_cell(ndim, padding=padding)
  if padding == 'SAME_LOWER':  # Flax passes it to lax, which pads (1, 0) on the kernel-2 axis
    assert cell._explicit_padding()[0] == ((1, 1), (1, 0))
  x = normal(rng, (B, *conv_features(ndim)), 1.0)
  carry = flax_cell.initialize_carry(jax.random.key(0), x.shape)
  carry = jax.tree.map(lambda a: normal(rng, a.shape), carry)
  params = random_params(cell.init, rng, conv_features(ndim))
  assert jax.tree.map(jnp.shape, params) == flax_shapes(flax_cell, carry, x)
  assert_trees_close(cell(params, carry, x), flax_cell.apply({'params': params}, carry, x), atol=1e-6)


def test_conv_lstm_causal_and_no_bias_equal_flax(rng):
  cell = conv_cell(1, padding='CAUSAL', use_bias=False)
  flax_cell = flax_conv_cell(1, padding='CAUSAL', use_bias=False)
  x = normal(rng, (B, *conv_features(1)), 1.0)
  carry = jax.tree.map(lambda a: normal(rng, a.shape), cell.initial_carry((B,)))
  params = random_params(cell.init, rng, conv_features(1))
  assert jax.tree.map(jnp.shape, params) == flax_shapes(flax_cell, carry, x)
  assert 'bias' not in params['ih'] and 'bias' not in params['hh']
  assert_trees_close(cell(params, carry, x), flax_cell.apply({'params': params}, carry, x), atol=1e-6)


def test_conv_lstm_defaults_are_flax_defaults():
  cell = conv_cell(2)
  key, shape = jax.random.key(3), (F, 4 * H)  # the same functions; a 2-D draw compiles fast
  np.testing.assert_array_equal(cell.kernel_init(key, shape), nn.linear.default_kernel_init(key, shape))
  np.testing.assert_array_equal(
    cell.recurrent_kernel_init(key, shape), nn.linear.default_kernel_init(key, shape)
  )
  np.testing.assert_array_equal(cell.bias_init(key, (4 * H,)), np.zeros(4 * H))
  assert (cell.strides, cell.padding, cell.use_bias) == (None, 'SAME', True)


@pytest.mark.parametrize('ndim', [1, slow(2), 3])
def test_conv_lstm_layer_equals_flax_rnn(rng, ndim):
  cell, flax_cell = conv_cell(ndim), flax_conv_cell(ndim)
  x = normal(rng, (B, T, *conv_features(ndim)), 1.0)
  params = random_params(cell.init, rng, conv_features(ndim))
  outputs, final = jaxrnn.Recurrent(cell).apply({'params': {'l0': params}}, x)
  want_final, want_outputs = run_flax(flax_cell, params, x)
  assert_trees_close((outputs, jax.tree.map(lambda a: a[0], final)), (want_outputs, want_final), atol=1e-6)


def flax_trimmed_oracle(flax_cell, variables, x, lengths, num_layers, bidirectional):
  """Each sequence alone, trimmed to its length, through Flax's ``nn.RNN`` layer by layer.

  Returns ``(outputs [B, T, *S, D*H], final carry rows [L*D] of (c, h) [B, *S, H])``: zeros
  past each length, and the zero carry for length 0.
  """
  names = [f'l{k}{s}' for k in range(num_layers) for s in ('', '_reverse')[: 1 + bidirectional]]
  outputs, finals = [], []
  for b, length in enumerate(lengths):
    inputs = x[b : b + 1, :length]
    rows = []
    for layer in range(num_layers):
      ys = []
      for direction, name in enumerate(
        names[layer * (1 + bidirectional) : (layer + 1) * (1 + bidirectional)]
      ):
        params = variables['params'][name]
        if length == 0:
          zeros = jnp.zeros((1, *x.shape[2:-1], H))
          carry, y = (zeros, zeros), jnp.zeros((1, 0, *x.shape[2:-1], H))
        else:
          carry, y = run_flax(flax_cell, params, inputs, reverse=direction == 1)
        rows.append(carry)
        ys.append(y)
      inputs = jnp.concatenate(ys, axis=-1)
    pad = jnp.zeros((1, x.shape[1] - length, *inputs.shape[2:]))
    outputs.append(jnp.concatenate([inputs, pad], axis=1))
    finals.append(rows)
  final = [
    jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *[f[row] for f in finals])
    for row in range(len(names))
  ]
  return jnp.concatenate(outputs), final


@pytest.mark.parametrize(
  'ndim, num_layers', [(1, 1), slow(1, 2), slow(2, 2), slow(3, 2), slow(2, 1), slow(3, 1)]
)
def test_conv_lstm_bidirectional_padded_equals_flax_per_sequence(rng, ndim, num_layers):
  cell, flax_cell = conv_cell(ndim), flax_conv_cell(ndim)
  layer = jaxrnn.Recurrent(cell, num_layers=num_layers, bidirectional=True)
  x = normal(rng, (B, T, *conv_features(ndim)), 1.0)
  lengths = np.array([T, 2, 0])
  x = x.at[1, 2:].set(jnp.nan)  # padding is never read
  variables = random_params(layer.init, rng, x, lengths)
  outputs, final = layer.apply(variables, x, lengths)
  want_outputs, want_rows = flax_trimmed_oracle(flax_cell, variables, x, lengths, num_layers, True)
  np.testing.assert_array_equal(outputs[1, 2:], 0.0)  # exact zeros at padding
  np.testing.assert_array_equal(outputs[2], 0.0)
  assert_trees_close(outputs, want_outputs, atol=1e-5)
  assert_trees_close(final, stack_rows(want_rows), atol=1e-5)


def test_conv_lstm_step_and_chunks_equal_the_sequence_call(rng):
  ndim = 2
  layer = jaxrnn.Recurrent(conv_cell(ndim), num_layers=2)
  x = normal(rng, (2, T, *conv_features(ndim)), 1.0)
  variables = random_params(layer.init, rng, x)
  outputs, final = layer.apply(variables, x)
  carry = layer.initial_carry((2,))
  for t in range(T):
    y_t, carry = layer.apply(variables, x[:, t], carry, method='step')
    assert_trees_close(y_t, outputs[:, t], atol=1e-6)
  assert_trees_close(carry, final, atol=1e-6)
  first, carry = layer.apply(variables, x[:, :2])
  second, carry = layer.apply(variables, x[:, 2:], None, carry)
  assert_trees_close(jnp.concatenate([first, second], axis=1), outputs, atol=1e-6)
  assert_trees_close(carry, final, atol=1e-6)


@pytest.mark.slow
def test_conv_lstm_batch_axes_and_time_major_equal_the_plain_layout(rng):
  ndim = 2
  layer = jaxrnn.Recurrent(conv_cell(ndim), bidirectional=True)
  x = normal(rng, (2, 2, T, *conv_features(ndim)), 1.0)
  lengths = np.array([[T, 3], [1, 0]])
  variables = random_params(layer.init, rng, x, lengths)
  outputs, final = layer.apply(variables, x, lengths)
  flat_outputs, flat_final = layer.apply(variables, x.reshape(4, *x.shape[2:]), lengths.reshape(4))
  assert_trees_close(outputs.reshape(flat_outputs.shape), flat_outputs, atol=1e-6)
  assert_trees_close(
    jax.tree.map(lambda a: a.reshape(a.shape[0], 4, *a.shape[3:]), final), flat_final, atol=1e-6
  )
  time_major = layer.clone(time_major=True)
  tm_outputs, tm_final = time_major.apply(variables, jnp.moveaxis(x, 2, 0), lengths)
  assert_trees_close(jnp.moveaxis(tm_outputs, 0, 2), outputs, atol=1e-6)
  assert_trees_close(tm_final, final, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# LayerNormLSTMCell vs float64 NumPy


def np_sigmoid(v):
  return 1.0 / (1.0 + np.exp(-v))


def np_layer_norm(v, scale, bias, epsilon):
  mean = v.mean(-1, keepdims=True)
  variance = ((v - mean) ** 2).mean(-1, keepdims=True)
  return scale * (v - mean) / np.sqrt(variance + epsilon) + (0.0 if bias is None else bias)


def np_layer_norm_lstm(params, carry, x, epsilon=1e-5):
  """The docstring's equations in float64: gates ``i, f, g, o``, LN on each matmul and on ``c'``."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  h, c = (np.asarray(a, np.float64) for a in carry)
  x = np.asarray(x, np.float64)
  z = np_layer_norm(x @ p['w_ih'], p['ln_ih_scale'], None, epsilon)
  z = z + np_layer_norm(h @ p['w_hh'], p['ln_hh_scale'], None, epsilon) + p.get('bias', 0.0)
  i, f, g, o = np.split(z, 4, axis=-1)
  c = np_sigmoid(f) * c + np_sigmoid(i) * np.tanh(g)
  h = np_sigmoid(o) * np.tanh(np_layer_norm(c, p['ln_c_scale'], p.get('ln_c_bias'), epsilon))
  return (h, c), h


@pytest.mark.parametrize('use_bias, epsilon', [slow(True, 1e-5), (False, 0.1)])
def test_layer_norm_lstm_step_equals_numpy(rng, use_bias, epsilon):
  cell = jaxrnn.LayerNormLSTMCell(H, use_bias=use_bias, epsilon=epsilon)
  params = random_params(cell.init, rng, F)
  assert sorted(params) == sorted(
    ['w_ih', 'w_hh', 'ln_ih_scale', 'ln_hh_scale', 'ln_c_scale'] + ['bias', 'ln_c_bias'] * use_bias
  )
  carry = jaxrnn.LSTMState(normal(rng, (B, H)), normal(rng, (B, H), 2.0))
  x = normal(rng, (B, F), 1.0)
  want = np_layer_norm_lstm(params, carry, x, epsilon)
  assert_trees_close(cell(params, carry, x), want, atol=2e-6)
  with jax.enable_x64(True):  # in float64 the cell is the equations to rounding
    to64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)  # noqa: E731
    assert_trees_close(cell(to64(params), to64(carry), to64(x)), want, atol=1e-12)


def test_layer_norm_lstm_init():
  params = jaxrnn.LayerNormLSTMCell(H).init(jax.random.key(0), F)
  for name in ('ln_ih_scale', 'ln_hh_scale', 'ln_c_scale'):
    np.testing.assert_array_equal(params[name], 1.0)
  np.testing.assert_array_equal(params['ln_c_bias'], 0.0)
  bound = 1 / np.sqrt(H)  # PyTorch's default, as jaxrnn's LSTMCell
  assert params['w_ih'].shape == (F, 4 * H) and float(abs(params['w_ih']).max()) <= bound
  assert params['w_hh'].shape == (H, 4 * H) and float(abs(params['bias']).max()) <= bound


def loop_oracle(cell, variables, x, lengths, num_layers, bidirectional):
  """Each sequence alone, trimmed to its length, stepped by the cell in a Python loop (unbatched)."""
  directions = 1 + bidirectional
  names = [f'l{k}{s}' for k in range(num_layers) for s in ('', '_reverse')[:directions]]
  outputs, finals = [], []
  for b, length in enumerate(lengths):
    inputs = [x[b, t] for t in range(length)]
    rows = []
    for layer in range(num_layers):
      ys = []
      for direction in range(directions):
        params = variables['params'][names[layer * directions + direction]]
        carry, out = cell.initial_carry(()), [None] * length
        order = range(length - 1, -1, -1) if direction else range(length)
        for t in order:
          carry, out[t] = cell(params, carry, inputs[t])
        rows.append(carry)
        ys.append(out)
      inputs = [jnp.concatenate([y[t] for y in ys], axis=-1) for t in range(length)]
    width = directions * cell.output_size
    padded = inputs + [jnp.zeros(x.shape[2:-1] + (width,))] * (x.shape[1] - length)
    outputs.append(jnp.stack(padded))
    finals.append(rows)
  final = [stack_rows([f[row] for f in finals]) for row in range(len(names))]
  return jnp.stack(outputs), stack_rows(final)


@pytest.mark.parametrize(
  'num_layers, bidirectional', [slow(1, True), slow(2, True), slow(1, False), slow(2, False)]
)
def test_layer_norm_lstm_layer_equals_loop(rng, num_layers, bidirectional):
  cell = jaxrnn.LayerNormLSTMCell(H)
  layer = jaxrnn.Recurrent(cell, num_layers=num_layers, bidirectional=bidirectional)
  x = normal(rng, (B, T, F), 1.0)
  lengths = np.array([T, 3, 0])
  variables = random_params(layer.init, rng, x, lengths)
  outputs, final = layer.apply(variables, x, lengths)
  want_outputs, want_final = loop_oracle(cell, variables, x, lengths, num_layers, bidirectional)
  np.testing.assert_array_equal(outputs[1, 3:], 0.0)
  assert isinstance(final, jaxrnn.LSTMState)
  assert_trees_close(outputs, want_outputs, atol=1e-5)
  assert_trees_close(final, want_final, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# All three cells: gradients, bfloat16, NNX


CELLS = {
  'mgu': (jaxrnn.MGUCell(H), F),
  # The cell of ConvLSTMCell's docstring example: its kernels' random draws compile once for both.
  'conv_lstm': (jaxrnn.ConvLSTMCell(4, (3, 3), spatial_shape=(5, 5)), (5, 5, 2)),
  'layer_norm_lstm': (jaxrnn.LayerNormLSTMCell(H), F),
}


def cell_inputs(rng, in_features, steps=T):
  shape = in_features if isinstance(in_features, tuple) else (in_features,)
  return normal(rng, (B, steps, *shape), 1.0)


@pytest.mark.parametrize('name', ['conv_lstm_1d', slow('conv_lstm'), slow('mgu'), slow('layer_norm_lstm')])
def test_gradient_equals_loop_gradient(rng, name):
  """The padded bidirectional layer's parameter gradient equals the per-sequence loop's."""
  cell, in_features = CELLS[name] if name in CELLS else (conv_cell(1), conv_features(1))
  layer = jaxrnn.Recurrent(cell, bidirectional=True)
  x = cell_inputs(rng, in_features, steps=3)
  lengths = np.array([3, 1, 0])
  variables = random_params(layer.init, rng, x, lengths)
  weights = normal(rng, layer.apply(variables, x, lengths)[0].shape)

  def loss(variables, run):
    outputs, final = run(variables)
    return jnp.sum(outputs * weights) + sum(jnp.sum(leaf) for leaf in jax.tree.leaves(final))

  grad = jax.jit(jax.grad(loss), static_argnums=1)
  got = grad(variables, lambda v: layer.apply(v, x, lengths))
  want = grad(variables, lambda v: loop_oracle(cell, v, x, lengths, 1, True))
  assert_trees_close(got, want, atol=1e-5)


@pytest.mark.parametrize('name', [slow('conv_lstm'), slow('layer_norm_lstm'), slow('mgu')])
def test_bfloat16_layer_is_close_to_float32(rng, name):
  cell, in_features = CELLS[name]
  layer = jaxrnn.Recurrent(cell)
  x = cell_inputs(rng, in_features)
  lengths = np.array([T, 2, 1])
  variables = random_params(layer.init, rng, x, lengths)
  outputs, final = layer.clone(dtype=jnp.bfloat16).apply(variables, x, lengths)
  want_outputs, want_final = layer.apply(variables, x, lengths)
  assert outputs.dtype == jnp.bfloat16
  assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(final))
  assert_trees_close(outputs, want_outputs, atol=0.05)
  assert_trees_close(final, want_final, atol=0.05)


@pytest.mark.parametrize('name', ['mgu', slow('conv_lstm'), slow('layer_norm_lstm')])
def test_nnx_recurrent_equals_linen(rng, name):
  cell, in_features = CELLS[name]
  x = cell_inputs(rng, in_features)
  lengths = np.array([T, 3, 1])
  module = jaxrnn.nnx.Recurrent(cell, in_features, rngs=nnx.Rngs(0))  # drawn by the cell's own init
  outputs, final = module(x, lengths)
  assert outputs.shape == (*x.shape[:-1], cell.output_size)
  assert jax.tree.structure(final) == jax.tree.structure(cell.initial_carry((B,)))
  # Parameters of a cell without hooks are the cell's own tree: module.l0.tree is cell.init's.
  assert jax.tree.map(jnp.shape, module.l0()) == jax.tree.map(
    jnp.shape, jax.eval_shape(lambda key: cell.init(key, in_features), jax.random.key(0))
  )
  back, back_variables = jaxrnn.interop.nnx_to_linen(module)
  assert_trees_close(back.apply(back_variables, x, lengths), (outputs, final), atol=1e-6)

  layer = jaxrnn.Recurrent(cell)  # the module's configuration: one compiled program for all calls
  variables = random_params(layer.init, rng, x, lengths)
  twin = jaxrnn.interop.linen_to_nnx(layer, variables, in_features=in_features)
  assert_trees_close(twin(x, lengths), layer.apply(variables, x, lengths), atol=1e-6)


@pytest.mark.parametrize('name', [slow('conv_lstm'), 'layer_norm_lstm'])
def test_recurrent_dropout_masks_h_not_c(rng, name):
  """With ``h = 0`` and ``c != 0`` at the start, the first step is the same with and without
  recurrent dropout only if ``c`` is left unmasked; later steps read a masked ``h``."""
  cell, in_features = CELLS[name]
  layer = jaxrnn.Recurrent(cell, recurrent_dropout=0.5)
  x = cell_inputs(rng, in_features, steps=2)
  variables = random_params(layer.init, rng, x)
  zeros = layer.initial_carry((B,))
  if isinstance(zeros, jaxrnn.LSTMState):
    carry = jaxrnn.LSTMState(zeros.h, normal(rng, zeros.c.shape, 1.0))
  else:  # Flax's (c, h)
    carry = (normal(rng, zeros[0].shape, 1.0), zeros[1])
  kept, _ = layer.apply(variables, x, None, carry)
  dropped, _ = layer.apply(
    variables, x, None, carry, deterministic=False, rngs={'dropout': jax.random.key(1)}
  )
  assert_trees_close(dropped[:, 0], kept[:, 0], atol=1e-6)
  assert not np.allclose(dropped[:, 1], kept[:, 1], atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Hyper-parameter errors and hashing


@pytest.mark.parametrize(
  'make, error, match',
  [
    (lambda: jaxrnn.MGUCell(0), ValueError, '`features` must be >= 1'),
    (lambda: jaxrnn.MGUCell(4, reset_gate='yes'), TypeError, '`reset_gate`'),
    (lambda: jaxrnn.MGUCell(4, gate_fn=None), TypeError, '`gate_fn` must be callable'),
    (lambda: jaxrnn.LayerNormLSTMCell(4, epsilon=0.0), ValueError, '`epsilon` must be a positive'),
    (lambda: jaxrnn.LayerNormLSTMCell(2.5), TypeError, '`hidden_size` must be an int'),
    (lambda: jaxrnn.ConvLSTMCell(4, 3, spatial_shape=(5,)), TypeError, '`kernel_size` must be a tuple'),
    (lambda: jaxrnn.ConvLSTMCell(4, (3, 3), spatial_shape=(5,)), ValueError, '`spatial_shape`'),
    (lambda: jaxrnn.ConvLSTMCell(4, (3, 3), (2, 2), spatial_shape=(5, 5)), ValueError, '`strides` must be 1'),
    (lambda: jaxrnn.ConvLSTMCell(4, (3, 3), padding='VALID', spatial_shape=(5, 5)), ValueError, 'k - 1 = 2'),
    (lambda: jaxrnn.ConvLSTMCell(4, (3, 3), padding='CAUSAL', spatial_shape=(5, 5)), ValueError, 'CAUSAL'),
    (lambda: jaxrnn.ConvLSTMCell(4, (3, 3), padding='FULL', spatial_shape=(5, 5)), ValueError, '`padding`'),
    (lambda: jaxrnn.ConvLSTMCell(4, (3, 3), use_bias=1, spatial_shape=(5, 5)), TypeError, '`use_bias`'),
  ],
)
def test_bad_hyper_parameters_name_the_argument(make, error, match):
  with pytest.raises(error, match=match):
    make()


def test_conv_lstm_is_hashable_and_names_a_wrong_spatial_shape():
  cell = jaxrnn.ConvLSTMCell(4, [3, 3], strides=1, padding=[(1, 1), 1], spatial_shape=[5, 5])
  assert cell.kernel_size == (3, 3) and cell.spatial_shape == (5, 5) and cell.strides == (1, 1)
  assert hash(cell) == hash(dataclasses.replace(cell)) and cell.feature_ndim == 3
  layer = jaxrnn.Recurrent(cell)
  with pytest.raises(ValueError, match=r'spatial shape \(5, 5\)'):
    layer.init(jax.random.key(0), jnp.ones((2, 3, 6, 5, 2)))
  params = jax.tree.map(
    jnp.zeros_like, jax.eval_shape(lambda key: cell.init(key, (5, 5, 2)), jax.random.key(0))
  )
  with pytest.raises(ValueError, match='`x` must have shape'):
    cell(params, cell.initial_carry((2,)), jnp.ones((2, 5, 5, 3)))
  with pytest.raises(ValueError, match=r'`carry` \(c\)'):
    cell(params, cell.initial_carry((3,)), jnp.ones((2, 5, 5, 2)))
  with pytest.raises(
    ValueError, match=r"keys \['hh', 'ih'\], got keys \['params'\] \(pass variables\['params'\]"
  ):
    cell({'params': params}, cell.initial_carry((2,)), jnp.ones((2, 5, 5, 2)))
