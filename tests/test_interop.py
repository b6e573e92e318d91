"""PyTorch interop: parity of converted layers, gradients, round trips and errors."""

import itertools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import KINDS
from conftest import assert_trees_close
from conftest import pairwise
from conftest import slow

import jaxrnn
from jaxrnn import LSTMState
from jaxrnn.interop import from_state_dict
from jaxrnn.interop import from_torch
from jaxrnn.interop import to_state_dict
from jaxrnn.interop import to_torch

torch = pytest.importorskip('torch')
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402
from torch.nn.utils.rnn import pad_packed_sequence  # noqa: E402

B, T, F, H = 4, 7, 5, 6
LENGTHS = np.array([7, 2, 5, 1])  # PyTorch cannot pack length 0; the NumPy oracle tests cover it


def torch_module(kind, num_layers=1, bidirectional=False, batch_first=True, bias=True, **kw):
  cls, extra = KINDS[kind]
  return getattr(torch.nn, cls)(
    F,
    H,
    num_layers=num_layers,
    bidirectional=bidirectional,
    batch_first=batch_first,
    bias=bias,
    **extra,
    **kw,
  )


def run_torch(module, x, lengths, hx=None):
  """Returns (output, final state) of ``module`` on ``x`` laid out as the module expects."""
  if lengths is None:
    return module(x, hx)
  packed = pack_padded_sequence(
    x, torch.from_numpy(lengths), batch_first=module.batch_first, enforce_sorted=False
  )
  out, final = module(packed, hx)
  out, _ = pad_packed_sequence(out, batch_first=module.batch_first, total_length=T)
  return out, final


def numpy_tree(tree):
  return jax.tree.map(lambda t: t.detach().numpy(), tree)


@pytest.mark.parametrize(
  'kind,num_layers,bidirectional,batch_first,padding',
  pairwise(list(KINDS), [1, 3], [False, True], [True, False], ['full', 'ragged']),
)
def test_converted_layer_matches_torch(rng, kind, num_layers, bidirectional, batch_first, padding):
  torch.manual_seed(0)
  module = torch_module(kind, num_layers, bidirectional, batch_first)
  layer, variables = from_torch(module)
  assert layer.time_major is not batch_first
  x = rng.normal(size=(B, T, F) if batch_first else (T, B, F)).astype(np.float32)
  lengths = LENGTHS if padding == 'ragged' else None
  with torch.no_grad():
    want = numpy_tree(run_torch(module, torch.from_numpy(x), lengths))
  got = jax.jit(layer.apply)(variables, x, lengths)
  assert_trees_close(got, want, atol=1e-5)


@pytest.mark.parametrize(
  'kind,bias',
  [
    c if c in [('lstm_proj', False), ('gru', True), ('rnn_tanh', True)] else slow(*c)
    for c in itertools.product(KINDS, [True, False])
  ],
)
def test_initial_state_matches_torch(rng, kind, bias):
  torch.manual_seed(1)
  module = torch_module(kind, 2, True, bias=bias)
  layer, variables = from_torch(module)
  x = rng.normal(size=(B, T, F)).astype(np.float32)
  Hout = layer.config.output_size
  h0 = rng.normal(size=(4, B, Hout)).astype(np.float32)
  c0 = rng.normal(size=(4, B, H)).astype(np.float32)
  lstm = kind.startswith('lstm')
  torch_hx = (torch.from_numpy(h0), torch.from_numpy(c0)) if lstm else torch.from_numpy(h0)
  with torch.no_grad():
    want = numpy_tree(run_torch(module, torch.from_numpy(x), LENGTHS, torch_hx))
  got = layer.apply(variables, x, LENGTHS, LSTMState(h0, c0) if lstm else h0)
  assert_trees_close(got, want, atol=1e-5)


@pytest.mark.parametrize('kind', ['lstm_proj', 'gru', *map(slow, ['rnn_relu', 'lstm', 'rnn_tanh'])])
def test_gradients_match_torch_by_parameter_name(rng, kind):
  torch.manual_seed(2)
  module = torch_module(kind, 2, True)
  layer, variables = from_torch(module)
  x = rng.normal(size=(B, T, F)).astype(np.float32)

  out, final = run_torch(module, torch.from_numpy(x), LENGTHS)
  h_n = final[0] if isinstance(final, tuple) else final
  (torch.sum(torch.tanh(out) ** 2) + torch.sum(torch.sin(h_n))).backward()

  def loss(variables):
    outputs, final = layer.apply(variables, x, LENGTHS)
    h_n = final.h if isinstance(final, LSTMState) else final
    return jnp.sum(jnp.tanh(outputs) ** 2) + jnp.sum(jnp.sin(h_n))

  grads = to_torch(layer, jax.jit(jax.grad(loss))(variables))
  for name, param in module.named_parameters():
    np.testing.assert_allclose(
      getattr(grads, name).detach().numpy(), param.grad.numpy(), atol=1e-4, err_msg=name
    )


@pytest.mark.parametrize('kind', list(KINDS))
@pytest.mark.parametrize('dtype', ['float32', 'float64', 'bfloat16'])
def test_round_trip_is_bit_exact(kind, dtype):
  torch.manual_seed(3)
  module = torch_module(kind, 2, True, batch_first=False, dropout=0.25).to(getattr(torch, dtype))
  with jax.enable_x64(dtype == 'float64'):
    layer, variables = from_torch(module)
    assert jnp.dtype(variables['params']['l0']['w_ih'].dtype).name == dtype
    back = to_torch(layer, variables)
  assert type(back) is type(module)
  for attr in ('input_size', 'hidden_size', 'num_layers', 'bias', 'batch_first', 'dropout', 'bidirectional'):
    assert getattr(back, attr) == getattr(module, attr), attr
  assert getattr(back, 'proj_size', 0) == getattr(module, 'proj_size', 0)
  assert getattr(back, 'nonlinearity', None) == getattr(module, 'nonlinearity', None)
  original, restored = module.state_dict(), back.state_dict()
  assert list(original) == list(restored)
  for name in original:
    assert original[name].dtype == restored[name].dtype, name
    assert torch.equal(original[name], restored[name]), name


def test_jaxrnn_to_torch_to_jaxrnn_round_trip(rng):
  layer = jaxrnn.LSTM(hidden_size=H, num_layers=2, proj_size=2, bidirectional=True)
  variables = layer.init(jax.random.key(0), jnp.ones((1, 3, F)))
  layer_back, variables_back = from_torch(to_torch(layer, variables))
  assert layer_back == layer
  jax.tree.map(np.testing.assert_array_equal, variables_back, variables)


def test_from_state_dict_needs_no_torch(monkeypatch, rng):
  """A checkpoint saved as NumPy arrays loads with torch unimportable."""
  torch.manual_seed(4)
  module = torch_module('lstm_proj', 2, True, batch_first=True)
  state_dict = {k: v.numpy().copy() for k, v in module.state_dict().items()}
  x = rng.normal(size=(B, T, F)).astype(np.float32)
  with torch.no_grad():
    want = numpy_tree(run_torch(module, torch.from_numpy(x), LENGTHS))
  monkeypatch.setitem(sys.modules, 'torch', None)  # import torch now raises ImportError
  layer, variables = from_state_dict(state_dict, 'LSTM', batch_first=True)
  assert (layer.num_layers, layer.bidirectional, layer.proj_size, layer.hidden_size) == (2, True, 3, H)
  assert_trees_close(layer.apply(variables, x, LENGTHS), want, atol=1e-5)
  assert_trees_close(to_state_dict(layer, variables), state_dict, atol=0)
  with pytest.raises(ImportError, match=r"pip install 'jaxrnn\[torch\]'"):
    from_torch(module)


def test_dropout_carries_over():
  layer, _ = from_torch(torch_module('gru', 2, dropout=0.3))
  assert layer.dropout == pytest.approx(0.3)


def test_unsupported_module_raises():
  with pytest.raises(TypeError, match='torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU, got Linear'):
    from_torch(torch.nn.Linear(2, 3))
  with pytest.raises(TypeError, match='got LSTMCell'):
    from_torch(torch.nn.LSTMCell(2, 3))


def test_unsupported_dtype_raises():
  with pytest.raises(TypeError, match='float32, float64 or bfloat16, got .*float16'):
    from_torch(torch_module('gru').half())


def test_state_dict_errors_name_the_key():
  state_dict = {k: v.numpy() for k, v in torch_module('lstm', 2).state_dict().items()}
  missing = {k: v for k, v in state_dict.items() if k != 'weight_hh_l1'}
  with pytest.raises(ValueError, match="'weight_hh_l1'"):
    from_state_dict(missing, 'LSTM')
  wrong = {**state_dict, 'bias_ih_l1': np.zeros(5, np.float32)}
  with pytest.raises(ValueError, match=r"'bias_ih_l1'.*\[5\].*\[24\]"):
    from_state_dict(wrong, 'LSTM')
  with pytest.raises(ValueError, match=r"'weight_ih_l0'.*\[24, 5\].*\[28, 5\]"):
    from_state_dict(state_dict, 'LSTM', hidden_size=7, input_size=F)
  with pytest.raises(ValueError, match=r"does not use: \['bias_hh_l1'.*'weight_ih_l1'\]"):
    from_state_dict(state_dict, 'LSTM', num_layers=1)
  with pytest.raises(ValueError, match='`mode`'):
    from_state_dict(state_dict, 'lstm')
  with pytest.raises(TypeError, match='float16'):
    from_state_dict(state_dict, 'LSTM', dtype='float16')
