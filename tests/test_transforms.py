"""jit, grad, vmap, several batch axes and retracing."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_close
from conftest import assert_trees_equal
from conftest import make_layer
from conftest import random_variables
from conftest import slow

B, T, F, H = 3, 5, 2, 4
LENGTHS = np.array([5, 0, 2])


@pytest.mark.parametrize('kind', ['lstm_proj', *map(slow, ['rnn_tanh', 'rnn_relu', 'lstm', 'gru'])])
def test_jit_equals_eager(rng, kind):
  layer = make_layer(kind, hidden_size=H, num_layers=2, bidirectional=True)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  variables = random_variables(layer, F, rng)
  eager = layer.apply(variables, x, LENGTHS)
  jitted = jax.jit(layer.apply)(variables, x, LENGTHS)
  assert_trees_close(eager, jitted)


@pytest.mark.parametrize('kind', ['gru', *map(slow, ['rnn_tanh', 'rnn_relu', 'lstm', 'lstm_proj'])])
def test_gradients_finite_and_padding_gets_none(rng, kind):
  layer = make_layer(kind, hidden_size=H, num_layers=2, bidirectional=True)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  variables = random_variables(layer, F, rng)

  def loss(variables, x):
    outputs, final = layer.apply(variables, x, LENGTHS)
    return jnp.sum(outputs**2) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final))

  grads, x_grad = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, x)
  for leaf in jax.tree.leaves(grads):
    assert np.all(np.isfinite(leaf)) and np.any(leaf != 0)
  mask = np.arange(T)[None, :] < LENGTHS[:, None]
  assert np.all(np.asarray(x_grad)[~mask] == 0)  # padding never influences anything
  assert np.all(np.isfinite(x_grad))


@pytest.mark.parametrize('kind', ['lstm_proj', slow('gru'), slow('rnn_relu')])
def test_gradients_match_finite_differences_float64(rng, kind):
  layer = make_layer(kind, hidden_size=H, num_layers=2, bidirectional=True, dtype=jnp.float64)
  with jax.enable_x64(True):
    x = jnp.asarray(rng.normal(size=(B, T, F)))
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), random_variables(layer, F, rng))

    @jax.jit
    def loss(variables, x):
      outputs, final = layer.apply(variables, x, LENGTHS)
      assert outputs.dtype == jnp.float64
      return jnp.sum(jnp.tanh(outputs)) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(final))

    jax.test_util.check_grads(loss, (variables, x), order=1, modes=['rev'], atol=1e-6, rtol=1e-6)


@pytest.mark.slow  # default run: test_vmap_over_parameters, test_nnx's vmap over sequences
def test_vmap_over_extra_leading_axis(rng):
  layer = make_layer('lstm', hidden_size=H, bidirectional=True)
  variables = random_variables(layer, F, rng)
  xs = jnp.asarray(rng.normal(size=(2, B, T, F)), jnp.float32)
  lengths = np.stack([LENGTHS, LENGTHS[::-1]])
  batched = jax.vmap(lambda x, n: layer.apply(variables, x, n))(xs, lengths)
  for i in range(2):
    single = layer.apply(variables, xs[i], lengths[i])
    assert_trees_close(jax.tree.map(lambda a: a[i], batched), single)


def test_vmap_over_parameters(rng):
  """An ensemble: vmap over stacked parameters."""
  layer = make_layer('gru', hidden_size=H)
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *[random_variables(layer, F, rng) for _ in range(3)])
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  outputs, _ = jax.vmap(lambda v: layer.apply(v, x, LENGTHS))(stacked)
  one = layer.apply(jax.tree.map(lambda a: a[2], stacked), x, LENGTHS)[0]
  np.testing.assert_allclose(outputs[2], one, atol=1e-6)


def test_new_seq_lengths_values_do_not_retrace(rng):
  layer = make_layer('lstm', hidden_size=H, num_layers=2, bidirectional=True)
  variables = random_variables(layer, F, rng)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def forward(variables, x, lengths):
    return layer.apply(variables, x, lengths)

  results = [forward(variables, x, jnp.asarray(lengths)) for lengths in ([5, 0, 2], [1, 1, 1], [5, 5, 5])]
  assert not np.allclose(results[0][0], results[1][0])
  chex.clear_trace_counter()


def test_traced_lengths_out_of_range_are_clipped(rng):
  layer = make_layer('gru', hidden_size=H, bidirectional=True)
  variables = random_variables(layer, F, rng)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  apply = jax.jit(layer.apply)
  clipped = apply(variables, x, jnp.array([T + 4, -2, 2]))
  want = apply(variables, x, jnp.array([T, 0, 2]))
  assert_trees_equal(clipped, want)


@pytest.mark.slow
def test_grad_through_initial_carry_of_empty_sequence(rng):
  """Length 0 returns the initial carry: its gradient is the identity, not NaN or 0."""
  layer = make_layer('lstm', hidden_size=H)
  variables = random_variables(layer, F, rng)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  carry0 = jax.tree.map(jnp.asarray, (np.ones((1, B, H), np.float32), np.ones((1, B, H), np.float32)))

  def final_c_sum(carry0):
    return jnp.sum(layer.apply(variables, x, LENGTHS, carry0)[1].c[:, 1])

  grad_h, grad_c = jax.grad(final_c_sum)(carry0)
  np.testing.assert_array_equal(grad_c[:, 1], 1.0)
  np.testing.assert_array_equal(grad_h[:, 1], 0.0)
