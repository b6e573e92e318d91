"""FlaxCell: Flax's linen cells under jaxrnn's layers equal flax.linen.RNN wherever Flax's results are defined.

With ``seq_lengths`` the two libraries differ by design (docs/flax.md). Measured here with flax
0.12 (``test_flax_rnn_padding_semantics_differ``): Flax's ``nn.RNN`` keeps running the cell over
the padding and writes those outputs (not zeros); its final carry is the carry after step
``len - 1`` for ``len > 0``, but for ``len == 0`` it indexes step ``-1``, i.e. the carry after
all ``T`` padded steps, not the initial carry. Its backward direction (``nn.Bidirectional``)
reads ``x[len-1], ..., x[0]`` first and then the padding, so valid outputs and the carries of
``len > 0`` agree with jaxrnn's.
"""

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_close
from conftest import slow
from flax import nnx

import jaxrnn
from jaxrnn.interop import linen_to_nnx
from jaxrnn.interop import nnx_to_linen
from jaxrnn.linen import FlaxCell

B, T, F, H = 3, 5, 2, 4
LENGTHS = np.array([5, 2, 0])


class LeakyCell(nn.RNNCellBase):
  """A user's own cell: ``h' = (h + tanh(x W + b + h U)) / 2``."""

  features: int

  @nn.compact
  def __call__(self, carry, x):
    z = nn.Dense(self.features, name='input')(x) + nn.Dense(self.features, use_bias=False, name='hidden')(
      carry
    )
    h = 0.5 * (carry + jnp.tanh(z))
    return h, h

  @nn.nowrap
  def initialize_carry(self, rng, input_shape):
    return jnp.zeros((*input_shape[:-1], self.features))

  @property
  def num_feature_axes(self) -> int:
    return 1


CELLS = {  # Flax cells, keyword arguments such as name=... passed on
  'lstm': lambda **kw: nn.LSTMCell(H, **kw),
  'optimized_lstm': lambda **kw: nn.OptimizedLSTMCell(H, **kw),
  'gru': lambda **kw: nn.GRUCell(H, **kw),
  'mgu': lambda **kw: nn.MGUCell(H, **kw),
  'simple': lambda **kw: nn.SimpleCell(H, **kw),
  'user': lambda **kw: LeakyCell(H, **kw),
}


def normal(seed, shape):
  return jax.random.normal(jax.random.key(seed), shape)


def first_row(carry):
  return jax.tree.map(lambda leaf: leaf[0], carry)


def first_column(carry):
  return jax.tree.map(lambda leaf: leaf[:, 0], carry)


class FlaxStack(nn.Module):
  """``num_layers`` of ``nn.Bidirectional(nn.RNN(cell), nn.RNN(cell))``, carries in jaxrnn's row order.

  Its cells are named as jaxrnn names its parameters, so both share one ``params`` tree.
  """

  make_cell: Callable
  num_layers: int = 2

  @nn.compact
  def __call__(self, x, seq_lengths=None):
    carries = []
    for k in range(self.num_layers):
      forward, backward = self.make_cell(name=f'l{k}'), self.make_cell(name=f'l{k}_reverse')
      layer = nn.Bidirectional(nn.RNN(forward), nn.RNN(backward), return_carry=True)
      (forward_carry, backward_carry), x = layer(x, seq_lengths=seq_lengths)
      carries += [forward_carry, backward_carry]
    return x, jax.tree.map(lambda *rows: jnp.stack(rows), *carries)


def random_like(shapes, seed=0):
  """Returns normal(0, 0.5) arrays shaped like ``shapes`` (NumPy: nothing to compile, unlike Flax's
  initializers, whose first eager run took seconds per cell kind)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.5, s.dtype), shapes)


def cell_params(cell, in_features, seed=0):
  """Returns random parameters of a Flax cell (or FlaxCell) for ``in_features``: its ``params`` tree."""
  cell = cell if isinstance(cell, FlaxCell) else FlaxCell(cell)
  return random_like(jax.eval_shape(lambda key: cell.init(key, in_features), jax.random.key(0)), seed)


def layer_params(layer, x, seed=0):
  """Returns random ``{'params': ...}`` of a jaxrnn layer for inputs like ``x``."""
  return random_like(jax.eval_shape(layer.init, jax.random.key(0), x), seed)


@pytest.mark.parametrize('name', [n if n in ('lstm', 'gru', 'user') else slow(n) for n in CELLS])
def test_matches_flax_rnn(name):
  cell = CELLS[name]()
  x = normal(1, (B, T, F))
  params = cell_params(cell, F)
  # jaxrnn's params['l0'] is the cell's own tree, which nn.RNN stores as params['cell'].
  want_carry, want = jax.jit(nn.RNN(cell, return_carry=True).apply)({'params': {'cell': params}}, x)
  layer = jaxrnn.Recurrent(FlaxCell(cell))
  got, got_carry = layer.apply({'params': {'l0': params}}, x)
  assert_trees_close(got, want, atol=1e-6)
  assert_trees_close(first_row(got_carry), want_carry, atol=1e-6)
  flax_shapes = jax.eval_shape(nn.RNN(cell).init, jax.random.key(0), x)['params']['cell']
  layer_shapes = jax.eval_shape(layer.init, jax.random.key(0), x)['params']['l0']
  assert jax.tree.map(jnp.shape, layer_shapes) == jax.tree.map(jnp.shape, flax_shapes)


@pytest.mark.slow
def test_conv_lstm_matches_flax_rnn():
  cell = nn.ConvLSTMCell(H, kernel_size=(2, 2))
  x = normal(1, (2, 3, 4, 4, F))  # [B, T, H, W, C]
  flax_cell = FlaxCell(cell, feature_shape=(4, 4, F))
  assert flax_cell.feature_ndim == 3
  params = cell_params(flax_cell, (4, 4, F))
  want_carry, want = jax.jit(nn.RNN(cell, return_carry=True).apply)({'params': {'cell': params}}, x)
  got, got_carry = jaxrnn.Recurrent(flax_cell).apply({'params': {'l0': params}}, x)
  assert got.shape == (2, 3, 4, 4, H)
  assert_trees_close(got, want, atol=1e-6)
  assert_trees_close(first_row(got_carry), want_carry, atol=1e-6)


@pytest.mark.parametrize(
  'name,padding',
  [('lstm', 'ragged')]
  + [slow(n, p) for n in CELLS for p in ('full', 'ragged') if (n, p) != ('lstm', 'ragged')],
)
def test_bidirectional_stack_matches_flax_bidirectional(name, padding):
  """Flax's stack of nn.Bidirectional layers: equal outputs at valid steps and carries of len > 0."""
  x = normal(1, (B, T, F))
  lengths = LENGTHS if padding == 'ragged' else None
  layer = jaxrnn.Recurrent(FlaxCell(CELLS[name]()), num_layers=2, bidirectional=True)
  variables = layer_params(layer, x)  # the same tree as FlaxStack's
  want, want_carry = jax.jit(FlaxStack(CELLS[name]).apply)(variables, x, lengths)
  got, got_carry = layer.apply(variables, x, lengths)
  valid = (np.arange(T) < (np.full(B, T) if lengths is None else lengths)[:, None])[..., None]
  np.testing.assert_allclose(np.where(valid, got, 0), np.where(valid, want, 0), atol=1e-6)
  has_steps = valid[:, 0, 0]
  assert_trees_close(
    jax.tree.map(lambda c: c[:, has_steps], got_carry), jax.tree.map(lambda c: c[:, has_steps], want_carry)
  )


def test_seq_lengths_each_sequence_as_if_alone():
  """jaxrnn's semantics: each sequence equals running it alone trimmed to its length, exact zeros
  at padding, and a length-0 sequence returns its initial carry."""
  cell = FlaxCell(nn.LSTMCell(H))
  layer = jaxrnn.Recurrent(cell, bidirectional=True)
  variables = {'params': {'l0': cell_params(cell.module, F, 0), 'l0_reverse': cell_params(cell.module, F, 1)}}
  x = normal(1, (B, T, F))
  initial = (normal(2, (2, B, H)), normal(3, (2, B, H)))  # Flax's (c, h), rows [forward, backward]
  got, got_carry = layer.apply(variables, x, LENGTHS, initial)
  for b, length in enumerate(LENGTHS):
    np.testing.assert_array_equal(got[b, length:], 0.0)
    initial_b = jax.tree.map(lambda c: c[:, b], initial)
    got_carry_b = jax.tree.map(lambda c: c[:, b], got_carry)
    if length == 0:
      assert_trees_close(got_carry_b, initial_b, atol=0)
      continue
    # Sequence b alone, trimmed to its length (repeated B times: full length shares a compilation).
    alone, alone_carry = layer.apply(
      variables,
      jnp.repeat(x[b : b + 1, :length], B, axis=0),
      np.full(B, length),
      jax.tree.map(lambda c: jnp.repeat(c[:, None], B, axis=1), initial_b),
    )
    np.testing.assert_allclose(got[b, :length], alone[0], atol=1e-6)
    assert_trees_close(got_carry_b, first_column(alone_carry), atol=1e-6)


def test_flax_rnn_padding_semantics_differ():
  """What docs/flax.md states about Flax's nn.RNN with seq_lengths (see the module docstring)."""
  cell = nn.GRUCell(H)
  x = normal(1, (B, T, F))
  params = cell_params(cell, F)
  flax_rnn = jax.jit(nn.RNN(cell, return_carry=True).apply)
  flax_carry, flax_out = flax_rnn({'params': {'cell': params}}, x, seq_lengths=LENGTHS)
  carry_after_all_steps, full_out = flax_rnn({'params': {'cell': params}}, x)
  got, got_carry = jaxrnn.Recurrent(FlaxCell(cell)).apply({'params': {'l0': params}}, x, LENGTHS)
  # Flax: outputs at padding are the cell run on over the padding, not zeros.
  np.testing.assert_allclose(flax_out, full_out, atol=1e-6)
  assert np.all(np.abs(flax_out[1, 2:]) > 0)
  np.testing.assert_array_equal(got[1, 2:], 0.0)
  # Flax: a length-0 sequence returns the carry after all T padded steps; jaxrnn the initial zeros.
  np.testing.assert_allclose(flax_carry[2], carry_after_all_steps[2], atol=1e-6)
  np.testing.assert_array_equal(got_carry[0, 2], 0.0)
  # Both: len > 0 returns the carry after step len - 1.
  np.testing.assert_allclose(got_carry[0, :2], flax_carry[:2], atol=1e-6)


def test_jit_grad_equals_grad_through_flax_rnn():
  cell = nn.LSTMCell(H)
  x = normal(1, (B, T, F))
  params = cell_params(cell, F)
  layer = jaxrnn.Recurrent(FlaxCell(cell))

  def loss_jaxrnn(params, x):
    outputs, _ = layer.apply({'params': {'l0': params}}, x)
    return jnp.sum(outputs**2)

  def loss_flax(params, x):
    return jnp.sum(nn.RNN(cell).apply({'params': {'cell': params}}, x) ** 2)

  got = jax.jit(jax.grad(loss_jaxrnn, argnums=(0, 1)))(params, x)
  want = jax.jit(jax.grad(loss_flax, argnums=(0, 1)))(params, x)
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(got))
  assert_trees_close(got, want, atol=1e-5)


def test_grad_never_reaches_padding():
  cell = FlaxCell(nn.GRUCell(H))
  layer = jaxrnn.Recurrent(cell, bidirectional=True)
  variables = layer_params(layer, jnp.zeros((B, T, F)))
  x = normal(1, (B, T, F)).at[1, 3].set(jnp.nan)  # padding: never read

  def loss(variables, x):
    outputs, carry = layer.apply(variables, x, LENGTHS)
    return jnp.sum(outputs**2) + jnp.sum(carry**2)

  grad_params, grad_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, x)
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(grad_params))
  valid = np.arange(T) < LENGTHS[:, None]
  np.testing.assert_array_equal(np.asarray(grad_x)[~valid], 0.0)
  assert np.isfinite(grad_x[valid]).all()


def test_step_reproduces_the_sequence_call():
  cell = FlaxCell(nn.LSTMCell(H))
  layer = jaxrnn.Recurrent(cell, num_layers=2)
  variables = {'params': {'l0': cell_params(cell.module, F, 0), 'l1': cell_params(cell.module, H, 1)}}
  x = normal(1, (B, T, F))
  outputs, final_carry = layer.apply(variables, x)
  carry = None
  for t in range(T):
    y, carry = layer.apply(variables, x[:, t], carry, method='step')
    np.testing.assert_allclose(y, outputs[:, t], atol=1e-6)
  assert_trees_close(carry, final_carry, atol=1e-6)


@pytest.mark.slow
def test_nnx_recurrent_runs_and_equals_linen():
  cell = FlaxCell(nn.GRUCell(H))
  module = jaxrnn.nnx.Recurrent(cell, F, rngs=nnx.Rngs(0))
  x = normal(1, (B, T, F))
  outputs, final_carry = module(x, LENGTHS)
  assert outputs.shape == (B, T, H) and final_carry.shape == (1, B, H)
  params = {'l0': nnx.to_pure_dict(nnx.state(module.l0))['tree']}
  want = jaxrnn.Recurrent(cell).apply({'params': params}, x, LENGTHS)
  assert_trees_close((outputs, final_carry), want, atol=1e-6)


def test_linen_to_nnx_and_back():
  """Moving a layer of a cell without named weights to NNX (it read the abstract weights' values)."""
  layer = jaxrnn.Recurrent(FlaxCell(nn.GRUCell(H)))
  x = normal(1, (B, T, F))
  variables = layer_params(layer, x)
  module = linen_to_nnx(layer, variables, in_features=F)
  assert_trees_close(module(x, LENGTHS), layer.apply(variables, x, LENGTHS), atol=1e-6)
  layer_back, variables_back = nnx_to_linen(module)
  assert layer_back == layer
  assert_trees_close(variables_back, variables, atol=0)


def test_recurrent_dropout_masks_h_of_flax_lstm_carries():
  for module in (nn.LSTMCell(H), nn.OptimizedLSTMCell(H)):
    cell = FlaxCell(module)
    assert cell.hidden_leaves(cell.initial_carry((B,))) == (False, True)  # Flax's (c, h)
  cell = FlaxCell(nn.GRUCell(H))
  assert cell.hidden_leaves(cell.initial_carry((B,))) is True


@pytest.mark.slow
def test_recurrent_dropout_runs_on_a_flax_lstm():
  layer = jaxrnn.Recurrent(FlaxCell(nn.LSTMCell(H)), recurrent_dropout=0.5)
  x = normal(1, (B, T, F))
  variables = layer_params(layer, x)
  rngs = {'dropout': jax.random.key(2)}
  dropped = layer.apply(variables, x, LENGTHS, deterministic=False, rngs=rngs)
  assert_trees_close(layer.apply(variables, x, LENGTHS, deterministic=False, rngs=rngs), dropped, atol=0)
  outputs, _ = layer.apply(variables, x, LENGTHS)
  assert np.isfinite(dropped[0]).all() and not np.allclose(dropped[0], outputs)
  np.testing.assert_array_equal(dropped[0][1, 2:], 0.0)


def test_cell_made_inside_a_compact_method():
  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      outputs, _ = jaxrnn.Recurrent(FlaxCell(nn.GRUCell(H)))(x, LENGTHS)
      return outputs

  x = normal(1, (B, T, F))
  variables = layer_params(Model(), x)
  assert list(variables['params']) == ['Recurrent_0']  # the bound nn.GRUCell declares nothing
  assert jax.jit(Model().apply)(variables, x).shape == (B, T, H)


def test_equal_cells_hash_equal_and_share_a_compilation():
  assert FlaxCell(nn.LSTMCell(H)) == FlaxCell(nn.LSTMCell(H))
  assert hash(FlaxCell(nn.LSTMCell(H))) == hash(FlaxCell(nn.LSTMCell(H)))
  assert FlaxCell(nn.LSTMCell(H)) != FlaxCell(nn.LSTMCell(H + 1))
  assert FlaxCell(nn.LSTMCell(H)) != FlaxCell(nn.OptimizedLSTMCell(H))
  for dtype in (jnp.bfloat16, np.float32):  # dtypes are fields of every Flax cell
    assert FlaxCell(nn.GRUCell(H, param_dtype=dtype)) == FlaxCell(nn.GRUCell(H, param_dtype=dtype))
  # Flax cannot hash a module with a list field; FlaxCell reads lists as tuples.
  conv = functools.partial(FlaxCell, feature_shape=(4, 4, F))
  assert hash(conv(nn.ConvLSTMCell(H, kernel_size=[2, 2]))) == hash(
    conv(nn.ConvLSTMCell(H, kernel_size=[2, 2]))
  )
  traces = []

  @functools.partial(jax.jit, static_argnums=0)
  def run(cell, x):
    traces.append(cell)
    return x * cell.output_size

  run(FlaxCell(nn.GRUCell(H)), jnp.ones(2))
  run(FlaxCell(nn.GRUCell(H)), jnp.ones(2))
  assert len(traces) == 1


def test_unhashable_field_compares_by_identity():
  class TableCell(LeakyCell):
    table: jax.Array = None

  cell = FlaxCell(TableCell(H, table=jnp.ones(3)))
  assert cell == cell and hash(cell) == hash(cell)
  assert cell != FlaxCell(TableCell(H, table=jnp.ones(3)))


def test_errors_name_the_fix():
  with pytest.raises(ValueError, match='feature_shape'):
    FlaxCell(nn.ConvLSTMCell(H, kernel_size=(2, 2)))
  with pytest.raises(ValueError, match='feature_shape` must be 3 positive ints'):
    FlaxCell(nn.ConvLSTMCell(H, kernel_size=(2, 2)), feature_shape=(4, 4))
  with pytest.raises(ValueError, match='set `feature_shape` to the features of the inputs'):
    FlaxCell(nn.ConvLSTMCell(H, kernel_size=(2, 2)), feature_shape=(4, 4, F)).init(
      jax.random.key(0), (5, 5, F)
    )
  with pytest.raises(ValueError, match=r'`output_size` \(3\) must equal `module.features` \(4\)'):
    FlaxCell(nn.GRUCell(H), output_size=3)
  with pytest.raises(TypeError, match='initialize_carry'):
    FlaxCell(nn.Dense(H))

  class NoCarry(nn.RNNCellBase):
    features: int

  with pytest.raises(TypeError, match='must implement `initialize_carry'):
    FlaxCell(NoCarry(H))
  with pytest.raises(TypeError, match='flax.linen recurrent cell'):
    FlaxCell(jaxrnn.GRUCell(H))
  with pytest.raises(TypeError, match='FlaxCell'):
    jaxrnn.Recurrent(nn.GRUCell(H))

  class HiddenSizeCell(nn.RNNCellBase):  # no `features`, no `num_feature_axes`
    hidden_size: int

    def __call__(self, carry, x):
      return carry, carry

    @nn.nowrap
    def initialize_carry(self, rng, input_shape):
      return jnp.zeros((*input_shape[:-1], self.hidden_size))

  with pytest.raises(TypeError, match='output_size=H_out'):
    FlaxCell(HiddenSizeCell(H))
  cell = FlaxCell(HiddenSizeCell(H), output_size=H)
  assert (cell.output_size, cell.feature_ndim) == (H, 1)

  class Counting(LeakyCell):
    @nn.compact
    def __call__(self, carry, x):
      count = self.variable('counters', 'steps', jnp.zeros, ())
      count.value += 1
      return super().__call__(carry, x)

  with pytest.raises(ValueError, match=r"\['counters'\]"):
    FlaxCell(Counting(H)).init(jax.random.key(0), F)


@pytest.mark.slow
def test_multiple_batch_axes_time_major_and_bfloat16():
  cell = FlaxCell(nn.LSTMCell(H))
  x = normal(1, (2, B, T, F))
  lengths = np.stack([LENGTHS, LENGTHS[::-1]])
  layer = jaxrnn.Recurrent(cell, num_layers=2, bidirectional=True)
  variables = layer_params(layer, x)
  got, carry = layer.apply(variables, x, lengths)
  for i in range(2):
    want, want_carry = layer.apply(variables, x[i], lengths[i])
    np.testing.assert_allclose(got[i], want, atol=1e-6)
    assert_trees_close(jax.tree.map(lambda c: c[:, i], carry), want_carry, atol=1e-6)
  time_major = jaxrnn.Recurrent(cell, num_layers=2, bidirectional=True, time_major=True)
  got_tm, carry_tm = time_major.apply(variables, jnp.moveaxis(x, 2, 0), lengths)
  np.testing.assert_allclose(jnp.moveaxis(got_tm, 0, 2), got, atol=1e-6)
  assert_trees_close(carry_tm, carry, atol=1e-6)
  low = jaxrnn.Recurrent(cell, num_layers=2, bidirectional=True, dtype=jnp.bfloat16)
  got_low, carry_low = low.apply(variables, x, lengths)
  assert got_low.dtype == jnp.bfloat16 and all(c.dtype == jnp.bfloat16 for c in carry_low)
  np.testing.assert_allclose(got_low.astype(jnp.float32), got, atol=0.05)
