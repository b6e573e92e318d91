"""Open cells (SPEC §10): a user's cell, written here against the public protocol only, runs under
``Recurrent`` with every guarantee of the presets, checked against an independent NumPy loop."""

import dataclasses
import functools
import inspect
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import KINDS
from conftest import assert_trees_close
from conftest import assert_trees_equal
from conftest import make_layer
from conftest import slow
from flax import nnx

import jaxrnn
from jaxrnn._src.config import OPTION_NAMES
from jaxrnn._src.config import LayerConfig

B, T, F, H = 3, 7, 4, 5


@dataclasses.dataclass(frozen=True)
class DecayCell:
  """A user's cell, unlike any built-in: a dict carry with two leaves of different shapes.

  ``h' = tanh(x w + h u + b) * sigmoid(k)``, ``k' = k + mean(h')``, ``y = h' + 0.1 k'``.
  """

  features: int

  @property
  def output_size(self):
    return self.features

  def init(self, key, in_features, dtype=jnp.float32):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
      'w': jax.random.normal(k1, (in_features, self.features), dtype) * 0.5,
      'u': jax.random.normal(k2, (self.features, self.features), dtype) * 0.5,
      'b': jax.random.normal(k3, (self.features,), dtype) * 0.1,
    }

  def initial_carry(self, batch_shape, dtype=jnp.float32):
    return {'h': jnp.zeros((*batch_shape, self.features), dtype), 'k': jnp.zeros((*batch_shape, 1), dtype)}

  def __call__(self, params, carry, x):
    h = jnp.tanh(x @ params['w'] + carry['h'] @ params['u'] + params['b']) * jax.nn.sigmoid(carry['k'])
    k = carry['k'] + h.mean(-1, keepdims=True)
    return {'h': h, 'k': k}, h + 0.1 * k


def np_decay_step(p, carry, x):
  p = {name: np.asarray(v, np.float64) for name, v in p.items()}
  h = np.tanh(x @ p['w'] + carry['h'] @ p['u'] + p['b']) / (1 + np.exp(-carry['k']))
  k = carry['k'] + h.mean(-1, keepdims=True)
  return {'h': h, 'k': k}, h + 0.1 * k


def np_stack(np_step, params, x, lengths, carry0, num_layers, directions):
  """Returns (outputs [B, T, ..., D*H_out], final carry rows) for batch-major x, one sequence at a time.

  ``carry0`` is a dict of arrays ``[L*D, B, ...]``. Each sequence runs over its own valid steps
  only (backward: ``len-1 .. 0``), so nothing is shared with the library's masks.
  """
  x = np.asarray(x, np.float64)
  batch, steps = x.shape[:2]
  lengths = np.full(batch, steps) if lengths is None else np.asarray(lengths)
  final = {name: np.array(v, np.float64) for name, v in carry0.items()}
  outputs = None
  for b in range(batch):
    seq = x[b, : lengths[b]]
    for layer in range(num_layers):
      outs = []
      for d in range(directions):
        row = layer * directions + d
        carry = {name: np.asarray(v[row, b], np.float64) for name, v in carry0.items()}
        if not len(seq):  # length 0: the initial carry, no outputs
          continue
        ys = [None] * len(seq)
        for t in range(len(seq)) if d == 0 else reversed(range(len(seq))):
          carry, ys[t] = np_step(params[f'l{layer}' + ('_reverse' if d else '')], carry, seq[t])
        for name in final:
          final[name][row, b] = carry[name]
        outs.append(np.stack(ys))
      if not len(seq):
        break
      seq = np.concatenate(outs, axis=-1)
    if len(seq):
      if outputs is None:
        outputs = np.zeros((batch, steps, *seq.shape[1:]))
      outputs[b, : lengths[b]] = seq
  return outputs, final


def random_carry(rng, layer, batch_shape):
  zeros = layer.initial_carry(batch_shape)
  return jax.tree.map(lambda z: jnp.asarray(rng.normal(size=z.shape), jnp.float32), zeros)


@pytest.mark.parametrize(
  'num_layers,bidirectional,padded,time_major',
  [(2, True, True, False), (1, False, False, True)]
  + [
    slow(*c)
    for c in itertools.product([1, 2], [False, True], [False, True], [False, True])
    if c not in ((2, True, True, False), (1, False, False, True))
  ],
)
def test_user_cell_matches_numpy_loop(rng, num_layers, bidirectional, padded, time_major):
  layer = jaxrnn.Recurrent(
    DecayCell(H), num_layers=num_layers, bidirectional=bidirectional, time_major=time_major
  )
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  lengths = jnp.array([T, 3, 0]) if padded else None
  carry0 = random_carry(rng, layer, (B,))
  inputs = jnp.swapaxes(x, 0, 1) if time_major else x
  variables = layer.init(jax.random.key(0), inputs, lengths)
  outputs, final = layer.apply(variables, inputs, lengths, carry0)
  want_outputs, want_final = np_stack(
    np_decay_step, variables['params'], x, lengths, carry0, num_layers, layer.config.num_directions
  )
  if time_major:
    outputs = jnp.swapaxes(outputs, 0, 1)
  np.testing.assert_allclose(outputs, want_outputs, atol=2e-5)
  assert_trees_close(final, want_final, atol=2e-5)
  if padded:  # exact zeros at padding; a length-0 sequence returns its initial carry unchanged
    assert not np.asarray(outputs[1, 3:]).any() and not np.asarray(outputs[2]).any()
    assert_trees_equal(jax.tree.map(lambda a: a[:, 2], final), jax.tree.map(lambda a: a[:, 2], carry0))


def test_user_cell_with_several_batch_axes(rng):
  layer = jaxrnn.Recurrent(DecayCell(H), bidirectional=True)
  x = jnp.asarray(rng.normal(size=(2, 3, T, F)), jnp.float32)
  lengths = jnp.array([[T, 2, 0], [1, 4, T]])
  variables = layer.init(jax.random.key(0), x, lengths)
  outputs, final = layer.apply(variables, x, lengths)
  flat_out, flat_final = layer.apply(variables, x.reshape(6, T, F), lengths.reshape(6))
  np.testing.assert_array_equal(outputs.reshape(6, T, 2 * H), flat_out)
  assert final['h'].shape == (2, 2, 3, H) and final['k'].shape == (2, 2, 3, 1)
  assert_trees_equal(jax.tree.map(lambda a: a.reshape(2, 6, -1), final), flat_final)


@dataclasses.dataclass(frozen=True)
class PointwiseConvCell:
  """``feature_ndim = 2``: x ``[*batch, K, F]``, carry and y ``[*batch, K, H]``, a 1x1 convolution."""

  features: int
  feature_ndim = 2

  @property
  def output_size(self):
    return self.features

  def init(self, key, in_features, dtype=jnp.float32):
    _, f = in_features
    k1, k2 = jax.random.split(key)
    return {
      'w': jax.random.normal(k1, (f, self.features), dtype) * 0.5,
      'u': jax.random.normal(k2, (self.features, self.features), dtype) * 0.5,
    }

  def initial_carry(self, batch_shape, dtype=jnp.float32):
    raise NotImplementedError  # the carry needs K: see KConvCell below


@dataclasses.dataclass(frozen=True)
class KConvCell(PointwiseConvCell):
  positions: int = 3

  def initial_carry(self, batch_shape, dtype=jnp.float32):
    return {'h': jnp.zeros((*batch_shape, self.positions, self.features), dtype)}

  def __call__(self, params, carry, x):
    h = jnp.tanh(x @ params['w'] + carry['h'] @ params['u'])
    return {'h': h}, h


def np_kconv_step(p, carry, x):
  h = np.tanh(x @ np.asarray(p['w'], np.float64) + carry['h'] @ np.asarray(p['u'], np.float64))
  return {'h': h}, h


def test_cell_with_two_feature_axes(rng):
  layer = jaxrnn.Recurrent(KConvCell(H), num_layers=2, bidirectional=True)
  x = jnp.asarray(rng.normal(size=(B, T, 3, F)), jnp.float32)
  lengths = jnp.array([T, 2, 0])
  variables = layer.init(jax.random.key(0), x, lengths)
  assert variables['params']['l1']['w'].shape == (2 * H, H)
  outputs, final = layer.apply(variables, x, lengths)
  assert outputs.shape == (B, T, 3, 2 * H)
  zeros = layer.initial_carry((B,))
  want_outputs, want_final = np_stack(np_kconv_step, variables['params'], x, lengths, zeros, 2, 2)
  np.testing.assert_allclose(outputs, want_outputs, atol=2e-5)
  assert_trees_close(final, want_final, atol=2e-5)
  with pytest.raises(ValueError, match=r'expected rank >= 4'):
    layer.apply(variables, x[..., 0, :])


def test_gradients_match_autodiff_through_a_plain_loop(rng):
  """The layer's gradient equals JAX's through a naive per-step Python loop of the same cell."""
  cell = DecayCell(H)
  layer = jaxrnn.Recurrent(cell)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  variables = layer.init(jax.random.key(0), x)

  def naive(params, x):
    carry, ys = cell.initial_carry((B,)), []
    for t in range(T):
      carry, y = cell(params, carry, x[:, t])
      ys.append(y)
    return (jnp.stack(ys, 1) ** 2).sum() + carry['k'].sum()

  def loss(params, x):
    outputs, final = layer.apply({'params': params}, x)
    return (outputs**2).sum() + final['k'][0].sum()

  want = jax.grad(naive, argnums=(0, 1))(variables['params']['l0'], x)
  got = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables['params'], x)
  assert_trees_close((got[0]['l0'], got[1]), want, atol=1e-5)


@pytest.mark.slow
def test_padding_nan_is_never_read_and_gradients_stay_finite(rng):
  layer = jaxrnn.Recurrent(DecayCell(H), bidirectional=True)
  x = np.asarray(rng.normal(size=(B, T, F)), np.float32)
  lengths = jnp.array([T, 3, 0])
  x[1, 3:] = np.nan
  x[2] = np.inf
  variables = layer.init(jax.random.key(0), jnp.zeros((B, T, F)), lengths)
  carry0 = jax.tree.map(lambda a: a.at[:, 2].set(jnp.nan), random_carry(rng, layer, (B,)))

  def loss(params):
    outputs, final = layer.apply({'params': params}, jnp.asarray(x), lengths, carry0)
    return outputs.sum() + final['h'][:, :2].sum()

  grads = jax.jit(jax.grad(loss))(variables['params'])
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_step_streaming_jit_and_vmap(rng):
  layer = jaxrnn.Recurrent(DecayCell(H), num_layers=2)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  variables = layer.init(jax.random.key(0), x)
  want_out, want_final = layer.apply(variables, x)
  step = jax.jit(functools.partial(layer.apply, method='step'))
  carry, ys = layer.initial_carry((B,)), []
  for t in range(T):
    y, carry = step(variables, x[:, t], carry)
    ys.append(y)
  assert_trees_close((jnp.stack(ys, 1), carry), (want_out, want_final), atol=1e-6)
  first, carry = layer.apply(variables, x[:, :3])  # chunked streaming
  second, carry = jax.jit(layer.apply)(variables, x[:, 3:], None, carry)
  assert_trees_close((jnp.concatenate([first, second], 1), carry), (want_out, want_final), atol=1e-6)
  batched = jax.vmap(lambda xi: layer.apply(variables, xi[None])[0][0])(x)
  np.testing.assert_allclose(batched, want_out, atol=1e-6)


@pytest.mark.slow
def test_generate_and_export_with_a_user_cell(rng):
  import flax.linen as nn

  class LM(nn.Module):
    def setup(self):
      self.embed = nn.Embed(11, F)
      self.rnn = jaxrnn.Recurrent(DecayCell(H))
      self.head = nn.Dense(11)

    def __call__(self, tokens):
      return self.head(self.rnn(self.embed(tokens))[0])

    def step(self, tokens, carry):
      y, carry = self.rnn.step(self.embed(tokens), carry)
      return self.head(y), carry

  model = LM()
  tokens = jnp.array([[1, 2, 3]])
  variables = model.init(jax.random.key(0), tokens)
  step_fn = functools.partial(model.apply, variables, method='step')
  carry = jaxrnn.Recurrent(DecayCell(H)).initial_carry((1,))
  generated, _ = jaxrnn.generate(step_fn, carry, tokens[:, 0], 4)
  # Greedy generation equals argmax of the sequence call fed its own outputs.
  seq = tokens[:, :1]
  for _ in range(4):
    seq = jnp.concatenate([seq, model.apply(variables, seq)[:, -1:].argmax(-1)], 1)
  np.testing.assert_array_equal(generated, seq[:, 1:])
  layer = jaxrnn.Recurrent(DecayCell(H))
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  lv = layer.init(jax.random.key(0), x)
  exported = jax.export.export(jax.jit(layer.apply))(lv, x)
  assert_trees_close(exported.call(lv, x), layer.apply(lv, x), atol=0)


def test_nnx_equals_linen_and_converters(rng):
  layer = jaxrnn.Recurrent(DecayCell(H), num_layers=2, bidirectional=True)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  lengths = jnp.array([T, 2, 0])
  variables = layer.init(jax.random.key(0), x, lengths)
  module = jaxrnn.interop.linen_to_nnx(layer, variables, in_features=F)
  assert_trees_equal(module(x, lengths), layer.apply(variables, x, lengths))
  back, back_variables = jaxrnn.interop.nnx_to_linen(module)
  assert_trees_equal(back.apply(back_variables, x, lengths), layer.apply(variables, x, lengths))
  fresh = jaxrnn.nnx.Recurrent(DecayCell(H), F, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
  assert fresh.l1.tree['w'].shape == (2 * H, H)
  with pytest.raises(ValueError, match='`in_features` is needed'):
    jaxrnn.interop.linen_to_nnx(layer, variables)


@pytest.mark.parametrize('kind', [k if k in ('lstm_proj', 'gru') else slow(k) for k in KINDS])
def test_each_preset_is_recurrent_over_its_cell(rng, kind):
  preset = make_layer(kind, hidden_size=H, num_layers=2, bidirectional=True)
  cell = preset.config.cell
  layer = jaxrnn.Recurrent(cell, num_layers=2, bidirectional=True)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  lengths = jnp.array([T, 3, 0])
  variables = preset.init(jax.random.key(0), x, lengths)
  assert_trees_equal(layer.init(jax.random.key(0), x, lengths), variables)
  assert_trees_equal(layer.apply(variables, x, lengths), preset.apply(variables, x, lengths))
  module = jaxrnn.nnx.Recurrent(cell, F, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
  twin = make_nnx_preset(kind, rngs=nnx.Rngs(0))
  assert_trees_equal(nnx.state(module, nnx.Param), nnx.state(twin, nnx.Param))


def make_nnx_preset(kind, **kwargs):
  name, extra = KINDS[kind]
  return getattr(jaxrnn.nnx, name)(F, H, num_layers=2, bidirectional=True, **extra, **kwargs)


def test_backward_cell(rng):
  """Separate forward and backward cells, as Flax's nn.Bidirectional allows."""
  forward, backward = DecayCell(H), dataclasses.replace(DecayCell(H))
  layer = jaxrnn.Recurrent(forward, bidirectional=True, backward_cell=backward)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  lengths = jnp.array([T, 3, 1])
  variables = layer.init(jax.random.key(0), x, lengths)
  outputs, final = layer.apply(variables, x, lengths)
  want_outputs, want_final = np_stack(
    np_decay_step, variables['params'], x, lengths, layer.initial_carry((B,)), 1, 2
  )
  np.testing.assert_allclose(outputs, want_outputs, atol=2e-5)
  gru_back = jaxrnn.Recurrent(
    jaxrnn.GRUCell(H), bidirectional=True, backward_cell=jaxrnn.GRUCell(H, use_bias=False)
  )
  gv = gru_back.init(jax.random.key(0), x)
  assert 'b_ih' in gv['params']['l0'] and 'b_ih' not in gv['params']['l0_reverse']
  assert gru_back.apply(gv, x, lengths)[0].shape == (B, T, 2 * H)
  with pytest.raises(ValueError, match='`backward_cell` needs `bidirectional=True`'):
    jaxrnn.Recurrent(forward, backward_cell=backward)
  with pytest.raises(ValueError, match='`backward_cell.output_size` must equal'):
    jaxrnn.Recurrent(forward, bidirectional=True, backward_cell=DecayCell(H + 1))


@dataclasses.dataclass(frozen=True)
class DelayCell:
  """``y_t = h_{t-1}``, ``h_t = x_t``: the output shows exactly the carry the step read."""

  features: int

  @property
  def output_size(self):
    return self.features

  def init(self, key, in_features, dtype=jnp.float32):
    return {}

  def initial_carry(self, batch_shape, dtype=jnp.float32):
    return jnp.zeros((*batch_shape, self.features), dtype)

  def __call__(self, params, carry, x):
    return x, carry


def test_recurrent_dropout_one_mask_per_sequence(rng):
  rate = 0.5
  layer = jaxrnn.Recurrent(DelayCell(F), recurrent_dropout=rate)
  x = jnp.asarray(rng.uniform(1, 2, size=(8, T, F)), jnp.float32)
  lengths = jnp.array([T, T, T, T, 4, 4, 2, 0])
  carry0 = jnp.asarray(rng.uniform(1, 2, size=(1, 8, F)), jnp.float32)
  variables = layer.init(jax.random.key(0), x)
  outputs, final = layer.apply(
    variables, x, lengths, carry0, deterministic=False, rngs={'dropout': jax.random.key(3)}
  )
  ratio = np.asarray(outputs[:, 1:] / x[:, :-1])  # y_t / h_{t-1}: the mask of this sequence
  for b, n in enumerate(np.asarray(lengths)):
    if n > 1:
      mask = ratio[b, : n - 1]
      np.testing.assert_allclose(mask, np.broadcast_to(mask[0], mask.shape), rtol=1e-6)  # same every step
      assert set(np.round(np.unique(mask), 5)) <= {0.0, 1 / (1 - rate)}
    assert not np.asarray(outputs[b, n:]).any()
  # The carry itself is not masked: the final carry is the last valid input (or carry0 for length 0).
  want = np.where(np.asarray(lengths)[:, None] > 0, x[np.arange(8), np.maximum(lengths - 1, 0)], carry0[0])
  np.testing.assert_array_equal(final[0], want)
  masks = ratio[:4, 0]
  assert len({tuple(m) for m in np.round(masks, 4)}) > 1  # sequences get different masks
  deterministic = layer.apply(variables, x, lengths, carry0)[0]
  valid = np.asarray(lengths)[:, None] > np.arange(1, T)
  np.testing.assert_array_equal(deterministic[:, 1:][valid], x[:, :-1][valid])


@pytest.mark.slow
def test_recurrent_dropout_on_lstm_trains_and_nnx_draws_it(rng):
  layer = jaxrnn.LSTM(H, recurrent_dropout=0.3, num_layers=2, dropout=0.2)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  variables = layer.init(jax.random.key(0), x)
  grads = jax.jit(
    jax.grad(lambda v: layer.apply(v, x, deterministic=False, rngs={'dropout': jax.random.key(1)})[0].sum())
  )(variables)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  module = jaxrnn.nnx.GRU(F, H, recurrent_dropout=0.3, rngs=nnx.Rngs(0))
  a, b = module(x)[0], module(x)[0]
  assert not np.allclose(a, b)  # a fresh mask each call
  module.eval()
  np.testing.assert_array_equal(module(x)[0], module(x)[0])
  with pytest.raises(ValueError, match='`recurrent_dropout` must be in'):
    jaxrnn.GRU(H, recurrent_dropout=1.0)


def test_one_list_of_options():
  """linen fields, NNX arguments and LayerConfig agree: an option is added in one place."""
  options = set(OPTION_NAMES)
  assert {f.name for f in dataclasses.fields(LayerConfig)} == options | {'cell', 'backward_cell'}
  linen_fields = {f.name for f in dataclasses.fields(jaxrnn.Recurrent)} - {'parent', 'name'}
  assert linen_fields == options | {'cell', 'backward_cell'}
  nnx_arguments = set(inspect.signature(jaxrnn.nnx.Recurrent.__init__).parameters) - {'self'}
  assert nnx_arguments == options | {'cell', 'in_features', 'backward_cell', 'deterministic', 'rngs'}
  for name, cell_type in (('RNN', jaxrnn.ElmanCell), ('LSTM', jaxrnn.LSTMCell), ('GRU', jaxrnn.GRUCell)):
    cell_fields = {f.name for f in dataclasses.fields(cell_type)}
    linen_preset = {f.name for f in dataclasses.fields(getattr(jaxrnn, name))} - {'parent', 'name'}
    assert linen_preset == options | cell_fields, name
    nnx_preset = set(inspect.signature(getattr(jaxrnn.nnx, name).__init__).parameters) - {'self'}
    assert nnx_preset == options | cell_fields | {'in_features', 'deterministic', 'rngs'}, name
    module = getattr(jaxrnn.nnx, name)(F, H, rngs=nnx.Rngs(0))
    assert {n: getattr(module, n) for n in cell_fields} == dataclasses.asdict(module.config.cell)


class NotACell:
  output_size = 3


@pytest.mark.parametrize(
  'bad,match', [(NotACell(), r"lacks \['init', 'initial_carry', '__call__'\]"), ('lstm', 'must be a cell')]
)
def test_not_a_cell_is_named(bad, match):
  with pytest.raises(TypeError, match=match):
    jaxrnn.Recurrent(bad)


def test_cell_misuse_is_named(rng):
  import flax.linen as nn

  with pytest.raises(TypeError, match=r'jaxrnn.linen.FlaxCell\(LSTMCell'):
    jaxrnn.Recurrent(nn.LSTMCell(4))

  class Unhashable(DecayCell):
    __hash__ = None

  with pytest.raises(TypeError, match='must be hashable'):
    jaxrnn.Recurrent(Unhashable(H))
  layer = jaxrnn.Recurrent(DecayCell(H))
  x = jnp.ones((B, T, F))
  variables = layer.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match=r'`inputs` has features 6 .* do not fit'):
    layer.apply(variables, jnp.ones((B, T, 6)))
  with pytest.raises(TypeError, match='must have the structure of `layer.initial_carry'):
    layer.apply(variables, x, None, jnp.zeros((1, B, H)))
  with pytest.raises(ValueError, match=r"`initial_carry\['k'\]` must have shape"):
    layer.apply(variables, x, None, {'h': jnp.zeros((1, B, H)), 'k': jnp.zeros((1, B, 2))})
  with pytest.raises(ValueError, match='`fused_backward=True` does not support DecayCell'):
    jaxrnn.Recurrent(DecayCell(H), fused_backward=True)
