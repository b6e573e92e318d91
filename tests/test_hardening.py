"""Issue #15, part A: inputs that used to give a silently wrong answer now work or raise a named error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_layer
from flax import nnx

import jaxrnn
from jaxrnn import CellParams
from jaxrnn import LSTMState


@pytest.mark.parametrize(
  ('fields', 'message'),
  [
    ({'dtype': jnp.int32}, '`dtype` must be a floating-point dtype'),
    ({'param_dtype': jnp.int8}, '`param_dtype` must be a floating-point dtype'),
    ({'dtype': 'not a dtype'}, '`dtype` must be a floating-point dtype'),
  ],
)
def test_non_float_dtypes_raise(fields, message):
  """A3: an integer compute dtype truncated inputs and weights and returned zeros."""
  with pytest.raises(TypeError, match=message):
    jaxrnn.GRU(8, **fields)
  with pytest.raises(TypeError, match=message):
    jaxrnn.nnx.GRU(3, 8, **fields, rngs=nnx.Rngs(0))


@pytest.mark.parametrize('name', ['time_major', 'bidirectional', 'use_bias', 'remat', 'fused_backward'])
@pytest.mark.parametrize('value', ['False', 0, 1.0])
def test_boolean_fields_take_booleans_only(name, value):
  """A4: ``time_major='False'`` (a non-empty string) was taken as True."""
  with pytest.raises(TypeError, match=f'`{name}` must be True'):
    jaxrnn.LSTM(4, **{name: value})
  assert jaxrnn.LSTM(4, **{name: np.bool_(False)}).config  # NumPy's bools are booleans


def test_nnx_deterministic_takes_booleans_only():
  with pytest.raises(TypeError, match='`deterministic` must be True or False'):
    jaxrnn.nnx.GRU(3, 4, deterministic='True', rngs=nnx.Rngs(0))


def _params(rng, gates=4, features=3, hidden=2):
  return CellParams(
    w_ih=jnp.asarray(rng.normal(size=(features, gates * hidden)), jnp.float32),
    w_hh=jnp.asarray(rng.normal(size=(hidden, gates * hidden)), jnp.float32),
  )


def test_scan_layer_rejects_float_lengths(rng):
  """A7: float lengths were rounded up (1.5 acted as 2); the layers already rejected them."""
  params = _params(rng, gates=1)
  xs = jnp.ones((4, 2, 3))
  with pytest.raises(TypeError, match='`seq_lengths` must be integers, got dtype float32'):
    jaxrnn.scan_layer(
      jaxrnn.rnn_tanh_cell, params, jnp.zeros((2, 2)), xs, jnp.array([1.5, 4.0]), input_projection=None
    )


@pytest.mark.parametrize(
  ('carry', 'lengths', 'message'),
  [
    (
      jnp.zeros((3, 2)),
      None,
      r'`carry` must have leading batch shape \(2,\) of `xs` \(4, 2, 3\) .*, got shape \(3, 2\)',
    ),
    (
      jnp.zeros((2, 2)),
      jnp.array([1, 2, 3]),
      r'`seq_lengths` must have shape \(2,\), the batch shape of `xs`',
    ),
    (
      jnp.zeros((2, 2)),
      jnp.array([1, 9]),
      r'`seq_lengths` must lie in \[0, T\] = \[0, 4\], got values in \[1, 9\]',
    ),
  ],
)
def test_scan_layer_names_mismatched_arguments(rng, carry, lengths, message):
  """A7: these failed inside dot_general or broadcasting, naming nothing."""
  params = _params(rng, gates=1)
  with pytest.raises(ValueError, match=message):
    jaxrnn.scan_layer(
      jaxrnn.rnn_tanh_cell, params, carry, jnp.ones((4, 2, 3)), lengths, input_projection=None
    )


def test_lstm_cell_takes_a_plain_tuple(rng):
  """A7: the layers take ``(h, c)`` tuples; the cell raised AttributeError on one."""
  params = _params(rng)
  x, h, c = jnp.ones((5, 3)), jnp.full((5, 2), 0.1), jnp.full((5, 2), 0.2)
  want = jaxrnn.lstm_cell(params, LSTMState(h, c), x)
  got = jaxrnn.lstm_cell(params, (h, c), x)
  assert isinstance(got[0], LSTMState)
  np.testing.assert_array_equal(got[1], want[1])
  np.testing.assert_array_equal(got[0].c, want[0].c)


@pytest.mark.parametrize('kind', ['lstm', 'gru', 'rnn_tanh'])
@pytest.mark.parametrize('fused_backward', [True, False])
def test_nan_initial_carry_of_an_empty_sequence_stays_out_of_gradients(rng, kind, fused_backward):
  """A8: 0 * NaN through the masked-out branch made every parameter gradient NaN although the
  loss never reads the empty sequence's carry."""
  layer = make_layer(kind, hidden_size=3, num_layers=2, bidirectional=True, fused_backward=fused_backward)
  x = jnp.asarray(rng.normal(size=(2, 5, 4)), jnp.float32)
  lengths = jnp.array([0, 5])
  variables = layer.init(jax.random.key(0), x)
  carry = jax.tree.map(lambda a: a.at[:, 0].set(jnp.nan), layer.initial_carry((2,)))

  def loss(v):
    outputs, final = layer.apply(v, x, lengths, carry)
    return jnp.sum(outputs) + sum(jnp.sum(leaf[:, 1]) for leaf in jax.tree.leaves(final))

  value, grads = jax.jit(jax.value_and_grad(loss))(variables)
  assert np.isfinite(value)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
  outputs, final = layer.apply(variables, x, lengths, carry)
  assert np.all(outputs[0] == 0) and np.all(np.isnan(jax.tree.leaves(final)[0][:, 0]))  # length 0: carry kept


def test_nnx_dropout_set_after_construction():
  """A9: a layer built with ``dropout=0.0`` and later given ``module.dropout = 0.5`` failed in
  training mode (no dropout stream), unlike ``nnx.Dropout`` and PyTorch's ``rnn.dropout = p``."""
  module = jaxrnn.nnx.LSTM(3, 8, num_layers=2, rngs=nnx.Rngs(0))
  x = jnp.ones((4, 5, 3))
  before = module(x)[0]
  module.dropout = 0.5
  module.train()
  dropped = module(x)[0]
  assert not np.allclose(dropped, before)
  module.eval()
  np.testing.assert_array_equal(module(x)[0], before)


def test_nnx_dropout_error_gives_nnx_advice():
  """A9: the error named linen's ``rngs={...}`` to ``apply``, which does not exist in NNX."""
  module = jaxrnn.nnx.LSTM(3, 8, num_layers=2, rngs=nnx.Rngs(params=0))  # no dropout stream
  module.dropout = 0.5
  with pytest.raises(ValueError, match=r'nnx\.Rngs') as error:
    module(jnp.ones((4, 5, 3)))
  assert 'apply' not in str(error.value)
