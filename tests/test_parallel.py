"""The parallel driver (SPEC §12): a cell linear in its carry, written here against the public hooks
only, gives the same results with `scan_mode='associative'` as with the sequential loop, under
padding, both directions, packing, stacking, recurrent dropout and one-step decoding."""

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import QUICK_COMPILE
from conftest import assert_trees_close
from conftest import chosen_then_covering
from conftest import slow
from hypothesis import given
from hypothesis import strategies as st

import jaxrnn

B, T, F, H = 3, 9, 4, 5
LENGTHS = np.array([9, 4, 0])
IDS = np.array(
  [[1, 1, 1, 2, 2, 0, 3, 3, 3], [0, 1, 1, 1, 1, 1, 1, 0, 0], [1, 2, 2, 3, 3, 3, 4, 0, 0]], np.int32
)


@dataclasses.dataclass(frozen=True)
class GatedDecayCell:
  """A user's linear cell: ``h' = a h + b`` with ``a = sigmoid(x W_a)``, ``b = (1 - a) act(x W_b)``
  (``act = sigmoid`` in log space, so that ``b > 0``, else ``tanh``), ``y = 2 h' + sum(x)``."""

  features: int
  log_space: bool = False

  @property
  def output_size(self):
    return self.features

  def init(self, key, in_features, dtype=jnp.float32):
    ka, kb = jax.random.split(key)
    shape = (in_features, self.features)
    return {'wa': jax.random.normal(ka, shape, dtype), 'wb': jax.random.normal(kb, shape, dtype)}

  def initial_carry(self, batch_shape, dtype=jnp.float32):
    return jnp.zeros((*batch_shape, self.features), dtype)

  def linear_form(self, params, x):
    a = jax.nn.sigmoid(x @ params['wa'])
    act = jax.nn.sigmoid if self.log_space else jnp.tanh
    return a, (1 - a) * act(x @ params['wb'])

  def log_linear_form(self, params, x):
    za = x @ params['wa']
    return jax.nn.log_sigmoid(za), jax.nn.log_sigmoid(-za) + jax.nn.log_sigmoid(x @ params['wb'])

  def readout(self, params, h, x):
    return 2 * h + x.sum(-1, keepdims=True)

  def __call__(self, params, h, x):
    a, b = self.linear_form(params, x)
    h = a * h + b
    return h, self.readout(params, h, x)


def np_loop(params, x, h0, reverse):
  """Float64 NumPy: one sequence ``x [n, F]`` from ``h0 [H]``; returns ``(ys [n, H], h_n)``."""
  wa, wb = (np.asarray(params[k], np.float64) for k in ('wa', 'wb'))
  h, ys = np.asarray(h0, np.float64), [None] * len(x)
  for t in reversed(range(len(x))) if reverse else range(len(x)):
    a = 1 / (1 + np.exp(-x[t] @ wa))
    h = a * h + (1 - a) * np.tanh(x[t] @ wb)
    ys[t] = 2 * h + x[t].sum()
  return np.array(ys).reshape(len(x), len(h)), h


def layer_pair(**options):
  cell = options.pop('cell', GatedDecayCell(H))
  return [jaxrnn.Recurrent(cell, scan_mode=mode, **options) for mode in ('associative', 'sequential')]


# Every triple of the four axes' values (12 of the 24 combinations; each ran 2 float64 fwd+bwd compiles).
@pytest.mark.parametrize(
  'num_layers,bidirectional,padding,log_space',
  chosen_then_covering(
    ([1, 2], [True, False], ['lengths', 'packed', 'none'], [False, True]),
    fast=[(1, True, 'packed', False), (2, True, 'none', True)],
    strength=3,
  ),
)
def test_associative_equals_sequential(rng, num_layers, bidirectional, padding, log_space):
  """Outputs, final carries and gradients (parameters and initial carry) agree to float64 round-off."""
  with jax.enable_x64(True):
    x = rng.normal(size=(B, T, F))
    options = dict(num_layers=num_layers, bidirectional=bidirectional, param_dtype=jnp.float64)
    pair = layer_pair(cell=GatedDecayCell(H, log_space), **options)
    variables = pair[0].init(jax.random.key(0), x[:, :2])
    rows = num_layers * (1 + bidirectional)
    kwargs, shape = {}, (rows, B, H)
    if padding == 'lengths':
      kwargs = dict(seq_lengths=LENGTHS)
    elif padding == 'packed':
      kwargs, shape = dict(segment_ids=IDS, num_segments=4), (rows, B, 4, H)
    h0 = jnp.asarray(np.abs(rng.normal(size=shape)))

    def run(layer, variables, h0):
      ys, final = layer.apply(variables, x, initial_carry=h0, **kwargs)
      return jnp.sum(jnp.sin(ys)) + jnp.sum(jnp.cos(final)), (ys, final)

    grad = jax.jit(jax.value_and_grad(run, argnums=(1, 2), has_aux=True), static_argnums=0)
    got, want = (grad(lay, variables, h0) for lay in pair)
    assert_trees_close(got, want, atol=1e-12)
    if padding != 'none':
      np.testing.assert_array_equal(
        np.asarray(got[0][1][0])[(IDS if padding == 'packed' else _mask()) == 0], 0
      )


def _mask():
  return (np.arange(T) < LENGTHS[:, None]).astype(int)


@pytest.mark.parametrize('reverse', [False, True])
def test_associative_equals_numpy_loop(rng, reverse):
  """Each padded sequence against a float64 NumPy loop over its valid prefix (reversed for the
  backward direction), from its own initial state."""
  with jax.enable_x64(True):
    x = rng.normal(size=(B, T, F))
    layer = jaxrnn.Recurrent(
      GatedDecayCell(H), bidirectional=True, scan_mode='associative', param_dtype=jnp.float64
    )
    variables = layer.init(jax.random.key(1), x[:, :2])
    h0 = rng.normal(size=(2, B, H))
    ys, final = layer.apply(variables, x, LENGTHS, jnp.asarray(h0))
    name, half = ('l0_reverse', slice(H, None)) if reverse else ('l0', slice(None, H))
    for b, n in enumerate(LENGTHS):
      want_ys, want_h = np_loop(variables['params'][name], x[b, :n], h0[int(reverse), b], reverse)
      np.testing.assert_allclose(ys[b, :n, half], want_ys, atol=1e-12)
      np.testing.assert_allclose(final[int(reverse), b], want_h, atol=1e-12)
      np.testing.assert_array_equal(ys[b, n:], 0)


@pytest.mark.slow
def test_recurrent_dropout_and_dropout_between_layers_agree(rng):
  x = rng.normal(size=(B, T, F)).astype(np.float32)
  pair = layer_pair(num_layers=2, bidirectional=True, recurrent_dropout=0.5, dropout=0.3)
  variables = pair[0].init(jax.random.key(0), x[:, :2])
  got, want = (
    lay.apply(variables, x, LENGTHS, deterministic=False, rngs={'dropout': jax.random.key(3)}) for lay in pair
  )
  assert_trees_close(got, want, atol=1e-5)
  assert not np.allclose(got[0], pair[0].apply(variables, x, LENGTHS)[0])  # dropout did something


def test_step_equals_the_parallel_call(rng):
  """``step`` (one token, O(1)) reproduces the associative sequence call, and streaming in chunks
  (each chunk's final carry the next one's initial carry) equals one call."""
  x = rng.normal(size=(B, T, F)).astype(np.float32)
  layer = jaxrnn.Recurrent(GatedDecayCell(H), num_layers=2, scan_mode='associative')
  variables = layer.init(jax.random.key(0), x[:, :2])
  ys, final = layer.apply(variables, x)
  carry, steps = None, []
  for t in range(T):
    y, carry = layer.apply(variables, x[:, t], carry, method='step')
    steps.append(y)
  np.testing.assert_allclose(np.stack(steps, 1), ys, atol=1e-5)
  np.testing.assert_allclose(carry, final, atol=1e-5)
  first, mid = layer.apply(variables, x[:, :4])
  second, last = layer.apply(variables, x[:, 4:], None, mid)
  np.testing.assert_allclose(np.concatenate([first, second], 1), ys, atol=1e-5)
  np.testing.assert_allclose(last, final, atol=1e-5)


@pytest.mark.slow  # 12 s; the default run checks T=4096-style finiteness through the other tests
@pytest.mark.parametrize(
  'log_space', [True]
)  # the linear form: each paper cell at T=65,536, test_linear_cells
def test_long_sequences_stay_finite(rng, log_space):
  """T = 65,536: forward and backward finite (products of 65,536 gates underflow to 0, not NaN)."""
  layer = jaxrnn.Recurrent(GatedDecayCell(H, log_space), bidirectional=True, scan_mode='associative')
  x = rng.normal(size=(1, 65_536, F)).astype(np.float32)
  variables = layer.init(jax.random.key(0), x[:, :2])
  loss = jax.jit(
    jax.value_and_grad(lambda v: jnp.sum(layer.apply(v, x, np.array([60_000]))[0] ** 2)),
    compiler_options=QUICK_COMPILE,
  )
  value, grads = loss(variables)
  assert np.isfinite(value) and all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_scan_mode_errors():
  with pytest.raises(ValueError, match=r"`scan_mode` must be one of \('auto', 'associative', 'sequential'\)"):
    jaxrnn.GRU(4, scan_mode='parallel')
  with pytest.raises(ValueError, match='needs cells linear in their carry.*GRUCell has none'):
    jaxrnn.GRU(4, scan_mode='associative').config  # noqa: B018


PAPER_CELLS = {
  'mingru': lambda: jaxrnn.MinGRUCell(F),
  'mingru_log': lambda: jaxrnn.MinGRUCell(F, log_space=True),
  'minlstm': lambda: jaxrnn.MinLSTMCell(F),
  'minlstm_log': lambda: jaxrnn.MinLSTMCell(F, log_space=True),
  'lru': lambda: jaxrnn.LRUCell(F, 6, r_min=0.5),
  'rglru': lambda: jaxrnn.RGLRUCell(F, num_heads=2),
}


@pytest.mark.parametrize(
  'cell,padding',
  [
    c if c == ('mingru', 'packed') else slow(*c)
    for c in itertools.product(PAPER_CELLS, ['lengths', 'packed'])
  ],
)
def test_paper_cells_associative_equals_sequential(rng, cell, padding):
  """minGRU, minLSTM (both forms), LRU (complex state) and RG-LRU: the parallel driver equals the
  sequential loop, bidirectional, values and gradients, to float64 round-off."""
  with jax.enable_x64(True):
    x = rng.normal(size=(B, T, F))
    pair = layer_pair(cell=PAPER_CELLS[cell](), bidirectional=True, param_dtype=jnp.float64)
    variables = pair[0].init(jax.random.key(0), x[:, :2])
    kwargs = dict(seq_lengths=LENGTHS) if padding == 'lengths' else dict(segment_ids=IDS, num_segments=4)

    def run(variables, layer):
      ys, final = layer.apply(variables, x, **kwargs)
      return jnp.sum(jnp.sin(ys)) + jnp.sum(jnp.abs(final) ** 2), (ys, final.real, final.imag)

    grad = jax.jit(jax.value_and_grad(run, has_aux=True), static_argnums=1)
    got, want = (grad(variables, lay) for lay in pair)
    assert_trees_close(got, want, atol=1e-10)


WIDE_CELLS = {
  'lru': lambda: jaxrnn.LRUCell(H, 6, r_min=0.5),
  'rglru': lambda: jaxrnn.RGLRUCell(6, num_heads=2),
  'lru_square': lambda: jaxrnn.LRUCell(F, 3, r_min=0.5),
  'rglru_square': lambda: jaxrnn.RGLRUCell(F),
}


@pytest.mark.parametrize('cell', ['lru', 'rglru'])
def test_lru_and_rglru_stack_shapes(cell):
  """Traced only (no compile): the issue's 2-layer bidirectional stack builds, layer 1 reading 2H."""
  layer = jaxrnn.Recurrent(WIDE_CELLS[cell](), num_layers=2, bidirectional=True, scan_mode='associative')
  x = jax.ShapeDtypeStruct((B, 8, F), jnp.float32)
  variables = jax.eval_shape(layer.init, jax.random.key(0), x)
  features = layer.cell.features
  l1 = variables['params']['l1']
  assert (l1['input_proj']['w'] if 'rglru' in cell else l1['D']).shape == (2 * features, features)
  ys, final = jax.eval_shape(layer.apply, variables, x, jnp.zeros((B,), jnp.int32))
  assert ys.shape == (B, 8, 2 * features) and final.shape[:2] == (4, B)


@pytest.mark.slow
@pytest.mark.parametrize('cell', list(WIDE_CELLS))
def test_lru_and_rglru_stack_bidirectionally(rng, cell):
  """Two bidirectional layers of LRU and RG-LRU over a ragged batch (a length 0 too): layer 1 reads
  2H features (a dense skip D or an input projection), layer 0 F (the same, or the paper's cell for
  the '_square' cells where F = H). Parallel driver equals the loop, values and gradients."""
  steps, lengths = 8, np.array([8, 3, 0])
  with jax.enable_x64(True):
    x = rng.normal(size=(B, steps, F))
    pair = layer_pair(cell=WIDE_CELLS[cell](), num_layers=2, bidirectional=True, param_dtype=jnp.float64)
    variables = pair[0].init(jax.random.key(0), x[:, :2])
    names = set(variables['params']['l1'])
    assert ('input_proj' in names) if 'rglru' in cell else (variables['params']['l1']['D'].ndim == 2)

    def run(variables, layer):
      ys, final = layer.apply(variables, x, seq_lengths=lengths)
      return jnp.sum(jnp.sin(ys)) + jnp.sum(jnp.abs(final) ** 2), (ys, final.real, final.imag)

    grad = jax.jit(jax.value_and_grad(run, has_aux=True), static_argnums=1)
    got, want = (grad(variables, lay) for lay in pair)
    assert_trees_close(got, want, atol=1e-10)
    ys = np.asarray(got[0][1][0])
    assert not np.any(ys[1, 3:]) and not np.any(ys[2])
    assert all(np.any(g != 0) for g in jax.tree.leaves(got[1]['params']['l1_reverse']))


@pytest.mark.slow
@pytest.mark.parametrize('cell', ['lru', 'rglru'])
def test_lru_and_rglru_stacks_under_nnx_export_and_step(rng, cell):
  """The layers' other promises for stacks whose layer 1 has the wide-input parameters: NNX equals
  linen, ``jax.export`` round-trips, and a 2-layer ``step`` continues where the sequence call ends."""
  x, lengths = jnp.asarray(rng.normal(size=(B, 6, F)), jnp.float32), np.array([6, 2, 0])
  layer = jaxrnn.Recurrent(WIDE_CELLS[cell](), num_layers=2, bidirectional=True)
  variables = layer.init(jax.random.key(0), x)
  parts = lambda result: (result[0], jnp.real(result[1]), jnp.imag(result[1]))  # noqa: E731 (LRU: complex)
  want = parts(layer.apply(variables, x, lengths))
  module = jaxrnn.interop.linen_to_nnx(layer, variables, in_features=F)
  assert_trees_close(parts(module(x, lengths)), want, atol=1e-6)
  exported = jax.export.export(jax.jit(layer.apply))(variables, x, lengths)
  assert_trees_close(parts(exported.call(variables, x, lengths)), want, atol=0)
  layer = jaxrnn.Recurrent(WIDE_CELLS[cell](), num_layers=2)
  variables = layer.init(jax.random.key(1), x)
  outputs, final = layer.apply(variables, x)
  step = jax.jit(functools.partial(layer.apply, method='step'))
  carry = layer.initial_carry((B,))
  for t in range(6):
    y, carry = step(variables, x[:, t], carry)
  np.testing.assert_allclose(y, outputs[:, -1], atol=1e-5)
  np.testing.assert_allclose(carry, final, atol=1e-5)


@pytest.mark.slow
@given(lengths=st.lists(st.integers(0, T), min_size=B, max_size=B), reverse_first=st.booleans())
def test_padding_invariants_hold_in_parallel(lengths, reverse_first):
  """Hypothesis over lengths: exact zeros at padding, garbage in padding never read, the forward
  output at the last valid step is the forward final state's readout and the backward direction's
  final state is reached at step 0 (each row equals the sequence alone)."""
  layer, variables = _mingru_layer()
  rng = np.random.default_rng(sum(lengths))
  x = rng.normal(size=(B, T, F)).astype(np.float32)
  lengths = np.array(lengths)
  ys, final = layer.apply(variables, x, lengths)
  dirty = np.where((np.arange(T) < lengths[:, None])[..., None], x, np.nan)
  dirty_ys, dirty_final = layer.apply(variables, dirty, lengths)
  np.testing.assert_array_equal(ys, dirty_ys)
  np.testing.assert_array_equal(final, dirty_final)
  b = int(np.argmax(lengths)) if reverse_first else 0
  n = int(lengths[b])
  np.testing.assert_array_equal(np.asarray(ys)[b, n:], 0)
  alone_ys, alone_final = layer.apply(variables, x[b : b + 1, :n])
  np.testing.assert_allclose(np.asarray(ys)[b, :n], alone_ys[0], atol=1e-6)
  np.testing.assert_allclose(np.asarray(final)[:, b], alone_final[:, 0], atol=1e-6)


@functools.cache
def _mingru_layer():
  layer = jaxrnn.Recurrent(jaxrnn.MinGRUCell(H), bidirectional=True, scan_mode='associative')
  return layer, layer.init(jax.random.key(0), jnp.zeros((1, 2, F)))


@pytest.mark.slow
def test_nnx_export_vmap_and_generate(rng):
  """The parallel driver under NNX (equal to linen), ``jax.export``, ``vmap``, and ``generate``
  over ``step`` (greedy tokens equal the argmax of the sequence call fed its own outputs)."""
  import flax.linen as nn

  cell = jaxrnn.MinGRUCell(H)
  layer = jaxrnn.Recurrent(cell, num_layers=2, bidirectional=True)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  variables = layer.init(jax.random.key(0), x, LENGTHS)
  want = layer.apply(variables, x, LENGTHS)
  module = jaxrnn.interop.linen_to_nnx(layer, variables, in_features=F)
  assert_trees_close(module(x, LENGTHS), want, atol=0)
  exported = jax.export.export(jax.jit(layer.apply))(variables, x, LENGTHS)
  assert_trees_close(exported.call(variables, x, LENGTHS), want, atol=0)
  batched = jax.vmap(lambda xi, n: layer.apply(variables, xi[None], n[None])[0][0])(x, LENGTHS)
  np.testing.assert_allclose(batched, want[0], atol=1e-6)

  class LM(nn.Module):
    def setup(self):
      self.embed = nn.Embed(11, F)
      self.rnn = jaxrnn.Recurrent(cell)
      self.head = nn.Dense(11)

    def __call__(self, tokens):
      return self.head(self.rnn(self.embed(tokens))[0])

    def step(self, tokens, carry):
      y, carry = self.rnn.step(self.embed(tokens), carry)
      return self.head(y), carry

  model = LM()
  tokens = jnp.array([[1, 2, 3]])
  lm_variables = model.init(jax.random.key(0), tokens)
  step_fn = functools.partial(model.apply, lm_variables, method='step')
  generated, _ = jaxrnn.generate(step_fn, jaxrnn.Recurrent(cell).initial_carry((1,)), tokens[:, 0], 4)
  seq = tokens[:, :1]
  for _ in range(4):
    seq = jnp.concatenate([seq, model.apply(lm_variables, seq)[:, -1:].argmax(-1)], 1)
  np.testing.assert_array_equal(generated, seq[:, 1:])
