"""Every misuse of SPEC §6 raises ValueError/TypeError naming the argument."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_equal

import jaxrnn
from jaxrnn import LSTMState

B, T, F, H = 2, 5, 3, 4
X = jnp.ones((B, T, F))


@pytest.fixture(scope='module')
def lstm():
  layer = jaxrnn.LSTM(hidden_size=H, num_layers=2)
  return layer, layer.init(jax.random.key(0), X)


@pytest.fixture(scope='module')
def gru():
  layer = jaxrnn.GRU(hidden_size=H)
  return layer, layer.init(jax.random.key(0), X)


zeros = np.zeros
CALL_ERRORS = {
  # name: (layer fixture, args, kwargs, exception, message pattern)
  'rank 2 inputs': ('gru', (jnp.ones((T, F)),), {}, ValueError, r'`inputs`.*rank >= 3.*\(5, 3\)'),
  'integer inputs': ('gru', (jnp.ones((B, T, F), jnp.int32),), {}, TypeError, r'`inputs`.*floating.*int32'),
  'wrong feature size': ('gru', (jnp.ones((B, T, 7)),), {}, ValueError, r'`inputs`.*F=7.*F=3'),
  'missing feature axis': ('gru', (jnp.ones((B, T)),), {}, ValueError, r'`inputs`.*rank'),
  'float seq_lengths': ('gru', (X, np.array([1.0, 2.0])), {}, TypeError, r'`seq_lengths`.*integers.*float'),
  'seq_lengths batch shape': (
    'gru',
    (X, np.array([1, 2, 3])),
    {},
    ValueError,
    r'`seq_lengths`.*\(2,\).*\(3,\)',
  ),
  'seq_lengths time-major mixup': (
    'gru',
    (jnp.ones((T, B, F)), np.array([1, 2])),
    {},
    ValueError,
    r'`seq_lengths`.*time_major=True',
  ),
  'negative seq_lengths': ('gru', (X, np.array([-1, 2])), {}, ValueError, r'`seq_lengths`.*\[0, 5\].*-1'),
  'too long seq_lengths': ('gru', (X, np.array([6, 2])), {}, ValueError, r'`seq_lengths`.*\[0, 5\].*6'),
  'carry rows': (
    'gru',
    (X, None, zeros((2, B, H), np.float32)),
    {},
    ValueError,
    r'`initial_carry`.*\(1, 2, 4\)',
  ),
  'carry hidden size': ('gru', (X, None, zeros((1, B, 5), np.float32)), {}, ValueError, r'`initial_carry`'),
  'tuple carry for gru': (
    'gru',
    (X, None, (zeros((1, B, H)), zeros((1, B, H)))),
    {},
    TypeError,
    r'`initial_carry`.*single array',
  ),
  'carry dtype': (
    'gru',
    (X, None, zeros((1, B, H), np.float16)),
    {},
    TypeError,
    r'`initial_carry`.*float16.*float32',
  ),
  'integer carry': ('gru', (X, None, zeros((1, B, H), np.int32)), {}, TypeError, r'`initial_carry`.*int32'),
  'array carry for lstm': (
    'lstm',
    (X, None, zeros((2, B, H), np.float32)),
    {},
    TypeError,
    r'`initial_carry`.*LSTMState\(h, c\)',
  ),
  'lstm c shape': (
    'lstm',
    (X, None, LSTMState(zeros((2, B, H), np.float32), zeros((1, B, H), np.float32))),
    {},
    ValueError,
    r'`initial_carry.c`.*\(2, 2, 4\)',
  ),
  'lstm carry of three': ('lstm', (X, None, (zeros((2, B, H)),) * 3), {}, TypeError, r'`initial_carry`'),
}


VALUE_CHECKS = {'negative seq_lengths', 'too long seq_lengths'}


@pytest.mark.parametrize('case', list(CALL_ERRORS))
def test_call_errors(request, case):
  fixture, args, kwargs, exception, pattern = CALL_ERRORS[case]
  layer, variables = request.getfixturevalue(fixture)
  with pytest.raises(exception, match=pattern):
    layer.apply(variables, *args, **kwargs)
  if case in VALUE_CHECKS:  # traced lengths are clipped instead (test_transforms)
    return
  with pytest.raises(exception, match=pattern):  # the same at trace time under jit
    jax.jit(lambda *a: layer.apply(variables, *a, **kwargs))(*args)


CONSTRUCTOR_ERRORS = {
  'dropout >= 1': (jaxrnn.LSTM, {'dropout': 1.0}, ValueError, r'`dropout`.*\[0, 1\)'),
  'negative dropout': (jaxrnn.GRU, {'dropout': -0.1}, ValueError, r'`dropout`'),
  'num_layers 0': (jaxrnn.RNN, {'num_layers': 0}, ValueError, r'`num_layers`.*>= 1.*0'),
  'hidden_size 0': (jaxrnn.LSTM, {'hidden_size': 0}, ValueError, r'`hidden_size`.*>= 1'),
  'float hidden_size': (jaxrnn.LSTM, {'hidden_size': 4.0}, TypeError, r'`hidden_size`.*int'),
  'proj_size >= hidden_size': (
    jaxrnn.LSTM,
    {'proj_size': H},
    ValueError,
    r'`proj_size`.*smaller.*`hidden_size`',
  ),
  'proj_size on a GRU': (jaxrnn.GRU, {'proj_size': 2}, TypeError, r'proj_size'),
  'bad nonlinearity': (
    jaxrnn.RNN,
    {'nonlinearity': 'sigmoid'},
    ValueError,
    r"`nonlinearity`.*'tanh' or 'relu'",
  ),
  'unroll 0': (jaxrnn.GRU, {'unroll': 0}, ValueError, r'`unroll`'),
}


def test_seq_lengths_layout_hint_counts_the_feature_axes():
  """The hint read the other layout's batch as if x had one feature axis: ConvLSTM's has three."""
  layer = jaxrnn.Recurrent(jaxrnn.ConvLSTMCell(H, (3, 3), spatial_shape=(6, 7)))

  def init(x, seq_lengths):  # traced: the checks run, nothing compiles
    return jax.eval_shape(layer.init, jax.random.key(0), x, seq_lengths)

  pattern = r'laid out as \[\*batch, T, \*features\].*got shape \(2,\)\. It matches the other layout: did you mean time_major=True\?'
  with pytest.raises(ValueError, match=pattern):
    init(jnp.ones((T, B, 6, 7, F)), jnp.array([1, 2]))  # [T, B, H, W, C] read as [B, T, H, W, C]
  with pytest.raises(ValueError, match=r'`seq_lengths` must have the batch shape \(2,\)') as error:
    init(jnp.ones((B, T, 6, 7, F)), jnp.zeros((T, 6, 7), jnp.int32))  # x.shape[1:-1], no layout's batch
  assert 'did you mean' not in str(error.value)


@pytest.mark.parametrize('case', list(CONSTRUCTOR_ERRORS))
def test_constructor_errors(case):
  cls, fields, exception, pattern = CONSTRUCTOR_ERRORS[case]
  with pytest.raises(exception, match=pattern):
    cls(**{'hidden_size': H, **fields})


def test_dropout_without_rng_names_the_stream(lstm):
  layer = jaxrnn.LSTM(hidden_size=H, num_layers=2, dropout=0.5)
  with pytest.raises(Exception, match=re.escape('dropout')):
    layer.apply(lstm[1], X, deterministic=False)


def test_plain_tuple_carry_is_accepted_for_lstm(lstm):
  layer, variables = lstm
  h = jnp.ones((2, B, H))
  a = layer.apply(variables, X, None, (h, h))
  b = layer.apply(variables, X, None, LSTMState(h, h))
  assert_trees_equal(a, b)
