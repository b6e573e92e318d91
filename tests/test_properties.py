"""Property-based tests (hypothesis) of the padding, layout and batching semantics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import KINDS
from conftest import assert_trees_close
from conftest import assert_trees_equal
from conftest import make_layer
from conftest import random_variables
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import jaxrnn

F, H = 2, 4


@st.composite
def cases(draw):
  kind = draw(st.sampled_from(sorted(KINDS)))
  num_layers = draw(st.integers(1, 3))
  bidirectional = draw(st.booleans())
  batch_shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
  num_steps = draw(st.integers(1, 6))
  lengths = np.asarray(
    draw(
      st.lists(
        st.integers(0, num_steps), min_size=int(np.prod(batch_shape)), max_size=int(np.prod(batch_shape))
      )
    )
  )
  lengths = lengths.reshape(batch_shape)
  seed = draw(st.integers(0, 2**16))
  layer = make_layer(kind, hidden_size=H, num_layers=num_layers, bidirectional=bidirectional)
  rng = np.random.default_rng(seed)
  variables = random_variables(layer, F, rng)
  x = rng.normal(size=(*batch_shape, num_steps, F)).astype(np.float32)
  return layer, variables, x, lengths


def h_of(final):
  return final.h if isinstance(final, jaxrnn.LSTMState) else final


@given(cases())
def test_invariants_and_exact_zero_padding(case):
  layer, variables, x, lengths = case
  outputs, final = jax.jit(layer.apply)(variables, x, lengths)
  config = layer.config
  L, D, Hout = config.num_layers, config.num_directions, config.output_size
  outputs, h_n = np.asarray(outputs), np.asarray(h_of(final))
  for index in np.ndindex(lengths.shape):
    n = lengths[index]
    assert np.all(outputs[index][n:] == 0)
    if n > 0:
      np.testing.assert_array_equal(outputs[index][n - 1, :Hout], h_n[((L - 1) * D, *index)])
      if D == 2:
        np.testing.assert_array_equal(outputs[index][0, Hout:], h_n[((L - 1) * D + 1, *index)])
    else:
      for leaf in jax.tree.leaves(final):
        assert np.all(np.asarray(leaf)[(slice(None), *index)] == 0)


@pytest.mark.slow  # 3 compilations per example; default run: test_robustness's NaN padding test
@given(cases(), st.integers(1, 4))
def test_appending_padding_changes_nothing(case, extra):
  layer, variables, x, lengths = case
  garbage = np.full((*x.shape[:-2], extra, F), np.nan, np.float32)  # never read, not even in gradients
  longer = np.concatenate([x, garbage], axis=-2)
  apply = jax.jit(layer.apply)
  outputs, final = apply(variables, x, lengths)
  outputs_long, final_long = apply(variables, longer, lengths)
  num_steps = x.shape[-2]
  assert_trees_equal((outputs_long[..., :num_steps, :], final_long), (outputs, final))
  assert np.all(np.asarray(outputs_long)[..., num_steps:, :] == 0)
  grads = jax.jit(jax.grad(lambda v: jnp.sum(apply(v, longer, lengths)[0] ** 2)))(variables)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.slow  # default run: test_layers' grid checks each sequence against its own oracle
@given(cases(), st.randoms(use_true_random=False))
def test_permuting_the_batch_permutes_the_results(case, random):
  layer, variables, x, lengths = case
  flat_x, flat_lengths = x.reshape(-1, *x.shape[-2:]), lengths.reshape(-1)
  perm = list(range(len(flat_lengths)))
  random.shuffle(perm)
  perm = np.asarray(perm)
  apply = jax.jit(layer.apply)
  outputs, final = apply(variables, flat_x, flat_lengths)
  outputs_p, final_p = apply(variables, flat_x[perm], flat_lengths[perm])
  assert_trees_close(
    (outputs_p, final_p), (outputs[perm], jax.tree.map(lambda a: a[:, perm], final)), atol=1e-6
  )


@pytest.mark.slow  # default run: test_layers' grid compares time-major layers with the oracle
@given(cases())
def test_time_major_is_the_transposed_batch_major(case):
  layer, variables, x, lengths = case
  time_major = layer.clone(time_major=True)
  outputs, final = jax.jit(layer.apply)(variables, x, lengths)
  outputs_tm, final_tm = jax.jit(time_major.apply)(variables, jaxrnn.to_time_major(x), lengths)
  assert_trees_close((jaxrnn.to_batch_major(outputs_tm), final_tm), (outputs, final), atol=1e-6)


@pytest.mark.slow  # default run: test_transforms (jit vs eager), test_layers (several batch axes)
@settings(max_examples=6)  # eager mode compiles op by op: slow
@given(cases())
def test_jit_equals_eager_and_several_batch_axes_equal_one(case):
  layer, variables, x, lengths = case
  eager = layer.apply(variables, x, lengths)
  assert_trees_close(jax.jit(layer.apply)(variables, x, lengths), eager, atol=1e-6)
  batch_shape = lengths.shape
  flat = layer.apply(variables, x.reshape(-1, *x.shape[-2:]), lengths.reshape(-1))
  unflat = jax.tree.map(lambda a: a.reshape(*a.shape[:1], *batch_shape, a.shape[-1]), flat[1])
  assert_trees_close((flat[0].reshape(eager[0].shape), unflat), eager, atol=1e-6)
