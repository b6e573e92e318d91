import itertools
import os
import pathlib
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

# XLA:CPU options for a test whose compiled code runs once, in milliseconds, from a large HLO graph
# (T = 65,536 under the associative scan): LLVM's optimisation passes off, 3x less compiling. The HLO
# (the library's computation, after XLA's own passes) is the one a user gets; only the machine code
# is less tuned, with the same IEEE arithmetic (no fast-math either way).
QUICK_COMPILE = {'xla_backend_optimization_level': 0}

DOCS = pathlib.Path(__file__).resolve().parent.parent / 'docs'


@pytest.hookimpl(tryfirst=True)  # before `-m 'not slow'` deselects
def pytest_collection_modifyitems(config, items):
  """The documentation pages' examples (docs/**/*.md, 80 s of compiling) run in the slow tier;
  docstring examples and the README (tests/test_readme.py) stay in the default run."""
  for item in items:
    path = pathlib.Path(str(item.fspath)).resolve()
    if path.suffix == '.md' and DOCS in path.parents:
      item.add_marker(pytest.mark.slow)


# Every layer flavour the library offers: (layer class name, extra fields, cell name).
KINDS = {
  'rnn_tanh': ('RNN', {'nonlinearity': 'tanh'}),
  'rnn_relu': ('RNN', {'nonlinearity': 'relu'}),
  'lstm': ('LSTM', {}),
  'lstm_proj': ('LSTM', {'proj_size': 3}),
  'gru': ('GRU', {}),
}


# Test tiers. The default run (`python -m pytest`) deselects tests marked `slow` and must stay
# under 4 minutes on the 2-core CI CPU; `python -m pytest -m slow` runs the rest (CI runs both).
# Grids keep a fast representative of every pair of parameter values (`pairwise`) or of every
# value (`each_value`) in the default run; single values and whole tests go to the slow tier
# with `slow` or `@pytest.mark.slow`.


def slow(*values):
  """``pytest.param(*values)`` marked ``slow``: for a redundant value of a parametrised test."""
  return pytest.param(*values, marks=pytest.mark.slow)


def _covering(combos, strength, covered=()):
  """Indices of ``combos`` chosen greedily, in product order, so that every choice of ``strength``
  axes sees each combination of their values in at least one chosen combo (``covered`` counts as
  chosen already); among equally good candidates, the one that also covers the most new
  combinations of one more axis wins, so the representatives differ from each other."""
  num_axes = len(combos[0])
  strengths = range(strength, min(strength + 1, num_axes) + 1)

  def keys(combo, s):
    return {tuple((i, combo[i]) for i in subset) for subset in itertools.combinations(range(num_axes), s)}

  uncovered = {s: set().union(*(keys(c, s) for c in combos)) for s in strengths}
  chosen = set(covered)
  for i in chosen:
    for s in strengths:
      uncovered[s] -= keys(combos[i], s)
  while uncovered[strength]:
    best = max(range(len(combos)), key=lambda i: [len(keys(combos[i], s) & uncovered[s]) for s in strengths])
    chosen.add(best)
    for s in strengths:
      uncovered[s] -= keys(combos[best], s)
  return chosen


def _cover(axes, strength):
  """The full product of ``axes`` as ``pytest.param``s, those outside a covering set marked slow."""
  combos = list(itertools.product(*axes))
  fast = _covering(combos, strength)
  return [pytest.param(*c) if i in fast else slow(*c) for i, c in enumerate(combos)]


def pairwise(*axes):
  """The product of ``axes``; the default run keeps every pair of values of two axes (all-pairs).

  For 5 x 2 x 2 x 2 x 2 values, 10 of the 80 combinations; the slow tier runs the other 70.
  """
  return _cover(axes, 2)


def each_value(*axes):
  """The product of ``axes``; the default run keeps every value of every axis at least once."""
  return _cover(axes, 1)


def each_value_then_pairs(*axes):
  """For wide grids: every value of every axis in the default run, every pair of values of two
  axes in the slow tier, and no more (the full product of 6 axes is mostly repetition)."""
  combos = list(itertools.product(*axes))
  fast = _covering(combos, 1)
  pairs = _covering(combos, 2, covered=fast)
  return [pytest.param(*c) if i in fast else slow(*c) for i, c in enumerate(combos) if i in pairs]


def chosen_then_covering(axes, fast, strength):
  """For a grid whose default-run cases are picked by hand (``fast``): those, then in the slow
  tier the fewest more combinations (greedy) that see every choice of values of ``strength``
  axes; only combinations of more axes than that repeat at once are left out."""
  combos = list(itertools.product(*axes))
  fast = {combos.index(tuple(c)) for c in fast}
  chosen = _covering(combos, strength, covered=fast)
  return [pytest.param(*c) if i in fast else slow(*c) for i, c in enumerate(combos) if i in chosen]


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
