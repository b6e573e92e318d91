"""Keras 3 converters against Keras itself (JAX backend): outputs, final states, masks, named errors."""

import itertools
import os
import subprocess
import sys

os.environ.setdefault('KERAS_BACKEND', 'jax')  # before anything imports keras

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import each_value_then_pairs
from conftest import make_layer
from conftest import random_variables
from conftest import slow

import jaxrnn
from jaxrnn.interop import from_keras
from jaxrnn.interop import to_keras

keras = pytest.importorskip('keras')

# Keras' own get_weights/set_weights call np.array on its variables the NumPy-1 way.
pytestmark = pytest.mark.filterwarnings(
  "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
)

B, T, F, H = 3, 5, 2, 3
LENGTHS = np.array([5, 2, 0])  # right padding, an empty sequence included
# jaxrnn kind -> (Keras class name, its options); reset_after=False is Keras 2's GRU
KERAS_KINDS = {
  'rnn_tanh': ('SimpleRNN', {'activation': 'tanh'}),
  'rnn_relu': ('SimpleRNN', {'activation': 'relu'}),
  'lstm': ('LSTM', {}),
  'gru': ('GRU', {}),
  'gru_reset_before': ('GRU', {'reset_after': False}),
}
ATOL = 1e-5


def jax_layer(kind, **fields):
  if kind == 'gru_reset_before':
    return make_layer('gru', reset_after=False, **fields)
  return make_layer(kind, **fields)


def keras_layer(kind, rng, *, bidirectional=False, use_bias=True, in_features=F, **options):
  """A built Keras layer returning ``[outputs, *states]``, with random weights (biases nonzero)."""
  name, extra = KERAS_KINDS[kind]
  options = {'return_sequences': True, 'return_state': True, **extra, **options}
  layer = getattr(keras.layers, name)(H, use_bias=use_bias, **options)
  if bidirectional:
    layer = keras.layers.Bidirectional(layer)
  layer.build((None, None, in_features))
  layer.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.5 for w in layer.get_weights()])
  return layer


def inputs(rng, features=F):
  return rng.normal(size=(B, T, features)).astype(np.float32)


def keras_mask(masked):
  return (np.arange(T) < LENGTHS[:, None]) if masked else None


def keras_states(final_carry, num_directions, first_row=0):
  """jaxrnn's ``final_carry`` rows ``first_row, ...`` (one layer) in Keras' order: per direction ``h`` (then ``c``)."""
  leaves = tuple(final_carry) if isinstance(final_carry, jaxrnn.LSTMState) else (final_carry,)
  return [np.asarray(leaf[first_row + d]) for d in range(num_directions) for leaf in leaves]


def assert_valid_steps_close(got, want, masked):
  """Outputs equal at every valid step (Keras repeats the last output at padded steps; jaxrnn has zeros)."""
  got, want = np.asarray(got), np.asarray(want)
  assert got.shape == want.shape
  lengths = LENGTHS if masked else np.full(B, T)
  for b, length in enumerate(lengths):
    np.testing.assert_allclose(got[b, :length], want[b, :length], atol=ATOL, rtol=0)


def assert_states_close(got, want):
  assert len(got) == len(want)
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=ATOL, rtol=0)


def run_jaxrnn(layer, variables, x, masked):
  lengths = jnp.asarray(LENGTHS) if masked else None
  return layer.apply(variables, jnp.asarray(x), lengths)


# Every kind, direction, bias and mask at least once in the default tier; every pair of values in the slow one.
GRID = each_value_then_pairs(list(KERAS_KINDS), [False, True], [True, False], [False, True])


@pytest.mark.parametrize('kind, bidirectional, use_bias, masked', GRID)
def test_from_keras_matches_keras(kind, bidirectional, use_bias, masked, rng):
  layer = keras_layer(kind, rng, bidirectional=bidirectional, use_bias=use_bias)
  x, mask = inputs(rng), keras_mask(masked)
  want_outputs, *want_states = layer(x, mask=mask)

  converted, variables = from_keras(layer)
  assert (converted.bidirectional, converted.time_major, converted.use_bias) == (
    bidirectional,
    False,
    use_bias,
  )
  outputs, final_carry = run_jaxrnn(converted, variables, x, masked)

  assert_valid_steps_close(outputs, want_outputs, masked)
  assert_states_close(keras_states(final_carry, 2 if bidirectional else 1), want_states)


# The default tier keeps a folded LSTM bias and a bidirectional, masked, folded reset-before GRU.
TO_KERAS_GRID = [
  pytest.param(*c)
  if c in {('lstm', False, True, False), ('gru_reset_before', True, True, True)}
  else slow(*c)
  for c in itertools.product(KERAS_KINDS, [False, True], [True, False], [False, True])
]


@pytest.mark.parametrize('kind, bidirectional, use_bias, masked', TO_KERAS_GRID)
def test_to_keras_matches_jaxrnn_and_round_trips(kind, bidirectional, use_bias, masked, rng):
  layer = jax_layer(kind, hidden_size=H, bidirectional=bidirectional, use_bias=use_bias)
  variables = random_variables(layer, F, rng)  # b_hh nonzero: checks how the biases fold
  x = inputs(rng)
  outputs, final_carry = run_jaxrnn(layer, variables, x, masked)

  converted = to_keras(layer, variables)
  assert isinstance(converted, keras.layers.Bidirectional) == bidirectional
  keras_outputs, *keras_states_ = converted(x, mask=keras_mask(masked))
  assert_valid_steps_close(keras_outputs, outputs, masked)
  assert_states_close(keras_states_, keras_states(final_carry, 2 if bidirectional else 1))

  back, back_variables = from_keras(converted)
  assert back.config.cell == layer.config.cell
  back_outputs, back_carry = run_jaxrnn(back, back_variables, x, masked)
  np.testing.assert_allclose(back_outputs, outputs, atol=ATOL, rtol=0)
  assert_states_close(
    keras_states(back_carry, 2 if bidirectional else 1), keras_states(final_carry, 2 if bidirectional else 1)
  )


@pytest.mark.parametrize(
  'kind, bidirectional, masked',
  [('lstm', True, True), slow('gru_reset_before', False, False), slow('rnn_relu', True, False)],
)
def test_sequential_stack(kind, bidirectional, masked, rng):
  """A keras.Sequential of two layers is one jaxrnn stack (num_layers=2), and to_keras gives it back."""
  num_directions = 2 if bidirectional else 1
  first = keras_layer(kind, rng, bidirectional=bidirectional, return_state=False)
  last = keras_layer(kind, rng, bidirectional=bidirectional, in_features=num_directions * H)
  model = keras.Sequential([keras.Input((T, F)), first, last])
  x, mask = inputs(rng), keras_mask(masked)
  want_outputs, *want_states = last(first(x, mask=mask), mask=mask)

  layer, variables = from_keras(model)
  assert layer.num_layers == 2
  outputs, final_carry = run_jaxrnn(layer, variables, x, masked)
  assert_valid_steps_close(outputs, want_outputs, masked)
  assert_states_close(keras_states(final_carry, num_directions, first_row=num_directions), want_states)

  converted = to_keras(layer, variables)
  assert isinstance(converted, keras.Sequential)
  keras_layers = converted.layers
  keras_outputs = x
  for keras_layer_ in keras_layers:
    keras_outputs = keras_layer_(keras_outputs, mask=mask)
  assert_valid_steps_close(keras_outputs, outputs, masked)
  if not masked:
    np.testing.assert_allclose(converted(x), outputs, atol=ATOL, rtol=0)


def test_masking_layer_matches_seq_lengths(rng):
  """A Keras Masking layer (zeros after each sequence's end) gives jaxrnn's results with seq_lengths."""
  recurrent = keras_layer('gru', rng, bidirectional=True)
  x = inputs(rng) * keras_mask(True)[..., None]
  want_outputs, *want_states = keras.Sequential([keras.layers.Masking(0.0), recurrent])(x)
  layer, variables = from_keras(recurrent)
  outputs, final_carry = run_jaxrnn(layer, variables, x, masked=True)
  assert_valid_steps_close(outputs, want_outputs, masked=True)
  assert_states_close(keras_states(final_carry, 2), want_states)


def _bidirectional(**options):
  return keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True), **options)


def _built(layer, batch=None):
  layer.build((batch, None, F))
  return layer


# (the Keras layer or model, the error, a regular expression its message matches)
FROM_KERAS_ERRORS = {
  'not_recurrent': (lambda: _built(keras.layers.Dense(H)), TypeError, 'got Dense'),
  'not_built': (lambda: keras.layers.LSTM(H), ValueError, 'not built'),
  'activation': (
    lambda: _built(keras.layers.LSTM(H, activation='relu')),
    ValueError,
    "`activation` must be 'tanh' for jaxrnn, got 'relu'",
  ),
  'recurrent_activation': (
    lambda: _built(keras.layers.GRU(H, recurrent_activation='hard_sigmoid')),
    ValueError,
    "`recurrent_activation` must be 'sigmoid'.*got 'hard_sigmoid'",
  ),
  'simple_rnn_activation': (
    lambda: _built(keras.layers.SimpleRNN(H, activation='sigmoid')),
    ValueError,
    "`activation` must be 'tanh' or 'relu'",
  ),
  'stateful': (
    lambda: _built(keras.layers.LSTM(H, stateful=True), batch=B),
    ValueError,
    '`stateful=True` is not supported',
  ),
  'go_backwards': (
    lambda: _built(keras.layers.GRU(H, go_backwards=True)),
    ValueError,
    '`go_backwards=True` is supported only as the backward layer of a Bidirectional',
  ),
  'merge_mode': (lambda: _built(_bidirectional(merge_mode='sum')), ValueError, "concatenates.*got 'sum'"),
  'directions_differ': (
    lambda: _built(
      _bidirectional(backward_layer=keras.layers.LSTM(H + 1, return_sequences=True, go_backwards=True))
    ),
    ValueError,
    'same hyper-parameters in both directions, got units 3 vs 4',
  ),
  'masking_layer': (
    lambda: keras.Sequential([keras.Input((T, F)), keras.layers.Masking(), keras.layers.LSTM(H)]),
    ValueError,
    'Masking layer is not converted.*seq_lengths',
  ),
  'stack_kinds_differ': (
    lambda: keras.Sequential(
      [keras.Input((T, F)), keras.layers.LSTM(H, return_sequences=True), keras.layers.GRU(H)]
    ),
    ValueError,
    "layer 1 .* differs from layer 0 .*kind 'LSTM' vs 'GRU'",
  ),
  'stack_units_differ': (
    lambda: keras.Sequential(
      [keras.Input((T, F)), keras.layers.LSTM(H, return_sequences=True), keras.layers.LSTM(H + 1)]
    ),
    ValueError,
    'units 3 vs 4',
  ),
  'stack_directions_differ': (
    lambda: keras.Sequential([keras.Input((T, F)), _bidirectional(), keras.layers.LSTM(H)]),
    ValueError,
    'bidirectional True vs False',
  ),
  'stack_not_sequences': (
    lambda: keras.Sequential([keras.Input((T, F)), keras.layers.LSTM(H), keras.layers.RepeatVector(T)]),
    TypeError,
    'got RepeatVector',
  ),
}


FAST_ERRORS = ('not_recurrent', 'activation', 'merge_mode', 'stack_units_differ', 'proj_size')


def error_cases(cases):
  """The cases' names; a few representatives run in the default tier, the rest (as cheap) in the slow one."""
  return [pytest.param(c) if c in FAST_ERRORS else slow(c) for c in cases]


@pytest.mark.parametrize('case', error_cases(FROM_KERAS_ERRORS))
def test_from_keras_errors(case):
  make, error, match = FROM_KERAS_ERRORS[case]
  with pytest.raises(error, match=match):
    from_keras(make())


@pytest.mark.slow
def test_from_keras_stack_needs_return_sequences():
  first = keras.layers.LSTM(H)
  first.build((None, None, F))
  last = keras.layers.LSTM(H)
  last.build((None, None, H))  # shapes that Keras itself would never chain
  with pytest.raises(ValueError, match='layer 0 .* must have `return_sequences=True`'):
    from_keras(keras.Sequential([first, last]))


def test_from_keras_dropout_warns_recurrent_dropout_carries(rng):
  layer = keras_layer('lstm', rng, dropout=0.25, recurrent_dropout=0.5)
  with pytest.warns(UserWarning, match='`dropout=0.25` .* is not carried over'):
    converted, _ = from_keras(layer)
  assert converted.recurrent_dropout == 0.5


def test_from_keras_bidirectional_dropout_warns_once(rng):
  """One warning per converted layer: a Bidirectional's two directions warned twice."""
  layer = keras_layer('gru', rng, bidirectional=True, dropout=0.25)
  with pytest.warns(UserWarning) as record:
    from_keras(layer)
  warned = [w for w in record if 'is not carried over' in str(w.message)]
  assert len(warned) == 1
  assert str(warned[0].message).startswith(f'Bidirectional {layer.name!r}: `dropout=0.25`')
  assert warned[0].filename == __file__  # points at the caller of from_keras


TO_KERAS_ERRORS = {
  'proj_size': (lambda: make_layer('lstm_proj', hidden_size=4), ValueError, 'no projection, got proj_size=3'),
  'dropout': (
    lambda: make_layer('gru', hidden_size=H, num_layers=2, dropout=0.5),
    ValueError,
    'dropout between layers \\(dropout=0.5\\)',
  ),
  'cell': (
    lambda: jaxrnn.Recurrent(jaxrnn.MinGRUCell(H)),
    TypeError,
    'needs a layer over ElmanCell, LSTMCell or GRUCell.*over MinGRUCell',
  ),
}


@pytest.mark.parametrize('case', error_cases(TO_KERAS_ERRORS))
def test_to_keras_errors(case):
  make, error, match = TO_KERAS_ERRORS[case]
  with pytest.raises(error, match=match):  # raised before the parameters are read
    to_keras(make(), {'params': {}})


@pytest.mark.slow
def test_to_keras_variables_must_fit(rng):
  layer = make_layer('lstm', hidden_size=H)
  variables = random_variables(make_layer('lstm', hidden_size=H, bidirectional=True), F, rng)
  with pytest.raises(ValueError, match='expected parameter groups'):
    to_keras(layer, variables)


@pytest.mark.slow
def test_float64_carries_over(rng):
  """float64 weights stay float64 both ways (bit-identical with GRU's two biases kept)."""
  with jax.enable_x64(True):
    layer = make_layer('gru', hidden_size=H, bidirectional=True, param_dtype=jnp.float64)
    variables = jax.tree.map(lambda a: a.astype(jnp.float64), random_variables(layer, F, rng))
    converted = to_keras(layer, variables)
    assert converted.forward_layer.cell.kernel.dtype == 'float64'
    x = rng.normal(size=(B, T, F))
    keras_outputs = converted(x)[0]
    back, back_variables = from_keras(converted)
    assert back.param_dtype == jnp.float64
    jax.tree.map(np.testing.assert_array_equal, back_variables, variables)
    outputs, _ = back.apply(back_variables, x)
    assert outputs.dtype == jnp.float64
    # Keras' float64 GRU on JAX agrees to about 1e-7, not to float64 rounding.
    np.testing.assert_allclose(outputs, keras_outputs, atol=1e-6, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize(
  ('policy', 'dtype', 'atol'), [('mixed_bfloat16', jnp.bfloat16, 2e-2), ('mixed_float16', jnp.float16, 3e-3)]
)
def test_mixed_precision_policy(rng, policy, dtype, atol):
  """Keras' mixed policies (float32 weights, 16-bit compute) are jaxrnn's dtype=bfloat16/float16, both ways."""
  layer = keras_layer('lstm', rng, bidirectional=True, dtype=policy)
  x = inputs(rng)
  want_outputs = np.asarray(layer(x)[0], np.float32)
  converted, variables = from_keras(layer)
  assert (jnp.dtype(converted.dtype), jnp.dtype(converted.param_dtype)) == (jnp.dtype(dtype), jnp.float32)
  outputs, _ = converted.apply(variables, x)
  assert outputs.dtype == dtype
  np.testing.assert_allclose(np.asarray(outputs, np.float32), want_outputs, atol=atol, rtol=0)
  back = to_keras(converted, variables)
  assert back.forward_layer.dtype_policy.name == policy
  np.testing.assert_array_equal(np.asarray(back(x)[0], np.float32), want_outputs)

  bad = make_layer('gru', hidden_size=H, dtype=jnp.float32, param_dtype=jnp.bfloat16)
  with pytest.raises(
    ValueError, match='compute dtype float32 with bfloat16 parameters has no Keras dtype policy'
  ):
    to_keras(bad, bad.init(jax.random.key(0), jnp.ones((1, T, F))))


@pytest.mark.slow
def test_keras_is_imported_only_when_converting(monkeypatch):
  code = 'import sys, jaxrnn.interop; assert "keras" not in sys.modules, "keras imported"'
  subprocess.run([sys.executable, '-c', code], check=True)

  from jaxrnn._src import keras_interop

  def no_keras(name):
    raise ImportError(f'No module named {name!r}')

  monkeypatch.setattr(keras_interop.importlib, 'import_module', no_keras)
  with pytest.raises(ImportError, match=r"pip install 'jaxrnn\[convert\]'"):
    from_keras(None)
