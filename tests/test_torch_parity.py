"""Layers against PyTorch's nn.RNN / nn.LSTM / nn.GRU, packed sequences for ragged batches."""

import itertools

import jax
import numpy as np
import pytest
from conftest import KINDS, assert_trees_close, make_layer

from jaxrnn import LSTMState
from jaxrnn._src.torch_interop import params_from_state_dict

torch = pytest.importorskip('torch')
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

B, T, F, H = 4, 7, 5, 6
LENGTHS = np.array([7, 2, 5, 1])  # PyTorch cannot pack length 0; the oracle tests cover it


def torch_module(kind, num_layers, bidirectional, bias=True):
  cls, extra = KINDS[kind]
  return getattr(torch.nn, cls)(
    F, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True, bias=bias, **extra
  )


def run_torch(module, x, lengths, hx):
  x = torch.from_numpy(x)
  with torch.no_grad():
    if lengths is None:
      out, final = module(x, hx)
    else:
      packed = pack_padded_sequence(x, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False)
      out, final = module(packed, hx)
      out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
  return out.numpy(), jax.tree.map(lambda t: t.numpy(), final)


def convert(module, layer):
  state = {k: v.detach().numpy() for k, v in module.state_dict().items()}
  return {'params': params_from_state_dict(layer.config, state, F)}


@pytest.mark.parametrize(
  'kind,num_layers,bidirectional,padding',
  list(itertools.product(KINDS, [1, 3], [False, True], ['full', 'ragged'])),
)
def test_matches_torch(rng, kind, num_layers, bidirectional, padding):
  torch.manual_seed(0)
  module = torch_module(kind, num_layers, bidirectional)
  layer = make_layer(kind, hidden_size=H, num_layers=num_layers, bidirectional=bidirectional)
  x = rng.normal(size=(B, T, F)).astype(np.float32)
  lengths = LENGTHS if padding == 'ragged' else None
  want_out, want_final = run_torch(module, x, lengths, None)
  got_out, got_final = jax.jit(layer.apply)(convert(module, layer), x, lengths)
  assert_trees_close((got_out, got_final), (want_out, want_final), atol=1e-5)


@pytest.mark.parametrize('kind', list(KINDS))
def test_matches_torch_with_initial_state_and_no_bias(rng, kind):
  torch.manual_seed(1)
  module = torch_module(kind, 2, True, bias=False)
  layer = make_layer(kind, hidden_size=H, num_layers=2, bidirectional=True, use_bias=False)
  x = rng.normal(size=(B, T, F)).astype(np.float32)
  Hout = layer.config.output_size
  h0 = rng.normal(size=(4, B, Hout)).astype(np.float32)
  c0 = rng.normal(size=(4, B, H)).astype(np.float32)
  torch_hx = (torch.from_numpy(h0), torch.from_numpy(c0)) if kind.startswith('lstm') else torch.from_numpy(h0)
  jax_hx = LSTMState(h0, c0) if kind.startswith('lstm') else h0
  want_out, want_final = run_torch(module, x, LENGTHS, torch_hx)
  variables = convert(module, layer)
  assert set(variables['params']['l0']) <= {'w_ih', 'w_hh', 'w_hr'}
  got_out, got_final = layer.apply(variables, x, LENGTHS, jax_hx)
  assert_trees_close((got_out, got_final), (want_out, want_final), atol=1e-5)
