"""Issue #15, part A: inputs that used to give a silently wrong answer now work or raise a named error."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_close
from conftest import make_layer
from conftest import slow
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


@pytest.mark.parametrize(
  'kind,fused_backward',
  [
    c if c == ('lstm', True) else slow(*c)
    for c in itertools.product(['lstm', 'gru', 'rnn_tanh'], [True, False])
  ],
)
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


@pytest.fixture
def count_compiles():
  """Yields a list that collects one entry per XLA backend compilation."""
  compiles = []

  def listener(name, duration, **kwargs):
    if name == '/jax/core/compile/backend_compile_duration':
      compiles.append(duration)

  jax.monitoring.register_event_duration_secs_listener(listener)
  yield compiles
  jax.monitoring.unregister_event_duration_listener(listener)


def test_eager_calls_compile_once(count_compiles):
  """C: every eager (un-jitted) call rebuilt its loops and recompiled, 1.9-2.4 s each."""
  layer = jaxrnn.LSTM(8, num_layers=2, bidirectional=True)
  x = jnp.ones((3, 6, 4))
  variables = layer.init(jax.random.key(0), x)
  first = layer.apply(variables, x, jnp.array([6, 2, 0]))
  count_compiles.clear()
  again = layer.apply(variables, x, jnp.array([6, 2, 0]))
  other_lengths = layer.apply(variables, x, jnp.array([1, 5, 3]))
  jax.block_until_ready(other_lengths)
  assert count_compiles == []
  assert_trees_close(again, first, atol=0)


def test_eager_step_loop_compiles_once(count_compiles):
  """C: ten eager ``method='step'`` calls took 7.7 s, a compile each."""
  layer = jaxrnn.GRU(8, num_layers=2)
  x = jnp.ones((3, 4))
  variables = layer.init(jax.random.key(0), x[:, None])
  carry = layer.apply(variables, x, None, method='step')[1]
  count_compiles.clear()
  for _ in range(5):
    y, carry = layer.apply(variables, x, carry, method='step')
  jax.block_until_ready(carry)
  assert count_compiles == []


def test_eager_generate_compiles_once(count_compiles):
  """C: every eager ``generate`` call compiled its decoding loop anew, 0.8-1.5 s each."""
  shift, next_shift = jnp.eye(10), jnp.roll(jnp.eye(10), 1, axis=1)

  def step(tokens, steps):  # closes over ``shift``: an argument of the compiled loop, never stale
    return jax.nn.one_hot(tokens, 10) @ shift * 5.0, steps + 1

  first, _ = jaxrnn.generate(step, 0, jnp.array([0, 4]), 3)
  np.testing.assert_array_equal(first, [[0, 0, 0], [4, 4, 4]])
  count_compiles.clear()
  shift = next_shift  # same shapes: no compile, and the new values
  again, steps = jaxrnn.generate(step, 0, jnp.array([1, 5]), 3)
  jax.block_until_ready(again)
  assert count_compiles == []
  np.testing.assert_array_equal(again, [[2, 3, 4], [6, 7, 8]])
  assert steps == 3


def test_eager_generate_keeps_no_model_alive():
  """The cache of compiled loops holds step functions weakly: a deleted model is freed."""
  import gc
  import weakref

  class Model:
    def __init__(self):
      self.weights = jnp.eye(10)

    def step(self, tokens, carry):
      return jax.nn.one_hot(tokens, 10) @ self.weights, carry

  model = Model()
  jaxrnn.generate(model.step, 0, jnp.array([1]), 2)
  jaxrnn.generate(model.step, 0, jnp.array([2]), 2)  # a bound method made anew: the same key
  alive = weakref.ref(model)
  del model
  gc.collect()
  assert alive() is None


def test_obscure_errors_name_the_argument():
  """B: each of these failed deep inside JAX or Flax, or not at all."""
  import torch

  layer = jaxrnn.GRU(4)
  x = jnp.ones((2, 3, 5))
  variables = layer.init(jax.random.key(0), x)
  got = layer.apply(variables, x, torch.tensor([3, 1]))[0]  # PyTorch lengths, as inputs already were
  np.testing.assert_array_equal(got, layer.apply(variables, x, jnp.array([3, 1]))[0])
  with pytest.raises(TypeError, match=r'`batch_shape` must be a tuple of batch sizes such as \(3,\)'):
    layer.initial_carry(3)
  with pytest.raises(ValueError, match=r'`batch_shape` must hold non-negative ints, got \(-1,\)'):
    layer.initial_carry((-1,))
  with pytest.raises(TypeError, match='`dtype` must be a floating-point dtype'):
    layer.initial_carry((2,), jnp.int32)
  with pytest.raises(ValueError, match='`hidden_size` must be a positive int'):
    jaxrnn.torch_uniform(0)
  for bad in (3.0, -1, 0):
    with pytest.raises(ValueError, match='`in_features`'):
      jaxrnn.nnx.GRU(bad, 4, rngs=nnx.Rngs(0))
  with pytest.raises(TypeError, match='`rngs` must be an nnx.Rngs'):
    jaxrnn.nnx.GRU(3, 4, rngs=None)
  other = jaxrnn.GRU(6).init(jax.random.key(0), x)  # another hidden size, same names
  with pytest.raises(
    ValueError, match=r"\['l0'\]\['w_ih'\] has shape \(5, 18\), but GRU\(hidden_size=4\) .* expects \(5, 12\)"
  ):
    jaxrnn.interop.linen_to_nnx(layer, other)


def test_forward_mode_through_the_fused_backward_names_the_option(rng):
  """B: ``jax.jvp``/``jacfwd`` raised JAX's custom_vjp message, which names no option."""
  layer = make_layer('gru', hidden_size=3)
  x = jnp.asarray(rng.normal(size=(2, 4, 3)), jnp.float32)
  variables = layer.init(jax.random.key(0), x)
  f = lambda x: layer.apply(variables, x)[0]  # noqa: E731
  with pytest.raises(TypeError, match='`fused_backward=False`'):
    jax.jvp(f, (x,), (x,))
  with pytest.raises(TypeError, match='`fused_backward=False`'):
    jax.jacfwd(f)(x)


@pytest.mark.slow
def test_hessian_works_through_the_fused_backward(rng):
  """B: the docs said ``jax.hessian`` needs ``fused_backward=False``; it is forward over reverse."""
  layer = make_layer('lstm', hidden_size=2)
  x = jnp.asarray(rng.normal(size=(1, 3, 2)), jnp.float32)
  variables = layer.init(jax.random.key(0), x)

  def hessian(layer):
    return jax.jit(jax.hessian(lambda x: jnp.sum(layer.apply(variables, x)[0] ** 2)))(x)  # one compile

  np.testing.assert_allclose(hessian(layer), hessian(layer.clone(fused_backward=False)), atol=1e-5)


def test_generate_names_a_step_function_with_outputs_swapped():
  """B: a step returning ``(carry, logits)`` failed with a scan carry-type error."""

  def swapped(tokens, carry):
    return carry + 1, jax.nn.one_hot(tokens + 1, 10)

  with pytest.raises(TypeError, match=r'It looks like \(new_carry, logits\): return the logits first'):
    jaxrnn.generate(swapped, jnp.zeros((2, 3)), jnp.array([0, 4]), 3)


def test_from_state_dict_names_missing_and_wrong_rank_keys():
  """B: a missing key raised KeyError; a wrong-rank one said ``hidden_size`` must be >= 1."""
  import torch

  state_dict = {k: v.detach().numpy() for k, v in torch.nn.LSTM(3, 4, num_layers=2).state_dict().items()}
  missing = {k: v for k, v in state_dict.items() if k != 'weight_hh_l1'}
  with pytest.raises(ValueError, match="state_dict has no 'weight_hh_l1'"):
    jaxrnn.interop.from_state_dict(missing, 'LSTM')
  wrong_rank = {**state_dict, 'weight_ih_l0': state_dict['weight_ih_l0'][None]}
  with pytest.raises(
    ValueError, match=r"state_dict\['weight_ih_l0'\] must have rank 2 .*got shape \[1, 16, 3\]"
  ):
    jaxrnn.interop.from_state_dict(wrong_rank, 'LSTM')


def test_bfloat16_state_dicts_convert_exactly():
  """B: a bfloat16 PyTorch state_dict failed with 'Got unsupported ScalarType BFloat16'."""
  import torch

  module = torch.nn.GRU(3, 4, bidirectional=True).to(torch.bfloat16)
  layer, variables = jaxrnn.interop.from_state_dict(module.state_dict(), 'GRU')
  w_ih = variables['params']['l0_reverse']['w_ih']
  assert w_ih.dtype == jnp.bfloat16 and layer.bidirectional
  np.testing.assert_array_equal(
    np.asarray(w_ih, np.float32), module.weight_ih_l0_reverse.detach().float().numpy().T
  )


@pytest.mark.parametrize(
  ('cell', 'carry', 'x', 'message'),
  [
    (jaxrnn.gru_cell, jnp.zeros((5, 2)), jnp.ones((5, 4)), r'`x` must have shape \[..., F\] with F = 3'),
    (jaxrnn.rnn_tanh_cell, jnp.zeros((4, 2)), jnp.ones((5, 3)), r'`carry` \(h\) must have shape \[5, 2\]'),
    (
      jaxrnn.lstm_cell,
      (jnp.zeros((5, 2)), jnp.zeros((5, 3))),
      jnp.ones((5, 3)),
      r'`carry.c` must have shape \[5, 2\]',
    ),
  ],
)
def test_cells_name_mismatched_arguments(rng, cell, carry, x, message):
  """A7: the cells failed inside dot_general or broadcasting."""
  gates = {jaxrnn.gru_cell: 3, jaxrnn.rnn_tanh_cell: 1, jaxrnn.lstm_cell: 4}[cell]
  with pytest.raises(ValueError, match=message):
    cell(_params(rng, gates=gates), carry, x)
