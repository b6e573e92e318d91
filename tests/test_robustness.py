"""Numerical robustness, determinism and checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import assert_trees_equal
from conftest import make_layer
from conftest import random_variables
from conftest import slow


@pytest.mark.parametrize('kind', ['lstm', slow('gru'), slow('rnn_tanh')])
def test_ten_thousand_steps_stay_finite_forward_and_backward(rng, kind):
  layer = make_layer(kind, hidden_size=8)
  variables = random_variables(layer, 3, rng, scale=1.0)
  x = jnp.asarray(rng.normal(size=(2, 10_000, 3)), jnp.float32)
  lengths = jnp.array([10_000, 7_000])

  @jax.jit
  def loss_and_grads(variables):
    return jax.value_and_grad(lambda v: jnp.mean(layer.apply(v, x, lengths)[0] ** 2))(variables)

  loss, grads = loss_and_grads(variables)
  assert np.isfinite(loss)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize('kind', ['lstm_proj', *map(slow, ['lstm', 'gru', 'rnn_tanh'])])
def test_saturated_gates_give_no_nan(rng, kind):
  layer = make_layer(kind, hidden_size=4, num_layers=2, bidirectional=True)
  variables = random_variables(layer, 3, rng, scale=30.0)
  x = jnp.asarray(rng.normal(size=(2, 6, 3)) * 1e4, jnp.float32)

  def loss(variables):
    outputs, final = layer.apply(variables, x, jnp.array([6, 2]))
    return jnp.sum(outputs) + sum(jnp.sum(leaf) for leaf in jax.tree.leaves(final))

  value, grads = jax.jit(jax.value_and_grad(loss))(variables)
  assert np.isfinite(value)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_nan_and_inf_in_padding_are_never_read(rng):
  layer = make_layer('lstm_proj', hidden_size=4, num_layers=2, bidirectional=True)
  variables = random_variables(layer, 3, rng)
  x = rng.normal(size=(3, 5, 3)).astype(np.float32)
  lengths = np.array([5, 2, 0])
  dirty = x.copy()
  dirty[1, 2:] = np.nan
  dirty[2] = np.inf

  def loss(variables, x):
    outputs, final = layer.apply(variables, x, lengths)
    return jnp.sum(outputs**2) + jnp.sum(final.c)

  value_and_grad = jax.jit(jax.value_and_grad(loss))  # compiled once for both inputs
  clean_value, clean_grads = value_and_grad(variables, x)
  dirty_value, dirty_grads = value_and_grad(variables, dirty)
  assert_trees_equal((dirty_value, dirty_grads), (clean_value, clean_grads))


def test_same_inputs_and_keys_are_bit_identical(rng):
  layer = make_layer('gru', hidden_size=6, num_layers=3, bidirectional=True, dropout=0.3)
  x = jnp.asarray(rng.normal(size=(4, 7, 3)), jnp.float32)
  lengths = jnp.array([7, 3, 0, 5])
  variables = layer.init(jax.random.key(5), x, lengths)
  assert_trees_equal(variables, layer.init(jax.random.key(5), x, lengths))

  def run():
    return layer.apply(variables, x, lengths, deterministic=False, rngs={'dropout': jax.random.key(9)})

  assert_trees_equal(run(), run())


def test_orbax_checkpoint_restores_bit_exactly(rng, tmp_path):
  layer = make_layer('lstm_proj', hidden_size=5, num_layers=2, bidirectional=True)
  variables = layer.init(jax.random.key(0), jnp.ones((1, 2, 3)))
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / 'ckpt', variables)
  checkpointer.wait_until_finished()
  restored = checkpointer.restore(tmp_path / 'ckpt', jax.tree.map(ocp.utils.to_shape_dtype_struct, variables))
  assert_trees_equal(restored, variables)
  x = jnp.asarray(rng.normal(size=(2, 4, 3)), jnp.float32)
  assert_trees_equal(layer.apply(restored, x), layer.apply(variables, x))
