"""One-step decoding, streaming in chunks, generation under jit and jax.export."""

import functools
import pathlib
import subprocess
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import KINDS
from conftest import assert_trees_close
from conftest import each_value
from conftest import make_layer
from conftest import random_variables
from flax import nnx

import jaxrnn

B, T, F, H = 3, 11, 4, 5


def random_carry(rng, layer, batch_shape=(B,)):
  config = layer.config
  h = jnp.asarray(rng.normal(size=(config.num_layers, *batch_shape, config.output_size)), jnp.float32)
  if config.cell.name == 'lstm':
    return jaxrnn.LSTMState(
      h, jnp.asarray(rng.normal(size=(config.num_layers, *batch_shape, H)), jnp.float32)
    )
  return h


@pytest.mark.parametrize('kind,num_layers', each_value(list(KINDS), [1, 3]))
def test_stepping_reproduces_the_sequence_call(rng, kind, num_layers):
  layer = make_layer(kind, hidden_size=H, num_layers=num_layers)
  variables = random_variables(layer, F, rng)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  carry0 = random_carry(rng, layer)
  want_out, want_final = layer.apply(variables, x, None, carry0)

  step = jax.jit(functools.partial(layer.apply, method='step'))
  module = jaxrnn.interop.linen_to_nnx(layer, variables)
  nnx_step = nnx.jit(lambda m, x, c: m.step(x, c))
  carry, nnx_carry, ys, nnx_ys = carry0, carry0, [], []
  for t in range(T):
    y, carry = step(variables, x[:, t], carry)
    nnx_y, nnx_carry = nnx_step(module, x[:, t], nnx_carry)
    ys.append(y)
    nnx_ys.append(nnx_y)
  assert_trees_close((jnp.stack(ys, 1), carry), (want_out, want_final), atol=1e-6)
  assert_trees_close((jnp.stack(nnx_ys, 1), nnx_carry), (want_out, want_final), atol=1e-6)


def test_step_with_several_batch_axes_and_default_carry(rng):
  layer = make_layer('lstm_proj', hidden_size=H, num_layers=2)
  variables = random_variables(layer, F, rng)
  x_t = jnp.asarray(rng.normal(size=(2, 3, F)), jnp.float32)
  y, carry = layer.apply(variables, x_t, method='step')
  assert y.shape == (2, 3, 3) and carry.h.shape == (2, 2, 3, 3) and carry.c.shape == (2, 2, 3, H)
  y_again, _ = layer.apply(variables, x_t, layer.initial_carry((2, 3)), method='step')
  np.testing.assert_array_equal(y, y_again)


def test_initial_carry_needs_no_parameters():
  carry = jaxrnn.LSTM(8, num_layers=2, bidirectional=True, proj_size=3).initial_carry((5,), jnp.bfloat16)
  assert carry.h.shape == (4, 5, 3) and carry.c.shape == (4, 5, 8) and carry.h.dtype == jnp.bfloat16
  assert jaxrnn.nnx.GRU(2, 6, rngs=nnx.Rngs(0)).initial_carry((2, 3)).shape == (1, 2, 3, 6)


@pytest.mark.parametrize('kind,num_layers,chunk', each_value(list(KINDS), [1, 3], [4, 5]))
def test_streaming_in_chunks_equals_one_call(rng, kind, num_layers, chunk):
  layer = make_layer(kind, hidden_size=H, num_layers=num_layers)
  variables = random_variables(layer, F, rng)
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  lengths = np.array([T, 2, 6])  # sequence 1 ends in the first chunk and must stay frozen
  want_out, want_final = layer.apply(variables, x, lengths)
  apply = jax.jit(layer.apply)
  carry, outs = layer.initial_carry((B,)), []
  for start in range(0, T, chunk):  # T=11 is not a multiple of the chunk size
    piece = x[:, start : start + chunk]
    chunk_lengths = np.clip(lengths - start, 0, piece.shape[1])
    out, carry = apply(variables, piece, chunk_lengths, carry)
    outs.append(out)
  assert_trees_close((jnp.concatenate(outs, axis=1), carry), (want_out, want_final), atol=1e-6)


def test_bidirectional_step_raises():
  layer = jaxrnn.LSTM(4, bidirectional=True)
  variables = layer.init(jax.random.key(0), jnp.ones((1, 2, 3)))
  with pytest.raises(ValueError, match='`step` needs a unidirectional layer'):
    layer.apply(variables, jnp.ones((1, 3)), method='step')
  with pytest.raises(ValueError, match='`step` needs a unidirectional layer'):
    jaxrnn.nnx.GRU(3, 4, bidirectional=True, rngs=nnx.Rngs(0)).step(jnp.ones((1, 3)))


def test_step_errors_name_the_argument():
  layer = jaxrnn.GRU(4)
  variables = layer.init(jax.random.key(0), jnp.ones((2, 2, 3)))
  with pytest.raises(ValueError, match='`x_t`.*\\[\\*batch, F\\]'):
    layer.apply(variables, jnp.ones(3), method='step')
  with pytest.raises(ValueError, match='`x_t` has F=5'):
    layer.apply(variables, jnp.ones((2, 5)), method='step')
  with pytest.raises(ValueError, match='`carry`'):
    layer.apply(variables, jnp.ones((2, 3)), jnp.zeros((1, 3, 4)), method='step')
  with pytest.raises(ValueError, match='initialized parameters'):
    layer.apply({'params': {}}, jnp.ones((2, 3)), method='step')


class CharModel(nn.Module):
  """Embedding -> 2-layer LSTM -> Dense, with a one-token step."""

  vocab: int = 12

  def setup(self):
    self.embed = nn.Embed(self.vocab, 8)
    self.lstm = jaxrnn.LSTM(16, num_layers=2)
    self.head = nn.Dense(self.vocab)

  def __call__(self, tokens, lengths=None):
    outputs, carry = self.lstm(self.embed(tokens), lengths)
    return self.head(outputs), carry

  def step(self, tokens, carry):
    y, carry = self.lstm.step(self.embed(tokens), carry)
    return self.head(y), carry


@pytest.fixture(scope='module')
def char_model():
  model = CharModel()
  prompts = jnp.asarray(np.random.default_rng(0).integers(0, 12, size=(4, 6)))
  return model, model.init(jax.random.key(0), prompts), prompts


def make_generator(model, num_steps):
  @jax.jit
  @chex.assert_max_traces(n=1)
  def generate(variables, prompts, lengths, key, temperature):
    logits, carry = model.apply(variables, prompts, lengths)
    last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
    first = jnp.argmax(last, -1)
    step_fn = functools.partial(model.apply, variables, method='step')
    tokens, _ = jaxrnn.generate(step_fn, carry, first, num_steps - 1, key, temperature=temperature)
    return jnp.concatenate([first[:, None], tokens], axis=1)

  return generate


@pytest.mark.slow  # 20 eager sequence calls; default run: step == sequence call, sampling tests
def test_greedy_generation_matches_a_python_loop(char_model):
  model, variables, prompts = char_model
  lengths = jnp.array([6, 2, 4, 1])
  got = make_generator(model, 5)(variables, prompts, lengths, jax.random.key(0), 0.0)
  for b in range(4):  # reference: the whole sequence call on the growing text, one token at a time
    text = list(np.asarray(prompts[b, : lengths[b]]))
    for _ in range(5):
      logits, _ = model.apply(variables, jnp.asarray([text]))
      text.append(int(jnp.argmax(logits[0, -1])))
    np.testing.assert_array_equal(got[b], text[int(lengths[b]) :])


def test_sampling_repeats_per_key_and_compiles_once(char_model):
  model, variables, prompts = char_model
  generate = make_generator(model, 20)
  lengths = jnp.array([6, 2, 4, 1])
  a = generate(variables, prompts, lengths, jax.random.key(1), 1.5)
  a_again = generate(variables, prompts, lengths, jax.random.key(1), 1.5)
  b = generate(variables, prompts, jnp.array([1, 1, 3, 5]), jax.random.key(2), 1.0)
  greedy = generate(variables, prompts, lengths, jax.random.key(1), 0.0)
  np.testing.assert_array_equal(a, a_again)
  assert not np.array_equal(a, b) and not np.array_equal(a, greedy)
  assert a.shape == (4, 20) and a.dtype == prompts.dtype
  chex.clear_trace_counter()


# generate's logits, against a Python loop over the same step function.

V = 7


@pytest.fixture(scope='module')
def toy_step():
  """A tiny Elman language model as a pure ``step_fn(tokens [*batch], h [*batch, H])``."""
  rng = np.random.default_rng(3)
  embed, w_hh, head = (jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in [(V, H), (H, H), (H, V)])

  def step_fn(tokens, h):
    h = jnp.tanh(embed[tokens] + h @ w_hh)
    return 2.0 * h @ head, h

  return step_fn


def loop_logits(step_fn, carry, first_tokens, tokens):
  """Returns ``([*batch, S, V], final_carry)``: step_fn's logits when fed first_tokens then tokens."""
  inputs = np.concatenate([first_tokens[..., None], tokens[..., :-1]], axis=-1)
  step_fn, logits = jax.jit(step_fn), []
  for t in range(tokens.shape[-1]):
    logits_t, carry = step_fn(inputs[..., t], carry)
    logits.append(logits_t)
  return jnp.stack(logits, axis=-2), carry


def test_greedy_logits_equal_a_python_loop_and_tokens_are_their_argmax(toy_step):
  batch = (2, 3)  # several batch axes: logits [*batch, S, V]
  first = jnp.arange(6).reshape(batch) % V
  carry = jnp.asarray(np.random.default_rng(4).normal(size=(*batch, H)), jnp.float32)
  generate = functools.partial(jaxrnn.generate, toy_step, num_steps=6, return_logits=True)
  tokens, logits, final_carry = jax.jit(generate)(carry, first)  # jit: one compilation, faster than eager
  assert tokens.shape == (*batch, 6) and logits.shape == (*batch, 6, V) and logits.dtype == jnp.float32
  # oracle: a Python loop feeding back its own argmax, sharing nothing with generate but step_fn
  expected_tokens, token, h, step = [], first, carry, jax.jit(toy_step)
  for _ in range(6):
    logits_t, h = step(token, h)
    token = np.argmax(logits_t, -1)
    expected_tokens.append(token)
  np.testing.assert_array_equal(tokens, np.stack(expected_tokens, -1))
  expected_logits, expected_carry = loop_logits(toy_step, carry, first, tokens)
  np.testing.assert_allclose(logits, expected_logits, atol=1e-5)
  np.testing.assert_allclose(final_carry, expected_carry, atol=1e-5)
  np.testing.assert_array_equal(tokens, jnp.argmax(logits, -1))


def test_sampled_tokens_are_drawn_from_the_returned_logits_and_compile_once(toy_step):
  @jax.jit
  @chex.assert_max_traces(n=1)
  def sample(carry, first, key, temperature):
    with_logits = jaxrnn.generate(toy_step, carry, first, 8, key, temperature=temperature, return_logits=True)
    return with_logits, jaxrnn.generate(toy_step, carry, first, 8, key, temperature=temperature)

  first, carry, key, temperature = jnp.array([0, 3, 5, 6]), jnp.zeros((4, H)), jax.random.key(7), 1.7
  (tokens, logits, final_carry), (tokens_only, carry_only) = sample(carry, first, key, temperature)
  expected_logits, expected_carry = loop_logits(toy_step, carry, first, tokens)
  np.testing.assert_allclose(logits, expected_logits, atol=1e-5)  # before the temperature
  np.testing.assert_allclose(final_carry, expected_carry, atol=1e-5)
  step_keys = jax.random.split(key, 8)  # step t samples with the t-th key (documented)

  def draw(key_and_logits):
    step_key, logits_t = key_and_logits
    return jax.random.categorical(step_key, logits_t / temperature)

  drawn = jax.jit(functools.partial(jax.lax.map, draw))((step_keys, jnp.moveaxis(logits, 1, 0)))
  np.testing.assert_array_equal(tokens, drawn.T)
  assert not np.array_equal(tokens, jnp.argmax(logits, -1))  # sampled, not greedy
  np.testing.assert_array_equal(tokens_only, tokens)  # the default returns the same, without logits
  np.testing.assert_array_equal(carry_only, final_carry)
  (tokens, logits, _), _ = sample(carry, first, key, 0.0)  # a new temperature: no new trace
  np.testing.assert_array_equal(tokens, jnp.argmax(logits, -1))
  chex.clear_trace_counter()


def test_logits_keep_the_step_dtype_and_zero_steps_give_empty_logits(toy_step):
  def bf16_step(tokens, h):
    logits, h = toy_step(tokens, h)
    return logits.astype(jnp.bfloat16), h

  tokens, logits, _ = jaxrnn.generate(bf16_step, jnp.zeros((2, H)), jnp.array([1, 2]), 3, return_logits=True)
  assert logits.dtype == jnp.bfloat16 and logits.shape == (2, 3, V)
  tokens, logits, _ = jaxrnn.generate(toy_step, jnp.zeros((2, H)), jnp.array([1, 2]), 0, return_logits=True)
  assert tokens.shape == (2, 0) and logits.shape == (2, 0, V)
  with pytest.raises(TypeError, match='`return_logits` must be True or False'):
    jaxrnn.generate(toy_step, jnp.zeros((2, H)), jnp.array([1, 2]), 3, return_logits='True')


def test_a_step_function_in_the_old_carry_first_order_is_named(toy_step, char_model):
  """jaxrnn 0.1's ``step_fn(carry, tokens)``, whether it raises or returns the wrong shapes."""

  def old_toy(h, tokens):  # called as old_toy(tokens, h): indexes with the float carry, raises
    return toy_step(tokens, h)

  def old_count_up(steps, tokens):  # called swapped: logits [V] for tokens [2], no error of its own
    return jax.nn.one_hot(tokens + 1, 10) * 5.0, steps + 1

  class OldOrderModel(CharModel):
    def step(self, carry, tokens):
      y, carry = self.lstm.step(self.embed(tokens), carry)
      return self.head(y), carry

  _, variables, _ = char_model
  old_model_step = functools.partial(OldOrderModel().apply, variables, method='step')
  cases = [
    (old_toy, jnp.zeros((2, H)), jnp.array([0, 4])),
    (old_count_up, 0, jnp.array([0, 4])),
    (old_model_step, jaxrnn.LSTM(16, num_layers=2).initial_carry((2,)), jnp.array([0, 4])),
  ]
  for step_fn, carry, first in cases:
    with pytest.raises(TypeError, match=r'`step_fn\(carry, tokens\)`.*takes \(input, carry\)'):
      jaxrnn.generate(step_fn, carry, first, 3)


def test_an_error_inside_a_step_function_is_raised_unchanged(toy_step):
  def broken(tokens, h):
    raise ValueError('broken step')

  with pytest.raises(ValueError, match='^broken step'):
    jaxrnn.generate(broken, jnp.zeros((2, H)), jnp.array([0, 4]), 3)


EXPORT_CHECK = """
import sys, numpy as np, jax, jaxrnn
data = np.load(sys.argv[2], allow_pickle=False)
exported = jax.export.deserialize(bytearray(open(sys.argv[1], 'rb').read()))
y, carry = exported.call(data['x'], jaxrnn.LSTMState(data['h'], data['c']))
np.testing.assert_array_equal(np.asarray(y), data['y'])
np.testing.assert_array_equal(np.asarray(carry.c), data['c_out'])
print('ok')
"""


@pytest.mark.slow
def test_exported_step_round_trips_through_bytes_in_a_fresh_process(rng, tmp_path):
  layer = jaxrnn.LSTM(8, num_layers=2, proj_size=3)
  variables = layer.init(jax.random.key(0), jnp.ones((1, 2, F)))
  x = jnp.asarray(rng.normal(size=(B, F)), jnp.float32)
  carry = jax.tree.map(lambda a: a + 0.5, layer.initial_carry((B,)))

  def step(x_t, carry):  # the parameters are baked in as constants
    return layer.apply(variables, x_t, carry, method='step')

  exported = jax.export.export(jax.jit(step))(x, carry)
  (tmp_path / 'step.bin').write_bytes(exported.serialize())
  y, new_carry = jax.jit(step)(x, carry)
  np.savez(tmp_path / 'data.npz', x=x, h=carry.h, c=carry.c, y=y, c_out=new_carry.c)
  result = subprocess.run(
    [sys.executable, '-c', EXPORT_CHECK, str(tmp_path / 'step.bin'), str(tmp_path / 'data.npz')],
    capture_output=True,
    text=True,
    cwd=pathlib.Path(__file__).parent,
  )
  assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr
