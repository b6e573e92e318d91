"""to_onnx: the exported model, run by onnxruntime itself, equals the jaxrnn layer (SPEC §13)."""

import sys

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import each_value_then_pairs
from conftest import random_variables

import jaxrnn

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

F, H = 3, 4
# Every cell ONNX has an operator for: (cell name, cell factory).
CELLS = {
  'rnn_tanh': lambda **kw: jaxrnn.ElmanCell(H, **kw),
  'rnn_relu': lambda **kw: jaxrnn.ElmanCell(H, nonlinearity='relu', **kw),
  'lstm': lambda **kw: jaxrnn.LSTMCell(H, **kw),
  'gru': lambda **kw: jaxrnn.GRUCell(H, **kw),
  'gru_reset_before': lambda **kw: jaxrnn.GRUCell(H, reset_after=False, **kw),
}


def run_onnx(model, feeds):
  """Returns onnxruntime's outputs of the serialized ``model``."""
  session = ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])
  return session.run(None, feeds)


def compare(layer, variables, rng, *, batch=3, steps=5, lengths=None, initial=False, model=None):
  """Runs ``layer`` in jaxrnn and its ONNX export in onnxruntime; asserts outputs, h_n, c_n agree."""
  lstm = isinstance(layer.config.cell, jaxrnn.LSTMCell)
  shape = (steps, batch, F) if layer.config.time_major else (batch, steps, F)
  x = rng.normal(size=shape).astype(np.float32)
  feeds, carry = {'x': x}, None
  if lengths is not None:
    feeds['seq_lengths'] = np.asarray(lengths, np.int32)
  if initial:
    rows = layer.config.num_layers * layer.config.num_directions
    h0 = rng.normal(size=(rows, batch, H)).astype(np.float32)
    c0 = rng.normal(size=(rows, batch, H)).astype(np.float32)
    feeds['initial_h'], carry = h0, h0
    if lstm:
      feeds['initial_c'], carry = c0, jaxrnn.LSTMState(jnp.asarray(h0), jnp.asarray(c0))
  if model is None:
    model = jaxrnn.interop.to_onnx(
      layer, variables, with_seq_lengths=lengths is not None, with_initial_carry=initial
    )
  outputs, final = layer.apply(
    variables, jnp.asarray(x), None if lengths is None else jnp.asarray(lengths), carry
  )
  want = [outputs, *final] if lstm else [outputs, final]
  got = run_onnx(model, feeds)
  assert [o.name for o in model.graph.output] == ['outputs', 'h_n', 'c_n'][: len(want)]
  for name, w, g in zip(['outputs', 'h_n', 'c_n'], want, got, strict=False):
    assert g.shape == np.shape(w), name
    np.testing.assert_allclose(g, np.asarray(w), atol=1e-5, rtol=0, err_msg=name)


@pytest.mark.parametrize(
  'cell, num_layers, bidirectional, time_major, ragged, initial',
  each_value_then_pairs(list(CELLS), [1, 2], [False, True], [False, True], [False, True], [False, True]),
)
def test_matches_layer(cell, num_layers, bidirectional, time_major, ragged, initial, rng):
  layer = jaxrnn.Recurrent(
    CELLS[cell](), num_layers=num_layers, bidirectional=bidirectional, time_major=time_major
  )
  variables = random_variables(layer, F, rng)
  # A full-length row, a shorter one and an empty one (onnxruntime's own length 0 differs: see below).
  compare(layer, variables, rng, lengths=[5, 2, 0] if ragged else None, initial=initial)


@pytest.mark.parametrize(
  'cell', [pytest.param(c) if c == 'lstm' else pytest.param(c, marks=pytest.mark.slow) for c in CELLS]
)
def test_without_bias(cell, rng):
  layer = jaxrnn.Recurrent(CELLS[cell](use_bias=False), bidirectional=True)
  variables = random_variables(layer, F, rng)
  model = jaxrnn.interop.to_onnx(layer, variables, with_seq_lengths=True)
  assert not [t.name for t in model.graph.initializer if t.name.startswith('B_')]
  compare(layer, variables, rng, lengths=[5, 1, 3], model=model)


def test_backward_cell_equal_to_cell(rng):
  """An explicit ``backward_cell`` equal to ``cell`` is the plain bidirectional layer: one node."""
  layer = jaxrnn.Recurrent(jaxrnn.GRUCell(H), backward_cell=jaxrnn.GRUCell(H), bidirectional=True)
  variables = random_variables(layer, F, rng)
  model = jaxrnn.interop.to_onnx(layer, variables, with_seq_lengths=True)
  assert [node.op_type for node in model.graph.node].count('GRU') == 1
  compare(layer, variables, rng, lengths=[5, 2, 0], model=model)


def test_presets_lengths_zero_and_initial_carry(rng):
  """jaxrnn.LSTM, 2 bidirectional layers: a length-0 row keeps its initial carry (SPEC §3.3)."""
  layer = jaxrnn.LSTM(hidden_size=H, num_layers=2, bidirectional=True)
  compare(layer, random_variables(layer, F, rng), rng, lengths=[0, 5, 2], initial=True)


def test_dynamic_batch_and_time(rng):
  layer = jaxrnn.GRU(hidden_size=H, bidirectional=True)
  variables = random_variables(layer, F, rng)
  model = jaxrnn.interop.to_onnx(layer, variables, with_seq_lengths=True)
  compare(layer, variables, rng, batch=2, steps=4, lengths=[4, 3], model=model)
  compare(layer, variables, rng, batch=5, steps=7, lengths=[7, 1, 0, 6, 2], model=model)


def test_graph_checks_and_saves(tmp_path, rng):
  layer = jaxrnn.LSTM(hidden_size=H, num_layers=2, param_dtype=jnp.float64)
  variables = random_variables(layer, F, rng)
  variables = {
    'params': {
      g: {k: np.asarray(v, np.float64) for k, v in p.items()} for g, p in variables['params'].items()
    }
  }
  path = tmp_path / 'lstm.onnx'
  model = jaxrnn.interop.to_onnx(layer, variables, with_seq_lengths=True, with_initial_carry=True, path=path)
  onnx.checker.check_model(onnx.load(path), full_check=True)
  assert [n.op_type for n in model.graph.node].count('LSTM') == 2
  assert {t.data_type for t in model.graph.initializer if t.name[:2] in ('W_', 'R_', 'B_')} == {
    onnx.TensorProto.FLOAT
  }

  def dims(value):
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

  assert {i.name: dims(i) for i in model.graph.input} == {
    'x': ['batch', 'time', F],
    'seq_lengths': ['batch'],
    'initial_h': [2, 'batch', H],
    'initial_c': [2, 'batch', H],
  }
  assert {o.name: dims(o) for o in model.graph.output} == {
    'outputs': ['batch', 'time', H],
    'h_n': [2, 'batch', H],
    'c_n': [2, 'batch', H],
  }


def test_nnx_layer_needs_no_variables(rng):
  from flax import nnx

  module = jaxrnn.nnx.GRU(F, H, bidirectional=True, rngs=nnx.Rngs(0))
  model = jaxrnn.interop.to_onnx(module)
  x = rng.normal(size=(2, 5, F)).astype(np.float32)
  outputs, h_n = module(jnp.asarray(x))
  got = run_onnx(model, {'x': x})
  np.testing.assert_allclose(got[0], np.asarray(outputs), atol=1e-5, rtol=0)
  np.testing.assert_allclose(got[1], np.asarray(h_n), atol=1e-5, rtol=0)


def _variables(layer, rng=None):
  return random_variables(layer, F, rng or np.random.default_rng(0))


def _bad_cases():
  lstm = jaxrnn.LSTM(hidden_size=H)
  gru = jaxrnn.GRU(hidden_size=H)
  mixed = jaxrnn.Recurrent(
    jaxrnn.GRUCell(H), backward_cell=jaxrnn.GRUCell(H, reset_after=False), bidirectional=True
  )
  deeper = jaxrnn.GRU(hidden_size=H, num_layers=2)
  mgu = jaxrnn.Recurrent(jaxrnn.MGUCell(H))
  as_int = {
    'params': {'l0': {k: np.ones(np.shape(v), np.int32) for k, v in _variables(gru)['params']['l0'].items()}}
  }
  return [
    pytest.param(jaxrnn.LSTM(hidden_size=H, proj_size=2), None, ValueError, 'no projection', id='proj_size'),
    pytest.param(mgu, {'params': {}}, TypeError, 'no recurrent operator for MGUCell', id='mgu'),
    pytest.param(mixed, None, ValueError, 'backward_cell', id='backward_cell'),
    pytest.param(deeper, _variables(gru), ValueError, 'do not fit the layer', id='variables'),
    pytest.param(lstm, _variables(gru), ValueError, r"params\['l0'\]\['w_ih'\] has shape", id='shape'),
    pytest.param(gru, as_int, TypeError, 'must be floating-point', id='int_params'),
    pytest.param(gru, None, TypeError, '`variables` is needed', id='no_variables'),
    pytest.param(object(), None, TypeError, 'needs a jaxrnn layer', id='not_a_layer'),
  ]


@pytest.mark.parametrize('layer, variables, error, match', _bad_cases())
def test_named_errors(layer, variables, error, match):
  with pytest.raises(error, match=match):
    jaxrnn.interop.to_onnx(layer, variables if variables is not None else None)


@pytest.mark.parametrize('opset', [9, 10_000, True])
def test_opset_out_of_range(opset):
  layer = jaxrnn.GRU(hidden_size=H)
  with pytest.raises(ValueError, match='`opset` must be an int'):
    jaxrnn.interop.to_onnx(layer, _variables(layer), opset=opset)


def test_missing_onnx_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, 'onnx', None)
  layer = jaxrnn.GRU(hidden_size=H)
  with pytest.raises(ImportError, match=r"pip install 'jaxrnn\[convert\]'"):
    jaxrnn.interop.to_onnx(layer, _variables(layer))


@pytest.mark.slow
@pytest.mark.parametrize('opset', [10, 13, 14, 21])
def test_opsets(opset, rng):
  layer = jaxrnn.LSTM(hidden_size=H, bidirectional=True, num_layers=2)
  variables = random_variables(layer, F, rng)
  model = jaxrnn.interop.to_onnx(
    layer, variables, with_seq_lengths=True, with_initial_carry=True, opset=opset
  )
  compare(layer, variables, rng, lengths=[5, 0, 3], initial=True, model=model)


@pytest.mark.slow
def test_onnxruntime_length_zero_loses_initial_state(rng):
  """Why the graph masks: onnxruntime's own Y_h at length 0 is zeros, not initial_h (SPEC §3.3 wants it)."""
  from onnx import helper
  from onnx import numpy_helper

  w = rng.normal(size=(1, H, F)).astype(np.float32)
  r = rng.normal(size=(1, H, H)).astype(np.float32)
  node = helper.make_node('RNN', ['x', 'W', 'R', '', 'lens', 'h0'], ['Y', 'Y_h'], hidden_size=H)
  graph = helper.make_graph(
    [node],
    'rnn',
    [
      helper.make_tensor_value_info('x', onnx.TensorProto.FLOAT, [5, 2, F]),
      helper.make_tensor_value_info('lens', onnx.TensorProto.INT32, [2]),
      helper.make_tensor_value_info('h0', onnx.TensorProto.FLOAT, [1, 2, H]),
    ],
    [helper.make_tensor_value_info('Y_h', onnx.TensorProto.FLOAT, [1, 2, H])],
    initializer=[numpy_helper.from_array(w, 'W'), numpy_helper.from_array(r, 'R')],
  )
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
  h0 = np.ones((1, 2, H), np.float32)
  x = rng.normal(size=(5, 2, F)).astype(np.float32)
  try:
    (y_h,) = run_onnx(model, {'x': x, 'lens': np.array([5, 0], np.int32), 'h0': h0})
  except Exception:  # older onnxruntime refuses length 0 outright: the graph's clamp covers that too
    return
  assert not np.allclose(y_h[0, 1], h0[0, 1]), 'onnxruntime now keeps initial_h at length 0: the mask may go'
