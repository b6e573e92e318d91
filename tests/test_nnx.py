"""NNX layers: equal to linen through the converters, and at home in NNX training code."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import KINDS
from conftest import assert_trees_close
from conftest import assert_trees_equal
from conftest import each_value
from conftest import make_layer
from conftest import random_variables
from conftest import slow
from flax import nnx

import jaxrnn
from jaxrnn.interop import linen_to_nnx
from jaxrnn.interop import nnx_to_linen

B, T, F, H = 4, 6, 3, 5
LENGTHS = np.array([6, 0, 3, 1])


@pytest.mark.parametrize(
  'kind,num_layers,bidirectional,padding',
  each_value(list(KINDS), [1, 3], [False, True], ['full', 'ragged']),
)
def test_nnx_equals_linen(rng, kind, num_layers, bidirectional, padding):
  layer = make_layer(kind, hidden_size=H, num_layers=num_layers, bidirectional=bidirectional)
  variables = random_variables(layer, F, rng)
  module = linen_to_nnx(layer, variables)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  lengths = LENGTHS if padding == 'ragged' else None
  want = jax.jit(layer.apply)(variables, x, lengths)
  got = nnx.jit(lambda m, x: m(x, lengths))(module, x)
  assert_trees_close(got, want, atol=1e-6)
  layer_back, variables_back = nnx_to_linen(module)
  assert layer_back == layer
  assert_trees_equal(variables_back, variables)


@pytest.mark.parametrize('kind', ['lstm_proj', *map(slow, ['rnn_tanh', 'rnn_relu', 'lstm', 'gru'])])
def test_same_names_shapes_and_init_as_linen(kind):
  cls, extra = KINDS[kind]
  module = getattr(jaxrnn.nnx, cls)(F, 16, num_layers=2, bidirectional=True, **extra, rngs=nnx.Rngs(0))
  linen_layer = make_layer(kind, hidden_size=16, num_layers=2, bidirectional=True)
  linen_params = linen_layer.init(jax.random.key(0), jnp.ones((1, 2, F)))['params']
  nnx_params = nnx_to_linen(module)[1]['params']
  assert jax.tree.map(jnp.shape, nnx_params) == jax.tree.map(jnp.shape, linen_params)
  values = np.concatenate([np.ravel(a) for a in jax.tree.leaves(nnx_params)])
  bound = 1 / np.sqrt(16)
  assert np.abs(values).max() <= bound and np.abs(values).max() > 0.9 * bound
  state = nnx.state(module, nnx.Param)
  assert state['l1_reverse']['w_ih'][...].shape == linen_params['l1_reverse']['w_ih'].shape


def test_train_eval_and_dropout_stream(rng):
  module = jaxrnn.nnx.LSTM(F, H, num_layers=3, bidirectional=True, dropout=0.5, rngs=nnx.Rngs(0, dropout=1))
  layer, variables = nnx_to_linen(module)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  clean = layer.apply(variables, x, LENGTHS)[0]
  module.eval()
  np.testing.assert_array_equal(module(x, LENGTHS)[0], clean)
  module.train()
  first, second = module(x, LENGTHS)[0], module(x, LENGTHS)[0]
  assert not np.allclose(first, clean) and not np.allclose(first, second)  # the stream advances
  np.testing.assert_array_equal(module(x, LENGTHS, deterministic=True)[0], clean)
  valid = np.arange(T)[None, :] < LENGTHS[:, None]
  assert np.all(np.asarray(first)[~valid] == 0)


def test_linen_to_nnx_keeps_dropout_working(rng):
  layer = jaxrnn.GRU(hidden_size=H, num_layers=2, dropout=0.3)
  variables = random_variables(layer, F, rng)
  module = linen_to_nnx(layer, variables, rngs=nnx.Rngs(dropout=3))
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  assert not np.allclose(module(x)[0], layer.apply(variables, x)[0])
  module.eval()
  np.testing.assert_array_equal(module(x)[0], layer.apply(variables, x)[0])


class Tagger(nnx.Module):
  """Embedding -> bidirectional LSTM -> Linear, one label per step."""

  def __init__(self, vocab, labels, *, rngs):
    self.embed = nnx.Embed(vocab, 8, rngs=rngs)
    self.lstm = jaxrnn.nnx.LSTM(8, 16, bidirectional=True, rngs=rngs)
    self.head = nnx.Linear(32, labels, rngs=rngs)

  def __call__(self, tokens, lengths):
    outputs, _ = self.lstm(self.embed(tokens), lengths)
    return self.head(outputs)


def test_training_with_nnx_optimizer_lowers_the_loss(rng):
  tokens = jnp.asarray(rng.integers(0, 10, size=(16, 8)))
  lengths = jnp.asarray(rng.integers(1, 9, size=16))
  labels = (tokens + jnp.roll(tokens, 1, axis=1)) % 3  # depends on the previous token
  mask = jnp.arange(8)[None, :] < lengths[:, None]
  model = Tagger(10, 3, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  def loss_fn(model):
    logits = model(tokens, lengths)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(losses * mask) / jnp.sum(mask)

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(train_step(model, optimizer)) for _ in range(40)]
  assert losses[-1] < 0.5 * losses[0]


@pytest.mark.slow  # default run: test_nnx_equals_linen (forward), test_fused's NNX gradients
def test_nnx_grad_matches_linen_grad(rng):
  layer = jaxrnn.LSTM(hidden_size=H, num_layers=2, bidirectional=True, proj_size=2)
  variables = random_variables(layer, F, rng)
  module = linen_to_nnx(layer, variables)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  linen_grads = jax.jit(jax.grad(lambda v: jnp.sum(layer.apply(v, x, LENGTHS)[0] ** 2)))(variables)
  nnx_grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(x, LENGTHS)[0] ** 2)))(module)
  assert_trees_close(nnx.to_pure_dict(nnx_grads), linen_grads['params'], atol=1e-6)


@pytest.mark.slow
def test_nnx_vmap_over_batch_of_sequences(rng):
  module = jaxrnn.nnx.GRU(F, H, rngs=nnx.Rngs(0))
  xs = jnp.asarray(rng.normal(size=(3, B, T, F)), jnp.float32)
  lengths = jnp.asarray(rng.integers(0, T + 1, size=(3, B)))
  batched = nnx.vmap(lambda m, x, n: m(x, n), in_axes=(None, 0, 0))(module, xs, lengths)
  assert_trees_close(jax.tree.map(lambda a: a[1], batched), module(xs[1], lengths[1]))


def test_constructor_validates_like_linen():
  with pytest.raises(ValueError, match='`proj_size`'):
    jaxrnn.nnx.LSTM(F, 4, proj_size=4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='`nonlinearity`'):
    jaxrnn.nnx.RNN(F, 4, nonlinearity='gelu', rngs=nnx.Rngs(0))
  with pytest.raises(TypeError, match='linen_to_nnx'):
    linen_to_nnx(jaxrnn.nnx.GRU(F, 4, rngs=nnx.Rngs(0)), {})


def test_wrong_feature_size_names_inputs():
  module = jaxrnn.nnx.GRU(F, 4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r'`inputs` has F=7'):
    module(jnp.ones((2, 3, 7)))
