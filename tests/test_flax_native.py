"""jaxrnn inside Flax code: `step` at init, cells in nn.RNN / nn.Bidirectional, Flax carries."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from conftest import assert_trees_close

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
