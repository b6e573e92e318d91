import os
import sys

import chex
import jax
import numpy as np
import pytest
from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))

# Every example compiles new shapes, so examples are few; CI replays a fixed set (derandomize)
# so that a red run is reproducible, while local runs explore (`--hypothesis-profile=explore`).
settings.register_profile('ci', max_examples=10, deadline=None, derandomize=True, print_blob=True)
settings.register_profile('dev', max_examples=20, deadline=None, print_blob=True)
settings.register_profile('explore', max_examples=300, deadline=None, print_blob=True)
settings.load_profile('ci' if os.environ.get('CI') else 'dev')

# Every layer flavour the library offers: (layer class name, extra fields, cell name).
KINDS = {
  'rnn_tanh': ('RNN', {'nonlinearity': 'tanh'}),
  'rnn_relu': ('RNN', {'nonlinearity': 'relu'}),
  'lstm': ('LSTM', {}),
  'lstm_proj': ('LSTM', {'proj_size': 3}),
  'gru': ('GRU', {}),
}


def _plain(tree):
  """NumPy leaves, LSTMState as a plain (h, c) tuple (as PyTorch and the oracles return it)."""
  from jaxrnn import LSTMState

  is_state = lambda x: isinstance(x, LSTMState)  # noqa: E731
  tree = jax.tree.map(lambda x: tuple(x) if is_state(x) else x, tree, is_leaf=is_state)
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def assert_trees_close(got, want, atol=1e-6):
  """Same tree structure and leaves within ``atol``."""
  chex.assert_trees_all_close(_plain(got), _plain(want), atol=atol, rtol=0)


def assert_trees_equal(got, want):
  """Same tree structure and bit-identical leaves."""
  chex.assert_trees_all_equal(_plain(got), _plain(want))


def make_layer(kind, **fields):
  import jaxrnn

  cls, extra = KINDS[kind]
  return getattr(jaxrnn, cls)(**{**extra, **fields})


def random_variables(layer, in_features, rng, scale=0.5):
  """Returns ``{'params': ...}`` for ``layer`` with normal(0, scale) values, without ``init``."""
  config = layer.config
  params = {}
  for row, name in enumerate(config.param_names):
    shapes = config.weight_shapes(row // config.num_directions, in_features)
    params[name] = {
      k: jax.numpy.asarray(rng.normal(size=s) * scale, jax.numpy.float32) for k, s in shapes.items()
    }
  return {'params': params}


@pytest.fixture
def rng():
  return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
  doctest_namespace['jax'] = jax
