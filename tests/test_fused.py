"""The hand-written backward pass and chunked checkpointing against JAX's autodiff of the scan.

``scan_layer`` (autodiff) is itself checked against a Python loop (test_scan.py) and its
gradients against finite differences (test_transforms.py), so here the fused path must
give the same values and gradients to float64 round-off.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_close
from conftest import each_value
from conftest import make_layer
from conftest import random_variables
from conftest import slow

from jaxrnn import LSTMState
from jaxrnn._src.cells import CELL_KINDS
from jaxrnn._src.fused import fused_scan_layer
from jaxrnn._src.scan import scan_layer
from jaxrnn._src.types import CellParams

T, B, F, H = 7, 4, 3, 5
LENGTHS = np.array([0, 3, 7, 1])


def float64_inputs(rng, kind):
  gates = kind.num_gates * H
  params = CellParams(
    w_ih=rng.normal(size=(F, gates)) * 0.5,
    w_hh=rng.normal(size=(H, gates)) * 0.5,
    b_ih=rng.normal(size=gates),
    b_hh=rng.normal(size=gates),
  )
  h = rng.normal(size=(B, H))
  carry = LSTMState(h, 2 * h) if kind.has_cell_state else h
  xs = rng.normal(size=(T, B, F))
  weights = rng.normal(size=(T, B, H))  # a loss that weighs every output differently
  return jax.tree.map(jnp.asarray, (params, carry, xs, weights))


OPTIONS = {'checkpoint3': {'checkpoint_every': 3}, 'hoist': {'hoist_input_projection': True}, 'plain': {}}
DIRECTIONS = {'reverse_ragged': (True, True), 'forward_ragged': (False, True), 'reverse_full': (True, False)}


# The default run: each cell, direction and option once; the slow tier: all 36 combinations.
@pytest.mark.parametrize('cell,direction,options', each_value(sorted(CELL_KINDS), DIRECTIONS, OPTIONS))
def test_fused_equals_autodiff_float64(rng, cell, direction, options):
  kind = CELL_KINDS[cell]
  (reverse, ragged), options = DIRECTIONS[direction], OPTIONS[options]
  with jax.enable_x64(True):
    params, carry, xs, weights = float64_inputs(rng, kind)
    lengths = jnp.asarray(LENGTHS) if ragged else None

    def loss(scan, params, carry, xs):
      final, ys = scan(params, carry, xs)
      return jnp.sum(ys * weights) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(final))

    def autodiff(params, carry, xs):
      return scan_layer(kind.recurrence, params, carry, xs, lengths, reverse=reverse, **options)

    def fused(params, carry, xs):
      return fused_scan_layer(kind, params, carry, xs, lengths, reverse=reverse, **options)

    want = jax.jit(jax.value_and_grad(lambda *a: loss(autodiff, *a), argnums=(0, 1, 2)))(params, carry, xs)
    got = jax.jit(jax.value_and_grad(lambda *a: loss(fused, *a), argnums=(0, 1, 2)))(params, carry, xs)
    assert got[0].dtype == jnp.float64
    assert_trees_close(got, want, atol=1e-10)


@pytest.mark.parametrize('every', [3, *map(slow, [1, 2, 7, 100])])
def test_checkpoint_every_matches_plain_scan(rng, every):
  """Chunk sizes that divide T, do not, equal it and exceed it; with all-valid inputs."""
  kind = CELL_KINDS['lstm']
  with jax.enable_x64(True):
    params, carry, xs, weights = float64_inputs(rng, kind)

    def loss(params, every):
      final, ys = scan_layer(kind.recurrence, params, carry, xs, checkpoint_every=every)
      return jnp.sum(ys * weights) + jnp.sum(final.c)

    want = jax.value_and_grad(loss)(params, 0)
    assert_trees_close(jax.value_and_grad(loss)(params, every), want, atol=1e-10)


@pytest.mark.slow  # default run: test_scan's options test and the fused float64 tests
@pytest.mark.parametrize('kind', ['lstm', 'gru', 'rnn_tanh'])
def test_layer_options_change_nothing_numerically(rng, kind):
  """The layers' speed/memory options give the same outputs, final carry and gradients."""
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  lengths = jnp.asarray(LENGTHS)
  base = make_layer(kind, hidden_size=H, num_layers=2, bidirectional=True, fused_backward=False)
  variables = random_variables(base, F, rng)

  def value_and_grad(layer):
    def loss(variables):
      outputs, final = layer.apply(variables, x, lengths)
      return jnp.sum(outputs**2) + sum(jnp.sum(leaf) for leaf in jax.tree.leaves(final))

    return jax.jit(jax.value_and_grad(loss))(variables)

  want = value_and_grad(base)
  for options in (
    {'fused_backward': True},
    {'checkpoint_every': 2},
    {'fused_backward': True, 'checkpoint_every': 3},
  ):
    layer = make_layer(kind, hidden_size=H, num_layers=2, bidirectional=True, **options)
    assert_trees_close(value_and_grad(layer), want, atol=1e-5)


def test_fused_bfloat16_gradients_close_to_float32(rng):
  """bfloat16 compute: gradients within the documented bfloat16 tolerance of float32's."""
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  layer32 = make_layer('lstm', hidden_size=H, num_layers=2)
  variables = random_variables(layer32, F, rng)

  def grads(layer):
    return jax.jit(jax.grad(lambda v: jnp.sum(layer.apply(v, x, jnp.asarray(LENGTHS))[0])))(variables)

  got = grads(make_layer('lstm', hidden_size=H, num_layers=2, dtype=jnp.bfloat16))
  want = grads(layer32)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(got))  # parameters' dtype
  assert_trees_close(got, want, atol=3e-2)


@pytest.mark.parametrize('fused', [True, slow(False)])
def test_bfloat16_weight_gradients_sum_in_float32_over_long_sequences(rng, fused):
  """The bias gradient sums T*B per-step terms: in bfloat16 that sum would stall (S4: 88% off)."""
  x = jnp.asarray(rng.normal(size=(2, 2048, 3)), jnp.float32)
  variables = random_variables(make_layer('lstm', hidden_size=4), 3, rng)

  def bias_grad(dtype):
    layer = make_layer('lstm', hidden_size=4, dtype=dtype, fused_backward=fused)
    grads = jax.jit(jax.grad(lambda v: jnp.sum(layer.apply(v, x)[0].astype(jnp.float32))))(variables)
    return grads['params']['l0']['b_ih']

  got, want = bias_grad(jnp.bfloat16), bias_grad(jnp.float32)
  assert float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want)) < 2e-2


@pytest.mark.parametrize('fused', [True, slow(False)])
def test_gradient_of_an_empty_time_axis(fused):
  """T = 0: the weights get zero gradients and the initial carry the identity."""
  layer = make_layer('gru', hidden_size=H, bidirectional=True, fused_backward=fused)
  x = jnp.zeros((B, 0, F))
  variables = layer.init(jax.random.key(0), x)
  h0 = jnp.ones((2, B, H))
  grads, d_h0 = jax.jit(jax.grad(lambda v, h0: jnp.sum(layer.apply(v, x, None, h0)[1]), argnums=(0, 1)))(
    variables, h0
  )
  assert all(not jnp.any(g) for g in jax.tree.leaves(grads))
  np.testing.assert_array_equal(d_h0, 1.0)


def test_forward_mode_needs_fused_backward_off(rng):
  """custom_vjp has no JVP rule: with fused_backward=False, jax.jvp works through the layer."""
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  layer = make_layer('gru', hidden_size=H, fused_backward=False)
  variables = random_variables(layer, F, rng)
  primal, tangent = jax.jvp(lambda x: layer.apply(variables, x)[0], (x,), (jnp.ones_like(x),))
  eps = 1e-3
  finite = (layer.apply(variables, x + eps)[0] - layer.apply(variables, x - eps)[0]) / (2 * eps)
  np.testing.assert_allclose(tangent, finite, atol=2e-3)


def test_checkpoint_every_lowers_compiled_memory(rng):
  """The residuals kept for the backward pass shrink from O(T) to O(T/k + k).

  A property of the compiled program (XLA's memory analysis), not a timing.
  """
  steps = 512
  x = jnp.asarray(rng.normal(size=(2, steps, 8)), jnp.float32)

  def temp_bytes(**options):
    layer = make_layer('lstm', hidden_size=32, **options)
    variables = random_variables(layer, 8, rng)
    grad = jax.jit(jax.grad(lambda v: jnp.sum(layer.apply(v, x)[0])))
    return grad.lower(variables).compile().memory_analysis().temp_size_in_bytes

  assert temp_bytes(checkpoint_every=23) * 4 < temp_bytes()


@pytest.mark.parametrize(
  ('options', 'message'),
  [
    ({'fused_backward': True, 'proj_size': 2}, '`fused_backward=True` does not support `proj_size`'),
    ({'fused_backward': True, 'remat': True}, '`fused_backward=True` does not support `remat=True`'),
    ({'remat': True, 'checkpoint_every': 4}, 'choose one'),
    ({'checkpoint_every': -1}, '`checkpoint_every` must be >= 0, got -1'),
  ],
)
def test_incompatible_options_are_refused(options, message):
  with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
    make_layer('lstm', hidden_size=H, **options)


@pytest.mark.slow
def test_nnx_layers_take_the_same_options(rng):
  from flax import nnx

  import jaxrnn

  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  lengths = jnp.asarray(LENGTHS)

  def grads(**options):
    layer = jaxrnn.nnx.LSTM(F, H, bidirectional=True, rngs=nnx.Rngs(0), **options)
    assert all(getattr(layer.config, k) == v for k, v in options.items())
    return nnx.grad(lambda m: jnp.sum(m(x, lengths)[0] ** 2))(layer)

  want = grads(fused_backward=False)
  assert_trees_close(nnx.state(grads(checkpoint_every=3)), nnx.state(want), atol=1e-5)
