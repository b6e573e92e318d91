"""Dropout between layers (PyTorch semantics)."""

import jax
import jax.numpy as jnp
import numpy as np
from conftest import assert_trees_equal
from conftest import make_layer
from conftest import random_variables

from jaxrnn._src.compose import dropout

B, T, F, H = 4, 6, 3, 8
LENGTHS = np.array([6, 3, 0, 1])


def setup(rng, **fields):
  layer = make_layer('lstm', hidden_size=H, num_layers=3, bidirectional=True, dropout=0.5, **fields)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  return layer, random_variables(layer, F, rng), x


def test_inactive_when_deterministic(rng):
  layer, variables, x = setup(rng)
  no_dropout = make_layer('lstm', hidden_size=H, num_layers=3, bidirectional=True)
  want = jax.jit(no_dropout.apply)(variables, x, LENGTHS)
  got = jax.jit(layer.apply)(variables, x, LENGTHS)  # deterministic=True by default, needs no rng
  assert_trees_equal(got, want)


def test_active_differs_by_key_and_repeats_per_key(rng):
  layer, variables, x = setup(rng)
  det = jax.jit(layer.apply)(variables, x, LENGTHS)[0]

  @jax.jit
  def run_with_key(key):
    return layer.apply(variables, x, LENGTHS, deterministic=False, rngs={'dropout': key})[0]

  def run(seed):
    return run_with_key(jax.random.key(seed))

  a, a_again, b = run(0), run(0), run(1)
  np.testing.assert_array_equal(a, a_again)
  assert not np.allclose(a, det) and not np.allclose(a, b)
  valid = np.arange(T)[None, :] < LENGTHS[:, None]
  assert np.all(np.asarray(a)[~valid] == 0)  # padding stays exactly zero
  assert np.all(np.asarray(a)[valid] != 0)  # the last layer's outputs are never dropped


def test_single_layer_has_nothing_to_drop(rng):
  layer = make_layer('gru', hidden_size=H, dropout=0.5)
  variables = random_variables(layer, F, rng)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  a = layer.apply(variables, x, deterministic=False)  # no rng needed: nothing is dropped
  np.testing.assert_array_equal(a[0], layer.apply(variables, x)[0])


def test_gradients_flow_through_dropout(rng):
  layer, variables, x = setup(rng)
  key = jax.random.key(3)
  grads = jax.jit(
    jax.grad(lambda v: jnp.sum(layer.apply(v, x, LENGTHS, deterministic=False, rngs={'dropout': key})[0]))
  )(variables)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_dropout_rate_and_scaling():
  x = jnp.ones((200, 500))
  y = np.asarray(dropout(jax.random.key(0), 0.3, x))
  assert abs((y == 0).mean() - 0.3) < 0.01
  np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)
