"""Issue #15, nothing silently wrong: interop copies and checks, decoding and padding helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_equal
from conftest import make_layer
from conftest import random_variables

import jaxrnn
from jaxrnn.interop import from_state_dict
from jaxrnn.interop import from_torch
from jaxrnn.interop import to_state_dict
from jaxrnn.interop import to_torch

torch = pytest.importorskip('torch')

F, H = 3, 4


# A1: converted variables own their memory.


def test_from_torch_variables_do_not_change_when_the_module_is_updated_in_place():
  torch.manual_seed(0)
  module = torch.nn.LSTM(F, H, num_layers=2, bidirectional=True, proj_size=2)
  _, variables = from_torch(module)
  before = jax.tree.map(np.array, variables)
  with torch.no_grad():
    for param in module.parameters():
      param.add_(1.0)
  assert_trees_equal(variables, before)


def test_from_state_dict_variables_do_not_change_when_the_arrays_are_updated_in_place():
  torch.manual_seed(1)
  state_dict = {k: v.numpy() for k, v in torch.nn.GRU(F, H, num_layers=2).state_dict().items()}
  _, variables = from_state_dict(state_dict, 'GRU')
  before = jax.tree.map(np.array, variables)
  for value in state_dict.values():
    value += 1.0
  assert_trees_equal(variables, before)


# A2: variables that do not fit the layer raise instead of being dropped or half-read.


MISFITS = {
  # name: (layer fields, variables fields, message pattern)
  'deeper variables': ({}, {'num_layers': 2}, r"`variables`.*num_layers=1.*extra \['l1'\]"),
  'shallower variables': ({'num_layers': 2}, {}, r"`variables`.*num_layers=2.*missing \['l1'\]"),
  'unidirectional variables': (
    {'bidirectional': True},
    {},
    r"`variables`.*bidirectional=True.*missing \['l0_reverse'\]",
  ),
  'bidirectional variables': (
    {},
    {'bidirectional': True},
    r"`variables`.*bidirectional=False.*extra \['l0_reverse'\]",
  ),
  'wrong hidden size': (
    {'hidden_size': 5},
    {},
    r"params\['l0'\]\['w_ih'\] has shape \[3, 16\], expected \[3, 20\]",
  ),
  'unidirectional deeper variables': (
    {'num_layers': 2, 'bidirectional': True},
    {'num_layers': 2},
    r"missing \['l0_reverse', 'l1_reverse'\]",
  ),
  'missing biases': ({}, {'use_bias': False}, r"params\['l0'\].*missing \['b_hh', 'b_ih'\]"),
  'extra biases': ({'use_bias': False}, {}, r"params\['l0'\].*extra \['b_hh', 'b_ih'\]"),
  'extra projection': ({}, {'proj_size': 2}, r"params\['l0'\].*extra \['w_hr'\]"),
}


@pytest.mark.parametrize('misfit', list(MISFITS))
@pytest.mark.parametrize('convert', [to_state_dict, to_torch])
def test_variables_that_do_not_fit_the_layer_raise(rng, misfit, convert):
  layer_fields, variables_fields, pattern = MISFITS[misfit]
  layer = make_layer('lstm', **{'hidden_size': H, **layer_fields})
  variables = random_variables(make_layer('lstm', **{'hidden_size': H, **variables_fields}), F, rng)
  with pytest.raises(ValueError, match=pattern):
    convert(layer, variables)


def test_a_wrong_shaped_deeper_weight_raises_with_both_shapes(rng):
  layer = make_layer('gru', hidden_size=H, num_layers=2)
  variables = random_variables(layer, F, rng)
  variables['params']['l1']['w_ih'] = jnp.zeros((H + 1, 3 * H))
  with pytest.raises(ValueError, match=r"params\['l1'\]\['w_ih'\] has shape \[5, 12\], expected \[4, 12\]"):
    to_state_dict(layer, variables)


def test_fitting_variables_and_gradients_still_convert(rng):
  layer = make_layer('lstm_proj', hidden_size=H, num_layers=2, bidirectional=True)
  variables = random_variables(layer, F, rng)
  grads = jax.tree.map(jnp.ones_like, variables['params'])  # the params dict itself, no 'params' key
  assert set(to_state_dict(layer, variables)) == set(to_state_dict(layer, grads))
  assert to_torch(layer, variables).weight_hr_l1_reverse.shape == (3, H)


# A5: generate never samples with a made-up key, and rejects impossible arguments.


def count_up(tokens, carry):  # logits favour token + 1
  return jax.nn.one_hot(tokens + 1, 10) * 5.0, carry + 1


FIRST = jnp.array([0, 4])


def test_sampling_without_a_key_raises():
  with pytest.raises(ValueError, match=r'`key`.*temperature=1\.0'):
    jaxrnn.generate(count_up, 0, FIRST, 3, temperature=1.0)


def test_sampling_without_a_key_raises_when_the_temperature_is_traced():
  with pytest.raises(ValueError, match=r'`key`.*`temperature` is traced'):
    jax.jit(lambda t: jaxrnn.generate(count_up, 0, FIRST, 3, temperature=t))(1.0)


def test_negative_temperature_raises():
  with pytest.raises(ValueError, match=r'`temperature`.*>= 0.*-0\.5'):
    jaxrnn.generate(count_up, 0, FIRST, 3, jax.random.key(0), temperature=-0.5)


def test_greedy_decoding_needs_no_key():
  tokens, _ = jaxrnn.generate(count_up, 0, FIRST, 3, temperature=0)
  np.testing.assert_array_equal(tokens, [[1, 2, 3], [5, 6, 7]])


@pytest.mark.parametrize(
  'num_steps,error,pattern',
  [
    (2.5, TypeError, r'`num_steps`.*int.*float 2\.5'),
    ('3', TypeError, r'`num_steps`.*int.*str'),
    (True, TypeError, r'`num_steps`.*int.*bool'),
    (-1, ValueError, r'`num_steps`.*>= 0.*-1'),
  ],
)
def test_bad_num_steps_raise(num_steps, error, pattern):
  with pytest.raises(error, match=pattern):
    jaxrnn.generate(count_up, 0, FIRST, num_steps)


def test_traced_num_steps_raise():
  with pytest.raises(TypeError, match=r'`num_steps`.*static'):
    jax.jit(lambda n: jaxrnn.generate(count_up, 0, FIRST, n))(3)


@pytest.mark.parametrize('num_steps', [np.int64(3), 0])
def test_numpy_and_zero_num_steps_work(num_steps):
  tokens, steps = jaxrnn.generate(count_up, 0, FIRST, num_steps)
  assert tokens.shape == (2, int(num_steps)) and int(steps) == int(num_steps)


# A6: lengths past T and non-prefix masks raise when concrete, and are documented under jit.

X = jnp.array([[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize('lengths,value', [([4, 1], 4), ([-1, 1], -1)])
def test_reverse_padded_rejects_concrete_lengths_outside_0_t(lengths, value):
  with pytest.raises(ValueError, match=rf'`seq_lengths`.*\[0, 3\].*{value}'):
    jaxrnn.reverse_padded(X, np.array(lengths))


def test_reverse_padded_rejects_lengths_of_the_wrong_batch_shape():
  with pytest.raises(ValueError, match=r'`seq_lengths`.*\(2,\).*`x` \(2, 3\).*\(3,\)'):
    jaxrnn.reverse_padded(X, np.array([1, 2, 3]))


def test_reverse_padded_clips_traced_lengths_to_0_t():
  got = jax.jit(jaxrnn.reverse_padded)(X, jnp.array([4, -1]))
  np.testing.assert_array_equal(got, [[3, 2, 1], [4, 5, 6]])


def test_mask_to_lengths_rejects_a_concrete_non_prefix_mask():
  mask = np.array([[[1, 1, 0], [1, 0, 0]], [[1, 1, 1], [0, 1, 1]]], bool)
  with pytest.raises(ValueError, match=r'`mask`.*prefix.*row \(1, 1\).*\[False, True, True\]'):
    jaxrnn.mask_to_lengths(mask)


def test_mask_to_lengths_under_jit_counts_the_leading_valid_steps():
  mask = jnp.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]], bool)
  np.testing.assert_array_equal(jax.jit(jaxrnn.mask_to_lengths)(mask), [2, 0, 1])
