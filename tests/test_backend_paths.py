"""The per-backend defaults (GPU: hoisted input projection, 4 steps per loop iteration) chosen
from the GPU measurements, forced here on the CPU: every path gives the autodiff path's values
and gradients, so CI checks on its CPU what a GPU runs by default."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_close
from conftest import make_layer
from conftest import random_variables
from conftest import slow

from jaxrnn._src.scan import default_hoist_input_projection
from jaxrnn._src.scan import default_unroll

B, T, F, H = 3, 7, 4, 5


def test_defaults_by_backend():
  assert default_unroll('gpu') == 4
  assert default_unroll('cpu') == default_unroll('tpu') == 1
  assert default_hoist_input_projection('gpu') and default_hoist_input_projection('tpu')
  assert not default_hoist_input_projection('cpu')
  layer = make_layer('lstm', hidden_size=H)
  assert layer.unroll is None and layer.config.unroll is None


GPU_DEFAULTS = {'unroll': 4, 'hoist_input_projection': True}


CASES = [  # the slow tier has the other cells and options
  slow('lstm', GPU_DEFAULTS, False),
  ('lstm', GPU_DEFAULTS, True),
  slow('lstm', {'unroll': 8, 'hoist_input_projection': False}, True),
  slow('lstm', {**GPU_DEFAULTS, 'checkpoint_every': 3}, False),  # T=7: a padded last chunk, no lengths
  slow('gru', GPU_DEFAULTS, True),
  slow('rnn_tanh', GPU_DEFAULTS, False),
]


@pytest.mark.parametrize(('kind', 'options', 'padded'), CASES)
def test_forced_gpu_paths_equal_autodiff(rng, kind, options, padded):
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  lengths = jnp.array([7, 0, 4]) if padded else None
  base = make_layer(kind, hidden_size=H, bidirectional=True, fused_backward=False)
  variables = random_variables(base, F, rng)

  def value_and_grad(layer):
    def loss(v):
      outputs, final = layer.apply(v, x, lengths)
      return jnp.sum(outputs * jnp.cos(outputs)) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(final))

    return jax.jit(jax.value_and_grad(loss))(variables), jax.jit(layer.apply)(variables, x, lengths)

  want = value_and_grad(base)
  got = value_and_grad(base.clone(fused_backward=None, **options))
  assert_trees_close(got, want, atol=2e-5)
  if padded:  # padding is exactly zero on every path
    outputs = np.asarray(got[1][0])
    assert np.all(outputs[1] == 0) and np.all(outputs[2, 4:] == 0)
